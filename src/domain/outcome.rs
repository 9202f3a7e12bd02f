//! What one `/refundQuery` attempt told us, as a typed value. The gateway module produces it
//! from the raw HTTP exchange; `decide` consumes it.

use std::fmt;

use rust_decimal::Decimal;

use super::recordable::{Dropped, Unconfirmed};
use super::refund::{Currency, RefundStatus};
use super::time::Timestamp;

/// The refund as a verified (signature-checked) answer described it. Only `status` and (when
/// present) `out_refund_no` decide; every other value only informs, so it may be missing:
/// `unconfirmed` names what was absent or could not be read. Its informative values are the
/// ones the ledger can store ([`ObservedRefund::recordable`]); what the answer held beyond
/// them is named in `dropped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRefund {
    /// `data.outRefundNo` as answered (may differ from what we asked: a discrepancy). `None`
    /// when the answer did not name it: it must match only when present.
    pub out_refund_no: Option<String>,
    /// `data.refundTradeNo`.
    pub refund_trade_no: Option<String>,
    /// `data.refundAmount`, exact, from the raw JSON number (or decimal string) text; `None`
    /// when absent or unreadable (then it is named in `unconfirmed` and not compared).
    pub amount: Option<Decimal>,
    /// `data.refundCurrency`; `None` when absent or unreadable, like `amount`.
    pub currency: Option<Currency>,
    /// `data.status`: the only field that decides the refund's state.
    pub status: RefundStatus,
    /// `data.refundFinishTime`, absent or empty while pending.
    pub refund_finish_time: Option<Timestamp>,
    /// Informative fields the answer did not confirm: absent, or present in a form that
    /// cannot be read. Recorded in the attempt's error; never a reason to refuse the answer,
    /// never a flag.
    pub unconfirmed: Vec<Unconfirmed>,
    /// Informative values the answer held that were not kept (unreadable, or more than the
    /// ledger can store), each with its reason. Not empty: the refund is flagged
    /// `answer_unrecordable` and the attempt's error names them.
    pub dropped: Vec<Dropped>,
}

/// Why an attempt is worth retrying without spending the refund's attempt budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// Connect failure, reset, timeout, TLS error, oversized or unreadable body.
    Transport,
    /// A non-2xx HTTP status, or a redirect.
    HttpStatus,
    /// A body that is not the documented JSON shape.
    Malformed,
    /// `APPLY_SUCCESS` whose signature is missing or does not verify.
    Unverified,
    /// `SYSTEM_ERROR`
    SystemError,
    /// `REQUEST_TIMEOUT`
    RequestTimeout,
    /// `UNEXPECTED_ERROR`
    UnexpectedError,
    /// A code this build does not know. Treated as retryable and logged loudly.
    UnknownCode,
}

impl RetryReason {
    /// Stable snake_case name, used in logs and the attempt log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::HttpStatus => "http_status",
            Self::Malformed => "malformed",
            Self::Unverified => "unverified",
            Self::SystemError => "system_error",
            Self::RequestTimeout => "request_timeout",
            Self::UnexpectedError => "unexpected_error",
            Self::UnknownCode => "unknown_code",
        }
    }
}

/// The typed result of one `/refundQuery` attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Verified `APPLY_SUCCESS` with `data.status` final.
    Final(ObservedRefund),
    /// Verified `APPLY_SUCCESS` with `data.status` `REFUND_PENDING`.
    Pending(ObservedRefund),
    /// `ORDER_NOT_EXIST` or `REFUND_NO_INVALID`: the gateway does not know the refund (yet).
    Unknown {
        /// The gateway code.
        code: String,
    },
    /// Worth retrying later; says nothing about the refund.
    Retryable {
        /// Why.
        reason: RetryReason,
        /// Human detail for the attempt log (never a secret).
        detail: String,
    },
    /// `TOO_MANY_REQUEST`: slow down; says nothing about the refund.
    RateLimited,
    /// `REQ_TIME_OVER_TIME` even after one immediate retry with a fresh `requestTime`.
    ClockSkew,
    /// A code that means our configuration is wrong (`SIGN_VERIFY_FAILED`, `MERCHANT_INVALID`,
    /// `MERCHANT_APP_INVALID`, `AUTHENTICATE_FAILED`, ...). Querying stops.
    ConfigError {
        /// The gateway code.
        code: String,
    },
    /// A code that can concern this one request, and so this one refund (`PARAMS_INVALID`):
    /// the refund is flagged and slowed down; querying halts only when the same code comes
    /// back for several different refunds in a row (the worker's halt counts them).
    RequestRejected {
        /// The gateway code.
        code: String,
    },
}

impl QueryOutcome {
    /// The attempt-log text for a verified answer that lost informative values: every dropped
    /// field with its reason (`None` when nothing was dropped, and for every other outcome).
    pub fn dropped_text(&self) -> Option<String> {
        match self {
            Self::Final(seen) | Self::Pending(seen) => {
                super::recordable::dropped_text(&seen.dropped)
            }
            _ => None,
        }
    }

    /// The attempt-log text for a verified answer: every informative field it did not confirm
    /// (absent or unreadable) and every value the ledger could not store, `; `-separated
    /// (`None` when the answer was complete, and for every other outcome).
    pub fn notes_text(&self) -> Option<String> {
        match self {
            Self::Final(seen) | Self::Pending(seen) => seen.notes_text(),
            _ => None,
        }
    }

    /// The attempt-log text of the informative fields a verified answer held in a form that
    /// could not be read (`None` when there were none). The worker WARNs once per refund with
    /// it.
    pub fn unreadable_text(&self) -> Option<String> {
        match self {
            Self::Final(seen) | Self::Pending(seen) => seen.unreadable_text(),
            _ => None,
        }
    }

    /// The coarse class written to the attempt log and to logs.
    pub fn class(&self) -> OutcomeClass {
        match self {
            Self::Final(_) => OutcomeClass::Final,
            Self::Pending(_) => OutcomeClass::Pending,
            Self::Unknown { .. } => OutcomeClass::Unknown,
            Self::Retryable { .. } => OutcomeClass::Retryable,
            Self::RateLimited => OutcomeClass::RateLimited,
            Self::ClockSkew => OutcomeClass::ClockSkew,
            // The attempt log's classes are the schema's; a refused request is logged in the
            // class it always had, and the attempt's error says it concerned this refund.
            Self::ConfigError { .. } | Self::RequestRejected { .. } => OutcomeClass::ConfigError,
        }
    }
}

/// Outcome classes, as stored in `attempts.outcome` and logged as `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    /// Verified final status.
    Final,
    /// Verified, still pending.
    Pending,
    /// Unknown at the gateway.
    Unknown,
    /// Retryable failure.
    Retryable,
    /// Rate limited.
    RateLimited,
    /// Clock skew.
    ClockSkew,
    /// Configuration error, or a request Checus refused for one refund (`PARAMS_INVALID`).
    ConfigError,
    /// A verified answer that contradicts the ledger (set by `decide`, not the gateway).
    Mismatch,
}

impl OutcomeClass {
    /// Every class, in display order.
    pub const ALL: [OutcomeClass; 8] = [
        Self::Final,
        Self::Pending,
        Self::Unknown,
        Self::Retryable,
        Self::RateLimited,
        Self::ClockSkew,
        Self::ConfigError,
        Self::Mismatch,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Final => "final",
            Self::Pending => "pending",
            Self::Unknown => "unknown",
            Self::Retryable => "retryable",
            Self::RateLimited => "rate_limited",
            Self::ClockSkew => "clock_skew",
            Self::ConfigError => "config_error",
            Self::Mismatch => "mismatch",
        }
    }
}

impl fmt::Display for OutcomeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
