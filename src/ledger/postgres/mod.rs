//! The PostgreSQL engine (`ledger.url`): a ledger several daemons share. One [`PgLedger`] is
//! one connection (the synchronous `postgres` client, on the same blocking-thread pattern as
//! rusqlite); it reconnects when the server closed it, and every public method is one short
//! transaction, so no transaction ever stays open across a network call to the gateway.
//!
//! The rules that protect money are schema.postgres.sql's CHECKs and PL/pgSQL triggers, as on
//! SQLite; this code classifies their refusals into the same [`LedgerError`] variants. What the
//! Rust side adds for PostgreSQL (schema.postgres.sql's header):
//! - a serialization failure (40001) or deadlock (40P01) aborts the transaction for another's
//!   sake: the whole transaction runs again, a few times ([`MAX_TRIES`]);
//! - a duplicate refund can also surface as a unique violation (23505) when two inserts race;
//! - work is claimed with a lease (`claimed_by`, `claimed_until`) under
//!   `FOR UPDATE SKIP LOCKED`, so no refund is queried by two nodes at once (`queue.rs`).
//!
//! Values: instants bind and read as `Timestamp` (timestamptz, milliseconds: bound values are
//! cut to the millisecond first, as SQLite's text form cuts them); amounts travel as their
//! exact text (`amount::text`, `$n::text::numeric`), so 12.50 stays 12.50 and never meets a
//! float.
//!
//! TLS (`tls.rs`): rustls on aws-lc-rs through `tokio-postgres-rustls`, as the URL's `sslmode`
//! asks (`disable`, `prefer` by default, `require`); whenever TLS is used the server's
//! certificate is verified, chain and host name, against `ledger.ca_file` or the system's
//! roots. No TLS that trusts any certificate, and no native TLS.
//!
//! Files: `tls.rs` (the connector and its roots), `open.rs` (connect, create, version, the schema check, `verify-ledger`), `rows.rs`
//! (typed rows), `write.rs` (refunds, attempts, sweeps), `queue.rs` (the claims and the
//! watermarks), `inbox.rs` (notifications through the contract), `webhooks.rs` (the outbox),
//! `read.rs` (`status`, health, gauges, the read commands), `operator.rs` (the audited
//! operator actions), `maintenance.rs` (prune, pruned, backup), `bench.rs` (the claim's plan,
//! for the benchmark harness), `store.rs` (the interface's traits, each method the inherent one
//! of the same name).

mod bench;
mod inbox;
mod lock;
mod maintenance;
mod nodes;
mod open;
mod operator;
mod queue;
mod read;
mod rows;
mod store;
mod tls;
mod webhooks;
mod write;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Row, Statement, Transaction};

use super::error::{During, LedgerError};
use crate::domain::Timestamp;

pub use lock::NodeLock;
pub use open::PG_SCHEMA_VERSION;
pub use tls::{CaFileError, Roots, read_ca_file};

/// How many times one transaction runs when PostgreSQL aborts it as a serialization failure or
/// a deadlock (a rare event: two transactions took the same rows in opposite orders).
pub const MAX_TRIES: u32 = 5;

/// How long a final refund's confirming query stays claimed by this node (`due_confirmations`,
/// which has no lease argument; the worker's own claim passes its lease): far longer than one
/// query with its retries and the group commit that records it, so a live node never loses a
/// confirmation it is querying; a dead node's return to the pool after it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// The node-name rule of schema version 10 (1..64 of `[A-Za-z0-9._-]`), as the domain's
/// [`NodeName`](crate::domain::NodeName) keeps it.
pub fn is_node_name(name: &str) -> bool {
    crate::domain::NodeName::parse(name).is_ok()
}

/// An open PostgreSQL ledger: one connection and its prepared statements.
pub struct PgLedger {
    session: RefCell<Session>,
    /// How to connect again when the server closed the connection (password included).
    config: postgres::Config,
    /// How to connect again: TLS or not, and the roots, as the first connection was made.
    tls: tls::Tls,
    /// `ledger.url`, for messages (no password in it).
    url: String,
    /// The node this ledger's attempts and sweeps are made as (`attempts.node`,
    /// `sweeps.node`): [`PgLedger::set_node`]'s (the daemon's `worker.node_name`); `None`, as
    /// on SQLite, for a ledger opened by a command that names no node (NULL in the rows).
    node: Option<String>,
    /// Opened for reading: writes are refused before the server is asked.
    read_only: bool,
}

/// The connection and the statements prepared on it (they die with it).
struct Session {
    client: Conn,
    cache: HashMap<&'static str, Statement>,
    /// The connection failed under us (an I/O error): opened again before the next use, even
    /// if the client has not noticed yet.
    broken: bool,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.url)
            .field("node", &self.node)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// One transaction and the connection's statement cache: what every method's body works with.
pub(crate) struct Db<'a> {
    tx: Transaction<'a>,
    cache: &'a mut HashMap<&'static str, Statement>,
}

impl Db<'_> {
    /// `sql` prepared once per connection.
    pub(crate) fn prepared(
        &mut self,
        op: &'static str,
        sql: &'static str,
    ) -> Result<Statement, LedgerError> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).during(op)?;
        self.cache.insert(sql, s.clone());
        Ok(s)
    }

    /// Runs the cached statement `sql`; returns the rows it changed.
    pub(crate) fn execute(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, LedgerError> {
        let s = self.prepared(op, sql)?;
        self.tx.execute(&s, params).during(op)
    }

    /// The rows of the cached statement `sql`.
    pub(crate) fn query(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, LedgerError> {
        let s = self.prepared(op, sql)?;
        self.tx.query(&s, params).during(op)
    }

    /// The one row of the cached statement `sql`, or none.
    pub(crate) fn query_opt(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, LedgerError> {
        let s = self.prepared(op, sql)?;
        self.tx.query_opt(&s, params).during(op)
    }

    /// The one row of the cached statement `sql`.
    pub(crate) fn query_one(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, LedgerError> {
        let s = self.prepared(op, sql)?;
        self.tx.query_one(&s, params).during(op)
    }

    /// The rows of a statement built at run time (not cached).
    pub(crate) fn query_dyn(
        &mut self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, LedgerError> {
        self.tx.query(sql, params).during(op)
    }

    /// Runs `f` inside a savepoint: rolled back alone when `f` fails, so the transaction goes
    /// on (the group commits' one-record-one-result rule).
    pub(crate) fn savepoint<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut Db<'_>) -> Result<T, LedgerError>,
    ) -> Result<Result<T, LedgerError>, LedgerError> {
        let sp = self.tx.savepoint("one_record").during(op)?;
        let mut inner = Db {
            tx: sp,
            cache: &mut *self.cache,
        };
        let result = f(&mut inner);
        match &result {
            Ok(_) => inner.tx.commit().during(op)?,
            Err(_) => inner.tx.rollback().during(op)?,
        }
        Ok(result)
    }
}

impl PgLedger {
    /// `ledger.url`, as messages name the ledger.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The node this ledger writes into `attempts.node` and `sweeps.node`, if one was set.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Sets the node name the attempts and sweeps written through this ledger carry; refused
    /// when it breaks the rule (1..64 of `[A-Za-z0-9._-]`).
    pub fn set_node(&mut self, node: &str) -> Result<(), LedgerError> {
        if !is_node_name(node) {
            return Err(LedgerError::InvalidNodeName {
                name: node.to_owned(),
            });
        }
        self.node = Some(node.to_owned());
        Ok(())
    }

    /// A write transaction (see [`PgLedger::run`]); refused on a ledger opened for reading.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnMut(&mut Db<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        if self.read_only {
            return Err(LedgerError::OpenedForReading {
                path: self.url.clone().into(),
                op,
            });
        }
        self.run(op, false, f)
    }

    /// A read-only REPEATABLE READ transaction: every statement sees one snapshot, so the
    /// numbers of a multi-statement read agree (PostgreSQL's READ COMMITTED would give each
    /// statement its own). A read-only transaction is never a serialization failure.
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnMut(&mut Db<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.run(op, true, f)
    }

    /// Runs `f` in one transaction (READ COMMITTED, the server's default), committing when it
    /// returns `Ok`. A serialization failure or deadlock runs it again from the start, up to
    /// [`MAX_TRIES`] times, after a short random pause; anything else is returned. A closed
    /// connection is opened again first. A connection lost mid-way is NOT retried: whether a
    /// COMMIT took effect is then unknown, and running a write twice could write an attempt
    /// twice; the caller's next call reconnects.
    fn run<T>(
        &self,
        op: &'static str,
        read_only: bool,
        mut f: impl FnMut(&mut Db<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = self.once(op, read_only, &mut f);
            match outcome {
                Err(e) if e.is_pg_retryable() && tries < MAX_TRIES => {
                    tracing::debug!(op, tries, error = %e, "ledger transaction retried");
                    std::thread::sleep(retry_pause(tries));
                }
                other => return other,
            }
        }
    }

    fn once<T>(
        &self,
        op: &'static str,
        read_only: bool,
        f: &mut impl FnMut(&mut Db<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut session = self.session.borrow_mut();
        if session.broken || session.client.is_closed() {
            let client = open::connect(&self.config, &self.tls, &self.url, self.read_only)?;
            *session = Session::new(client);
            tracing::info!(url = %self.url, "ledger reconnected");
        }
        let Session { client, cache, .. } = &mut *session;
        let result = (|| {
            let isolation = if read_only {
                IsolationLevel::RepeatableRead
            } else {
                IsolationLevel::ReadCommitted
            };
            let tx = client
                .build_transaction()
                .read_only(read_only)
                .isolation_level(isolation)
                .start()
                .during(op)?;
            let mut db = Db { tx, cache };
            let out = f(&mut db)?;
            db.tx.commit().during(op)?;
            Ok(out)
        })();
        if let Err(LedgerError::Postgres { source, .. }) = &result
            && is_connection_lost(source)
        {
            session.broken = true;
        }
        result
    }
}

/// A client that may be dropped anywhere. The synchronous client closes its connection with
/// its own `block_on`, which panics on a tokio worker thread, and the daemon drops ledgers in
/// async code (its stop, a reload): the close runs on a thread of its own there.
pub(crate) struct Conn(Option<Client>);

impl Conn {
    pub(crate) fn new(client: Client) -> Self {
        Self(Some(client))
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        match &self.0 {
            Some(c) => c,
            None => unreachable!("a Conn holds its client until it is dropped"),
        }
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        match &mut self.0 {
            Some(c) => c,
            None => unreachable!("a Conn holds its client until it is dropped"),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(client);
        }
        // Off the runtime. If no thread can be started, the socket is left to the process's
        // end (the server notices the closed socket) rather than panicking here.
        let (tx, rx) = std::sync::mpsc::channel::<Client>();
        let closer = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(rx.recv()));
        match closer {
            Ok(_) => {
                if let Err(unsent) = tx.send(client) {
                    std::mem::forget(unsent.0);
                }
            }
            Err(_) => std::mem::forget(client),
        }
    }
}

impl Session {
    fn new(client: Client) -> Self {
        Self {
            client: Conn::new(client),
            cache: HashMap::new(),
            broken: false,
        }
    }
}

/// True when `e` says the connection itself is gone (closed, or an I/O error on its socket),
/// not that a statement failed.
fn is_connection_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code()
            .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
}

/// A random pause before try `tries + 1`: 1..=10 ms times the tries so far, so two
/// transactions that deadlocked do not meet again in step.
fn retry_pause(tries: u32) -> Duration {
    let ms = rand::random_range(1..=10u64) * u64::from(tries);
    Duration::from_millis(ms)
}

/// `t` cut to the millisecond, as the ledger keeps instants (PostgreSQL would round a finer
/// value; SQLite's text form cuts it).
pub(crate) fn ms(t: Timestamp) -> Timestamp {
    Timestamp::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}
