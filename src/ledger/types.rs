//! What goes into the ledger and what comes out: input records, the typed rows of every table
//! (their JSON is what `--json` prints), the enums stored as TEXT with their spellings, and the
//! strict text-to-type parsing that turns a bad stored value into [`LedgerError::CorruptRow`]
//! instead of a panic or a guess. (The attempt the worker records is the domain's
//! [`crate::domain::QueryReport`].)

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;

use super::error::LedgerError;
use crate::domain::{
    Change, Currency, Decision, DiscrepancyKind, FinalSource, FinalStatus, Halt, HaltCode,
    NodeName, OutRefundNo, OutcomeClass, RefundStatus, ReviewReason, Timestamp, format_ts,
    parse_ts,
};

/// Longest error text stored per attempt; longer text is cut at a character boundary.
pub const MAX_ERROR_CHARS: usize = 2000;

/// A verified refund result notification, as the merchant's app would insert it. Used by
/// tests and the demo to play the merchant's app; the app itself uses the contract SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// `data.outRefundNo`.
    pub out_refund_no: OutRefundNo,
    /// `data.status`: notifications carry final statuses only.
    pub status: FinalStatus,
    /// `data.refundTradeNo`.
    pub refund_trade_no: Option<String>,
    /// `data.refundAmount`, exact.
    pub amount: Decimal,
    /// `data.refundCurrency`.
    pub currency: Currency,
    /// `data.refundFinishTime`.
    pub refund_finish_time: Option<Timestamp>,
    /// `notifyTime`.
    pub notify_time: Timestamp,
}

/// What [`super::WorkQueue::record_attempt`] did to the refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The pending refund took this final status (source `query`).
    Finalized(FinalStatus),
    /// Still pending; next query at `next_query_at`. `flagged` is the reason when this
    /// attempt newly flagged the refund for review.
    Rescheduled {
        /// When the refund is due again.
        next_query_at: Timestamp,
        /// Set when this attempt flagged the refund (it was not flagged before).
        flagged: Option<ReviewReason>,
    },
    /// Another writer (a notification) had already recorded this final status; only the
    /// attempt was logged.
    AlreadyFinal(FinalStatus),
    /// The refund is final with another status: a `conflicting_final` discrepancy was
    /// recorded and nothing changed.
    Conflict {
        /// What the ledger holds.
        recorded: FinalStatus,
        /// What the gateway answered.
        observed: FinalStatus,
    },
    /// The answer contradicted the ledger: discrepancies recorded, refund rescheduled.
    Mismatch {
        /// Set when this attempt flagged the refund (it was not flagged before).
        flagged: Option<ReviewReason>,
    },
}

/// Counts a sweep reports when it finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepCounts {
    /// Refunds taken from the due list.
    pub claimed: u64,
    /// Refunds finalized by this sweep.
    pub finalized: u64,
    /// Refunds rescheduled.
    pub rescheduled: u64,
    /// Attempts that failed (transport, gateway errors, ledger errors).
    pub failed: u64,
    /// Rows skipped because they could not be read or updated (each flagged if it could be).
    pub unreadable: u64,
}

/// How a sweep ended, as [`super::WorkQueue::finish_sweep`] records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepEnd {
    /// What it did.
    pub counts: SweepCounts,
    /// The halt in force when it ended.
    pub halt: Option<Halt>,
    /// Why it failed, when it did (a ledger or disk error, not one row's).
    pub error: Option<String>,
    /// Since when the circuit breaker had querying paused when it ended (`None`: closed).
    pub breaker_open_since: Option<Timestamp>,
}

/// Filter for [`super::Reads::list`]. All conditions are combined with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<RefundStatus>,
    /// Only flagged (`Some(true)`) or only unflagged (`Some(false)`) refunds.
    pub flagged: Option<bool>,
    /// Only refunds created at or after this instant.
    pub since: Option<Timestamp>,
    /// At most this many rows, oldest first.
    pub limit: usize,
}

impl Default for ListFilter {
    fn default() -> Self {
        Self {
            status: None,
            flagged: None,
            since: None,
            limit: 100,
        }
    }
}

/// Who reported a discrepancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscrepancySource {
    /// A verified `/refundQuery` answer.
    Query,
    /// A verified notification (via the merchant's app).
    Notification,
    /// An operator.
    Operator,
}

/// What kind of disagreement a discrepancy row records: the domain's kinds plus
/// `unknown_refund`, which only the notification path produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordedKind {
    /// One of the kinds `decide` reports.
    Domain(DiscrepancyKind),
    /// A notification about a refund the ledger does not have.
    UnknownRefund,
}

/// What the notification trigger did with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationEffect {
    /// The pending refund took the notified final status.
    Finalized,
    /// The refund already had this final status; only `notified_at` was filled.
    AlreadyFinal,
    /// The refund has the other final status: discrepancy recorded, nothing changed.
    ConflictingFinal,
    /// Amount or currency differ from the ledger: discrepancy recorded, not applied.
    Mismatch,
    /// The ledger has no such refund: discrepancy recorded.
    UnknownRefund,
}

/// What an operator did, as stored in `operator_actions.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorAction {
    /// `resolve`: recorded a final status for a pending refund.
    Resolve,
    /// `retry-now`: made a pending refund due now and restarted its backoff.
    RetryNow,
    /// `resolve-discrepancy`: marked a discrepancy resolved.
    ResolveDiscrepancy,
    /// `prune`: removed old final refunds (the row names no refund).
    Prune,
    /// `clear-flag`: acknowledged a refund's review flag (pending or final) and cleared it.
    ClearFlag,
    /// `resume`: asked a daemon halted on a configuration error or clock skew to probe now
    /// (the row names no refund).
    Resume,
    /// `webhooks redeliver`: put a delivered or dead webhook event back to pending.
    RedeliverWebhook,
}

/// `Display` and `FromStr` from an enum's `ALL` list and `as_str`, so the spelling lives in
/// one exhaustive `match`.
macro_rules! ledger_text {
    ($ty:ty, $field:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = crate::domain::InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        crate::domain::InvalidValue::new($field, format!("unknown value {s:?}"))
                    })
            }
        }
    };
}

impl DiscrepancySource {
    /// Every source.
    pub const ALL: [Self; 3] = [Self::Query, Self::Notification, Self::Operator];

    /// The spelling stored in `discrepancies.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Notification => "notification",
            Self::Operator => "operator",
        }
    }
}
ledger_text!(DiscrepancySource, "source");

impl RecordedKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Domain(DiscrepancyKind::ConflictingFinal),
        Self::Domain(DiscrepancyKind::RefundNoMismatch),
        Self::Domain(DiscrepancyKind::AmountMismatch),
        Self::Domain(DiscrepancyKind::CurrencyMismatch),
        Self::UnknownRefund,
    ];

    /// The spelling stored in `discrepancies.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Domain(kind) => kind.as_str(),
            Self::UnknownRefund => "unknown_refund",
        }
    }
}
ledger_text!(RecordedKind, "kind");

impl NotificationEffect {
    /// Every effect.
    pub const ALL: [Self; 5] = [
        Self::Finalized,
        Self::AlreadyFinal,
        Self::ConflictingFinal,
        Self::Mismatch,
        Self::UnknownRefund,
    ];

    /// The spelling stored in `notifications.effect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finalized => "finalized",
            Self::AlreadyFinal => "already_final",
            Self::ConflictingFinal => "conflicting_final",
            Self::Mismatch => "mismatch",
            Self::UnknownRefund => "unknown_refund",
        }
    }
}
ledger_text!(NotificationEffect, "effect");

impl OperatorAction {
    /// Every action.
    pub const ALL: [Self; 7] = [
        Self::Resolve,
        Self::RetryNow,
        Self::ResolveDiscrepancy,
        Self::Prune,
        Self::ClearFlag,
        Self::Resume,
        Self::RedeliverWebhook,
    ];

    /// The spelling stored in `operator_actions.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::RetryNow => "retry_now",
            Self::ResolveDiscrepancy => "resolve_discrepancy",
            Self::Prune => "prune",
            Self::ClearFlag => "clear_flag",
            Self::Resume => "resume",
            Self::RedeliverWebhook => "redeliver_webhook",
        }
    }
}
ledger_text!(OperatorAction, "action");

/// One `refunds` row, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundRow {
    /// The merchant's refund number.
    #[serde(serialize_with = "ser::display")]
    pub out_refund_no: OutRefundNo,
    /// The gateway's refund number, once known.
    pub refund_trade_no: Option<String>,
    /// The original payment's merchant order number.
    pub out_trade_no: Option<String>,
    /// Exact amount, serialized as a decimal string.
    #[serde(serialize_with = "ser::display")]
    pub amount: Decimal,
    /// ISO 4217 code of `amount`.
    #[serde(serialize_with = "ser::display")]
    pub currency: Currency,
    /// `REFUND_PENDING` until a final status is recorded; final never changes.
    #[serde(serialize_with = "ser::display")]
    pub status: RefundStatus,
    /// When the refund was issued.
    #[serde(serialize_with = "ser::ts")]
    pub created_at: Timestamp,
    /// When the first agreeing notification arrived.
    #[serde(serialize_with = "ser::opt_ts")]
    pub notified_at: Option<Timestamp>,
    /// When the final status was recorded.
    #[serde(serialize_with = "ser::opt_ts")]
    pub finalized_at: Option<Timestamp>,
    /// Who reported the final status.
    #[serde(serialize_with = "ser::opt_display")]
    pub final_source: Option<FinalSource>,
    /// The gateway's `refundFinishTime`.
    #[serde(serialize_with = "ser::opt_ts")]
    pub refund_finish_time: Option<Timestamp>,
    /// Next query time (`None`: not scheduled yet, or final).
    #[serde(serialize_with = "ser::opt_ts")]
    pub next_query_at: Option<Timestamp>,
    /// Attempts that count toward the backoff schedule (`retry-now` resets it; the attempt
    /// log keeps every attempt).
    pub attempts: u32,
    /// Since when the gateway has not known the refund.
    #[serde(serialize_with = "ser::opt_ts")]
    pub unknown_since: Option<Timestamp>,
    /// When the latest attempt was made.
    #[serde(serialize_with = "ser::opt_ts")]
    pub last_attempt_at: Option<Timestamp>,
    /// The latest attempt's outcome class.
    #[serde(serialize_with = "ser::opt_display")]
    pub last_outcome: Option<OutcomeClass>,
    /// The latest attempt's error text, when it was not a verified answer.
    pub last_error: Option<String>,
    /// True while a person should look at it (see `review_reason`).
    pub review_flag: bool,
    /// Why it is flagged.
    #[serde(serialize_with = "ser::opt_display")]
    pub review_reason: Option<ReviewReason>,
    /// Since when it is flagged.
    #[serde(serialize_with = "ser::opt_ts")]
    pub flagged_at: Option<Timestamp>,
}

/// One `attempts` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// Row id, increasing in attempt order.
    pub id: i64,
    /// The refund queried.
    #[serde(serialize_with = "ser::display")]
    pub out_refund_no: OutRefundNo,
    /// When the query was sent (its `requestTime`).
    #[serde(serialize_with = "ser::ts")]
    pub attempted_at: Timestamp,
    /// The decision's outcome class (`mismatch` where a verified answer contradicted the
    /// ledger).
    #[serde(serialize_with = "ser::display")]
    pub outcome: OutcomeClass,
    /// The answer's HTTP status (`None`: no answer arrived).
    pub http_status: Option<u16>,
    /// The answer body's `code`, if it had one.
    pub gateway_code: Option<String>,
    /// A verified answer's `data.status` text.
    pub data_status: Option<String>,
    /// Time on the wire in milliseconds.
    pub latency_ms: u64,
    /// What went wrong, when the outcome was not a verified answer (at most
    /// [`MAX_ERROR_CHARS`] characters).
    pub error: Option<String>,
    /// What the daemon decided from this attempt (`attempts.decision`).
    pub decision: Option<String>,
    /// The sweep that made it (`sweeps.id`, the `sweep` field of the daemon's log lines);
    /// `None` for an attempt of `query`, or one recorded before schema version 6.
    pub sweep_id: Option<i64>,
    /// The node that made it (`attempts.node`); `None` for one recorded before schema
    /// version 10.
    pub node: Option<String>,
}

/// One `discrepancies` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscrepancyRow {
    /// Row id, the number `resolve-discrepancy` takes.
    pub id: i64,
    /// The refund concerned (possibly one the ledger does not have).
    #[serde(serialize_with = "ser::display")]
    pub out_refund_no: OutRefundNo,
    /// When it was detected.
    #[serde(serialize_with = "ser::ts")]
    pub detected_at: Timestamp,
    /// Who disagreed with the ledger.
    #[serde(serialize_with = "ser::display")]
    pub source: DiscrepancySource,
    /// What kind of disagreement.
    #[serde(serialize_with = "ser::display")]
    pub kind: RecordedKind,
    /// The ledger's value, as text.
    pub expected: Option<String>,
    /// The source's value, as text.
    pub observed: Option<String>,
    /// When an operator resolved it (`None`: still open).
    #[serde(serialize_with = "ser::opt_ts")]
    pub resolved_at: Option<Timestamp>,
    /// The operator who resolved it.
    pub resolved_by: Option<String>,
    /// The operator's words on how it was resolved.
    pub resolution: Option<String>,
}

/// One `notifications` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRow {
    /// Row id, increasing in arrival order.
    pub id: i64,
    /// `data.outRefundNo`.
    #[serde(serialize_with = "ser::display")]
    pub out_refund_no: OutRefundNo,
    /// `data.status`.
    #[serde(serialize_with = "ser::display")]
    pub status: FinalStatus,
    /// `data.refundTradeNo`.
    pub refund_trade_no: Option<String>,
    /// `data.refundAmount`, exact.
    #[serde(serialize_with = "ser::display")]
    pub amount: Decimal,
    /// `data.refundCurrency`.
    #[serde(serialize_with = "ser::display")]
    pub currency: Currency,
    /// `data.refundFinishTime`.
    #[serde(serialize_with = "ser::opt_ts")]
    pub refund_finish_time: Option<Timestamp>,
    /// `notifyTime`.
    #[serde(serialize_with = "ser::ts")]
    pub notify_time: Timestamp,
    /// When the merchant's app stored it.
    #[serde(serialize_with = "ser::ts")]
    pub received_at: Timestamp,
    /// What the ledger did with it (`None` only if written by a pre-trigger tool).
    #[serde(serialize_with = "ser::opt_display")]
    pub effect: Option<NotificationEffect>,
}

/// One `sweeps` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepRow {
    /// Sweep id, increasing in start order.
    pub id: i64,
    /// When it started.
    #[serde(serialize_with = "ser::ts")]
    pub started_at: Timestamp,
    /// When it finished (`None`: running, or the process died).
    #[serde(serialize_with = "ser::opt_ts")]
    pub finished_at: Option<Timestamp>,
    /// What it claimed, finalized, rescheduled and failed.
    pub counts: SweepCounts,
    /// Why it stopped early, in words for people, if it did.
    pub halted_reason: Option<String>,
    /// The halt in force when it ended (`None`: none). Not in the JSON, whose shape
    /// `status --json` keeps; `status` reports it as a finding.
    #[serde(skip)]
    pub halt_code: Option<HaltCode>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Since when the circuit breaker had querying paused when it ended (`None`: closed).
    #[serde(serialize_with = "ser::opt_ts")]
    pub breaker_open_since: Option<Timestamp>,
}

/// A daemon's start, as its `nodes` row records it (upserted: a restart replaces the last
/// start and clears `stopped_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStart {
    /// The node's name (`worker.node_name`).
    pub name: NodeName,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The daemon's version.
    pub version: String,
    /// When it started (also its first heartbeat).
    pub at: Timestamp,
}

/// One `nodes` row: a daemon node as its last start, heartbeat and stop left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// The node's name.
    pub name: String,
    /// The host it last ran on.
    pub host: String,
    /// Its process id at its last start.
    pub pid: i64,
    /// The daemon's version at its last start.
    pub version: String,
    /// Its last start.
    #[serde(serialize_with = "ser::ts")]
    pub started_at: Timestamp,
    /// Its last heartbeat.
    #[serde(serialize_with = "ser::ts")]
    pub heartbeat_at: Timestamp,
    /// Its clean stop (`None`: running, or killed).
    #[serde(serialize_with = "ser::opt_ts")]
    pub stopped_at: Option<Timestamp>,
}

/// One `operator_actions` row: the audit of an operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorActionRow {
    /// Row id, increasing in action order.
    pub id: i64,
    /// When the operator acted.
    pub at: Timestamp,
    /// The operator's name (`--by`, else the login name).
    pub actor: String,
    /// What the operator did.
    pub action: OperatorAction,
    /// The refund concerned (`None` for a prune).
    pub out_refund_no: Option<OutRefundNo>,
    /// `resolve`: the final status the operator decided.
    pub to_status: Option<FinalStatus>,
    /// Why, in the operator's words (required for all but `retry-now`).
    pub reason: Option<String>,
    /// The values the action replaced, as JSON text.
    pub detail: Option<String>,
}

/// A refund with its whole history, for `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundDetail {
    /// The refund as it is now.
    pub refund: RefundRow,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// Its discrepancies, oldest first.
    pub discrepancies: Vec<DiscrepancyRow>,
    /// Notifications about it, oldest first.
    pub notifications: Vec<NotificationRow>,
}

/// A row a lenient read could not read or parse: which one, and why. Reads that list rows
/// (`list`, `export`, the worker's due list, ...) skip it and return it here, so one bad row
/// never fails a whole read. Its text holds stored values as they are: escape it for a
/// terminal (`report::escape`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadableRow {
    /// The table.
    pub table: &'static str,
    /// Its row id.
    pub id: i64,
    /// Its refund number as stored (lossy text), when the row has one.
    pub out_refund_no: Option<String>,
    /// What is wrong with it (the column and the value's problem).
    pub detail: String,
}

impl std::fmt::Display for UnreadableRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}", self.table, self.id)?;
        if let Some(no) = &self.out_refund_no {
            write!(f, " ({no})")?;
        }
        write!(f, " cannot be read: {}", self.detail)
    }
}

/// What a lenient read found: the rows it could read, in order, and those it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readout<T> {
    /// The rows read.
    pub rows: Vec<T>,
    /// The rows skipped because they could not be read.
    pub unreadable: Vec<UnreadableRow>,
}

impl<T> Readout<T> {
    /// Splits per-row results into the rows read and those skipped.
    pub(super) fn of(results: Vec<Result<T, UnreadableRow>>) -> Self {
        let mut out = Self {
            rows: Vec::with_capacity(results.len()),
            unreadable: Vec::new(),
        };
        for result in results {
            match result {
                Ok(row) => out.rows.push(row),
                Err(bad) => out.unreadable.push(bad),
            }
        }
        out
    }

    /// The same rows, each mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Readout<U> {
        Readout {
            rows: self.rows.into_iter().map(f).collect(),
            unreadable: self.unreadable,
        }
    }
}

/// Rows the worker skips without the ledger's help: rows it could neither use nor flag (so
/// the due query does not leave them out). Kept by the worker, passed to the reads that must
/// not count them ([`super::WorkQueue::next_due_at`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipList {
    /// Rows by id (unreadable rows: their refund number may not read).
    pub ids: std::collections::HashSet<i64>,
    /// Rows by refund number (rows whose update the ledger refused).
    pub refund_nos: std::collections::HashSet<String>,
}

impl SkipList {
    /// Whether the row `id` with refund number `no` is skipped.
    pub fn contains(&self, id: i64, no: &str) -> bool {
        self.ids.contains(&id) || self.refund_nos.contains(no)
    }

    /// How many rows are skipped.
    pub fn len(&self) -> usize {
        self.ids.len() + self.refund_nos.len()
    }

    /// True when no row is skipped.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.refund_nos.is_empty()
    }
}

/// A discrepancy as the daemon logs it, read as stored text (never parsed), so any row can be
/// logged and passed: `id` is the log's watermark, and the rest are the line's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDiscrepancy {
    /// `discrepancies.id` (never reused: AUTOINCREMENT).
    pub id: i64,
    /// The refund concerned, possibly one the ledger does not have.
    pub out_refund_no: String,
    /// Who disagreed with the ledger: `query`, `notification` or `operator`.
    pub source: String,
    /// What kind of disagreement (`conflicting_final`, `amount_mismatch`, ...).
    pub kind: String,
    /// The ledger's value, as text.
    pub expected: Option<String>,
    /// The source's value, as text.
    pub observed: Option<String>,
}

/// How far the log of refunds finalized elsewhere has got: the `(finalized_at, id)` of the
/// last row it passed, as stored, so even a row whose time does not parse can be passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub(super) finalized_at: String,
    pub(super) id: i64,
}

/// The ledger at a glance, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusSummary {
    /// Refunds still `REFUND_PENDING`.
    pub pending: u64,
    /// Refunds `REFUND_SUCCESS`.
    pub succeeded: u64,
    /// Refunds `REFUND_FAILED`.
    pub failed: u64,
    /// Pending refunds due at the `now` given.
    pub due_now: u64,
    /// Pending refunds not scheduled yet.
    pub unscheduled: u64,
    /// Refunds flagged for review: pending ones, and final ones whose answer lost a value
    /// (`answer_unrecordable`) or whose row could not be read, until an operator clears them.
    pub flagged: u64,
    /// Creation time of the oldest pending refund.
    #[serde(serialize_with = "ser::opt_ts")]
    pub oldest_pending_created_at: Option<Timestamp>,
    /// Discrepancies nobody has resolved yet (including unknown refunds).
    pub unresolved_discrepancies: u64,
    /// The latest sweep (`None`: the worker never swept this ledger, or its row is in
    /// `unreadable`).
    pub last_sweep: Option<SweepRow>,
    /// Rows `status` needed but could not read (the oldest pending refund, the latest sweep).
    pub unreadable: Vec<UnreadableRow>,
}

/// Serde helpers: domain values serialize as their ledger text, never as floats or as
/// chrono's own format.
pub(super) mod ser {
    use std::fmt::Display;

    use serde::Serializer;

    use crate::domain::{Timestamp, format_ts};

    pub fn display<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn opt_display<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn ts<S: Serializer>(v: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ts(*v))
    }

    pub fn opt_ts<S: Serializer>(v: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format_ts(*v)),
            None => s.serialize_none(),
        }
    }
}

/// Parses stored text, naming the refund and column when it does not parse.
pub(crate) struct Cell<'a> {
    /// The refund number as stored, for the error.
    pub out_refund_no: &'a str,
}

impl Cell<'_> {
    fn corrupt(&self, column: &'static str, detail: String) -> LedgerError {
        LedgerError::CorruptRow {
            out_refund_no: self.out_refund_no.to_owned(),
            column,
            detail,
        }
    }

    /// Any `FromStr` value.
    pub fn parse<T>(&self, column: &'static str, text: &str) -> Result<T, LedgerError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        text.parse()
            .map_err(|e| self.corrupt(column, format!("{text:?}: {e}")))
    }

    /// An optional `FromStr` value.
    pub fn parse_opt<T>(
        &self,
        column: &'static str,
        text: Option<&str>,
    ) -> Result<Option<T>, LedgerError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        text.map(|t| self.parse(column, t)).transpose()
    }

    /// A ledger timestamp.
    pub fn ts(&self, column: &'static str, text: &str) -> Result<Timestamp, LedgerError> {
        parse_ts(text).map_err(|e| self.corrupt(column, format!("{text:?}: {e}")))
    }

    /// An optional ledger timestamp.
    pub fn ts_opt(
        &self,
        column: &'static str,
        text: Option<&str>,
    ) -> Result<Option<Timestamp>, LedgerError> {
        text.map(|t| self.ts(column, t)).transpose()
    }

    /// An exact amount: plain decimal text only.
    pub fn amount(&self, column: &'static str, text: &str) -> Result<Decimal, LedgerError> {
        Decimal::from_str_exact(text).map_err(|e| self.corrupt(column, format!("{text:?}: {e}")))
    }

    /// An integer column that must fit `T`.
    pub fn int<T: TryFrom<i64>>(&self, column: &'static str, v: i64) -> Result<T, LedgerError> {
        T::try_from(v).map_err(|_| self.corrupt(column, format!("{v} is out of range")))
    }

    /// A review reason.
    pub fn reason(&self, text: Option<&str>) -> Result<Option<ReviewReason>, LedgerError> {
        text.map(|t| {
            REVIEW_REASONS
                .into_iter()
                .find(|r| r.as_str() == t)
                .ok_or_else(|| self.corrupt("review_reason", format!("unknown reason {t:?}")))
        })
        .transpose()
    }

    /// An outcome class.
    pub fn outcome(&self, column: &'static str, text: &str) -> Result<OutcomeClass, LedgerError> {
        OutcomeClass::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| self.corrupt(column, format!("unknown outcome {text:?}")))
    }
}

/// Every review reason (the domain has no list of them).
pub(crate) const REVIEW_REASONS: [ReviewReason; 7] = [
    ReviewReason::PendingTooLong,
    ReviewReason::UnknownTooLong,
    ReviewReason::AnswerMismatch,
    ReviewReason::AnswerUnrecordable,
    ReviewReason::RowUnreadable,
    ReviewReason::RowUnwritable,
    ReviewReason::GatewayRejectedRequest,
];

/// Formats an instant for a bound parameter.
pub(crate) fn ts_text(t: Timestamp) -> String {
    format_ts(t)
}

/// A row limit as a bound parameter (`usize::MAX` means no limit).
pub(crate) fn limit_arg(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A `count(*)` as a count (SQLite never returns a negative one).
pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The text stored in `attempts.decision`: what the daemon decided from one attempt.
pub(crate) fn decision_text(d: &Decision) -> String {
    match &d.change {
        Change::Finalize {
            status, flag: None, ..
        } => format!("finalize {status}"),
        Change::Finalize {
            status,
            flag: Some(reason),
            ..
        } => format!("finalize {status}; flag {}", reason.as_str()),
        Change::Keep {
            confirm_again_at: None,
        } => "keep (already final)".to_owned(),
        Change::Keep {
            confirm_again_at: Some(t),
        } => format!("keep (already final); confirm again at {}", format_ts(*t)),
        Change::Reschedule {
            next_query_at,
            flag,
            ..
        } => {
            let mut text = format!("reschedule {}", ts_text(*next_query_at));
            if let Some(reason) = flag {
                text.push_str(&format!("; flag {}", reason.as_str()));
            }
            text
        }
    }
}

/// Cuts `text` to at most [`MAX_ERROR_CHARS`] characters.
pub(crate) fn clip_error(text: &str) -> &str {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Which operator actions `audit` lists. All conditions are combined with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only actions about this refund (a prune names no refund, so it is left out then).
    pub refund: Option<OutRefundNo>,
    /// Only actions at or after this instant.
    pub since: Option<Timestamp>,
    /// At most this many, the latest ones.
    pub limit: usize,
}

/// What `backup` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Where the copy was written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Refunds in the copy, counted after its integrity check.
    pub refunds: u64,
}

/// The ledger's gauges at one instant, read in one read transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerGauges {
    /// Refunds per status, from `refund_counts` (a status missing there counts 0).
    pub refunds: Vec<(RefundStatus, u64)>,
    /// Refunds flagged for review (pending or final), as `status` counts them.
    pub flagged: u64,
    /// Pending refunds due at the `now` given.
    pub due: u64,
    /// Creation time of the oldest pending refund (`None`: none pending, or its `created_at`
    /// is not an instant, which `status` reports as an unreadable row).
    pub oldest_pending_created_at: Option<Timestamp>,
    /// Discrepancies nobody has resolved.
    pub unresolved_discrepancies: u64,
    /// Webhook events retried past `webhook.give_up_after` (normally none).
    pub dead_webhooks: u64,
}

/// What `prune` removes (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    /// Final refunds finalized before the cutoff with no unresolved discrepancy.
    pub refunds: u64,
    /// Attempts of those refunds.
    pub attempts: u64,
    /// Notifications about those refunds.
    pub notifications: u64,
    /// Resolved discrepancies about those refunds.
    pub discrepancies: u64,
    /// Sweeps finished before the cutoff.
    pub sweeps: u64,
    /// Old final refunds kept because a discrepancy about them is unresolved.
    pub kept_unresolved: u64,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The `prunes` row id (`None` for a dry run).
    pub prune_id: Option<i64>,
    /// The cutoff: final refunds finalized before it are removed.
    #[serde(serialize_with = "ser::ts")]
    pub finalized_before: Timestamp,
    /// Rows removed (or that would be).
    pub counts: PruneCounts,
    /// The JSON-lines file the removed rows were written to first (`None`: `--no-archive`,
    /// or a dry run).
    pub archive: Option<PathBuf>,
    /// The archive's SHA-256 in hex, also recorded in the `prunes` row.
    pub archive_sha256: Option<String>,
    /// True for `--dry-run`: nothing was written.
    pub dry_run: bool,
}

/// A prune that removed a refund, or that the ledger's facts point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedRefund {
    /// The refund asked about.
    #[serde(serialize_with = "ser::display")]
    pub out_refund_no: OutRefundNo,
    /// The `prunes` row id.
    pub prune_id: i64,
    /// When that prune ran.
    #[serde(serialize_with = "ser::ts")]
    pub pruned_at: Timestamp,
    /// Its cutoff: it removed final refunds finalized before this.
    #[serde(serialize_with = "ser::ts")]
    pub finalized_before: Timestamp,
    /// Who ran it.
    pub actor: String,
    /// The archive that holds the refund's rows, when one does.
    pub archive: Option<PathBuf>,
    /// The line of the refund's row in that archive (1-based).
    pub archive_line: Option<u64>,
}

/// A recorded resume request: its audit row, and the newest sweep when it was recorded, so
/// the command knows which sweep came after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The `operator_actions` row.
    pub action_id: i64,
    /// The newest `sweeps` id when the request committed (0: none yet). Every sweep with a
    /// greater id started after the request was visible to the daemon.
    pub after_sweep: i64,
}

/// A resume request as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeAction {
    /// The `operator_actions` row.
    pub id: i64,
    /// Who asked.
    pub actor: String,
}

/// One discrepancy as `discrepancies` lists it, with its resolution (when, by whom, why) once
/// an operator resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenDiscrepancy {
    /// Its id, the number `resolve-discrepancy` takes.
    pub id: i64,
    /// The refund concerned (possibly one the ledger does not have).
    #[serde(serialize_with = "ser::display")]
    pub out_refund_no: OutRefundNo,
    /// When it was detected.
    #[serde(serialize_with = "ser::ts")]
    pub detected_at: Timestamp,
    /// Who disagreed with the ledger.
    #[serde(serialize_with = "ser::display")]
    pub source: DiscrepancySource,
    /// What kind of disagreement.
    #[serde(serialize_with = "ser::display")]
    pub kind: RecordedKind,
    /// The ledger's value, as text.
    pub expected: Option<String>,
    /// The source's value, as text.
    pub observed: Option<String>,
    /// When it was resolved (`None`: still open).
    #[serde(serialize_with = "ser::opt_ts")]
    pub resolved_at: Option<Timestamp>,
    /// The operator who resolved it (`None`: still open).
    pub resolved_by: Option<String>,
    /// Why, in that operator's words (`resolve-discrepancy --reason`).
    pub resolution: Option<String>,
}

impl From<DiscrepancyRow> for OpenDiscrepancy {
    fn from(d: DiscrepancyRow) -> Self {
        Self {
            id: d.id,
            out_refund_no: d.out_refund_no,
            detected_at: d.detected_at,
            source: d.source,
            kind: d.kind,
            expected: d.expected,
            observed: d.observed,
            resolved_at: d.resolved_at,
            resolved_by: d.resolved_by,
            resolution: d.resolution,
        }
    }
}

/// What [`super::Intake::register_refund`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The refund was inserted: its row as stored.
    Created(Box<super::RefundRow>),
    /// The refund number was already in the ledger: its row as it is now (nothing written).
    Existing(Box<super::RefundRow>),
    /// The refund number was used by a refund that `prune` has since removed (nothing
    /// written; the trigger that keeps pruned numbers from coming back refused it).
    Pruned,
}

/// `import` reports progress after every this many rows.
pub const IMPORT_PROGRESS_EVERY: usize = 10_000;
