//! `status`'s judgement as typed values: the counts plus findings of what needs a human. The
//! engines decide what is wrong from stored facts (the SQLite engine in `sqlite/health.rs`);
//! the CLI words it and adds the hints (`report.rs`).

use crate::domain::{HaltCode, Timestamp};

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
