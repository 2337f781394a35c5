//! The fleet end to end over real loopback sockets: in process (the returned summary) and as
//! the binary a user runs (its exit status and printed summary).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ota_demo_fleet::device::{DeviceEnd, FACTORY_VERSION};
use ota_demo_fleet::server::{BAD_VERSION, GOOD_VERSION};
use ota_demo_fleet::transport::TransportKind;
use ota_demo_fleet::view::ViewMode;
use ota_demo_fleet::{FleetError, Options, run};
use ota_server::model::UpdateState;

const BIN: &str = env!("CARGO_BIN_EXE_ota-demo-fleet");

fn options(devices: usize, failing: usize, view: ViewMode) -> Options {
    Options {
        devices,
        failing,
        image_len: 50_000,
        timeout: Duration::from_secs(45),
        view,
    }
}

#[test]
fn healthy_devices_update_and_failing_ones_roll_back() {
    let mut out = Vec::new();
    // Nine devices round-robin over HTTP, CoAP and MQTT; the last three (one per transport)
    // are assigned the failing image.
    let summary = run(&options(9, 3, ViewMode::Lines), &mut out).expect("fleet run");
    let text = String::from_utf8(out).expect("UTF-8 output");
    assert_eq!(summary.devices.len(), 9);
    for d in &summary.devices {
        if d.failing {
            assert_eq!(d.state, Some(UpdateState::Failed), "{d:?}");
            assert_eq!(d.server_version.as_deref(), Some(FACTORY_VERSION), "{d:?}");
            assert!(
                matches!(&d.end, Ok(DeviceEnd::RolledBack { failed, version, .. })
                    if failed == BAD_VERSION && version == FACTORY_VERSION),
                "{d:?}"
            );
        } else {
            assert_eq!(d.state, Some(UpdateState::Updated), "{d:?}");
            assert_eq!(d.server_version.as_deref(), Some(GOOD_VERSION), "{d:?}");
            assert!(
                matches!(&d.end, Ok(DeviceEnd::Current { version, .. }) if version == GOOD_VERSION),
                "{d:?}"
            );
        }
        assert!(d.as_expected(), "{d:?}");
    }
    assert!(summary.unexpected().is_empty());
    assert_eq!(
        summary.by_state(),
        BTreeMap::from([("FAILED", 3), ("UPDATED", 6)])
    );
    assert_eq!(
        summary.by_version(),
        BTreeMap::from([
            (FACTORY_VERSION.to_owned(), 3),
            (GOOD_VERSION.to_owned(), 6)
        ])
    );
    let transports = summary.by_transport();
    assert_eq!(
        transports.keys().copied().collect::<Vec<_>>(),
        TransportKind::ALL.to_vec()
    );
    for t in TransportKind::ALL {
        assert_eq!(
            transports[&t],
            BTreeMap::from([("FAILED", 1), ("UPDATED", 2)]),
            "{t}"
        );
        let line = format!("SUMMARY transport={t} FAILED=1 UPDATED=2");
        assert!(text.contains(&line), "{line:?} not in {text}");
    }
    // Every device downloaded one whole image.
    assert_eq!(summary.bytes, 9 * 50_000);
    assert!(summary.elapsed > Duration::ZERO);
    assert!(summary.mib_per_s() > 0.0);
    // What was printed: the progress lines end with every device done, then the summary.
    assert!(text.contains("done 9/9"), "{text}");
    assert!(text.contains("UPDATED=6 FAILED=3 waiting=0"), "{text}");
    for line in summary.lines() {
        assert!(text.contains(&line), "{line:?} not in {text}");
    }
    assert!(text.contains("SUMMARY state FAILED=3 UPDATED=6"), "{text}");
    assert!(text.contains("SUMMARY as_expected=9/9"), "{text}");
}

#[test]
fn impossible_fleets_are_refused() {
    let mut out = Vec::new();
    assert!(matches!(
        run(&options(2, 3, ViewMode::Quiet), &mut out),
        Err(FleetError::Options(m)) if m.contains("--failing 3 exceeds --devices 2")
    ));
    assert!(matches!(
        run(&options(0, 0, ViewMode::Quiet), &mut out),
        Err(FleetError::Options(m)) if m.contains("--devices")
    ));
    let mut tiny = options(1, 0, ViewMode::Quiet);
    tiny.image_len = 8;
    assert!(matches!(
        run(&tiny, &mut out),
        Err(FleetError::Options(m)) if m.contains("--image-size")
    ));
    assert!(out.is_empty());
}

#[test]
fn the_binary_prints_plain_lines_and_the_summary_when_piped() {
    let output = Command::new(BIN)
        .args(["--devices", "4", "--failing", "1", "--image-size", "40000"])
        .args(["--timeout-secs", "45"])
        .output()
        .expect("running ota-demo-fleet");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Not a terminal: no cursor movement, one line per refresh.
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(
        stdout.starts_with("fleet: 4 devices (2 HTTP, 1 CoAP, 1 MQTT), 1 assigned"),
        "{stdout}"
    );
    assert!(stdout.contains("SUMMARY devices=4 "), "{stdout}");
    assert!(
        stdout.contains("SUMMARY state FAILED=1 UPDATED=3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SUMMARY version 1.0.0=1 1.1.0=3"),
        "{stdout}"
    );
    assert!(stdout.contains("SUMMARY as_expected=4/4"), "{stdout}");
}

#[test]
fn the_binary_fails_on_bad_flags() {
    let output = Command::new(BIN)
        .args(["--devices", "2", "--failing", "5"])
        .output()
        .expect("running ota-demo-fleet");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--failing 5 exceeds --devices 2"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(BIN)
        .args(["--devices", "many"])
        .output()
        .expect("running ota-demo-fleet");
    assert_eq!(output.status.code(), Some(2), "clap's usage error");
}

#[test]
fn devices_stop_with_typed_errors_on_unknown_tokens_and_missing_servers() {
    use ota_demo_fleet::device::{Device, DeviceError, DeviceProgress};
    use ota_demo_fleet::server::{members, start};
    use ota_demo_fleet::transport::{Endpoints, LinkError, connect};

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime
        .block_on(start(&members(1, 0), 4096))
        .expect("server");
    let run = |endpoints: &Endpoints, transport: TransportKind, token: &str| {
        let link = connect(transport, endpoints, token, 8192, 7).expect("link");
        Device::provision(4096, link)
            .expect("provision")
            .run(&DeviceProgress::new(std::time::Instant::now()))
    };

    let err = run(&server.endpoints, TransportKind::Http, "nobody").expect_err("401");
    assert!(
        matches!(
            err,
            DeviceError::Link(LinkError::Http(
                ota_http::device::DeviceError::Unauthorized { .. }
            ))
        ),
        "{err}"
    );
    let err = run(&server.endpoints, TransportKind::Coap, "nobody").expect_err("4.01");
    assert!(
        matches!(
            err,
            DeviceError::Link(LinkError::Coap(ota_coap::device::ClientError::Status {
                code: 0x81
            }))
        ),
        "{err}"
    );
    let err = run(&server.endpoints, TransportKind::Mqtt, "nobody").expect_err("CONNACK refused");
    assert!(
        matches!(
            err,
            DeviceError::Link(LinkError::Mqtt(
                ota_mqtt::device::DeviceError::Refused { .. }
            ))
        ),
        "{err}"
    );

    // Nothing listens on the HTTP port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let gone = Endpoints {
        http: closed,
        ..server.endpoints
    };
    let err = run(&gone, TransportKind::Http, "fleet-http-000").expect_err("refused");
    assert!(
        matches!(
            err,
            DeviceError::Link(LinkError::Http(ota_http::device::DeviceError::Http { .. }))
        ),
        "{err}"
    );
}
