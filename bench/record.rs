//! `bench record`: the ledger's share of one reconciled refund, alone.
//!
//! The daemon's figure 1 mixes RSA, HTTP, scheduling and SQLite; this isolates the last: a
//! ledger of pending refunds, and the worker's own group-commit call
//! (`Ledger::record_attempts`) recording a verified REFUND_SUCCESS answer for each, decided
//! by the real `domain::decide`, in batches as the daemon's writer makes them. It reports the
//! calling thread's CPU per refund (SQLite's work, the WAL writes and the fsync's system
//! time; not the disk's wait), so an A/B of a schema or pragma change needs no daemon, and
//! `valgrind --tool=callgrind target/release/examples/bench record ...` counts its
//! instructions repeatably on a loaded machine. `--notifications` records verified Checus
//! notifications through the daemon's inbox instead: the ledger's share of the notification
//! path (figure 8c).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use checus_reconciler::domain::{
    Currency, ObservedRefund, Policy, QueryOutcome, QueryReport, RefundStatus, decide,
};
use checus_reconciler::domain::{FinalStatus, NodeName};
use checus_reconciler::ledger::{NotificationEffect, NotificationRecord, SqliteLedger};
use chrono::{TimeDelta, Utc};
use rust_decimal::Decimal;

use crate::ledgergen;
use crate::procs::thread_cpu;

/// What one `bench record` run measured.
pub struct RecordCost {
    /// Refunds recorded.
    pub refunds: usize,
    /// Group commits made.
    pub commits: usize,
    /// The recording thread's CPU per refund, seconds.
    pub cpu_per_refund: f64,
    /// Wall time per refund, seconds (includes waiting for the disk).
    pub wall_per_refund: f64,
    /// The claim's CPU per refund (its leases and its commit), seconds; 0 for notifications.
    pub claim_per_refund: f64,
}

/// What to record for each pending refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A verified /refundQuery answer, through the worker's `record_attempts`.
    Attempts,
    /// A verified Checus notification, through the daemon's inbox (`record_notifications`,
    /// the merchant contract's INSERT; the schema's trigger applies it).
    Notifications,
}

/// Creates a ledger of `history` final rows plus `refunds` pending ones due now in `dir`,
/// then records one final outcome of `kind` for each, `batch` to a transaction.
pub fn run(
    dir: &Path,
    history: u64,
    refunds: usize,
    batch: usize,
    kind: Kind,
) -> Result<RecordCost> {
    let path = dir.join("record.sqlite");
    let now = Utc::now();
    let spec = ledgergen::Spec {
        finals: history,
        pending_due: vec![now - TimeDelta::hours(1); refunds],
        now,
    };
    ledgergen::generate(&path, &spec, &mut |_| {})?;
    let mut ledger = SqliteLedger::open(&path).context("opening the generated ledger")?;
    if kind == Kind::Notifications {
        return notifications(&mut ledger, refunds, batch);
    }
    // The worker's claim: each row leased to this node in the claim's own transaction (one
    // write transaction, its commit not counted below), and each record clearing the lease.
    let node = NodeName::parse_as("node", "bench-record")?;
    ledger.set_node(Some(node.clone()));
    let now = Utc::now();
    let (claimed, claim_cpu) =
        cpu_of(|| ledger.claim_due(now, refunds, &node, now + TimeDelta::minutes(10)));
    let due = claimed?.rows;
    let claim_per_refund = claim_cpu / refunds.max(1) as f64;
    anyhow::ensure!(
        due.len() == refunds,
        "{} due, expected {refunds}",
        due.len()
    );
    let policy = Policy::default();
    let mut cost = in_batches(&due, batch, |chunk| {
        let at = Utc::now();
        let work: Vec<_> = chunk
            .iter()
            .map(|state| {
                let report = success(state.out_refund_no.as_str(), at);
                let decision = decide(
                    RefundStatus::Pending,
                    state,
                    &report.outcome,
                    at,
                    0.5,
                    &policy,
                );
                (None, report, decision)
            })
            .collect();
        let (results, cpu) = cpu_of(|| ledger.record_attempts(&work));
        for r in results? {
            r.context("recording an attempt")?;
        }
        Ok(cpu)
    })?;
    cost.claim_per_refund = claim_per_refund;
    Ok(cost)
}

/// Records `items`, `batch` to a transaction, with `record`, which returns the CPU of its
/// ledger call alone (what it builds beforehand is not the ledger's share).
fn in_batches<T>(
    items: &[T],
    batch: usize,
    mut record: impl FnMut(&[T]) -> Result<f64>,
) -> Result<RecordCost> {
    let (mut cpu, mut commits) = (0.0, 0);
    let started = Instant::now();
    for chunk in items.chunks(batch.max(1)) {
        cpu += record(chunk)?;
        commits += 1;
    }
    let n = items.len().max(1) as f64;
    Ok(RecordCost {
        refunds: items.len(),
        commits,
        cpu_per_refund: cpu / n,
        wall_per_refund: started.elapsed().as_secs_f64() / n,
        claim_per_refund: 0.0,
    })
}

/// What `f` returns, and the calling thread's CPU it took.
fn cpu_of<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let before = thread_cpu();
    let out = f();
    (out, thread_cpu() - before)
}

/// One verified REFUND_SUCCESS notification per generated pending refund, `batch` to a
/// transaction, each checked to have finalized its refund.
fn notifications(ledger: &mut SqliteLedger, refunds: usize, batch: usize) -> Result<RecordCost> {
    let amount = Decimal::from_str(ledgergen::AMOUNT)?;
    let currency = Currency::parse(ledgergen::CURRENCY)?;
    let all: Vec<NotificationRecord> = (0..refunds)
        .map(|i| {
            let at = Utc::now();
            Ok(NotificationRecord {
                out_refund_no: ledgergen::pending_no(i).parse()?,
                status: FinalStatus::Success,
                refund_trade_no: Some(format!("T{i}")),
                amount,
                currency,
                refund_finish_time: Some(at),
                notify_time: at,
            })
        })
        .collect::<Result<_>>()?;
    in_batches(&all, batch, |chunk| {
        let (effects, cpu) = cpu_of(|| ledger.record_notifications(chunk));
        for e in effects? {
            anyhow::ensure!(
                e? == NotificationEffect::Finalized,
                "a notification did not finalize its refund"
            );
        }
        Ok(cpu)
    })
}

/// A verified REFUND_SUCCESS answer for `no` agreeing with the generated row.
fn success(no: &str, at: checus_reconciler::domain::Timestamp) -> QueryReport {
    QueryReport {
        out_refund_no: no.parse().expect("generated refund numbers are valid"),
        outcome: QueryOutcome::Final(ObservedRefund {
            out_refund_no: Some(no.to_owned()),
            refund_trade_no: Some(format!("T{no}")),
            amount: Some(Decimal::from_str(ledgergen::AMOUNT).expect("decimal")),
            currency: Some(Currency::parse(ledgergen::CURRENCY).expect("currency")),
            status: RefundStatus::Success,
            refund_finish_time: Some(at),
            unconfirmed: Vec::new(),
            dropped: Vec::new(),
        }),
        attempted_at: at,
        http_status: Some(200),
        gateway_code: Some("APPLY_SUCCESS".into()),
        data_status: Some("REFUND_SUCCESS".into()),
        latency: Duration::from_millis(1),
        error: None,
    }
}
