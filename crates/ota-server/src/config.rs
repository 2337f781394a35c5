//! `otad` configuration: a TOML file, then `OTAD_*` environment variables on top.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// Parser message (with line and column).
        message: String,
    },
    /// An environment variable has an invalid value.
    #[error("invalid value {value:?} for environment variable {name}: {reason}")]
    Env {
        /// Variable.
        name: &'static str,
        /// Value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A required setting is missing.
    #[error("{0} must be set (config file key or OTAD_ environment variable)")]
    Missing(&'static str),
}

/// Settings of `otad`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// REST listen address (`OTAD_LISTEN`).
    pub listen: SocketAddr,
    /// `sqlite://path` or `postgres://…` (`OTAD_DATABASE_URL`).
    pub database_url: String,
    /// `file:///dir` or `s3://bucket?…` (`OTAD_BLOB_URL`).
    pub blob_url: String,
    /// Admin user name (`OTAD_ADMIN_USERNAME`).
    pub admin_username: String,
    /// Admin password (`OTAD_ADMIN_PASSWORD`), required.
    pub admin_password: String,
    /// JWT HS256 secret (`OTAD_JWT_SECRET`); random per start when empty (tokens then do
    /// not survive a restart or work across replicas).
    pub jwt_secret: String,
    /// JWT lifetime, seconds.
    pub token_ttl_secs: u64,
    /// Largest upload, bytes (`OTAD_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// Non-final updates older than this fail with TIMEOUT, seconds.
    pub update_timeout_secs: u64,
    /// Coalesced progress is written this often, seconds.
    pub progress_flush_secs: u64,
    /// Namespace of the PostgreSQL NOTIFY channel shared by replicas (`OTAD_NOTIFY_NAMESPACE`).
    pub notify_namespace: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("blob_url", &self.blob_url)
            .field("admin_username", &self.admin_username)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://ota.db".into(),
            blob_url: String::new(),
            admin_username: "tenant@thingsboard.org".into(),
            admin_password: String::new(),
            jwt_secret: String::new(),
            token_ttl_secs: 9000,
            max_upload_bytes: 16 * 1024 * 1024,
            update_timeout_secs: 3600,
            progress_flush_secs: 5,
            notify_namespace: "default".into(),
        }
    }
}

impl Config {
    /// Reads `path` (if given) and applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut c = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: p.display().to_string(),
                    message,
                })?
            }
            None => Self::default(),
        };
        c.apply_env(|k| std::env::var(k).ok())?;
        if c.admin_password.is_empty() {
            return Err(ConfigError::Missing("admin_password"));
        }
        if c.blob_url.is_empty() {
            let dir = std::env::current_dir().map_err(|source| ConfigError::Read {
                path: ".".into(),
                source,
            })?;
            c.blob_url = format!("file://{}", dir.join("blobs").display());
        }
        Ok(c)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `OTAD_*` variables read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                value: v.to_owned(),
                reason: e.to_string(),
            })
        }
        if let Some(v) = get("OTAD_LISTEN") {
            self.listen = num("OTAD_LISTEN", &v)?;
        }
        if let Some(v) = get("OTAD_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("OTAD_BLOB_URL") {
            self.blob_url = v;
        }
        if let Some(v) = get("OTAD_ADMIN_USERNAME") {
            self.admin_username = v;
        }
        if let Some(v) = get("OTAD_ADMIN_PASSWORD") {
            self.admin_password = v;
        }
        if let Some(v) = get("OTAD_JWT_SECRET") {
            self.jwt_secret = v;
        }
        if let Some(v) = get("OTAD_NOTIFY_NAMESPACE") {
            self.notify_namespace = v;
        }
        if let Some(v) = get("OTAD_MAX_UPLOAD_BYTES") {
            self.max_upload_bytes = num("OTAD_MAX_UPLOAD_BYTES", &v)?;
        }
        Ok(())
    }

    /// The service tunables.
    pub fn service(&self) -> crate::service::ServiceConfig {
        crate::service::ServiceConfig {
            max_upload_bytes: self.max_upload_bytes,
            update_timeout: Duration::from_secs(self.update_timeout_secs),
            progress_flush: Duration::from_secs(self.progress_flush_secs.max(1)),
            ..crate::service::ServiceConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file() {
        let mut c = Config::from_toml("listen = \"127.0.0.1:9000\"\nadmin_password = \"x\"\n")
            .expect("toml");
        c.apply_env(|k| (k == "OTAD_LISTEN").then(|| "0.0.0.0:1".to_owned()))
            .expect("env");
        assert_eq!(c.listen, SocketAddr::from(([0, 0, 0, 0], 1)));
        assert_eq!(c.admin_password, "x");
    }

    #[test]
    fn bad_values_name_the_culprit() {
        let err = Config::from_toml("listen = 5\n").expect_err("type");
        assert!(err.contains("listen"), "{err}");
        let err = Config::from_toml("lisen = \"x\"\n").expect_err("unknown key");
        assert!(err.contains("lisen"), "{err}");
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "OTAD_MAX_UPLOAD_BYTES").then(|| "lots".to_owned()))
            .expect_err("number");
        assert!(
            err.to_string().contains("OTAD_MAX_UPLOAD_BYTES") && err.to_string().contains("lots"),
            "{err}"
        );
    }
}
