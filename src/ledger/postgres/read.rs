//! What the read commands, `/readyz`, `/metrics` and the API read, on PostgreSQL: `status` and
//! its findings, the gauges, `list`, `show`, `explain`, `stuck`, `failed`, `export`,
//! `discrepancies`, `audit`, and the sweeps the `resume` command waits for. The same queries as
//! the SQLite engine's `read.rs`, `views.rs`, `health.rs`, `gauges.rs`, `audit.rs` and
//! `timeline.rs`; each runs in one REPEATABLE READ transaction, so its numbers agree.

use std::sync::LazyLock;
use std::time::Duration;

use postgres::types::ToSql;

use super::rows::{
    ATTEMPT_COLUMNS, DISCREPANCY_COLUMNS, NOTIFICATION_COLUMNS, OPERATOR_ACTION_COLUMNS,
    REFUND_COLUMNS, SWEEP_COLUMNS, attempt, discrepancy, notification, operator_action,
    operator_action_or_unreadable, refund_or_unreadable, sweep, sweep_or_unreadable,
};
use super::write::refund_of;
use super::{Db, PgLedger, ms};
use crate::domain::{OutRefundNo, Policy, RefundStatus, Timestamp};
use crate::ledger::error::LedgerError;
use crate::ledger::health::{Thresholds, before, judge_summary};
use crate::ledger::sqlite::timeline::{event, refund_events};
use crate::ledger::types::{
    ListFilter, OperatorActionRow, Readout, RefundDetail, RefundRow, StatusSummary, SweepRow,
    UnreadableRow, limit_arg, to_u64,
};
use crate::ledger::{
    AuditFilter, Finding, Happened, Health, LedgerGauges, OpenDiscrepancy, Timeline,
};

/// A statement's parameters as the client takes them.
type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// `stuck`'s rows (`$1`: the cutoff).
const STUCK: &str = "WHERE status = 'REFUND_PENDING' AND created_at <= $1";

/// `failed`'s rows (`$1`: since when).
const FAILED: &str = "WHERE finalized_at >= $1 AND status = 'REFUND_FAILED'";

/// The oldest pending refund's `created_at`: one seek of `refunds_pending_unflagged` and one of
/// the pending rows of `refunds_flagged`.
const OLDEST_PENDING: &str = "\
    SELECT least((SELECT min(created_at) FROM refunds
                   WHERE status = 'REFUND_PENDING' AND review_flag = 0),
                 (SELECT min(created_at) FROM refunds
                   WHERE status = 'REFUND_PENDING' AND review_flag = 1))";

impl PgLedger {
    /// The ledger at a glance. `now` decides what counts as due. The counts by status are
    /// `refund_counts`' rows (kept by triggers, whoever writes).
    pub fn status(&self, now: Timestamp) -> Result<StatusSummary, LedgerError> {
        const OP: &str = "read status";
        let now = ms(now);
        self.read(OP, |db| {
            let (mut pending, mut succeeded, mut failed) = (0, 0, 0);
            for r in db.query(OP, "SELECT status, n FROM refund_counts", &[])? {
                let n = to_u64(r.get(1));
                match r.get::<_, String>(0).parse::<RefundStatus>() {
                    Ok(RefundStatus::Pending) => pending = n,
                    Ok(RefundStatus::Success) => succeeded = n,
                    Ok(RefundStatus::Failed) => failed = n,
                    Err(_) => {}
                }
            }
            let mut count = |sql: &'static str, p: &[&(dyn ToSql + Sync)]| {
                db.query_one(OP, sql, p).map(|r| to_u64(r.get(0)))
            };
            let due_now = count(
                "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING' AND next_query_at <= $1",
                &[&now],
            )?;
            let unscheduled = count(
                "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL",
                &[],
            )?;
            let flagged = count("SELECT count(*) FROM refunds WHERE review_flag = 1", &[])?;
            let unresolved_discrepancies = count(
                "SELECT count(*) FROM discrepancies WHERE resolved_at IS NULL",
                &[],
            )?;
            let oldest_pending_created_at = db.query_one(OP, OLDEST_PENDING, &[])?.get(0);
            static LAST_SWEEP: LazyLock<String> = LazyLock::new(|| {
                format!("SELECT {SWEEP_COLUMNS} FROM sweeps ORDER BY id DESC LIMIT 1")
            });
            let mut unreadable = Vec::new();
            let last_sweep = db
                .query_opt(OP, LAST_SWEEP.as_str(), &[])?
                .map(|r| sweep_or_unreadable(&r))
                .and_then(|s| s.map_err(|bad| unreadable.push(bad)).ok());
            Ok(StatusSummary {
                pending,
                succeeded,
                failed,
                due_now,
                unscheduled,
                flagged,
                oldest_pending_created_at,
                unresolved_discrepancies,
                last_sweep,
                unreadable,
            })
        })
    }

    /// `status` plus what needs a human at `now` (see the SQLite engine's `health_with`:
    /// the same findings from the same stored facts).
    pub fn health_with(
        &self,
        now: Timestamp,
        stale_after: Duration,
        policy: &Policy,
    ) -> Result<Health, LedgerError> {
        let thresholds = &Thresholds::new(stale_after, policy);
        let summary = self.status(now)?;
        let (mut findings, worker_idle_s) = judge_summary(&summary, now, thresholds);
        let stale_after_s = thresholds.stale_after.as_secs();
        let unread = &summary.unreadable;
        findings.extend(self.read("read health", |db| stalls(db, now, thresholds, unread))?);
        Ok(Health {
            summary,
            worker_idle_s,
            stale_after_s,
            findings,
        })
    }

    /// The gauges `/metrics` exposes, at `now`, in one transaction.
    pub fn gauges(&self, now: Timestamp) -> Result<LedgerGauges, LedgerError> {
        const OP: &str = "read gauges";
        let now = ms(now);
        self.read(OP, |db| {
            let mut counted = Vec::new();
            for r in db.query(OP, "SELECT status, n FROM refund_counts", &[])? {
                if let Ok(status) = r.get::<_, String>(0).parse::<RefundStatus>() {
                    counted.push((status, to_u64(r.get(1))));
                }
            }
            let refunds = RefundStatus::ALL
                .iter()
                .map(|s| {
                    let n = counted.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n);
                    (*s, n)
                })
                .collect();
            let mut count = |sql: &'static str, p: &[&(dyn ToSql + Sync)]| {
                db.query_one(OP, sql, p).map(|r| to_u64(r.get(0)))
            };
            Ok(LedgerGauges {
                refunds,
                flagged: count("SELECT count(*) FROM refunds WHERE review_flag = 1", &[])?,
                due: count(
                    "SELECT count(*) FROM refunds
                      WHERE status = 'REFUND_PENDING' AND next_query_at <= $1",
                    &[&now],
                )?,
                unresolved_discrepancies: count(
                    "SELECT count(*) FROM discrepancies WHERE resolved_at IS NULL",
                    &[],
                )?,
                dead_webhooks: count(
                    "SELECT count(*) FROM webhook_events WHERE state = 'dead'",
                    &[],
                )?,
                oldest_pending_created_at: db.query_one(OP, OLDEST_PENDING, &[])?.get(0),
            })
        })
    }

    /// Refunds matching `filter`, oldest first; a row that cannot be read is in `unreadable`.
    pub fn list(&self, filter: &ListFilter) -> Result<Readout<RefundRow>, LedgerError> {
        const OP: &str = "list refunds";
        let (clause, args) = list_clause(filter);
        let limit = limit_arg(filter.limit);
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds {clause} ORDER BY created_at, id LIMIT ${}",
            args.len() + 1
        );
        self.read(OP, |db| {
            let mut p: Params<'_> = args.iter().map(ListArg::param).collect();
            p.push(&limit);
            let rows = db.query_dyn(OP, &sql, &p)?;
            Ok(Readout::of(rows.iter().map(refund_or_unreadable).collect()))
        })
    }

    /// How many refunds match `filter`, ignoring its limit.
    pub fn list_total(&self, filter: &ListFilter) -> Result<u64, LedgerError> {
        const OP: &str = "count refunds";
        let (clause, args) = list_clause(filter);
        let sql = format!("SELECT count(*) FROM refunds {clause}");
        self.read(OP, |db| {
            let p: Params<'_> = args.iter().map(ListArg::param).collect();
            Ok(to_u64(db.query_dyn(OP, &sql, &p)?[0].get(0)))
        })
    }

    /// One refund with its attempts, discrepancies and notifications, oldest first.
    pub fn show(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundDetail>, LedgerError> {
        let no = out_refund_no.as_str();
        self.read("show refund", |db| {
            let Some(refund) = refund_of(db, no)? else {
                return Ok(None);
            };
            Ok(Some(RefundDetail {
                refund,
                attempts: history(db, &ATTEMPTS_OF, no, attempt)?,
                discrepancies: history(db, &DISCREPANCIES_OF, no, discrepancy)?,
                notifications: history(db, &NOTIFICATIONS_OF, no, notification)?,
            }))
        })
    }

    /// One refund's history as typed events in time order (`explain`).
    pub fn timeline(&self, out_refund_no: &OutRefundNo) -> Result<Option<Timeline>, LedgerError> {
        let no = out_refund_no.as_str();
        self.read("explain refund", |db| {
            let Some(refund) = refund_of(db, no)? else {
                return Ok(None);
            };
            let mut events = refund_events(&refund);
            for a in history(db, &ATTEMPTS_OF, no, attempt)? {
                let at = a.attempted_at;
                if let Some(decision) = a.decision.clone() {
                    let attempt_id = a.id;
                    events.push(event(
                        at,
                        Happened::Decided {
                            attempt_id,
                            decision,
                        },
                    ));
                }
                events.push(event(at, Happened::Queried(a)));
            }
            for n in history(db, &NOTIFICATIONS_OF, no, notification)? {
                events.push(event(n.received_at, Happened::Notified(n)));
            }
            for d in history(db, &DISCREPANCIES_OF, no, discrepancy)? {
                if let Some(resolved_at) = d.resolved_at {
                    events.push(event(resolved_at, Happened::DiscrepancyResolved(d.clone())));
                }
                events.push(event(d.detected_at, Happened::DiscrepancyDetected(d)));
            }
            for action in history(db, &ACTIONS_OF, no, operator_action)? {
                events.push(event(action.at, Happened::OperatorActed(action)));
            }
            events.sort();
            Ok(Some(Timeline { refund, events }))
        })
    }

    /// Pending refunds created at or before `created_before`, oldest first, at most `limit`.
    pub fn stuck(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {REFUND_COLUMNS} FROM refunds {STUCK} ORDER BY created_at, id LIMIT $2")
        });
        self.refunds("list stuck refunds", &SQL, ms(created_before), Some(limit))
    }

    /// How many refunds [`PgLedger::stuck`] would list without a limit.
    pub fn stuck_total(&self, created_before: Timestamp) -> Result<u64, LedgerError> {
        static SQL: LazyLock<String> =
            LazyLock::new(|| format!("SELECT count(*) FROM refunds {STUCK}"));
        self.count_at("count stuck refunds", &SQL, ms(created_before))
    }

    /// Refunds that became `REFUND_FAILED` at or after `since`, in the order they failed.
    pub fn failed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {REFUND_COLUMNS} FROM refunds {FAILED} ORDER BY finalized_at, id LIMIT $2"
            )
        });
        self.refunds("list failed refunds", &SQL, ms(since), Some(limit))
    }

    /// How many refunds [`PgLedger::failed_since`] would list without a limit.
    pub fn failed_total(&self, since: Timestamp) -> Result<u64, LedgerError> {
        static SQL: LazyLock<String> =
            LazyLock::new(|| format!("SELECT count(*) FROM refunds {FAILED}"));
        self.count_at("count failed refunds", &SQL, ms(since))
    }

    /// Every refund created at or after `since`, oldest first, for `export`.
    pub fn export_since(&self, since: Timestamp) -> Result<Readout<RefundRow>, LedgerError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE created_at >= $1
                  ORDER BY created_at, id"
            )
        });
        self.refunds("export refunds", &SQL, ms(since), None)
    }

    fn refunds(
        &self,
        op: &'static str,
        sql: &'static LazyLock<String>,
        at: Timestamp,
        limit: Option<usize>,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        self.read(op, |db| {
            let rows = match limit {
                Some(l) => db.query(op, sql.as_str(), &[&at, &limit_arg(l)])?,
                None => db.query(op, sql.as_str(), &[&at])?,
            };
            Ok(Readout::of(rows.iter().map(refund_or_unreadable).collect()))
        })
    }

    fn count_at(
        &self,
        op: &'static str,
        sql: &'static LazyLock<String>,
        at: Timestamp,
    ) -> Result<u64, LedgerError> {
        self.read(op, |db| {
            Ok(to_u64(db.query_one(op, sql.as_str(), &[&at])?.get(0)))
        })
    }

    /// One discrepancy by id, resolved or not.
    pub fn discrepancy(&self, id: i64) -> Result<Option<OpenDiscrepancy>, LedgerError> {
        const OP: &str = "read discrepancy";
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {DISCREPANCY_COLUMNS} FROM discrepancies WHERE id = $1")
        });
        self.read(OP, |db| {
            db.query_opt(OP, SQL.as_str(), &[&id])?
                .map(|r| discrepancy(&r).map(OpenDiscrepancy::from))
                .transpose()
        })
    }

    /// Unresolved discrepancies (oldest detected first), or all of them (in id order).
    pub fn discrepancies(&self, all: bool) -> Result<Vec<OpenDiscrepancy>, LedgerError> {
        const OP: &str = "list discrepancies";
        static ALL: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {DISCREPANCY_COLUMNS} FROM discrepancies ORDER BY id")
        });
        static OPEN: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {DISCREPANCY_COLUMNS} FROM discrepancies WHERE resolved_at IS NULL
                  ORDER BY detected_at, id"
            )
        });
        let sql = if all { &ALL } else { &OPEN };
        self.read(OP, |db| {
            db.query(OP, sql.as_str(), &[])?
                .iter()
                .map(|r| discrepancy(r).map(OpenDiscrepancy::from))
                .collect()
        })
    }

    /// The latest `filter.limit` operator actions matching `filter`, oldest first.
    pub fn audit(&self, filter: &AuditFilter) -> Result<Readout<OperatorActionRow>, LedgerError> {
        const OP: &str = "list operator actions";
        let (clause, args) = audit_clause(filter);
        let limit = limit_arg(filter.limit);
        let sql = format!(
            "SELECT * FROM (SELECT {OPERATOR_ACTION_COLUMNS} FROM operator_actions {clause}
                             ORDER BY id DESC LIMIT ${}) AS latest ORDER BY id",
            args.len() + 1
        );
        self.read(OP, |db| {
            let mut p: Params<'_> = args.iter().map(ListArg::param).collect();
            p.push(&limit);
            let rows = db.query_dyn(OP, &sql, &p)?;
            Ok(Readout::of(
                rows.iter().map(operator_action_or_unreadable).collect(),
            ))
        })
    }

    /// How many operator actions match `filter`, ignoring its limit.
    pub fn audit_total(&self, filter: &AuditFilter) -> Result<u64, LedgerError> {
        const OP: &str = "count operator actions";
        let (clause, args) = audit_clause(filter);
        let sql = format!("SELECT count(*) FROM operator_actions {clause}");
        self.read(OP, |db| {
            let p: Params<'_> = args.iter().map(ListArg::param).collect();
            Ok(to_u64(db.query_dyn(OP, &sql, &p)?[0].get(0)))
        })
    }

    /// The newest finished sweep, if any.
    pub fn latest_finished_sweep(&self) -> Result<Option<SweepRow>, LedgerError> {
        const OP: &str = "read latest finished sweep";
        self.read(OP, |db| {
            db.query_opt(OP, LATEST_FINISHED.as_str(), &[])?
                .map(|r| sweep(&r))
                .transpose()
        })
    }

    /// The first sweep that finished after the sweep id `after`, if any.
    pub fn first_finished_sweep_after(&self, after: i64) -> Result<Option<SweepRow>, LedgerError> {
        const OP: &str = "read the sweep after a resume request";
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {SWEEP_COLUMNS} FROM sweeps WHERE id > $1 AND finished_at IS NOT NULL
                  ORDER BY id LIMIT 1"
            )
        });
        self.read(OP, |db| {
            db.query_opt(OP, SQL.as_str(), &[&after])?
                .map(|r| sweep(&r))
                .transpose()
        })
    }
}

/// The newest finished sweep.
static LATEST_FINISHED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SWEEP_COLUMNS} FROM sweeps WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"
    )
});

static ATTEMPTS_OF: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE out_refund_no = $1 ORDER BY id")
});
static DISCREPANCIES_OF: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {DISCREPANCY_COLUMNS} FROM discrepancies WHERE out_refund_no = $1 ORDER BY id")
});
static NOTIFICATIONS_OF: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE out_refund_no = $1 ORDER BY id")
});
static ACTIONS_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {OPERATOR_ACTION_COLUMNS} FROM operator_actions WHERE out_refund_no = $1 ORDER BY id"
    )
});

/// One refund's rows of a history table (`sql` selects them by `$1`), oldest first.
fn history<T>(
    db: &mut Db<'_>,
    sql: &'static LazyLock<String>,
    no: &str,
    read: fn(&postgres::Row) -> Result<T, LedgerError>,
) -> Result<Vec<T>, LedgerError> {
    db.query("read refund history", sql.as_str(), &[&no])?
        .iter()
        .map(read)
        .collect()
}

/// A bound value of a filter: text or an instant.
enum ListArg {
    Text(String),
    At(Timestamp),
}

impl ListArg {
    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(t) => t,
            Self::At(t) => t,
        }
    }
}

/// `list`'s `WHERE` clause (its limit aside) and its values. The flag is a literal, so the
/// planner can use the partial index `refunds_flagged`.
fn list_clause(filter: &ListFilter) -> (String, Vec<ListArg>) {
    let mut sql = String::from("WHERE true");
    let mut args = Vec::new();
    if let Some(status) = filter.status {
        args.push(ListArg::Text(status.as_str().to_owned()));
        sql.push_str(&format!(" AND status = ${}", args.len()));
    }
    match filter.flagged {
        Some(true) => sql.push_str(" AND review_flag = 1"),
        Some(false) => sql.push_str(" AND review_flag = 0"),
        None => {}
    }
    if let Some(since) = filter.since {
        args.push(ListArg::At(ms(since)));
        sql.push_str(&format!(" AND created_at >= ${}", args.len()));
    }
    (sql, args)
}

/// `audit`'s `WHERE` clause and its values.
fn audit_clause(filter: &AuditFilter) -> (String, Vec<ListArg>) {
    let mut sql = String::from("WHERE true");
    let mut args = Vec::new();
    if let Some(no) = &filter.refund {
        args.push(ListArg::Text(no.as_str().to_owned()));
        sql.push_str(&format!(" AND out_refund_no = ${}", args.len()));
    }
    if let Some(since) = filter.since {
        args.push(ListArg::At(ms(since)));
        sql.push_str(&format!(" AND at >= ${}", args.len()));
    }
    (sql, args)
}

/// What stops reconciliation without a halt, in [`Finding`]'s order (the SQLite engine's
/// `stalls`, query for query). `unread_rows`: the rows the counts could not read.
fn stalls(
    db: &mut Db<'_>,
    now: Timestamp,
    thresholds: &Thresholds,
    unread_rows: &[UnreadableRow],
) -> Result<Vec<Finding>, LedgerError> {
    const OP: &str = "read health";
    let mut findings = Vec::new();
    let mut unread = unread_rows.len();
    let latest = match db
        .query_opt(OP, LATEST_FINISHED.as_str(), &[])?
        .map(|r| sweep_or_unreadable(&r))
    {
        Some(Ok(s)) => Some(s),
        Some(Err(bad)) => {
            if !unread_rows
                .iter()
                .any(|r| r.table == bad.table && r.id == bad.id)
            {
                unread += 1;
            }
            None
        }
        None => None,
    };
    if let Some(s) = &latest {
        findings.extend(sweep_findings(db, s, now)?);
    }
    let unread = u64::try_from(unread).unwrap_or(u64::MAX);
    let skipped = latest.as_ref().map_or(0, |s| s.counts.unreadable);
    let flagged = to_u64(
        db.query_one(
            OP,
            "SELECT count(*) FROM refunds
              WHERE review_flag = 1 AND review_reason IN ('row_unreadable', 'row_unwritable')",
            &[],
        )?
        .get(0),
    );
    // timestamptz columns hold real instants within years 1..9999 (their CHECKs): no
    // created_at can sort outside the ledger's range here.
    let bad_created_at = 0;
    if unread > 0 || skipped > 0 || flagged > 0 {
        findings.push(Finding::UnreadableRows {
            unread,
            skipped,
            flagged,
            bad_created_at,
        });
    }
    if let Some(s) = &latest {
        let created_before =
            before(now, thresholds.grace).map_or(s.started_at, |t| t.min(s.started_at));
        let count = to_u64(
            db.query_one(
                OP,
                "SELECT count(*) FROM refunds
                  WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL AND created_at < $1",
                &[&ms(created_before)],
            )?
            .get(0),
        );
        if count > 0 {
            findings.push(Finding::UnscheduledRefunds {
                count,
                created_before,
            });
        }
    }
    let overdue_after = thresholds.overdue_after();
    if let Some(cutoff) = before(now, overdue_after) {
        let count = to_u64(
            db.query_one(
                OP,
                "SELECT count(*) FROM refunds
                  WHERE status = 'REFUND_PENDING' AND review_flag = 0 AND created_at < $1
                    AND next_query_at IS NOT NULL",
                &[&ms(cutoff)],
            )?
            .get(0),
        );
        if count > 0 {
            findings.push(Finding::OverdueUnflaggedRefunds {
                count,
                older_than_s: overdue_after.as_secs(),
            });
        }
    }
    if let Some(r) = db.query_opt(
        OP,
        "SELECT id, started_at FROM prunes WHERE state = 'running' ORDER BY id LIMIT 1",
        &[],
    )? {
        findings.push(Finding::PruneLeftRunning {
            id: r.get(0),
            started_at: r.get(1),
        });
    }
    let dead = to_u64(
        db.query_one(
            OP,
            "SELECT count(*) FROM webhook_events WHERE state = 'dead'",
            &[],
        )?
        .get(0),
    );
    if dead > 0 {
        findings.push(Finding::DeadWebhooks { count: dead });
    }
    Ok(findings)
}

/// What the latest finished sweep says about the gateway and about itself.
fn sweep_findings(
    db: &mut Db<'_>,
    sweep: &SweepRow,
    now: Timestamp,
) -> Result<Vec<Finding>, LedgerError> {
    let mut findings = Vec::new();
    if let Some(since) = sweep.breaker_open_since {
        findings.push(Finding::GatewayUnavailable {
            since,
            paused_s: (now - since).num_seconds().max(0),
        });
    }
    if let Some(error) = &sweep.error {
        let r = db.query_one(
            "read health",
            "SELECT count(*), min(started_at) FROM sweeps
              WHERE finished_at IS NOT NULL
                AND id > coalesce((SELECT id FROM sweeps
                                    WHERE finished_at IS NOT NULL AND error IS NULL
                                    ORDER BY id DESC LIMIT 1), 0)",
            &[],
        )?;
        let first: Option<Timestamp> = r.get(1);
        findings.push(Finding::SweepsFailing {
            error: error.clone(),
            consecutive: to_u64(r.get(0)).max(1),
            since: first.unwrap_or(sweep.started_at),
        });
    }
    Ok(findings)
}
