//! Writes: new refunds (one or an all-or-nothing import), scheduling, the outcome of one
//! query attempt, notifications (as the merchant's app would insert them) and sweeps. Each
//! method is one short `BEGIN IMMEDIATE` transaction.

use std::time::Duration;

use rusqlite::{OptionalExtension, Statement, params};

use super::SqliteLedger;
use super::error::{During, LedgerError, is_trigger, is_unique_violation, trigger_msg};
use super::types::{
    Applied, Cell, NotificationRecord, SweepEnd, clip_error, decision_text, ts_text,
};
use crate::domain::{
    Change, Decision, FinalSource, FinalStatus, Halt, InvalidValue, NewRefund, NodeName,
    OutcomeClass, QueryReport, RefundStatus, ReviewReason, Timestamp, validate_amount,
};
use crate::ledger::{IMPORT_PROGRESS_EVERY, Registered};

const INSERT_REFUND: &str = "\
    INSERT INTO refunds (out_refund_no, refund_trade_no, out_trade_no, amount, currency, status,
                         created_at, final_source, finalized_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

impl SqliteLedger {
    /// Inserts one new refund. A final status (only `REFUND_FAILED` is possible: `/refund`
    /// never answers success synchronously) is recorded with `final_source =
    /// 'refund_response'` and `finalized_at = created_at`. `next_query_at` stays NULL until
    /// [`SqliteLedger::schedule_new`].
    pub fn insert_refund(&self, r: &NewRefund) -> Result<(), LedgerError> {
        self.write("insert refund", |tx| {
            let mut stmt = tx.prepare_cached(INSERT_REFUND).during("insert refund")?;
            insert_one(&mut stmt, r, None)
        })
    }

    /// Registers one new refund for the HTTP API: [`SqliteLedger::insert_refund`]'s insert and the row
    /// as stored, or, when
    /// the refund number is already taken, the row that holds it, read in the same
    /// transaction (so the caller can tell a repeated request from a conflicting one).
    pub fn register_refund(&self, r: &NewRefund) -> Result<Registered, LedgerError> {
        const OP: &str = "register refund";
        self.write(OP, |tx| {
            let mut stmt = tx.prepare_cached(INSERT_REFUND).during(OP)?;
            match insert_one(&mut stmt, r, None) {
                Ok(()) => {
                    let no = r.out_refund_no.as_str();
                    let row =
                        super::read::refund_of(tx, no)?.ok_or_else(|| LedgerError::CorruptRow {
                            out_refund_no: no.to_owned(),
                            column: "out_refund_no",
                            detail: "the refund just inserted cannot be read back".into(),
                        })?;
                    Ok(Registered::Created(Box::new(row)))
                }
                Err(LedgerError::DuplicateRefund { .. }) => Ok(
                    match super::read::refund_of(tx, r.out_refund_no.as_str())? {
                        Some(row) => Registered::Existing(Box::new(row)),
                        None => Registered::Pruned,
                    },
                ),
                Err(e) => Err(e),
            }
        })
    }

    /// Inserts all `rows` in ONE transaction: either every row is written or none is. A
    /// refund number already in the ledger or repeated within `rows` fails the whole import
    /// with [`LedgerError::DuplicateRefund`] naming its position. `progress` is called with
    /// the number of rows inserted so far after every 10 000 rows (not after the last partial
    /// batch); it runs inside the write transaction, so it must be quick (print, no I/O wait).
    /// Returns the row count. This is the one deliberately long transaction: an import is
    /// all-or-nothing by contract, and the merchant's app waits (busy timeout) meanwhile.
    pub fn import(
        &mut self,
        rows: &[NewRefund],
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, LedgerError> {
        self.write("import refunds", |tx| {
            let mut stmt = tx.prepare_cached(INSERT_REFUND).during("import refunds")?;
            for (index, r) in rows.iter().enumerate() {
                insert_one(&mut stmt, r, Some(index))?;
                let done = index + 1;
                if done % IMPORT_PROGRESS_EVERY == 0 {
                    progress(done);
                }
            }
            Ok(rows.len())
        })
    }

    /// Schedules the first query of every pending refund that has none yet, at
    /// `created_at + grace` (the notification grace window). Returns how many were scheduled.
    /// Only unscheduled pending rows are visited (a partial index holds exactly those).
    pub fn schedule_new(&self, grace: Duration) -> Result<usize, LedgerError> {
        // SQLite's date arithmetic is in whole milliseconds, so this is exact.
        let modifier = format!("+{}.{:03} seconds", grace.as_secs(), grace.subsec_millis());
        self.write("schedule new refunds", |tx| {
            tx.execute(SCHEDULE_NEW, [modifier])
                .during("schedule new refunds")
        })
    }

    /// Records one query attempt and applies `decision` to the refund, in one transaction:
    /// the attempt row (outcome = `decision.class`), then the change as a compare-and-set on
    /// `status = 'REFUND_PENDING'` (a notification may have finalized the refund since it was
    /// claimed), then `decision.discrepancies` (source `query`). The refund's claim lease is
    /// cleared in the same UPDATE (or by itself, when the row went final meanwhile), and the
    /// attempt row names the connection's node ([`SqliteLedger::set_node`]).
    ///
    /// Discrepancies are recorded even when the refund went final meanwhile: they are
    /// observations about the gateway's answer, never applied to the row.
    ///
    /// The attempt row carries no sweep id: this is the attempt of a query made outside any
    /// sweep (`checus-reconciler query`); a sweep's attempts go through
    /// [`SqliteLedger::record_attempt_in`].
    pub fn record_attempt(
        &mut self,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError> {
        self.record_attempt_in(None, attempt, decision)
    }

    /// [`SqliteLedger::record_attempt`] for an attempt made by the sweep `sweep` (the id
    /// [`SqliteLedger::begin_sweep`] returned), stored in `attempts.sweep_id`.
    pub fn record_attempt_in(
        &mut self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError> {
        let node = self.node();
        self.write(RECORD_ATTEMPT, |tx| {
            apply_attempt(tx, sweep, node, attempt, decision)
        })
    }

    /// Group commit: records every `(sweep, attempt, decision)` of `batch` exactly as
    /// [`SqliteLedger::record_attempt_in`] would, but in ONE transaction, so concurrent query
    /// completions share one commit (one WAL fsync) instead of paying one each.
    ///
    /// Each record runs inside its own savepoint: one that fails (not found, a corrupt row, a
    /// trigger) is rolled back alone and returns its own error, and the others still commit.
    /// Nothing is durable, and no result may be acted upon, before this method returns `Ok`;
    /// on `Err` (the transaction itself failed, e.g. `BEGIN`, `COMMIT` or a savepoint) none of
    /// the batch was written.
    pub fn record_attempts(
        &mut self,
        batch: &[(Option<i64>, QueryReport, Decision)],
    ) -> Result<Vec<Result<Applied, LedgerError>>, LedgerError> {
        const OP: &str = RECORD_ATTEMPT;
        let node = self.node();
        self.write(OP, |tx| {
            let mut out = Vec::with_capacity(batch.len());
            for (sweep, attempt, decision) in batch {
                tx.prepare_cached("SAVEPOINT record_attempt")
                    .during(OP)?
                    .execute([])
                    .during(OP)?;
                let result = apply_attempt(tx, *sweep, node, attempt, decision);
                if result.is_err() {
                    tx.prepare_cached("ROLLBACK TO record_attempt")
                        .during(OP)?
                        .execute([])
                        .during(OP)?;
                }
                tx.prepare_cached("RELEASE record_attempt")
                    .during(OP)?
                    .execute([])
                    .during(OP)?;
                out.push(result);
            }
            Ok(out)
        })
    }

    /// Flags the refund row `id` that the worker could not read (`row_unreadable`) and says
    /// why in `last_error`. The due query leaves such rows out until an operator clears the
    /// flag, so the row is met once, not every sweep. Only the flag's columns are written, so
    /// SQLite does not re-check the bad value. Returns false when the row is gone.
    pub fn flag_unreadable(
        &self,
        id: i64,
        at: Timestamp,
        detail: &str,
    ) -> Result<bool, LedgerError> {
        const OP: &str = "flag an unreadable row";
        self.write(OP, |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE refunds SET review_flag = 1, review_reason = 'row_unreadable',
                            flagged_at = ?2, last_error = ?3
                      WHERE id = ?1",
                )
                .during(OP)?
                .execute(params![id, ts_text(at), clip_error(detail)])
                .during(OP)?;
            Ok(changed == 1)
        })
    }

    /// An attempt the ledger refused to record (a CHECK or a trigger on this refund's rows):
    /// records it bare (when, its outcome class, its latency, and what the ledger refused, in
    /// `error`), flags the refund `row_unwritable` and applies nothing, in one transaction.
    /// The due query then leaves the refund out until an operator clears the flag.
    pub fn record_refused_attempt(
        &self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        class: OutcomeClass,
        refusal: &str,
    ) -> Result<(), LedgerError> {
        const OP: &str = "record a refused attempt";
        let at = ts_text(attempt.attempted_at);
        let error = clip_error(refusal);
        let node = self.node();
        self.write(OP, |tx| {
            tx.prepare_cached(
                "INSERT INTO attempts (out_refund_no, attempted_at, outcome, latency_ms, error,
                                       decision, sweep_id, node)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'not applied: the ledger refused it; flag row_unwritable', ?6, ?7)",
            )
            .during(OP)?
            .execute(params![
                attempt.out_refund_no.as_str(),
                at,
                class.as_str(),
                i64::try_from(attempt.latency.as_millis()).unwrap_or(i64::MAX),
                error,
                sweep,
                node,
            ])
            .during(OP)?;
            // The flag leaves the refund out of every claim: its lease is done with too.
            tx.prepare_cached(
                "UPDATE refunds SET review_flag = 1, review_reason = 'row_unwritable',
                        flagged_at = ?2, last_error = ?3, claimed_by = NULL, claimed_until = NULL
                  WHERE out_refund_no = ?1",
            )
            .during(OP)?
            .execute(params![attempt.out_refund_no.as_str(), at, error])
            .during(OP)?;
            Ok(())
        })
    }

    /// Inserts a verified notification exactly as the merchant's app does; the schema's
    /// trigger applies it (finalize, duplicate, conflict, mismatch, unknown refund).
    pub fn record_notification(&self, n: &NotificationRecord) -> Result<(), LedgerError> {
        const OP: &str = "record notification";
        self.write(OP, |tx| {
            tx.prepare_cached(
                "INSERT INTO notifications (out_refund_no, status, refund_trade_no, amount, currency,
                                            refund_finish_time, notify_time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .during(OP)?
            .execute(params![
                n.out_refund_no.as_str(),
                n.status.as_str(),
                n.refund_trade_no,
                n.amount.to_string(),
                n.currency.as_str(),
                n.refund_finish_time.map(ts_text),
                ts_text(n.notify_time),
            ])
            .during(OP)?;
            Ok(())
        })
    }

    /// Records the start of a sweep run by `node` (`None`: not named); returns its id for
    /// [`SqliteLedger::finish_sweep`].
    pub fn begin_sweep(
        &self,
        started_at: Timestamp,
        node: Option<&NodeName>,
    ) -> Result<i64, LedgerError> {
        const OP: &str = "begin sweep";
        self.write(OP, |tx| {
            tx.execute(
                "INSERT INTO sweeps (started_at, node) VALUES (?1, ?2)",
                params![ts_text(started_at), node.map(NodeName::as_str)],
            )
            .during(OP)?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Closes sweep rows left open by a daemon that stopped mid-sweep (a drain deadline
    /// that passed, or a crash), so no row stays half-written. Only the lock holder calls
    /// this, so no live sweep is closed. Returns how many rows it closed.
    pub fn close_interrupted_sweeps(&self, at: Timestamp) -> Result<usize, LedgerError> {
        const OP: &str = "close interrupted sweeps";
        self.write(OP, |tx| {
            tx.execute(
                "UPDATE sweeps SET finished_at = ?1,
                        halted_reason = 'interrupted: the daemon stopped before this sweep finished'
                  WHERE finished_at IS NULL",
                params![ts_text(at)],
            )
            .during(OP)
        })
    }

    /// Records the end of a sweep: its counts, the halt in force when it ended, if any (its
    /// stable code in `halt_code`, what `status` reads, and its description in
    /// `halted_reason`, for operators reading the table), its error if it failed, and the
    /// circuit breaker's state.
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
        let counts = &end.counts;
        let error = end.error.as_deref().map(clip_error);
        self.write(OP, |tx| {
            let changed = tx
                .execute(
                    "UPDATE sweeps SET finished_at = ?2, claimed = ?3, finalized = ?4,
                            rescheduled = ?5, failed = ?6, halted_reason = ?7, halt_code = ?8,
                            unreadable = ?9, error = ?10, breaker_open_since = ?11
                      WHERE id = ?1",
                    params![
                        id,
                        ts_text(finished_at),
                        n(counts.claimed),
                        n(counts.finalized),
                        n(counts.rescheduled),
                        n(counts.failed),
                        reason,
                        code,
                        n(counts.unreadable),
                        error,
                        end.breaker_open_since.map(ts_text),
                    ],
                )
                .during(OP)?;
            if changed == 0 {
                return Err(LedgerError::SweepNotFound { id });
            }
            Ok(())
        })
    }
}

/// The `schedule_new` statement; its plan is checked in the tests.
pub(crate) const SCHEDULE_NEW: &str = "\
    UPDATE refunds
       SET next_query_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, ?1)
     WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL";

/// Validates and inserts one refund with the prepared [`INSERT_REFUND`].
fn insert_one(
    stmt: &mut Statement<'_>,
    r: &NewRefund,
    index: Option<usize>,
) -> Result<(), LedgerError> {
    let invalid = |source: InvalidValue| LedgerError::InvalidRefund {
        out_refund_no: r.out_refund_no.clone(),
        index,
        source,
    };
    // The fields are public, so re-check what the ledger's CHECKs would refuse, and say why.
    let amount = r.amount.to_string();
    validate_amount(&amount, r.currency).map_err(invalid)?;
    let (final_source, finalized_at) = match r.status {
        RefundStatus::Pending => (None, None),
        RefundStatus::Failed => (
            Some(FinalSource::RefundResponse.as_str()),
            Some(ts_text(r.created_at)),
        ),
        RefundStatus::Success => {
            return Err(invalid(InvalidValue::new(
                "status",
                "a new refund is REFUND_PENDING or REFUND_FAILED; /refund never answers REFUND_SUCCESS",
            )));
        }
    };
    stmt.execute(params![
        r.out_refund_no.as_str(),
        r.refund_trade_no,
        r.out_trade_no,
        amount,
        r.currency.as_str(),
        r.status.as_str(),
        ts_text(r.created_at),
        final_source,
        finalized_at,
    ])
    .map_err(|source| {
        if is_trigger(&source, trigger_msg::REFUND_EXISTS) || is_unique_violation(&source) {
            LedgerError::DuplicateRefund {
                out_refund_no: r.out_refund_no.clone(),
                index,
            }
        } else {
            LedgerError::Sqlite {
                op: "insert refund",
                source,
            }
        }
    })?;
    Ok(())
}

/// `record_attempt`'s operation name.
const RECORD_ATTEMPT: &str = "record attempt";

/// One attempt and its decision, inside the caller's transaction (see
/// [`SqliteLedger::record_attempt`]): the attempt row, then the refund row as the decision says, then
/// the decision's discrepancies.
fn apply_attempt(
    tx: &rusqlite::Transaction<'_>,
    sweep: Option<i64>,
    node: Option<&str>,
    attempt: &QueryReport,
    decision: &Decision,
) -> Result<Applied, LedgerError> {
    let no = attempt.out_refund_no.as_str();
    let current: Option<(String, i64)> = tx
        .prepare_cached("SELECT status, review_flag FROM refunds WHERE out_refund_no = ?1")
        .during(RECORD_ATTEMPT)?
        .query_row([no], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .during(RECORD_ATTEMPT)?;
    let Some((status_text, review_flag)) = current else {
        return Err(LedgerError::NotFound {
            out_refund_no: attempt.out_refund_no.clone(),
        });
    };
    let w = AttemptWrite {
        tx,
        sweep,
        node,
        attempt,
        no,
        at: ts_text(attempt.attempted_at),
        class: decision.class.as_str(),
        error: attempt.error.as_deref().map(clip_error),
        recorded: Cell { out_refund_no: no }.parse("status", &status_text)?,
    };
    w.insert_attempt(decision)?;
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
            Some(held) => {
                w.release()?;
                Applied::AlreadyFinal(held)
            }
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
        insert_discrepancy(tx, no, &w.at, d.kind.as_str(), &d.expected, &d.observed)?;
    }
    Ok(applied)
}

/// What every write of one attempt shares: the transaction, the refund's key, the attempt's
/// bookkeeping columns, and the status the row held when the transaction read it.
struct AttemptWrite<'a, 't> {
    tx: &'a rusqlite::Transaction<'t>,
    /// The sweep that made the attempt (`attempts.sweep_id`).
    sweep: Option<i64>,
    /// The node that made it (`attempts.node`).
    node: Option<&'a str>,
    attempt: &'a QueryReport,
    no: &'a str,
    at: String,
    class: &'static str,
    error: Option<&'a str>,
    recorded: RefundStatus,
}

impl AttemptWrite<'_, '_> {
    /// The attempt row itself: written whatever the decision does to the refund.
    fn insert_attempt(&self, decision: &Decision) -> Result<(), LedgerError> {
        let a = self.attempt;
        self.tx
            .prepare_cached(
                "INSERT INTO attempts (out_refund_no, attempted_at, outcome, http_status, gateway_code,
                                   data_status, latency_ms, error, decision, sweep_id, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .during(RECORD_ATTEMPT)?
            .execute(params![
                self.no,
                self.at,
                self.class,
                a.http_status,
                a.gateway_code,
                a.data_status,
                i64::try_from(a.latency.as_millis()).unwrap_or(i64::MAX),
                self.error,
                decision_text(decision),
                self.sweep,
                self.node,
            ])
            .during(RECORD_ATTEMPT)?;
        Ok(())
    }

    /// A verified final answer: compare-and-set on the pending status. A row that a
    /// notification finalized meanwhile is confirmed (agreeing) or gets a discrepancy.
    fn finalize(
        &self,
        status: FinalStatus,
        refund_trade_no: Option<&str>,
        refund_finish_time: Option<Timestamp>,
        flag: Option<ReviewReason>,
    ) -> Result<Applied, LedgerError> {
        let (tx, no) = (self.tx, self.no);
        let changed = tx
            .prepare_cached(
                "UPDATE refunds
                        SET status = ?2, final_source = ?3, finalized_at = ?4,
                            refund_finish_time = ?5,
                            refund_trade_no = coalesce(refund_trade_no, ?6),
                            next_query_at = NULL, attempts = attempts + 1,
                            last_attempt_at = ?4, last_outcome = ?7, last_error = ?8,
                            review_flag = CASE WHEN ?9 IS NULL THEN review_flag ELSE 1 END,
                            review_reason = coalesce(?9, review_reason),
                            flagged_at = CASE WHEN ?9 IS NULL THEN flagged_at ELSE ?4 END,
                            claimed_by = NULL, claimed_until = NULL
                      WHERE out_refund_no = ?1 AND status = 'REFUND_PENDING'",
            )
            .during(RECORD_ATTEMPT)?
            .execute(params![
                no,
                status.as_str(),
                FinalSource::Query.as_str(),
                self.at,
                refund_finish_time.map(ts_text),
                refund_trade_no,
                self.class,
                self.error,
                flag.map(ReviewReason::as_str),
            ])
            .map_err(|source| final_or(source, self.attempt, RECORD_ATTEMPT))?;
        if changed == 0 && self.recorded.is_final() {
            // A notification finalized the refund while this query was in flight: this
            // verified final answer is its confirmation (agreeing, or recorded below).
            tx.prepare_cached(
                "UPDATE refunds SET confirm_at = NULL, claimed_by = NULL, claimed_until = NULL
                  WHERE out_refund_no = ?1",
            )
            .during(RECORD_ATTEMPT)?
            .execute([no])
            .during(RECORD_ATTEMPT)?;
        }
        match (changed, self.recorded.as_final()) {
            (1, _) => Ok(Applied::Finalized(status)),
            (_, Some(held)) if held == status => Ok(Applied::AlreadyFinal(held)),
            (_, Some(held)) => {
                insert_discrepancy(
                    tx,
                    no,
                    &self.at,
                    "conflicting_final",
                    held.as_str(),
                    status.as_str(),
                )?;
                Ok(Applied::Conflict {
                    recorded: held,
                    observed: status,
                })
            }
            // Pending under our IMMEDIATE lock, yet the CAS changed nothing: the
            // row is not what it claims to be.
            (_, None) => Err(LedgerError::CorruptRow {
                out_refund_no: no.to_owned(),
                column: "status",
                detail: "pending row refused a pending-only update".to_owned(),
            }),
        }
    }

    /// `decide` keeps rows it saw final, and a final row never changes back, so only the
    /// attempt's bookkeeping is written, and a pending confirmation is either done (the
    /// gateway answered) or pushed back (it did not). A query of a final refund that had no
    /// confirmation pending never starts one.
    fn keep(&self, confirm_again_at: Option<Timestamp>) -> Result<Applied, LedgerError> {
        let Some(held) = self.recorded.as_final() else {
            return Err(LedgerError::CorruptRow {
                out_refund_no: self.no.to_owned(),
                column: "status",
                detail: "a row once seen final reads as pending".to_owned(),
            });
        };
        self.tx
            .prepare_cached(
                "UPDATE refunds SET last_attempt_at = ?2, last_outcome = ?3, last_error = ?4,
                        confirm_at = CASE WHEN confirm_at IS NULL THEN NULL ELSE ?5 END,
                        claimed_by = NULL, claimed_until = NULL
                      WHERE out_refund_no = ?1",
            )
            .during(RECORD_ATTEMPT)?
            .execute(params![
                self.no,
                self.at,
                self.class,
                self.error,
                confirm_again_at.map(ts_text)
            ])
            .during(RECORD_ATTEMPT)?;
        Ok(Applied::AlreadyFinal(held))
    }

    /// Clears the claim lease of a refund that went final while its query was in flight
    /// (the attempt is recorded; nothing else of the row changes). Touches only leased rows.
    fn release(&self) -> Result<(), LedgerError> {
        self.tx
            .prepare_cached(
                "UPDATE refunds SET claimed_by = NULL, claimed_until = NULL
                  WHERE out_refund_no = ?1 AND claimed_by IS NOT NULL",
            )
            .during(RECORD_ATTEMPT)?
            .execute([self.no])
            .during(RECORD_ATTEMPT)?;
        Ok(())
    }

    /// A pending refund's next query, its counters, and a flag if one is newly raised.
    fn reschedule(
        &self,
        next_query_at: Timestamp,
        attempts: u32,
        unknown_since: Option<Timestamp>,
        refund_trade_no: Option<&str>,
        newly_flagged: Option<ReviewReason>,
    ) -> Result<(), LedgerError> {
        self.tx
            .prepare_cached(
                "UPDATE refunds
                        SET next_query_at = ?2, attempts = ?3, unknown_since = ?4,
                            refund_trade_no = coalesce(refund_trade_no, ?5),
                            last_attempt_at = ?6, last_outcome = ?7, last_error = ?8,
                            review_flag = CASE WHEN ?9 IS NULL THEN review_flag ELSE 1 END,
                            review_reason = coalesce(?9, review_reason),
                            flagged_at = CASE WHEN ?9 IS NULL THEN flagged_at ELSE ?6 END,
                            claimed_by = NULL, claimed_until = NULL
                      WHERE out_refund_no = ?1 AND status = 'REFUND_PENDING'",
            )
            .during(RECORD_ATTEMPT)?
            .execute(params![
                self.no,
                ts_text(next_query_at),
                attempts,
                unknown_since.map(ts_text),
                refund_trade_no,
                self.at,
                self.class,
                self.error,
                newly_flagged.map(|r| r.as_str()),
            ])
            .during(RECORD_ATTEMPT)?;
        Ok(())
    }
}

fn insert_discrepancy(
    tx: &rusqlite::Transaction<'_>,
    no: &str,
    at: &str,
    kind: &str,
    expected: &str,
    observed: &str,
) -> Result<(), LedgerError> {
    tx.prepare_cached(
        "INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
         VALUES (?1, ?2, 'query', ?3, ?4, ?5)",
    )
    .during("record discrepancy")?
    .execute(params![no, at, kind, expected, observed])
    .during("record discrepancy")?;
    Ok(())
}

/// Maps the final-is-final trigger to its typed error.
fn final_or(source: rusqlite::Error, attempt: &QueryReport, op: &'static str) -> LedgerError {
    if is_trigger(&source, trigger_msg::FINAL_IMMUTABLE) {
        LedgerError::FinalImmutable {
            out_refund_no: attempt.out_refund_no.clone(),
            source: source.into(),
        }
    } else {
        LedgerError::Sqlite { op, source }
    }
}
