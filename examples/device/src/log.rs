//! Timestamped progress lines on the terminal.

use std::time::Instant;

/// Prints one line per step with the milliseconds since the device started.
#[derive(Clone, Copy, Debug)]
pub struct Log {
    start: Instant,
}

impl Log {
    /// A log whose clock starts now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Milliseconds since the start.
    pub fn elapsed_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// Prints `[+    12 ms] STEP        detail`.
    pub fn step(&self, step: &str, detail: impl std::fmt::Display) {
        println!("[+{:>6} ms] {step:<12} {detail}", self.elapsed_ms());
    }
}
