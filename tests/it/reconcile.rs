//! The library end to end: ledger → worker → signed query → sandbox on 127.0.0.1 → decision →
//! ledger, with real RSA, a real SQLite file and a manual clock shared with the sandbox.

use std::time::Duration;

use crate::common::Harness;
use crate::common::proc::count;
use checus_reconciler::domain::{FinalSource, Halt, OutcomeClass, RefundStatus, ReviewReason};
use checus_reconciler::ledger::NotificationRecord;
use checus_reconciler::sandbox::{Fault, Step};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn nothing_is_queried_inside_the_notification_grace_window() {
    let h = Harness::new().await;
    h.refund("R-GRACE", vec![Step::Success]);
    let r = h.sweep().await;
    assert_eq!(r.claimed, 0);
    h.advance(h.policy.schedule.grace - Duration::from_secs(1));
    assert_eq!(h.sweep().await.claimed, 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sweep().await.finalized, 1);
    assert_eq!(h.sandbox.queries_for("R-GRACE"), 1);
}

#[tokio::test]
async fn pending_then_success_is_recorded_once_with_every_attempt() {
    let h = Harness::new().await;
    h.refund("R-OK", vec![Step::Pending, Step::Pending, Step::Success]);
    h.step("R-OK").await;
    let d = h.detail("R-OK");
    assert_eq!(d.refund.status, RefundStatus::Pending);
    assert_eq!(d.refund.attempts, 1);
    // The ladder: 1 min after the first counted attempt, then 5 min.
    assert_eq!(
        d.refund.next_query_at.unwrap(),
        h.clock_now() + Duration::from_secs(60)
    );
    h.step("R-OK").await;
    assert_eq!(
        h.detail("R-OK").refund.next_query_at.unwrap(),
        h.clock_now() + Duration::from_secs(300)
    );
    let r = h.step("R-OK").await;
    assert_eq!(r.finalized, 1);
    let d = h.detail("R-OK");
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.refund.final_source, Some(FinalSource::Query));
    assert_eq!(d.refund.refund_trade_no.as_deref(), Some("T-R-OK"));
    assert!(d.refund.refund_finish_time.is_some());
    assert_eq!(d.attempts.len(), 3);
    let outcomes: Vec<_> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["pending", "pending", "final"]);
    assert!(d.attempts.iter().all(|a| a.http_status == Some(200)));
    assert!(d.discrepancies.is_empty());
    // Final: never claimed again.
    h.advance(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(h.sweep().await.claimed, 0);
    assert_eq!(h.sandbox.queries_for("R-OK"), 3);
}

#[tokio::test]
async fn pending_then_failed_is_final_failed() {
    let h = Harness::new().await;
    h.refund("R-FAIL", vec![Step::Pending, Step::Failed]);
    h.step("R-FAIL").await;
    h.step("R-FAIL").await;
    let d = h.detail("R-FAIL");
    assert_eq!(d.refund.status, RefundStatus::Failed);
    assert_eq!(d.refund.final_source, Some(FinalSource::Query));
}

#[tokio::test]
async fn unknown_at_gateway_for_24h_is_flagged_and_still_polled() {
    let h = Harness::new().await;
    h.refund("R-UNK", vec![Step::Unknown]);
    let mut steps = 0;
    while !h.detail("R-UNK").refund.review_flag {
        h.step("R-UNK").await;
        steps += 1;
        assert!(steps < 50, "never flagged");
    }
    let d = h.detail("R-UNK");
    assert_eq!(d.refund.status, RefundStatus::Pending);
    assert_eq!(d.refund.review_reason, Some(ReviewReason::UnknownTooLong));
    let first_unknown = d.attempts.first().unwrap().attempted_at;
    assert!(d.refund.flagged_at.unwrap() - first_unknown >= chrono::TimeDelta::hours(24));
    // Nothing is dropped: still scheduled, at the slow cadence.
    let next = d.refund.next_query_at.expect("still scheduled");
    assert_eq!(next, h.clock_now() + h.policy.schedule.steady);
    let before = h.sandbox.queries_for("R-UNK");
    h.step("R-UNK").await;
    assert_eq!(h.sandbox.queries_for("R-UNK"), before + 1);
}

#[tokio::test]
async fn pending_for_72h_is_flagged_and_still_polled() {
    let h = Harness::new().await;
    h.refund("R-SLOW", vec![Step::Pending]);
    let mut steps = 0;
    while !h.detail("R-SLOW").refund.review_flag {
        h.step("R-SLOW").await;
        steps += 1;
        assert!(steps < 50, "never flagged");
    }
    let d = h.detail("R-SLOW");
    assert_eq!(d.refund.review_reason, Some(ReviewReason::PendingTooLong));
    assert!(d.refund.flagged_at.unwrap() - d.refund.created_at >= chrono::TimeDelta::hours(72));
    assert!(d.refund.next_query_at.is_some());
}

#[tokio::test]
async fn transient_faults_are_retried_without_spending_attempts() {
    let h = Harness::new().await;
    h.refund(
        "R-FAULTS",
        vec![
            Step::Fault(Fault::Http(500)),
            Step::Fault(Fault::Http(503)),
            Step::Fault(Fault::Reset),
            Step::Fault(Fault::NotJson),
            Step::Code("SYSTEM_ERROR".into()),
            Step::Fault(Fault::TooManyRequests),
            Step::Success,
        ],
    );
    for _ in 0..7 {
        h.step("R-FAULTS").await;
    }
    let d = h.detail("R-FAULTS");
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.attempts.len(), 7);
    let outcomes: Vec<_> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "retryable",
            "retryable",
            "retryable",
            "retryable",
            "retryable",
            "rate_limited",
            "final"
        ]
    );
    assert_eq!(d.attempts[0].http_status, Some(500));
    assert_eq!(d.attempts[4].gateway_code.as_deref(), Some("SYSTEM_ERROR"));
    // Retries came after the short retry delay, not the ladder.
    let gap = d.attempts[1].attempted_at - d.attempts[0].attempted_at;
    assert_eq!(gap, chrono::TimeDelta::seconds(60));
}

#[tokio::test]
async fn unverified_answers_never_finalize() {
    for fault in [Fault::NoSignature, Fault::BadSignature, Fault::WrongKey] {
        let h = Harness::new().await;
        let no = format!("R-{fault:?}").replace(['(', ')'], "");
        h.refund(&no, vec![Step::Fault(fault.clone())]);
        for _ in 0..5 {
            h.step(&no).await;
        }
        let d = h.detail(&no);
        assert_eq!(d.refund.status, RefundStatus::Pending, "{fault:?}");
        assert_eq!(
            d.refund.attempts, 0,
            "{fault:?}: unverified answers never count"
        );
        assert_eq!(d.attempts.len(), 5);
        assert!(
            d.attempts
                .iter()
                .all(|a| a.outcome == OutcomeClass::Retryable),
            "{fault:?}"
        );
        assert!(
            d.attempts
                .iter()
                .all(|a| a.data_status.is_none() || a.outcome == OutcomeClass::Retryable)
        );
    }
}

#[tokio::test]
async fn answers_that_contradict_the_ledger_are_recorded_not_applied() {
    for (fault, kind) in [
        (Fault::WrongAmount, "amount_mismatch"),
        (Fault::WrongCurrency, "currency_mismatch"),
        (Fault::WrongRefundNo, "refund_no_mismatch"),
    ] {
        let h = Harness::new().await;
        h.refund("R-MIS", vec![Step::Fault(fault.clone())]);
        h.step("R-MIS").await;
        let d = h.detail("R-MIS");
        assert_eq!(d.refund.status, RefundStatus::Pending, "{fault:?}");
        assert!(d.refund.review_flag);
        assert_eq!(d.refund.review_reason, Some(ReviewReason::AnswerMismatch));
        assert_eq!(d.discrepancies.len(), 1, "{fault:?}");
        assert_eq!(d.discrepancies[0].kind.as_str(), kind);
        assert_eq!(d.attempts[0].outcome, OutcomeClass::Mismatch);
    }
}

#[tokio::test]
async fn a_configuration_error_halts_all_querying_until_a_probe_succeeds() {
    // The gateway does not know this app id: MERCHANT_APP_INVALID on every query.
    let h = Harness::with_settings(|s| s.app_id = "WRONG-APP".into()).await;
    for i in 0..20 {
        h.refund(&format!("R-CFG-{i}"), vec![Step::Success]);
    }
    h.advance(h.policy.schedule.grace);
    let r = h.sweep().await;
    assert!(r.halted.is_some());
    let sent = h.sandbox.stats().requests;
    assert!(
        sent <= 4,
        "at most the in-flight queries (concurrency 4) may go out, not {sent}"
    );
    assert!(matches!(
        h.worker.halted().unwrap().halt,
        Halt::ConfigError { ref code } if code == "MERCHANT_APP_INVALID"
    ));
    // The sweep row carries the halt's stable code, which `status` reads, and its sentence.
    let halted_rows = "sweeps WHERE halt_code = 'config_error' \
                       AND halted_reason = 'configuration rejected by Checus (MERCHANT_APP_INVALID)'";
    assert_eq!(count(&h.ledger_path, halted_rows), 1);
    // Before the re-check interval nothing is sent at all.
    h.advance(Duration::from_secs(60));
    h.sweep().await;
    assert_eq!(h.sandbox.stats().requests, sent);
    // At the re-check, one probe: still failing, still halted.
    h.advance(h.policy.halt_recheck);
    h.sweep().await;
    assert_eq!(h.sandbox.stats().requests, sent + 1);
    assert!(h.worker.halted().is_some());
    // The operator fixes the config and reloads: the halt carries over (no silent resume)
    // until the next probe succeeds; then the backlog drains.
    let fixed = h.new_worker(|_| {});
    fixed.inherit_halt(&h.worker);
    assert!(fixed.halted().is_some());
    h.advance(h.policy.halt_recheck);
    let r = fixed.sweep(&CancellationToken::new()).await.unwrap();
    assert!(r.halted.is_none());
    assert!(fixed.halted().is_none());
    let last_code = "sweeps WHERE id = (SELECT max(id) FROM sweeps) AND halt_code IS NULL";
    assert_eq!(
        count(&h.ledger_path, last_code),
        1,
        "the resumed sweep ended unhalted"
    );
    let l = h.ledger();
    let s = l.status(h.clock_now()).unwrap();
    assert_eq!(s.pending, 0, "{s:?}");
    // No refund spent an attempt on the configuration error.
    for i in 0..20 {
        assert_eq!(h.detail(&format!("R-CFG-{i}")).refund.attempts, 1);
    }
}

#[tokio::test]
async fn clock_skew_is_retried_once_with_a_fresh_request_time_then_halts() {
    let h = Harness::new().await;
    h.refund("R-SKEW", vec![Step::Success]);
    h.set_gateway_skew(Duration::from_secs(180));
    h.step("R-SKEW").await;
    let d = h.detail("R-SKEW");
    assert_eq!(d.attempts.len(), 2, "the immediate retry is recorded too");
    assert!(
        d.attempts
            .iter()
            .all(|a| a.outcome == OutcomeClass::ClockSkew)
    );
    assert!(matches!(h.worker.halted().unwrap().halt, Halt::ClockSkew));
    assert_eq!(
        count(&h.ledger_path, "sweeps WHERE halt_code = 'clock_skew'"),
        1
    );
    assert_eq!(d.refund.attempts, 0);
    // NTP fixed: the probe succeeds.
    h.set_gateway_skew(Duration::ZERO);
    h.advance(h.policy.halt_recheck);
    h.sweep().await;
    assert_eq!(h.detail("R-SKEW").refund.status, RefundStatus::Success);
}

async fn notification_during_query(agree: bool) -> Harness {
    let h = Harness::new().await;
    let script = h.refund(
        "R-RACE",
        vec![Step::Delay(
            Duration::from_millis(400),
            Box::new(Step::Success),
        )],
    );
    h.advance(h.policy.schedule.grace);
    let shutdown = CancellationToken::new();
    let sweep = h.worker.sweep(&shutdown);
    let notify = async {
        // The query is in flight (the sandbox has it) when the merchant app records the
        // notification through its own connection.
        h.wait_for_queries("R-RACE", 1).await;
        h.ledger()
            .record_notification(&NotificationRecord {
                out_refund_no: checus_reconciler::domain::OutRefundNo::parse("R-RACE").unwrap(),
                status: if agree {
                    checus_reconciler::domain::FinalStatus::Success
                } else {
                    checus_reconciler::domain::FinalStatus::Failed
                },
                refund_trade_no: Some(script.refund_trade_no.clone()),
                amount: script.amount,
                currency: script.currency,
                refund_finish_time: Some(h.clock_now()),
                notify_time: h.clock_now(),
            })
            .unwrap();
    };
    let (r, ()) = tokio::join!(sweep, notify);
    r.unwrap();
    h
}

#[tokio::test]
async fn a_notification_landing_mid_query_wins_and_an_agreeing_answer_adds_nothing() {
    let h = notification_during_query(true).await;
    let d = h.detail("R-RACE");
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.refund.final_source, Some(FinalSource::Notification));
    assert!(d.refund.notified_at.is_some());
    assert!(d.discrepancies.is_empty());
    assert_eq!(d.attempts.len(), 1, "the query's attempt is still recorded");
}

#[tokio::test]
async fn a_conflicting_notification_mid_query_is_kept_and_the_conflict_recorded() {
    let h = notification_during_query(false).await;
    let d = h.detail("R-RACE");
    assert_eq!(
        d.refund.status,
        RefundStatus::Failed,
        "first final outcome stands"
    );
    assert_eq!(d.refund.final_source, Some(FinalSource::Notification));
    assert_eq!(d.discrepancies.len(), 1);
    assert_eq!(d.discrepancies[0].kind.as_str(), "conflicting_final");
    assert_eq!(d.discrepancies[0].source.as_str(), "query");
    assert_eq!(
        d.discrepancies[0].expected.as_deref(),
        Some("REFUND_FAILED")
    );
    assert_eq!(
        d.discrepancies[0].observed.as_deref(),
        Some("REFUND_SUCCESS")
    );
}

#[tokio::test]
async fn a_final_outcome_never_changes_even_through_direct_sql() {
    let h = Harness::new().await;
    h.refund("R-FINAL", vec![Step::Success]);
    h.step("R-FINAL").await;
    assert_eq!(h.detail("R-FINAL").refund.status, RefundStatus::Success);
    let conn = rusqlite::Connection::open(&h.ledger_path).unwrap();
    for sql in [
        "UPDATE refunds SET status = 'REFUND_FAILED' WHERE out_refund_no = 'R-FINAL'",
        "UPDATE refunds SET status = 'REFUND_PENDING', final_source = NULL, finalized_at = NULL WHERE out_refund_no = 'R-FINAL'",
        "UPDATE refunds SET final_source = 'operator' WHERE out_refund_no = 'R-FINAL'",
        "DELETE FROM refunds WHERE out_refund_no = 'R-FINAL'",
        "UPDATE attempts SET outcome = 'pending'",
        "DELETE FROM attempts",
    ] {
        let err = conn.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("checus-reconciler"), "{sql}: {err}");
    }
    let d = h.detail("R-FINAL");
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.attempts.len(), 1);
}

fn confirm_at(h: &Harness, no: &str) -> Option<String> {
    rusqlite::Connection::open(&h.ledger_path)
        .unwrap()
        .query_row(
            "SELECT confirm_at FROM refunds WHERE out_refund_no = ?1",
            [no],
            |r| r.get(0),
        )
        .unwrap()
}

fn notify(
    h: &Harness,
    no: &str,
    script: &checus_reconciler::sandbox::RefundScript,
    status: checus_reconciler::domain::FinalStatus,
) {
    h.ledger()
        .record_notification(&NotificationRecord {
            out_refund_no: checus_reconciler::domain::OutRefundNo::parse(no).unwrap(),
            status,
            refund_trade_no: Some(script.refund_trade_no.clone()),
            amount: script.amount,
            currency: script.currency,
            refund_finish_time: Some(h.clock_now()),
            notify_time: h.clock_now(),
        })
        .unwrap();
}

#[tokio::test]
async fn a_notification_that_contradicts_the_gateway_is_caught_by_one_confirming_query() {
    use checus_reconciler::domain::FinalStatus;
    let h = Harness::new().await;
    // The ledger stamps notifications with SQLite's own clock: run on the wall clock.
    h.clock.set(chrono::Utc::now());
    // The gateway says SUCCESS; a (verified) notification saying FAILED arrives first.
    let script = h.refund("R-CONF-BAD", vec![Step::Success]);
    notify(&h, "R-CONF-BAD", &script, FinalStatus::Failed);
    // An agreeing notification for another refund.
    let agree = h.refund("R-CONF-OK", vec![Step::Success]);
    notify(&h, "R-CONF-OK", &agree, FinalStatus::Success);
    assert!(confirm_at(&h, "R-CONF-BAD").is_some());
    // Not before schedule.confirm_after.
    h.advance(h.policy.confirm_after - Duration::from_secs(1));
    h.sweep().await;
    assert_eq!(h.sandbox.stats().requests, 0);
    // (SQLite stamped the notifications a few ms after the clock was set.)
    h.advance(Duration::from_secs(2));
    let r = h.sweep().await;
    assert_eq!(r.claimed, 2);
    assert_eq!(h.sandbox.queries_for("R-CONF-BAD"), 1);
    assert_eq!(h.sandbox.queries_for("R-CONF-OK"), 1);
    // The notification's outcome stands; the contradiction is recorded, once.
    let d = h.detail("R-CONF-BAD");
    assert_eq!(d.refund.status, RefundStatus::Failed);
    assert_eq!(d.refund.final_source, Some(FinalSource::Notification));
    assert_eq!(d.discrepancies.len(), 1, "{:?}", d.discrepancies);
    assert_eq!(d.discrepancies[0].kind.as_str(), "conflicting_final");
    assert_eq!(d.discrepancies[0].source.as_str(), "query");
    assert_eq!(
        d.discrepancies[0].expected.as_deref(),
        Some("REFUND_FAILED")
    );
    assert_eq!(
        d.discrepancies[0].observed.as_deref(),
        Some("REFUND_SUCCESS")
    );
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].outcome, OutcomeClass::Mismatch);
    // The agreeing one is confirmed silently.
    let d = h.detail("R-CONF-OK");
    assert!(d.discrepancies.is_empty());
    assert_eq!(d.refund.status, RefundStatus::Success);
    // Confirmed once: never queried again.
    assert_eq!(confirm_at(&h, "R-CONF-BAD"), None);
    assert_eq!(confirm_at(&h, "R-CONF-OK"), None);
    h.advance(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(h.sweep().await.claimed, 0);
    assert_eq!(h.sandbox.stats().requests, 2);
}

#[tokio::test]
async fn a_confirmation_that_gets_no_answer_is_tried_again_and_a_query_never_starts_one() {
    use checus_reconciler::domain::FinalStatus;
    let h = Harness::new().await;
    // The ledger stamps notifications with SQLite's own clock: run on the wall clock.
    h.clock.set(chrono::Utc::now());
    let script = h.refund(
        "R-CONF-RETRY",
        vec![Step::Fault(Fault::Http(503)), Step::Success],
    );
    notify(&h, "R-CONF-RETRY", &script, FinalStatus::Success);
    // (SQLite stamped the notification a few ms after the clock was set.)
    h.advance(h.policy.confirm_after + Duration::from_secs(1));
    h.sweep().await;
    assert_eq!(h.sandbox.queries_for("R-CONF-RETRY"), 1);
    let again = confirm_at(&h, "R-CONF-RETRY").expect("still to confirm");
    assert_eq!(
        again,
        checus_reconciler::domain::format_ts(h.clock_now() + h.policy.schedule.retry)
    );
    h.advance(h.policy.schedule.retry);
    h.sweep().await;
    assert_eq!(h.sandbox.queries_for("R-CONF-RETRY"), 2);
    assert_eq!(confirm_at(&h, "R-CONF-RETRY"), None);
    assert!(h.detail("R-CONF-RETRY").discrepancies.is_empty());
    // A refund finalized by its own query has nothing to confirm.
    h.refund("R-CONF-QUERY", vec![Step::Success]);
    h.step("R-CONF-QUERY").await;
    assert_eq!(
        h.detail("R-CONF-QUERY").refund.status,
        RefundStatus::Success
    );
    assert_eq!(confirm_at(&h, "R-CONF-QUERY"), None);
}
