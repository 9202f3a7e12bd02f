//! Opening a ledger: refuse files that are not ours before touching them (including a ledger
//! whose tables, indexes or triggers are not schema.sql's: `verify.rs`), set up the
//! connection (WAL, busy timeout, `synchronous=FULL`, foreign keys), apply the schema to a
//! new or empty file in one transaction, and upgrade an older ledger (`migrate.rs`) or refuse
//! it, as the caller chose.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use super::error::LedgerError;
use super::migrate::{self, MigrationReport, OLDEST_MIGRATABLE};
use super::verify;
use super::{BUSY_TIMEOUT, Ledger, SCHEMA_SQL, SCHEMA_VERSION};
use crate::domain::{Clock, SystemClock, Timestamp};

/// The tables a ledger must have (every version so far has these seven).
const LEDGER_TABLES: [&str; 7] = [
    "refunds",
    "attempts",
    "discrepancies",
    "notifications",
    "sweeps",
    "operator_actions",
    "prunes",
];

/// What the file is, judged before anything is written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No schema objects and `user_version` 0: a new or empty file.
    Empty,
    /// Our tables with a schema version this build reads (`SCHEMA_VERSION`) or can migrate
    /// (`OLDEST_MIGRATABLE..SCHEMA_VERSION`).
    Ledger {
        /// The file's `PRAGMA user_version`.
        version: i32,
    },
}

/// What opening does with a ledger of an older schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnOlder {
    /// Back it up and migrate it (`init`, `run`, `add`, `import`, `migrate`).
    Migrate {
        /// When, for the backup's name.
        now: Timestamp,
    },
    /// Refuse it with [`LedgerError::NeedsMigration`], unchanged (read and operator commands).
    Refuse,
}

impl Ledger {
    /// Opens the ledger at `path`, creating the file and applying the schema if it is new or
    /// empty, and migrating it (backup first, log line "ledger migrated") if it has an older
    /// schema version. Refuses (without changing it) a file that is not SQLite, an SQLite file
    /// that is not a ledger, a ledger of a newer or unknown schema version, and one whose
    /// tables, indexes or triggers are not schema.sql's ([`LedgerError::SchemaAltered`]).
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let now = SystemClock.now();
        Self::open_with(path, true, OnOlder::Migrate { now }).map(|(ledger, _)| ledger)
    }

    /// Opens an existing ledger; refuses a missing file (and does not create one), an empty
    /// file, and a ledger of an older schema version ([`LedgerError::NeedsMigration`]: the
    /// operator migrates on purpose, with a backup, rather than as a side effect of a read).
    /// For the read and operator commands.
    pub fn open_existing(path: &Path) -> Result<Ledger, LedgerError> {
        Self::refuse_missing(path)?;
        Self::open_with(path, false, OnOlder::Refuse).map(|(ledger, _)| ledger)
    }

    /// Opens an existing ledger and migrates it if it is older (`checus-reconciler migrate`);
    /// the report is `None` when it was already current.
    pub(super) fn open_and_migrate(
        path: &Path,
        now: Timestamp,
    ) -> Result<(Ledger, Option<MigrationReport>), LedgerError> {
        Self::refuse_missing(path)?;
        Self::open_with(path, false, OnOlder::Migrate { now })
    }

    /// [`LedgerError::Missing`] when nothing is at `path`.
    pub(super) fn refuse_missing(path: &Path) -> Result<(), LedgerError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LedgerError::Missing {
                path: path.to_owned(),
            }),
            // Anything else (permissions, a directory): let SQLite report it with its cause.
            _ => Ok(()),
        }
    }

    fn open_with(
        path: &Path,
        create: bool,
        older: OnOlder,
    ) -> Result<(Ledger, Option<MigrationReport>), LedgerError> {
        let owned = path.to_owned();
        // No URI flag: a path is a path, never a `file:` URI with options.
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| LedgerError::Open {
                path: owned.clone(),
                source,
            })?;
        let setup = |step: &'static str| {
            let path = owned.clone();
            move |source| LedgerError::Setup { path, step, source }
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(setup("set busy_timeout"))?;

        // Judge the file before changing anything: a foreign database keeps its journal mode.
        let found = probe(&conn, &owned)?;
        match (found, older) {
            (Found::Empty, _) if !create => {
                return Err(LedgerError::NotALedger {
                    path: owned,
                    found: 0,
                    supported: SCHEMA_VERSION,
                });
            }
            (Found::Ledger { version }, OnOlder::Refuse) if version < SCHEMA_VERSION => {
                return Err(LedgerError::NeedsMigration {
                    path: owned,
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            // A current ledger must still have every guarantee of schema.sql; judged before
            // WAL is switched on, so a file that only looks like a ledger stays untouched.
            (Found::Ledger { version }, _) if version == SCHEMA_VERSION => {
                verify::refuse_altered(&conn, &owned)?;
            }
            _ => {}
        }

        // Journal mode must be set outside a transaction and is persistent; the others are
        // per connection.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(setup("set journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::NotWal { path: owned, mode });
        }
        // FULL: a committed outcome must survive power loss, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(setup("set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(setup("set foreign_keys=ON"))?;

        let mut report = None;
        match (found, older) {
            (Found::Empty, _) => create_schema(&conn, &owned)?,
            (Found::Ledger { version }, OnOlder::Migrate { now }) if version < SCHEMA_VERSION => {
                report = migrate::upgrade(&conn, &owned, version, now)?;
                verify::refuse_altered(&conn, &owned)?;
            }
            _ => {}
        }
        Ok((Ledger { conn, path: owned }, report))
    }
}

/// Reads `user_version` and the schema objects and classifies the file.
pub(super) fn probe(conn: &Connection, path: &Path) -> Result<Found, LedgerError> {
    let not_sqlite_or = |step: &'static str| {
        let path = path.to_owned();
        move |source: rusqlite::Error| {
            if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
                LedgerError::NotSqlite { path, source }
            } else {
                LedgerError::Setup { path, step, source }
            }
        }
    };
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(not_sqlite_or("read user_version"))?;
    let objects: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            [],
            |r| r.get(0),
        )
        .map_err(not_sqlite_or("read the schema"))?;
    let path = path.to_owned();
    match version {
        0 if objects == 0 => Ok(Found::Empty),
        0 => Err(LedgerError::NotALedger {
            path,
            found: 0,
            supported: SCHEMA_VERSION,
        }),
        v if v > SCHEMA_VERSION => Err(LedgerError::SchemaTooNew {
            path,
            found: v,
            supported: SCHEMA_VERSION,
        }),
        v if v >= OLDEST_MIGRATABLE => {
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN \
                     ('refunds', 'attempts', 'discrepancies', 'notifications', 'sweeps', \
                     'operator_actions', 'prunes')",
                    [],
                    |r| r.get(0),
                )
                .map_err(not_sqlite_or("read the schema"))?;
            if tables == LEDGER_TABLES.len() as i64 {
                Ok(Found::Ledger { version: v })
            } else {
                Err(LedgerError::NotALedger {
                    path,
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
        }
        v => Err(LedgerError::UnknownSchema {
            path,
            found: v,
            supported: SCHEMA_VERSION,
        }),
    }
}

/// Applies the schema to an empty file in one IMMEDIATE transaction. Two processes opening
/// the same new file race here; the loser re-probes under the lock and finds the winner's
/// ledger.
fn create_schema(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let setup = |step: &'static str| {
        let path = path.to_path_buf();
        move |source| LedgerError::Setup { path, step, source }
    };
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(setup("begin schema transaction"))?;
    if probe(&tx, path)? == Found::Empty {
        tx.execute_batch(SCHEMA_SQL)
            .map_err(setup("apply schema.sql"))?;
    }
    tx.commit().map_err(setup("commit schema"))?;
    Ok(())
}
