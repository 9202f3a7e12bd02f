//! The PostgreSQL ledger's figures (issue 14, part 5). Each run works on a database of its own
//! that the harness creates on the server and drops at the end, also when a step fails:
//! - `bench pg-claim`: what the worker's claim of 1,000 due refunds costs at each ledger size
//!   (100k and 10M refunds, 1 % of them pending and due), timed through the engine's own
//!   `PgLedger::claim_due`; the ratio of the largest size's median to the smallest's, and the
//!   claim's plan (`EXPLAIN (ANALYZE, BUFFERS)`) at the largest size.
//! - `bench pg-nodes`: refunds/s of one daemon, then of two daemons (`node_name` a and b) on
//!   one ledger, at 50 ms gateway latency and concurrency 32 each; the ratio two ÷ one.
//!
//! Nothing here asserts a target: it measures and prints (BENCHMARKS.md, "PostgreSQL ledger").
//! It only refuses a run whose numbers would not mean what they say (a claim that got fewer
//! than 1,000 rows, a refund queried twice).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use checus_reconciler::domain::{OutRefundNo, Timestamp, format_ts};
use checus_reconciler::ledger::{OpenMode, PgLedger, PostgresTarget};
use chrono::{TimeDelta, Utc};
use postgres::{Client, NoTls};

use crate::ledgergen::{AMOUNT, CURRENCY, DUE_AFTER_CREATED, pending_no, success_scripts};
use crate::procs::{SandboxProc, Timed, daemon_totals, process_cpu};
use crate::thousands;

/// The variable naming the server (the tests' own, `tests/common/pg.rs`).
pub const URL_ENV: &str = "CHECUS_TEST_POSTGRES_URL";
/// The server when [`URL_ENV`] is unset: the development machines' and CI's, without TLS (the
/// engine verifies a server's certificate whenever it uses TLS, and a local server's is
/// self-signed for `localhost`: the tests' reason, `tests/common/pg.rs`).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// Refunds per claim: the issue's figure.
const CLAIM: usize = 1_000;
/// One pending refund in this many, spread over the whole table (every 100th row), so the
/// claimed rows lie on a thousand different heap pages: the claim's worst case, not a block of
/// neighbours a single page read serves.
const PENDING_EVERY: u64 = 100;
/// Rows per load transaction (progress is printed after each).
const LOAD_BATCH: u64 = 1_000_000;
/// Untimed claims before the timed ones: the statement is prepared, the plan cached, the
/// claimed rows' pages read and their hint bits set.
const WARMUP: usize = 3;
/// The node the claims are made as.
const NODE: &str = "bench-a";

/// A database of its own on the server, dropped when this drops (`WITH (FORCE)`, so the
/// ledger's and the daemons' sessions do not keep it), a failed step included.
pub struct ScratchDb {
    server: String,
    name: String,
    /// Its URL (the server's, with the database name replaced).
    pub url: String,
}

impl ScratchDb {
    /// Creates `checus_bench_<label>_<pid>_<ms>` on `server`.
    pub fn create(server: &str, label: &str) -> Result<Self> {
        let name = format!(
            "checus_bench_{label}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_millis()
        );
        connect(server)?
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let mut url = url::Url::parse(server).with_context(|| format!("{server} is not a URL"))?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            server: server.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    /// The ledger target of this database (no password and no TLS: the server must trust the
    /// harness on loopback).
    fn target(&self) -> PostgresTarget {
        PostgresTarget {
            url: self.url.clone(),
            password: None,
            ca_file: None,
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let dropped = connect(&self.server).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .map_err(Into::into)
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the database {}: {e:#}", self.name);
        }
    }
}

/// A plain connection to `url` (the loader's and the harness's reads; the measured calls go
/// through `PgLedger`), waiting at most 5 s for the server.
fn connect(url: &str) -> Result<Client> {
    let mut config: postgres::Config = url
        .parse()
        .with_context(|| format!("{url} is not a PostgreSQL URL"))?;
    config.connect_timeout(Duration::from_secs(5));
    config
        .connect(NoTls)
        .with_context(|| format!("connecting to {url}"))
}

/// One size's ledger, loaded and ready to claim from.
struct ClaimSetup {
    size: u64,
    pending: u64,
    load_s: f64,
    bytes: i64,
    ledger: PgLedger,
    /// Dropped after the ledger's connection (fields drop in order).
    _db: ScratchDb,
}

/// One size's claim figure.
struct ClaimRun {
    size: u64,
    pending: u64,
    load_s: f64,
    bytes: i64,
    /// The very first claim, before the warm-up: the statement prepared and planned, the
    /// rows' pages read for the first time.
    first_s: f64,
    /// The timed claims, sorted.
    times: Vec<f64>,
}

impl ClaimRun {
    fn median(&self) -> f64 {
        self.times[self.times.len() / 2]
    }
}

/// `bench pg-claim`: every size loaded on a fresh database, then the timed claims taken in
/// rounds, one claim per size per round, so that every size meets the same machine (it is
/// shared: another process's burst lands on all sizes alike rather than on one); then the
/// ratio of the largest size's median to the smallest's and the claim's plan at the largest.
pub fn claim(server: &str, sizes: &[u64], reps: usize) -> Result<()> {
    ensure!(!sizes.is_empty() && reps > 0, "nothing to measure");
    let now = Utc::now();
    let lease_until = now + TimeDelta::minutes(5);
    let mut setups = Vec::new();
    for &size in sizes {
        setups.push(claim_setup(server, size, now)?);
    }
    let mut runs: Vec<ClaimRun> = Vec::new();
    for s in &setups {
        let first_s = timed_claim(&s.ledger, now, lease_until)?;
        for _ in 1..WARMUP {
            timed_claim(&s.ledger, now, lease_until)?;
        }
        runs.push(ClaimRun {
            size: s.size,
            pending: s.pending,
            load_s: s.load_s,
            bytes: s.bytes,
            first_s,
            times: Vec::with_capacity(reps),
        });
    }
    for _ in 0..reps {
        for (s, run) in setups.iter().zip(&mut runs) {
            run.times.push(timed_claim(&s.ledger, now, lease_until)?);
        }
    }
    for run in &mut runs {
        run.times.sort_by(f64::total_cmp);
        println!(
            "{} refunds ({} pending and due): loaded in {:.1} s ({} MB with indexes); claim of {CLAIM}: median {:.2} ms, min {:.2}, max {:.2} over {} claims; the first claim {:.2} ms",
            thousands(run.size),
            thousands(run.pending),
            run.load_s,
            run.bytes / 1_000_000,
            run.median() * 1e3,
            run.times[0] * 1e3,
            run.times[run.times.len() - 1] * 1e3,
            run.times.len(),
            run.first_s * 1e3,
        );
    }
    let (small, large) = (&runs[0], &runs[runs.len() - 1]);
    if runs.len() > 1 {
        println!(
            "ratio {} ÷ {} refunds: {:.2}× ({:.2} ms ÷ {:.2} ms; the issue's target: 2× or less)",
            thousands(large.size),
            thousands(small.size),
            large.median() / small.median(),
            large.median() * 1e3,
            small.median() * 1e3,
        );
    }
    let biggest = &setups[setups.len() - 1];
    println!(
        "EXPLAIN (ANALYZE, BUFFERS) of the claim at {} refunds:",
        thousands(biggest.size)
    );
    for line in biggest
        .ledger
        .explain_claim(now, CLAIM, NODE, lease_until)?
    {
        println!("    {line}");
    }
    println!(
        "machine: {}; load average {}",
        crate::machine(),
        load_average()
    );
    Ok(())
}

/// One claim of [`CLAIM`] refunds through the engine, timed (wall, as the worker waits for
/// it), then released untimed so that every claim finds the same longest-due rows free.
fn timed_claim(ledger: &PgLedger, now: Timestamp, lease_until: Timestamp) -> Result<f64> {
    let t = Instant::now();
    let got = ledger.claim_due(now, CLAIM, NODE, lease_until)?;
    let elapsed = t.elapsed().as_secs_f64();
    ensure!(
        got.rows.len() == CLAIM && got.unreadable.is_empty(),
        "the claim got {} rows ({} unreadable), not {CLAIM}",
        got.rows.len(),
        got.unreadable.len()
    );
    let numbers: Vec<OutRefundNo> = got.rows.into_iter().map(|s| s.out_refund_no).collect();
    ensure!(ledger.release_claims(NODE, &numbers)? == CLAIM, "release");
    Ok(elapsed)
}

/// One size: a fresh database, the ledger created by the engine, `size` refunds loaded,
/// ANALYZE, and a CHECKPOINT so that the load's writes are not flushed during the claims.
fn claim_setup(server: &str, size: u64, now: Timestamp) -> Result<ClaimSetup> {
    let db = ScratchDb::create(server, "claim")?;
    let mut ledger = PgLedger::open(&db.target(), OpenMode::Create)?;
    ledger.set_node(NODE)?;
    let mut client = connect(&db.url)?;
    eprintln!("loading {} refunds into {}", thousands(size), db.name);
    let started = Instant::now();
    load_history(&mut client, size, now, &started)?;
    client.batch_execute("ANALYZE refunds; CHECKPOINT;")?;
    let load_s = started.elapsed().as_secs_f64();
    let pending: i64 = client
        .query_one(
            "SELECT n FROM refund_counts WHERE status = 'REFUND_PENDING'",
            &[],
        )?
        .get(0);
    let pending = u64::try_from(pending)?;
    ensure!(
        pending == size / PENDING_EVERY && pending >= CLAIM as u64,
        "{pending} pending refunds in {size}: a claim of {CLAIM} needs at least {} refunds",
        CLAIM as u64 * PENDING_EVERY
    );
    let bytes: i64 = client
        .query_one("SELECT pg_total_relation_size('refunds')", &[])?
        .get(0);
    Ok(ClaimSetup {
        size,
        pending,
        load_s,
        bytes,
        ledger,
        _db: db,
    })
}

/// `/proc/loadavg`'s three averages: how busy the shared machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Loads `size` refunds server-side (`INSERT ... SELECT generate_series`), row g created g
/// seconds after a start that puts the last one an hour before `now`: every 100th pending and
/// due ([`DUE_AFTER_CREATED`] after its creation, so all are due at `now`), the rest final
/// rows as the daemon leaves them (answered by a query 15 minutes after creation, 1 in 10
/// failed). Every CHECK and every trigger runs on every row except the webhook outbox's
/// (`refunds_webhook_on_insert`, off for the load's own transactions): it would queue one
/// `refund.finalized` event per history row, which the claim never reads, and it is four
/// fifths of the load's time (13.8 s per 100,000 rows with it, 2 to 3 s without: 10M rows
/// would take about 23 min instead of 3 to 4).
fn load_history(client: &mut Client, size: u64, now: Timestamp, started: &Instant) -> Result<()> {
    let start = now - TimeDelta::hours(1) - TimeDelta::seconds(i64::try_from(size)?);
    let due_after = DUE_AFTER_CREATED.num_seconds();
    let mut lo = 1;
    while lo <= size {
        let hi = (lo + LOAD_BATCH - 1).min(size);
        client
            .batch_execute(&format!(
                "BEGIN;
                 ALTER TABLE refunds DISABLE TRIGGER refunds_webhook_on_insert;
                 INSERT INTO refunds (out_refund_no, refund_trade_no, amount, currency, status,
                                      created_at, final_source, finalized_at, attempts,
                                      last_attempt_at, last_outcome, next_query_at)
                 SELECT 'R' || lpad(g::text, 10, '0'), 'T' || lpad(g::text, 10, '0'),
                        {AMOUNT}, '{CURRENCY}',
                        CASE WHEN r.pending THEN 'REFUND_PENDING'
                             WHEN g % 10 = 9 THEN 'REFUND_FAILED'
                             ELSE 'REFUND_SUCCESS' END,
                        r.created,
                        CASE WHEN NOT r.pending THEN 'query' END,
                        CASE WHEN NOT r.pending THEN r.created + interval '15 minutes' END,
                        CASE WHEN r.pending THEN 0 ELSE 1 END,
                        CASE WHEN NOT r.pending THEN r.created + interval '15 minutes' END,
                        CASE WHEN NOT r.pending THEN 'final' END,
                        CASE WHEN r.pending THEN r.created + {due_after} * interval '1 second' END
                   FROM generate_series({lo}::bigint, {hi}::bigint) AS g,
                        LATERAL (SELECT g % {PENDING_EVERY} = 0 AS pending,
                                        '{start}'::timestamptz + g * interval '1 second' AS created) AS r;
                 ALTER TABLE refunds ENABLE TRIGGER refunds_webhook_on_insert;
                 COMMIT;",
                start = format_ts(start),
            ))
            .with_context(|| format!("loading rows {lo}..={hi}"))?;
        if size > LOAD_BATCH {
            eprintln!(
                "  {} rows, {:.0} s",
                thousands(hi),
                started.elapsed().as_secs_f64()
            );
        }
        lo = hi + 1;
    }
    Ok(())
}

/// One run of `pg-nodes`: how many daemons, and what they did.
struct NodesRun {
    refunds: usize,
    /// First to last `attempted_at` in the ledger, seconds.
    span_s: f64,
    /// Attempts per node, as `attempts.node` records them.
    per_node: Vec<(String, i64)>,
    /// Each daemon's user+sys CPU over its life, seconds.
    cpu_s: Vec<f64>,
    /// What the machine spent while the refunds were being finalized.
    window: Window,
}

/// CPU seconds used so far by each part of a run, and the machine's CPU ticks.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    daemons: f64,
    sandbox: f64,
    /// The server processes serving the run's database (their process title names it).
    server: f64,
    busy_ticks: u64,
    total_ticks: u64,
}

/// From the first poll that saw a refund finalized to the poll that saw none pending.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Refunds finalized between the two samples.
    refunds: usize,
    start: CpuSample,
    end: CpuSample,
}

impl Window {
    /// The share of the machine's CPU busy (every process, other work included).
    fn busy(&self) -> f64 {
        (self.end.busy_ticks - self.start.busy_ticks) as f64
            / (self.end.total_ticks - self.start.total_ticks).max(1) as f64
    }

    /// CPU per refund finalized in the window: daemons, sandbox, server, in seconds.
    fn per_refund(&self) -> (f64, f64, f64) {
        let n = self.refunds.max(1) as f64;
        (
            (self.end.daemons - self.start.daemons) / n,
            (self.end.sandbox - self.start.sandbox) / n,
            (self.end.server - self.start.server) / n,
        )
    }
}

impl NodesRun {
    fn rate(&self) -> f64 {
        (self.refunds as f64 - 1.0) / self.span_s
    }
}

/// What every daemon of a `pg-nodes` run is given.
pub struct Workers {
    /// The sandbox's answer latency (`50ms`).
    pub latency: String,
    /// `worker.concurrency`.
    pub concurrency: usize,
    /// `worker.batch_size` (`None`: the product's default).
    pub batch_size: Option<usize>,
    /// `worker.sweep_cron` (`None`: the product's default).
    pub sweep_cron: Option<String>,
}

/// `bench pg-nodes`: one daemon, then two, each run on a fresh database and a fresh sandbox.
pub fn nodes(bin: &Path, work: &Path, server: &str, refunds: usize, w: &Workers) -> Result<()> {
    crate::write_keys(work)?;
    let one = nodes_run(bin, work, server, &["a"], refunds, w)?;
    print_nodes(&one, w);
    let two = nodes_run(bin, work, server, &["a", "b"], refunds, w)?;
    print_nodes(&two, w);
    println!(
        "ratio two daemons ÷ one: {:.2}× ({:.0} ÷ {:.0} refunds/s; the issue's target: 1.8× or more)",
        two.rate() / one.rate(),
        two.rate(),
        one.rate()
    );
    println!(
        "worker settings: batch_size {}, sweep_cron {}; machine: {}",
        w.batch_size
            .map_or_else(|| "default".to_owned(), |b| b.to_string()),
        w.sweep_cron.as_deref().unwrap_or("default"),
        crate::machine()
    );
    Ok(())
}

fn print_nodes(run: &NodesRun, w: &Workers) {
    let (latency, concurrency) = (&w.latency, w.concurrency);
    let nodes: Vec<String> = run
        .per_node
        .iter()
        .map(|(n, c)| format!("{n}: {}", thousands(u64::try_from(*c).unwrap_or(0))))
        .collect();
    let cpu: f64 = run.cpu_s.iter().sum();
    println!(
        "{} daemon(s), {latency} latency, concurrency {concurrency} each: {} refunds in {:.2} s of attempts, {:.0} refunds/s ({:.1} % of {} × {concurrency} ÷ {latency}); attempts by node {}; daemon CPU {:.3} ms per refund (whole life)",
        run.cpu_s.len(),
        thousands(run.refunds as u64),
        run.span_s,
        run.rate(),
        run.rate() / ideal(run.cpu_s.len(), concurrency, latency) * 100.0,
        run.cpu_s.len(),
        nodes.join(", "),
        cpu / run.refunds as f64 * 1e3,
    );
    let (daemons, sandbox, server) = run.window.per_refund();
    let total = daemons + sandbox + server;
    println!(
        "    while {} refunds were finalized: machine {:.0} % busy (all processes); CPU per refund: daemons {:.3} ms + sandbox {:.3} ms + PostgreSQL backends {:.3} ms = {:.3} ms, so {} cores sustain at most {:.0} refunds/s of this system",
        thousands(run.window.refunds as u64),
        run.window.busy() * 100.0,
        daemons * 1e3,
        sandbox * 1e3,
        server * 1e3,
        total * 1e3,
        cores(),
        cores() as f64 / total,
    );
}

/// The machine's cores, as `/proc/cpuinfo` counts them.
fn cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1)
}

/// `nodes` daemons × `concurrency` queries each per round trip of `latency`, refunds/s.
fn ideal(nodes: usize, concurrency: usize, latency: &str) -> f64 {
    let ms: f64 = latency
        .trim_end_matches("ms")
        .parse()
        .unwrap_or(f64::INFINITY);
    (nodes * concurrency) as f64 / (ms / 1e3)
}

/// How long after the refunds are loaded they fall due: the daemons start meanwhile and all
/// report ready before it, so the first sweep that finds work finds every daemon waiting (one
/// started first gets no head start).
const START_MARGIN: TimeDelta = TimeDelta::seconds(6);

/// Loads `n` pending refunds (the sandbox scripts' numbers and amounts) due a few seconds
/// ahead, starts the sandbox and one daemon per node name, waits until every refund is final,
/// stops them and reads the span from the ledger.
fn nodes_run(
    bin: &Path,
    work: &Path,
    server: &str,
    nodes: &[&str],
    n: usize,
    w: &Workers,
) -> Result<NodesRun> {
    let dir = work.join(format!("nodes-{}", nodes.len()));
    std::fs::create_dir_all(&dir)?;
    let db = ScratchDb::create(server, &format!("nodes{}", nodes.len()))?;
    drop(PgLedger::open(&db.target(), OpenMode::Create)?);
    let scripts = dir.join("scripts.jsonl");
    std::fs::write(&scripts, success_scripts(n))?;
    let sandbox = SandboxProc::start(bin, &scripts, &w.latency, &dir.join("sandbox.log"))?;
    let mut client = connect(&db.url)?;
    let due = Utc::now() + START_MARGIN;
    load_pending(&mut client, n, due)?;
    let mut daemons = Vec::new();
    for node in nodes {
        let config = dir.join(format!("config-{node}.toml"));
        std::fs::write(&config, config_text(work, &db.url, &sandbox.url, node, w))?;
        let mut daemon = Timed::start(
            bin,
            &["run", "-c", config.to_str().context("path")?],
            &dir,
            &format!("daemon-{node}"),
        )?;
        daemon.wait_log("daemon ready", Duration::from_secs(30))?;
        daemons.push(daemon);
    }
    ensure!(
        Utc::now() < due,
        "the daemons were ready only after the refunds fell due (raise START_MARGIN)"
    );
    let window = wait_all_final(&mut client, n, Duration::from_secs(900), &mut || {
        cpu_sample(&daemons, &sandbox, &db.name)
    })?;
    let logs: Vec<_> = daemons.iter().map(|d| d.log.clone()).collect();
    let mut cpu_s = Vec::new();
    for daemon in daemons {
        cpu_s.push(daemon.stop()?.cpu);
    }
    drop(sandbox);
    let row = client.query_one(
        "SELECT min(attempted_at), max(attempted_at), count(*) FROM attempts",
        &[],
    )?;
    let (first, last, count): (Timestamp, Timestamp, i64) = (row.get(0), row.get(1), row.get(2));
    ensure!(
        usize::try_from(count)? == n,
        "{count} attempts for {n} refunds"
    );
    let per_node = client
        .query(
            "SELECT coalesce(node, '?'), count(*) FROM attempts GROUP BY node ORDER BY node",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // The daemons' own counters must tell the ledger's story: one query and one final
    // outcome per refund between them, none counted twice.
    let (mut queried, mut finalized) = (0, 0);
    for log in &logs {
        let totals = daemon_totals(log)?;
        queried += totals.queried;
        finalized += totals.finalized;
    }
    ensure!(
        usize::try_from(queried)? == n && usize::try_from(finalized)? == n,
        "the daemons counted {queried} queries and {finalized} finalized for {n} refunds ({})",
        dir.display()
    );
    Ok(NodesRun {
        refunds: n,
        span_s: (last - first).as_seconds_f64(),
        per_node,
        cpu_s,
        window,
    })
}

/// `n` pending refunds due at `due`, numbered and priced as the sandbox scripts
/// ([`success_scripts`]) answer them, inserted as the merchant's app would (every trigger on).
fn load_pending(client: &mut Client, n: usize, due: Timestamp) -> Result<()> {
    let numbers: Vec<String> = (0..n).map(pending_no).collect();
    let created = due - DUE_AFTER_CREATED;
    client.execute(
        &format!(
            "INSERT INTO refunds (out_refund_no, refund_trade_no, amount, currency, created_at,
                                  next_query_at)
             SELECT no, 'T' || no, {AMOUNT}, '{CURRENCY}', $1, $2 FROM unnest($3::text[]) AS no"
        ),
        &[&created, &due, &numbers],
    )?;
    client.batch_execute("ANALYZE refunds")?;
    Ok(())
}

/// A daemon's config: the ledger on PostgreSQL, the sandbox as the gateway, the INSECURE test
/// keys under `work`, and the worker's rate limit raised far above what `concurrency` queries
/// at the sandbox's latency can reach, so it never caps the throughput. `batch_size` stays the
/// default (500) unless asked: a node claims a sweep's batch at once, so at the end of the run
/// one node can be left alone with its last batch; 500 keeps that tail under a second (5,000,
/// figure 2's batch, would leave one node up to 7.8 s of work alone).
fn config_text(work: &Path, url: &str, gateway: &str, node: &str, w: &Workers) -> String {
    let keys = work.join("keys");
    let concurrency = w.concurrency;
    let mut extra = String::new();
    if let Some(b) = w.batch_size {
        extra.push_str(&format!("batch_size = {b}\n"));
    }
    if let Some(c) = &w.sweep_cron {
        extra.push_str(&format!("sweep_cron = \"{c}\"\n"));
    }
    format!(
        r#"[ledger]
url = "{url}"

[gateway]
base_url = "{gateway}"
app_id = "SANDBOX-APP"
merchant_no = "SANDBOX-MERCHANT"

[keys]
merchant_private_key = "file:{keys}/merchant_private.pem"
gateway_public_key = "file:{keys}/gateway_public.pem"

[worker]
concurrency = {concurrency}
node_name = "{node}"
rate_per_second = 100000.0
{extra}
[log]
format = "text"
level = "info"
"#,
        keys = keys.display(),
    )
}

/// Waits until no refund is pending (an O(1) read of `refund_counts`, a few times a second:
/// the harness shares the two cores with the daemons, the sandbox and the server), sampling
/// the CPU at the first poll that sees a refund finalized and at the end.
fn wait_all_final(
    client: &mut Client,
    n: usize,
    timeout: Duration,
    sample: &mut dyn FnMut() -> Result<CpuSample>,
) -> Result<Window> {
    let started = Instant::now();
    let mut from: Option<(usize, CpuSample)> = None;
    loop {
        let pending: i64 = client
            .query_one(
                "SELECT n FROM refund_counts WHERE status = 'REFUND_PENDING'",
                &[],
            )?
            .get(0);
        let pending = usize::try_from(pending)?;
        if from.is_none() && pending < n {
            from = Some((pending, sample()?));
        }
        if pending == 0 {
            let (left, start) = from.context("no refund was seen pending")?;
            return Ok(Window {
                refunds: left,
                start,
                end: sample()?,
            });
        }
        if started.elapsed() > timeout {
            bail!("{pending} refunds still pending after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The CPU used so far by the daemons, the sandbox, the server processes of database `db`,
/// and the machine.
fn cpu_sample(daemons: &[Timed], sandbox: &SandboxProc, db: &str) -> Result<CpuSample> {
    let mut d = 0.0;
    for daemon in daemons {
        d += daemon.cpu_now()?;
    }
    let (busy_ticks, total_ticks) = cpu_ticks()?;
    Ok(CpuSample {
        daemons: d,
        sandbox: sandbox.cpu_now()?,
        server: server_cpu(db),
        busy_ticks,
        total_ticks,
    })
}

/// CPU seconds used so far by the PostgreSQL backends serving database `db` on this machine
/// (a backend's process title is `postgres: CLUSTER: USER DB HOST STATE`); 0 when the server
/// runs elsewhere.
fn server_cpu(db: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let title = String::from_utf8_lossy(&c);
                title.starts_with("postgres: ") && title.split_whitespace().any(|w| w == db)
            })
        })
        .filter_map(|pid| process_cpu(pid).ok())
        .sum()
}

/// The machine's busy and total CPU ticks so far (`/proc/stat`'s first line; idle and iowait
/// count as not busy).
fn cpu_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(f.len() == 8, "/proc/stat: {line}");
    let total: u64 = f.iter().sum();
    Ok((total - f[3] - f[4], total))
}
