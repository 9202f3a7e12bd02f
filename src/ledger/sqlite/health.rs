//! `status`'s judgement: the counts plus typed findings of what needs a human. The ledger
//! decides what is wrong from stored facts (a halt from `sweeps.halt_code`, never from the
//! wording of `halted_reason`); the CLI words it and adds the hints (`report.rs`).
//!
//! A finding says reconciliation is not progressing, so `status` exits 8 for any of them. Each
//! query here is bounded by what it reports, never by the size of the ledger: the refund
//! counts walk partial indexes down to the rows they count (normally none), the sweep facts
//! walk `sweeps` backwards from the newest row, and `prunes` holds one row per prune ever run.
//! `tests.rs` checks the plans.

use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction};

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::rows::{RawRow, RawSweep, select_each};
use super::types::{Cell, SweepRow, UnreadableRow, to_u64, ts_text};
use crate::domain::{Policy, Timestamp, parse_ts};
use crate::ledger::health::{Thresholds, before, judge_summary};
use crate::ledger::{Finding, Health};

/// The newest sweep that finished (the running one, if any, is skipped). Rowid order is start
/// order, so this walks back from the newest row and stops at the first finished one.
pub(super) fn latest_finished_sweep_sql() -> String {
    format!(
        "SELECT {} FROM sweeps WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
        RawSweep::COLUMNS
    )
}

/// The run of failed sweeps up to the newest finished one: how many, and when the first
/// started. Walks back from the newest row to the last sweep that finished without an error,
/// so it costs the length of the run.
pub(super) const FAILING_RUN: &str = "\
    SELECT count(*), min(started_at) FROM sweeps
     WHERE finished_at IS NOT NULL
       AND id > coalesce((SELECT id FROM sweeps
                           WHERE finished_at IS NOT NULL AND error IS NULL
                           ORDER BY id DESC LIMIT 1), 0)";

/// Refunds, pending or final, flagged because the daemon could not read or update them (it
/// flags a final row it meets while logging or confirming outcomes too): a walk of
/// `refunds_flagged`, which holds only flagged rows (a flag is the exception, and
/// `clear-flag`/`retry-now` clear the ones a human has dealt with).
pub(super) const UNREADABLE_FLAGGED: &str = "\
    SELECT count(*) FROM refunds
     WHERE review_flag = 1 AND review_reason IN ('row_unreadable', 'row_unwritable')";

/// Refunds whose `created_at` sorts below the first or above the last instant the ledger can
/// hold: two range walks of `refunds_by_created` that are empty unless such rows exist.
/// (An impossible date inside that range, such as the 31st of February, is read as unreadable
/// by the worker, which flags the row `row_unreadable`.)
pub(super) const BAD_CREATED_AT: &str = "\
    SELECT (SELECT count(*) FROM refunds WHERE created_at < '0000-01-01T00:00:00.000Z')
         + (SELECT count(*) FROM refunds WHERE created_at > '9999-12-31T23:59:59.999Z')";

/// Unscheduled pending refunds created before `?1`: walks `refunds_unscheduled` up to the
/// cutoff, so only the rows it counts.
pub(super) const UNSCHEDULED_BEFORE: &str = "\
    SELECT count(*) FROM refunds
     WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL AND created_at < ?1";

/// Scheduled, unflagged pending refunds created before `?1`: walks `refunds_pending_unflagged`
/// up to the cutoff. `+next_query_at` makes sure the planner never picks `refunds_due`, which would walk
/// every scheduled pending refund. (Unscheduled ones are [`UNSCHEDULED_BEFORE`]'s.)
pub(super) const OVERDUE_UNFLAGGED: &str = "\
    SELECT count(*) FROM refunds
     WHERE status = 'REFUND_PENDING' AND review_flag = 0 AND created_at < ?1
       AND +next_query_at IS NOT NULL";

/// A prune row left running, if any.
pub(super) const PRUNE_RUNNING: &str =
    "SELECT id, started_at FROM prunes WHERE state = 'running' ORDER BY id LIMIT 1";

impl SqliteLedger {
    /// [`SqliteLedger::health_with`] judged against the documented default schedule
    /// (`Policy::default()`), for a caller that has no config.
    pub fn health(&self, now: Timestamp, stale_after: Duration) -> Result<Health, LedgerError> {
        self.health_with(now, stale_after, &Policy::default())
    }

    /// `status` plus what needs a human at `now`: flagged refunds, a worker that has not swept
    /// for `stale_after` (or never), a halted worker (configuration rejected by Checus, clock
    /// skew), unresolved discrepancies, and everything that stops reconciliation without a
    /// halt: the gateway unavailable, failing sweeps, unreadable rows, refunds never scheduled
    /// or overdue and unflagged, a prune row left running, dead webhook events.
    ///
    /// `policy` is the daemon's (its grace window, `pending_flag_after` and schedule decide
    /// when a refund should have been scheduled or flagged). The counts and the findings are
    /// read in two read transactions, so a sweep that ends in between can show in one and not
    /// the other.
    pub fn health_with(
        &self,
        now: Timestamp,
        stale_after: Duration,
        policy: &Policy,
    ) -> Result<Health, LedgerError> {
        let thresholds = &Thresholds::new(stale_after, policy);
        let summary = self.status(now)?;
        let (mut findings, worker_idle_s) = judge_summary(&summary, now, thresholds);
        let stale_after_s = thresholds.stale_after.as_secs();
        let unread = &summary.unreadable;
        findings.extend(self.read("read health", |tx| stalls(tx, now, thresholds, unread))?);
        Ok(Health {
            summary,
            worker_idle_s,
            stale_after_s,
            findings,
        })
    }
}

/// What stops reconciliation without a halt, in [`Finding`]'s order. `unread_rows`: the rows
/// the counts could not read.
fn stalls(
    tx: &Transaction<'_>,
    now: Timestamp,
    thresholds: &Thresholds,
    unread_rows: &[UnreadableRow],
) -> Result<Vec<Finding>, LedgerError> {
    const OP: &str = "read health";
    let mut findings = Vec::new();
    // A sweep row that cannot be read is one more unreadable row, not a failure of `status`;
    // the findings that need it are skipped.
    let mut unread = unread_rows.len();
    let latest = match select_each::<RawSweep>(tx, OP, &latest_finished_sweep_sql(), [])?.pop() {
        Some(Ok(sweep)) => Some(sweep),
        Some(Err(bad)) => {
            if !unread_rows
                .iter()
                .any(|r| r.table == bad.table && r.id == bad.id)
            {
                unread += 1;
            }
            None
        }
        None => None,
    };
    if let Some(sweep) = &latest {
        findings.extend(sweep_findings(tx, sweep, now)?);
    }
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, LedgerError> {
        Ok(to_u64(tx.query_row(sql, p, |r| r.get(0)).during(OP)?))
    };
    let unread = u64::try_from(unread).unwrap_or(u64::MAX);
    let skipped = latest.as_ref().map_or(0, |s| s.counts.unreadable);
    let flagged = count(UNREADABLE_FLAGGED, &[])?;
    let bad_created_at = count(BAD_CREATED_AT, &[])?;
    if unread > 0 || skipped > 0 || flagged > 0 || bad_created_at > 0 {
        findings.push(Finding::UnreadableRows {
            unread,
            skipped,
            flagged,
            bad_created_at,
        });
    }
    // Only once a sweep has finished: until then nothing was due to schedule them, and
    // `worker_never_ran` already says so. A sweep schedules every unscheduled refund first
    // thing, so one created before the latest finished sweep started should have been. The
    // app's own inserts carry created_at = now, so they never count before the next sweep;
    // a row inserted later with an older created_at counts until that sweep schedules it.
    if let Some(sweep) = &latest {
        let created_before =
            before(now, thresholds.grace).map_or(sweep.started_at, |t| t.min(sweep.started_at));
        let count = count(UNSCHEDULED_BEFORE, &[&ts_text(created_before)])?;
        if count > 0 {
            findings.push(Finding::UnscheduledRefunds {
                count,
                created_before,
            });
        }
    }
    let overdue_after = thresholds.overdue_after();
    if let Some(cutoff) = before(now, overdue_after) {
        let count = count(OVERDUE_UNFLAGGED, &[&ts_text(cutoff)])?;
        if count > 0 {
            findings.push(Finding::OverdueUnflaggedRefunds {
                count,
                older_than_s: overdue_after.as_secs(),
            });
        }
    }
    let running: Option<(i64, String)> = tx
        .query_row(PRUNE_RUNNING, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .during(OP)?;
    if let Some((id, started_at)) = running {
        findings.push(Finding::PruneLeftRunning {
            id,
            started_at: parse_ts(&started_at).ok(),
        });
    }
    let dead = count(super::webhooks::DEAD_COUNT, &[])?;
    if dead > 0 {
        findings.push(Finding::DeadWebhooks { count: dead });
    }
    Ok(findings)
}

/// What the latest finished sweep says about the gateway and about itself.
fn sweep_findings(
    tx: &Transaction<'_>,
    sweep: &SweepRow,
    now: Timestamp,
) -> Result<Vec<Finding>, LedgerError> {
    let mut findings = Vec::new();
    if let Some(since) = sweep.breaker_open_since {
        findings.push(Finding::GatewayUnavailable {
            since,
            paused_s: (now - since).num_seconds().max(0),
        });
    }
    if let Some(error) = &sweep.error {
        let (consecutive, first): (i64, Option<String>) = tx
            .query_row(FAILING_RUN, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .during("read health")?;
        let label = format!("(sweep {})", sweep.id);
        let since = Cell {
            out_refund_no: &label,
        }
        .ts_opt("started_at", first.as_deref())?
        .unwrap_or(sweep.started_at);
        findings.push(Finding::SweepsFailing {
            error: error.clone(),
            consecutive: to_u64(consecutive).max(1),
            since,
        });
    }
    Ok(findings)
}
