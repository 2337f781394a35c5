//! Sming `OtaUpgradeMqtt`: the retained firmware announce on an external broker.
//!
//! A Sming device running `major.minor.patch` subscribes to `a/<app>/u/<major>.<minor>`; the
//! firmware is one retained PUBLISH (QoS 2, as Sming's `deployer` sends it) whose payload is the
//! patch version as a varint followed by the image — a raw ROM, or an OtaUpgrade `.ota`
//! package for devices built with `ENABLE_OTA_ADVANCED=1` (see `ota_crypto::sming`). The broker
//! keeps the latest announce and hands it to every device that subscribes; withdrawing
//! publishes an empty retained message, which clears it.
//!
//! Size: the whole image travels in one PUBLISH, so the connection's packet limit is raised
//! from `rumqttc`'s 10 KiB to [`BrokerOptions::max_payload`] (16 MiB by default, at most MQTT's
//! 268,435,455-byte remaining length). The broker must accept it too (Mosquitto:
//! `message_size_limit`, unlimited by default). The payload is held in memory while it is
//! sent.
//!
//! The receiving side pays the same: an MQTT client that returns whole PUBLISH packets, like
//! `rumqttc`, reads the image into memory before the application sees a byte of it (its
//! incoming packet limit must be raised to image + topic + a few header bytes). The demo
//! device (`ota-demo-device --sming`, rumqttc 0.25, debug build, x86-64 Linux) peaked at
//! 7.6–7.7 MB RSS with a 1 KiB image, 7.8–7.9 MB with 256 KiB and 8.6–8.7 MB with 1 MiB
//! (`/usr/bin/time -v`, two runs each): about the image size on top of the process, once (the
//! payload is used where the client read it, not copied). A device with less RAM than its
//! image needs a streaming client instead: one that reads the fixed header and remaining
//! length, then the topic (and packet id at QoS > 0), and hands the payload to the `Updater`
//! in chunks as it arrives from the socket (the varint patch first), never holding more than
//! one chunk. rumqttc does not offer that; Sming's own `MqttClient` does (its
//! `PayloadParser` gets the payload in TCP-sized fragments).
//!
//! Patch numbers: devices decode the varint as the plain sum of its 7-bit groups, so they read
//! patches above 127 wrongly ([`ota_core::frame::sming::device_reading`]); the
//! [`Announcement`] carries the warning. Devices install when the patch they read is not
//! below their own, so an equal patch is installed again.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ota_mqtt::broker::BrokerOptions;
//! use ota_mqtt::sming::{SmingAnnouncer, SmingVersion};
//!
//! let announcer = SmingAnnouncer::connect(BrokerOptions::new("127.0.0.1", 1883, "otad-sming")).await?;
//! let image = std::fs::read("rom0.bin")?;
//! announcer.announce("test", SmingVersion::parse("4.3.7")?, image.into()).await?;
//! announcer.withdraw("test", 4, 3).await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use ota_core::frame::sming::{
    self as frame, MAX_VARINT_LEN, PatchEncoding, SmingPayload, SmingWarning,
};
use ota_server::model::OtaPackage;
use ota_server::service::{Ota, ServiceError};
use tokio::sync::Mutex;

use crate::broker::{BrokerError, BrokerOptions, Connection, TopicError, check_level};

/// A Sming firmware version `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SmingVersion {
    /// Major: part of the topic.
    pub major: u32,
    /// Minor: part of the topic.
    pub minor: u32,
    /// Patch: travels in the payload.
    pub patch: u32,
}

impl fmt::Display for SmingVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a version string is not `major.minor.patch`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not three dot-separated parts.
    #[error("version {0:?} is not major.minor.patch")]
    Shape(String),
    /// A part is not a decimal number that fits 32 bits.
    #[error("version {version:?}: {part:?} is not a decimal number below 2^32")]
    Number {
        /// The version string.
        version: String,
        /// The offending part.
        part: String,
    },
}

impl SmingVersion {
    /// Parses `major.minor.patch` (decimal digits only, each below 2^32).
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let mut parts = text.split('.');
        let (Some(a), Some(b), Some(c), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VersionError::Shape(text.to_owned()));
        };
        let num = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError::Number {
                    version: text.to_owned(),
                    part: p.to_owned(),
                });
            }
            p.parse::<u32>().map_err(|_| VersionError::Number {
                version: text.to_owned(),
                part: p.to_owned(),
            })
        };
        Ok(Self {
            major: num(a)?,
            minor: num(b)?,
            patch: num(c)?,
        })
    }
}

/// Why an announce or withdraw failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SmingAnnounceError {
    /// The app id cannot be put into the topic.
    #[error("app id: {0}")]
    Topic(#[from] TopicError),
    /// The package version is not `major.minor.patch`.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The patch cannot be encoded (1-byte mode and a patch above 255).
    #[error("patch prefix: {0}")]
    Patch(frame::SmingError),
    /// The broker side failed (connection, size limit, no PUBCOMP).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The package's bytes could not be read.
    #[error("package bytes: {0}")]
    Package(#[from] ServiceError),
}

/// What an announce published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The topic, `a/<app>/u/<major>.<minor>`.
    pub topic: String,
    /// The version announced.
    pub version: SmingVersion,
    /// Bytes of the patch prefix.
    pub prefix_len: usize,
    /// Total payload bytes (prefix + image).
    pub payload_len: usize,
    /// Set when devices will not read the patch as written (see the module docs).
    pub warning: Option<SmingWarning>,
}

/// The announce topic `a/<app>/u/<major>.<minor>`. The app id may contain `/` (Sming puts it
/// into the topic verbatim) but no wildcard or NUL.
pub fn topic(app: &str, major: u32, minor: u32) -> Result<String, TopicError> {
    check_level("Sming app id", app, true)?;
    Ok(format!("a/{app}/u/{major}.{minor}"))
}

/// The announce payload: patch prefix, then the image.
pub fn payload(
    patch: u32,
    image: &[u8],
    encoding: PatchEncoding,
) -> Result<(Bytes, frame::Prefix), frame::SmingError> {
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let p = SmingPayload::emit_prefix(patch, encoding, &mut prefix)?;
    let mut out = BytesMut::with_capacity(p.len + image.len());
    out.put_slice(prefix.get(..p.len).unwrap_or(&[]));
    out.put_slice(image);
    Ok((out.freeze(), p))
}

/// Publishes and withdraws Sming announces over one broker connection. Calls are serialised
/// (one QoS 2 exchange at a time); share it behind an `Arc`.
pub struct SmingAnnouncer {
    conn: Mutex<Connection>,
    encoding: PatchEncoding,
    sessions: Arc<AtomicU64>,
}

impl fmt::Debug for SmingAnnouncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmingAnnouncer")
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl SmingAnnouncer {
    /// Connects with the varint patch prefix (Sming's default).
    pub async fn connect(options: BrokerOptions) -> Result<Self, BrokerError> {
        Self::connect_with(options, PatchEncoding::Varint).await
    }

    /// Connects with a chosen patch prefix (`PatchEncoding::Byte` for devices built with
    /// `ENABLE_OTA_VARINT_VERSION=0`).
    pub async fn connect_with(
        options: BrokerOptions,
        encoding: PatchEncoding,
    ) -> Result<Self, BrokerError> {
        let conn = Connection::open(&options, options.client_id.clone()).await?;
        let sessions = conn.sessions();
        Ok(Self {
            conn: Mutex::new(conn),
            encoding,
            sessions,
        })
    }

    /// How many times the connection was accepted by the broker: 1 after
    /// [`connect`](Self::connect), one more after each automatic reconnect. A caller that
    /// keeps track of what is retained re-publishes when this changes, since a broker without
    /// persistence forgets retained messages when it restarts.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Publishes `image` for `version` retained at QoS 2 and returns once the broker
    /// completed the exchange (PUBCOMP): from then on every subscribing device gets it.
    pub async fn announce(
        &self,
        app: &str,
        version: SmingVersion,
        image: Bytes,
    ) -> Result<Announcement, SmingAnnounceError> {
        let topic = topic(app, version.major, version.minor)?;
        let (payload, prefix) =
            payload(version.patch, &image, self.encoding).map_err(SmingAnnounceError::Patch)?;
        drop(image);
        let payload_len = payload.len();
        if let Some(w) = prefix.warning {
            tracing::warn!(%topic, %version, warning = ?w, "Sming devices will not read this patch as written");
        }
        self.conn
            .lock()
            .await
            .publish_exactly_once(&topic, true, payload)
            .await?;
        tracing::info!(%topic, %version, payload_len, "Sming firmware announced");
        Ok(Announcement {
            topic,
            version,
            prefix_len: prefix.len,
            payload_len,
            warning: prefix.warning,
        })
    }

    /// Clears the retained announce of `app` `major.minor` (an empty retained PUBLISH at QoS 2).
    pub async fn withdraw(
        &self,
        app: &str,
        major: u32,
        minor: u32,
    ) -> Result<(), SmingAnnounceError> {
        let topic = topic(app, major, minor)?;
        self.conn
            .lock()
            .await
            .publish_exactly_once(&topic, true, Bytes::new())
            .await?;
        tracing::info!(%topic, "Sming announce withdrawn");
        Ok(())
    }

    /// Disconnects cleanly.
    pub async fn close(self) {
        self.conn.into_inner().close().await;
    }
}

/// The Sming app id and version of a package that is announced that way: `None` when the
/// package has no Sming app id.
pub fn package_target(package: &OtaPackage) -> Option<Result<(&str, SmingVersion), VersionError>> {
    let app = package.sming_app_id.as_deref()?;
    Some(SmingVersion::parse(&package.version).map(|v| (app, v)))
}

/// Announces a stored package through `announcer` if it carries a Sming app id (its version
/// must be `major.minor.patch`); `Ok(None)` for packages that are not announced that way.
pub async fn announce_package(
    announcer: &SmingAnnouncer,
    ota: &Ota,
    package: &OtaPackage,
) -> Result<Option<Announcement>, SmingAnnounceError> {
    let Some(target) = package_target(package) else {
        return Ok(None);
    };
    let (app, version) = target?;
    topic(app, version.major, version.minor)?;
    let bytes = ota.package_bytes(package).await?;
    announcer.announce(app, version, bytes).await.map(Some)
}

/// Withdraws the announce of a package with a Sming app id; `Ok(false)` for other packages.
pub async fn withdraw_package(
    announcer: &SmingAnnouncer,
    package: &OtaPackage,
) -> Result<bool, SmingAnnounceError> {
    let Some(target) = package_target(package) else {
        return Ok(false);
    };
    let (app, version) = target?;
    announcer
        .withdraw(app, version.major, version.minor)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::{PatchEncoding, SmingVersion, VersionError, payload, topic};
    use proptest::prelude::*;

    #[test]
    fn payloads_match_the_reference_vectors() {
        // Reference §8.1: patch 3 before a ROM starting e9 01 02 03.
        let (p, prefix) = payload(3, &[0xe9, 1, 2, 3], PatchEncoding::Varint).expect("payload");
        assert_eq!((&p[..], prefix.len), (&[3, 0xe9, 1, 2, 3][..], 1));
        let (p, _) = payload(1_700_000_000, &[], PatchEncoding::Varint).expect("payload");
        assert_eq!(&p[..], [0x80, 0xe2, 0xcf, 0xaa, 0x06]);
        let (p, _) = payload(255, &[7], PatchEncoding::Byte).expect("payload");
        assert_eq!(&p[..], [0xff, 7]);
        assert_eq!(topic("test", 4, 3).as_deref(), Ok("a/test/u/4.3"));
    }

    proptest! {
        #[test]
        fn versions_round_trip(major: u32, minor: u32, patch: u32) {
            let v = SmingVersion { major, minor, patch };
            prop_assert_eq!(SmingVersion::parse(&v.to_string()), Ok(v));
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(text in "[0-9.x+ -]{0,16}|\\PC{0,16}") {
            match SmingVersion::parse(&text) {
                Ok(v) => prop_assert_eq!(
                    SmingVersion::parse(&v.to_string()).map(|w| w == v),
                    Ok(true)
                ),
                Err(VersionError::Shape(t) | VersionError::Number { version: t, .. }) => {
                    prop_assert_eq!(t, text);
                }
            }
        }
    }
}
