//! What `/metrics` reads from the ledger: the refunds by status, flagged, due, the oldest
//! pending one, the unresolved discrepancies and the dead webhook events. Read from the file, not from the daemon's
//! memory, so the merchant app's writes show too. Every query costs what it reports, never the
//! size of the ledger: the status counts are the three rows of `refund_counts` (kept by
//! triggers, schema.sql), and the rest walk partial indexes (`tests` checks the plans).

use rusqlite::Transaction;

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::types::{to_u64, ts_text};
use crate::domain::{RefundStatus, Timestamp, parse_ts};
use crate::ledger::LedgerGauges;

/// The refund counts by status: the three rows of `refund_counts`.
pub(super) const REFUND_COUNTS: &str = "SELECT status, n FROM refund_counts";

/// Flagged refunds: a walk of `refunds_flagged`, which holds only flagged rows.
pub(super) const FLAGGED: &str = "SELECT count(*) FROM refunds WHERE review_flag = 1";

/// Pending refunds due at `?1`: a walk of `refunds_due` up to `?1`.
pub(super) const DUE: &str =
    "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING' AND next_query_at <= ?1";

/// The oldest pending refund's `created_at`: the first entry of `refunds_pending_unflagged`
/// and the first pending one of `refunds_flagged` (`review_flag` is 0 or 1 by its CHECK), so
/// two index seeks where `ORDER BY created_at` over the pending rows walks all of them.
pub(super) const OLDEST_PENDING: &str = "\
    SELECT min(coalesce(u, f), coalesce(f, u)) FROM (
      SELECT (SELECT min(created_at) FROM refunds
               WHERE status = 'REFUND_PENDING' AND review_flag = 0) AS u,
             (SELECT min(created_at) FROM refunds
               WHERE status = 'REFUND_PENDING' AND review_flag = 1) AS f)";

/// Unresolved discrepancies: a walk of `discrepancies_unresolved`.
pub(super) const UNRESOLVED: &str = "SELECT count(*) FROM discrepancies WHERE resolved_at IS NULL";

impl SqliteLedger {
    /// The gauges `/metrics` exposes, at `now`, in one read transaction.
    pub fn gauges(&self, now: Timestamp) -> Result<LedgerGauges, LedgerError> {
        self.read("read gauges", |tx| read_gauges(tx, now))
    }
}

fn read_gauges(tx: &Transaction<'_>, now: Timestamp) -> Result<LedgerGauges, LedgerError> {
    const OP: &str = "read gauges";
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, LedgerError> {
        Ok(to_u64(tx.query_row(sql, p, |r| r.get(0)).during(OP)?))
    };
    let mut stmt = tx.prepare_cached(REFUND_COUNTS).during(OP)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .during(OP)?;
    let mut counted = Vec::new();
    for row in rows {
        let (status, n) = row.during(OP)?;
        // A status outside the CHECK (stored with the CHECKs off) is not one of ours: it has
        // no series, and `status` reports such rows.
        if let Ok(status) = status.parse::<RefundStatus>() {
            counted.push((status, to_u64(n)));
        }
    }
    let refunds = RefundStatus::ALL
        .iter()
        .map(|s| {
            let n = counted.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n);
            (*s, n)
        })
        .collect();
    let oldest: Option<String> = tx.query_row(OLDEST_PENDING, [], |r| r.get(0)).during(OP)?;
    Ok(LedgerGauges {
        refunds,
        flagged: count(FLAGGED, &[])?,
        due: count(DUE, &[&ts_text(now)])?,
        oldest_pending_created_at: oldest.as_deref().and_then(|t| parse_ts(t).ok()),
        unresolved_discrepancies: count(UNRESOLVED, &[])?,
        dead_webhooks: count(super::webhooks::DEAD_COUNT, &[])?,
    })
}
