//! Writes: new refunds (one, or an all-or-nothing import), scheduling, the outcome of query
//! attempts (one, or a group commit with a savepoint per attempt), a refused attempt, and
//! sweeps. The same statements as the SQLite engine's `write.rs`, in PostgreSQL's form, plus
//! version 10's columns: the node that made an attempt or ran a sweep, and the lease that an
//! attempt's write releases.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use super::rows::{REFUND_COLUMNS, refund};
use super::{Db, PgLedger, ms};
use crate::domain::{
    Change, Decision, FinalSource, FinalStatus, Halt, InvalidValue, NewRefund, OutcomeClass,
    QueryReport, RefundStatus, ReviewReason, Timestamp, validate_amount,
};
use crate::ledger::error::{
    EngineError, LedgerError, is_pg_trigger, is_pg_unique_violation, trigger_msg,
};
use crate::ledger::types::{Applied, Cell, SweepEnd, clip_error, decision_text};
use crate::ledger::{IMPORT_PROGRESS_EVERY, Registered};

const INSERT_REFUND: &str = "\
    INSERT INTO refunds (out_refund_no, refund_trade_no, out_trade_no, amount, currency, status,
                         created_at, final_source, finalized_at)
    VALUES ($1, $2, $3, $4::text::numeric, $5, $6, $7, $8, $9)";

/// `record_attempt`'s operation name.
const RECORD_ATTEMPT: &str = "record attempt";

/// A count or latency as a bigint parameter.
fn big(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgLedger {
    /// Inserts one new refund (see the SQLite engine's `insert_refund`: a `REFUND_FAILED` one
    /// is recorded final with source `refund_response`).
    pub fn insert_refund(&self, r: &NewRefund) -> Result<(), LedgerError> {
        self.write("insert refund", |db| insert_one(db, r, None))
    }

    /// Registers one new refund for the HTTP API: the row as stored, or the row that already
    /// holds its number, read in the same transaction (the insert runs in a savepoint, since
    /// a refused statement would otherwise end the transaction).
    pub fn register_refund(&self, r: &NewRefund) -> Result<Registered, LedgerError> {
        const OP: &str = "register refund";
        self.write(OP, |db| {
            let inserted = db.savepoint(OP, |db| insert_one(db, r, None))?;
            let no = r.out_refund_no.as_str();
            match inserted {
                Ok(()) => {
                    let row = refund_of(db, no)?.ok_or_else(|| LedgerError::CorruptRow {
                        out_refund_no: no.to_owned(),
                        column: "out_refund_no",
                        detail: "the refund just inserted cannot be read back".into(),
                    })?;
                    Ok(Registered::Created(Box::new(row)))
                }
                Err(LedgerError::DuplicateRefund { .. }) => Ok(match refund_of(db, no)? {
                    Some(row) => Registered::Existing(Box::new(row)),
                    None => Registered::Pruned,
                }),
                Err(e) => Err(e),
            }
        })
    }

    /// Inserts all `rows` in ONE transaction, all or nothing; the first row refused (invalid,
    /// or a number already in the ledger or earlier in `rows`) names its position. Rows go in
    /// as multi-row INSERTs of [`IMPORT_CHUNK`] (one round trip each, not one per row); a chunk
    /// the server refuses anyway (a concurrent insert of the same number) is rolled back to
    /// its savepoint and inserted row by row, to name the row. `progress` is called every
    /// [`IMPORT_PROGRESS_EVERY`] rows (again from the start if PostgreSQL made the transaction
    /// run again).
    pub fn import(
        &mut self,
        rows: &[NewRefund],
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, LedgerError> {
        const OP: &str = "import refunds";
        self.write(OP, |db| {
            let mut seen = HashSet::with_capacity(rows.len());
            for (c, chunk) in rows.chunks(IMPORT_CHUNK).enumerate() {
                let first = c * IMPORT_CHUNK;
                check_chunk(db, chunk, first, &mut seen)?;
                let inserted = db.savepoint(OP, |db| insert_chunk(db, chunk))?;
                if inserted.is_err() {
                    for (i, r) in chunk.iter().enumerate() {
                        insert_one(db, r, Some(first + i))?;
                    }
                }
                let done = first + chunk.len();
                if done.is_multiple_of(IMPORT_PROGRESS_EVERY) {
                    progress(done);
                }
            }
            Ok(rows.len())
        })
    }

    /// Schedules the first query of every pending refund that has none yet, at
    /// `created_at + grace` (exact to the millisecond). Returns how many were scheduled.
    pub fn schedule_new(&self, grace: Duration) -> Result<usize, LedgerError> {
        const OP: &str = "schedule new refunds";
        let grace_ms = big(grace.as_millis());
        self.write(OP, |db| {
            let n = db.execute(
                OP,
                "UPDATE refunds
                    SET next_query_at = created_at + $1::bigint * interval '1 millisecond'
                  WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL",
                &[&grace_ms],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Records one query attempt outside any sweep (`query`).
    pub fn record_attempt(
        &mut self,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError> {
        self.record_attempt_in(None, attempt, decision)
    }

    /// Records one query attempt of the sweep `sweep` and applies `decision`, in one
    /// transaction: the attempt row, the change as a compare-and-set on the pending status
    /// (releasing this node's lease), then the decision's discrepancies.
    pub fn record_attempt_in(
        &mut self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError> {
        let node = self.node.clone();
        self.write(RECORD_ATTEMPT, |db| {
            lock_refunds(db, std::slice::from_ref(&attempt.out_refund_no))?;
            apply_attempt(db, node.as_deref(), sweep, attempt, decision)
        })
    }

    /// Group commit: every `(sweep, attempt, decision)` of `batch` as
    /// [`PgLedger::record_attempt_in`] would, in ONE transaction, each in its own savepoint
    /// (one that fails is rolled back alone and returns its own error). The refund rows are
    /// locked first, in id order, so two batches (or a batch and the merchant's notification)
    /// wait for each other instead of deadlocking. `Err`: none of the batch was written.
    pub fn record_attempts(
        &mut self,
        batch: &[(Option<i64>, QueryReport, Decision)],
    ) -> Result<Vec<Result<Applied, LedgerError>>, LedgerError> {
        let node = self.node.clone();
        let numbers: Vec<_> = batch
            .iter()
            .map(|(_, a, _)| a.out_refund_no.clone())
            .collect();
        self.write(RECORD_ATTEMPT, |db| {
            lock_refunds(db, &numbers)?;
            let mut out = Vec::with_capacity(batch.len());
            for (sweep, attempt, decision) in batch {
                let result = db.savepoint(RECORD_ATTEMPT, |db| {
                    apply_attempt(db, node.as_deref(), *sweep, attempt, decision)
                })?;
                // A conflict PostgreSQL resolves by aborting runs the whole batch again.
                if let Err(e) = &result
                    && e.is_pg_retryable()
                {
                    return Err(result.unwrap_err());
                }
                out.push(result);
            }
            Ok(out)
        })
    }

    /// Flags the refund row `id` the worker could not read (`row_unreadable`); false when the
    /// row is gone.
    pub fn flag_unreadable(
        &self,
        id: i64,
        at: Timestamp,
        detail: &str,
    ) -> Result<bool, LedgerError> {
        const OP: &str = "flag an unreadable row";
        let at = ms(at);
        self.write(OP, |db| {
            let changed = db.execute(
                OP,
                "UPDATE refunds SET review_flag = 1, review_reason = 'row_unreadable',
                        flagged_at = $2, last_error = $3
                  WHERE id = $1",
                &[&id, &at, &clip_error(detail)],
            )?;
            Ok(changed == 1)
        })
    }

    /// An attempt the ledger refused to record: recorded bare, the refund flagged
    /// `row_unwritable`, nothing applied, in one transaction.
    pub fn record_refused_attempt(
        &self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        class: OutcomeClass,
        refusal: &str,
    ) -> Result<(), LedgerError> {
        const OP: &str = "record a refused attempt";
        let at = ms(attempt.attempted_at);
        let error = clip_error(refusal);
        let no = attempt.out_refund_no.as_str();
        let latency = big(attempt.latency.as_millis());
        let node = self.node.clone();
        self.write(OP, |db| {
            db.execute(
                OP,
                "INSERT INTO attempts (out_refund_no, attempted_at, outcome, latency_ms, error,
                                       decision, sweep_id, node)
                 VALUES ($1, $2, $3, $4, $5,
                         'not applied: the ledger refused it; flag row_unwritable', $6, $7)",
                &[&no, &at, &class.as_str(), &latency, &error, &sweep, &node],
            )?;
            db.execute(
                OP,
                "UPDATE refunds SET review_flag = 1, review_reason = 'row_unwritable',
                        flagged_at = $2, last_error = $3,
                        claimed_by = NULL, claimed_until = NULL
                  WHERE out_refund_no = $1",
                &[&no, &at, &error],
            )?;
            Ok(())
        })
    }

    /// Starts a sweep row run by `node`; returns its id.
    pub fn begin_sweep(&self, started_at: Timestamp, node: &str) -> Result<i64, LedgerError> {
        const OP: &str = "begin sweep";
        let at = ms(started_at);
        let node = node.to_owned();
        self.write(OP, |db| {
            Ok(db
                .query_one(
                    OP,
                    "INSERT INTO sweeps (started_at, node) VALUES ($1, $2) RETURNING id",
                    &[&at, &node],
                )?
                .get(0))
        })
    }

    /// Closes the sweeps THIS node left open (a drain deadline that passed, or a crash):
    /// another node's open sweep may be running now. Returns how many it closed.
    pub fn close_interrupted_sweeps(&self, at: Timestamp) -> Result<usize, LedgerError> {
        const OP: &str = "close interrupted sweeps";
        let at = ms(at);
        let node = self.node.clone();
        self.write(OP, |db| {
            let n = db.execute(
                OP,
                "UPDATE sweeps SET finished_at = $1,
                        halted_reason = 'interrupted: the daemon stopped before this sweep finished'
                  WHERE finished_at IS NULL AND node IS NOT DISTINCT FROM $2",
                &[&at, &node],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Records how the sweep `id` ended (see the SQLite engine's `finish_sweep`).
    pub fn finish_sweep(
        &self,
        id: i64,
        finished_at: Timestamp,
        end: &SweepEnd,
    ) -> Result<(), LedgerError> {
        const OP: &str = "finish sweep";
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let reason = end.halt.as_ref().map(Halt::to_string);
        let code = end.halt.as_ref().map(|h| h.code().as_str());
        let c = &end.counts;
        let counts = [
            n(c.claimed),
            n(c.finalized),
            n(c.rescheduled),
            n(c.failed),
            n(c.unreadable),
        ];
        let error = end.error.as_deref().map(clip_error);
        let at = ms(finished_at);
        let breaker = end.breaker_open_since.map(ms);
        self.write(OP, |db| {
            let changed = db.execute(
                OP,
                "UPDATE sweeps SET finished_at = $2, claimed = $3, finalized = $4,
                        rescheduled = $5, failed = $6, halted_reason = $7, halt_code = $8,
                        unreadable = $9, error = $10, breaker_open_since = $11
                  WHERE id = $1",
                &[
                    &id, &at, &counts[0], &counts[1], &counts[2], &counts[3], &reason, &code,
                    &counts[4], &error, &breaker,
                ],
            )?;
            if changed == 0 {
                return Err(LedgerError::SweepNotFound { id });
            }
            Ok(())
        })
    }
}

/// One refund's row, or none.
pub(super) fn refund_of(
    db: &mut Db<'_>,
    no: &str,
) -> Result<Option<crate::ledger::RefundRow>, LedgerError> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = $1"));
    db.query_opt("read refund", SQL.as_str(), &[&no])?
        .as_ref()
        .map(refund)
        .transpose()
}

/// Locks the refund rows of `numbers` in id order (`FOR UPDATE`), so every writer of a batch
/// takes them in one order.
fn lock_refunds(
    db: &mut Db<'_>,
    numbers: &[crate::domain::OutRefundNo],
) -> Result<(), LedgerError> {
    let numbers: Vec<&str> = numbers.iter().map(|n| n.as_str()).collect();
    db.query(
        RECORD_ATTEMPT,
        "SELECT id FROM refunds WHERE out_refund_no = ANY($1) ORDER BY id FOR UPDATE",
        &[&numbers],
    )?;
    Ok(())
}

/// How many rows one INSERT of an import carries (a divisor of [`IMPORT_PROGRESS_EVERY`], so
/// progress is reported at its exact multiples).
const IMPORT_CHUNK: usize = 2_000;

/// What [`insert_one`] binds for one refund, validated: amount text, created_at, final source
/// and time.
type Checked = (String, Timestamp, Option<&'static str>, Option<Timestamp>);

/// Checks one refund as the ledger's CHECKs would, saying why it cannot be stored.
fn checked(r: &NewRefund, index: Option<usize>) -> Result<Checked, LedgerError> {
    let invalid = |source: InvalidValue| LedgerError::InvalidRefund {
        out_refund_no: r.out_refund_no.clone(),
        index,
        source,
    };
    let amount = r.amount.to_string();
    validate_amount(&amount, r.currency).map_err(invalid)?;
    let created_at = ms(r.created_at);
    let (final_source, finalized_at) = match r.status {
        RefundStatus::Pending => (None, None),
        RefundStatus::Failed => (Some(FinalSource::RefundResponse.as_str()), Some(created_at)),
        RefundStatus::Success => {
            return Err(invalid(InvalidValue::new(
                "status",
                "a new refund is REFUND_PENDING or REFUND_FAILED; /refund never answers REFUND_SUCCESS",
            )));
        }
    };
    Ok((amount, created_at, final_source, finalized_at))
}

/// The first row of `chunk` (at `first` in the import) that cannot go in: invalid, or its
/// number already in the ledger or earlier in the import (`seen`, which this extends).
fn check_chunk(
    db: &mut Db<'_>,
    chunk: &[NewRefund],
    first: usize,
    seen: &mut HashSet<String>,
) -> Result<(), LedgerError> {
    let numbers: Vec<&str> = chunk.iter().map(|r| r.out_refund_no.as_str()).collect();
    let existing: HashSet<String> = db
        .query(
            "import refunds",
            "SELECT out_refund_no FROM refunds WHERE out_refund_no = ANY($1)",
            &[&numbers],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (i, r) in chunk.iter().enumerate() {
        let index = Some(first + i);
        checked(r, index)?;
        let no = r.out_refund_no.as_str();
        if existing.contains(no) || !seen.insert(no.to_owned()) {
            return Err(LedgerError::DuplicateRefund {
                out_refund_no: r.out_refund_no.clone(),
                index,
            });
        }
    }
    Ok(())
}

/// One multi-row INSERT of `chunk` (already checked).
fn insert_chunk(db: &mut Db<'_>, chunk: &[NewRefund]) -> Result<(), LedgerError> {
    const OP: &str = "import refunds";
    let mut cols = ImportColumns::default();
    for r in chunk {
        let (amount, created_at, final_source, finalized_at) = checked(r, None)?;
        cols.no.push(r.out_refund_no.as_str());
        cols.trade.push(r.refund_trade_no.as_deref());
        cols.order.push(r.out_trade_no.as_deref());
        cols.amount.push(amount);
        cols.currency.push(r.currency.as_str());
        cols.status.push(r.status.as_str());
        cols.created.push(created_at);
        cols.source.push(final_source);
        cols.finalized.push(finalized_at);
    }
    db.execute(
        OP,
        "INSERT INTO refunds (out_refund_no, refund_trade_no, out_trade_no, amount, currency,
                              status, created_at, final_source, finalized_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]::numeric[],
                              $5::text[], $6::text[], $7::timestamptz[], $8::text[],
                              $9::timestamptz[])",
        &[
            &cols.no,
            &cols.trade,
            &cols.order,
            &cols.amount,
            &cols.currency,
            &cols.status,
            &cols.created,
            &cols.source,
            &cols.finalized,
        ],
    )?;
    Ok(())
}

/// An import chunk column by column, as arrays for `unnest`.
#[derive(Default)]
struct ImportColumns<'a> {
    no: Vec<&'a str>,
    trade: Vec<Option<&'a str>>,
    order: Vec<Option<&'a str>>,
    amount: Vec<String>,
    currency: Vec<&'a str>,
    status: Vec<&'static str>,
    created: Vec<Timestamp>,
    source: Vec<Option<&'static str>>,
    finalized: Vec<Option<Timestamp>>,
}

/// Validates and inserts one refund.
fn insert_one(db: &mut Db<'_>, r: &NewRefund, index: Option<usize>) -> Result<(), LedgerError> {
    let (amount, created_at, final_source, finalized_at) = checked(r, index)?;
    let stmt = db.prepared("insert refund", INSERT_REFUND)?;
    db.tx
        .execute(
            &stmt,
            &[
                &r.out_refund_no.as_str(),
                &r.refund_trade_no,
                &r.out_trade_no,
                &amount,
                &r.currency.as_str(),
                &r.status.as_str(),
                &created_at,
                &final_source,
                &finalized_at,
            ],
        )
        .map_err(|source| {
            if is_pg_trigger(&source, trigger_msg::REFUND_EXISTS) || is_pg_unique_violation(&source)
            {
                LedgerError::DuplicateRefund {
                    out_refund_no: r.out_refund_no.clone(),
                    index,
                }
            } else {
                LedgerError::Postgres {
                    op: "insert refund",
                    source,
                }
            }
        })?;
    Ok(())
}

/// One attempt and its decision inside the caller's transaction, the refund row already
/// locked: the attempt row, the refund row as the decision says, the discrepancies.
fn apply_attempt(
    db: &mut Db<'_>,
    node: Option<&str>,
    sweep: Option<i64>,
    attempt: &QueryReport,
    decision: &Decision,
) -> Result<Applied, LedgerError> {
    let no = attempt.out_refund_no.as_str();
    let current = db.query_opt(
        RECORD_ATTEMPT,
        "SELECT status, review_flag FROM refunds WHERE out_refund_no = $1",
        &[&no],
    )?;
    let Some(current) = current else {
        return Err(LedgerError::NotFound {
            out_refund_no: attempt.out_refund_no.clone(),
        });
    };
    let status_text: String = current.get(0);
    let review_flag: i64 = current.get(1);
    let mut w = AttemptWrite {
        db,
        node,
        attempt,
        no,
        at: ms(attempt.attempted_at),
        class: decision.class.as_str(),
        error: attempt.error.as_deref().map(clip_error),
        recorded: Cell { out_refund_no: no }.parse("status", &status_text)?,
    };
    w.insert_attempt(sweep, decision)?;
    let applied = match &decision.change {
        Change::Finalize {
            status,
            refund_trade_no,
            refund_finish_time,
            flag,
        } => w.finalize(
            *status,
            refund_trade_no.as_deref(),
            *refund_finish_time,
            flag.filter(|_| review_flag == 0),
        )?,
        Change::Keep { confirm_again_at } => w.keep(*confirm_again_at)?,
        Change::Reschedule {
            next_query_at,
            attempts,
            unknown_since,
            refund_trade_no,
            flag,
        } => match w.recorded.as_final() {
            Some(held) => Applied::AlreadyFinal(held),
            None => {
                let newly_flagged = flag.filter(|_| review_flag == 0);
                w.reschedule(
                    *next_query_at,
                    *attempts,
                    *unknown_since,
                    refund_trade_no.as_deref(),
                    newly_flagged,
                )?;
                if decision.class == OutcomeClass::Mismatch {
                    Applied::Mismatch {
                        flagged: newly_flagged,
                    }
                } else {
                    Applied::Rescheduled {
                        next_query_at: *next_query_at,
                        flagged: newly_flagged,
                    }
                }
            }
        },
    };
    for d in &decision.discrepancies {
        insert_discrepancy(w.db, no, w.at, d.kind.as_str(), &d.expected, &d.observed)?;
    }
    Ok(applied)
}

/// What every write of one attempt shares (see the SQLite engine's `AttemptWrite`).
struct AttemptWrite<'d, 'a, 't> {
    db: &'d mut Db<'t>,
    node: Option<&'a str>,
    attempt: &'a QueryReport,
    no: &'a str,
    at: Timestamp,
    class: &'static str,
    error: Option<&'a str>,
    recorded: RefundStatus,
}

impl AttemptWrite<'_, '_, '_> {
    fn insert_attempt(
        &mut self,
        sweep: Option<i64>,
        decision: &Decision,
    ) -> Result<(), LedgerError> {
        let a = self.attempt;
        let http_status = a.http_status.map(i64::from);
        self.db.execute(
            RECORD_ATTEMPT,
            "INSERT INTO attempts (out_refund_no, attempted_at, outcome, http_status, gateway_code,
                                   data_status, latency_ms, error, decision, sweep_id, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &self.no,
                &self.at,
                &self.class,
                &http_status,
                &a.gateway_code,
                &a.data_status,
                &big(a.latency.as_millis()),
                &self.error,
                &decision_text(decision),
                &sweep,
                &self.node,
            ],
        )?;
        Ok(())
    }

    /// A verified final answer: compare-and-set on the pending status (the lease goes with
    /// it). A row a notification finalized meanwhile is confirmed or gets a discrepancy.
    fn finalize(
        &mut self,
        status: FinalStatus,
        refund_trade_no: Option<&str>,
        refund_finish_time: Option<Timestamp>,
        flag: Option<ReviewReason>,
    ) -> Result<Applied, LedgerError> {
        let stmt = self.db.prepared(
            RECORD_ATTEMPT,
            "UPDATE refunds
                SET status = $2, final_source = $3, finalized_at = $4,
                    refund_finish_time = $5,
                    refund_trade_no = coalesce(refund_trade_no, $6),
                    next_query_at = NULL, attempts = attempts + 1,
                    last_attempt_at = $4, last_outcome = $7, last_error = $8,
                    review_flag = CASE WHEN $9::text IS NULL THEN review_flag ELSE 1 END,
                    review_reason = coalesce($9::text, review_reason),
                    flagged_at = CASE WHEN $9::text IS NULL THEN flagged_at ELSE $4 END,
                    claimed_by = NULL, claimed_until = NULL
              WHERE out_refund_no = $1 AND status = 'REFUND_PENDING'",
        )?;
        let changed = self
            .db
            .tx
            .execute(
                &stmt,
                &[
                    &self.no,
                    &status.as_str(),
                    &FinalSource::Query.as_str(),
                    &self.at,
                    &refund_finish_time.map(ms),
                    &refund_trade_no,
                    &self.class,
                    &self.error,
                    &flag.map(ReviewReason::as_str),
                ],
            )
            .map_err(|source| {
                if is_pg_trigger(&source, trigger_msg::FINAL_IMMUTABLE) {
                    LedgerError::FinalImmutable {
                        out_refund_no: self.attempt.out_refund_no.clone(),
                        source: EngineError::Postgres(source),
                    }
                } else {
                    LedgerError::Postgres {
                        op: RECORD_ATTEMPT,
                        source,
                    }
                }
            })?;
        if changed == 0 && self.recorded.is_final() {
            self.db.execute(
                RECORD_ATTEMPT,
                "UPDATE refunds SET confirm_at = NULL WHERE out_refund_no = $1",
                &[&self.no],
            )?;
        }
        match (changed, self.recorded.as_final()) {
            (1, _) => Ok(Applied::Finalized(status)),
            (_, Some(held)) if held == status => Ok(Applied::AlreadyFinal(held)),
            (_, Some(held)) => {
                insert_discrepancy(
                    self.db,
                    self.no,
                    self.at,
                    "conflicting_final",
                    held.as_str(),
                    status.as_str(),
                )?;
                Ok(Applied::Conflict {
                    recorded: held,
                    observed: status,
                })
            }
            // Pending under our row lock, yet the CAS changed nothing.
            (_, None) => Err(LedgerError::CorruptRow {
                out_refund_no: self.no.to_owned(),
                column: "status",
                detail: "pending row refused a pending-only update".to_owned(),
            }),
        }
    }

    /// A final row: only the attempt's bookkeeping, and a pending confirmation done or pushed
    /// back.
    fn keep(&mut self, confirm_again_at: Option<Timestamp>) -> Result<Applied, LedgerError> {
        let Some(held) = self.recorded.as_final() else {
            return Err(LedgerError::CorruptRow {
                out_refund_no: self.no.to_owned(),
                column: "status",
                detail: "a row once seen final reads as pending".to_owned(),
            });
        };
        self.db.execute(
            RECORD_ATTEMPT,
            "UPDATE refunds SET last_attempt_at = $2, last_outcome = $3, last_error = $4,
                    confirm_at = CASE WHEN confirm_at IS NULL THEN NULL ELSE $5::timestamptz END
              WHERE out_refund_no = $1",
            &[
                &self.no,
                &self.at,
                &self.class,
                &self.error,
                &confirm_again_at.map(ms),
            ],
        )?;
        Ok(Applied::AlreadyFinal(held))
    }

    /// A pending refund's next query, its counters, a newly raised flag; this node's lease is
    /// released (another node's, if ours expired and it took the refund, is left alone).
    fn reschedule(
        &mut self,
        next_query_at: Timestamp,
        attempts: u32,
        unknown_since: Option<Timestamp>,
        refund_trade_no: Option<&str>,
        newly_flagged: Option<ReviewReason>,
    ) -> Result<(), LedgerError> {
        self.db.execute(
            RECORD_ATTEMPT,
            "UPDATE refunds
                SET next_query_at = $2, attempts = $3, unknown_since = $4,
                    refund_trade_no = coalesce(refund_trade_no, $5),
                    last_attempt_at = $6, last_outcome = $7, last_error = $8,
                    review_flag = CASE WHEN $9::text IS NULL THEN review_flag ELSE 1 END,
                    review_reason = coalesce($9::text, review_reason),
                    flagged_at = CASE WHEN $9::text IS NULL THEN flagged_at ELSE $6 END,
                    claimed_until = CASE WHEN claimed_by = $10::text THEN NULL
                                         ELSE claimed_until END,
                    claimed_by = CASE WHEN claimed_by = $10::text THEN NULL ELSE claimed_by END
              WHERE out_refund_no = $1 AND status = 'REFUND_PENDING'",
            &[
                &self.no,
                &ms(next_query_at),
                &i64::from(attempts),
                &unknown_since.map(ms),
                &refund_trade_no,
                &self.at,
                &self.class,
                &self.error,
                &newly_flagged.map(|r| r.as_str()),
                &self.node,
            ],
        )?;
        Ok(())
    }
}

fn insert_discrepancy(
    db: &mut Db<'_>,
    no: &str,
    at: Timestamp,
    kind: &str,
    expected: &str,
    observed: &str,
) -> Result<(), LedgerError> {
    db.execute(
        "record discrepancy",
        "INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
         VALUES ($1, $2, 'query', $3, $4, $5)",
        &[&no, &at, &kind, &expected, &observed],
    )?;
    Ok(())
}
