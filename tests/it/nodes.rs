//! Node names, heartbeats and claim leases (schema version 9): the claim leases what it
//! returns and skips another node's live lease, recording the attempt clears it; the real
//! daemon records its node on sweeps and attempts, heartbeats its `nodes` row and marks a
//! clean stop; `status` shows each node and `explain` the node of each attempt; a version 8
//! ledger migrates to 9 keeping every row; bad `worker.*` values exit 3 naming the key.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::common::fixtures::{finalize, no, success_answer};
use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, count, fast_schedule, import_csv, run, sql, stderr, stdout,
    write_config,
};
use crate::common::ts;
use checus_reconciler::domain::{Currency, FinalStatus, NewRefund, NodeName, RefundStatus};
use checus_reconciler::ledger::{NodeStart, SCHEMA_VERSION, SqliteLedger};
use checus_reconciler::sandbox::{RefundScript, Step};
use rust_decimal::Decimal;

fn node(name: &str) -> NodeName {
    NodeName::parse(name).unwrap()
}

fn refund(n: &str) -> NewRefund {
    NewRefund {
        out_refund_no: no(n),
        refund_trade_no: None,
        out_trade_no: None,
        amount: Decimal::from_str("12.50").unwrap(),
        currency: Currency::parse("USD").unwrap(),
        status: RefundStatus::Pending,
        created_at: ts("2026-01-01T00:00:00.000Z"),
    }
}

/// `(claimed_by, claimed_until)` of refund `n`, as stored.
fn lease(path: &Path, n: &str) -> (Option<String>, Option<String>) {
    sql(path)
        .query_row(
            "SELECT claimed_by, claimed_until FROM refunds WHERE out_refund_no = ?1",
            [n],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

fn claimed_nos(l: &SqliteLedger, now: &str, name: &str, until: &str) -> Vec<String> {
    l.claim_due(ts(now), 10, &node(name), ts(until))
        .unwrap()
        .rows
        .into_iter()
        .map(|s| s.out_refund_no.to_string())
        .collect()
}

#[test]
fn a_claim_leases_its_rows_skips_another_nodes_live_lease_and_recording_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut l = SqliteLedger::open(&path).unwrap();
    for n in ["R1", "R2", "R3"] {
        l.insert_refund(&refund(n)).unwrap();
    }
    l.schedule_new(Duration::ZERO).unwrap();
    let now = "2026-01-01T01:00:00.000Z";

    // Node A claims two: both leased to it until the lease's end, in the claim itself.
    let a = l
        .claim_due(ts(now), 2, &node("node-a"), ts("2026-01-01T01:02:00.000Z"))
        .unwrap();
    let got: Vec<String> = a.rows.iter().map(|s| s.out_refund_no.to_string()).collect();
    assert_eq!(got, ["R1", "R2"]);
    for n in ["R1", "R2"] {
        assert_eq!(
            lease(&path, n),
            (
                Some("node-a".into()),
                Some("2026-01-01T01:02:00.000Z".into())
            )
        );
    }
    assert_eq!(lease(&path, "R3"), (None, None));

    // Node B meanwhile gets only the unleased one.
    let b = claimed_nos(&l, now, "node-b", "2026-01-01T01:02:00.000Z");
    assert_eq!(b, ["R3"]);
    // A live lease is not claimed again, the node's own included (a refund in flight).
    assert!(claimed_nos(&l, now, "node-a", "2026-01-01T01:03:00.000Z").is_empty());
    // Claimed and not sent: released, due again at once for any node; a release by another
    // node leaves the lease alone.
    assert_eq!(l.release_claims(&node("node-b"), &[no("R2")]).unwrap(), 0);
    assert_eq!(l.release_claims(&node("node-a"), &[no("R2")]).unwrap(), 1);
    assert_eq!(lease(&path, "R2"), (None, None));
    let again = claimed_nos(&l, now, "node-a", "2026-01-01T01:02:00.000Z");
    assert_eq!(again, ["R2"]);
    // Next due for node B: not now (everything is leased to others), but when A's leases end.
    l.set_node(Some(node("node-c")));
    assert_eq!(
        l.next_due_at_for(&Default::default(), Some(&node("node-c")))
            .unwrap(),
        Some(ts("2026-01-01T01:02:00.000Z")),
        "R3's lease (node-b) ends first"
    );
    // Lease-blind (no node): the due time itself.
    assert_eq!(
        l.next_due_at(&Default::default()).unwrap(),
        Some(ts("2026-01-01T00:00:00.000Z"))
    );

    // Recording the attempt clears the lease in the same transaction, and names the node.
    l.set_node(Some(node("node-a")));
    l.record_attempt(
        &success_answer("R1", "2026-01-01T01:00:01.000Z"),
        &finalize(FinalStatus::Success),
    )
    .unwrap();
    assert_eq!(lease(&path, "R1"), (None, None));
    let recorded_by: String = sql(&path)
        .query_row(
            "SELECT node FROM attempts WHERE out_refund_no = 'R1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded_by, "node-a");

    // Once node A's lease on R2 has ended, node B claims it.
    let late = "2026-01-01T01:03:00.000Z";
    assert_eq!(
        claimed_nos(&l, late, "node-b", "2026-01-01T01:05:00.000Z"),
        ["R2", "R3"]
    );
    assert_eq!(lease(&path, "R2").0.as_deref(), Some("node-b"));

    // The schema itself refuses half a lease, and a name outside the rule.
    let raw = sql(&path);
    for bad in [
        "UPDATE refunds SET claimed_by = 'x', claimed_until = NULL WHERE out_refund_no = 'R3'",
        "UPDATE refunds SET claimed_by = NULL WHERE out_refund_no = 'R3'",
        "UPDATE refunds SET claimed_by = 'a b' WHERE out_refund_no = 'R3'",
        "UPDATE refunds SET claimed_until = '2026-02-31T00:00:00.000Z' WHERE out_refund_no = 'R3'",
    ] {
        let e = raw.execute(bad, []).unwrap_err().to_string();
        assert!(e.contains("CHECK constraint failed"), "{bad}: {e}");
    }

    // A node's start ends the leases its previous run left (it holds the node's lock).
    l.node_started(&NodeStart {
        name: node("node-b"),
        host: "h".into(),
        pid: 1,
        version: "0".into(),
        at: ts(late),
    })
    .unwrap();
    assert_eq!(lease(&path, "R2"), (None, None));
    assert_eq!(lease(&path, "R3"), (None, None));
}

#[test]
fn node_rows_record_start_heartbeat_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let l = SqliteLedger::open(&path).unwrap();
    let start = checus_reconciler::ledger::NodeStart {
        name: node("n1"),
        host: "host-1".into(),
        pid: 42,
        version: "9.9.9".into(),
        at: ts("2026-01-01T00:00:00.000Z"),
    };
    l.node_started(&start).unwrap();
    assert!(
        l.node_heartbeat(&node("n1"), ts("2026-01-01T00:00:05.000Z"))
            .unwrap()
    );
    // A clock that went back never puts the heartbeat before the start.
    assert!(
        l.node_heartbeat(&node("n1"), ts("2025-12-31T00:00:00.000Z"))
            .unwrap()
    );
    assert!(
        !l.node_heartbeat(&node("gone"), ts("2026-01-01T00:00:05.000Z"))
            .unwrap()
    );
    let rows = l.nodes().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].heartbeat_at, ts("2026-01-01T00:00:00.000Z"));
    l.node_stopped(&node("n1"), ts("2026-01-01T00:01:00.000Z"))
        .unwrap();
    let rows = l.nodes().unwrap();
    assert_eq!(rows[0].stopped_at, Some(ts("2026-01-01T00:01:00.000Z")));
    // The next start clears the stop.
    l.node_started(&checus_reconciler::ledger::NodeStart {
        pid: 43,
        at: ts("2026-01-02T00:00:00.000Z"),
        ..start
    })
    .unwrap();
    let rows = l.nodes().unwrap();
    assert_eq!((rows[0].pid, rows[0].stopped_at), (43, None));
}

fn scripts(n: usize) -> Vec<(String, RefundScript)> {
    (0..n)
        .map(|i| {
            let no = format!("R-NODE-{i:03}");
            let s = RefundScript::usd(&no, vec![Step::Pending, Step::Success]);
            (no, s)
        })
        .collect()
}

/// Polls `cond` until it holds, up to `within` (the daemon's pace is the clock's, not ours).
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_json(d: &Path, ledger: &Path) -> (i32, serde_json::Value) {
    let o = run(
        d,
        &["status", "--json", "--ledger", ledger.to_str().unwrap()],
    );
    (code(&o), serde_json::from_str(&stdout(&o)).unwrap())
}

#[test]
fn the_daemon_names_its_node_on_sweeps_and_attempts_heartbeats_and_stops_cleanly() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sandbox = LiveSandbox::start(scripts(3));
    let config = write_config(
        d,
        &sandbox.base_url(),
        &fast_schedule("node_name = \"node-a\"\nclaim_lease = \"30s\""),
    );
    let cfg = config.to_str().unwrap();
    let csv = import_csv(d, &scripts(3));
    let o = run(d, &["import", "--config", cfg, csv.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ledger = d.join("ledger.sqlite");
    let mut c = cmd(d);
    c.args(["run", "--config", cfg]);
    let mut daemon = Proc::spawn(c);
    let ready = daemon.wait_for("daemon ready");
    assert!(ready.contains("\"node\":\"node-a\""), "{ready}");

    wait_until(Duration::from_secs(30), "every refund final", || {
        count(&ledger, "refunds WHERE status = 'REFUND_PENDING'") == 0
    });
    // Every sweep and attempt names the node; no lease outlives its recorded attempt.
    assert_eq!(count(&ledger, "attempts WHERE node IS NOT 'node-a'"), 0);
    assert!(count(&ledger, "attempts") >= 6);
    assert_eq!(count(&ledger, "sweeps WHERE node IS NOT 'node-a'"), 0);
    assert_eq!(count(&ledger, "refunds WHERE claimed_by IS NOT NULL"), 0);

    // The node's row: this host, this process, running; the heartbeat moves on.
    let row = |sql_text: &str| -> String {
        sql(&ledger)
            .query_row(sql_text, [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    let pid: i64 = sql(&ledger)
        .query_row("SELECT pid FROM nodes WHERE name = 'node-a'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(pid, i64::from(daemon.child.id()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(row("SELECT host FROM nodes"), host.trim());
    let started = row("SELECT started_at FROM nodes");
    wait_until(
        Duration::from_secs(20),
        "a heartbeat after the start",
        || row("SELECT heartbeat_at FROM nodes") > started,
    );
    assert_eq!(count(&ledger, "nodes WHERE stopped_at IS NULL"), 1);
    let (_, s) = status_json(d, &ledger);
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{s}");
    assert_eq!(nodes[0]["name"], "node-a");
    assert_eq!(nodes[0]["state"], "running");
    assert!(nodes[0]["heartbeat_age_s"].as_i64().unwrap() < 30);

    // explain names the node of each attempt.
    let o = run(
        d,
        &[
            "explain",
            "--ledger",
            ledger.to_str().unwrap(),
            "R-NODE-000",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("(node node-a, sweep "),
        "{}",
        stdout(&o)
    );
    let o = run(
        d,
        &[
            "explain",
            "--json",
            "--ledger",
            ledger.to_str().unwrap(),
            "R-NODE-000",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let queries: Vec<&serde_json::Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "query")
        .collect();
    assert!(
        !queries.is_empty() && queries.iter().all(|e| e["node"] == "node-a"),
        "{v}"
    );

    // A clean stop is recorded: status shows it stopped.
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    assert_eq!(count(&ledger, "nodes WHERE stopped_at IS NOT NULL"), 1);
    let o = run(d, &["status", "--ledger", ledger.to_str().unwrap()]);
    let text = stdout(&o);
    assert!(
        text.contains("node-a") && text.contains("stopped"),
        "{text}"
    );

    // A node that heartbeat long ago and never stopped is silent, shown but not a finding.
    sql(&ledger)
        .execute_batch(
            "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at)
             VALUES ('node-b', 'other-host', 7, '0.0.1', '2026-01-01T00:00:00.000Z',
                     '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();
    let (exit, s) = status_json(d, &ledger);
    assert_eq!(exit, 0, "a silent node alone needs no human on SQLite: {s}");
    let states: Vec<(String, String)> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("node-a".to_owned(), "stopped".to_owned()),
            ("node-b".to_owned(), "silent".to_owned())
        ]
    );
    let text = stdout(&run(d, &["status", "--ledger", ledger.to_str().unwrap()]));
    assert!(
        text.contains("silent") && text.contains("never stopped cleanly"),
        "{text}"
    );
}

#[test]
fn bad_node_names_and_short_claim_leases_exit_3_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "node_name = \"has space\"",
            "worker.node_name",
            "contains ' '",
        ),
        ("node_name = \"\"", "worker.node_name", "is empty"),
        (
            "node_name = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
            "worker.node_name",
            "at most 64",
        ),
        ("claim_lease = \"5s\"", "worker.claim_lease", "too short"),
        (
            "claim_lease = \"1ms\"",
            "worker.claim_lease",
            "out of range",
        ),
    ];
    for (worker, key, says) in cases {
        let config = write_config(d, "http://127.0.0.1:9", &format!("[worker]\n{worker}\n"));
        let o = run(d, &["check-config", "--config", config.to_str().unwrap()]);
        assert_eq!(code(&o), 3, "{worker}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(key) && e.contains(says), "{worker}: {e}");
    }
    // The env override is named when it set the value.
    let config = write_config(d, "http://127.0.0.1:9", "");
    let o = cmd(d)
        .args(["check-config", "--config", config.to_str().unwrap()])
        .env("CHECUS_RECONCILER__WORKER__NODE_NAME", "a/b")
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("CHECUS_RECONCILER__WORKER__NODE_NAME"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_version_8_ledger_migrates_to_10_keeping_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("ledger.sqlite");
    let v8 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/ledger-v8/schema.sql"
    ))
    .unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&format!("PRAGMA journal_mode = WAL; BEGIN; {v8} COMMIT;"))
            .unwrap();
        c.execute_batch(
            "INSERT INTO refunds (out_refund_no, amount, currency, created_at, next_query_at)
             VALUES ('R8-1', '12.50', 'USD', '2026-01-01T00:00:00.000Z',
                     '2026-01-01T00:10:00.000Z');
             INSERT INTO refunds (out_refund_no, amount, currency, status, created_at,
                                  final_source, finalized_at)
             VALUES ('R8-2', '3', 'EUR', 'REFUND_FAILED', '2026-01-01T00:00:00.000Z',
                     'refund_response', '2026-01-01T00:00:00.000Z');
             INSERT INTO sweeps (started_at, finished_at, claimed)
             VALUES ('2026-01-01T00:10:00.000Z', '2026-01-01T00:10:01.000Z', 1);
             INSERT INTO attempts (out_refund_no, attempted_at, outcome, latency_ms, sweep_id)
             VALUES ('R8-1', '2026-01-01T00:10:00.500Z', 'pending', 12, 1);",
        )
        .unwrap();
        assert_eq!(
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i32>(0))
                .unwrap(),
            8
        );
    }
    let dump = |sql_text: &str| -> Vec<String> {
        let c = sql(&path);
        let mut stmt = c.prepare(sql_text).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let kept = [
        "SELECT id, out_refund_no, amount, currency, status, created_at, finalized_at, \
         next_query_at FROM refunds ORDER BY id",
        "SELECT id, out_refund_no, attempted_at, outcome, latency_ms, sweep_id FROM attempts",
        "SELECT id, started_at, finished_at, claimed FROM sweeps",
        "SELECT status, n FROM refund_counts ORDER BY status",
    ];
    let before: Vec<Vec<String>> = kept.iter().map(|q| dump(q)).collect();

    let o = run(d, &["migrate", "--ledger", path.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0010_nodes_and_leases"),
        "{}",
        stdout(&o)
    );
    let after: Vec<Vec<String>> = kept.iter().map(|q| dump(q)).collect();
    assert_eq!(after, before, "every row kept as it was");
    let version: i32 = sql(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // The new columns are NULL on the old rows, and no node is known yet.
    assert_eq!(
        count(
            &path,
            "refunds WHERE claimed_by IS NOT NULL OR claimed_until IS NOT NULL"
        ),
        0
    );
    assert_eq!(count(&path, "attempts WHERE node IS NOT NULL"), 0);
    assert_eq!(count(&path, "sweeps WHERE node IS NOT NULL"), 0);
    assert_eq!(count(&path, "nodes"), 0);
    // The migrated schema is schema.sql's, object for object.
    let o = run(d, &["verify-ledger", "--ledger", path.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}
