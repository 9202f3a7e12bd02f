//! Crash safety: the real daemon binary reconciles thousands of refunds against the sandbox
//! and is killed with SIGKILL at seeded random moments (during start-up, mid-work, idle), then
//! restarted, over and over. After every kill and at the end the ledger file is audited with
//! plain SQL: integrity, no final outcome changed, no attempt row lost or rewritten, none
//! written twice, every refund at its true outcome, no discrepancy raised by the crashes.
//!
//! `CRASH_SEED=<n>` replays a run. The soak (`soak`, ignored by default) runs the same audit
//! with more refunds and kills, round after round, for `SOAK_SECONDS` (see docs/reliability.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::audit::{check_final, check_snapshot, crash_scripts, truth_of};
use crate::common::proc::{
    AttemptSnap, LiveSandbox, Proc, RefundSnap, attempts, cmd, count, env_or, fast_schedule,
    import_scripts, integrity, refunds, seed_from_env, write_config,
};
use checus_reconciler::domain::RefundStatus;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Queries in flight at once in the daemon under test (bounds what one kill can interrupt).
const CONCURRENCY: u64 = 16;

/// How the run went, for the report.
#[derive(Debug, Default)]
struct Figures {
    refunds: usize,
    kills_startup: u32,
    kills_mid_work: u32,
    kills_idle: u32,
    queries_answered: u64,
    attempts_recorded: u64,
    interrupted_in_flight: u64,
    final_outcomes: usize,
}

impl Figures {
    fn kills(&self) -> u32 {
        self.kills_startup + self.kills_mid_work + self.kills_idle
    }
}

/// Audit of one snapshot against the previous one: nothing committed may change or vanish.
fn audit_snapshot(
    ledger: &Path,
    truth: &BTreeMap<String, RefundStatus>,
    prev_refunds: &BTreeMap<String, RefundSnap>,
    prev_attempts: &BTreeMap<i64, AttemptSnap>,
    when: &str,
) -> (BTreeMap<String, RefundSnap>, BTreeMap<i64, AttemptSnap>) {
    assert_eq!(integrity(ledger), "ok", "{when}: integrity_check");
    let now_refunds = refunds(ledger);
    let now_attempts = attempts(ledger);
    check_snapshot(
        truth,
        prev_refunds,
        prev_attempts,
        &now_refunds,
        &now_attempts,
        when,
    );
    (now_refunds, now_attempts)
}

/// Per-refund line of the log that marks one recorded attempt.
fn is_attempt_line(line: &str) -> bool {
    line.contains("\"out_refund_no\"")
}

fn spawn_daemon(dir: &Path, config: &Path) -> Proc {
    let mut c = cmd(dir);
    c.args(["run", "--config", config.to_str().unwrap()]);
    Proc::spawn(c)
}

fn crash_run(refund_count: usize, kills: u32, seed: u64) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scripts = crash_scripts(refund_count, seed, "R-CR-");
    let truth = truth_of(&scripts);
    let total_steps: usize = scripts.iter().map(|(_, s)| s.steps.len()).sum();
    let sandbox = LiveSandbox::start(scripts.clone());
    let config = write_config(
        d,
        &sandbox.base_url(),
        &fast_schedule(&format!(
            "concurrency = {CONCURRENCY}\nrate_per_second = 2000.0\nbatch_size = 500\nshutdown_deadline = \"5s\""
        )),
    );
    let ledger = d.join("ledger.sqlite");
    import_scripts(d, &config, &scripts);

    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut figures = Figures {
        refunds: refund_count,
        ..Figures::default()
    };
    let (mut snap_r, mut snap_a) = audit_snapshot(
        &ledger,
        &truth,
        &BTreeMap::new(),
        &BTreeMap::new(),
        "after import",
    );
    let settled = |ledger: &Path| count(ledger, "refunds WHERE status = 'REFUND_PENDING'") == 0;
    // Spread the kills over roughly the first half of the expected attempt lines.
    let max_gap = (total_steps / kills as usize).max(2);
    for k in 1..=kills {
        let mut daemon = spawn_daemon(d, &config);
        if rng.random_range(0..8) == 0 {
            // Any instant of start-up: opening the ledger, taking the lock, the first sweep.
            std::thread::sleep(Duration::from_micros(rng.random_range(0..300_000)));
            figures.kills_startup += 1;
        } else {
            daemon.wait_for("daemon ready");
            let gap = rng.random_range(1..=max_gap);
            let mut seen = 0;
            let mut idle = false;
            while seen < gap {
                match daemon.next_line(Duration::from_secs(2)) {
                    Some(line) if is_attempt_line(&line) => seen += 1,
                    Some(_) => {}
                    None if settled(&ledger) => {
                        idle = true;
                        break;
                    }
                    None => {}
                }
            }
            // Land between log lines, not just on them.
            std::thread::sleep(Duration::from_micros(rng.random_range(0..5_000)));
            if idle {
                figures.kills_idle += 1;
            } else {
                figures.kills_mid_work += 1;
            }
        }
        daemon.kill9();
        (snap_r, snap_a) = audit_snapshot(&ledger, &truth, &snap_r, &snap_a, &format!("kill {k}"));
    }

    // The last life: runs to the end and stops cleanly.
    let mut daemon = spawn_daemon(d, &config);
    daemon.wait_for("daemon ready");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !settled(&ledger) {
        assert!(
            Instant::now() < deadline,
            "not settled:\n{}",
            daemon.tail(40)
        );
        daemon.next_line(Duration::from_secs(2));
    }
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
    let (final_r, final_a) = audit_snapshot(&ledger, &truth, &snap_r, &snap_a, "the end");

    assert_eq!(
        count(&ledger, "discrepancies"),
        0,
        "crashes raised discrepancies"
    );

    // Attempts: each recorded attempt is one answered query, in order, never twice. The
    // sandbox counts the steps it served; a query answered while the daemon died is served
    // but unrecorded (and re-asked later), never recorded twice.
    let stats = sandbox.stats();
    let interrupted = check_final(&scripts, &truth, &final_r, &final_a, &stats);
    figures.queries_answered = stats.queries;
    figures.attempts_recorded = final_a.len() as u64;
    figures.interrupted_in_flight = interrupted;
    figures.final_outcomes = final_r
        .values()
        .filter(|r| r.status != "REFUND_PENDING")
        .count();
    // Per kill, at most the queries on the wire plus the answers waiting for the group
    // commit, each bounded by the concurrency, are lost (and re-queried after restart).
    assert!(
        interrupted <= u64::from(figures.kills()) * 2 * CONCURRENCY,
        "{interrupted} unrecorded queries for {} kills",
        figures.kills()
    );
    figures
}

fn report(label: &str, seed: u64, f: &Figures) {
    eprintln!(
        "{label}: seed {seed}: {} refunds, {} SIGKILLs ({} during start-up, {} mid-work, {} idle); \
         {} queries answered, {} attempts recorded, {} answered while the daemon died (re-queried); \
         {} final outcomes, all true; lost 0, changed 0, written twice 0, discrepancies 0, integrity ok",
        f.refunds,
        f.kills(),
        f.kills_startup,
        f.kills_mid_work,
        f.kills_idle,
        f.queries_answered,
        f.attempts_recorded,
        f.interrupted_in_flight,
        f.final_outcomes,
    );
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_finalizes_nothing_wrongly() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let seed = seed_from_env("CRASH_SEED");
    let f = crash_run(2000, 24, seed);
    assert!(f.kills() >= 20);
    assert!(
        f.kills_mid_work >= 10,
        "most kills should land mid-work: {f:?}"
    );
    report("crash", seed, &f);
}

/// The soak: `SOAK_SECONDS` (default 600) of rounds of `SOAK_REFUNDS` (default 10000) refunds
/// and `SOAK_KILLS` (default 100) SIGKILLs each. Run it with `bench/soak.sh`.
#[test]
#[ignore = "soak: long; run with bench/soak.sh"]
fn soak() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let seed = seed_from_env("SOAK_SEED");
    let seconds: u64 = env_or("SOAK_SECONDS", 600);
    let refunds: usize = env_or("SOAK_REFUNDS", 10_000);
    let kills: u32 = env_or("SOAK_KILLS", 100);
    let started = Instant::now();
    let mut total = Figures::default();
    let mut round = 0u64;
    loop {
        let round_seed = seed.wrapping_add(round);
        let f = crash_run(refunds, kills, round_seed);
        report(&format!("soak round {}", round + 1), round_seed, &f);
        total.refunds += f.refunds;
        total.kills_startup += f.kills_startup;
        total.kills_mid_work += f.kills_mid_work;
        total.kills_idle += f.kills_idle;
        total.queries_answered += f.queries_answered;
        total.attempts_recorded += f.attempts_recorded;
        total.interrupted_in_flight += f.interrupted_in_flight;
        total.final_outcomes += f.final_outcomes;
        round += 1;
        if started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
    }
    report(
        &format!("soak total ({round} rounds, {:?})", started.elapsed()),
        seed,
        &total,
    );
}
