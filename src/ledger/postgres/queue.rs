//! The worker's queue on PostgreSQL: the lease claim of due refunds (`FOR UPDATE SKIP LOCKED`,
//! `claimed_by`/`claimed_until`, schema version 10), due confirmations, the next wake-up, one
//! refund's state, and the watermarks the daemon follows (refunds finalized elsewhere, new
//! discrepancies, operator actions and `resume`).

use std::sync::LazyLock;

use super::rows::{REFUND_COLUMNS, refund_or_unreadable, state_of};
use super::write::refund_of;
use super::{PgLedger, ms};
use crate::domain::{OutRefundNo, RefundState, RefundStatus, Timestamp};
use crate::ledger::ResumeAction;
use crate::ledger::error::{During, LedgerError};
use crate::ledger::types::{
    LoggedDiscrepancy, Readout, RefundRow, SkipList, Watermark, limit_arg, ts_text,
};

/// The claim. The due rows are found by an ordered walk of the partial index `refunds_due`
/// that stops after `$2` rows, skipping rows another transaction has locked (SKIP LOCKED) and
/// rows under a live lease (another node's, or this node's own: a refund in flight); each is
/// leased to `$3` until `$4`, in the same statement. Two conditions make it O(limit), not O(due) (schema.postgres.sql, `refunds_due`):
/// the status is the literal 'REFUND_PENDING', and the transaction turns bitmap scans off.
/// Rows flagged unusable (row_unreadable, row_unwritable) are left out, as on SQLite.
pub(super) static CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS (
            SELECT id FROM refunds
             WHERE status = 'REFUND_PENDING' AND next_query_at <= $1
               AND (claimed_until IS NULL OR claimed_until <= $1)
               AND review_reason IS DISTINCT FROM 'row_unreadable'
               AND review_reason IS DISTINCT FROM 'row_unwritable'
             ORDER BY next_query_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         UPDATE refunds AS r SET claimed_by = $3, claimed_until = $4
           FROM due WHERE r.id = due.id
         RETURNING {}",
        returning()
    )
});

/// [`REFUND_COLUMNS`] of the row an `UPDATE refunds AS r ... RETURNING` changed.
fn returning() -> String {
    REFUND_COLUMNS
        .split(", ")
        .map(|c| format!("r.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PgLedger {
    /// Claims the pending, unflagged refunds due at `now` for `node` until `lease_until`, the
    /// longest-due first, at most `limit`: no other node claims them before the lease ends
    /// (when `node` dies, they return to the pool then) and an attempt's record releases it.
    /// Rows another transaction is claiming right now, or another node holds, are passed by,
    /// not waited for. A row that cannot be read comes back in `unreadable` (it is leased too,
    /// so the worker flags it).
    pub fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        node: &str,
        lease_until: Timestamp,
    ) -> Result<Readout<RefundState>, LedgerError> {
        const OP: &str = "claim due refunds";
        if !super::is_node_name(node) {
            return Err(LedgerError::InvalidNodeName {
                name: node.to_owned(),
            });
        }
        let (now, until, limit) = (ms(now), ms(lease_until), limit_arg(limit));
        self.write(OP, |db| {
            db.tx
                .batch_execute("SET LOCAL enable_bitmapscan = off")
                .map_err(|source| LedgerError::Postgres { op: OP, source })?;
            let rows = db.query(OP, CLAIM.as_str(), &[&now, &limit, &node, &until])?;
            let mut rows: Vec<_> = rows
                .iter()
                .map(|r| {
                    let key = (
                        r.try_get::<_, Option<Timestamp>>(11).ok().flatten(),
                        r.try_get::<_, i64>(20).unwrap_or(-1),
                    );
                    (key, refund_or_unreadable(r))
                })
                .collect();
            // RETURNING keeps no order: the longest-due first, as the claim chose them.
            rows.sort_by_key(|(key, _)| *key);
            Ok(Readout::of(rows.into_iter().map(|(_, r)| r).collect()).map(|row| state_of(&row)))
        })
    }

    /// Ends `node`'s leases on the refunds `numbers` it claimed but will not query
    /// (a batch cut short, a probe that needed one): they are due again at once, for any node.
    /// A lease another node holds is left alone. Returns how many were released.
    pub fn release_claims(
        &self,
        node: &str,
        numbers: &[OutRefundNo],
    ) -> Result<usize, LedgerError> {
        const OP: &str = "release claims";
        if numbers.is_empty() {
            return Ok(0);
        }
        let numbers: Vec<&str> = numbers.iter().map(OutRefundNo::as_str).collect();
        self.write(OP, |db| {
            let n = db.execute(
                OP,
                "UPDATE refunds SET claimed_by = NULL, claimed_until = NULL
                  WHERE claimed_by = $1 AND out_refund_no = ANY($2)",
                &[&node, &numbers],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Final refunds whose confirming query is due (finalized `confirm_after` ago or more, not
    /// confirmed, not pushed back past `now`), oldest first, at most `limit`, claimed the way a
    /// final refund can be (it holds no lease, by the schema's CHECK): under `FOR UPDATE SKIP
    /// LOCKED`, each one's `confirm_at` is pushed to `lease_until` in the same statement, so no
    /// other node finds it due until then. Recording the confirming attempt settles
    /// `confirm_at` (done, or the answer's next time); a node that dies leaves it due again at
    /// `lease_until`.
    pub fn claim_confirmations(
        &self,
        now: Timestamp,
        confirm_after: std::time::Duration,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Readout<(RefundStatus, RefundState)>, LedgerError> {
        const OP: &str = "claim due confirmations";
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH due AS (
                    SELECT id, confirm_at AS was FROM refunds
                     WHERE confirm_at IS NOT NULL AND confirm_at <= $1 AND finalized_at <= $2
                       AND review_reason IS DISTINCT FROM 'row_unreadable'
                       AND review_reason IS DISTINCT FROM 'row_unwritable'
                     ORDER BY confirm_at, id LIMIT $3
                     FOR UPDATE SKIP LOCKED)
                 UPDATE refunds AS r SET confirm_at = $4
                   FROM due WHERE r.id = due.id
                 RETURNING {}, due.was",
                returning()
            )
        });
        let settled =
            now - chrono::TimeDelta::from_std(confirm_after).unwrap_or(chrono::TimeDelta::MAX);
        let (now, settled, limit, until) =
            (ms(now), ms(settled), limit_arg(limit), ms(lease_until));
        self.write(OP, |db| {
            let rows = db.query(OP, SQL.as_str(), &[&now, &settled, &limit, &until])?;
            // RETURNING keeps no order: by the confirm_at the claim found, then id.
            let mut rows: Vec<_> = rows
                .iter()
                .map(|r| {
                    let key = (
                        r.try_get::<_, Option<Timestamp>>(21).ok().flatten(),
                        r.try_get::<_, i64>(20).unwrap_or(-1),
                    );
                    (key, refund_or_unreadable(r))
                })
                .collect();
            rows.sort_by_key(|(key, _)| *key);
            Ok(Readout::of(rows.into_iter().map(|(_, r)| r).collect())
                .map(|row| (row.status, state_of(&row))))
        })
    }

    /// When this node can next claim a pending refund not in `skip` (`None`: nothing
    /// scheduled), passing rows flagged unusable: the earliest `next_query_at`, or, for a row
    /// under a lease (any node's: a claim leaves out live leases, its own too), the later of
    /// that and the lease's end, so the daemon does not wake up for a row it cannot claim.
    /// Walks `refunds_due` in due order, a page at a time, past the leased rows until the
    /// first unleased one: O(leased rows ahead of it), never the whole queue.
    pub fn next_due_at(&self, skip: &SkipList) -> Result<Option<Timestamp>, LedgerError> {
        const OP: &str = "read next due time";
        /// Rows fetched per round trip of the walk.
        const PAGE: i32 = 256;
        self.read(OP, |db| {
            let stmt = db.prepared(
                OP,
                "SELECT next_query_at, id, out_refund_no, claimed_by, claimed_until FROM refunds
                  WHERE status = 'REFUND_PENDING' AND next_query_at IS NOT NULL
                    AND review_reason IS DISTINCT FROM 'row_unreadable'
                    AND review_reason IS DISTINCT FROM 'row_unwritable'
                  ORDER BY next_query_at, id",
            )?;
            // A portal, read a page at a time: the walk goes on past leased rows (another
            // node's batch in flight can be thousands long) until an unleased one, and no
            // further.
            let portal = db.tx.bind(&stmt, &[]).during(OP)?;
            let mut best: Option<Timestamp> = None;
            loop {
                let rows = db.tx.query_portal(&portal, PAGE).during(OP)?;
                if rows.is_empty() {
                    return Ok(best);
                }
                for r in &rows {
                    let (due, id, no): (Timestamp, i64, String) = (r.get(0), r.get(1), r.get(2));
                    if skip.contains(id, &no) {
                        continue;
                    }
                    if best.is_some_and(|b| due >= b) {
                        return Ok(best); // every later row is due later still
                    }
                    let claimed_by: Option<String> = r.get(3);
                    let claimed_until: Option<Timestamp> = r.get(4);
                    // Any live lease counts, this node's own too: the claim leaves it out.
                    let at = claimed_until
                        .filter(|_| claimed_by.is_some())
                        .map_or(due, |end| end.max(due));
                    best = Some(best.map_or(at, |b| b.min(at)));
                    if at == due {
                        return Ok(best);
                    }
                }
            }
        })
    }

    /// One refund's row.
    pub fn refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundRow>, LedgerError> {
        self.read("read refund", |db| refund_of(db, out_refund_no.as_str()))
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

    /// Refunds finalized by anyone but the daemons' queries after the watermark, oldest first,
    /// at most `limit`, with the watermark past all of them.
    pub fn finalized_elsewhere_since(
        &self,
        after: Option<&Watermark>,
        limit: usize,
    ) -> Result<(Readout<RefundRow>, Option<Watermark>), LedgerError> {
        const OP: &str = "list refunds finalized elsewhere";
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {REFUND_COLUMNS} FROM refunds
                  WHERE finalized_at IS NOT NULL
                    AND ($1::timestamptz IS NULL OR (finalized_at, id) > ($1, $2))
                    AND final_source IS DISTINCT FROM 'query'
                  ORDER BY finalized_at, id LIMIT $3"
            )
        });
        let (at, id) = match after {
            Some(w) => (Some(self.watermark_time(w)?), w.id),
            None => (None, 0),
        };
        let limit = limit_arg(limit);
        self.read(OP, |db| {
            let rows = db.query(OP, SQL.as_str(), &[&at, &id, &limit])?;
            let mut last = after.cloned();
            let mut results = Vec::with_capacity(rows.len());
            for r in &rows {
                last = Some(Watermark {
                    finalized_at: ts_text(r.get::<_, Timestamp>(8)),
                    id: r.get(20),
                });
                results.push(refund_or_unreadable(r));
            }
            Ok((Readout::of(results), last))
        })
    }

    /// The newest finalization watermark.
    pub fn finalized_watermark(&self) -> Result<Option<Watermark>, LedgerError> {
        const OP: &str = "read finalization watermark";
        self.read(OP, |db| {
            Ok(db
                .query_opt(
                    OP,
                    "SELECT finalized_at, id FROM refunds WHERE finalized_at IS NOT NULL
                      ORDER BY finalized_at DESC, id DESC LIMIT 1",
                    &[],
                )?
                .map(|r| Watermark {
                    finalized_at: ts_text(r.get::<_, Timestamp>(0)),
                    id: r.get(1),
                }))
        })
    }

    /// A watermark's instant (it holds the ledger's text form, whichever engine made it).
    fn watermark_time(&self, w: &Watermark) -> Result<Timestamp, LedgerError> {
        crate::domain::parse_ts(&w.finalized_at).map_err(|e| LedgerError::CorruptRow {
            out_refund_no: "(watermark)".to_owned(),
            column: "finalized_at",
            detail: format!("{:?}: {e}", w.finalized_at),
        })
    }

    /// The discrepancies recorded after the id `after`, oldest first, at most `limit`.
    pub fn discrepancies_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LoggedDiscrepancy>, LedgerError> {
        const OP: &str = "list new discrepancies";
        let limit = limit_arg(limit);
        self.read(OP, |db| {
            let rows = db.query(
                OP,
                "SELECT id, out_refund_no, source, kind, expected, observed
                   FROM discrepancies WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| LoggedDiscrepancy {
                    id: r.get(0),
                    out_refund_no: r.get(1),
                    source: r.get(2),
                    kind: r.get(3),
                    expected: r.get(4),
                    observed: r.get(5),
                })
                .collect())
        })
    }

    /// The newest discrepancy id (0: none).
    pub fn discrepancy_watermark(&self) -> Result<i64, LedgerError> {
        self.max_id(
            "read discrepancy watermark",
            "SELECT coalesce(max(id), 0) FROM discrepancies",
        )
    }

    /// The newest operator action id (0: none).
    pub fn operator_actions_watermark(&self) -> Result<i64, LedgerError> {
        self.max_id(
            "read operator actions watermark",
            "SELECT coalesce(max(id), 0) FROM operator_actions",
        )
    }

    fn max_id(&self, op: &'static str, sql: &'static str) -> Result<i64, LedgerError> {
        self.read(op, |db| Ok(db.query_one(op, sql, &[])?.get(0)))
    }

    /// The latest `resume` an operator requested after the action id `after`, if any.
    pub fn resume_requested_after(&self, after: i64) -> Result<Option<ResumeAction>, LedgerError> {
        const OP: &str = "read resume requests";
        self.read(OP, |db| {
            Ok(db
                .query_opt(
                    OP,
                    "SELECT id, actor FROM operator_actions
                      WHERE id > $1 AND action = 'resume' ORDER BY id DESC LIMIT 1",
                    &[&after],
                )?
                .map(|r| ResumeAction {
                    id: r.get(0),
                    actor: r.get(1),
                }))
        })
    }
}
