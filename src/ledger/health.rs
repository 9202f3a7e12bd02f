//! `status`'s judgement as typed values: the counts plus findings of what needs a human. The
//! engines gather the stored facts (`sqlite/health.rs`, `postgres/read.rs`); what they mean
//! is judged once, here ([`Thresholds`], [`judge_summary`]); the CLI words it and adds the
//! hints (`report.rs`).

use std::time::Duration;

use chrono::TimeDelta;

use crate::domain::{HaltCode, Policy, Schedule, Timestamp};

use super::types::StatusSummary;

/// Something that needs a human, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Refunds are flagged for review (pending, or final with a flag nobody cleared yet).
    FlaggedRefunds {
        /// How many refunds are flagged.
        count: u64,
    },
    /// No sweep was ever recorded: the daemon may never have run on this ledger.
    WorkerNeverRan,
    /// The worker has not started or finished a sweep for longer than the threshold.
    WorkerStale {
        /// When the latest sweep started or, if it did, finished.
        last_active: Timestamp,
        /// Seconds since then.
        idle_s: i64,
        /// The threshold it passed, in seconds.
        stale_after_s: u64,
    },
    /// The latest sweep ended with querying halted.
    Halted {
        /// Why, as a stable code.
        code: HaltCode,
        /// The sweep's `halted_reason`, the daemon's words for people.
        reason: Option<String>,
    },
    /// Discrepancies are waiting for an operator.
    UnresolvedDiscrepancies {
        /// How many discrepancies nobody has resolved.
        count: u64,
    },
    /// The latest finished sweep ended with the circuit breaker open: the gateway stopped
    /// answering, querying is paused and due refunds wait for it.
    GatewayUnavailable {
        /// Since when querying has been paused (`sweeps.breaker_open_since`).
        since: Timestamp,
        /// Seconds from then to the `now` of the check.
        paused_s: i64,
    },
    /// The latest finished sweep failed as a whole (the ledger or the disk, not one row).
    SweepsFailing {
        /// Its error (`sweeps.error`), as the daemon recorded it.
        error: String,
        /// Finished sweeps in a row that failed, newest back to the last one that did not.
        consecutive: u64,
        /// When the first sweep of that run started.
        since: Timestamp,
    },
    /// Rows the daemon cannot read or update: they are skipped, so nothing reconciles them.
    UnreadableRows {
        /// Rows `status` itself needed and could not read (the oldest pending refund, the
        /// latest sweeps; `status --json` lists them under `unreadable`).
        unread: u64,
        /// Rows the latest finished sweep skipped (`sweeps.unreadable`).
        skipped: u64,
        /// Refunds, pending or final, flagged `row_unreadable` or `row_unwritable`.
        flagged: u64,
        /// Refunds whose `created_at` sorts outside every instant the ledger can hold (only a
        /// writer that switched the CHECKs off can store one).
        bad_created_at: u64,
    },
    /// Pending refunds that the daemon should have scheduled and did not: no `next_query_at`
    /// although a sweep that started after their creation, and past the grace window, has
    /// finished. Such a refund is never queried.
    UnscheduledRefunds {
        /// How many.
        count: u64,
        /// The cutoff they were created before: the earlier of the latest finished sweep's
        /// start and `now` minus the grace window.
        created_before: Timestamp,
    },
    /// Pending refunds older than `pending_flag_after` plus the longest wait the schedule
    /// allows before the query that would flag them, still not flagged: the daemon is not
    /// getting answers for them.
    OverdueUnflaggedRefunds {
        /// How many.
        count: u64,
        /// The age they passed, in seconds: `pending_flag_after`, plus the longest wait
        /// between two queries the schedule allows (the largest delay, stretched by the full
        /// jitter), plus `stale_after`.
        older_than_s: u64,
    },
    /// A `prunes` row is `running` outside a prune's transaction (a prune writes and closes
    /// it in one transaction, so only a hand-written row or a broken writer leaves one). While
    /// it stays, the delete triggers let any writer delete old final refunds, and no prune can
    /// start.
    PruneLeftRunning {
        /// The row's id.
        id: i64,
        /// Its `started_at` (`None` when the stored value is not a time).
        started_at: Option<Timestamp>,
    },
    /// Webhook events retried past `webhook.give_up_after`: the merchant's app did not get
    /// them, and each holds back the later events of its refund until redelivered.
    DeadWebhooks {
        /// How many events are dead.
        count: u64,
    },
    /// Daemons of a shared (PostgreSQL) ledger that stopped heart-beating without a clean
    /// stop: killed, hung or cut off. The other nodes take over their refunds once the leases
    /// end, but the ledger runs with fewer daemons than the operator set up. (On SQLite, one
    /// daemon per file, `worker_stale` covers a dead daemon instead.)
    NodesSilent {
        /// Their node names.
        names: Vec<String>,
        /// The silence threshold, in seconds.
        silent_after_s: u64,
    },
}

impl Finding {
    /// The stable code scripts match on (`status --json`'s `warnings[].code`):
    /// `flagged_refunds`, `worker_never_ran`, `worker_stale`, `config_error`, `clock_skew`,
    /// `unresolved_discrepancies`, `gateway_unavailable`, `sweeps_failing`,
    /// `unreadable_rows`, `unscheduled_refunds`, `overdue_unflagged_refunds`,
    /// `prune_left_running`, `dead_webhooks`, `nodes_silent`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::FlaggedRefunds { .. } => "flagged_refunds",
            Self::WorkerNeverRan => "worker_never_ran",
            Self::WorkerStale { .. } => "worker_stale",
            Self::Halted { code, .. } => code.as_str(),
            Self::UnresolvedDiscrepancies { .. } => "unresolved_discrepancies",
            Self::GatewayUnavailable { .. } => "gateway_unavailable",
            Self::SweepsFailing { .. } => "sweeps_failing",
            Self::UnreadableRows { .. } => "unreadable_rows",
            Self::UnscheduledRefunds { .. } => "unscheduled_refunds",
            Self::OverdueUnflaggedRefunds { .. } => "overdue_unflagged_refunds",
            Self::PruneLeftRunning { .. } => "prune_left_running",
            Self::DeadWebhooks { .. } => "dead_webhooks",
            Self::NodesSilent { .. } => "nodes_silent",
        }
    }
}

/// The ledger at a glance plus what needs a human. `status` exits 8 when
/// [`Health::needs_human`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The counts.
    pub summary: StatusSummary,
    /// Seconds since the worker last started or finished a sweep (`None`: never ran).
    pub worker_idle_s: Option<i64>,
    /// The threshold past which the worker counts as stale, in seconds.
    pub stale_after_s: u64,
    /// What needs a human, in a fixed order (the order of [`Finding`]'s variants); empty
    /// when all is well.
    pub findings: Vec<Finding>,
}

impl Health {
    /// True when anything needs a human.
    pub fn needs_human(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// What `status` judges the ledger against: the daemon's configured schedule (read once from
/// the config `status` is given, else the documented defaults) and the stale threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ledger) struct Thresholds {
    /// The worker is stale when it has not swept for longer than this.
    pub stale_after: Duration,
    /// `schedule.grace`: a refund is first queried this long after its creation.
    pub grace: Duration,
    /// `schedule.pending_flag_after`: a refund still pending this long after its creation is
    /// flagged at its next query.
    pub pending_flag_after: Duration,
    /// The longest wait between two queries of one refund that the schedule allows (see
    /// [`longest_gap`]).
    pub longest_gap: Duration,
}

impl Thresholds {
    /// The thresholds for a daemon running `policy`.
    pub(in crate::ledger) fn new(stale_after: Duration, policy: &Policy) -> Self {
        Self {
            stale_after,
            grace: policy.schedule.grace,
            pending_flag_after: policy.pending_flag_after,
            longest_gap: longest_gap(&policy.schedule),
        }
    }

    /// The age past which an unflagged pending refund is overdue: `pending_flag_after`, plus
    /// the longest gap before the query that flags it, plus `stale_after` for the worker to
    /// get to a due refund.
    ///
    /// Why not `pending_flag_after` alone: the flag is set by the first query after it, and
    /// with the default ladder a refund is then on its 24 h (± 10 %) steady cadence, so a
    /// healthy refund stays unflagged for up to a day past 72 h.
    pub(in crate::ledger) fn overdue_after(&self) -> Duration {
        self.pending_flag_after
            .saturating_add(self.longest_gap)
            .saturating_add(self.stale_after)
    }
}

/// The longest wait between two queries of one refund under `schedule`: the largest of the
/// grace window, every backoff step, the steady cadence and the retry delay, stretched by the
/// full jitter.
pub(in crate::ledger) fn longest_gap(schedule: &Schedule) -> Duration {
    let longest = schedule
        .steps
        .iter()
        .copied()
        .chain([schedule.grace, schedule.steady, schedule.retry])
        .max()
        .unwrap_or(Duration::ZERO);
    let stretch = 1.0 + schedule.jitter.max(0.0);
    Duration::try_from_secs_f64(longest.as_secs_f64() * stretch).unwrap_or(Duration::MAX)
}

/// What the counts alone say at `now`: flagged refunds, a worker that never ran or went
/// stale, a halt, unresolved discrepancies (in [`Finding`]'s order); and how long the worker
/// has been idle (`None`: it never ran).
pub(in crate::ledger) fn judge_summary(
    summary: &StatusSummary,
    now: Timestamp,
    thresholds: &Thresholds,
) -> (Vec<Finding>, Option<i64>) {
    let stale_after_s = thresholds.stale_after.as_secs();
    let mut findings = Vec::new();
    if summary.flagged > 0 {
        findings.push(Finding::FlaggedRefunds {
            count: summary.flagged,
        });
    }
    let mut worker_idle_s = None;
    match &summary.last_sweep {
        // Not "never ran" when the latest sweep's row is there but unreadable:
        // `unreadable_rows` says so.
        None if summary.unreadable.iter().any(|r| r.table == "sweeps") => {}
        None => findings.push(Finding::WorkerNeverRan),
        Some(sweep) => {
            let last_active = sweep.finished_at.unwrap_or(sweep.started_at);
            let idle_s = (now - last_active).num_seconds().max(0);
            worker_idle_s = Some(idle_s);
            if idle_s > i64::try_from(stale_after_s).unwrap_or(i64::MAX) {
                findings.push(Finding::WorkerStale {
                    last_active,
                    idle_s,
                    stale_after_s,
                });
            }
            if let Some(code) = sweep.halt_code {
                findings.push(Finding::Halted {
                    code,
                    reason: sweep.halted_reason.clone(),
                });
            }
        }
    }
    if summary.unresolved_discrepancies > 0 {
        findings.push(Finding::UnresolvedDiscrepancies {
            count: summary.unresolved_discrepancies,
        });
    }
    (findings, worker_idle_s)
}

/// `now - d`, or `None` when that is before any instant chrono can hold (nothing is older).
pub(in crate::ledger) fn before(now: Timestamp, d: Duration) -> Option<Timestamp> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
}
