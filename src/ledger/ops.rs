//! Operator commands' SQL: `stuck`, `failed`, `explain` (one refund's timeline), `retry-now`,
//! `resolve` (an audited override of a still-pending refund), `resolve-discrepancy`,
//! `discrepancies`, `prune` (archive + audited delete of old final refunds), `backup` (an online
//! `VACUUM INTO` copy) and `health` (what `status` turns into its exit code).
//!
//! Every write here is one `BEGIN IMMEDIATE` transaction that first appends its
//! `operator_actions` (or `prunes`) row: the audit and the change commit together or not at all,
//! and the schema's triggers refuse an operator decision without its audit row.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::Ledger;
use super::error::{During, LedgerError, is_trigger, trigger_msg};
use super::read::{REFUND_COLUMNS, RawRefund};
use super::types::{
    AttemptRow, Cell, DiscrepancyRow, NotificationRow, RefundRow, StatusSummary, ts_text,
};
use crate::domain::{
    Change, Decision, FinalStatus, OutRefundNo, RefundStatus, Timestamp, format_ts,
};

/// The text stored in `attempts.decision`: what the daemon decided from one attempt.
pub(crate) fn decision_text(d: &Decision) -> String {
    match &d.change {
        Change::Finalize { status, .. } => format!("finalize {status}"),
        Change::Keep {
            confirm_again_at: None,
        } => "keep (already final)".to_owned(),
        Change::Keep {
            confirm_again_at: Some(t),
        } => format!("keep (already final); confirm again at {}", format_ts(*t)),
        Change::Reschedule {
            next_query_at,
            flag,
            ..
        } => {
            let mut text = format!("reschedule {}", ts_text(*next_query_at));
            if let Some(reason) = flag {
                text.push_str(&format!("; flag {}", reason.as_str()));
            }
            text
        }
    }
}

/// One event in a refund's history, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEvent {
    /// When it happened (for `next_query`: when it will).
    #[serde(serialize_with = "ser_ts")]
    pub at: Timestamp,
    /// What: `created`, `query`, `decision`, `notification`, `discrepancy`,
    /// `discrepancy_resolved`, `flagged`, `operator`, `finalized`, `next_query`.
    pub kind: &'static str,
    /// One line for people.
    pub summary: String,
    /// `query`: the outcome class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// `query`: the round trip in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// `operator`, `discrepancy_resolved`: who.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `discrepancy`: its id, for `resolve-discrepancy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discrepancy_id: Option<i64>,
}

/// A refund and its history in time order, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// The refund as it is now.
    pub refund: RefundRow,
    /// Everything that happened to it, oldest first.
    pub events: Vec<TimelineEvent>,
}

/// One discrepancy, for `discrepancies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenDiscrepancy {
    /// Its id (for `resolve-discrepancy`).
    pub id: i64,
    /// The refund concerned.
    pub out_refund_no: String,
    /// When it was detected.
    #[serde(serialize_with = "ser_ts")]
    pub detected_at: Timestamp,
    /// Who disagreed (`query`, `notification`, `operator`).
    pub source: String,
    /// What kind of disagreement.
    pub kind: String,
    /// What the ledger holds.
    pub expected: Option<String>,
    /// What the source said.
    pub observed: Option<String>,
    /// Who resolved it, if anyone.
    pub resolved_by: Option<String>,
}

/// What `prune` removes (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    /// Final refunds finalized before the cutoff with no unresolved discrepancy.
    pub refunds: u64,
    /// Their attempts.
    pub attempts: u64,
    /// Their notifications.
    pub notifications: u64,
    /// Their (resolved) discrepancies.
    pub discrepancies: u64,
    /// Sweeps finished before the cutoff.
    pub sweeps: u64,
    /// Old final refunds kept because a discrepancy about them is unresolved.
    pub kept_unresolved: u64,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The `prunes` row id (`None` for a dry run).
    pub prune_id: Option<i64>,
    /// The cutoff.
    #[serde(serialize_with = "ser_ts")]
    pub finalized_before: Timestamp,
    /// Rows removed (or that would be).
    pub counts: PruneCounts,
    /// Where the removed rows were archived.
    pub archive: Option<PathBuf>,
    /// SHA-256 of the archive, hex.
    pub archive_sha256: Option<String>,
    /// True for `--dry-run`: nothing was written.
    pub dry_run: bool,
}

/// What `backup` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// The copy.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Refunds in the copy.
    pub refunds: u64,
}

/// Something that needs a human, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthWarning {
    /// Stable code: `flagged_refunds`, `config_error`, `clock_skew`, `worker_stale`,
    /// `worker_never_ran`, `unresolved_discrepancies`.
    pub code: &'static str,
    /// One line for people.
    pub message: String,
}

/// The ledger at a glance plus what needs a human. `status` exits 8 when `needs_human`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The counts.
    #[serde(flatten)]
    pub summary: StatusSummary,
    /// Seconds since the worker last started or finished a sweep (`None`: never ran).
    pub worker_idle_s: Option<i64>,
    /// The threshold past which the worker counts as stale.
    pub stale_after_s: u64,
    /// What needs a human; empty when all is well.
    pub warnings: Vec<HealthWarning>,
    /// True when any warning is present.
    pub needs_human: bool,
}

fn ser_ts<S: serde::Serializer>(v: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts_text(*v))
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The condition that makes a refund prunable (kept in step with the schema's delete triggers;
/// `?1` is the cutoff).
const PRUNABLE: &str = "status <> 'REFUND_PENDING' AND finalized_at < ?1
    AND NOT EXISTS (SELECT 1 FROM discrepancies AS d
                     WHERE d.out_refund_no = refunds.out_refund_no AND d.resolved_at IS NULL)";

impl Ledger {
    /// Pending refunds created at or before `created_before` (oldest first, at most `limit`):
    /// the ones an operator should look at.
    pub fn stuck(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRow>, LedgerError> {
        const OP: &str = "list stuck refunds";
        // `+created_at`: walk the pending rows (partial index), not every refund by age.
        self.query_refunds(
            OP,
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds
                  WHERE status = 'REFUND_PENDING' AND +created_at <= ?1
                  ORDER BY created_at, id LIMIT ?2"
            ),
            params![ts_text(created_before), limit_arg(limit)],
        )
    }

    /// Refunds that became `REFUND_FAILED` at or after `since`, in the order they failed.
    pub fn failed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRow>, LedgerError> {
        const OP: &str = "list failed refunds";
        self.query_refunds(
            OP,
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds
                  WHERE finalized_at >= ?1 AND status = 'REFUND_FAILED'
                  ORDER BY finalized_at, id LIMIT ?2"
            ),
            params![ts_text(since), limit_arg(limit)],
        )
    }

    /// Every refund created at or after `since`, oldest first, for `export`.
    pub fn export_since(&self, since: Timestamp) -> Result<Vec<RefundRow>, LedgerError> {
        const OP: &str = "export refunds";
        self.query_refunds(
            OP,
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE created_at >= ?1 ORDER BY created_at, id"
            ),
            params![ts_text(since)],
        )
    }

    /// Runs a `SELECT {REFUND_COLUMNS} …` and parses every row (`list`, `stuck`, `failed`, …).
    pub(super) fn query_refunds(
        &self,
        op: &'static str,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<RefundRow>, LedgerError> {
        let mut stmt = self.conn.prepare_cached(sql).during(op)?;
        let rows = stmt.query_map(args, RawRefund::read).during(op)?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(raw.during(op)?.parse()?);
        }
        Ok(out)
    }

    /// One refund's history in time order: creation, every query with its outcome and
    /// latency, every decision, notification, discrepancy, flag, operator action and the final
    /// outcome. `None` when the ledger has no such refund.
    pub fn timeline(&self, out_refund_no: &OutRefundNo) -> Result<Option<Timeline>, LedgerError> {
        const OP: &str = "explain refund";
        let no = out_refund_no.as_str();
        self.read(OP, |tx| {
            let Some(refund) = super::read::refund_of(tx, no)? else {
                return Ok(None);
            };
            let cell = Cell { out_refund_no: no };
            // (event, rank): rank orders events at the same instant the way they happened.
            let mut events: Vec<(TimelineEvent, u8, i64)> = Vec::new();
            let ev = |at, kind, summary: String| TimelineEvent {
                at,
                kind,
                summary,
                outcome: None,
                latency_ms: None,
                actor: None,
                discrepancy_id: None,
            };
            let mut created = format!("refund issued: {} {}", refund.amount, refund.currency);
            if let Some(t) = &refund.refund_trade_no {
                created.push_str(&format!(", refundTradeNo {t}"));
            }
            events.push((ev(refund.created_at, "created", created), 0, 0));

            for attempt in super::read::attempts_of(tx, no)? {
                let AttemptRow {
                    id,
                    attempted_at: at,
                    outcome,
                    http_status: http,
                    gateway_code: code,
                    data_status,
                    latency_ms: latency,
                    error,
                    decision,
                    ..
                } = attempt;
                let outcome = outcome.as_str().to_owned();
                let mut summary = format!("/refundQuery → {outcome}");
                if let Some(h) = http {
                    summary.push_str(&format!(" http={h}"));
                }
                if let Some(c) = &code {
                    summary.push_str(&format!(" code={c}"));
                }
                if let Some(s) = &data_status {
                    summary.push_str(&format!(" status={s}"));
                }
                summary.push_str(&format!(" in {latency} ms"));
                if let Some(e) = &error {
                    summary.push_str(&format!(": {e}"));
                }
                let mut e = ev(at, "query", summary);
                e.outcome = Some(outcome);
                e.latency_ms = Some(latency);
                events.push((e, 2, id));
                if let Some(d) = decision {
                    events.push((ev(at, "decision", d), 3, id));
                }
            }

            for n in super::read::notifications_of(tx, no)? {
                let NotificationRow {
                    id,
                    received_at: at,
                    status,
                    amount,
                    currency,
                    effect,
                    ..
                } = n;
                let summary = format!(
                    "notification {status} {amount} {currency} → {}",
                    effect.map_or("-", |e| e.as_str())
                );
                events.push((ev(at, "notification", summary), 1, id));
            }

            for d in super::read::discrepancies_of(tx, no)? {
                let DiscrepancyRow {
                    id,
                    detected_at: at,
                    source,
                    kind,
                    expected,
                    observed,
                    resolved_at: r_at,
                    resolved_by: r_by,
                    resolution,
                    ..
                } = d;
                let mut e = ev(
                    at,
                    "discrepancy",
                    format!(
                        "discrepancy #{id} {kind} from {source}: ledger has {}, {source} said {}",
                        expected.as_deref().unwrap_or("-"),
                        observed.as_deref().unwrap_or("-")
                    ),
                );
                e.discrepancy_id = Some(id);
                events.push((e, 4, id));
                if let Some(r_at) = r_at {
                    let mut e = ev(
                        r_at,
                        "discrepancy_resolved",
                        format!(
                            "discrepancy #{id} resolved: {}",
                            resolution.as_deref().unwrap_or("")
                        ),
                    );
                    e.discrepancy_id = Some(id);
                    e.actor = r_by;
                    events.push((e, 6, id));
                }
            }

            if let (Some(at), Some(reason)) = (refund.flagged_at, refund.review_reason) {
                events.push((
                    ev(
                        at,
                        "flagged",
                        format!("flagged for review: {}", reason.as_str()),
                    ),
                    5,
                    0,
                ));
            }

            let mut stmt = tx
                .prepare(
                    "SELECT id, at, actor, action, to_status, reason, detail
                       FROM operator_actions WHERE out_refund_no = ?1 ORDER BY id",
                )
                .during(OP)?;
            let rows = stmt
                .query_map([no], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })
                .during(OP)?;
            for row in rows {
                let (id, at, actor, action, to_status, reason, detail) = row.during(OP)?;
                let at = cell.ts("at", &at)?;
                let mut summary = format!("operator {actor}: {}", action.replace('_', "-"));
                if let Some(s) = to_status {
                    summary.push_str(&format!(" → {s}"));
                }
                if let Some(r) = reason {
                    summary.push_str(&format!(", reason: {r}"));
                }
                if let Some(d) = detail {
                    summary.push_str(&format!(" (was {d})"));
                }
                let mut e = ev(at, "operator", summary);
                e.actor = Some(actor);
                events.push((e, 7, id));
            }

            if let (Some(at), Some(source)) = (refund.finalized_at, refund.final_source) {
                events.push((
                    ev(
                        at,
                        "finalized",
                        format!("final: {} (source {})", refund.status, source.as_str()),
                    ),
                    8,
                    0,
                ));
            }
            if refund.status == RefundStatus::Pending {
                let summary = match refund.next_query_at {
                    Some(_) => "next /refundQuery due".to_owned(),
                    None => {
                        "not scheduled yet (the daemon schedules it at its next sweep)".to_owned()
                    }
                };
                let at = refund.next_query_at.unwrap_or(refund.created_at);
                events.push((ev(at, "next_query", summary), 9, 0));
            }
            events.sort_by_key(|e| (e.0.at, e.1, e.2));
            Ok(Some(Timeline {
                refund,
                events: events.into_iter().map(|(e, _, _)| e).collect(),
            }))
        })
    }

    /// Makes a pending refund due now and restarts its backoff (counted attempts, the
    /// unknown-at-gateway clock and the review flag are reset; the attempt log keeps all).
    /// Audited as `retry_now` with the values it replaced. A final refund is refused.
    pub fn retry_now(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "retry refund now";
        self.write(OP, |tx| {
            let row = pending_row(tx, out_refund_no, OP)?;
            retry_one(tx, &row, actor, now, OP)
        })
    }

    /// [`Ledger::retry_now`] for every pending flagged refund, in one transaction. Returns
    /// the refunds it reset, oldest first.
    pub fn retry_all_flagged(
        &self,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<OutRefundNo>, LedgerError> {
        const OP: &str = "retry flagged refunds now";
        self.write(OP, |tx| {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {REFUND_COLUMNS} FROM refunds
                      WHERE review_flag = 1 AND status = 'REFUND_PENDING'
                      ORDER BY created_at, id"
                ))
                .during(OP)?;
            let rows = stmt.query_map([], RawRefund::read).during(OP)?;
            let mut flagged = Vec::new();
            for raw in rows {
                flagged.push(raw.during(OP)?.parse()?);
            }
            let mut done = Vec::new();
            for row in flagged {
                retry_one(tx, &row, actor, now, OP)?;
                done.push(row.out_refund_no);
            }
            Ok(done)
        })
    }

    /// An operator's decision for a still-pending refund: records who, when and why in
    /// `operator_actions`, then sets the final status with `final_source = 'operator'`, in one
    /// transaction. A final refund is refused with [`LedgerError::AlreadyFinal`]; the schema's
    /// triggers refuse it too, for every writer.
    pub fn resolve(
        &self,
        out_refund_no: &OutRefundNo,
        status: FinalStatus,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<RefundRow, LedgerError> {
        const OP: &str = "resolve refund";
        self.write(OP, |tx| {
            let row = pending_row(tx, out_refund_no, OP)?;
            let detail = serde_json::json!({
                "attempts": row.attempts,
                "last_outcome": row.last_outcome.map(|o| o.as_str()),
                "review_reason": row.review_reason.map(|r| r.as_str()),
            })
            .to_string();
            let at = ts_text(now);
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, to_status, reason, detail)
                 VALUES (?1, ?2, 'resolve', ?3, ?4, ?5, ?6)",
                params![at, actor, out_refund_no.as_str(), status.as_str(), reason, detail],
            )
            .during(OP)?;
            tx.execute(
                "UPDATE refunds
                    SET status = ?2, final_source = 'operator', finalized_at = ?3,
                        next_query_at = NULL
                  WHERE out_refund_no = ?1 AND status = 'REFUND_PENDING'",
                params![out_refund_no.as_str(), status.as_str(), at],
            )
            .map_err(|source| {
                if is_trigger(&source, trigger_msg::FINAL_IMMUTABLE) {
                    LedgerError::FinalImmutable {
                        out_refund_no: out_refund_no.clone(),
                        source,
                    }
                } else {
                    LedgerError::Sqlite { op: OP, source }
                }
            })?;
            tx.query_row(
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?1"),
                [out_refund_no.as_str()],
                RawRefund::read,
            )
            .during(OP)?
            .parse()
        })
    }

    /// Discrepancies, oldest first: only unresolved ones unless `all`.
    pub fn discrepancies(&self, all: bool) -> Result<Vec<OpenDiscrepancy>, LedgerError> {
        const OP: &str = "list discrepancies";
        let sql = if all {
            "SELECT id, out_refund_no, detected_at, source, kind, expected, observed, resolved_by
               FROM discrepancies ORDER BY id"
        } else {
            "SELECT id, out_refund_no, detected_at, source, kind, expected, observed, resolved_by
               FROM discrepancies WHERE resolved_at IS NULL ORDER BY detected_at, id"
        };
        let mut stmt = self.conn.prepare_cached(sql).during(OP)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .during(OP)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, no, at, source, kind, expected, observed, resolved_by) = row.during(OP)?;
            let detected_at = Cell { out_refund_no: &no }.ts("detected_at", &at)?;
            out.push(OpenDiscrepancy {
                id,
                out_refund_no: no,
                detected_at,
                source,
                kind,
                expected,
                observed,
                resolved_by,
            });
        }
        Ok(out)
    }

    /// Marks an unresolved discrepancy resolved (who, when, how), audited in
    /// `operator_actions`. What was detected never changes.
    pub fn resolve_discrepancy(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "resolve discrepancy";
        self.write(OP, |tx| {
            let no: Option<String> = tx
                .query_row(
                    "SELECT out_refund_no FROM discrepancies WHERE id = ?1 AND resolved_at IS NULL",
                    [id],
                    |r| r.get(0),
                )
                .optional()
                .during(OP)?;
            let Some(no) = no else {
                return Err(LedgerError::DiscrepancyNotOpen { id });
            };
            let at = ts_text(now);
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, out_refund_no, reason, detail)
                 VALUES (?1, ?2, 'resolve_discrepancy', ?3, ?4, ?5)",
                params![at, actor, no, reason, format!("{{\"discrepancy\":{id}}}")],
            )
            .during(OP)?;
            tx.execute(
                "UPDATE discrepancies SET resolved_at = ?2, resolved_by = ?3, resolution = ?4
                  WHERE id = ?1 AND resolved_at IS NULL",
                params![id, at, actor, reason],
            )
            .during(OP)?;
            Ok(())
        })
    }

    /// What a prune with this cutoff would remove; writes nothing.
    pub fn prune_plan(&self, finalized_before: Timestamp) -> Result<PruneCounts, LedgerError> {
        const OP: &str = "plan prune";
        self.read(OP, |tx| counts_for(tx, &ts_text(finalized_before), OP))
    }

    /// Removes final refunds finalized before `finalized_before` (and their attempts,
    /// notifications and resolved discrepancies, and sweeps finished before it), in ONE
    /// transaction: every removed row is first written to `archive` as JSON lines (created
    /// new, synced, its SHA-256 recorded), then the `prunes` row is inserted as running (the
    /// only thing the schema's delete triggers accept), the rows are deleted, and the prune is
    /// marked done with its counts. Refunds with an unresolved discrepancy are kept. `archive`
    /// `None` deletes without a copy (the operator said `--no-archive`).
    pub fn prune(
        &self,
        finalized_before: Timestamp,
        actor: &str,
        reason: &str,
        archive: Option<&Path>,
        now: Timestamp,
    ) -> Result<PruneReport, LedgerError> {
        const OP: &str = "prune";
        let cutoff = ts_text(finalized_before);
        self.write(OP, |tx| {
            let counts = counts_for(tx, &cutoff, OP)?;
            let sha = match archive {
                Some(path) => Some(write_archive(tx, path, &cutoff, actor, reason, now)?),
                None => None,
            };
            tx.execute(
                "INSERT INTO prunes (started_at, actor, reason, finalized_before, archive_path,
                                     archive_sha256, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running')",
                params![
                    ts_text(now),
                    actor,
                    reason,
                    cutoff,
                    archive.map(|p| p.display().to_string()),
                    sha
                ],
            )
            .during(OP)?;
            let id = tx.last_insert_rowid();
            let victims = format!("SELECT out_refund_no FROM refunds WHERE {PRUNABLE}");
            let n = |sql: String| -> Result<u64, LedgerError> {
                Ok(tx.execute(&sql, [&cutoff]).during(OP)? as u64)
            };
            let done = PruneCounts {
                attempts: n(format!(
                    "DELETE FROM attempts WHERE out_refund_no IN ({victims})"
                ))?,
                notifications: n(format!(
                    "DELETE FROM notifications WHERE out_refund_no IN ({victims})"
                ))?,
                discrepancies: n(format!(
                    "DELETE FROM discrepancies WHERE resolved_at IS NOT NULL
                        AND out_refund_no IN ({victims})"
                ))?,
                refunds: n(format!("DELETE FROM refunds WHERE {PRUNABLE}"))?,
                sweeps: n("DELETE FROM sweeps WHERE finished_at < ?1".to_owned())?,
                kept_unresolved: counts.kept_unresolved,
            };
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            tx.execute(
                "UPDATE prunes SET state = 'done', refunds = ?2, attempts = ?3, notifications = ?4,
                        discrepancies = ?5, sweeps = ?6
                  WHERE id = ?1",
                params![
                    id,
                    i(done.refunds),
                    i(done.attempts),
                    i(done.notifications),
                    i(done.discrepancies),
                    i(done.sweeps)
                ],
            )
            .during(OP)?;
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, reason, detail)
                 VALUES (?1, ?2, 'prune', ?3, ?4)",
                params![
                    ts_text(now),
                    actor,
                    reason,
                    serde_json::json!({"prune": id, "finalized_before": cutoff}).to_string()
                ],
            )
            .during(OP)?;
            Ok(PruneReport {
                prune_id: Some(id),
                finalized_before,
                counts: done,
                archive: archive.map(Path::to_path_buf),
                archive_sha256: sha,
                dry_run: false,
            })
        })
    }

    /// An online, consistent copy of the ledger at `dest` with SQLite's `VACUUM INTO` (one
    /// read transaction: the daemon and the merchant's app keep writing meanwhile). `dest`
    /// must not exist. The copy is then opened and checked (`quick_check`, schema version).
    pub fn backup(&self, dest: &Path) -> Result<BackupReport, LedgerError> {
        const OP: &str = "backup";
        if dest.exists() {
            return Err(LedgerError::TargetExists {
                path: dest.to_owned(),
            });
        }
        let target = dest.to_str().ok_or_else(|| LedgerError::File {
            path: dest.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the backup path is not valid UTF-8",
            ),
        })?;
        self.conn.execute("VACUUM INTO ?1", [target]).during(OP)?;
        // The copy is as private as the ledger it came from.
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let _ = std::fs::set_permissions(dest, meta.permissions());
        }
        let check = |detail: String| LedgerError::BackupCheck {
            path: dest.to_owned(),
            detail,
        };
        let copy = rusqlite::Connection::open_with_flags(
            dest,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| check(e.to_string()))?;
        let ok: String = copy
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| check(e.to_string()))?;
        if ok != "ok" {
            return Err(check(format!("quick_check: {ok}")));
        }
        let version: i32 = copy
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| check(e.to_string()))?;
        if version != super::SCHEMA_VERSION {
            return Err(check(format!("schema version {version}")));
        }
        let refunds: i64 = copy
            .query_row("SELECT count(*) FROM refunds", [], |r| r.get(0))
            .map_err(|e| check(e.to_string()))?;
        let bytes = std::fs::metadata(dest)
            .map_err(|source| LedgerError::File {
                path: dest.to_owned(),
                source,
            })?
            .len();
        Ok(BackupReport {
            path: dest.to_owned(),
            bytes,
            refunds: to_u64(refunds),
        })
    }

    /// `status` plus what needs a human: flagged refunds, a halted worker (configuration
    /// rejected by Checus, clock skew), a worker that has not swept for `stale_after` (or
    /// never), and unresolved discrepancies.
    pub fn health(&self, now: Timestamp, stale_after: Duration) -> Result<Health, LedgerError> {
        let summary = self.status(now)?;
        let mut warnings = Vec::new();
        if summary.flagged > 0 {
            warnings.push(HealthWarning {
                code: "flagged_refunds",
                message: format!(
                    "{} pending refunds are flagged for review (see `stuck`, `explain`)",
                    summary.flagged
                ),
            });
        }
        let mut worker_idle_s = None;
        match &summary.last_sweep {
            None => warnings.push(HealthWarning {
                code: "worker_never_ran",
                message: "the worker has never swept this ledger: is the daemon running?"
                    .to_owned(),
            }),
            Some(sweep) => {
                let last = sweep.finished_at.unwrap_or(sweep.started_at);
                let idle = (now - last).num_seconds().max(0);
                worker_idle_s = Some(idle);
                if idle > i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX) {
                    warnings.push(HealthWarning {
                        code: "worker_stale",
                        message: format!(
                            "the worker last ran {} ({}s ago, more than {}s): is the daemon running?",
                            ts_text(last),
                            idle,
                            stale_after.as_secs()
                        ),
                    });
                }
                if let Some(reason) = &sweep.halted_reason {
                    let code = if reason.starts_with("clock skew") {
                        "clock_skew"
                    } else {
                        "config_error"
                    };
                    warnings.push(HealthWarning {
                        code,
                        message: format!("querying is halted: {reason}"),
                    });
                }
            }
        }
        if summary.unresolved_discrepancies > 0 {
            warnings.push(HealthWarning {
                code: "unresolved_discrepancies",
                message: format!(
                    "{} discrepancies are unresolved (see `discrepancies`, `resolve-discrepancy`)",
                    summary.unresolved_discrepancies
                ),
            });
        }
        Ok(Health {
            summary,
            worker_idle_s,
            stale_after_s: stale_after.as_secs(),
            needs_human: !warnings.is_empty(),
            warnings,
        })
    }
}

fn limit_arg(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The refund row, if it exists and is still pending.
fn pending_row(
    tx: &Transaction<'_>,
    no: &OutRefundNo,
    op: &'static str,
) -> Result<RefundRow, LedgerError> {
    let row = tx
        .query_row(
            &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?1"),
            [no.as_str()],
            RawRefund::read,
        )
        .optional()
        .during(op)?
        .ok_or_else(|| LedgerError::NotFound {
            out_refund_no: no.clone(),
        })?
        .parse()?;
    if row.status != RefundStatus::Pending {
        return Err(LedgerError::AlreadyFinal {
            out_refund_no: no.clone(),
            status: row.status,
        });
    }
    Ok(row)
}

fn retry_one(
    tx: &Transaction<'_>,
    row: &RefundRow,
    actor: &str,
    now: Timestamp,
    op: &'static str,
) -> Result<(), LedgerError> {
    let no = row.out_refund_no.as_str();
    let at = ts_text(now);
    let detail = serde_json::json!({
        "attempts": row.attempts,
        "next_query_at": row.next_query_at.map(ts_text),
        "unknown_since": row.unknown_since.map(ts_text),
        "review_reason": row.review_reason.map(|r| r.as_str()),
    })
    .to_string();
    tx.execute(
        "INSERT INTO operator_actions (at, actor, action, out_refund_no, detail)
         VALUES (?1, ?2, 'retry_now', ?3, ?4)",
        params![at, actor, no, detail],
    )
    .during(op)?;
    tx.execute(
        "UPDATE refunds
            SET next_query_at = ?2, attempts = 0, unknown_since = NULL,
                review_flag = 0, review_reason = NULL, flagged_at = NULL
          WHERE out_refund_no = ?1 AND status = 'REFUND_PENDING'",
        params![no, at],
    )
    .during(op)?;
    Ok(())
}

fn counts_for(
    tx: &Transaction<'_>,
    cutoff: &str,
    op: &'static str,
) -> Result<PruneCounts, LedgerError> {
    let victims = format!("SELECT out_refund_no FROM refunds WHERE {PRUNABLE}");
    let n = |sql: String| -> Result<u64, LedgerError> {
        let v: i64 = tx.query_row(&sql, [cutoff], |r| r.get(0)).during(op)?;
        Ok(to_u64(v))
    };
    Ok(PruneCounts {
        refunds: n(format!("SELECT count(*) FROM refunds WHERE {PRUNABLE}"))?,
        attempts: n(format!(
            "SELECT count(*) FROM attempts WHERE out_refund_no IN ({victims})"
        ))?,
        notifications: n(format!(
            "SELECT count(*) FROM notifications WHERE out_refund_no IN ({victims})"
        ))?,
        discrepancies: n(format!(
            "SELECT count(*) FROM discrepancies WHERE resolved_at IS NOT NULL
                AND out_refund_no IN ({victims})"
        ))?,
        sweeps: n("SELECT count(*) FROM sweeps WHERE finished_at < ?1".to_owned())?,
        kept_unresolved: n("SELECT count(*) FROM refunds
              WHERE status <> 'REFUND_PENDING' AND finalized_at < ?1
                AND EXISTS (SELECT 1 FROM discrepancies AS d
                             WHERE d.out_refund_no = refunds.out_refund_no
                               AND d.resolved_at IS NULL)"
            .to_owned())?,
    })
}

/// Writes every row a prune will remove to `path` (created new), one JSON object per line:
/// a header line, then `{"table": ..., "row": {column: value}}` with values exactly as stored.
/// Synced to disk before returning its SHA-256 (hex).
fn write_archive(
    tx: &Transaction<'_>,
    path: &Path,
    cutoff: &str,
    actor: &str,
    reason: &str,
    now: Timestamp,
) -> Result<String, LedgerError> {
    const OP: &str = "archive pruned rows";
    let io = |source: std::io::Error| LedgerError::File {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                LedgerError::TargetExists {
                    path: path.to_owned(),
                }
            } else {
                io(source)
            }
        })?;
    let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut out = std::io::BufWriter::new(file);
    let mut line = |value: &serde_json::Value| -> Result<(), LedgerError> {
        let mut text = value.to_string();
        text.push('\n');
        hasher.update(text.as_bytes());
        out.write_all(text.as_bytes()).map_err(io)
    };
    line(&serde_json::json!({
        "checus_reconciler_prune_archive": 1,
        "finalized_before": cutoff,
        "actor": actor,
        "reason": reason,
        "at": ts_text(now),
    }))?;
    let victims = format!("SELECT out_refund_no FROM refunds WHERE {PRUNABLE}");
    let selects = [
        (
            "refunds",
            format!("SELECT * FROM refunds WHERE {PRUNABLE} ORDER BY id"),
        ),
        (
            "attempts",
            format!("SELECT * FROM attempts WHERE out_refund_no IN ({victims}) ORDER BY id"),
        ),
        (
            "notifications",
            format!("SELECT * FROM notifications WHERE out_refund_no IN ({victims}) ORDER BY id"),
        ),
        (
            "discrepancies",
            format!(
                "SELECT * FROM discrepancies WHERE resolved_at IS NOT NULL
                    AND out_refund_no IN ({victims}) ORDER BY id"
            ),
        ),
        (
            "sweeps",
            "SELECT * FROM sweeps WHERE finished_at < ?1 ORDER BY id".to_owned(),
        ),
    ];
    for (table, sql) in selects {
        let mut stmt = tx.prepare(&sql).during(OP)?;
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([cutoff]).during(OP)?;
        while let Some(r) = rows.next().during(OP)? {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match r.get_ref(i).during(OP)? {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(n) => serde_json::Value::from(n),
                    // Amounts are TEXT, so no money ever passes through here.
                    ValueRef::Real(f) => serde_json::Value::from(f),
                    ValueRef::Text(t) => {
                        serde_json::Value::from(String::from_utf8_lossy(t).into_owned())
                    }
                    ValueRef::Blob(b) => serde_json::Value::from(
                        b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
                    ),
                };
                obj.insert(name.clone(), v);
            }
            line(&serde_json::json!({"table": table, "row": obj}))?;
        }
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let digest = hasher.finish();
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}
