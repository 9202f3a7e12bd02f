//! Concurrency: while the real daemon reconciles, this test process (a second writer, as the
//! merchant's app is) writes to the same ledger file through the documented SQL contract:
//! 1,800 writes paced at 300 per second (the achieved rate is printed, not asserted: a rate
//! floor would make the test time the machine, not the product): new refunds, notifications that agree with the gateway, and
//! notifications that contradict an outcome already recorded. Neither side may see "database
//! is locked", nothing either side wrote may be lost, and every conflict must land in the
//! discrepancy table. Then the single-daemon guard: a second daemon refuses, and SIGKILL of
//! the first leaves no stale lock behind. `CONCURRENCY_SEED` replays a run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, count, fast_schedule, import_csv, integrity, refunds, run,
    seed_from_env, sql, stderr, write_config,
};
use checus_reconciler::domain::RefundStatus;
use checus_reconciler::ledger::contract::snippet;
use checus_reconciler::sandbox::{RefundScript, Step};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Writes per second the second writer aims for.
const TARGET_RATE: f64 = 300.0;
/// How many writes it makes: six seconds' worth at the target rate.
const WRITES: u64 = 1_800;

fn script(no: &str, rng: &mut StdRng) -> RefundScript {
    let mut steps = vec![Step::Pending; rng.random_range(0..=2)];
    steps.push(if rng.random_range(0..4) == 0 {
        Step::Failed
    } else {
        Step::Success
    });
    RefundScript::usd(no, steps)
}

fn other(status: RefundStatus) -> RefundStatus {
    match status {
        RefundStatus::Success => RefundStatus::Failed,
        _ => RefundStatus::Success,
    }
}

#[test]
fn a_second_writer_paced_at_300_writes_per_second_loses_nothing_and_conflicts_are_recorded() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let seed = seed_from_env("CONCURRENCY_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 300 refunds imported up front, 2,000 more the writer may insert; all scripted.
    let initial: Vec<(String, RefundScript)> = (0..300)
        .map(|i| {
            let no = format!("R-CC-{i:05}");
            let s = script(&no, &mut rng);
            (no, s)
        })
        .collect();
    let later: Vec<(String, RefundScript)> = (0..2000)
        .map(|i| {
            let no = format!("R-CN-{i:05}");
            let s = script(&no, &mut rng);
            (no, s)
        })
        .collect();
    let truth: BTreeMap<String, RefundStatus> = initial
        .iter()
        .chain(&later)
        .map(|(no, s)| (no.clone(), s.truth().unwrap()))
        .collect();
    let sandbox = LiveSandbox::start(initial.iter().chain(&later).cloned().collect());
    let config = write_config(
        d,
        &sandbox.base_url(),
        &fast_schedule("concurrency = 16\nrate_per_second = 2000.0"),
    );
    let cfg = config.to_str().unwrap();
    let ledger = d.join("ledger.sqlite");
    let csv = import_csv(d, &initial);
    let o = run(d, &["import", "--config", cfg, csv.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let mut c = cmd(d);
    c.args(["run", "--config", cfg]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    // Wait until the daemon is busy reconciling before the writer starts.
    daemon.wait_for("\"refund finalized\"");

    // The second writer: exactly the merchant's contract SQL, one transaction per write.
    let conn = sql(&ledger);
    let mut inserted = 0usize;
    let (mut agreeing, mut conflicting) = (0usize, 0usize);
    let mut errors: Vec<String> = Vec::new();
    let mut known: Vec<String> = initial.iter().map(|(no, _)| no.clone()).collect();
    let mut expected_conflicts: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut writes = 0u64;
    while writes < WRITES {
        // Pace the writes (this is the load's rate, not synchronisation).
        let slot = started + Duration::from_secs_f64(writes as f64 / TARGET_RATE);
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        writes += 1;
        let roll = rng.random_range(0..10);
        let result = if roll < 4 && inserted < later.len() {
            let (no, s) = &later[inserted];
            inserted += 1;
            known.push(no.clone());
            conn.execute(
                snippet("insert_refund").unwrap(),
                rusqlite::named_params! {":out_refund_no": no, ":refund_trade_no": None::<String>,
                ":out_trade_no": s.out_trade_no, ":amount": s.amount.to_string(),
                ":currency": s.currency.as_str()},
            )
        } else {
            let no = &known[rng.random_range(0..known.len())];
            let recorded: String = conn
                .query_row(
                    "SELECT status FROM refunds WHERE out_refund_no = ?1",
                    [no],
                    |r| r.get(0),
                )
                .unwrap();
            // Contradict only an outcome already recorded: that is a conflict the ledger can
            // see (a final status never moves, so it is still final when the insert runs).
            let contradict = roll >= 8 && recorded != "REFUND_PENDING";
            let status = if contradict {
                conflicting += 1;
                expected_conflicts.push(no.clone());
                other(truth[no])
            } else {
                agreeing += 1;
                truth[no]
            };
            conn.execute(
                snippet("record_notification").unwrap(),
                rusqlite::named_params! {":out_refund_no": no, ":status": status.as_str(),
                ":refund_trade_no": format!("T-{no}"), ":amount": "12.5", ":currency": "USD",
                ":refund_finish_time": "2026-11-25T03:28:23.092Z",
                ":notify_time": "2026-11-25T11:28:24.000+08:00"},
            )
        };
        if let Err(e) = result {
            errors.push(e.to_string());
        }
    }
    let elapsed = started.elapsed();
    let rate = writes as f64 / elapsed.as_secs_f64();

    // Let the daemon finish everything, watching its log.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&ledger, "refunds WHERE status = 'REFUND_PENDING'") > 0 {
        assert!(
            Instant::now() < deadline,
            "not settled:\n{}",
            daemon.tail(40)
        );
        daemon.next_line(Duration::from_secs(2));
    }

    // Guard: a second daemon on the same ledger refuses, clearly, with exit 4.
    let o = run(d, &["run", "--config", cfg]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(
        msg.contains("another checus-reconciler daemon is already running on this ledger")
            && msg.contains("ledger.sqlite.lock"),
        "{msg}"
    );
    // SIGKILL the first: the kernel drops its lock, so a new daemon starts at once.
    daemon.kill9();
    assert!(d.join("ledger.sqlite.lock").exists(), "the lock file stays");
    let mut c = cmd(d);
    c.args(["run", "--config", cfg]);
    let mut second = Proc::spawn(c);
    second.wait_for("daemon ready");
    second.signal("-TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(15)), 0);

    // Zero "database is locked" on either side.
    assert!(errors.is_empty(), "writer errors: {errors:?}");
    for line in daemon.seen.iter().chain(&second.seen) {
        let lower = line.to_lowercase();
        assert!(
            !lower.contains("locked")
                && !lower.contains("busy")
                && !line.contains("sweep failed")
                && !line.contains("refund attempt not recorded"),
            "daemon: {line}"
        );
    }

    // Zero updates lost: every refund and every notification written is there, applied.
    assert_eq!(integrity(&ledger), "ok");
    let rows = refunds(&ledger);
    assert_eq!(rows.len(), initial.len() + inserted);
    assert_eq!(
        count(&ledger, "notifications"),
        (agreeing + conflicting) as i64
    );
    assert_eq!(count(&ledger, "notifications WHERE effect IS NULL"), 0);
    assert_eq!(
        count(
            &ledger,
            "notifications WHERE effect IN ('finalized', 'already_final')"
        ),
        agreeing as i64
    );
    assert_eq!(
        count(&ledger, "notifications WHERE effect = 'conflicting_final'"),
        conflicting as i64
    );
    // Every conflict is in the discrepancy table, and nothing else is.
    assert_eq!(
        count(
            &ledger,
            "discrepancies WHERE source = 'notification' AND kind = 'conflicting_final'"
        ),
        conflicting as i64
    );
    assert_eq!(count(&ledger, "discrepancies"), conflicting as i64);
    let c = sql(&ledger);
    for no in &expected_conflicts {
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM discrepancies WHERE out_refund_no = ?1 AND kind = 'conflicting_final'",
                [no],
                |r| r.get(0),
            )
            .unwrap();
        assert!(n >= 1, "{no}: conflict not recorded");
    }
    // Every refund at its true outcome (conflicts changed nothing), and every query answered
    // by the gateway is in the attempt log exactly once (no kill here: nothing in flight lost).
    for (no, row) in &rows {
        assert_eq!(row.status, truth[no].as_str(), "{no}");
    }
    assert_eq!(
        count(&ledger, "attempts") as u64,
        sandbox.stats().queries,
        "attempts recorded vs queries answered"
    );
    eprintln!(
        "concurrency: seed {seed}: second writer {writes} writes in {elapsed:.1?} ({rate:.0}/s): \
         {inserted} refunds inserted, {agreeing} agreeing and {conflicting} conflicting notifications; \
         daemon {} attempts; 0 'database is locked', 0 lost, {conflicting} conflicts recorded as discrepancies; \
         second daemon refused (exit 4), restart after SIGKILL ok",
        count(&ledger, "attempts")
    );
}
