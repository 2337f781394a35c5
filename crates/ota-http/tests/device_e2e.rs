//! The blocking device client against the real `Ota` service (SQLite) on a real socket:
//! a full update, an update through a server that cuts connections mid-chunk, a resume from
//! a checkpoint, and the refusals.
#![allow(clippy::missing_panics_doc)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use common::{Server, TOKEN, image};
use ota_core::UpdateError;
use ota_core::checkpoint::CHECKPOINT_LEN;
use ota_core::updater::{Config, ConfigError, Kind, PlainReader};
use ota_http::device::{
    CheckpointStore, DeviceError, HttpDevice, MemoryCheckpoints, MemorySlot, Outcome, Slot,
};
use ota_server::model::{PackageType, UpdateState};

fn config(chunk: u32) -> Config {
    let mut c = Config::new(chunk, 1 << 20);
    c.backoff_base_ms = 1;
    c.backoff_max_ms = 4;
    c.request_timeout_ms = 5_000;
    c.checkpoint_interval = chunk * 4;
    c
}

fn state(s: &Server) -> ota_server::model::DeviceUpdateState {
    s.block_on(
        s.ota()
            .store()
            .update_state(s.device.id, PackageType::Firmware),
    )
    .expect("state")
}

#[test]
fn device_updates_end_to_end_and_reports_every_state() {
    let img = image(50_000, 11);
    let s = Server::start(&img);
    let mut dev =
        HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024)).running("demo", "1.0");
    let mut slot = MemorySlot::new(1 << 20);
    let mut cps = MemoryCheckpoints::default();
    let outcome = dev.update(&mut slot, &mut cps).expect("update");
    assert_eq!(
        outcome,
        Outcome::Installed {
            title: "demo".into(),
            version: "1.1".into()
        }
    );
    assert!(slot.finalized);
    assert!(
        slot.bytes[..img.len()] == img[..],
        "slot differs from the package"
    );
    assert_eq!(cps.record, None, "checkpoint cleared once finalized");
    let stats = dev.stats();
    assert_eq!(
        (
            stats.chunk_requests,
            stats.transport_errors,
            stats.telemetry_failures
        ),
        (49, 0, 0)
    );
    assert_eq!(state(&s).state, Some(UpdateState::Updating));

    dev.report_boot("demo", "1.1", true).expect("boot report");
    let st = state(&s);
    assert_eq!(st.state, Some(UpdateState::Updated));
    assert_eq!(
        (st.current_title.as_deref(), st.current_version.as_deref()),
        (Some("demo"), Some("1.1"))
    );
    assert_eq!(st.error, None);
    assert_eq!(
        dev.update(&mut slot, &mut cps).expect("second check"),
        Outcome::UpToDate
    );
}

/// Cuts every third firmware chunk response after half its body: headers promise the full
/// `Content-Length`, the connection closes mid-body.
async fn cut_every_third(counter: Arc<AtomicU32>, req: Request, next: Next) -> Response {
    let is_chunk = req.uri().path().ends_with("/firmware")
        && req.uri().query().is_some_and(|q| q.contains("chunk="));
    let resp = next.run(req).await;
    if !is_chunk || counter.fetch_add(1, Ordering::SeqCst) % 3 != 1 {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let half = bytes.slice(..bytes.len() / 2);
    let stream = futures_util::stream::iter(vec![
        Ok(half),
        Err(std::io::Error::other("connection cut by the test")),
    ]);
    Response::from_parts(parts, Body::from_stream(stream))
}

#[test]
fn device_completes_when_the_server_drops_connections_mid_chunk() {
    let img = image(20_000, 5);
    let counter = Arc::new(AtomicU32::new(0));
    let c = counter.clone();
    let s = Server::start_with(&img, move |r: Router| {
        r.layer(middleware::from_fn(move |req, next| {
            cut_every_third(c.clone(), req, next)
        }))
    });
    let mut dev = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let mut slot = MemorySlot::new(1 << 20);
    let outcome = dev
        .update(&mut slot, &mut MemoryCheckpoints::default())
        .expect("update");
    assert_eq!(
        outcome,
        Outcome::Installed {
            title: "demo".into(),
            version: "1.1".into()
        }
    );
    assert!(
        slot.bytes[..img.len()] == img[..],
        "slot differs from the package"
    );
    let stats = dev.stats();
    // 20 chunks: every third answer is cut, so about a third of the requests failed and
    // were asked again.
    assert!(stats.transport_errors >= 9, "{stats:?}");
    assert_eq!(
        stats.chunk_requests,
        20 + stats.transport_errors,
        "{stats:?}"
    );
    assert_eq!(counter.load(Ordering::SeqCst), stats.chunk_requests);
}

/// Records the checkpoint saved at the `keep`-th save and ignores later saves and clears:
/// what flash holds if power is cut right after that save.
#[derive(Default)]
struct PowerCutAfter {
    keep: u32,
    saves: u32,
    record: Option<Vec<u8>>,
}

impl CheckpointStore for PowerCutAfter {
    fn load(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.record.clone())
    }
    fn save(&mut self, record: &[u8; CHECKPOINT_LEN]) -> std::io::Result<()> {
        self.saves += 1;
        if self.saves == self.keep {
            self.record = Some(record.to_vec());
        }
        Ok(())
    }
    fn clear(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn device_resumes_from_its_checkpoint_after_a_restart() {
    let img = image(30_000, 9);
    let s = Server::start(&img);
    let mut first = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let mut slot = MemorySlot::new(1 << 20);
    let mut flash = PowerCutAfter {
        keep: 3,
        ..PowerCutAfter::default()
    };
    assert!(matches!(
        first.update(&mut slot, &mut flash).expect("first run"),
        Outcome::Installed { .. }
    ));
    // The third checkpoint: 3 × 4 chunks of 1 KiB written. The slot holds what was written.
    let mut restarted = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let mut resumed_slot = MemorySlot {
        bytes: slot.bytes[..12 * 1024].to_vec(),
        finalized: false,
    };
    resumed_slot.bytes.resize(1 << 20, 0xFF);
    let outcome = restarted
        .update(&mut resumed_slot, &mut flash)
        .expect("resumed run");
    assert!(matches!(outcome, Outcome::Installed { .. }), "{outcome:?}");
    assert!(resumed_slot.bytes[..img.len()] == img[..]);
    let stats = restarted.stats();
    assert_eq!(
        (stats.read_back, stats.chunk_requests),
        (12 * 1024, 30 - 12),
        "{stats:?}"
    );
}

#[test]
fn corrupted_slot_is_not_trusted_on_resume() {
    let img = image(8_192, 4);
    let s = Server::start(&img);
    let mut slot = MemorySlot::new(1 << 20);
    let mut flash = PowerCutAfter {
        keep: 1,
        ..PowerCutAfter::default()
    };
    let mut first = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    assert!(matches!(
        first.update(&mut slot, &mut flash).expect("first run"),
        Outcome::Installed { .. }
    ));
    slot.bytes[100] ^= 0xFF;
    slot.finalized = false;
    let mut restarted = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    assert!(matches!(
        restarted.update(&mut slot, &mut flash).expect("resumed"),
        Outcome::Installed { .. }
    ));
    assert!(slot.bytes[..img.len()] == img[..]);
    assert_eq!(restarted.stats().chunk_requests, 8, "the whole image again");
}

#[test]
fn refusals_and_withdrawals() {
    let s = Server::start(&image(4096, 1));
    let mut bad = HttpDevice::new(&s.base(), "BAD", Kind::Firmware, config(1024));
    let err = bad
        .update(
            &mut MemorySlot::new(8192),
            &mut MemoryCheckpoints::default(),
        )
        .expect_err("401");
    assert!(matches!(err, DeviceError::Unauthorized { .. }), "{err}");

    s.unassigned_device("NOFW");
    let mut none = HttpDevice::new(&s.base(), "NOFW", Kind::Firmware, config(1024));
    assert_eq!(
        none.update(
            &mut MemorySlot::new(8192),
            &mut MemoryCheckpoints::default()
        )
        .expect("ok"),
        Outcome::NoOffer
    );

    s.url_package_device("URLDEV");
    let mut ext = HttpDevice::new(&s.base(), "URLDEV", Kind::Firmware, config(1024));
    let outcome = ext
        .update(
            &mut MemorySlot::new(8192),
            &mut MemoryCheckpoints::default(),
        )
        .expect("ok");
    assert_eq!(
        outcome,
        Outcome::ExternalUrl("https://example.com/fw.bin".into())
    );

    // An image larger than the slot fails before any chunk, and says so to the server.
    let mut small = HttpDevice::new(
        &s.base(),
        TOKEN,
        Kind::Firmware,
        Config {
            slot_capacity: 1000,
            ..config(1024)
        },
    );
    let outcome = small
        .update(
            &mut MemorySlot::new(1000),
            &mut MemoryCheckpoints::default(),
        )
        .expect("ok");
    assert_eq!(
        outcome,
        Outcome::Failed(ota_core::UpdateError::InsufficientStorage)
    );
    assert_eq!(small.stats().chunk_requests, 0);
    let st = state(&s);
    assert_eq!(st.state, Some(UpdateState::Failed));
    assert!(
        st.error
            .as_deref()
            .is_some_and(|e| e.starts_with("INSUFFICIENT_STORAGE")),
        "{st:?}"
    );

    // The assignment changes between the offer and the chunks: the server answers 400 and
    // the device stops with CANCELLED instead of mixing two images.
    let offer = small.fetch_offer().expect("offer").expect("complete");
    s.reassign("1.2", &[7; 100]);
    let mut dev = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let outcome = dev
        .download(
            &offer,
            &mut MemorySlot::new(8192),
            &mut MemoryCheckpoints::default(),
        )
        .expect("ok");
    assert_eq!(outcome, Outcome::Failed(ota_core::UpdateError::Cancelled));
}

/// A TCP proxy that closes the connection each time the server→device byte count crosses
/// the next multiple of `every` (after the first `spare` bytes): cuts land anywhere —
/// inside headers or inside a chunk's body.
fn cutting_proxy(
    upstream: std::net::SocketAddr,
    spare: u64,
    every: u64,
) -> (std::net::SocketAddr, Arc<AtomicU32>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Mutex;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let cuts = Arc::new(AtomicU32::new(0));
    let sent = Arc::new(Mutex::new(0u64));
    let counted = cuts.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(upstream) else {
                break;
            };
            let (mut c_in, mut s_out) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let (sent, cuts) = (sent.clone(), counted.clone());
            std::thread::spawn(move || {
                let (mut s_in, mut c_out) = (server, client);
                let mut buf = [0u8; 4096];
                loop {
                    let n = match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut total = sent.lock().expect("lock");
                    let before = *total;
                    let after = before + n as u64;
                    let next_cut = if before < spare {
                        spare + every
                    } else {
                        (before - spare) / every * every + every + spare
                    };
                    if after >= next_cut {
                        let keep = usize::try_from(next_cut - before).expect("small");
                        let _ = c_out.write_all(&buf[..keep]);
                        *total = next_cut;
                        cuts.fetch_add(1, Ordering::SeqCst);
                        let _ = c_out.shutdown(Shutdown::Both);
                        let _ = s_in.shutdown(Shutdown::Both);
                        break;
                    }
                    *total = after;
                    drop(total);
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, cuts)
}

#[test]
fn device_completes_through_a_proxy_that_cuts_connections_anywhere() {
    let img = image(24_000, 13);
    let s = Server::start(&img);
    let (proxy, cuts) = cutting_proxy(s.addr, 2_000, 3_001);
    let mut dev = HttpDevice::new(
        &format!("http://{proxy}"),
        TOKEN,
        Kind::Firmware,
        config(1024),
    );
    let mut slot = MemorySlot::new(1 << 20);
    let outcome = dev
        .update(&mut slot, &mut MemoryCheckpoints::default())
        .expect("update");
    assert_eq!(
        outcome,
        Outcome::Installed {
            title: "demo".into(),
            version: "1.1".into()
        }
    );
    assert!(
        slot.bytes[..img.len()] == img[..],
        "slot differs from the package"
    );
    let stats = dev.stats();
    assert!(cuts.load(Ordering::SeqCst) >= 5, "{stats:?}");
    assert!(stats.transport_errors >= 1, "{stats:?}");
    assert_eq!(
        stats.chunk_requests,
        24 + stats.transport_errors,
        "{stats:?}"
    );
}

/// One hostile exchange: writes `bytes`, closes its sending side if `half_close` (noise has
/// no end of its own), reads what comes back.
fn garbage_exchange(addr: std::net::SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn garbage_from_one_source_does_not_disturb_a_device() {
    let img = image(40_000, 21);
    let s = Server::start(&img);
    let addr = s.addr;
    let flood = std::thread::spawn(move || {
        let mut seed = 0x9E37_79B9u32;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let started = std::time::Instant::now();
        let mut answered_4xx = 0u32;
        let mut total = 0u32;
        for i in 0..1500u32 {
            let payload: Vec<u8> = match i % 5 {
                0 => (0..=(rand() % 300)).map(|_| rand().to_le_bytes()[0]).collect(),
                1 => format!("GET /api/v1/{TOKEN}/firmware?title=demo&version=1.1&size={}&chunk={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", rand(), rand()).into_bytes(),
                2 => format!("GET /api/v1/{}/firmware HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "%2e%2e/".repeat(50)).into_bytes(),
                3 => format!("GET / HTTP/1.1\r\nConnection: close\r\nX: {}\r\n\r\n", "a".repeat(200_000)).into_bytes(),
                _ => b"POST /api/v1/TOKEN/telemetry HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{\"a\":".to_vec(),
            };
            let answer = garbage_exchange(addr, &payload, i % 5 == 0);
            total += 1;
            if answer.starts_with(b"HTTP/1.1 4") {
                answered_4xx += 1;
            }
            // Noise may be closed without a word; everything else gets an answer.
            assert!(
                i % 5 == 0 || answer.starts_with(b"HTTP/1.1 "),
                "no answer to request {i}"
            );

            assert!(
                !answer.starts_with(b"HTTP/1.1 5"),
                "server error for request {i}"
            );
        }
        (total, answered_4xx, started.elapsed())
    });
    let mut dev = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let mut slot = MemorySlot::new(1 << 20);
    let outcome = dev
        .update(&mut slot, &mut MemoryCheckpoints::default())
        .expect("update");
    assert_eq!(
        outcome,
        Outcome::Installed {
            title: "demo".into(),
            version: "1.1".into()
        }
    );
    assert!(slot.bytes[..img.len()] == img[..]);
    assert_eq!(dev.stats().transport_errors, 0);
    let (total, answered_4xx, took) = flood.join().expect("flood thread");
    assert_eq!(total, 1500);
    // Every well-formed-but-wrong request gets a 4xx; pure noise may just be closed.
    assert!(
        answered_4xx >= 1200,
        "{answered_4xx} of {total} answered 4xx in {took:?}"
    );
    let after = common::curl(
        &[],
        &s.url(&format!(
            "/api/v1/{TOKEN}/firmware?title=demo&version=1.1&size=1024&chunk=3"
        )),
    );
    assert_eq!(
        (after.status, after.body.as_slice()),
        (200, &img[3072..4096])
    );
}

/// A slot that loses power at its write number `writes_left + 1`: that write and every later
/// one fail with [`std::io::ErrorKind::Interrupted`].
struct DyingSlot {
    inner: MemorySlot,
    writes_left: u32,
}

impl Slot for DyingSlot {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.writes_left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "power cut",
            ));
        }
        self.writes_left -= 1;
        self.inner.write(offset, data)
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, buf)
    }
    fn finalize(&mut self) -> std::io::Result<()> {
        self.inner.finalize()
    }
}

#[test]
fn an_interrupted_write_is_a_power_cut_that_reports_nothing_and_resumes() {
    let img = image(20_000, 5);
    let s = Server::start(&img);
    let mut dev = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let offer = dev.fetch_offer().expect("attributes").expect("an offer");
    let reader = PlainReader::for_offer(&offer.as_offer()).expect("plain reader");
    let mut slot = DyingSlot {
        inner: MemorySlot::new(1 << 20),
        writes_left: 5,
    };
    let mut cps = MemoryCheckpoints::default();
    let mut buf = vec![0u8; 1024];
    let err = dev
        .download_with(&offer, reader, &mut buf, &mut slot, &mut cps)
        .expect_err("the power went");
    assert!(
        matches!(&err, DeviceError::PowerCut(e) if e.kind() == std::io::ErrorKind::Interrupted),
        "{err}"
    );
    assert_eq!(err.to_string(), "power cut: power cut");
    // Six chunks asked for, the sixth not written; no FAILED went to the server.
    assert_eq!(dev.stats().chunk_requests, 6);
    assert_eq!(state(&s).state, Some(UpdateState::Downloading));
    assert!(!slot.inner.finalized);
    assert!(cps.record.is_some(), "the checkpoint after 4 chunks");

    // Power back: the stored checkpoint's 4 KiB are re-read, the rest downloaded.
    let mut restarted = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let outcome = restarted
        .update(&mut slot.inner, &mut cps)
        .expect("resumed run");
    assert!(matches!(outcome, Outcome::Installed { .. }), "{outcome:?}");
    assert!(slot.inner.bytes[..img.len()] == img[..]);
    assert_eq!(
        (
            restarted.stats().read_back,
            restarted.stats().chunk_requests
        ),
        (4 * 1024, 20 - 4)
    );
}

#[test]
fn a_plaintext_buffer_shorter_than_a_chunk_is_refused() {
    let img = image(4_000, 6);
    let s = Server::start(&img);
    let mut dev = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let mut slot = MemorySlot::new(1 << 20);
    let mut cps = MemoryCheckpoints::default();
    let mut buf = vec![0u8; 1000];
    let err = dev
        .update_with(&mut slot, &mut cps, &mut buf, |offer| {
            PlainReader::for_offer(&offer.as_offer())
        })
        .expect_err("buffer too small");
    assert!(
        matches!(
            err,
            DeviceError::Config(ConfigError::BufferTooSmall {
                buffer: 1000,
                chunk_size: 1024
            })
        ),
        "{err}"
    );
    assert_eq!(dev.stats().chunk_requests, 0);
}

#[test]
fn a_reader_that_cannot_be_built_fails_the_update_and_reports_it() {
    let img = image(4_000, 7);
    let s = Server::start(&img);
    let mut dev = HttpDevice::new(&s.base(), TOKEN, Kind::Firmware, config(1024));
    let mut slot = MemorySlot::new(1 << 20);
    let mut cps = MemoryCheckpoints::default();
    let mut buf = vec![0u8; 1024];
    let outcome = dev
        .update_with(&mut slot, &mut cps, &mut buf, |_| {
            Err::<PlainReader, _>(UpdateError::WrongTarget)
        })
        .expect("a refused update is an outcome");
    assert_eq!(outcome, Outcome::Failed(UpdateError::WrongTarget));
    assert_eq!(dev.stats().chunk_requests, 0);
    let st = state(&s);
    assert_eq!(st.state, Some(UpdateState::Failed));
    assert!(
        st.error
            .as_deref()
            .is_some_and(|e| e.starts_with("WRONG_TARGET")),
        "{:?}",
        st.error
    );
}
