//! Ledger errors: one typed enum that keeps every engine's cause as its source (`Sqlite` and
//! `Postgres` name the operation), plus the `is_refusal` classifier the binary maps to its
//! "ledger refused" exit code. There is no busy classifier: a statement that still finds the
//! file locked after the busy timeout fails like any other, and the daemon retries every failed
//! sweep alike, at its next tick. PostgreSQL's serialization failures and deadlocks (40001,
//! 40P01) are retried inside the engine ([`is_pg_retryable`]); what still fails is
//! `is_unavailable`.

use std::path::PathBuf;

use postgres::error::SqlState;
use rusqlite::ErrorCode;

use super::sqlite::SchemaDifference;
use crate::domain::{InvalidValue, OutRefundNo};

/// Messages the schema's triggers raise. Kept here so the mapping to typed errors and the
/// schema cannot drift apart silently (a unit test checks `schema.sql` contains each).
pub(crate) mod trigger_msg {
    /// `refunds_final_status_is_immutable`.
    pub const FINAL_IMMUTABLE: &str = "checus-reconciler: final refund status is immutable";
    /// `refunds_insert_is_not_replace`.
    pub const REFUND_EXISTS: &str = "checus-reconciler: refund already exists";
}

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The file could not be opened or created (missing directory, permissions, a directory
    /// in the way, ...).
    #[error("cannot open ledger {}", path.display())]
    Open {
        /// The ledger path.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// `open_existing` was asked for a file that does not exist.
    #[error("ledger {} does not exist", path.display())]
    Missing {
        /// The ledger path.
        path: PathBuf,
    },
    /// The file exists but is not an SQLite database at all.
    #[error("{} is not an SQLite database, so it is not a checus-reconciler ledger", path.display())]
    NotSqlite {
        /// The ledger path.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// An SQLite database that is not ours: it has tables but `user_version` 0, or claims our
    /// version without our tables. It is left untouched.
    #[error(
        "{} is an SQLite database but not a checus-reconciler ledger \
         (user_version {found}; a ledger has user_version {supported} and the ledger tables)",
        path.display()
    )]
    NotALedger {
        /// The ledger path.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i32,
        /// The version this build writes.
        supported: i32,
    },
    /// The ledger was written by a newer checus-reconciler.
    #[error(
        "ledger {} has schema version {found}, newer than this build supports ({supported}); \
         upgrade checus-reconciler",
        path.display()
    )]
    SchemaTooNew {
        /// The ledger path.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i32,
        /// The version this build reads and writes.
        supported: i32,
    },
    /// A schema version this build has never known (negative, or otherwise not a version we
    /// ever released).
    #[error(
        "ledger {} has unknown schema version {found}; this build supports version {supported}",
        path.display()
    )]
    UnknownSchema {
        /// The ledger path.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i32,
        /// The version this build reads and writes.
        supported: i32,
    },
    /// The ledger has an older schema version that this build can migrate, and the command
    /// only opens ledgers as they are (the read and operator commands): the operator runs
    /// `checus-reconciler migrate` (or `init`, or restarts the daemon) first.
    #[error(
        "ledger {} has schema version {found}, older than this build's ({supported}); \
         upgrade it first with `checus-reconciler migrate --ledger {}` (`init` and `run` \
         upgrade it too)",
        path.display(),
        path.display()
    )]
    NeedsMigration {
        /// The ledger path.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i32,
        /// The version this build reads and writes.
        supported: i32,
    },
    /// Upgrading an older ledger failed. The migration runs in one transaction, which rolled
    /// back: the ledger is exactly as it was.
    #[error(
        "cannot migrate ledger {} from schema version {from} to {to}: {step} failed; the \
         ledger is unchanged{}",
        path.display(),
        backup_note(backup.as_deref())
    )]
    MigrationFailed {
        /// The ledger path.
        path: PathBuf,
        /// The version the ledger has.
        from: i32,
        /// The version the migration was heading for.
        to: i32,
        /// What failed: "back up", a migration's name (e.g. `0002_sweeps_halt_code`), "commit".
        step: &'static str,
        /// The backup taken before migrating, once it exists.
        backup: Option<PathBuf>,
        /// What SQLite said (boxed: this variant would otherwise make every ledger `Result`
        /// larger, clippy::result_large_err).
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// A migration ran but its result failed the check before commit (a foreign key that no
    /// longer resolves); it was rolled back, so the ledger is exactly as it was.
    #[error(
        "cannot migrate ledger {} from schema version {from} to {to}: {detail}; the ledger is \
         unchanged{}",
        path.display(),
        backup_note(Some(backup))
    )]
    MigrationCheckFailed {
        /// The ledger path.
        path: PathBuf,
        /// The version the ledger has.
        from: i32,
        /// The version the migration was heading for.
        to: i32,
        /// The backup taken before migrating.
        backup: PathBuf,
        /// What the check found.
        detail: String,
    },
    /// The ledger holds a time that the schema version being migrated to refuses (a day or
    /// hour that does not exist, second 60, ...). Nothing was changed and no backup was taken;
    /// the operator corrects the value (README "Upgrading the ledger") and migrates again.
    #[error(
        "cannot migrate ledger {} from schema version {from} to {to}: {table} row {row} has \
         {column} = {}, which is not a real instant in the ledger's form \
         (YYYY-MM-DDTHH:MM:SS.mmmZ); the ledger is unchanged. Correct that value, then migrate \
         again (README \"Upgrading the ledger\")",
        path.display(),
        printable(value)
    )]
    UnrealInstant {
        /// The ledger path.
        path: PathBuf,
        /// The version the ledger has.
        from: i32,
        /// The version the migration was heading for.
        to: i32,
        /// The table holding the value.
        table: &'static str,
        /// The row's rowid (the `id` column of every ledger table).
        row: i64,
        /// The column holding the value.
        column: &'static str,
        /// The value as an SQL literal (`quote()`), e.g. `'2026-02-31T03:28:23.092Z'`.
        value: String,
    },
    /// The ledger's schema is not the one schema.sql defines: a table (its columns or
    /// CHECKs), an index or a trigger is missing or was changed, so the guarantees the schema
    /// gives every writer may no longer hold. Refused, unchanged; `verify-ledger` lists all.
    #[error(
        "ledger {} does not have the schema this build defines (schema.sql): {}; its \
         guarantees may no longer hold, so it is refused. Restore the schema objects (README \
         \"Checking the ledger's guarantees\"); `checus-reconciler verify-ledger` lists what \
         differs",
        path.display(),
        differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    SchemaAltered {
        /// The ledger path.
        path: PathBuf,
        /// Every object that is missing or differs, in schema.sql's order.
        differences: Vec<SchemaDifference>,
    },
    /// The ledger cannot be written here: its file system is mounted read-only, or this user
    /// may not write the file or create `<ledger>-wal` and `<ledger>-shm` beside it. Refused
    /// for every command that writes (the daemon first of all); the read commands open it
    /// read-only instead ([`Ledger::open_for_reading`](super::SqliteLedger::open_for_reading)).
    #[error(
        "ledger {} is read-only here (a read-only file system, or this user may not write the \
         file or create its -wal and -shm files beside it); `run` and the other commands that \
         change the ledger need it writable, while status, list, show, export and the other \
         read commands still work on it",
        path.display()
    )]
    ReadOnly {
        /// The ledger path.
        path: PathBuf,
        /// What SQLite said, when it was SQLite that found out (`None`: SQLite opened the file
        /// read-only because it could not open it for writing).
        #[source]
        source: Option<rusqlite::Error>,
    },
    /// The ledger cannot be written here, and its `-wal` file holds changes that are not yet in
    /// the ledger file. SQLite reads those only through `<ledger>-shm`, which cannot be created
    /// here, and an immutable open would silently show the ledger without them: refused rather
    /// than shown stale.
    #[error(
        "ledger {} cannot be read here: {} holds changes not yet copied into the ledger file, \
         and SQLite cannot read them without writing beside the ledger (read-only file system \
         or directory); reading the ledger file alone would show stale data. Copy the ledger \
         together with its -wal file to a writable directory and read the copy there",
        path.display(),
        wal.display()
    )]
    WalNotMerged {
        /// The ledger path.
        path: PathBuf,
        /// Its `-wal` file.
        wal: PathBuf,
    },
    /// A write was attempted through a ledger opened for reading; nothing was written.
    #[error("ledger {} was opened for reading only; {op} needs it opened for writing", path.display())]
    OpenedForReading {
        /// The ledger path.
        path: PathBuf,
        /// The write that was refused, e.g. "insert refund".
        op: &'static str,
    },
    /// The ledger's engine cannot do this at all (a file backup of a PostgreSQL ledger): the
    /// message says what to use instead. The binary exits 3 (the configuration's `ledger.url`
    /// chose that engine). Nothing was done.
    #[error("{what} is not available on a {engine} ledger: {instead}")]
    NotOnThisEngine {
        /// What was asked, e.g. "backup".
        what: &'static str,
        /// The engine, e.g. "PostgreSQL".
        engine: &'static str,
        /// What to use instead, e.g. "use pg_dump".
        instead: &'static str,
    },
    /// Another daemon of the same node name holds the node's lock on this PostgreSQL ledger
    /// (`worker.node_name`). The binary exits 2, as for a second daemon on an SQLite file.
    #[error(
        "another checus-reconciler daemon with node name {node} is already running on the \
         ledger {url} (it holds the node's lock); stop it first, or give this one another \
         worker.node_name"
    )]
    NodeRunning {
        /// The node name.
        node: String,
        /// `ledger.url`.
        url: String,
    },
    /// The daemon's session holding its node lock ended (the server restarted) and another
    /// daemon of the same node name took the lock before this one could take it again: this
    /// one stops, since two daemons of one name would share their leases.
    #[error(
        "the node lock of {node} on the ledger {url} was lost and another daemon of that node \
         name holds it now; stopping"
    )]
    NodeLockLost {
        /// The node name.
        node: String,
        /// `ledger.url`.
        url: String,
    },
    /// The connection could not be set up (pragmas, schema creation).
    #[error("cannot set up ledger {}: {step}", path.display())]
    Setup {
        /// The ledger path.
        path: PathBuf,
        /// Which step failed.
        step: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused WAL mode (for example on a file system without shared memory).
    #[error("ledger {} cannot use WAL journal mode (SQLite kept {mode:?})", path.display())]
    NotWal {
        /// The ledger path.
        path: PathBuf,
        /// The journal mode SQLite reported instead.
        mode: String,
    },
    /// A ledger statement failed.
    #[error("ledger: {op} failed")]
    Sqlite {
        /// What the ledger was doing, e.g. "record attempt".
        op: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The refund number is already in the ledger (or twice in one import).
    #[error("refund {out_refund_no} already exists in the ledger{}", at_row(*index))]
    DuplicateRefund {
        /// The duplicate refund number.
        out_refund_no: OutRefundNo,
        /// Position in the imported rows (0-based), for `import`.
        index: Option<usize>,
    },
    /// A refund value the ledger will not store.
    #[error("refund {out_refund_no} cannot be stored{}", at_row(*index))]
    InvalidRefund {
        /// The refund number.
        out_refund_no: OutRefundNo,
        /// Position in the imported rows (0-based), for `import`.
        index: Option<usize>,
        /// What is wrong.
        #[source]
        source: InvalidValue,
    },
    /// No such refund in the ledger.
    #[error("refund {out_refund_no} is not in the ledger")]
    NotFound {
        /// The refund number.
        out_refund_no: OutRefundNo,
    },
    /// The refund is final and the ledger refused to change its outcome.
    #[error("refund {out_refund_no} is final; its outcome can no longer change")]
    FinalImmutable {
        /// The refund number.
        out_refund_no: OutRefundNo,
        /// The trigger's refusal.
        #[source]
        source: EngineError,
    },
    /// The PostgreSQL server could not be reached, or refused the login.
    #[error("cannot connect to the PostgreSQL ledger {url}")]
    PgConnect {
        /// `ledger.url` (it holds no password).
        url: String,
        /// What the client said.
        #[source]
        source: postgres::Error,
    },
    /// The TLS handshake with the PostgreSQL server failed on rustls's side: most often its
    /// certificate is not one the roots vouch for, or is not for the host `ledger.url` names.
    #[error(
        "TLS to the PostgreSQL ledger {url} was refused: the server's certificate is checked \
         against {roots} and the host name in ledger.url (set ledger.ca_file to the CA that \
         signed it, or sslmode=disable in ledger.url to connect without TLS)"
    )]
    PgTls {
        /// `ledger.url`.
        url: String,
        /// Where the roots came from.
        roots: super::postgres::Roots,
        /// What the client said (rustls's refusal is in its chain).
        #[source]
        source: postgres::Error,
    },
    /// `ledger.ca_file` cannot serve as the roots when the ledger opens (it was fine when the
    /// configuration was loaded, or the target was built by hand).
    #[error("ledger.ca_file {} of the PostgreSQL ledger {url}", path.display())]
    PgCaFile {
        /// `ledger.url`.
        url: String,
        /// `ledger.ca_file`.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: super::postgres::CaFileError,
    },
    /// No `ledger.ca_file`, TLS may be used (`sslmode` is not `disable`), and the system has no
    /// root certificate rustls can use.
    #[error(
        "no system root certificate could be loaded for TLS to the PostgreSQL ledger {url}: \
         set ledger.ca_file, or sslmode=disable in ledger.url"
    )]
    PgNoSystemRoots {
        /// `ledger.url`.
        url: String,
        /// The first error loading them, if one was reported.
        #[source]
        source: Option<rustls_native_certs::Error>,
    },
    /// rustls refused the TLS settings themselves (the provider's protocol versions).
    #[error("cannot set up TLS for the PostgreSQL ledger {url}")]
    PgTlsSetup {
        /// `ledger.url`.
        url: String,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// `ledger.password` could not be read (its file, variable or credential).
    #[error("cannot read the password of the PostgreSQL ledger {url}")]
    PgPassword {
        /// `ledger.url`.
        url: String,
        /// Why (names `ledger.password`, never the value).
        #[source]
        source: Box<crate::config::ConfigError>,
    },
    /// The PostgreSQL database (its first `search_path` schema) holds no ledger where one is
    /// needed, or holds tables that are not one. Nothing was changed.
    #[error("PostgreSQL ledger {url}: {detail}")]
    PgNotALedger {
        /// `ledger.url`.
        url: String,
        /// What was found, and what to do.
        detail: String,
    },
    /// The PostgreSQL ledger lacks objects schema.postgres.sql creates (or has a trigger
    /// disabled), so its guarantees may no longer hold: refused, unchanged.
    #[error(
        "PostgreSQL ledger {url} does not have the schema this build defines \
         (schema.postgres.sql): {}; its guarantees may no longer hold, so it is refused; \
         `checus-reconciler verify-ledger` lists what differs",
        differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    PgSchemaAltered {
        /// `ledger.url`.
        url: String,
        /// Each object that is missing, or a trigger that is disabled (altered).
        differences: Vec<SchemaDifference>,
    },
    /// A node name that breaks schema version 9's rule (1 to 64 of `[A-Za-z0-9._-]`), given
    /// for a claim or as this ledger's node. Nothing was written.
    #[error("node name {name:?} is not 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidNodeName {
        /// The name as given.
        name: String,
    },
    /// A PostgreSQL ledger statement failed.
    #[error("ledger: {op} failed")]
    Postgres {
        /// What the ledger was doing, e.g. "record attempt".
        op: &'static str,
        /// What the server (or the client) said.
        #[source]
        source: postgres::Error,
    },
    /// No such sweep.
    #[error("sweep {id} is not in the ledger")]
    SweepNotFound {
        /// The sweep id.
        id: i64,
    },
    /// An operator command that needs a pending refund named a final one. Nothing was written:
    /// a final outcome never changes.
    #[error("refund {out_refund_no} is already final ({status}); a final outcome never changes")]
    AlreadyFinal {
        /// The refund number.
        out_refund_no: OutRefundNo,
        /// Its final status.
        status: crate::domain::RefundStatus,
    },
    /// `clear-flag` named a refund that is not flagged.
    #[error("refund {out_refund_no} is not flagged for review")]
    NotFlagged {
        /// The refund.
        out_refund_no: OutRefundNo,
    },
    /// `webhooks redeliver` named an event id the ledger does not have.
    #[error("webhook event {event_id} is not in the ledger")]
    WebhookEventNotFound {
        /// The event id as given.
        event_id: String,
    },
    /// `webhooks redeliver` named an event that is still pending (the daemon delivers it).
    #[error(
        "webhook event {event_id} is still pending: the daemon delivers it; only a delivered or dead event can be redelivered"
    )]
    WebhookEventPending {
        /// The event id.
        event_id: String,
    },
    /// No such discrepancy, or it is already resolved.
    #[error("discrepancy {id} is not in the ledger or is already resolved")]
    DiscrepancyNotOpen {
        /// The discrepancy id.
        id: i64,
    },
    /// A file the ledger was asked to create (backup, prune archive) could not be written.
    #[error("cannot write {}", path.display())]
    File {
        /// The file that could not be written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A backup or archive target already exists; it is never overwritten.
    #[error("{} already exists; it is never overwritten", path.display())]
    TargetExists {
        /// The existing file, left as it was.
        path: PathBuf,
    },
    /// The backup copy did not check out (integrity or schema version).
    #[error("backup {} failed its check: {detail}", path.display())]
    BackupCheck {
        /// The backup file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A stored value does not parse. Never a panic: the row is reported, not guessed at.
    #[error("ledger row {out_refund_no}: column {column} is corrupt: {detail}")]
    CorruptRow {
        /// The refund number as stored.
        out_refund_no: String,
        /// The column whose value does not parse.
        column: &'static str,
        /// What is wrong with the value.
        detail: String,
    },
}

/// The engine's own error behind a typed refusal ([`LedgerError::FinalImmutable`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// SQLite's.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL's.
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
}

fn backup_note(backup: Option<&std::path::Path>) -> String {
    backup
        .map(|b| format!(" (backup taken first: {})", b.display()))
        .unwrap_or_default()
}

/// `value` with control characters escaped, so a stored value cannot drive the terminal.
fn printable(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn at_row(index: Option<usize>) -> String {
    index.map(|i| format!(" (row {i})")).unwrap_or_default()
}

impl LedgerError {
    /// True when the ledger file itself was refused (missing, unopenable, not SQLite, not
    /// ours, a schema this build does not know or that lost its guarantees, one that needs or
    /// failed a migration, read-only where a write was asked for, a `-wal` that cannot be read
    /// here; a PostgreSQL server whose TLS certificate is not vouched for, an unreadable
    /// `ledger.ca_file`, no roots): the operator must act, retrying won't help (exit 4).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Open { .. }
                | Self::Missing { .. }
                | Self::NotSqlite { .. }
                | Self::NotALedger { .. }
                | Self::SchemaTooNew { .. }
                | Self::UnknownSchema { .. }
                | Self::NeedsMigration { .. }
                | Self::MigrationFailed { .. }
                | Self::MigrationCheckFailed { .. }
                | Self::UnrealInstant { .. }
                | Self::SchemaAltered { .. }
                | Self::NotWal { .. }
                | Self::ReadOnly { .. }
                | Self::WalNotMerged { .. }
                | Self::OpenedForReading { .. }
                | Self::PgPassword { .. }
                | Self::PgTls { .. }
                | Self::PgCaFile { .. }
                | Self::PgNoSystemRoots { .. }
                | Self::PgTlsSetup { .. }
                | Self::PgNotALedger { .. }
                | Self::PgSchemaAltered { .. }
        )
    }
}

impl LedgerError {
    /// True when the ledger refused a write because of this one row (a CHECK, a trigger, a
    /// NOT NULL or UNIQUE constraint) or the row read back wrong: another row's write would
    /// still succeed. False for the ledger or the disk failing as a whole (I/O, full disk,
    /// locks, a read-only file), which no row can be blamed for.
    pub fn is_row_refusal(&self) -> bool {
        match self {
            Self::CorruptRow { .. } => true,
            Self::Sqlite {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            } => f.code == ErrorCode::ConstraintViolation,
            // Class 23 (a CHECK, NOT NULL, UNIQUE, foreign key), class 22 (a value the column
            // cannot take), or a trigger's RAISE (P0001): this row's fault.
            Self::Postgres { source, .. } => source.code().is_some_and(|c| {
                c.code().starts_with("23")
                    || c.code().starts_with("22")
                    || *c == SqlState::RAISE_EXCEPTION
            }),
            _ => false,
        }
    }
}

impl LedgerError {
    /// True when the ledger cannot take a write *now* but may later: another writer held the
    /// lock past the busy timeout, or the disk is full. The HTTP API answers 503 (try again).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Sqlite {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            } => matches!(
                f.code,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull
            ),
            Self::PgConnect { .. } => true,
            Self::Postgres { source, .. } => is_pg_unavailable(source),
            _ => false,
        }
    }
}

/// True when `e` is the RAISE of the trigger whose message is `msg`.
pub(crate) fn is_trigger(e: &rusqlite::Error, msg: &str) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(text)) => {
            f.code == ErrorCode::ConstraintViolation && text.contains(msg)
        }
        _ => false,
    }
}

/// True when `e` is a UNIQUE or PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        }
        _ => false,
    }
}

/// True when `e` is the RAISE of the PostgreSQL trigger whose message is `msg`
/// (schema.postgres.sql raises schema.sql's texts, SQLSTATE P0001).
pub(crate) fn is_pg_trigger(e: &postgres::Error, msg: &str) -> bool {
    e.as_db_error()
        .is_some_and(|d| *d.code() == SqlState::RAISE_EXCEPTION && d.message().contains(msg))
}

/// True when `e` is a UNIQUE or PRIMARY KEY violation (23505).
pub(crate) fn is_pg_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// True for a serialization failure (40001) or a deadlock (40P01): PostgreSQL aborted the
/// transaction for another's sake, and running it again is the documented answer.
pub(crate) fn is_pg_retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// True when the server cannot take the work now but may later: the connection is gone
/// (class 08, a closed client, a shutdown), the server is short of resources (class 53, a
/// full disk) or a conflict outlived the engine's retries.
fn is_pg_unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O error of the client, the connection is gone.
        None => e.as_db_error().is_none(),
        Some(c) => {
            let c = c.code();
            c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
        }
    }
}

impl LedgerError {
    /// True when this is a PostgreSQL serialization failure or deadlock (see
    /// [`is_pg_retryable`]): the engine runs the transaction again.
    pub(crate) fn is_pg_retryable(&self) -> bool {
        matches!(self, Self::Postgres { source, .. } if is_pg_retryable(source))
    }
}

impl<T> During<T> for Result<T, postgres::Error> {
    fn during(self, op: &'static str) -> Result<T, LedgerError> {
        self.map_err(|source| LedgerError::Postgres { op, source })
    }
}

/// Attaches the operation to a rusqlite error.
pub(crate) trait During<T> {
    /// Wraps the error as [`LedgerError::Sqlite`] naming `op`.
    fn during(self, op: &'static str) -> Result<T, LedgerError>;
}

impl<T> During<T> for Result<T, rusqlite::Error> {
    fn during(self, op: &'static str) -> Result<T, LedgerError> {
        self.map_err(|source| LedgerError::Sqlite { op, source })
    }
}
