//! The speed work keeps the money rules: group commit records exactly what one transaction per
//! attempt would (each attempt alone or not at all, CAS on pending, finals immutable), and the
//! daemon's start-up sweep queries refunds already due without waiting for the cron tick.
//! The writer waits for announced answers only until the batch is complete.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::fixtures::{finalize, no, success_answer};
use crate::common::ts;
use checus_reconciler::config::{Config, Environment};
use checus_reconciler::daemon::{self, Hooks};
use checus_reconciler::domain::{
    Change, Clock, Currency, Decision, FinalStatus, NewRefund, OutcomeClass, QueryReport,
    RefundStatus, SystemClock, Timestamp,
};
use checus_reconciler::ledger::{Applied, Ledger, LedgerError, NotificationRecord, SqliteLedger};
use checus_reconciler::sandbox::{self, RefundScript, SandboxOptions, Step, test_keys};
use checus_reconciler::worker::LedgerHandle;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

fn refund(n: &str, created_at: Timestamp) -> NewRefund {
    NewRefund {
        out_refund_no: no(n),
        refund_trade_no: None,
        out_trade_no: Some(format!("O-{n}")),
        amount: Decimal::from_str("12.50").unwrap(),
        currency: Currency::parse("USD").unwrap(),
        status: RefundStatus::Pending,
        created_at,
    }
}

/// A verified success for refund `n`, answered at the one time these tests use.
fn answered(n: &str) -> QueryReport {
    success_answer(n, "2026-01-01T00:15:00.000Z")
}

fn reschedule() -> Decision {
    Decision {
        class: OutcomeClass::Pending,
        change: Change::Reschedule {
            next_query_at: ts("2026-01-01T00:16:00.000Z"),
            attempts: 1,
            unknown_since: None,
            refund_trade_no: Some("T-Q".into()),
            flag: None,
        },
        discrepancies: Vec::new(),
        halt: None,
        slow_down: false,
    }
}

/// A ledger with R1, R2 pending and R3 already failed by a notification.
fn seeded() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(&dir.path().join("ledger.sqlite")).unwrap();
    let created = ts("2026-01-01T00:00:00.000Z");
    for n in ["R1", "R2", "R3"] {
        ledger.insert_refund(&refund(n, created)).unwrap();
    }
    ledger
        .record_notification(&NotificationRecord {
            out_refund_no: no("R3"),
            status: FinalStatus::Failed,
            refund_trade_no: Some("T-R3".into()),
            amount: Decimal::from_str("12.50").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            refund_finish_time: None,
            notify_time: ts("2026-01-01T00:05:00.000Z"),
        })
        .unwrap();
    (dir, ledger.into())
}

/// Attempts of sweep 7, and one outside any sweep (`query`'s).
fn batch() -> Vec<(Option<i64>, QueryReport, Decision)> {
    vec![
        (Some(7), answered("R1"), finalize(FinalStatus::Success)),
        (Some(7), answered("GHOST"), finalize(FinalStatus::Success)),
        (None, answered("R2"), reschedule()),
        (Some(7), answered("R3"), finalize(FinalStatus::Success)),
    ]
}

#[test]
fn a_group_commit_records_exactly_what_one_transaction_per_attempt_would() {
    let (_a, mut grouped) = seeded();
    let (_b, mut single) = seeded();
    let results = grouped.record_attempts(&batch()).unwrap();
    let one_by_one: Vec<_> = batch()
        .iter()
        .map(|(sweep, a, d)| single.record_attempt_in(*sweep, a, d))
        .collect();

    assert_eq!(results.len(), 4);
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Applied::Finalized(FinalStatus::Success)
    );
    // The unknown refund fails alone: its savepoint is rolled back, the others commit.
    assert!(matches!(results[1], Err(LedgerError::NotFound { .. })));
    assert!(matches!(
        results[2].as_ref().unwrap(),
        Applied::Rescheduled { .. }
    ));
    // A final status is never overwritten: the disagreement is recorded instead.
    assert_eq!(
        results[3].as_ref().unwrap(),
        &Applied::Conflict {
            recorded: FinalStatus::Failed,
            observed: FinalStatus::Success
        }
    );
    for (g, s) in results.iter().zip(&one_by_one) {
        assert_eq!(g.as_ref().ok(), s.as_ref().ok());
        assert_eq!(g.is_err(), s.is_err());
    }
    for n in ["R1", "R2", "R3"] {
        let mut g = grouped.show(&no(n)).unwrap().unwrap();
        let mut s = single.show(&no(n)).unwrap().unwrap();
        // The notification trigger stamps its own wall-clock time in each ledger.
        for d in [&mut g, &mut s] {
            d.refund.notified_at = None;
            d.refund.finalized_at = d.refund.finalized_at.filter(|_| n != "R3");
        }
        assert_eq!(g.refund, s.refund, "{n}");
        assert_eq!(g.attempts.len(), 1, "{n}: one attempt row");
        let sweep = if n == "R2" { None } else { Some(7) };
        assert_eq!(g.attempts[0].sweep_id, sweep, "{n}: the attempt's sweep");
        assert_eq!(s.attempts[0].sweep_id, sweep, "{n}: the attempt's sweep");
        assert_eq!(
            g.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            s.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>()
        );
        assert_eq!(g.discrepancies.len(), s.discrepancies.len(), "{n}");
    }
    assert_eq!(
        grouped.show(&no("R3")).unwrap().unwrap().refund.status,
        RefundStatus::Failed
    );
    assert!(grouped.show(&no("GHOST")).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_through_the_handle_are_each_committed_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).unwrap();
    let names: Vec<String> = (0..64).map(|i| format!("C{i:03}")).collect();
    for n in &names {
        ledger
            .insert_refund(&refund(n, ts("2026-01-01T00:00:00.000Z")))
            .unwrap();
    }
    let handle = LedgerHandle::new(ledger.into());
    let record_all = |status: FinalStatus| {
        let mut set = tokio::task::JoinSet::new();
        for n in &names {
            let (h, a) = (handle.clone(), answered(n));
            set.spawn(async move { h.record_attempt(a, finalize(status)).await });
        }
        set
    };

    let mut first = record_all(FinalStatus::Success);
    while let Some(r) = first.join_next().await {
        assert_eq!(
            r.unwrap().unwrap(),
            Applied::Finalized(FinalStatus::Success)
        );
    }
    // A second wave that disagrees changes no final status; every attempt is still logged.
    let mut second = record_all(FinalStatus::Failed);
    while let Some(r) = second.join_next().await {
        assert!(matches!(r.unwrap().unwrap(), Applied::Conflict { .. }));
    }
    let check = SqliteLedger::open_existing(&path).unwrap();
    for n in &names {
        let d = check.show(&no(n)).unwrap().unwrap();
        assert_eq!(d.refund.status, RefundStatus::Success, "{n}");
        assert_eq!(d.attempts.len(), 2, "{n}: exactly one row per attempt");
        assert_eq!(d.discrepancies.len(), 1, "{n}");
    }
}

/// A handle over a ledger holding pending refunds `names`, whose writer would wait an hour
/// for announced answers: only a complete batch (or its absence) can end the wait in time.
fn patient_handle(names: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, LedgerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).unwrap();
    for n in names {
        ledger
            .insert_refund(&refund(n, ts("2026-01-01T00:00:00.000Z")))
            .unwrap();
    }
    let handle = LedgerHandle::new(ledger.into()).with_gather_window(Duration::from_secs(3600));
    (dir, path, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_answers_are_committed_together_in_one_transaction() {
    let (_dir, path, handle) = patient_handle(&["G1", "G2", "G3"]);
    let guards: Vec<_> = (0..3).map(|_| handle.attempt_coming()).collect();
    let before = handle.completed_calls();
    let mut set = tokio::task::JoinSet::new();
    for n in ["G1", "G2", "G3"] {
        let (h, a) = (handle.clone(), answered(n));
        set.spawn(async move { h.record_attempt(a, finalize(FinalStatus::Success)).await });
    }
    // The third answer completes the batch: all three land, in one commit, long before the
    // hour-long window would have ended the wait.
    while let Some(r) = set.join_next().await {
        assert_eq!(
            r.unwrap().unwrap(),
            Applied::Finalized(FinalStatus::Success)
        );
    }
    assert_eq!(
        handle.completed_calls() - before,
        1,
        "one transaction for the batch"
    );
    drop(guards);
    let check = SqliteLedger::open_existing(&path).unwrap();
    for n in ["G1", "G2", "G3"] {
        assert_eq!(
            check.show(&no(n)).unwrap().unwrap().refund.status,
            RefundStatus::Success,
            "{n}"
        );
    }
}

/// Under load more queries are always announced than have answered, so "every announced
/// answer is in" never comes: the batch target (the worker's concurrency) ends the wait, and
/// the answers past it wait for the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_reaches_its_target_is_committed_while_more_answers_are_announced() {
    let names = ["B1", "B2", "B3", "B4", "B5"];
    let (_dir, path, handle) = patient_handle(&names);
    handle.set_batch_target(2);
    // Six queries on the wire; only five will answer within this test, one never does.
    let guards: Vec<_> = (0..6).map(|_| handle.attempt_coming()).collect();
    let before = handle.completed_calls();
    let record = |n: &'static str| {
        let h = handle.clone();
        tokio::spawn(async move {
            h.record_attempt(answered(n), finalize(FinalStatus::Success))
                .await
        })
    };
    // Without the target each of these would wait an hour for the sixth answer.
    for pair in [["B1", "B2"], ["B3", "B4"]] {
        let (a, b) = (record(pair[0]), record(pair[1]));
        let within = |t| tokio::time::timeout(Duration::from_secs(30), t);
        let (a, b) = (within(a).await, within(b).await);
        for r in [a, b] {
            let r = r.expect("a batch at its target waited for the sixth answer");
            assert_eq!(
                r.unwrap().unwrap(),
                Applied::Finalized(FinalStatus::Success)
            );
        }
    }
    assert!(
        (2..=4).contains(&(handle.completed_calls() - before)),
        "four answers in batches of at most two"
    );
    // A fifth answer alone is below the target, with a sixth still announced: it waits until
    // the sixth query ends without an answer.
    let fifth = record("B5");
    drop(guards);
    assert_eq!(
        fifth.await.unwrap().unwrap(),
        Applied::Finalized(FinalStatus::Success)
    );
    let check = SqliteLedger::open_existing(&path).unwrap();
    for n in names {
        assert_eq!(
            check.show(&no(n)).unwrap().unwrap().refund.status,
            RefundStatus::Success,
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_answer_and_an_answer_whose_sibling_gave_up_are_committed_without_waiting() {
    let (_dir, _path, handle) = patient_handle(&["L1", "L2"]);
    // Nothing else announced: committed at once (the test would hang for an hour otherwise).
    assert_eq!(
        handle
            .record_attempt(answered("L1"), finalize(FinalStatus::Success))
            .await
            .unwrap(),
        Applied::Finalized(FinalStatus::Success)
    );
    // Two announced; one records, the other query ends without an answer (its guard drops):
    // the batch is then complete and the recorded answer is committed.
    let mine = handle.attempt_coming();
    let sibling = handle.attempt_coming();
    let h = handle.clone();
    let recording = tokio::spawn(async move {
        let applied = h
            .record_attempt(answered("L2"), finalize(FinalStatus::Failed))
            .await;
        drop(mine);
        applied
    });
    drop(sibling);
    assert_eq!(
        recording.await.unwrap().unwrap(),
        Applied::Finalized(FinalStatus::Failed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_queries_refunds_due_at_start_without_waiting_for_cron() {
    let sb = sandbox::start(SandboxOptions::insecure_test(Arc::new(SystemClock)))
        .await
        .unwrap();
    sb.script(
        "DUE-AT-START",
        RefundScript {
            refund_trade_no: "T-DUE".into(),
            out_trade_no: "O-DUE-AT-START".into(),
            amount: Decimal::from_str("12.50").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            steps: vec![Step::Success],
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    SqliteLedger::open(&path)
        .unwrap()
        .insert_refund(&refund("DUE-AT-START", SystemClock.now()))
        .unwrap();
    // The cron safety net fires once a year: only the start-up sweep can query the refund.
    let text = format!(
        "[ledger]\npath = {path:?}\n\n[gateway]\nbase_url = {url:?}\napp_id = {app:?}\nmerchant_no = {merchant:?}\n\n\
         [keys]\nmerchant_private_key = \"env:MERCHANT_KEY\"\ngateway_public_key = \"env:GATEWAY_KEY\"\n\n\
         [schedule]\ngrace = \"0s\"\n\n[worker]\nsweep_cron = \"0 0 0 1 1 *\"\n",
        path = path.display().to_string(),
        url = sb.base_url(),
        app = sandbox::TEST_APP_ID,
        merchant = sandbox::TEST_MERCHANT_NO,
    );
    let env = Environment::from_pairs([
        ("MERCHANT_KEY", test_keys::INSECURE_MERCHANT_PRIVATE_PEM),
        ("GATEWAY_KEY", test_keys::INSECURE_GATEWAY_PUBLIC_PEM),
    ]);
    let config = Config::parse(&text, "test", &env).unwrap();
    let keys = config.keys.load().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        on_sweep: Some(Box::new(move |r| {
            let _ = tx.send(r.clone());
        })),
        ..Hooks::default()
    };
    let token = CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let daemon = tokio::spawn(daemon::run(
        config,
        keys,
        Arc::new(SystemClock),
        token.clone(),
        reload_rx,
        hooks,
    ));
    // A deadline, not a synchronisation sleep: without the start-up sweep this would hang.
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no sweep within 30 s of start: the start-up sweep is missing")
        .expect("a sweep report");
    assert_eq!(first.claimed, 1);
    assert_eq!(first.finalized, 1);
    token.cancel();
    daemon.await.unwrap().unwrap();
    let d = SqliteLedger::open_existing(&path)
        .unwrap()
        .show(&no("DUE-AT-START"))
        .unwrap()
        .unwrap();
    assert_eq!(d.refund.status, RefundStatus::Success);
    assert_eq!(d.attempts.len(), 1);
    sb.shutdown().await;
}
