//! The webhook outbox's typed values: an event's delivery state, the rows `webhooks` lists,
//! what the deliverer is handed and what it reports back. The SQL is the engines' (SQLite:
//! `sqlite/webhooks.rs`).

use std::fmt;
use std::str::FromStr;

use super::types::ts_text;

use serde::Serialize;

use crate::domain::{OutRefundNo, Timestamp};

/// Where an event's delivery stands (`webhook_events.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Waiting to be sent (or retried).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Retried past `webhook.give_up_after`; only `webhooks redeliver` sends it again.
    Dead,
}

impl WebhookState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Delivered, Self::Dead];

    /// The spelling stored in `webhook_events.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
}

impl fmt::Display for WebhookState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WebhookState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown webhook state {s:?}"))
    }
}

/// One `webhook_events` row, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookEventRow {
    /// The row id (delivery order within a refund).
    pub id: i64,
    /// The id receivers deduplicate on (`evt_…`).
    pub event_id: String,
    /// `refund.finalized`, `refund.flagged` or `discrepancy.recorded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The refund concerned.
    pub out_refund_no: String,
    /// When the change happened.
    #[serde(serialize_with = "ser_ts")]
    pub created_at: Timestamp,
    /// The event's `data` object.
    pub data: serde_json::Value,
    /// Delivery state.
    pub state: WebhookState,
    /// Delivery attempts made.
    pub attempts: u64,
    /// When a pending event may be sent next.
    #[serde(serialize_with = "ser_ts")]
    pub next_attempt_at: Timestamp,
    /// Why the latest attempt failed.
    pub last_error: Option<String>,
    /// When a 2xx answer was received.
    #[serde(serialize_with = "ser_ts_opt")]
    pub delivered_at: Option<Timestamp>,
}

fn ser_ts<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts_text(*t))
}

fn ser_ts_opt<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&ts_text(*t)),
        None => s.serialize_none(),
    }
}

/// One event due for delivery: what the delivery task sends and needs to record the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueWebhook {
    /// The row id.
    pub id: i64,
    /// The id sent in the `Checus-Reconciler-Event-Id` header.
    pub event_id: String,
    /// The refund (for logs).
    pub out_refund_no: String,
    /// Attempts made before this one.
    pub attempts: u64,
    /// When the first attempt was made (`None`: this is the first).
    pub first_attempt_at: Option<Timestamp>,
    /// The JSON body, built by the ledger from the stored event, so every attempt sends the
    /// same bytes: `{"id","type","created_at","data"}`.
    pub body: String,
}

/// What one delivery attempt came to, for [`super::Outbox::record_webhook_results`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx answer.
    Delivered,
    /// Failed; try again at this time.
    Retry {
        /// Why (HTTP status or transport error).
        error: String,
        /// The next attempt's time.
        at: Timestamp,
    },
    /// Failed, and the retry window is over.
    Dead {
        /// Why the last attempt failed.
        error: String,
    },
}

/// One attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    /// The event's row id.
    pub id: i64,
    /// When the attempt was made.
    pub attempted_at: Timestamp,
    /// What it came to.
    pub outcome: DeliveryOutcome,
}

/// Which events `webhooks` lists (combined with AND), the latest first up to `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookFilter {
    /// Only events in this state.
    pub state: Option<WebhookState>,
    /// Only events about this refund.
    pub refund: Option<OutRefundNo>,
    /// At most this many.
    pub limit: usize,
}
