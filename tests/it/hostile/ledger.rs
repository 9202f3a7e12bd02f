//! Hostile ledger (issue 10, parts 1, 10 and 11's second bullet): a value the ledger accepts
//! but cannot read must not exist (impossible times are refused at INSERT, and an older
//! ledger holding one is not migrated), and a ledger whose triggers, CHECKs or tables are not
//! schema.sql's is refused with exit 4 by the daemon and every command, naming what differs.

use std::path::{Path, PathBuf};

use checus_reconciler::ledger::{LedgerError, SCHEMA_VERSION, SqliteLedger, contract};
use rusqlite::named_params;

use crate::common::proc::{code, run, sql, stderr, stdout, write_config};

/// The committed v1 ledger (see tests/it/migrate.rs).
const V1_DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/ledger-v1/demo.sqlite"
);

/// Times the ledger cannot read or schedule, each in the ledger's own shape.
const IMPOSSIBLE: [&str; 5] = [
    "2026-02-31T03:28:23.092Z",
    "2026-02-28T24:00:00.000Z",
    "2026-02-28T23:59:60.000Z",
    "2026-13-01T00:00:00.000Z",
    "10000-01-01T00:00:00.000Z",
];

/// A new ledger made by `init` in `dir`, with one pending refund R1 (12.50 USD).
fn ledger_with_r1(dir: &Path) -> PathBuf {
    let path = dir.join("ledger.sqlite");
    let o = run(dir, &["init", "--ledger", path.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    sql(&path)
        .execute(
            contract::snippet("insert_refund").unwrap(),
            named_params! {":out_refund_no": "R1", ":refund_trade_no": None::<String>,
            ":out_trade_no": None::<String>, ":amount": "12.50", ":currency": "USD"},
        )
        .unwrap();
    path
}

/// Inserts a notification for R1 through the merchant contract's exact SQL.
fn notify(path: &Path, finish: &str, notify: &str) -> rusqlite::Result<usize> {
    sql(path).execute(
        contract::snippet("record_notification").unwrap(),
        named_params! {":out_refund_no": "R1", ":status": "REFUND_SUCCESS",
        ":refund_trade_no": "TR1", ":amount": "12.50", ":currency": "USD",
        ":refund_finish_time": finish, ":notify_time": notify},
    )
}

fn query_one(path: &Path, q: &str) -> String {
    sql(path).query_row(q, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_notification_with_an_impossible_time_is_refused_at_insert_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_r1(dir.path());
    let good = "2026-11-25T03:28:23.092Z";
    for bad in IMPOSSIBLE {
        for (finish, at) in [(bad, good), (good, bad)] {
            let err = notify(&path, finish, at).unwrap_err();
            assert!(
                err.to_string().contains("CHECK constraint failed"),
                "{finish} / {at}: {err}"
            );
        }
    }
    // The app got an error each time, so it did not acknowledge: nothing was stored.
    assert_eq!(
        query_one(&path, "SELECT count(*) || '' FROM notifications"),
        "0"
    );
    assert_eq!(
        query_one(
            &path,
            "SELECT status FROM refunds WHERE out_refund_no = 'R1'"
        ),
        "REFUND_PENDING"
    );
    // Checus delivers again with a real time (here with an offset): applied, and readable.
    notify(&path, "2026-11-25T11:28:23.092+08:00", good).unwrap();
    assert_eq!(
        query_one(
            &path,
            "SELECT status || ' ' || refund_finish_time FROM refunds WHERE out_refund_no = 'R1'"
        ),
        "REFUND_SUCCESS 2026-11-25T03:28:23.092Z"
    );
    let o = run(
        dir.path(),
        &["show", "--ledger", path.to_str().unwrap(), "R1"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn a_created_at_sqlite_cannot_schedule_is_refused_at_insert() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_r1(dir.path());
    for (i, bad) in IMPOSSIBLE.iter().enumerate() {
        let err = sql(&path)
            .execute(
                "INSERT INTO refunds (out_refund_no, amount, currency, created_at) \
                 VALUES (?1, '1.00', 'USD', ?2)",
                rusqlite::params![format!("BAD{i}"), bad],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("CHECK constraint failed"),
            "{bad}: {err}"
        );
    }
    // Every other time column refuses the same way (one sample per table).
    let c = sql(&path);
    for stmt in [
        "UPDATE refunds SET next_query_at = '2026-02-31T00:00:00.000Z' WHERE out_refund_no = 'R1'",
        "INSERT INTO sweeps (started_at) VALUES ('2026-02-28T24:00:00.000Z')",
        "INSERT INTO discrepancies (out_refund_no, detected_at, source, kind) \
         VALUES ('R1', '2026-02-28T23:59:60.000Z', 'query', 'amount_mismatch')",
        "INSERT INTO operator_actions (at, actor, action) \
         VALUES ('2026-04-31T00:00:00.000Z', 'op', 'retry_now')",
    ] {
        let err = c.execute(stmt, []).unwrap_err();
        assert!(
            err.to_string().contains("CHECK constraint failed"),
            "{stmt}: {err}"
        );
    }
    // The values the ledger writes itself pass: the daemon's form, the defaults, the 29th of
    // February of a leap year, the ends of the range.
    for (i, good) in [
        "2024-02-29T23:59:59.999Z",
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
    ]
    .iter()
    .enumerate()
    {
        c.execute(
            "INSERT INTO refunds (out_refund_no, amount, currency, created_at) \
             VALUES (?1, '1.00', 'USD', ?2)",
            rusqlite::params![format!("OK{i}"), good],
        )
        .unwrap();
    }
}

/// A copy of the v1 demo ledger in `dir` whose first pending refund has `next_query_at`
/// 2026-02-31 (version 1's GLOB CHECK let that in).
fn v1_with_an_impossible_time(dir: &Path) -> (PathBuf, i64) {
    let path = dir.join("ledger.sqlite");
    std::fs::copy(V1_DEMO, &path).unwrap();
    let c = sql(&path);
    let id: i64 = c
        .query_row(
            "SELECT min(id) FROM refunds WHERE status = 'REFUND_PENDING'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    c.execute(
        "UPDATE refunds SET next_query_at = '2026-02-31T03:28:23.092Z' WHERE id = ?1",
        [id],
    )
    .unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    (path, id)
}

#[test]
fn an_older_ledger_holding_an_impossible_time_is_not_migrated_and_the_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, id) = v1_with_an_impossible_time(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let l = path.to_str().unwrap();
    for args in [
        vec!["migrate", "--dry-run", "--ledger", l],
        vec!["migrate", "--ledger", l],
        vec!["init", "--ledger", l],
    ] {
        let o = run(dir.path(), &args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        for needle in [
            "cannot migrate ledger".to_owned(),
            format!(
                "from schema version 1 to {}",
                checus_reconciler::ledger::SCHEMA_VERSION
            ),
            format!("refunds row {id} has next_query_at = '2026-02-31T03:28:23.092Z'"),
            "not a real instant".to_owned(),
            "the ledger is unchanged".to_owned(),
        ] {
            assert!(err.contains(&needle), "{needle:?} in {err}");
        }
    }
    // Untouched, and no backup copy was left behind (a restart loop would fill the disk).
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".bak"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert!(matches!(
        SqliteLedger::open(&path),
        Err(LedgerError::UnrealInstant {
            table: "refunds",
            column: "next_query_at",
            ..
        })
    ));

    // Once the operator corrects the value, it migrates.
    sql(&path)
        .execute(
            "UPDATE refunds SET next_query_at = NULL WHERE id = ?1",
            [id],
        )
        .unwrap();
    let o = run(dir.path(), &["migrate", "--ledger", l]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Drops the final-status trigger, keeping its text so the test can put it back.
fn drop_final_guard(path: &Path) -> String {
    let c = sql(path);
    let text: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'refunds_final_status_is_immutable'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    c.execute_batch("DROP TRIGGER refunds_final_status_is_immutable;")
        .unwrap();
    text
}

#[test]
fn a_dropped_trigger_is_refused_with_exit_4_by_the_daemon_and_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_r1(dir.path());
    let trigger = drop_final_guard(&path);
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    let (l, cfg) = (path.to_str().unwrap(), config.to_str().unwrap());
    let named = "missing trigger refunds_final_status_is_immutable";
    for args in [
        vec!["run", "--config", cfg],
        vec![
            "add",
            "--ledger",
            l,
            "--out-refund-no",
            "R2",
            "--amount",
            "1.00",
            "--currency",
            "USD",
        ],
        vec!["status", "--ledger", l],
        vec!["list", "--ledger", l],
        vec!["retry-now", "--ledger", l, "R1", "--by", "op"],
        vec!["init", "--ledger", l],
    ] {
        let o = run(dir.path(), &args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{args:?}: {}", stderr(&o));
    }
    let o = run(dir.path(), &["verify-ledger", "--ledger", l]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stdout(&o).contains(named), "{}", stdout(&o));
    let o = run(dir.path(), &["verify-ledger", "--ledger", l, "--json"]);
    assert_eq!(code(&o), 4);
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        json["differences"][0],
        serde_json::json!({"difference": "missing", "kind": "trigger",
                           "name": "refunds_final_status_is_immutable"})
    );
    assert_eq!(query_one(&path, "SELECT count(*) || '' FROM refunds"), "1");

    // Put back, the ledger is accepted again.
    sql(&path).execute_batch(&format!("{trigger};")).unwrap();
    let o = run(dir.path(), &["verify-ledger", "--ledger", l]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("has every table, index and trigger"));
    let o = run(dir.path(), &["list", "--ledger", l]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn a_removed_check_or_an_altered_trigger_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_r1(dir.path());
    // The way around a CHECK without a rebuild: edit the stored CREATE TABLE text.
    sql(&path)
        .execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = replace(sql, 'CHECK (attempts >= 0)', '')
              WHERE name = 'refunds';
             PRAGMA writable_schema = OFF;
             DROP TRIGGER sweeps_finished_are_immutable;
             CREATE TRIGGER sweeps_finished_are_immutable BEFORE UPDATE ON sweeps
             WHEN 0 BEGIN SELECT RAISE(ABORT, 'never'); END;",
        )
        .unwrap();
    let o = run(dir.path(), &["status", "--ledger", path.to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let err = stderr(&o);
    for needle in [
        "altered table refunds",
        "altered trigger sweeps_finished_are_immutable",
        "verify-ledger",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
}

#[test]
fn a_file_with_the_table_names_and_the_current_version_but_not_the_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    sql(&path)
        .execute_batch(&format!(
            "CREATE TABLE refunds (x); CREATE TABLE attempts (x); \
             CREATE TABLE discrepancies (x); CREATE TABLE notifications (x); \
             CREATE TABLE sweeps (x); CREATE TABLE operator_actions (x); \
             CREATE TABLE prunes (x); PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let l = path.to_str().unwrap();
    for args in [
        vec!["status", "--ledger", l],
        vec!["list", "--ledger", l],
        vec!["export", "--ledger", l, "--since", "1d"],
        vec![
            "add",
            "--ledger",
            l,
            "--out-refund-no",
            "R1",
            "--amount",
            "1.00",
            "--currency",
            "USD",
        ],
        vec!["init", "--ledger", l],
        vec!["verify-ledger", "--ledger", l],
    ] {
        let o = run(dir.path(), &args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let text = stderr(&o) + &stdout(&o);
        assert!(text.contains("altered table refunds"), "{args:?}: {text}");
        assert!(text.contains("missing trigger"), "{args:?}: {text}");
    }
    // Judged before anything was written: not even switched to WAL.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}
