//! Properties of the updater: no event sequence panics or breaks its bounds, and any seeded
//! lossy, duplicating, reordering link delivers the exact image.

mod scenario_support;

use ota_core::updater::{Action, Config, Instant, Kind, Offer, PlainReader, State, Updater};
use ota_testkit::clock::VirtualClock;
use ota_testkit::server::{ChunkServer, Faults};
use proptest::prelude::*;
use scenario_support::{End, RamHost, Script, Trace, config, drive, image, sha256_hex};

#[derive(Clone, Debug)]
enum Event {
    Chunk(u32, Vec<u8>),
    /// The right bytes of chunk `n` of the first offer's image.
    Good(u32),
    WriteDone,
    ReadBack(Vec<u8>),
    Timeout(u64),
    TransportError,
    Cancel,
    FinalizeDone,
    Offer(bool),
    Poll,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u32..6, prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(i, b)| Event::Chunk(i, b)),
        (0u32..5).prop_map(Event::Good),
        (0u32..5).prop_map(Event::Good),
        Just(Event::WriteDone),
        Just(Event::WriteDone),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(Event::ReadBack),
        (0u64..5_000).prop_map(Event::Timeout),
        Just(Event::TransportError),
        Just(Event::Cancel),
        Just(Event::FinalizeDone),
        any::<bool>().prop_map(Event::Offer),
        Just(Event::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_event_sequences_never_panic(events in prop::collection::vec(event(), 0..60)) {
        let img = image(200, 1);
        let hex = sha256_hex(&img);
        let offers = [
            Offer::new(Kind::Firmware, "app", "2", 200, "SHA256", &hex),
            Offer::new(Kind::Software, "app", "3", 150, "SHA256", &hex),
        ];
        let mut c = Config::new(64, 256);
        c.checkpoint_interval = 128;
        let mut buf = [0u8; 64];
        let mut up: Updater<'_, PlainReader> = Updater::new(c, &mut buf, None).unwrap();
        let mut now = 0u64;
        for e in events {
            let t = Instant::from_millis(now);
            match e {
                Event::Chunk(i, b) => { let _ = up.handle_chunk(i, &b, t); }
                Event::Good(i) => {
                    let s = (i as usize * 64).min(200);
                    let _ = up.handle_chunk(i, &img[s..(s + 64).min(200)], t);
                }
                Event::WriteDone => { let _ = up.handle_write_done(t); }
                Event::ReadBack(b) => { let _ = up.handle_read_back(&b, t); }
                Event::Timeout(dt) => { now += dt; up.handle_timeout(Instant::from_millis(now)); }
                Event::TransportError => up.handle_transport_error(t),
                Event::Cancel => up.handle_cancel(t),
                Event::FinalizeDone => { let _ = up.handle_finalize_done(t); }
                Event::Offer(second) => {
                    let o = &offers[usize::from(second)];
                    let r = PlainReader::for_offer(o).unwrap();
                    let _ = up.handle_offer(o, r, t);
                }
                Event::Poll => {}
            }
            while let Some(a) = up.poll_action() {
                match a {
                    Action::Write { len, .. } => prop_assert_eq!(up.chunk_data().len(), len),
                    Action::RequestChunk { size, .. } => prop_assert_eq!(size, 64),
                    Action::Persist(cp) => {
                        prop_assert!(cp.written <= 256);
                        prop_assert!(cp.package_offset <= cp.package_size);
                    }
                    _ => {}
                }
            }
            let p = up.progress();
            prop_assert!(p.done <= p.total);
            if let Some(deadline) = up.poll_timeout() {
                prop_assert!(deadline.as_millis() >= now);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_seeded_faulty_link_delivers_the_exact_image(
        seed in any::<u64>(),
        len in 1usize..20_000,
        loss in 0.0f64..0.2,
        duplicate in 0.0f64..0.3,
        reorder in 0.0f64..0.3,
    ) {
        let img = image(len, 7);
        let hex = sha256_hex(&img);
        let offer = Offer::new(Kind::Firmware, "app", "9", len as u64, "SHA256", &hex);
        let faults = Faults { loss, duplicate, reorder, reorder_delay_ms: 500, ..Faults::none() };
        let mut server = ChunkServer::new(img.clone(), faults, seed);
        let mut clock = VirtualClock::new();
        let mut host = RamHost::new(20_480);
        let mut cfg = config(512, 20_480, 4);
        cfg.max_retries = 30;
        let mut buf = vec![0u8; 512];
        let mut up = Updater::new(cfg, &mut buf, None).unwrap();
        up.handle_offer(&offer, PlainReader::for_offer(&offer).unwrap(), Instant::from_millis(0)).unwrap();
        let mut trace = Trace::default();
        let end = drive(&mut up, &mut server, &mut clock, &mut host, Script::default(), &mut trace);
        prop_assert_eq!(end, End::Reboot);
        prop_assert_eq!(up.state(), State::Updating);
        prop_assert_eq!(&host.slot[..len], &img[..]);
        prop_assert_eq!(trace.states(), ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING"]);
    }
}
