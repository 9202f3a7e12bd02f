//! The pure core: refund statuses, gateway outcomes, what of an answer the ledger can store
//! ([`recordable`]), the decision state machine, the backoff schedule and the webhook retry
//! rule ([`webhook`]), node names and claim leases ([`node`], [`lease`]). Nothing here reads a
//! clock, touches the network or the ledger, or draws random numbers: time and jitter are
//! arguments, so every rule is a table-testable function.

pub mod attempt;
pub mod backoff;
pub mod decide;
pub mod halt;
pub mod lease;
pub mod limits;
pub mod node;
pub mod outcome;
pub mod recordable;
pub mod refund;
pub mod time;
pub mod webhook;

pub use attempt::QueryReport;
pub use backoff::Schedule;
pub use decide::{
    Change, Decision, Discrepancy, DiscrepancyKind, Halt, Policy, RefundState, ReviewReason, decide,
};
pub use halt::HaltCode;
pub use lease::{DEFAULT_CLAIM_LEASE, LeaseTerms};
pub use node::{NodeName, NodeState, node_state, silent_after};
pub use outcome::{ObservedRefund, OutcomeClass, QueryOutcome, RetryReason};
pub use recordable::{Dropped, Unconfirmed, observed_text};
pub use refund::{
    Currency, FinalSource, FinalStatus, InvalidValue, NewRefund, OutRefundNo, RefundStatus,
    exact_decimal, is_unsafe_char, validate_amount, validate_created_at, validate_text,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp, format_ts, parse_ts};
