//! One `/refundQuery` attempt as a value: what the gateway client reports, what `decide` reads
//! the outcome from, and what the ledger appends to the attempt log. One type for all three,
//! so no layer copies it field by field.

use std::time::Duration;

use super::outcome::QueryOutcome;
use super::refund::OutRefundNo;
use super::time::Timestamp;

/// What one `/refundQuery` attempt produced. The gateway client builds it, `decide` reads its
/// `outcome`, and the ledger's attempt log stores the rest (the stored outcome class comes from
/// the decision, which may say `mismatch` where the gateway said `final`).
/// Never put secrets in any field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryReport {
    /// The refund that was queried.
    pub out_refund_no: OutRefundNo,
    /// The typed outcome.
    pub outcome: QueryOutcome,
    /// When the attempt was made (the client clock's `now`, also the `requestTime` sent, and
    /// the ledger's "now" for this attempt).
    pub attempted_at: Timestamp,
    /// The HTTP status, if an answer's head arrived.
    pub http_status: Option<u16>,
    /// The answer's `code`, if the body had one.
    pub gateway_code: Option<String>,
    /// The verified answer's `data.status` text, if any.
    pub data_status: Option<String>,
    /// Time on the wire: from sending the request to the last byte of the answer (or the
    /// failure). Excludes building and signing the envelope.
    pub latency: Duration,
    /// Short human text for the attempt log when the outcome is not a verified answer, or
    /// when a verified answer lost informative values (each dropped field and why, see
    /// [`super::recordable`]). Never contains key material or the signature. The ledger stores it cut to its
    /// `MAX_ERROR_CHARS`.
    pub error: Option<String>,
}
