//! MQTT over TLS against Debian's `mosquitto_rr` with `--cafile` / `--cert` / `--key`:
//! certificates from a CA made in the test with the `openssl` CLI; client certificates
//! required or optional; a client without a certificate, or with one another CA signed,
//! refused at the handshake; a certificate registered as a device's credentials identifies
//! the device without a user name; plain TCP unaffected on its own port.
#![allow(clippy::missing_panics_doc)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::{Server, TOKEN, mosquitto};
use ota_mqtt::MqttConfig;
use ota_mqtt::server::{ClientAuth, TlsConfig, certificate_fingerprint, serve_tls};
use ota_server::service::DeviceApi;
use serde_json::Value;

const IMAGE: &[u8] = b"abcdefghij";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "openssl not found ({e}): run scripts/setup-test-deps.sh (Debian package openssl)"
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.pem`, `{name}.key`), self-signed.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// A leaf `{name}.pem` / `{name}.key` signed by CA `ca` with extensions `ext`.
fn leaf(dir: &Path, name: &str, ca: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// CA `ca` with `server` and `client` certificates; `rogue-ca` with `rogue` (a client
/// certificate our CA did not sign).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        ca(d, "ca");
        ca(d, "rogue-ca");
        leaf(
            d,
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        let client = "extendedKeyUsage=clientAuth\n";
        leaf(d, "client", "ca", client);
        leaf(d, "rogue", "rogue-ca", client);
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn pem(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).expect("read PEM")
    }

    /// The client certificate's fingerprint, as `openssl x509 -fingerprint -sha256` prints
    /// it, without colons, in lower case.
    fn openssl_fingerprint(&self, cert: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(self.path(cert))
            .output()
            .expect("openssl");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.trim()
            .rsplit('=')
            .next()
            .expect("fingerprint")
            .replace(':', "")
            .to_lowercase()
    }
}

/// Starts a TLS listener over the fixture's service, next to its plain one.
fn tls_listener(s: &Server, tls: TlsConfig) -> SocketAddr {
    let api: Arc<dyn DeviceApi> = s.api.clone();
    s.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve_tls(l, tls, api, MqttConfig::default()));
        addr
    })
}

/// `mosquitto_rr` asking for the fw attributes over TLS (`cert` = client certificate and
/// key base name) or plain TCP (`pki` = None), MQTT 5.
fn attributes(port: u16, pki: Option<&Pki>, cert: Option<&str>, user: Option<&str>) -> Output {
    let mut cmd = mosquitto("mosquitto_rr");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5"]);
    if let Some(pki) = pki {
        cmd.arg("--cafile").arg(pki.path("ca.pem"));
        if let Some(c) = cert {
            cmd.arg("--cert")
                .arg(pki.path(&format!("{c}.pem")))
                .arg("--key")
                .arg(pki.path(&format!("{c}.key")));
        }
    }
    if let Some(u) = user {
        cmd.args(["-u", u]);
    }
    cmd.args([
        "-t",
        "v1/devices/me/attributes/request/1",
        "-m",
        r#"{"sharedKeys":"fw_title,fw_version"}"#,
        "-e",
        "v1/devices/me/attributes/response/1",
        "-F",
        "%p",
        "-N",
        "-W",
        "10",
    ]);
    cmd.output().expect("run mosquitto_rr")
}

fn answered(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("attributes JSON")
}

fn refused(out: &Output, what: &str) {
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "{what} was served: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn required_client_certificates() {
    let pki = Pki::new();
    let s = Server::start(IMAGE);
    let tls = TlsConfig::from_pem_files(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&pki.path("ca.pem")),
        true,
    )
    .expect("TLS config");
    let port = tls_listener(&s, tls).port();

    // Certificate signed by the CA + token as user name.
    let v = answered(&attributes(port, Some(&pki), Some("client"), Some(TOKEN)));
    assert_eq!(v["shared"]["fw_title"], "demo", "{v}");

    // No certificate, or one another CA signed: the handshake fails, nothing is served.
    refused(
        &attributes(port, Some(&pki), None, Some(TOKEN)),
        "no certificate",
    );
    refused(
        &attributes(port, Some(&pki), Some("rogue"), Some(TOKEN)),
        "a certificate of another CA",
    );

    // The certificate alone names a device once its fingerprint is that device's
    // credentials; the fingerprint is openssl's SHA-256 fingerprint.
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pki.path("client.pem"))
        .output()
        .expect("openssl")
        .stdout;
    let fingerprint = certificate_fingerprint(&der);
    assert_eq!(fingerprint, pki.openssl_fingerprint("client.pem"));
    // Without a device for it and without a user name: refused like a missing token
    // (MQTT 5 reason 0x85).
    let out = attributes(port, Some(&pki), Some("client"), None);
    assert_eq!(out.status.code(), Some(0x85), "{out:?}");
    let mut d = s.unassigned_device(&fingerprint);
    let v = answered(&attributes(port, Some(&pki), Some("client"), None));
    assert_eq!(
        v,
        serde_json::json!({}),
        "the certificate's device has nothing assigned"
    );
    d.firmware_id = Some(s.package.id);
    s.block_on(s.ota().update_device(&d)).expect("assign");
    let v = answered(&attributes(port, Some(&pki), Some("client"), None));
    assert_eq!(v["shared"]["fw_version"], "1.1", "{v}");
    // The certificate wins over a user name that is not a token.
    let v = answered(&attributes(
        port,
        Some(&pki),
        Some("client"),
        Some("not-a-token"),
    ));
    assert_eq!(v["shared"]["fw_version"], "1.1", "{v}");

    // Plain TCP on its own port is unaffected.
    let v = answered(&attributes(s.addr.port(), None, None, Some(TOKEN)));
    assert_eq!(v["shared"]["fw_title"], "demo", "{v}");
    refused(
        &attributes(s.addr.port(), Some(&pki), Some("client"), Some(TOKEN)),
        "TLS on the plain port",
    );
}

#[test]
fn optional_and_no_client_certificates() {
    let pki = Pki::new();
    let s = Server::start(IMAGE);
    let optional = TlsConfig::from_pem(
        &pki.pem("server.pem"),
        &pki.pem("server.key"),
        &ClientAuth::Optional(pki.pem("ca.pem")),
    )
    .expect("TLS config");
    let port = tls_listener(&s, optional).port();
    let v = answered(&attributes(port, Some(&pki), None, Some(TOKEN)));
    assert_eq!(
        v["shared"]["fw_title"], "demo",
        "token without certificate: {v}"
    );
    let v = answered(&attributes(port, Some(&pki), Some("client"), Some(TOKEN)));
    assert_eq!(
        v["shared"]["fw_title"], "demo",
        "token with certificate: {v}"
    );
    refused(
        &attributes(port, Some(&pki), Some("rogue"), Some(TOKEN)),
        "a certificate of another CA",
    );
    let out = attributes(port, Some(&pki), None, Some("wrong"));
    assert_eq!(out.status.code(), Some(0x86), "bad token over TLS: {out:?}");

    let none = TlsConfig::from_pem(
        &pki.pem("server.pem"),
        &pki.pem("server.key"),
        &ClientAuth::None,
    )
    .expect("TLS config");
    let port = tls_listener(&s, none).port();
    let v = answered(&attributes(port, Some(&pki), None, Some(TOKEN)));
    assert_eq!(v["shared"]["fw_title"], "demo", "{v}");
}

#[test]
fn unusable_tls_material_is_refused() {
    let pki = Pki::new();
    let err = TlsConfig::from_pem_files(
        &pki.path("server.pem"),
        &pki.path("missing.key"),
        None,
        false,
    )
    .expect_err("missing key file");
    assert!(err.to_string().contains("missing.key"), "{err}");
    // The key does not belong to the certificate.
    let err = TlsConfig::from_pem(
        &pki.pem("server.pem"),
        &pki.pem("client.key"),
        &ClientAuth::None,
    )
    .expect_err("mismatched key");
    assert!(
        err.to_string().contains("TLS configuration refused"),
        "{err}"
    );
    // A CA file with a key but no certificate.
    let err = TlsConfig::from_pem_files(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&pki.path("ca.key")),
        true,
    )
    .expect_err("CA without a certificate");
    assert!(
        err.to_string().contains("ca.key") && err.to_string().contains("CERTIFICATE"),
        "{err}"
    );
}
