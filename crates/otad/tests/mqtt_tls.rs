//! `otad`'s `[mqtt.tls]` settings: the real binary serves MQTT over TLS with required client
//! certificates next to plain MQTT (Debian's `mosquitto_rr`, certificates made with the
//! `openssl` CLI), and refuses to start on unusable TLS files with a message naming them.
#![allow(clippy::missing_panics_doc)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Otad, Rest, image, tool};
use serde_json::Value;

fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split(' '))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "openssl not found ({e}): run scripts/setup-test-deps.sh (Debian package openssl)"
            )
        });
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca`, `server` (127.0.0.1) and `client` certificates and keys in `dir`.
fn pki(dir: &Path) {
    const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(
        dir,
        &format!("req -x509 {EC} -keyout ca.key -out ca.pem -days 2 -subj /CN=otad-test-ca"),
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
        openssl(
            dir,
            &format!("req -new {EC} -keyout {name}.key -out {name}.csr -subj /CN={name}"),
        );
        openssl(
            dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
            ),
        );
    }
}

fn attributes(port: u16, tls: Option<(&Path, bool)>, token: &str) -> Output {
    let mut cmd = tool("mosquitto_rr", "mosquitto-clients");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", token]);
    if let Some((dir, with_cert)) = tls {
        cmd.arg("--cafile").arg(dir.join("ca.pem"));
        if with_cert {
            cmd.arg("--cert")
                .arg(dir.join("client.pem"))
                .arg("--key")
                .arg(dir.join("client.key"));
        }
    }
    cmd.args([
        "-t",
        "v1/devices/me/attributes/request/1",
        "-m",
        r#"{"sharedKeys":"fw_version"}"#,
        "-e",
        "v1/devices/me/attributes/response/1",
        "-N",
        "-W",
        "10",
    ]);
    cmd.output().expect("run mosquitto_rr")
}

#[test]
fn otad_serves_mqtt_over_tls_with_client_certificates() {
    let certs = tempfile::tempdir().expect("tempdir");
    pki(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let otad = Otad::start(&format!(
        "[coap]\nenabled = false\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[mqtt.tls]\nenabled = true\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nrequire_client_cert = true\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
    ));
    let tls = otad.mqtt_tls.expect("MQTT TLS port on stdout");
    let plain = otad.mqtt.expect("MQTT port on stdout");
    assert!(
        otad.log
            .iter()
            .any(|l| l.contains("MQTT TLS listening") && l.contains("client_certificates=required")),
        "{:?}",
        otad.log
    );

    let rest = Rest::login(&otad.url());
    let profile = rest.profile_with_firmware("tls", "tls-fw", "3.1.0", &image(2048, 3));
    rest.device(&profile, "tls-device", "tls-token");

    let out = attributes(tls.port(), Some((certs.path(), true)), "tls-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["shared"]["fw_version"], "3.1.0", "{v}");

    let out = attributes(tls.port(), Some((certs.path(), false)), "tls-token");
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "a client without a certificate was served"
    );

    let out = attributes(plain.port(), None, "tls-token");
    assert!(
        out.status.success(),
        "plain MQTT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn otad_refuses_unusable_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_otad"));
        cmd.current_dir(dir.path())
            .env("OTAD_ADMIN_PASSWORD", "pw")
            .env("OTAD_LISTEN", "127.0.0.1:0")
            .env(
                "OTAD_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("ota.db").display()),
            )
            .args(["--coap-listen", "off", "--mqtt-listen", "off"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run otad")
    };
    // TLS on without a certificate: a configuration error (exit 2).
    let out = run(&[("OTAD_MQTT_TLS_LISTEN", "127.0.0.1:0")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mqtt.tls.cert_file must be set"), "{err}");
    // A certificate file that does not exist: named in the start-up failure.
    let out = run(&[
        ("OTAD_MQTT_TLS_LISTEN", "127.0.0.1:0"),
        ("OTAD_MQTT_TLS_CERT_FILE", "/nonexistent/server.pem"),
        ("OTAD_MQTT_TLS_KEY_FILE", "/nonexistent/server.key"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MQTT TLS") && err.contains("/nonexistent/server.pem"),
        "{err}"
    );
}
