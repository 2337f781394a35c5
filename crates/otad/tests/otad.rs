//! The `otad` binary: configuration from file + environment, serving, `/metrics`, graceful
//! shutdown on SIGTERM.
#![allow(clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn otad_serves_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("otad.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}\"\nblob_url = \"file://{}\"\nadmin_username = \"admin\"\n[coap]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("ota.db").display(),
            dir.path().join("blobs").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_otad"))
        .arg(&config)
        .env("OTAD_ADMIN_PASSWORD", "from-env")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn otad");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.contains("otad listening")
                .then(|| l.split("addr=").nth(1).map(|a| a.trim().to_owned()))
                .flatten()
        })
        .expect("listening line");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let login = http
            .post(format!("http://{addr}/api/auth/login"))
            .json(&serde_json::json!({"username":"admin","password":"from-env"}))
            .send()
            .await
            .expect("login");
        assert_eq!(
            login.status(),
            reqwest::StatusCode::OK,
            "password came from the environment"
        );
        let metrics = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(metrics.status(), reqwest::StatusCode::OK);
    });

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    assert!(
        lines
            .map_while(Result::ok)
            .any(|l| l.contains("shutting down")),
        "shutdown logged"
    );
}

#[test]
fn otad_refuses_a_bad_config_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("otad.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nadmin_pasword = \"typo\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_otad"))
        .arg(&config)
        .env_remove("OTAD_ADMIN_PASSWORD")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_pasword"), "{err}");

    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_otad"))
        .arg(&config)
        .env_remove("OTAD_ADMIN_PASSWORD")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_password must be set"), "{err}");
}
