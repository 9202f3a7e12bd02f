//! The ledger through its public API on real SQLite files in temp dirs, plus outside writers
//! (a second raw rusqlite connection, and the `sqlite3` shell running the merchant contract
//! SQL verbatim) to prove the schema's rules hold for every writer, not only for our code.

use std::error::Error as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use crate::common::fixtures::{finalize, no, success_answer};
use crate::common::ts;
use checus_reconciler::domain::{
    Change, Currency, Decision, Discrepancy, DiscrepancyKind, FinalSource, FinalStatus, HaltCode,
    NewRefund, OutcomeClass, RefundStatus, ReviewReason, format_ts,
};
use checus_reconciler::ledger::{
    Applied, EventKind, Finding, Happened, LedgerError, ListFilter, NotificationEffect,
    NotificationRecord, OperatorAction, RecordedKind, SCHEMA_VERSION, SqliteLedger, SweepCounts,
    SweepEnd, contract,
};
use rusqlite::Connection;
use rust_decimal::Decimal;

const FINAL_IMMUTABLE: &str = "checus-reconciler: final refund status is immutable";

fn refund(n: &str, amount: &str) -> NewRefund {
    NewRefund {
        out_refund_no: no(n),
        refund_trade_no: None,
        out_trade_no: Some(format!("O-{n}")),
        amount: Decimal::from_str(amount).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        status: RefundStatus::Pending,
        created_at: ts("2026-01-01T00:00:00.000Z"),
    }
}

fn note(n: &str, status: FinalStatus, amount: &str, currency: &str) -> NotificationRecord {
    NotificationRecord {
        out_refund_no: no(n),
        status,
        refund_trade_no: Some(format!("T-{n}")),
        amount: Decimal::from_str(amount).unwrap(),
        currency: Currency::parse(currency).unwrap(),
        refund_finish_time: Some(ts("2026-01-01T00:05:00.123Z")),
        notify_time: ts("2026-01-01T00:05:01.000Z"),
    }
}

fn reschedule(next: &str, attempts: u32, flag: Option<ReviewReason>) -> Decision {
    Decision {
        class: OutcomeClass::Pending,
        change: Change::Reschedule {
            next_query_at: ts(next),
            attempts,
            unknown_since: None,
            refund_trade_no: Some("T-Q".into()),
            flag,
        },
        discrepancies: Vec::new(),
        halt: None,
        slow_down: false,
    }
}

fn new_ledger() -> (tempfile::TempDir, SqliteLedger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    // migrate::every_ledger_test_passes_on_a_migrated_v1_ledger reruns this suite from v1.
    if std::env::var_os(crate::migrate::FROM_V1_ENV).is_some() {
        crate::migrate::empty_v1_ledger(&path);
    }
    let ledger = SqliteLedger::open(&path).unwrap();
    (dir, ledger)
}

/// An outside writer: a plain connection with nothing but a busy timeout.
fn outsider(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn count(path: &Path, sql: &str) -> i64 {
    outsider(path).query_row(sql, [], |r| r.get(0)).unwrap()
}

fn err_text(e: &rusqlite::Error) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------
// open
// ---------------------------------------------------------------------------------------------

#[test]
fn open_creates_a_versioned_wal_ledger_and_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(ledger.path(), path);
    ledger.insert_refund(&refund("R1", "1.00")).unwrap();
    drop(ledger);

    let raw = outsider(&path);
    let version: i32 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(raw);

    // The current version is used as is, by both constructors.
    let again = SqliteLedger::open(&path).unwrap();
    assert!(again.state(&no("R1")).unwrap().is_some());
    let existing = SqliteLedger::open_existing(&path).unwrap();
    assert!(existing.state(&no("R1")).unwrap().is_some());
}

#[test]
fn open_applies_the_schema_to_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.sqlite");
    std::fs::write(&path, b"").unwrap();
    let ledger = SqliteLedger::open(&path).unwrap();
    ledger.insert_refund(&refund("R1", "1.00")).unwrap();
}

#[test]
fn open_refuses_a_newer_or_unknown_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.sqlite");
    outsider(&path)
        .execute_batch(&format!(
            "CREATE TABLE refunds (x); PRAGMA user_version = {};",
            SCHEMA_VERSION + 1
        ))
        .unwrap();
    let err = SqliteLedger::open(&path).unwrap_err();
    match &err {
        LedgerError::SchemaTooNew {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path);
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(path.to_str().unwrap())
            && text.contains(&(SCHEMA_VERSION + 1).to_string())
            && text.contains(&SCHEMA_VERSION.to_string())
    );
    assert!(matches!(
        SqliteLedger::open_existing(&path),
        Err(LedgerError::SchemaTooNew { found, .. }) if found == SCHEMA_VERSION + 1
    ));

    let path = dir.path().join("negative.sqlite");
    outsider(&path)
        .execute_batch("PRAGMA user_version = -7;")
        .unwrap();
    assert!(matches!(
        SqliteLedger::open(&path),
        Err(LedgerError::UnknownSchema {
            found: -7,
            supported: SCHEMA_VERSION,
            ..
        })
    ));
}

#[test]
fn open_refuses_a_file_that_is_not_sqlite_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let content = "these are my notes, not a database\n".repeat(40);
    std::fs::write(&path, &content).unwrap();
    let err = SqliteLedger::open(&path).unwrap_err();
    assert!(
        matches!(&err, LedgerError::NotSqlite { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.source().is_some(), "the SQLite cause is kept");
    assert!(err.to_string().contains(path.to_str().unwrap()));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
}

#[test]
fn open_refuses_a_foreign_sqlite_database_and_leaves_its_journal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sqlite");
    outsider(&path)
        .execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);")
        .unwrap();
    let err = SqliteLedger::open(&path).unwrap_err();
    assert!(
        matches!(&err, LedgerError::NotALedger { found: 0, supported: SCHEMA_VERSION, path: p } if p == &path),
        "{err:?}"
    );
    let mode: String = outsider(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "a refused file is not switched to WAL");

    // Our version number without our tables is not a ledger either.
    let path = dir.path().join("impostor.sqlite");
    outsider(&path)
        .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1;")
        .unwrap();
    assert!(matches!(
        SqliteLedger::open(&path),
        Err(LedgerError::NotALedger { found: 1, .. })
    ));
}

#[test]
fn open_existing_refuses_a_missing_or_empty_file_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sqlite");
    let err = SqliteLedger::open_existing(&path).unwrap_err();
    assert!(matches!(&err, LedgerError::Missing { path: p } if p == &path));
    assert!(err.to_string().contains("does not exist"));
    assert!(!path.exists());

    let empty = dir.path().join("empty.sqlite");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        SqliteLedger::open_existing(&empty),
        Err(LedgerError::NotALedger { found: 0, .. })
    ));
}

#[test]
fn open_in_a_missing_or_read_only_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("ledger.sqlite");
    let err = SqliteLedger::open(&path).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Open { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains(path.to_str().unwrap()));
    assert!(err.source().is_some());

    // A regular file where a directory should be.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        SqliteLedger::open(&file.join("ledger.sqlite")),
        Err(LedgerError::Open { .. })
    ));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("read-only");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores directory permissions; then there is nothing to observe.
        let privileged = std::fs::write(ro.join("probe"), b"x").is_ok();
        if privileged {
            eprintln!("running with privileges: read-only directory case not observable");
        } else {
            let err = SqliteLedger::open(&ro.join("ledger.sqlite")).unwrap_err();
            assert!(matches!(err, LedgerError::Open { .. }), "{err:?}");
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// inserts and import
// ---------------------------------------------------------------------------------------------

#[test]
fn insert_refund_refuses_duplicates_and_records_immediate_failures_as_final() {
    let (_dir, ledger) = new_ledger();
    ledger.insert_refund(&refund("R1", "12.50")).unwrap();
    match ledger.insert_refund(&refund("R1", "99.00")) {
        Err(LedgerError::DuplicateRefund {
            out_refund_no,
            index: None,
        }) => assert_eq!(out_refund_no.as_str(), "R1"),
        other => panic!("expected DuplicateRefund, got {other:?}"),
    }
    let row = ledger.show(&no("R1")).unwrap().unwrap().refund;
    assert_eq!(
        row.amount.to_string(),
        "12.50",
        "the original row is untouched"
    );
    assert_eq!(row.status, RefundStatus::Pending);
    assert_eq!(row.next_query_at, None);
    assert_eq!(row.final_source, None);

    let mut failed = refund("R2", "3");
    failed.status = RefundStatus::Failed;
    ledger.insert_refund(&failed).unwrap();
    let row = ledger.show(&no("R2")).unwrap().unwrap().refund;
    assert_eq!(row.status, RefundStatus::Failed);
    assert_eq!(row.final_source, Some(FinalSource::RefundResponse));
    assert_eq!(row.finalized_at, Some(failed.created_at));

    let mut success = refund("R3", "3");
    success.status = RefundStatus::Success;
    assert!(matches!(
        ledger.insert_refund(&success),
        Err(LedgerError::InvalidRefund { .. })
    ));
    let mut zero = refund("R4", "0");
    zero.amount = Decimal::ZERO;
    assert!(matches!(
        ledger.insert_refund(&zero),
        Err(LedgerError::InvalidRefund { .. })
    ));
}

#[test]
fn import_is_all_or_nothing() {
    let (dir, mut ledger) = new_ledger();
    let path = dir.path().join("ledger.sqlite");
    // A duplicate within the rows, at position 3.
    let rows = vec![
        refund("A0", "1"),
        refund("A1", "1"),
        refund("A2", "1"),
        refund("A1", "2"),
        refund("A4", "1"),
    ];
    match ledger.import(&rows, &mut |_| {}) {
        Err(LedgerError::DuplicateRefund {
            out_refund_no,
            index: Some(3),
        }) => assert_eq!(out_refund_no.as_str(), "A1"),
        other => panic!("expected DuplicateRefund at 3, got {other:?}"),
    }
    assert_eq!(count(&path, "SELECT count(*) FROM refunds"), 0);

    // A duplicate of a refund already in the ledger.
    ledger.insert_refund(&refund("B9", "1")).unwrap();
    let rows = vec![refund("B0", "1"), refund("B9", "1")];
    assert!(matches!(
        ledger.import(&rows, &mut |_| {}),
        Err(LedgerError::DuplicateRefund { index: Some(1), .. })
    ));
    assert_eq!(count(&path, "SELECT count(*) FROM refunds"), 1);

    // A big import reports progress every 10 000 rows.
    let rows: Vec<NewRefund> = (0..25_000)
        .map(|i| refund(&format!("C{i}"), "1.5"))
        .collect();
    let mut seen = Vec::new();
    assert_eq!(ledger.import(&rows, &mut |n| seen.push(n)).unwrap(), 25_000);
    assert_eq!(seen, vec![10_000, 20_000]);
    assert_eq!(count(&path, "SELECT count(*) FROM refunds"), 25_001);
}

// ---------------------------------------------------------------------------------------------
// the schema's rules against outside writers
// ---------------------------------------------------------------------------------------------

#[test]
fn an_outside_connection_cannot_change_a_final_status_delete_or_replace() {
    let (dir, ledger) = new_ledger();
    let path = dir.path().join("ledger.sqlite");
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    ledger
        .record_notification(&note("R1", FinalStatus::Success, "10.00", "USD"))
        .unwrap();
    let raw = outsider(&path);
    for sql in [
        "UPDATE refunds SET status = 'REFUND_PENDING' WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET status = 'REFUND_FAILED' WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET status = 'REFUND_PENDING', final_source = NULL, finalized_at = NULL
          WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET final_source = 'operator' WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET refund_finish_time = NULL WHERE out_refund_no = 'R1'",
    ] {
        let e = raw.execute(sql, []).unwrap_err();
        assert!(err_text(&e).contains(FINAL_IMMUTABLE), "{sql}: {e}");
    }
    for (sql, msg) in [
        ("UPDATE refunds SET amount = '10.01'", "immutable"),
        ("UPDATE refunds SET currency = 'EUR'", "immutable"),
        ("UPDATE refunds SET out_refund_no = 'R2'", "immutable"),
        ("DELETE FROM refunds", "never deleted"),
        (
            "INSERT OR REPLACE INTO refunds (out_refund_no, amount, currency) VALUES ('R1', '1', 'USD')",
            "already exists",
        ),
        (
            "REPLACE INTO refunds (out_refund_no, amount, currency) VALUES ('R1', '1', 'USD')",
            "already exists",
        ),
    ] {
        let e = raw.execute(sql, []).unwrap_err();
        assert!(err_text(&e).contains(msg), "{sql}: {e}");
    }
    let (status, row) = ledger.state(&no("R1")).unwrap().unwrap();
    assert_eq!(status, RefundStatus::Success);
    assert_eq!(row.amount.to_string(), "10.00");
    // Fields outside the outcome stay writable (e.g. an operator noting a notification).
    raw.execute(
        "UPDATE refunds SET refund_trade_no = 'T-X' WHERE out_refund_no = 'R1'",
        [],
    )
    .unwrap();
}

#[test]
fn attempts_are_append_only_and_discrepancies_and_notifications_are_kept() {
    let (dir, mut ledger) = new_ledger();
    let path = dir.path().join("ledger.sqlite");
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    ledger
        .record_attempt(
            &success_answer("R1", "2026-01-01T00:10:00.000Z"),
            &reschedule("2026-01-01T00:11:00.000Z", 1, None),
        )
        .unwrap();
    ledger
        .record_notification(&note("NOPE", FinalStatus::Success, "1", "USD"))
        .unwrap();
    let raw = outsider(&path);
    for sql in [
        "UPDATE attempts SET outcome = 'final'",
        "DELETE FROM attempts",
        "INSERT OR REPLACE INTO attempts (id, out_refund_no, attempted_at, outcome, latency_ms)
         VALUES (1, 'R1', '2026-01-01T00:00:00.000Z', 'final', 1)",
        "UPDATE discrepancies SET kind = 'amount_mismatch'",
        "DELETE FROM discrepancies",
        "UPDATE notifications SET status = 'REFUND_FAILED'",
        "UPDATE notifications SET effect = 'finalized'",
        "DELETE FROM notifications",
    ] {
        let e = raw.execute(sql, []).unwrap_err();
        assert!(err_text(&e).contains("checus-reconciler:"), "{sql}: {e}");
    }
    assert_eq!(count(&path, "SELECT count(*) FROM attempts"), 1);
    // Resolving a discrepancy is allowed, once.
    raw.execute(
        "UPDATE discrepancies SET resolved_at = '2026-01-02T00:00:00.000Z', resolved_by = 'ops',
                resolution = 'not ours'",
        [],
    )
    .unwrap();
    assert!(
        raw.execute(
            "UPDATE discrepancies SET resolution = 'changed my mind'",
            []
        )
        .is_err()
    );
}

/// Runs `script` through the real `sqlite3` shell; returns (success, stderr).
fn sqlite3_shell(path: &Path, script: &str) -> (bool, String) {
    let mut child = Command::new("sqlite3")
        .arg(path)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sqlite3 shell is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `.param set` lines binding every value as a TEXT literal (or NULL).
fn params(values: &[(&str, Option<&str>)]) -> String {
    let mut s = String::from(".bail on\n.param init\n.param clear\n");
    for (k, v) in values {
        match v {
            Some(v) => s.push_str(&format!(".param set :{k} \"'{v}'\"\n")),
            None => s.push_str(&format!(".param set :{k} NULL\n")),
        }
    }
    s
}

#[test]
fn the_contract_sql_works_verbatim_in_the_sqlite3_shell() {
    if !crate::common::tools::require_tool("sqlite3") {
        return;
    }
    let (dir, ledger) = new_ledger();
    let path = dir.path().join("ledger.sqlite");

    let script = params(&[
        ("out_refund_no", Some("R-CLI-1")),
        ("refund_trade_no", None),
        ("out_trade_no", Some("O-1")),
        ("amount", Some("12.50")),
        ("currency", Some("USD")),
    ]) + contract::snippet("insert_refund").unwrap()
        + "\n";
    let (ok, stderr) = sqlite3_shell(&path, &script);
    assert!(ok, "{stderr}");
    let (status, state) = ledger.state(&no("R-CLI-1")).unwrap().unwrap();
    assert_eq!(status, RefundStatus::Pending);
    assert_eq!(state.amount.to_string(), "12.50");

    let script = params(&[
        ("out_refund_no", Some("R-CLI-F")),
        ("refund_trade_no", Some("T-F")),
        ("out_trade_no", Some("O-2")),
        ("amount", Some("5")),
        ("currency", Some("IDR")),
    ]) + contract::snippet("insert_failed_refund").unwrap()
        + "\n";
    let (ok, stderr) = sqlite3_shell(&path, &script);
    assert!(ok, "{stderr}");
    let row = ledger.show(&no("R-CLI-F")).unwrap().unwrap().refund;
    assert_eq!(row.status, RefundStatus::Failed);
    assert_eq!(row.final_source, Some(FinalSource::RefundResponse));

    // The notification as received: amount with trailing zeros, times with offsets.
    let script = params(&[
        ("out_refund_no", Some("R-CLI-1")),
        ("status", Some("REFUND_SUCCESS")),
        ("refund_trade_no", Some("T-CLI-1")),
        ("amount", Some("12.5000")),
        ("currency", Some("USD")),
        ("refund_finish_time", Some("2023-10-20T03:28:23.092Z")),
        ("notify_time", Some("2023-10-20T11:28:24.5+08:00")),
    ]) + contract::snippet("record_notification").unwrap()
        + "\n";
    let (ok, stderr) = sqlite3_shell(&path, &script);
    assert!(ok, "{stderr}");
    let detail = ledger.show(&no("R-CLI-1")).unwrap().unwrap();
    assert_eq!(detail.refund.status, RefundStatus::Success);
    assert_eq!(detail.refund.final_source, Some(FinalSource::Notification));
    assert_eq!(detail.refund.refund_trade_no.as_deref(), Some("T-CLI-1"));
    assert_eq!(
        detail.refund.refund_finish_time,
        Some(ts("2023-10-20T03:28:23.092Z"))
    );
    assert_eq!(
        format_ts(detail.notifications[0].notify_time),
        "2023-10-20T03:28:24.500Z"
    );
    assert_eq!(
        detail.notifications[0].effect,
        Some(NotificationEffect::Finalized)
    );

    // The same file refuses, from the shell, to un-finalize or flip the refund.
    for sql in [
        "UPDATE refunds SET status = 'REFUND_PENDING' WHERE out_refund_no = 'R-CLI-1';",
        "UPDATE refunds SET status = 'REFUND_FAILED' WHERE out_refund_no = 'R-CLI-1';",
    ] {
        let (ok, stderr) = sqlite3_shell(&path, &format!(".bail on\n{sql}\n"));
        assert!(!ok, "{sql} succeeded");
        assert!(stderr.contains(FINAL_IMMUTABLE), "{stderr}");
    }
    assert_eq!(
        ledger.state(&no("R-CLI-1")).unwrap().unwrap().0,
        RefundStatus::Success
    );
}

#[test]
fn the_contract_sql_works_verbatim_through_a_driver() {
    let (dir, ledger) = new_ledger();
    let raw = outsider(&dir.path().join("ledger.sqlite"));
    raw.execute(
        contract::snippet("insert_refund").unwrap(),
        rusqlite::named_params! {
            ":out_refund_no": "R-APP-1", ":refund_trade_no": "T-1", ":out_trade_no": None::<String>,
            ":amount": "7", ":currency": "EUR",
        },
    )
    .unwrap();
    raw.execute(
        contract::snippet("record_notification").unwrap(),
        rusqlite::named_params! {
            ":out_refund_no": "R-APP-1", ":status": "REFUND_FAILED", ":refund_trade_no": "T-1",
            ":amount": "7.00", ":currency": "EUR", ":refund_finish_time": None::<String>,
            ":notify_time": "2026-01-01T00:00:00Z",
        },
    )
    .unwrap();
    let row = ledger.show(&no("R-APP-1")).unwrap().unwrap().refund;
    assert_eq!(row.status, RefundStatus::Failed);
    assert_eq!(row.final_source, Some(FinalSource::Notification));
}

// ---------------------------------------------------------------------------------------------
// notifications
// ---------------------------------------------------------------------------------------------

#[test]
fn a_matching_notification_finalizes_and_a_duplicate_only_confirms() {
    let (_dir, ledger) = new_ledger();
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    ledger.schedule_new(Duration::from_secs(600)).unwrap();
    // Equal as decimals though spelled differently.
    ledger
        .record_notification(&note("R1", FinalStatus::Success, "10", "USD"))
        .unwrap();
    let d = ledger.show(&no("R1")).unwrap().unwrap();
    let row = &d.refund;
    assert_eq!(row.status, RefundStatus::Success);
    assert_eq!(row.final_source, Some(FinalSource::Notification));
    assert_eq!(row.refund_trade_no.as_deref(), Some("T-R1"));
    assert_eq!(row.refund_finish_time, Some(ts("2026-01-01T00:05:00.123Z")));
    assert!(row.notified_at.is_some());
    assert_eq!(row.notified_at, row.finalized_at);
    assert_eq!(row.next_query_at, None, "a final refund is not scheduled");
    let first_notified = row.notified_at;

    ledger
        .record_notification(&note("R1", FinalStatus::Success, "10.0", "USD"))
        .unwrap();
    let d = ledger.show(&no("R1")).unwrap().unwrap();
    assert_eq!(d.refund.notified_at, first_notified);
    assert_eq!(d.notifications.len(), 2);
    assert_eq!(
        d.notifications.iter().map(|n| n.effect).collect::<Vec<_>>(),
        vec![
            Some(NotificationEffect::Finalized),
            Some(NotificationEffect::AlreadyFinal)
        ]
    );
    assert!(d.discrepancies.is_empty());
}

#[test]
fn a_disagreeing_notification_is_recorded_never_applied() {
    let (_dir, ledger) = new_ledger();
    for n in ["C", "A", "M"] {
        ledger.insert_refund(&refund(n, "10.00")).unwrap();
    }
    // Conflict: final SUCCESS, then a FAILED notification.
    ledger
        .record_notification(&note("C", FinalStatus::Success, "10.00", "USD"))
        .unwrap();
    ledger
        .record_notification(&note("C", FinalStatus::Failed, "10.00", "USD"))
        .unwrap();
    let d = ledger.show(&no("C")).unwrap().unwrap();
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.discrepancies.len(), 1);
    let x = &d.discrepancies[0];
    assert_eq!(
        x.kind,
        RecordedKind::Domain(DiscrepancyKind::ConflictingFinal)
    );
    assert_eq!(x.source.as_str(), "notification");
    assert_eq!(x.expected.as_deref(), Some("REFUND_SUCCESS"));
    assert_eq!(x.observed.as_deref(), Some("REFUND_FAILED"));
    assert_eq!(
        d.notifications[1].effect,
        Some(NotificationEffect::ConflictingFinal)
    );

    // Amount mismatch: not applied, the refund stays pending.
    ledger
        .record_notification(&note("A", FinalStatus::Success, "10.001", "USD"))
        .unwrap();
    let d = ledger.show(&no("A")).unwrap().unwrap();
    assert_eq!(d.refund.status, RefundStatus::Pending);
    assert_eq!(d.refund.notified_at, None);
    assert_eq!(d.discrepancies.len(), 1);
    assert_eq!(
        d.discrepancies[0].kind,
        RecordedKind::Domain(DiscrepancyKind::AmountMismatch)
    );
    assert_eq!(d.discrepancies[0].expected.as_deref(), Some("10.00"));
    assert_eq!(d.discrepancies[0].observed.as_deref(), Some("10.001"));
    assert_eq!(
        d.notifications[0].effect,
        Some(NotificationEffect::Mismatch)
    );

    // Currency mismatch.
    ledger
        .record_notification(&note("M", FinalStatus::Failed, "10.00", "EUR"))
        .unwrap();
    let d = ledger.show(&no("M")).unwrap().unwrap();
    assert_eq!(d.refund.status, RefundStatus::Pending);
    assert_eq!(
        d.discrepancies.iter().map(|x| x.kind).collect::<Vec<_>>(),
        vec![RecordedKind::Domain(DiscrepancyKind::CurrencyMismatch)]
    );

    // Unknown refund.
    ledger
        .record_notification(&note("GHOST", FinalStatus::Success, "1", "USD"))
        .unwrap();
    assert!(ledger.show(&no("GHOST")).unwrap().is_none());
    let summary = ledger.status(ts("2026-01-01T00:00:00.000Z")).unwrap();
    assert_eq!(summary.unresolved_discrepancies, 4);
    let raw = outsider(ledger.path());
    let (kind, observed): (String, String) = raw
        .query_row(
            "SELECT kind, observed FROM discrepancies WHERE out_refund_no = 'GHOST'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(kind, "unknown_refund");
    assert_eq!(observed, "REFUND_SUCCESS 1 USD");
}

// ---------------------------------------------------------------------------------------------
// record_attempt
// ---------------------------------------------------------------------------------------------

#[test]
fn record_attempt_finalizes_by_compare_and_set() {
    let (_dir, mut ledger) = new_ledger();
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    let applied = ledger
        .record_attempt(
            &success_answer("R1", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap();
    assert_eq!(applied, Applied::Finalized(FinalStatus::Success));
    let d = ledger.show(&no("R1")).unwrap().unwrap();
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.refund.final_source, Some(FinalSource::Query));
    assert_eq!(d.refund.finalized_at, Some(ts("2026-01-01T00:15:00.000Z")));
    assert_eq!(d.refund.refund_trade_no.as_deref(), Some("T-Q"));
    assert_eq!(d.refund.last_outcome, Some(OutcomeClass::Final));
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].outcome, OutcomeClass::Final);
    assert_eq!(d.attempts[0].latency_ms, 42);
    assert_eq!(d.attempts[0].http_status, Some(200));

    // A later notification with the same outcome just confirms it.
    ledger
        .record_notification(&note("R1", FinalStatus::Success, "10.00", "USD"))
        .unwrap();
    let d = ledger.show(&no("R1")).unwrap().unwrap();
    assert_eq!(d.refund.final_source, Some(FinalSource::Query));
    assert!(d.refund.notified_at.is_some());
    assert!(d.discrepancies.is_empty());
}

#[test]
fn record_attempt_after_a_notification_is_already_final_or_a_conflict() {
    let (_dir, mut ledger) = new_ledger();
    for n in ["SAME", "DIFF"] {
        ledger.insert_refund(&refund(n, "10.00")).unwrap();
        ledger
            .record_notification(&note(n, FinalStatus::Success, "10.00", "USD"))
            .unwrap();
    }
    let applied = ledger
        .record_attempt(
            &success_answer("SAME", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap();
    assert_eq!(applied, Applied::AlreadyFinal(FinalStatus::Success));
    let d = ledger.show(&no("SAME")).unwrap().unwrap();
    assert!(d.discrepancies.is_empty());
    assert_eq!(d.attempts.len(), 1, "the attempt itself is always logged");
    assert_eq!(d.refund.final_source, Some(FinalSource::Notification));

    let applied = ledger
        .record_attempt(
            &success_answer("DIFF", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Failed),
        )
        .unwrap();
    assert_eq!(
        applied,
        Applied::Conflict {
            recorded: FinalStatus::Success,
            observed: FinalStatus::Failed
        }
    );
    let d = ledger.show(&no("DIFF")).unwrap().unwrap();
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.discrepancies.len(), 1);
    let x = &d.discrepancies[0];
    assert_eq!(x.source.as_str(), "query");
    assert_eq!(
        x.kind,
        RecordedKind::Domain(DiscrepancyKind::ConflictingFinal)
    );
    assert_eq!(x.expected.as_deref(), Some("REFUND_SUCCESS"));
    assert_eq!(x.observed.as_deref(), Some("REFUND_FAILED"));

    // A reschedule of a refund that went final meanwhile changes nothing.
    let applied = ledger
        .record_attempt(
            &success_answer("SAME", "2026-01-01T00:16:00.000Z"),
            &reschedule("2026-01-01T01:00:00.000Z", 3, None),
        )
        .unwrap();
    assert_eq!(applied, Applied::AlreadyFinal(FinalStatus::Success));
    let row = ledger.show(&no("SAME")).unwrap().unwrap().refund;
    assert_eq!(row.next_query_at, None);
    assert_eq!(row.attempts, 0);
}

#[test]
fn record_attempt_reschedules_and_flags_once() {
    let (_dir, mut ledger) = new_ledger();
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    let applied = ledger
        .record_attempt(
            &success_answer("R1", "2026-01-04T00:00:00.000Z"),
            &reschedule(
                "2026-01-05T00:00:00.000Z",
                4,
                Some(ReviewReason::PendingTooLong),
            ),
        )
        .unwrap();
    assert_eq!(
        applied,
        Applied::Rescheduled {
            next_query_at: ts("2026-01-05T00:00:00.000Z"),
            flagged: Some(ReviewReason::PendingTooLong),
        }
    );
    let row = ledger.show(&no("R1")).unwrap().unwrap().refund;
    assert_eq!(row.attempts, 4);
    assert!(row.review_flag);
    assert_eq!(row.review_reason, Some(ReviewReason::PendingTooLong));
    assert_eq!(row.flagged_at, Some(ts("2026-01-04T00:00:00.000Z")));
    assert_eq!(row.refund_trade_no.as_deref(), Some("T-Q"));
    assert_eq!(row.last_outcome, Some(OutcomeClass::Pending));

    // Already flagged: the first reason and time stay.
    let mut retry = success_answer("R1", "2026-01-05T00:00:00.000Z");
    retry.error = Some("connection reset".into());
    let applied = ledger
        .record_attempt(
            &retry,
            &reschedule(
                "2026-01-06T00:00:00.000Z",
                4,
                Some(ReviewReason::UnknownTooLong),
            ),
        )
        .unwrap();
    assert_eq!(
        applied,
        Applied::Rescheduled {
            next_query_at: ts("2026-01-06T00:00:00.000Z"),
            flagged: None
        }
    );
    let row = ledger.show(&no("R1")).unwrap().unwrap().refund;
    assert_eq!(row.review_reason, Some(ReviewReason::PendingTooLong));
    assert_eq!(row.flagged_at, Some(ts("2026-01-04T00:00:00.000Z")));
    assert_eq!(row.last_error.as_deref(), Some("connection reset"));
    assert_eq!(row.next_query_at, Some(ts("2026-01-06T00:00:00.000Z")));
}

#[test]
fn record_attempt_records_mismatches_and_refuses_unknown_refunds() {
    let (dir, mut ledger) = new_ledger();
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    let mut decision = reschedule(
        "2026-01-02T00:00:00.000Z",
        1,
        Some(ReviewReason::AnswerMismatch),
    );
    decision.class = OutcomeClass::Mismatch;
    decision.discrepancies = vec![Discrepancy {
        kind: DiscrepancyKind::AmountMismatch,
        expected: "10.00".into(),
        observed: "11.00".into(),
    }];
    let applied = ledger
        .record_attempt(&success_answer("R1", "2026-01-01T00:15:00.000Z"), &decision)
        .unwrap();
    assert_eq!(
        applied,
        Applied::Mismatch {
            flagged: Some(ReviewReason::AnswerMismatch)
        }
    );
    let d = ledger.show(&no("R1")).unwrap().unwrap();
    assert_eq!(d.refund.status, RefundStatus::Pending);
    assert_eq!(d.attempts[0].outcome, OutcomeClass::Mismatch);
    assert_eq!(d.discrepancies.len(), 1);
    assert_eq!(d.discrepancies[0].source.as_str(), "query");
    assert_eq!(d.discrepancies[0].observed.as_deref(), Some("11.00"));

    let err = ledger
        .record_attempt(
            &success_answer("NOPE", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
    let path = dir.path().join("ledger.sqlite");
    assert_eq!(
        count(&path, "SELECT count(*) FROM attempts"),
        1,
        "rolled back"
    );
}

// ---------------------------------------------------------------------------------------------
// scheduling, due work, status, list, show
// ---------------------------------------------------------------------------------------------

#[test]
fn schedule_new_and_due_return_only_due_pending_rows_oldest_first() {
    let (_dir, mut ledger) = new_ledger();
    let mut rows = Vec::new();
    for (n, created) in [
        ("EARLY", "2026-01-01T00:00:00.000Z"),
        ("LATE", "2026-01-01T02:00:00.000Z"),
        ("MID", "2026-01-01T01:00:00.000Z"),
    ] {
        let mut r = refund(n, "1");
        r.created_at = ts(created);
        rows.push(r);
    }
    let mut failed = refund("FAILED", "1");
    failed.status = RefundStatus::Failed;
    rows.push(failed);
    ledger.import(&rows, &mut |_| {}).unwrap();

    assert_eq!(ledger.next_due_at(&Default::default()).unwrap(), None);
    assert!(
        ledger
            .due(ts("2030-01-01T00:00:00.000Z"), 10)
            .unwrap()
            .rows
            .is_empty()
    );
    assert_eq!(
        ledger.schedule_new(Duration::from_millis(600_250)).unwrap(),
        3
    );
    assert_eq!(ledger.schedule_new(Duration::from_secs(600)).unwrap(), 0);
    let row = ledger.show(&no("EARLY")).unwrap().unwrap().refund;
    assert_eq!(row.next_query_at, Some(ts("2026-01-01T00:10:00.250Z")));
    assert_eq!(
        ledger.next_due_at(&Default::default()).unwrap(),
        Some(ts("2026-01-01T00:10:00.250Z"))
    );

    let due = ledger.due(ts("2026-01-01T01:10:00.250Z"), 10).unwrap();
    let names: Vec<_> = due.rows.iter().map(|s| s.out_refund_no.as_str()).collect();
    assert_eq!(names, vec!["EARLY", "MID"], "inclusive bound, oldest first");
    assert_eq!(
        ledger
            .due(ts("2026-01-01T01:10:00.250Z"), 1)
            .unwrap()
            .rows
            .len(),
        1
    );
    assert!(
        ledger
            .due(ts("2026-01-01T00:10:00.249Z"), 10)
            .unwrap()
            .rows
            .is_empty()
    );

    // A finalized refund leaves the due list.
    ledger
        .record_notification(&note("EARLY", FinalStatus::Success, "1", "USD"))
        .unwrap();
    let due = ledger.due(ts("2030-01-01T00:00:00.000Z"), 10).unwrap();
    let names: Vec<_> = due.rows.iter().map(|s| s.out_refund_no.as_str()).collect();
    assert_eq!(names, vec!["MID", "LATE"]);
}

#[test]
fn status_summarizes_the_ledger_and_sweeps() {
    let (_dir, mut ledger) = new_ledger();
    let empty = ledger.status(ts("2026-01-01T00:00:00.000Z")).unwrap();
    assert_eq!(
        (empty.pending, empty.succeeded, empty.failed, empty.due_now),
        (0, 0, 0, 0)
    );
    assert!(empty.last_sweep.is_none() && empty.oldest_pending_created_at.is_none());

    let mut rows = Vec::new();
    for i in 0..6 {
        let mut r = refund(&format!("R{i}"), "1");
        r.created_at = ts(&format!("2026-01-01T0{i}:00:00.000Z"));
        rows.push(r);
    }
    rows[5].status = RefundStatus::Failed;
    ledger.import(&rows, &mut |_| {}).unwrap();
    ledger.schedule_new(Duration::from_secs(600)).unwrap();
    ledger
        .record_notification(&note("R0", FinalStatus::Success, "1", "USD"))
        .unwrap();
    ledger.insert_refund(&refund("UNSCHEDULED", "1")).unwrap();
    ledger
        .record_attempt(
            &success_answer("R1", "2026-01-04T00:00:00.000Z"),
            &reschedule(
                "2026-01-05T00:00:00.000Z",
                1,
                Some(ReviewReason::PendingTooLong),
            ),
        )
        .unwrap();
    ledger
        .record_notification(&note("GHOST", FinalStatus::Success, "1", "USD"))
        .unwrap();

    let id = ledger
        .begin_sweep(ts("2026-01-04T00:00:00.000Z"), None)
        .unwrap();
    let counts = SweepCounts {
        claimed: 3,
        finalized: 1,
        rescheduled: 1,
        failed: 1,
        unreadable: 0,
    };
    let end = SweepEnd {
        counts,
        ..SweepEnd::default()
    };
    ledger
        .finish_sweep(
            id,
            ts("2026-01-04T00:00:01.000Z"),
            &SweepEnd {
                halt: Some(checus_reconciler::domain::Halt::ClockSkew),
                ..end.clone()
            },
        )
        .unwrap();
    assert!(matches!(
        ledger.finish_sweep(id + 100, ts("2026-01-04T00:00:01.000Z"), &end),
        Err(LedgerError::SweepNotFound { .. })
    ));
    assert!(
        ledger
            .finish_sweep(id, ts("2026-01-04T00:00:02.000Z"), &end)
            .is_err(),
        "a finished sweep is immutable"
    );

    // Pending: R1 (flagged, due 01-05), R2..R4 (due 02:10..04:10), UNSCHEDULED.
    let s = ledger.status(ts("2026-01-01T03:10:00.000Z")).unwrap();
    assert_eq!(s.pending, 5);
    assert_eq!(s.succeeded, 1);
    assert_eq!(s.failed, 1);
    assert_eq!(s.due_now, 2, "R2 and R3");
    assert_eq!(s.unscheduled, 1);
    assert_eq!(s.flagged, 1);
    assert_eq!(
        s.oldest_pending_created_at,
        Some(ts("2026-01-01T00:00:00.000Z")),
        "UNSCHEDULED shares the earliest creation time"
    );
    assert_eq!(s.unresolved_discrepancies, 1);
    let sweep = s.last_sweep.unwrap();
    assert_eq!(sweep.id, id);
    assert_eq!(sweep.counts, counts);
    assert_eq!(
        sweep.halted_reason.as_deref(),
        Some("clock skew: requestTime off by more than 2 minutes (check NTP)")
    );
    assert_eq!(sweep.finished_at, Some(ts("2026-01-04T00:00:01.000Z")));
}

#[test]
fn list_filters_and_show_serializes_exact_text() {
    let (_dir, mut ledger) = new_ledger();
    let mut rows = Vec::new();
    for i in 0..5 {
        let mut r = refund(&format!("R{i}"), "12.50");
        r.created_at = ts(&format!("2026-01-0{}T00:00:00.000Z", i + 1));
        rows.push(r);
    }
    ledger.import(&rows, &mut |_| {}).unwrap();
    ledger
        .record_notification(&note("R3", FinalStatus::Failed, "12.5", "USD"))
        .unwrap();
    ledger
        .record_attempt(
            &success_answer("R4", "2026-01-09T00:00:00.000Z"),
            &reschedule(
                "2026-01-10T00:00:00.000Z",
                1,
                Some(ReviewReason::PendingTooLong),
            ),
        )
        .unwrap();

    let names = |f: ListFilter| -> Vec<String> {
        ledger
            .list(&f)
            .unwrap()
            .rows
            .into_iter()
            .map(|r| r.out_refund_no.to_string())
            .collect()
    };
    assert_eq!(names(ListFilter::default()), ["R0", "R1", "R2", "R3", "R4"]);
    assert_eq!(
        names(ListFilter {
            status: Some(RefundStatus::Pending),
            ..ListFilter::default()
        }),
        ["R0", "R1", "R2", "R4"]
    );
    assert_eq!(
        names(ListFilter {
            status: Some(RefundStatus::Failed),
            ..ListFilter::default()
        }),
        ["R3"]
    );
    assert_eq!(
        names(ListFilter {
            flagged: Some(true),
            ..ListFilter::default()
        }),
        ["R4"]
    );
    assert_eq!(
        names(ListFilter {
            since: Some(ts("2026-01-03T00:00:00.000Z")),
            flagged: Some(false),
            limit: 1,
            ..ListFilter::default()
        }),
        ["R2"]
    );

    let detail = ledger.show(&no("R4")).unwrap().unwrap();
    let json = serde_json::to_value(&detail).unwrap();
    assert_eq!(json["refund"]["amount"], "12.50");
    assert_eq!(json["refund"]["status"], "REFUND_PENDING");
    assert_eq!(json["refund"]["created_at"], "2026-01-05T00:00:00.000Z");
    assert_eq!(json["refund"]["review_reason"], "pending_too_long");
    assert_eq!(json["refund"]["final_source"], serde_json::Value::Null);
    assert_eq!(json["attempts"][0]["outcome"], "pending");
    assert_eq!(
        json["attempts"][0]["attempted_at"],
        "2026-01-09T00:00:00.000Z"
    );
    let json = serde_json::to_value(ledger.show(&no("R3")).unwrap().unwrap()).unwrap();
    assert_eq!(json["notifications"][0]["amount"], "12.5");
    assert_eq!(json["notifications"][0]["effect"], "finalized");
    assert_eq!(json["refund"]["final_source"], "notification");
    let summary =
        serde_json::to_value(ledger.status(ts("2026-01-01T00:00:00.000Z")).unwrap()).unwrap();
    assert_eq!(
        summary["oldest_pending_created_at"],
        "2026-01-01T00:00:00.000Z"
    );
    assert!(ledger.show(&no("NOPE")).unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// concurrency
// ---------------------------------------------------------------------------------------------

#[test]
fn two_writers_in_parallel_never_see_busy_and_lose_nothing() {
    const SEEDED: usize = 300;
    const NEW: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut ledger = SqliteLedger::open(&path).unwrap();
    let seeded: Vec<NewRefund> = (0..SEEDED)
        .map(|i| refund(&format!("S{i}"), "5.00"))
        .collect();
    ledger.import(&seeded, &mut |_| {}).unwrap();
    ledger.schedule_new(Duration::ZERO).unwrap();
    drop(ledger);

    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    // The merchant's app: new refunds, and notifications finalizing the seeded ones.
    let app = {
        let path = path.clone();
        let barrier = barrier.clone();
        std::thread::spawn(move || -> Result<(), LedgerError> {
            let ledger = SqliteLedger::open(&path)?;
            barrier.wait();
            for i in 0..NEW {
                ledger.insert_refund(&refund(&format!("N{i}"), "1"))?;
                if i % 2 == 0 && i / 2 < SEEDED {
                    let n = format!("S{}", i / 2);
                    ledger.record_notification(&note(&n, FinalStatus::Success, "5", "USD"))?;
                }
            }
            Ok(())
        })
    };
    // The daemon: attempts on the seeded refunds, racing the notifications.
    let daemon = {
        let path = path.clone();
        std::thread::spawn(move || -> Result<(usize, usize), LedgerError> {
            let mut ledger = SqliteLedger::open(&path)?;
            barrier.wait();
            let (mut calls, mut finalized) = (0, 0);
            for round in 0..3 {
                for i in 0..SEEDED {
                    let n = format!("S{i}");
                    let decision = if round < 2 {
                        reschedule("2026-01-01T00:00:00.000Z", round + 1, None)
                    } else {
                        finalize(FinalStatus::Success)
                    };
                    let applied = ledger.record_attempt(
                        &success_answer(&n, "2026-01-01T00:30:00.000Z"),
                        &decision,
                    )?;
                    calls += 1;
                    if applied == Applied::Finalized(FinalStatus::Success) {
                        finalized += 1;
                    }
                    assert!(!matches!(applied, Applied::Conflict { .. }));
                }
            }
            Ok((calls, finalized))
        })
    };
    app.join().unwrap().expect("the app thread saw no error");
    let (calls, finalized_by_query) = daemon.join().unwrap().expect("the daemon saw no error");

    let ledger = SqliteLedger::open_existing(&path).unwrap();
    let s = ledger.status(ts("2026-01-01T00:00:00.000Z")).unwrap();
    assert_eq!(s.succeeded, SEEDED as u64, "every seeded refund is final");
    assert_eq!(s.pending, NEW as u64, "every new refund is there");
    assert_eq!(s.unresolved_discrepancies, 0);
    assert_eq!(
        count(&path, "SELECT count(*) FROM attempts") as usize,
        calls,
        "no attempt lost"
    );
    assert_eq!(
        count(&path, "SELECT count(*) FROM notifications") as usize,
        SEEDED
    );
    let by_notification = count(
        &path,
        "SELECT count(*) FROM refunds WHERE final_source = 'notification'",
    ) as usize;
    assert_eq!(by_notification + finalized_by_query, SEEDED);
    assert_eq!(
        count(
            &path,
            "SELECT count(*) FROM notifications WHERE effect = 'finalized'"
        ) as usize,
        by_notification
    );
}

#[test]
fn status_classifies_a_halt_by_its_code_never_by_the_reason_text() {
    let (dir, ledger) = new_ledger();
    let path = dir.path().join("ledger.sqlite");
    let raw = outsider(&path);
    let at = ts("2026-01-04T00:00:00.000Z");
    // Written directly, so the reason can say anything: the worker always writes both.
    let halt = |code: Option<&str>, reason: Option<&str>| {
        let id = ledger.begin_sweep(at, None).unwrap();
        raw.execute(
            "UPDATE sweeps SET finished_at = ?2, halted_reason = ?3, halt_code = ?4 WHERE id = ?1",
            rusqlite::params![id, format_ts(at), reason, code],
        )
        .unwrap();
        ledger.health(at, Duration::from_secs(300)).unwrap()
    };

    // The reason's wording no longer matters: only the code does.
    let h = halt(
        Some("clock_skew"),
        Some("configuration rejected, or so it says"),
    );
    let sweep = h.summary.last_sweep.as_ref().unwrap();
    assert_eq!(sweep.halt_code, Some(HaltCode::ClockSkew));
    assert_eq!(
        h.findings,
        [Finding::Halted {
            code: HaltCode::ClockSkew,
            reason: Some("configuration rejected, or so it says".into()),
        }]
    );
    assert_eq!(h.findings[0].code(), "clock_skew");
    let h = halt(Some("config_error"), None);
    assert_eq!(h.findings[0].code(), "config_error");
    // A reason without a code (an interrupted sweep) is not a halt.
    let h = halt(None, Some("clock skew: interrupted"));
    assert!(!h.needs_human(), "{h:?}");

    // The column takes only the codes `HaltCode` knows.
    let id = ledger.begin_sweep(at, None).unwrap();
    for code in HaltCode::ALL {
        raw.execute(
            "UPDATE sweeps SET halt_code = ?2 WHERE id = ?1",
            rusqlite::params![id, code.as_str()],
        )
        .unwrap();
        assert_eq!(code.as_str().parse::<HaltCode>().unwrap(), code);
    }
    let e = raw
        .execute("UPDATE sweeps SET halt_code = 'halted' WHERE id = ?1", [id])
        .unwrap_err();
    assert!(err_text(&e).contains("CHECK"), "{e}");
}

#[test]
fn timeline_is_typed_events_sorted_by_their_order() {
    let (_dir, mut ledger) = new_ledger();
    ledger.insert_refund(&refund("R1", "12.50")).unwrap();
    ledger.insert_refund(&refund("R2", "12.50")).unwrap();
    ledger
        .record_attempt(
            &success_answer("R1", "2026-01-01T00:10:00.000Z"),
            &reschedule("2026-01-01T00:20:00.000Z", 1, None),
        )
        .unwrap();
    ledger
        .record_attempt(
            &success_answer("R1", "2026-01-01T00:20:00.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap();
    let t = ledger.timeline(&no("R1")).unwrap().unwrap();
    assert!(t.events.is_sorted(), "{t:?}");
    let kinds: Vec<EventKind> = t.events.iter().map(|e| e.what.kind()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Created,
            EventKind::Query,
            EventKind::Decision,
            EventKind::Query,
            EventKind::Decision,
            EventKind::Finalized,
        ]
    );
    // At one instant, the kinds' declaration order decides: query, decision, final status.
    let last = &t.events[3..];
    assert!(last.iter().all(|e| e.at == ts("2026-01-01T00:20:00.000Z")));
    assert!(matches!(
        &last[0].what,
        Happened::Queried(a) if a.http_status == Some(200) && a.latency_ms == 42
    ));
    assert!(matches!(
        &last[1].what,
        Happened::Decided { decision, .. } if decision == "finalize REFUND_SUCCESS"
    ));
    assert!(matches!(
        last[2].what,
        Happened::Finalized {
            status: RefundStatus::Success,
            source: FinalSource::Query
        }
    ));

    // Operator actions are read typed too; a pending refund ends with its next query.
    ledger
        .retry_now(&no("R2"), "ops", ts("2026-01-01T00:30:00.000Z"))
        .unwrap();
    let t = ledger.timeline(&no("R2")).unwrap().unwrap();
    let [created, acted, next] = &t.events[..] else {
        panic!("{t:?}");
    };
    assert!(matches!(created.what, Happened::Created { .. }));
    assert!(matches!(
        &acted.what,
        Happened::OperatorActed(o) if o.action == OperatorAction::RetryNow && o.actor == "ops"
    ));
    assert_eq!(next.what, Happened::NextQueryDue { scheduled: true });
    assert!(ledger.timeline(&no("NOPE")).unwrap().is_none());
}
