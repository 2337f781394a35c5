//! The EnigmaIoT OTA sender through a real private Mosquitto, against a paho-mqtt emulator of
//! an EnigmaIoT gateway and node that follows the node's rules (reference §6.4): one status 4
//! per gap with its index bookkeeping, the 10 s timeout (status 5, reboot), MD5 check at the
//! end.

mod broker_support;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use broker_support::{Emulator, Mosquitto, image, package, service, sha256_hex};
use ota_core::frame::enigma::{EnigmaError, EnigmaStatus};
use ota_mqtt::broker::{BrokerOptions, TopicError};
use ota_mqtt::enigma::{
    EnigmaConfig, EnigmaDeliverError, EnigmaNode, EnigmaOutcome, EnigmaProgress, EnigmaSendError,
    EnigmaSender, Pace, deliver_package, header_for,
};
use ota_server::model::{Device, DeviceId, EnigmaAddress, PackageType, UpdateState};
use ota_server::service::now_ms;
use serde_json::Value;

const NET: &str = "enigmaiot";
const NODE: &str = "aa:bb:cc:dd:ee:01";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn node_emulator(port: u16, extra: &[&str]) -> Emulator {
    let mut args: Vec<String> = ["--port", &port.to_string(), "--net", NET, "--node", NODE]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Emulator::start("enigma_node.py", &args)
}

struct Run {
    result: Result<EnigmaOutcome, EnigmaSendError>,
    progress: Vec<EnigmaProgress>,
}

fn send(port: u16, config: EnigmaConfig, img: &[u8]) -> Run {
    let sender = EnigmaSender::new(BrokerOptions::new("127.0.0.1", port, "otad-enigma"), config);
    let node = EnigmaNode::new(NET, NODE).expect("node");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let result = rt().block_on(sender.send(&node, img, move |p| {
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(p.clone());
    }));
    let progress = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Run { result, progress }
}

fn statuses(report: &Value) -> Vec<u64> {
    report["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|v| v.as_u64().expect("status"))
        .collect()
}

fn assert_installed(report: &Value, img: &[u8]) {
    assert_eq!(report["outcome"], "installed", "{report}");
    assert_eq!(report["installed_len"], img.len());
    assert_eq!(report["installed_sha256"], sha256_hex(img));
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
}

#[test]
fn streams_an_image_to_a_node() {
    let broker = Mosquitto::start();
    // 95 chunks, the last one partial (20,000 = 94 × 212 + 72).
    let img = image(20_000, 31);
    let emu = node_emulator(broker.port, &[]);
    let run = send(broker.port, EnigmaConfig::default(), &img);
    let outcome = run.result.expect("transfer");
    assert_eq!(
        outcome,
        EnigmaOutcome {
            chunks: 95,
            chunks_sent: 95,
            resends: 0,
            restarts: 0
        }
    );
    let report = emu.report(Duration::from_secs(20));
    assert_installed(&report, &img);
    assert_eq!(statuses(&report), [0, 2, 6]);
    assert_eq!(report["headers"], 1);

    let p = &run.progress;
    assert_eq!(p.first(), Some(&EnigmaProgress::Awake { attempt: 0 }));
    assert!(p.contains(&EnigmaProgress::HeaderSent {
        attempt: 0,
        chunks: 95,
        size: 20_000
    }));
    assert!(p.contains(&EnigmaProgress::Started));
    assert!(p.contains(&EnigmaProgress::ChunkSent {
        index: 95,
        chunks: 95,
        bytes: 20_000
    }));
    let sent = p
        .iter()
        .filter(|e| matches!(e, EnigmaProgress::ChunkSent { .. }))
        .count();
    assert_eq!(sent, 95);
    assert_eq!(
        &p[p.len() - 2..],
        [EnigmaProgress::Verified, EnigmaProgress::Finished]
    );
}

#[test]
fn gaps_are_resent_from_the_reported_position() {
    let broker = Mosquitto::start();
    let img = image(30_000, 32); // 142 chunks
    let emu = node_emulator(broker.port, &["--drop", "5,17,18,60,142"]);
    let run = send(broker.port, EnigmaConfig::default(), &img);
    let outcome = run.result.expect("transfer");
    let report = emu.report(Duration::from_secs(30));
    assert_installed(&report, &img);
    assert_eq!(report["dropped"], serde_json::json!([5, 17, 18, 60, 142]));
    // One status 4 per gap: after 4, 16, 59. Losing 17 and 18 is one gap (18 is dropped too,
    // so 19 is the first out-of-sequence chunk). Losing the last chunk causes no status 4:
    // nothing follows it, so the node times out.
    let s = statuses(&report);
    let gaps: Vec<u64> = s.iter().copied().filter(|&c| c == 4).collect();
    assert_eq!(gaps.len(), 3, "{s:?}");
    let resends: Vec<u16> = run
        .progress
        .iter()
        .filter_map(|e| match e {
            EnigmaProgress::Resend { from } => Some(*from),
            _ => None,
        })
        .collect();
    assert_eq!(resends, [5, 17, 60]);
    assert_eq!(outcome.resends, 3);
    // The lost last chunk: status 5 after 10 s, the node reboots, the sender starts again.
    assert_eq!(outcome.restarts, 1);
    assert!(run.progress.contains(&EnigmaProgress::Restart {
        attempt: 1,
        status: EnigmaStatus::Timeout
    }));
    assert_eq!(s.last(), Some(&6));
}

#[test]
fn node_reboot_restarts_from_message_zero() {
    let broker = Mosquitto::start();
    let img = image(20_000, 33); // 95 chunks
    // After chunk 30 the link drops for 5 s: chunks 31..95 (sent within ~1.5 s) are lost, the
    // node hears nothing valid for 10 s, reports status 5 and reboots; its chunk index starts
    // again at 0.
    let emu = node_emulator(broker.port, &["--deaf-after", "30", "--deaf-for", "5"]);
    let run = send(broker.port, EnigmaConfig::default(), &img);
    let outcome = run.result.expect("transfer");
    let report = emu.report(Duration::from_secs(30));
    assert_installed(&report, &img);
    assert_eq!(statuses(&report), [0, 5, 0, 2, 6]);
    assert_eq!(report["headers"], 2);
    assert_eq!(outcome.restarts, 1);
    assert_eq!(outcome.resends, 0);
    assert!(outcome.chunks_sent >= 95 + 30, "{outcome:?}");
    let restarts: Vec<&EnigmaProgress> = run
        .progress
        .iter()
        .filter(|e| {
            matches!(
                e,
                EnigmaProgress::Restart { .. } | EnigmaProgress::Awake { .. }
            )
        })
        .collect();
    assert_eq!(
        restarts,
        [
            &EnigmaProgress::Awake { attempt: 0 },
            &EnigmaProgress::Restart {
                attempt: 1,
                status: EnigmaStatus::Timeout
            },
            &EnigmaProgress::Awake { attempt: 1 },
        ]
    );
}

#[test]
fn md5_mismatch_stops_with_an_error() {
    let broker = Mosquitto::start();
    let img = image(5_000, 34); // 24 chunks
    let emu = node_emulator(broker.port, &["--corrupt", "7", "--max-runtime", "8"]);
    let run = send(broker.port, EnigmaConfig::default(), &img);
    let e = run.result.expect_err("corrupted image");
    assert!(
        matches!(&e, EnigmaSendError::CheckFailed { node } if node.node == NODE),
        "{e:?}"
    );
    assert!(matches!(
        run.progress.last(),
        Some(EnigmaProgress::Failed { .. })
    ));
    let report = emu.report(Duration::from_secs(20));
    assert_eq!(report["outcome"], "not-installed");
    assert_eq!(statuses(&report), [0, 3, 3]);
}

#[test]
fn images_over_65535_chunks_are_rejected_before_publishing() {
    let max = 65_535 * 212;
    let too_big = vec![0u8; max + 1];
    // No broker at all: the image is refused before any connection is tried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let run = send(port, EnigmaConfig::default(), &too_big);
    let e = run.result.expect_err("too many chunks");
    assert!(
        matches!(
            e,
            EnigmaSendError::Image(EnigmaError::TooManyChunks {
                size,
                needed: 65_536
            }) if size as usize == max + 1
        ),
        "{e:?}"
    );
    // Exactly 65,535 chunks is the largest image.
    assert_eq!(header_for(&too_big[..max]).expect("largest").chunks, 65_535);
    let e = header_for(&[]).expect_err("empty");
    assert!(
        matches!(e, EnigmaSendError::Image(EnigmaError::EmptyImage)),
        "{e:?}"
    );
}

#[test]
fn bad_addresses_and_silent_nodes_fail_with_typed_errors() {
    assert!(matches!(
        EnigmaNode::new("", NODE),
        Err(TopicError::Empty { .. })
    ));
    for (net, node, found) in [(NET, "a/b", '/'), (NET, "+", '+'), ("n#", NODE, '#')] {
        assert!(
            matches!(EnigmaNode::new(net, node), Err(TopicError::BadChar { found: f, .. }) if f == found),
            "{net} {node}"
        );
    }
    // A node built by hand with a bad level is refused by `send` too.
    let broker = Mosquitto::start();
    let bad = EnigmaNode {
        network: NET.into(),
        node: "x/y".into(),
    };
    let sender = EnigmaSender::new(
        BrokerOptions::new("127.0.0.1", broker.port, "otad-enigma-bad"),
        EnigmaConfig::default(),
    );
    let e = rt()
        .block_on(sender.send(&bad, b"image", |_| {}))
        .expect_err("bad node");
    assert!(matches!(e, EnigmaSendError::Topic(_)), "{e:?}");

    // Nobody answers `set/sleeptime`: the sender gives up after the handshake timeout.
    let config = EnigmaConfig {
        handshake_timeout: Duration::from_secs(2),
        handshake_retry: Duration::from_millis(500),
        pace: Pace::Custom(Duration::from_millis(1)),
        ..EnigmaConfig::default()
    };
    let run = send(broker.port, config, b"image");
    let e = run.result.expect_err("silent node");
    assert!(
        matches!(e, EnigmaSendError::NotAwake { last: None, .. }),
        "{e:?}"
    );
}

#[test]
fn pace_presets_match_the_update_script() {
    assert_eq!(Pace::Fast.delay(), Duration::from_millis(20));
    assert_eq!(Pace::Medium.delay(), Duration::from_millis(60));
    assert_eq!(Pace::Slow.delay(), Duration::from_millis(180));
}

#[test]
fn the_server_records_a_delivery_as_the_device_update_state() {
    let broker = Mosquitto::start();
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(12_000, 35);
    let bad_img = image(3_000, 36);
    let (ota, profile) = rt.block_on(service(dir.path()));
    let pkg = rt.block_on(package(&ota, profile, "2.0.0", None, &img));
    let bad_pkg = rt.block_on(package(&ota, profile, "2.0.1", None, &bad_img));
    let device = |name: &str, fw, enigma| Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: name.into(),
        profile_id: profile,
        access_token: format!("token-{name}"),
        firmware_id: Some(fw),
        software_id: None,
        enigma,
    };
    let address = Some(EnigmaAddress {
        network: NET.into(),
        node: NODE.into(),
    });
    let node = device("node", pkg.id, address.clone());
    let bad_node = device("bad-node", bad_pkg.id, address);
    let plain = device("plain", pkg.id, None);
    for d in [&node, &bad_node, &plain] {
        rt.block_on(ota.create_device(d)).expect("device");
    }
    let sender = EnigmaSender::new(
        BrokerOptions::new("127.0.0.1", broker.port, "otad-enigma-srv"),
        EnigmaConfig::default(),
    );
    let state = |d: &Device| {
        rt.block_on(ota.store().update_state(d.id, PackageType::Firmware))
            .expect("state")
    };

    let emu = node_emulator(broker.port, &[]);
    let outcome = rt
        .block_on(deliver_package(&sender, &ota, &node, &pkg))
        .expect("deliver");
    assert_eq!(outcome.chunks, 57);
    assert_installed(&emu.report(Duration::from_secs(20)), &img);
    rt.block_on(ota.flush_progress()).expect("flush");
    let s = state(&node);
    assert_eq!(s.state, Some(UpdateState::Updated), "{s:?}");
    assert_eq!(s.current_version.as_deref(), Some("2.0.0"));
    assert_eq!(s.progress, 12_000);
    assert_eq!(s.anomalies, 0);

    // A failed MD5 check is recorded as FAILED with the error.
    let emu = node_emulator(broker.port, &["--corrupt", "3", "--max-runtime", "6"]);
    let e = rt
        .block_on(deliver_package(&sender, &ota, &bad_node, &bad_pkg))
        .expect_err("corrupted");
    assert!(
        matches!(
            e,
            EnigmaDeliverError::Send(EnigmaSendError::CheckFailed { .. })
        ),
        "{e:?}"
    );
    drop(emu);
    let s = state(&bad_node);
    assert_eq!(s.state, Some(UpdateState::Failed), "{s:?}");
    assert!(
        s.error.as_deref().is_some_and(|t| t.contains("MD5")),
        "{s:?}"
    );

    // A device without an EnigmaIoT address cannot be reached this way.
    let e = rt
        .block_on(deliver_package(&sender, &ota, &plain, &pkg))
        .expect_err("no address");
    assert!(
        matches!(e, EnigmaDeliverError::NoAddress { device } if device == plain.id),
        "{e:?}"
    );
}

#[test]
fn unreadable_results_are_ignored() {
    let broker = Mosquitto::start();
    let img = image(4_000, 37); // 19 chunks
    let emu = node_emulator(broker.port, &["--noise"]);
    let run = send(broker.port, EnigmaConfig::default(), &img);
    let outcome = run.result.expect("transfer");
    assert_eq!((outcome.resends, outcome.restarts), (0, 0));
    let report = emu.report(Duration::from_secs(20));
    assert_installed(&report, &img);
    assert_eq!(statuses(&report), [0, 2, 6]);
}

#[test]
fn a_node_that_lost_its_state_is_restarted() {
    let broker = Mosquitto::start();
    let img = image(10_000, 38); // 48 chunks
    // The node crashes after chunk 20 without a report; the next chunk gets status 1.
    let emu = node_emulator(broker.port, &["--forget-after", "20"]);
    let run = send(broker.port, EnigmaConfig::default(), &img);
    let outcome = run.result.expect("transfer");
    let report = emu.report(Duration::from_secs(20));
    assert_installed(&report, &img);
    assert_eq!(statuses(&report), [0, 1, 0, 2, 6]);
    assert_eq!(outcome.restarts, 1);
    assert!(run.progress.contains(&EnigmaProgress::Restart {
        attempt: 1,
        status: EnigmaStatus::StartError
    }));
}

#[test]
fn limits_end_a_transfer_with_typed_errors() {
    let broker = Mosquitto::start();
    let img = image(5_000, 39); // 24 chunks
    let short = |emu_args: &[&str], config: EnigmaConfig| {
        let mut args = emu_args.to_vec();
        args.extend(["--max-runtime", "5"]);
        let emu = node_emulator(broker.port, &args);
        let run = send(broker.port, config, &img);
        drop(emu);
        let e = run.result.expect_err("limit");
        assert!(
            matches!(run.progress.last(), Some(EnigmaProgress::Failed { .. })),
            "{:?}",
            run.progress.last()
        );
        e
    };

    let e = short(
        &["--drop", "5"],
        EnigmaConfig {
            max_resends: 0,
            ..EnigmaConfig::default()
        },
    );
    assert!(
        matches!(e, EnigmaSendError::TooManyResends { resends: 1, .. }),
        "{e:?}"
    );

    let e = short(
        &["--forget-after", "5"],
        EnigmaConfig {
            max_restarts: 0,
            ..EnigmaConfig::default()
        },
    );
    assert!(
        matches!(e, EnigmaSendError::TooManyRestarts { restarts: 1, .. }),
        "{e:?}"
    );

    // The gateway lost the final reports: no status 6 within the finish timeout.
    let e = short(
        &["--lose-finals"],
        EnigmaConfig {
            finish_timeout: Duration::from_secs(2),
            ..EnigmaConfig::default()
        },
    );
    assert!(
        matches!(e, EnigmaSendError::NoFinalReport { timeout, .. } if timeout == Duration::from_secs(2)),
        "{e:?}"
    );

    // A node whose chunk index survived an earlier transfer (message 0 does not reset it)
    // asks to resume past the end.
    let e = short(&["--initial-index", "500"], EnigmaConfig::default());
    assert!(
        matches!(
            e,
            EnigmaSendError::ResumePastEnd {
                last_chunk: 500,
                chunks: 24,
                ..
            }
        ),
        "{e:?}"
    );
}
