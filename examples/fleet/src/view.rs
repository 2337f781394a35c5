//! The live progress view: per-state counts from the server's recorded update states (what
//! the REST API shows), bytes and throughput from the devices' counters (bytes written to
//! their update slots). On a terminal the
//! block is redrawn in place; otherwise one plain line is printed per second.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use ota_server::model::UpdateState;

/// The states the view counts, in the order of an update.
pub const STATES: [UpdateState; 6] = [
    UpdateState::Downloading,
    UpdateState::Downloaded,
    UpdateState::Verified,
    UpdateState::Updating,
    UpdateState::Updated,
    UpdateState::Failed,
];

/// Bytes per MiB.
const MIB: f64 = 1024.0 * 1024.0;
/// Width of the widest bar.
const BAR: usize = 40;

/// MiB per second for `bytes` in `elapsed`.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { mib(bytes) / secs } else { 0.0 }
}

/// `bytes` in MiB.
#[allow(clippy::cast_precision_loss)]
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// One moment of the fleet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Since the devices started.
    pub elapsed: Duration,
    /// Devices per recorded state (every [`STATES`] entry present).
    pub states: BTreeMap<UpdateState, usize>,
    /// Devices with no state yet or one before `DOWNLOADING` (`QUEUED`, `INITIATED`).
    pub waiting: usize,
    /// Devices in the fleet.
    pub devices: usize,
    /// Devices whose loop has ended.
    pub done: usize,
    /// Bytes written to update slots so far (device side).
    pub bytes: u64,
    /// Bytes all downloads together will write.
    pub total_bytes: u64,
}

impl Snapshot {
    /// An empty snapshot of `devices` devices expecting `total_bytes`.
    pub fn new(devices: usize, total_bytes: u64) -> Self {
        Self {
            states: STATES.iter().map(|s| (*s, 0)).collect(),
            waiting: devices,
            devices,
            total_bytes,
            ..Self::default()
        }
    }

    /// Counts a device's recorded state.
    pub fn count(&mut self, state: Option<UpdateState>) {
        match state {
            Some(s) if s.rank().is_none_or(|r| r >= 2) => {
                *self.states.entry(s).or_default() += 1;
                self.waiting = self.waiting.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// The plain one-line form.
    pub fn line(&self, rate: f64) -> String {
        let states: Vec<String> = STATES
            .iter()
            .map(|s| {
                format!(
                    "{}={}",
                    s.as_str(),
                    self.states.get(s).copied().unwrap_or(0)
                )
            })
            .collect();
        format!(
            "[{:>6.1} s] {} waiting={} | {:.2}/{:.2} MiB {:.2} MiB/s | done {}/{}",
            self.elapsed.as_secs_f64(),
            states.join(" "),
            self.waiting,
            mib(self.bytes),
            mib(self.total_bytes),
            rate,
            self.done,
            self.devices
        )
    }

    /// The multi-line block drawn on a terminal.
    pub fn block(&self, rate: f64) -> Vec<String> {
        let max = self.devices.max(1);
        let mut lines: Vec<String> = STATES
            .iter()
            .map(|s| {
                let n = self.states.get(s).copied().unwrap_or(0);
                format!("  {:<12} {n:>5}  {}", s.as_str(), "#".repeat(n * BAR / max))
            })
            .collect();
        lines.push(format!(
            "  {:<12} {:>5}  {}",
            "(waiting)",
            self.waiting,
            "-".repeat(self.waiting * BAR / max)
        ));
        lines.push(format!(
            "  {:.2} / {:.2} MiB written, {:.2} MiB/s now, {:.2} MiB/s overall",
            mib(self.bytes),
            mib(self.total_bytes),
            rate,
            mib_per_s(self.bytes, self.elapsed),
        ));
        lines.push(format!(
            "  {:.1} s, devices finished {}/{}",
            self.elapsed.as_secs_f64(),
            self.done,
            self.devices
        ));
        lines
    }
}

/// How the view prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewMode {
    /// Redraw a block in place (a terminal).
    Live,
    /// One line per second (a pipe or file).
    Lines,
    /// Nothing until the summary.
    Quiet,
}

/// Prints snapshots to `out` in one [`ViewMode`].
pub struct View<W: Write> {
    out: W,
    mode: ViewMode,
    drawn: usize,
    last_line: Option<Duration>,
    last: Option<(Duration, u64)>,
}

impl<W: Write> View<W> {
    /// A view writing to `out`.
    pub fn new(out: W, mode: ViewMode) -> Self {
        Self {
            out,
            mode,
            drawn: 0,
            last_line: None,
            last: None,
        }
    }

    /// The output, to print more after the view.
    pub fn out(&mut self) -> &mut W {
        &mut self.out
    }

    /// Throughput since the previous snapshot.
    fn rate(&mut self, s: &Snapshot) -> f64 {
        let rate = match self.last {
            Some((t, b)) if s.elapsed > t => {
                mib_per_s(s.bytes.saturating_sub(b), s.elapsed.saturating_sub(t))
            }
            _ => mib_per_s(s.bytes, s.elapsed),
        };
        self.last = Some((s.elapsed, s.bytes));
        rate
    }

    /// Shows `s`; `last` forces a plain line out even within the second.
    pub fn show(&mut self, s: &Snapshot, last: bool) -> io::Result<()> {
        match self.mode {
            ViewMode::Quiet => Ok(()),
            ViewMode::Lines => {
                let due = self
                    .last_line
                    .is_none_or(|t| s.elapsed.saturating_sub(t) >= Duration::from_secs(1));
                if due || last {
                    let rate = self.rate(s);
                    self.last_line = Some(s.elapsed);
                    writeln!(self.out, "{}", s.line(rate))?;
                }
                self.out.flush()
            }
            ViewMode::Live => {
                let rate = self.rate(s);
                if self.drawn > 0 {
                    // Back to the first line of the block, and clear to the end of the screen.
                    write!(self.out, "\x1b[{}F\x1b[J", self.drawn)?;
                }
                let block = s.block(rate);
                for l in &block {
                    writeln!(self.out, "{l}")?;
                }
                self.drawn = block.len();
                self.out.flush()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ota_server::model::UpdateState;

    use super::{Snapshot, View, ViewMode};

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::new(4, 4 * 1024 * 1024);
        s.count(Some(UpdateState::Updated));
        s.count(Some(UpdateState::Downloading));
        s.count(Some(UpdateState::Initiated));
        s.count(None);
        s.bytes = 2 * 1024 * 1024;
        s.elapsed = Duration::from_secs(2);
        s
    }

    #[test]
    fn states_before_downloading_count_as_waiting() {
        let s = snapshot();
        assert_eq!(s.waiting, 2);
        assert_eq!(s.states[&UpdateState::Updated], 1);
        assert_eq!(s.states[&UpdateState::Downloading], 1);
        assert_eq!(s.states[&UpdateState::Failed], 0);
    }

    #[test]
    fn plain_lines_carry_counts_and_throughput() {
        let mut out = Vec::new();
        let mut view = View::new(&mut out, ViewMode::Lines);
        view.show(&snapshot(), false).unwrap();
        // Within the same second: nothing more unless it is the last.
        view.show(&snapshot(), false).unwrap();
        view.show(&snapshot(), true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(
                "DOWNLOADING=1 DOWNLOADED=0 VERIFIED=0 UPDATING=0 UPDATED=1 FAILED=0 waiting=2"
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("2.00/4.00 MiB 1.00 MiB/s"),
            "{}",
            lines[0]
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn live_view_redraws_in_place() {
        let mut out = Vec::new();
        let mut view = View::new(&mut out, ViewMode::Live);
        view.show(&snapshot(), false).unwrap();
        view.show(&snapshot(), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\x1b[9F\x1b[J").count(), 1, "{text}");
        assert_eq!(text.matches("UPDATED").count(), 2);
    }
}
