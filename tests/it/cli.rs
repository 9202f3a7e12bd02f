//! The real binary, in fresh temp dirs with a scrubbed environment: every subcommand, its
//! output and its documented exit code.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::common::proc::{Proc, cmd, code, run, sandbox_command, stderr, stdout, write_config};

fn ledger_arg(dir: &Path) -> String {
    dir.join("ledger.sqlite").display().to_string()
}

#[test]
fn init_creates_a_versioned_ledger_and_is_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let l = ledger_arg(d.path());
    let o = run(d.path(), &["init", "--ledger", &l]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let version = checus_reconciler::ledger::SCHEMA_VERSION;
    assert!(stdout(&o).contains(&format!("schema version {version}")));
    let o = run(d.path(), &["init", "--ledger", &l]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let conn = rusqlite::Connection::open(&l).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, i64::from(version));
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn ledgers_we_cannot_trust_are_refused_with_exit_4() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.sqlite");
    std::fs::write(
        &junk,
        "this is not a database, it is a shopping list\n".repeat(200),
    )
    .unwrap();
    let o = run(d.path(), &["status", "--ledger", junk.to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("junk.sqlite"), "{}", stderr(&o));

    let newer = ledger_arg(d.path());
    assert_eq!(code(&run(d.path(), &["init", "--ledger", &newer])), 0);
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let o = run(d.path(), &["status", "--ledger", &newer]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("99"), "{}", stderr(&o));

    let missing = d.path().join("nope.sqlite");
    let o = run(d.path(), &["status", "--ledger", missing.to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        !missing.exists(),
        "read-only commands never create a ledger"
    );
}

#[test]
fn add_show_list_status_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let l = ledger_arg(d.path());
    let o = run(
        d.path(),
        &[
            "add",
            "--ledger",
            &l,
            "--out-refund-no",
            "R-CLI-1",
            "--amount",
            "12.50",
            "--currency",
            "USD",
            "--out-trade-no",
            "O-1",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(
        d.path(),
        &[
            "add",
            "--ledger",
            &l,
            "--out-refund-no",
            "R-CLI-2",
            "--amount",
            "15000",
            "--currency",
            "IDR",
            "--status",
            "REFUND_FAILED",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Duplicate: exit 5, names the refund.
    let o = run(
        d.path(),
        &[
            "add",
            "--ledger",
            &l,
            "--out-refund-no",
            "R-CLI-1",
            "--amount",
            "1",
            "--currency",
            "USD",
        ],
    );
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("R-CLI-1"));
    // Bad amount: exit 5, names the field, writes nothing.
    let o = run(
        d.path(),
        &[
            "add",
            "--ledger",
            &l,
            "--out-refund-no",
            "R-CLI-3",
            "--amount",
            "1.005",
            "--currency",
            "USD",
        ],
    );
    assert_eq!(code(&o), 5);
    assert!(stderr(&o).contains("amount"), "{}", stderr(&o));

    let o = run(d.path(), &["show", "--ledger", &l, "R-CLI-1", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["refund"]["amount"], "12.50",
        "amounts are exact decimal strings"
    );
    assert_eq!(v["refund"]["status"], "REFUND_PENDING");
    let o = run(d.path(), &["show", "--ledger", &l, "R-NOPE"]);
    assert_eq!(code(&o), 6);

    let o = run(
        d.path(),
        &[
            "list",
            "--ledger",
            &l,
            "--status",
            "REFUND_FAILED",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let v = &v["rows"];
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["out_refund_no"], "R-CLI-2");
    assert_eq!(v[0]["final_source"], "refund_response");
    let o = run(d.path(), &["list", "--ledger", &l]);
    assert!(stdout(&o).contains("R-CLI-1") && stdout(&o).contains("R-CLI-2"));

    // No daemon has ever swept this ledger: that needs a human, so status exits 8.
    let o = run(d.path(), &["status", "--ledger", &l, "--json"]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["warnings"][0]["code"], "worker_never_ran");
    assert_eq!(v["pending"], 1);
    assert_eq!(v["failed"], 1);
    let o = run(d.path(), &["status", "--ledger", &l]);
    assert!(stdout(&o).contains("REFUND_PENDING"), "{}", stdout(&o));
}

#[test]
fn import_is_validated_and_all_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    let l = ledger_arg(d.path());
    let bad = d.path().join("refunds.csv");
    std::fs::write(
        &bad,
        "out_refund_no,amount,currency\nR-I-1,10.00,USD\nR-I-2,abc,USD\nR-I-3,5,EUR\n",
    )
    .unwrap();
    let o = run(d.path(), &["import", "--ledger", &l, bad.to_str().unwrap()]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("refunds.csv:3: amount"),
        "{}",
        stderr(&o)
    );
    let dup = d.path().join("dup.jsonl");
    std::fs::write(
        &dup,
        "{\"outRefundNo\":\"R-J-1\",\"amount\":10.10,\"currency\":\"USD\"}\n{\"outRefundNo\":\"R-J-1\",\"amount\":\"2\",\"currency\":\"USD\"}\n",
    )
    .unwrap();
    let o = run(d.path(), &["import", "--ledger", &l, dup.to_str().unwrap()]);
    assert_eq!(code(&o), 5);
    assert!(stderr(&o).contains("dup.jsonl:2"), "{}", stderr(&o));

    let good = d.path().join("good.jsonl");
    let mut f = std::fs::File::create(&good).unwrap();
    for i in 0..25 {
        writeln!(
            f,
            "{{\"outRefundNo\":\"R-G-{i}\",\"amount\":10.10,\"currency\":\"USD\"}}"
        )
        .unwrap();
    }
    drop(f);
    let o = run(
        d.path(),
        &["import", "--ledger", &l, good.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("imported 25"));
    // A second import colliding with the ledger writes nothing, and says which line.
    let clash = d.path().join("clash.csv");
    std::fs::write(
        &clash,
        "outRefundNo,amount,currency\nR-NEW,1,USD\nR-G-3,1,USD\n",
    )
    .unwrap();
    let o = run(
        d.path(),
        &["import", "--ledger", &l, clash.to_str().unwrap()],
    );
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("clash.csv:3"), "{}", stderr(&o));
    let o = run(d.path(), &["show", "--ledger", &l, "R-NEW"]);
    assert_eq!(code(&o), 6, "nothing from the failed import was written");
    let o = run(d.path(), &["show", "--ledger", &l, "R-G-0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["refund"]["amount"], "10.10",
        "JSON numbers keep their exact text"
    );
}

#[test]
fn check_config_accepts_good_config_and_names_the_bad_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9/aggregate-pay/api/gateway", "");
    let o = run(
        d.path(),
        &["check-config", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("config ok"));

    let bad = write_config(
        d.path(),
        "http://checus.example.com/aggregate-pay/api/gateway",
        "",
    );
    let o = run(
        d.path(),
        &["check-config", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("gateway.base_url"), "{}", stderr(&o));

    let unknown = write_config(
        d.path(),
        "http://127.0.0.1:9/x",
        "[worker]\nconcurency = 3\n",
    );
    let o = run(
        d.path(),
        &["check-config", "--config", unknown.to_str().unwrap()],
    );
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("concurency"), "{}", stderr(&o));

    let missing = d.path().join("absent.toml");
    let o = run(
        d.path(),
        &["check-config", "--config", missing.to_str().unwrap()],
    );
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("absent.toml"));
}

#[test]
fn query_now_records_the_attempt_like_any_other() {
    let d = tempfile::tempdir().unwrap();
    let (_sb, url) = sandbox_command(
        d.path(),
        r#"{"outRefundNo":"R-Q-1","refundTradeNo":"T1","outTradeNo":"O1","amount":"12.50","currency":"USD","steps":["pending","success"]}"#,
    );
    let cfg = write_config(d.path(), &url, "");
    let cfg = cfg.to_str().unwrap();
    let o = run(
        d.path(),
        &[
            "add",
            "--config",
            cfg,
            "--out-refund-no",
            "R-Q-1",
            "--amount",
            "12.50",
            "--currency",
            "USD",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(d.path(), &["query", "--config", cfg, "R-Q-1", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["outcome"], "pending");
    let o = run(d.path(), &["query", "--config", cfg, "R-Q-1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("REFUND_SUCCESS"), "{}", stdout(&o));
    let o = run(d.path(), &["show", "--config", cfg, "R-Q-1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["refund"]["status"], "REFUND_SUCCESS");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 2);
    let o = run(d.path(), &["query", "--config", cfg, "R-Q-404"]);
    assert_eq!(code(&o), 6);
}

#[test]
fn the_daemon_reconciles_refuses_a_second_instance_and_drains_on_sigterm() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut scripts = String::new();
    for i in 0..40 {
        let last = if i % 4 == 0 { "failed" } else { "success" };
        scripts.push_str(&format!(
            "{{\"outRefundNo\":\"R-D-{i}\",\"refundTradeNo\":\"T{i}\",\"outTradeNo\":\"O{i}\",\"amount\":\"3.25\",\"currency\":\"USD\",\"steps\":[\"pending\",\"fault:http:500\",\"{last}\"]}}\n"
        ));
    }
    let (_sb, url) = sandbox_command(d.path(), &scripts);
    let cfg = write_config(
        d.path(),
        &url,
        "[schedule]\ngrace = \"0s\"\nbackoff = [\"200ms\"]\nretry = \"200ms\"\n\n[worker]\nsweep_cron = \"* * * * * *\"\nrate_per_second = 500.0\n\n[log]\nformat = \"json\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let import = d.path().join("r.csv");
    let mut csv = String::from("out_refund_no,amount,currency\n");
    for i in 0..40 {
        csv.push_str(&format!("R-D-{i},3.25,USD\n"));
    }
    std::fs::write(&import, csv).unwrap();
    assert_eq!(
        code(&run(
            d.path(),
            &["import", "--config", cfg, import.to_str().unwrap()]
        )),
        0
    );

    let mut c = cmd(d.path());
    c.args(["run", "--config", cfg]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");

    // A second daemon on the same ledger refuses to start.
    let o = run(d.path(), &["run", "--config", cfg]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));

    // The merchant's app writes through the documented SQL contract while the daemon runs:
    // an immediate /refund failure, and a refund finalized by its notification. Each still
    // gets its own "refund finalized" log line.
    {
        use checus_reconciler::ledger::contract::snippet;
        let conn = rusqlite::Connection::open(d.path().join("ledger.sqlite")).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute(
            snippet("insert_failed_refund").unwrap(),
            rusqlite::named_params! {":out_refund_no": "R-D-RR", ":refund_trade_no": None::<String>,
            ":out_trade_no": "O-RR", ":amount": "9.99", ":currency": "USD"},
        )
        .unwrap();
        conn.execute(
            snippet("insert_refund").unwrap(),
            rusqlite::named_params! {":out_refund_no": "R-D-NOTE", ":refund_trade_no": "T-NOTE",
            ":out_trade_no": "O-NOTE", ":amount": "1.00", ":currency": "USD"},
        )
        .unwrap();
        conn.execute(
            snippet("record_notification").unwrap(),
            rusqlite::named_params! {":out_refund_no": "R-D-NOTE", ":status": "REFUND_SUCCESS",
            ":refund_trade_no": "T-NOTE", ":amount": "1.0", ":currency": "USD",
            ":refund_finish_time": "2026-11-25T03:28:23.092Z",
            ":notify_time": "2026-11-25T11:28:24.000+08:00"},
        )
        .unwrap();
    }

    // Wait for the outcome, read through the CLI like an operator would.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let o = run(d.path(), &["status", "--config", cfg, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        if v["pending"] == 0 {
            assert_eq!(v["succeeded"], 31);
            assert_eq!(v["failed"], 11);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not settled: {v}");
        daemon.wait_for("sweep finished");
    }
    daemon.saw_or_wait("\"R-D-NOTE\"");
    // SIGHUP with a broken config is rejected and the daemon keeps running; a good one reloads.
    let good = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(cfg, good.replace("[worker]", "[worker]\nbogus = 1")).unwrap();
    daemon.signal("-HUP");
    let line = daemon.wait_for("configuration reload rejected");
    assert!(line.contains("bogus"), "{line}");
    std::fs::write(cfg, &good).unwrap();
    daemon.signal("-HUP");
    daemon.wait_for("configuration reloaded");
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), 0);
    // JSON logs: one "refund finalized" line per refund, failures at WARN.
    let finalized: Vec<serde_json::Value> = daemon
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "refund finalized")
        .collect();
    assert_eq!(finalized.len(), 42);
    for v in &finalized {
        let failed = v["status"] == "REFUND_FAILED";
        assert_eq!(v["level"], if failed { "WARN" } else { "INFO" }, "{v}");
        let no = v["out_refund_no"].as_str().unwrap();
        let source = match no {
            "R-D-RR" => "refund_response",
            "R-D-NOTE" => "notification",
            _ => "query",
        };
        assert_eq!(v["source"], source, "{v}");
    }
    assert!(daemon.seen.iter().any(|l| l.contains("daemon stopped")));
}

#[test]
fn demo_runs_end_to_end_and_matches_the_truth() {
    let d = tempfile::tempdir().unwrap();
    let o = run(
        d.path(),
        &[
            "demo",
            "--dir",
            d.path().to_str().unwrap(),
            "--refunds",
            "80",
        ],
    );
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("matches the sandbox's truth"),
        "{}",
        stdout(&o)
    );
}

/// Imports `n` pending refunds into a fresh ledger in `dir`; returns the ledger path.
fn ledger_with_refunds(dir: &Path, n: usize) -> String {
    let l = ledger_arg(dir);
    let file = dir.join("many.csv");
    let mut text = String::from("out_refund_no,amount,currency\n");
    for i in 0..n {
        text.push_str(&format!("R-PIPE-{i:06},10.00,USD\n"));
    }
    std::fs::write(&file, text).unwrap();
    let o = run(dir, &["import", "--ledger", &l, file.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    l
}

/// Runs the binary with stdout on a pipe whose reader takes `lines` lines, then closes it
/// (what `| head -N` does); returns the exit code and stderr.
fn run_into_early_close(dir: &Path, args: &[&str], lines: usize) -> (i32, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let mut child = cmd(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "a line");
    }
    drop(reader);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code().expect("exited, not signalled"), err)
}

#[test]
fn a_reader_that_closes_early_is_a_normal_end() {
    let d = tempfile::tempdir().unwrap();
    // Far more than a pipe buffer (64 KiB), so the writer is still writing when the reader
    // goes: the write fails with EPIPE, which must end the command quietly, not panic.
    let l = ledger_with_refunds(d.path(), 3000);
    for args in [
        vec!["list", "--ledger", &l, "--limit", "5000"],
        vec!["list", "--ledger", &l, "--limit", "5000", "--json"],
        vec!["export", "--ledger", &l, "--since", "1d"],
    ] {
        let (code, err) = run_into_early_close(d.path(), &args, 1);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn status_is_synchronous_and_keeps_its_exit_code_when_stdout_closes() {
    let d = tempfile::tempdir().unwrap();
    let l = ledger_with_refunds(d.path(), 1);
    // No daemon ever swept this ledger: status says so with exit 8, whether or not anyone
    // reads what it prints.
    let o = run(d.path(), &["status", "--ledger", &l]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    assert!(stdout(&o).contains("REFUND_PENDING"), "{}", stdout(&o));
    let (code, err) = run_into_early_close(d.path(), &["status", "--ledger", &l], 0);
    assert_eq!(code, 8, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn times_durations_and_add_statuses_are_checked_by_clap_with_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let l = ledger_arg(d.path());
    for (args, flag) in [
        (
            vec!["list", "--ledger", &l, "--since", "yesterday"],
            "--since",
        ),
        (
            vec!["status", "--ledger", &l, "--stale-after", "5 min"],
            "--stale-after",
        ),
        (
            vec!["stuck", "--ledger", &l, "--older-than", "2x"],
            "--older-than",
        ),
        (
            vec![
                "prune",
                "--ledger",
                &l,
                "--finalized-before",
                "soon",
                "--dry-run",
            ],
            "--finalized-before",
        ),
        (vec!["sandbox", "--latency", "fast"], "--latency"),
        (
            vec![
                "add",
                "--ledger",
                &l,
                "--out-refund-no",
                "R-1",
                "--amount",
                "1",
                "--currency",
                "USD",
                "--status",
                "REFUND_SUCCESS",
            ],
            "--status",
        ),
    ] {
        let o = run(d.path(), &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{args:?}: {}", stderr(&o));
    }
    assert!(
        !d.path().join("ledger.sqlite").exists(),
        "nothing was created"
    );
}
