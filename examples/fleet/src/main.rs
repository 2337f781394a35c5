//! `ota-demo-fleet`: 50 simulated devices on HTTP and CoAP updating from one server started
//! in this process on loopback, with a live progress view and a summary.
//!
//! ```text
//! ota-demo-fleet [--devices 50] [--failing 5] [--image-size 200000] [--plain]
//! ```
//!
//! Exit status: 0 when every device ended as planned (healthy ones `UPDATED` on the new
//! version, failing ones `FAILED` and back on the old one), 1 otherwise.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ota_demo_fleet::view::ViewMode;
use ota_demo_fleet::{Options, run};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A fleet of simulated A/B devices on HTTP and CoAP updating from one in-process server"
)]
struct Args {
    /// Devices in the fleet (spread evenly over the transports).
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Devices assigned an image whose self-test fails (they roll back).
    #[arg(long, default_value_t = 5)]
    failing: usize,
    /// Size of the firmware images in bytes.
    #[arg(long, default_value_t = 200_000)]
    image_size: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    plain: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = std::io::stdout();
    let view = if !args.plain && stdout.is_terminal() {
        ViewMode::Live
    } else {
        ViewMode::Lines
    };
    let options = Options {
        devices: args.devices,
        failing: args.failing,
        image_len: args.image_size,
        timeout: Duration::from_secs(args.timeout_secs),
        view,
    };
    match run(&options, stdout.lock()) {
        Ok(summary) if summary.unexpected().is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ota-demo-fleet: {e}");
            ExitCode::FAILURE
        }
    }
}
