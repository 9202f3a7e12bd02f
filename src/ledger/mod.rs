//! The ledger: one interface ([`LedgerStore`], its parts in `store.rs`), the engines behind it
//! (`sqlite/`, the embedded default), and the engine-neutral values every engine reads and
//! writes. Every SQL statement of the project lives under this module (the DDL in
//! `schema.sql`).
//!
//! Callers hold a [`Ledger`], opened from the config's target with [`open`]; they never name
//! an engine. Every method is synchronous and one short transaction, so callers run it on a
//! blocking thread. The rules that protect money (final is final, no deletes, append-only
//! logs, how a notification is applied) are the schema's CHECKs and triggers, so they bind
//! every writer, including the merchant's app (see [`contract`] for its SQL).
//!
//! Files:
//! - `store.rs`: the interface, one trait per kind of caller (the worker's queue, intake,
//!   reads, the daemon's node presence, operator actions, the webhook outbox, maintenance);
//! - `sqlite/`: the SQLite engine ([`SqliteLedger`]), its opening, verification and
//!   migrations;
//! - `postgres/`: the PostgreSQL engine ([`PgLedger`]) of a ledger several daemons share;
//! - `types.rs`: records, typed rows, the enums stored as TEXT; `health.rs` (`status`'s
//!   findings), `timeline.rs` (`explain`'s events), `webhooks.rs` (the outbox's values);
//! - `error.rs`; `contract.rs`/`contract.sql` (the merchant app's SQL).
//!
//! The ledger stores and reads; it does not render. Timelines and health come back as typed
//! values that the CLI words (`crate::report`); the only text made here is what columns store
//! (`attempts.decision`, an interrupted sweep's `halted_reason`).

#![warn(missing_docs)]
pub mod contract;
mod error;
mod health;
pub mod postgres;
pub mod sqlite;
mod store;
mod timeline;
mod types;
mod webhooks;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

pub use error::{EngineError, LedgerError};
pub use health::{Finding, Health};
pub use postgres::{CaFileError, PgLedger, Roots, read_ca_file};
pub use sqlite::{
    Difference, ObjectKind, SCHEMA_SQL, SchemaCheck, SchemaDifference, SqliteLedger, migrate,
};
pub use store::{
    Intake, LedgerStore, Maintenance, NodePresence, OperatorActions, Outbox, Reads, WorkQueue,
};
pub use timeline::{EventKind, Happened, Timeline, TimelineEvent};
pub use types::{
    Applied, AttemptRow, AuditFilter, BackupReport, DiscrepancyRow, DiscrepancySource,
    IMPORT_PROGRESS_EVERY, LedgerGauges, ListFilter, LoggedDiscrepancy, MAX_ERROR_CHARS, NodeRow,
    NodeStart, NotificationEffect, NotificationRecord, NotificationRow, OpenDiscrepancy,
    OperatorAction, OperatorActionRow, PruneCounts, PruneReport, PrunedRefund, Readout,
    RecordedKind, RefundDetail, RefundRow, Registered, ResumeAction, ResumeRequest, SkipList,
    StatusSummary, SweepCounts, SweepEnd, SweepRow, UnreadableRow, Watermark,
};
pub use webhooks::{
    DeliveryOutcome, DeliveryResult, DueWebhook, WebhookEventRow, WebhookFilter, WebhookState,
};

/// The SQLite schema version this build reads and writes (`PRAGMA user_version`). Older
/// ledgers are migrated to it. PostgreSQL counts its own versions
/// ([`postgres::PG_SCHEMA_VERSION`]): version 11 changed only how SQLite lays out new webhook
/// event ids, so a PostgreSQL ledger stayed at 10.
pub const SCHEMA_VERSION: i32 = 11;

/// The PostgreSQL form of the ledger's DDL (`schema.postgres.sql`, schema version 10),
/// applied in one transaction to an empty schema.
pub const SCHEMA_POSTGRES_SQL: &str = include_str!("../../schema.postgres.sql");

/// Which ledger to open: the config's `ledger.path` (or a command's `--ledger`), or its
/// `ledger.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresTarget),
}

/// A PostgreSQL ledger as the config names it: `ledger.url` (checked by `postgres::Config`,
/// with no password in it) and where the password comes from, if the server asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    /// `ledger.url`, as written (it holds no password: the config refuses one).
    pub url: String,
    /// `ledger.password`: a `file:`, `env:` or `credential:` source, read when connecting.
    pub password: Option<crate::config::KeySource>,
    /// `ledger.ca_file`: the PEM certificates that vouch for the server's TLS certificate
    /// instead of the system's roots (read when the config loads and again when connecting).
    pub ca_file: Option<PathBuf>,
}

impl LedgerTarget {
    /// The schema version this build keeps a ledger of this engine at.
    pub fn schema_version(&self) -> i32 {
        match self {
            Self::Sqlite(_) => SCHEMA_VERSION,
            Self::Postgres(_) => postgres::PG_SCHEMA_VERSION,
        }
    }

    /// The SQLite file at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite(path.into())
    }

    /// The engine's name, as messages say it.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// The SQLite file, for what only a file has (its lock, its backups); `None` on an engine
    /// that keeps no file here.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }
}

impl fmt::Display for LedgerTarget {
    /// How messages name the ledger: the file's path, or the URL (which holds no password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(pg) => f.write_str(&pg.url),
        }
    }
}

/// What a ledger is opened for; each engine refuses what its mode refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the ledger if it is new, migrate an older one (`init`, `run`, `add`, `import`).
    Create,
    /// An existing, current ledger, for writing (the operator commands that write).
    Existing,
    /// An existing, current ledger for the read commands: nothing can be written through it
    /// (on SQLite also a file this user may not write, or one on a read-only file system).
    Reading,
}

/// An open ledger of any engine: what callers hold. It dereferences to the interface
/// ([`LedgerStore`]), so `ledger.status(now)` calls the engine.
pub struct Ledger {
    store: Box<dyn LedgerStore>,
    target: LedgerTarget,
}

/// Opens the ledger `target` names, for `mode`: the one way callers open a ledger.
pub fn open(target: &LedgerTarget, mode: OpenMode) -> Result<Ledger, LedgerError> {
    match target {
        LedgerTarget::Sqlite(path) => {
            let ledger = match mode {
                OpenMode::Create => SqliteLedger::open(path)?,
                OpenMode::Existing => SqliteLedger::open_existing(path)?,
                OpenMode::Reading => SqliteLedger::open_for_reading(path)?,
            };
            Ok(Ledger::from(ledger))
        }
        LedgerTarget::Postgres(pg) => Ok(Ledger {
            store: Box::new(PgLedger::open(pg, mode)?),
            target: target.clone(),
        }),
    }
}

/// What [`migrate_apply`] would do to the ledger `target` names, changing nothing
/// (`migrate --dry-run`).
pub fn migrate_plan(
    target: &LedgerTarget,
    now: crate::domain::Timestamp,
) -> Result<migrate::MigrationReport, LedgerError> {
    match target {
        LedgerTarget::Sqlite(path) => migrate::plan(path, now),
        LedgerTarget::Postgres(_) => Err(pg_nothing_to_migrate()),
    }
}

/// Upgrades the ledger `target` names to [`SCHEMA_VERSION`] (`migrate`): a backup first, one
/// transaction per upgrade.
pub fn migrate_apply(
    target: &LedgerTarget,
    now: crate::domain::Timestamp,
) -> Result<migrate::MigrationReport, LedgerError> {
    match target {
        LedgerTarget::Sqlite(path) => migrate::apply(path, now),
        LedgerTarget::Postgres(_) => Err(pg_nothing_to_migrate()),
    }
}

/// `migrate` of a PostgreSQL ledger: it is created at its first version (9) and no later one
/// exists yet, so there is nothing to upgrade.
fn pg_nothing_to_migrate() -> LedgerError {
    LedgerError::NotOnThisEngine {
        what: "migrate",
        engine: "PostgreSQL",
        instead: "a PostgreSQL ledger is created at this build's schema version, the first \
                  and only PostgreSQL version so far; there is nothing to migrate \
                  (verify-ledger checks it); take copies with pg_dump",
    }
}

/// Compares the ledger's tables, indexes and triggers with this build's schema, read-only
/// (`verify-ledger`).
pub fn verify(target: &LedgerTarget) -> Result<SchemaCheck, LedgerError> {
    match target {
        LedgerTarget::Sqlite(path) => SqliteLedger::verify(path),
        LedgerTarget::Postgres(pg) => PgLedger::verify(pg),
    }
}

impl Ledger {
    /// The target this ledger was opened from (its file on SQLite).
    pub fn target(&self) -> &LedgerTarget {
        &self.target
    }
}

impl From<SqliteLedger> for Ledger {
    fn from(ledger: SqliteLedger) -> Self {
        let target = LedgerTarget::Sqlite(ledger.path().to_owned());
        Self {
            store: Box::new(ledger),
            target,
        }
    }
}

impl Deref for Ledger {
    type Target = dyn LedgerStore;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl DerefMut for Ledger {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.store
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}
