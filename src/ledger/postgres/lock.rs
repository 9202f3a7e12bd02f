//! The per-node guard on PostgreSQL: one daemon per node name on a shared ledger. A session
//! advisory lock on a key derived from the node name, held on a connection of its own for the
//! daemon's life. The server drops it when that session ends (the daemon died, or the server
//! restarted), so no stale lock survives a crash; a daemon whose session was lost takes it
//! again on its next check, or stops if another daemon of the same name took it meanwhile.
//!
//! Why a lock and not only the `nodes` row: two daemons configured with the same node name
//! would share its leases, and a lease is what keeps one refund from being queried by two
//! processes at once. A heartbeat row can only guess that its writer died; the server knows.

use postgres::Config;

use super::Conn;

use super::open::connect;
use super::tls::Tls;
use crate::domain::NodeName;
use crate::ledger::PostgresTarget;
use crate::ledger::error::{During, LedgerError};

/// The lock's key: the node name hashed by the server into 64 bits, under a prefix no other
/// advisory lock of the ledger uses.
const TRY_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('checus-reconciler node ' || $1, 0))";

/// Whether a session other than the caller's holds the lock of any node in `nodes`:
/// `pg_locks` shows a bigint advisory key as `classid` (high half) and `objid` (low half),
/// `objsubid` 1.
const ANY_HELD_ELSEWHERE: &str = "\
    SELECT EXISTS (
      SELECT 1 FROM pg_locks l JOIN nodes n
          ON ((l.classid::bigint << 32) | l.objid::bigint)
             = hashtextextended('checus-reconciler node ' || n.name, 0)
       WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND l.pid <> pg_backend_pid())";

/// The node lock, held on its own connection while the value lives.
pub struct NodeLock {
    client: Conn,
    config: Config,
    /// TLS as the ledger's own connections use it.
    tls: Tls,
    url: String,
    node: NodeName,
    /// Taken again since [`NodeLock::take_retaken`] last asked: the session was lost.
    retaken: bool,
}

impl std::fmt::Debug for NodeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLock")
            .field("url", &self.url)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeLock {
    /// Takes the lock of `node` on the ledger `target` names, or says another daemon of that
    /// name holds it ([`LedgerError::NodeRunning`]).
    pub fn acquire(target: &PostgresTarget, node: &NodeName) -> Result<Self, LedgerError> {
        let (config, tls, url) = super::PgLedger::client_config(target)?;
        let client = Conn::new(connect(&config, &tls, &url, false)?);
        let mut lock = Self {
            client,
            config,
            tls,
            url,
            node: node.clone(),
            retaken: false,
        };
        lock.take()?;
        Ok(lock)
    }

    /// The node this lock is for.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// `Ok` while this daemon holds the lock. A session the server ended (a restart, a
    /// network cut) is opened again and the lock taken again; while the server cannot be
    /// reached the error says so ([`LedgerError::is_unavailable`]: wait and check again).
    /// [`LedgerError::NodeLockLost`] when another daemon of this name took it meanwhile.
    pub fn check(&mut self) -> Result<(), LedgerError> {
        const OP: &str = "check the node lock";
        if !self.client.is_closed() && self.client.simple_query("SELECT 1").is_ok() {
            return Ok(());
        }
        self.client = Conn::new(connect(&self.config, &self.tls, &self.url, false)?);
        match self.take() {
            Err(LedgerError::NodeRunning { node, .. }) => Err(LedgerError::NodeLockLost {
                node,
                url: self.url.clone(),
            }),
            other => {
                if other.is_ok() {
                    self.retaken = true;
                    tracing::warn!(node = %self.node, url = %self.url, op = OP,
                        "node lock taken again after the ledger connection was lost");
                }
                other
            }
        }
    }

    /// Whether the lock was taken again (its session lost) since the last call. The daemon
    /// asks between sweeps, when none of its queries is in flight, and then ends the leases
    /// its lost session held: their answers, if any came, were not recorded.
    pub fn take_retaken(&mut self) -> bool {
        std::mem::take(&mut self.retaken)
    }

    /// `pg_try_advisory_lock` on this session.
    fn take(&mut self) -> Result<(), LedgerError> {
        const OP: &str = "take the node lock";
        let got: bool = self
            .client
            .query_one(TRY_LOCK, &[&self.node.as_str()])
            .during(OP)?
            .get(0);
        if got {
            Ok(())
        } else {
            Err(LedgerError::NodeRunning {
                node: self.node.to_string(),
                url: self.url.clone(),
            })
        }
    }
}

impl super::PgLedger {
    /// Whether a daemon of any node the ledger knows holds its node lock right now (the
    /// server's word, not a heartbeat's guess): what `retry-now` and `resume` tell the
    /// operator. One query, however many nodes.
    pub fn any_node_lock_held(&self) -> Result<bool, LedgerError> {
        const OP: &str = "look for the node locks";
        self.read(OP, |db| {
            Ok(db.query_one(OP, ANY_HELD_ELSEWHERE, &[])?.get::<_, bool>(0))
        })
    }
}
