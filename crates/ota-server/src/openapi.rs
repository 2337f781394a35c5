//! The OpenAPI 3.1 document of the REST API, served at `GET /api/openapi.json`.
//!
//! Kept by hand next to the router in [`crate::rest`]; the `openapi` integration test reads the
//! router's `.route(…)` calls and fails when a route is missing here or listed here but not
//! served. Schemas are outlines of ThingsBoard's shapes, enough for client generators.

use serde_json::{Map, Value, json};

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: &Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": { "type": "string" },
    })
}

fn query_param(name: &str, schema: &Value, required: bool, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    })
}

fn page_params() -> Vec<Value> {
    vec![
        query_param(
            "pageSize",
            &json!({"type": "integer", "minimum": 1, "maximum": 1000}),
            true,
            "Items per page.",
        ),
        query_param(
            "page",
            &json!({"type": "integer", "minimum": 0}),
            false,
            "Page number, from 0.",
        ),
        query_param(
            "textSearch",
            &json!({"type": "string"}),
            false,
            "Case-insensitive substring of the title.",
        ),
        query_param(
            "sortProperty",
            &json!({"type": "string", "enum": ["createdTime", "title", "version", "type", "tag", "url", "fileName", "dataSize", "checksum"]}),
            false,
            "Sort key.",
        ),
        query_param(
            "sortOrder",
            &json!({"type": "string", "enum": ["ASC", "DESC"]}),
            false,
            "Sort direction.",
        ),
    ]
}

/// One operation: `ok` is the 200 response schema (`None`: empty body).
fn op(
    tag: &str,
    summary: &str,
    parameters: Vec<Value>,
    body: Option<Value>,
    ok: Option<Value>,
    authenticated: bool,
) -> Value {
    let mut o = Map::new();
    o.insert("tags".into(), json!([tag]));
    o.insert("summary".into(), json!(summary));
    if !parameters.is_empty() {
        o.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = body {
        o.insert("requestBody".into(), body);
    }
    let ok = match ok {
        Some(schema) => json!({"description": "OK", "content": json_content(&schema)}),
        None => json!({"description": "OK"}),
    };
    o.insert(
        "responses".into(),
        json!({
            "200": ok,
            "default": {
                "description": "Error in ThingsBoard's shape (400 bad request, 401 authentication, 404 not found, 413 too large, 500 internal).",
                "content": json_content(&schema_ref("Error")),
            },
        }),
    );
    if !authenticated {
        o.insert("security".into(), json!([]));
    }
    Value::Object(o)
}

fn json_body(name: &str) -> Value {
    json!({"required": true, "content": json_content(&schema_ref(name))})
}

fn entity_id(kind: &str) -> Value {
    json!({
        "type": ["object", "null"],
        "required": ["entityType", "id"],
        "properties": {
            "entityType": {"const": kind},
            "id": {"type": "string", "format": "uuid"},
        },
    })
}

fn page_of(name: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": schema_ref(name)},
            "totalPages": {"type": "integer"},
            "totalElements": {"type": "integer"},
            "hasNext": {"type": "boolean"},
        },
    })
}

#[allow(clippy::too_many_lines)] // one entry per schema
fn schemas() -> Value {
    let nullable_string = json!({"type": ["string", "null"]});
    json!({
        "Error": {
            "type": "object",
            "description": "Every error response.",
            "required": ["status", "message", "errorCode", "timestamp"],
            "properties": {
                "status": {"type": "integer", "description": "HTTP status."},
                "message": {"type": "string"},
                "errorCode": {"type": "integer", "description": "2 general, 10 authentication, 11 JWT expired, 31 bad request parameters, 32 item not found."},
                "timestamp": {"type": "integer", "description": "Milliseconds since the Unix epoch."},
            },
        },
        "LoginRequest": {
            "type": "object",
            "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
        },
        "LoginResponse": {
            "type": "object",
            "properties": {"token": {"type": "string"}, "refreshToken": {"type": "string"}},
        },
        "OtaPackageIn": {
            "type": "object",
            "required": ["title", "version", "type", "deviceProfileId"],
            "properties": {
                "title": {"type": "string"},
                "version": {"type": "string"},
                "tag": nullable_string,
                "type": {"enum": ["FIRMWARE", "SOFTWARE"]},
                "deviceProfileId": entity_id("DEVICE_PROFILE"),
                "usesUrl": {"type": "boolean"},
                "url": nullable_string,
                "checksumAlgorithm": nullable_string,
                "checksum": nullable_string,
                "additionalInfo": {},
                "smingAppId": nullable_string,
            },
        },
        "OtaPackageInfo": {
            "type": "object",
            "properties": {
                "id": entity_id("OTA_PACKAGE"),
                "createdTime": {"type": "integer"},
                "deviceProfileId": entity_id("DEVICE_PROFILE"),
                "type": {"enum": ["FIRMWARE", "SOFTWARE"]},
                "title": {"type": "string"},
                "version": {"type": "string"},
                "tag": nullable_string,
                "url": nullable_string,
                "hasData": {"type": "boolean"},
                "fileName": nullable_string,
                "contentType": nullable_string,
                "checksumAlgorithm": nullable_string,
                "checksum": nullable_string,
                "dataSize": {"type": ["integer", "null"]},
                "additionalInfo": {},
                "name": {"type": "string"},
            },
        },
        "OtaPackagePage": page_of("OtaPackageInfo"),
        "DeviceProfileIn": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "id": entity_id("DEVICE_PROFILE"),
                "name": {"type": "string"},
                "firmwareId": entity_id("OTA_PACKAGE"),
                "softwareId": entity_id("OTA_PACKAGE"),
            },
        },
        "DeviceProfile": {
            "type": "object",
            "properties": {
                "id": entity_id("DEVICE_PROFILE"),
                "createdTime": {"type": "integer"},
                "name": {"type": "string"},
                "firmwareId": entity_id("OTA_PACKAGE"),
                "softwareId": entity_id("OTA_PACKAGE"),
            },
        },
        "DeviceProfilePage": page_of("DeviceProfile"),
        "DeviceIn": {
            "type": "object",
            "required": ["name", "deviceProfileId"],
            "properties": {
                "id": entity_id("DEVICE"),
                "name": {"type": "string"},
                "deviceProfileId": entity_id("DEVICE_PROFILE"),
                "firmwareId": entity_id("OTA_PACKAGE"),
                "softwareId": entity_id("OTA_PACKAGE"),
                "enigmaIot": {"$ref": "#/components/schemas/EnigmaIot"},
            },
        },
        "Device": {
            "type": "object",
            "properties": {
                "id": entity_id("DEVICE"),
                "createdTime": {"type": "integer"},
                "name": {"type": "string"},
                "deviceProfileId": entity_id("DEVICE_PROFILE"),
                "firmwareId": entity_id("OTA_PACKAGE"),
                "softwareId": entity_id("OTA_PACKAGE"),
                "enigmaIot": {"$ref": "#/components/schemas/EnigmaIot"},
            },
        },
        "EnigmaIot": {
            "type": ["object", "null"],
            "required": ["network", "node"],
            "properties": {"network": {"type": "string"}, "node": {"type": "string"}},
        },
        "DeviceCredentialsIn": {
            "type": "object",
            "required": ["deviceId", "credentialsType", "credentialsId"],
            "properties": {
                "deviceId": entity_id("DEVICE"),
                "credentialsType": {"const": "ACCESS_TOKEN"},
                "credentialsId": {"type": "string"},
            },
        },
        "DeviceCredentials": {
            "type": "object",
            "properties": {
                "deviceId": entity_id("DEVICE"),
                "credentialsType": {"const": "ACCESS_TOKEN"},
                "credentialsId": {"type": "string"},
                "credentialsValue": {"type": "null"},
            },
        },
        "DeviceUpdateState": {
            "type": "object",
            "properties": {
                "deviceId": {"type": "string", "format": "uuid"},
                "type": {"enum": ["FIRMWARE", "SOFTWARE"]},
                "currentTitle": nullable_string,
                "currentVersion": nullable_string,
                "targetPackageId": {"type": ["string", "null"], "format": "uuid"},
                "targetTitle": nullable_string,
                "targetVersion": nullable_string,
                "state": {"enum": ["QUEUED", "INITIATED", "DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED", "FAILED", null]},
                "error": nullable_string,
                "progress": {"type": "integer", "description": "Bytes downloaded (coalesced; may lag)."},
                "stateTime": {"type": "integer"},
                "anomalies": {"type": "integer"},
            },
        },
    })
}

/// The OpenAPI 3.1 document of every route of [`crate::rest::router`].
#[must_use]
#[allow(clippy::too_many_lines)] // one entry per route
pub fn document() -> Value {
    let id = || path_param("id", "Entity id (UUID).");
    let pkg = Some(schema_ref("OtaPackageInfo"));
    let paths = json!({
        "/api/auth/login": {
            "post": op("auth", "Log in as the tenant admin; returns a JWT for X-Authorization: Bearer.", vec![], Some(json_body("LoginRequest")), Some(schema_ref("LoginResponse")), false),
        },
        "/api/openapi.json": {
            "get": op("meta", "This document.", vec![], None, Some(json!({"type": "object"})), false),
        },
        "/api/otaPackage": {
            "post": op("otaPackage", "Create package info (immutable once created).", vec![], Some(json_body("OtaPackageIn")), pkg.clone(), true),
        },
        "/api/otaPackage/{id}": {
            "post": op(
                "otaPackage",
                "Upload the package bytes as multipart part `file`; the checksum is computed while streaming and checked against `checksum` when given. Nothing is visible unless complete and correct.",
                vec![
                    id(),
                    query_param("checksumAlgorithm", &json!({"enum": ["MD5", "SHA256", "SHA384", "SHA512", "CRC32", "MURMUR3_32", "MURMUR3_128"]}), true, "Checksum algorithm."),
                    query_param("checksum", &json!({"type": "string"}), false, "Expected checksum (hex); the upload fails when it differs."),
                ],
                Some(json!({
                    "required": true,
                    "content": {"multipart/form-data": {"schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream"}},
                    }}},
                })),
                pkg.clone(),
                true,
            ),
            "get": op("otaPackage", "Package info.", vec![id()], None, pkg.clone(), true),
            "delete": op("otaPackage", "Delete a package not in use, with its bytes.", vec![id()], None, None, true),
        },
        "/api/otaPackage/info/{id}": {
            "get": op("otaPackage", "Package info.", vec![id()], None, pkg, true),
        },
        "/api/otaPackage/{id}/download": {
            "get": {
                "tags": ["otaPackage"],
                "summary": "The package bytes.",
                "parameters": [id()],
                "responses": {
                    "200": {"description": "The bytes, with the uploaded content type and file name.", "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
                    "default": {"description": "Error in ThingsBoard's shape.", "content": json_content(&schema_ref("Error"))},
                },
            },
        },
        "/api/otaPackages": {
            "get": op("otaPackage", "A page of packages.", page_params(), None, Some(schema_ref("OtaPackagePage")), true),
        },
        "/api/otaPackages/{profile}/{type}": {
            "get": op(
                "otaPackage",
                "A page of a profile's packages of one type that have data.",
                [path_param("profile", "Device profile id."), json!({"name": "type", "in": "path", "required": true, "schema": {"enum": ["FIRMWARE", "SOFTWARE"]}})]
                    .into_iter()
                    .chain(page_params())
                    .collect(),
                None,
                Some(schema_ref("OtaPackagePage")),
                true,
            ),
        },
        "/api/deviceProfile": {
            "post": op("deviceProfile", "Create a profile, or (with `id`) set its default firmware/software.", vec![], Some(json_body("DeviceProfileIn")), Some(schema_ref("DeviceProfile")), true),
        },
        "/api/deviceProfile/{id}": {
            "get": op("deviceProfile", "A device profile.", vec![id()], None, Some(schema_ref("DeviceProfile")), true),
        },
        "/api/deviceProfiles": {
            "get": op("deviceProfile", "All device profiles.", vec![], None, Some(schema_ref("DeviceProfilePage")), true),
        },
        "/api/device": {
            "post": op(
                "device",
                "Create a device, or (with `id`) update it, including its own firmware/software assignment which overrides the profile's.",
                vec![query_param("accessToken", &json!({"type": "string"}), false, "Access token of a new device (random when absent).")],
                Some(json_body("DeviceIn")),
                Some(schema_ref("Device")),
                true,
            ),
        },
        "/api/device/{id}": {
            "get": op("device", "A device.", vec![id()], None, Some(schema_ref("Device")), true),
            "delete": op("device", "Delete a device.", vec![id()], None, None, true),
        },
        "/api/device/{id}/credentials": {
            "get": op("device", "A device's access token.", vec![id()], None, Some(schema_ref("DeviceCredentials")), true),
        },
        "/api/device/credentials": {
            "post": op("device", "Set a device's access token.", vec![], Some(json_body("DeviceCredentialsIn")), Some(schema_ref("DeviceCredentials")), true),
        },
        "/api/device/{id}/otaState": {
            "get": op("otaState", "A device's update state, firmware and software.", vec![id()], None, Some(json!({"type": "array", "items": schema_ref("DeviceUpdateState")})), true),
        },
        "/api/otaStates": {
            "get": op("otaState", "The update state of every device.", vec![], None, Some(json!({"type": "array", "items": schema_ref("DeviceUpdateState")})), true),
        },
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "otad REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "ThingsBoard's OTA management subset: packages, device profiles, devices, credentials and update states.",
        },
        "security": [{"jwt": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "jwt": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Authorization",
                    "description": "`Bearer <JWT>` from POST /api/auth/login.",
                },
            },
            "schemas": schemas(),
        },
    })
}
