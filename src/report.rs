//! Human-readable renderings for the CLI: tables for people (`--json` gives the same data to
//! scripts). Pure functions from ledger values to text. The ledger returns typed values
//! (timeline events, health findings); every sentence about them is written here, and the
//! `*View` types carry those sentences into `--json`.

use std::borrow::Cow;
use std::fmt::Write;

use serde::Serialize;

use crate::demo::DemoReport;
use crate::domain::{
    Change, HaltCode, OutRefundNo, Timestamp, format_ts, is_unsafe_char, node_state,
};
use crate::ledger::{
    Applied, AttemptRow, Finding, Happened, Health, NodeRow, OpenDiscrepancy, OperatorActionRow,
    RefundDetail, RefundRow, StatusSummary, Timeline, TimelineEvent,
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

/// `n` and the noun in the number it needs, for people: `1 refund`, `2 refunds`, `2,345
/// refunds`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// [`count`] with its verb: `1 refund is`, `2 refunds are`.
fn are(n: u64, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        count(n, one, many),
        if n == 1 { "is" } else { "are" }
    )
}

/// `2345` as `2,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How a column lines its cells up under its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A table for people: each column as wide as its widest cell or header, one space between
/// columns, the last column unpadded. Cells are already escaped.
fn columns(head: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, ((cell, (_, align)), w)) in cells.iter().zip(head).zip(&widths).enumerate() {
            if i > 0 {
                text.push(' ');
            }
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            match align {
                Align::Right => text.push_str(&pad),
                Align::Left => {}
            }
            text.push_str(cell);
            if *align == Align::Left {
                text.push_str(&pad);
            }
        }
        // The last column is not padded.
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(head.iter().map(|(h, _)| *h).collect());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// How much of a list its limit let through: the footer of a table, and the fields of
/// `--json` next to the rows (`shown`, `total`, `limit`, `truncated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Rows printed.
    pub shown: usize,
    /// Rows matching the filters, the limit aside.
    pub total: u64,
    /// The `--limit` in force.
    pub limit: usize,
    /// True when the limit cut the list short (`total` is more than the rows fetched).
    pub truncated: bool,
}

impl Extent {
    /// A list of `shown` rows read (plus `unreadable` rows skipped) under `limit`;
    /// `total` counts every match, and is asked for only when the limit was reached.
    pub fn new(
        shown: usize,
        unreadable: usize,
        limit: usize,
        total: impl FnOnce() -> Result<u64, crate::ledger::LedgerError>,
    ) -> Result<Self, crate::ledger::LedgerError> {
        let fetched = shown.saturating_add(unreadable);
        let fetched_u64 = u64::try_from(fetched).unwrap_or(u64::MAX);
        let total = if fetched >= limit {
            total()?.max(fetched_u64)
        } else {
            fetched_u64
        };
        Ok(Self {
            shown,
            total,
            limit,
            truncated: total > fetched_u64,
        })
    }

    /// `(2 refunds)`, or when the limit cut the list short, `(100 of 2,345 refunds shown;
    /// --limit N to see more)`.
    pub fn footer(&self, one: &str, many: &str) -> String {
        if self.truncated {
            format!(
                "({} of {} shown; --limit N to see more)\n",
                thousands(u64::try_from(self.shown).unwrap_or(u64::MAX)),
                count(self.total, one, many)
            )
        } else {
            format!(
                "({})\n",
                count(u64::try_from(self.shown).unwrap_or(u64::MAX), one, many)
            )
        }
    }
}

/// A list for `--json`: its [`Extent`] and its rows, under `rows`.
#[derive(Debug, Serialize)]
pub struct Page<'a, T> {
    /// How much of the list is here.
    #[serde(flatten)]
    pub extent: Extent,
    /// The rows, in the list's order.
    pub rows: &'a [T],
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

/// `list` for people: the columns line up with their headers whatever the widths, and the
/// footer says when `--limit` cut the list short.
pub fn refund_table(rows: &[RefundRow], extent: &Extent) -> String {
    use Align::{Left as L, Right as R};
    let head = [
        ("OUT_REFUND_NO", L),
        ("AMOUNT", R),
        ("CUR", L),
        ("STATUS", L),
        ("CREATED", L),
        ("TRY", R),
        ("NEXT_QUERY", L),
        ("FLAG", L),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.out_refund_no.to_string(),
                r.amount.to_string(),
                r.currency.to_string(),
                r.status.to_string(),
                format_ts(r.created_at),
                r.attempts.to_string(),
                if r.status.is_final() {
                    "-".to_owned()
                } else {
                    opt_ts(r.next_query_at)
                },
                r.review_reason.map(|x| x.as_str()).unwrap_or("").to_owned(),
            ]
        })
        .collect();
    columns(&head, &cells) + &extent.footer("refund", "refunds")
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
        "  finalized by a Checus notification: {} (sandbox sent {} attempts, {} refunds acknowledged)",
        r.finalized_by_notification, r.notification_attempts, r.notifications_acked
    );
    let _ = writeln!(
        out,
        "  finalized by the daemon's polling:  {}",
        r.finalized_by_query
    );
    let _ = writeln!(out, "  discrepancies recorded: {}", r.discrepancies);
    if r.matches_truth() {
        let _ = writeln!(
            out,
            "result: every refund is final or flagged, and the ledger matches the sandbox's truth"
        );
    } else {
        let n = u64::try_from(r.mismatches.len()).unwrap_or(u64::MAX);
        let _ = writeln!(
            out,
            "result: MISMATCH in {}:",
            count(n, "refund", "refunds")
        );
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
                "{} flagged for review, pending or final (`list --flagged` lists exactly \
                 these; `explain` says why and since when; `retry-now` or `clear-flag` once \
                 handled)",
                are(*count, "refund", "refunds")
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
            "{} unresolved (see `discrepancies`, `resolve-discrepancy`)",
            are(*count, "discrepancy", "discrepancies")
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
            "{} created before {} {} no next query time although a sweep has run since: \
             {} never queried (check created_at; `stuck` lists them, `retry-now` schedules \
             one)",
            self::count(*count, "pending refund", "pending refunds"),
            format_ts(*created_before),
            if *count == 1 { "has" } else { "have" },
            if *count == 1 { "it is" } else { "they are" }
        ),
        Finding::OverdueUnflaggedRefunds {
            count,
            older_than_s,
        } => format!(
            "{} older than {} (pending_flag_after plus the longest \
             wait between queries) and still not flagged: the daemon is not querying them \
             or gets no answer that counts (see `stuck`, `explain`)",
            are(*count, "pending refund", "pending refunds"),
            age(i64::try_from(*older_than_s).unwrap_or(i64::MAX))
        ),
        Finding::PruneLeftRunning { id, started_at } => format!(
            "prune #{id} (started {}) is marked running outside a prune: while it is, the \
             ledger lets any writer delete old final refunds and no prune can start (find who \
             wrote it, then close it as README's status warnings show)",
            opt_ts(*started_at)
        ),
        Finding::DeadWebhooks { count } => format!(
            "{} dead: retried past webhook.give_up_after without a 2xx answer, each holding \
             back the later events of its refund (see `webhooks --state dead`; fix the \
             receiver, then `webhooks redeliver ID... --reason ...`)",
            are(*count, "webhook event", "webhook events")
        ),
        Finding::NodesSilent {
            names,
            silent_after_s,
        } => format!(
            "{} of this shared ledger silent (no heartbeat for over {} and no clean stop: \
             killed, hung or cut off): {}; the other nodes take over its refunds as the leases \
             end; restart it, or remove the row of a node retired for good (docs/postgres.md)",
            are(names.len() as u64, "daemon node", "daemon nodes"),
            age(i64::try_from(*silent_after_s).unwrap_or(i64::MAX)),
            names
                .iter()
                .map(|n| escape(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// [`Finding::UnreadableRows`] in words: only the parts that are not zero.
fn unreadable_message([unread, skipped, flagged, bad_created_at]: [u64; 4]) -> String {
    let mut parts = Vec::new();
    if unread > 0 {
        parts.push(format!(
            "status could not read {} it needed (listed under `unreadable` in --json)",
            count(unread, "row", "rows")
        ));
    }
    if skipped > 0 {
        parts.push(format!(
            "the latest sweep skipped {} it could not read or update",
            count(skipped, "row", "rows")
        ));
    }
    if flagged > 0 {
        parts.push(format!(
            "{} flagged row_unreadable or row_unwritable",
            are(flagged, "refund", "refunds")
        ));
    }
    if bad_created_at > 0 {
        parts.push(format!(
            "{} a created_at that is not a time",
            match bad_created_at {
                1 => "1 refund has".to_owned(),
                n => format!("{} have", count(n, "refund", "refunds")),
            }
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
    /// Every daemon node the ledger has seen, by name (on SQLite a silent node is not a
    /// warning by itself: one daemon runs per file, and `worker_stale` covers a dead one; on
    /// PostgreSQL it is `nodes_silent`).
    pub nodes: Vec<NodeView>,
}

/// One daemon node as `status` shows it: its `nodes` row judged at the time of the check.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The node's name (`worker.node_name`).
    pub name: String,
    /// The host it last ran on.
    pub host: String,
    /// Its process id at its last start.
    pub pid: i64,
    /// The daemon's version at its last start.
    pub version: String,
    /// Its last start.
    #[serde(serialize_with = "ser_ts")]
    pub started_at: Timestamp,
    /// Its last heartbeat.
    #[serde(serialize_with = "ser_ts")]
    pub heartbeat_at: Timestamp,
    /// Seconds from its last heartbeat to the check (0 for a heartbeat ahead of our clock).
    pub heartbeat_age_s: i64,
    /// Its clean stop, if it stopped.
    #[serde(serialize_with = "ser_opt_ts")]
    pub stopped_at: Option<Timestamp>,
    /// `running`, `stopped` or `silent` (no heartbeat for [`crate::domain::node::SILENT_AFTER_INTERVALS`]
    /// sweep intervals and no clean stop).
    pub state: &'static str,
}

impl NodeView {
    /// Judges each row at `now`: silent past `silent_after` without a clean stop.
    pub fn judge(rows: &[NodeRow], now: Timestamp, silent_after: std::time::Duration) -> Vec<Self> {
        rows.iter()
            .map(|r| Self {
                name: r.name.clone(),
                host: r.host.clone(),
                pid: r.pid,
                version: r.version.clone(),
                started_at: r.started_at,
                heartbeat_at: r.heartbeat_at,
                heartbeat_age_s: (now - r.heartbeat_at).num_seconds().max(0),
                stopped_at: r.stopped_at,
                state: node_state(r.heartbeat_at, r.stopped_at, now, silent_after).as_str(),
            })
            .collect()
    }
}

/// `status`'s node list for people: one line per node, its state, host and heartbeat age.
pub fn nodes_table(nodes: &[NodeView]) -> String {
    let mut out = String::new();
    if nodes.is_empty() {
        let _ = writeln!(out, "\nnodes: none has run on this ledger yet");
        return out;
    }
    let _ = writeln!(out, "\nnodes:");
    for n in nodes {
        let stop = match n.stopped_at {
            Some(at) => format!(", stopped {}", format_ts(at)),
            None if n.state == "silent" => {
                ", never stopped cleanly: killed, hung or cut off?".to_owned()
            }
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<24}{:<9}host {}, pid {}, version {}, last heartbeat {} ago{}",
            escape(&n.name),
            n.state,
            escape(&n.host),
            n.pid,
            escape(&n.version),
            age(n.heartbeat_age_s),
            stop
        );
    }
    out
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
            nodes: Vec::new(),
        }
    }

    /// The same view with the ledger's nodes.
    pub fn with_nodes(mut self, nodes: Vec<NodeView>) -> Self {
        self.nodes = nodes;
        self
    }
}

/// `stuck` for people, ages counted at `now`.
pub fn stuck_table(rows: &[RefundRow], now: Timestamp, extent: &Extent) -> String {
    use Align::{Left as L, Right as R};
    let head = [
        ("OUT_REFUND_NO", L),
        ("AMOUNT", R),
        ("CUR", L),
        ("AGE", R),
        ("TRY", R),
        ("LAST_OUTCOME", L),
        ("NEXT_QUERY", L),
        ("FLAG", L),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.out_refund_no.to_string(),
                r.amount.to_string(),
                r.currency.to_string(),
                age((now - r.created_at).num_seconds()),
                r.attempts.to_string(),
                r.last_outcome.map_or("-", |o| o.as_str()).to_owned(),
                opt_ts(r.next_query_at),
                r.review_reason.map(|x| x.as_str()).unwrap_or("").to_owned(),
            ]
        })
        .collect();
    columns(&head, &cells) + &extent.footer("stuck refund", "stuck refunds")
}

/// `failed` for people.
pub fn failed_table(rows: &[RefundRow], extent: &Extent) -> String {
    use Align::{Left as L, Right as R};
    let head = [
        ("OUT_REFUND_NO", L),
        ("AMOUNT", R),
        ("CUR", L),
        ("FAILED_AT", L),
        ("SOURCE", L),
        ("TRY", R),
        ("REFUND_TRADE_NO", L),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.out_refund_no.to_string(),
                r.amount.to_string(),
                r.currency.to_string(),
                opt_ts(r.finalized_at),
                r.final_source.map_or("-", |s| s.as_str()).to_owned(),
                r.attempts.to_string(),
                opt_text(r.refund_trade_no.as_deref()).into_owned(),
            ]
        })
        .collect();
    columns(&head, &cells) + &extent.footer("failed refund", "failed refunds")
}

/// `explain` for people: the refund's head line (its state: see [`refund_state`]), then one
/// line per event.
pub fn timeline(v: &TimelineView<'_>) -> String {
    let r = v.refund;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {} {}  {}",
        r.out_refund_no, r.amount, r.currency, v.state
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

/// A refund's state in one line: its status, since when it is final and who said so, and its
/// review flag with when it was set and what clears it. A final refund whose flag nobody
/// cleared reads as final first: `REFUND_SUCCESS since T2 (source query); flagged
/// (answer_unrecordable) at T1; flag not yet cleared: clear-flag`.
pub fn refund_state(r: &RefundRow) -> String {
    let mut out = r.status.to_string();
    if let (Some(at), Some(source)) = (r.finalized_at, r.final_source) {
        let _ = write!(out, " since {} (source {})", format_ts(at), source.as_str());
    }
    if r.review_flag {
        let _ = write!(
            out,
            "; flagged ({}) at {}",
            r.review_reason.map_or("?", |x| x.as_str()),
            opt_ts(r.flagged_at)
        );
        out.push_str(if r.status.is_final() {
            "; flag not yet cleared: clear-flag"
        } else {
            ": retry-now, or clear-flag once handled"
        });
    }
    out
}

/// A timeline in words: what `explain` prints, and (as JSON) what `explain --json` prints.
#[derive(Debug, Serialize)]
pub struct TimelineView<'a> {
    /// The refund as it is now.
    pub refund: &'a RefundRow,
    /// [`refund_state`]: its status, since when final, its flag, in one line.
    pub state: String,
    /// Its review flag, while set: why, since when, and whether the refund is final by now.
    pub flag: Option<FlagView>,
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
    /// `query`: the node that made it (`attempts.node`; absent before schema version 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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

/// A refund's review flag, for `explain --json`.
#[derive(Debug, Serialize)]
pub struct FlagView {
    /// Why it was flagged (`review_reason`).
    pub reason: &'static str,
    /// When the flag was set (`flagged_at`).
    #[serde(serialize_with = "ser_opt_ts")]
    pub flagged_at: Option<Timestamp>,
    /// True when the refund is final by now: only the flag is left to clear.
    pub refund_final: bool,
    /// The command that ends it: `clear-flag` (final), or `retry-now` / `clear-flag` (pending).
    pub cleared_by: &'static str,
}

fn ser_opt_ts<S: serde::Serializer>(v: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(t) => s.serialize_str(&format_ts(*t)),
        None => s.serialize_none(),
    }
}

impl<'a> TimelineView<'a> {
    /// Words every event of `t`.
    pub fn new(t: &'a Timeline) -> Self {
        let r = &t.refund;
        Self {
            refund: &t.refund,
            state: refund_state(r),
            flag: r.review_flag.then(|| FlagView {
                reason: r.review_reason.map_or("?", |x| x.as_str()),
                flagged_at: r.flagged_at,
                refund_final: r.status.is_final(),
                cleared_by: if r.status.is_final() {
                    "clear-flag"
                } else {
                    "retry-now or clear-flag"
                },
            }),
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
        node: None,
        actor: None,
        discrepancy_id: None,
    };
    match &e.what {
        Happened::Queried(a) => {
            v.outcome = Some(a.outcome.as_str());
            v.latency_ms = Some(a.latency_ms);
            v.sweep_id = a.sweep_id;
            v.node = a.node.clone();
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
    match (a.sweep_id, &a.node) {
        (Some(sweep), Some(node)) => {
            let _ = write!(s, " (node {}, sweep {sweep})", escape(node));
        }
        (Some(sweep), None) => {
            let _ = write!(s, " (sweep {sweep})");
        }
        (None, Some(node)) => {
            let _ = write!(s, " (node {})", escape(node));
        }
        (None, None) => {}
    }
    if let Some(e) = &a.error {
        let _ = write!(s, ": {e}");
    }
    s
}

/// `discrepancies` for people; a resolved one (`--all`) shows who resolved it and when.
pub fn discrepancy_table(rows: &[OpenDiscrepancy]) -> String {
    use Align::{Left as L, Right as R};
    let head = [
        ("ID", R),
        ("OUT_REFUND_NO", L),
        ("DETECTED", L),
        ("SOURCE", L),
        ("KIND", L),
        ("LEDGER", L),
        ("OBSERVED", L),
        ("RESOLVED", L),
        ("RESOLVED_BY", L),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.out_refund_no.to_string(),
                format_ts(d.detected_at),
                d.source.as_str().to_owned(),
                d.kind.as_str().to_owned(),
                opt_text(d.expected.as_deref()).into_owned(),
                opt_text(d.observed.as_deref()).into_owned(),
                opt_ts(d.resolved_at),
                opt_text(d.resolved_by.as_deref()).into_owned(),
            ]
        })
        .collect();
    let n = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    columns(&head, &cells) + &format!("({})\n", count(n, "discrepancy", "discrepancies"))
}

/// One operator action for `audit --json`: the `operator_actions` row, with `detail` (the
/// values the action replaced) as the JSON it holds.
#[derive(Debug, Serialize)]
pub struct ActionView<'a> {
    /// The row id, increasing in action order.
    pub id: i64,
    /// When the operator acted.
    #[serde(serialize_with = "ser_ts")]
    pub at: Timestamp,
    /// Who acted.
    pub actor: &'a str,
    /// What they did: `resolve`, `retry_now`, `resolve_discrepancy`, `prune`, `clear_flag`.
    pub action: &'static str,
    /// The refund concerned (`null` for a prune).
    pub out_refund_no: Option<&'a str>,
    /// `resolve`: the final status decided.
    pub to_status: Option<&'static str>,
    /// Why, in the operator's words (`null` for `retry_now`).
    pub reason: Option<&'a str>,
    /// What the action changed (JSON; as text when the stored value is not JSON).
    pub detail: serde_json::Value,
}

impl<'a> ActionView<'a> {
    /// The view of one row.
    pub fn new(a: &'a OperatorActionRow) -> Self {
        Self {
            id: a.id,
            at: a.at,
            actor: &a.actor,
            action: a.action.as_str(),
            out_refund_no: a.out_refund_no.as_ref().map(OutRefundNo::as_str),
            to_status: a.to_status.map(|s| s.as_str()),
            reason: a.reason.as_deref(),
            detail: a.detail.as_deref().map_or(serde_json::Value::Null, |d| {
                serde_json::from_str(d).unwrap_or_else(|_| serde_json::Value::from(d))
            }),
        }
    }
}

/// `audit` for people: one line per operator action, oldest first.
pub fn audit_table(rows: &[ActionView<'_>], extent: &Extent) -> String {
    use Align::{Left as L, Right as R};
    let head = [
        ("ID", R),
        ("AT", L),
        ("BY", L),
        ("ACTION", L),
        ("OUT_REFUND_NO", L),
        ("REASON", L),
        ("DETAIL", L),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            let mut action = a.action.replace('_', "-");
            if let Some(s) = a.to_status {
                let _ = write!(action, " {s}");
            }
            vec![
                a.id.to_string(),
                format_ts(a.at),
                escape(a.actor).into_owned(),
                action,
                a.out_refund_no.unwrap_or("-").to_owned(),
                opt_text(a.reason).into_owned(),
                if a.detail.is_null() {
                    "-".to_owned()
                } else {
                    escape(&a.detail.to_string()).into_owned()
                },
            ]
        })
        .collect();
    columns(&head, &cells) + &extent.footer("action", "actions")
}

/// `webhooks` for people: one line per event, oldest first; LAST_ERROR for a pending or dead
/// one, the delivery time for a delivered one.
pub fn webhooks_table(rows: &[crate::ledger::WebhookEventRow], extent: &Extent) -> String {
    use Align::{Left as L, Right as R};
    let head = [
        ("EVENT_ID", L),
        ("TYPE", L),
        ("OUT_REFUND_NO", L),
        ("CREATED_AT", L),
        ("STATE", L),
        ("ATTEMPTS", R),
        ("NEXT_OR_DELIVERED_AT", L),
        ("LAST_ERROR", L),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|e| {
            let when = match (e.state, e.delivered_at) {
                (crate::ledger::WebhookState::Pending, _) => format_ts(e.next_attempt_at),
                (_, at) => opt_ts(at),
            };
            vec![
                escape(&e.event_id).into_owned(),
                escape(&e.kind).into_owned(),
                escape(&e.out_refund_no).into_owned(),
                format_ts(e.created_at),
                e.state.to_string(),
                e.attempts.to_string(),
                when,
                opt_text(e.last_error.as_deref()).into_owned(),
            ]
        })
        .collect();
    columns(&head, &cells) + &extent.footer("event", "events")
}

/// What `show` and `explain` say about a refund a prune removed.
pub fn pruned_message(
    p: &crate::ledger::PrunedRefund,
    ledger: &crate::ledger::LedgerTarget,
) -> String {
    let mut out = format!(
        "refund {} is not in the ledger {}: it was pruned at {} by prune #{} (run by {}, final \
         refunds finalized before {})",
        p.out_refund_no,
        ledger,
        format_ts(p.pruned_at),
        p.prune_id,
        escape(&p.actor),
        format_ts(p.finalized_before)
    );
    match (&p.archive, p.archive_line) {
        (Some(a), Some(line)) => {
            let _ = write!(out, "; its rows are archived in {}:{line}", a.display());
        }
        _ => out.push_str("; the audit log (`audit --refund`) still names it"),
    }
    out
}

/// `prune` for people.
pub fn prune_summary(p: &crate::ledger::PruneReport) -> String {
    let c = &p.counts;
    let mut out = String::new();
    let verb = if p.dry_run { "would remove" } else { "removed" };
    let _ = writeln!(
        out,
        "prune of refunds finalized before {}: {verb} {}, {}, {}, {}, {}",
        format_ts(p.finalized_before),
        count(c.refunds, "refund", "refunds"),
        count(c.attempts, "attempt", "attempts"),
        count(c.notifications, "notification", "notifications"),
        count(c.discrepancies, "discrepancy", "discrepancies"),
        count(c.sweeps, "sweep", "sweeps")
    );
    if c.kept_unresolved > 0 {
        let _ = writeln!(
            out,
            "kept {} with unresolved discrepancies",
            count(c.kept_unresolved, "old final refund", "old final refunds")
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
    fn counts_take_the_singular_for_one_and_group_thousands() {
        assert_eq!(count(1u64, "refund", "refunds"), "1 refund");
        assert_eq!(count(0u64, "refund", "refunds"), "0 refunds");
        assert_eq!(count(2345u64, "refund", "refunds"), "2,345 refunds");
        assert_eq!(are(1, "discrepancy", "discrepancies"), "1 discrepancy is");
        assert_eq!(
            are(3, "discrepancy", "discrepancies"),
            "3 discrepancies are"
        );
        for (n, want) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1234567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), want);
        }
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let head = [
            ("A", Align::Left),
            ("NUM", Align::Right),
            ("LAST", Align::Left),
        ];
        let rows = vec![
            vec!["long-value".to_owned(), "1".to_owned(), String::new()],
            vec!["x".to_owned(), "12345".to_owned(), "end".to_owned()],
        ];
        assert_eq!(
            columns(&head, &rows),
            "A            NUM LAST\nlong-value     1\nx          12345 end\n"
        );
    }

    #[test]
    fn an_extent_counts_the_total_only_when_the_limit_was_reached() {
        let never = || -> Result<u64, crate::ledger::LedgerError> { panic!("not asked") };
        let e = Extent::new(2, 0, 3, never).unwrap();
        assert_eq!((e.total, e.truncated), (2, false));
        assert_eq!(e.footer("refund", "refunds"), "(2 refunds)\n");
        let e = Extent::new(3, 0, 3, || Ok(3)).unwrap();
        assert!(!e.truncated);
        let e = Extent::new(99, 1, 100, || Ok(2345)).unwrap();
        assert_eq!((e.shown, e.total, e.truncated), (99, 2345, true));
        assert_eq!(
            e.footer("refund", "refunds"),
            "(99 of 2,345 refunds shown; --limit N to see more)\n"
        );
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
                 1 refund has a created_at that is not a time: nothing reconciles them",
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
            (
                Finding::DeadWebhooks { count: 1 },
                "1 webhook event is dead: retried past webhook.give_up_after",
            ),
        ];
        for (finding, start) in cases {
            let text = finding_message(&finding);
            assert!(text.starts_with(start), "{text}");
            assert!(!text.chars().any(is_unsafe_char), "{text}");
        }
    }
}
