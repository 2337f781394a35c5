//! TLS for the MQTT endpoint (rustls): the server certificate and, optionally, client
//! certificates verified against a CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Whether and how client certificates are asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for; devices authenticate with their token.
    None,
    /// A certificate is asked for and, when presented, must chain to one of these CAs
    /// (PEM); clients without one still connect and authenticate with their token.
    Optional(Vec<u8>),
    /// Every client must present a certificate that chains to one of these CAs (PEM); the
    /// TLS handshake of any other client fails.
    Required(Vec<u8>),
}

/// A TLS configuration that cannot be used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or used.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<TlsError>,
    },
    /// A file could not be read.
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    /// PEM text that does not parse.
    #[error("invalid PEM in the {what}: {message}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Parser message.
        message: String,
    },
    /// PEM text without the expected section.
    #[error("no {expected} in the {what}")]
    Missing {
        /// Which input.
        what: &'static str,
        /// The PEM section looked for.
        expected: &'static str,
    },
    /// rustls refused the certificate, key or CA set.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// The server side of MQTT over TLS.
///
/// With [`ClientAuth::Optional`] or [`ClientAuth::Required`], a client certificate that
/// chains to the CA identifies its device the way ThingsBoard's X.509 device credentials
/// do: the lowercase hex SHA-256 fingerprint of the certificate (DER), see
/// [`certificate_fingerprint`], is looked up as the device's credentials (its access token
/// in this server's model). When it matches a device, the connection is that device,
/// whatever the user name; when it matches none, the user name is the access token as on
/// plain TCP (the certificate then only admits the client to the transport).
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// The credentials a client certificate stands for: the lowercase hex SHA-256 of its DER
/// bytes, as `openssl x509 -noout -fingerprint -sha256` prints it without the colons.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            what,
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        source: Box::new(TlsError::Read(e)),
    })
}

fn in_file<T>(path: &Path, r: Result<T, TlsError>) -> Result<T, TlsError> {
    r.map_err(|e| TlsError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

impl TlsConfig {
    /// From PEM text: the server's certificate chain (leaf first), its private key
    /// (PKCS#8, PKCS#1 or SEC1) and the client-certificate policy.
    pub fn from_pem(
        cert_chain: &[u8],
        private_key: &[u8],
        client_auth: &ClientAuth,
    ) -> Result<Self, TlsError> {
        let chain = certificates(cert_chain, "server certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(private_key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
                what: "server private key",
                expected: "PRIVATE KEY",
            },
            e => TlsError::Pem {
                what: "server private key",
                message: e.to_string(),
            },
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(ca) | ClientAuth::Required(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca, "client CA")? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Rustls(format!("client CA: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if matches!(client_auth, ClientAuth::Optional(_)) {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Rustls(format!("client CA: {e}")))?,
                )
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// From PEM files; `client_ca` turns client certificates on, `require_client_cert`
    /// makes them mandatory. Errors name the file.
    pub fn from_pem_files(
        cert_chain: &Path,
        private_key: &Path,
        client_ca: Option<&Path>,
        require_client_cert: bool,
    ) -> Result<Self, TlsError> {
        let chain = read(cert_chain)?;
        in_file(cert_chain, certificates(&chain, "server certificate chain"))?;
        let key = read(private_key)?;
        in_file(
            private_key,
            PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsError::Pem {
                what: "server private key",
                message: e.to_string(),
            }),
        )?;
        let client_auth = match client_ca {
            None => ClientAuth::None,
            Some(path) => {
                let ca = read(path)?;
                in_file(path, certificates(&ca, "client CA"))?;
                if require_client_cert {
                    ClientAuth::Required(ca)
                } else {
                    ClientAuth::Optional(ca)
                }
            }
        };
        Self::from_pem(&chain, &key, &client_auth)
    }

    /// Completes the handshake of an accepted connection within `timeout`; returns the
    /// stream and the fingerprint of the verified client certificate, if any. `None` (the
    /// connection is dropped) when the handshake fails or times out.
    pub(super) async fn accept(
        &self,
        sock: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<(TlsStream<TcpStream>, Option<String>)> {
        let stream = match tokio::time::timeout(timeout, self.acceptor.accept(sock)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "MQTT TLS handshake timed out");
                return None;
            }
        };
        let fingerprint = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .map(|c| certificate_fingerprint(c.as_ref()));
        Some((stream, fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_pem_is_refused_with_the_reason() {
        let err = TlsConfig::from_pem(b"not pem", b"", &ClientAuth::None).expect_err("no cert");
        assert!(
            matches!(
                err,
                TlsError::Missing {
                    expected: "CERTIFICATE",
                    ..
                }
            ),
            "{err}"
        );
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = TlsConfig::from_pem(bad, b"", &ClientAuth::None).expect_err("bad base64");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        // A syntactically valid PEM certificate whose DER is garbage is refused by rustls
        // only once a key is there; no key at all is reported first.
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = TlsConfig::from_pem(junk, b"", &ClientAuth::None).expect_err("no key");
        assert!(
            matches!(
                err,
                TlsError::Missing {
                    expected: "PRIVATE KEY",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_files_are_named() {
        let err = TlsConfig::from_pem_files(
            Path::new("/nonexistent/server.pem"),
            Path::new("/nonexistent/server.key"),
            None,
            false,
        )
        .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/server.pem"), "{err}");
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        assert_eq!(
            certificate_fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
