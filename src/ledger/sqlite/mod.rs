//! The SQLite engine: the embedded default, one file shared with the merchant's application.
//! One [`SqliteLedger`] is one connection; rusqlite blocks, so callers run it on a blocking
//! thread. It implements the ledger interface ([`crate::ledger::LedgerStore`], in `store.rs`
//! here) with its inherent methods, which the SQLite tests call directly.
//!
//! The file is shared with the merchant's application, which writes to it concurrently. So:
//! - every public method is one short, self-contained transaction, and write transactions
//!   start with `BEGIN IMMEDIATE` (plus a 5 s busy timeout) so lock contention waits instead
//!   of failing with "database is locked";
//! - the rules that protect money (final is final, no deletes, append-only logs, how a
//!   notification is applied) are CHECKs and triggers in the schema, so they bind every
//!   writer, including the `sqlite3` shell; see [`crate::ledger::contract`] for the merchant's
//!   SQL.
//!
//! Files:
//! - `open.rs`: open, version check, connection setup, the read-only open of the read commands
//!   (immutable on a read-only file system); `verify.rs`: the check that the file
//!   still has schema.sql's tables, indexes and triggers (every open, `verify-ledger`);
//!   `migrate.rs` and `migrations/`: upgrading an older ledger (backup, one transaction per
//!   upgrade);
//! - `write.rs`: inserts, attempts, sweeps; `inbox.rs`: the daemon's notifications, grouped;
//!   `nodes.rs`: the worker's claim with its lease, the daemons' `nodes` rows;
//!   `read.rs`: due work, `status`, `list`, `show`;
//! - `rows.rs`: how every table's rows are read (read the stored values, then parse them);
//! - the operator commands: `views.rs` (`stuck`, `failed`, `export`, `discrepancies`),
//!   `timeline.rs` (`explain`'s typed events), `operator.rs` (`retry-now`, `resolve`,
//!   `resolve-discrepancy`), `audit.rs` (`audit`: the operator actions), `prune.rs`,
//!   `pruned.rs` (what a prune left to say about a refund it removed), `backup.rs`,
//!   `health.rs` (`status`'s findings), `resume.rs` (`resume`'s request and the daemon's
//!   watch for it), `webhooks.rs` (the webhook outbox: delivery, `webhooks`);
//! - `store.rs`: the ledger interface's traits, implemented by the methods above.

mod audit;
mod backup;
mod checks;
mod gauges;
pub(in crate::ledger) mod health;
mod inbox;
pub mod migrate;
mod nodes;
mod open;
mod operator;
mod prune;
pub(in crate::ledger) mod pruned;
mod read;
mod resume;
mod rows;
mod store;
pub(in crate::ledger) mod timeline;
mod verify;
mod views;
mod webhooks;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, Transaction, TransactionBehavior};

// The engine-neutral modules, named here so this engine's files reach them as `super::…`.
use super::error::{self, During, LedgerError};
use super::types;

pub use verify::{Difference, ObjectKind, SchemaCheck, SchemaDifference};

/// The only DDL of the SQLite engine, applied to new ledgers.
pub const SCHEMA_SQL: &str = include_str!("../../../schema.sql");

/// The schema version this build reads and writes (`PRAGMA user_version`).
/// Older ledgers are migrated to it (see [`migrate`]).
pub const SCHEMA_VERSION: i32 = super::SCHEMA_VERSION;

/// How long a statement waits for another writer's lock before failing with SQLITE_BUSY.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(5000);

/// An open SQLite ledger: one connection set up for WAL, `synchronous=FULL`, foreign keys and
/// a busy timeout (or, for the read commands, a read-only one:
/// [`SqliteLedger::open_for_reading`]).
#[derive(Debug)]
pub struct SqliteLedger {
    conn: Connection,
    path: PathBuf,
    /// Whether this ledger may be written through; checked before every write transaction.
    access: Access,
    /// The node whose attempts this connection records (`attempts.node`), set by
    /// [`SqliteLedger::set_node`]; `None`: none named.
    node: Option<crate::domain::NodeName>,
}

/// What an open ledger may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Reads and writes (`open`, `open_existing`): refused up front when the file or its
    /// directory cannot be written ([`LedgerError::ReadOnly`]).
    ReadWrite,
    /// Reads only (`open_for_reading`): a write is refused with
    /// [`LedgerError::OpenedForReading`] before SQLite is asked (whose own refusal, for an
    /// immutable connection, would only say "attempt to write a readonly database").
    ReadOnly,
}

impl SqliteLedger {
    /// The file this ledger was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: the write lock is taken up front (waiting
    /// up to the busy timeout), so the transaction can never fail half-way on lock upgrade.
    /// Rolled back if `f` fails or panics. Refused on a ledger opened for reading.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        if self.access == Access::ReadOnly {
            return Err(LedgerError::OpenedForReading {
                path: self.path.clone(),
                op,
            });
        }
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).during(op)?;
        let out = f(&tx)?;
        tx.commit().during(op)?;
        Ok(out)
    }

    /// Runs `f` in one read transaction, so every statement sees the same snapshot.
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred).during(op)?;
        let out = f(&tx)?;
        tx.commit().during(op)?;
        Ok(out)
    }
}
