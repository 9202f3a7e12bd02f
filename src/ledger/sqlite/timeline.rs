//! `explain`: one refund's history as typed events in time order. The ledger reads the rows and
//! orders the events; the words are the CLI's (`report.rs`).

use super::SqliteLedger;
use super::error::LedgerError;
use super::read::{
    attempts_of, discrepancies_of, notifications_of, operator_actions_of, refund_of,
};
use super::types::RefundRow;
use crate::domain::{OutRefundNo, RefundStatus, Timestamp};
use crate::ledger::{Happened, Timeline, TimelineEvent};

impl SqliteLedger {
    /// One refund's history in time order: creation, every query with its outcome and
    /// latency, every decision, notification, discrepancy, flag, operator action and the final
    /// outcome (or, while pending, the next query). `None` when the ledger has no such refund.
    pub fn timeline(&self, out_refund_no: &OutRefundNo) -> Result<Option<Timeline>, LedgerError> {
        let no = out_refund_no.as_str();
        self.read("explain refund", |tx| {
            let Some(refund) = refund_of(tx, no)? else {
                return Ok(None);
            };
            let mut events = refund_events(&refund);
            for attempt in attempts_of(tx, no)? {
                let at = attempt.attempted_at;
                if let Some(decision) = attempt.decision.clone() {
                    let attempt_id = attempt.id;
                    events.push(event(
                        at,
                        Happened::Decided {
                            attempt_id,
                            decision,
                        },
                    ));
                }
                events.push(event(at, Happened::Queried(attempt)));
            }
            for n in notifications_of(tx, no)? {
                events.push(event(n.received_at, Happened::Notified(n)));
            }
            for d in discrepancies_of(tx, no)? {
                if let Some(resolved_at) = d.resolved_at {
                    events.push(event(resolved_at, Happened::DiscrepancyResolved(d.clone())));
                }
                events.push(event(d.detected_at, Happened::DiscrepancyDetected(d)));
            }
            for action in operator_actions_of(tx, no)? {
                events.push(event(action.at, Happened::OperatorActed(action)));
            }
            events.sort();
            Ok(Some(Timeline { refund, events }))
        })
    }
}

pub(in crate::ledger) fn event(at: Timestamp, what: Happened) -> TimelineEvent {
    TimelineEvent { at, what }
}

/// The events the refund row itself records: its creation, its flag, its final status or,
/// while pending, its next query.
pub(in crate::ledger) fn refund_events(refund: &RefundRow) -> Vec<TimelineEvent> {
    let mut events = vec![event(
        refund.created_at,
        Happened::Created {
            amount: refund.amount,
            currency: refund.currency,
            refund_trade_no: refund.refund_trade_no.clone(),
        },
    )];
    if let (Some(at), Some(reason)) = (refund.flagged_at, refund.review_reason) {
        events.push(event(at, Happened::Flagged(reason)));
    }
    if let (Some(at), Some(source)) = (refund.finalized_at, refund.final_source) {
        let status = refund.status;
        events.push(event(at, Happened::Finalized { status, source }));
    }
    if refund.status == RefundStatus::Pending {
        let at = refund.next_query_at.unwrap_or(refund.created_at);
        let scheduled = refund.next_query_at.is_some();
        events.push(event(at, Happened::NextQueryDue { scheduled }));
    }
    events
}
