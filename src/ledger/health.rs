//! `status`'s judgement: the counts plus typed findings of what needs a human. The ledger
//! decides what is wrong from stored facts (a halt from `sweeps.halt_code`, never from the
//! wording of `halted_reason`); the CLI words it and adds the hints (`report.rs`).

use std::time::Duration;

use super::Ledger;
use super::error::LedgerError;
use super::types::StatusSummary;
use crate::domain::{HaltCode, Timestamp};

/// Something that needs a human, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Pending refunds are flagged for review.
    FlaggedRefunds {
        /// How many pending refunds are flagged.
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
}

impl Finding {
    /// The stable code scripts match on (`status --json`'s `warnings[].code`):
    /// `flagged_refunds`, `worker_never_ran`, `worker_stale`, `config_error`, `clock_skew`,
    /// `unresolved_discrepancies`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::FlaggedRefunds { .. } => "flagged_refunds",
            Self::WorkerNeverRan => "worker_never_ran",
            Self::WorkerStale { .. } => "worker_stale",
            Self::Halted { code, .. } => code.as_str(),
            Self::UnresolvedDiscrepancies { .. } => "unresolved_discrepancies",
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
    /// What needs a human, in a fixed order; empty when all is well.
    pub findings: Vec<Finding>,
}

impl Health {
    /// True when anything needs a human.
    pub fn needs_human(&self) -> bool {
        !self.findings.is_empty()
    }
}

impl Ledger {
    /// `status` plus what needs a human: flagged refunds, a worker that has not swept for
    /// `stale_after` (or never), a halted worker (configuration rejected by Checus, clock
    /// skew) and unresolved discrepancies.
    pub fn health(&self, now: Timestamp, stale_after: Duration) -> Result<Health, LedgerError> {
        let summary = self.status(now)?;
        let stale_after_s = stale_after.as_secs();
        let mut findings = Vec::new();
        if summary.flagged > 0 {
            findings.push(Finding::FlaggedRefunds {
                count: summary.flagged,
            });
        }
        let mut worker_idle_s = None;
        match &summary.last_sweep {
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
        Ok(Health {
            summary,
            worker_idle_s,
            stale_after_s,
            findings,
        })
    }
}
