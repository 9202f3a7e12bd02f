//! `bench record`: the ledger's share of one reconciled refund, alone.
//!
//! The daemon's figure 1 mixes RSA, HTTP, scheduling and SQLite; this isolates the last: a
//! ledger of pending refunds, and the worker's own group-commit call
//! (`Ledger::record_attempts`) recording a verified REFUND_SUCCESS answer for each, decided
//! by the real `domain::decide`, in batches as the daemon's writer makes them. It reports the
//! calling thread's CPU per refund (SQLite's work, the WAL writes and the fsync's system
//! time; not the disk's wait), so an A/B of a schema or pragma change needs no daemon, and
//! `valgrind --tool=callgrind target/release/examples/bench record ...` counts its
//! instructions repeatably on a loaded machine.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use checus_reconciler::domain::{
    Currency, ObservedRefund, Policy, QueryOutcome, QueryReport, RefundStatus, decide,
};
use checus_reconciler::ledger::SqliteLedger;
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
}

/// Creates a ledger of `history` final rows plus `refunds` pending ones due now in `dir`,
/// then records one final answer for each, `batch` to a transaction.
pub fn run(dir: &Path, history: u64, refunds: usize, batch: usize) -> Result<RecordCost> {
    let path = dir.join("record.sqlite");
    let now = Utc::now();
    let spec = ledgergen::Spec {
        finals: history,
        pending_due: vec![now - TimeDelta::hours(1); refunds],
        now,
    };
    ledgergen::generate(&path, &spec, &mut |_| {})?;
    let mut ledger = SqliteLedger::open(&path).context("opening the generated ledger")?;
    let due = ledger.due(Utc::now(), refunds)?.rows;
    anyhow::ensure!(
        due.len() == refunds,
        "{} due, expected {refunds}",
        due.len()
    );
    let policy = Policy::default();
    let (mut cpu, mut commits) = (0.0, 0);
    let started = Instant::now();
    for chunk in due.chunks(batch.max(1)) {
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
        let before = thread_cpu();
        let results = ledger.record_attempts(&work)?;
        cpu += thread_cpu() - before;
        commits += 1;
        for r in results {
            r.context("recording an attempt")?;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(RecordCost {
        refunds,
        commits,
        cpu_per_refund: cpu / refunds as f64,
        wall_per_refund: wall / refunds as f64,
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
