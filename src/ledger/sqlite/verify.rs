//! Checking that a ledger still has the schema that gives its guarantees: every table (with
//! its columns and CHECKs), index and trigger that schema.sql defines must be present with
//! the same SQL. The guarantees (final is final, append-only logs, real instants only) are
//! triggers and CHECKs, and they bind only writers that do not remove them: `DROP TRIGGER`
//! followed by an UPDATE can turn a REFUND_FAILED into a REFUND_SUCCESS. So every open checks
//! the file's schema against schema.sql, and `checus-reconciler verify-ledger` reports it.
//!
//! The reference is schema.sql itself, applied once per process to an in-memory database, so
//! the check and the DDL cannot drift apart. Objects the merchant's app added (views, its own
//! tables, indexes or triggers) are allowed: they cannot lift a CHECK or one of our triggers.
//! What the check cannot see: a writer that drops a trigger, writes and creates it again,
//! and a connection that sets `PRAGMA ignore_check_constraints` (README says so).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rusqlite::Connection;
use serde::Serialize;

use super::error::LedgerError;
use super::open::{Found, connect_read_only, probe};
use super::{SCHEMA_SQL, SCHEMA_VERSION, SqliteLedger};

/// The kind of a schema object the check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A table: its columns, types and CHECKs are in its SQL.
    Table,
    /// An index (the due-work and count queries rely on them).
    Index,
    /// A trigger (the rules that protect money).
    Trigger,
    /// A function (PostgreSQL only: the triggers' bodies and the contract's helpers).
    Function,
}

impl ObjectKind {
    /// The name `sqlite_schema.type` gives it.
    fn as_str(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Index => "index",
            Self::Trigger => "trigger",
            Self::Function => "function",
        }
    }

    fn from_type(t: &str) -> Option<Self> {
        match t {
            "table" => Some(Self::Table),
            "index" => Some(Self::Index),
            "trigger" => Some(Self::Trigger),
            _ => None,
        }
    }
}

/// How an object of the file differs from schema.sql.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Difference {
    /// The file has no object of that kind and name (dropped, or never created).
    Missing,
    /// The file has it, but its SQL is not schema.sql's (whitespace aside): a column, CHECK,
    /// condition or body was changed.
    Altered,
}

/// One schema object that is missing or altered, e.g. "missing trigger
/// refunds_final_status_is_immutable".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaDifference {
    /// Missing or altered.
    pub difference: Difference,
    /// Table, index or trigger.
    pub kind: ObjectKind,
    /// Its name in schema.sql.
    pub name: String,
}

impl fmt::Display for SchemaDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.difference {
            Difference::Missing => "missing",
            Difference::Altered => "altered",
        };
        write!(f, "{how} {} {}", self.kind.as_str(), self.name)
    }
}

/// What `verify-ledger` found: how many objects were compared and which differ.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaCheck {
    /// The ledger file.
    pub ledger: PathBuf,
    /// Its schema version (always this build's: an older one is refused first).
    pub version: i32,
    /// How many tables, indexes and triggers schema.sql defines, each compared.
    pub compared: usize,
    /// Every object that is missing or altered; empty when the ledger has its guarantees.
    pub differences: Vec<SchemaDifference>,
}

impl SchemaCheck {
    /// True when every object of schema.sql is present and unchanged.
    pub fn is_intact(&self) -> bool {
        self.differences.is_empty()
    }
}

/// One object of schema.sql, as the reference database stores it.
struct Expected {
    kind: ObjectKind,
    name: String,
    sql: String,
}

/// `sql` with every run of whitespace made one space: the SQL SQLite stored, compared without
/// regard to indentation or line breaks (and nothing else).
fn normalized(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The tables, indexes and triggers that schema.sql creates, in creation order, built once per
/// process from schema.sql itself in an in-memory database (about a millisecond).
fn expected() -> &'static [Expected] {
    static EXPECTED: OnceLock<Vec<Expected>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let conn = Connection::open_in_memory().expect("an in-memory SQLite database opens");
        conn.execute_batch(SCHEMA_SQL)
            .expect("schema.sql applies to an empty database (ledger unit tests)");
        schema_objects(&conn)
            .expect("the in-memory schema reads back")
            .into_iter()
            .map(|(kind, name, sql)| Expected { kind, name, sql })
            .collect()
    })
}

/// The file's tables, indexes and triggers (SQLite's own `sqlite_*` objects aside) with their
/// normalized SQL, in creation order.
fn schema_objects(conn: &Connection) -> rusqlite::Result<Vec<(ObjectKind, String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, sql FROM sqlite_schema \
          WHERE type IN ('table', 'index', 'trigger') AND sql IS NOT NULL \
            AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut objects = Vec::new();
    for row in rows {
        let (kind, name, sql) = row?;
        if let Some(kind) = ObjectKind::from_type(&kind) {
            objects.push((kind, name, normalized(&sql)));
        }
    }
    Ok(objects)
}

/// Every object of schema.sql that the database on `conn` lacks or has with other SQL.
fn differences(conn: &Connection) -> rusqlite::Result<Vec<SchemaDifference>> {
    let found: HashMap<(ObjectKind, String), String> = schema_objects(conn)?
        .into_iter()
        .map(|(kind, name, sql)| ((kind, name), sql))
        .collect();
    Ok(expected()
        .iter()
        .filter_map(|e| {
            let difference = match found.get(&(e.kind, e.name.clone())) {
                None => Difference::Missing,
                Some(sql) if *sql != e.sql => Difference::Altered,
                Some(_) => return None,
            };
            Some(SchemaDifference {
                difference,
                kind: e.kind,
                name: e.name.clone(),
            })
        })
        .collect())
}

/// [`LedgerError::SchemaAltered`] when the ledger on `conn` lacks or changed anything that
/// schema.sql defines. Every open of a current ledger calls this once.
pub(super) fn refuse_altered(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let differences = differences(conn).map_err(|source| LedgerError::Setup {
        path: path.to_owned(),
        step: "compare the schema with schema.sql",
        source,
    })?;
    if differences.is_empty() {
        Ok(())
    } else {
        Err(LedgerError::SchemaAltered {
            path: path.to_owned(),
            differences,
        })
    }
}

impl SqliteLedger {
    /// Compares the open ledger with schema.sql again ([`LedgerError::SchemaAltered`] when a
    /// trigger, CHECK or index went missing or changed since it was opened). The daemon calls
    /// it before every sweep: one read of `sqlite_schema` against the cached expectation.
    pub fn recheck_schema(&self) -> Result<(), LedgerError> {
        refuse_altered(&self.conn, &self.path)
    }

    /// `verify-ledger`: compares the ledger at `path` with schema.sql through a read-only
    /// connection (nothing is changed, so it also works on a read-only copy or file system)
    /// and returns every difference. Refuses what `open` refuses before that: a missing file, a
    /// file that is not a ledger, a schema version other than this build's (an older one:
    /// migrate it first).
    pub fn verify(path: &Path) -> Result<SchemaCheck, LedgerError> {
        Self::refuse_missing(path)?;
        let conn = connect_read_only(path)?;
        let setup = |step: &'static str| {
            let path = path.to_owned();
            move |source| LedgerError::Setup { path, step, source }
        };
        match probe(&conn, path)? {
            Found::Empty => Err(LedgerError::NotALedger {
                path: path.to_owned(),
                found: 0,
                supported: SCHEMA_VERSION,
            }),
            Found::Ledger { version } if version < SCHEMA_VERSION => {
                Err(LedgerError::NeedsMigration {
                    path: path.to_owned(),
                    found: version,
                    supported: SCHEMA_VERSION,
                })
            }
            Found::Ledger { version } => Ok(SchemaCheck {
                ledger: path.to_owned(),
                version,
                compared: expected().len(),
                differences: differences(&conn)
                    .map_err(setup("compare the schema with schema.sql"))?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_sql_defines_the_ten_tables_and_every_trigger() {
        let count = |kind| expected().iter().filter(|e| e.kind == kind).count();
        // The seven tables of the ledger, refund_counts (kept by triggers, for /metrics),
        // webhook_events (the outbox) and nodes (the daemons that work on it).
        assert_eq!(count(ObjectKind::Table), 10);
        assert_eq!(
            count(ObjectKind::Trigger),
            SCHEMA_SQL.matches("CREATE TRIGGER").count()
        );
        assert_eq!(
            count(ObjectKind::Index),
            SCHEMA_SQL.matches("CREATE INDEX").count()
        );
    }

    #[test]
    fn a_fresh_schema_has_no_differences_and_a_dropped_or_changed_object_is_named() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_SQL).unwrap();
        assert_eq!(differences(&conn).unwrap(), []);
        conn.execute_batch(
            "DROP TRIGGER refunds_final_status_is_immutable;
             DROP INDEX refunds_due;
             CREATE INDEX refunds_due ON refunds (next_query_at);
             CREATE VIEW app_view AS SELECT id FROM refunds;",
        )
        .unwrap();
        let found: Vec<String> = differences(&conn)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "altered index refunds_due",
                "missing trigger refunds_final_status_is_immutable"
            ]
        );
    }

    #[test]
    fn the_webhook_outbox_triggers_and_indexes_are_guarantees_too() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_SQL).unwrap();
        conn.execute_batch(
            "DROP TRIGGER refunds_webhook_on_finalize;
             DROP TRIGGER webhook_events_content_is_immutable;
             DROP INDEX webhook_events_dead;",
        )
        .unwrap();
        let found: Vec<String> = differences(&conn)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "missing index webhook_events_dead",
                "missing trigger webhook_events_content_is_immutable",
                "missing trigger refunds_webhook_on_finalize"
            ]
        );
    }

    #[test]
    fn whitespace_alone_is_not_a_difference() {
        assert_eq!(
            normalized("CREATE  TABLE t (\n    x TEXT\n)"),
            "CREATE TABLE t ( x TEXT )"
        );
    }
}
