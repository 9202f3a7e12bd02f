//! Unit tests of the ledger's internals on real SQLite files: query plans (the due work must
//! come from the partial indexes), trigger messages, the exact amount comparison, corrupt-row
//! reporting and the contract snippets.

use std::str::FromStr;
use std::time::Duration;

use rusqlite::Connection;
use rust_decimal::Decimal;

use super::error::trigger_msg;
use super::read::{DUE, NEXT_DUE};
use super::write::SCHEDULE_NEW;
use super::*;
use crate::domain::{Currency, NewRefund, OutRefundNo, RefundStatus, Timestamp, parse_ts};

fn new_ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
    (dir, ledger)
}

fn refund(no: &str, amount: &str, created_at: &str) -> NewRefund {
    NewRefund {
        out_refund_no: OutRefundNo::parse(no).unwrap(),
        refund_trade_no: None,
        out_trade_no: Some(format!("O-{no}")),
        amount: Decimal::from_str(amount).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        status: RefundStatus::Pending,
        created_at: parse_ts(created_at).unwrap(),
    }
}

fn plan(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map(params, |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows.join("\n")
}

/// Fills the ledger so the planner has a realistic choice: many final rows, a few pending.
fn populate(ledger: &mut Ledger) {
    let rows: Vec<NewRefund> = (0..2000)
        .map(|i| {
            let mut r = refund(&format!("R{i:05}"), "10.00", "2026-01-01T00:00:00.000Z");
            if i % 10 != 0 {
                r.status = RefundStatus::Failed;
            }
            r
        })
        .collect();
    ledger.import(&rows, &mut |_| {}).unwrap();
    ledger.schedule_new(Duration::from_secs(600)).unwrap();
    ledger.conn.execute_batch("ANALYZE").unwrap();
}

#[test]
fn due_query_walks_the_partial_due_index_in_order() {
    let (_dir, mut ledger) = new_ledger();
    for analyzed in [false, true] {
        if analyzed {
            populate(&mut ledger);
        }
        let p = plan(&ledger.conn, DUE, &[&"2026-01-02T00:00:00.000Z", &10]);
        assert!(
            p.contains("USING INDEX refunds_due"),
            "analyzed={analyzed}: {p}"
        );
        assert!(
            !p.contains("TEMP B-TREE"),
            "analyzed={analyzed}: sorts: {p}"
        );
        let p = plan(&ledger.conn, NEXT_DUE, &[&1]);
        assert!(p.contains("refunds_due"), "analyzed={analyzed}: {p}");
        assert!(!p.contains("TEMP B-TREE"), "analyzed={analyzed}: {p}");
    }
}

#[test]
fn schedule_new_only_visits_unscheduled_rows() {
    let (_dir, mut ledger) = new_ledger();
    for analyzed in [false, true] {
        if analyzed {
            populate(&mut ledger);
        }
        let p = plan(&ledger.conn, SCHEDULE_NEW, &[&"+600.000 seconds"]);
        // Either partial index bounds the walk to unscheduled pending rows: refunds_unscheduled
        // holds only those, and in refunds_due they are exactly the NULL keys.
        assert!(
            p.contains("refunds_unscheduled") || p.contains("refunds_due (next_query_at=?)"),
            "analyzed={analyzed}: {p}"
        );
    }
}

#[test]
fn status_counts_avoid_walking_final_rows_for_pending_numbers() {
    let (_dir, mut ledger) = new_ledger();
    populate(&mut ledger);
    for sql in [
        "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING' AND next_query_at <= '2030'",
        "SELECT created_at, id FROM refunds WHERE status = 'REFUND_PENDING' ORDER BY +created_at LIMIT 1",
        "SELECT count(*) FROM refunds WHERE review_flag = 1 AND status = 'REFUND_PENDING'",
    ] {
        let p = plan(&ledger.conn, sql, &[]);
        assert!(
            p.contains("refunds_due") || p.contains("refunds_flagged"),
            "{sql}: {p}"
        );
    }
    let p = plan(
        &ledger.conn,
        "SELECT status, count(*) FROM refunds WHERE status <> 'REFUND_PENDING' GROUP BY status",
        &[],
    );
    assert!(p.contains("COVERING INDEX refunds_final"), "{p}");
}

#[test]
fn schema_raises_the_messages_the_code_maps() {
    for msg in [trigger_msg::FINAL_IMMUTABLE, trigger_msg::REFUND_EXISTS] {
        assert!(SCHEMA_SQL.contains(&format!("'{msg}'")), "{msg}");
    }
    assert!(SCHEMA_SQL.contains(&format!("PRAGMA user_version = {SCHEMA_VERSION};")));
}

#[test]
fn amounts_compare_exactly_as_decimal_text() {
    // The trigger's canonical form, checked against rust_decimal on a table of cases.
    let (_dir, ledger) = new_ledger();
    let canon = |x: &str| -> String {
        ledger
            .conn
            .query_row(
                "SELECT CASE WHEN instr(?1, '.') > 0 THEN rtrim(rtrim(ltrim(?1, '0'), '0'), '.') \
                 ELSE ltrim(?1, '0') END",
                [x],
                |r| r.get(0),
            )
            .unwrap()
    };
    let cases = [
        "10",
        "10.0",
        "10.00",
        "010",
        "0010.000",
        "100",
        "1000",
        "100.001",
        "100.0010",
        "0.5",
        "0.50",
        "00.5",
        "5",
        "50",
        "0.05",
        "1.10",
        "1.01",
        "12345678901234567890.1234",
        "12345678901234567890.12340",
        "9007199254740993",
        "9007199254740992",
    ];
    for a in cases {
        for b in cases {
            let same_value = Decimal::from_str(a).unwrap() == Decimal::from_str(b).unwrap();
            assert_eq!(canon(a) == canon(b), same_value, "{a} vs {b}");
        }
    }
}

#[test]
fn a_corrupt_stored_value_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = Ledger::open(&path).unwrap();
    ledger
        .insert_refund(&refund("R-BAD", "1.00", "2026-01-01T00:00:00.000Z"))
        .unwrap();
    // An outside writer that switched the CHECKs off (the only way past them).
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE refunds SET last_outcome = 'exploded' WHERE out_refund_no = 'R-BAD';",
    )
    .unwrap();
    let no = OutRefundNo::parse("R-BAD").unwrap();
    match ledger.state(&no) {
        Err(LedgerError::CorruptRow {
            out_refund_no,
            column,
            ..
        }) => {
            assert_eq!(out_refund_no, "R-BAD");
            assert_eq!(column, "last_outcome");
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
    assert!(matches!(
        ledger.show(&no),
        Err(LedgerError::CorruptRow { .. })
    ));
}

#[test]
fn contract_snippets_are_found_and_complete() {
    for name in contract::SNIPPETS {
        let text = contract::snippet(name).unwrap();
        assert!(text.starts_with(&format!("-- contract: {name}")), "{text}");
        assert!(text.ends_with(");"), "{text}");
        assert_eq!(text.matches("-- contract:").count(), 1, "{text}");
    }
    assert!(contract::snippet("nope").is_none());
}

#[test]
fn error_text_is_clipped_at_a_character_boundary() {
    let long = "é".repeat(MAX_ERROR_CHARS + 5);
    assert_eq!(types::clip_error(&long).chars().count(), MAX_ERROR_CHARS);
    assert_eq!(types::clip_error("short"), "short");
}

#[test]
fn the_due_query_selects_exactly_the_columns_raw_refund_reads() {
    use super::rows::{RawRefund, RawRow};
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let select = DUE
        .split("SELECT")
        .nth(1)
        .and_then(|s| s.split("FROM").next())
        .unwrap();
    assert_eq!(words(select), words(RawRefund::COLUMNS));
}

#[test]
fn operator_actions_match_the_schema_check() {
    let list = |spellings: Vec<&str>| {
        spellings
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let actions = list(OperatorAction::ALL.iter().map(|a| a.as_str()).collect());
    let flat: String = SCHEMA_SQL.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!("action IN ({actions})")),
        "{actions}"
    );
}

#[test]
fn review_reasons_match_the_schema_check() {
    let reasons: Vec<String> = super::types::REVIEW_REASONS
        .iter()
        .map(|r| format!("'{}'", r.as_str()))
        .collect();
    let flat: String = SCHEMA_SQL.split_whitespace().collect::<Vec<_>>().join(" ");
    let check = format!("review_reason IN ({}))", reasons.join(", "));
    assert!(flat.contains(&check), "{check}");
}

#[test]
fn timeline_events_order_by_time_then_kind_then_row() {
    let at = parse_ts("2026-01-01T00:00:00.000Z").unwrap();
    let later = parse_ts("2026-01-01T00:00:00.001Z").unwrap();
    let decided = |attempt_id| Happened::Decided {
        attempt_id,
        decision: String::new(),
    };
    let ev = |at, what| TimelineEvent { at, what };
    let mut events = [
        ev(
            later,
            Happened::Flagged(crate::domain::ReviewReason::PendingTooLong),
        ),
        ev(at, Happened::NextQueryDue { scheduled: false }),
        ev(at, decided(2)),
        ev(
            at,
            Happened::Flagged(crate::domain::ReviewReason::PendingTooLong),
        ),
        ev(at, decided(1)),
    ];
    events.sort();
    let keys: Vec<(Timestamp, EventKind)> = events.iter().map(|e| (e.at, e.what.kind())).collect();
    assert_eq!(
        keys,
        [
            (at, EventKind::Decision),
            (at, EventKind::Decision),
            (at, EventKind::Flagged),
            (at, EventKind::NextQuery),
            (later, EventKind::Flagged),
        ]
    );
    assert_eq!(events[0].what, decided(1), "same kind: row order");
    // The derived order of the kinds is the documented same-instant order.
    let kinds = [
        EventKind::Created,
        EventKind::Notification,
        EventKind::Query,
        EventKind::Decision,
        EventKind::Discrepancy,
        EventKind::Flagged,
        EventKind::DiscrepancyResolved,
        EventKind::Operator,
        EventKind::Finalized,
        EventKind::NextQuery,
    ];
    assert!(kinds.is_sorted());
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "created",
            "notification",
            "query",
            "decision",
            "discrepancy",
            "flagged",
            "discrepancy_resolved",
            "operator",
            "finalized",
            "next_query"
        ]
    );
}
