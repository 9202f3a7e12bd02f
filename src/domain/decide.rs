//! The state machine: given a pending refund as the ledger holds it and what one query
//! answered, decide what the ledger should record. Pure: `now` and the jitter draw are
//! arguments, and nothing here performs I/O.

use std::fmt;
use std::time::Duration;

use rust_decimal::Decimal;

use super::backoff::Schedule;
use super::outcome::{ObservedRefund, OutcomeClass, QueryOutcome};
use super::refund::{Currency, FinalStatus, OutRefundNo, RefundStatus};
use super::time::Timestamp;

/// Everything `decide` is allowed to know about policy. Built from config once.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The query schedule.
    pub schedule: Schedule,
    /// Flag a refund still pending this long after creation.
    pub pending_flag_after: Duration,
    /// Flag a refund the gateway has not known for this long.
    pub unknown_flag_after: Duration,
    /// While querying is halted (configuration error, clock skew), how often to probe again.
    pub halt_recheck: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            schedule: Schedule::default(),
            pending_flag_after: Duration::from_secs(72 * 3600),
            unknown_flag_after: Duration::from_secs(24 * 3600),
            halt_recheck: Duration::from_secs(5 * 60),
        }
    }
}

/// The pending refund as the ledger holds it: what `decide` needs and nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundState {
    /// The refund number we queried.
    pub out_refund_no: OutRefundNo,
    /// The gateway's refund number, if known.
    pub refund_trade_no: Option<String>,
    /// The amount the merchant issued.
    pub amount: Decimal,
    /// The currency the merchant issued.
    pub currency: Currency,
    /// When the refund was issued.
    pub created_at: Timestamp,
    /// Counted attempts so far (verified answers; failures do not count).
    pub attempts: u32,
    /// Since when the gateway has answered "unknown" without a break.
    pub unknown_since: Option<Timestamp>,
    /// Whether the refund is already flagged for review.
    pub flagged: bool,
}

/// Why a refund needs a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewReason {
    /// Still `REFUND_PENDING` past `pending_flag_after`.
    PendingTooLong,
    /// Unknown at the gateway past `unknown_flag_after`.
    UnknownTooLong,
    /// A verified answer contradicted the ledger (number, amount or currency).
    AnswerMismatch,
}

impl ReviewReason {
    /// Stable snake_case name, stored in `refunds.review_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingTooLong => "pending_too_long",
            Self::UnknownTooLong => "unknown_at_gateway_too_long",
            Self::AnswerMismatch => "answer_mismatch",
        }
    }
}

impl fmt::Display for ReviewReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of disagreement, stored in `discrepancies.kind`. Recorded, never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscrepancyKind {
    /// A later source reports a final status other than the recorded one.
    ConflictingFinal,
    /// A verified answer names another `outRefundNo`.
    RefundNoMismatch,
    /// A verified answer's amount differs from the ledger's.
    AmountMismatch,
    /// A verified answer's currency differs from the ledger's.
    CurrencyMismatch,
}

impl DiscrepancyKind {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConflictingFinal => "conflicting_final",
            Self::RefundNoMismatch => "refund_no_mismatch",
            Self::AmountMismatch => "amount_mismatch",
            Self::CurrencyMismatch => "currency_mismatch",
        }
    }
}

impl fmt::Display for DiscrepancyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One disagreement to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    /// What kind.
    pub kind: DiscrepancyKind,
    /// What the ledger holds.
    pub expected: String,
    /// What the source said.
    pub observed: String,
}

/// Why querying as a whole must stop until someone fixes the host or the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The gateway rejected our configuration with this code.
    ConfigError {
        /// The gateway code.
        code: String,
    },
    /// Our clock is more than two minutes off the gateway's.
    ClockSkew,
}

/// The row change `decide` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Compare-and-set the row from `REFUND_PENDING` to this final status.
    Finalize {
        /// The final status.
        status: FinalStatus,
        /// The gateway's refund number, to fill in if the ledger lacks it.
        refund_trade_no: Option<String>,
        /// `refundFinishTime`, when the gateway gave one.
        refund_finish_time: Option<Timestamp>,
    },
    /// Keep the row pending and query again later.
    Reschedule {
        /// When to query next.
        next_query_at: Timestamp,
        /// The new counted-attempt total.
        attempts: u32,
        /// The new `unknown_since`.
        unknown_since: Option<Timestamp>,
        /// The gateway's refund number, to fill in if the ledger lacks it.
        refund_trade_no: Option<String>,
        /// Flag the refund now, for this reason (`None`: leave the flag as it is).
        flag: Option<ReviewReason>,
    },
}

/// What to record for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The attempt's class for the attempt log (`Mismatch` when the answer contradicted us).
    pub class: OutcomeClass,
    /// The row change.
    pub change: Change,
    /// Disagreements to record, never apply.
    pub discrepancies: Vec<Discrepancy>,
    /// Stop all querying until a probe succeeds.
    pub halt: Option<Halt>,
    /// The gateway asked us to slow down.
    pub slow_down: bool,
}

/// Decides what one attempt's outcome does to a pending refund.
///
/// `unit` is a uniform draw in [0, 1) used for jitter.
pub fn decide(
    state: &RefundState,
    outcome: &QueryOutcome,
    now: Timestamp,
    unit: f64,
    policy: &Policy,
) -> Decision {
    let schedule = &policy.schedule;
    let not_counted =
        |class: OutcomeClass, next: Timestamp, halt: Option<Halt>, slow: bool| Decision {
            class,
            change: Change::Reschedule {
                next_query_at: next,
                attempts: state.attempts,
                unknown_since: state.unknown_since,
                refund_trade_no: None,
                flag: None,
            },
            discrepancies: Vec::new(),
            halt,
            slow_down: slow,
        };
    match outcome {
        QueryOutcome::Final(seen) | QueryOutcome::Pending(seen) => {
            let discrepancies = mismatches(state, seen);
            let attempts = state.attempts.saturating_add(1);
            if !discrepancies.is_empty() {
                return Decision {
                    class: OutcomeClass::Mismatch,
                    change: Change::Reschedule {
                        next_query_at: schedule.next_slow(now, unit),
                        attempts,
                        unknown_since: None,
                        refund_trade_no: None,
                        flag: (!state.flagged).then_some(ReviewReason::AnswerMismatch),
                    },
                    discrepancies,
                    halt: None,
                    slow_down: false,
                };
            }
            let refund_trade_no = seen.refund_trade_no.clone().filter(|s| !s.is_empty());
            match seen.status.as_final() {
                Some(status) => Decision {
                    class: OutcomeClass::Final,
                    change: Change::Finalize {
                        status,
                        refund_trade_no,
                        refund_finish_time: seen.refund_finish_time,
                    },
                    discrepancies: Vec::new(),
                    halt: None,
                    slow_down: false,
                },
                None => {
                    debug_assert_eq!(seen.status, RefundStatus::Pending);
                    let overdue = now - state.created_at >= as_delta(policy.pending_flag_after);
                    let flag = (overdue && !state.flagged).then_some(ReviewReason::PendingTooLong);
                    let next_query_at = if overdue || state.flagged {
                        schedule.next_slow(now, unit)
                    } else {
                        schedule.next_after_attempt(attempts, now, unit)
                    };
                    Decision {
                        class: OutcomeClass::Pending,
                        change: Change::Reschedule {
                            next_query_at,
                            attempts,
                            unknown_since: None,
                            refund_trade_no,
                            flag,
                        },
                        discrepancies: Vec::new(),
                        halt: None,
                        slow_down: false,
                    }
                }
            }
        }
        QueryOutcome::Unknown { .. } => {
            let attempts = state.attempts.saturating_add(1);
            let since = state.unknown_since.unwrap_or(now);
            let overdue = now - since >= as_delta(policy.unknown_flag_after);
            let flag = (overdue && !state.flagged).then_some(ReviewReason::UnknownTooLong);
            let next_query_at = if overdue || state.flagged {
                schedule.next_slow(now, unit)
            } else {
                schedule.next_after_attempt(attempts, now, unit)
            };
            Decision {
                class: OutcomeClass::Unknown,
                change: Change::Reschedule {
                    next_query_at,
                    attempts,
                    unknown_since: Some(since),
                    refund_trade_no: None,
                    flag,
                },
                discrepancies: Vec::new(),
                halt: None,
                slow_down: false,
            }
        }
        QueryOutcome::Retryable { .. } => not_counted(
            OutcomeClass::Retryable,
            schedule.next_after_retry(now, unit),
            None,
            false,
        ),
        QueryOutcome::RateLimited => not_counted(
            OutcomeClass::RateLimited,
            schedule.next_after_retry(now, unit),
            None,
            true,
        ),
        QueryOutcome::ClockSkew => not_counted(
            OutcomeClass::ClockSkew,
            now + policy.halt_recheck,
            Some(Halt::ClockSkew),
            false,
        ),
        QueryOutcome::ConfigError { code } => not_counted(
            OutcomeClass::ConfigError,
            now + policy.halt_recheck,
            Some(Halt::ConfigError { code: code.clone() }),
            false,
        ),
    }
}

fn as_delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Compares a verified answer with the ledger row: number, amount (as decimals, so `10.00`
/// equals `10`) and currency.
fn mismatches(state: &RefundState, seen: &ObservedRefund) -> Vec<Discrepancy> {
    let mut found = Vec::new();
    if seen.out_refund_no != state.out_refund_no.as_str() {
        found.push(Discrepancy {
            kind: DiscrepancyKind::RefundNoMismatch,
            expected: state.out_refund_no.to_string(),
            observed: seen.out_refund_no.clone(),
        });
    }
    if seen.amount != state.amount {
        found.push(Discrepancy {
            kind: DiscrepancyKind::AmountMismatch,
            expected: state.amount.to_string(),
            observed: seen.amount.to_string(),
        });
    }
    if seen.currency != state.currency {
        found.push(Discrepancy {
            kind: DiscrepancyKind::CurrencyMismatch,
            expected: state.currency.to_string(),
            observed: seen.currency.to_string(),
        });
    }
    found
}
