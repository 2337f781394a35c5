//! # ota-server
//!
//! The OTA server: the model and its rules, storage, the device API every transport calls,
//! and the ThingsBoard-compatible REST API.
