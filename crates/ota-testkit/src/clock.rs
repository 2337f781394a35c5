//! A virtual clock: time is a number the test moves forward, never read from the OS.
//!
//! ```
//! use ota_testkit::clock::VirtualClock;
//! let mut clock = VirtualClock::new();
//! clock.advance(250);
//! assert_eq!(clock.now_ms(), 250);
//! clock.advance_to(100); // never goes backwards
//! assert_eq!(clock.now_ms(), 250);
//! ```

/// A monotonic millisecond clock driven by the test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtualClock {
    now_ms: u64,
}

impl VirtualClock {
    /// A clock at time 0.
    pub const fn new() -> Self {
        Self { now_ms: 0 }
    }

    /// A clock starting at `now_ms`.
    pub const fn starting_at(now_ms: u64) -> Self {
        Self { now_ms }
    }

    /// The current time in milliseconds.
    pub const fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Moves time forward by `ms` (saturating).
    pub const fn advance(&mut self, ms: u64) {
        self.now_ms = self.now_ms.saturating_add(ms);
    }

    /// Moves time forward to `t_ms`; a time in the past leaves the clock unchanged.
    pub fn advance_to(&mut self, t_ms: u64) {
        self.now_ms = self.now_ms.max(t_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::VirtualClock;

    #[test]
    fn advances_and_never_goes_back() {
        let mut c = VirtualClock::starting_at(10);
        c.advance(5);
        assert_eq!(c.now_ms(), 15);
        c.advance_to(12);
        assert_eq!(c.now_ms(), 15);
        c.advance_to(40);
        assert_eq!(c.now_ms(), 40);
        c.advance(u64::MAX);
        assert_eq!(c.now_ms(), u64::MAX);
    }
}
