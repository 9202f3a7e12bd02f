//! The single-daemon guard and the ledger's identity (issue 10, part 9): an flock guards an
//! inode, not a path. Deleting `<ledger>.lock` used to let a second daemon run beside the first,
//! and a ledger replaced under a running daemon went unnoticed while it kept writing to the
//! moved-away file. The daemon now checks both before every sweep and stops with exit 1 (so
//! systemd restarts it on what is there now, where the lock decides again who runs).

use std::path::Path;
use std::time::Duration;

use crate::common::proc::{LiveSandbox, Proc, cmd, code, fast_schedule, run, stderr, write_config};

/// A daemon on a new ledger in `dir` that has swept at least once.
fn running_daemon(dir: &Path) -> (LiveSandbox, Proc) {
    let sandbox = LiveSandbox::start(Vec::new());
    let config = write_config(dir, &sandbox.base_url(), &fast_schedule(""));
    let cfg = config.to_str().unwrap();
    let o = run(dir, &["init", "--config", cfg]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut c = cmd(dir);
    c.args(["run", "--config", cfg]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    (sandbox, daemon)
}

/// The daemon's one ERROR line about it, naming what changed and how.
fn assert_stopped_for(daemon: &mut Proc, what: &str, how: &str) {
    let exit = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(exit, 1, "exit code; saw:\n{}", daemon.tail(20));
    let lines: Vec<&String> = daemon
        .seen
        .iter()
        .filter(|l| l.contains("ledger identity lost; stopping"))
        .collect();
    assert_eq!(lines.len(), 1, "one ERROR line; saw:\n{}", daemon.tail(20));
    assert!(
        lines[0].contains("\"ERROR\"") && lines[0].contains(what) && lines[0].contains(how),
        "{}",
        lines[0]
    );
}

#[test]
fn a_deleted_lock_file_stops_the_daemon_so_no_second_one_runs_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_sandbox, mut first) = running_daemon(d);
    std::fs::remove_file(d.join("ledger.sqlite.lock")).unwrap();
    assert_stopped_for(&mut first, "lock file", "deleted");

    // What is left is one daemon at a time: a new one takes the new lock file alone.
    let mut c = cmd(d);
    c.args(["run", "--config", d.join("config.toml").to_str().unwrap()]);
    let mut second = Proc::spawn(c);
    second.wait_for("daemon ready");
    second.signal("-TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(15)), 0);
}

#[test]
fn a_ledger_replaced_under_the_daemon_stops_it_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_sandbox, mut daemon) = running_daemon(d);
    let ledger = d.join("ledger.sqlite");
    let copy = d.join("ledger.sqlite.new");
    std::fs::copy(&ledger, &copy).unwrap();
    std::fs::rename(&copy, &ledger).unwrap();
    assert_stopped_for(&mut daemon, "ledger", "replaced");
}

#[test]
fn a_trigger_dropped_under_a_running_daemon_stops_it_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_sandbox, mut daemon) = running_daemon(d);
    crate::common::proc::sql(&d.join("ledger.sqlite"))
        .execute_batch("DROP TRIGGER refunds_final_status_is_immutable;")
        .unwrap();
    // Checked before every sweep (one a second here): exit 4, which systemd does not restart.
    let exit = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(exit, 4, "exit code; saw:\n{}", daemon.tail(20));
    let lines: Vec<&String> = daemon
        .seen
        .iter()
        .filter(|l| l.contains("ledger guarantees removed; stopping"))
        .collect();
    assert_eq!(lines.len(), 1, "one ERROR line; saw:\n{}", daemon.tail(20));
    assert!(
        lines[0].contains("\"ERROR\"")
            && lines[0].contains("missing trigger refunds_final_status_is_immutable"),
        "{}",
        lines[0]
    );
}
