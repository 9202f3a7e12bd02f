//! The worker's per-refund log lines: one stable message per kind of result ("refund
//! finalized", "refund still pending", "discrepancy recorded", ...), with the same field names
//! everywhere, so operators can follow a refund by field.

use tracing::{debug, error, info, warn};

use crate::domain::{Change, Decision, QueryOutcome, RefundState, RefundStatus, format_ts};
use crate::gateway::QueryReport;
use crate::ledger::{Applied, LoggedDiscrepancy};

/// The one line every final outcome gets: INFO for success, WARN for REFUND_FAILED, so
/// operators can follow failures by level or by field.
pub(super) fn log_finalized(no: &str, status: RefundStatus, source: &str, attempt: u32) {
    let status_text = status.as_str();
    if status == RefundStatus::Failed {
        warn!(
            out_refund_no = no,
            status = status_text,
            source,
            attempt,
            "refund finalized"
        );
    } else {
        info!(
            out_refund_no = no,
            status = status_text,
            source,
            attempt,
            "refund finalized"
        );
    }
}

/// The line for a discrepancy someone else recorded (the ledger's notification trigger, the
/// merchant's app): the same message and fields as the daemon's own, plus its `id`, the number
/// `resolve-discrepancy` takes.
pub(super) fn log_discrepancy(d: &LoggedDiscrepancy) {
    error!(
        id = d.id,
        out_refund_no = d.out_refund_no.as_str(),
        kind = d.kind.as_str(),
        expected = d.expected.as_deref().unwrap_or(""),
        observed = d.observed.as_deref().unwrap_or(""),
        source = d.source.as_str(),
        "discrepancy recorded"
    );
}

/// A verified answer held an informative field we could not read: it did not stop the status
/// from deciding, but someone should know, once per refund rather than on every poll. "Once"
/// comes from the ledger: the refund's `last_error` is the previous attempt's error text, which
/// already names the same unreadable fields when the previous answer had them too. (A failure
/// in between replaces `last_error`, so the WARN can repeat once after it; no extra state.)
fn warn_unreadable_once(state: &RefundState, report: &QueryReport, outcome: &str) {
    let Some(unreadable) = report.outcome.unreadable_text() else {
        return;
    };
    let already = state
        .last_error
        .as_deref()
        .is_some_and(|last| last.contains(&unreadable));
    if !already {
        warn!(
            out_refund_no = state.out_refund_no.as_str(),
            outcome,
            error = %unreadable,
            "answer field unreadable"
        );
    }
}

/// One stable message per kind of result, with the same field names everywhere.
pub(super) fn log_applied(
    state: &RefundState,
    report: &QueryReport,
    decision: &Decision,
    applied: &Applied,
) {
    let no = state.out_refund_no.as_str();
    let outcome = decision.class.as_str();
    let latency_ms = report.latency.as_millis() as u64;
    warn_unreadable_once(state, report, outcome);
    for d in &decision.discrepancies {
        error!(
            out_refund_no = no,
            kind = d.kind.as_str(),
            expected = %d.expected,
            observed = %d.observed,
            source = "query",
            "discrepancy recorded"
        );
    }
    match applied {
        Applied::Finalized(status) => {
            log_finalized(no, status.status(), "query", state.attempts + 1);
            if let Change::Finalize {
                flag: Some(reason), ..
            } = &decision.change
            {
                error!(
                    out_refund_no = no,
                    reason = reason.as_str(),
                    outcome,
                    error = report.error.as_deref().unwrap_or(""),
                    "refund flagged for review"
                );
            }
        }
        Applied::Rescheduled {
            next_query_at,
            flagged,
        } => {
            let (attempt, next) = match &decision.change {
                Change::Reschedule { attempts, .. } => (*attempts, format_ts(*next_query_at)),
                _ => (state.attempts, format_ts(*next_query_at)),
            };
            if let Some(reason) = flagged {
                error!(out_refund_no = no, reason = reason.as_str(), outcome, attempt, next_query_at = %next, "refund flagged for review");
            }
            match &report.outcome {
                QueryOutcome::Retryable { reason, .. } => warn!(
                    out_refund_no = no,
                    outcome,
                    reason = reason.as_str(),
                    error = report.error.as_deref().unwrap_or(""),
                    http_status = report.http_status.unwrap_or(0),
                    attempt,
                    next_query_at = %next,
                    "refund query failed; will retry"
                ),
                QueryOutcome::RateLimited => {
                    warn!(out_refund_no = no, outcome, attempt, next_query_at = %next, "refund query rate limited; will retry")
                }
                _ => {
                    info!(out_refund_no = no, outcome, attempt, latency_ms, next_query_at = %next, "refund still pending")
                }
            }
        }
        Applied::Mismatch { flagged } => {
            if let Some(reason) = flagged {
                error!(
                    out_refund_no = no,
                    reason = reason.as_str(),
                    outcome,
                    "refund flagged for review"
                );
            }
        }
        Applied::AlreadyFinal(status) => {
            debug!(
                out_refund_no = no,
                status = status.as_str(),
                outcome,
                "refund already final"
            );
        }
        Applied::Conflict { recorded, observed } => {
            error!(
                out_refund_no = no,
                kind = "conflicting_final",
                expected = recorded.as_str(),
                observed = observed.as_str(),
                source = "query",
                "discrepancy recorded"
            );
        }
    }
}
