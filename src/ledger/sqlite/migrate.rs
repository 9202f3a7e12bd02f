//! Upgrading an older ledger to this build's schema version, in place and online.
//!
//! `schema.sql` is always the whole current DDL for a new ledger; each later version comes
//! with one SQL file in `migrations/` that takes a ledger from the version before. An upgrade:
//! 1. copies the ledger next to itself (`VACUUM INTO`, online: the daemon's and the app's
//!    readers and writers carry on) to `<ledger>.v<from>.<UTC time>.bak`, never overwriting,
//!    and checks the copy;
//! 2. runs every migration it needs and sets `user_version` in ONE `BEGIN IMMEDIATE`
//!    transaction, so a crash or SIGKILL leaves either the old ledger or the new one (WAL
//!    commit is atomic), and a failure rolls back to the old one. The merchant's app waits
//!    on its busy timeout meanwhile: a rebuild of a sweeps table of 200,000 rows holds the
//!    lock well under its 5 s (tests/it/migrate.rs writes alongside one); 0003 rebuilds every
//!    table, about 3 s per 500,000 attempts (README "Upgrading the ledger" says so);
//! 3. logs "ledger migrated" with `from`, `to` and `backup`.
//!
//! `rusqlite_migration` does the `user_version` bookkeeping, but does not fit: every release
//! pins an older rusqlite (2.5.0 wants 0.39, 2.6.0 wants 0.40 and Rust 1.95 > our 1.89) and
//! two `libsqlite3-sys` cannot link; we also need the backup and the dry-run plan around it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use super::error::LedgerError;
use super::open::{Found, probe};
use super::{SCHEMA_VERSION, SqliteLedger};
use crate::domain::Timestamp;

/// The oldest schema version this build can migrate from.
pub const OLDEST_MIGRATABLE: i32 = 1;

/// One migration: the SQL that takes a ledger from version `to - 1` to `to`.
struct Migration {
    /// The version it leaves.
    to: i32,
    /// The file name without `.sql`.
    name: &'static str,
    /// The statements, run in the upgrade's one transaction.
    sql: &'static str,
    /// What SQL alone cannot do, run after `sql` in the same transaction.
    code: Option<CodeStep>,
}

/// A migration's step written in Rust (see [`Migration::code`]).
type CodeStep = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Every migration, oldest first, one per version after [`OLDEST_MIGRATABLE`]. The last one
/// must leave exactly what `schema.sql` creates (tests/it/migrate.rs compares sqlite_master).
const MIGRATIONS: [Migration; 10] = [
    Migration {
        to: 2,
        name: "0002_sweeps_halt_code",
        sql: include_str!("migrations/0002_sweeps_halt_code.sql"),
        code: None,
    },
    Migration {
        to: 3,
        name: "0003_real_instants",
        sql: include_str!("migrations/0003_real_instants.sql"),
        code: None,
    },
    Migration {
        to: 4,
        name: "0004_sweep_health",
        sql: include_str!("migrations/0004_sweep_health.sql"),
        code: None,
    },
    Migration {
        to: 5,
        name: "0005_refund_counts",
        sql: include_str!("migrations/0005_refund_counts.sql"),
        code: None,
    },
    Migration {
        to: 6,
        name: "0006_sweep_ids_and_lasting_discrepancy_ids",
        sql: include_str!("migrations/0006_sweep_ids_and_lasting_discrepancy_ids.sql"),
        code: None,
    },
    Migration {
        to: 7,
        name: "0007_operator_resume",
        sql: include_str!("migrations/0007_operator_resume.sql"),
        code: None,
    },
    Migration {
        to: 8,
        name: "0008_webhook_outbox",
        sql: include_str!("migrations/0008_webhook_outbox.sql"),
        code: None,
    },
    Migration {
        to: 9,
        name: "0009_cheaper_checks",
        sql: include_str!("migrations/0009_cheaper_checks.sql"),
        code: Some(write_enum_checks_as_comparisons),
    },
    Migration {
        to: 10,
        name: "0010_nodes_and_leases",
        sql: include_str!("migrations/0010_nodes_and_leases.sql"),
        code: None,
    },
    Migration {
        to: 11,
        name: "0011_time_ordered_event_ids",
        sql: include_str!("migrations/0011_time_ordered_event_ids.sql"),
        code: Some(give_events_time_ordered_ids),
    },
];

/// The tables of schema.sql whose CREATE text migration 0009 rewrites (the merchant app's own
/// tables are left as they are).
const LEDGER_TABLES: [&str; 9] = [
    "refunds",
    "attempts",
    "discrepancies",
    "notifications",
    "sweeps",
    "operator_actions",
    "prunes",
    "refund_counts",
    "webhook_events",
];

/// Migration 0009's Rust step: every ledger table's stored CREATE text gets its enum CHECKs as
/// OR chains ([`super::checks`]), through `writable_schema`, then a new `schema_version` so
/// every connection reloads the schema, and `writable_schema = RESET` so this one does now.
/// No row is read or written: the new CHECKs mean what the old ones meant.
fn write_enum_checks_as_comparisons(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let mut changed = Vec::new();
    for table in LEDGER_TABLES {
        let sql: Option<String> = tx
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(sql) = sql {
            let rewritten = super::checks::enum_checks_as_comparisons(&sql);
            if rewritten != sql {
                changed.push((table, rewritten));
            }
        }
    }
    rewrite_create_text(tx, &changed)
}

/// Stores each `(table, CREATE text)` of `changed` in sqlite_schema through `writable_schema`,
/// then a new `schema_version` so every connection reloads the schema, and
/// `writable_schema = RESET` so this one does now. Only for texts whose change needs no row
/// rewritten (SQLite's "other kinds of table schema changes"): CHECKs that mean the same, a
/// DEFAULT.
fn rewrite_create_text(tx: &Transaction<'_>, changed: &[(&str, String)]) -> rusqlite::Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.pragma_update(None, "writable_schema", true)?;
    for (table, sql) in changed {
        tx.execute(
            "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = ?2",
            [sql.as_str(), table],
        )?;
    }
    tx.pragma_update(None, "schema_version", version + 1)?;
    tx.execute_batch("PRAGMA writable_schema = RESET")
}

/// webhook_events.event_id as schema version 8 to 10 declared it (with its comment).
const RANDOM_EVENT_ID: &str =
    "    -- The id receivers deduplicate on: random, so a ledger restored from a backup never
    -- gives an old id to a new event. Sent as the `Checus-Reconciler-Event-Id` header and `id`.
    event_id         TEXT    NOT NULL UNIQUE DEFAULT ('evt_' || lower(hex(randomblob(16))))
";

/// webhook_events.event_id from schema version 11 on, exactly as schema.sql words it (a unit
/// test ties the two).
const TIME_ORDERED_EVENT_ID: &str = "    -- The id receivers deduplicate on: the time in milliseconds (12 hex digits), then 80
    -- random bits, so a ledger restored from a backup never gives an old id to a new event,
    -- and a new id lands at the end of the UNIQUE index (schema version 11: an all-random id
    -- dirtied one random index page per event). Sent as the `Checus-Reconciler-Event-Id`
    -- header and `id`.
    event_id         TEXT    NOT NULL UNIQUE
                     DEFAULT ('evt_' || printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
                              || lower(hex(randomblob(10))))
";

/// Migration 0011's Rust step: webhook_events' stored CREATE text gets the time-ordered
/// DEFAULT of event_id ([`TIME_ORDERED_EVENT_ID`]) through [`rewrite_create_text`]. No row is
/// read or written: ids already given stay. A text that does not hold version 10's column as
/// this project wrote it fails the migration (rolled back whole) instead of being guessed at.
fn give_events_time_ordered_ids(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let sql: String = tx.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'webhook_events'",
        [],
        |r| r.get(0),
    )?;
    if !sql.contains(RANDOM_EVENT_ID) {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("webhook_events.event_id is not declared as schema version 10 declares it".into()),
        ));
    }
    let rewritten = sql.replacen(RANDOM_EVENT_ID, TIME_ORDERED_EVENT_ID, 1);
    rewrite_create_text(tx, &[("webhook_events", rewritten)])
}

/// The time columns (table, column) that version 3's round-trip CHECKs guard: every one that
/// schema.sql has but for those added later (a unit test ties the list to it). Before
/// migrating to version 3, each is searched for a value the new CHECK would refuse.
pub(super) const TIME_COLUMNS: [(&str, &str); 20] = [
    ("refunds", "created_at"),
    ("refunds", "notified_at"),
    ("refunds", "finalized_at"),
    ("refunds", "refund_finish_time"),
    ("refunds", "next_query_at"),
    ("refunds", "unknown_since"),
    ("refunds", "last_attempt_at"),
    ("refunds", "flagged_at"),
    ("refunds", "confirm_at"),
    ("attempts", "attempted_at"),
    ("discrepancies", "detected_at"),
    ("discrepancies", "resolved_at"),
    ("notifications", "refund_finish_time"),
    ("notifications", "notify_time"),
    ("notifications", "received_at"),
    ("sweeps", "started_at"),
    ("sweeps", "finished_at"),
    ("operator_actions", "at"),
    ("prunes", "started_at"),
    ("prunes", "finalized_before"),
];

/// One migration of a plan or a report.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStep {
    /// The migration's file name without `.sql`, e.g. `0002_sweeps_halt_code`.
    pub name: &'static str,
    /// The schema version it starts from.
    pub from: i32,
    /// The schema version it leaves.
    pub to: i32,
    /// What it does, one line per statement (its SQL file's `-- step:` comments).
    pub summary: Vec<&'static str>,
    /// The SQL it runs, as in `src/ledger/migrations/`.
    pub sql: &'static str,
}

/// What `migrate` did, or with `--dry-run` would do.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    /// The ledger file.
    pub ledger: PathBuf,
    /// Its schema version before.
    pub from: i32,
    /// Its schema version after (this build's [`SCHEMA_VERSION`]).
    pub to: i32,
    /// True when nothing was changed because only a plan was asked for.
    pub dry_run: bool,
    /// The copy taken before migrating (with `dry_run`: where it would go); `None` when the
    /// ledger was already current and nothing was copied.
    pub backup: Option<PathBuf>,
    /// The migrations, in the order they run; empty when the ledger is already current.
    pub steps: Vec<MigrationStep>,
}

impl MigrationReport {
    /// True when the ledger already had this build's schema version: nothing to do.
    pub fn is_current(&self) -> bool {
        self.steps.is_empty()
    }

    fn current(path: &Path, dry_run: bool) -> Self {
        Self {
            ledger: path.to_owned(),
            from: SCHEMA_VERSION,
            to: SCHEMA_VERSION,
            dry_run,
            backup: None,
            steps: Vec::new(),
        }
    }
}

/// The migrations that take a ledger of version `from` to [`SCHEMA_VERSION`].
fn steps_from(from: i32) -> Vec<MigrationStep> {
    MIGRATIONS
        .iter()
        .filter(|m| m.to > from)
        .map(|m| MigrationStep {
            name: m.name,
            from: m.to - 1,
            to: m.to,
            summary: m
                .sql
                .lines()
                .filter_map(|l| l.strip_prefix("-- step: "))
                .collect(),
            sql: m.sql,
        })
        .collect()
}

/// `migrate --dry-run`: what [`apply`] would do to the ledger at `path`, judged through a
/// read-only connection (immutable on a read-only filesystem), so the file is not changed. Refuses what `open` refuses: a missing
/// file, a file that is not a ledger, a newer or unknown schema version, and a stored time
/// that version 3 would refuse ([`LedgerError::UnrealInstant`]).
pub fn plan(path: &Path, now: Timestamp) -> Result<MigrationReport, LedgerError> {
    SqliteLedger::refuse_missing(path)?;
    // The read commands' connection: on a read-only filesystem it falls back to an
    // immutable open, so a plan can be made there too.
    let conn = super::open::connect_read_only(path)?;
    match probe(&conn, path)? {
        Found::Empty => Err(LedgerError::NotALedger {
            path: path.to_owned(),
            found: 0,
            supported: SCHEMA_VERSION,
        }),
        Found::Ledger { version } if version == SCHEMA_VERSION => {
            Ok(MigrationReport::current(path, true))
        }
        Found::Ledger { version } => {
            if version < 3 {
                refuse_unreal_instants(&conn, path, version)?;
            }
            Ok(MigrationReport {
                ledger: path.to_owned(),
                from: version,
                to: SCHEMA_VERSION,
                dry_run: true,
                backup: Some(backup_path(path, version, now, 0)),
                steps: steps_from(version),
            })
        }
    }
}

/// `migrate`: migrates the ledger at `path` if it is older (backup first), or reports that it
/// is current. Refuses a missing file, a file that is not a ledger, a newer or unknown schema.
pub fn apply(path: &Path, now: Timestamp) -> Result<MigrationReport, LedgerError> {
    let (_ledger, report) = SqliteLedger::open_and_migrate(path, now)?;
    Ok(report.unwrap_or_else(|| MigrationReport::current(path, false)))
}

/// Upgrades the ledger open on `conn` from version `from`: backup, then every migration in
/// one `BEGIN IMMEDIATE` transaction. `None` when another process migrated it between the
/// caller's probe and our lock. During the transaction foreign keys are off, as SQLite's
/// table-rebuild procedure asks (the pragma is a no-op inside one), and `legacy_alter_table`
/// is on, so renaming the old table away does not rewrite what refers to it by name (a view
/// the merchant's app made on `sweeps` keeps meaning the new table). Both are restored after.
pub(super) fn upgrade(
    conn: &Connection,
    path: &Path,
    from: i32,
    now: Timestamp,
) -> Result<Option<MigrationReport>, LedgerError> {
    if from < 3 {
        refuse_unreal_instants(conn, path, from)?;
    }
    let backup = back_up(conn, path, from, now)?;
    let failed = |step| migration_failed(path, from, step, &backup);
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(failed("turn foreign keys off"))?;
    conn.pragma_update(None, "legacy_alter_table", true)
        .map_err(failed("turn legacy_alter_table on"))?;
    let result = migrate_in_one_transaction(conn, path, from, &backup);
    let restored = conn
        .pragma_update(None, "legacy_alter_table", false)
        .and_then(|()| conn.pragma_update(None, "foreign_keys", true));
    let report = result?;
    restored.map_err(failed("restore foreign_keys and legacy_alter_table"))?;
    if let Some(r) = &report {
        tracing::info!(
            from = r.from,
            to = r.to,
            backup = %backup.display(),
            "ledger migrated"
        );
    }
    Ok(report)
}

/// Runs the migrations the ledger needs, the `user_version` updates and the foreign key check
/// in one IMMEDIATE transaction. Dropping the transaction on any error rolls it all back.
fn migrate_in_one_transaction(
    conn: &Connection,
    path: &Path,
    probed: i32,
    backup: &Path,
) -> Result<Option<MigrationReport>, LedgerError> {
    let failed = |from, step| migration_failed(path, from, step, backup);
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(failed(probed, "begin the migration transaction"))?;
    // Look again under the write lock: another process (the daemon, `init`) may have
    // migrated the ledger since our first look.
    let from = match probe(&tx, path)? {
        Found::Ledger { version } if version < SCHEMA_VERSION => version,
        _ => return Ok(None),
    };
    let steps = steps_from(from);
    for m in MIGRATIONS.iter().filter(|m| m.to > from) {
        tx.execute_batch(m.sql).map_err(failed(from, m.name))?;
        if let Some(code) = m.code {
            code(&tx).map_err(failed(from, m.name))?;
        }
        tx.pragma_update(None, "user_version", m.to)
            .map_err(failed(from, m.name))?;
    }
    let dangling: i64 = tx
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .map_err(failed(from, "foreign key check"))?;
    if dangling > 0 {
        return Err(LedgerError::MigrationCheckFailed {
            path: path.to_owned(),
            from,
            to: SCHEMA_VERSION,
            backup: backup.to_owned(),
            detail: format!("{dangling} rows fail PRAGMA foreign_key_check"),
        });
    }
    tx.commit().map_err(failed(from, "commit"))?;
    Ok(Some(MigrationReport {
        ledger: path.to_owned(),
        from,
        to: SCHEMA_VERSION,
        dry_run: false,
        backup: Some(backup.to_owned()),
        steps,
    }))
}

/// `<ledger>.v<from>.<UTC time>.bak` next to the ledger; `attempt` > 0 adds `-<attempt>`
/// before `.bak`, for the rare name that is already taken.
fn backup_path(path: &Path, from: i32, now: Timestamp, attempt: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".v{from}.{}", now.format("%Y%m%dT%H%M%S%.3fZ")));
    if attempt > 0 {
        name.push(format!("-{attempt}"));
    }
    name.push(".bak");
    PathBuf::from(name)
}

/// Copies the ledger with `VACUUM INTO` (a consistent snapshot that does not block writers)
/// to a new file next to it, never overwriting one, and checks the copy: it opens, passes
/// `quick_check` and has version `from`. The copy is written as `<backup>.partial` and only
/// linked to its `.bak` name once checked, so a crash mid-copy never leaves a `.bak` that is
/// not a whole ledger. It is as private as the ledger.
fn back_up(
    conn: &Connection,
    path: &Path,
    from: i32,
    now: Timestamp,
) -> Result<PathBuf, LedgerError> {
    let mut attempt = 0;
    let dest = loop {
        let candidate = backup_path(path, from, now, attempt);
        if !candidate.exists() {
            break candidate;
        }
        attempt += 1;
    };
    let mut partial = dest.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let target = partial.to_str().ok_or_else(|| LedgerError::File {
        path: partial.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the backup path is not valid UTF-8",
        ),
    })?;
    // VACUUM INTO refuses an existing non-empty file: never an overwrite.
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|source| LedgerError::MigrationFailed {
            path: path.to_owned(),
            from,
            to: SCHEMA_VERSION,
            step: "back up",
            backup: None,
            source: Box::new(source),
        })?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&partial, meta.permissions());
    }
    check_backup(&partial, from)?;
    // A hard link fails if the name is taken (no overwrite), where a rename would replace it.
    let file_error = |source| LedgerError::File {
        path: dest.clone(),
        source,
    };
    std::fs::hard_link(&partial, &dest).map_err(file_error)?;
    std::fs::remove_file(&partial).map_err(file_error)?;
    Ok(dest)
}

/// The copy at `copy` opens, passes `quick_check` and has schema version `from`.
fn check_backup(copy: &Path, from: i32) -> Result<(), LedgerError> {
    let check = |detail: String| LedgerError::BackupCheck {
        path: copy.to_owned(),
        detail,
    };
    let conn = Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| check(e.to_string()))?;
    let ok: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| check(e.to_string()))?;
    if ok != "ok" {
        return Err(check(format!("quick_check: {ok}")));
    }
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| check(e.to_string()))?;
    if version != from {
        return Err(check(format!("schema version {version}, expected {from}")));
    }
    Ok(())
}

/// The error for a failed `step` of migrating `path` from version `from`, once the backup
/// exists: the transaction rolled back, so the ledger is as it was and the backup is a copy.
fn migration_failed(
    path: &Path,
    from: i32,
    step: &'static str,
    backup: &Path,
) -> impl FnOnce(rusqlite::Error) -> LedgerError {
    let (path, backup) = (path.to_owned(), backup.to_owned());
    move |source| LedgerError::MigrationFailed {
        path,
        from,
        to: SCHEMA_VERSION,
        step,
        backup: Some(backup),
        source: Box::new(source),
    }
}

/// Refuses to migrate a ledger of version `from` (< 3) that holds a time version 3's CHECKs
/// refuse (2026-02-31, hour 24, second 60, ...), naming the first such table, row and column.
/// Such a row would fail its copy and roll the migration back anyway; looking first, before
/// the backup, gives the operator the row to correct, and a daemon that systemd restarts
/// over and over does not leave a new full copy of the ledger behind each time. A value
/// written between this look and the migration's lock still fails the copy: nothing is lost.
fn refuse_unreal_instants(conn: &Connection, path: &Path, from: i32) -> Result<(), LedgerError> {
    for (table, column) in TIME_COLUMNS {
        let sql = format!(
            "SELECT rowid, quote({column}) FROM {table} \
             WHERE {column} IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', julianday({column})) LIMIT 1"
        );
        let found = conn
            .query_row(&sql, [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(|source| LedgerError::MigrationFailed {
                path: path.to_owned(),
                from,
                to: SCHEMA_VERSION,
                step: "look for times version 3 refuses",
                backup: None,
                source: Box::new(source),
            })?;
        if let Some((row, value)) = found {
            return Err(LedgerError::UnrealInstant {
                path: path.to_owned(),
                from,
                to: SCHEMA_VERSION,
                table,
                row,
                column,
                value,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::SCHEMA_SQL;

    /// Time columns added after version 3: born with their round-trip CHECK, so no older
    /// ledger can hold a bad value in them, and [`TIME_COLUMNS`] leaves them out.
    const ADDED_AFTER_V3: [(&str, &str); 9] = [
        ("refunds", "claimed_until"),
        ("sweeps", "breaker_open_since"),
        ("nodes", "started_at"),
        ("nodes", "heartbeat_at"),
        ("nodes", "stopped_at"),
        ("webhook_events", "queued_at"),
        ("webhook_events", "first_attempt_at"),
        ("webhook_events", "next_attempt_at"),
        ("webhook_events", "delivered_at"),
    ];

    #[test]
    fn time_columns_are_every_round_trip_check_of_schema_sql_in_order() {
        let marker = " IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(";
        // (table, column) of every round-trip CHECK, table by table in schema.sql's order.
        let checked: Vec<(&str, &str)> = SCHEMA_SQL
            .split("CREATE TABLE ")
            .skip(1) // the header comment
            .flat_map(|table| {
                let name = table.split_whitespace().next().unwrap_or("");
                table
                    .split("CHECK (")
                    .skip(1)
                    .filter_map(|rest| rest.split_once(marker).map(|(column, _)| column))
                    .map(move |column| (name, column))
            })
            .collect();
        let (later, kept): (Vec<_>, Vec<_>) = checked
            .into_iter()
            .partition(|c| ADDED_AFTER_V3.contains(c));
        assert_eq!(kept, TIME_COLUMNS);
        assert_eq!(later.len(), ADDED_AFTER_V3.len());
    }

    #[test]
    fn the_last_migration_leads_to_this_builds_version() {
        assert_eq!(MIGRATIONS.last().map(|m| m.to), Some(SCHEMA_VERSION));
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.to, OLDEST_MIGRATABLE + 1 + i as i32, "{}", m.name);
        }
    }

    #[test]
    fn migration_0011_writes_event_id_as_schema_sql_does() {
        assert!(SCHEMA_SQL.contains(TIME_ORDERED_EVENT_ID));
        assert!(!SCHEMA_SQL.contains(RANDOM_EVENT_ID));
        let v8 = include_str!("migrations/0008_webhook_outbox.sql");
        assert!(
            v8.contains(RANDOM_EVENT_ID),
            "0008 created the column this replaces"
        );
    }
}
