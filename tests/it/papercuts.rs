//! Issue 12's command-line papercuts, output side, with the real binary on real ledgers:
//! `--json` on every command that prints a result, lists that say when their limit cut them
//! short, `status`'s flagged count against `list --flagged`, `discrepancies --json` with the
//! resolution, `audit`, `explain` of a flagged refund that became final, `show` of a pruned
//! refund, plurals, and `list` columns that line up with their headers.

use std::path::Path;
use std::process::Output;
use std::str::FromStr;

use checus_reconciler::domain::{Currency, FinalStatus, OutRefundNo, format_ts};
use checus_reconciler::ledger::{NotificationRecord, SqliteLedger};
use rust_decimal::Decimal;

use crate::common::proc::{code, run, sandbox_command, stderr, stdout, write_config};

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

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

fn ago(d: chrono::TimeDelta) -> String {
    format_ts(chrono::Utc::now() - d)
}

/// `add` one refund with `--json`; returns the row it prints.
fn add(dir: &Path, l: &str, no: &str, amount: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "add",
        "--ledger",
        l,
        "--out-refund-no",
        no,
        "--amount",
        amount,
        "--currency",
        "USD",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&ok(dir, &args, 0))
}

/// A notification the merchant's app records, as its contract says (through the library).
fn notify(ledger: &Path, no: &str, status: FinalStatus, amount: &str) {
    SqliteLedger::open_existing(ledger)
        .unwrap()
        .record_notification(&NotificationRecord {
            out_refund_no: OutRefundNo::parse(no).unwrap(),
            status,
            refund_trade_no: None,
            amount: Decimal::from_str(amount).unwrap(),
            currency: Currency::from_str("USD").unwrap(),
            refund_finish_time: None,
            notify_time: chrono::Utc::now(),
        })
        .unwrap();
}

#[test]
fn every_command_that_prints_a_result_has_json_with_stable_fields() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = write_config(dir, "http://127.0.0.1:9", "");
    let cfg = cfg.to_str().unwrap();
    let v = json(&ok(dir, &["check-config", "--config", cfg, "--json"], 0));
    assert_eq!(v["config"], cfg);
    assert!(
        v["ledger"].as_str().unwrap().ends_with("ledger.sqlite"),
        "{v}"
    );
    assert_eq!(v["gateway"], "http://127.0.0.1:9");
    assert!(v["warnings"].is_array(), "{v}");

    let ledger = dir.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    let v = json(&ok(dir, &["init", "--ledger", l, "--json"], 0));
    assert_eq!(v["ledger"], l);
    assert_eq!(
        v["schema_version"],
        checus_reconciler::ledger::SCHEMA_VERSION
    );
    let v = add(dir, l, "R-J-1", "12.50", &[]);
    assert_eq!(
        (&v["out_refund_no"], &v["amount"], &v["status"]),
        (&"R-J-1".into(), &"12.50".into(), &"REFUND_PENDING".into())
    );
    assert!(
        v["created_at"].is_string() && v["review_flag"] == false,
        "{v}"
    );

    let file = dir.join("more.csv");
    std::fs::write(
        &file,
        "out_refund_no,amount,currency\nR-J-2,1.00,USD\nR-J-3,2.00,USD\n",
    )
    .unwrap();
    let v = json(&ok(
        dir,
        &["import", "--ledger", l, file.to_str().unwrap(), "--json"],
        0,
    ));
    assert_eq!(v["imported"], 2);
    assert_eq!(v["file"], file.to_str().unwrap());
    assert_eq!(v["ledger"], l);

    // A notification that disagrees on the amount: one discrepancy to resolve.
    notify(&ledger, "R-J-2", FinalStatus::Success, "1.01");
    let listed = json(&ok(dir, &["discrepancies", "--ledger", l, "--json"], 0));
    let id = listed[0]["id"].as_i64().unwrap();
    assert!(listed[0]["resolved_at"].is_null() && listed[0]["resolution"].is_null());
    let v = json(&ok(
        dir,
        &[
            "resolve-discrepancy",
            "--ledger",
            l,
            &id.to_string(),
            "--reason",
            "merchant app fixed",
            "--by",
            "alice",
            "--json",
        ],
        0,
    ));
    assert_eq!(v["id"], id);
    assert_eq!(v["resolved_by"], "alice");
    assert_eq!(v["resolution"], "merchant app fixed");
    assert!(v["resolved_at"].is_string(), "{v}");
    // discrepancies --json now says when, by whom and why.
    let all = json(&ok(
        dir,
        &["discrepancies", "--ledger", l, "--all", "--json"],
        0,
    ));
    assert_eq!(all[0], v);

    // export's summary: JSON on stdout when the rows go to a file; without a file stdout
    // holds the rows, so --json is refused (exit 2).
    let out = dir.join("export.jsonl");
    let v = json(&ok(
        dir,
        &[
            "export",
            "--ledger",
            l,
            "--since",
            "1d",
            "--format",
            "jsonl",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
        0,
    ));
    assert_eq!(v["exported"], 3);
    assert_eq!(v["unreadable"], 0);
    assert_eq!(v["format"], "jsonl");
    assert_eq!(v["output"], out.to_str().unwrap());
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
    ok(
        dir,
        &["export", "--ledger", l, "--since", "1d", "--json"],
        2,
    );
}

#[test]
fn lists_cut_short_by_their_limit_say_so_and_help_shows_the_default() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ledger = dir.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    // 1,234 refunds issued 3h ago: half failed at /refund, half pending.
    let mut csv = String::from("out_refund_no,amount,currency,status,created_at\n");
    let created = ago(chrono::TimeDelta::hours(3));
    for i in 0..1234 {
        let status = if i % 2 == 0 {
            "REFUND_PENDING"
        } else {
            "REFUND_FAILED"
        };
        csv.push_str(&format!("R-L-{i:04},1.00,USD,{status},{created}\n"));
    }
    let file = dir.join("many.csv");
    std::fs::write(&file, csv).unwrap();
    ok(dir, &["import", "--ledger", l, file.to_str().unwrap()], 0);

    let text = stdout(&ok(dir, &["list", "--ledger", l, "--limit", "3"], 0));
    assert!(
        text.ends_with("(3 of 1,234 refunds shown; --limit N to see more)\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1 + 3 + 1, "{text}");
    let v = json(&ok(
        dir,
        &["list", "--ledger", l, "--limit", "3", "--json"],
        0,
    ));
    assert_eq!(
        (&v["shown"], &v["total"], &v["limit"], &v["truncated"]),
        (&3.into(), &1234.into(), &3.into(), &true.into())
    );
    assert_eq!(v["rows"].as_array().unwrap().len(), 3);
    // A limit that fits the list exactly does not cut it.
    let v = json(&ok(
        dir,
        &["list", "--ledger", l, "--limit", "1234", "--json"],
        0,
    ));
    assert_eq!(
        (&v["total"], &v["truncated"]),
        (&1234.into(), &false.into())
    );
    let text = stdout(&ok(dir, &["list", "--ledger", l, "--limit", "2000"], 0));
    assert!(
        text.ends_with("(1,234 refunds)\n"),
        "{}",
        &text[text.len() - 60..]
    );

    let text = stdout(&ok(
        dir,
        &[
            "stuck",
            "--ledger",
            l,
            "--older-than",
            "1h",
            "--limit",
            "10",
        ],
        0,
    ));
    assert!(
        text.ends_with("(10 of 617 stuck refunds shown; --limit N to see more)\n"),
        "{text}"
    );
    let v = json(&ok(
        dir,
        &[
            "failed", "--ledger", l, "--since", "1d", "--limit", "1", "--json",
        ],
        0,
    ));
    assert_eq!((&v["shown"], &v["total"]), (&1.into(), &617.into()));
    let text = stdout(&ok(
        dir,
        &["failed", "--ledger", l, "--since", "1d", "--limit", "1"],
        0,
    ));
    assert!(text.contains("(1 of 617 failed refunds shown;"), "{text}");

    for (command, default) in [
        ("list", 100),
        ("stuck", 1000),
        ("failed", 1000),
        ("audit", 100),
    ] {
        let help = stdout(&ok(dir, &[command, "--help"], 0));
        assert!(
            help.contains(&format!("[default: {default}]")) && help.contains("cut short"),
            "{command}: {help}"
        );
    }
}

#[test]
fn status_counts_as_flagged_exactly_what_list_flagged_lists_and_explain_reads_final_first() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let script = |no: &str| {
        format!(
            "{{\"outRefundNo\":\"{no}\",\"amount\":\"5.00\",\"currency\":\"USD\",\"steps\":[\"pending\"]}}\n"
        )
    };
    let (_sb, url) = sandbox_command(dir, &(script("R-F-PEND") + &script("R-F-FINAL")));
    let cfg = write_config(dir, &url, "[schedule]\ngrace = \"0s\"\n");
    let cfg = cfg.to_str().unwrap();
    let ledger = dir.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    let four_days = ago(chrono::TimeDelta::days(4));
    for no in ["R-F-PEND", "R-F-FINAL"] {
        add(dir, l, no, "5.00", &["--created-at", &four_days]);
        // Still pending after 4 days: the query flags it pending_too_long.
        ok(dir, &["query", "--config", cfg, no], 0);
    }
    add(dir, l, "R-F-OK", "5.00", &[]);
    // The merchant's app records the outcome of one of them: final, and its flag stays.
    notify(&ledger, "R-F-FINAL", FinalStatus::Success, "5.00");

    let status = json(&ok(dir, &["status", "--ledger", l, "--json"], 8));
    assert_eq!(status["flagged"], 2, "{status}");
    let warning = status["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "flagged_refunds")
        .unwrap()
        .clone();
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .starts_with("2 refunds are flagged for review, pending or final (`list --flagged`"),
        "{warning}"
    );
    let flagged = json(&ok(dir, &["list", "--ledger", l, "--flagged", "--json"], 0));
    assert_eq!(flagged["total"], status["flagged"]);
    let names: Vec<&str> = flagged["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["out_refund_no"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["R-F-PEND", "R-F-FINAL"]);

    // explain: the final one reads as final first, with when the flag was set and what ends it.
    let v = json(&ok(
        dir,
        &["explain", "--ledger", l, "R-F-FINAL", "--json"],
        0,
    ));
    let (flagged_at, finalized_at) = (
        v["refund"]["flagged_at"].as_str().unwrap().to_owned(),
        v["refund"]["finalized_at"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        v["state"],
        format!(
            "REFUND_SUCCESS since {finalized_at} (source notification); flagged \
             (pending_too_long) at {flagged_at}; flag not yet cleared: clear-flag"
        )
    );
    assert_eq!(v["flag"]["flagged_at"], flagged_at.as_str());
    assert_eq!(v["flag"]["refund_final"], true);
    assert_eq!(v["flag"]["cleared_by"], "clear-flag");
    let text = stdout(&ok(dir, &["explain", "--ledger", l, "R-F-FINAL"], 0));
    let head = text.lines().next().unwrap();
    assert!(
        head.contains("REFUND_SUCCESS since") && !head.contains("FLAGGED"),
        "{head}"
    );
    let text = stdout(&ok(dir, &["explain", "--ledger", l, "R-F-PEND"], 0));
    let head = text.lines().next().unwrap();
    assert!(
        head.contains("REFUND_PENDING; flagged (pending_too_long) at ")
            && head.ends_with(": retry-now, or clear-flag once handled"),
        "{head}"
    );
    let v = json(&ok(dir, &["explain", "--ledger", l, "R-F-OK", "--json"], 0));
    assert!(v["flag"].is_null() && v["state"] == "REFUND_PENDING", "{v}");

    // Once cleared, neither counts it, and explain no longer mentions a flag.
    let v = json(&ok(
        dir,
        &[
            "clear-flag",
            "--ledger",
            l,
            "R-F-FINAL",
            "--reason",
            "paid",
            "--by",
            "bob",
            "--json",
        ],
        0,
    ));
    assert_eq!(
        (&v["out_refund_no"], &v["action"], &v["by"]),
        (&"R-F-FINAL".into(), &"clear_flag".into(), &"bob".into())
    );
    assert!(v["at"].is_string(), "{v}");
    let status = json(&ok(dir, &["status", "--ledger", l, "--json"], 8));
    let flagged = json(&ok(dir, &["list", "--ledger", l, "--flagged", "--json"], 0));
    assert_eq!(
        (&status["flagged"], &flagged["total"]),
        (&1.into(), &1.into())
    );
    let text = stdout(&ok(dir, &["status", "--ledger", l], 8));
    assert!(text.contains("1 refund is flagged for review"), "{text}");
    let v = json(&ok(
        dir,
        &["explain", "--ledger", l, "R-F-FINAL", "--json"],
        0,
    ));
    assert!(v["flag"].is_null() && !v["state"].as_str().unwrap().contains("flag"));
}

#[test]
fn audit_lists_operator_actions_with_filters() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ledger = dir.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    for no in ["R-A-1", "R-A-2"] {
        add(dir, l, no, "3.00", &[]);
    }
    let by = ["--by", "carol"];
    ok(dir, &["retry-now", "--ledger", l, "R-A-1", by[0], by[1]], 0);
    ok(
        dir,
        &[
            "resolve",
            "--ledger",
            l,
            "R-A-1",
            "--status",
            "REFUND_FAILED",
            "--reason",
            "ticket 4711",
            by[0],
            by[1],
        ],
        0,
    );
    let before_last = format_ts(chrono::Utc::now());
    ok(
        dir,
        &["retry-now", "--ledger", l, "R-A-2", "--by", "dave"],
        0,
    );

    let v = json(&ok(dir, &["audit", "--ledger", l, "--json"], 0));
    assert_eq!((&v["total"], &v["truncated"]), (&3.into(), &false.into()));
    let rows = v["rows"].as_array().unwrap();
    let actions: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["out_refund_no"].as_str().unwrap(),
                r["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("retry_now", "R-A-1", "carol"),
            ("resolve", "R-A-1", "carol"),
            ("retry_now", "R-A-2", "dave")
        ]
    );
    assert_eq!(rows[1]["to_status"], "REFUND_FAILED");
    assert_eq!(rows[1]["reason"], "ticket 4711");
    assert_eq!(rows[1]["detail"]["attempts"], 0, "detail is JSON, not text");
    assert!(rows[0]["reason"].is_null() && rows[0]["at"].is_string());

    let v = json(&ok(
        dir,
        &["audit", "--ledger", l, "--refund", "R-A-1", "--json"],
        0,
    ));
    assert_eq!(v["total"], 2);
    let v = json(&ok(
        dir,
        &["audit", "--ledger", l, "--since", &before_last, "--json"],
        0,
    ));
    assert_eq!(v["rows"][0]["out_refund_no"], "R-A-2");
    assert_eq!(v["total"], 1);
    // --limit keeps the latest, in the order they happened.
    let v = json(&ok(
        dir,
        &["audit", "--ledger", l, "--limit", "2", "--json"],
        0,
    ));
    assert_eq!((&v["total"], &v["truncated"]), (&3.into(), &true.into()));
    assert_eq!(v["rows"][0]["action"], "resolve");
    assert_eq!(v["rows"][1]["out_refund_no"], "R-A-2");
    let text = stdout(&ok(dir, &["audit", "--ledger", l, "--limit", "2"], 0));
    assert!(text.starts_with("ID AT"), "{text}");
    assert!(text.contains("resolve REFUND_FAILED") && text.contains("ticket 4711"));
    assert!(
        text.ends_with("(2 of 3 actions shown; --limit N to see more)\n"),
        "{text}"
    );
    let text = stdout(&ok(dir, &["audit", "--ledger", l, "--refund", "R-A-2"], 0));
    assert!(text.ends_with("(1 action)\n"), "{text}");
    // A bad refund number is bad input (exit 5), like everywhere else.
    ok(dir, &["audit", "--ledger", l, "--refund", "R A"], 5);
}

#[test]
fn show_and_explain_of_a_pruned_refund_say_which_prune_removed_it_and_when() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ledger = dir.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    let old = ago(chrono::TimeDelta::days(400));
    for no in ["R-PR-ARCH", "R-PR-AUDIT"] {
        add(dir, l, no, "4.00", &["--created-at", &old]);
    }
    // R-PR-AUDIT is resolved by an operator (audited), R-PR-ARCH fails at /refund.
    ok(
        dir,
        &[
            "resolve",
            "--ledger",
            l,
            "R-PR-AUDIT",
            "--status",
            "REFUND_SUCCESS",
            "--reason",
            "paid",
            "--by",
            "erin",
        ],
        0,
    );
    // Both are final now; a prune with a cutoff in the future takes them.
    let cutoff = format_ts(chrono::Utc::now() + chrono::TimeDelta::hours(1));
    ok(
        dir,
        &[
            "resolve",
            "--ledger",
            l,
            "R-PR-ARCH",
            "--status",
            "REFUND_FAILED",
            "--reason",
            "failed",
            "--by",
            "erin",
        ],
        0,
    );
    let archive = dir.join("prune.jsonl");
    let v = json(&ok(
        dir,
        &[
            "prune",
            "--ledger",
            l,
            "--finalized-before",
            &cutoff,
            "--archive",
            archive.to_str().unwrap(),
            "--reason",
            "retention",
            "--by",
            "frank",
            "--json",
        ],
        0,
    ));
    assert_eq!(v["counts"]["refunds"], 2);
    let o = ok(dir, &["show", "--ledger", l, "R-PR-ARCH"], 6);
    let err = stderr(&o);
    assert!(
        err.contains("refund R-PR-ARCH is not in the ledger")
            && err.contains("it was pruned at ")
            && err.contains("by prune #1 (run by frank")
            && err.contains(&format!("archived in {}:2", archive.display())),
        "{err}"
    );
    let v = json(&ok(
        dir,
        &["explain", "--ledger", l, "R-PR-ARCH", "--json"],
        6,
    ));
    assert_eq!(v["pruned"]["prune_id"], 1);
    assert_eq!(v["pruned"]["actor"], "frank");
    assert_eq!(v["pruned"]["finalized_before"], cutoff.as_str());
    assert!(v["pruned"]["pruned_at"].is_string());

    // Without its archive, the audit log still names the refund: it was pruned, and when.
    std::fs::remove_file(&archive).unwrap();
    let err = stderr(&ok(dir, &["show", "--ledger", l, "R-PR-AUDIT"], 6));
    assert!(
        err.contains("it was pruned at ") && err.contains("the audit log (`audit --refund`)"),
        "{err}"
    );
    // A refund that was never here is only not in the ledger.
    let err = stderr(&ok(dir, &["show", "--ledger", l, "R-NEVER"], 6));
    assert!(err.contains("refund R-NEVER is not in the ledger") && !err.contains("pruned"));
}

#[test]
fn counts_read_in_the_singular_and_list_columns_line_up_with_their_headers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ledger = dir.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    add(dir, l, "R-1", "1", &["--status", "REFUND_FAILED"]);
    let wide = "R-".to_owned() + &"W".repeat(62);
    add(dir, l, &wide, "1234567890.12", &[]);
    add(dir, l, "R-MID-123", "12.50", &[]);

    let text = stdout(&ok(dir, &["list", "--ledger", l], 0));
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[0];
    // Each cell starts where its header starts (AMOUNT and TRY: ends where it ends).
    let right_aligned = ["AMOUNT", "TRY"];
    let headers: Vec<(&str, usize)> = header
        .split_whitespace()
        .map(|h| (h, header.find(h).unwrap()))
        .collect();
    for line in &lines[1..lines.len() - 1] {
        let mut from = 0;
        for (cell, (name, at)) in line.split_whitespace().zip(&headers) {
            let start = from + line[from..].find(cell).unwrap();
            from = start + cell.len();
            if right_aligned.contains(name) {
                assert_eq!(from, at + name.len(), "{name} in {line:?}\n{text}");
            } else {
                assert_eq!(start, *at, "{name} in {line:?}\n{text}");
            }
        }
    }
    assert!(text.ends_with("(3 refunds)\n"), "{text}");
    let failed = stdout(&ok(dir, &["failed", "--ledger", l], 0));
    assert!(failed.ends_with("(1 failed refund)\n"), "{failed}");
    let flagged = stdout(&ok(
        dir,
        &["list", "--ledger", l, "--status", "REFUND_FAILED"],
        0,
    ));
    assert!(flagged.ends_with("(1 refund)\n"), "{flagged}");
    notify(&ledger, "R-MID-123", FinalStatus::Success, "12.51");
    let text = stdout(&ok(dir, &["discrepancies", "--ledger", l], 0));
    assert!(text.ends_with("(1 discrepancy)\n"), "{text}");
    let status = stdout(&ok(dir, &["status", "--ledger", l], 8));
    assert!(status.contains("1 discrepancy is unresolved"), "{status}");
    let o = ok(dir, &["retry-now", "--ledger", l, &wide, "--by", "gil"], 0);
    let said = stdout(&o);
    assert!(
        said.contains("1 refund due now; no daemon is running on this ledger")
            && said.contains("): it is queried when one starts"),
        "{said}"
    );
}
