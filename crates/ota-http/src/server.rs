//! The device API router (ThingsBoard's `DeviceApiController`, OTA subset) over
//! [`DeviceApi`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/{token}/firmware?title&version[&size][&chunk]` (and `/software`) | `200` bytes `[size·chunk, …)`, the whole file without `size`, empty past the end; `401` bad token; `404` nothing (stored) assigned; `400` title/version mismatch or bad query |
//! | `GET /api/v1/{token}/firmware/download` (and `/software/download`) | the assigned package for any downloader: `Range` (one range: `206`/`416`), `ETag`, `If-None-Match` (`304`), `If-Range`, `HEAD` |
//! | `GET /api/v1/{token}/attributes?sharedKeys=…&clientKeys=…` | `200 {"client":{…},"shared":{…}}` (empty sections left out, so possibly `{}`); no keys: everything |
//! | `POST /api/v1/{token}/attributes` | client attributes (one JSON object, merged into the stored ones) → `200`; `400` not a JSON object or over a limit (nothing stored); `401` bad token |
//! | `GET /api/v1/{token}/attributes/updates?timeout=ms` | long poll: the next assignment change, else `408` |
//! | `POST /api/v1/{token}/telemetry` | object, `{"ts","values"}`, or an array of them → `200` |
//!
//! Bytes are served from the [`Bytes`] the [`DeviceApi`] returns (a slice of the cached
//! package): no request copies a file.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, IF_RANGE, RANGE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use ota_server::error::AttributeError;
use ota_server::model::{Device, OtaPackage, PackageData, PackageType};
use ota_server::rules::AttributePush;
use ota_server::service::{DeviceApi, ServiceError, parse_client_attributes};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::query::{AttributeKeys, ChunkQuery, long_poll_timeout};
use crate::range::{RangeDecision, decide};

/// Longest access token looked up; longer ones are answered `401` without a lookup.
pub const MAX_TOKEN_LEN: usize = 256;

const X_FILENAME: HeaderName = HeaderName::from_static("x-filename");

/// The device API routes over `api`, ready to be merged into a bigger app.
///
/// ```no_run
/// # async fn demo(ota: std::sync::Arc<ota_server::service::Ota>) -> std::io::Result<()> {
/// let app = ota_http::router(ota);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub fn router<A: DeviceApi + ?Sized + 'static>(api: Arc<A>) -> Router {
    Router::new()
        .route("/api/v1/{token}/firmware", get(firmware_chunk::<A>))
        .route("/api/v1/{token}/software", get(software_chunk::<A>))
        .route(
            "/api/v1/{token}/firmware/download",
            get(firmware_download::<A>),
        )
        .route(
            "/api/v1/{token}/software/download",
            get(software_download::<A>),
        )
        .route(
            "/api/v1/{token}/attributes",
            get(attributes::<A>).post(post_attributes::<A>),
        )
        .route(
            "/api/v1/{token}/attributes/updates",
            get(attribute_updates::<A>),
        )
        .route("/api/v1/{token}/telemetry", post(telemetry::<A>))
        .with_state(api)
}

type Api<A> = State<Arc<A>>;

// The router also takes a trait object (checked at compile time).
const _: fn(Arc<dyn DeviceApi>) -> Router = router::<dyn DeviceApi>;

// ------------------------------------------------------------------ responses

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// A `400` with a small JSON body in the shape of Spring's error (the exact body
/// ThingsBoard sends is not part of the contract; the status is).
fn bad_request(err: &dyn std::fmt::Display) -> Response {
    let body =
        serde_json::json!({ "status": 400, "error": "Bad Request", "message": err.to_string() });
    (
        StatusCode::BAD_REQUEST,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn internal(err: &ServiceError) -> Response {
    tracing::error!(error = %err, "device API request failed");
    status(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The device behind `token`, or the response that ends the request.
async fn device<A: DeviceApi + ?Sized>(api: &A, token: &str) -> Result<Device, Response> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(status(StatusCode::UNAUTHORIZED));
    }
    match api.authenticate(token).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(status(StatusCode::UNAUTHORIZED)),
        Err(e) => Err(internal(&e)),
    }
}

/// The device's assigned package of type `t` with stored bytes, or `404`.
async fn stored_package<A: DeviceApi + ?Sized>(
    api: &A,
    device: &Device,
    t: PackageType,
) -> Result<OtaPackage, Response> {
    match api.assigned_package(device, t).await {
        Ok(Some(p)) if p.data().is_some() => Ok(p),
        // Nothing assigned, or a URL package: ThingsBoard answers 404 for both.
        Ok(_) => Err(status(StatusCode::NOT_FOUND)),
        Err(e) => Err(internal(&e)),
    }
}

async fn read<A: DeviceApi + ?Sized>(
    api: &A,
    pkg: &OtaPackage,
    index: u64,
    size: u64,
) -> Result<Bytes, Response> {
    match api.read_chunk(pkg, index, size).await {
        Ok(b) => Ok(b),
        Err(ServiceError::NoStoredData { .. }) => Err(status(StatusCode::NOT_FOUND)),
        Err(e) => Err(internal(&e)),
    }
}

/// `Content-Type`, `Content-Disposition: attachment;filename=…` and `x-filename`, as
/// ThingsBoard sends them.
fn file_headers(data: &PackageData, headers: &mut HeaderMap) {
    let content_type = HeaderValue::from_str(&data.content_type)
        .ok()
        .filter(|_| is_media_type(&data.content_type))
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_TYPE, content_type);
    // Control characters cannot go into a header: replace them rather than drop the header.
    let name: String = data
        .file_name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment;filename={name}")) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(X_FILENAME, v);
    }
}

/// `type/subtype[;params]` with token characters (what Spring's `MediaType.parseMediaType`
/// accepts, roughly; anything else falls back to `application/octet-stream`).
fn is_media_type(s: &str) -> bool {
    let essence = s.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(a, b)| token(a) && token(b))
}

// ------------------------------------------------------------------ /firmware, /software

async fn firmware_chunk<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    package_chunk(&*api, &token, query.as_deref(), PackageType::Firmware).await
}

async fn software_chunk<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    package_chunk(&*api, &token, query.as_deref(), PackageType::Software).await
}

/// ThingsBoard's order: parameters are bound first (`400`), then the token (`401`), then
/// the assignment (`404`), then title and version (`400`).
async fn package_chunk<A: DeviceApi + ?Sized>(
    api: &A,
    token: &str,
    query: Option<&str>,
    t: PackageType,
) -> Response {
    let q = match ChunkQuery::parse(query.unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return bad_request(&e),
    };
    let device = match device(api, token).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pkg = match stored_package(api, &device, t).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if pkg.title != q.title || pkg.version != q.version {
        return status(StatusCode::BAD_REQUEST);
    }
    let bytes = match read(api, &pkg, q.chunk, q.size).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut response = Response::new(Body::from(bytes));
    if let Some(data) = pkg.data() {
        file_headers(data, response.headers_mut());
    }
    response
}

// ------------------------------------------------------------------ /download (Range)

async fn firmware_download<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    download(&*api, &token, &headers, PackageType::Firmware).await
}

async fn software_download<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    download(&*api, &token, &headers, PackageType::Software).await
}

/// The strong entity tag of a package's bytes: its id and checksum. Stored bytes never
/// change (uploads are immutable), so the tag changes exactly when the assignment does.
pub fn entity_tag(pkg: &OtaPackage) -> Option<String> {
    pkg.data().map(|d| format!("\"{}-{}\"", pkg.id, d.checksum))
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, `*` matches anything).
fn none_match_hits(value: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = value.to_str() else {
        return false;
    };
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

async fn download<A: DeviceApi + ?Sized>(
    api: &A,
    token: &str,
    req: &HeaderMap,
    t: PackageType,
) -> Response {
    let device = match device(api, token).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pkg = match stored_package(api, &device, t).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (Some(data), Some(etag)) = (pkg.data(), entity_tag(&pkg)) else {
        return status(StatusCode::NOT_FOUND);
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, v);
    }
    // The URL names "the current assignment": caches must ask before reusing a copy.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if req
        .get(IF_NONE_MATCH)
        .is_some_and(|v| none_match_hits(v, &etag))
    {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    file_headers(data, &mut headers);
    let bytes = match read(api, &pkg, 0, 0).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let len = bytes.len() as u64;
    // If-Range: honour Range only while the client's copy is still this package (strong
    // comparison; a date never matches since no Last-Modified is sent).
    let range_valid = req
        .get(IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let range = req
        .get(RANGE)
        .filter(|_| range_valid)
        .map(HeaderValue::as_bytes);
    match decide(range, len) {
        RangeDecision::Full => (StatusCode::OK, headers, Body::from(bytes)).into_response(),
        RangeDecision::Partial { start, end } => {
            let (Ok(s), Ok(e)) = (usize::try_from(start), usize::try_from(end)) else {
                return status(StatusCode::RANGE_NOT_SATISFIABLE);
            };
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
                headers.insert(CONTENT_RANGE, v);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                headers,
                Body::from(bytes.slice(s..e)),
            )
                .into_response()
        }
        RangeDecision::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(CONTENT_RANGE, v);
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, headers).into_response()
        }
    }
}

// ------------------------------------------------------------------ attributes

fn json_response(v: &Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn attributes<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let keys = AttributeKeys::parse(query.as_deref().unwrap_or_default());
    let device = match device(&*api, &token).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let all = match api.shared_attributes(&device).await {
        Ok(a) => a,
        Err(e) => return internal(&e),
    };
    // ThingsBoard (`DeviceActorMessageProcessor.handleGetAttributesRequest`): no keys at all
    // selects every attribute of both scopes; keys of one scope only select none of the
    // other.
    let shared: Map<String, Value> = match (&keys.shared, &keys.client) {
        (Some(wanted), _) => all
            .into_iter()
            .filter(|(k, _)| wanted.contains(k))
            .collect(),
        (None, Some(_)) => Map::new(),
        (None, None) => all,
    };
    let client = match (&keys.client, &keys.shared) {
        (Some(wanted), _) => api.client_attributes(&device, Some(wanted)).await,
        (None, Some(_)) => Ok(Map::new()),
        (None, None) => api.client_attributes(&device, None).await,
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => return internal(&e),
    };
    // `{"client":{…},"shared":{…}}`, an empty section left out (ThingsBoard's
    // `JsonConverter.toJson(GetAttributeResponseMsg)`).
    let mut body = Map::new();
    if !client.is_empty() {
        body.insert("client".into(), Value::Object(client));
    }
    if !shared.is_empty() {
        body.insert("shared".into(), Value::Object(shared));
    }
    json_response(&Value::Object(body))
}

/// `POST /api/v1/{token}/attributes`: the token is checked first (`401`), then the body must
/// be one JSON object (`400` otherwise, as ThingsBoard's `JsonConverter` throws on anything
/// else); it is merged into the device's client attributes and answered with an empty
/// `200`.
async fn post_attributes<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let device = match device(&*api, &token).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let attributes = match parse_client_attributes(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(&e),
    };
    match api.record_client_attributes(&device, &attributes).await {
        Ok(()) => status(StatusCode::OK),
        Err(ServiceError::Attributes(AttributeError::Unsupported)) => {
            status(StatusCode::NOT_IMPLEMENTED)
        }
        Err(ServiceError::Attributes(e)) => bad_request(&e),
        Err(e) => internal(&e),
    }
}

/// One JSON object for the pushes of one assignment change, in ThingsBoard's update format:
/// the set keys, plus `"deleted":[…]` for the keys removed and not set again.
pub fn merge_pushes(pushes: &[AttributePush]) -> Value {
    let mut set = Map::new();
    let mut deleted: Vec<String> = Vec::new();
    for p in pushes {
        match p {
            AttributePush::Deleted(keys) => {
                for k in keys {
                    set.remove(k);
                    if !deleted.contains(k) {
                        deleted.push(k.clone());
                    }
                }
            }
            AttributePush::Set(m) => {
                for (k, v) in m {
                    deleted.retain(|d| d != k);
                    set.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if !deleted.is_empty() {
        set.insert("deleted".into(), Value::from(deleted));
    }
    Value::Object(set)
}

async fn attribute_updates<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let timeout = match long_poll_timeout(query.as_deref().unwrap_or_default()) {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    let device = match device(&*api, &token).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut rx = api.subscribe(device.id);
    match tokio::time::timeout(Duration::from_millis(timeout), rx.recv()).await {
        Ok(Ok(event)) => json_response(&merge_pushes(&event.pushes)),
        // Missed changes: the current attributes say where things stand now.
        Ok(Err(RecvError::Lagged(_))) => match api.shared_attributes(&device).await {
            Ok(all) => json_response(&Value::Object(all)),
            Err(e) => internal(&e),
        },
        Ok(Err(RecvError::Closed)) | Err(_) => status(StatusCode::REQUEST_TIMEOUT),
    }
}

// ------------------------------------------------------------------ telemetry

/// The flat value objects of a telemetry body: `{k:v}`, `{"ts":…,"values":{…}}`, or an
/// array of either.
pub fn telemetry_records(body: &Value) -> Option<Vec<&Map<String, Value>>> {
    fn one(v: &Value) -> Option<&Map<String, Value>> {
        let m = v.as_object()?;
        match (m.get("ts"), m.get("values")) {
            (Some(_), Some(Value::Object(values))) => Some(values),
            _ => Some(m),
        }
    }
    match body {
        Value::Array(items) => items.iter().map(one).collect(),
        v => one(v).map(|m| vec![m]),
    }
}

async fn telemetry<A: DeviceApi + ?Sized>(
    State(api): Api<A>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let device = match device(&*api, &token).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Some(records) = telemetry_records(&value) else {
        return status(StatusCode::BAD_REQUEST);
    };
    for values in records {
        if let Err(e) = api.record_telemetry(&device, values).await {
            return internal(&e);
        }
    }
    status(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::{is_media_type, merge_pushes, telemetry_records};
    use ota_server::rules::AttributePush;
    use serde_json::json;

    #[test]
    fn pushes_merge_into_one_update() {
        let set = json!({"fw_title": "demo", "fw_version": "1.1"});
        let pushes = [
            AttributePush::Deleted(vec!["fw_tag".into(), "fw_url".into(), "fw_title".into()]),
            AttributePush::Set(set.as_object().cloned().unwrap_or_default()),
        ];
        assert_eq!(
            merge_pushes(&pushes),
            json!({"fw_title": "demo", "fw_version": "1.1", "deleted": ["fw_tag", "fw_url"]})
        );
        assert_eq!(
            merge_pushes(&pushes[..1]),
            json!({"deleted": ["fw_tag", "fw_url", "fw_title"]})
        );
    }

    #[test]
    fn telemetry_shapes() {
        let flat = json!({"fw_state": "DOWNLOADING"});
        assert_eq!(
            telemetry_records(&flat),
            Some(vec![flat.as_object().expect("object")])
        );
        let ts = json!({"ts": 1, "values": {"fw_state": "UPDATED"}});
        assert_eq!(
            telemetry_records(&ts).map(|r| r[0].clone()),
            Some(
                json!({"fw_state": "UPDATED"})
                    .as_object()
                    .cloned()
                    .expect("object")
            )
        );
        let arr = json!([{"a": 1}, {"ts": 2, "values": {"b": 2}}]);
        assert_eq!(telemetry_records(&arr).map(|r| r.len()), Some(2));
        assert_eq!(telemetry_records(&json!([1])), None);
        assert_eq!(telemetry_records(&json!("x")), None);
    }

    #[test]
    fn media_types() {
        assert!(is_media_type("application/octet-stream"));
        assert!(is_media_type("text/plain; charset=utf-8"));
        assert!(!is_media_type("octet-stream"));
        assert!(!is_media_type("a/b/c"));
        assert!(!is_media_type("a b/c"));
    }
}
