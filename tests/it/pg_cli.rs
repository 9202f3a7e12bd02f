//! Every operator command of `checus-reconciler --help` that touches a ledger, run through the
//! real binary with `--config` on a PostgreSQL ledger (`[ledger] url`), each test in its own
//! fresh database (issue 14: every operator command works on both engines). Each command's exit
//! code is asserted with one fact of its output or of the database afterwards; `backup` and
//! `migrate`, which PostgreSQL leaves to pg_dump, exit 3 naming it.

use std::path::Path;
use std::process::Output;

use crate::common::pg;
use crate::common::proc::{LiveSandbox, code, run, stderr, stdout, write_pg_config};
use checus_reconciler::ledger::contract::postgres_snippet;
use checus_reconciler::sandbox::{RefundScript, Step};

/// The binary on the PostgreSQL ledger of `config`: `args` then `--config <config>`.
struct Cli<'a> {
    dir: &'a Path,
    config: String,
}

impl Cli<'_> {
    /// Runs `args --config <config>` and asserts its exit code.
    fn ok(&self, args: &[&str], want: i32) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", &self.config]);
        let o = run(self.dir, &all);
        assert_eq!(
            code(&o),
            want,
            "{all:?}\nstdout: {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        );
        o
    }

    /// Like [`Cli::ok`], and parses stdout as one JSON value.
    fn json(&self, args: &[&str], want: i32) -> serde_json::Value {
        let o = self.ok(args, want);
        serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)))
    }
}

/// The out_refund_no of every row under `rows`.
fn numbers(v: &serde_json::Value) -> Vec<String> {
    v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {v}"))
        .iter()
        .map(|r| r["out_refund_no"].as_str().unwrap().to_owned())
        .collect()
}

fn one_text(c: &mut postgres::Client, sql: &str) -> String {
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn pg_cli_every_operator_command_runs_through_the_binary_on_a_postgres_ledger() {
    let Some((url, _db)) = pg::fresh_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sandbox = LiveSandbox::start(vec![(
        "R-CLI-Q".to_owned(),
        RefundScript::usd("R-CLI-Q", vec![Step::Success]),
    )]);
    let config = write_pg_config(d, "config.toml", &sandbox.base_url(), &url, "");
    let cli = Cli {
        dir: d,
        config: config.to_str().unwrap().to_owned(),
    };
    let mut db = pg::connect(&url).unwrap();

    // init: creates the ledger, and again is a no-op.
    let v = cli.json(&["init", "--json"], 0);
    let version = v["schema_version"].as_i64().unwrap();
    assert!(version > 0, "{v}");
    assert_eq!(cli.json(&["init", "--json"], 0)["schema_version"], version);
    assert_eq!(pg::count(&mut db, "refunds"), 0);

    // check-config and verify-ledger on the PostgreSQL ledger.
    let v = cli.json(&["check-config", "--json"], 0);
    assert!(v["ledger"].to_string().contains("postgres"), "{v}");
    let o = cli.ok(&["verify-ledger"], 0);
    assert!(!stdout(&o).is_empty(), "{}", stderr(&o));
    cli.json(&["verify-ledger", "--json"], 0);

    // add: pending (the default), failed at once, and an old failed one for prune.
    let v = cli.json(
        &[
            "add",
            "--out-refund-no",
            "R-CLI-ADD",
            "--amount",
            "7.25",
            "--currency",
            "USD",
            "--json",
        ],
        0,
    );
    assert_eq!(v["status"], "REFUND_PENDING", "{v}");
    assert_eq!(v["amount"], "7.25", "{v}");
    cli.ok(
        &[
            "add",
            "--out-refund-no",
            "R-CLI-FAIL",
            "--amount",
            "3.10",
            "--currency",
            "EUR",
            "--status",
            "REFUND_FAILED",
        ],
        0,
    );
    let long_ago = (chrono::Utc::now() - chrono::TimeDelta::days(400)).to_rfc3339();
    cli.ok(
        &[
            "add",
            "--out-refund-no",
            "R-CLI-ANCIENT",
            "--amount",
            "1.00",
            "--currency",
            "USD",
            "--status",
            "REFUND_FAILED",
            "--created-at",
            &long_ago,
        ],
        0,
    );
    // The same number again is refused, nothing written.
    cli.ok(
        &[
            "add",
            "--out-refund-no",
            "R-CLI-ADD",
            "--amount",
            "7.25",
            "--currency",
            "USD",
        ],
        5,
    );

    // import: a CSV, all-or-nothing; one row created 3 hours ago for `stuck`.
    let three_hours_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(3)).to_rfc3339();
    let jsonl = d.join("refunds.jsonl");
    std::fs::write(
        &jsonl,
        format!(
            "{{\"outRefundNo\":\"R-CLI-Q\",\"amount\":\"12.50\",\"currency\":\"USD\",\"outTradeNo\":\"O-R-CLI-Q\"}}\n\
             {{\"outRefundNo\":\"R-CLI-RES\",\"amount\":\"4.00\",\"currency\":\"USD\"}}\n\
             {{\"outRefundNo\":\"R-CLI-FLAG\",\"amount\":\"5.00\",\"currency\":\"USD\"}}\n\
             {{\"outRefundNo\":\"R-CLI-OLD\",\"amount\":\"6.00\",\"currency\":\"USD\",\"createdAt\":\"{three_hours_ago}\"}}\n"
        ),
    )
    .unwrap();
    let v = cli.json(&["import", jsonl.to_str().unwrap(), "--json"], 0);
    assert_eq!(v["imported"], 4, "{v}");
    assert_eq!(pg::count(&mut db, "refunds"), 7);

    // list, with --json and a status filter.
    let v = cli.json(&["list", "--json"], 0);
    assert_eq!(v["total"], 7, "{v}");
    assert_eq!(numbers(&v).len(), 7);
    let v = cli.json(&["list", "--status", "REFUND_FAILED", "--json"], 0);
    assert_eq!(numbers(&v), ["R-CLI-ANCIENT", "R-CLI-FAIL"], "{v}");
    let o = cli.ok(&["list"], 0);
    assert!(stdout(&o).contains("R-CLI-FLAG"), "{}", stdout(&o));

    // query: one refund at the sandbox now, recorded like any other attempt.
    let v = cli.json(&["query", "R-CLI-Q", "--json"], 0);
    assert!(v.to_string().contains("REFUND_SUCCESS"), "{v}");
    assert_eq!(
        one_text(
            &mut db,
            "SELECT status || ' ' || final_source FROM refunds WHERE out_refund_no = 'R-CLI-Q'"
        ),
        "REFUND_SUCCESS query"
    );
    assert_eq!(
        pg::count(&mut db, "attempts WHERE out_refund_no = 'R-CLI-Q'"),
        1
    );

    // show and explain.
    let v = cli.json(&["show", "R-CLI-Q", "--json"], 0);
    assert!(v.to_string().contains("REFUND_SUCCESS"), "{v}");
    assert!(v.to_string().contains("APPLY_SUCCESS"), "{v}");
    let o = cli.ok(&["show", "R-CLI-Q"], 0);
    assert!(stdout(&o).contains("R-CLI-Q"), "{}", stdout(&o));
    cli.ok(&["show", "R-CLI-NONE"], 6);
    let o = cli.ok(&["explain", "R-CLI-Q"], 0);
    assert!(stdout(&o).contains("REFUND_SUCCESS"), "{}", stdout(&o));
    let v = cli.json(&["explain", "R-CLI-Q", "--json"], 0);
    assert!(v.to_string().contains("query"), "{v}");

    // stuck (pending for 2 h by default) and failed (since 24 h by default).
    let v = cli.json(&["stuck", "--json"], 0);
    assert_eq!(numbers(&v), ["R-CLI-OLD"], "{v}");
    let v = cli.json(&["failed", "--json"], 0);
    assert_eq!(numbers(&v), ["R-CLI-FAIL"], "{v}");
    let o = cli.ok(&["failed", "--since", "500d"], 0);
    assert!(stdout(&o).contains("R-CLI-ANCIENT"), "{}", stdout(&o));

    // retry-now: due now, audited; nobody holds the ledger's lock, and it says so.
    let v = cli.json(&["retry-now", "R-CLI-OLD", "--by", "ops", "--json"], 0);
    assert!(v.to_string().contains("R-CLI-OLD"), "{v}");
    assert_eq!(
        pg::count(
            &mut db,
            "refunds WHERE out_refund_no = 'R-CLI-OLD' AND next_query_at <= now()"
        ),
        1
    );
    cli.ok(&["retry-now", "R-CLI-Q", "--by", "ops"], 5);

    // clear-flag: a refund flagged (by the ledger's owner, as the daemon would) is cleared.
    db.batch_execute(
        "UPDATE refunds SET review_flag = 1, review_reason = 'pending_too_long',
                flagged_at = statement_timestamp()
          WHERE out_refund_no = 'R-CLI-FLAG'",
    )
    .unwrap();
    assert_eq!(
        numbers(&cli.json(&["list", "--flagged", "--json"], 0)),
        ["R-CLI-FLAG"]
    );
    let v = cli.json(
        &[
            "clear-flag",
            "R-CLI-FLAG",
            "--reason",
            "checked with Checus",
            "--by",
            "ops",
            "--json",
        ],
        0,
    );
    assert_eq!(v["out_refund_no"], "R-CLI-FLAG", "{v}");
    assert_eq!(
        pg::count(
            &mut db,
            "refunds WHERE out_refund_no = 'R-CLI-FLAG' AND review_flag = 0"
        ),
        1
    );

    // resolve: final in the database, once; an unknown refund is 6.
    let resolve = |no: &str, want: i32| {
        cli.ok(
            &[
                "resolve",
                no,
                "--status",
                "REFUND_FAILED",
                "--reason",
                "ticket 42",
                "--by",
                "ops",
            ],
            want,
        )
    };
    resolve("R-CLI-RES", 0);
    assert_eq!(
        one_text(
            &mut db,
            "SELECT status || ' ' || final_source FROM refunds WHERE out_refund_no = 'R-CLI-RES'"
        ),
        "REFUND_FAILED operator"
    );
    resolve("R-CLI-RES", 5);
    resolve("R-CLI-NONE", 6);

    // A notification through the contract that contradicts R-CLI-Q's recorded outcome: a
    // discrepancy, not applied.
    db.execute(
        postgres_snippet("record_notification").unwrap(),
        &[
            &"R-CLI-Q",
            &"REFUND_FAILED",
            &"T-R-CLI-Q",
            &"12.50",
            &"USD",
            &None::<String>,
            &chrono::Utc::now().to_rfc3339(),
        ],
    )
    .unwrap();
    let v = cli.json(&["discrepancies", "--json"], 0);
    let list = v.as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["kind"], "conflicting_final", "{v}");
    assert_eq!(list[0]["out_refund_no"], "R-CLI-Q", "{v}");
    let id = list[0]["id"].to_string();
    let o = cli.ok(&["discrepancies"], 0);
    assert!(stdout(&o).contains("conflicting_final"), "{}", stdout(&o));
    let resolve_discrepancy = |want: i32| {
        cli.ok(
            &[
                "resolve-discrepancy",
                &id,
                "--reason",
                "Checus confirmed success",
                "--by",
                "ops",
            ],
            want,
        )
    };
    resolve_discrepancy(0);
    resolve_discrepancy(6);
    assert_eq!(
        pg::count(&mut db, "discrepancies WHERE resolved_at IS NULL"),
        0
    );
    let v = cli.json(&["discrepancies", "--all", "--json"], 0);
    assert_eq!(v[0]["resolved_by"], "ops", "{v}");
    assert_eq!(
        one_text(
            &mut db,
            "SELECT status FROM refunds WHERE out_refund_no = 'R-CLI-Q'"
        ),
        "REFUND_SUCCESS"
    );

    // audit: every operator action so far, with who.
    let v = cli.json(&["audit", "--json"], 0);
    let actions: Vec<(String, String)> = v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["actor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    for want in ["retry_now", "clear_flag", "resolve", "resolve_discrepancy"] {
        assert!(names.contains(&want), "{want} not in {v}");
    }
    let o = cli.ok(&["audit", "--refund", "R-CLI-RES"], 0);
    assert!(stdout(&o).contains("ticket 42"), "{}", stdout(&o));

    // webhooks: the outbox the triggers wrote (a refund.finalized for R-CLI-Q at least).
    let v = cli.json(&["webhooks", "--refund", "R-CLI-Q", "--json"], 0);
    let events = v["rows"].as_array().unwrap_or_else(|| panic!("{v}"));
    let finalized = events
        .iter()
        .find(|e| e["type"] == "refund.finalized")
        .unwrap_or_else(|| panic!("no refund.finalized event: {v}"));
    let event_id = finalized["event_id"].as_str().unwrap().to_owned();
    // A pending event is refused; one given up on (dead) is put back to pending, audited.
    let redeliver = |want: i32| {
        cli.ok(
            &[
                "webhooks",
                "redeliver",
                &event_id,
                "--reason",
                "receiver fixed",
                "--by",
                "ops",
            ],
            want,
        )
    };
    redeliver(5);
    db.batch_execute(&format!(
        "UPDATE webhook_events SET state = 'dead', attempts = 3 WHERE event_id = '{event_id}'"
    ))
    .unwrap();
    assert_eq!(
        numbers(&cli.json(&["webhooks", "--state", "dead", "--json"], 0)),
        ["R-CLI-Q"]
    );
    redeliver(0);
    assert_eq!(
        one_text(
            &mut db,
            &format!("SELECT state FROM webhook_events WHERE event_id = '{event_id}'")
        ),
        "pending"
    );

    // export: every refund created in the last day, to a file, with a JSON summary.
    let out = d.join("export.jsonl");
    let v = cli.json(
        &[
            "export",
            "--since",
            "1d",
            "--format",
            "jsonl",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
        0,
    );
    assert_eq!(v["exported"], 6, "{v}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.contains("\"R-CLI-RES\""), "{text}");
    let o = cli.ok(&["export", "--since", "1000d"], 0);
    assert!(stdout(&o).contains("R-CLI-ANCIENT"), "{}", stdout(&o));

    // prune: R-CLI-ANCIENT (final 400 days ago) archived, then gone; the rest stay.
    let v = cli.json(
        &["prune", "--finalized-before", "365d", "--dry-run", "--json"],
        0,
    );
    assert_eq!(v["counts"]["refunds"], 1, "{v}");
    let archive = d.join("prune.jsonl");
    let v = cli.json(
        &[
            "prune",
            "--finalized-before",
            "365d",
            "--archive",
            archive.to_str().unwrap(),
            "--reason",
            "retention: 1 year",
            "--by",
            "ops",
            "--json",
        ],
        0,
    );
    assert_eq!(v["counts"]["refunds"], 1, "{v}");
    assert_eq!(
        pg::count(&mut db, "refunds WHERE out_refund_no = 'R-CLI-ANCIENT'"),
        0
    );
    assert_eq!(pg::count(&mut db, "refunds"), 6);
    let archived: Vec<serde_json::Value> = std::fs::read_to_string(&archive)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows: Vec<&serde_json::Value> = archived
        .iter()
        .filter(|l| l["table"] == "refunds")
        .collect();
    assert_eq!(rows.len(), 1, "{archived:?}");
    assert_eq!(rows[0]["row"]["out_refund_no"], "R-CLI-ANCIENT");
    assert_eq!(rows[0]["row"]["amount"], "1.00", "amounts archived exactly");
    // The same archive is never overwritten.
    cli.ok(
        &[
            "prune",
            "--finalized-before",
            "365d",
            "--archive",
            archive.to_str().unwrap(),
            "--reason",
            "again",
            "--by",
            "ops",
        ],
        5,
    );
    let o = cli.ok(&["show", "R-CLI-ANCIENT"], 6);
    assert!(stderr(&o).contains("prune"), "{}", stderr(&o));
    // Every operator action of this test is in the audit log, by who ran it.
    let v = cli.json(&["audit", "--json"], 0);
    let mut names: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        [
            "clear_flag",
            "prune",
            "redeliver_webhook",
            "resolve",
            "resolve_discrepancy",
            "retry_now"
        ],
        "{v}"
    );

    // The text forms of the listing commands read the same ledger.
    for (args, token) in [
        (&["stuck"][..], "R-CLI-OLD"),
        (&["webhooks"], "refund.finalized"),
        (&["discrepancies", "--all"], "conflicting_final"),
        (&["explain", "R-CLI-RES"], "operator"),
        (&["check-config"], "postgres"),
    ] {
        let o = cli.ok(args, 0);
        assert!(stdout(&o).contains(token), "{args:?}: {}", stdout(&o));
    }

    // status: counts from the ledger, and what needs a human: no daemon ever swept it (exit 8).
    let o = cli.ok(&["status", "--json"], 8);
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (
            s["pending"].clone(),
            s["succeeded"].clone(),
            s["failed"].clone()
        ),
        (3.into(), 1.into(), 2.into()),
        "{s}"
    );
    let codes: Vec<&str> = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["worker_never_ran"], "{s}");
    let o = cli.ok(&["status"], 8);
    assert!(stdout(&o).contains("never swept"), "{}", stdout(&o));

    // resume: no daemon holds a node lock on this ledger; nothing to resume, nothing written.
    let o = cli.ok(&["resume", "--by", "ops", "--reason", "fixed the key"], 5);
    assert!(
        stderr(&o).contains("no node holds its lock on"),
        "{}",
        stderr(&o)
    );

    // backup: PostgreSQL's is pg_dump; exit 3 naming it, nothing written.
    let copy = d.join("backup.sqlite");
    let o = cli.ok(&["backup", copy.to_str().unwrap()], 3);
    assert!(stderr(&o).contains("pg_dump"), "{}", stderr(&o));
    assert!(!copy.exists());
    // migrate: a PostgreSQL ledger has one schema version so far; it says so, exit 3.
    for args in [&["migrate"][..], &["migrate", "--dry-run"]] {
        let o = cli.ok(args, 3);
        assert!(
            stderr(&o).contains("migrate is not available on a PostgreSQL ledger")
                && stderr(&o).contains("nothing to migrate"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(pg::count(&mut db, "refunds"), 6);
}
