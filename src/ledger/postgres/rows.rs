//! Typed rows from PostgreSQL result rows. Each table's column list lives next to the code that
//! reads it, in its order. Amounts are selected as text (`amount::text`, the exact written
//! number) and instants as timestamptz; the enums stored as TEXT parse as on SQLite, and a value
//! that does not is `CorruptRow` (or, in a list, an [`UnreadableRow`] in its place).

use postgres::Row;
use postgres::types::FromSql;

use crate::domain::{RefundState, ReviewReason, Timestamp};
use crate::ledger::error::LedgerError;
use crate::ledger::types::{
    AttemptRow, Cell, DiscrepancyRow, NotificationRow, OperatorActionRow, RefundRow, SweepCounts,
    SweepRow, UnreadableRow,
};

/// The `refunds` columns [`refund`] reads, in its order.
pub(super) const REFUND_COLUMNS: &str = "out_refund_no, refund_trade_no, out_trade_no, \
    amount::text, currency, status, created_at, notified_at, finalized_at, final_source, \
    refund_finish_time, next_query_at, attempts, unknown_since, last_attempt_at, last_outcome, \
    last_error, review_flag, review_reason, flagged_at, id";

/// Reads column `i`, naming the column when the server's type is not the one expected (a
/// schema that changed under us).
pub(super) fn get<'a, T: FromSql<'a>>(
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

/// The `sweeps` columns [`sweep`] reads, in its order.
pub(super) const SWEEP_COLUMNS: &str = "id, started_at, finished_at, claimed, finalized, \
    rescheduled, failed, halted_reason, halt_code, unreadable, error, breaker_open_since";

/// One `sweeps` row of [`SWEEP_COLUMNS`].
pub(super) fn sweep(r: &Row) -> Result<SweepRow, LedgerError> {
    let id: i64 = get(r, 0, "(sweep)", "id")?;
    let label = format!("(sweep {id})");
    let c = Cell {
        out_refund_no: &label,
    };
    let n = |i: usize, column: &'static str| -> Result<u64, LedgerError> {
        c.int(column, get::<i64>(r, i, &label, column)?)
    };
    Ok(SweepRow {
        id,
        started_at: get(r, 1, &label, "started_at")?,
        finished_at: get(r, 2, &label, "finished_at")?,
        counts: SweepCounts {
            claimed: n(3, "claimed")?,
            finalized: n(4, "finalized")?,
            rescheduled: n(5, "rescheduled")?,
            failed: n(6, "failed")?,
            unreadable: n(9, "unreadable")?,
        },
        halted_reason: get(r, 7, &label, "halted_reason")?,
        halt_code: c.parse_opt(
            "halt_code",
            get::<Option<String>>(r, 8, &label, "halt_code")?.as_deref(),
        )?,
        error: get(r, 10, &label, "error")?,
        breaker_open_since: get(r, 11, &label, "breaker_open_since")?,
    })
}

/// [`sweep`], or the row named as unreadable.
pub(super) fn sweep_or_unreadable(r: &Row) -> Result<SweepRow, UnreadableRow> {
    sweep(r).map_err(|e| unreadable("sweeps", r, None, e))
}

/// The `attempts` columns [`attempt`] reads, in its order.
pub(super) const ATTEMPT_COLUMNS: &str = "id, out_refund_no, attempted_at, outcome, http_status, \
    gateway_code, data_status, latency_ms, error, decision, sweep_id, node";

/// One `attempts` row of [`ATTEMPT_COLUMNS`].
pub(super) fn attempt(r: &Row) -> Result<AttemptRow, LedgerError> {
    let no: String = get(r, 1, "", "out_refund_no")?;
    let c = Cell { out_refund_no: &no };
    Ok(AttemptRow {
        id: get(r, 0, &no, "id")?,
        out_refund_no: c.parse("out_refund_no", &no)?,
        attempted_at: get(r, 2, &no, "attempted_at")?,
        outcome: c.outcome("outcome", &get::<String>(r, 3, &no, "outcome")?)?,
        http_status: get::<Option<i64>>(r, 4, &no, "http_status")?
            .map(|v| c.int("http_status", v))
            .transpose()?,
        gateway_code: get(r, 5, &no, "gateway_code")?,
        data_status: get(r, 6, &no, "data_status")?,
        latency_ms: c.int("latency_ms", get(r, 7, &no, "latency_ms")?)?,
        error: get(r, 8, &no, "error")?,
        decision: get(r, 9, &no, "decision")?,
        sweep_id: get(r, 10, &no, "sweep_id")?,
        node: get(r, 11, &no, "node")?,
    })
}

/// The `discrepancies` columns [`discrepancy`] reads, in its order.
pub(super) const DISCREPANCY_COLUMNS: &str = "id, out_refund_no, detected_at, source, kind, \
    expected, observed, resolved_at, resolved_by, resolution";

/// One `discrepancies` row of [`DISCREPANCY_COLUMNS`].
pub(super) fn discrepancy(r: &Row) -> Result<DiscrepancyRow, LedgerError> {
    let no: String = get(r, 1, "", "out_refund_no")?;
    let c = Cell { out_refund_no: &no };
    Ok(DiscrepancyRow {
        id: get(r, 0, &no, "id")?,
        out_refund_no: c.parse("out_refund_no", &no)?,
        detected_at: get(r, 2, &no, "detected_at")?,
        source: c.parse("source", &get::<String>(r, 3, &no, "source")?)?,
        kind: c.parse("kind", &get::<String>(r, 4, &no, "kind")?)?,
        expected: get(r, 5, &no, "expected")?,
        observed: get(r, 6, &no, "observed")?,
        resolved_at: get(r, 7, &no, "resolved_at")?,
        resolved_by: get(r, 8, &no, "resolved_by")?,
        resolution: get(r, 9, &no, "resolution")?,
    })
}

/// The `notifications` columns [`notification`] reads, in its order.
pub(super) const NOTIFICATION_COLUMNS: &str = "id, out_refund_no, status, refund_trade_no, \
    amount::text, currency, refund_finish_time, notify_time, received_at, effect";

/// One `notifications` row of [`NOTIFICATION_COLUMNS`].
pub(super) fn notification(r: &Row) -> Result<NotificationRow, LedgerError> {
    let no: String = get(r, 1, "", "out_refund_no")?;
    let c = Cell { out_refund_no: &no };
    Ok(NotificationRow {
        id: get(r, 0, &no, "id")?,
        out_refund_no: c.parse("out_refund_no", &no)?,
        status: c.parse("status", &get::<String>(r, 2, &no, "status")?)?,
        refund_trade_no: get(r, 3, &no, "refund_trade_no")?,
        amount: c.amount("amount", &get::<String>(r, 4, &no, "amount")?)?,
        currency: c.parse("currency", &get::<String>(r, 5, &no, "currency")?)?,
        refund_finish_time: get(r, 6, &no, "refund_finish_time")?,
        notify_time: get(r, 7, &no, "notify_time")?,
        received_at: get(r, 8, &no, "received_at")?,
        effect: c.parse_opt(
            "effect",
            get::<Option<String>>(r, 9, &no, "effect")?.as_deref(),
        )?,
    })
}

/// The `operator_actions` columns [`operator_action`] reads, in its order.
pub(super) const OPERATOR_ACTION_COLUMNS: &str =
    "id, at, actor, action, out_refund_no, to_status, reason, detail";

/// One `operator_actions` row of [`OPERATOR_ACTION_COLUMNS`].
pub(super) fn operator_action(r: &Row) -> Result<OperatorActionRow, LedgerError> {
    let id: i64 = get(r, 0, "(operator action)", "id")?;
    let label = format!("(operator action {id})");
    let no: Option<String> = get(r, 4, &label, "out_refund_no")?;
    let c = Cell {
        out_refund_no: no.as_deref().unwrap_or(&label),
    };
    Ok(OperatorActionRow {
        id,
        at: get(r, 1, &label, "at")?,
        actor: get(r, 2, &label, "actor")?,
        action: c.parse("action", &get::<String>(r, 3, &label, "action")?)?,
        out_refund_no: c.parse_opt("out_refund_no", no.as_deref())?,
        to_status: c.parse_opt(
            "to_status",
            get::<Option<String>>(r, 5, &label, "to_status")?.as_deref(),
        )?,
        reason: get(r, 6, &label, "reason")?,
        detail: get(r, 7, &label, "detail")?,
    })
}

/// [`operator_action`], or the row named as unreadable.
pub(super) fn operator_action_or_unreadable(r: &Row) -> Result<OperatorActionRow, UnreadableRow> {
    operator_action(r).map_err(|e| unreadable("operator_actions", r, Some(4), e))
}

/// A row of `table` that did not read: its id (column 0) and refund number (column `no_at`)
/// read leniently, and what was wrong.
fn unreadable(table: &'static str, r: &Row, no_at: Option<usize>, e: LedgerError) -> UnreadableRow {
    UnreadableRow {
        table,
        id: r.try_get::<_, i64>(0).unwrap_or(-1),
        out_refund_no: no_at.and_then(|i| r.try_get::<_, Option<String>>(i).ok().flatten()),
        detail: match e {
            LedgerError::CorruptRow { column, detail, .. } => format!("column {column}: {detail}"),
            other => other.to_string(),
        },
    }
}
