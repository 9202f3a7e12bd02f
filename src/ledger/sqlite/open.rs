//! Opening a ledger: refuse files that are not ours before touching them (including a ledger
//! whose tables, indexes or triggers are not schema.sql's: `verify.rs`), set up the
//! connection (WAL, busy timeout, `synchronous=FULL`, foreign keys), apply the schema to a
//! new or empty file in one transaction, and upgrade an older ledger (`migrate.rs`) or refuse
//! it, as the caller chose.
//!
//! A ledger that cannot be written here (a read-only file system, or a file or directory this
//! user may not write) is refused by every writing open ([`LedgerError::ReadOnly`]), and still
//! read by the read commands ([`SqliteLedger::open_for_reading`]). SQLite reads a WAL-mode file
//! through `<ledger>-shm`, which it must be able to create; when it cannot, the file is opened
//! `immutable=1`, which reads the ledger file alone. That is sound only when `<ledger>-wal`
//! holds nothing (committed frames there would be ignored), so a non-empty one is refused
//! ([`LedgerError::WalNotMerged`]) rather than shown stale.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, MAIN_DB, OpenFlags, Transaction, TransactionBehavior};

use super::error::LedgerError;
use super::migrate::{self, MigrationReport, OLDEST_MIGRATABLE};
use super::verify;
use super::{Access, BUSY_TIMEOUT, SCHEMA_SQL, SCHEMA_VERSION, SqliteLedger};
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

impl SqliteLedger {
    /// Opens the ledger at `path`, creating the file and applying the schema if it is new or
    /// empty, and migrating it (backup first, log line "ledger migrated") if it has an older
    /// schema version. Refuses (without changing it) a file that is not SQLite, an SQLite file
    /// that is not a ledger, a ledger of a newer or unknown schema version, one whose
    /// tables, indexes or triggers are not schema.sql's ([`LedgerError::SchemaAltered`]), and
    /// one that cannot be written here ([`LedgerError::ReadOnly`]).
    pub fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        let now = SystemClock.now();
        Self::open_with(path, true, OnOlder::Migrate { now }, Access::ReadWrite)
            .map(|(ledger, _)| ledger)
    }

    /// Opens an existing ledger for writing; refuses a missing file (and does not create one),
    /// an empty file, a ledger of an older schema version ([`LedgerError::NeedsMigration`]: the
    /// operator migrates on purpose, with a backup, rather than as a side effect of a read),
    /// and one that cannot be written here ([`LedgerError::ReadOnly`]). For the operator
    /// commands that write.
    pub fn open_existing(path: &Path) -> Result<SqliteLedger, LedgerError> {
        Self::refuse_missing(path)?;
        Self::open_with(path, false, OnOlder::Refuse, Access::ReadWrite).map(|(ledger, _)| ledger)
    }

    /// Opens an existing ledger for the read commands, refusing what [`SqliteLedger::open_existing`]
    /// refuses (schema verification included) except a ledger that cannot be written here:
    /// that one is opened read-only, and `immutable=1` when SQLite cannot create the files
    /// beside it that WAL reading needs (a read-only file system). A non-empty `<ledger>-wal`
    /// is then refused ([`LedgerError::WalNotMerged`]). Every write through the returned
    /// ledger is refused ([`LedgerError::OpenedForReading`]).
    pub fn open_for_reading(path: &Path) -> Result<SqliteLedger, LedgerError> {
        Self::refuse_missing(path)?;
        match Self::open_with(path, false, OnOlder::Refuse, Access::ReadOnly) {
            Err(LedgerError::Setup { source, .. }) if cannot_write(&source) => {
                Self::open_immutable(path)
            }
            opened => opened.map(|(ledger, _)| ledger),
        }
    }

    /// The read commands' ledger on a file SQLite cannot read the usual way here: immutable
    /// ([`connect_immutable`]), judged as `open_existing` judges.
    fn open_immutable(path: &Path) -> Result<SqliteLedger, LedgerError> {
        let conn = connect_immutable(path)?;
        judge(&conn, path, false, OnOlder::Refuse)?;
        Ok(SqliteLedger {
            conn,
            path: path.to_owned(),
            access: Access::ReadOnly,
            node: None,
        })
    }

    /// Opens an existing ledger and migrates it if it is older (`checus-reconciler migrate`);
    /// the report is `None` when it was already current.
    pub(super) fn open_and_migrate(
        path: &Path,
        now: Timestamp,
    ) -> Result<(SqliteLedger, Option<MigrationReport>), LedgerError> {
        Self::refuse_missing(path)?;
        Self::open_with(path, false, OnOlder::Migrate { now }, Access::ReadWrite)
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

    /// [`SqliteLedger::set_up`], with a failure that says the ledger cannot be written turned into
    /// [`LedgerError::ReadOnly`] for a writing open. Only failures after the file was opened:
    /// SQLite could not open it at all for other reasons too (a missing directory).
    fn open_with(
        path: &Path,
        create: bool,
        older: OnOlder,
        access: Access,
    ) -> Result<(SqliteLedger, Option<MigrationReport>), LedgerError> {
        match Self::set_up(path, create, older, access) {
            Err(LedgerError::Setup { path, source, .. })
                if access == Access::ReadWrite && cannot_write(&source) =>
            {
                Err(LedgerError::ReadOnly {
                    path,
                    source: Some(source),
                })
            }
            opened => opened,
        }
    }

    /// Opens the file, judges it, sets the connection up, and creates or migrates the schema
    /// as `create` and `older` say; a writing open (`access`) first refuses a file SQLite could
    /// only open read-only.
    fn set_up(
        path: &Path,
        create: bool,
        older: OnOlder,
        access: Access,
    ) -> Result<(SqliteLedger, Option<MigrationReport>), LedgerError> {
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
        // SQLite opens a file it cannot open for writing read-only, without an error; a writer
        // learns it here rather than at its first write (the daemon: at its first sweep).
        if access == Access::ReadWrite
            && conn
                .is_readonly(MAIN_DB)
                .map_err(setup("ask whether the file is writable"))?
        {
            return Err(LedgerError::ReadOnly {
                path: owned,
                source: None,
            });
        }
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(setup("set busy_timeout"))?;

        // Judge the file before changing anything: a foreign database keeps its journal mode.
        let found = judge(&conn, &owned, create, older)?;

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
        // Statement and savepoint journals in memory: every recorded attempt runs in its own
        // savepoint, and once a transaction's sub-journal passed SQLite's 64 KiB spill size it
        // became a temp FILE written with one pwrite per page for the rest of the connection's
        // life (perf: 3.6 % of the daemon's CPU at 0 ms latency, BENCHMARKS.md figure 1). The
        // sub-journal only undoes a savepoint inside a live transaction; durability is the
        // WAL's, which this does not touch.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(setup("set temp_store=MEMORY"))?;

        let mut report = None;
        match (found, older) {
            (Found::Empty, _) => create_schema(&conn, &owned)?,
            (Found::Ledger { version }, OnOlder::Migrate { now }) if version < SCHEMA_VERSION => {
                report = migrate::upgrade(&conn, &owned, version, now)?;
                verify::refuse_altered(&conn, &owned)?;
            }
            _ => {}
        }
        let ledger = SqliteLedger {
            conn,
            path: owned,
            access,
            node: None,
        };
        Ok((ledger, report))
    }
}

/// Probes the file on `conn` and refuses what the caller may not open: an empty file unless it
/// may `create`, an older ledger when it must `Refuse` those, and a current ledger that lacks
/// or changed anything schema.sql defines (judged before WAL is switched on, so a file that
/// only looks like a ledger stays untouched).
fn judge(
    conn: &Connection,
    path: &Path,
    create: bool,
    older: OnOlder,
) -> Result<Found, LedgerError> {
    let found = probe(conn, path)?;
    match (found, older) {
        (Found::Empty, _) if !create => Err(LedgerError::NotALedger {
            path: path.to_owned(),
            found: 0,
            supported: SCHEMA_VERSION,
        }),
        (Found::Ledger { version }, OnOlder::Refuse) if version < SCHEMA_VERSION => {
            Err(LedgerError::NeedsMigration {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            })
        }
        (Found::Ledger { version }, _) if version == SCHEMA_VERSION => {
            verify::refuse_altered(conn, path)?;
            Ok(found)
        }
        _ => Ok(found),
    }
}

/// True when SQLite failed because the ledger cannot be written here: `SQLITE_READONLY` (any
/// extended code: the file, or a `-shm` it could only open read-only) or `SQLITE_CANTOPEN`
/// once the file itself was open (the `-wal` or `-shm` could not be created: EROFS, EACCES).
fn cannot_write(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

/// A connection that reads the ledger at `path` and writes nothing (`verify-ledger`): opened
/// read-only, or `immutable=1` when reading through SQLite's usual read-only open fails
/// because the files beside the ledger cannot be created (see [`connect_immutable`]). The
/// caller probes the file next.
pub(super) fn connect_read_only(path: &Path) -> Result<Connection, LedgerError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| LedgerError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| LedgerError::Setup {
            path: path.to_owned(),
            step: "set busy_timeout",
            source,
        })?;
    // The first read is where WAL reading needs `<ledger>-shm`. Any other outcome, a failure
    // included, is the probe's to judge and name.
    match conn.query_row("PRAGMA user_version", [], |_| Ok(())) {
        Err(e) if cannot_write(&e) => {
            drop(conn);
            connect_immutable(path)
        }
        _ => Ok(conn),
    }
}

/// Opens the ledger at `path` with `immutable=1`: read-only, no locks, no `-wal` or `-shm`.
/// SQLite then reads the ledger file alone and trusts that nothing changes it meanwhile, which
/// holds on a read-only file system. Refuses a non-empty `<ledger>-wal` first
/// ([`LedgerError::WalNotMerged`]): its committed frames would be ignored. (When `-shm` exists
/// too, the ordinary read-only open already read both, so this is a `-wal` whose `-shm` is
/// gone, e.g. a copy made without it.)
fn connect_immutable(path: &Path) -> Result<Connection, LedgerError> {
    let wal = sidecar(path, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(LedgerError::WalNotMerged {
            path: path.to_owned(),
            wal,
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(immutable_uri(path), flags).map_err(|source| LedgerError::Open {
        path: path.to_owned(),
        source,
    })
}

/// What follows `file:` in a URI for an absolute path: an empty authority, then the path.
const EMPTY_AUTHORITY: &str = "//";

/// `<path><suffix>`, e.g. the ledger's `-wal` file.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The `file:` URI that opens `path` immutable. Every byte other than an unreserved character
/// or `/` is percent-encoded, so `?`, `#`, `%`, spaces and non-UTF-8 bytes in the path stay
/// part of the path (SQLite decodes `%HH` there). An absolute path gets an empty authority
/// (`file:///...`), so one that starts with `//` is not read as a host name.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    if path.has_root() {
        uri.push_str(EMPTY_AUTHORITY);
    }
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::{Currency, NewRefund, OutRefundNo, RefundStatus, parse_ts};

    fn refund(no: &str) -> NewRefund {
        NewRefund {
            out_refund_no: OutRefundNo::parse(no).unwrap(),
            refund_trade_no: None,
            out_trade_no: None,
            amount: Decimal::from_str("12.50").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            status: RefundStatus::Pending,
            created_at: parse_ts("2026-01-01T00:00:00.000Z").unwrap(),
        }
    }

    /// A ledger holding R-1, closed again (so its `-wal` and `-shm` are gone), at `path`.
    fn closed_ledger(path: &Path) {
        SqliteLedger::open(path)
            .unwrap()
            .insert_refund(&refund("R-1"))
            .unwrap();
        assert!(
            !sidecar(path, "-wal").exists(),
            "the last close removes the -wal"
        );
    }

    fn is_r1(ledger: &SqliteLedger) -> bool {
        let no = OutRefundNo::parse("R-1").unwrap();
        ledger
            .show(&no)
            .unwrap()
            .is_some_and(|d| d.refund.out_refund_no == no)
    }

    #[test]
    fn the_immutable_uri_keeps_every_byte_of_the_path_part_of_the_path() {
        let cases: [(&[u8], &str); 7] = [
            (
                b"/var/lib/ledger.sqlite",
                "file:///var/lib/ledger.sqlite?immutable=1",
            ),
            (b"/tmp/a b/l", "file:///tmp/a%20b/l?immutable=1"),
            (
                b"/tmp/what?mode=rw#x",
                "file:///tmp/what%3Fmode%3Drw%23x?immutable=1",
            ),
            (b"/tmp/100%/l", "file:///tmp/100%25/l?immutable=1"),
            // Two leading slashes: the empty authority keeps "tmp" from becoming a host.
            (b"//tmp/l", "file:////tmp/l?immutable=1"),
            (b"rel/l~_-.sqlite", "file:rel/l~_-.sqlite?immutable=1"),
            (
                b"/tmp/\xc3\xa9\xff:&",
                "file:///tmp/%C3%A9%FF%3A%26?immutable=1",
            ),
        ];
        for (path, uri) in cases {
            assert_eq!(immutable_uri(Path::new(OsStr::from_bytes(path))), uri);
        }
    }

    #[test]
    fn an_immutable_open_reads_a_ledger_whose_path_looks_like_uri_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(OsStr::from_bytes(b"a b?mode=rwc#%41 \xff"));
        std::fs::create_dir(&odd).unwrap();
        let path = odd.join("ledger?.sqlite");
        closed_ledger(&path);
        let before = std::fs::read(&path).unwrap();
        let ledger = SqliteLedger::open_immutable(&path).unwrap();
        assert!(is_r1(&ledger));
        assert_eq!(ledger.path(), path);
        drop(ledger);
        // Nothing written or created: not the file, not a -wal or -shm, not a decoded name.
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let names: Vec<_> = std::fs::read_dir(&odd)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsStr::new("ledger?.sqlite")]);
    }

    #[test]
    fn a_write_through_a_ledger_opened_for_reading_is_refused_not_attempted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        closed_ledger(&path);
        let immutable = SqliteLedger::open_immutable(&path).unwrap();
        let readable = SqliteLedger::open_for_reading(&path).unwrap();
        for ledger in [&immutable, &readable] {
            match ledger.insert_refund(&refund("R-2")) {
                Err(
                    e @ LedgerError::OpenedForReading {
                        op: "insert refund",
                        ..
                    },
                ) => {
                    assert!(e.is_refusal());
                    assert!(e.to_string().contains("opened for reading only"), "{e}");
                }
                other => panic!("expected OpenedForReading, got {other:?}"),
            }
        }
        // Past the guard, SQLite itself refuses: an immutable connection is read-only.
        let raw = immutable
            .conn
            .execute("DELETE FROM refunds", [])
            .unwrap_err();
        assert_eq!(raw.sqlite_error_code(), Some(ErrorCode::ReadOnly));
        drop((immutable, readable));
        assert!(is_r1(&SqliteLedger::open_existing(&path).unwrap()));
    }

    #[test]
    fn an_immutable_open_refuses_a_wal_that_holds_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        // A second connection kept open: the writer's close is then not the last, so its
        // frames stay in the -wal, not yet copied into the ledger file.
        let keeper = SqliteLedger::open(&path).unwrap();
        assert!(!is_r1(&keeper));
        SqliteLedger::open_existing(&path)
            .unwrap()
            .insert_refund(&refund("R-1"))
            .unwrap();
        let wal = sidecar(&path, "-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        match SqliteLedger::open_immutable(&path) {
            Err(e @ LedgerError::WalNotMerged { .. }) => {
                assert!(e.is_refusal());
                assert!(e.to_string().contains(&wal.display().to_string()), "{e}");
            }
            other => panic!("expected WalNotMerged, got {other:?}"),
        }
        // Where the -shm can be used, reading goes the usual way and sees the frames.
        assert!(is_r1(&SqliteLedger::open_for_reading(&path).unwrap()));
        drop(keeper);
    }

    #[test]
    fn an_immutable_open_refuses_what_open_existing_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let altered = dir.path().join("altered.sqlite");
        closed_ledger(&altered);
        Connection::open(&altered)
            .unwrap()
            .execute_batch("DROP TRIGGER refunds_final_status_is_immutable")
            .unwrap();
        match SqliteLedger::open_immutable(&altered) {
            Err(LedgerError::SchemaAltered { differences, .. }) => {
                assert_eq!(differences.len(), 1, "{differences:?}");
                assert_eq!(differences[0].name, "refunds_final_status_is_immutable");
            }
            other => panic!("expected SchemaAltered, got {other:?}"),
        }
        let older = dir.path().join("older.sqlite");
        closed_ledger(&older);
        Connection::open(&older)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION - 1)
            .unwrap();
        assert!(matches!(
            SqliteLedger::open_immutable(&older),
            Err(LedgerError::NeedsMigration { found, .. }) if found == SCHEMA_VERSION - 1
        ));
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            SqliteLedger::open_immutable(&empty),
            Err(LedgerError::NotALedger { found: 0, .. })
        ));
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, "out_refund_no,amount\n".repeat(100)).unwrap();
        assert!(matches!(
            SqliteLedger::open_immutable(&junk),
            Err(LedgerError::NotSqlite { .. })
        ));
    }

    #[test]
    fn only_failures_that_say_the_ledger_cannot_be_written_are_read_only() {
        use rusqlite::ffi;
        let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        for code in [
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_CANTINIT,
            ffi::SQLITE_READONLY_RECOVERY,
            ffi::SQLITE_CANTOPEN,
        ] {
            assert!(cannot_write(&failure(code)), "{code}");
        }
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_FULL,
        ] {
            assert!(!cannot_write(&failure(code)), "{code}");
        }
        assert!(!cannot_write(&rusqlite::Error::InvalidQuery));
    }

    #[test]
    fn the_bundled_sqlite_keeps_no_global_memory_statistics() {
        // .cargo/config.toml passes SQLITE_DEFAULT_MEMSTATUS=0 to the bundled SQLite's build:
        // without it every sqlite3_malloc takes a process-wide mutex (BENCHMARKS.md).
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }
}
