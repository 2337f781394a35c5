//! The REST management API: ThingsBoard's OTA subset (reference §8) on axum.
//!
//! Handlers are thin: they parse, call [`Ota`], and render ThingsBoard's JSON shapes.
//! Errors are `{"status","message","errorCode","timestamp"}`. The routes are described by
//! [`crate::openapi::document`], served at `/api/openapi.json`; keep the two in step.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ota_core::checksum::ChecksumAlgorithm;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::blob::BlobError;
use crate::error::{ModelError, RuleError};
use crate::model::{
    Device, DeviceId, DeviceProfile, DeviceUpdateState, OtaPackage, PackageId, PackageSource,
    PackageType, PackageUrl, ProfileId, check_text,
};
use crate::service::{Ota, ServiceError, UploadMeta, now_ms};
use crate::store::{PackageQuery, PackageSort, StoreError};

/// ThingsBoard error codes.
mod code {
    pub const GENERAL: u16 = 2;
    pub const AUTHENTICATION: u16 = 10;
    pub const JWT_EXPIRED: u16 = 11;
    pub const BAD_REQUEST_PARAMS: u16 = 31;
    pub const ITEM_NOT_FOUND: u16 = 32;
}

/// An API error rendered in ThingsBoard's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// ThingsBoard `errorCode`.
    pub error_code: u16,
}

impl ApiError {
    fn new(status: StatusCode, error_code: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            error_code,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST_PARAMS, message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code::AUTHENTICATION, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status.as_u16(),
            "message": self.message,
            "errorCode": self.error_code,
            "timestamp": now_ms(),
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::Store(StoreError::NotFound { .. }) => {
                Self::new(StatusCode::NOT_FOUND, code::ITEM_NOT_FOUND, e.to_string())
            }
            ServiceError::Store(StoreError::Rule(_) | StoreError::UnsupportedUrl { .. })
            | ServiceError::Model(_)
            | ServiceError::Checksum(_)
            | ServiceError::ChecksumMismatch { .. }
            | ServiceError::NoStoredData { .. }
            | ServiceError::Upload(_)
            | ServiceError::Attributes(_) => Self::bad_request(e.to_string()),
            ServiceError::Blob(BlobError::TooLarge { .. }) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::BAD_REQUEST_PARAMS,
                e.to_string(),
            ),
            _ => {
                tracing::error!(error = %e, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::GENERAL,
                    "internal server error",
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        Self::bad_request(e.to_string())
    }
}

/// JSON body whose rejection (malformed JSON, wrong content type) is an [`ApiError`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "expected Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid JSON body: {}",
                e.body_text()
            ))),
        }
    }
}

/// Admin credentials and the JWT signing key.
#[derive(Clone)]
pub struct AuthConfig {
    /// Admin user name.
    pub username: String,
    /// Admin password.
    pub password: String,
    /// HS256 secret.
    pub jwt_secret: Vec<u8>,
    /// Token lifetime.
    pub token_ttl: Duration,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    scopes: Vec<String>,
    iat: u64,
    exp: u64,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The service.
    pub ota: Arc<Ota>,
    /// Authentication.
    pub auth: Arc<AuthConfig>,
}

/// A request authenticated as the tenant admin.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get("x-authorization")
            .or_else(|| parts.headers.get(header::AUTHORIZATION))
            .ok_or_else(|| {
                ApiError::unauthorized("Authentication failed: missing X-Authorization header")
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("Authentication failed: expected \"Bearer <JWT>\"")
            })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        match jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&state.auth.jwt_secret),
            &validation,
        ) {
            Ok(_) => Ok(Self),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    code::JWT_EXPIRED,
                    "Token has expired",
                ))
            }
            Err(_) => Err(ApiError::unauthorized("Authentication failed: invalid JWT")),
        }
    }
}

/// Issues a JWT for `user` valid for `ttl`.
pub fn issue_token(auth: &AuthConfig, user: &str, ttl: Duration) -> Result<String, ApiError> {
    let iat = u64::try_from(now_ms() / 1000).unwrap_or(0);
    let claims = Claims {
        sub: user.to_owned(),
        scopes: vec!["TENANT_ADMIN".into()],
        iat,
        exp: iat + ttl.as_secs(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&auth.jwt_secret),
    )
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::GENERAL,
            e.to_string(),
        )
    })
}

/// The REST router (without `/metrics`, which the binary adds).
pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.ota.config().max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/otaPackage", post(save_package))
        .route(
            "/api/otaPackage/{id}",
            post(upload).get(package_info).delete(delete_package),
        )
        .route("/api/otaPackage/info/{id}", get(package_info))
        .route("/api/otaPackage/{id}/download", get(download))
        .route("/api/otaPackages", get(list_packages))
        .route(
            "/api/otaPackages/{profile}/{type}",
            get(list_profile_packages),
        )
        .route("/api/deviceProfile", post(save_profile))
        .route("/api/deviceProfile/{id}", get(get_profile))
        .route("/api/deviceProfiles", get(list_profiles))
        .route("/api/device", post(save_device))
        .route("/api/device/{id}", get(get_device).delete(delete_device))
        .route("/api/device/{id}/credentials", get(get_credentials))
        .route("/api/device/credentials", post(save_credentials))
        .route("/api/device/{id}/otaState", get(device_states))
        .route("/api/otaStates", get(all_states))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                code::ITEM_NOT_FOUND,
                "no such endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The OpenAPI document; public, like ThingsBoard's Swagger UI.
async fn openapi_json() -> Json<Value> {
    Json(crate::openapi::document())
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

async fn login(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<Value>, ApiError> {
    if req.username != st.auth.username || req.password != st.auth.password {
        return Err(ApiError::unauthorized("Invalid username or password"));
    }
    let token = issue_token(&st.auth, &req.username, st.auth.token_ttl)?;
    let refresh = issue_token(&st.auth, &req.username, st.auth.token_ttl * 2)?;
    Ok(Json(json!({ "token": token, "refreshToken": refresh })))
}

/// `{"entityType": …, "id": uuid}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityId {
    /// `OTA_PACKAGE`, `DEVICE_PROFILE`, `DEVICE`.
    pub entity_type: String,
    /// The id.
    pub id: String,
}

fn entity(kind: &str, id: impl std::fmt::Display) -> EntityId {
    EntityId {
        entity_type: kind.to_owned(),
        id: id.to_string(),
    }
}

fn parse_entity<T: std::str::FromStr<Err = ModelError>>(
    e: Option<&EntityId>,
) -> Result<Option<T>, ApiError> {
    e.map(|e| e.id.parse::<T>())
        .transpose()
        .map_err(ApiError::from)
}

fn package_info_json(p: &OtaPackage) -> Value {
    let (url, file_name, content_type, alg, checksum, size) = match &p.source {
        PackageSource::Pending => (None, None, None, None, None, None),
        PackageSource::Url(u) => (
            Some(u.url.clone()),
            None,
            None,
            u.checksum_algorithm.map(ChecksumAlgorithm::tb_name),
            u.checksum.clone(),
            None,
        ),
        PackageSource::Data(d) => (
            None,
            Some(d.file_name.clone()),
            Some(d.content_type.clone()),
            Some(d.checksum_algorithm.tb_name()),
            Some(d.checksum.clone()),
            Some(d.size),
        ),
    };
    json!({
        "id": entity("OTA_PACKAGE", p.id),
        "createdTime": p.created_time,
        "deviceProfileId": entity("DEVICE_PROFILE", p.profile_id),
        "type": p.package_type.as_str(),
        "title": p.title,
        "version": p.version,
        "tag": p.tag,
        "url": url,
        "hasData": p.has_data(),
        "fileName": file_name,
        "contentType": content_type,
        "checksumAlgorithm": alg,
        "checksum": checksum,
        "dataSize": size,
        "additionalInfo": p.additional_info,
        "name": p.title,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PackageIn {
    id: Option<EntityId>,
    title: String,
    version: String,
    tag: Option<String>,
    #[serde(rename = "type")]
    package_type: String,
    device_profile_id: EntityId,
    #[serde(default)]
    uses_url: bool,
    url: Option<String>,
    checksum_algorithm: Option<String>,
    checksum: Option<String>,
    additional_info: Option<Value>,
    sming_app_id: Option<String>,
}

async fn save_package(
    _: Admin,
    State(st): State<AppState>,
    JsonBody(body): JsonBody<PackageIn>,
) -> Result<Json<Value>, ApiError> {
    if body.id.is_some() {
        return Err(ApiError::bad_request(
            "package info is immutable once created; create a new package",
        ));
    }
    check_text("title", &body.title)?;
    check_text("version", &body.version)?;
    let package_type: PackageType = body.package_type.parse()?;
    let profile_id: ProfileId = body.device_profile_id.id.parse()?;
    let alg = body
        .checksum_algorithm
        .as_deref()
        .map(ChecksumAlgorithm::from_tb_name)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let source = if body.uses_url {
        let url = body
            .url
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("url must be set when usesUrl is true"))?;
        PackageSource::Url(PackageUrl {
            url,
            checksum_algorithm: alg,
            checksum: body.checksum,
        })
    } else {
        PackageSource::Pending
    };
    let pkg = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id,
        package_type,
        title: body.title,
        version: body.version,
        tag: body.tag.filter(|t| !t.is_empty()),
        source,
        sming_app_id: body.sming_app_id,
        additional_info: body.additional_info,
    };
    st.ota.store().create_package(&pkg).await?;
    Ok(Json(package_info_json(&pkg)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadQuery {
    checksum_algorithm: Option<String>,
    checksum: Option<String>,
}

async fn upload(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    mut multipart: Multipart,
) -> Result<Json<Value>, ApiError> {
    let id: PackageId = id.parse()?;
    let alg_name = q
        .checksum_algorithm
        .ok_or_else(|| ApiError::bad_request("checksumAlgorithm is required"))?;
    let algorithm = ChecksumAlgorithm::from_tb_name(&alg_name.to_uppercase())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(&e))?;
        let Some(field) = field else {
            return Err(ApiError::bad_request("multipart part \"file\" is missing"));
        };
        if field.name() != Some("file") {
            continue;
        }
        let file_name = field
            .file_name()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("file name is required"))?
            .to_owned();
        let content_type = field
            .content_type()
            .filter(|c| !c.is_empty())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let meta = UploadMeta {
            algorithm,
            declared: q.checksum.filter(|c| !c.is_empty()),
            file_name,
            content_type,
        };
        let pkg = st.ota.upload(id, meta, field).await?;
        return Ok(Json(package_info_json(&pkg)));
    }
}

fn multipart_error(e: &axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    ApiError::new(
        status,
        code::BAD_REQUEST_PARAMS,
        format!("invalid multipart body: {}", e.body_text()),
    )
}

async fn package_info(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pkg = st.ota.store().package(id.parse()?).await?;
    Ok(Json(package_info_json(&pkg)))
}

async fn delete_package(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.ota.delete_package(id.parse()?).await?;
    Ok(StatusCode::OK)
}

async fn download(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let pkg = st.ota.store().package(id.parse()?).await?;
    let PackageSource::Data(d) = &pkg.source else {
        return Err(ApiError::bad_request(format!(
            "package {} has no stored data",
            pkg.id
        )));
    };
    let bytes = st.ota.package_bytes(&pkg).await?;
    let mut headers = HeaderMap::new();
    let ct = HeaderValue::from_str(&d.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, ct);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment;filename={}", d.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&d.file_name) {
        headers.insert("x-filename", v);
    }
    Ok((headers, bytes).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageParams {
    page_size: Option<u32>,
    page: Option<u32>,
    text_search: Option<String>,
    sort_property: Option<String>,
    sort_order: Option<String>,
}

impl PageParams {
    fn query(self) -> Result<PackageQuery, ApiError> {
        let page_size = self
            .page_size
            .ok_or_else(|| ApiError::bad_request("pageSize is required"))?;
        if page_size == 0 || page_size > 1000 {
            return Err(ApiError::bad_request(format!(
                "pageSize {page_size} must be between 1 and 1000"
            )));
        }
        let sort = match self.sort_property.as_deref() {
            None | Some("") => PackageSort::CreatedTime,
            Some(s) => PackageSort::from_tb_name(s)
                .ok_or_else(|| ApiError::bad_request(format!("unsupported sortProperty {s:?}")))?,
        };
        let descending = match self.sort_order.as_deref() {
            None | Some("" | "ASC") => false,
            Some("DESC") => true,
            Some(o) => {
                return Err(ApiError::bad_request(format!(
                    "sortOrder {o:?} must be ASC or DESC"
                )));
            }
        };
        Ok(PackageQuery {
            page: self.page.unwrap_or(0),
            page_size,
            text_search: self.text_search,
            sort,
            descending,
            ..PackageQuery::default()
        })
    }
}

fn page_json(page: &crate::store::Page<OtaPackage>) -> Value {
    json!({
        "data": page.data.iter().map(package_info_json).collect::<Vec<_>>(),
        "totalPages": page.total_pages,
        "totalElements": page.total_elements,
        "hasNext": page.has_next,
    })
}

async fn list_packages(
    _: Admin,
    State(st): State<AppState>,
    Query(p): Query<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let page = st.ota.store().packages(&p.query()?).await?;
    Ok(Json(page_json(&page)))
}

async fn list_profile_packages(
    _: Admin,
    State(st): State<AppState>,
    Path((profile, t)): Path<(String, String)>,
    Query(p): Query<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let mut q = p.query()?;
    q.profile_id = Some(profile.parse()?);
    q.package_type = Some(t.parse()?);
    q.with_data_only = true;
    let page = st.ota.store().packages(&q).await?;
    Ok(Json(page_json(&page)))
}

fn profile_json(p: &DeviceProfile) -> Value {
    json!({
        "id": entity("DEVICE_PROFILE", p.id),
        "createdTime": p.created_time,
        "name": p.name,
        "firmwareId": p.firmware_id.map(|id| entity("OTA_PACKAGE", id)),
        "softwareId": p.software_id.map(|id| entity("OTA_PACKAGE", id)),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileIn {
    id: Option<EntityId>,
    name: String,
    firmware_id: Option<EntityId>,
    software_id: Option<EntityId>,
}

async fn save_profile(
    _: Admin,
    State(st): State<AppState>,
    JsonBody(body): JsonBody<ProfileIn>,
) -> Result<Json<Value>, ApiError> {
    check_text("name", &body.name)?;
    let firmware_id = parse_entity(body.firmware_id.as_ref())?;
    let software_id = parse_entity(body.software_id.as_ref())?;
    let profile = if let Some(id) = parse_entity::<ProfileId>(body.id.as_ref())? {
        let existing = st.ota.store().profile(id).await?;
        if existing.name != body.name {
            return Err(ApiError::bad_request(
                "renaming a device profile is not supported",
            ));
        }
        DeviceProfile {
            firmware_id,
            software_id,
            ..existing
        }
    } else {
        let p = DeviceProfile {
            id: ProfileId::new_random(),
            created_time: now_ms(),
            name: body.name,
            firmware_id: None,
            software_id: None,
        };
        st.ota.store().create_profile(&p).await?;
        DeviceProfile {
            firmware_id,
            software_id,
            ..p
        }
    };
    if profile.firmware_id.is_some() || profile.software_id.is_some() || body.id.is_some() {
        st.ota.set_profile_packages(&profile).await?;
    }
    Ok(Json(profile_json(
        &st.ota.store().profile(profile.id).await?,
    )))
}

async fn get_profile(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(profile_json(
        &st.ota.store().profile(id.parse()?).await?,
    )))
}

async fn list_profiles(_: Admin, State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = st.ota.store().profiles().await?;
    let n = all.len();
    Ok(Json(
        json!({ "data": all.iter().map(profile_json).collect::<Vec<_>>(), "totalPages": 1, "totalElements": n, "hasNext": false }),
    ))
}

fn device_json(d: &Device) -> Value {
    json!({
        "id": entity("DEVICE", d.id),
        "createdTime": d.created_time,
        "name": d.name,
        "deviceProfileId": entity("DEVICE_PROFILE", d.profile_id),
        "firmwareId": d.firmware_id.map(|id| entity("OTA_PACKAGE", id)),
        "softwareId": d.software_id.map(|id| entity("OTA_PACKAGE", id)),
        "enigmaIot": d.enigma.as_ref().map(|e| json!({"network": e.network, "node": e.node})),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceIn {
    id: Option<EntityId>,
    name: String,
    device_profile_id: EntityId,
    firmware_id: Option<EntityId>,
    software_id: Option<EntityId>,
    enigma_iot: Option<EnigmaIn>,
}

#[derive(Deserialize)]
struct EnigmaIn {
    network: String,
    node: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceQuery {
    access_token: Option<String>,
}

async fn save_device(
    _: Admin,
    State(st): State<AppState>,
    Query(q): Query<DeviceQuery>,
    JsonBody(body): JsonBody<DeviceIn>,
) -> Result<Json<Value>, ApiError> {
    check_text("name", &body.name)?;
    let profile_id: ProfileId = body.device_profile_id.id.parse()?;
    let firmware_id = parse_entity(body.firmware_id.as_ref())?;
    let software_id = parse_entity(body.software_id.as_ref())?;
    let enigma = body.enigma_iot.map(|e| crate::model::EnigmaAddress {
        network: e.network,
        node: e.node,
    });
    let device = if let Some(id) = parse_entity::<DeviceId>(body.id.as_ref())? {
        let existing = st.ota.store().device(id).await?;
        let d = Device {
            name: body.name,
            profile_id,
            firmware_id,
            software_id,
            enigma,
            ..existing
        };
        st.ota.update_device(&d).await?;
        d
    } else {
        let token = match q.access_token {
            Some(t) => {
                check_text("accessToken", &t)?;
                t
            }
            None => random_token(),
        };
        let d = Device {
            id: DeviceId::new_random(),
            created_time: now_ms(),
            name: body.name,
            profile_id,
            access_token: token,
            firmware_id,
            software_id,
            enigma,
        };
        st.ota.create_device(&d).await?;
        d
    };
    Ok(Json(device_json(&device)))
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect()
}

async fn get_device(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(device_json(
        &st.ota.store().device(id.parse()?).await?,
    )))
}

async fn delete_device(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.ota.delete_device(id.parse()?).await?;
    Ok(StatusCode::OK)
}

fn credentials_json(d: &Device) -> Value {
    json!({ "deviceId": entity("DEVICE", d.id), "credentialsType": "ACCESS_TOKEN", "credentialsId": d.access_token, "credentialsValue": null })
}

async fn get_credentials(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(credentials_json(
        &st.ota.store().device(id.parse()?).await?,
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsIn {
    device_id: EntityId,
    credentials_type: String,
    credentials_id: String,
}

async fn save_credentials(
    _: Admin,
    State(st): State<AppState>,
    JsonBody(body): JsonBody<CredentialsIn>,
) -> Result<Json<Value>, ApiError> {
    if body.credentials_type != "ACCESS_TOKEN" {
        return Err(ApiError::bad_request(format!(
            "credentialsType {:?} is not supported; use ACCESS_TOKEN",
            body.credentials_type
        )));
    }
    check_text("credentialsId", &body.credentials_id)?;
    let id: DeviceId = body.device_id.id.parse()?;
    st.ota
        .store()
        .set_device_token(id, &body.credentials_id)
        .await?;
    Ok(Json(credentials_json(&st.ota.store().device(id).await?)))
}

async fn device_states(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<DeviceUpdateState>>, ApiError> {
    let id: DeviceId = id.parse()?;
    st.ota.store().device(id).await?;
    let mut out = Vec::new();
    for t in PackageType::ALL {
        out.push(st.ota.store().update_state(id, t).await?);
    }
    Ok(Json(out))
}

async fn all_states(
    _: Admin,
    State(st): State<AppState>,
) -> Result<Json<Vec<DeviceUpdateState>>, ApiError> {
    Ok(Json(st.ota.store().update_states().await?))
}
