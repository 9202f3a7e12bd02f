//! The state machine: given a pending refund as the ledger holds it and what one query
//! answered, decide what the ledger should record. Pure: `now` and the jitter draw are
//! arguments, and nothing here performs I/O.

use std::fmt;
use std::time::Duration;

use rust_decimal::Decimal;

use super::backoff::Schedule;
use super::outcome::{ObservedRefund, OutcomeClass, QueryOutcome};
use super::recordable::observed_text;
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
    /// A refund finalized by a notification is confirmed with one query this long after:
    /// a notification that contradicts the gateway then becomes a recorded discrepancy
    /// instead of going unnoticed.
    pub confirm_after: Duration,
    /// A per-refund code (`PARAMS_INVALID`) halts all querying only once it came back for
    /// this many different refunds in a row (the worker's halt counts them; 1 halts at once).
    pub halt_after_rejected_refunds: usize,
}

impl Default for Policy {
    /// The documented defaults, written only here (config and `examples/config.toml` follow
    /// them; a test in `config.rs` ties the example to this): the [`Schedule::default`]
    /// ladder, a review flag after 72 h pending or 24 h unknown to the gateway, a probe every
    /// 5 min while halted, a confirming query 10 min after a notification, and a halt when
    /// 3 different refunds in a row are refused with the same per-refund code.
    fn default() -> Self {
        Self {
            schedule: Schedule::default(),
            pending_flag_after: Duration::from_secs(72 * 3600),
            unknown_flag_after: Duration::from_secs(24 * 3600),
            halt_recheck: Duration::from_secs(5 * 60),
            confirm_after: Duration::from_secs(10 * 60),
            halt_after_rejected_refunds: 3,
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
    /// Whether Checus already refused a query for this refund alone (it is flagged
    /// `gateway_rejected_request`): the same refusal again is no news about the requests as a
    /// whole, so the halt's count of refunds refused in a row passes it by.
    pub rejected_before: bool,
    /// The error text its last attempt recorded (`refunds.last_error`). `decide` ignores it;
    /// the worker uses it to WARN about an unreadable answer field once per refund, not on
    /// every poll.
    pub last_error: Option<String>,
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
    /// A verified answer held a value the ledger cannot store; the attempt was recorded
    /// without it (its error names the field).
    AnswerUnrecordable,
    /// The daemon could not read the refund's row (a stored value the schema does not allow);
    /// the sweep skips it.
    RowUnreadable,
    /// The ledger refused the daemon's update of the refund's row; the sweep skips it.
    RowUnwritable,
    /// Checus refused the query for this refund alone (a per-refund code such as
    /// `PARAMS_INVALID`); it is polled at the steady cadence.
    GatewayRejectedRequest,
}

impl ReviewReason {
    /// Stable snake_case name, stored in `refunds.review_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingTooLong => "pending_too_long",
            Self::UnknownTooLong => "unknown_at_gateway_too_long",
            Self::AnswerMismatch => "answer_mismatch",
            Self::AnswerUnrecordable => "answer_unrecordable",
            Self::RowUnreadable => "row_unreadable",
            Self::RowUnwritable => "row_unwritable",
            Self::GatewayRejectedRequest => "gateway_rejected_request",
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
    /// Which two accounts disagree (and so how the discrepancy is filed).
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
        /// Flag the refund too (the answer lost values the ledger cannot store), unless the
        /// row is flagged already.
        flag: Option<ReviewReason>,
    },
    /// Leave the row as it is (it is already final): only the attempt is recorded.
    Keep {
        /// When a pending confirmation of this final outcome should be tried again: `Some`
        /// after an answer that said nothing (a failure), `None` once the gateway answered.
        confirm_again_at: Option<Timestamp>,
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

/// Decides what one attempt's outcome does to a refund whose recorded status is `recorded`.
///
/// The worker only queries pending refunds, but an operator's `query` may hit a final one, and
/// a notification may finalize a refund while its query is in flight; for a final row nothing
/// changes and any disagreement becomes a [`Discrepancy`]. `unit` is a uniform draw in [0, 1)
/// used for jitter.
pub fn decide(
    recorded: RefundStatus,
    state: &RefundState,
    outcome: &QueryOutcome,
    now: Timestamp,
    unit: f64,
    policy: &Policy,
) -> Decision {
    if let Some(final_status) = recorded.as_final() {
        return decide_on_final(final_status, state, outcome, now, unit, policy);
    }
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
            decide_on_answer(state, seen, now, unit, policy)
        }
        QueryOutcome::Unknown { .. } => decide_on_unknown(state, now, unit, policy),
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
        QueryOutcome::RequestRejected { .. } => decide_on_rejected(state, now, unit, policy),
    }
}

/// Checus refused the query for this refund (a per-refund code such as `PARAMS_INVALID`):
/// resending it cannot succeed, so the refund is flagged `gateway_rejected_request` (unless it
/// is flagged already) and polled at the steady cadence. The answer says nothing about the
/// refund's state, so no attempt is spent and the unknown clock is left alone. Whether the
/// code is really systematic (the same code for several refunds in a row) is the worker's
/// halt to count, not this answer's to decide.
fn decide_on_rejected(state: &RefundState, now: Timestamp, unit: f64, policy: &Policy) -> Decision {
    Decision {
        class: OutcomeClass::ConfigError,
        change: Change::Reschedule {
            next_query_at: policy.schedule.next_slow(now, unit),
            attempts: state.attempts,
            unknown_since: state.unknown_since,
            refund_trade_no: None,
            flag: (!state.flagged).then_some(ReviewReason::GatewayRejectedRequest),
        },
        discrepancies: Vec::new(),
        halt: None,
        slow_down: false,
    }
}

/// A verified answer with a status for a pending refund: a mismatch is recorded and slows the
/// refund down, a final status finalizes it, and a pending one moves it along the ladder (or
/// flags it once it has been pending for `pending_flag_after`).
///
/// An answer that lost informative values ([`ObservedRefund::dropped`]) still decides: its
/// deciding values were valid, so a final status finalizes the refund without the dropped
/// values and flags it `answer_unrecordable` (a human checks what was lost; the attempt's
/// error names it), and a pending one flags the refund the same way (unless it is already
/// flagged) and polls it at the slow cadence, like any flagged refund.
fn decide_on_answer(
    state: &RefundState,
    seen: &ObservedRefund,
    now: Timestamp,
    unit: f64,
    policy: &Policy,
) -> Decision {
    let schedule = &policy.schedule;
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
                flag: (seen.is_unrecordable() && !state.flagged)
                    .then_some(ReviewReason::AnswerUnrecordable),
            },
            discrepancies: Vec::new(),
            halt: None,
            slow_down: false,
        },
        None => {
            debug_assert_eq!(seen.status, RefundStatus::Pending);
            let overdue = now - state.created_at >= as_delta(policy.pending_flag_after);
            let flag = if state.flagged {
                None
            } else if overdue {
                Some(ReviewReason::PendingTooLong)
            } else if seen.is_unrecordable() {
                Some(ReviewReason::AnswerUnrecordable)
            } else {
                None
            };
            let next_query_at = if overdue || state.flagged || flag.is_some() {
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

/// An answer that says nothing about the refund: counted, and flagged once the refund has
/// been unknown for `unknown_flag_after`.
fn decide_on_unknown(state: &RefundState, now: Timestamp, unit: f64, policy: &Policy) -> Decision {
    let schedule = &policy.schedule;
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

/// A final row never changes; a query can only confirm it or disagree with it.
fn decide_on_final(
    recorded: FinalStatus,
    state: &RefundState,
    outcome: &QueryOutcome,
    now: Timestamp,
    unit: f64,
    policy: &Policy,
) -> Decision {
    let mut discrepancies = Vec::new();
    let observed = match outcome {
        QueryOutcome::Final(seen) | QueryOutcome::Pending(seen) => {
            discrepancies = mismatches(state, seen);
            Some(seen.status.to_string())
        }
        QueryOutcome::Unknown { code } => Some(format!("unknown at gateway ({code})")),
        _ => None,
    };
    if let Some(observed) = observed.filter(|o| o != recorded.as_str()) {
        discrepancies.insert(
            0,
            Discrepancy {
                kind: DiscrepancyKind::ConflictingFinal,
                expected: recorded.to_string(),
                observed,
            },
        );
    }
    let class = if discrepancies.is_empty() {
        outcome.class()
    } else {
        OutcomeClass::Mismatch
    };
    let halt = match outcome {
        QueryOutcome::ClockSkew => Some(Halt::ClockSkew),
        QueryOutcome::ConfigError { code } => Some(Halt::ConfigError { code: code.clone() }),
        _ => None,
    };
    // The gateway said something about the refund: the confirmation is done. A request
    // refused for this refund cannot succeed resent soon: tried again at the steady cadence.
    // Otherwise (a failure, a rate limit, a halt) it is tried again after the short retry delay.
    let confirm_again_at = match outcome {
        QueryOutcome::Final(_) | QueryOutcome::Pending(_) | QueryOutcome::Unknown { .. } => None,
        QueryOutcome::RequestRejected { .. } => Some(policy.schedule.next_slow(now, unit)),
        _ => Some(policy.schedule.next_after_retry(now, unit)),
    };
    Decision {
        class,
        change: Change::Keep { confirm_again_at },
        discrepancies,
        halt,
        slow_down: matches!(outcome, QueryOutcome::RateLimited),
    }
}

fn as_delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Compares a verified answer with the ledger row: number, amount (as decimals, so `10.00`
/// equals `10`) and currency, each only when the answer gave it (an absent or unreadable value
/// informs nothing, so it cannot disagree; the attempt's error names it). A refund number that
/// is not a valid one is recorded cut and escaped ([`observed_text`]), saying so.
fn mismatches(state: &RefundState, seen: &ObservedRefund) -> Vec<Discrepancy> {
    let mut found = Vec::new();
    if let Some(no) = seen.out_refund_no.as_deref()
        && no != state.out_refund_no.as_str()
    {
        found.push(Discrepancy {
            kind: DiscrepancyKind::RefundNoMismatch,
            expected: state.out_refund_no.to_string(),
            observed: observed_text(no),
        });
    }
    if let Some(amount) = seen.amount
        && amount != state.amount
    {
        found.push(Discrepancy {
            kind: DiscrepancyKind::AmountMismatch,
            expected: state.amount.to_string(),
            observed: amount.to_string(),
        });
    }
    if let Some(currency) = seen.currency
        && currency != state.currency
    {
        found.push(Discrepancy {
            kind: DiscrepancyKind::CurrencyMismatch,
            expected: state.currency.to_string(),
            observed: currency.to_string(),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outcome::RetryReason;
    use crate::domain::time::parse_ts;
    use std::str::FromStr;

    fn t(s: &str) -> Timestamp {
        parse_ts(s).unwrap()
    }

    const CREATED: &str = "2026-11-25T10:00:00.000Z";
    const NOW: &str = "2026-11-25T11:00:00.000Z";

    fn state() -> RefundState {
        RefundState {
            out_refund_no: OutRefundNo::parse("R1").unwrap(),
            refund_trade_no: None,
            amount: Decimal::from_str("12.50").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            created_at: t(CREATED),
            attempts: 2,
            unknown_since: None,
            flagged: false,
            rejected_before: false,
            last_error: None,
        }
    }

    fn seen(status: RefundStatus) -> ObservedRefund {
        ObservedRefund {
            out_refund_no: Some("R1".into()),
            refund_trade_no: Some("T1".into()),
            amount: Some(Decimal::from_str("12.5").unwrap()),
            currency: Some(Currency::parse("USD").unwrap()),
            status,
            refund_finish_time: status.is_final().then(|| t("2026-11-25T10:30:00.000Z")),
            unconfirmed: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn outcomes() -> Vec<QueryOutcome> {
        vec![
            QueryOutcome::Final(seen(RefundStatus::Success)),
            QueryOutcome::Final(seen(RefundStatus::Failed)),
            QueryOutcome::Pending(seen(RefundStatus::Pending)),
            QueryOutcome::Unknown {
                code: "ORDER_NOT_EXIST".into(),
            },
            QueryOutcome::Retryable {
                reason: RetryReason::Transport,
                detail: "connection reset".into(),
            },
            QueryOutcome::RateLimited,
            QueryOutcome::ClockSkew,
            QueryOutcome::ConfigError {
                code: "SIGN_VERIFY_FAILED".into(),
            },
            QueryOutcome::RequestRejected {
                code: "PARAMS_INVALID".into(),
            },
        ]
    }

    fn run(recorded: RefundStatus, st: &RefundState, o: &QueryOutcome) -> Decision {
        decide(recorded, st, o, t(NOW), 0.5, &Policy::default())
    }

    /// The whole matrix: every recorded status against every outcome class.
    #[test]
    fn every_status_times_every_outcome() {
        for recorded in RefundStatus::ALL {
            for o in outcomes() {
                let d = run(recorded, &state(), &o);
                let why = format!("{recorded} × {o:?}");
                // Halts and slow-downs follow the outcome whatever the row says.
                assert_eq!(
                    d.halt.is_some(),
                    matches!(
                        o,
                        QueryOutcome::ClockSkew | QueryOutcome::ConfigError { .. }
                    ),
                    "{why}"
                );
                assert_eq!(d.slow_down, o == QueryOutcome::RateLimited, "{why}");
                if recorded.is_final() {
                    assert_final_row_kept(recorded, &o, &d, &why);
                } else {
                    assert!(d.discrepancies.is_empty(), "{why}");
                    assert_pending_row_change(&o, &d, &why);
                }
            }
        }
    }

    /// A final row never changes; disagreement is recorded, not applied.
    fn assert_final_row_kept(recorded: RefundStatus, o: &QueryOutcome, d: &Decision, why: &str) {
        let (p, now) = (Policy::default(), t(NOW));
        let answered = matches!(
            o,
            QueryOutcome::Final(_) | QueryOutcome::Pending(_) | QueryOutcome::Unknown { .. }
        );
        let again = match o {
            _ if answered => None,
            QueryOutcome::RequestRejected { .. } => Some(now + p.schedule.steady),
            _ => Some(now + p.schedule.retry),
        };
        assert_eq!(
            d.change,
            Change::Keep {
                confirm_again_at: again
            },
            "{why}"
        );
        let disagrees = match o {
            QueryOutcome::Final(s) | QueryOutcome::Pending(s) => s.status != recorded,
            QueryOutcome::Unknown { .. } => true,
            _ => false,
        };
        assert_eq!(
            d.discrepancies
                .iter()
                .any(|x| x.kind == DiscrepancyKind::ConflictingFinal),
            disagrees,
            "{why}"
        );
    }

    /// What each outcome does to a pending row.
    fn assert_pending_row_change(o: &QueryOutcome, d: &Decision, why: &str) {
        let (p, now) = (Policy::default(), t(NOW));
        match (o, &d.change) {
            (
                QueryOutcome::Final(s),
                Change::Finalize {
                    status,
                    refund_trade_no,
                    refund_finish_time,
                    flag: None,
                },
            ) => {
                assert_eq!(status.status(), s.status, "{why}");
                assert_eq!(refund_trade_no.as_deref(), Some("T1"));
                assert!(refund_finish_time.is_some());
                assert_eq!(d.class, OutcomeClass::Final);
            }
            (
                QueryOutcome::Pending(_),
                Change::Reschedule {
                    attempts,
                    next_query_at,
                    flag,
                    unknown_since,
                    ..
                },
            ) => {
                assert_eq!(*attempts, 3, "a verified answer counts");
                assert_eq!(*next_query_at, now + p.schedule.delay_after(3));
                assert_eq!(*flag, None);
                assert_eq!(*unknown_since, None);
            }
            (
                QueryOutcome::Unknown { .. },
                Change::Reschedule {
                    attempts,
                    unknown_since,
                    flag,
                    ..
                },
            ) => {
                assert_eq!(*attempts, 3, "{why}");
                assert_eq!(*unknown_since, Some(now), "{why}");
                assert_eq!(*flag, None);
            }
            (
                QueryOutcome::Retryable { .. } | QueryOutcome::RateLimited,
                Change::Reschedule {
                    attempts,
                    next_query_at,
                    flag,
                    ..
                },
            ) => {
                assert_eq!(*attempts, 2, "failures never spend the budget: {why}");
                assert_eq!(*next_query_at, now + p.schedule.retry);
                assert_eq!(*flag, None);
            }
            (
                QueryOutcome::ClockSkew | QueryOutcome::ConfigError { .. },
                Change::Reschedule {
                    attempts,
                    next_query_at,
                    ..
                },
            ) => {
                assert_eq!(*attempts, 2, "{why}");
                assert_eq!(*next_query_at, now + p.halt_recheck);
            }
            (
                QueryOutcome::RequestRejected { .. },
                Change::Reschedule {
                    attempts,
                    next_query_at,
                    flag,
                    unknown_since,
                    ..
                },
            ) => {
                assert_eq!(*attempts, 2, "a refused request spends nothing: {why}");
                assert_eq!(*next_query_at, now + p.schedule.steady, "{why}");
                assert_eq!(*flag, Some(ReviewReason::GatewayRejectedRequest));
                assert_eq!(*unknown_since, None, "{why}");
                assert_eq!(d.class, OutcomeClass::ConfigError, "{why}");
            }
            (o, c) => panic!("unexpected change {c:?} for {o:?}"),
        }
    }

    #[test]
    fn pending_past_72h_is_flagged_once_then_polled_slowly() {
        let p = Policy::default();
        let mut st = state();
        let late = t(CREATED) + p.pending_flag_after;
        let pending = QueryOutcome::Pending(seen(RefundStatus::Pending));
        let d = decide(RefundStatus::Pending, &st, &pending, late, 0.5, &p);
        let Change::Reschedule {
            flag,
            next_query_at,
            ..
        } = d.change
        else {
            panic!("{d:?}")
        };
        assert_eq!(flag, Some(ReviewReason::PendingTooLong));
        assert_eq!(next_query_at, late + p.schedule.steady);
        // Already flagged: no second flag, still polled at the slow cadence.
        st.flagged = true;
        let d = decide(RefundStatus::Pending, &st, &pending, late, 0.5, &p);
        let Change::Reschedule {
            flag,
            next_query_at,
            ..
        } = d.change
        else {
            panic!("{d:?}")
        };
        assert_eq!(flag, None);
        assert_eq!(next_query_at, late + p.schedule.steady);
        // Just under the limit: normal ladder, no flag.
        st.flagged = false;
        let early = late - chrono::TimeDelta::seconds(1);
        let d = decide(RefundStatus::Pending, &st, &pending, early, 0.5, &p);
        let Change::Reschedule {
            flag,
            next_query_at,
            ..
        } = d.change
        else {
            panic!("{d:?}")
        };
        assert_eq!(flag, None);
        assert_eq!(next_query_at, early + p.schedule.delay_after(3));
    }

    #[test]
    fn unknown_for_24h_is_flagged_and_a_known_answer_clears_the_clock() {
        let p = Policy::default();
        let mut st = state();
        let since = t(NOW);
        st.unknown_since = Some(since);
        let unknown = QueryOutcome::Unknown {
            code: "REFUND_NO_INVALID".into(),
        };
        let later = since + p.unknown_flag_after;
        let d = decide(RefundStatus::Pending, &st, &unknown, later, 0.5, &p);
        let Change::Reschedule {
            flag,
            unknown_since,
            next_query_at,
            ..
        } = d.change
        else {
            panic!("{d:?}")
        };
        assert_eq!(flag, Some(ReviewReason::UnknownTooLong));
        assert_eq!(unknown_since, Some(since), "the clock keeps its start");
        assert_eq!(next_query_at, later + p.schedule.steady);
        let pending = QueryOutcome::Pending(seen(RefundStatus::Pending));
        let d = decide(RefundStatus::Pending, &st, &pending, later, 0.5, &p);
        let Change::Reschedule { unknown_since, .. } = d.change else {
            panic!("{d:?}")
        };
        assert_eq!(unknown_since, None);
    }

    #[test]
    fn a_mismatched_answer_is_recorded_flagged_and_never_applied() {
        type Mutation = fn(&mut ObservedRefund);
        let cases: Vec<(Mutation, DiscrepancyKind)> = vec![
            (
                |s| s.out_refund_no = Some("R2".into()),
                DiscrepancyKind::RefundNoMismatch,
            ),
            (
                |s| s.amount = Some(Decimal::from_str("12.51").unwrap()),
                DiscrepancyKind::AmountMismatch,
            ),
            (
                |s| s.currency = Some(Currency::parse("EUR").unwrap()),
                DiscrepancyKind::CurrencyMismatch,
            ),
        ];
        for (mutate, kind) in cases {
            for status in RefundStatus::ALL {
                let mut s = seen(status);
                mutate(&mut s);
                let o = if status.is_final() {
                    QueryOutcome::Final(s)
                } else {
                    QueryOutcome::Pending(s)
                };
                let d = run(RefundStatus::Pending, &state(), &o);
                assert_eq!(d.class, OutcomeClass::Mismatch);
                assert_eq!(d.discrepancies.len(), 1);
                assert_eq!(d.discrepancies[0].kind, kind);
                let Change::Reschedule {
                    flag,
                    next_query_at,
                    ..
                } = d.change
                else {
                    panic!("mismatch must not finalize: {d:?}")
                };
                assert_eq!(flag, Some(ReviewReason::AnswerMismatch));
                assert_eq!(next_query_at, t(NOW) + Policy::default().schedule.steady);
            }
        }
    }

    /// `seen(status)` after an answer whose refundTradeNo the ledger could not store.
    fn seen_unrecordable(status: RefundStatus) -> ObservedRefund {
        let mut s = seen(status);
        s.refund_trade_no = Some("T".repeat(65));
        s.recordable()
    }

    /// An answer that lost an informative value still decides with its valid deciding values:
    /// a final status finalizes (without the value), a pending one flags the refund
    /// `answer_unrecordable` once and slows it down; a flag already raised, a mismatch or an
    /// overdue refund keep their own rule.
    #[test]
    fn an_answer_that_lost_informative_values_still_decides() {
        let p = Policy::default();
        let now = t(NOW);
        let slow = now + p.schedule.steady;
        let ladder = now + p.schedule.delay_after(3);
        let overdue_at = t(CREATED) + p.pending_flag_after;
        let flagged = RefundState {
            flagged: true,
            ..state()
        };
        let final_seen = seen_unrecordable(RefundStatus::Success);
        assert_eq!(final_seen.refund_trade_no, None);
        assert!(final_seen.is_unrecordable());
        // (row, answer, when) -> (class, change)
        let reschedule = |next, flag| Change::Reschedule {
            next_query_at: next,
            attempts: 3,
            unknown_since: None,
            refund_trade_no: None,
            flag,
        };
        let cases = [
            (
                "final answer",
                state(),
                QueryOutcome::Final(final_seen.clone()),
                now,
                OutcomeClass::Final,
                Change::Finalize {
                    status: FinalStatus::Success,
                    refund_trade_no: None,
                    refund_finish_time: final_seen.refund_finish_time,
                    flag: Some(ReviewReason::AnswerUnrecordable),
                },
            ),
            (
                "pending answer",
                state(),
                QueryOutcome::Pending(seen_unrecordable(RefundStatus::Pending)),
                now,
                OutcomeClass::Pending,
                reschedule(slow, Some(ReviewReason::AnswerUnrecordable)),
            ),
            (
                "pending answer, already flagged",
                flagged.clone(),
                QueryOutcome::Pending(seen_unrecordable(RefundStatus::Pending)),
                now,
                OutcomeClass::Pending,
                reschedule(slow, None),
            ),
            (
                "pending answer, overdue",
                state(),
                QueryOutcome::Pending(seen_unrecordable(RefundStatus::Pending)),
                overdue_at,
                OutcomeClass::Pending,
                Change::Reschedule {
                    next_query_at: overdue_at + p.schedule.steady,
                    attempts: 3,
                    unknown_since: None,
                    refund_trade_no: None,
                    flag: Some(ReviewReason::PendingTooLong),
                },
            ),
            (
                "pending answer that kept everything",
                state(),
                QueryOutcome::Pending(seen(RefundStatus::Pending)),
                now,
                OutcomeClass::Pending,
                Change::Reschedule {
                    next_query_at: ladder,
                    attempts: 3,
                    unknown_since: None,
                    refund_trade_no: Some("T1".into()),
                    flag: None,
                },
            ),
        ];
        for (name, st, o, when, class, change) in cases {
            let d = decide(RefundStatus::Pending, &st, &o, when, 0.5, &p);
            assert_eq!((d.class, &d.change), (class, &change), "{name}");
            assert!(d.discrepancies.is_empty(), "{name}");
            assert_eq!(d.halt, None, "{name}");
        }
        // A mismatch stays a mismatch: recorded, flagged answer_mismatch, never applied.
        let mut other = seen_unrecordable(RefundStatus::Success);
        other.amount = Some(Decimal::from_str("99").unwrap());
        let d = run(RefundStatus::Pending, &state(), &QueryOutcome::Final(other));
        assert_eq!(d.class, OutcomeClass::Mismatch);
        let Change::Reschedule { flag, .. } = d.change else {
            panic!("{d:?}")
        };
        assert_eq!(flag, Some(ReviewReason::AnswerMismatch));
        // A final row is kept; the answer agreeing on the status records nothing more.
        let d = run(
            RefundStatus::Success,
            &state(),
            &QueryOutcome::Final(seen_unrecordable(RefundStatus::Success)),
        );
        assert_eq!(
            d.change,
            Change::Keep {
                confirm_again_at: None
            }
        );
        assert!(d.discrepancies.is_empty());
    }

    #[test]
    fn an_odd_refund_number_is_a_mismatch_recorded_cut_and_escaped() {
        let mut s = seen(RefundStatus::Success);
        s.out_refund_no = Some(format!("\u{1b}[2J{}", "R".repeat(70)));
        let d = run(RefundStatus::Pending, &state(), &QueryOutcome::Final(s));
        assert_eq!(d.class, OutcomeClass::Mismatch);
        assert_eq!(d.discrepancies.len(), 1);
        let x = &d.discrepancies[0];
        assert_eq!(x.kind, DiscrepancyKind::RefundNoMismatch);
        assert_eq!(x.expected, "R1");
        assert_eq!(
            x.observed,
            format!(
                "\\u{{1b}}[2J{} [not a refund number: 74 characters, cut to 64, control characters escaped]",
                "R".repeat(60)
            )
        );
    }

    #[test]
    fn amounts_compare_as_decimals_not_text() {
        // 12.50 in the ledger and 12.5 on the wire are the same amount.
        let d = run(
            RefundStatus::Pending,
            &state(),
            &QueryOutcome::Final(seen(RefundStatus::Success)),
        );
        assert!(d.discrepancies.is_empty());
        assert_eq!(d.class, OutcomeClass::Final);
    }

    /// Issue 11: a value the answer did not give (absent or unreadable) cannot disagree; the
    /// status still decides, without a flag. A value it did give is still compared.
    #[test]
    fn an_answer_without_informative_values_still_finalizes_unflagged() {
        let mut bare = seen(RefundStatus::Success);
        bare.out_refund_no = None;
        bare.amount = None;
        bare.currency = None;
        bare.unconfirmed = vec![
            crate::domain::Unconfirmed::absent("data.refundAmount"),
            crate::domain::Unconfirmed::unreadable("data.refundCurrency", "must be a string"),
        ];
        let d = run(
            RefundStatus::Pending,
            &state(),
            &QueryOutcome::Final(bare.clone()),
        );
        assert!(d.discrepancies.is_empty(), "{d:?}");
        assert_eq!(d.class, OutcomeClass::Final);
        assert!(
            matches!(d.change, Change::Finalize { flag: None, .. }),
            "{d:?}"
        );
        bare.currency = Some(Currency::parse("EUR").unwrap());
        let d = run(RefundStatus::Pending, &state(), &QueryOutcome::Final(bare));
        assert_eq!(d.class, OutcomeClass::Mismatch);
        assert_eq!(d.discrepancies.len(), 1);
        assert_eq!(d.discrepancies[0].kind, DiscrepancyKind::CurrencyMismatch);
    }

    #[test]
    fn a_final_row_confirmed_by_the_query_records_no_discrepancy() {
        let d = run(
            RefundStatus::Failed,
            &state(),
            &QueryOutcome::Final(seen(RefundStatus::Failed)),
        );
        assert_eq!(
            d.change,
            Change::Keep {
                confirm_again_at: None
            }
        );
        assert!(d.discrepancies.is_empty());
        assert_eq!(d.class, OutcomeClass::Final);
    }

    /// A per-refund code flags the refund `gateway_rejected_request` once, slows it to the
    /// steady cadence and spends nothing; it never halts on its own (the worker's halt counts
    /// refunds in a row). A flag already raised keeps its reason, the unknown clock keeps its
    /// start, and a later normal answer decides as usual without touching the flag.
    #[test]
    fn a_request_refused_for_one_refund_flags_it_and_slows_it_down() {
        let p = Policy::default();
        let now = t(NOW);
        let rejected = QueryOutcome::RequestRejected {
            code: "PARAMS_INVALID".into(),
        };
        let since = t(CREATED);
        let cases = [
            ("fresh", state(), Some(ReviewReason::GatewayRejectedRequest)),
            (
                "already flagged",
                RefundState {
                    flagged: true,
                    ..state()
                },
                None,
            ),
            (
                "unknown at the gateway",
                RefundState {
                    unknown_since: Some(since),
                    ..state()
                },
                Some(ReviewReason::GatewayRejectedRequest),
            ),
        ];
        for (name, st, flag) in cases {
            let d = decide(RefundStatus::Pending, &st, &rejected, now, 0.5, &p);
            assert_eq!(d.halt, None, "{name}");
            assert!(!d.slow_down, "{name}");
            assert!(d.discrepancies.is_empty(), "{name}");
            assert_eq!(d.class, OutcomeClass::ConfigError, "{name}");
            assert_eq!(
                d.change,
                Change::Reschedule {
                    next_query_at: now + p.schedule.steady,
                    attempts: 2,
                    unknown_since: st.unknown_since,
                    refund_trade_no: None,
                    flag,
                },
                "{name}"
            );
        }
        // Flagged since: a normal answer decides as usual and raises no other flag (the
        // flag stays until an operator clears it), still at the slow cadence.
        let flagged = RefundState {
            flagged: true,
            ..state()
        };
        let pending = QueryOutcome::Pending(seen(RefundStatus::Pending));
        let d = decide(RefundStatus::Pending, &flagged, &pending, now, 0.5, &p);
        let Change::Reschedule {
            flag,
            next_query_at,
            attempts,
            ..
        } = d.change
        else {
            panic!("{d:?}")
        };
        assert_eq!(
            (flag, next_query_at, attempts),
            (None, now + p.schedule.steady, 3)
        );
        let d = decide(
            RefundStatus::Pending,
            &flagged,
            &QueryOutcome::Final(seen(RefundStatus::Success)),
            now,
            0.5,
            &p,
        );
        assert!(
            matches!(d.change, Change::Finalize { flag: None, .. }),
            "{d:?}"
        );
        // A final row waiting for its confirming query: tried again at the steady cadence.
        let d = decide(RefundStatus::Success, &state(), &rejected, now, 0.5, &p);
        assert_eq!(
            d.change,
            Change::Keep {
                confirm_again_at: Some(now + p.schedule.steady)
            }
        );
        assert_eq!(d.halt, None);
    }
}
