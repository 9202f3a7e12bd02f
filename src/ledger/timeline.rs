//! `explain`'s typed events: a refund and its history in time order, as every engine reads it
//! (the SQLite engine builds it in `sqlite/timeline.rs`); `crate::report` words it.

use std::cmp::Ordering;

use rust_decimal::Decimal;

use super::types::{AttemptRow, DiscrepancyRow, NotificationRow, OperatorActionRow, RefundRow};
use crate::domain::{Currency, FinalSource, RefundStatus, ReviewReason, Timestamp};

/// A refund and its history in time order, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The refund as it is now.
    pub refund: RefundRow,
    /// Everything that happened to it, sorted by [`TimelineEvent`]'s `Ord`.
    pub events: Vec<TimelineEvent>,
}

/// One event in a refund's history.
///
/// Events are ordered by time, then by [`EventKind`] (the order things happen in at one
/// instant), then by the id of the row they come from. Within one refund's timeline that key
/// names exactly one event, so the order agrees with `Eq` there; events of different refunds
/// are not meant to be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEvent {
    /// When it happened (for [`Happened::NextQueryDue`]: when it will).
    pub at: Timestamp,
    /// What happened, with the facts of the row it comes from.
    pub what: Happened,
}

/// What happened to a refund, as its rows record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// The refund row was created (the refund was issued).
    Created {
        /// The refund's amount.
        amount: Decimal,
        /// Its currency.
        currency: Currency,
        /// The gateway's refund number, if known.
        refund_trade_no: Option<String>,
    },
    /// The merchant's app recorded a notification about it.
    Notified(NotificationRow),
    /// The daemon queried Checus (the attempt as logged).
    Queried(AttemptRow),
    /// The daemon decided from that query: the attempt's stored `decision` text.
    Decided {
        /// The attempt's id.
        attempt_id: i64,
        /// `attempts.decision`, as stored.
        decision: String,
    },
    /// A disagreement with the ledger was recorded.
    DiscrepancyDetected(DiscrepancyRow),
    /// The refund was flagged for review.
    Flagged(ReviewReason),
    /// An operator resolved a discrepancy (the event is at `resolved_at`).
    DiscrepancyResolved(DiscrepancyRow),
    /// An operator acted on the refund.
    OperatorActed(OperatorActionRow),
    /// Its final status was recorded.
    Finalized {
        /// The final status.
        status: RefundStatus,
        /// Who reported it.
        source: FinalSource,
    },
    /// It is still pending and its next query is due at the event's time; when `scheduled`
    /// is false the daemon has not scheduled it yet and the time is its creation.
    NextQueryDue {
        /// False while `next_query_at` is unset.
        scheduled: bool,
    },
}

/// The kinds of event. Their declaration order is the order of events at one instant (the
/// derived `Ord`): the creation, a notification, a query and then the decision taken on it, a
/// discrepancy, the flag, a resolution, an operator's action, the final status, and the next
/// query last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// [`Happened::Created`].
    Created,
    /// [`Happened::Notified`].
    Notification,
    /// [`Happened::Queried`].
    Query,
    /// [`Happened::Decided`].
    Decision,
    /// [`Happened::DiscrepancyDetected`].
    Discrepancy,
    /// [`Happened::Flagged`].
    Flagged,
    /// [`Happened::DiscrepancyResolved`].
    DiscrepancyResolved,
    /// [`Happened::OperatorActed`].
    Operator,
    /// [`Happened::Finalized`].
    Finalized,
    /// [`Happened::NextQueryDue`].
    NextQuery,
}

impl EventKind {
    /// The stable name `explain --json` prints as `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Notification => "notification",
            Self::Query => "query",
            Self::Decision => "decision",
            Self::Discrepancy => "discrepancy",
            Self::Flagged => "flagged",
            Self::DiscrepancyResolved => "discrepancy_resolved",
            Self::Operator => "operator",
            Self::Finalized => "finalized",
            Self::NextQuery => "next_query",
        }
    }
}

impl Happened {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Created { .. } => EventKind::Created,
            Self::Notified(_) => EventKind::Notification,
            Self::Queried(_) => EventKind::Query,
            Self::Decided { .. } => EventKind::Decision,
            Self::DiscrepancyDetected(_) => EventKind::Discrepancy,
            Self::Flagged(_) => EventKind::Flagged,
            Self::DiscrepancyResolved(_) => EventKind::DiscrepancyResolved,
            Self::OperatorActed(_) => EventKind::Operator,
            Self::Finalized { .. } => EventKind::Finalized,
            Self::NextQueryDue { .. } => EventKind::NextQuery,
        }
    }

    /// The id of the row it comes from (0 for the refund row's own events), which orders
    /// events of one kind at one instant the way they were written.
    fn row_id(&self) -> i64 {
        match self {
            Self::Notified(n) => n.id,
            Self::Queried(a) => a.id,
            Self::Decided { attempt_id, .. } => *attempt_id,
            Self::DiscrepancyDetected(d) | Self::DiscrepancyResolved(d) => d.id,
            Self::OperatorActed(o) => o.id,
            Self::Created { .. }
            | Self::Flagged(_)
            | Self::Finalized { .. }
            | Self::NextQueryDue { .. } => 0,
        }
    }
}

impl TimelineEvent {
    fn key(&self) -> (Timestamp, EventKind, i64) {
        (self.at, self.what.kind(), self.what.row_id())
    }
}

impl Ord for TimelineEvent {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for TimelineEvent {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
