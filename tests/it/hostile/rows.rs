//! One bad row never stops a sweep or a command (issue 10, part 2). The bad rows are planted
//! past the schema's CHECKs with `PRAGMA ignore_check_constraints = ON` (a dropped trigger is
//! refused at open now), as an old tool, a hand edit or a damaged page could leave them.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::common::Harness;
use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, fast_schedule, import_csv, run, sql, stderr, stdout, write_config,
};
use checus_reconciler::domain::{Currency, RefundStatus};
use checus_reconciler::sandbox::{RefundScript, Step};
use rust_decimal::Decimal;

/// Inserts a pending refund past the CHECKs: `column = value` replaces one good value.
fn plant(ledger: &Path, no: &str, created_at: &str, column: &str, value: &str) {
    let mut row = vec![
        ("out_refund_no", no),
        ("amount", "5.00"),
        ("currency", "USD"),
        ("created_at", created_at),
    ];
    match row.iter_mut().find(|(c, _)| *c == column) {
        Some(cell) => cell.1 = value,
        None => row.push((column, value)),
    }
    let columns: Vec<&str> = row.iter().map(|(c, _)| *c).collect();
    let marks: Vec<String> = (1..=row.len()).map(|i| format!("?{i}")).collect();
    let c = sql(ledger);
    c.execute_batch("PRAGMA ignore_check_constraints = ON;")
        .unwrap();
    c.execute(
        &format!(
            "INSERT INTO refunds ({}) VALUES ({})",
            columns.join(", "),
            marks.join(", ")
        ),
        rusqlite::params_from_iter(row.iter().map(|(_, v)| *v)),
    )
    .unwrap();
}

/// `(review_flag, review_reason, last_error)` of a refund, read with plain SQL.
fn flag_of(ledger: &Path, no: &str) -> (i64, Option<String>, Option<String>) {
    sql(ledger)
        .query_row(
            "SELECT review_flag, review_reason, last_error FROM refunds WHERE out_refund_no = ?1",
            [no],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

/// The `unreadable` and `error` of every sweep, in order.
fn sweep_record(ledger: &Path) -> Vec<(i64, Option<String>)> {
    let c = sql(ledger);
    let mut stmt = c
        .prepare("SELECT unreadable, error FROM sweeps ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn an_unreadable_row_is_flagged_once_and_every_other_refund_reconciles() {
    let h = Harness::new().await;
    for i in 0..5 {
        h.refund(&format!("R-OK-{i}"), vec![Step::Success]);
    }
    // 'abc' is no amount: the row cannot be read. Its created_at makes it due first.
    plant(
        &h.ledger_path,
        "R-BAD",
        "2025-12-31T00:00:00.000Z",
        "amount",
        "abc",
    );
    h.advance(h.policy.schedule.grace);
    let first = h.sweep().await;
    assert_eq!((first.finalized, first.unreadable), (5, 1), "{first:?}");
    let (flag, reason, error) = flag_of(&h.ledger_path, "R-BAD");
    assert_eq!((flag, reason.as_deref()), (1, Some("row_unreadable")));
    assert!(
        error.unwrap().contains("amount"),
        "the flag says which column"
    );
    assert_eq!(h.sandbox.queries_for("R-BAD"), 0, "never queried");
    // Flagged, the row leaves the due list: the next sweep neither meets it nor wakes for it.
    assert_eq!(first.next_due_at, None, "nothing left to wake up for");
    let second = h.sweep().await;
    assert_eq!((second.claimed, second.unreadable), (0, 0), "{second:?}");
    assert_eq!(sweep_record(&h.ledger_path), [(1, None), (0, None)]);
    let listed = h.ledger().list(&Default::default()).unwrap();
    assert_eq!(listed.rows.len(), 5);
    assert_eq!(listed.unreadable.len(), 1);
    assert_eq!(listed.unreadable[0].out_refund_no.as_deref(), Some("R-BAD"));
}

#[tokio::test]
async fn an_attempt_the_ledger_refuses_is_recorded_bare_and_the_refund_flagged_row_unwritable() {
    let h = Harness::new().await;
    h.refund("R-OK", vec![Step::Success]);
    h.refund("R-LONG", vec![Step::Success, Step::Success]);
    // A refund number the CHECK refuses (65 characters) makes finalizing it fail.
    let long = "T".repeat(65);
    sql(&h.ledger_path)
        .execute_batch(&format!(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE refunds SET refund_trade_no = '{long}' WHERE out_refund_no = 'R-LONG';"
        ))
        .unwrap();
    h.advance(h.policy.schedule.grace);
    let first = h.sweep().await;
    assert_eq!((first.finalized, first.unreadable), (1, 1), "{first:?}");
    let d = h.detail("R-LONG");
    assert_eq!(d.refund.status, RefundStatus::Pending, "nothing applied");
    assert_eq!(d.attempts.len(), 1, "the attempt is recorded, bare");
    let error = d.attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("CHECK constraint failed"), "{error}");
    let (flag, reason, _) = flag_of(&h.ledger_path, "R-LONG");
    assert_eq!((flag, reason.as_deref()), (1, Some("row_unwritable")));
    assert_eq!(
        sweep_record(&h.ledger_path),
        [(1, None)],
        "the sweep did not fail"
    );
    // Flagged, it is not queried again however long we wait.
    h.advance(Duration::from_secs(3600));
    let later = h.sweep().await;
    assert_eq!(later.claimed, 0, "{later:?}");
    assert_eq!(h.sandbox.queries_for("R-LONG"), 1);
}

/// Three refunds the sandbox finalizes, imported into a new ledger in `dir`.
fn three_refunds() -> Vec<(String, RefundScript)> {
    (0..3)
        .map(|i| {
            let no = format!("R-{i}");
            let script = RefundScript {
                refund_trade_no: format!("T-{no}"),
                out_trade_no: format!("O-{no}"),
                amount: Decimal::from_str("12.50").unwrap(),
                currency: Currency::parse("USD").unwrap(),
                steps: vec![Step::Success],
            };
            (no, script)
        })
        .collect()
}

#[test]
fn the_daemon_skips_a_bad_row_logs_it_once_and_status_list_and_export_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scripts = three_refunds();
    let sandbox = LiveSandbox::start(scripts.clone());
    let config = write_config(d, &sandbox.base_url(), &fast_schedule(""));
    let cfg = config.to_str().unwrap();
    let ledger = d.join("ledger.sqlite");
    let csv = import_csv(d, &scripts);
    let o = run(d, &["import", "--config", cfg, csv.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // An impossible day (as an old tool without the CHECKs could write) in next_query_at.
    plant(
        &ledger,
        "R-BAD",
        "2026-01-01T00:00:00.000Z",
        "next_query_at",
        "2026-02-31T03:28:23.092Z",
    );

    let mut c = cmd(d);
    c.args(["run", "--config", cfg]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("row unreadable; flagged row_unreadable and skipped");
    for _ in 0..3 {
        daemon.saw_or_wait("\"refund finalized\"");
    }
    // A few more sweeps (one a second) to show the row is not met again.
    let swept = sweep_record(&ledger).len();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sweep_record(&ledger).len() < swept + 3 {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.tail(20));
        daemon.next_line(Duration::from_millis(500));
    }
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    let logged = daemon
        .seen
        .iter()
        .filter(|l| l.contains("row unreadable"))
        .collect::<Vec<_>>();
    assert_eq!(logged.len(), 1, "one ERROR line: {logged:?}");
    assert!(logged[0].contains("\"ERROR\"") && logged[0].contains("next_query_at"));
    let record = sweep_record(&ledger);
    assert_eq!(record.iter().map(|(n, _)| n).sum::<i64>(), 1, "{record:?}");
    assert!(record.iter().all(|(_, e)| e.is_none()), "{record:?}");

    let l = ledger.to_str().unwrap();
    let o = run(d, &["status", "--ledger", l, "--json"]);
    assert_eq!(code(&o), 8, "{}", stdout(&o));
    for args in [
        vec!["list", "--ledger", l],
        vec!["list", "--ledger", l, "--json"],
        vec!["export", "--ledger", l, "--since", "2000-01-01T00:00:00Z"],
    ] {
        let o = run(d, &args);
        assert_eq!(code(&o), 8, "{args:?}: {}", stderr(&o));
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(out.matches("REFUND_SUCCESS").count(), 3, "{args:?}: {out}");
        assert!(
            err.contains("refunds row") && err.contains("R-BAD") && err.contains("next_query_at"),
            "{args:?}: {err}"
        );
    }
}
