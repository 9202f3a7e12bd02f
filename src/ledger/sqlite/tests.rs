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
use crate::ledger::{
    EventKind, Finding, Happened, Health, MAX_ERROR_CHARS, NotificationEffect, NotificationRecord,
    OperatorAction, SweepCounts, SweepEnd, TimelineEvent, contract,
};

fn new_ledger() -> (tempfile::TempDir, SqliteLedger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(&dir.path().join("ledger.sqlite")).unwrap();
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
fn populate(ledger: &mut SqliteLedger) {
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
        let p = plan(
            &ledger.conn,
            super::nodes::CLAIM_DUE,
            &[&"2026-01-02T00:00:00.000Z", &10],
        );
        assert!(
            p.contains("USING INDEX refunds_due") && !p.contains("TEMP B-TREE"),
            "analyzed={analyzed}: the claim: {p}"
        );
        let p = plan(&ledger.conn, NEXT_DUE, &[]);
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
        "SELECT count(*) FROM refunds WHERE review_flag = 1",
    ] {
        let p = plan(&ledger.conn, sql, &[]);
        assert!(
            p.contains("refunds_due") || p.contains("refunds_flagged"),
            "{sql}: {p}"
        );
    }
    let p = plan(
        &ledger.conn,
        "SELECT status, n FROM refund_counts WHERE status <> 'REFUND_PENDING' AND n > 0",
        &[],
    );
    assert!(p.contains("refund_counts"), "{p}");
    assert!(
        !p.contains("refunds"),
        "status reads no refund row to count final ones: {p}"
    );
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
    let ledger = SqliteLedger::open(&path).unwrap();
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
    // Enum CHECKs are OR chains (schema.sql's conventions, migration 0009).
    let actions = OperatorAction::ALL
        .iter()
        .map(|a| format!("action = '{}'", a.as_str()))
        .collect::<Vec<_>>()
        .join(" OR ");
    let flat: String = SCHEMA_SQL.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains(&format!("CHECK (({actions}))")), "{actions}");
}

#[test]
fn review_reasons_match_the_schema_check() {
    let reasons: Vec<String> = super::types::REVIEW_REASONS
        .iter()
        .map(|r| format!("review_reason = '{}'", r.as_str()))
        .collect();
    let flat: String = SCHEMA_SQL.split_whitespace().collect::<Vec<_>>().join(" ");
    let check = format!("CHECK (({}))", reasons.join(" OR "));
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

// ---------------------------------------------------------------------------------------------
// `status`'s findings of a stall (health.rs), each from planted facts.
// ---------------------------------------------------------------------------------------------

use super::health::{
    BAD_CREATED_AT, FAILING_RUN, OVERDUE_UNFLAGGED, PRUNE_RUNNING, UNREADABLE_FLAGGED,
    UNSCHEDULED_BEFORE, latest_finished_sweep_sql,
};
use crate::domain::{Policy, Schedule, format_ts};
use crate::ledger::health::longest_gap;

const STALE: Duration = Duration::from_secs(300);

fn hours(h: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::hours(h)
}

/// A finished sweep from `at` to `at`, ending as `end` says.
fn swept(ledger: &SqliteLedger, at: Timestamp, end: SweepEnd) {
    let id = ledger.begin_sweep(at, None).unwrap();
    ledger.finish_sweep(id, at, &end).unwrap();
}

fn codes(h: &Health) -> Vec<&'static str> {
    h.findings.iter().map(Finding::code).collect()
}

/// The findings `health` adds past the original five, at `now` under the default policy.
fn stalls(ledger: &SqliteLedger, now: Timestamp) -> Vec<Finding> {
    let h = ledger.health(now, STALE).unwrap();
    h.findings
        .into_iter()
        .filter(|f| {
            !matches!(
                f,
                Finding::FlaggedRefunds { .. }
                    | Finding::WorkerNeverRan
                    | Finding::WorkerStale { .. }
            )
        })
        .collect()
}

#[test]
fn the_latest_finished_sweep_reports_the_breaker_its_error_and_skipped_rows() {
    let (_dir, ledger) = new_ledger();
    let t = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
    let opened = t - chrono::TimeDelta::minutes(7);
    swept(&ledger, t - hours(1), SweepEnd::default());
    assert!(stalls(&ledger, t).is_empty());
    for (i, error) in ["disk I/O error", "database is locked", "disk I/O error"]
        .into_iter()
        .enumerate()
    {
        swept(
            &ledger,
            t - chrono::TimeDelta::minutes(3 - i as i64),
            SweepEnd {
                counts: SweepCounts {
                    unreadable: 2,
                    ..SweepCounts::default()
                },
                error: Some(error.into()),
                breaker_open_since: Some(opened),
                ..SweepEnd::default()
            },
        );
    }
    // A sweep still running hides nothing: the facts are the latest finished sweep's.
    ledger.begin_sweep(t, None).unwrap();
    let want = [
        Finding::GatewayUnavailable {
            since: opened,
            paused_s: 7 * 60,
        },
        Finding::SweepsFailing {
            error: "disk I/O error".into(),
            consecutive: 3,
            since: t - chrono::TimeDelta::minutes(3),
        },
        Finding::UnreadableRows {
            unread: 0,
            skipped: 2,
            flagged: 0,
            bad_created_at: 0,
        },
    ];
    assert_eq!(stalls(&ledger, t), want);
    let h = ledger.health(t, STALE).unwrap();
    assert_eq!(
        codes(&h),
        ["gateway_unavailable", "sweeps_failing", "unreadable_rows"]
    );
    // The next sweep that ends well clears all three; an interrupted one (closed by the next
    // daemon, no error) ends a run of failures too.
    ledger
        .close_interrupted_sweeps(t + chrono::TimeDelta::seconds(1))
        .unwrap();
    assert!(stalls(&ledger, t).is_empty(), "{:?}", stalls(&ledger, t));
    swept(
        &ledger,
        t + chrono::TimeDelta::seconds(2),
        SweepEnd {
            error: Some("disk full".into()),
            ..SweepEnd::default()
        },
    );
    assert_eq!(
        stalls(&ledger, t + chrono::TimeDelta::seconds(2)),
        [Finding::SweepsFailing {
            error: "disk full".into(),
            consecutive: 1,
            since: t + chrono::TimeDelta::seconds(2),
        }]
    );
}

#[test]
fn unscheduled_refunds_count_only_once_a_sweep_should_have_scheduled_them() {
    let (_dir, ledger) = new_ledger();
    let t = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
    let at = |d: chrono::TimeDelta| format_ts(t + d);
    ledger
        .insert_refund(&refund("R-OLD", "1.00", &at(-hours(1))))
        .unwrap();
    // No sweep yet: nothing was due to schedule it, and worker_never_ran says so.
    assert_eq!(
        codes(&ledger.health(t, STALE).unwrap()),
        ["worker_never_ran"]
    );
    // A sweep that started after its creation finished without scheduling it.
    swept(&ledger, t, SweepEnd::default());
    let created_before = t - chrono::TimeDelta::minutes(10);
    assert_eq!(
        stalls(&ledger, t),
        [Finding::UnscheduledRefunds {
            count: 1,
            created_before,
        }]
    );
    // The app's own inserts after that sweep started do not count, nor do rows inside the
    // grace window (10 min by default) when the sweep is older than that.
    ledger
        .insert_refund(&refund("R-NEW", "1.00", &at(chrono::TimeDelta::seconds(1))))
        .unwrap();
    ledger
        .insert_refund(&refund(
            "R-GRACE",
            "1.00",
            &at(-chrono::TimeDelta::minutes(5)),
        ))
        .unwrap();
    assert_eq!(
        stalls(&ledger, t + chrono::TimeDelta::seconds(2)),
        [Finding::UnscheduledRefunds {
            count: 1,
            created_before: t + chrono::TimeDelta::seconds(2) - chrono::TimeDelta::minutes(10),
        }]
    );
    // Scheduling them clears it.
    ledger.schedule_new(Duration::from_secs(600)).unwrap();
    assert!(stalls(&ledger, t + hours(1)).is_empty());
}

#[test]
fn overdue_unflagged_refunds_wait_for_the_longest_gap_before_they_count() {
    let (_dir, ledger) = new_ledger();
    let t = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
    swept(&ledger, t, SweepEnd::default());
    let plant = |no: &str, age_h: i64, next: Option<Timestamp>| {
        ledger
            .insert_refund(&refund(no, "1.00", &format_ts(t - hours(age_h))))
            .unwrap();
        ledger
            .conn
            .execute(
                "UPDATE refunds SET next_query_at = ?2 WHERE out_refund_no = ?1",
                rusqlite::params![no, next.map(format_ts)],
            )
            .unwrap();
    };
    // 80 h pending and on its 24 h cadence: the query that flags it is still ahead.
    plant("R-80H", 80, Some(t + hours(15)));
    assert!(stalls(&ledger, t).is_empty(), "{:?}", stalls(&ledger, t));
    // Default policy: 72 h + 24 h x 1.1 + 5 min. 99 h is past it: nothing answered in time.
    plant("R-99H", 99, Some(t - hours(1)));
    plant("R-FLAGGED", 120, Some(t + hours(20)));
    ledger
        .conn
        .execute(
            "UPDATE refunds SET review_flag = 1, review_reason = 'pending_too_long',
                    flagged_at = ?1 WHERE out_refund_no = 'R-FLAGGED'",
            [format_ts(t)],
        )
        .unwrap();
    let older_than_s = (72 * 3600) + (24 * 3600 * 11 / 10) + 300;
    assert_eq!(
        stalls(&ledger, t),
        [Finding::OverdueUnflaggedRefunds {
            count: 1,
            older_than_s,
        }]
    );
    // The daemon's own settings decide: flag after 1 h, steady every 2 h, so 80 h is overdue.
    let defaults = Policy::default();
    let policy = Policy {
        pending_flag_after: Duration::from_secs(3600),
        schedule: Schedule {
            steady: Duration::from_secs(2 * 3600),
            ..defaults.schedule.clone()
        },
        ..defaults
    };
    let h = ledger.health_with(t, STALE, &policy).unwrap();
    assert!(
        h.findings.contains(&Finding::OverdueUnflaggedRefunds {
            count: 2,
            older_than_s: 3600 + (12 * 3600 * 11 / 10) + 300,
        }),
        "{h:?}"
    );
}

#[test]
fn the_longest_gap_is_the_largest_delay_stretched_by_the_full_jitter() {
    let d = Schedule::default();
    assert_eq!(longest_gap(&d), Duration::from_secs(24 * 3600 * 11 / 10));
    let s = Schedule {
        grace: Duration::from_secs(60),
        steps: vec![Duration::from_secs(10), Duration::from_secs(500)],
        steady: Duration::from_secs(100),
        retry: Duration::from_secs(5),
        jitter: 0.0,
    };
    assert_eq!(longest_gap(&s), Duration::from_secs(500));
    let huge = Schedule {
        steady: Duration::MAX,
        ..s
    };
    assert_eq!(longest_gap(&huge), Duration::MAX);
}

#[test]
fn unreadable_rows_count_flags_and_created_at_values_that_are_not_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).unwrap();
    let t = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
    swept(&ledger, t, SweepEnd::default());
    for no in ["R-A", "R-B", "R-C", "R-D"] {
        ledger
            .insert_refund(&refund(
                no,
                "1.00",
                &format_ts(t + chrono::TimeDelta::seconds(1)),
            ))
            .unwrap();
    }
    ledger.schedule_new(Duration::ZERO).unwrap();
    // What the worker writes when it cannot read or update a row.
    ledger
        .conn
        .execute(
            "UPDATE refunds SET review_flag = 1, flagged_at = ?1,
                    review_reason = CASE out_refund_no WHEN 'R-A' THEN 'row_unreadable'
                                                       ELSE 'row_unwritable' END
              WHERE out_refund_no IN ('R-A', 'R-B')",
            [format_ts(t)],
        )
        .unwrap();
    // What only a writer that switched the CHECKs off can store: refunds created at no time
    // at all, sorting after and before every real instant.
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE refunds SET status = 'REFUND_FAILED', final_source = 'refund_response',
                finalized_at = '2026-11-25T10:00:00.000Z', next_query_at = NULL
          WHERE out_refund_no IN ('R-C', 'R-D');
         UPDATE refunds SET created_at = 'yesterday' WHERE out_refund_no = 'R-C';
         UPDATE refunds SET created_at = '' WHERE out_refund_no = 'R-D';",
    )
    .unwrap();
    // The worker flags a final row it cannot read too; a flag for another reason that stayed
    // on a refund after it became final is not about reading.
    ledger
        .conn
        .execute_batch(
            "UPDATE refunds SET review_flag = 1, flagged_at = '2026-11-25T10:00:00.000Z',
                    review_reason = CASE out_refund_no WHEN 'R-C' THEN 'row_unreadable'
                                                       ELSE 'pending_too_long' END
              WHERE out_refund_no IN ('R-C', 'R-D')",
        )
        .unwrap();
    let h = ledger
        .health(t + chrono::TimeDelta::seconds(2), STALE)
        .unwrap();
    assert!(
        h.findings.contains(&Finding::UnreadableRows {
            unread: 0,
            skipped: 0,
            flagged: 3,
            bad_created_at: 2,
        }),
        "{h:?}"
    );
}

#[test]
fn a_prune_row_left_running_is_a_finding() {
    let (_dir, ledger) = new_ledger();
    let t = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
    swept(&ledger, t, SweepEnd::default());
    assert!(stalls(&ledger, t).is_empty());
    // A prune opens and closes its row in one transaction: a running row seen from outside
    // was written by hand (or by a broken writer).
    ledger
        .conn
        .execute(
            "INSERT INTO prunes (started_at, actor, reason, finalized_before, state)
             VALUES ('2026-11-20T00:00:00.000Z', 'someone', 'by hand',
                     '2026-01-01T00:00:00.000Z', 'running')",
            [],
        )
        .unwrap();
    let id = ledger.conn.last_insert_rowid();
    assert_eq!(
        stalls(&ledger, t),
        [Finding::PruneLeftRunning {
            id,
            started_at: Some(parse_ts("2026-11-20T00:00:00.000Z").unwrap()),
        }]
    );
    assert_eq!(
        codes(&ledger.health(t, STALE).unwrap()),
        ["prune_left_running"]
    );
}

#[test]
fn health_queries_walk_only_the_rows_they_count() {
    let (_dir, mut ledger) = new_ledger();
    for analyzed in [false, true] {
        if analyzed {
            populate(&mut ledger);
        }
        let cutoff = "2026-01-01T00:00:00.000Z";
        let p = plan(&ledger.conn, UNREADABLE_FLAGGED, &[]);
        assert!(
            p.contains("USING INDEX refunds_flagged") && !p.contains("refunds_by_created"),
            "analyzed={analyzed}: {p}"
        );
        let p = plan(&ledger.conn, BAD_CREATED_AT, &[]);
        assert!(
            p.contains("COVERING INDEX refunds_by_created (created_at<?)")
                && p.contains("COVERING INDEX refunds_by_created (created_at>?)"),
            "analyzed={analyzed}: {p}"
        );
        let p = plan(&ledger.conn, UNSCHEDULED_BEFORE, &[&cutoff]);
        assert!(
            p.contains("refunds_unscheduled (created_at<?)")
                || p.contains("refunds_due (next_query_at=?)"),
            "analyzed={analyzed}: {p}"
        );
        let p = plan(&ledger.conn, OVERDUE_UNFLAGGED, &[&cutoff]);
        assert!(
            p.contains("refunds_pending_unflagged (created_at<?)"),
            "analyzed={analyzed}: {p}"
        );
        // The sweep facts walk back from the newest row in rowid order, never sorting.
        for sql in [latest_finished_sweep_sql().as_str(), FAILING_RUN] {
            let p = plan(&ledger.conn, sql, &[]);
            assert!(!p.contains("TEMP B-TREE"), "analyzed={analyzed}: {p}");
            assert!(!p.contains("INDEX"), "analyzed={analyzed}: {p}");
        }
        let p = plan(&ledger.conn, PRUNE_RUNNING, &[]);
        assert!(!p.contains("TEMP B-TREE"), "analyzed={analyzed}: {p}");
    }
}

#[test]
fn rows_status_cannot_read_are_unreadable_rows_not_a_worker_that_never_ran() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).unwrap();
    let t = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
    ledger.begin_sweep(t, None).unwrap();
    ledger
        .insert_refund(&refund("R-1", "1.00", &format_ts(t)))
        .unwrap();
    ledger.schedule_new(Duration::ZERO).unwrap();
    // The latest sweep (also the latest finished one) and the oldest pending refund hold
    // values no reader can parse; only a writer without the CHECKs could store them.
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE sweeps SET started_at = 'noon', finished_at = '2026-11-25T10:00:00.000Z';
         UPDATE refunds SET created_at = '';",
    )
    .unwrap();
    let h = ledger.health(t, STALE).unwrap();
    assert_eq!(h.summary.unreadable.len(), 2, "{h:?}");
    // A pending refund created at no time sorts before every cutoff: it is overdue too.
    assert_eq!(
        h.findings,
        [
            Finding::UnreadableRows {
                unread: 2,
                skipped: 0,
                flagged: 0,
                bad_created_at: 1,
            },
            Finding::OverdueUnflaggedRefunds {
                count: 1,
                older_than_s: 354_540,
            }
        ]
    );
}

#[test]
fn gauge_queries_cost_what_they_report() {
    use super::gauges::{DUE as GAUGE_DUE, FLAGGED, OLDEST_PENDING, REFUND_COUNTS, UNRESOLVED};
    let (_dir, mut ledger) = new_ledger();
    for analyzed in [false, true] {
        if analyzed {
            populate(&mut ledger);
        }
        let now = "2026-01-02T00:00:00.000Z";
        let p = plan(&ledger.conn, REFUND_COUNTS, &[]);
        assert!(p.contains("SCAN refund_counts"), "analyzed={analyzed}: {p}");
        let p = plan(&ledger.conn, FLAGGED, &[]);
        assert!(p.contains("refunds_flagged"), "analyzed={analyzed}: {p}");
        let p = plan(&ledger.conn, GAUGE_DUE, &[&now]);
        assert!(
            p.contains("refunds_due (next_query_at<?)"),
            "analyzed={analyzed}: {p}"
        );
        let p = plan(&ledger.conn, OLDEST_PENDING, &[]);
        assert!(
            p.contains("refunds_pending_unflagged") && p.contains("refunds_flagged"),
            "analyzed={analyzed}: {p}"
        );
        assert!(!p.contains("TEMP B-TREE"), "analyzed={analyzed}: {p}");
        let p = plan(&ledger.conn, UNRESOLVED, &[]);
        assert!(
            p.contains("discrepancies_unresolved"),
            "analyzed={analyzed}: {p}"
        );
    }
}

#[test]
fn gauges_follow_every_writer_through_the_count_triggers() {
    let (_dir, mut ledger) = new_ledger();
    let now = parse_ts("2026-01-02T00:00:00.000Z").unwrap();
    let counts = |l: &SqliteLedger| {
        let g = l.gauges(now).unwrap();
        g.refunds.iter().map(|(_, n)| *n).collect::<Vec<_>>()
    };
    assert_eq!(counts(&ledger), vec![0, 0, 0]);
    populate(&mut ledger);
    // 200 pending, 1800 failed (populate), in RefundStatus::ALL order.
    assert_eq!(counts(&ledger), vec![200, 0, 1800]);
    // The merchant app's own SQL moves them too.
    ledger
        .conn
        .execute_batch(
            "INSERT INTO refunds (out_refund_no, amount, currency, created_at)
             VALUES ('APP-1', '1.00', 'USD', '2025-12-31T00:00:00.000Z');
             UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'notification',
                    finalized_at = '2026-01-01T00:00:01.000Z', next_query_at = NULL
              WHERE out_refund_no = 'R00000';",
        )
        .unwrap();
    assert_eq!(counts(&ledger), vec![200, 1, 1800]);
    let g = ledger.gauges(now).unwrap();
    assert_eq!(
        g.oldest_pending_created_at,
        Some(parse_ts("2025-12-31T00:00:00.000Z").unwrap())
    );
    assert_eq!((g.flagged, g.unresolved_discrepancies), (0, 0));
    // populate schedules the pending ones 10 minutes after 2026-01-01T00:00: all due at `now`.
    assert_eq!(g.due, 199);
    // The counts agree with a full count(*) by status.
    let full: Vec<u64> = RefundStatus::ALL
        .iter()
        .map(|s| {
            let n: i64 = ledger
                .conn
                .query_row(
                    "SELECT count(*) FROM refunds WHERE status = ?1",
                    [s.as_str()],
                    |r| r.get(0),
                )
                .unwrap();
            n as u64
        })
        .collect();
    assert_eq!(counts(&ledger), full);
}

#[test]
fn grouped_notifications_go_through_the_contract_and_each_gets_its_effect() {
    use crate::domain::FinalStatus;
    let (_dir, mut ledger) = new_ledger();
    ledger
        .insert_refund(&refund("R-1", "12.50", "2026-11-25T10:00:00.000Z"))
        .unwrap();
    ledger
        .insert_refund(&refund("R-2", "12.50", "2026-11-25T10:00:00.000Z"))
        .unwrap();
    let at = parse_ts("2026-11-25T10:05:00.000Z").unwrap();
    let note = |no: &str, amount: &str| NotificationRecord {
        out_refund_no: OutRefundNo::parse(no).unwrap(),
        status: FinalStatus::Success,
        refund_trade_no: None,
        amount: Decimal::from_str(amount).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        refund_finish_time: Some(at),
        notify_time: at,
    };
    let batch = [
        note("R-1", "12.5"),
        note("R-1", "12.50"),
        note("R-2", "99.00"),
        note("R-404", "1"),
    ];
    let effects: Vec<NotificationEffect> = ledger
        .record_notifications(&batch)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        effects,
        [
            NotificationEffect::Finalized,
            NotificationEffect::AlreadyFinal,
            NotificationEffect::Mismatch,
            NotificationEffect::UnknownRefund,
        ]
    );
    let r1 = ledger
        .show(&OutRefundNo::parse("R-1").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(r1.refund.status, RefundStatus::Success);
    assert_eq!(r1.notifications.len(), 2);
    assert!(ledger.record_notifications(&[]).unwrap().is_empty());
}
