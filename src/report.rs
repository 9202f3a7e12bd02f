//! Human-readable renderings for the CLI: tables for people (`--json` gives the same data to
//! scripts). Pure functions from ledger values to text. The ledger returns typed values
//! (timeline events, health findings); every sentence about them is written here, and the
//! `*View` types carry those sentences into `--json`.

use std::borrow::Cow;
use std::fmt::Write;

use serde::Serialize;

use crate::demo::DemoReport;
use crate::domain::{Change, HaltCode, OutRefundNo, Timestamp, format_ts, is_unsafe_char};
use crate::ledger::{
    Applied, AttemptRow, Finding, Happened, Health, OpenDiscrepancy, RefundDetail, RefundRow,
    StatusSummary, Timeline, TimelineEvent,
};
use crate::worker::Processed;

/// Text from the ledger made safe to print: every control character (and bidirectional
/// override, see [`is_unsafe_char`]) is written as a Rust-style escape, `\u{1b}`, so a value a
/// merchant's SQL stored cannot move the cursor, clear the screen or start a new line. Input
/// refuses these characters; this is for what is stored anyway. Backslashes are left as they
/// are. Every text renderer, `export --format csv` and the import errors use this one helper.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for an optional value, with `-` for none.
fn opt_text(v: Option<&str>) -> Cow<'_, str> {
    v.map_or(Cow::Borrowed("-"), escape)
}

/// A refund row with its free-text columns [`escape`]d: what `export --format csv` writes.
/// (JSON output needs no such copy: JSON escapes control characters itself.)
pub fn escaped_row(r: &RefundRow) -> Cow<'_, RefundRow> {
    let clean = |v: &Option<String>| v.as_deref().map(|t| escape(t).into_owned());
    let dirty = |v: &Option<String>| v.as_deref().is_some_and(|t| t.chars().any(is_unsafe_char));
    if !dirty(&r.refund_trade_no) && !dirty(&r.out_trade_no) {
        return Cow::Borrowed(r);
    }
    let mut row = r.clone();
    row.refund_trade_no = clean(&r.refund_trade_no);
    row.out_trade_no = clean(&r.out_trade_no);
    Cow::Owned(row)
}

fn opt_ts(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), format_ts)
}

/// The counts and the last sweep, for people (the top of [`health_table`]).
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
                    .map(|h| format!(" HALTED: {}", escape(h)))
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
        opt_text(r.refund_trade_no.as_deref()).into_owned(),
    );
    field(
        &mut out,
        "out_trade_no",
        opt_text(r.out_trade_no.as_deref()).into_owned(),
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
            opt_text(a.gateway_code.as_deref()),
            opt_text(a.data_status.as_deref()),
            a.latency_ms,
            escape(a.error.as_deref().unwrap_or(""))
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
            opt_text(x.expected.as_deref()),
            opt_text(x.observed.as_deref()),
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
    /// The refund queried.
    pub out_refund_no: String,
    /// The attempt's outcome class.
    pub outcome: String,
    /// HTTP status, if an answer came.
    pub http_status: Option<u16>,
    /// Gateway code, if any.
    pub gateway_code: Option<String>,
    /// `data.status`, if verified.
    pub data_status: Option<String>,
    /// Time on the wire in milliseconds.
    pub latency_ms: u64,
    /// What went wrong, when the answer was not a verified one.
    pub error: Option<String>,
    /// What the ledger did with the attempt, in words.
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

    /// `query` for people: the outcome and what the ledger did, then the answer's facts.
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
            opt_text(self.gateway_code.as_deref()),
            opt_text(self.data_status.as_deref()),
            self.latency_ms,
            self.error
                .as_deref()
                .map(|e| format!(" error={}", escape(e)))
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

/// A duration in whole units for people: `3d4h`, `2h05m`, `45s`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `status` for people: the counts, the worker, and what needs a human.
pub fn health_table(h: &Health) -> String {
    let mut out = status_table(&h.summary);
    let _ = writeln!(
        out,
        "{:<28}{}",
        "worker",
        match h.worker_idle_s {
            Some(s) => format!("last active {} ago", age(s)),
            None => "never ran".to_owned(),
        }
    );
    if h.findings.is_empty() {
        let _ = writeln!(out, "\nOK: nothing needs a human");
    } else {
        let _ = writeln!(out, "\nNEEDS A HUMAN:");
        for f in &h.findings {
            let _ = writeln!(out, "  [{}] {}", f.code(), finding_message(f));
        }
        for row in &h.summary.unreadable {
            let _ = writeln!(out, "    {}", escape(&row.to_string()));
        }
    }
    out
}

/// One finding in words, with the hint of what to run or check.
pub fn finding_message(f: &Finding) -> String {
    match f {
        Finding::FlaggedRefunds { count } => {
            format!(
                "{count} refunds are flagged for review (see `list --flagged`, `explain`; \
                 `retry-now` or `clear-flag` once handled)"
            )
        }
        Finding::WorkerNeverRan => {
            "the worker has never swept this ledger: is the daemon running?".to_owned()
        }
        Finding::WorkerStale {
            last_active,
            idle_s,
            stale_after_s,
        } => format!(
            "the worker last ran {} ({idle_s}s ago, more than {stale_after_s}s): is the daemon running?",
            format_ts(*last_active)
        ),
        Finding::Halted { code, reason } => format!(
            "querying is halted: {}",
            reason.as_deref().unwrap_or(match code {
                HaltCode::ConfigError => "configuration rejected by Checus",
                HaltCode::ClockSkew => "clock skew",
            })
        ),
        Finding::UnresolvedDiscrepancies { count } => format!(
            "{count} discrepancies are unresolved (see `discrepancies`, `resolve-discrepancy`)"
        ),
        Finding::GatewayUnavailable { since, paused_s } => format!(
            "the gateway has been unavailable since {} ({}): querying is paused and due refunds \
             wait; the daemon probes it every schedule.retry (check the network path to Checus, \
             `journalctl -u checus-reconciler`)",
            format_ts(*since),
            age(*paused_s)
        ),
        Finding::SweepsFailing {
            error,
            consecutive,
            since,
        } => format!(
            "{} (since {}): {} (see `journalctl -u checus-reconciler -e`; check the disk and \
             the ledger file)",
            match consecutive {
                1 => "the latest sweep failed".to_owned(),
                n => format!("the latest {n} sweeps failed"),
            },
            format_ts(*since),
            escape(error)
        ),
        Finding::UnreadableRows {
            unread,
            skipped,
            flagged,
            bad_created_at,
        } => unreadable_message([*unread, *skipped, *flagged, *bad_created_at]),
        Finding::UnscheduledRefunds {
            count,
            created_before,
        } => format!(
            "{count} pending refunds created before {} have no next query time although a sweep \
             has run since: they are never queried (check their created_at; `stuck` lists them, \
             `retry-now` schedules one)",
            format_ts(*created_before)
        ),
        Finding::OverdueUnflaggedRefunds {
            count,
            older_than_s,
        } => format!(
            "{count} pending refunds are older than {} (pending_flag_after plus the longest \
             wait between queries) and still not flagged: the daemon is not querying them \
             or gets no answer that counts (see `stuck`, `explain`)",
            age(i64::try_from(*older_than_s).unwrap_or(i64::MAX))
        ),
        Finding::PruneLeftRunning { id, started_at } => format!(
            "prune #{id} (started {}) is marked running outside a prune: while it is, the \
             ledger lets any writer delete old final refunds and no prune can start (find who \
             wrote it, then close it as README's status warnings show)",
            opt_ts(*started_at)
        ),
    }
}

/// [`Finding::UnreadableRows`] in words: only the parts that are not zero.
fn unreadable_message([unread, skipped, flagged, bad_created_at]: [u64; 4]) -> String {
    let mut parts = Vec::new();
    if unread > 0 {
        parts.push(format!(
            "status could not read {unread} rows it needed (listed under `unreadable` in --json)"
        ));
    }
    if skipped > 0 {
        parts.push(format!(
            "the latest sweep skipped {skipped} rows it could not read or update"
        ));
    }
    if flagged > 0 {
        parts.push(format!(
            "{flagged} refunds are flagged row_unreadable or row_unwritable"
        ));
    }
    if bad_created_at > 0 {
        parts.push(format!(
            "{bad_created_at} refunds have a created_at that is not a time"
        ));
    }
    format!(
        "{}: nothing reconciles them until the stored values are fixed (`list --flagged`, \
         then `explain` names the column)",
        parts.join("; ")
    )
}

/// `status --json`: the counts flattened, the worker, and each finding as `{code, message}`.
#[derive(Debug, Serialize)]
pub struct HealthView<'a> {
    /// The counts.
    #[serde(flatten)]
    pub summary: &'a StatusSummary,
    /// Seconds since the worker last started or finished a sweep (`None`: never ran).
    pub worker_idle_s: Option<i64>,
    /// The threshold past which the worker counts as stale, in seconds.
    pub stale_after_s: u64,
    /// What needs a human, in words.
    pub warnings: Vec<Warning>,
    /// True when any warning is present (`status` then exits 8).
    pub needs_human: bool,
}

/// One finding for scripts.
#[derive(Debug, Serialize)]
pub struct Warning {
    /// [`Finding::code`].
    pub code: &'static str,
    /// [`finding_message`].
    pub message: String,
}

impl<'a> HealthView<'a> {
    /// Words `h`'s findings.
    pub fn new(h: &'a Health) -> Self {
        Self {
            summary: &h.summary,
            worker_idle_s: h.worker_idle_s,
            stale_after_s: h.stale_after_s,
            warnings: h
                .findings
                .iter()
                .map(|f| Warning {
                    code: f.code(),
                    message: finding_message(f),
                })
                .collect(),
            needs_human: h.needs_human(),
        }
    }
}

/// `stuck` for people, ages counted at `now`.
pub fn stuck_table(rows: &[RefundRow], now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>14} {:<4} {:>8} {:>4} {:<13} {:<24} FLAG",
        "OUT_REFUND_NO", "AMOUNT", "CUR", "AGE", "TRY", "LAST_OUTCOME", "NEXT_QUERY"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>14} {:<4} {:>8} {:>4} {:<13} {:<24} {}",
            r.out_refund_no.as_str(),
            r.amount.to_string(),
            r.currency.as_str(),
            age((now - r.created_at).num_seconds()),
            r.attempts,
            r.last_outcome.map_or("-", |o| o.as_str()),
            opt_ts(r.next_query_at),
            r.review_reason.map(|x| x.as_str()).unwrap_or("")
        );
    }
    let _ = writeln!(out, "({} stuck refunds)", rows.len());
    out
}

/// `failed` for people.
pub fn failed_table(rows: &[RefundRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>14} {:<4} {:<24} {:<15} {:>4} REFUND_TRADE_NO",
        "OUT_REFUND_NO", "AMOUNT", "CUR", "FAILED_AT", "SOURCE", "TRY"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>14} {:<4} {:<24} {:<15} {:>4} {}",
            r.out_refund_no.as_str(),
            r.amount.to_string(),
            r.currency.as_str(),
            opt_ts(r.finalized_at),
            r.final_source.map_or("-", |s| s.as_str()),
            r.attempts,
            opt_text(r.refund_trade_no.as_deref())
        );
    }
    let _ = writeln!(out, "({} failed refunds)", rows.len());
    out
}

/// `explain` for people: the refund's head line, then one line per event.
pub fn timeline(v: &TimelineView<'_>) -> String {
    let r = v.refund;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {} {}  {}{}",
        r.out_refund_no,
        r.amount,
        r.currency,
        r.status,
        if r.review_flag {
            format!(
                "  FLAGGED ({})",
                r.review_reason.map(|x| x.as_str()).unwrap_or("?")
            )
        } else {
            String::new()
        }
    );
    for e in &v.events {
        let _ = writeln!(
            out,
            "  {}  {:<20} {}",
            format_ts(e.at),
            e.kind,
            escape(&e.summary)
        );
    }
    out
}

/// A timeline in words: what `explain` prints, and (as JSON) what `explain --json` prints.
#[derive(Debug, Serialize)]
pub struct TimelineView<'a> {
    /// The refund as it is now.
    pub refund: &'a RefundRow,
    /// Its events, oldest first.
    pub events: Vec<EventView>,
}

/// One event in words, with the facts scripts filter on.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// When it happened (for `next_query`: when it will).
    #[serde(serialize_with = "ser_ts")]
    pub at: Timestamp,
    /// [`EventKind::as_str`].
    pub kind: &'static str,
    /// One line for people.
    pub summary: String,
    /// `query`: the outcome class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// `query`: time on the wire in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// `query`: the sweep that made it (`sweeps.id`, the `sweep` field of the daemon's logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_id: Option<i64>,
    /// `operator`, `discrepancy_resolved`: the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `discrepancy`, `discrepancy_resolved`: its id, for `resolve-discrepancy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discrepancy_id: Option<i64>,
}

fn ser_ts<S: serde::Serializer>(v: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ts(*v))
}

impl<'a> TimelineView<'a> {
    /// Words every event of `t`.
    pub fn new(t: &'a Timeline) -> Self {
        Self {
            refund: &t.refund,
            events: t.events.iter().map(event_view).collect(),
        }
    }
}

fn event_view(e: &TimelineEvent) -> EventView {
    let mut v = EventView {
        at: e.at,
        kind: e.what.kind().as_str(),
        summary: event_summary(&e.what),
        outcome: None,
        latency_ms: None,
        sweep_id: None,
        actor: None,
        discrepancy_id: None,
    };
    match &e.what {
        Happened::Queried(a) => {
            v.outcome = Some(a.outcome.as_str());
            v.latency_ms = Some(a.latency_ms);
            v.sweep_id = a.sweep_id;
        }
        Happened::DiscrepancyDetected(d) => v.discrepancy_id = Some(d.id),
        Happened::DiscrepancyResolved(d) => {
            v.discrepancy_id = Some(d.id);
            v.actor = d.resolved_by.clone();
        }
        Happened::OperatorActed(o) => v.actor = Some(o.actor.clone()),
        _ => {}
    }
    v
}

/// One event in one line.
fn event_summary(what: &Happened) -> String {
    match what {
        Happened::Created {
            amount,
            currency,
            refund_trade_no,
        } => {
            let mut s = format!("refund issued: {amount} {currency}");
            if let Some(t) = refund_trade_no {
                let _ = write!(s, ", refundTradeNo {t}");
            }
            s
        }
        Happened::Notified(n) => format!(
            "notification {} {} {} → {}",
            n.status,
            n.amount,
            n.currency,
            n.effect.map_or("-", |e| e.as_str())
        ),
        Happened::Queried(a) => query_summary(a),
        Happened::Decided { decision, .. } => decision.clone(),
        Happened::DiscrepancyDetected(d) => format!(
            "discrepancy #{} {} from {}: ledger has {}, {} said {}",
            d.id,
            d.kind,
            d.source,
            d.expected.as_deref().unwrap_or("-"),
            d.source,
            d.observed.as_deref().unwrap_or("-")
        ),
        Happened::Flagged(reason) => format!("flagged for review: {}", reason.as_str()),
        Happened::DiscrepancyResolved(d) => format!(
            "discrepancy #{} resolved: {}",
            d.id,
            d.resolution.as_deref().unwrap_or("")
        ),
        Happened::OperatorActed(o) => {
            let mut s = format!(
                "operator {}: {}",
                o.actor,
                o.action.as_str().replace('_', "-")
            );
            if let Some(status) = o.to_status {
                let _ = write!(s, " → {status}");
            }
            if let Some(r) = &o.reason {
                let _ = write!(s, ", reason: {r}");
            }
            if let Some(d) = &o.detail {
                let _ = write!(s, " (was {d})");
            }
            s
        }
        Happened::Finalized { status, source } => {
            format!("final: {status} (source {})", source.as_str())
        }
        Happened::NextQueryDue { scheduled: true } => "next /refundQuery due".to_owned(),
        Happened::NextQueryDue { scheduled: false } => {
            "not scheduled yet (the daemon schedules it at its next sweep)".to_owned()
        }
    }
}

/// A query event: outcome, what the answer said, latency and any error.
fn query_summary(a: &AttemptRow) -> String {
    let mut s = format!("/refundQuery → {}", a.outcome.as_str());
    if let Some(h) = a.http_status {
        let _ = write!(s, " http={h}");
    }
    if let Some(c) = &a.gateway_code {
        let _ = write!(s, " code={c}");
    }
    if let Some(d) = &a.data_status {
        let _ = write!(s, " status={d}");
    }
    let _ = write!(s, " in {} ms", a.latency_ms);
    if let Some(sweep) = a.sweep_id {
        let _ = write!(s, " (sweep {sweep})");
    }
    if let Some(e) = &a.error {
        let _ = write!(s, ": {e}");
    }
    s
}

/// `discrepancies` for people.
pub fn discrepancy_table(rows: &[OpenDiscrepancy]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} {:<24} {:<24} {:<13} {:<18} {:<16} {:<16} RESOLVED_BY",
        "ID", "OUT_REFUND_NO", "DETECTED", "SOURCE", "KIND", "LEDGER", "OBSERVED"
    );
    for d in rows {
        let _ = writeln!(
            out,
            "{:>6} {:<24} {:<24} {:<13} {:<18} {:<16} {:<16} {}",
            d.id,
            d.out_refund_no.as_str(),
            format_ts(d.detected_at),
            d.source.as_str(),
            d.kind.as_str(),
            opt_text(d.expected.as_deref()),
            opt_text(d.observed.as_deref()),
            opt_text(d.resolved_by.as_deref())
        );
    }
    let _ = writeln!(out, "({} discrepancies)", rows.len());
    out
}

/// `prune` for people.
pub fn prune_summary(p: &crate::ledger::PruneReport) -> String {
    let c = &p.counts;
    let mut out = String::new();
    let verb = if p.dry_run { "would remove" } else { "removed" };
    let _ = writeln!(
        out,
        "prune of refunds finalized before {}: {verb} {} refunds, {} attempts, {} notifications, {} discrepancies, {} sweeps",
        format_ts(p.finalized_before),
        c.refunds,
        c.attempts,
        c.notifications,
        c.discrepancies,
        c.sweeps
    );
    if c.kept_unresolved > 0 {
        let _ = writeln!(
            out,
            "kept {} old final refunds with unresolved discrepancies",
            c.kept_unresolved
        );
    }
    match (&p.archive, &p.archive_sha256) {
        (Some(path), Some(sha)) => {
            let _ = writeln!(out, "archive: {} (sha256 {sha})", path.display());
        }
        _ if p.dry_run => {
            let _ = writeln!(out, "dry run: nothing was written");
        }
        _ => {
            let _ = writeln!(out, "no archive was written (--no-archive)");
        }
    }
    if let Some(id) = p.prune_id {
        let _ = writeln!(out, "recorded as prune #{id} in the ledger's prunes table");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_writes_every_control_character_as_an_escape() {
        let cases = [
            ("R-1", "R-1"),
            ("ORD ü 1", "ORD ü 1"),
            ("a\\b", "a\\b"),
            ("\u{1b}[2J", "\\u{1b}[2J"),
            ("a\nb\r\tc", "a\\u{a}b\\u{d}\\u{9}c"),
            ("\u{0}\u{7f}\u{9b}", "\\u{0}\\u{7f}\\u{9b}"),
            ("x\u{202e}y\u{2066}", "x\\u{202e}y\\u{2066}"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape(raw), want, "{raw:?}");
            assert!(!escape(raw).chars().any(is_unsafe_char));
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(opt_text(None), "-");
    }

    #[test]
    fn each_stall_finding_says_what_since_when_and_where_to_look() {
        let t = crate::domain::parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let cases = [
            (
                Finding::GatewayUnavailable {
                    since: t,
                    paused_s: 3720,
                },
                "the gateway has been unavailable since 2026-11-25T10:00:00.000Z (1h02m): \
                 querying is paused",
            ),
            (
                Finding::SweepsFailing {
                    error: "disk I/O error\u{1b}[2J".into(),
                    consecutive: 1,
                    since: t,
                },
                "the latest sweep failed (since 2026-11-25T10:00:00.000Z): \
                 disk I/O error\\u{1b}[2J (see",
            ),
            (
                Finding::SweepsFailing {
                    error: "disk full".into(),
                    consecutive: 4,
                    since: t,
                },
                "the latest 4 sweeps failed (since",
            ),
            (
                Finding::UnreadableRows {
                    unread: 0,
                    skipped: 2,
                    flagged: 0,
                    bad_created_at: 1,
                },
                "the latest sweep skipped 2 rows it could not read or update; \
                 1 refunds have a created_at that is not a time: nothing reconciles them",
            ),
            (
                Finding::UnscheduledRefunds {
                    count: 3,
                    created_before: t,
                },
                "3 pending refunds created before 2026-11-25T10:00:00.000Z have no next query \
                 time",
            ),
            (
                Finding::OverdueUnflaggedRefunds {
                    count: 5,
                    older_than_s: 355_500,
                },
                "5 pending refunds are older than 4d2h (pending_flag_after",
            ),
            (
                Finding::PruneLeftRunning {
                    id: 7,
                    started_at: None,
                },
                "prune #7 (started -) is marked running outside a prune",
            ),
        ];
        for (finding, start) in cases {
            let text = finding_message(&finding);
            assert!(text.starts_with(start), "{text}");
            assert!(!text.chars().any(is_unsafe_char), "{text}");
        }
    }
}
