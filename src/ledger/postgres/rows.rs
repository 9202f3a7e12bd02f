//! Typed rows from PostgreSQL result rows. Each table's column list lives next to the code that
//! reads it, in its order. Amounts are selected as text (`amount::text`, the exact written
//! number) and instants as timestamptz; the enums stored as TEXT parse as on SQLite, and a value
//! that does not is `CorruptRow` (or, in a list, an [`UnreadableRow`] in its place).

use postgres::Row;
use postgres::types::FromSql;

use crate::domain::{RefundState, ReviewReason, Timestamp};
use crate::ledger::error::LedgerError;
use crate::ledger::types::{Cell, RefundRow, UnreadableRow};

/// The `refunds` columns [`refund`] reads, in its order.
pub(super) const REFUND_COLUMNS: &str = "out_refund_no, refund_trade_no, out_trade_no, \
    amount::text, currency, status, created_at, notified_at, finalized_at, final_source, \
    refund_finish_time, next_query_at, attempts, unknown_since, last_attempt_at, last_outcome, \
    last_error, review_flag, review_reason, flagged_at, id";

/// Reads column `i`, naming the column when the server's type is not the one expected (a
/// schema that changed under us).
fn get<'a, T: FromSql<'a>>(
    r: &'a Row,
    i: usize,
    no: &str,
    column: &'static str,
) -> Result<T, LedgerError> {
    r.try_get(i).map_err(|e| LedgerError::CorruptRow {
        out_refund_no: no.to_owned(),
        column,
        detail: e.to_string(),
    })
}

/// One `refunds` row of [`REFUND_COLUMNS`] (at `at`: the first of them in `r`).
pub(super) fn refund(r: &Row) -> Result<RefundRow, LedgerError> {
    let no: String = get(r, 0, "", "out_refund_no")?;
    let c = Cell { out_refund_no: &no };
    let text = |i: usize, column: &'static str| get::<Option<String>>(r, i, &no, column);
    let req = |i: usize, column: &'static str| -> Result<String, LedgerError> {
        text(i, column)?.ok_or_else(|| LedgerError::CorruptRow {
            out_refund_no: no.clone(),
            column,
            detail: "is NULL".to_owned(),
        })
    };
    let ts = |i: usize, column: &'static str| get::<Option<Timestamp>>(r, i, &no, column);
    Ok(RefundRow {
        out_refund_no: c.parse("out_refund_no", &no)?,
        refund_trade_no: text(1, "refund_trade_no")?,
        out_trade_no: text(2, "out_trade_no")?,
        amount: c.amount("amount", &req(3, "amount")?)?,
        currency: c.parse("currency", &req(4, "currency")?)?,
        status: c.parse("status", &req(5, "status")?)?,
        created_at: get(r, 6, &no, "created_at")?,
        notified_at: ts(7, "notified_at")?,
        finalized_at: ts(8, "finalized_at")?,
        final_source: c.parse_opt("final_source", text(9, "final_source")?.as_deref())?,
        refund_finish_time: ts(10, "refund_finish_time")?,
        next_query_at: ts(11, "next_query_at")?,
        attempts: c.int("attempts", get(r, 12, &no, "attempts")?)?,
        unknown_since: ts(13, "unknown_since")?,
        last_attempt_at: ts(14, "last_attempt_at")?,
        last_outcome: text(15, "last_outcome")?
            .as_deref()
            .map(|o| c.outcome("last_outcome", o))
            .transpose()?,
        last_error: text(16, "last_error")?,
        review_flag: get::<i64>(r, 17, &no, "review_flag")? == 1,
        review_reason: c.reason(text(18, "review_reason")?.as_deref())?,
        flagged_at: ts(19, "flagged_at")?,
    })
}

/// [`refund`], or the row named as unreadable (its id and number read leniently).
pub(super) fn refund_or_unreadable(r: &Row) -> Result<RefundRow, UnreadableRow> {
    refund(r).map_err(|e| UnreadableRow {
        table: "refunds",
        id: r.try_get::<_, i64>(20).unwrap_or(-1),
        out_refund_no: r.try_get::<_, String>(0).ok(),
        detail: match e {
            LedgerError::CorruptRow { column, detail, .. } => format!("column {column}: {detail}"),
            other => other.to_string(),
        },
    })
}

/// The state `decide` works from.
pub(super) fn state_of(row: &RefundRow) -> RefundState {
    RefundState {
        out_refund_no: row.out_refund_no.clone(),
        refund_trade_no: row.refund_trade_no.clone(),
        amount: row.amount,
        currency: row.currency,
        created_at: row.created_at,
        attempts: row.attempts,
        unknown_since: row.unknown_since,
        flagged: row.review_flag,
        rejected_before: row.review_flag
            && row.review_reason == Some(ReviewReason::GatewayRejectedRequest),
        last_error: row.last_error.clone(),
    }
}
