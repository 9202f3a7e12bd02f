//! The `nodes` table on PostgreSQL: each daemon's start, heartbeats and clean stop, and
//! `status`'s list of them. The same statements as SQLite's (`sqlite/nodes.rs`), with
//! `greatest` for SQLite's two-argument `max`.

use super::rows::get;
use super::{PgLedger, ms};
use crate::domain::{NodeName, Timestamp};
use crate::ledger::error::LedgerError;
use crate::ledger::types::{NodeRow, NodeStart};

/// Ends every lease a node holds; the literal status lets the partial index `refunds_due`
/// serve.
const RELEASE_NODE: &str = "UPDATE refunds SET claimed_by = NULL, claimed_until = NULL
                             WHERE status = 'REFUND_PENDING' AND claimed_by = $1";

impl PgLedger {
    /// Ends every lease `node` holds (none of its queries in flight). Returns how many.
    pub fn release_node_claims(&self, node: &str) -> Result<usize, LedgerError> {
        const OP: &str = "release the node's claims";
        self.write(OP, |db| {
            let n = db.execute(OP, RELEASE_NODE, &[&node])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Upserts the node's row at its start: host, pid, version, start and first heartbeat;
    /// a previous clean stop is cleared, and the leases a previous run left are ended.
    pub fn node_started(&self, node: &NodeStart) -> Result<(), LedgerError> {
        const OP: &str = "record node start";
        let at = ms(node.at);
        let pid = i64::from(node.pid);
        self.write(OP, |db| {
            db.execute(
                OP,
                "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at, stopped_at)
                 VALUES ($1, $2, $3, $4, $5, $5, NULL)
                 ON CONFLICT (name) DO UPDATE
                    SET host = excluded.host, pid = excluded.pid, version = excluded.version,
                        started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                        stopped_at = NULL",
                &[&node.name.as_str(), &node.host, &pid, &node.version, &at],
            )?;
            // A previous run's leases: it is gone (this daemon holds the node's lock).
            db.execute(OP, RELEASE_NODE, &[&node.name.as_str()])?;
            Ok(())
        })
    }

    /// Records the node's heartbeat at `at` (never before its start, whatever the clock did).
    /// Returns false when the node has no row (an operator removed it).
    pub fn node_heartbeat(&self, name: &NodeName, at: Timestamp) -> Result<bool, LedgerError> {
        const OP: &str = "record node heartbeat";
        let at = ms(at);
        self.write(OP, |db| {
            let changed = db.execute(
                OP,
                "UPDATE nodes SET heartbeat_at = greatest($2, started_at) WHERE name = $1",
                &[&name.as_str(), &at],
            )?;
            Ok(changed == 1)
        })
    }

    /// Records the node's clean stop at `at` (its last heartbeat too).
    pub fn node_stopped(&self, name: &NodeName, at: Timestamp) -> Result<(), LedgerError> {
        const OP: &str = "record node stop";
        let at = ms(at);
        self.write(OP, |db| {
            db.execute(
                OP,
                "UPDATE nodes SET heartbeat_at = greatest($2, started_at),
                        stopped_at = greatest($2, started_at)
                  WHERE name = $1",
                &[&name.as_str(), &at],
            )?;
            Ok(())
        })
    }

    /// Every node row, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, LedgerError> {
        const OP: &str = "list nodes";
        self.read(OP, |db| {
            let rows = db.query(
                OP,
                "SELECT name, host, pid, version, started_at, heartbeat_at, stopped_at
                   FROM nodes ORDER BY name",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    let label = "(node)";
                    Ok(NodeRow {
                        name: get(r, 0, label, "name")?,
                        host: get(r, 1, label, "host")?,
                        pid: get(r, 2, label, "pid")?,
                        version: get(r, 3, label, "version")?,
                        started_at: get(r, 4, label, "started_at")?,
                        heartbeat_at: get(r, 5, label, "heartbeat_at")?,
                        stopped_at: get(r, 6, label, "stopped_at")?,
                    })
                })
                .collect()
        })
    }
}
