//! Human-readable renderings for the CLI: tables for people (`--json` gives the same data to
//! scripts). Pure functions from ledger values to text.

use std::fmt::Write;

use serde::Serialize;

use crate::demo::DemoReport;
use crate::domain::{Change, OutRefundNo, format_ts};
use crate::ledger::{Applied, RefundDetail, RefundRow, StatusSummary};
use crate::worker::Processed;

fn opt_ts(t: Option<crate::domain::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), format_ts)
}

/// `status` for people.
pub fn status_table(s: &StatusSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<28}{:>10}", "REFUND_PENDING", s.pending);
    let _ = writeln!(out, "{:<28}{:>10}", "REFUND_SUCCESS", s.succeeded);
    let _ = writeln!(out, "{:<28}{:>10}", "REFUND_FAILED", s.failed);
    let _ = writeln!(out, "{:<28}{:>10}", "due now", s.due_now);
    let _ = writeln!(out, "{:<28}{:>10}", "not yet scheduled", s.unscheduled);
    let _ = writeln!(out, "{:<28}{:>10}", "flagged for review", s.flagged);
    let _ = writeln!(
        out,
        "{:<28}{:>10}",
        "unresolved discrepancies", s.unresolved_discrepancies
    );
    let _ = writeln!(
        out,
        "{:<28}{}",
        "oldest pending created",
        opt_ts(s.oldest_pending_created_at)
    );
    match &s.last_sweep {
        Some(w) => {
            let _ = writeln!(
                out,
                "{:<28}{} → {} (claimed {}, finalized {}, rescheduled {}, failed {}){}",
                "last sweep",
                format_ts(w.started_at),
                opt_ts(w.finished_at),
                w.counts.claimed,
                w.counts.finalized,
                w.counts.rescheduled,
                w.counts.failed,
                w.halted_reason
                    .as_deref()
                    .map(|h| format!(" HALTED: {h}"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "{:<28}never", "last sweep");
        }
    }
    out
}

/// `list` for people.
pub fn refund_table(rows: &[RefundRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>14} {:<4} {:<15} {:<24} {:>4} {:<24} FLAG",
        "OUT_REFUND_NO", "AMOUNT", "CUR", "STATUS", "CREATED", "TRY", "NEXT_QUERY"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>14} {:<4} {:<15} {:<24} {:>4} {:<24} {}",
            r.out_refund_no,
            r.amount.to_string(),
            r.currency,
            r.status,
            format_ts(r.created_at),
            r.attempts,
            if r.status.is_final() {
                "-".to_owned()
            } else {
                opt_ts(r.next_query_at)
            },
            r.review_reason.map(|x| x.as_str()).unwrap_or("")
        );
    }
    let _ = writeln!(out, "({} refunds)", rows.len());
    out
}

/// `show` for people.
pub fn detail(d: &RefundDetail) -> String {
    let r = &d.refund;
    let mut out = String::new();
    let field = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "{k:<20}{v}");
    };
    field(&mut out, "out_refund_no", r.out_refund_no.to_string());
    field(
        &mut out,
        "refund_trade_no",
        r.refund_trade_no.clone().unwrap_or_else(|| "-".into()),
    );
    field(
        &mut out,
        "out_trade_no",
        r.out_trade_no.clone().unwrap_or_else(|| "-".into()),
    );
    field(&mut out, "amount", format!("{} {}", r.amount, r.currency));
    field(&mut out, "status", r.status.to_string());
    field(&mut out, "created_at", format_ts(r.created_at));
    field(&mut out, "notified_at", opt_ts(r.notified_at));
    field(
        &mut out,
        "finalized",
        match (r.finalized_at, r.final_source) {
            (Some(t), Some(s)) => format!("{} by {s}", format_ts(t)),
            _ => "-".into(),
        },
    );
    field(&mut out, "refund_finish_time", opt_ts(r.refund_finish_time));
    field(&mut out, "next_query_at", opt_ts(r.next_query_at));
    field(&mut out, "attempts (counted)", r.attempts.to_string());
    field(
        &mut out,
        "review",
        if r.review_flag {
            format!(
                "FLAGGED: {} at {}",
                r.review_reason.map(|x| x.as_str()).unwrap_or("?"),
                opt_ts(r.flagged_at)
            )
        } else {
            "-".into()
        },
    );
    let _ = writeln!(out, "\nattempts ({}):", d.attempts.len());
    for a in &d.attempts {
        let _ = writeln!(
            out,
            "  {}  {:<13} http={:<4} code={:<20} status={:<15} {:>6}ms {}",
            format_ts(a.attempted_at),
            a.outcome.as_str(),
            a.http_status.map_or("-".into(), |s| s.to_string()),
            a.gateway_code.as_deref().unwrap_or("-"),
            a.data_status.as_deref().unwrap_or("-"),
            a.latency_ms,
            a.error.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(out, "\nnotifications ({}):", d.notifications.len());
    for n in &d.notifications {
        let _ = writeln!(
            out,
            "  {}  {} {} {} → {}",
            format_ts(n.received_at),
            n.status,
            n.amount,
            n.currency,
            n.effect.map(|e| e.as_str()).unwrap_or("-")
        );
    }
    let _ = writeln!(out, "\ndiscrepancies ({}):", d.discrepancies.len());
    for x in &d.discrepancies {
        let _ = writeln!(
            out,
            "  {}  {} from {}: expected {} observed {}{}",
            format_ts(x.detected_at),
            x.kind,
            x.source,
            x.expected.as_deref().unwrap_or("-"),
            x.observed.as_deref().unwrap_or("-"),
            x.resolved_at
                .map(|t| format!(" (resolved {})", format_ts(t)))
                .unwrap_or_default()
        );
    }
    out
}

/// What `query` reports.
#[derive(Debug, Clone, Serialize)]
pub struct QuerySummary {
    /// The refund.
    pub out_refund_no: String,
    /// The attempt's outcome class.
    pub outcome: String,
    /// HTTP status, if an answer came.
    pub http_status: Option<u16>,
    /// Gateway code, if any.
    pub gateway_code: Option<String>,
    /// `data.status`, if verified.
    pub data_status: Option<String>,
    /// Latency in milliseconds.
    pub latency_ms: u64,
    /// Error text, if any.
    pub error: Option<String>,
    /// What the ledger did.
    pub ledger: String,
    /// Next query time, if still pending.
    pub next_query_at: Option<String>,
    /// Discrepancies recorded by this attempt.
    pub discrepancies: Vec<String>,
}

impl QuerySummary {
    /// Summarises a processed query.
    pub fn from_processed(no: &OutRefundNo, p: &Processed) -> Self {
        let ledger = match &p.applied {
            Applied::Finalized(s) => format!("finalized {s}"),
            Applied::Rescheduled {
                flagged: Some(r), ..
            } => format!("rescheduled; flagged: {r}"),
            Applied::Rescheduled { .. } => "rescheduled".into(),
            Applied::AlreadyFinal(s) => format!("already final: {s}"),
            Applied::Conflict { recorded, observed } => {
                format!("conflict: ledger has {recorded}, gateway says {observed}")
            }
            Applied::Mismatch { .. } => "answer contradicts the ledger; recorded".into(),
        };
        let next_query_at = match &p.decision.change {
            Change::Reschedule { next_query_at, .. } => Some(format_ts(*next_query_at)),
            _ => None,
        };
        Self {
            out_refund_no: no.to_string(),
            outcome: p.decision.class.as_str().to_owned(),
            http_status: p.report.http_status,
            gateway_code: p.report.gateway_code.clone(),
            data_status: p.report.data_status.clone(),
            latency_ms: p.report.latency.as_millis() as u64,
            error: p.report.error.clone(),
            ledger,
            next_query_at,
            discrepancies: p
                .decision
                .discrepancies
                .iter()
                .map(|d| {
                    format!(
                        "{}: expected {} observed {}",
                        d.kind, d.expected, d.observed
                    )
                })
                .collect(),
        }
    }

    /// For people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} ({})",
            self.out_refund_no, self.outcome, self.ledger
        );
        let _ = writeln!(
            out,
            "  http={} code={} status={} latency={}ms{}",
            self.http_status.map_or("-".into(), |s| s.to_string()),
            self.gateway_code.as_deref().unwrap_or("-"),
            self.data_status.as_deref().unwrap_or("-"),
            self.latency_ms,
            self.error
                .as_deref()
                .map(|e| format!(" error={e}"))
                .unwrap_or_default()
        );
        if let Some(n) = &self.next_query_at {
            let _ = writeln!(out, "  next query at {n}");
        }
        for d in &self.discrepancies {
            let _ = writeln!(out, "  DISCREPANCY {d}");
        }
        out
    }
}

/// The demo's closing summary.
pub fn demo_summary(r: &DemoReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nledger: {}", r.ledger.display());
    let _ = writeln!(
        out,
        "refunds: {} (seed {}), queries sent: {}, elapsed: {:.1}s",
        r.refunds,
        r.seed,
        r.queries,
        r.elapsed_ms as f64 / 1000.0
    );
    for (status, n) in &r.by_status {
        let _ = writeln!(out, "  {status:<16}{n:>6}");
    }
    let _ = writeln!(out, "  flagged for review (still pending): {}", r.flagged);
    let _ = writeln!(
        out,
        "  finalized by the merchant app's notifications: {}",
        r.finalized_by_notification
    );
    let _ = writeln!(out, "  discrepancies recorded: {}", r.discrepancies);
    if r.matches_truth() {
        let _ = writeln!(
            out,
            "result: every refund is final or flagged, and the ledger matches the sandbox's truth"
        );
    } else {
        let _ = writeln!(out, "result: MISMATCH in {} refunds:", r.mismatches.len());
        for m in &r.mismatches {
            let _ = writeln!(out, "  {m}");
        }
    }
    out
}
