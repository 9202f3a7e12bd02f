//! Shutdown: SIGTERM to the real daemon under full load (every query slot busy against a slow
//! gateway) exits 0 within `worker.shutdown_deadline`, with every query the gateway answered
//! recorded and no partial rows; a gateway that hangs past the deadline is abandoned cleanly
//! (exit 0, nothing half-written, the refunds re-queried on the next start); and the systemd
//! unit gives the daemon longer to stop than the deadline.

use std::time::{Duration, Instant};

use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, count, fast_schedule, import_csv, integrity, run, stderr,
    write_config,
};
use checus_reconciler::config::{Config, Environment};
use checus_reconciler::sandbox::{Fault, RefundScript, Step};

fn scripts(n: usize) -> Vec<(String, RefundScript)> {
    (0..n)
        .map(|i| {
            let no = format!("R-SD-{i:05}");
            let s = RefundScript::usd(&no, vec![Step::Pending, Step::Success]);
            (no, s)
        })
        .collect()
}

fn start(d: &std::path::Path, sandbox: &LiveSandbox, n: usize, worker: &str) -> Proc {
    let config = write_config(d, &sandbox.base_url(), &fast_schedule(worker));
    let csv = import_csv(d, &scripts(n));
    let cfg = config.to_str().unwrap();
    let o = run(d, &["import", "--config", cfg, csv.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut c = cmd(d);
    c.args(["run", "--config", cfg]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    daemon
}

#[test]
fn sigterm_under_full_load_drains_within_the_deadline_and_records_every_answer() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Every answer takes 300 ms, so all 32 slots are busy when SIGTERM lands.
    let sandbox =
        LiveSandbox::start_with(scripts(1500), |o| o.latency = Duration::from_millis(300));
    let mut daemon = start(
        d,
        &sandbox,
        1500,
        "concurrency = 32\nrate_per_second = 2000.0\nshutdown_deadline = \"5s\"",
    );
    let mut answered = 0;
    while answered < 100 {
        let line = daemon.next_line(Duration::from_secs(30)).expect("working");
        answered += usize::from(line.contains("\"out_refund_no\""));
    }
    assert!(
        count(
            &d.join("ledger.sqlite"),
            "refunds WHERE status = 'REFUND_PENDING'"
        ) > 0,
        "still under load"
    );
    let sent = Instant::now();
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}, past the 5 s deadline"
    );
    let ledger = d.join("ledger.sqlite");
    assert!(
        daemon
            .seen
            .iter()
            .any(|l| l.contains("draining in-flight queries"))
    );
    assert!(daemon.seen.iter().any(|l| l.contains("daemon stopped")));
    assert!(
        !daemon
            .seen
            .iter()
            .any(|l| l.contains("drain deadline passed"))
    );
    // Every query the gateway answered is recorded; nothing is half-written.
    assert_eq!(integrity(&ledger), "ok");
    assert_eq!(count(&ledger, "attempts") as u64, sandbox.stats().queries);
    assert_eq!(count(&ledger, "sweeps WHERE finished_at IS NULL"), 0);
    assert_eq!(
        count(
            &ledger,
            "refunds r WHERE attempts <> (SELECT count(*) FROM attempts a
                WHERE a.out_refund_no = r.out_refund_no AND a.outcome IN ('pending', 'final'))"
        ),
        0,
        "every row's counters match its attempts"
    );
    eprintln!(
        "shutdown: SIGTERM under load (32 in flight, 300 ms answers) exited 0 in {took:?} \
         (deadline 5 s); {} answers, {} attempts recorded, 0 partial rows",
        sandbox.stats().queries,
        count(&ledger, "attempts")
    );
}

#[test]
fn a_gateway_hanging_past_the_deadline_is_abandoned_cleanly_and_requeried() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sandbox = LiveSandbox::start(scripts(20));
    sandbox.get().set_global_fault(Some(Fault::Hang));
    // The request timeout (2 s) outlives the 1 s deadline: the drain must give up.
    let mut daemon = start(
        d,
        &sandbox,
        20,
        "concurrency = 8\nrate_per_second = 2000.0\nshutdown_deadline = \"1s\"",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.stats().requests < 8 {
        assert!(Instant::now() < deadline, "no queries in flight");
        daemon.next_line(Duration::from_millis(100));
    }
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), 0);
    assert!(
        daemon.seen.iter().any(|l| l.contains(
            "drain deadline passed; abandoned in-flight queries are not recorded and will be re-queried"
        )),
        "{}",
        daemon.tail(20)
    );
    let ledger = d.join("ledger.sqlite");
    assert_eq!(integrity(&ledger), "ok");
    assert_eq!(count(&ledger, "attempts"), 0, "nothing half-recorded");
    assert_eq!(
        count(&ledger, "sweeps WHERE finished_at IS NULL"),
        0,
        "the abandoned sweep's row is closed, not left half-written"
    );
    assert!(count(&ledger, "sweeps WHERE halted_reason LIKE 'interrupted:%'") >= 1);
    assert_eq!(
        count(
            &ledger,
            "refunds WHERE status = 'REFUND_PENDING' AND attempts = 0"
        ),
        20
    );
    // The gateway answers again: the next daemon re-queries and finalizes them all.
    sandbox.get().set_global_fault(None);
    let mut c = cmd(d);
    c.args(["run", "--config", d.join("config.toml").to_str().unwrap()]);
    let mut again = Proc::spawn(c);
    again.wait_for("daemon ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&ledger, "refunds WHERE status = 'REFUND_PENDING'") > 0 {
        assert!(Instant::now() < deadline, "{}", again.tail(20));
        again.next_line(Duration::from_secs(2));
    }
    again.signal("-TERM");
    assert_eq!(again.wait_exit(Duration::from_secs(10)), 0);
    assert_eq!(
        count(&ledger, "refunds WHERE status = 'REFUND_SUCCESS'"),
        20
    );
}

/// `TimeoutStopSec=` of the unit, in seconds.
fn unit_stop_timeout() -> Duration {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/checus-reconciler.service"
    ))
    .unwrap();
    let value = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
        .expect("the unit sets TimeoutStopSec=");
    checus_reconciler::config::parse_duration(value.trim())
        .unwrap_or_else(|e| panic!("TimeoutStopSec={value}: {e}"))
}

#[test]
fn the_unit_stop_timeout_is_above_the_drain_deadline() {
    let stop = unit_stop_timeout();
    // The default deadline, and the one the example config ships with.
    let minimal = r#"
[ledger]
path = "/var/lib/checus-reconciler/ledger.sqlite"
[gateway]
base_url = "https://p-gate-uat.checus.com/aggregate-pay/api/gateway"
app_id = "APP1"
merchant_no = "M1"
[keys]
merchant_private_key = "credential:merchant-private-key"
gateway_public_key = "credential:gateway-public-key"
"#;
    let default = Config::parse(minimal, "minimal", &Environment::default()).unwrap();
    let example_text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml"))
            .unwrap();
    let example = Config::parse(
        &example_text,
        "examples/config.toml",
        &Environment::default(),
    )
    .unwrap();
    for (what, deadline) in [
        ("default", default.worker.shutdown_deadline),
        ("examples/config.toml", example.worker.shutdown_deadline),
    ] {
        // The margin covers the sweep's final ledger writes and process exit.
        assert!(
            stop >= deadline + Duration::from_secs(5),
            "TimeoutStopSec={stop:?} leaves no margin over the {what} deadline {deadline:?}"
        );
    }
}
