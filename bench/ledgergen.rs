//! The ledger generator: N refunds of history, K of them pending with chosen due times, written
//! the way the merchant's app would (plain INSERTs into a ledger created by the product's own
//! `schema.sql`, so every CHECK and trigger runs on every row).
//!
//! Rows are inserted in key order (`out_refund_no`, `created_at`, `finalized_at` all rise with
//! the row number), which keeps every index an append and makes 10 000 000 rows a few minutes.

use std::path::Path;

use anyhow::{Context, Result};
use checus_reconciler::domain::{Timestamp, format_ts};
use checus_reconciler::ledger::SqliteLedger;
use chrono::TimeDelta;
use rusqlite::{Connection, params};

/// The amount and currency of every generated refund (the bench scripts answer the same).
pub const AMOUNT: &str = "12.50";
/// See [`AMOUNT`].
pub const CURRENCY: &str = "USD";
/// A pending refund is due this long after it was created, so its due time can be recovered
/// from `created_at` after the row is final (latency-to-query needs it).
pub const DUE_AFTER_CREATED: TimeDelta = TimeDelta::minutes(10);

/// What to generate.
pub struct Spec {
    /// Final rows (history): 9 in 10 REFUND_SUCCESS, 1 in 10 REFUND_FAILED.
    pub finals: u64,
    /// Pending rows and their due times, in row order.
    pub pending_due: Vec<Timestamp>,
    /// The instant the newest final row was finalized; history runs back from it.
    pub now: Timestamp,
}

/// The refund number of pending row `i` (the scripts name the same).
pub fn pending_no(i: usize) -> String {
    format!("P{i:09}")
}

/// Creates `path` (which must not exist) with the product's schema and fills it per `spec`.
pub fn generate(path: &Path, spec: &Spec, progress: &mut dyn FnMut(u64)) -> Result<()> {
    anyhow::ensure!(!path.exists(), "{} already exists", path.display());
    drop(SqliteLedger::open(path).context("creating the ledger with schema.sql")?);
    let mut conn = Connection::open(path)?;
    // Bulk load only: durability is irrelevant until the final checkpoint below.
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")?;
    const CHUNK: u64 = 200_000;
    // One second of creation time per final row, ending 30 days before `now`.
    let history_start = spec.now - TimeDelta::days(30) - TimeDelta::seconds(spec.finals as i64);
    let mut done = 0;
    while done < spec.finals {
        let end = (done + CHUNK).min(spec.finals);
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO refunds (out_refund_no, refund_trade_no, amount, currency, status,
                                      created_at, finalized_at, final_source, attempts,
                                      last_attempt_at, last_outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'query', 1, ?7, 'final')",
            )?;
            for i in done..end {
                let created = history_start + TimeDelta::seconds(i as i64);
                let finalized = created + TimeDelta::minutes(15);
                let status = if i % 10 == 9 {
                    "REFUND_FAILED"
                } else {
                    "REFUND_SUCCESS"
                };
                insert.execute(params![
                    format!("F{i:010}"),
                    format!("T{i:010}"),
                    AMOUNT,
                    CURRENCY,
                    status,
                    format_ts(created),
                    format_ts(finalized),
                ])?;
            }
        }
        tx.commit()?;
        done = end;
        progress(done);
    }
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO refunds (out_refund_no, refund_trade_no, amount, currency, created_at,
                                  next_query_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (i, due) in spec.pending_due.iter().enumerate() {
            let no = pending_no(i);
            insert.execute(params![
                no,
                format!("T{no}"),
                AMOUNT,
                CURRENCY,
                format_ts(*due - DUE_AFTER_CREATED),
                format_ts(*due),
            ])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// The JSONL sandbox scripts for the pending rows: each answers `success` at its first query.
pub fn success_scripts(pending: usize) -> String {
    let mut out = String::with_capacity(pending * 120);
    for i in 0..pending {
        let no = pending_no(i);
        out.push_str(&format!(
            "{{\"outRefundNo\":\"{no}\",\"refundTradeNo\":\"T{no}\",\"amount\":\"{AMOUNT}\",\"currency\":\"{CURRENCY}\",\"steps\":[\"success\"]}}\n"
        ));
    }
    out
}
