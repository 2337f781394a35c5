//! `GET /api/openapi.json`: an OpenAPI 3.1 document listing exactly the routes the router
//! serves (read from the router's `.route(…)` calls, so a route added without documenting it
//! fails here), every documented operation answered by a handler, and the error shape as
//! served.
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use ota_server::config::Config;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `(method, path)` of every `.route("path", method(h).method(h)…)` in the router source.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/rest.rs");
    let mut out = BTreeSet::new();
    for piece in src.split(".route(").skip(1) {
        let Some(rest) = piece.trim_start().strip_prefix('"') else {
            continue;
        };
        let Some((path, rest)) = rest.split_once('"') else {
            continue;
        };
        // The method router runs to the parenthesis closing `.route(`.
        let mut depth = 1usize;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("closing parenthesis of .route(");
        let methods = &rest[..end];
        for m in METHODS {
            let call = format!("{m}(");
            let found = methods.match_indices(&call).any(|(i, _)| {
                i == 0
                    || !methods[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if found {
                out.insert((m.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

#[tokio::test]
async fn openapi_lists_every_route_and_the_error_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("ota.db").display()),
        blob_url: format!("file://{}", dir.path().join("blobs").display()),
        admin_username: "admin".into(),
        admin_password: "pw".into(),
        jwt_secret: "openapi-test".into(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (app, _ota) = ota_server::server::build(&config).await.expect("build");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();

    // Public, no token needed.
    let resp = http
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );

    let served = routes_in_source();
    assert!(
        served.len() >= 20,
        "router source parsed: {} routes: {served:?}",
        served.len()
    );
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served, not in openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in openapi.json, not served: {unserved:?}"
    );

    // Every operation: path parameters declared, an error response with the Error schema,
    // and every $ref resolves.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (method, path) in &documented {
        let op = &paths[path][method];
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_path, "{method} {path} path parameters");
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "{method} {path} error response"
        );
        assert!(op["responses"]["200"].is_object(), "{method} {path} 200");
    }
    let text = doc.to_string();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap_or_default();
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }

    // Each documented operation reaches a handler (not the 404 fallback, not 405): without a
    // token the admin routes answer 401, the public ones do not.
    let probe_id = "00000000-0000-4000-8000-000000000000";
    for (method, path) in &documented {
        let url = format!(
            "{base}{}",
            path.replace("{id}", probe_id)
                .replace("{profile}", probe_id)
                .replace("{type}", "FIRMWARE")
        );
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let resp = http.request(m, &url).send().await.expect("send");
        let status = resp.status();
        let public = paths[path][method]["security"] == json!([]);
        if public {
            assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }

    // The served error carries exactly the documented fields.
    let err: Value = http
        .get(format!("{base}/api/otaPackages?pageSize=1"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let fields: BTreeSet<&String> = err.as_object().expect("object").keys().collect();
    let documented_fields: BTreeSet<&String> = schemas["Error"]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    assert_eq!(fields, documented_fields);
    assert_eq!(err["status"], 401);
    assert_eq!(err["errorCode"], 10);
}
