//! The real `ota-core` [`Updater`] driving the signed and Sming readers over the testkit's lossy
//! chunk server on a virtual clock: success, tampering, unknown signer, downgrade, resume.
#![allow(clippy::cast_possible_truncation)] // test sizes are small

mod common;

use std::cell::RefCell;

use common::*;
use ota_core::UpdateError;
use ota_core::checkpoint::{CHECKPOINT_LEN, Checkpoint};
use ota_core::reader::{Feed, PackageReader, ResumableReader};
use ota_core::updater::{Action, Config, Instant, Kind, Offer, State, Updater};
use ota_crypto::manifest::SemVer;
use ota_crypto::reader::{DevicePolicy, SignedPackageReader};
use ota_crypto::sming::file::{Encryption, Rom, WriteOptions, write_package};
use ota_crypto::sming::{
    DEFAULT_CHUNK_CAPACITY, Slot, SmingConfig, SmingKey, SmingReader, Timestamp, Verifier,
};
use ota_testkit::clock::VirtualClock;
use ota_testkit::server::{ChunkServer, Faults};
use sha2::{Digest, Sha256};

/// Bytes per transport chunk.
const CHUNK: u32 = 1024;
/// Bytes per sealed chunk of the signed packages (larger than the transport chunk on purpose).
const SEALED: u32 = 4096;
const SLOT_LEN: usize = 64 * 1024;
const PAYLOAD_LEN: usize = 40 * 1024 + 123;
/// The link loses this share of the chunk requests.
const LOSS: f64 = 0.1;

/// The device side: its slot, its checkpoint store and every action the updater asked for.
struct Device {
    slot: Vec<u8>,
    checkpoint: Option<[u8; CHECKPOINT_LEN]>,
    log: Vec<Action>,
    finalized: bool,
}

impl Device {
    fn new() -> Self {
        Self {
            slot: vec![0xFF; SLOT_LEN],
            checkpoint: None,
            log: Vec::new(),
            finalized: false,
        }
    }

    /// Index in the log of the first `Write`, if any.
    fn first_write(&self) -> Option<usize> {
        self.log
            .iter()
            .position(|a| matches!(a, Action::Write { .. }))
    }

    /// End of the highest slot byte written.
    fn written_end(&self) -> usize {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Write { offset, len } => Some(*offset as usize + len),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Every `fw_state` (with its error) reported, in order.
    fn states(&self) -> Vec<State> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r.state),
                _ => None,
            })
            .collect()
    }
}

/// How a drive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The updater asked for the reboot into the new slot.
    Reboot,
    /// The updater failed.
    Failed(UpdateError),
    /// The power was cut where the [`Cut`] said.
    PowerCut,
}

/// Where a drive loses power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Never.
    Never,
    /// Right after the `n`-th checkpoint was persisted.
    AfterPersists(usize),
    /// Right after the `n`-th slot write, with the checkpoint the updater describes then
    /// stored (plaintext that grows in uneven steps rarely lands on a persist interval).
    AfterWrites(usize),
}

/// Runs the updater until it reboots, fails, or loses power at `cut`.
fn drive<R: ResumableReader>(
    up: &mut Updater<'_, R>,
    server: &mut ChunkServer,
    clock: &mut VirtualClock,
    dev: &mut Device,
    cut: Cut,
) -> End {
    let mut read_back = vec![0u8; CHUNK as usize];
    let mut persists = 0;
    let mut writes = 0;
    for _ in 0..100_000 {
        let now = Instant::from_millis(clock.now_ms());
        while let Some(action) = up.poll_action() {
            dev.log.push(action.clone());
            match action {
                Action::RequestChunk { index, size } => {
                    server.request(index, size, now.as_millis());
                }
                Action::Write { offset, len } => {
                    let at = offset as usize;
                    dev.slot[at..at + len].copy_from_slice(up.chunk_data());
                    up.handle_write_done(now).expect("write done");
                    writes += 1;
                    if cut == Cut::AfterWrites(writes) {
                        dev.checkpoint = up.checkpoint().map(|cp| cp.to_bytes());
                        server.drop_in_flight();
                        return End::PowerCut;
                    }
                }
                Action::ReadBack { offset, len } => {
                    let at = offset as usize;
                    read_back[..len].copy_from_slice(&dev.slot[at..at + len]);
                    up.handle_read_back(&read_back[..len], now)
                        .expect("read back");
                }
                Action::Persist(cp) => {
                    dev.checkpoint = Some(cp.to_bytes());
                    persists += 1;
                    if cut == Cut::AfterPersists(persists) {
                        server.drop_in_flight();
                        return End::PowerCut;
                    }
                }
                Action::ClearCheckpoint => dev.checkpoint = None,
                Action::Report(_) => {}
                Action::Finalize => {
                    dev.finalized = true;
                    up.handle_finalize_done(now).expect("finalize done");
                }
                Action::Reboot => return End::Reboot,
            }
        }
        if let State::Failed(e) = up.state() {
            return End::Failed(e);
        }
        let next = [
            server.next_delivery_ms(),
            up.poll_timeout().map(Instant::as_millis),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the update stalled with no timer running");
        clock.advance_to(next);
        let now = Instant::from_millis(clock.now_ms());
        if let Some(d) = server.poll_delivery(now.as_millis()) {
            // Reader errors move the machine to FAILED; the loop reports them above.
            let _ = up.handle_chunk(d.index, &d.data, now);
        } else {
            up.handle_timeout(now);
        }
    }
    panic!("no end after 100 000 steps");
}

/// After the reboot the new image confirms itself: the updater reports UPDATED.
fn confirm<R: ResumableReader>(up: &mut Updater<'_, R>, clock: VirtualClock, dev: &mut Device) {
    up.handle_boot_outcome(Kind::Firmware, true, Instant::from_millis(clock.now_ms()));
    while let Some(action) = up.poll_action() {
        dev.log.push(action);
    }
    assert_eq!(up.state(), State::Updated);
    assert_eq!(dev.states().last(), Some(&State::Updated));
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The offer a server announces for `package`: its length and the SHA-256 of the whole file.
fn offer<'a>(title: &'a str, version: &'a str, package: &[u8], hex: &'a str) -> Offer<'a> {
    Offer::new(
        Kind::Firmware,
        title,
        version,
        package.len() as u64,
        "SHA256",
        hex,
    )
}

fn config() -> Config {
    let mut c = Config::new(CHUNK, SLOT_LEN as u64);
    c.request_timeout_ms = 1_000;
    c.checkpoint_interval = 4 * CHUNK;
    c
}

/// The updater's buffer takes one transport chunk plus one whole sealed chunk, which the
/// reader releases at once when its tag verifies.
fn updater_buffer() -> Vec<u8> {
    vec![0u8; (CHUNK + SEALED) as usize]
}

/// Result of one signed download.
struct Outcome {
    end: End,
    dev: Device,
    server_lost: u64,
}

/// Downloads `package` through a fresh updater and a signed reader under `policy`.
fn download_signed(package: &[u8], policy: DevicePolicy<'_>, seed: u64) -> Outcome {
    let keys = key_set();
    let payload_key = payload_key();
    let mut chunk_buf = vec![0u8; SEALED as usize + 16];
    let reader = SignedPackageReader::new(&keys, Some(&payload_key), policy, &mut chunk_buf);
    let mut buf = updater_buffer();
    let mut up = Updater::new(config(), &mut buf, None).expect("config");
    let hex = sha256_hex(package);
    let mut clock = VirtualClock::new();
    let mut server = ChunkServer::new(package.to_vec(), Faults::lossy(LOSS), seed);
    let mut dev = Device::new();
    up.handle_offer(
        &offer("thermostat", "1.2.3", package, &hex),
        reader,
        Instant::from_millis(0),
    )
    .expect("offer accepted");
    let end = drive(&mut up, &mut server, &mut clock, &mut dev, Cut::Never);
    if end == End::Reboot {
        confirm(&mut up, clock, &mut dev);
    }
    Outcome {
        end,
        dev,
        server_lost: server.stats().lost,
    }
}

#[test]
fn signed_encrypted_package_reaches_updated_with_exact_plaintext() {
    let plain = payload(PAYLOAD_LEN, 7);
    let package = pack(SEALED, true, &plain);
    let out = download_signed(&package, policy(), 1);
    assert_eq!(out.end, End::Reboot);
    assert!(
        out.server_lost > 0,
        "the link lost nothing: loss not exercised"
    );
    assert!(out.dev.finalized);
    assert_eq!(out.dev.written_end(), plain.len());
    assert_eq!(&out.dev.slot[..plain.len()], &plain[..]);
    assert!(
        out.dev.slot[plain.len()..].iter().all(|&b| b == 0xFF),
        "bytes written past the plaintext"
    );
    let states: Vec<&str> = out.dev.states().iter().map(|s| s.tb_name()).collect();
    assert_eq!(
        states,
        [
            "DOWNLOADING",
            "DOWNLOADED",
            "VERIFIED",
            "UPDATING",
            "UPDATED"
        ]
    );
}

#[test]
fn flipped_payload_byte_fails_with_decryption_failed_and_never_finalizes() {
    let plain = payload(PAYLOAD_LEN, 8);
    let mut package = pack(SEALED, true, &plain);
    let at = ota_crypto::HEADER_LEN + 2 * (SEALED as usize + 16) + 100;
    package[at] ^= 0x01;
    let out = download_signed(&package, policy(), 2);
    assert_eq!(out.end, End::Failed(UpdateError::DecryptionFailed));
    assert!(!out.dev.finalized);
    assert!(!out.dev.log.contains(&Action::Finalize));
    assert_eq!(
        out.dev.states().last(),
        Some(&State::Failed(UpdateError::DecryptionFailed))
    );
    // Only the two chunks before the flipped one reached the slot.
    assert_eq!(out.dev.written_end(), 2 * SEALED as usize);
    assert_eq!(
        out.dev.checkpoint, None,
        "the checkpoint survived a failure"
    );
}

#[test]
fn unknown_signer_fails_with_signature_invalid_before_any_write() {
    let plain = payload(PAYLOAD_LEN, 9);
    let package = pack_with(spec(SEALED), &other_signer(), true, &plain);
    let out = download_signed(&package, policy(), 3);
    assert_eq!(out.end, End::Failed(UpdateError::SignatureInvalid));
    assert_eq!(out.dev.first_write(), None);
    assert!(!out.dev.log.contains(&Action::Finalize));
    assert_eq!(
        out.dev.states().last(),
        Some(&State::Failed(UpdateError::SignatureInvalid))
    );
}

#[test]
fn downgrade_fails_with_downgrade_rejected_before_any_write() {
    let plain = payload(PAYLOAD_LEN, 10);
    let package = pack(SEALED, true, &plain); // version 1.2.3
    let device = DevicePolicy {
        highest_accepted: SemVer::new(1, 3, 0),
        offered_version: None,
        ..policy()
    };
    let out = download_signed(&package, device, 4);
    assert_eq!(out.end, End::Failed(UpdateError::DowngradeRejected));
    assert_eq!(out.dev.first_write(), None);
    assert_eq!(
        out.dev.states().last(),
        Some(&State::Failed(UpdateError::DowngradeRejected))
    );
}

#[test]
fn offer_checksum_is_not_checked_against_a_signed_package() {
    // With a signed reader the offer's checksum only identifies the package (offer matching
    // and checkpoints); authenticity comes from the signature and the signed digest.
    let plain = payload(PAYLOAD_LEN, 11);
    let package = pack(SEALED, true, &plain);
    let keys = key_set();
    let payload_key = payload_key();
    let mut chunk_buf = vec![0u8; SEALED as usize + 16];
    let reader = SignedPackageReader::new(&keys, Some(&payload_key), policy(), &mut chunk_buf);
    let mut buf = updater_buffer();
    let mut up = Updater::new(config(), &mut buf, None).expect("config");
    let other = sha256_hex(b"some other file");
    let mut clock = VirtualClock::new();
    let mut server = ChunkServer::new(package.clone(), Faults::none(), 5);
    let mut dev = Device::new();
    up.handle_offer(
        &offer("thermostat", "1.2.3", &package, &other),
        reader,
        Instant::from_millis(0),
    )
    .expect("offer accepted");
    assert_eq!(
        drive(&mut up, &mut server, &mut clock, &mut dev, Cut::Never),
        End::Reboot
    );
    assert_eq!(&dev.slot[..plain.len()], &plain[..]);
}

#[test]
fn updater_buffer_smaller_than_a_sealed_chunk_fails_with_invalid_state() {
    let plain = payload(PAYLOAD_LEN, 12);
    let package = pack(SEALED, true, &plain);
    let keys = key_set();
    let payload_key = payload_key();
    let mut chunk_buf = vec![0u8; SEALED as usize + 16];
    let reader = SignedPackageReader::new(&keys, Some(&payload_key), policy(), &mut chunk_buf);
    let mut buf = vec![0u8; CHUNK as usize]; // cannot take the 4096 bytes one tag releases
    let mut up = Updater::new(config(), &mut buf, None).expect("config");
    let hex = sha256_hex(&package);
    let mut clock = VirtualClock::new();
    let mut server = ChunkServer::new(package.clone(), Faults::none(), 6);
    let mut dev = Device::new();
    up.handle_offer(
        &offer("thermostat", "1.2.3", &package, &hex),
        reader,
        Instant::from_millis(0),
    )
    .expect("offer accepted");
    assert_eq!(
        drive(&mut up, &mut server, &mut clock, &mut dev, Cut::Never),
        End::Failed(UpdateError::InvalidState)
    );
    assert!(!dev.finalized);
}

/// Resume: a power cut half-way; the next start re-reads the slot, the
/// reader refuses to absorb it, and the download restarts from chunk 0 and completes.
fn resume_restarts_from_zero<R: ResumableReader>(
    package: &[u8],
    title: &str,
    version: &str,
    readers: [R; 2],
    cut: Cut,
    expected: &[u8],
    buf_len: usize,
) {
    let [first, second] = readers;
    let hex = sha256_hex(package);
    let offer = offer(title, version, package, &hex);
    let mut clock = VirtualClock::new();
    let mut server = ChunkServer::new(package.to_vec(), Faults::lossy(LOSS), 7);
    let mut dev = Device::new();

    let mut buf = vec![0u8; buf_len];
    let mut up = Updater::new(config(), &mut buf, None).expect("config");
    up.handle_offer(&offer, first, Instant::from_millis(clock.now_ms()))
        .expect("offer");
    assert_eq!(
        drive(&mut up, &mut server, &mut clock, &mut dev, cut),
        End::PowerCut
    );
    let stored = dev.checkpoint.expect("a checkpoint was persisted");
    let cp = Checkpoint::from_bytes(&stored).expect("checkpoint decodes");
    assert!(
        cp.written > 0 && cp.written < expected.len() as u64,
        "{cp:?}"
    );
    assert!(
        cp.next_chunk > 0 && cp.package_offset < package.len() as u64,
        "{cp:?}"
    );
    let before_resume = dev.log.len();

    // Power back: a new updater from the stored checkpoint, a fresh reader.
    let mut buf = vec![0u8; buf_len];
    let mut up = Updater::new(config(), &mut buf, Some(&cp)).expect("config");
    up.handle_offer(&offer, second, Instant::from_millis(clock.now_ms()))
        .expect("offer");
    assert_eq!(
        drive(&mut up, &mut server, &mut clock, &mut dev, Cut::Never),
        End::Reboot
    );
    let resumed = &dev.log[before_resume..];
    let read_back = resumed
        .iter()
        .position(|a| matches!(a, Action::ReadBack { offset: 0, .. }))
        .expect("the slot was read back");
    let first_request = resumed
        .iter()
        .position(|a| matches!(a, Action::RequestChunk { .. }))
        .expect("a chunk was requested");
    assert!(read_back < first_request);
    assert_eq!(
        resumed[first_request],
        Action::RequestChunk {
            index: 0,
            size: CHUNK
        }
    );
    assert!(
        resumed[read_back..first_request].contains(&Action::ClearCheckpoint),
        "the refused checkpoint was not cleared"
    );
    assert!(up.stats().read_back > 0);
    confirm(&mut up, clock, &mut dev);
    assert_eq!(&dev.slot[..expected.len()], expected);
}

#[test]
fn signed_resume_restarts_from_chunk_zero_and_completes() {
    let plain = payload(PAYLOAD_LEN, 13);
    let package = pack(SEALED, true, &plain);
    let keys = key_set();
    let payload_key = payload_key();
    // One reader per start, as a rebooted device would build.
    let mut buf_a = vec![0u8; SEALED as usize + 16];
    let mut buf_b = vec![0u8; SEALED as usize + 16];
    let readers = [
        SignedPackageReader::new(&keys, Some(&payload_key), policy(), &mut buf_a),
        SignedPackageReader::new(&keys, Some(&payload_key), policy(), &mut buf_b),
    ];
    resume_restarts_from_zero(
        &package,
        "thermostat",
        "1.2.3",
        readers,
        Cut::AfterPersists(2),
        &plain,
        (CHUNK + SEALED) as usize,
    );
}

const SMING_KEY: &[u8] = include_bytes!("data/sming/ota.key");
const SMING_SLOT: Slot = Slot {
    address: 0x8_2000,
    size: 0x4_0000,
};

fn sming_key() -> SmingKey {
    SmingKey::from_hex(SMING_KEY).expect("reference key parses")
}

/// A signed, encrypted Sming `.ota` with two ROMs; the second belongs in [`SMING_SLOT`].
fn sming_package() -> (Vec<u8>, Vec<u8>) {
    let rom0 = payload(9_000, 1);
    let rom1 = payload(21_000, 2);
    let options = WriteOptions {
        timestamp: Timestamp(0x0000_01A2_B3C4_D5E6),
        signing_key: Some(sming_key().signing_key()),
        encryption: Some(Encryption {
            key: *sming_key().stream_key(),
            header: core::array::from_fn(|i| 0x40 + i as u8),
        }),
    };
    let mut roms = [
        Rom {
            address: 0x2000,
            size: rom0.len() as u32,
            data: &rom0[..],
        },
        Rom {
            address: SMING_SLOT.address,
            size: rom1.len() as u32,
            data: &rom1[..],
        },
    ];
    let mut file = Vec::new();
    write_package(&mut file, &options, &mut roms).expect("package written");
    (file, rom1)
}

fn sming_config() -> SmingConfig {
    SmingConfig {
        verifier: Verifier::Ed25519ph(sming_key().verifying_key()),
        decrypt_key: Some(*sming_key().stream_key()),
        slot: SMING_SLOT,
        minimum_timestamp: None,
    }
}

/// One transport chunk plus one whole secretstream chunk (released at once).
const SMING_BUF: usize = CHUNK as usize + DEFAULT_CHUNK_CAPACITY;

#[test]
fn sming_signed_encrypted_package_reaches_updated_with_the_selected_rom() {
    let (file, rom) = sming_package();
    let hex = sha256_hex(&file);
    let reader: SmingReader = SmingReader::new(&sming_config());
    let mut buf = vec![0u8; SMING_BUF];
    let mut up = Updater::new(config(), &mut buf, None).expect("config");
    let mut clock = VirtualClock::new();
    let mut server = ChunkServer::new(file.clone(), Faults::lossy(LOSS), 8);
    let mut dev = Device::new();
    up.handle_offer(
        &offer("sming-app", "2.0.0", &file, &hex),
        reader,
        Instant::from_millis(0),
    )
    .expect("offer accepted");
    assert_eq!(
        drive(&mut up, &mut server, &mut clock, &mut dev, Cut::Never),
        End::Reboot
    );
    assert!(server.stats().lost > 0, "loss not exercised");
    confirm(&mut up, clock, &mut dev);
    assert_eq!(dev.written_end(), rom.len());
    assert_eq!(&dev.slot[..rom.len()], &rom[..]);
}

#[test]
fn sming_resume_restarts_from_chunk_zero_and_completes() {
    let (file, rom) = sming_package();
    let config = sming_config();
    resume_restarts_from_zero(
        &file,
        "sming-app",
        "2.0.0",
        [
            SmingReader::<DEFAULT_CHUNK_CAPACITY>::new(&config),
            SmingReader::new(&config),
        ],
        Cut::AfterWrites(5),
        &rom,
        SMING_BUF,
    );
}

#[test]
fn signed_reader_restart_clears_progress_and_errors() {
    let plain = payload(10_000, 14);
    let package = pack(SEALED, true, &plain);
    let keys = key_set();
    let payload_key = payload_key();
    let mut chunk_buf = vec![0u8; SEALED as usize + 16];
    let mut reader = SignedPackageReader::new(&keys, Some(&payload_key), policy(), &mut chunk_buf);
    let mut out = vec![0u8; 16 * 1024];
    // Half the package, then a byte that cannot follow: the reader fails.
    let half = package.len() / 2;
    PackageReader::feed(&mut reader, &package[..half], &mut out).expect("first half");
    assert_eq!(
        ResumableReader::absorb_written(&mut reader, &plain[..100]),
        Err(UpdateError::InvalidState)
    );
    let mut bad = package[half..].to_vec();
    bad[0] ^= 0xFF;
    assert_eq!(
        PackageReader::feed(&mut reader, &bad, &mut out).map(|_| ()),
        Err(UpdateError::DecryptionFailed)
    );
    reader.restart();
    assert_eq!(reader.received(), 0);
    assert_eq!(reader.manifest(), None);
    assert_eq!(PackageReader::plaintext_len(&reader), None);
    let mut image = Vec::new();
    let mut input = &package[..];
    while !input.is_empty() {
        let fed = PackageReader::feed(&mut reader, input, &mut out).expect("after restart");
        image.extend_from_slice(&out[..fed.produced]);
        input = &input[fed.consumed..];
    }
    PackageReader::finish(&mut reader).expect("verified after restart");
    assert_eq!(image, plain);
}

#[test]
fn sming_reader_restart_clears_progress_and_errors() {
    let (file, rom) = sming_package();
    let mut reader: SmingReader = SmingReader::new(&sming_config());
    let mut out = vec![0u8; 64 * 1024];
    assert_eq!(
        ResumableReader::absorb_written(&mut reader, &rom[..10]),
        Err(UpdateError::InvalidState)
    );
    let mut bad = file.clone();
    bad[file.len() / 2] ^= 0xFF; // inside a secretstream chunk
    let mut rest = &bad[..];
    let err = loop {
        assert!(!rest.is_empty(), "no error from a tampered chunk");
        match PackageReader::feed(&mut reader, rest, &mut out) {
            Ok(fed) => rest = &rest[fed.consumed..],
            Err(e) => break e,
        }
    };
    assert_eq!(err, UpdateError::DecryptionFailed);
    reader.restart();
    assert_eq!(reader.input_offset(), 0);
    assert_eq!(reader.selected(), None);
    let mut image = Vec::new();
    let mut input = &file[..];
    while !input.is_empty() {
        let fed = PackageReader::feed(&mut reader, input, &mut out).expect("after restart");
        image.extend_from_slice(&out[..fed.produced]);
        input = &input[fed.consumed..];
    }
    PackageReader::finish(&mut reader).expect("signature verifies after restart");
    assert_eq!(image, rom);
}

/// What a device persisted of the reader next to its checkpoint: header, partial sealed
/// chunk, package bytes received, plaintext released.
type Saved = Option<(Vec<u8>, Vec<u8>, u64, u64)>;

/// The signed reader, copying its [`ResumePoint`](ota_crypto::reader::ResumePoint) out after
/// every feed (a device writes the last one next to each checkpoint).
struct Tap<'a> {
    inner: SignedPackageReader<'a>,
    saved: &'a RefCell<Saved>,
}

impl PackageReader for Tap<'_> {
    fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, UpdateError> {
        let fed = PackageReader::feed(&mut self.inner, input, out);
        if let Some(p) = self.inner.resume_point() {
            *self.saved.borrow_mut() = Some((
                p.header.to_vec(),
                p.partial.to_vec(),
                p.received,
                p.released,
            ));
        }
        fed
    }
    fn finish(&mut self) -> Result<(), UpdateError> {
        PackageReader::finish(&mut self.inner)
    }
    fn package_len(&self) -> Option<u64> {
        PackageReader::package_len(&self.inner)
    }
    fn plaintext_len(&self) -> Option<u64> {
        PackageReader::plaintext_len(&self.inner)
    }
}

impl ResumableReader for Tap<'_> {
    fn absorb_written(&mut self, plaintext: &[u8]) -> Result<(), UpdateError> {
        self.inner.absorb_written(plaintext)
    }
    fn restart(&mut self) {
        self.inner.restart();
    }
}

/// Cuts a signed download after its second checkpoint, then resumes it with a reader built
/// from the persisted resume point, altered by `alter` first. Returns how the second run
/// ended, the checkpoint, and the actions of the second run.
fn resume_from_point(
    alter: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>),
) -> (End, Checkpoint, Vec<Action>, Vec<u8>, Device) {
    let plain = payload(PAYLOAD_LEN, 21);
    let package = pack(SEALED, true, &plain);
    let keys = key_set();
    let payload_key = payload_key();
    let hex = sha256_hex(&package);
    let offer = offer("thermostat", "1.2.3", &package, &hex);
    let mut clock = VirtualClock::new();
    let mut server = ChunkServer::new(package.clone(), Faults::lossy(LOSS), 9);
    let mut dev = Device::new();
    let saved = RefCell::new(None);

    let mut chunk_a = vec![0u8; SEALED as usize + 16];
    let first = Tap {
        inner: SignedPackageReader::new(&keys, Some(&payload_key), policy(), &mut chunk_a),
        saved: &saved,
    };
    let mut buf = updater_buffer();
    let mut up = Updater::new(config(), &mut buf, None).expect("config");
    up.handle_offer(&offer, first, Instant::from_millis(0))
        .expect("offer");
    assert_eq!(
        drive(
            &mut up,
            &mut server,
            &mut clock,
            &mut dev,
            Cut::AfterPersists(2)
        ),
        End::PowerCut
    );
    let cp = Checkpoint::from_bytes(&dev.checkpoint.expect("a checkpoint")).expect("decodes");
    let (mut header, mut partial, received, released) =
        saved.borrow().clone().expect("a resume point");
    assert_eq!((received, released), (cp.package_offset, cp.written));
    assert!(!partial.is_empty() && partial.len() < SEALED as usize + 16);
    alter(&mut header, &mut partial);
    let before = dev.log.len();

    let mut chunk_b = vec![0u8; SEALED as usize + 16];
    let header: [u8; ota_crypto::HEADER_LEN] = header.try_into().expect("header length");
    let second = SignedPackageReader::resuming(
        &keys,
        Some(&payload_key),
        policy(),
        &mut chunk_b,
        &header,
        &partial,
    )
    .expect("resuming reader");
    let mut buf = updater_buffer();
    let mut up = Updater::new(config(), &mut buf, Some(&cp)).expect("config");
    up.handle_offer(&offer, second, Instant::from_millis(clock.now_ms()))
        .expect("offer");
    let end = drive(&mut up, &mut server, &mut clock, &mut dev, Cut::Never);
    if end == End::Reboot {
        confirm(&mut up, clock, &mut dev);
    }
    let resumed = dev.log[before..].to_vec();
    (end, cp, resumed, plain, dev)
}

fn first_request(actions: &[Action]) -> Option<u32> {
    actions.iter().find_map(|a| match a {
        Action::RequestChunk { index, .. } => Some(*index),
        _ => None,
    })
}

#[test]
fn signed_resume_from_a_resume_point_continues_where_it_stopped() {
    let (end, cp, resumed, plain, dev) = resume_from_point(|_, _| {});
    assert_eq!(end, End::Reboot);
    assert_eq!(first_request(&resumed), Some(cp.next_chunk));
    assert!(cp.next_chunk > 0);
    let read_back: usize = resumed
        .iter()
        .filter_map(|a| match a {
            Action::ReadBack { len, .. } => Some(*len),
            _ => None,
        })
        .sum();
    assert_eq!(read_back as u64, cp.written);
    assert!(
        !resumed
            .iter()
            .any(|a| matches!(a, Action::RequestChunk { index: 0, .. })),
        "nothing before the checkpoint is fetched again"
    );
    assert_eq!(&dev.slot[..plain.len()], &plain[..]);
}

#[test]
fn a_resume_point_with_an_altered_header_restarts_from_zero() {
    let (end, _, resumed, plain, dev) = resume_from_point(|header, _| header[100] ^= 1);
    assert_eq!(end, End::Reboot);
    assert_eq!(first_request(&resumed), Some(0));
    assert!(resumed.contains(&Action::ClearCheckpoint));
    assert_eq!(&dev.slot[..plain.len()], &plain[..]);
}

#[test]
fn a_resume_point_with_an_altered_partial_chunk_fails_authentication() {
    let (end, cp, resumed, _, dev) = resume_from_point(|_, partial| partial[0] ^= 1);
    assert_eq!(end, End::Failed(UpdateError::DecryptionFailed));
    assert_eq!(first_request(&resumed), Some(cp.next_chunk));
    assert!(!dev.finalized);
}

#[test]
fn resuming_needs_room_for_the_partial_chunk() {
    let keys = key_set();
    let mut small = [0u8; 8];
    let header = [0u8; ota_crypto::HEADER_LEN];
    let err = SignedPackageReader::resuming(&keys, None, policy(), &mut small, &header, &[1; 9])
        .err()
        .expect("too small");
    assert_eq!(
        err,
        ota_crypto::CryptoError::ChunkBufferTooSmall {
            needed: 9,
            available: 8
        }
    );
}

#[test]
fn a_resuming_reader_fed_without_absorbing_starts_over() {
    let plain = payload(5000, 3);
    let package = pack(SEALED, true, &plain);
    let keys = key_set();
    let payload_key = payload_key();
    let mut chunk = vec![0u8; SEALED as usize + 16];
    let header = [0u8; ota_crypto::HEADER_LEN];
    let mut r = SignedPackageReader::resuming(
        &keys,
        Some(&payload_key),
        policy(),
        &mut chunk,
        &header,
        &[7; 10],
    )
    .expect("reader");
    let mut out = vec![0u8; 8192];
    let mut image = Vec::new();
    let mut input = &package[..];
    while !input.is_empty() {
        let fed = r.feed(input, &mut out).expect("feeds");
        image.extend_from_slice(&out[..fed.produced]);
        input = &input[fed.consumed..];
    }
    r.finish().expect("verified");
    assert_eq!(image, plain);
}
