//! The operator's side, end to end with the real binary (and the library where a seam is
//! needed): the operator commands against real ledgers and the sandbox, `status` and its exit
//! code, systemd notifications on a socket of our own, journald fields on a journald socket of
//! our own (in a private mount namespace), completions and man pages, and the watchdog.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::proc::{
    BIN, KEYS, Proc, cmd, code, run, sandbox_command, stderr, stdout, write_config,
};

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

/// Runs and asserts the exit code, returning the output.
fn ok(dir: &Path, args: &[&str], want: i32) -> Output {
    let o = run(dir, args);
    assert_eq!(
        code(&o),
        want,
        "{args:?}\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    o
}

fn script(no: &str, amount: &str, steps: &[&str]) -> String {
    let steps: Vec<String> = steps.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "{{\"outRefundNo\":\"{no}\",\"refundTradeNo\":\"T-{no}\",\"outTradeNo\":\"O-{no}\",\"amount\":\"{amount}\",\"currency\":\"USD\",\"steps\":[{}]}}\n",
        steps.join(",")
    )
}

fn ago(d: chrono::TimeDelta) -> String {
    checus_reconciler::domain::format_ts(chrono::Utc::now() - d)
}

/// A connection like the merchant's app or an operator's `sqlite3` shell.
fn outsider(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

#[test]
fn operator_commands_find_explain_and_act() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let scripts = [
        script("R-OP-OLD", "40.00", &["pending"]),
        script("R-OP-STUCK", "12.50", &["pending"]),
        script("R-OP-FAIL", "7.05", &["failed"]),
    ]
    .concat();
    let (_sb, url) = sandbox_command(dir, &scripts);
    let cfg = write_config(dir, &url, "[schedule]\ngrace = \"0s\"\n");
    let cfg = cfg.to_str().unwrap();
    let c = ["--config", cfg];
    for (no, amount, created) in [
        ("R-OP-OLD", "40.00", ago(chrono::TimeDelta::days(4))),
        ("R-OP-STUCK", "12.50", ago(chrono::TimeDelta::hours(3))),
        ("R-OP-FAIL", "7.05", ago(chrono::TimeDelta::hours(3))),
        ("R-OP-NEW", "1.00", ago(chrono::TimeDelta::minutes(1))),
    ] {
        ok(
            dir,
            &[
                "add",
                c[0],
                c[1],
                "--out-refund-no",
                no,
                "--amount",
                amount,
                "--currency",
                "USD",
                "--created-at",
                &created,
            ],
            0,
        );
    }
    for no in ["R-OP-OLD", "R-OP-STUCK", "R-OP-FAIL"] {
        ok(dir, &["query", c[0], c[1], no], 0);
    }

    // stuck: the pending refunds older than 2h, oldest first; the 4-day one is flagged.
    let v = json(&ok(
        dir,
        &["stuck", c[0], c[1], "--older-than", "2h", "--json"],
        0,
    ));
    assert_eq!(
        (v["total"].as_u64(), v["truncated"].as_bool()),
        (Some(2), Some(false))
    );
    let v = &v["rows"];
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["out_refund_no"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["R-OP-OLD", "R-OP-STUCK"]);
    assert_eq!(v[0]["review_reason"], "pending_too_long");
    let table = stdout(&ok(dir, &["stuck", c[0], c[1]], 0));
    assert!(table.starts_with("OUT_REFUND_NO"), "{table}");
    assert!(table.contains("pending_too_long") && table.contains("(2 stuck refunds)"));

    // failed: the one that failed, with who said so.
    let v = json(&ok(
        dir,
        &["failed", c[0], c[1], "--since", "24h", "--json"],
        0,
    ));
    let v = &v["rows"];
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["out_refund_no"], "R-OP-FAIL");
    assert_eq!(v[0]["final_source"], "query");
    assert_eq!(v[0]["amount"], "7.05");
    assert!(stdout(&ok(dir, &["failed", c[0], c[1]], 0)).contains("R-OP-FAIL"));
    let v = json(&ok(
        dir,
        &["failed", c[0], c[1], "--since", "1s", "--json"],
        0,
    ));
    let v = &v["rows"];
    assert!(v.as_array().unwrap().is_empty() || v[0]["out_refund_no"] == "R-OP-FAIL");

    // explain: creation, the query with its outcome and latency, the decision, what is next.
    let v = json(&ok(
        dir,
        &["explain", c[0], c[1], "R-OP-STUCK", "--json"],
        0,
    ));
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "query", "decision", "next_query"], "{v}");
    assert_eq!(v["events"][1]["outcome"], "pending");
    assert!(v["events"][1]["latency_ms"].is_u64());
    assert!(
        v["events"][2]["summary"]
            .as_str()
            .unwrap()
            .starts_with("reschedule ")
    );
    let text = stdout(&ok(dir, &["explain", c[0], c[1], "R-OP-FAIL"], 0));
    assert!(text.contains("/refundQuery → final"), "{text}");
    assert!(text.contains("finalize REFUND_FAILED"), "{text}");
    assert!(
        text.contains("final: REFUND_FAILED (source query)"),
        "{text}"
    );
    ok(dir, &["explain", c[0], c[1], "R-NOPE"], 6);

    // status: flagged refund and a worker that never ran both need a human.
    let v = json(&ok(dir, &["status", c[0], c[1], "--json"], 8));
    let codes: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["flagged_refunds", "worker_never_ran"]);
    assert!(stdout(&ok(dir, &["status", c[0], c[1]], 8)).contains("NEEDS A HUMAN"));

    // retry-now: who is acting is required; the flagged refund is due now, backoff restarted.
    let o = ok(dir, &["retry-now", c[0], c[1], "--all-flagged"], 2);
    assert!(stderr(&o).contains("--by"), "{}", stderr(&o));
    let v = json(&ok(
        dir,
        &[
            "retry-now",
            c[0],
            c[1],
            "--all-flagged",
            "--by",
            "ops",
            "--json",
        ],
        0,
    ));
    assert_eq!(v["refunds"], serde_json::json!(["R-OP-OLD"]));
    let v = json(&ok(dir, &["show", c[0], c[1], "R-OP-OLD", "--json"], 0));
    assert_eq!(v["refund"]["review_flag"], false);
    assert_eq!(v["refund"]["attempts"], 0);
    assert!(
        v["refund"]["next_query_at"].as_str().unwrap() <= ago(chrono::TimeDelta::zero()).as_str()
    );
    assert_eq!(
        v["attempts"].as_array().unwrap().len(),
        1,
        "the attempt log keeps all"
    );
    let o = ok(
        dir,
        &["retry-now", c[0], c[1], "R-OP-FAIL", "--by", "ops"],
        5,
    );
    assert!(stderr(&o).contains("already final"), "{}", stderr(&o));
    ok(dir, &["retry-now", c[0], c[1], "R-NOPE", "--by", "ops"], 6);

    // resolve: an audited override of a pending refund; a final one never changes.
    let v = json(&ok(
        dir,
        &[
            "resolve",
            c[0],
            c[1],
            "R-OP-STUCK",
            "--status",
            "REFUND_FAILED",
            "--reason",
            "Checus support ticket 1234: refund rejected",
            "--by",
            "alice",
            "--json",
        ],
        0,
    ));
    assert_eq!(v["status"], "REFUND_FAILED");
    assert_eq!(v["final_source"], "operator");
    let o = ok(
        dir,
        &[
            "resolve",
            c[0],
            c[1],
            "R-OP-STUCK",
            "--status",
            "success",
            "--reason",
            "oops",
            "--by",
            "bob",
        ],
        5,
    );
    assert!(stderr(&o).contains("already final"), "{}", stderr(&o));
    ok(
        dir,
        &[
            "resolve", c[0], c[1], "R-NOPE", "--status", "success", "--reason", "x", "--by", "bob",
        ],
        6,
    );
    let v = json(&ok(
        dir,
        &["explain", c[0], c[1], "R-OP-STUCK", "--json"],
        0,
    ));
    let events = v["events"].as_array().unwrap();
    let op = events.iter().find(|e| e["kind"] == "operator").unwrap();
    assert_eq!(op["actor"], "alice");
    assert!(
        op["summary"]
            .as_str()
            .unwrap()
            .contains("Checus support ticket 1234")
    );
    assert_eq!(events.last().unwrap()["kind"], "finalized");
    assert!(
        events.last().unwrap()["summary"]
            .as_str()
            .unwrap()
            .contains("source operator")
    );
    // The schema enforces both rules for every writer, not just for the CLI.
    let raw = outsider(&dir.join("ledger.sqlite"));
    let e = raw
        .execute(
            "UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'operator',
                    finalized_at = '2026-01-01T00:00:00.000Z' WHERE out_refund_no = 'R-OP-NEW'",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("audit row"), "{e}");
    let e = raw
        .execute(
            "UPDATE refunds SET status = 'REFUND_SUCCESS' WHERE out_refund_no = 'R-OP-STUCK'",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");
    let e = raw.execute("DELETE FROM operator_actions", []).unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let audit: Vec<(String, String, Option<String>)> = raw
        .prepare("SELECT actor, action, out_refund_no FROM operator_actions ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        audit,
        [
            ("ops".into(), "retry_now".into(), Some("R-OP-OLD".into())),
            ("alice".into(), "resolve".into(), Some("R-OP-STUCK".into())),
        ]
    );

    // export: every column, exact amounts; CSV to stdout, JSON lines to a new file.
    let o = ok(
        dir,
        &["export", c[0], c[1], "--since", "30d", "--format", "csv"],
        0,
    );
    let mut r = csv::Reader::from_reader(o.stdout.as_slice());
    let headers = r.headers().unwrap().clone();
    assert_eq!(&headers[0], "out_refund_no");
    assert!(headers.iter().any(|h| h == "final_source"));
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(&rows[0][0], "R-OP-OLD");
    assert_eq!(&rows[0][3], "40.00");
    let out = dir.join("export.jsonl");
    let out_s = out.to_str().unwrap();
    ok(
        dir,
        &[
            "export", c[0], c[1], "--since", "3h1m", "--format", "jsonl", "-o", out_s,
        ],
        0,
    );
    let lines = std::fs::read_to_string(&out).unwrap();
    let nos: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["out_refund_no"].to_string())
        .collect();
    assert_eq!(nos, ["\"R-OP-STUCK\"", "\"R-OP-FAIL\"", "\"R-OP-NEW\""]);
    ok(
        dir,
        &["export", c[0], c[1], "--since", "1d", "-o", out_s],
        5,
    );
}

#[test]
fn prune_archives_then_deletes_only_old_final_refunds_and_backup_is_consistent() {
    use checus_reconciler::domain::{Currency, FinalStatus, NewRefund, OutRefundNo, RefundStatus};
    use checus_reconciler::ledger::{NotificationRecord, SqliteLedger};
    use std::str::FromStr;

    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let path = dir.join("ledger.sqlite");
    let l_arg = path.to_str().unwrap().to_owned();
    let l = ["--ledger", l_arg.as_str()];
    let long_ago = chrono::Utc::now() - chrono::TimeDelta::days(400);
    {
        let ledger = SqliteLedger::open(&path).unwrap();
        let refund = |no: &str, status, created_at| NewRefund {
            out_refund_no: OutRefundNo::parse(no).unwrap(),
            refund_trade_no: None,
            out_trade_no: None,
            amount: rust_decimal::Decimal::from_str("5.10").unwrap(),
            currency: Currency::from_str("USD").unwrap(),
            status,
            created_at,
        };
        ledger
            .insert_refund(&refund("R-P-OLD1", RefundStatus::Failed, long_ago))
            .unwrap();
        ledger
            .insert_refund(&refund("R-P-OLD2", RefundStatus::Pending, long_ago))
            .unwrap();
        ledger
            .insert_refund(&refund("R-P-OLD3", RefundStatus::Failed, long_ago))
            .unwrap();
        ledger
            .insert_refund(&refund("R-P-NEW", RefundStatus::Failed, chrono::Utc::now()))
            .unwrap();
        let note = |no: &str, amount: &str| NotificationRecord {
            out_refund_no: OutRefundNo::parse(no).unwrap(),
            status: FinalStatus::Failed,
            refund_trade_no: None,
            amount: rust_decimal::Decimal::from_str(amount).unwrap(),
            currency: Currency::from_str("USD").unwrap(),
            refund_finish_time: None,
            notify_time: long_ago,
        };
        // A duplicate delivery for OLD1 (pruned with it); a disagreeing amount for OLD3: an
        // unresolved discrepancy that keeps OLD3 in the ledger.
        ledger
            .record_notification(&note("R-P-OLD1", "5.1"))
            .unwrap();
        ledger
            .record_notification(&note("R-P-OLD3", "5.11"))
            .unwrap();
    }

    // backup: online copy, checked, never overwritten; the copy is a working ledger.
    let b = dir.join("backup.sqlite");
    let b_s = b.to_str().unwrap();
    let v = json(&ok(dir, &["backup", l[0], l[1], b_s, "--json"], 0));
    assert_eq!(v["refunds"], 4);
    let v = json(&ok(dir, &["status", "--ledger", b_s, "--json"], 8));
    assert_eq!(
        (v["pending"].clone(), v["failed"].clone()),
        (1.into(), 3.into())
    );
    ok(dir, &["backup", l[0], l[1], b_s], 5);

    // Deletes outside a prune are refused, whoever tries.
    let raw = outsider(&path);
    for sql in [
        "DELETE FROM refunds WHERE out_refund_no = 'R-P-OLD1'",
        "DELETE FROM notifications",
        "DELETE FROM discrepancies",
    ] {
        let e = raw.execute(sql, []).unwrap_err();
        assert!(e.to_string().contains("checus-reconciler:"), "{sql}: {e}");
    }

    let v = json(&ok(
        dir,
        &[
            "prune",
            l[0],
            l[1],
            "--finalized-before",
            "365d",
            "--dry-run",
            "--json",
        ],
        0,
    ));
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["counts"]["refunds"], 1);
    assert_eq!(v["counts"]["notifications"], 1);
    assert_eq!(v["counts"]["kept_unresolved"], 1);
    // A real prune needs a reason, and an archive or an explicit --no-archive.
    ok(
        dir,
        &[
            "prune",
            l[0],
            l[1],
            "--finalized-before",
            "365d",
            "--by",
            "ops",
            "--no-archive",
        ],
        2,
    );
    ok(
        dir,
        &[
            "prune",
            l[0],
            l[1],
            "--finalized-before",
            "365d",
            "--reason",
            "x",
            "--by",
            "ops",
        ],
        2,
    );

    let archive = dir.join("prune-1.jsonl");
    let a_s = archive.to_str().unwrap();
    let args = [
        "prune",
        l[0],
        l[1],
        "--finalized-before",
        "365d",
        "--archive",
        a_s,
        "--reason",
        "retention: 1 year",
        "--by",
        "ops",
        "--json",
    ];
    let v = json(&ok(dir, &args, 0));
    assert_eq!(v["counts"]["refunds"], 1);
    assert_eq!(v["counts"]["notifications"], 1);
    assert_eq!(v["counts"]["kept_unresolved"], 1);
    let text = std::fs::read(&archive).unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &text);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["archive_sha256"], hex);
    let lines: Vec<serde_json::Value> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["actor"], "ops");
    assert_eq!(lines[1]["table"], "refunds");
    assert_eq!(lines[1]["row"]["out_refund_no"], "R-P-OLD1");
    assert_eq!(
        lines[1]["row"]["amount"], "5.10",
        "amounts archived exactly as stored"
    );
    assert_eq!(lines[2]["table"], "notifications");
    assert_eq!(lines.len(), 3);
    // The same archive is never overwritten.
    ok(dir, &args, 5);

    let v = json(&ok(dir, &["list", l[0], l[1], "--json"], 0));
    let left: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["out_refund_no"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["R-P-OLD2", "R-P-OLD3", "R-P-NEW"]);
    let (state, actor, archived): (String, String, String) = raw
        .query_row("SELECT state, actor, archive_path FROM prunes", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), actor.as_str()), ("done", "ops"));
    assert_eq!(archived, a_s);
    let e = raw.execute("DELETE FROM prunes", []).unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");

    // Resolving the discrepancy (audited) lets the next prune take OLD3 too.
    let v = json(&ok(dir, &["discrepancies", l[0], l[1], "--json"], 0));
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["kind"], "amount_mismatch");
    let id = v[0]["id"].to_string();
    ok(
        dir,
        &[
            "resolve-discrepancy",
            l[0],
            l[1],
            &id,
            "--reason",
            "Checus confirmed 5.10",
            "--by",
            "ops",
        ],
        0,
    );
    ok(
        dir,
        &[
            "resolve-discrepancy",
            l[0],
            l[1],
            &id,
            "--reason",
            "again",
            "--by",
            "ops",
        ],
        6,
    );
    assert!(stdout(&ok(dir, &["discrepancies", l[0], l[1]], 0)).contains("(0 discrepancies)"));
    let v = json(&ok(
        dir,
        &[
            "prune",
            l[0],
            l[1],
            "--finalized-before",
            "365d",
            "--no-archive",
            "--reason",
            "r2",
            "--by",
            "ops",
            "--json",
        ],
        0,
    ));
    assert_eq!(v["counts"]["refunds"], 1);
    assert_eq!(v["counts"]["discrepancies"], 1);
    let n: i64 = raw
        .query_row("SELECT count(*) FROM refunds", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "the old pending refund is never pruned");
}

#[test]
fn status_names_each_condition_that_needs_a_human() {
    use checus_reconciler::domain::Halt;
    use checus_reconciler::ledger::{SqliteLedger, SweepEnd};
    use checus_reconciler::report::finding_message;
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).unwrap();
    let now = chrono::Utc::now();
    let stale = Duration::from_secs(300);
    let h = ledger.health(now, stale).unwrap();
    assert!(h.needs_human());
    assert_eq!(h.findings[0].code(), "worker_never_ran");

    let id = ledger.begin_sweep(now, None).unwrap();
    ledger.finish_sweep(id, now, &SweepEnd::default()).unwrap();
    let h = ledger.health(now, stale).unwrap();
    assert!(!h.needs_human(), "{h:?}");
    assert_eq!(h.worker_idle_s, Some(0));

    let later = now + chrono::TimeDelta::minutes(6);
    let h = ledger.health(later, stale).unwrap();
    assert_eq!(h.findings[0].code(), "worker_stale");

    for (halt, code) in [
        (
            Halt::ConfigError {
                code: "SIGN_VERIFY_FAILED".into(),
            },
            "config_error",
        ),
        (Halt::ClockSkew, "clock_skew"),
    ] {
        let id = ledger.begin_sweep(later, None).unwrap();
        ledger
            .finish_sweep(
                id,
                later,
                &SweepEnd {
                    halt: Some(halt.clone()),
                    ..SweepEnd::default()
                },
            )
            .unwrap();
        let h = ledger.health(later, stale).unwrap();
        let codes: Vec<&str> = h.findings.iter().map(|f| f.code()).collect();
        assert_eq!(codes, [code], "{h:?}");
        assert_eq!(
            finding_message(&h.findings[0]),
            format!("querying is halted: {halt}")
        );
    }
}

#[test]
fn under_systemd_the_daemon_notifies_ready_status_and_watchdog() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_sb, url) = sandbox_command(dir, &script("R-N-1", "2.00", &["pending", "success"]));
    let cfg = write_config(
        dir,
        &url,
        "[schedule]\ngrace = \"0s\"\nbackoff = [\"200ms\"]\n\n[worker]\nsweep_cron = \"* * * * * *\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    ok(
        dir,
        &[
            "add",
            "--config",
            cfg,
            "--out-refund-no",
            "R-N-1",
            "--amount",
            "2.00",
            "--currency",
            "USD",
        ],
        0,
    );
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();

    // A bad configuration exits 3 before READY=1: systemd sees a failed start.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(cfg)
            .unwrap()
            .replace("[gateway]", "[gateway]\nbogus = 1"),
    )
    .unwrap();
    let o = cmd(dir)
        .args(["run", "--config", bad.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    assert_eq!(
        sock.recv(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing may be sent by a daemon that failed to start"
    );
    sock.set_nonblocking(false).unwrap();

    let mut c = cmd(dir);
    c.args(["run", "--config", cfg])
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Proc::spawn(c);
    let mut seen = Vec::new();
    let ready = crate::common::proc::recv_notify_until(&sock, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=ready: ledger "), "{ready}");
    assert!(
        dir.join("ledger.sqlite.lock").exists(),
        "READY only once the ledger is held"
    );
    crate::common::proc::recv_notify_until(&sock, "WATCHDOG=1", &mut seen);
    // After each sweep a one-line STATUS; the refund settles and nothing is pending.
    let status = crate::common::proc::recv_notify_until(&sock, "nothing pending", &mut seen);
    assert!(status.starts_with("STATUS=last sweep "), "{status}");
    assert_eq!(status.lines().count(), 1);
    // Pings keep coming while the daemon idles.
    let pings_before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    crate::common::proc::recv_notify_until(&sock, "WATCHDOG=1", &mut seen);
    assert!(seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() > pings_before);

    // The worker has swept, nothing is flagged: status is green and exits 0.
    let v = json(&ok(dir, &["status", "--config", cfg, "--json"], 0));
    assert_eq!(v["needs_human"], false);
    assert_eq!(v["succeeded"], 1);
    let text = stdout(&ok(dir, &["status", "--config", cfg], 0));
    assert!(text.contains("OK: nothing needs a human"), "{text}");

    // Empty the socket first: while the test ran `status`, watchdog pings filled the
    // datagram queue, and the daemon drops (never blocks on) a notification that does not fit.
    sock.set_nonblocking(true).unwrap();
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    daemon.signal("-TERM");
    crate::common::proc::recv_notify_until(&sock, "STOPPING=1", &mut seen);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}

/// Splits one journald native-protocol datagram into its fields.
fn journal_fields(msg: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..nl];
        match line.iter().position(|&b| b == b'=') {
            Some(eq) => {
                out.push((
                    String::from_utf8_lossy(&line[..eq]).into_owned(),
                    String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
                ));
                rest = &rest[(nl + 1).min(rest.len())..];
            }
            None => {
                // Binary-safe form: NAME\n, 64-bit little-endian length, value, \n.
                let name = String::from_utf8_lossy(line).into_owned();
                let len_at = nl + 1;
                let len = u64::from_le_bytes(rest[len_at..len_at + 8].try_into().unwrap()) as usize;
                let value = &rest[len_at + 8..len_at + 8 + len];
                out.push((name, String::from_utf8_lossy(value).into_owned()));
                rest = &rest[(len_at + 8 + len + 1).min(rest.len())..];
            }
        }
    }
    out
}

/// Runs the daemon in a private mount namespace whose /run/systemd/journal is a directory of
/// ours, so tracing-journald's fixed socket path reaches our socket. Needs root (CI runs as
/// root) and util-linux's `unshare` and `mount`; without them it skips or fails by the one
/// policy in `tests/common/tools.rs`.
fn journald_run(journal_stream_mode: bool) {
    use crate::common::tools::{require_root, require_tool};
    let needs = ["unshare", "sh", "mount", "mkdir", "kill"];
    if !needs.iter().all(|tool| require_tool(tool)) || !require_root("unshare --mount") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_sb, url) = sandbox_command(
        dir,
        &[
            script("R-J-FAIL", "3.00", &["failed"]),
            script("R-J-OK", "4.00", &["success"]),
        ]
        .concat(),
    );
    let format = if journal_stream_mode {
        "text"
    } else {
        "journald"
    };
    let cfg = write_config(
        dir,
        &url,
        &format!(
            "[schedule]\ngrace = \"0s\"\n\n[worker]\nsweep_cron = \"* * * * * *\"\n\n[log]\nformat = \"{format}\"\n"
        ),
    );
    for (no, amount) in [("R-J-FAIL", "3.00"), ("R-J-OK", "4.00")] {
        ok(
            dir,
            &[
                "add",
                "--config",
                cfg.to_str().unwrap(),
                "--out-refund-no",
                no,
                "--amount",
                amount,
                "--currency",
                "USD",
            ],
            0,
        );
    }
    let jdir = dir.join("journal");
    std::fs::create_dir(&jdir).unwrap();
    let sock = UnixDatagram::bind(jdir.join("socket")).unwrap();
    let stderr_file = dir.join("stderr.log");
    let err = std::fs::File::create(&stderr_file).unwrap();
    let args = [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal \
         && mount --bind \"$1\" /run/systemd/journal && shift && exec \"$@\"",
        "sh",
        jdir.to_str().unwrap(),
        BIN,
        "run",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let mut unshare = Command::new("unshare");
    unshare
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(err.try_clone().unwrap());
    if journal_stream_mode {
        use std::os::unix::fs::MetadataExt;
        let m = err.metadata().unwrap();
        unshare.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
    }
    let mut child = unshare.spawn().expect("unshare runs");

    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got_fail = None;
    let mut got_ok = None;
    let mut ready = false;
    while got_fail.is_none() || got_ok.is_none() || !ready {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "journald socket: {e}; daemon stderr:\n{}",
                    std::fs::read_to_string(&stderr_file).unwrap_or_default()
                );
            }
        };
        let fields = journal_fields(&buf[..n]);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("MESSAGE").as_deref() == Some("daemon ready") {
            ready = true;
        }
        if get("MESSAGE").as_deref() == Some("refund finalized") {
            match get("OUT_REFUND_NO").as_deref() {
                Some("R-J-FAIL") => got_fail = Some(fields.clone()),
                Some("R-J-OK") => got_ok = Some(fields.clone()),
                _ => {}
            }
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let fail = got_fail.unwrap();
    let get = |f: &Vec<(String, String)>, k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in {f:?}"))
    };
    // journalctl -u checus-reconciler OUT_REFUND_NO=R-J-FAIL / STATUS=REFUND_FAILED match these.
    assert_eq!(get(&fail, "STATUS"), "REFUND_FAILED");
    assert_eq!(get(&fail, "SOURCE"), "query");
    assert_eq!(get(&fail, "PRIORITY"), "4", "a failed refund is a warning");
    assert_eq!(get(&fail, "SYSLOG_IDENTIFIER"), "checus-reconciler");
    assert!(
        !fail.iter().any(|(n, _)| n.starts_with("F_")),
        "no field prefix"
    );
    let okf = got_ok.unwrap();
    assert_eq!(get(&okf, "STATUS"), "REFUND_SUCCESS");
    assert_eq!(get(&okf, "PRIORITY"), "5", "info");
    // Under journald nothing is written to stderr.
    let text = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(!text.contains("refund finalized"), "{text}");
}

#[test]
fn under_systemd_logs_go_to_journald_with_queryable_fields() {
    journald_run(true);
}

#[test]
fn log_format_journald_speaks_the_native_protocol() {
    journald_run(false);
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for shell in ["bash", "zsh", "fish"] {
        let o = ok(dir, &["completions", shell], 0);
        let text = stdout(&o);
        for sub in ["retry-now", "resolve", "prune", "backup", "explain"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let page = stdout(&ok(dir, &["manpage"], 0));
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    assert!(page.contains("checus\\-reconciler") && page.contains("stuck"));
    let out = dir.join("man");
    ok(dir, &["manpage", "--out-dir", out.to_str().unwrap()], 0);
    for f in [
        "checus-reconciler.1",
        "checus-reconciler-resolve.1",
        "checus-reconciler-status.1",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let resolve = std::fs::read_to_string(out.join("checus-reconciler-resolve.1")).unwrap();
    assert!(resolve.contains("\\-\\-reason"), "{resolve}");
    // The packaging-only subcommands stay out of --help.
    let help = stdout(&ok(dir, &["--help"], 0));
    assert!(
        !help.contains("completions") && help.contains("retry-now"),
        "{help}"
    );
}

/// A hung work loop stops the watchdog: the pings come from the loop itself, so when it is
/// stuck (here: blocked inside the after-sweep hook) none arrive, and they resume with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_work_loop_stops_the_watchdog_pings() {
    use checus_reconciler::config::{
        Config, KeySource, KeySources, LoadedKeys, LogFormat, LogSettings,
    };
    use checus_reconciler::daemon::{self, Hooks};
    use checus_reconciler::notify::Notifier;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let sb = checus_reconciler::sandbox::start(
        checus_reconciler::sandbox::SandboxOptions::insecure_test(Arc::new(
            checus_reconciler::domain::SystemClock,
        )),
    )
    .await
    .unwrap();
    let mut worker = crate::common::worker_settings();
    worker.sweep_cron = "* * * * * *".into();
    let config = Config {
        ledger: checus_reconciler::ledger::LedgerTarget::sqlite(dir.path().join("ledger.sqlite")),
        gateway: crate::common::settings_for(&sb).validate().unwrap(),
        keys: KeySources {
            merchant_private_key: KeySource::File(format!("{KEYS}/merchant_private.b64").into()),
            gateway_public_key: KeySource::File(format!("{KEYS}/gateway_public.b64").into()),
            webhook_secret: None,
        },
        policy: checus_reconciler::domain::Policy::default(),
        worker,
        log: LogSettings {
            format: LogFormat::Text,
            level: "warn".into(),
        },
        http: Default::default(),
        webhook: None,
    };
    let keys = LoadedKeys {
        merchant: crate::common::merchant_key(),
        gateway: crate::common::gateway_key(),
        webhook_secret: None,
        warnings: Vec::new(),
        api_token: None,
    };
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // The hook blocks the loop on its second sweep until the test releases it.
    let (blocked_tx, blocked_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let sweeps = std::sync::atomic::AtomicU64::new(0);
    let hooks = Hooks {
        on_sweep: Some(Box::new(move |_| {
            if sweeps.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                blocked_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
        })),
        notify: Notifier::to_path(&sock_path, Some(Duration::from_millis(200))),
        ..Hooks::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(daemon::run(
        config,
        keys,
        Arc::new(checus_reconciler::domain::SystemClock),
        stop.clone(),
        reload_rx,
        hooks,
    ));

    let recv = move |sock: UnixDatagram, timeout: Duration| {
        std::thread::spawn(move || {
            sock.set_read_timeout(Some(timeout)).unwrap();
            let mut buf = [0u8; 512];
            let got = sock
                .recv(&mut buf)
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
            (sock, got)
        })
        .join()
        .unwrap()
    };
    // Pings flow while the loop is healthy.
    let mut sock = sock;
    let mut pings = 0;
    while pings < 2 {
        let (s, got) = tokio::task::block_in_place(|| recv(sock, Duration::from_secs(30)));
        sock = s;
        if got.unwrap().contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    // The loop is now stuck in the hook: drain what was sent before, then nothing comes for
    // many watchdog intervals (5 × 100 ms ping interval).
    tokio::task::block_in_place(|| blocked_rx.recv_timeout(Duration::from_secs(30)).unwrap());
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let (s, got) = tokio::task::block_in_place(|| recv(sock, Duration::from_millis(1000)));
    sock = s;
    let err = got.expect_err("no ping may come from a hung loop");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    // Released, the loop pings again.
    release_tx.send(()).unwrap();
    loop {
        let (s, got) = tokio::task::block_in_place(|| recv(sock, Duration::from_secs(30)));
        sock = s;
        if got.unwrap().contains("WATCHDOG=1") {
            break;
        }
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    sb.shutdown().await;
}
