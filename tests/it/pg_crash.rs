//! Crash safety and outages on a PostgreSQL ledger (issue 14, part 4): several real daemons
//! (`worker.node_name` a, b, c) share one ledger in a fresh database and reconcile thousands
//! of refunds against the sandbox.
//!
//! - Crash: random nodes are killed with SIGKILL at seeded random moments (during start-up,
//!   mid-work) and restarted. After every kill and at the end the ledger is audited with plain
//!   SQL, as tests/it/crash.rs audits the SQLite file (tests/common/audit.rs): no final
//!   outcome changed, no attempt row lost or rewritten, none written twice, every refund at
//!   its true outcome; and the sandbox saw no two queries for one refund in flight at once
//!   (its `overlaps`), so no two nodes ever held the same refund. `PG_CRASH_SEED` replays.
//! - The database going away: the server is restarted, then stopped for a while, under two
//!   running daemons. While it is down `/readyz` answers 503 `ledger_unavailable` and `status`
//!   exits 1 naming the ledger; once it is back the daemons carry on by themselves and every
//!   refund ends at its true outcome. This test holds tests/common/pg.rs's server lock
//!   exclusively, so no other PostgreSQL test runs during the outage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::audit::{check_final, check_snapshot, crash_scripts, truth_of};
use crate::common::pg::{self, node_config, spawn_node};
use crate::common::proc::{
    AttemptSnap, LiveSandbox, Proc, RefundSnap, code, env_or, http, http_on_loopback,
    import_scripts, listening_addr, poll_until, run, seed_from_env, stderr,
};
use checus_reconciler::domain::RefundStatus;
use postgres::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The daemons sharing the ledger.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Queries in flight at once in each daemon (bounds what one kill can interrupt).
const CONCURRENCY: u64 = 8;
/// The sandbox's answer time: long enough that two queries for one refund would overlap.
const LATENCY: Duration = Duration::from_millis(2);

/// The `[worker]` keys of every daemon under test.
fn worker_keys(rate_per_second: f64) -> String {
    format!(
        "concurrency = {CONCURRENCY}\nrate_per_second = {rate_per_second:.1}\nbatch_size = 200\n\
         shutdown_deadline = \"5s\""
    )
}

/// How the run went, for the report.
#[derive(Debug, Default)]
struct Figures {
    refunds: usize,
    kills_startup: u32,
    kills_mid_work: u32,
    kills_idle: u32,
    kills_by_node: BTreeMap<&'static str, u32>,
    queries_answered: u64,
    attempts_recorded: u64,
    attempts_by_node: BTreeMap<String, i64>,
    interrupted_in_flight: u64,
    overlaps: u64,
}

impl Figures {
    fn kills(&self) -> u32 {
        self.kills_startup + self.kills_mid_work + self.kills_idle
    }
}

/// Snapshot of the ledger, checked against the previous one.
fn audit(
    c: &mut Client,
    truth: &BTreeMap<String, RefundStatus>,
    prev: &(BTreeMap<String, RefundSnap>, BTreeMap<i64, AttemptSnap>),
    when: &str,
) -> (BTreeMap<String, RefundSnap>, BTreeMap<i64, AttemptSnap>) {
    let now = (pg::refunds(c), pg::attempts(c));
    check_snapshot(truth, &prev.0, &prev.1, &now.0, &now.1, when);
    now
}

fn pending(c: &mut Client) -> i64 {
    pg::count(c, "refunds WHERE status = 'REFUND_PENDING'")
}

/// Whether a session holds the node lock of `node` (the daemon's session advisory lock,
/// src/ledger/postgres/lock.rs: the key is the server's hash of the node name).
fn node_locked(c: &mut Client, node: &str) -> bool {
    c.query_one(
        "SELECT EXISTS (
           SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 1
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND ((classid::bigint << 32) | objid::bigint)
                  = hashtextextended('checus-reconciler node ' || $1, 0))",
        &[&node],
    )
    .unwrap()
    .get(0)
}

/// Waits until the server has ended a killed daemon's session and so dropped its node lock,
/// as systemd's `RestartSec=5s` waits before a restart: a daemon started while the dead
/// session lingers would be refused (exit 4, the node is running).
fn wait_node_unlocked(c: &mut Client, node: &str) {
    poll_until(
        &format!("the server to drop {node}'s lock"),
        Duration::from_secs(30),
        || (!node_locked(c, node)).then_some(()),
    );
}

/// Per-refund line of the log that marks one recorded attempt.
fn is_attempt_line(line: &str) -> bool {
    line.contains("\"out_refund_no\"")
}

/// Waits until no refund is pending, reading `node`'s output meanwhile (so a failure shows
/// it); panics after `within`.
fn wait_settled(c: &mut Client, node: &mut Proc, within: Duration) {
    let deadline = Instant::now() + within;
    while pending(c) > 0 {
        assert!(
            Instant::now() < deadline,
            "not settled: {} pending\n{}",
            pending(c),
            node.tail(40)
        );
        node.next_line(Duration::from_millis(500));
    }
}

/// Stops every node with SIGTERM; each must exit 0.
fn stop_all(nodes: &mut [Proc]) {
    for n in nodes.iter() {
        n.signal("-TERM");
    }
    for n in nodes.iter_mut() {
        assert_eq!(n.wait_exit(Duration::from_secs(30)), 0, "{}", n.tail(40));
    }
}

fn crash_run(url: &str, refund_count: usize, kills: u32, seed: u64) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scripts = crash_scripts(refund_count, seed, "R-PC-");
    let truth = truth_of(&scripts);
    let total_steps: usize = scripts.iter().map(|(_, s)| s.steps.len()).sum();
    let sandbox = LiveSandbox::start_with(scripts.clone(), |o| o.latency = LATENCY);
    let configs: Vec<PathBuf> = NODES
        .iter()
        .map(|n| node_config(d, n, url, &sandbox.base_url(), &worker_keys(2000.0), ""))
        .collect();
    import_scripts(d, &configs[0], &scripts);
    let mut c = pg::connect(url).unwrap();

    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut figures = Figures {
        refunds: refund_count,
        ..Figures::default()
    };
    let mut snap = audit(
        &mut c,
        &truth,
        &(BTreeMap::new(), BTreeMap::new()),
        "after import",
    );
    let mut nodes: Vec<Proc> = configs.iter().map(|cfg| spawn_node(cfg)).collect();
    // A victim's attempt lines are about a third of all: spread the kills over roughly the
    // first half of the run.
    let max_gap = (total_steps / (kills as usize * NODES.len())).max(2);
    while figures.kills() < kills {
        let v = rng.random_range(0..NODES.len());
        let victim = &mut nodes[v];
        victim.saw_or_wait("daemon ready");
        let gap = rng.random_range(1..=max_gap);
        let mut seen = 0;
        let mut idle = false;
        while seen < gap {
            match victim.next_line(Duration::from_secs(2)) {
                Some(line) if is_attempt_line(&line) => seen += 1,
                Some(_) => {}
                None if pending(&mut c) == 0 => {
                    idle = true;
                    break;
                }
                None => {}
            }
        }
        // Land between log lines, not just on them.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..5_000)));
        assert!(
            node_locked(&mut c, NODES[v]),
            "a ready {} holds its node lock",
            NODES[v]
        );
        victim.kill9();
        if idle {
            figures.kills_idle += 1;
        } else {
            figures.kills_mid_work += 1;
        }
        *figures.kills_by_node.entry(NODES[v]).or_default() += 1;
        let k = figures.kills();
        snap = audit(&mut c, &truth, &snap, &format!("kill {k} ({})", NODES[v]));
        wait_node_unlocked(&mut c, NODES[v]);
        nodes[v] = spawn_node(&configs[v]);
        if rng.random_range(0..8) == 0 && figures.kills() < kills {
            // Any instant of its start-up: connecting, taking its node lock, the first claim.
            std::thread::sleep(Duration::from_micros(rng.random_range(0..300_000)));
            nodes[v].kill9();
            figures.kills_startup += 1;
            *figures.kills_by_node.entry(NODES[v]).or_default() += 1;
            let k = figures.kills();
            snap = audit(
                &mut c,
                &truth,
                &snap,
                &format!("kill {k} ({}, start-up)", NODES[v]),
            );
            wait_node_unlocked(&mut c, NODES[v]);
            nodes[v] = spawn_node(&configs[v]);
        }
    }

    // The last lives: all nodes run to the end and stop cleanly.
    for n in &mut nodes {
        n.saw_or_wait("daemon ready");
    }
    wait_settled(&mut c, &mut nodes[0], Duration::from_secs(300));
    stop_all(&mut nodes);
    let (final_r, final_a) = audit(&mut c, &truth, &snap, "the end");
    assert_eq!(
        pg::count(&mut c, "discrepancies"),
        0,
        "crashes raised discrepancies"
    );
    assert_eq!(
        pg::count(&mut c, "refunds WHERE claimed_by IS NOT NULL"),
        0,
        "a lease outlived the run"
    );
    let stats = sandbox.stats();
    let interrupted = check_final(&scripts, &truth, &final_r, &final_a, &stats);
    // Per kill, at most the queries on the wire plus the answers waiting for the group
    // commit, each bounded by the concurrency, are lost (and re-queried after restart).
    assert!(
        interrupted <= u64::from(figures.kills()) * 2 * CONCURRENCY,
        "{interrupted} unrecorded queries for {} kills",
        figures.kills()
    );
    assert_eq!(
        stats.overlaps, 0,
        "two queries for one refund were in flight at once: {:?}",
        stats.overlaps_by_refund
    );
    figures.queries_answered = stats.queries;
    figures.attempts_recorded = final_a.len() as u64;
    figures.interrupted_in_flight = interrupted;
    figures.overlaps = stats.overlaps;
    figures.attempts_by_node = c
        .query(
            "SELECT coalesce(node, '?'), count(*) FROM attempts GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    figures
}

#[test]
fn pg_three_nodes_sigkilled_at_random_moments_lose_nothing_and_never_share_a_refund() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let Some((url, _db)) = pg::fresh_db() else {
        return;
    };
    let seed = seed_from_env("PG_CRASH_SEED");
    let refunds: usize = env_or("PG_CRASH_REFUNDS", 2000);
    let kills: u32 = env_or("PG_CRASH_KILLS", 24);
    let started = Instant::now();
    let f = crash_run(&url, refunds, kills, seed);
    assert!(f.kills() >= 20 || kills < 20, "{f:?}");
    assert!(
        f.kills_mid_work >= f.kills() / 2,
        "most kills should land mid-work: {f:?}"
    );
    eprintln!(
        "pg crash: seed {seed}: {} refunds, {} nodes, {} SIGKILLs ({} during start-up, {} mid-work, \
         {} idle; by node {:?}); {} queries answered, {} attempts recorded (by node {:?}), {} \
         answered while their node died (re-queried); lost 0, changed 0, written twice 0, \
         discrepancies 0, overlapping queries for one refund {}; {:.1?}",
        f.refunds,
        NODES.len(),
        f.kills(),
        f.kills_startup,
        f.kills_mid_work,
        f.kills_idle,
        f.kills_by_node,
        f.queries_answered,
        f.attempts_recorded,
        f.attempts_by_node,
        f.interrupted_in_flight,
        f.overlaps,
        started.elapsed(),
    );
}

/// The cluster `pg_ctlcluster` (re)starts: the server the tests use by default.
const CLUSTER: [&str; 2] = ["15", "main"];

/// `pg_ctlcluster --skip-systemctl-redirect 15 main <action>` (we are root here; the redirect
/// to systemctl is skipped because the test machine's server runs without systemd).
fn pg_ctlcluster(action: &str) -> std::process::Output {
    Command::new("pg_ctlcluster")
        .arg("--skip-systemctl-redirect")
        .args(CLUSTER)
        .arg(action)
        .output()
        .expect("pg_ctlcluster runs")
}

/// True once the server accepts connections (`pg_isready` exits 0).
fn server_ready() -> bool {
    let u = url::Url::parse(&pg::server_url()).unwrap();
    Command::new("pg_isready")
        .args(["-q", "-h", u.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &u.port().unwrap_or(5432).to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `pg_isready` until the server accepts connections.
fn wait_server_ready() {
    poll_until(
        "the PostgreSQL server to accept connections",
        Duration::from_secs(60),
        || server_ready().then_some(()),
    );
}

/// Starts the server again when dropped (a failing test included), and waits until it
/// accepts connections, so no later test finds it down.
struct ServerBack;

impl Drop for ServerBack {
    fn drop(&mut self) {
        if !server_ready() {
            // Exit 2 ("already running") is fine; anything else shows on stderr.
            let o = pg_ctlcluster("start");
            if !o.status.success() {
                eprintln!(
                    "pg_ctlcluster start: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while !server_ready() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `/readyz` of the daemon at `addr`: its status and body (`None`: no answer).
fn readyz(addr: std::net::SocketAddr) -> Option<(u16, String)> {
    http(
        "GET",
        &format!("http://{addr}/readyz"),
        &[],
        None,
        Duration::from_secs(5),
    )
    .ok()
    .map(|a| (a.status, a.body))
}

#[test]
fn pg_a_database_restart_and_outage_are_reported_and_nothing_is_lost() {
    if !crate::common::tools::require_tool("kill")
        || !crate::common::tools::require_tool("pg_ctlcluster")
        || !crate::common::tools::require_tool("pg_isready")
        || !crate::common::tools::require_root("pg_ctlcluster restarts the PostgreSQL server")
    {
        return;
    }
    // Exclusive: waits for every other PostgreSQL test to finish with its database, and keeps
    // new ones waiting until this one ends, so the outage breaks nobody else.
    let Some((url, db)) = pg::fresh_db_for_outage() else {
        return;
    };
    let seed = seed_from_env("PG_OUTAGE_SEED");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scripts = crash_scripts(600, seed, "R-PO-");
    let truth = truth_of(&scripts);
    let sandbox = LiveSandbox::start_with(scripts.clone(), |o| o.latency = LATENCY);
    // Slow enough (2 × 100 queries/s) that the outage lands mid-run. The refunds a node had
    // claimed when the server went away stay leased to it until their lease ends (the answers
    // it could not record are lost with the connection), so the lease is short here: 10 s,
    // just above the least a 2 s request timeout allows (2 × (2 × 2 s + the commit window)).
    let worker = format!("{}\nclaim_lease = \"10s\"", worker_keys(100.0));
    let configs: Vec<PathBuf> = NODES[..2]
        .iter()
        .map(|n| {
            node_config(
                d,
                n,
                &url,
                &sandbox.base_url(),
                &worker,
                &http_on_loopback(),
            )
        })
        .collect();
    import_scripts(d, &configs[0], &scripts);
    let mut nodes: Vec<Proc> = configs.iter().map(|cfg| spawn_node(cfg)).collect();
    let addrs: Vec<_> = nodes.iter_mut().map(listening_addr).collect();
    for n in &mut nodes {
        n.saw_or_wait("daemon ready");
    }
    let attempts_now = || {
        pg::connect(&url)
            .ok()
            .map(|mut c| pg::count(&mut c, "attempts"))
    };
    poll_until("200 attempts recorded", Duration::from_secs(60), || {
        attempts_now().filter(|n| *n >= 200)
    });

    // 1. A restart (stop, start): the daemons reconnect and record more.
    let back = ServerBack;
    let o = pg_ctlcluster("restart");
    assert!(o.status.success(), "restart: {}", stderr(&o));
    wait_server_ready();
    let after_restart = attempts_now().expect("the server is back");
    poll_until(
        "attempts recorded after the restart",
        Duration::from_secs(60),
        || attempts_now().filter(|n| *n >= after_restart + 100),
    );

    // 2. An outage that lasts: the server stopped until the test has seen it reported.
    let pending_before = pg::count(
        &mut pg::connect(&url).unwrap(),
        "refunds WHERE status = 'REFUND_PENDING'",
    );
    assert!(pending_before > 0, "the run ended before the outage");
    let o = pg_ctlcluster("stop");
    assert!(o.status.success(), "stop: {}", stderr(&o));
    let down = Instant::now();
    for addr in &addrs {
        let body = poll_until(
            "/readyz to report ledger_unavailable",
            Duration::from_secs(60),
            || {
                readyz(*addr).and_then(|(status, body)| {
                    (status == 503 && body.contains("ledger_unavailable")).then_some(body)
                })
            },
        );
        assert!(!body.contains("lock_lost"), "{body}");
    }
    // `status` cannot read the ledger: exit 1 (a runtime failure, README "Exit codes"), one
    // message naming the ledger's URL.
    let cfg = configs[0].to_str().unwrap();
    let st = run(d, &["status", "--config", cfg]);
    let msg = stderr(&st);
    assert_eq!(code(&st), 1, "{msg}");
    assert!(
        msg.contains("cannot connect to the PostgreSQL ledger") && msg.contains(db.name()),
        "{msg}"
    );
    for n in &mut nodes {
        assert!(
            n.child.try_wait().unwrap().is_none(),
            "a daemon exited during the outage:\n{}",
            n.tail(40)
        );
    }
    let o = pg_ctlcluster("start");
    assert!(o.status.success(), "start: {}", stderr(&o));
    wait_server_ready();
    let outage = down.elapsed();
    drop(back);
    for addr in &addrs {
        poll_until(
            "/readyz to answer 200 again",
            Duration::from_secs(60),
            || readyz(*addr).filter(|(status, _)| *status == 200),
        );
    }
    let st = run(d, &["status", "--config", cfg]);
    assert_ne!(code(&st), 1, "{}", stderr(&st));

    // 3. They finish every refund, nothing lost, nothing twice, nobody's refund shared.
    let mut c = pg::connect(&url).unwrap();
    wait_settled(&mut c, &mut nodes[0], Duration::from_secs(120));
    stop_all(&mut nodes);
    let final_r = pg::refunds(&mut c);
    let final_a = pg::attempts(&mut c);
    check_snapshot(
        &truth,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &final_r,
        &final_a,
        "the end",
    );
    assert_eq!(pg::count(&mut c, "discrepancies"), 0);
    let stats = sandbox.stats();
    let unrecorded = check_final(&scripts, &truth, &final_r, &final_a, &stats);
    assert_eq!(stats.overlaps, 0, "{:?}", stats.overlaps_by_refund);
    eprintln!(
        "pg outage: seed {seed}: {} refunds, 2 nodes; a restart, then the server stopped for \
         {outage:.1?} ({pending_before} refunds pending): /readyz 503 ledger_unavailable on both, \
         `status` exit 1 naming the ledger, both daemons stayed up and carried on; {} queries \
         answered, {} attempts recorded, {unrecorded} answered but not recorded (re-queried); \
         lost 0, written twice 0, overlapping queries 0",
        scripts.len(),
        stats.queries,
        final_a.len(),
    );
}

/// The server lock the outage test relies on: while a test holds a fresh database, nobody can
/// take [`pg::SERVER_LOCK`] exclusively (so the server cannot be restarted under it), and other
/// tests still share it.
#[test]
fn pg_a_fresh_database_keeps_the_server_from_being_restarted_under_it() {
    let Some((_url, db)) = pg::fresh_db() else {
        return;
    };
    let other = std::fs::File::open(pg::SERVER_LOCK).unwrap();
    assert!(
        matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "an exclusive lock was granted while a database is in use"
    );
    other
        .try_lock_shared()
        .expect("another test shares the server");
    other.unlock().unwrap();
    drop(db);
}
