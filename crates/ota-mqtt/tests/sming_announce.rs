//! The Sming retained announce through a real private Mosquitto, received by a paho-mqtt
//! emulator that decodes the payload like a Sming device (sum-of-groups varint, install when
//! the patch is not below its own; reference §1.4–1.5).

mod broker_support;

use std::time::Duration;

use broker_support::{Mosquitto, image, package, service, sha256_hex, sming_device};
use bytes::Bytes;
use ota_core::frame::sming::{PatchEncoding, SmingError, SmingWarning};
use ota_crypto::sming::Timestamp;
use ota_crypto::sming::file::{Rom, WriteOptions, write_package};
use ota_mqtt::broker::{BrokerError, BrokerOptions, MQTT_MAX_REMAINING_LENGTH, TopicError};
use ota_mqtt::sming::{
    SmingAnnounceError, SmingAnnouncer, SmingVersion, VersionError, announce_package,
    withdraw_package,
};
use ota_server::model::{PackageId, PackageSource};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn options(port: u16, id: &str) -> BrokerOptions {
    BrokerOptions::new("127.0.0.1", port, id)
}

fn v(text: &str) -> SmingVersion {
    SmingVersion::parse(text).expect("version")
}

#[test]
fn announce_reaches_devices_and_withdraw_clears_it() {
    let broker = Mosquitto::start();
    let rt = rt();
    // 600 KiB: far above rumqttc's default 10 KiB packet limit, like a real ROM.
    let rom = image(600 * 1024, 7);
    let announcer = rt
        .block_on(SmingAnnouncer::connect(options(broker.port, "otad-sming")))
        .expect("connect");
    let a = rt
        .block_on(announcer.announce("test", v("4.3.7"), Bytes::from(rom.clone())))
        .expect("announce");
    assert_eq!(a.topic, "a/test/u/4.3");
    assert_eq!(
        (a.prefix_len, a.payload_len, a.warning),
        (1, rom.len() + 1, None)
    );

    // A device on 4.3.5 installs 4.3.7: the retained message, delivered at QoS 0.
    let got = sming_device(broker.port, "test", "4.3.5", false);
    assert_eq!(got["outcome"], "installed", "{got}");
    assert_eq!(got["retain"], true);
    assert_eq!(got["qos"], 0);
    assert_eq!(got["patch"], 7);
    assert_eq!(got["body_len"], rom.len());
    assert_eq!(got["body_sha256"], sha256_hex(&rom));
    // Sming installs an equal patch again (only `patch < current` is refused).
    assert_eq!(
        sming_device(broker.port, "test", "4.3.7", false)["outcome"],
        "installed"
    );
    // A device already on a newer patch refuses the older announce.
    let newer = sming_device(broker.port, "test", "4.3.9", false);
    assert_eq!(
        (newer["outcome"].as_str(), newer["patch"].as_u64()),
        (Some("refused"), Some(7))
    );
    // Other minor versions and other apps see nothing.
    assert_eq!(
        sming_device(broker.port, "test", "4.4.0", false)["outcome"],
        "none"
    );
    assert_eq!(
        sming_device(broker.port, "other", "4.3.0", false)["outcome"],
        "none"
    );

    // A newer announce replaces the retained one.
    let rom2 = image(20_000, 8);
    rt.block_on(announcer.announce("test", v("4.3.8"), Bytes::from(rom2.clone())))
        .expect("announce again");
    let got = sming_device(broker.port, "test", "4.3.7", false);
    assert_eq!(
        (got["patch"].as_u64(), got["body_sha256"].as_str()),
        (Some(8), Some(sha256_hex(&rom2).as_str()))
    );

    rt.block_on(announcer.withdraw("test", 4, 3))
        .expect("withdraw");
    let gone = sming_device(broker.port, "test", "4.3.0", false);
    assert_eq!(gone["outcome"], "none", "{gone}");
    rt.block_on(announcer.close());
}

#[test]
fn advanced_ota_package_and_a_patch_the_device_misreads() {
    let broker = Mosquitto::start();
    let rt = rt();
    let rom0 = image(40_000, 11);
    let rom1 = image(40_000, 12);
    let mut ota = Vec::new();
    let opts = WriteOptions {
        timestamp: Timestamp::from_unix_millis(1_764_000_000_000).expect("timestamp"),
        signing_key: None,
        encryption: None,
    };
    let mut roms = [
        Rom {
            address: 0x0000_2000,
            size: 40_000,
            data: &rom0[..],
        },
        Rom {
            address: 0x0010_2000,
            size: 40_000,
            data: &rom1[..],
        },
    ];
    write_package(&mut ota, &opts, &mut roms).expect("write .ota");

    let announcer = rt
        .block_on(SmingAnnouncer::connect(options(
            broker.port,
            "otad-sming-adv",
        )))
        .expect("connect");
    // Patch 300 is the varint `ac 02`; Sming devices add the groups and read 46.
    let a = rt
        .block_on(announcer.announce("adv", v("1.0.300"), Bytes::from(ota.clone())))
        .expect("announce");
    assert_eq!(a.prefix_len, 2);
    assert_eq!(
        a.warning,
        Some(SmingWarning::DeviceMisreads { device_reads: 46 })
    );

    // The device on slot 0x2000 reads patch 46, walks the .ota, checks its MD5 and takes ROM 0.
    let got = sming_device(broker.port, "adv", "1.0.40", true);
    assert_eq!(got["outcome"], "installed", "{got}");
    assert_eq!(
        (got["patch"].as_u64(), got["prefix_len"].as_u64()),
        (Some(46), Some(2))
    );
    assert_eq!(got["body_sha256"], sha256_hex(&ota));
    assert_eq!(got["rom_sha256"], sha256_hex(&rom0));
    // A device on patch 100 of the same minor refuses patch 300: it reads 46.
    assert_eq!(
        sming_device(broker.port, "adv", "1.0.100", true)["outcome"],
        "refused"
    );
    rt.block_on(announcer.withdraw("adv", 1, 0))
        .expect("withdraw");
}

#[test]
fn version_strings_are_checked() {
    for (text, err) in [
        ("1.2", VersionError::Shape("1.2".into())),
        ("1.2.3.4", VersionError::Shape("1.2.3.4".into())),
        ("", VersionError::Shape(String::new())),
        (
            "1.x.3",
            VersionError::Number {
                version: "1.x.3".into(),
                part: "x".into(),
            },
        ),
        (
            "1..3",
            VersionError::Number {
                version: "1..3".into(),
                part: String::new(),
            },
        ),
        (
            "1.2.+3",
            VersionError::Number {
                version: "1.2.+3".into(),
                part: "+3".into(),
            },
        ),
        (
            "1.2.4294967296",
            VersionError::Number {
                version: "1.2.4294967296".into(),
                part: "4294967296".into(),
            },
        ),
    ] {
        assert_eq!(SmingVersion::parse(text), Err(err), "{text:?}");
    }
    assert_eq!(v("0.0.4294967295").patch, u32::MAX);
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let broker = Mosquitto::start();
    let rt = rt();
    let announcer = rt
        .block_on(SmingAnnouncer::connect(options(
            broker.port,
            "otad-sming-bad",
        )))
        .expect("connect");
    for (app, found) in [("a+b", '+'), ("a#", '#'), ("a\0", '\0')] {
        let e = rt
            .block_on(announcer.announce(app, v("1.0.0"), Bytes::from_static(b"x")))
            .expect_err("wildcard app id");
        assert!(
            matches!(e, SmingAnnounceError::Topic(TopicError::BadChar { found: f, .. }) if f == found),
            "{e:?}"
        );
    }
    let e = rt
        .block_on(announcer.withdraw("", 1, 0))
        .expect_err("empty app id");
    assert!(
        matches!(e, SmingAnnounceError::Topic(TopicError::Empty { .. })),
        "{e:?}"
    );
    rt.block_on(announcer.close());

    // One-byte prefix mode cannot carry patch 256.
    let byte_mode = rt
        .block_on(SmingAnnouncer::connect_with(
            options(broker.port, "otad-sming-byte"),
            PatchEncoding::Byte,
        ))
        .expect("connect");
    let e = rt
        .block_on(byte_mode.announce("b", v("1.0.256"), Bytes::from_static(b"x")))
        .expect_err("patch 256 in byte mode");
    assert!(
        matches!(
            e,
            SmingAnnounceError::Patch(SmingError::PatchTooLargeForByte { patch: 256 })
        ),
        "{e:?}"
    );

    // Over the configured payload limit: refused before publishing, nothing retained.
    let mut small = options(broker.port, "otad-sming-small");
    small.max_payload = 1024;
    let limited = rt
        .block_on(SmingAnnouncer::connect(small))
        .expect("connect");
    let e = rt
        .block_on(limited.announce("big", v("1.0.1"), Bytes::from(vec![0u8; 1024])))
        .expect_err("over the limit");
    assert!(
        matches!(
            e,
            SmingAnnounceError::Broker(BrokerError::TooLarge {
                size: 1025,
                max: 1024
            })
        ),
        "{e:?}"
    );
    assert_eq!(
        sming_device(broker.port, "big", "1.0.0", false)["outcome"],
        "none"
    );

    // A limit beyond MQTT's remaining length is refused at connect.
    let mut huge = options(broker.port, "otad-sming-huge");
    huge.max_payload = MQTT_MAX_REMAINING_LENGTH + 1;
    let e = rt
        .block_on(SmingAnnouncer::connect(huge))
        .expect_err("limit");
    assert!(matches!(e, BrokerError::PayloadLimit { .. }), "{e:?}");

    // Nothing listening: a connection error, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut o = options(port, "otad-sming-closed");
    o.ack_timeout = Duration::from_secs(5);
    let e = rt
        .block_on(SmingAnnouncer::connect(o))
        .expect_err("no broker");
    assert!(matches!(e, BrokerError::Connection(_)), "{e:?}");
}

#[test]
fn stored_packages_are_announced_by_their_sming_app_id() {
    let broker = Mosquitto::start();
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let rom = image(50_000, 21);
    let (ota, profile) = rt.block_on(service(dir.path()));
    let announcer = rt
        .block_on(SmingAnnouncer::connect(options(
            broker.port,
            "otad-sming-srv",
        )))
        .expect("connect");

    let pkg = rt.block_on(package(&ota, profile, "2.1.3", Some("srv"), &rom));
    let a = rt
        .block_on(announce_package(&announcer, &ota, &pkg))
        .expect("announce")
        .expect("announced");
    assert_eq!(a.topic, "a/srv/u/2.1");
    let got = sming_device(broker.port, "srv", "2.1.0", false);
    assert_eq!(
        (got["outcome"].as_str(), got["patch"].as_u64()),
        (Some("installed"), Some(3))
    );
    assert_eq!(got["body_sha256"], sha256_hex(&rom));

    // Packages without an app id are not announced; versions must be major.minor.patch.
    let plain = rt.block_on(package(&ota, profile, "2.1.4", None, &rom));
    assert_eq!(
        rt.block_on(announce_package(&announcer, &ota, &plain))
            .expect("skip"),
        None
    );
    assert!(
        !rt.block_on(withdraw_package(&announcer, &plain))
            .expect("skip")
    );
    let odd = rt.block_on(package(&ota, profile, "v2", Some("srv"), &rom));
    let e = rt
        .block_on(announce_package(&announcer, &ota, &odd))
        .expect_err("version");
    assert!(
        matches!(e, SmingAnnounceError::Version(VersionError::Shape(_))),
        "{e:?}"
    );
    // A package whose bytes are not uploaded cannot be announced.
    let mut pending = pkg.clone();
    pending.id = PackageId::new_random();
    pending.source = PackageSource::Pending;
    let e = rt
        .block_on(announce_package(&announcer, &ota, &pending))
        .expect_err("no bytes");
    assert!(matches!(e, SmingAnnounceError::Package(_)), "{e:?}");

    assert!(
        rt.block_on(withdraw_package(&announcer, &pkg))
            .expect("withdraw")
    );
    assert_eq!(
        sming_device(broker.port, "srv", "2.1.0", false)["outcome"],
        "none"
    );
}

#[test]
fn credentials_are_sent_and_a_refusal_is_typed() {
    let broker = Mosquitto::start_with_password("otad", "s3cret");
    let rt = rt();
    let mut o = options(broker.port, "otad-sming-auth");
    for login in [None, Some(("otad", "wrong")), Some(("nobody", "s3cret"))] {
        o.credentials = login.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let e = rt
            .block_on(SmingAnnouncer::connect(o.clone()))
            .expect_err("refused");
        assert!(matches!(e, BrokerError::Refused(_)), "{login:?}: {e:?}");
    }
    o.credentials = Some(("otad".into(), "s3cret".into()));
    let announcer = rt.block_on(SmingAnnouncer::connect(o)).expect("connect");
    let a = rt
        .block_on(announcer.announce("auth", v("1.0.1"), Bytes::from_static(b"rom")))
        .expect("announce");
    assert_eq!(a.payload_len, 4);
    rt.block_on(announcer.close());
}
