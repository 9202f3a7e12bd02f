//! The crash suites' audit, shared by the SQLite suite (tests/it/crash.rs) and the PostgreSQL
//! one (tests/it/pg_crash.rs): the seeded timelines they reconcile, the check of one ledger
//! snapshot against the previous one (nothing committed changes or vanishes), and the final
//! check of every refund's attempts against what the sandbox served. The ledgers are read by
//! the callers (plain SQL on the file, or a PostgreSQL session) into the same snapshot rows.

use std::collections::BTreeMap;

use checus_reconciler::domain::{Currency, RefundStatus};
use checus_reconciler::sandbox::{RefundScript, SandboxStats, Step};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use super::proc::{AttemptSnap, RefundSnap};

/// Seeded timelines that all end final: unknown at first (10 %), 0–3 pendings, one transient
/// fault for 30 % (5xx, reset, SYSTEM_ERROR) somewhere before the end, then success (3 in 4)
/// or failed. Every step consumed is one query the ledger may record.
pub fn crash_scripts(n: usize, seed: u64, prefix: &str) -> Vec<(String, RefundScript)> {
    const TRANSIENT: &[&str] = &[
        "fault:http:500",
        "fault:http:503",
        "fault:reset",
        "code:SYSTEM_ERROR",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=n)
        .map(|i| {
            let no = format!("{prefix}{i:06}");
            let mut steps = Vec::new();
            if rng.random_range(0..10) == 0 {
                steps.push(Step::Unknown);
            }
            steps.extend(vec![Step::Pending; rng.random_range(0..=3)]);
            if rng.random_range(0..10) < 3 {
                let at = rng.random_range(0..=steps.len());
                let fault = TRANSIENT.choose(&mut rng).unwrap().parse().unwrap();
                steps.insert(at, fault);
            }
            steps.push(if rng.random_range(0..4) == 0 {
                Step::Failed
            } else {
                Step::Success
            });
            let (amount, currency) = if rng.random_range(0..5) == 0 {
                (
                    Decimal::new(rng.random_range(100..=20_000) * 100, 0),
                    Currency::parse("IDR").unwrap(),
                )
            } else {
                (
                    Decimal::new(rng.random_range(100..=50_000), 2),
                    Currency::parse("USD").unwrap(),
                )
            };
            let script = RefundScript {
                refund_trade_no: format!("T-{no}"),
                out_trade_no: format!("O-{no}"),
                amount,
                currency,
                steps,
            };
            (no, script)
        })
        .collect()
}

/// Each script's true final outcome (every crash script ends final).
pub fn truth_of(scripts: &[(String, RefundScript)]) -> BTreeMap<String, RefundStatus> {
    scripts
        .iter()
        .map(|(no, s)| {
            (
                no.clone(),
                s.truth().expect("every crash script ends final"),
            )
        })
        .collect()
}

/// The attempt-log outcome each scripted step must produce.
pub fn expected_outcome(step: &Step) -> &'static str {
    match step {
        Step::Pending => "pending",
        Step::Success | Step::Failed => "final",
        Step::Unknown => "unknown",
        Step::Code(_) | Step::Fault(_) => "retryable",
        Step::Delay(_, inner) | Step::Vary(_, inner) => expected_outcome(inner),
    }
}

/// One snapshot (`now_*`) against the previous one (`prev_*`), taken `when`: no refund lost
/// or invented, no final outcome changed, none finalized wrongly, no attempt row lost or
/// rewritten.
pub fn check_snapshot(
    truth: &BTreeMap<String, RefundStatus>,
    prev_refunds: &BTreeMap<String, RefundSnap>,
    prev_attempts: &BTreeMap<i64, AttemptSnap>,
    now_refunds: &BTreeMap<String, RefundSnap>,
    now_attempts: &BTreeMap<i64, AttemptSnap>,
    when: &str,
) {
    assert_eq!(
        now_refunds.len(),
        truth.len(),
        "{when}: refunds lost or invented"
    );
    for (no, before) in prev_refunds {
        if before.status != "REFUND_PENDING" {
            assert_eq!(
                now_refunds.get(no),
                Some(before),
                "{when}: final outcome of {no} changed"
            );
        }
    }
    for (no, snap) in now_refunds {
        if snap.status != "REFUND_PENDING" {
            assert_eq!(
                snap.status,
                truth[no].as_str(),
                "{when}: {no} finalized wrongly"
            );
        }
    }
    for (id, row) in prev_attempts {
        assert_eq!(
            now_attempts.get(id),
            Some(row),
            "{when}: attempt row {id} lost or rewritten"
        );
    }
}

/// The end of a run: every refund at its true outcome, told by a verified query, unflagged;
/// each refund's recorded attempts (by id) are, in order, a subsequence of the answers the
/// sandbox served it, never more than it served (nothing written twice), ending with its true
/// final answer; the `attempts` counter equals the counted rows. Returns how many served
/// answers were never recorded (the daemon died, or lost the ledger, while they were on the
/// wire; each was asked again).
pub fn check_final(
    scripts: &[(String, RefundScript)],
    truth: &BTreeMap<String, RefundStatus>,
    refunds: &BTreeMap<String, RefundSnap>,
    attempts: &BTreeMap<i64, AttemptSnap>,
    stats: &SandboxStats,
) -> u64 {
    for (no, want) in truth {
        let got = &refunds[no];
        assert_eq!(got.status, want.as_str(), "{no}");
        assert_eq!(got.final_source.as_deref(), Some("query"), "{no}");
        assert_eq!(got.review_flag, 0, "{no} flagged by a crash");
    }
    let mut by_refund: BTreeMap<&str, Vec<&AttemptSnap>> = BTreeMap::new();
    for row in attempts.values() {
        by_refund.entry(&row.out_refund_no).or_default().push(row);
    }
    let mut unrecorded = 0;
    for (no, script) in scripts {
        let rows = by_refund.get(no.as_str()).cloned().unwrap_or_default();
        let served = stats.queries_for(no) as usize;
        assert!(
            rows.len() <= served,
            "{no}: {} attempts recorded for {served} queries served (written twice?)",
            rows.len()
        );
        unrecorded += (served - rows.len()) as u64;
        // The recorded outcomes are a subsequence of the served steps, in order.
        let served_steps: Vec<&Step> = (0..served)
            .map(|i| &script.steps[i.min(script.steps.len() - 1)])
            .collect();
        let mut it = served_steps.iter();
        for row in &rows {
            assert!(
                it.any(|s| expected_outcome(s) == row.outcome),
                "{no}: attempt {row:?} matches no served step in order: {served_steps:?}"
            );
        }
        let last = rows.last().expect("a final refund has attempts");
        assert_eq!(last.outcome, "final", "{no}");
        assert_eq!(
            last.data_status.as_deref(),
            Some(truth[no].as_str()),
            "{no}"
        );
        // The counted-attempt total matches the counted rows: nothing counted twice.
        let counted = rows
            .iter()
            .filter(|r| matches!(r.outcome.as_str(), "final" | "pending" | "unknown"))
            .count() as i64;
        assert_eq!(refunds[no].attempts, counted, "{no}: attempts counter");
    }
    assert_eq!(
        stats.queries,
        unrecorded + attempts.len() as u64,
        "queries answered = attempts recorded + answers never recorded"
    );
    unrecorded
}
