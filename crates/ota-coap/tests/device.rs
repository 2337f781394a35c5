//! The device client against the real server, through a lossy UDP proxy.
#![allow(clippy::missing_panics_doc)]

mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BARE, TOKEN, bytes, env};
use ota_coap::device::{
    ClientConfig, CoapClient, RunConfig, UpdateOutcome, UpdateTarget, run_update, run_update_with,
};
use ota_core::UpdateError;
use ota_core::checkpoint::Checkpoint;
use ota_core::updater::{Kind, PlainReader};

/// A UDP proxy in front of `server` that drops each datagram (either way) with probability
/// `loss_per_mille`/1000, from a seeded generator. Stops when dropped.
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(server: SocketAddr, loss_per_mille: u64, seed: u64) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = front.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let rng = Arc::new(Mutex::new(seed | 1));
        let lose = {
            let rng = rng.clone();
            move || {
                let mut s = rng.lock().expect("rng");
                *s ^= *s << 13;
                *s ^= *s >> 7;
                *s ^= *s << 17;
                *s % 1000 < loss_per_mille
            }
        };
        let mut threads = Vec::new();
        for upstream in [true, false] {
            let (recv, send) = if upstream {
                (
                    front.try_clone().expect("clone"),
                    back.try_clone().expect("clone"),
                )
            } else {
                (
                    back.try_clone().expect("clone"),
                    front.try_clone().expect("clone"),
                )
            };
            let (stop, dropped, client, lose) =
                (stop.clone(), dropped.clone(), client.clone(), lose.clone());
            recv.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = recv.recv_from(&mut buf) else {
                        continue;
                    };
                    let to = if upstream {
                        *client.lock().expect("client") = Some(from);
                        server
                    } else {
                        match *client.lock().expect("client") {
                            Some(c) => c,
                            None => continue,
                        }
                    };
                    if lose() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let _ = send.send_to(&buf[..n], to);
                }
            }));
        }
        Self {
            addr,
            stop,
            dropped,
            threads,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An in-memory slot and checkpoint store; a write past `cut_after` writes is a power cut.
#[derive(Default)]
struct Flash {
    slot: Vec<u8>,
    checkpoint: Option<Checkpoint>,
    writes: u32,
    cut_after: Option<u32>,
    finalized: bool,
}

impl UpdateTarget for Flash {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.cut_after.is_some_and(|n| self.writes >= n) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.writes += 1;
        let start = usize::try_from(offset).expect("offset");
        if self.slot.len() < start + data.len() {
            self.slot.resize(start + data.len(), 0xff);
        }
        self.slot[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).expect("offset");
        buf.copy_from_slice(
            self.slot
                .get(start..start + buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?,
        );
        Ok(())
    }
    fn finalize(&mut self) -> io::Result<()> {
        self.finalized = true;
        Ok(())
    }
    fn save_checkpoint(&mut self, c: &Checkpoint) -> io::Result<()> {
        // Through the on-flash bytes, as a device would.
        self.checkpoint =
            Some(Checkpoint::from_bytes(&c.to_bytes()).map_err(|_| io::ErrorKind::InvalidData)?);
        Ok(())
    }
    fn clear_checkpoint(&mut self) -> io::Result<()> {
        self.checkpoint = None;
        Ok(())
    }
}

fn client(server: SocketAddr, token: &str, seed: u64) -> CoapClient {
    let mut c = ClientConfig::new(token);
    c.ack_timeout = Duration::from_millis(30);
    c.seed = seed;
    CoapClient::new(UdpSocket::bind("127.0.0.1:0").expect("bind"), server, c)
}

fn run() -> RunConfig {
    let mut r = RunConfig::new(4096, 1 << 20);
    r.backoff_base_ms = 10;
    r.checkpoint_interval = 4096;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_completes_through_ten_percent_loss() {
    let e = env(bytes(96 * 1024 + 123, 5)).await;
    let proxy = Proxy::start(e.addr, 100, 42);
    let via = proxy.addr;
    let (outcome, flash, sent) = tokio::task::spawn_blocking(move || {
        let mut c = client(via, TOKEN, 7);
        let mut flash = Flash::default();
        let outcome = run_update(&mut c, &mut flash, Kind::Firmware, run(), None);
        (outcome, flash, c.transmissions())
    })
    .await
    .expect("join");
    let dropped = proxy.dropped.load(Ordering::Relaxed);
    drop(proxy);
    eprintln!("lossy: {dropped} datagrams dropped, client sent {sent}");
    assert_eq!(outcome, Ok(UpdateOutcome::RebootRequired));
    assert!(flash.finalized);
    assert!(flash.slot == e.image, "image differs");
    // 97 blocks + attributes + reports, each at least once; losses cost retransmissions.
    assert!(dropped > 0 && sent > 100, "dropped {dropped}, sent {sent}");
    let s = e
        .ota
        .store()
        .update_state(e.device.id, ota_server::model::PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(s.state.map(|s| s.to_string()), Some("UPDATING".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_resumes_from_its_checkpoint_after_a_power_cut() {
    let e = env(bytes(40 * 1024, 6)).await;
    let addr = e.addr;
    let (first, second, flash, sent) = tokio::task::spawn_blocking(move || {
        let mut flash = Flash {
            cut_after: Some(6),
            ..Flash::default()
        };
        let mut c = client(addr, TOKEN, 8);
        let first = run_update(&mut c, &mut flash, Kind::Firmware, run(), None);
        flash.cut_after = None;
        let checkpoint = flash.checkpoint.clone();
        let mut c = client(addr, TOKEN, 9);
        let second = run_update(
            &mut c,
            &mut flash,
            Kind::Firmware,
            run(),
            checkpoint.as_ref(),
        );
        (first, second, flash, c.transmissions())
    })
    .await
    .expect("join");
    assert_eq!(first, Ok(UpdateOutcome::Interrupted));
    assert_eq!(second, Ok(UpdateOutcome::RebootRequired));
    assert!(flash.slot == e.image, "image differs");
    // 6 of 10 chunks were kept: the second run fetches 4 chunks of 4 blocks each, plus the
    // attributes and its reports (at most 6), never the first 6 chunks again.
    assert!(sent <= 4 * 4 + 1 + 6, "second run sent {sent} datagrams");
}

#[test]
fn nothing_assigned_means_no_update() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let e = rt.block_on(env(bytes(100, 7)));
    let mut c = client(e.addr, BARE, 1);
    let mut flash = Flash::default();
    assert_eq!(
        run_update(&mut c, &mut flash, Kind::Firmware, run(), None),
        Ok(UpdateOutcome::NoUpdate)
    );
    let mut c = client(e.addr, "BAD", 1);
    assert_eq!(
        c.attributes(),
        Err(ota_coap::device::ClientError::Status { code: 0x81 })
    );
}

#[test]
fn a_silent_server_times_out_after_max_retransmit() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut c = client(silent.local_addr().expect("addr"), TOKEN, 3);
    assert_eq!(
        c.attributes(),
        Err(ota_coap::device::ClientError::Timeout { transmissions: 5 })
    );
    let mut buf = [0u8; 256];
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut got = 0;
    while silent.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_update_with_drives_the_given_reader_and_buffer() {
    let e = env(bytes(12 * 1024 + 5, 8)).await;
    let addr = e.addr;
    let (short, refused, done, flash) = tokio::task::spawn_blocking(move || {
        let mut flash = Flash::default();
        let mut c = client(addr, TOKEN, 10);
        // Shorter than a chunk: refused before anything is asked for.
        let mut small = vec![0u8; 4000];
        let short = run_update_with(
            &mut c,
            &mut flash,
            Kind::Firmware,
            run(),
            None,
            &mut small,
            PlainReader::for_offer,
        );
        // A reader that cannot be built for the offer.
        let mut buf = vec![0u8; 4096];
        let refused = run_update_with(
            &mut c,
            &mut flash,
            Kind::Firmware,
            run(),
            None,
            &mut buf,
            |_| Err::<PlainReader, _>(UpdateError::WrongTarget),
        );
        let done = run_update_with(
            &mut c,
            &mut flash,
            Kind::Firmware,
            run(),
            None,
            &mut buf,
            PlainReader::for_offer,
        );
        (short, refused, done, flash)
    })
    .await
    .expect("join");
    assert_eq!(short, Err(UpdateError::InvalidState));
    assert_eq!(refused, Err(UpdateError::WrongTarget));
    assert_eq!(done, Ok(UpdateOutcome::RebootRequired));
    assert_eq!(flash.writes, 4, "only the last run wrote");
    assert!(flash.finalized);
    assert!(flash.slot == e.image, "image differs");
}
