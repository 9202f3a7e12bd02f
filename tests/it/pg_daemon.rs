//! The daemon on a PostgreSQL ledger (`[ledger] url`), on the real server, each test in its own
//! fresh database: two daemons with different node names share one ledger and reconcile every
//! refund, no refund left leased; a second daemon of the same node name is refused (exit 4,
//! the node's advisory lock) and starts once the first has stopped; the operator commands see
//! the running nodes through their locks.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::pg;
use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, fast_schedule, import_csv, run, stderr, stdout, write_pg_config,
};
use checus_reconciler::sandbox::{RefundScript, Step};

fn scripts(n: usize) -> Vec<(String, RefundScript)> {
    (0..n)
        .map(|i| {
            let no = format!("R-PGD-{i:03}");
            (
                no.clone(),
                RefundScript::usd(&no, vec![Step::Pending, Step::Success]),
            )
        })
        .collect()
}

/// Polls `cond` until it holds, up to `within`.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(url: &str, sql: &str) -> i64 {
    let mut c = pg::connect(url).unwrap();
    c.query_one(&format!("SELECT count(*) FROM {sql}"), &[])
        .unwrap()
        .get(0)
}

fn daemon(d: &Path, config: &Path) -> Proc {
    let mut c = cmd(d);
    c.args(["run", "--config", config.to_str().unwrap()]);
    Proc::spawn(c)
}

#[test]
fn two_nodes_share_a_postgres_ledger_and_one_node_name_runs_once() {
    let Some((url, _db)) = pg::fresh_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let all = scripts(40);
    let sandbox = LiveSandbox::start(all.clone());
    let worker =
        |node: &str| fast_schedule(&format!("node_name = \"{node}\"\nclaim_lease = \"30s\""));
    let a = write_pg_config(d, "a.toml", &sandbox.base_url(), &url, &worker("node-a"));
    let b = write_pg_config(d, "b.toml", &sandbox.base_url(), &url, &worker("node-b"));
    let csv = import_csv(d, &all);
    let o = run(
        d,
        &[
            "import",
            "--config",
            a.to_str().unwrap(),
            csv.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let mut first = daemon(d, &a);
    let ready = first.wait_for("daemon ready");
    assert!(ready.contains("node lock node-a"), "{ready}");
    let mut second = daemon(d, &b);
    second.wait_for("daemon ready");

    // A third daemon named node-a is refused while the first runs: exit 4, naming the node.
    let o = run(d, &["run", "--config", a.to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("node name node-a is already running"),
        "{}",
        stderr(&o)
    );

    wait_until(Duration::from_secs(60), "every refund final", || {
        count(&url, "refunds WHERE status = 'REFUND_PENDING'") == 0
    });
    // Every refund at its true outcome, each attempt by one of the two nodes, no lease left.
    assert_eq!(count(&url, "refunds WHERE status = 'REFUND_SUCCESS'"), 40);
    assert_eq!(
        count(&url, "attempts WHERE node NOT IN ('node-a', 'node-b')"),
        0
    );
    assert_eq!(count(&url, "refunds WHERE claimed_by IS NOT NULL"), 0);
    assert!(count(&url, "sweeps WHERE node = 'node-a'") > 0);
    assert!(count(&url, "sweeps WHERE node = 'node-b'") > 0);

    // The operator commands see running daemons through the node locks: `resume` finds one
    // running and not halted (exit 5 either way; the reason differs).
    let resume = |d: &Path| {
        let o = run(
            d,
            &[
                "resume",
                "--config",
                a.to_str().unwrap(),
                "--by",
                "t",
                "--reason",
                "r",
            ],
        );
        assert_eq!(code(&o), 5, "{}", stderr(&o));
        stderr(&o)
    };
    let said = resume(d);
    assert!(said.contains("the daemon is not halted"), "{said}");
    let o = run(d, &["status", "--json", "--config", a.to_str().unwrap()]);
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let states: Vec<(&str, &str)> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("node-a", "running"), ("node-b", "running")],
        "{s}"
    );

    // Stopped, node-a's name is free again: a new daemon of that name starts.
    first.signal("-TERM");
    let exit = first.wait_exit(Duration::from_secs(15));
    assert_eq!(exit, 0, "{}", first.tail(40));
    let mut again = daemon(d, &a);
    again.wait_for("daemon ready");
    again.signal("-TERM");
    assert_eq!(again.wait_exit(Duration::from_secs(15)), 0);
    second.signal("-TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(15)), 0);
    assert_eq!(count(&url, "nodes WHERE stopped_at IS NULL"), 0);
    let said = resume(d);
    assert!(said.contains("no node holds its lock on"), "{said}");

    // A node that stopped heart-beating without a clean stop needs a human on a shared
    // ledger: `status` exits 8 with `nodes_silent`, naming it.
    let o = run(d, &["status", "--config", a.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    pg::connect(&url)
        .unwrap()
        .batch_execute(
            "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at)
             VALUES ('node-gone', 'dead-vm', 7, '0.0.1', '2026-01-01T00:00:00Z',
                     '2026-01-01T00:00:00Z')",
        )
        .unwrap();
    let o = run(d, &["status", "--json", "--config", a.to_str().unwrap()]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let codes: Vec<&str> = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["nodes_silent"], "{s}");
    assert!(
        s["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("node-gone"),
        "{s}"
    );
}
