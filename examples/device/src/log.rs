//! Timestamped progress lines on the terminal.

use std::cell::Cell;
use std::io::Write;
use std::time::Instant;

/// Prints one line per step with the milliseconds since the device started, and remembers
/// the last step (what the device was doing when its power was cut).
#[derive(Debug)]
pub struct Log {
    start: Instant,
    quiet: bool,
    last: Cell<&'static str>,
}

impl Log {
    /// A log whose clock starts now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
            quiet: false,
            last: Cell::new("POWER-ON"),
        }
    }

    /// A log that prints nothing but still remembers the last step (simulations that run
    /// thousands of devices).
    pub fn quiet() -> Self {
        Self {
            quiet: true,
            ..Self::start()
        }
    }

    /// Milliseconds since the start.
    pub fn elapsed_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// The last step logged (`"POWER-ON"` before the first).
    pub fn last_step(&self) -> &'static str {
        self.last.get()
    }

    /// Prints `[+    12 ms] STEP        detail`.
    pub fn step(&self, step: &'static str, detail: impl std::fmt::Display) {
        self.last.set(step);
        if !self.quiet {
            // A closed terminal or pipe must not stop the device.
            let _ = writeln!(
                std::io::stdout().lock(),
                "[+{:>6} ms] {step:<12} {detail}",
                self.elapsed_ms()
            );
        }
    }
}
