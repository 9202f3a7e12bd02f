//! Operator decisions on PostgreSQL: `retry-now` (one refund or every flagged one), `resolve`,
//! `clear-flag`, `resolve-discrepancy` and `resume`. As on SQLite, each is one transaction that
//! first appends its `operator_actions` row, so the audit and the change commit together; the
//! refund row is locked (`FOR UPDATE`) before it is judged, so a daemon finalizing it at the same
//! moment either went first (the command sees a final refund) or waits.

use std::sync::LazyLock;

use super::rows::{REFUND_COLUMNS, refund, refund_or_unreadable};
use super::{Db, PgLedger, ms};
use crate::domain::{FinalStatus, OutRefundNo, RefundStatus, Timestamp, format_ts};
use crate::ledger::ResumeRequest;
use crate::ledger::error::{EngineError, LedgerError, is_pg_trigger, trigger_msg};
use crate::ledger::types::RefundRow;

static REFUND_FOR_UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = $1 FOR UPDATE")
});

impl PgLedger {
    /// Makes a pending refund due now and restarts its backoff, audited as `retry_now` with
    /// the values it replaced. A final refund is refused.
    pub fn retry_now(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "retry refund now";
        let now = ms(now);
        self.write(OP, |db| {
            let row = pending_row(db, out_refund_no, OP)?;
            retry_one(db, &row, actor, now, OP)
        })
    }

    /// [`PgLedger::retry_now`] for every pending flagged refund, in one transaction; returns
    /// the refunds it reset, oldest first. A flagged row that cannot be read is left as it is.
    pub fn retry_all_flagged(
        &self,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<OutRefundNo>, LedgerError> {
        const OP: &str = "retry flagged refunds now";
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {REFUND_COLUMNS} FROM refunds
                  WHERE review_flag = 1 AND status = 'REFUND_PENDING'
                  ORDER BY created_at, id FOR UPDATE"
            )
        });
        let now = ms(now);
        self.write(OP, |db| {
            let rows = db.query(OP, SQL.as_str(), &[])?;
            let mut done = Vec::new();
            for row in rows.iter().map(refund_or_unreadable).filter_map(Result::ok) {
                retry_one(db, &row, actor, now, OP)?;
                done.push(row.out_refund_no);
            }
            Ok(done)
        })
    }

    /// An operator's decision for a still-pending refund: audited, then final with
    /// `final_source = 'operator'` (the lease cleared), in one transaction. A final refund is
    /// refused with [`LedgerError::AlreadyFinal`]; the schema refuses it for every writer.
    pub fn resolve(
        &self,
        out_refund_no: &OutRefundNo,
        status: FinalStatus,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<RefundRow, LedgerError> {
        const OP: &str = "resolve refund";
        let now = ms(now);
        let no = out_refund_no.as_str();
        self.write(OP, |db| {
            let row = pending_row(db, out_refund_no, OP)?;
            let detail = serde_json::json!({
                "attempts": row.attempts,
                "last_outcome": row.last_outcome.map(|o| o.as_str()),
                "review_reason": row.review_reason.map(|r| r.as_str()),
            })
            .to_string();
            db.execute(
                OP,
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, to_status, reason, detail)
                 VALUES ($1, $2, 'resolve', $3, $4, $5, $6)",
                &[&now, &actor, &no, &status.as_str(), &reason, &detail],
            )?;
            let stmt = db.prepared(
                OP,
                "UPDATE refunds
                    SET status = $2, final_source = 'operator', finalized_at = $3,
                        next_query_at = NULL, claimed_by = NULL, claimed_until = NULL
                  WHERE out_refund_no = $1 AND status = 'REFUND_PENDING'",
            )?;
            db.tx
                .execute(&stmt, &[&no, &status.as_str(), &now])
                .map_err(|source| {
                    if is_pg_trigger(&source, trigger_msg::FINAL_IMMUTABLE) {
                        LedgerError::FinalImmutable {
                            out_refund_no: out_refund_no.clone(),
                            source: EngineError::Postgres(source),
                        }
                    } else {
                        LedgerError::Postgres { op: OP, source }
                    }
                })?;
            refund(&db.query_one(OP, REFUND_FOR_UPDATE.as_str(), &[&no])?)
        })
    }

    /// Clears a refund's review flag, pending or final, audited as `clear_flag` with the flag
    /// it replaced. Refuses a refund that is not flagged.
    pub fn clear_flag(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "clear flag";
        let now = ms(now);
        let no = out_refund_no.as_str();
        self.write(OP, |db| {
            let flag = db.query_opt(
                OP,
                "SELECT review_flag, review_reason, flagged_at FROM refunds
                  WHERE out_refund_no = $1 FOR UPDATE",
                &[&no],
            )?;
            let Some(flag) = flag else {
                return Err(LedgerError::NotFound {
                    out_refund_no: out_refund_no.clone(),
                });
            };
            if flag.get::<_, i64>(0) == 0 {
                return Err(LedgerError::NotFlagged {
                    out_refund_no: out_refund_no.clone(),
                });
            }
            let flagged_at: Option<Timestamp> = flag.get(2);
            let detail = serde_json::json!({
                "review_reason": flag.get::<_, Option<String>>(1),
                "flagged_at": flagged_at.map(format_ts),
            })
            .to_string();
            db.execute(
                OP,
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, reason, detail)
                 VALUES ($1, $2, 'clear_flag', $3, $4, $5)",
                &[&now, &actor, &no, &reason, &detail],
            )?;
            db.execute(
                OP,
                "UPDATE refunds SET review_flag = 0, review_reason = NULL, flagged_at = NULL
                  WHERE out_refund_no = $1",
                &[&no],
            )?;
            Ok(())
        })
    }

    /// Marks an unresolved discrepancy resolved (who, when, how), audited.
    pub fn resolve_discrepancy(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "resolve discrepancy";
        let now = ms(now);
        self.write(OP, |db| {
            let open = db.query_opt(
                OP,
                "SELECT out_refund_no FROM discrepancies
                  WHERE id = $1 AND resolved_at IS NULL FOR UPDATE",
                &[&id],
            )?;
            let Some(open) = open else {
                return Err(LedgerError::DiscrepancyNotOpen { id });
            };
            let no: String = open.get(0);
            let detail = format!("{{\"discrepancy\":{id}}}");
            db.execute(
                OP,
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, reason, detail)
                 VALUES ($1, $2, 'resolve_discrepancy', $3, $4, $5)",
                &[&now, &actor, &no, &reason, &detail],
            )?;
            db.execute(
                OP,
                "UPDATE discrepancies SET resolved_at = $2, resolved_by = $3, resolution = $4
                  WHERE id = $1 AND resolved_at IS NULL",
                &[&id, &now, &actor, &reason],
            )?;
            Ok(())
        })
    }

    /// Asks the daemons to end a halt (`resume`): the audit row, and the newest sweep then.
    pub fn request_resume(
        &self,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<ResumeRequest, LedgerError> {
        const OP: &str = "record resume request";
        let now = ms(now);
        self.write(OP, |db| {
            let action_id: i64 = db
                .query_one(
                    OP,
                    "INSERT INTO operator_actions (at, actor, action, reason)
                     VALUES ($1, $2, 'resume', $3) RETURNING id",
                    &[&now, &actor, &reason],
                )?
                .get(0);
            let after_sweep: i64 = db
                .query_one(OP, "SELECT coalesce(max(id), 0) FROM sweeps", &[])?
                .get(0);
            Ok(ResumeRequest {
                action_id,
                after_sweep,
            })
        })
    }
}

/// The refund row, locked, if it exists and is still pending.
fn pending_row(
    db: &mut Db<'_>,
    no: &OutRefundNo,
    op: &'static str,
) -> Result<RefundRow, LedgerError> {
    let row = db
        .query_opt(op, REFUND_FOR_UPDATE.as_str(), &[&no.as_str()])?
        .ok_or_else(|| LedgerError::NotFound {
            out_refund_no: no.clone(),
        })?;
    let row = refund(&row)?;
    if row.status != RefundStatus::Pending {
        return Err(LedgerError::AlreadyFinal {
            out_refund_no: no.clone(),
            status: row.status,
        });
    }
    Ok(row)
}

/// Resets one pending refund's backoff and makes it due now, after auditing the values it
/// replaces. A live lease is kept: the node querying the refund right now records its attempt
/// first, so no two nodes ever query it at once.
fn retry_one(
    db: &mut Db<'_>,
    row: &RefundRow,
    actor: &str,
    now: Timestamp,
    op: &'static str,
) -> Result<(), LedgerError> {
    let no = row.out_refund_no.as_str();
    let detail = serde_json::json!({
        "attempts": row.attempts,
        "next_query_at": row.next_query_at.map(format_ts),
        "unknown_since": row.unknown_since.map(format_ts),
        "review_reason": row.review_reason.map(|r| r.as_str()),
    })
    .to_string();
    db.execute(
        op,
        "INSERT INTO operator_actions (at, actor, action, out_refund_no, detail)
         VALUES ($1, $2, 'retry_now', $3, $4)",
        &[&now, &actor, &no, &detail],
    )?;
    db.execute(
        op,
        "UPDATE refunds
            SET next_query_at = $2, attempts = 0, unknown_since = NULL,
                review_flag = 0, review_reason = NULL, flagged_at = NULL
          WHERE out_refund_no = $1 AND status = 'REFUND_PENDING'",
        &[&no, &now],
    )?;
    Ok(())
}
