//! Opening a PostgreSQL ledger: connect (the URL and the password source), create the schema
//! on an empty one (schema.postgres.sql, one transaction), refuse a version this build does not
//! know, and check that every table, index, function and trigger the schema creates is there
//! (and no trigger is disabled), on every open and on demand.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::tls::{Tls, is_tls_refusal};
use super::{PgLedger, Session};
use crate::ledger::error::{During, LedgerError};
use crate::ledger::{
    Difference, ObjectKind, OpenMode, PostgresTarget, SCHEMA_POSTGRES_SQL, SchemaCheck,
    SchemaDifference,
};

/// The PostgreSQL schema version this build reads and writes (`schema_version`). It was
/// SQLite's number up to 10; SQLite's version 11 (time-ordered webhook event ids, a page
/// layout matter of SQLite's B-tree) changed nothing in PostgreSQL, which has no migrations
/// yet, so a PostgreSQL ledger made by the previous release stays current.
pub const PG_SCHEMA_VERSION: i32 = 10;

/// How long a connection attempt waits when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One advisory-lock key for "creating the ledger's schema", so two daemons starting on an
/// empty database at once create it once: the second waits, then finds it made.
const CREATE_LOCK: i64 = 0x6368_6563_7573_0009;

/// Connects with `config` (a 10 s connect timeout unless the URL sets one) and `tls`.
/// `read_only` makes every transaction of the session read-only on the server too.
pub(super) fn connect(
    config: &postgres::Config,
    tls: &Tls,
    url: &str,
    read_only: bool,
) -> Result<Client, LedgerError> {
    let refused = |source: postgres::Error| match tls {
        Tls::Rustls { roots, .. } if is_tls_refusal(&source) => LedgerError::PgTls {
            url: url.to_owned(),
            roots: roots.clone(),
            source,
        },
        _ => LedgerError::PgConnect {
            url: url.to_owned(),
            source,
        },
    };
    let mut client = match tls {
        Tls::Off => config.connect(NoTls),
        Tls::Rustls { connector, .. } => config.connect(connector.clone()),
    }
    .map_err(refused)?;
    if read_only {
        client
            .batch_execute("SET default_transaction_read_only = on")
            .during("open the ledger for reading")?;
    }
    Ok(client)
}

impl PgLedger {
    /// Opens the ledger `target` names for `mode`: [`OpenMode::Create`] creates the schema in
    /// an empty database (its first `search_path` schema); the others need a ledger there.
    /// Every mode refuses a version other than this build's and a schema that lost an object.
    pub fn open(target: &PostgresTarget, mode: OpenMode) -> Result<Self, LedgerError> {
        let ledger = Self::connect(target, mode == OpenMode::Reading)?;
        if mode == OpenMode::Create {
            ledger.create_if_empty()?;
        }
        ledger.recheck_schema()?;
        Ok(ledger)
    }

    /// `verify-ledger`: the ledger's version and every object of schema.postgres.sql that is
    /// missing (or a trigger that is disabled), read-only; a ledger that lost objects is
    /// reported, not refused.
    pub fn verify(target: &PostgresTarget) -> Result<SchemaCheck, LedgerError> {
        Self::connect(target, true)?.verify_schema()
    }

    /// The client's settings for `target`: its URL, the password from `ledger.password`, a
    /// 10 s connect timeout and the application name unless the URL sets them; TLS as its
    /// `sslmode` and `ledger.ca_file` ask; and the URL for messages.
    pub(super) fn client_config(
        target: &PostgresTarget,
    ) -> Result<(postgres::Config, Tls, String), LedgerError> {
        let url = target.url.clone();
        let mut config: postgres::Config =
            url.parse().map_err(|source| LedgerError::PgConnect {
                url: url.clone(),
                source,
            })?;
        if let Some(source) = &target.password {
            let password =
                source
                    .read_secret("ledger.password")
                    .map_err(|e| LedgerError::PgPassword {
                        url: url.clone(),
                        source: Box::new(e),
                    })?;
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("checus-reconciler");
        }
        let tls = Tls::for_target(&config, target)?;
        Ok((config, tls, url))
    }

    /// Connects (no schema check yet).
    fn connect(target: &PostgresTarget, read_only: bool) -> Result<Self, LedgerError> {
        let (config, tls, url) = Self::client_config(target)?;
        let client = connect(&config, &tls, &url, read_only)?;
        Ok(Self {
            session: RefCell::new(Session::new(client)),
            config,
            tls,
            url,
            node: None,
            read_only,
        })
    }

    /// Applies schema.postgres.sql when the first `search_path` schema holds no ledger, in one
    /// transaction under an advisory lock.
    fn create_if_empty(&self) -> Result<(), LedgerError> {
        const OP: &str = "create the ledger schema";
        let created = self.run(OP, false, |db| {
            db.tx
                .execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
                .during(OP)?;
            if ledger_tables(db)? > 0 {
                return Ok(false);
            }
            db.tx.batch_execute(SCHEMA_POSTGRES_SQL).during(OP)?;
            Ok(true)
        })?;
        if created {
            tracing::info!(url = %self.url, version = PG_SCHEMA_VERSION, "ledger created");
        }
        Ok(())
    }

    /// Checks the version and the schema's objects again (every open; the daemon, each sweep).
    pub fn recheck_schema(&self) -> Result<(), LedgerError> {
        let check = self.verify_schema()?;
        if check.differences.is_empty() {
            Ok(())
        } else {
            Err(LedgerError::PgSchemaAltered {
                url: self.url.clone(),
                differences: check.differences,
            })
        }
    }

    /// The ledger's version (refused unless it is this build's) and what differs from
    /// schema.postgres.sql's objects, by name.
    pub fn verify_schema(&self) -> Result<SchemaCheck, LedgerError> {
        const OP: &str = "check the ledger schema";
        let url = self.url.clone();
        self.run(OP, true, |db| {
            let has_version = db
                .tx
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_tables
                      WHERE schemaname = pg_catalog.current_schema() AND tablename = 'schema_version'",
                    &[],
                )
                .during(OP)?
                .get::<_, i64>(0)
                > 0;
            if !has_version {
                let detail = if ledger_tables(db)? > 0 {
                    "its schema holds ledger tables but no schema_version table, so it is not a \
                     checus-reconciler ledger (or was damaged); nothing was changed"
                } else {
                    "its schema holds no ledger; create one with `checus-reconciler init` \
                     (or `run`, which creates it too)"
                };
                return Err(LedgerError::PgNotALedger {
                    url: url.clone(),
                    detail: detail.to_owned(),
                });
            }
            let version: Option<i32> = db
                .tx
                .query_one("SELECT max(version) FROM schema_version", &[])
                .during(OP)?
                .get(0);
            let found = version.unwrap_or(0);
            if found > PG_SCHEMA_VERSION {
                return Err(LedgerError::SchemaTooNew {
                    path: url.clone().into(),
                    found,
                    supported: PG_SCHEMA_VERSION,
                });
            }
            if found != PG_SCHEMA_VERSION {
                return Err(LedgerError::UnknownSchema {
                    path: url.clone().into(),
                    found,
                    supported: PG_SCHEMA_VERSION,
                });
            }
            Ok(SchemaCheck {
                ledger: url.clone().into(),
                version: found,
                compared: ObjectKind::ALL.iter().map(|k| expected(*k).len()).sum(),
                differences: differences(db)?,
            })
        })
    }
}

/// How many of the ledger's tables the first `search_path` schema holds.
fn ledger_tables(db: &mut super::Db<'_>) -> Result<i64, LedgerError> {
    let names: Vec<String> = expected(ObjectKind::Table)
        .into_iter()
        .map(str::to_owned)
        .collect();
    Ok(db
        .tx
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables
              WHERE schemaname = pg_catalog.current_schema() AND tablename = ANY($1)",
            &[&names],
        )
        .during("look for a ledger")?
        .get(0))
}

/// What schema.postgres.sql creates, by kind, and how to find it in the catalog.
trait Catalog: Sized {
    const ALL: [Self; 4];
    fn creates(self, line: &str) -> Option<&str>;
    fn present_sql(self) -> &'static str;
}

impl Catalog for ObjectKind {
    const ALL: [Self; 4] = [Self::Table, Self::Index, Self::Function, Self::Trigger];

    /// The `CREATE ...` that makes one in schema.postgres.sql.
    fn creates(self, line: &str) -> Option<&str> {
        let rest = match self {
            Self::Table => line.strip_prefix("CREATE TABLE "),
            Self::Index => line
                .strip_prefix("CREATE INDEX ")
                .or_else(|| line.strip_prefix("CREATE UNIQUE INDEX ")),
            Self::Function => line.strip_prefix("CREATE FUNCTION "),
            Self::Trigger => line.strip_prefix("CREATE TRIGGER "),
        }?;
        rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .filter(|n| !n.is_empty())
    }

    /// The names of this kind present in the first `search_path` schema, each with whether
    /// it is in force (a disabled trigger guards nothing).
    fn present_sql(self) -> &'static str {
        match self {
            Self::Table => {
                "SELECT tablename::text, true FROM pg_catalog.pg_tables
                  WHERE schemaname = pg_catalog.current_schema()"
            }
            Self::Index => {
                "SELECT indexname::text, true FROM pg_catalog.pg_indexes
                  WHERE schemaname = pg_catalog.current_schema()"
            }
            Self::Function => {
                "SELECT p.proname::text, true FROM pg_catalog.pg_proc AS p
                   JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
                  WHERE n.nspname = pg_catalog.current_schema()"
            }
            Self::Trigger => {
                "SELECT t.tgname::text, t.tgenabled <> 'D' FROM pg_catalog.pg_trigger AS t
                   JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
                   JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                  WHERE n.nspname = pg_catalog.current_schema() AND NOT t.tgisinternal"
            }
        }
    }
}

/// The names of `kind` schema.postgres.sql creates, in file order.
fn expected(kind: ObjectKind) -> Vec<&'static str> {
    SCHEMA_POSTGRES_SQL
        .lines()
        .filter_map(|l| kind.creates(l))
        .collect()
}

/// Every expected object that is missing, or present but not in force (a disabled trigger:
/// [`Difference::Altered`]), in schema.postgres.sql's order within each kind.
fn differences(db: &mut super::Db<'_>) -> Result<Vec<SchemaDifference>, LedgerError> {
    let mut out = Vec::new();
    for kind in ObjectKind::ALL {
        let present: BTreeMap<String, bool> = db
            .tx
            .query(kind.present_sql(), &[])
            .during("check the ledger schema")?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for name in expected(kind) {
            let difference = match present.get(name) {
                None => Difference::Missing,
                Some(false) => Difference::Altered,
                Some(true) => continue,
            };
            out.push(SchemaDifference {
                difference,
                kind,
                name: name.to_owned(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_objects_are_read_from_the_schema_file() {
        let tables = expected(ObjectKind::Table);
        assert!(tables.contains(&"refunds") && tables.contains(&"schema_version"));
        assert!(tables.contains(&"nodes"), "{tables:?}");
        assert!(expected(ObjectKind::Trigger).contains(&"refunds_final_status_is_immutable"));
        assert!(expected(ObjectKind::Index).contains(&"prunes_one_running"));
        assert!(expected(ObjectKind::Function).contains(&"checus_instant"));
        assert!(expected(ObjectKind::Trigger).len() > 30);
    }
}
