//! Nodes and claim leases: the worker's claim, which leases the due refunds it returns to its
//! node in the same transaction; when the next refund this node may claim falls due; the
//! daemons' `nodes` rows (start, heartbeat, clean stop) and their read for `status`.
//!
//! On SQLite one daemon runs per file (the daemon's file lock), so a lease mostly records who
//! works on what; the code path is the one an engine shared by several daemons relies on.

use rusqlite::params;

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::rows::{RawRefund, select_each};
use super::types::{Cell, NodeRow, NodeStart, Readout, SkipList, limit_arg, ts_text};
use crate::domain::{NodeName, OutRefundNo, RefundState, Timestamp};

/// The claim: the due query ([`super::read::DUE`]) leaving out refunds under a lease that
/// ends later than now, this node's own too (a refund in flight; the leases a previous run
/// left are ended at the node's start, those a sweep did not send by `release_claims`).
/// `status = 'REFUND_PENDING'` stays a literal, so `refunds_due` applies.
pub(crate) const CLAIM_DUE: &str = "\
    SELECT out_refund_no, refund_trade_no, out_trade_no, amount, currency, status, created_at,
           notified_at, finalized_at, final_source, refund_finish_time, next_query_at, attempts,
           unknown_since, last_attempt_at, last_outcome, last_error, review_flag, review_reason,
           flagged_at, id
      FROM refunds
     WHERE status = 'REFUND_PENDING' AND next_query_at <= ?1
       AND review_reason IS NOT 'row_unreadable' AND review_reason IS NOT 'row_unwritable'
       AND (claimed_by IS NULL OR claimed_until <= ?1)
     ORDER BY next_query_at, id
     LIMIT ?2";

/// Ends every lease a node holds (at its start: a previous run's claims, none in flight).
/// The literal status lets the partial index `refunds_due` serve.
const RELEASE_NODE: &str = "UPDATE refunds SET claimed_by = NULL, claimed_until = NULL
                              WHERE status = 'REFUND_PENDING' AND claimed_by = ?1";

/// [`RELEASE_NODE`] in the caller's transaction.
fn release_node(
    tx: &rusqlite::Transaction<'_>,
    op: &'static str,
    node: &NodeName,
) -> Result<usize, LedgerError> {
    tx.prepare_cached(RELEASE_NODE)
        .during(op)?
        .execute(params![node.as_str()])
        .during(op)
}

impl SqliteLedger {
    /// Names the node whose attempts this connection records (`attempts.node`): the worker's
    /// connection is its node's.
    pub fn set_node(&mut self, node: Option<NodeName>) {
        self.node = node;
    }

    /// The node [`SqliteLedger::set_node`] named.
    pub(super) fn node(&self) -> Option<&str> {
        self.node.as_ref().map(NodeName::as_str)
    }

    /// The worker's claim: pending refunds due at `now` that no other node holds a live lease
    /// on, most overdue first, at most `limit`, each leased to `node` until `lease_until` in
    /// the same transaction. Rows that cannot be read come back in `unreadable` and are not
    /// leased (the worker flags them). Costs O(due + leased by others) on `refunds_due`.
    pub fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        node: &NodeName,
        lease_until: Timestamp,
    ) -> Result<Readout<RefundState>, LedgerError> {
        const OP: &str = "claim due refunds";
        let now_text = ts_text(now);
        let until = ts_text(lease_until);
        self.write(OP, |tx| {
            let rows =
                select_each::<RawRefund>(tx, OP, CLAIM_DUE, params![now_text, limit_arg(limit)])?;
            let read = Readout::of(rows);
            let mut lease = tx
                .prepare_cached(
                    "UPDATE refunds SET claimed_by = ?2, claimed_until = ?3
                      WHERE out_refund_no = ?1 AND status = 'REFUND_PENDING'",
                )
                .during(OP)?;
            for row in &read.rows {
                lease
                    .execute(params![row.out_refund_no.as_str(), node.as_str(), until])
                    .during(OP)?;
            }
            Ok(read.map(|row| super::read::state_of(&row)))
        })
    }

    /// Ends every lease `node` holds (none of its queries in flight): due again at once.
    pub fn release_node_claims(&self, node: &NodeName) -> Result<usize, LedgerError> {
        const OP: &str = "release the node's claims";
        self.write(OP, |tx| release_node(tx, OP, node))
    }

    /// Ends `node`'s leases on the pending refunds `numbers` (claimed and not sent): due
    /// again at once. Returns how many were released.
    pub fn release_claims(
        &self,
        node: &NodeName,
        numbers: &[OutRefundNo],
    ) -> Result<usize, LedgerError> {
        const OP: &str = "release claims";
        if numbers.is_empty() {
            return Ok(0);
        }
        self.write(OP, |tx| {
            let mut release = tx
                .prepare_cached(
                    "UPDATE refunds SET claimed_by = NULL, claimed_until = NULL
                      WHERE out_refund_no = ?1 AND claimed_by = ?2",
                )
                .during(OP)?;
            let mut n = 0;
            for no in numbers {
                n += release
                    .execute(params![no.as_str(), node.as_str()])
                    .during(OP)?;
            }
            Ok(n)
        })
    }

    /// When the next pending refund `node` may claim falls due (`None`: nothing scheduled),
    /// passing rows flagged unusable and those in `skip`: its `next_query_at`, or, when a
    /// lease on it (any node's) ends later, the lease's end. With no `node`, leases are not
    /// looked at. Walks `refunds_due` from its start, past the leased rows that end later
    /// than a row already found.
    pub fn next_due_at_for(
        &self,
        skip: &SkipList,
        node: Option<&NodeName>,
    ) -> Result<Option<Timestamp>, LedgerError> {
        const OP: &str = "read next due time";
        let mut stmt = self.conn.prepare_cached(super::read::NEXT_DUE).during(OP)?;
        let mut rows = stmt.query([]).during(OP)?;
        let cell = Cell {
            out_refund_no: "(next due)",
        };
        let mut best: Option<Timestamp> = None;
        while let Some(r) = rows.next().during(OP)? {
            let (text, id, no): (String, i64, String) = (
                r.get(0).during(OP)?,
                r.get(1).during(OP)?,
                r.get(2).during(OP)?,
            );
            if skip.contains(id, &no) {
                continue;
            }
            // A time that does not parse is due now: the sweep claims the row and flags it.
            let due = cell
                .ts("next_query_at", &text)
                .unwrap_or(Timestamp::MIN_UTC);
            if best.is_some_and(|b| due >= b) {
                break; // every later row is due later still
            }
            let claimed_by: Option<String> = r.get(3).during(OP)?;
            let claimed_until: Option<String> = r.get(4).during(OP)?;
            // Any live lease counts, this node's own too: the claim leaves it out.
            let leased = node.is_some() && claimed_by.is_some();
            let lease_end = claimed_until
                .filter(|_| leased)
                .and_then(|t| cell.ts("claimed_until", &t).ok());
            let at = lease_end.map_or(due, |end| end.max(due));
            best = Some(best.map_or(at, |b| b.min(at)));
            if at == due {
                break;
            }
        }
        Ok(best)
    }

    /// Upserts the node's row at its start: host, pid, version, `started_at` and
    /// `heartbeat_at` set to `node.at`, `stopped_at` cleared; the leases a previous run of the
    /// node left are ended (the daemon holds the node's lock: none is in flight).
    pub fn node_started(&self, node: &NodeStart) -> Result<(), LedgerError> {
        const OP: &str = "record node start";
        let at = ts_text(node.at);
        self.write(OP, |tx| {
            tx.prepare_cached(
                "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at, stopped_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, NULL)
                 ON CONFLICT (name) DO UPDATE
                    SET host = excluded.host, pid = excluded.pid, version = excluded.version,
                        started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                        stopped_at = NULL",
            )
            .during(OP)?
            .execute(params![
                node.name.as_str(),
                node.host,
                i64::from(node.pid),
                node.version,
                at
            ])
            .during(OP)?;
            release_node(tx, OP, &node.name)?;
            Ok(())
        })
    }

    /// Records the node's heartbeat at `at` (never before its start, whatever the clock did).
    /// Returns false when the node has no row (an operator removed it).
    pub fn node_heartbeat(&self, name: &NodeName, at: Timestamp) -> Result<bool, LedgerError> {
        const OP: &str = "record node heartbeat";
        self.write(OP, |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE nodes SET heartbeat_at = max(?2, started_at) WHERE name = ?1",
                )
                .during(OP)?
                .execute(params![name.as_str(), ts_text(at)])
                .during(OP)?;
            Ok(changed == 1)
        })
    }

    /// Records the node's clean stop at `at` (its last heartbeat too).
    pub fn node_stopped(&self, name: &NodeName, at: Timestamp) -> Result<(), LedgerError> {
        const OP: &str = "record node stop";
        self.write(OP, |tx| {
            tx.prepare_cached(
                "UPDATE nodes SET heartbeat_at = max(?2, started_at),
                        stopped_at = max(?2, started_at)
                  WHERE name = ?1",
            )
            .during(OP)?
            .execute(params![name.as_str(), ts_text(at)])
            .during(OP)?;
            Ok(())
        })
    }

    /// Every node row, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, LedgerError> {
        const OP: &str = "list nodes";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, host, pid, version, started_at, heartbeat_at, stopped_at
                   FROM nodes ORDER BY name",
            )
            .during(OP)?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .during(OP)?;
        let mut out = Vec::new();
        for row in raw {
            let (name, host, pid, version, started, heartbeat, stopped) = row.during(OP)?;
            let label = format!("(node {name})");
            let cell = Cell {
                out_refund_no: &label,
            };
            out.push(NodeRow {
                started_at: cell.ts("started_at", &started)?,
                heartbeat_at: cell.ts("heartbeat_at", &heartbeat)?,
                stopped_at: cell.ts_opt("stopped_at", stopped.as_deref())?,
                name,
                host,
                pid,
                version,
            });
        }
        Ok(out)
    }
}
