//! The operator's read-only lists: `stuck`, `failed`, `export` and `discrepancies`. Each is one
//! `SELECT` whose rows are read with the table's `Raw*` reader (see `rows.rs`); the refund
//! lists read leniently, so one row that cannot be read is named, not a failure of the list.
//! Rendering is the CLI's (`report.rs`).

use rusqlite::params;

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::read::REFUND_COLUMNS;
use super::rows::{RawDiscrepancy, RawRefund, RawRow, select, select_each};
use super::types::{Readout, RefundRow, limit_arg, to_u64, ts_text};
use crate::domain::Timestamp;
use crate::ledger::OpenDiscrepancy;

/// `stuck`'s rows (`?1`: the cutoff). `+created_at`: walk the pending rows (partial index),
/// not every refund by age.
const STUCK: &str = "WHERE status = 'REFUND_PENDING' AND +created_at <= ?1";

/// `failed`'s rows (`?1`: since when).
const FAILED: &str = "WHERE finalized_at >= ?1 AND status = 'REFUND_FAILED'";

impl SqliteLedger {
    /// Pending refunds created at or before `created_before` (oldest first, at most `limit`):
    /// the ones an operator should look at.
    pub fn stuck(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        select_each::<RawRefund>(
            &self.conn,
            "list stuck refunds",
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds {STUCK} ORDER BY created_at, id LIMIT ?2"
            ),
            params![ts_text(created_before), limit_arg(limit)],
        )
        .map(Readout::of)
    }

    /// Refunds that became `REFUND_FAILED` at or after `since`, in the order they failed.
    pub fn failed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        select_each::<RawRefund>(
            &self.conn,
            "list failed refunds",
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds {FAILED} ORDER BY finalized_at, id LIMIT ?2"
            ),
            params![ts_text(since), limit_arg(limit)],
        )
        .map(Readout::of)
    }

    /// How many refunds [`SqliteLedger::stuck`] would list without a limit (walks the pending rows).
    pub fn stuck_total(&self, created_before: Timestamp) -> Result<u64, LedgerError> {
        self.count_where("count stuck refunds", STUCK, ts_text(created_before))
    }

    /// How many refunds [`SqliteLedger::failed_since`] would list without a limit.
    pub fn failed_total(&self, since: Timestamp) -> Result<u64, LedgerError> {
        self.count_where("count failed refunds", FAILED, ts_text(since))
    }

    fn count_where(&self, op: &'static str, clause: &str, arg: String) -> Result<u64, LedgerError> {
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM refunds {clause}"),
                [arg],
                |r| r.get(0),
            )
            .during(op)?;
        Ok(to_u64(n))
    }

    /// Every refund created at or after `since`, oldest first, for `export`.
    pub fn export_since(&self, since: Timestamp) -> Result<Readout<RefundRow>, LedgerError> {
        select_each::<RawRefund>(
            &self.conn,
            "export refunds",
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE created_at >= ?1 ORDER BY created_at, id"
            ),
            params![ts_text(since)],
        )
        .map(Readout::of)
    }

    /// One discrepancy by id, resolved or not (`resolve-discrepancy --json` prints it).
    pub fn discrepancy(&self, id: i64) -> Result<Option<OpenDiscrepancy>, LedgerError> {
        let sql = format!(
            "SELECT {} FROM discrepancies WHERE id = ?1",
            RawDiscrepancy::COLUMNS
        );
        let rows = select::<RawDiscrepancy>(&self.conn, "read discrepancy", &sql, [id])?;
        Ok(rows.into_iter().next().map(OpenDiscrepancy::from))
    }

    /// Discrepancies: only unresolved ones (oldest detected first) unless `all` (in id order).
    pub fn discrepancies(&self, all: bool) -> Result<Vec<OpenDiscrepancy>, LedgerError> {
        let columns = RawDiscrepancy::COLUMNS;
        let sql = if all {
            format!("SELECT {columns} FROM discrepancies ORDER BY id")
        } else {
            format!(
                "SELECT {columns} FROM discrepancies WHERE resolved_at IS NULL
                  ORDER BY detected_at, id"
            )
        };
        let rows = select::<RawDiscrepancy>(&self.conn, "list discrepancies", &sql, [])?;
        Ok(rows.into_iter().map(OpenDiscrepancy::from).collect())
    }
}
