//! Operator decisions: `retry-now` (one refund or every flagged one), `resolve` (an audited
//! override of a still-pending refund) and `resolve-discrepancy`.
//!
//! Every write here is one `BEGIN IMMEDIATE` transaction that first appends its
//! `operator_actions` row: the audit and the change commit together or not at all, and the
//! schema's triggers refuse an operator decision without its audit row.

use rusqlite::{OptionalExtension, Transaction, params};

use super::SqliteLedger;
use super::error::{During, LedgerError, is_trigger, trigger_msg};
use super::read::REFUND_COLUMNS;
use super::rows::{RawRefund, RawRow, select_each};
use super::types::{RefundRow, ts_text};
use crate::domain::{FinalStatus, OutRefundNo, RefundStatus, Timestamp};

impl SqliteLedger {
    /// Makes a pending refund due now and restarts its backoff (counted attempts, the
    /// unknown-at-gateway clock and the review flag are reset; the attempt log keeps all).
    /// Audited as `retry_now` with the values it replaced. A final refund is refused.
    pub fn retry_now(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "retry refund now";
        self.write(OP, |tx| {
            let row = pending_row(tx, out_refund_no, OP)?;
            retry_one(tx, &row, actor, now, OP)
        })
    }

    /// [`SqliteLedger::retry_now`] for every pending flagged refund, in one transaction. Returns
    /// the refunds it reset, oldest first.
    pub fn retry_all_flagged(
        &self,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<OutRefundNo>, LedgerError> {
        const OP: &str = "retry flagged refunds now";
        self.write(OP, |tx| {
            // A flagged row that cannot be read (row_unreadable, not corrected yet) is left
            // as it is: resetting it would only have the daemon skip it again.
            let flagged = select_each::<RawRefund>(
                tx,
                OP,
                &format!(
                    "SELECT {REFUND_COLUMNS} FROM refunds
                      WHERE review_flag = 1 AND status = 'REFUND_PENDING'
                      ORDER BY created_at, id"
                ),
                [],
            )?;
            let mut done = Vec::new();
            for row in flagged.into_iter().filter_map(Result::ok) {
                retry_one(tx, &row, actor, now, OP)?;
                done.push(row.out_refund_no);
            }
            Ok(done)
        })
    }

    /// An operator's decision for a still-pending refund: records who, when and why in
    /// `operator_actions`, then sets the final status with `final_source = 'operator'`, in one
    /// transaction. A final refund is refused with [`LedgerError::AlreadyFinal`]; the schema's
    /// triggers refuse it too, for every writer.
    pub fn resolve(
        &self,
        out_refund_no: &OutRefundNo,
        status: FinalStatus,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<RefundRow, LedgerError> {
        const OP: &str = "resolve refund";
        self.write(OP, |tx| {
            let row = pending_row(tx, out_refund_no, OP)?;
            let detail = serde_json::json!({
                "attempts": row.attempts,
                "last_outcome": row.last_outcome.map(|o| o.as_str()),
                "review_reason": row.review_reason.map(|r| r.as_str()),
            })
            .to_string();
            let at = ts_text(now);
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, to_status, reason, detail)
                 VALUES (?1, ?2, 'resolve', ?3, ?4, ?5, ?6)",
                params![at, actor, out_refund_no.as_str(), status.as_str(), reason, detail],
            )
            .during(OP)?;
            tx.execute(
                "UPDATE refunds
                    SET status = ?2, final_source = 'operator', finalized_at = ?3,
                        next_query_at = NULL
                  WHERE out_refund_no = ?1 AND status = 'REFUND_PENDING'",
                params![out_refund_no.as_str(), status.as_str(), at],
            )
            .map_err(|source| {
                if is_trigger(&source, trigger_msg::FINAL_IMMUTABLE) {
                    LedgerError::FinalImmutable {
                        out_refund_no: out_refund_no.clone(),
                        source: source.into(),
                    }
                } else {
                    LedgerError::Sqlite { op: OP, source }
                }
            })?;
            tx.query_row(
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?1"),
                [out_refund_no.as_str()],
                RawRefund::read,
            )
            .during(OP)?
            .parse()
        })
    }

    /// Clears a refund's review flag, pending or final, after auditing it as `clear_flag`
    /// with the operator's reason and the flag it replaced: the operator looked and is done
    /// (a final refund flagged `answer_unrecordable` or `row_unreadable` has nothing left to
    /// query; `retry-now` is the way for a pending one that should be queried again). Reads
    /// only the flag's columns, so a row whose other values do not read can be cleared once
    /// corrected or accepted. Refuses a refund that is not flagged ([`LedgerError::NotFlagged`]).
    pub fn clear_flag(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "clear flag";
        let no = out_refund_no.as_str();
        self.write(OP, |tx| {
            let flag: Option<(i64, Option<String>, Option<String>)> = tx
                .query_row(
                    "SELECT review_flag, CAST(review_reason AS TEXT), CAST(flagged_at AS TEXT)
                       FROM refunds WHERE out_refund_no = ?1",
                    [no],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .during(OP)?;
            let (reason_was, flagged_at) = match flag {
                None => {
                    return Err(LedgerError::NotFound {
                        out_refund_no: out_refund_no.clone(),
                    });
                }
                Some((0, _, _)) => {
                    return Err(LedgerError::NotFlagged {
                        out_refund_no: out_refund_no.clone(),
                    });
                }
                Some((_, reason_was, flagged_at)) => (reason_was, flagged_at),
            };
            let detail = serde_json::json!({
                "review_reason": reason_was,
                "flagged_at": flagged_at,
            })
            .to_string();
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, reason, detail)
                 VALUES (?1, ?2, 'clear_flag', ?3, ?4, ?5)",
                params![ts_text(now), actor, no, reason, detail],
            )
            .during(OP)?;
            tx.execute(
                "UPDATE refunds SET review_flag = 0, review_reason = NULL, flagged_at = NULL
                  WHERE out_refund_no = ?1",
                [no],
            )
            .during(OP)?;
            Ok(())
        })
    }

    /// Marks an unresolved discrepancy resolved (who, when, how), audited in
    /// `operator_actions`. What was detected never changes.
    pub fn resolve_discrepancy(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "resolve discrepancy";
        self.write(OP, |tx| {
            let no: Option<String> = tx
                .query_row(
                    "SELECT out_refund_no FROM discrepancies WHERE id = ?1 AND resolved_at IS NULL",
                    [id],
                    |r| r.get(0),
                )
                .optional()
                .during(OP)?;
            let Some(no) = no else {
                return Err(LedgerError::DiscrepancyNotOpen { id });
            };
            let at = ts_text(now);
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, reason, detail)
                 VALUES (?1, ?2, 'resolve_discrepancy', ?3, ?4, ?5)",
                params![at, actor, no, reason, format!("{{\"discrepancy\":{id}}}")],
            )
            .during(OP)?;
            tx.execute(
                "UPDATE discrepancies SET resolved_at = ?2, resolved_by = ?3, resolution = ?4
                  WHERE id = ?1 AND resolved_at IS NULL",
                params![id, at, actor, reason],
            )
            .during(OP)?;
            Ok(())
        })
    }
}

/// The refund row, if it exists and is still pending.
fn pending_row(
    tx: &Transaction<'_>,
    no: &OutRefundNo,
    op: &'static str,
) -> Result<RefundRow, LedgerError> {
    let row = tx
        .query_row(
            &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?1"),
            [no.as_str()],
            RawRefund::read,
        )
        .optional()
        .during(op)?
        .ok_or_else(|| LedgerError::NotFound {
            out_refund_no: no.clone(),
        })?
        .parse()?;
    if row.status != RefundStatus::Pending {
        return Err(LedgerError::AlreadyFinal {
            out_refund_no: no.clone(),
            status: row.status,
        });
    }
    Ok(row)
}

/// Resets one pending refund's backoff and makes it due now, after auditing the values it
/// replaces.
fn retry_one(
    tx: &Transaction<'_>,
    row: &RefundRow,
    actor: &str,
    now: Timestamp,
    op: &'static str,
) -> Result<(), LedgerError> {
    let no = row.out_refund_no.as_str();
    let at = ts_text(now);
    let detail = serde_json::json!({
        "attempts": row.attempts,
        "next_query_at": row.next_query_at.map(ts_text),
        "unknown_since": row.unknown_since.map(ts_text),
        "review_reason": row.review_reason.map(|r| r.as_str()),
    })
    .to_string();
    tx.execute(
        "INSERT INTO operator_actions (at, actor, action, out_refund_no, detail)
         VALUES (?1, ?2, 'retry_now', ?3, ?4)",
        params![at, actor, no, detail],
    )
    .during(op)?;
    tx.execute(
        "UPDATE refunds
            SET next_query_at = ?2, attempts = 0, unknown_since = NULL,
                review_flag = 0, review_reason = NULL, flagged_at = NULL
          WHERE out_refund_no = ?1 AND status = 'REFUND_PENDING'",
        params![no, at],
    )
    .during(op)?;
    Ok(())
}
