//! Wiring: store + blobs + service + REST + `/metrics`, served on a bound listener. The
//! `otad` crate adds the device transports on top.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::blob::{BlobError, BlobStore};
use crate::config::Config;
use crate::rest::{AppState, AuthConfig, router};
use crate::service::{Ota, now_ms};
use crate::store::{SqlStore, StoreError};

/// A start-up failure.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The blob store could not be opened.
    #[error("blob store: {0}")]
    Blob(#[from] BlobError),
    /// The replica fan-out could not start.
    #[error("assignment fan-out: {0}")]
    Service(#[from] crate::service::ServiceError),
    /// The server failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only ours"
                );
            }
            handle
        })
        .clone()
}

/// Opens storage and builds the service and the HTTP app.
pub async fn build(config: &Config) -> Result<(Router, Arc<Ota>), ServeError> {
    let store = SqlStore::connect(&config.database_url).await?;
    let pg = store.pg_pool().cloned();
    let blobs = BlobStore::from_url(&config.blob_url)?;
    let ota = Arc::new(Ota::new(Arc::new(store), blobs, config.service()));
    if let Some(pool) = pg {
        ota.enable_pg_fanout(pool, &config.notify_namespace).await?;
    }
    let secret = if config.jwt_secret.is_empty() {
        use rand::RngCore;
        let mut s = vec![0u8; 32];
        rand::rng().fill_bytes(&mut s);
        s
    } else {
        config.jwt_secret.as_bytes().to_vec()
    };
    let auth = AuthConfig {
        username: config.admin_username.clone(),
        password: config.admin_password.clone(),
        jwt_secret: secret,
        token_ttl: Duration::from_secs(config.token_ttl_secs),
    };
    let handle = prometheus();
    let app = router(AppState {
        ota: ota.clone(),
        auth: Arc::new(auth),
    })
    .route("/metrics", get(move || std::future::ready(handle.render())));
    Ok((app, ota))
}

/// Serves on an already-bound listener until `shutdown` completes, then drains requests,
/// writes pending progress and returns.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (app, ota) = build(config).await?;
    serve_app(listener, app, ota, shutdown).await
}

/// Serves `app` (the app from [`build`], possibly with more routes merged in) on an
/// already-bound listener until `shutdown` completes, running `ota`'s background work
/// (progress writes, expiry of stuck updates); then drains requests, writes pending progress
/// and returns.
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    ota: Arc<Ota>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let background = {
        let ota = ota.clone();
        let every = ota.config().progress_flush;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = ota.flush_progress().await {
                    tracing::warn!(error = %e, "writing progress failed");
                }
                if let Err(e) = ota.expire_stuck(now_ms()).await {
                    tracing::warn!(error = %e, "expiring stuck updates failed");
                }
            }
        })
    };
    tracing::info!(addr = %listener.local_addr()?, "otad listening");
    // Device requests are small request/response pairs: send each response at once.
    let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    background.abort();
    if let Err(e) = ota.flush_progress().await {
        tracing::warn!(error = %e, "writing progress at shutdown failed");
    }
    result?;
    Ok(())
}
