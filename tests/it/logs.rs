//! Logs that correlate (issue 12, part 5) and discrepancy ids that last (part 6), with the
//! real binary: a discrepancy the ledger's notification trigger writes is logged at ERROR once
//! (not again on later sweeps, nor after a restart); every sweep's lines carry its `sweeps.id`,
//! which its attempt rows carry too; a discrepancy id is never reused after a prune; and a
//! config error is one line naming the file or the key.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use checus_reconciler::domain::{Currency, FinalStatus, NewRefund, OutRefundNo, RefundStatus};
use checus_reconciler::ledger::{NotificationRecord, SqliteLedger};
use checus_reconciler::sandbox::{RefundScript, Step};
use serde_json::Value;

use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, fast_schedule, import_scripts, run, sql, stderr, stdout,
    write_config,
};

/// The daemon's JSON log line in `line`, if it is one.
fn parsed(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

/// Waits for the next log line whose message is `message`, parsed.
fn wait_message(daemon: &mut Proc, message: &str) -> Value {
    loop {
        let line = daemon.wait_for(message);
        if let Some(v) = parsed(&line).filter(|v| v["message"] == message) {
            return v;
        }
    }
}

/// Waits until a "sweep finished" line names a sweep at or after `id`: every line of the
/// sweeps before it has been read by then.
fn wait_sweep(daemon: &mut Proc, id: i64) {
    loop {
        let v = wait_message(daemon, "sweep finished");
        if v["sweep"].as_i64().is_some_and(|s| s >= id) {
            return;
        }
    }
}

/// The newest `sweeps.id` (0: none yet).
fn newest_sweep(ledger: &Path) -> i64 {
    sql(ledger)
        .query_row("SELECT coalesce(max(id), 0) FROM sweeps", [], |r| r.get(0))
        .unwrap()
}

/// The "discrepancy recorded" lines seen so far.
fn discrepancy_lines(daemon: &Proc) -> Vec<Value> {
    daemon
        .json_lines()
        .into_iter()
        .filter(|v| v["message"] == "discrepancy recorded")
        .collect()
}

/// Inserts a notification as the merchant's app does: the schema's trigger applies it.
fn notify(ledger: &Path, no: &str, status: &str, amount: &str) {
    sql(ledger)
        .execute(
            "INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
             VALUES (?1, ?2, ?3, 'USD', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            [no, status, amount],
        )
        .unwrap();
}

fn start(dir: &Path, config: &Path) -> Proc {
    let mut c = cmd(dir);
    c.args(["run", "--config", config.to_str().unwrap()]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    daemon
}

/// The sweep that finalized R-LOG-1: its lines carry its `sweeps.id`, which the attempt row
/// it wrote carries too, and `explain` shows.
fn sweep_ids_tie_log_lines_to_rows(d: &Path, ledger: &Path, daemon: &mut Proc) {
    let finalized = wait_message(daemon, "refund finalized");
    let sweep = finalized["span"]["sweep"]
        .as_i64()
        .unwrap_or_else(|| panic!("no sweep id on {finalized}"));
    let attempt_sweep: Option<i64> = sql(ledger)
        .query_row(
            "SELECT a.sweep_id FROM attempts AS a JOIN sweeps AS s ON s.id = a.sweep_id
              WHERE a.out_refund_no = 'R-LOG-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attempt_sweep, Some(sweep), "the attempt row's sweep_id");
    wait_sweep(daemon, sweep);
    let finished: Vec<Value> = daemon
        .json_lines()
        .into_iter()
        .filter(|v| v["message"] == "sweep finished" && v["sweep"] == sweep)
        .collect();
    assert_eq!(finished.len(), 1, "one 'sweep finished' for sweep {sweep}");
    assert_eq!(finished[0]["claimed"], 1);
    let l = ledger.to_str().unwrap();
    let o = run(d, &["explain", "--ledger", l, "R-LOG-1", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let query = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "query")
        .cloned()
        .unwrap_or_else(|| panic!("no query event: {v}"));
    assert_eq!(query["sweep_id"], sweep, "{query}");
    let o = run(d, &["explain", "--ledger", l, "R-LOG-1"]);
    assert!(
        stdout(&o).contains(&format!(", sweep {sweep})")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn trigger_discrepancies_are_logged_once_and_sweep_ids_tie_log_lines_to_attempt_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ledger = d.join("ledger.sqlite");
    let scripts = vec![(
        "R-LOG-1".to_owned(),
        RefundScript::usd("R-LOG-1", vec![Step::Success]),
    )];
    let sandbox = LiveSandbox::start(scripts.clone());
    // Debug: every sweep logs "sweep finished" with its id, the readiness signal used below.
    let extra = format!("{}level = \"checus_reconciler=debug\"\n", fast_schedule(""));
    let config = write_config(d, &sandbox.base_url(), &extra);
    import_scripts(d, &config, &scripts);
    let mut daemon = start(d, &config);

    sweep_ids_tie_log_lines_to_rows(d, &ledger, &mut daemon);

    // The merchant's app stores two notifications that disagree: the trigger records two
    // discrepancies (a conflicting final status, an unknown refund), and the daemon logs
    // each once, at ERROR, with its fields.
    notify(&ledger, "R-LOG-1", "REFUND_FAILED", "12.50");
    notify(&ledger, "R-LOG-GHOST", "REFUND_SUCCESS", "3.00");
    let first = wait_message(&mut daemon, "discrepancy recorded");
    let second = wait_message(&mut daemon, "discrepancy recorded");
    let ids: Vec<i64> = sql(&ledger)
        .prepare("SELECT id FROM discrepancies ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for (line, id, no, kind, expected, observed) in [
        (
            &first,
            ids[0],
            "R-LOG-1",
            "conflicting_final",
            "REFUND_SUCCESS",
            "REFUND_FAILED",
        ),
        (
            &second,
            ids[1],
            "R-LOG-GHOST",
            "unknown_refund",
            "",
            "REFUND_SUCCESS 3.00 USD",
        ),
    ] {
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["id"], id, "{line}");
        assert_eq!(line["out_refund_no"], no, "{line}");
        assert_eq!(line["kind"], kind, "{line}");
        assert_eq!(line["expected"], expected, "{line}");
        assert_eq!(line["observed"], observed, "{line}");
        assert_eq!(line["source"], "notification", "{line}");
    }
    // Later sweeps do not repeat them.
    let after = newest_sweep(&ledger);
    wait_sweep(&mut daemon, after + 2);
    assert_eq!(discrepancy_lines(&daemon).len(), 2, "{}", daemon.tail(30));

    // A restart repeats nothing: what was recorded before it starts is not logged again,
    // what was recorded while it was down included (the rule of "refund finalized": the
    // watermark is read at start; `status` and `discrepancies` list every unresolved one).
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    notify(&ledger, "R-LOG-DOWN", "REFUND_FAILED", "1.00");
    let mut daemon = start(d, &config);
    notify(&ledger, "R-LOG-LATER", "REFUND_FAILED", "2.00");
    let later = wait_message(&mut daemon, "discrepancy recorded");
    assert_eq!(later["out_refund_no"], "R-LOG-LATER", "{later}");
    assert_eq!(later["id"], ids[1] + 2, "{later}");
    let after = newest_sweep(&ledger);
    wait_sweep(&mut daemon, after + 2);
    assert_eq!(discrepancy_lines(&daemon).len(), 1, "{}", daemon.tail(30));
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}

#[test]
fn a_discrepancy_id_is_never_reused_after_a_prune_deletes_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("ledger.sqlite");
    let long_ago = chrono::Utc::now() - chrono::TimeDelta::days(400);
    let note = |no: &str, amount: &str| NotificationRecord {
        out_refund_no: OutRefundNo::parse(no).unwrap(),
        status: FinalStatus::Failed,
        refund_trade_no: None,
        amount: rust_decimal::Decimal::from_str(amount).unwrap(),
        currency: Currency::from_str("USD").unwrap(),
        refund_finish_time: None,
        notify_time: long_ago,
    };
    {
        let ledger = SqliteLedger::open(&path).unwrap();
        for (no, created_at) in [("R-ID-OLD", long_ago), ("R-ID-NEW", chrono::Utc::now())] {
            ledger
                .insert_refund(&NewRefund {
                    out_refund_no: OutRefundNo::parse(no).unwrap(),
                    refund_trade_no: None,
                    out_trade_no: None,
                    amount: rust_decimal::Decimal::from_str("5.10").unwrap(),
                    currency: Currency::from_str("USD").unwrap(),
                    status: RefundStatus::Failed,
                    created_at,
                })
                .unwrap();
        }
        // The newest (and only) discrepancy, about the old refund.
        ledger
            .record_notification(&note("R-ID-OLD", "5.11"))
            .unwrap();
    }
    let raw = sql(&path);
    let ids = |raw: &rusqlite::Connection| -> Vec<i64> {
        raw.prepare("SELECT id FROM discrepancies ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(ids(&raw), [1]);
    let l = path.to_str().unwrap();
    let ok = |args: &[&str]| {
        let o = run(d, args);
        assert_eq!(code(&o), 0, "{args:?}: {}{}", stdout(&o), stderr(&o));
    };
    ok(&[
        "resolve-discrepancy",
        "--ledger",
        l,
        "1",
        "--reason",
        "Checus confirmed 5.10",
        "--by",
        "ops",
    ]);
    ok(&[
        "prune",
        "--ledger",
        l,
        "--finalized-before",
        "365d",
        "--no-archive",
        "--reason",
        "retention",
        "--by",
        "ops",
    ]);
    assert!(ids(&raw).is_empty(), "the prune took discrepancy 1");

    // The next discrepancy gets 2: the audit row of the resolve still means the pruned one.
    SqliteLedger::open_existing(&path)
        .unwrap()
        .record_notification(&note("R-ID-NEW", "5.12"))
        .unwrap();
    assert_eq!(ids(&raw), [2]);
    let detail: String = raw
        .query_row(
            "SELECT detail FROM operator_actions WHERE action = 'resolve_discrepancy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(detail, r#"{"discrepancy":1}"#);
}

#[test]
fn a_config_error_is_one_line_naming_the_file_or_key_at_err_priority_under_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = crate::common::proc::config_text(d, "http://127.0.0.1:9", "");
    let config = d.join("config.toml");
    let name = config.to_str().unwrap().to_owned();
    let cases = [
        // (what is wrong, the text, what the line must name)
        ("syntax", format!("{good}\n[worker\n"), name.clone()),
        (
            "unknown key",
            format!("{good}\n[worker]\nbogus = 1\n"),
            name.clone(),
        ),
        (
            "a value out of range",
            format!("{good}\n[worker]\nconcurrency = 0\n"),
            "worker.concurrency".to_owned(),
        ),
        (
            "a missing key file",
            good.replace("merchant_private.b64", "missing.b64"),
            "keys.merchant_private_key".to_owned(),
        ),
    ];
    for (what, text, names) in cases {
        std::fs::write(&config, &text).unwrap();
        for journal in [false, true] {
            // stderr is a file, and under "systemd" $JOURNAL_STREAM names it, as systemd does
            // for a service whose stderr is the journal.
            let err_path = d.join("stderr.log");
            let err = std::fs::File::create(&err_path).unwrap();
            let mut c = cmd(d);
            c.args(["run", "--config", &name])
                .stdout(std::process::Stdio::null())
                .stderr(err.try_clone().unwrap());
            if journal {
                let m = err.metadata().unwrap();
                c.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
            }
            let status = c.status().unwrap();
            assert_eq!(status.code(), Some(3), "{what}");
            let out = std::fs::read_to_string(&err_path).unwrap();
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(
                lines.len(),
                1,
                "{what} (journal: {journal}): one line\n{out}"
            );
            let want = if journal { "<3>" } else { "" };
            assert!(
                lines[0].starts_with(&format!("{want}checus-reconciler: error: ")),
                "{what} (journal: {journal}): {out}"
            );
            assert!(lines[0].contains(&names), "{what}: names {names}: {out}");
        }
    }
}

#[test]
fn a_failed_sweep_is_logged_with_its_sweeps_row_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ledger = d.join("ledger.sqlite");
    let sandbox = LiveSandbox::start(Vec::new());
    let extra = format!("{}level = \"checus_reconciler=debug\"\n", fast_schedule(""));
    let config = write_config(d, &sandbox.base_url(), &extra);
    let mut daemon = start(d, &config);
    wait_message(&mut daemon, "sweep finished");
    // The merchant's app (or a mistake of its DBA) stops sweeps from ending: every sweep now
    // fails at its last write, after its row was begun.
    sql(&ledger)
        .execute_batch(
            "CREATE TRIGGER app_holds_sweeps BEFORE UPDATE OF finished_at ON sweeps
             BEGIN SELECT RAISE(ABORT, 'the app holds sweeps'); END;",
        )
        .unwrap();
    let failed = wait_message(&mut daemon, "sweep failed; retrying at the next tick");
    assert_eq!(failed["level"], "ERROR", "{failed}");
    let open: i64 = sql(&ledger)
        .query_row(
            "SELECT min(id) FROM sweeps WHERE finished_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed["sweep"], open, "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("the app holds sweeps")),
        "{failed}"
    );
    sql(&ledger)
        .execute_batch("DROP TRIGGER app_holds_sweeps")
        .unwrap();
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}
