//! The unmodified ThingsBoard Python SDK (`tb-mqtt-client`, MQTT 5) completes a firmware
//! update from the endpoint: default whole-file request, and with a chunk size set (image
//! length a multiple of it, and not). The bytes it writes are compared with the package.

mod common;

use common::{Server, image, python_with_sdk, test_file};
use ota_server::model::{PackageType, UpdateState};

fn sdk_update(image: &[u8], chunk_size: u64) -> Server {
    let s = Server::start(image);
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = dir.path().join("expected.bin");
    std::fs::write(&expected, image).expect("write expected image");
    let work = dir.path().join("device");
    std::fs::create_dir(&work).expect("device dir");
    let mut cmd = python_with_sdk();
    cmd.current_dir(&work)
        .arg(test_file("tb_sdk_update.py"))
        .args([
            "127.0.0.1",
            &s.port(),
            common::TOKEN,
            &expected.display().to_string(),
            &chunk_size.to_string(),
        ]);
    let out = cmd.output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK update failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("OK {} 1.1", image.len())),
        "{stdout}"
    );
    let state = s
        .block_on(
            s.ota()
                .store()
                .update_state(s.device.id, PackageType::Firmware),
        )
        .expect("state");
    assert_eq!(state.state, Some(UpdateState::Updated));
    assert_eq!(state.current_title.as_deref(), Some("demo"));
    assert_eq!(state.current_version.as_deref(), Some("1.1"));
    s
}

#[test]
fn sdk_default_whole_file() {
    let img = image(20_000, 7);
    let s = sdk_update(&img, 0);
    // Reference §11 vector 20: exactly one request, chunk 0, empty size = whole file.
    assert_eq!(s.chunk_reads(), vec![(0, 0)]);
}

#[test]
fn sdk_chunk_size_dividing_the_image() {
    let img = image(4096, 11);
    let s = sdk_update(&img, 1024);
    assert_eq!(
        s.chunk_reads(),
        (0..4).map(|i| (i, 1024)).collect::<Vec<_>>()
    );
}

#[test]
fn sdk_chunk_size_not_dividing_the_image() {
    let img = image(5000, 13);
    let s = sdk_update(&img, 1024);
    assert_eq!(
        s.chunk_reads(),
        (0..5).map(|i| (i, 1024)).collect::<Vec<_>>()
    );
}
