//! A private PostgreSQL cluster for the replica tests, started once per test binary on a free
//! loopback port and stopped when the binary exits (a watchdog shell stops it when our end of
//! its stdin pipe closes), or `OTA_TEST_DATABASE_URL`. A missing PostgreSQL fails the run with
//! an install hint; nothing is skipped.
#![allow(dead_code, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

const HINT: &str = "run scripts/setup-test-deps.sh to install the test services";

struct Service {
    _child: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
    url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `script` under `sh`, reads its output until a line containing `ready`, keeps its
/// stdin open for as long as the test binary lives.
fn start(script: &str, ready: &str, what: &str) -> (Child, ChildStdin) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}; {HINT}"));
    let stdin = child.stdin.take().expect("stdin");
    let out = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.expect("read service output");
        if line.contains(ready) {
            return (child, stdin);
        }
        if line.contains("FAILED-TO-START") {
            break;
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not start; {HINT}\n{}", seen.join("\n"));
}

fn pg_bin() -> String {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|e| {
            panic!("PostgreSQL binaries not found under /usr/lib/postgresql ({e}); {HINT}")
        })
        .filter_map(Result::ok)
        .map(|d| d.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .unwrap_or_else(|| panic!("no initdb under /usr/lib/postgresql/*/bin; {HINT}"))
        .display()
        .to_string()
}

/// A PostgreSQL base URL: `OTA_TEST_DATABASE_URL`, else a private cluster.
pub fn postgres_url() -> String {
    static PG: OnceLock<Service> = OnceLock::new();
    if let Ok(url) = std::env::var("OTA_TEST_DATABASE_URL") {
        return url;
    }
    PG.get_or_init(|| {
        let bin = pg_bin();
        let port = free_port();
        let dir = tempfile::Builder::new().prefix("ota-pg-").tempdir().expect("tempdir").keep();
        let d = dir.display();
        // initdb refuses to run as root: run the cluster as the `postgres` user when root.
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let (pre, run) = if root { (format!("chown postgres {d}"), "runuser -u postgres --") } else { (String::from("true"), "") };
        let script = format!(
            "set -e; {pre}; {run} {bin}/initdb -D {d}/data -U ota --auth=trust >/dev/null; \
             {run} {bin}/pg_ctl -D {d}/data -w -l {d}/log -o '-h 127.0.0.1 -p {port} -k {d} -c fsync=off' start >/dev/null \
             || {{ cat {d}/log >&2; echo FAILED-TO-START; exit 1; }}; \
             echo ready; cat >/dev/null; {run} {bin}/pg_ctl -D {d}/data -m immediate stop >/dev/null; rm -rf {d}"
        );
        let (child, stdin) = start(&script, "ready", "PostgreSQL");
        Service { _child: Mutex::new(child), _stdin: Mutex::new(stdin), url: format!("postgres://ota@127.0.0.1:{port}/postgres") }
    })
    .url
    .clone()
}

/// A PostgreSQL URL with a fresh schema of its own.
pub fn postgres_schema_url() -> String {
    let base = postgres_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema=t_{}", unique())
}

/// A name no other test run uses at the same time.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}_{nanos}", std::process::id())
}
