//! The PostgreSQL engine ([`PgLedger`]) through its methods, on a real PostgreSQL server, each
//! test in its own fresh database dropped afterwards (tests/common/pg.rs). Outside writers and
//! checks are plain `postgres` sessions, so what the engine wrote is read as the server holds
//! it. The tests mirror tests/it/ledger.rs's SQLite tests of the same behaviour (named alike),
//! plus what only several daemons need: the lease claim, per-node sweeps, reconnecting.

use std::str::FromStr;
use std::time::Duration;

use checus_reconciler::domain::{
    Change, Currency, Decision, Discrepancy, DiscrepancyKind, FinalSource, FinalStatus, NewRefund,
    OutcomeClass, RefundStatus, ReviewReason,
};
use checus_reconciler::ledger::{
    Applied, AuditFilter, DeliveryOutcome, DeliveryResult, Finding, Ledger, LedgerError,
    LedgerTarget, ListFilter, NotificationEffect, NotificationRecord, OpenMode, PgLedger,
    PostgresTarget, Registered, SweepCounts, SweepEnd, WebhookFilter, WebhookState,
};
use postgres::Client;
use rust_decimal::Decimal;

use crate::common::fixtures::{finalize, no, success_answer};
use crate::common::pg::{self, DropDb};
use crate::common::ts;

const FINAL_IMMUTABLE: &str = "checus-reconciler: final refund status is immutable";

fn target(url: &str) -> PostgresTarget {
    PostgresTarget {
        url: url.to_owned(),
        password: None,
        ca_file: None,
    }
}

/// A fresh database with a ledger the engine created, the engine on it (node `node-a`), and an
/// outside session. `None`: skipped (no server, not CI).
fn new_ledger() -> Option<(DropDb, PgLedger, Client)> {
    let (url, db) = pg::fresh_db()?;
    let mut ledger = PgLedger::open(&target(&url), OpenMode::Create).unwrap();
    ledger.set_node("node-a").unwrap();
    let outside = pg::connect(&url).unwrap();
    Some((db, ledger, outside))
}

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

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn text(c: &mut Client, sql: &str) -> Option<String> {
    c.query_one(sql, &[]).unwrap().get(0)
}

// ---------------------------------------------------------------------------------------------
// open
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_open_creates_the_schema_once_and_reopens_it() {
    let Some((url, _db)) = pg::fresh_db() else {
        return;
    };
    // No ledger yet: only Create makes one.
    for mode in [OpenMode::Existing, OpenMode::Reading] {
        match PgLedger::open(&target(&url), mode) {
            Err(e @ LedgerError::PgNotALedger { .. }) => {
                assert!(e.to_string().contains("holds no ledger"), "{e}");
                assert!(e.is_refusal());
            }
            other => panic!("expected PgNotALedger, got {other:?}"),
        }
    }
    let ledger = PgLedger::open(&target(&url), OpenMode::Create).unwrap();
    ledger.insert_refund(&refund("R1", "1.00")).unwrap();
    drop(ledger);
    let mut c = pg::connect(&url).unwrap();
    assert_eq!(
        count(&mut c, "SELECT max(version)::bigint FROM schema_version"),
        i64::from(checus_reconciler::ledger::postgres::PG_SCHEMA_VERSION)
    );

    // Create again, Existing and Reading all use it as it is.
    for mode in [OpenMode::Create, OpenMode::Existing, OpenMode::Reading] {
        let again = PgLedger::open(&target(&url), mode).unwrap();
        assert!(again.state(&no("R1")).unwrap().is_some(), "{mode:?}");
        assert!(again.verify_schema().unwrap().differences.is_empty());
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM refunds"), 1);

    // Opened for reading: a write is refused before the server is asked.
    let reading = PgLedger::open(&target(&url), OpenMode::Reading).unwrap();
    assert!(matches!(
        reading.insert_refund(&refund("R2", "1")),
        Err(LedgerError::OpenedForReading { .. })
    ));
}

#[test]
fn pg_open_refuses_a_newer_version_and_an_altered_schema() {
    let Some((db, ledger, mut c)) = new_ledger() else {
        return;
    };
    let url = pg::with_database(&pg::server_url(), db.name());
    drop(ledger);

    c.batch_execute("ALTER TABLE refunds DISABLE TRIGGER refunds_final_status_is_immutable")
        .unwrap();
    match PgLedger::open(&target(&url), OpenMode::Existing) {
        Err(e @ LedgerError::PgSchemaAltered { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("trigger refunds_final_status_is_immutable"),
                "{msg}"
            );
            assert!(e.is_refusal());
        }
        other => panic!("expected PgSchemaAltered, got {other:?}"),
    }
    // verify-ledger reports what open refuses: a disabled trigger is altered, a dropped index
    // missing; nothing is changed.
    c.batch_execute("DROP INDEX refunds_flagged").unwrap();
    let check = checus_reconciler::ledger::verify(&LedgerTarget::Postgres(target(&url))).unwrap();
    assert_eq!(
        check.version,
        checus_reconciler::ledger::postgres::PG_SCHEMA_VERSION
    );
    assert!(check.compared > 60, "{}", check.compared);
    let found: Vec<String> = check.differences.iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        vec![
            "missing index refunds_flagged",
            "altered trigger refunds_final_status_is_immutable"
        ]
    );
    c.batch_execute(
        "ALTER TABLE refunds ENABLE TRIGGER refunds_final_status_is_immutable;
         CREATE INDEX refunds_flagged ON refunds (status, created_at) WHERE review_flag = 1;",
    )
    .unwrap();
    PgLedger::open(&target(&url), OpenMode::Existing).unwrap();
    assert!(
        checus_reconciler::ledger::verify(&LedgerTarget::Postgres(target(&url)))
            .unwrap()
            .is_intact()
    );

    let ours = checus_reconciler::ledger::postgres::PG_SCHEMA_VERSION;
    c.batch_execute(&format!(
        "INSERT INTO schema_version (version) VALUES ({})",
        ours + 1
    ))
    .unwrap();
    for mode in [OpenMode::Create, OpenMode::Existing] {
        match PgLedger::open(&target(&url), mode) {
            Err(LedgerError::SchemaTooNew {
                found, supported, ..
            }) if found == ours + 1 && supported == ours => {}
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}

#[test]
fn pg_a_closed_connection_is_opened_again() {
    let Some((_db, ledger, mut c)) = new_ledger() else {
        return;
    };
    ledger.insert_refund(&refund("R1", "1")).unwrap();
    const OURS: &str = "FROM pg_stat_activity WHERE application_name = 'checus-reconciler'
                         AND datname = current_database() AND pid <> pg_backend_pid()";
    c.batch_execute(&format!("SELECT pg_terminate_backend(pid) {OURS}"))
        .unwrap();
    // Wait until the server has ended it (a readiness wait, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&mut c, &format!("SELECT count(*) {OURS}")) > 0 {
        assert!(std::time::Instant::now() < deadline, "backend not ended");
        std::thread::yield_now();
    }
    // The call that meets the dead connection fails as "unavailable" (whether a write took
    // effect is unknown then, so it is not retried blindly); the next one reconnects.
    let e = ledger.state(&no("R1")).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(ledger.state(&no("R1")).unwrap().is_some());
    ledger.insert_refund(&refund("R2", "1")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// intake
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_insert_refund_refuses_duplicates_and_records_immediate_failures_as_final() {
    let Some((_db, ledger, _c)) = new_ledger() else {
        return;
    };
    ledger.insert_refund(&refund("R1", "12.50")).unwrap();
    match ledger.insert_refund(&refund("R1", "99.00")) {
        Err(LedgerError::DuplicateRefund {
            out_refund_no,
            index: None,
        }) => assert_eq!(out_refund_no.as_str(), "R1"),
        other => panic!("expected DuplicateRefund, got {other:?}"),
    }
    let row = ledger.refund(&no("R1")).unwrap().unwrap();
    assert_eq!(row.amount.to_string(), "12.50", "the written scale is kept");
    assert_eq!(row.status, RefundStatus::Pending);
    assert_eq!(row.next_query_at, None);
    assert_eq!(row.created_at, ts("2026-01-01T00:00:00.000Z"));

    let mut failed = refund("R2", "3");
    failed.status = RefundStatus::Failed;
    ledger.insert_refund(&failed).unwrap();
    let row = ledger.refund(&no("R2")).unwrap().unwrap();
    assert_eq!(row.status, RefundStatus::Failed);
    assert_eq!(row.final_source, Some(FinalSource::RefundResponse));
    assert_eq!(row.finalized_at, Some(failed.created_at));

    let mut success = refund("R3", "3");
    success.status = RefundStatus::Success;
    assert!(matches!(
        ledger.insert_refund(&success),
        Err(LedgerError::InvalidRefund { .. })
    ));

    // register_refund: the row as stored, or the one already holding the number.
    match ledger.register_refund(&refund("R5", "7.10")).unwrap() {
        Registered::Created(row) => assert_eq!(row.amount.to_string(), "7.10"),
        other => panic!("expected Created, got {other:?}"),
    }
    match ledger.register_refund(&refund("R1", "1")).unwrap() {
        Registered::Existing(row) => assert_eq!(row.amount.to_string(), "12.50"),
        other => panic!("expected Existing, got {other:?}"),
    }
}

#[test]
fn pg_import_is_all_or_nothing() {
    let Some((_db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
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
    assert_eq!(count(&mut c, "SELECT count(*) FROM refunds"), 0);

    ledger.insert_refund(&refund("B9", "1")).unwrap();
    let rows = vec![refund("B0", "1"), refund("B9", "1")];
    assert!(matches!(
        ledger.import(&rows, &mut |_| {}),
        Err(LedgerError::DuplicateRefund { index: Some(1), .. })
    ));
    assert_eq!(count(&mut c, "SELECT count(*) FROM refunds"), 1);

    // A row only the server refuses (out_trade_no over 64 characters): the chunk is retried
    // row by row, the refusal is that row's, and nothing is written.
    let mut long = refund("L2", "1");
    long.out_trade_no = Some("x".repeat(65));
    let rows = vec![refund("L0", "1"), refund("L1", "1"), long];
    let e = ledger.import(&rows, &mut |_| {}).unwrap_err();
    assert!(e.is_row_refusal(), "{e:?}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM refunds"), 1);

    let rows: Vec<NewRefund> = (0..25_000)
        .map(|i| refund(&format!("C{i}"), "1.5"))
        .collect();
    let mut seen = Vec::new();
    assert_eq!(ledger.import(&rows, &mut |n| seen.push(n)).unwrap(), 25_000);
    assert_eq!(seen, vec![10_000, 20_000]);
    assert_eq!(count(&mut c, "SELECT count(*) FROM refunds"), 25_001);
    assert_eq!(
        count(
            &mut c,
            "SELECT n FROM refund_counts WHERE status = 'REFUND_PENDING'"
        ),
        25_001
    );
}

#[test]
fn pg_a_matching_notification_finalizes_and_a_duplicate_only_confirms() {
    let Some((_db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    ledger.schedule_new(Duration::from_secs(600)).unwrap();
    // Equal as decimals though spelled differently; the batch applies them in order.
    let effects = ledger
        .record_notifications(&[
            note("R1", FinalStatus::Success, "10", "USD"),
            note("R1", FinalStatus::Success, "10.0", "USD"),
        ])
        .unwrap();
    let effects: Vec<_> = effects.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        effects,
        vec![
            NotificationEffect::Finalized,
            NotificationEffect::AlreadyFinal
        ]
    );
    let row = ledger.refund(&no("R1")).unwrap().unwrap();
    assert_eq!(row.status, RefundStatus::Success);
    assert_eq!(row.final_source, Some(FinalSource::Notification));
    assert_eq!(row.refund_trade_no.as_deref(), Some("T-R1"));
    assert_eq!(row.refund_finish_time, Some(ts("2026-01-01T00:05:00.123Z")));
    assert_eq!(row.notified_at, row.finalized_at);
    assert_eq!(row.next_query_at, None, "a final refund is not scheduled");
    assert_eq!(count(&mut c, "SELECT count(*) FROM discrepancies"), 0);

    // One notification alone, through the same contract statement.
    ledger
        .record_notification(&note("R1", FinalStatus::Success, "10.00", "USD"))
        .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM notifications"), 3);
}

#[test]
fn pg_a_disagreeing_notification_is_recorded_never_applied() {
    let Some((_db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    for n in ["C", "M"] {
        ledger.insert_refund(&refund(n, "10.00")).unwrap();
    }
    let effects = ledger
        .record_notifications(&[
            note("C", FinalStatus::Success, "10.00", "USD"),
            note("C", FinalStatus::Failed, "10.00", "USD"),
            note("M", FinalStatus::Success, "10.01", "EUR"),
            note("GHOST", FinalStatus::Success, "5", "USD"),
        ])
        .unwrap();
    let effects: Vec<_> = effects.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        effects,
        vec![
            NotificationEffect::Finalized,
            NotificationEffect::ConflictingFinal,
            NotificationEffect::Mismatch,
            NotificationEffect::UnknownRefund,
        ]
    );
    assert_eq!(
        ledger.refund(&no("C")).unwrap().unwrap().status,
        RefundStatus::Success
    );
    assert_eq!(
        ledger.refund(&no("M")).unwrap().unwrap().status,
        RefundStatus::Pending,
        "a mismatch is never applied"
    );
    let kinds: Vec<String> = c
        .query("SELECT kind FROM discrepancies ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "conflicting_final",
            "amount_mismatch",
            "currency_mismatch",
            "unknown_refund"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// attempts
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_record_attempt_finalizes_by_compare_and_set_and_a_final_status_is_refused() {
    let Some((_db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    let applied = ledger
        .record_attempt(
            &success_answer("R1", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap();
    assert_eq!(applied, Applied::Finalized(FinalStatus::Success));
    let row = ledger.refund(&no("R1")).unwrap().unwrap();
    assert_eq!(row.status, RefundStatus::Success);
    assert_eq!(row.final_source, Some(FinalSource::Query));
    assert_eq!(row.finalized_at, Some(ts("2026-01-01T00:15:00.000Z")));
    assert_eq!(row.refund_trade_no.as_deref(), Some("T-Q"));
    assert_eq!(row.last_outcome, Some(OutcomeClass::Final));
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM attempts WHERE outcome = 'final' AND latency_ms = 42
                AND http_status = 200 AND node = 'node-a'"
        ),
        1
    );

    // A final status never changes: not through the engine (a second verified answer is a
    // conflict, recorded), not through an outside session (the trigger refuses).
    let applied = ledger
        .record_attempt(
            &success_answer("R1", "2026-01-01T00:16:00.000Z"),
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
    let e = c
        .batch_execute("UPDATE refunds SET status = 'REFUND_FAILED' WHERE out_refund_no = 'R1'")
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains(FINAL_IMMUTABLE),
        "{e}"
    );
    assert_eq!(
        ledger.refund(&no("R1")).unwrap().unwrap().status,
        RefundStatus::Success
    );

    // After a notification finalized it: the same outcome is already final.
    ledger.insert_refund(&refund("SAME", "10.00")).unwrap();
    ledger
        .record_notification(&note("SAME", FinalStatus::Success, "10.00", "USD"))
        .unwrap();
    let applied = ledger
        .record_attempt(
            &success_answer("SAME", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap();
    assert_eq!(applied, Applied::AlreadyFinal(FinalStatus::Success));
    assert_eq!(
        ledger.refund(&no("SAME")).unwrap().unwrap().final_source,
        Some(FinalSource::Notification)
    );
}

#[test]
fn pg_record_attempt_reschedules_flags_once_and_records_mismatches() {
    let Some((_db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
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
    let applied = ledger
        .record_attempt(
            &success_answer("R1", "2026-01-05T00:00:00.000Z"),
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
    let row = ledger.refund(&no("R1")).unwrap().unwrap();
    assert_eq!(row.attempts, 4);
    assert_eq!(row.review_reason, Some(ReviewReason::PendingTooLong));
    assert_eq!(row.flagged_at, Some(ts("2026-01-04T00:00:00.000Z")));
    assert_eq!(row.next_query_at, Some(ts("2026-01-06T00:00:00.000Z")));

    let mut decision = reschedule("2026-01-07T00:00:00.000Z", 5, None);
    decision.class = OutcomeClass::Mismatch;
    decision.discrepancies = vec![Discrepancy {
        kind: DiscrepancyKind::AmountMismatch,
        expected: "10.00".into(),
        observed: "11.00".into(),
    }];
    let applied = ledger
        .record_attempt(&success_answer("R1", "2026-01-06T00:00:00.000Z"), &decision)
        .unwrap();
    assert_eq!(applied, Applied::Mismatch { flagged: None });
    assert_eq!(
        text(
            &mut c,
            "SELECT observed FROM discrepancies WHERE source = 'query' AND kind = 'amount_mismatch'"
        )
        .as_deref(),
        Some("11.00")
    );
}

#[test]
fn pg_group_commit_isolates_a_bad_attempt() {
    let Some((_db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    for n in ["R1", "R2"] {
        ledger.insert_refund(&refund(n, "10.00")).unwrap();
    }
    let sweep = ledger
        .begin_sweep(ts("2026-01-01T00:14:00.000Z"), "node-a")
        .unwrap();
    let mut refused = success_answer("R2", "2026-01-01T00:15:00.000Z");
    refused.http_status = Some(700); // the attempts CHECK refuses it: this row's fault alone
    let batch = vec![
        (
            Some(sweep),
            success_answer("R1", "2026-01-01T00:15:00.000Z"),
            finalize(FinalStatus::Success),
        ),
        (
            Some(sweep),
            success_answer("NOPE", "2026-01-01T00:15:00.000Z"),
            finalize(FinalStatus::Success),
        ),
        (Some(sweep), refused, finalize(FinalStatus::Success)),
        (
            Some(sweep),
            success_answer("R2", "2026-01-01T00:15:01.000Z"),
            reschedule("2026-01-01T01:00:00.000Z", 1, None),
        ),
    ];
    let results = ledger.record_attempts(&batch).unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Applied::Finalized(FinalStatus::Success)
    );
    assert!(matches!(results[1], Err(LedgerError::NotFound { .. })));
    match &results[2] {
        Err(e) => assert!(e.is_row_refusal(), "{e:?}"),
        other => panic!("expected a row refusal, got {other:?}"),
    }
    assert!(matches!(results[3], Ok(Applied::Rescheduled { .. })));
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM attempts WHERE sweep_id = {sweep}")
        ),
        2,
        "the refused attempts were rolled back alone"
    );
    assert_eq!(
        ledger.refund(&no("R2")).unwrap().unwrap().status,
        RefundStatus::Pending
    );
}

// ---------------------------------------------------------------------------------------------
// the claim, sweeps, watermarks
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_claim_returns_due_rows_oldest_first_and_skips_leased_and_locked_rows() {
    let Some((db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
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
    ledger.import(&rows, &mut |_| {}).unwrap();
    assert_eq!(ledger.next_due_at(&Default::default()).unwrap(), None);
    assert_eq!(
        ledger.schedule_new(Duration::from_millis(600_250)).unwrap(),
        3
    );
    assert_eq!(
        ledger.next_due_at(&Default::default()).unwrap(),
        Some(ts("2026-01-01T00:10:00.250Z"))
    );

    let now = ts("2026-01-01T01:10:00.250Z");
    let lease = ts("2026-01-01T01:11:00.000Z");
    assert!(
        ledger
            .claim_due(ts("2026-01-01T00:10:00.249Z"), 10, "node-a", lease)
            .unwrap()
            .rows
            .is_empty()
    );
    let names = |r: &checus_reconciler::ledger::Readout<checus_reconciler::domain::RefundState>| {
        r.rows
            .iter()
            .map(|s| s.out_refund_no.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let a = ledger.claim_due(now, 10, "node-a", lease).unwrap();
    assert_eq!(
        names(&a),
        vec!["EARLY", "MID"],
        "inclusive bound, oldest first"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM refunds WHERE claimed_by = 'node-a'
                AND claimed_until = '2026-01-01T01:11:00Z'"
        ),
        2
    );

    // Another node sees nothing while the leases live, and takes them once they ended.
    let url = pg::with_database(&pg::server_url(), db.name());
    let b = PgLedger::open(&target(&url), OpenMode::Existing).unwrap();
    assert!(
        b.claim_due(now, 10, "node-b", lease)
            .unwrap()
            .rows
            .is_empty()
    );
    let later = ts("2026-01-01T01:11:00.000Z");
    let taken = b
        .claim_due(later, 10, "node-b", ts("2026-01-01T01:12:00.000Z"))
        .unwrap();
    assert_eq!(names(&taken), vec!["EARLY", "MID"]);

    // A row another transaction holds locked is passed by, not waited for.
    let mut locker = pg::connect(&url).unwrap();
    let mut tx = locker.transaction().unwrap();
    tx.execute(
        "SELECT 1 FROM refunds WHERE out_refund_no = 'LATE' FOR UPDATE",
        &[],
    )
    .unwrap();
    let far = ts("2026-01-02T00:00:00.000Z");
    let got = ledger
        .claim_due(far, 10, "node-a", ts("2026-01-02T00:01:00.000Z"))
        .unwrap();
    assert_eq!(names(&got), vec!["EARLY", "MID"], "LATE is locked");
    tx.rollback().unwrap();

    // Recording the attempt releases this node's lease; finalizing clears any.
    ledger
        .record_attempt(
            &success_answer("MID", "2026-01-02T00:00:10.000Z"),
            &reschedule("2026-01-03T00:00:00.000Z", 1, None),
        )
        .unwrap();
    ledger
        .record_attempt(
            &success_answer("EARLY", "2026-01-02T00:00:10.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM refunds WHERE claimed_by IS NOT NULL"
        ),
        0
    );
    assert!(matches!(
        ledger.claim_due(now, 1, "bad name!", lease),
        Err(LedgerError::InvalidNodeName { .. })
    ));
}

#[test]
fn pg_sweeps_carry_their_node_and_only_this_nodes_open_sweeps_are_closed() {
    let Some((db, ledger, mut c)) = new_ledger() else {
        return;
    };
    let url = pg::with_database(&pg::server_url(), db.name());
    let mut b = PgLedger::open(&target(&url), OpenMode::Existing).unwrap();
    b.set_node("node-b").unwrap();
    let mine = ledger
        .begin_sweep(ts("2026-01-01T00:00:00.000Z"), "node-a")
        .unwrap();
    let theirs = b
        .begin_sweep(ts("2026-01-01T00:00:00.000Z"), "node-b")
        .unwrap();
    assert_eq!(
        ledger
            .close_interrupted_sweeps(ts("2026-01-01T00:01:00.000Z"))
            .unwrap(),
        1
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM sweeps WHERE id = {theirs} AND finished_at IS NULL")
        ),
        1,
        "node-b's sweep may be running"
    );
    let end = SweepEnd {
        counts: SweepCounts {
            claimed: 3,
            finalized: 1,
            ..Default::default()
        },
        halt: None,
        error: None,
        breaker_open_since: None,
    };
    b.finish_sweep(theirs, ts("2026-01-01T00:02:00.000Z"), &end)
        .unwrap();
    assert!(matches!(
        b.finish_sweep(theirs + 100, ts("2026-01-01T00:02:00.000Z"), &end),
        Err(LedgerError::SweepNotFound { .. })
    ));
    assert_eq!(
        text(
            &mut c,
            &format!("SELECT node FROM sweeps WHERE id = {mine}")
        )
        .as_deref(),
        Some("node-a")
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT claimed FROM sweeps WHERE id = {theirs}")
        ),
        3
    );
}

#[test]
fn pg_watermarks_follow_what_others_finalized_and_recorded() {
    let Some((_db, mut ledger, _c)) = new_ledger() else {
        return;
    };
    assert_eq!(ledger.finalized_watermark().unwrap(), None);
    assert_eq!(ledger.discrepancy_watermark().unwrap(), 0);
    for n in ["N1", "Q1", "N2"] {
        ledger.insert_refund(&refund(n, "1")).unwrap();
    }
    ledger
        .record_notification(&note("N1", FinalStatus::Success, "1", "USD"))
        .unwrap();
    ledger
        .record_attempt(
            &success_answer("Q1", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Success),
        )
        .unwrap();
    let (first, mark) = ledger.finalized_elsewhere_since(None, 10).unwrap();
    let names: Vec<_> = first
        .rows
        .iter()
        .map(|r| r.out_refund_no.as_str())
        .collect();
    assert_eq!(names, vec!["N1"], "the daemon's own queries are left out");
    ledger
        .record_notification(&note("N2", FinalStatus::Failed, "1", "USD"))
        .unwrap();
    let (next, _) = ledger.finalized_elsewhere_since(mark.as_ref(), 10).unwrap();
    let names: Vec<_> = next.rows.iter().map(|r| r.out_refund_no.as_str()).collect();
    assert_eq!(names, vec!["N2"]);

    ledger
        .record_notification(&note("GHOST", FinalStatus::Failed, "1", "USD"))
        .unwrap();
    let logged = ledger.discrepancies_since(0, 10).unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].kind, "unknown_refund");
    assert_eq!(ledger.discrepancy_watermark().unwrap(), logged[0].id);
    assert_eq!(ledger.operator_actions_watermark().unwrap(), 0);
    assert_eq!(ledger.resume_requested_after(0).unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// the webhook outbox
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_outbox_rows_are_written_by_the_change_and_delivered_in_order() {
    let Some((_db, ledger, mut c)) = new_ledger() else {
        return;
    };
    ledger.insert_refund(&refund("R1", "10.00")).unwrap();
    assert_eq!(ledger.next_webhook_at().unwrap(), None);
    ledger
        .record_notification(&note("R1", FinalStatus::Success, "10.00", "USD"))
        .unwrap();
    ledger
        .record_notification(&note("R1", FinalStatus::Failed, "10.00", "USD"))
        .unwrap();
    // Two events (finalized, then the conflict's discrepancy); only the first is due.
    let now = ts("2099-01-01T00:00:00.000Z");
    let due = ledger.due_webhooks(now, 10).unwrap();
    assert_eq!(due.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
    assert_eq!(body["type"], "refund.finalized");
    assert_eq!(body["id"], due[0].event_id.as_str());
    assert_eq!(body["data"]["amount"], "10.00", "the amount as written");
    assert_eq!(body["data"]["status"], "REFUND_SUCCESS");
    assert_eq!(due[0].attempts, 0);
    assert_eq!(due[0].first_attempt_at, None);

    let at = ts("2026-01-01T00:06:00.000Z");
    ledger
        .record_webhook_results(&[DeliveryResult {
            id: due[0].id,
            attempted_at: at,
            outcome: DeliveryOutcome::Delivered,
        }])
        .unwrap();
    let due = ledger.due_webhooks(now, 10).unwrap();
    assert_eq!(due.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
    assert_eq!(body["type"], "discrepancy.recorded");
    ledger
        .record_webhook_results(&[DeliveryResult {
            id: due[0].id,
            attempted_at: at,
            outcome: DeliveryOutcome::Dead {
                error: "HTTP 500".into(),
            },
        }])
        .unwrap();
    assert!(ledger.due_webhooks(now, 10).unwrap().is_empty());
    assert_eq!(ledger.dead_webhook_count().unwrap(), 1);

    let all = WebhookFilter {
        limit: 10,
        ..Default::default()
    };
    let listed = ledger.webhook_events(&all).unwrap();
    assert_eq!(listed.rows.len(), 2);
    assert_eq!(listed.rows[0].state, WebhookState::Delivered);
    assert_eq!(listed.rows[0].delivered_at, Some(at));
    assert_eq!(listed.rows[1].last_error.as_deref(), Some("HTTP 500"));
    let dead = WebhookFilter {
        state: Some(WebhookState::Dead),
        refund: Some(no("R1")),
        limit: 10,
    };
    assert_eq!(ledger.webhook_events_total(&dead).unwrap(), 1);

    // Redelivery is audited; a pending or unknown event refuses the whole command.
    let dead_id = listed.rows[1].event_id.clone();
    ledger
        .redeliver_webhooks(std::slice::from_ref(&dead_id), "ops", "receiver fixed", at)
        .unwrap();
    assert!(matches!(
        ledger.redeliver_webhooks(std::slice::from_ref(&dead_id), "ops", "again", at),
        Err(LedgerError::WebhookEventPending { .. })
    ));
    assert!(matches!(
        ledger.redeliver_webhooks(&["evt_nope".to_owned()], "ops", "x", at),
        Err(LedgerError::WebhookEventNotFound { .. })
    ));
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM operator_actions WHERE action = 'redeliver_webhook'"
        ),
        1
    );
    assert_eq!(ledger.next_webhook_at().unwrap(), Some(at));
    assert_eq!(ledger.operator_actions_watermark().unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// the whole interface through ledger::open: reads, operator actions, maintenance
// ---------------------------------------------------------------------------------------------

/// A fresh database, the ledger opened as callers open it (`ledger::open`, the interface), and
/// an outside session. `None`: skipped.
fn new_interface() -> Option<(DropDb, Ledger, Client)> {
    let (url, db) = pg::fresh_db()?;
    let target = LedgerTarget::Postgres(target(&url));
    let ledger = checus_reconciler::ledger::open(&target, OpenMode::Create).unwrap();
    assert_eq!(ledger.target(), &target);
    let outside = pg::connect(&url).unwrap();
    Some((db, ledger, outside))
}

#[test]
fn pg_status_summarizes_the_ledger_and_sweeps() {
    let Some((_db, mut ledger, _c)) = new_interface() else {
        return;
    };
    let empty = ledger.status(ts("2026-01-01T00:00:00.000Z")).unwrap();
    assert_eq!(
        (empty.pending, empty.succeeded, empty.failed, empty.due_now),
        (0, 0, 0, 0)
    );
    assert!(empty.last_sweep.is_none() && empty.oldest_pending_created_at.is_none());
    let h = ledger
        .health(ts("2026-01-01T00:00:00.000Z"), Duration::from_secs(60))
        .unwrap();
    assert!(
        h.findings.contains(&Finding::WorkerNeverRan),
        "{:?}",
        h.findings
    );

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
    let node = checus_reconciler::domain::NodeName::parse_as("node", "pg-test-node").unwrap();
    let id = ledger
        .begin_sweep(ts("2026-01-04T00:00:00.000Z"), &node)
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
        halt: Some(checus_reconciler::domain::Halt::ClockSkew),
        error: None,
        breaker_open_since: None,
    };
    ledger
        .finish_sweep(id, ts("2026-01-04T00:00:01.000Z"), &end)
        .unwrap();
    assert!(
        ledger
            .finish_sweep(id, ts("2026-01-04T00:00:02.000Z"), &end)
            .is_err(),
        "a finished sweep is immutable"
    );

    let s = ledger.status(ts("2026-01-01T03:10:00.000Z")).unwrap();
    assert_eq!((s.pending, s.succeeded, s.failed), (5, 1, 1));
    assert_eq!(s.due_now, 2, "R2 and R3");
    assert_eq!(s.unscheduled, 1);
    assert_eq!(s.flagged, 1);
    assert_eq!(
        s.oldest_pending_created_at,
        Some(ts("2026-01-01T00:00:00.000Z"))
    );
    assert_eq!(s.unresolved_discrepancies, 1);
    let sweep = s.last_sweep.unwrap();
    assert_eq!((sweep.id, sweep.counts), (id, counts));
    assert_eq!(
        sweep.halted_reason.as_deref(),
        Some("clock skew: requestTime off by more than 2 minutes (check NTP)")
    );

    let h = ledger
        .health(ts("2026-01-04T00:00:30.000Z"), Duration::from_secs(60))
        .unwrap();
    assert!(h.findings.contains(&Finding::FlaggedRefunds { count: 1 }));
    assert!(
        h.findings
            .contains(&Finding::UnresolvedDiscrepancies { count: 1 })
    );
    assert!(
        h.findings
            .iter()
            .any(|f| matches!(f, Finding::Halted { .. })),
        "{:?}",
        h.findings
    );
    let g = ledger.gauges(ts("2026-01-01T03:10:00.000Z")).unwrap();
    assert_eq!(g.due, 2);
    assert_eq!(g.flagged, 1);
    assert!(g.refunds.contains(&(RefundStatus::Pending, 5)));
    assert_eq!(g.unresolved_discrepancies, 1);
    assert_eq!(
        ledger.latest_finished_sweep().unwrap().map(|s| s.id),
        Some(id)
    );
    assert_eq!(ledger.first_finished_sweep_after(id).unwrap(), None);
}

#[test]
fn pg_list_show_explain_and_the_operator_views() {
    let Some((_db, mut ledger, _c)) = new_interface() else {
        return;
    };
    let mut rows = Vec::new();
    for i in 0..5 {
        let mut r = refund(&format!("R{i}"), "12.50");
        r.created_at = ts(&format!("2026-01-01T0{i}:00:00.000Z"));
        rows.push(r);
    }
    rows[4].status = RefundStatus::Failed;
    ledger.import(&rows, &mut |_| {}).unwrap();
    ledger
        .record_attempt(
            &success_answer("R1", "2026-01-02T00:00:00.000Z"),
            &reschedule(
                "2026-01-03T00:00:00.000Z",
                1,
                Some(ReviewReason::PendingTooLong),
            ),
        )
        .unwrap();
    ledger
        .record_notification(&note("R2", FinalStatus::Failed, "12.5", "USD"))
        .unwrap();

    let pending = ListFilter {
        status: Some(RefundStatus::Pending),
        flagged: None,
        since: None,
        limit: 2,
    };
    let listed = ledger.list(&pending).unwrap();
    let names: Vec<_> = listed
        .rows
        .iter()
        .map(|r| r.out_refund_no.as_str())
        .collect();
    assert_eq!(names, vec!["R0", "R1"], "oldest first, limited");
    assert_eq!(ledger.list_total(&pending).unwrap(), 3);
    let flagged = ListFilter {
        flagged: Some(true),
        status: None,
        since: Some(ts("2026-01-01T01:00:00.000Z")),
        limit: 10,
    };
    assert_eq!(ledger.list_total(&flagged).unwrap(), 1);

    let d = ledger.show(&no("R1")).unwrap().unwrap();
    assert_eq!(d.refund.amount.to_string(), "12.50");
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(
        d.attempts[0]
            .decision
            .as_deref()
            .map(|t| t.starts_with("reschedule")),
        Some(true)
    );
    let d = ledger.show(&no("R2")).unwrap().unwrap();
    assert_eq!(d.notifications.len(), 1);
    assert_eq!(d.notifications[0].amount.to_string(), "12.5");
    assert_eq!(
        d.notifications[0].effect,
        Some(NotificationEffect::Finalized)
    );
    assert!(ledger.show(&no("NOPE")).unwrap().is_none());

    let t = ledger.timeline(&no("R1")).unwrap().unwrap();
    assert!(
        t.events.windows(2).all(|w| w[0].at <= w[1].at),
        "time order"
    );
    assert!(t.events.len() >= 4, "{:?}", t.events);

    let stuck = ledger.stuck(ts("2026-01-01T01:00:00.000Z"), 10).unwrap();
    assert_eq!(stuck.rows.len(), 2);
    assert_eq!(
        ledger.stuck_total(ts("2026-01-01T01:00:00.000Z")).unwrap(),
        2
    );
    let failed = ledger
        .failed_since(ts("2000-01-01T00:00:00.000Z"), 10)
        .unwrap();
    assert_eq!(failed.rows.len(), 2, "R4 at insert, R2 by notification");
    assert_eq!(
        ledger.failed_total(ts("2000-01-01T00:00:00.000Z")).unwrap(),
        2
    );
    assert_eq!(
        ledger
            .export_since(ts("2026-01-01T02:00:00.000Z"))
            .unwrap()
            .rows
            .len(),
        3
    );
}

#[test]
fn pg_operator_actions_are_audited_and_a_final_status_is_refused() {
    let Some((_db, ledger, mut c)) = new_interface() else {
        return;
    };
    let now = ts("2026-01-02T00:00:00.000Z");
    for n in ["P", "F"] {
        ledger.insert_refund(&refund(n, "5")).unwrap();
    }
    ledger
        .record_notification(&note("F", FinalStatus::Success, "5", "USD"))
        .unwrap();

    ledger.retry_now(&no("P"), "ops", now).unwrap();
    let row = ledger.refund(&no("P")).unwrap().unwrap();
    assert_eq!(row.next_query_at, Some(now));
    assert!(matches!(
        ledger.retry_now(&no("F"), "ops", now),
        Err(LedgerError::AlreadyFinal { .. })
    ));
    assert!(matches!(
        ledger.retry_now(&no("NOPE"), "ops", now),
        Err(LedgerError::NotFound { .. })
    ));
    assert!(matches!(
        ledger.clear_flag(&no("P"), "ops", "looked", now),
        Err(LedgerError::NotFlagged { .. })
    ));

    let row = ledger
        .resolve(
            &no("P"),
            FinalStatus::Failed,
            "ops",
            "confirmed by phone",
            now,
        )
        .unwrap();
    assert_eq!(row.status, RefundStatus::Failed);
    assert_eq!(row.final_source, Some(FinalSource::Operator));
    match ledger.resolve(&no("F"), FinalStatus::Failed, "ops", "oops", now) {
        Err(LedgerError::AlreadyFinal { status, .. }) => {
            assert_eq!(status, RefundStatus::Success)
        }
        other => panic!("expected AlreadyFinal, got {other:?}"),
    }

    ledger
        .record_notification(&note("F", FinalStatus::Failed, "5", "USD"))
        .unwrap();
    let open = ledger.discrepancies(false).unwrap();
    assert_eq!(open.len(), 1);
    ledger
        .resolve_discrepancy(open[0].id, "ops", "gateway confirmed success", now)
        .unwrap();
    assert!(matches!(
        ledger.resolve_discrepancy(open[0].id, "ops", "again", now),
        Err(LedgerError::DiscrepancyNotOpen { .. })
    ));
    assert!(ledger.discrepancies(false).unwrap().is_empty());
    assert_eq!(ledger.discrepancies(true).unwrap().len(), 1);
    assert!(ledger.discrepancy(open[0].id).unwrap().is_some());

    let req = ledger.request_resume("ops", "NTP fixed", now).unwrap();
    assert_eq!(
        ledger.resume_requested_after(0).unwrap().map(|a| a.id),
        Some(req.action_id)
    );
    let all = AuditFilter {
        refund: None,
        since: None,
        limit: 2,
    };
    let audit = ledger.audit(&all).unwrap();
    assert_eq!(audit.rows.len(), 2, "the latest two");
    assert_eq!(
        audit.rows[1].id, req.action_id,
        "in the order they happened"
    );
    assert_eq!(ledger.audit_total(&all).unwrap(), 4);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM operator_actions WHERE action = 'resolve'"
        ),
        1,
        "the refused resolve wrote no audit row"
    );
}

#[test]
fn pg_prune_archives_then_deletes_and_a_pruned_refund_is_found() {
    let Some((_db, ledger, mut c)) = new_interface() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for n in ["OLD", "DISPUTED", "PENDING"] {
        ledger.insert_refund(&refund(n, "10.10")).unwrap();
    }
    ledger
        .record_notification(&note("OLD", FinalStatus::Success, "10.10", "USD"))
        .unwrap();
    ledger
        .record_notification(&note("DISPUTED", FinalStatus::Success, "10.10", "USD"))
        .unwrap();
    ledger
        .record_notification(&note("DISPUTED", FinalStatus::Failed, "10.10", "USD"))
        .unwrap();
    let cutoff = ts("2099-01-01T00:00:00.000Z");
    let now = ts("2026-06-01T00:00:00.000Z");
    let plan = ledger.prune_plan(cutoff).unwrap();
    assert_eq!(
        (plan.refunds, plan.notifications, plan.kept_unresolved),
        (1, 1, 1)
    );

    let archive = dir.path().join("prune.jsonl");
    let report = ledger
        .prune(cutoff, "ops", "retention", Some(&archive), now)
        .unwrap();
    assert_eq!(report.counts.refunds, 1);
    let text = std::fs::read_to_string(&archive).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refund_line = lines
        .iter()
        .find(|l| l["table"] == "refunds")
        .expect("the refund row is archived");
    assert_eq!(
        refund_line["row"]["amount"], "10.10",
        "exact text, not a number"
    );
    assert!(lines.iter().any(|l| l["table"] == "notifications"));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report.archive_sha256.as_deref(), Some(hex.as_str()));

    assert!(ledger.refund(&no("OLD")).unwrap().is_none());
    assert!(
        ledger.refund(&no("DISPUTED")).unwrap().is_some(),
        "kept: unresolved"
    );
    assert!(ledger.refund(&no("PENDING")).unwrap().is_some());
    let gone = ledger.pruned(&no("OLD")).unwrap().unwrap();
    assert_eq!(gone.prune_id, report.prune_id.unwrap());
    assert_eq!(gone.archive.as_deref(), Some(archive.as_path()));
    assert!(ledger.pruned(&no("NEVER")).unwrap().is_none());
    assert!(matches!(
        ledger.prune(cutoff, "ops", "again", Some(&archive), now),
        Err(LedgerError::TargetExists { .. })
    ));
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM operator_actions WHERE action = 'prune'"
        ),
        1
    );
    assert!(matches!(
        ledger.backup(&dir.path().join("copy")),
        Err(LedgerError::NotOnThisEngine { .. })
    ));
    ledger.recheck_schema().unwrap();
}

/// Four nodes claim from one ledger at once, each on its own connection and thread: every due
/// refund is claimed exactly once (SKIP LOCKED and the leases), none twice, none missed.
#[test]
fn pg_concurrent_claims_never_hand_one_refund_to_two_nodes() {
    let Some((db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    let url = pg::with_database(&pg::server_url(), db.name());
    let rows: Vec<NewRefund> = (0..2_000)
        .map(|i| refund(&format!("K{i:04}"), "1"))
        .collect();
    ledger.import(&rows, &mut |_| {}).unwrap();
    ledger.schedule_new(Duration::ZERO).unwrap();
    let now = ts("2026-01-02T00:00:00.000Z");
    let lease = ts("2026-01-02T00:05:00.000Z");
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || {
                let node = PgLedger::open(&target(&url), OpenMode::Existing).unwrap();
                let name = format!("node-{n}");
                // A node's claim takes its own leases again (as after a restart), so each
                // claim here names a node of its own: every lease taken is then another
                // node's to all later claims, and the loop ends when nothing is left.
                let mut mine = Vec::new();
                for round in 0.. {
                    let claimer = format!("{name}-{round}");
                    let got = node.claim_due(now, 37, &claimer, lease).unwrap();
                    assert!(got.unreadable.is_empty());
                    if got.rows.is_empty() {
                        break;
                    }
                    mine.extend(
                        got.rows
                            .into_iter()
                            .map(|s| s.out_refund_no.as_str().to_owned()),
                    );
                }
                (name, mine)
            })
        })
        .collect();
    let mut all = std::collections::BTreeMap::new();
    for t in threads {
        let (name, mine) = t.join().unwrap();
        for no in mine {
            if let Some(other) = all.insert(no.clone(), name.clone()) {
                panic!("{no} claimed by {other} and {name}");
            }
        }
    }
    assert_eq!(all.len(), 2_000, "every due refund claimed once");
    // Each refund's lease is the one its claim set.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM refunds WHERE claimed_by LIKE 'node-_-%'"
        ),
        2_000
    );
}

/// A final refund's confirming query is claimed once too (its `confirm_at` pushed to the lease
/// end), and settled by the attempt that confirms it; claims a node will not use are released.
#[test]
fn pg_confirmations_are_claimed_once_and_unused_claims_released() {
    let Some((db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    for n in ["C1", "C2", "P1"] {
        ledger.insert_refund(&refund(n, "3")).unwrap();
    }
    for n in ["C1", "C2"] {
        ledger
            .record_notification(&note(n, FinalStatus::Success, "3", "USD"))
            .unwrap();
    }
    let url = pg::with_database(&pg::server_url(), db.name());
    let mut b = PgLedger::open(&target(&url), OpenMode::Existing).unwrap();
    b.set_node("node-b").unwrap();
    let now = ts("2099-01-01T00:00:00.000Z");
    let lease = ts("2099-01-01T00:05:00.000Z");
    let after = Duration::from_secs(60);
    let a_got = ledger.claim_confirmations(now, after, 1, lease).unwrap();
    let b_got = b.claim_confirmations(now, after, 10, lease).unwrap();
    assert_eq!(a_got.rows.len(), 1);
    assert_eq!(b_got.rows.len(), 1, "the other one only");
    assert_ne!(
        a_got.rows[0].1.out_refund_no, b_got.rows[0].1.out_refund_no,
        "never the same refund"
    );
    assert!(
        b.claim_confirmations(now, after, 10, lease)
            .unwrap()
            .rows
            .is_empty()
    );
    // The confirming answer settles it; the lease end makes an unconfirmed one due again.
    let first = a_got.rows[0].1.out_refund_no.as_str().to_owned();
    let keep = Decision {
        class: OutcomeClass::Final,
        change: Change::Keep {
            confirm_again_at: None,
        },
        discrepancies: Vec::new(),
        halt: None,
        slow_down: false,
    };
    ledger
        .record_attempt(&success_answer(&first, "2099-01-01T00:00:01.000Z"), &keep)
        .unwrap();
    let again = ledger
        .claim_confirmations(lease, after, 10, ts("2099-01-01T00:10:00.000Z"))
        .unwrap();
    let names: Vec<_> = again
        .rows
        .iter()
        .map(|r| r.1.out_refund_no.as_str())
        .collect();
    assert_eq!(names, vec![b_got.rows[0].1.out_refund_no.as_str()]);

    // Claimed and not used: released, due again for any node; another node's lease stays.
    ledger.schedule_new(Duration::ZERO).unwrap();
    let got = b.claim_due(now, 10, "node-b", lease).unwrap();
    assert_eq!(got.rows.len(), 1);
    assert_eq!(
        ledger.release_claims("node-a", &[no("P1")]).unwrap(),
        0,
        "node-b's lease"
    );
    assert_eq!(b.release_claims("node-b", &[no("P1")]).unwrap(), 1);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM refunds WHERE claimed_by IS NOT NULL"
        ),
        0
    );
    assert_eq!(
        ledger
            .claim_due(now, 10, "node-a", lease)
            .unwrap()
            .rows
            .len(),
        1
    );
}

/// A deadlock (40P01) PostgreSQL breaks by aborting the engine's group commit is run again
/// from the start: every attempt is recorded once, none lost, none twice.
#[test]
fn pg_a_deadlocked_group_commit_is_run_again_and_writes_each_attempt_once() {
    let Some((db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    for n in ["D1", "D2"] {
        ledger.insert_refund(&refund(n, "1")).unwrap();
    }
    let url = pg::with_database(&pg::server_url(), db.name());
    // The outside session waits long before it looks for deadlocks, so the engine's session
    // (the server's default, 1 s) is the one PostgreSQL aborts.
    let mut outside = pg::connect(&url).unwrap();
    let mut tx = outside.transaction().unwrap();
    tx.batch_execute(
        "SET LOCAL deadlock_timeout = '60s';
         SELECT 1 FROM refunds WHERE out_refund_no = 'D2' FOR UPDATE;",
    )
    .unwrap();
    let batch = vec![
        (
            None,
            success_answer("D1", "2026-01-01T00:15:00.000Z"),
            finalize(FinalStatus::Success),
        ),
        (
            None,
            success_answer("D2", "2026-01-01T00:15:00.000Z"),
            finalize(FinalStatus::Failed),
        ),
    ];
    let engine = std::thread::spawn(move || {
        let results = ledger.record_attempts(&batch).unwrap();
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>()
    });
    // Wait until the engine holds D1 and waits for D2 (a readiness wait, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(
        &mut c,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND application_name = 'checus-reconciler' AND wait_event_type = 'Lock'",
    ) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never waited"
        );
        std::thread::yield_now();
    }
    // Now take D1: a cycle. The engine is aborted (40P01), which frees D1 for us.
    tx.batch_execute("SELECT 1 FROM refunds WHERE out_refund_no = 'D1' FOR UPDATE")
        .unwrap();
    tx.commit().unwrap();
    let applied = engine.join().unwrap();
    assert_eq!(
        applied,
        vec![
            Applied::Finalized(FinalStatus::Success),
            Applied::Finalized(FinalStatus::Failed)
        ]
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM attempts"),
        2,
        "each once"
    );
}

/// Measured, not asserted in CI (`--run-ignored only`): what claiming 1 000 due refunds costs
/// through the engine's claim at two ledger sizes, 1 % pending (all due), the rest final.
/// Prints the median of 5 claims (each released again) per size.
#[test]
#[ignore = "a measurement: cargo nextest run --run-ignored only -E 'test(/pg_claim_cost/)' --no-capture"]
fn pg_claim_cost_does_not_grow_with_the_ledger() {
    for size in [100_000_i64, 1_000_000] {
        let Some((_db, ledger, mut c)) = new_ledger() else {
            return;
        };
        let pending = size / 100;
        c.batch_execute(&format!(
            "INSERT INTO refunds (out_refund_no, amount, currency, status, created_at,
                                  final_source, finalized_at, next_query_at)
             SELECT 'S' || g, 1, 'USD',
                    CASE WHEN g <= {pending} THEN 'REFUND_PENDING' ELSE 'REFUND_SUCCESS' END,
                    '2026-01-01Z'::timestamptz + g * interval '1 millisecond',
                    CASE WHEN g <= {pending} THEN NULL ELSE 'query' END,
                    CASE WHEN g <= {pending} THEN NULL
                         ELSE '2026-01-02Z'::timestamptz END,
                    CASE WHEN g <= {pending}
                         THEN '2026-01-01Z'::timestamptz + g * interval '1 millisecond' END
               FROM generate_series(1, {size}) AS g;
             ANALYZE refunds;"
        ))
        .unwrap();
        let now = ts("2026-02-01T00:00:00.000Z");
        let lease = ts("2026-02-01T00:05:00.000Z");
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let got = ledger.claim_due(now, 1_000, "node-a", lease).unwrap();
            times.push(start.elapsed());
            assert_eq!(got.rows.len(), 1_000);
            let numbers: Vec<_> = got.rows.iter().map(|s| s.out_refund_no.clone()).collect();
            assert_eq!(ledger.release_claims("node-a", &numbers).unwrap(), 1_000);
        }
        times.sort();
        eprintln!(
            "claim 1000 of {pending} due, {size} refunds: median {:?} (min {:?}, max {:?})",
            times[2], times[0], times[4]
        );
    }
}

#[test]
fn pg_next_due_walks_past_a_long_run_of_leased_rows_to_the_first_free_one() {
    let Some((_db, mut ledger, mut c)) = new_ledger() else {
        return;
    };
    // 600 refunds another node has in flight, due first, then one nobody holds.
    let rows: Vec<NewRefund> = (0..601)
        .map(|i| {
            let mut r = refund(&format!("L{i:04}"), "1.00");
            r.created_at = ts("2026-01-01T00:00:00.000Z") + chrono::TimeDelta::seconds(i);
            r
        })
        .collect();
    ledger.import(&rows, &mut |_| {}).unwrap();
    ledger.schedule_new(Duration::ZERO).unwrap();
    c.batch_execute(
        "UPDATE refunds SET claimed_by = 'node-b', claimed_until = '2026-01-01T02:00:00Z'
          WHERE out_refund_no < 'L0600'",
    )
    .unwrap();
    // The free one's due time, not the lease's end (a node must not sleep while it is due).
    assert_eq!(
        ledger.next_due_at(&Default::default()).unwrap(),
        Some(ts("2026-01-01T00:10:00.000Z"))
    );
    // All leased: the earliest lease end (every lease ends at 02:00).
    c.batch_execute(
        "UPDATE refunds SET claimed_by = 'node-b', claimed_until = '2026-01-01T02:00:00Z'
          WHERE out_refund_no = 'L0600'",
    )
    .unwrap();
    assert_eq!(
        ledger.next_due_at(&Default::default()).unwrap(),
        Some(ts("2026-01-01T02:00:00.000Z"))
    );
}
