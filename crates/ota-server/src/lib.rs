//! # ota-server
//!
//! The OTA server: the model and its rules, storage, the device API every transport calls,
//! and the ThingsBoard-compatible REST API.

pub mod blob;
pub mod config;
pub mod error;
pub mod events;
pub mod model;
pub mod openapi;
pub mod rest;
pub mod rules;
pub mod server;
pub mod service;
pub mod store;
