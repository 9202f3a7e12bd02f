//! PostgreSQL for the tests: the server's URL, a fresh database per test (dropped when its guard
//! drops, even when the test panics), and `psql` runs. An unreachable server follows the one
//! policy of `tools.rs`: under CI (`CI=true`) the test fails; elsewhere it prints a loud
//! `SKIPPED` line on stderr saying how to run it, and returns early.
//!
//! Use it first thing in the test: `let Some((url, _db)) = pg::fresh_db() else { return };`.
//!
//! One test restarts the shared server (tests/it/pg_crash.rs). So that it never pulls the
//! server from under another test running at the same time (nextest runs tests in parallel
//! processes), every fresh database holds a SHARED `flock` on [`SERVER_LOCK`] for its life,
//! and [`fresh_db_for_outage`] takes it EXCLUSIVE, waiting until no other PostgreSQL test
//! holds a database and keeping new ones waiting until its guard drops.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

/// The variable that names the server (a `postgres://` URL of a database the tests may connect
/// to as a role that may create databases).
pub const URL_ENV: &str = "CHECUS_TEST_POSTGRES_URL";

/// The server the tests use when [`URL_ENV`] is unset: the development machines' and CI's.
/// `sslmode=disable`: the engine verifies the server's certificate whenever it uses TLS, and
/// `prefer` (the client's default) uses it whenever the server offers it, so against a server
/// with TLS on (Debian's default, a self-signed certificate for `localhost`) every connection
/// to 127.0.0.1 would be refused on the host name. TLS has its own tests (pg_tls.rs); a URL in
/// [`URL_ENV`] should say `sslmode=disable` too, unless its server's certificate is trusted.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// The server's URL: [`URL_ENV`], else [`DEFAULT_URL`].
pub fn server_url() -> String {
    std::env::var(URL_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url)
        .unwrap_or_else(|e| panic!("{URL_ENV}={url} is not a postgres:// URL: {e}"));
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A connection to `url`, waiting at most 5 s for the server.
pub fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("{url} is not a PostgreSQL connection URL: {e}"));
    config.connect_timeout(Duration::from_secs(5));
    config.connect(NoTls)
}

/// The file whose `flock` says who uses the shared server: shared by every test holding a
/// fresh database, exclusive for a test that stops or restarts the server.
pub const SERVER_LOCK: &str = "/tmp/checus-reconciler-pg-tests.lock";

/// How a test holds [`SERVER_LOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerUse {
    /// Uses the server alongside other tests.
    Shared,
    /// Takes the server down: no other test may hold a database meanwhile.
    Exclusive,
}

/// [`SERVER_LOCK`] locked as `how` (blocking until granted). The kernel releases it when the
/// file closes, so a test killed outright leaves no stale lock.
fn lock_server(how: ServerUse) -> File {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(SERVER_LOCK)
        .unwrap_or_else(|e| panic!("open {SERVER_LOCK}: {e}"));
    match how {
        ServerUse::Shared => file.lock_shared(),
        ServerUse::Exclusive => file.lock(),
    }
    .unwrap_or_else(|e| panic!("flock {SERVER_LOCK} ({how:?}): {e}"));
    file
}

/// Drops its database (`DROP DATABASE ... WITH (FORCE)`, so open sessions do not keep it) when
/// dropped, which a panicking test does too; then releases its hold on [`SERVER_LOCK`].
#[derive(Debug)]
pub struct DropDb {
    server: String,
    name: String,
    /// The shared (or, for [`fresh_db_for_outage`], exclusive) lock on [`SERVER_LOCK`],
    /// released after the database is dropped (fields drop after `Drop::drop`).
    _server_lock: File,
}

impl DropDb {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for DropDb {
    fn drop(&mut self) {
        let dropped = connect(&self.server).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = dropped {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

/// A new, uniquely named, empty database on the server: its URL and the guard that drops it.
/// `None` when the server cannot be reached and this is not CI (a `SKIPPED` line was printed);
/// under CI an unreachable server panics.
pub fn fresh_db() -> Option<(String, DropDb)> {
    fresh_db_holding(ServerUse::Shared)
}

/// [`fresh_db`] for a test that stops or restarts the server: it waits until no other test
/// holds a fresh database, and no other test gets one until the guard drops.
pub fn fresh_db_for_outage() -> Option<(String, DropDb)> {
    fresh_db_holding(ServerUse::Exclusive)
}

fn fresh_db_holding(how: ServerUse) -> Option<(String, DropDb)> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    // Before connecting: an exclusive holder may have the server down right now.
    let server_lock = lock_server(how);
    let server = server_url();
    let mut admin = match connect(&server) {
        Ok(c) => c,
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
            super::tools::require(
                &format!(
                    "a reachable PostgreSQL server at {server} ({e}{cause}); start one, or point \
                     {URL_ENV} at one (e.g. {URL_ENV}=postgres://postgres@127.0.0.1:5432/postgres \
                     cargo nextest run -E 'test(/pg_/)')"
                ),
                false,
            );
            return None;
        }
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // Process, sequence and time: unique among parallel tests and against leftovers of a run
    // that was killed before its guards ran.
    let name = format!(
        "checus_test_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server}: {e}"));
    let url = with_database(&server, &name);
    Some((
        url,
        DropDb {
            server,
            name,
            _server_lock: server_lock,
        },
    ))
}

/// What one `psql` run did.
#[derive(Debug)]
pub struct PsqlRun {
    /// psql exited 0.
    pub ok: bool,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr (the server's errors).
    pub stderr: String,
}

/// `psql` on `url`, no ~/.psqlrc, stopping at the first error, quiet, unaligned tuples only
/// (`-X -v ON_ERROR_STOP=1 -q -A -t`); the caller adds arguments (`-1 -f FILE`, `-c SQL`).
pub fn psql(url: &str) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-d", url])
        .env_remove("PGOPTIONS")
        .env_remove("PSQLRC");
    c
}

/// Runs `script` through `psql` on `url` (on its standard input).
pub fn psql_script(url: &str, script: &str) -> PsqlRun {
    let mut child = psql(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs (the caller checked require_tool(\"psql\"))");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    finish(child.wait_with_output().unwrap())
}

/// Runs a prepared `psql` command to its end.
pub fn run(cmd: &mut Command) -> PsqlRun {
    finish(cmd.output().expect("psql runs"))
}

fn finish(out: std::process::Output) -> PsqlRun {
    PsqlRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every refund by number, read from a PostgreSQL ledger the way the crash audit compares
/// them (times as the server's text, so two snapshots compare exactly).
pub fn refunds(c: &mut Client) -> std::collections::BTreeMap<String, super::proc::RefundSnap> {
    c.query(
        "SELECT out_refund_no, status, final_source, finalized_at::text, refund_finish_time::text,
                attempts, review_flag FROM refunds",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            super::proc::RefundSnap {
                status: r.get(1),
                final_source: r.get(2),
                finalized_at: r.get(3),
                refund_finish_time: r.get(4),
                attempts: r.get(5),
                review_flag: r.get(6),
            },
        )
    })
    .collect()
}

/// Every attempt row by id, read from a PostgreSQL ledger.
pub fn attempts(c: &mut Client) -> std::collections::BTreeMap<i64, super::proc::AttemptSnap> {
    c.query(
        "SELECT id, out_refund_no, attempted_at::text, outcome, http_status, gateway_code,
                data_status, error FROM attempts",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            super::proc::AttemptSnap {
                out_refund_no: r.get(1),
                attempted_at: r.get(2),
                outcome: r.get(3),
                http_status: r.get(4),
                gateway_code: r.get(5),
                data_status: r.get(6),
                error: r.get(7),
            },
        )
    })
    .collect()
}

/// `SELECT count(*) FROM <from>` on a PostgreSQL ledger (`from` may carry a WHERE).
pub fn count(c: &mut Client, from: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {from}"), &[])
        .unwrap()
        .get(0)
}

/// Writes the config of daemon `node` on the PostgreSQL ledger `url` into `dir/<node>/` (with
/// its own copy of the keys) and returns its path: the fast schedule of
/// [`super::proc::fast_schedule`] with `worker.node_name = node` and the `worker` keys, then
/// `extra` TOML. Every node of a test gets the same `url` and a different name.
pub fn node_config(
    dir: &std::path::Path,
    node: &str,
    url: &str,
    base_url: &str,
    worker: &str,
    extra: &str,
) -> std::path::PathBuf {
    let home = dir.join(node);
    std::fs::create_dir_all(&home).unwrap();
    let schedule = super::proc::fast_schedule(&format!("node_name = \"{node}\"\n{worker}"));
    let text = super::proc::config_text_on(
        &home,
        &format!("url = \"{url}\""),
        base_url,
        &format!("{schedule}{extra}"),
    );
    let path = home.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `checus-reconciler run --config <config>`, started in the config's directory.
pub fn spawn_node(config: &std::path::Path) -> super::proc::Proc {
    let mut c = super::proc::cmd(config.parent().unwrap());
    c.args(["run", "--config", config.to_str().unwrap()]);
    super::proc::Proc::spawn(c)
}
