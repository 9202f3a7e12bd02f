//! Row reading, one pattern for every table: a `Raw*` struct copies a result row's values as
//! SQLite stored them ([`RawRow::read`]), then [`RawRow::parse`] checks and types them. Reading
//! first keeps SQLite's errors (`Sqlite`) apart from bad stored values (`CorruptRow`), and each
//! table's column list lives next to the code that reads it, in the same order.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};

use super::error::{During, LedgerError};
use super::types::{
    AttemptRow, Cell, DiscrepancyRow, NotificationRow, OperatorActionRow, RefundRow, SweepCounts,
    SweepRow, UnreadableRow,
};

/// A table's row as stored, before parsing.
pub(super) trait RawRow: Sized {
    /// The typed row it parses into.
    type Parsed;
    /// The columns [`RawRow::read`] takes, in its order: `SELECT {COLUMNS} FROM ...`.
    const COLUMNS: &'static str;
    /// The table, to name a row that cannot be read.
    const TABLE: &'static str;
    /// Where in [`RawRow::COLUMNS`] the row id is.
    const ID_AT: usize;
    /// Where in [`RawRow::COLUMNS`] the refund number is, if the table has one.
    const REFUND_NO_AT: Option<usize>;
    /// Copies one result row's values; fails only on SQLite errors and storage types.
    fn read(r: &Row<'_>) -> rusqlite::Result<Self>;
    /// Checks and types the values; a value that does not parse is `CorruptRow`.
    fn parse(self) -> Result<Self::Parsed, LedgerError>;
}

/// Runs `sql` (a `SELECT {R::COLUMNS} ...`; a transaction derefs to its connection) and
/// parses every row.
pub(super) fn select<R: RawRow>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<R::Parsed>, LedgerError> {
    let mut stmt = conn.prepare_cached(sql).during(op)?;
    let rows = stmt.query_map(args, R::read).during(op)?;
    rows.map(|raw| raw.during(op)?.parse()).collect()
}

/// Like [`select`], but one row that cannot be read (a value of the wrong type, or one that
/// does not parse) does not fail the read: it comes back as an [`UnreadableRow`] naming the
/// row and the problem, in its place. SQLite's own errors (I/O, locks) still fail it.
pub(super) fn select_each<R: RawRow>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Result<R::Parsed, UnreadableRow>>, LedgerError> {
    let mut stmt = conn.prepare_cached(sql).during(op)?;
    let rows = stmt
        .query_map(args, |r| {
            let who = identify::<R>(r);
            Ok(match R::read(r) {
                Ok(raw) => Ok((who, raw)),
                Err(e) if is_value_error(&e) => Err(who.unreadable(e.to_string())),
                Err(e) => return Err(e),
            })
        })
        .during(op)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(match row.during(op)? {
            Ok((who, raw)) => raw.parse().map_err(|e| who.unreadable(corrupt_detail(e))),
            Err(bad) => Err(bad),
        });
    }
    Ok(out)
}

/// A row's identity, read without failing on a bad value.
pub(super) struct Who {
    table: &'static str,
    id: i64,
    out_refund_no: Option<String>,
}

impl Who {
    /// The row id (-1 when it was not an integer).
    pub(super) fn id(&self) -> i64 {
        self.id
    }

    pub(super) fn unreadable(&self, detail: String) -> UnreadableRow {
        UnreadableRow {
            table: self.table,
            id: self.id,
            out_refund_no: self.out_refund_no.clone(),
            detail,
        }
    }
}

/// Reads the row id and refund number of a result row leniently (an id that is not an
/// integer reads as -1, a refund number that is not text as none).
pub(super) fn identify<R: RawRow>(r: &Row<'_>) -> Who {
    let id = match r.get_ref(R::ID_AT) {
        Ok(ValueRef::Integer(id)) => id,
        _ => -1,
    };
    let out_refund_no = R::REFUND_NO_AT.and_then(|at| match r.get_ref(at) {
        Ok(ValueRef::Text(t)) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    });
    Who {
        table: R::TABLE,
        id,
        out_refund_no,
    }
}

/// True for errors about one value (its type or its text), not about SQLite itself.
fn is_value_error(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// The part of a parse error that says what is wrong (the row is named separately).
fn corrupt_detail(e: LedgerError) -> String {
    match e {
        LedgerError::CorruptRow { column, detail, .. } => format!("column {column}: {detail}"),
        other => other.to_string(),
    }
}

/// A `refunds` row as stored. Columns 12 (`attempts`) and 17 (`review_flag`) are integers;
/// every other column is text but the last, `id`, which only names the row (see [`identify`]).
pub(super) struct RawRefund {
    text: [Option<String>; 20],
    attempts: i64,
    review_flag: i64,
}

impl RawRow for RawRefund {
    type Parsed = RefundRow;
    const COLUMNS: &'static str = "out_refund_no, refund_trade_no, out_trade_no, amount, \
        currency, status, created_at, notified_at, finalized_at, final_source, \
        refund_finish_time, next_query_at, attempts, unknown_since, last_attempt_at, \
        last_outcome, last_error, review_flag, review_reason, flagged_at, id";
    const TABLE: &'static str = "refunds";
    const ID_AT: usize = 20;
    const REFUND_NO_AT: Option<usize> = Some(0);

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        let mut text: [Option<String>; 20] = Default::default();
        for (i, slot) in text.iter_mut().enumerate() {
            if i != 12 && i != 17 {
                *slot = r.get(i)?;
            }
        }
        Ok(Self {
            text,
            attempts: r.get(12)?,
            review_flag: r.get(17)?,
        })
    }

    fn parse(self) -> Result<RefundRow, LedgerError> {
        let t = &self.text;
        let no = t[0].as_deref().unwrap_or("");
        let c = Cell { out_refund_no: no };
        let req = |i: usize, column: &'static str| -> Result<&str, LedgerError> {
            t[i].as_deref().ok_or_else(|| LedgerError::CorruptRow {
                out_refund_no: no.to_owned(),
                column,
                detail: "is NULL".to_owned(),
            })
        };
        Ok(RefundRow {
            out_refund_no: c.parse("out_refund_no", req(0, "out_refund_no")?)?,
            refund_trade_no: t[1].clone(),
            out_trade_no: t[2].clone(),
            amount: c.amount("amount", req(3, "amount")?)?,
            currency: c.parse("currency", req(4, "currency")?)?,
            status: c.parse("status", req(5, "status")?)?,
            created_at: c.ts("created_at", req(6, "created_at")?)?,
            notified_at: c.ts_opt("notified_at", t[7].as_deref())?,
            finalized_at: c.ts_opt("finalized_at", t[8].as_deref())?,
            final_source: c.parse_opt("final_source", t[9].as_deref())?,
            refund_finish_time: c.ts_opt("refund_finish_time", t[10].as_deref())?,
            next_query_at: c.ts_opt("next_query_at", t[11].as_deref())?,
            attempts: c.int("attempts", self.attempts)?,
            unknown_since: c.ts_opt("unknown_since", t[13].as_deref())?,
            last_attempt_at: c.ts_opt("last_attempt_at", t[14].as_deref())?,
            last_outcome: t[15]
                .as_deref()
                .map(|o| c.outcome("last_outcome", o))
                .transpose()?,
            last_error: t[16].clone(),
            review_flag: match self.review_flag {
                0 => false,
                1 => true,
                other => {
                    return Err(LedgerError::CorruptRow {
                        out_refund_no: no.to_owned(),
                        column: "review_flag",
                        detail: format!("{other} is neither 0 nor 1"),
                    });
                }
            },
            review_reason: c.reason(t[18].as_deref())?,
            flagged_at: c.ts_opt("flagged_at", t[19].as_deref())?,
        })
    }
}

/// A `sweeps` row as stored.
pub(super) struct RawSweep {
    id: i64,
    started_at: String,
    finished_at: Option<String>,
    counts: [i64; 5],
    halted_reason: Option<String>,
    halt_code: Option<String>,
    error: Option<String>,
    breaker_open_since: Option<String>,
}

impl RawRow for RawSweep {
    type Parsed = SweepRow;
    const COLUMNS: &'static str = "id, started_at, finished_at, claimed, finalized, \
        rescheduled, failed, halted_reason, halt_code, unreadable, error, breaker_open_since";
    const TABLE: &'static str = "sweeps";
    const ID_AT: usize = 0;
    const REFUND_NO_AT: Option<usize> = None;

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            started_at: r.get(1)?,
            finished_at: r.get(2)?,
            counts: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(9)?],
            halted_reason: r.get(7)?,
            halt_code: r.get(8)?,
            error: r.get(10)?,
            breaker_open_since: r.get(11)?,
        })
    }

    fn parse(self) -> Result<SweepRow, LedgerError> {
        let label = format!("(sweep {})", self.id);
        let c = Cell {
            out_refund_no: &label,
        };
        let [claimed, finalized, rescheduled, failed, unreadable] = self.counts;
        Ok(SweepRow {
            id: self.id,
            started_at: c.ts("started_at", &self.started_at)?,
            finished_at: c.ts_opt("finished_at", self.finished_at.as_deref())?,
            counts: SweepCounts {
                claimed: c.int("claimed", claimed)?,
                finalized: c.int("finalized", finalized)?,
                rescheduled: c.int("rescheduled", rescheduled)?,
                failed: c.int("failed", failed)?,
                unreadable: c.int("unreadable", unreadable)?,
            },
            halted_reason: self.halted_reason,
            halt_code: c.parse_opt("halt_code", self.halt_code.as_deref())?,
            error: self.error,
            breaker_open_since: c
                .ts_opt("breaker_open_since", self.breaker_open_since.as_deref())?,
        })
    }
}

/// An `attempts` row as stored.
pub(super) struct RawAttempt {
    id: i64,
    out_refund_no: String,
    attempted_at: String,
    outcome: String,
    http_status: Option<i64>,
    gateway_code: Option<String>,
    data_status: Option<String>,
    latency_ms: i64,
    error: Option<String>,
    decision: Option<String>,
    sweep_id: Option<i64>,
    node: Option<String>,
}

impl RawRow for RawAttempt {
    type Parsed = AttemptRow;
    const COLUMNS: &'static str = "id, out_refund_no, attempted_at, outcome, http_status, \
        gateway_code, data_status, latency_ms, error, decision, sweep_id, node";
    const TABLE: &'static str = "attempts";
    const ID_AT: usize = 0;
    const REFUND_NO_AT: Option<usize> = Some(1);

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            out_refund_no: r.get(1)?,
            attempted_at: r.get(2)?,
            outcome: r.get(3)?,
            http_status: r.get(4)?,
            gateway_code: r.get(5)?,
            data_status: r.get(6)?,
            latency_ms: r.get(7)?,
            error: r.get(8)?,
            decision: r.get(9)?,
            sweep_id: r.get(10)?,
            node: r.get(11)?,
        })
    }

    fn parse(self) -> Result<AttemptRow, LedgerError> {
        let c = Cell {
            out_refund_no: &self.out_refund_no,
        };
        Ok(AttemptRow {
            id: self.id,
            out_refund_no: c.parse("out_refund_no", &self.out_refund_no)?,
            attempted_at: c.ts("attempted_at", &self.attempted_at)?,
            outcome: c.outcome("outcome", &self.outcome)?,
            http_status: self
                .http_status
                .map(|v| c.int("http_status", v))
                .transpose()?,
            latency_ms: c.int("latency_ms", self.latency_ms)?,
            gateway_code: self.gateway_code,
            data_status: self.data_status,
            error: self.error,
            decision: self.decision,
            sweep_id: self.sweep_id,
            node: self.node,
        })
    }
}

/// A `discrepancies` row as stored.
pub(super) struct RawDiscrepancy {
    id: i64,
    out_refund_no: String,
    detected_at: String,
    source: String,
    kind: String,
    expected: Option<String>,
    observed: Option<String>,
    resolved_at: Option<String>,
    resolved_by: Option<String>,
    resolution: Option<String>,
}

impl RawRow for RawDiscrepancy {
    type Parsed = DiscrepancyRow;
    const COLUMNS: &'static str = "id, out_refund_no, detected_at, source, kind, expected, \
        observed, resolved_at, resolved_by, resolution";
    const TABLE: &'static str = "discrepancies";
    const ID_AT: usize = 0;
    const REFUND_NO_AT: Option<usize> = Some(1);

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            out_refund_no: r.get(1)?,
            detected_at: r.get(2)?,
            source: r.get(3)?,
            kind: r.get(4)?,
            expected: r.get(5)?,
            observed: r.get(6)?,
            resolved_at: r.get(7)?,
            resolved_by: r.get(8)?,
            resolution: r.get(9)?,
        })
    }

    fn parse(self) -> Result<DiscrepancyRow, LedgerError> {
        let c = Cell {
            out_refund_no: &self.out_refund_no,
        };
        Ok(DiscrepancyRow {
            id: self.id,
            out_refund_no: c.parse("out_refund_no", &self.out_refund_no)?,
            detected_at: c.ts("detected_at", &self.detected_at)?,
            source: c.parse("source", &self.source)?,
            kind: c.parse("kind", &self.kind)?,
            resolved_at: c.ts_opt("resolved_at", self.resolved_at.as_deref())?,
            expected: self.expected,
            observed: self.observed,
            resolved_by: self.resolved_by,
            resolution: self.resolution,
        })
    }
}

/// A `notifications` row as stored.
pub(super) struct RawNotification {
    id: i64,
    out_refund_no: String,
    status: String,
    refund_trade_no: Option<String>,
    amount: String,
    currency: String,
    refund_finish_time: Option<String>,
    notify_time: String,
    received_at: String,
    effect: Option<String>,
}

impl RawRow for RawNotification {
    type Parsed = NotificationRow;
    const COLUMNS: &'static str = "id, out_refund_no, status, refund_trade_no, amount, \
        currency, refund_finish_time, notify_time, received_at, effect";
    const TABLE: &'static str = "notifications";
    const ID_AT: usize = 0;
    const REFUND_NO_AT: Option<usize> = Some(1);

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            out_refund_no: r.get(1)?,
            status: r.get(2)?,
            refund_trade_no: r.get(3)?,
            amount: r.get(4)?,
            currency: r.get(5)?,
            refund_finish_time: r.get(6)?,
            notify_time: r.get(7)?,
            received_at: r.get(8)?,
            effect: r.get(9)?,
        })
    }

    fn parse(self) -> Result<NotificationRow, LedgerError> {
        let c = Cell {
            out_refund_no: &self.out_refund_no,
        };
        Ok(NotificationRow {
            id: self.id,
            out_refund_no: c.parse("out_refund_no", &self.out_refund_no)?,
            status: c.parse("status", &self.status)?,
            refund_trade_no: self.refund_trade_no,
            amount: c.amount("amount", &self.amount)?,
            currency: c.parse("currency", &self.currency)?,
            refund_finish_time: c
                .ts_opt("refund_finish_time", self.refund_finish_time.as_deref())?,
            notify_time: c.ts("notify_time", &self.notify_time)?,
            received_at: c.ts("received_at", &self.received_at)?,
            effect: c.parse_opt("effect", self.effect.as_deref())?,
        })
    }
}

/// An `operator_actions` row as stored.
pub(super) struct RawOperatorAction {
    id: i64,
    at: String,
    actor: String,
    action: String,
    out_refund_no: Option<String>,
    to_status: Option<String>,
    reason: Option<String>,
    detail: Option<String>,
}

impl RawRow for RawOperatorAction {
    type Parsed = OperatorActionRow;
    const COLUMNS: &'static str = "id, at, actor, action, out_refund_no, to_status, reason, \
        detail";
    const TABLE: &'static str = "operator_actions";
    const ID_AT: usize = 0;
    const REFUND_NO_AT: Option<usize> = Some(4);

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            out_refund_no: r.get(4)?,
            to_status: r.get(5)?,
            reason: r.get(6)?,
            detail: r.get(7)?,
        })
    }

    fn parse(self) -> Result<OperatorActionRow, LedgerError> {
        let label = format!("(operator action {})", self.id);
        let c = Cell {
            out_refund_no: self.out_refund_no.as_deref().unwrap_or(&label),
        };
        Ok(OperatorActionRow {
            id: self.id,
            at: c.ts("at", &self.at)?,
            action: c.parse("action", &self.action)?,
            out_refund_no: c.parse_opt("out_refund_no", self.out_refund_no.as_deref())?,
            to_status: c.parse_opt("to_status", self.to_status.as_deref())?,
            actor: self.actor,
            reason: self.reason,
            detail: self.detail,
        })
    }
}
