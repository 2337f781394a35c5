//! Duplicate detection (RFC 7252 §4.5): a retransmitted request — same peer, same message
//! id — is not processed again; while the first copy is being answered the duplicate is
//! dropped, afterwards the stored response is sent again.
//!
//! Memory is bounded twice: at most `per_peer` exchanges per source address (a flood from
//! one address only evicts its own entries) and at most `capacity` in total; entries also
//! expire after `lifetime` (RFC 7252's EXCHANGE_LIFETIME is 247 s).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Key = (SocketAddr, u16);

/// What is known of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// New: the caller processes it (it is now recorded as in flight).
    New,
    /// Being processed: drop the duplicate.
    InFlight,
    /// Answered: send this again (`None` = the request needed no answer).
    Answered(Option<Arc<[u8]>>),
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Instant,
    state: Seen,
}

#[derive(Debug)]
pub(crate) struct Dedup {
    entries: HashMap<Key, Entry>,
    order: VecDeque<(Key, u64)>,
    peers: HashMap<SocketAddr, VecDeque<(u16, u64)>>,
    seq: u64,
    capacity: usize,
    per_peer: usize,
    lifetime: Duration,
}

impl Dedup {
    pub(crate) fn new(capacity: usize, per_peer: usize, lifetime: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            peers: HashMap::new(),
            seq: 0,
            capacity: capacity.max(1),
            per_peer: per_peer.max(1),
            lifetime,
        }
    }

    /// Looks an exchange up, recording it as in flight when new.
    pub(crate) fn check(&mut self, peer: SocketAddr, mid: u16, now: Instant) -> Seen {
        let key = (peer, mid);
        if let Some(e) = self.entries.get(&key) {
            if now.saturating_duration_since(e.at) < self.lifetime {
                return e.state.clone();
            }
            self.entries.remove(&key);
        }
        self.seq += 1;
        let seq = self.seq;
        let mine = self.peers.entry(peer).or_default();
        while mine.len() >= self.per_peer {
            let Some((old, old_seq)) = mine.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&(peer, old))
                .is_some_and(|e| e.seq == old_seq)
            {
                self.entries.remove(&(peer, old));
            }
        }
        mine.push_back((mid, seq));
        while self.entries.len() >= self.capacity {
            let Some((old, old_seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.seq == old_seq) {
                self.entries.remove(&old);
            }
        }
        self.entries.insert(
            key,
            Entry {
                seq,
                at: now,
                state: Seen::InFlight,
            },
        );
        self.order.push_back((key, seq));
        if self.order.len() > self.capacity.saturating_mul(2)
            || self.peers.len() > self.capacity.saturating_mul(2)
        {
            self.compact();
        }
        Seen::New
    }

    /// Stores the answer of an exchange recorded by [`Dedup::check`].
    pub(crate) fn answer(&mut self, peer: SocketAddr, mid: u16, response: Option<Arc<[u8]>>) {
        if let Some(e) = self.entries.get_mut(&(peer, mid)) {
            e.state = Seen::Answered(response);
        }
    }

    /// Forgets an exchange that was not processed (so a retransmission is).
    pub(crate) fn forget(&mut self, peer: SocketAddr, mid: u16) {
        self.entries.remove(&(peer, mid));
    }

    /// Drops bookkeeping of evicted entries.
    fn compact(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        self.peers.retain(|peer, q| {
            q.retain(|(mid, s)| entries.get(&(*peer, *mid)).is_some_and(|e| e.seq == *s));
            !q.is_empty()
        });
    }

    /// Exchanges remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bookkeeping records held (entries plus not yet compacted ones); bounded by a small
    /// multiple of the capacity.
    #[cfg(test)]
    fn records(&self) -> usize {
        self.order.len() + self.peers.values().map(VecDeque::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn duplicates_are_dropped_then_replayed() {
        let mut d = Dedup::new(16, 4, Duration::from_secs(247));
        let t = Instant::now();
        assert_eq!(d.check(peer(1), 7, t), Seen::New);
        assert_eq!(d.check(peer(1), 7, t), Seen::InFlight);
        assert_eq!(d.check(peer(2), 7, t), Seen::New);
        let bytes: Arc<[u8]> = Arc::from(&b"answer"[..]);
        d.answer(peer(1), 7, Some(bytes.clone()));
        assert_eq!(d.check(peer(1), 7, t), Seen::Answered(Some(bytes)));
        assert_eq!(d.check(peer(1), 7, t + Duration::from_secs(248)), Seen::New);
        d.forget(peer(1), 7);
        assert_eq!(d.check(peer(1), 7, t), Seen::New);
    }

    #[test]
    fn one_peer_cannot_evict_others() {
        let mut d = Dedup::new(64, 4, Duration::from_secs(247));
        let t = Instant::now();
        assert_eq!(d.check(peer(2), 1, t), Seen::New);
        for mid in 0..10_000u16 {
            assert_eq!(d.check(peer(1), mid, t), Seen::New);
        }
        assert_eq!(d.len(), 5);
        assert!(d.records() <= 3 * 64, "records {}", d.records());
        assert_eq!(d.check(peer(2), 1, t), Seen::InFlight);
    }

    #[test]
    fn total_is_capped() {
        let mut d = Dedup::new(8, 4, Duration::from_secs(247));
        let t = Instant::now();
        for port in 0..100 {
            d.check(peer(port), 1, t);
            assert!(d.len() <= 8);
        }
        assert!(
            d.records() <= (2 * 8 + 1) * (1 + 4),
            "records {}",
            d.records()
        );
    }
}
