//! The REST API through a real HTTP client against `otad`'s app bound on 127.0.0.1:0.
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use ota_server::config::Config;

const DEMO: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const DEMO_SHA256: &str = "1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3";
const SECRET: &str = "test-secret";

struct Server {
    base: String,
    http: reqwest::Client,
    token: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("ota.db").display()),
        blob_url: format!("file://{}", dir.path().join("blobs").display()),
        admin_username: "admin".into(),
        admin_password: "pw".into(),
        jwt_secret: SECRET.into(),
        max_upload_bytes: 1024,
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (app, _ota) = ota_server::server::build(&config).await.expect("build");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let resp = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username":"admin","password":"pw"}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::OK);
    let token = resp.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    Server {
        base,
        http,
        token,
        _dir: dir,
    }
}

impl Server {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Authorization", format!("Bearer {}", self.token))
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("send");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("send");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, id: &str, query: &str, data: Vec<u8>) -> (StatusCode, Value) {
        let part = Part::bytes(data)
            .file_name("demo.bin")
            .mime_str("application/octet-stream")
            .expect("mime");
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("/api/otaPackage/{id}?{query}"),
            )
            .multipart(Form::new().part("file", part))
            .send()
            .await
            .expect("send");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn profile(&self, name: &str) -> String {
        let (s, v) = self
            .post("/api/deviceProfile", &json!({"name": name}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["id"]["id"].as_str().expect("id").to_owned()
    }

    async fn package(&self, profile: &str, title: &str, version: &str) -> String {
        let body = json!({"title": title, "version": version, "type": "FIRMWARE",
            "deviceProfileId": {"entityType": "DEVICE_PROFILE", "id": profile}});
        let (s, v) = self.post("/api/otaPackage", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["id"]["id"].as_str().expect("id").to_owned()
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, message_part: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert!(body["errorCode"].is_u64(), "{body}");
    assert!(body["timestamp"].is_i64(), "{body}");
    let msg = body["message"].as_str().expect("message");
    assert!(
        msg.contains(message_part),
        "message {msg:?} lacks {message_part:?}"
    );
}

#[tokio::test]
async fn upload_download_and_checksum_rules() {
    let s = start().await;
    let prof = s.profile("p").await;
    let id = s.package(&prof, "demo", "1.1").await;

    let (st, v) = s
        .upload(
            &id,
            &format!("checksumAlgorithm=SHA256&checksum=0x{DEMO_SHA256}"),
            DEMO.to_vec(),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "Wrong otaPackage file!");
    let (_, info) = s.get(&format!("/api/otaPackage/info/{id}")).await;
    assert_eq!(
        info["hasData"], false,
        "nothing stored after a wrong checksum"
    );

    let (st, v) = s
        .upload(&id, "checksumAlgorithm=sha256", DEMO.to_vec())
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["checksum"], DEMO_SHA256);
    assert_eq!(v["dataSize"], 10);
    assert_eq!(v["fileName"], "demo.bin");

    let (st, v) = s
        .upload(&id, "checksumAlgorithm=SHA256", DEMO.to_vec())
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "cannot be changed");

    let r = s
        .req(
            reqwest::Method::GET,
            &format!("/api/otaPackage/{id}/download"),
        )
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment;filename=demo.bin"
    );
    assert_eq!(r.headers()["x-filename"], "demo.bin");
    assert_eq!(&r.bytes().await.expect("bytes")[..], &DEMO);

    let (st, v) = s.upload(&id, "checksumAlgorithm=SHA3", DEMO.to_vec()).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "SHA3");
}

#[tokio::test]
async fn oversized_upload_is_refused_and_nothing_stored() {
    let s = start().await;
    let prof = s.profile("p").await;
    let id = s.package(&prof, "big", "1").await;
    let (st, v) = s
        .upload(&id, "checksumAlgorithm=SHA256", vec![7u8; 1025])
        .await;
    assert_error(st, &v, StatusCode::PAYLOAD_TOO_LARGE, "1024");
    let (_, info) = s.get(&format!("/api/otaPackage/info/{id}")).await;
    assert_eq!(info["hasData"], false);
    let (st, _) = s
        .upload(&id, "checksumAlgorithm=SHA256", vec![7u8; 1024])
        .await;
    assert_eq!(st, StatusCode::OK, "exactly the limit is accepted");
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let s = start().await;
    let prof = s.profile("p").await;
    s.package(&prof, "demo", "1.1").await;
    let dup = json!({"title":"demo","version":"1.1","type":"FIRMWARE","deviceProfileId":{"entityType":"DEVICE_PROFILE","id":prof}});
    let (st, v) = s.post("/api/otaPackage", &dup).await;
    assert_error(
        st,
        &v,
        StatusCode::BAD_REQUEST,
        "OtaPackage with such title and version already exists!",
    );

    let unknown = json!({"title":"x","version":"1","type":"FIRMWARE","deviceProfileId":{"entityType":"DEVICE_PROFILE","id":uuid::Uuid::new_v4()}});
    let (st, v) = s.post("/api/otaPackage", &unknown).await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "device profile");

    let (st, v) = s
        .get(&format!("/api/otaPackage/info/{}", uuid::Uuid::new_v4()))
        .await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "not found");
    let (st, v) = s.get("/api/otaPackage/info/not-a-uuid").await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "not-a-uuid");

    let r = s
        .req(reqwest::Method::POST, "/api/otaPackage")
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .expect("send");
    let st = r.status();
    let v: Value = r.json().await.expect("json error");
    assert_error(st, &v, StatusCode::BAD_REQUEST, "invalid JSON");

    let bad_type = json!({"title":"y","version":"1","type":"BOOTLOADER","deviceProfileId":{"entityType":"DEVICE_PROFILE","id":prof}});
    let (st, v) = s.post("/api/otaPackage", &bad_type).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "BOOTLOADER");

    let (st, v) = s.get("/api/otaPackages?page=0").await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "pageSize");
    let (st, v) = s
        .get("/api/otaPackages?pageSize=10&sortProperty=owner")
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "owner");

    let (st, v) = s.get("/api/otaPackages?pageSize=10").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["totalElements"], 1, "nothing else was stored: {v}");
}

#[tokio::test]
async fn admin_api_requires_a_valid_jwt() {
    let s = start().await;
    let url = format!("{}/api/otaPackages?pageSize=10", s.base);
    let r = s.http.get(&url).send().await.expect("send");
    let st = r.status();
    assert_error(
        st,
        &r.json().await.expect("json"),
        StatusCode::UNAUTHORIZED,
        "X-Authorization",
    );

    let r = s
        .http
        .get(&url)
        .header("X-Authorization", "Bearer not.a.jwt")
        .send()
        .await
        .expect("send");
    let st = r.status();
    assert_error(
        st,
        &r.json().await.expect("json"),
        StatusCode::UNAUTHORIZED,
        "invalid JWT",
    );

    // A token signed with another secret.
    let now = u64::try_from(ota_server::service::now_ms() / 1000).expect("time");
    let claims = json!({"sub":"admin","scopes":["TENANT_ADMIN"],"iat":now,"exp":now + 600});
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"other"),
    )
    .expect("encode");
    let r = s
        .http
        .get(&url)
        .header("X-Authorization", format!("Bearer {forged}"))
        .send()
        .await
        .expect("send");
    let st = r.status();
    assert_error(
        st,
        &r.json().await.expect("json"),
        StatusCode::UNAUTHORIZED,
        "invalid JWT",
    );

    let claims = json!({"sub":"admin","scopes":["TENANT_ADMIN"],"iat":now - 100,"exp":now - 10});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode");
    let r = s
        .http
        .get(&url)
        .header("X-Authorization", format!("Bearer {expired}"))
        .send()
        .await
        .expect("send");
    let st = r.status();
    let v: Value = r.json().await.expect("json");
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "expired");
    assert_eq!(v["errorCode"], 11);

    // A device access token is not an admin credential.
    let prof = s.profile("p").await;
    let (st, dev) = s
        .post(
            "/api/device?accessToken=DEVTOKEN",
            &json!({"name":"d","deviceProfileId":{"entityType":"DEVICE_PROFILE","id":prof}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{dev}");
    let r = s
        .http
        .get(&url)
        .header("X-Authorization", "Bearer DEVTOKEN")
        .send()
        .await
        .expect("send");
    let st = r.status();
    assert_error(
        st,
        &r.json().await.expect("json"),
        StatusCode::UNAUTHORIZED,
        "invalid JWT",
    );

    let r = s
        .http
        .post(format!("{}/api/auth/login", s.base))
        .json(&json!({"username":"admin","password":"nope"}))
        .send()
        .await
        .expect("send");
    let st = r.status();
    assert_error(
        st,
        &r.json().await.expect("json"),
        StatusCode::UNAUTHORIZED,
        "Invalid username or password",
    );
}

#[tokio::test]
async fn assignment_through_profiles_and_devices() {
    let s = start().await;
    let prof = s.profile("p").await;
    let other = s.profile("q").await;
    let pkg = s.package(&prof, "demo", "1.1").await;
    let foreign = s.package(&other, "demo", "9").await;
    assert_eq!(
        s.upload(&pkg, "checksumAlgorithm=SHA256", DEMO.to_vec())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        s.upload(&foreign, "checksumAlgorithm=SHA256", DEMO.to_vec())
            .await
            .0,
        StatusCode::OK
    );

    let (st, dev) = s
        .post(
            "/api/device",
            &json!({"name":"d","deviceProfileId":{"entityType":"DEVICE_PROFILE","id":prof}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{dev}");
    let dev_id = dev["id"]["id"].as_str().expect("id").to_owned();

    let (st, v) = s
        .post(
            "/api/deviceProfile",
            &json!({"id":{"entityType":"DEVICE_PROFILE","id":prof},"name":"p",
        "firmwareId":{"entityType":"OTA_PACKAGE","id":pkg}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["firmwareId"]["id"], pkg.as_str());

    let (st, states) = s.get(&format!("/api/device/{dev_id}/otaState")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(states[0]["state"], "INITIATED");
    assert_eq!(states[0]["targetVersion"], "1.1");

    let (st, v) = s.post("/api/device", &json!({"id":{"entityType":"DEVICE","id":dev_id},"name":"d",
        "deviceProfileId":{"entityType":"DEVICE_PROFILE","id":prof},"firmwareId":{"entityType":"OTA_PACKAGE","id":foreign}})).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "belongs to device profile");

    let r = s
        .req(reqwest::Method::DELETE, &format!("/api/otaPackage/{pkg}"))
        .send()
        .await
        .expect("delete");
    let st = r.status();
    assert_error(
        st,
        &r.json().await.expect("json"),
        StatusCode::BAD_REQUEST,
        "in use",
    );

    let (st, cred) = s.get(&format!("/api/device/{dev_id}/credentials")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(cred["credentialsType"], "ACCESS_TOKEN");
    let (st, cred) = s
        .post(
            "/api/device/credentials",
            &json!({"deviceId":{"entityType":"DEVICE","id":dev_id},
        "credentialsType":"ACCESS_TOKEN","credentialsId":"NEWTOKEN"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{cred}");
    assert_eq!(cred["credentialsId"], "NEWTOKEN");

    let (st, page) = s
        .get(&format!(
            "/api/otaPackages/{prof}/FIRMWARE?pageSize=10&page=0"
        ))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page["totalElements"], 1);

    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("ota_uploads_total"), "{metrics}");
}
