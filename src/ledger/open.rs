//! Opening a ledger: refuse files that are not ours before touching them, set up the
//! connection (WAL, busy timeout, `synchronous=FULL`, foreign keys), and apply the schema to a
//! new or empty file in one transaction.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use super::error::LedgerError;
use super::{BUSY_TIMEOUT, Ledger, SCHEMA_SQL, SCHEMA_VERSION};

/// The tables a version-1 ledger must have.
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
enum Found {
    /// No schema objects and `user_version` 0: a new or empty file.
    Empty,
    /// Our schema version with our tables.
    Ledger,
}

impl Ledger {
    /// Opens the ledger at `path`, creating the file and applying the schema if it is new or
    /// empty. Refuses (without changing it) a file that is not SQLite, an SQLite file that is
    /// not a ledger, and a ledger of another schema version.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        Self::open_with(path, true)
    }

    /// Opens an existing ledger; refuses a missing file (and does not create one) and an
    /// empty file. For commands that only read.
    pub fn open_existing(path: &Path) -> Result<Ledger, LedgerError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LedgerError::Missing {
                    path: path.to_owned(),
                });
            }
            // Anything else (permissions, a directory): let SQLite report it with its cause.
            _ => {}
        }
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Ledger, LedgerError> {
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
        if found == Found::Empty && !create {
            return Err(LedgerError::NotALedger {
                path: owned,
                found: 0,
                supported: SCHEMA_VERSION,
            });
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

        if found == Found::Empty {
            migrate(&conn, &owned)?;
        }
        Ok(Ledger { conn, path: owned })
    }
}

/// Reads `user_version` and the schema objects and classifies the file.
fn probe(conn: &Connection, path: &Path) -> Result<Found, LedgerError> {
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
        SCHEMA_VERSION => {
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
                Ok(Found::Ledger)
            } else {
                Err(LedgerError::NotALedger {
                    path,
                    found: version,
                    supported: SCHEMA_VERSION,
                })
            }
        }
        v if v > SCHEMA_VERSION => Err(LedgerError::SchemaTooNew {
            path,
            found: v,
            supported: SCHEMA_VERSION,
        }),
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
fn migrate(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
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
