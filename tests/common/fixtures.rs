//! Values the ledger-level suites build by hand: refund numbers, a verified answer and the
//! decision that finalizes it. One copy here, so the suites that record attempts directly
//! (tests/it/ledger.rs, group_commit.rs) agree on what "a verified success" looks like.

use std::str::FromStr;
use std::time::Duration;

use checus_reconciler::domain::{
    Change, Currency, Decision, FinalStatus, ObservedRefund, OutRefundNo, OutcomeClass,
    QueryOutcome, QueryReport, RefundStatus,
};
use rust_decimal::Decimal;

use super::ts;

/// A refund number that is valid by construction.
pub fn no(text: &str) -> OutRefundNo {
    OutRefundNo::parse(text).unwrap()
}

/// A verified REFUND_SUCCESS answer for refund `n`, received at `at`. The ledger logs the
/// decision's outcome class and never reads `outcome`, so its amount need not match the
/// refund's.
pub fn success_answer(n: &str, at: &str) -> QueryReport {
    QueryReport {
        out_refund_no: no(n),
        outcome: QueryOutcome::Final(ObservedRefund {
            out_refund_no: Some(n.to_owned()),
            refund_trade_no: Some("T-Q".into()),
            amount: Some(Decimal::from_str("12.50").unwrap()),
            currency: Some(Currency::parse("USD").unwrap()),
            status: RefundStatus::Success,
            refund_finish_time: None,
            unconfirmed: Vec::new(),
            dropped: Vec::new(),
        }),
        attempted_at: ts(at),
        http_status: Some(200),
        gateway_code: Some("APPLY_SUCCESS".into()),
        data_status: Some("REFUND_SUCCESS".into()),
        latency: Duration::from_millis(42),
        error: None,
    }
}

/// The decision that finalizes a refund with `status`, as `decide` makes it for a verified
/// final answer.
pub fn finalize(status: FinalStatus) -> Decision {
    Decision {
        class: OutcomeClass::Final,
        change: Change::Finalize {
            status,
            refund_trade_no: Some("T-Q".into()),
            refund_finish_time: Some(ts("2026-01-01T00:20:00.000Z")),
            flag: None,
        },
        discrepancies: Vec::new(),
        halt: None,
        slow_down: false,
    }
}
