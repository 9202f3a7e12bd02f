//! Reads: the due list and the next wake-up time for the worker, one refund's state, and the
//! operator views (`status`, `list`, `show`). Multi-statement reads run in one read
//! transaction so their numbers agree with each other.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Transaction, params, params_from_iter};

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::rows::{
    RawAttempt, RawDiscrepancy, RawNotification, RawOperatorAction, RawRefund, RawRow, RawSweep,
    identify, select, select_each,
};
use super::types::{
    AttemptRow, Cell, DiscrepancyRow, ListFilter, LoggedDiscrepancy, NotificationRow,
    OperatorActionRow, Readout, RefundDetail, RefundRow, SkipList, StatusSummary, UnreadableRow,
    Watermark, limit_arg, ts_text,
};
use crate::domain::{OutRefundNo, RefundState, RefundStatus, ReviewReason, Timestamp};

/// Every `refunds` column [`RawRefund`] reads, in its order.
pub(super) const REFUND_COLUMNS: &str = RawRefund::COLUMNS;

/// The due query. `status = 'REFUND_PENDING'` must stay a literal: that is what lets SQLite
/// prove the partial index `refunds_due` applies (a bound parameter would not). Rows the
/// worker flagged as unusable (row_unreadable, row_unwritable) are left out until an operator
/// clears the flag: they cost one look each, never a place in the batch.
pub(crate) const DUE: &str = "\
    SELECT out_refund_no, refund_trade_no, out_trade_no, amount, currency, status, created_at,
           notified_at, finalized_at, final_source, refund_finish_time, next_query_at, attempts,
           unknown_since, last_attempt_at, last_outcome, last_error, review_flag, review_reason,
           flagged_at, id
      FROM refunds
     WHERE status = 'REFUND_PENDING' AND next_query_at <= ?1
       AND review_reason IS NOT 'row_unreadable' AND review_reason IS NOT 'row_unwritable'
     ORDER BY next_query_at, id
     LIMIT ?2";

/// Pending refunds in due order with their row ids and claim leases (walks `refunds_due`,
/// passing rows flagged unusable, which the due query leaves out too, so the daemon never
/// wakes for a row it will not query); the worker passes the rows it skipped itself, and
/// [`SqliteLedger::next_due_at_for`] reads only as far as it needs.
pub(crate) const NEXT_DUE: &str = "\
    SELECT next_query_at, id, CAST(out_refund_no AS TEXT), claimed_by, claimed_until FROM refunds
     WHERE status = 'REFUND_PENDING' AND next_query_at IS NOT NULL
       AND review_reason IS NOT 'row_unreadable' AND review_reason IS NOT 'row_unwritable'
     ORDER BY next_query_at, id";

impl SqliteLedger {
    /// Pending refunds whose `next_query_at` is at or before `now`, most overdue first, at most
    /// `limit`, leaving out rows flagged unusable. A row that cannot be read comes back in
    /// `unreadable` (it took a place in the batch). Costs O(due): it walks the partial index
    /// `refunds_due`.
    pub fn due(&self, now: Timestamp, limit: usize) -> Result<Readout<RefundState>, LedgerError> {
        const OP: &str = "list due refunds";
        let rows =
            select_each::<RawRefund>(&self.conn, OP, DUE, params![ts_text(now), limit_arg(limit)])?;
        Ok(Readout::of(rows).map(|row| state_of(&row)))
    }

    /// Refunds finalized by a notification whose confirming query is due: finalized at least
    /// `confirm_after` before `now` and not pushed back past `now`, oldest first, at most
    /// `limit`, leaving out rows flagged unusable. Walks the partial index
    /// `refunds_to_confirm` (only unconfirmed rows).
    pub fn due_confirmations(
        &self,
        now: Timestamp,
        confirm_after: std::time::Duration,
        limit: usize,
    ) -> Result<Readout<(RefundStatus, RefundState)>, LedgerError> {
        const OP: &str = "list due confirmations";
        let settled =
            now - chrono::TimeDelta::from_std(confirm_after).unwrap_or(chrono::TimeDelta::MAX);
        let rows = select_each::<RawRefund>(
            &self.conn,
            OP,
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds
                  WHERE confirm_at IS NOT NULL AND confirm_at <= ?1 AND finalized_at <= ?2
                    AND review_reason IS NOT 'row_unreadable'
                    AND review_reason IS NOT 'row_unwritable'
                  ORDER BY confirm_at, id
                  LIMIT ?3"
            ),
            params![ts_text(now), ts_text(settled), limit_arg(limit)],
        )?;
        Ok(Readout::of(rows).map(|row| (row.status, state_of(&row))))
    }

    /// When the earliest pending refund is due (`None`: nothing scheduled), passing rows
    /// flagged unusable and the rows whose ids are in `skip` (rows the worker skipped because
    /// it could not flag them), whoever holds a lease on it. Walks `refunds_due` from its
    /// start. The worker asks [`SqliteLedger::next_due_at_for`] its node.
    pub fn next_due_at(&self, skip: &SkipList) -> Result<Option<Timestamp>, LedgerError> {
        self.next_due_at_for(skip, None)
    }

    /// Refunds finalized by anyone but this daemon's queries (notifications, `/refund`
    /// failures, operators) after the watermark, oldest first, at most `limit` rows (read or
    /// not). Returns the rows read, those that could not be, and the watermark past all of
    /// them, so an unreadable row is passed, not met again.
    pub fn finalized_elsewhere_since(
        &self,
        after: Option<&Watermark>,
        limit: usize,
    ) -> Result<(Readout<RefundRow>, Option<Watermark>), LedgerError> {
        const OP: &str = "list refunds finalized elsewhere";
        let (at, id) = after.map_or((String::new(), 0), |w| (w.finalized_at.clone(), w.id));
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {REFUND_COLUMNS}, CAST(finalized_at AS TEXT) FROM refunds
                  WHERE finalized_at IS NOT NULL
                    AND (finalized_at > ?1 OR (finalized_at = ?1 AND id > ?2))
                    AND final_source IS NOT 'query'
                  ORDER BY finalized_at, id
                  LIMIT ?3"
            ))
            .during(OP)?;
        let rows = stmt
            .query_map(params![at, id, limit_arg(limit)], |r| {
                let who = identify::<RawRefund>(r);
                let mark = Watermark {
                    finalized_at: r.get(21)?,
                    id: who.id(),
                };
                Ok((mark, who, RawRefund::read(r)))
            })
            .during(OP)?;
        let mut results = Vec::new();
        let mut last = after.cloned();
        for row in rows {
            let (mark, who, raw) = row.during(OP)?;
            last = Some(mark);
            results.push(match raw {
                Ok(raw) => raw.parse().map_err(|e| who.unreadable(e.to_string())),
                Err(e) => Err(who.unreadable(e.to_string())),
            });
        }
        Ok((Readout::of(results), last))
    }

    /// The newest finalization watermark, so a starting daemon logs only what becomes final
    /// from now on.
    pub fn finalized_watermark(&self) -> Result<Option<Watermark>, LedgerError> {
        const OP: &str = "read finalization watermark";
        self.conn
            .prepare_cached(
                "SELECT CAST(finalized_at AS TEXT), id FROM refunds
                  WHERE finalized_at IS NOT NULL
                  ORDER BY finalized_at DESC, id DESC LIMIT 1",
            )
            .during(OP)?
            .query_row([], |r| {
                Ok(Watermark {
                    finalized_at: r.get(0)?,
                    id: r.get(1)?,
                })
            })
            .optional()
            .during(OP)
    }

    /// The discrepancies recorded after `after` (a `discrepancies.id`), oldest first, at most
    /// `limit`, whoever recorded them; the caller logs those it did not record itself. Ids
    /// only grow (AUTOINCREMENT), so "after this id" is "recorded since". Read as text, so no
    /// stored value can stop the log.
    pub fn discrepancies_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LoggedDiscrepancy>, LedgerError> {
        const OP: &str = "list new discrepancies";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, CAST(out_refund_no AS TEXT), CAST(source AS TEXT), CAST(kind AS TEXT),
                        CAST(expected AS TEXT), CAST(observed AS TEXT)
                   FROM discrepancies WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .during(OP)?;
        let rows = stmt
            .query_map(params![after, limit_arg(limit)], |r| {
                Ok(LoggedDiscrepancy {
                    id: r.get(0)?,
                    out_refund_no: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    source: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    kind: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    expected: r.get(4)?,
                    observed: r.get(5)?,
                })
            })
            .during(OP)?;
        rows.collect::<Result<_, _>>().during(OP)
    }

    /// The newest discrepancy id (0: none), so a starting daemon logs only the discrepancies
    /// recorded from now on, as with [`SqliteLedger::finalized_watermark`].
    pub fn discrepancy_watermark(&self) -> Result<i64, LedgerError> {
        const OP: &str = "read discrepancy watermark";
        self.conn
            .prepare_cached("SELECT coalesce(max(id), 0) FROM discrepancies")
            .during(OP)?
            .query_row([], |r| r.get(0))
            .during(OP)
    }

    /// One refund's status and the state `decide` works from.
    pub fn state(
        &self,
        out_refund_no: &OutRefundNo,
    ) -> Result<Option<(RefundStatus, RefundState)>, LedgerError> {
        Ok(self
            .refund(out_refund_no)?
            .map(|row| (row.status, state_of(&row))))
    }

    /// The ledger at a glance. `now` decides what counts as due.
    pub fn status(&self, now: Timestamp) -> Result<StatusSummary, LedgerError> {
        const OP: &str = "read status";
        self.read(OP, |tx| {
            let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, LedgerError> {
                let n: i64 = tx.query_row(sql, p, |r| r.get(0)).during(OP)?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            let pending = count(
                "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING'",
                &[],
            )?;
            let (mut succeeded, mut failed) = (0, 0);
            {
                let mut stmt = tx
                    .prepare(
                        // Kept by triggers on every write, whoever writes: three rows
                        // to read instead of every final refund (0.4 s on 10M rows).
                        "SELECT status, n FROM refund_counts
                          WHERE status <> 'REFUND_PENDING' AND n > 0",
                    )
                    .during(OP)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .during(OP)?;
                for row in rows {
                    let (status, n) = row.during(OP)?;
                    let n = u64::try_from(n).unwrap_or(0);
                    let cell = Cell {
                        out_refund_no: "(status count)",
                    };
                    match cell.parse("status", &status)? {
                        RefundStatus::Success => succeeded = n,
                        RefundStatus::Failed => failed = n,
                        RefundStatus::Pending => {}
                    }
                }
            }
            let due_now = count(
                "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING' AND next_query_at <= ?1",
                &[&ts_text(now)],
            )?;
            let unscheduled = count(
                "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL",
                &[],
            )?;
            let flagged = count(
                "SELECT count(*) FROM refunds WHERE review_flag = 1",
                &[],
            )?;
            // `+created_at` keeps SQLite from walking every refund in creation order looking
            // for the first pending one; it scans the pending rows instead.
            let oldest: Option<(String, i64, String)> = tx
                .query_row(
                    "SELECT CAST(created_at AS TEXT), id, CAST(out_refund_no AS TEXT) FROM refunds
                      WHERE status = 'REFUND_PENDING' ORDER BY +created_at LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .during(OP)?;
            let mut unreadable = Vec::new();
            let oldest_pending_created_at = match oldest {
                None => None,
                Some((text, id, no)) => match (Cell { out_refund_no: &no }).ts("created_at", &text) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        unreadable.push(UnreadableRow {
                            table: "refunds",
                            id,
                            out_refund_no: Some(no),
                            detail: e.to_string(),
                        });
                        None
                    }
                },
            };
            let unresolved_discrepancies = count(
                "SELECT count(*) FROM discrepancies WHERE resolved_at IS NULL",
                &[],
            )?;
            let last_sweep = select_each::<RawSweep>(
                tx,
                OP,
                &format!(
                    "SELECT {} FROM sweeps ORDER BY id DESC LIMIT 1",
                    RawSweep::COLUMNS
                ),
                [],
            )?
            .pop()
            .and_then(|sweep| sweep.map_err(|bad| unreadable.push(bad)).ok());
            Ok(StatusSummary {
                pending,
                succeeded,
                failed,
                due_now,
                unscheduled,
                flagged,
                oldest_pending_created_at,
                unresolved_discrepancies,
                last_sweep,
                unreadable,
            })
        })
    }

    /// Refunds matching `filter`, oldest first (by `created_at`, then insertion order); a row
    /// that cannot be read is returned in `unreadable`, not a failure of the whole list.
    pub fn list(&self, filter: &ListFilter) -> Result<Readout<RefundRow>, LedgerError> {
        const OP: &str = "list refunds";
        let (clause, mut args) = list_clause(filter);
        args.push(Value::Integer(limit_arg(filter.limit)));
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds {clause} ORDER BY created_at, id LIMIT ?{}",
            args.len()
        );
        let rows = select_each::<RawRefund>(&self.conn, OP, &sql, params_from_iter(args))?;
        Ok(Readout::of(rows))
    }

    /// How many refunds match `filter`, ignoring its limit (`list` says when it cut a list
    /// short). `--flagged` walks the partial index `refunds_flagged`; a status, the pending
    /// or final rows; no filter at all counts the whole table.
    pub fn list_total(&self, filter: &ListFilter) -> Result<u64, LedgerError> {
        let (clause, args) = list_clause(filter);
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM refunds {clause}"),
                params_from_iter(args),
                |r| r.get(0),
            )
            .during("count refunds")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One refund with its attempts, discrepancies and notifications, oldest first.
    pub fn show(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundDetail>, LedgerError> {
        const OP: &str = "show refund";
        let no = out_refund_no.as_str();
        self.read(OP, |tx| {
            let Some(refund) = refund_of(tx, no)? else {
                return Ok(None);
            };
            Ok(Some(RefundDetail {
                refund,
                attempts: attempts_of(tx, no)?,
                discrepancies: discrepancies_of(tx, no)?,
                notifications: notifications_of(tx, no)?,
            }))
        })
    }
    /// One refund row, typed (`None`: no such refund).
    pub fn refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundRow>, LedgerError> {
        refund_of(&self.conn, out_refund_no.as_str())
    }
}

/// `list`'s `WHERE` clause for `filter` (its limit aside) and the values it binds.
fn list_clause(filter: &ListFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("WHERE 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(status) = filter.status {
        args.push(Value::Text(status.as_str().to_owned()));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    // A literal, not a bound value: that is what lets SQLite prove the partial index
    // `refunds_flagged` applies, so `list --flagged` and its count walk only flagged rows.
    match filter.flagged {
        Some(true) => sql.push_str(" AND review_flag = 1"),
        Some(false) => sql.push_str(" AND review_flag = 0"),
        None => {}
    }
    if let Some(since) = filter.since {
        args.push(Value::Text(ts_text(since)));
        sql.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    (sql, args)
}

/// The state `decide` needs, from a full row.
pub(super) fn state_of(row: &RefundRow) -> RefundState {
    RefundState {
        out_refund_no: row.out_refund_no.clone(),
        refund_trade_no: row.refund_trade_no.clone(),
        amount: row.amount,
        currency: row.currency,
        created_at: row.created_at,
        attempts: row.attempts,
        unknown_since: row.unknown_since,
        flagged: row.review_flag,
        rejected_before: row.review_flag
            && row.review_reason == Some(ReviewReason::GatewayRejectedRequest),
        last_error: row.last_error.clone(),
    }
}

/// A refund's attempts, oldest first (`show`, `explain`).
pub(super) fn attempts_of(tx: &Transaction<'_>, no: &str) -> Result<Vec<AttemptRow>, LedgerError> {
    let sql = format!(
        "SELECT {} FROM attempts WHERE out_refund_no = ?1 ORDER BY id",
        RawAttempt::COLUMNS
    );
    select::<RawAttempt>(tx, "read attempts", &sql, [no])
}

/// A refund's discrepancies, oldest first (`show`, `explain`).
pub(super) fn discrepancies_of(
    tx: &Transaction<'_>,
    no: &str,
) -> Result<Vec<DiscrepancyRow>, LedgerError> {
    let sql = format!(
        "SELECT {} FROM discrepancies WHERE out_refund_no = ?1 ORDER BY id",
        RawDiscrepancy::COLUMNS
    );
    select::<RawDiscrepancy>(tx, "read discrepancies", &sql, [no])
}

/// The notifications the merchant's app recorded for a refund, oldest first.
pub(super) fn notifications_of(
    tx: &Transaction<'_>,
    no: &str,
) -> Result<Vec<NotificationRow>, LedgerError> {
    let sql = format!(
        "SELECT {} FROM notifications WHERE out_refund_no = ?1 ORDER BY id",
        RawNotification::COLUMNS
    );
    select::<RawNotification>(tx, "read notifications", &sql, [no])
}

/// The operator actions about a refund, oldest first (`explain`).
pub(super) fn operator_actions_of(
    tx: &Transaction<'_>,
    no: &str,
) -> Result<Vec<OperatorActionRow>, LedgerError> {
    let sql = format!(
        "SELECT {} FROM operator_actions WHERE out_refund_no = ?1 ORDER BY id",
        RawOperatorAction::COLUMNS
    );
    select::<RawOperatorAction>(tx, "read operator actions", &sql, [no])
}

/// One refund row by number, typed; `None` when the ledger has no such refund.
pub(super) fn refund_of(
    conn: &rusqlite::Connection,
    no: &str,
) -> Result<Option<RefundRow>, LedgerError> {
    const OP: &str = "read refund";
    conn.prepare_cached(&format!(
        "SELECT {} FROM refunds WHERE out_refund_no = ?1",
        RawRefund::COLUMNS
    ))
    .during(OP)?
    .query_row([no], RawRefund::read)
    .optional()
    .during(OP)?
    .map(RawRefund::parse)
    .transpose()
}
