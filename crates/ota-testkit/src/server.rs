//! A scripted chunk server over an image, with seeded faults.
//!
//! It answers chunk requests the way ThingsBoard does (§3 of the protocol reference): chunk
//! `n` of size `s` is the byte range `[s·n, min(len, s·(n+1)))`, a start at or past the end is a
//! 0-byte payload, size 0 is the whole file. On top of that it loses, duplicates, delays
//! (so that answers overtake each other) and stalls, all drawn from one seeded RNG: the same
//! seed and the same request sequence give the same deliveries, byte for byte.
//!
//! Time is a number the caller passes in (milliseconds of a [`VirtualClock`](crate::clock::VirtualClock)).
//!
//! ```
//! use ota_testkit::server::{ChunkServer, Faults};
//! let mut server = ChunkServer::new(b"hello world".to_vec(), Faults::none(), 7);
//! server.request(1, 4, 0);
//! let at = server.next_delivery_ms().unwrap();
//! let d = server.poll_delivery(at).unwrap();
//! assert_eq!((d.index, &d.data[..]), (1, &b"o wo"[..]));
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which faults the server injects, and how often.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a request is silently lost (no answer at all).
    pub loss: f64,
    /// Probability that an answer is delivered twice.
    pub duplicate: f64,
    /// Probability that an answer gets an extra delay of up to `reorder_delay_ms`
    /// (so later answers can overtake it).
    pub reorder: f64,
    /// Upper bound of the extra delay of a reordered answer.
    pub reorder_delay_ms: u64,
    /// Fixed one-way latency of every answer.
    pub latency_ms: u64,
    /// Number of requests answered before the server goes silent for good (`None`: never).
    pub stall_after: Option<u64>,
}

impl Faults {
    /// A perfect link: 10 ms latency, nothing lost, duplicated, reordered or stalled.
    pub const fn none() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_ms: 0,
            latency_ms: 10,
            stall_after: None,
        }
    }

    /// A perfect link that loses each request with probability `loss`.
    pub const fn lossy(loss: f64) -> Self {
        Self {
            loss,
            ..Self::none()
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

/// One answer on its way to the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When it arrives (ms).
    pub at_ms: u64,
    /// The chunk index it answers.
    pub index: u32,
    /// The chunk bytes (empty past the end of the image).
    pub data: Vec<u8>,
    seq: u64,
}

/// What the server did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests received.
    pub requests: u64,
    /// Requests dropped by the loss fault.
    pub lost: u64,
    /// Answers delivered twice.
    pub duplicated: u64,
    /// Answers given an extra delay.
    pub reordered: u64,
    /// Requests ignored because the server stalled.
    pub stalled: u64,
    /// Answers handed to the device.
    pub delivered: u64,
}

/// A deterministic, fault-injecting chunk server over one image.
#[derive(Debug)]
pub struct ChunkServer {
    image: Vec<u8>,
    faults: Faults,
    rng: StdRng,
    in_flight: Vec<Delivery>,
    next_seq: u64,
    stats: ServerStats,
}

impl ChunkServer {
    /// A server for `image` with the given faults, seeded with `seed`.
    pub fn new(image: Vec<u8>, faults: Faults, seed: u64) -> Self {
        Self {
            image,
            faults,
            rng: StdRng::seed_from_u64(seed),
            in_flight: Vec::new(),
            next_seq: 0,
            stats: ServerStats::default(),
        }
    }

    /// The image being served.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// Replaces the fault script (e.g. to stall or heal the link mid-test).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// What the server did so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The bytes of chunk `index` of `size` bytes, as ThingsBoard slices them.
    pub fn slice(&self, index: u32, size: u32) -> &[u8] {
        if size == 0 {
            return &self.image;
        }
        let len = self.image.len() as u64;
        let start = (u64::from(index) * u64::from(size)).min(len);
        let end = (start + u64::from(size)).min(len);
        // Both bounds are ≤ len, which came from a usize.
        #[allow(clippy::cast_possible_truncation)]
        self.image
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The device asks for chunk `index` of `size` bytes at time `now_ms`.
    pub fn request(&mut self, index: u32, size: u32, now_ms: u64) {
        self.stats.requests += 1;
        if self
            .faults
            .stall_after
            .is_some_and(|n| self.stats.requests > n)
        {
            self.stats.stalled += 1;
            return;
        }
        if self.rng.random_bool(self.faults.loss.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return;
        }
        let data = self.slice(index, size).to_vec();
        let copies = if self.rng.random_bool(self.faults.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at_ms = now_ms.saturating_add(self.faults.latency_ms);
            if self.faults.reorder_delay_ms > 0
                && self.rng.random_bool(self.faults.reorder.clamp(0.0, 1.0))
            {
                self.stats.reordered += 1;
                at_ms =
                    at_ms.saturating_add(self.rng.random_range(1..=self.faults.reorder_delay_ms));
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.in_flight.push(Delivery {
                at_ms,
                index,
                data: data.clone(),
                seq,
            });
        }
    }

    /// When the next answer arrives, if any is in flight.
    pub fn next_delivery_ms(&self) -> Option<u64> {
        self.in_flight.iter().map(|d| d.at_ms).min()
    }

    /// The earliest answer due at or before `now_ms` (ties in sending order).
    pub fn poll_delivery(&mut self, now_ms: u64) -> Option<Delivery> {
        let pos = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, d)| d.at_ms <= now_ms)
            .min_by_key(|(_, d)| (d.at_ms, d.seq))
            .map(|(i, _)| i)?;
        self.stats.delivered += 1;
        Some(self.in_flight.swap_remove(pos))
    }

    /// Drops every answer in flight (a reconnect or a power cut on the device side).
    pub fn drop_in_flight(&mut self) {
        self.in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{ChunkServer, Faults};

    fn image(n: usize) -> Vec<u8> {
        (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect()
    }

    #[test]
    fn slices_like_thingsboard() {
        let s = ChunkServer::new(image(10), Faults::none(), 1);
        assert_eq!(s.slice(0, 4), &image(10)[0..4]);
        assert_eq!(s.slice(2, 4), &image(10)[8..10]);
        assert!(s.slice(3, 4).is_empty());
        assert!(s.slice(u32::MAX, u32::MAX).is_empty());
        assert_eq!(s.slice(0, 0).len(), 10);
    }

    #[test]
    fn same_seed_same_script() {
        let faults = Faults {
            loss: 0.2,
            duplicate: 0.2,
            reorder: 0.3,
            reorder_delay_ms: 50,
            ..Faults::none()
        };
        let run = |seed| {
            let mut s = ChunkServer::new(image(4096), faults, seed);
            let mut out = Vec::new();
            for i in 0..64 {
                s.request(i, 64, u64::from(i) * 5);
            }
            while let Some(at) = s.next_delivery_ms() {
                let d = s.poll_delivery(at).expect("due");
                out.push((d.at_ms, d.index));
            }
            (out, s.stats())
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9).0, run(10).0);
        let (_, stats) = run(9);
        assert!(stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0);
    }

    #[test]
    fn stalls_after_n_requests() {
        let mut s = ChunkServer::new(
            image(100),
            Faults {
                stall_after: Some(2),
                ..Faults::none()
            },
            3,
        );
        for i in 0..5 {
            s.request(i, 10, 0);
        }
        assert_eq!(s.stats().stalled, 3);
        assert_eq!(s.poll_delivery(10).map(|d| d.index), Some(0));
        assert_eq!(s.poll_delivery(10).map(|d| d.index), Some(1));
        assert_eq!(s.poll_delivery(1000), None);
    }
}
