//! The ledger interface: what the worker, the daemon's endpoints, the commands and the demo
//! ask of a ledger, whatever engine keeps it. One trait per kind of caller, so a reviewer sees
//! who needs what; [`LedgerStore`] is all of them, the type behind [`super::Ledger`].
//!
//! Every method is synchronous and is one short transaction (the import alone is one long
//! one, by contract). Callers run them on a blocking thread, never on the async workers: the
//! SQLite engine is rusqlite, the PostgreSQL engine the synchronous `postgres` client, each
//! connection owning its client. The traits are object-safe (no generics, no `Self` by value)
//! and need no lifetimes beyond `&self`/`&mut self`.
//!
//! The rules that protect money are the schema's, not the engine's code: a final status never
//! changes, refunds and their history are never deleted (only `prune` removes final refunds,
//! archived), the attempt's change is a compare-and-set on the pending status. An engine that
//! cannot do something at all (a file backup on PostgreSQL) answers
//! [`LedgerError::NotOnThisEngine`].

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use super::error::LedgerError;
use super::health::Health;
use super::timeline::Timeline;
use super::types::{
    Applied, AuditFilter, BackupReport, LedgerGauges, ListFilter, LoggedDiscrepancy, NodeRow,
    NodeStart, NotificationEffect, NotificationRecord, OpenDiscrepancy, OperatorActionRow,
    PruneCounts, PruneReport, PrunedRefund, Readout, RefundDetail, RefundRow, Registered,
    ResumeAction, ResumeRequest, SkipList, StatusSummary, SweepEnd, SweepRow, Watermark,
};
use super::webhooks::{DeliveryResult, DueWebhook, WebhookEventRow, WebhookFilter};
use crate::domain::{
    Decision, FinalStatus, NewRefund, NodeName, OutRefundNo, OutcomeClass, Policy, QueryReport,
    RefundState, RefundStatus, Timestamp,
};

/// The worker's sweep and the daemon's watches: schedule, take due work, record what the
/// gateway answered, and follow what others changed (notifications, discrepancies, an
/// operator's `resume`).
pub trait WorkQueue {
    /// Schedules the first query of every pending refund that has none yet, at
    /// `created_at + grace`. Returns how many were scheduled.
    fn schedule_new(&self, grace: Duration) -> Result<usize, LedgerError>;

    /// The worker's claim: pending refunds due at `now`, the longest-due first, at most
    /// `limit`, leaving out rows flagged unusable and rows another node holds a lease on that
    /// ends after `now`; each row returned is leased to `node` until `lease_until` in the same
    /// transaction (`refunds.claimed_by`/`claimed_until`). A live lease of `node`'s own is
    /// left out too (a refund this node is querying now): [`NodePresence::node_started`]
    /// ends a previous run's leases, [`WorkQueue::release_claims`] those a sweep claimed and
    /// did not send. Recording the refund's attempt clears the lease. (On PostgreSQL: `FOR UPDATE
    /// SKIP LOCKED`, so two nodes claiming at once never get the same row.)
    fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        node: &NodeName,
        lease_until: Timestamp,
    ) -> Result<Readout<RefundState>, LedgerError>;

    /// Final refunds whose confirming query is due (finalized `confirm_after` ago or more,
    /// not yet confirmed), at most `limit`.
    fn due_confirmations(
        &self,
        now: Timestamp,
        confirm_after: Duration,
        limit: usize,
    ) -> Result<Readout<(RefundStatus, RefundState)>, LedgerError>;

    /// Ends every lease `node` holds: only when none of its queries is in flight (between two
    /// sweeps, after its node lock was lost with its session and taken again: the answers of
    /// what it held then were not recorded). Returns how many were released.
    fn release_node_claims(&self, node: &NodeName) -> Result<usize, LedgerError>;

    /// Ends `node`'s leases on the pending refunds `numbers` (claimed, then not sent: a
    /// chunk cut short, a probe that needed one): they are due again at once, for any node.
    /// A lease another node holds is left alone. Returns how many were released.
    fn release_claims(
        &self,
        node: &NodeName,
        numbers: &[OutRefundNo],
    ) -> Result<usize, LedgerError>;

    /// When the next pending refund not in `skip` that `node` may claim falls due, if any is
    /// scheduled: its `next_query_at`, or the end of a live lease on it if later.
    fn next_due_at(
        &self,
        skip: &SkipList,
        node: &NodeName,
    ) -> Result<Option<Timestamp>, LedgerError>;

    /// One refund's status and worker state, `None` when it is not in the ledger.
    fn state(
        &self,
        out_refund_no: &OutRefundNo,
    ) -> Result<Option<(RefundStatus, RefundState)>, LedgerError>;

    /// Starts a sweep row run by `node`; returns its id.
    fn begin_sweep(&self, started_at: Timestamp, node: &NodeName) -> Result<i64, LedgerError>;

    /// Names the node whose attempts this connection records (`attempts.node`): the worker's
    /// connection belongs to one node, so every attempt it records, grouped or not, is that
    /// node's. Set once, before the connection records anything.
    fn set_node(&mut self, node: NodeName);

    /// Records how the sweep `id` ended.
    fn finish_sweep(
        &self,
        id: i64,
        finished_at: Timestamp,
        end: &SweepEnd,
    ) -> Result<(), LedgerError>;

    /// Closes the sweeps a killed daemon left open (at start-up); returns how many.
    fn close_interrupted_sweeps(&self, at: Timestamp) -> Result<usize, LedgerError>;

    /// Records one query attempt made outside any sweep (`query`); see
    /// [`WorkQueue::record_attempt_in`].
    fn record_attempt(
        &mut self,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError> {
        self.record_attempt_in(None, attempt, decision)
    }

    /// Records one query attempt of the sweep `sweep` and applies `decision` in one
    /// transaction: the attempt row (with the connection's node), the change as a
    /// compare-and-set on the pending status that also clears the refund's claim lease, then
    /// the decision's discrepancies.
    fn record_attempt_in(
        &mut self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError>;

    /// Group commit: records every `(sweep, attempt, decision)` of `batch` as
    /// [`WorkQueue::record_attempt_in`] would, in ONE transaction; each record's own failure
    /// is its own result, and `Err` means none was written.
    fn record_attempts(
        &mut self,
        batch: &[(Option<i64>, QueryReport, Decision)],
    ) -> Result<Vec<Result<Applied, LedgerError>>, LedgerError>;

    /// Flags the refund row `id` the worker could not read; false when the row is gone.
    fn flag_unreadable(&self, id: i64, at: Timestamp, detail: &str) -> Result<bool, LedgerError>;

    /// Records an attempt whose outcome the ledger refused to apply (the row's refusal).
    fn record_refused_attempt(
        &self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        class: OutcomeClass,
        refusal: &str,
    ) -> Result<(), LedgerError>;

    /// Refunds finalized by someone other than the worker since `after`, at most `limit`,
    /// with the watermark to pass next time.
    fn finalized_elsewhere_since(
        &self,
        after: Option<&Watermark>,
        limit: usize,
    ) -> Result<(Readout<RefundRow>, Option<Watermark>), LedgerError>;

    /// Where [`WorkQueue::finalized_elsewhere_since`] starts from now.
    fn finalized_watermark(&self) -> Result<Option<Watermark>, LedgerError>;

    /// Discrepancies logged after the id `after`, at most `limit`.
    fn discrepancies_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LoggedDiscrepancy>, LedgerError>;

    /// The newest discrepancy id (0 for none).
    fn discrepancy_watermark(&self) -> Result<i64, LedgerError>;

    /// The newest operator action id (0 for none): where the resume watch starts.
    fn operator_actions_watermark(&self) -> Result<i64, LedgerError>;

    /// The first `resume` an operator requested after the action id `after`, if any.
    fn resume_requested_after(&self, after: i64) -> Result<Option<ResumeAction>, LedgerError>;
}

/// New refunds and notifications: the HTTP API, `add`/`import`, the notification inbox.
pub trait Intake {
    /// Inserts one new refund.
    fn insert_refund(&self, r: &NewRefund) -> Result<(), LedgerError>;

    /// Inserts one new refund, or says what already holds its number.
    fn register_refund(&self, r: &NewRefund) -> Result<Registered, LedgerError>;

    /// Inserts all `rows` in one transaction (all or nothing); `progress` is called every
    /// [`super::IMPORT_PROGRESS_EVERY`] rows. Returns the row count.
    fn import(
        &mut self,
        rows: &[NewRefund],
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, LedgerError>;

    /// Records one notification, as the merchant's app would insert it.
    fn record_notification(&self, n: &NotificationRecord) -> Result<(), LedgerError>;

    /// Records a batch of the daemon's received notifications in one transaction, each with
    /// its own effect or refusal.
    fn record_notifications(
        &mut self,
        batch: &[NotificationRecord],
    ) -> Result<Vec<Result<NotificationEffect, LedgerError>>, LedgerError>;
}

/// What the read commands (`status`, `list`, `show`, `explain`, `stuck`, `failed`,
/// `discrepancies`, `audit`, `export`), `/readyz`, `/metrics` and the API read.
pub trait Reads {
    /// The counts `status` shows.
    fn status(&self, now: Timestamp) -> Result<StatusSummary, LedgerError>;

    /// [`Reads::health_with`] judged against the documented default schedule.
    fn health(&self, now: Timestamp, stale_after: Duration) -> Result<Health, LedgerError> {
        self.health_with(now, stale_after, &Policy::default())
    }

    /// `status` plus what needs a human at `now`, judged with the daemon's `policy`.
    fn health_with(
        &self,
        now: Timestamp,
        stale_after: Duration,
        policy: &Policy,
    ) -> Result<Health, LedgerError>;

    /// The gauges `/metrics` exports.
    fn gauges(&self, now: Timestamp) -> Result<LedgerGauges, LedgerError>;

    /// Refunds matching `filter` (`list`).
    fn list(&self, filter: &ListFilter) -> Result<Readout<RefundRow>, LedgerError>;

    /// How many refunds match `filter`, ignoring its limit.
    fn list_total(&self, filter: &ListFilter) -> Result<u64, LedgerError>;

    /// One refund with its history (`show`).
    fn show(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundDetail>, LedgerError>;

    /// One refund's row.
    fn refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundRow>, LedgerError>;

    /// One refund's history as typed events (`explain`).
    fn timeline(&self, out_refund_no: &OutRefundNo) -> Result<Option<Timeline>, LedgerError>;

    /// Which prune removed `no`, when the ledger no longer has it.
    fn pruned(&self, no: &OutRefundNo) -> Result<Option<PrunedRefund>, LedgerError>;

    /// Pending refunds created at or before `created_before` (`stuck`), at most `limit`.
    fn stuck(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError>;

    /// How many refunds [`Reads::stuck`] would list without a limit.
    fn stuck_total(&self, created_before: Timestamp) -> Result<u64, LedgerError>;

    /// Refunds that failed since `since` (`failed`), at most `limit`.
    fn failed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError>;

    /// How many refunds [`Reads::failed_since`] would list without a limit.
    fn failed_total(&self, since: Timestamp) -> Result<u64, LedgerError>;

    /// Every refund finalized since `since` (`export`).
    fn export_since(&self, since: Timestamp) -> Result<Readout<RefundRow>, LedgerError>;

    /// One discrepancy by id.
    fn discrepancy(&self, id: i64) -> Result<Option<OpenDiscrepancy>, LedgerError>;

    /// The unresolved discrepancies, or all of them.
    fn discrepancies(&self, all: bool) -> Result<Vec<OpenDiscrepancy>, LedgerError>;

    /// The operator actions matching `filter` (`audit`).
    fn audit(&self, filter: &AuditFilter) -> Result<Readout<OperatorActionRow>, LedgerError>;

    /// How many operator actions match `filter`, ignoring its limit.
    fn audit_total(&self, filter: &AuditFilter) -> Result<u64, LedgerError>;

    /// The newest finished sweep, if any.
    fn latest_finished_sweep(&self) -> Result<Option<SweepRow>, LedgerError>;

    /// The first sweep that finished after the sweep id `after`, if any.
    fn first_finished_sweep_after(&self, after: i64) -> Result<Option<SweepRow>, LedgerError>;

    /// Every daemon node the ledger has seen, by name (`status`).
    fn nodes(&self) -> Result<Vec<NodeRow>, LedgerError>;
}

/// The daemon's own row in `nodes`: upserted at start, heartbeat while it runs, stopped on a
/// clean stop. Rows are never deleted by the daemon.
pub trait NodePresence {
    /// Upserts the node's row at its start (`stopped_at` cleared) and ends the leases a
    /// previous run of the node left (it holds the node's lock: none of them is in flight).
    fn node_started(&self, node: &NodeStart) -> Result<(), LedgerError>;

    /// Records a heartbeat at `at` (never before the node's start); false when the node has
    /// no row (removed by hand).
    fn node_heartbeat(&self, name: &NodeName, at: Timestamp) -> Result<bool, LedgerError>;

    /// Records the node's clean stop at `at`.
    fn node_stopped(&self, name: &NodeName, at: Timestamp) -> Result<(), LedgerError>;
}

/// The operator commands that change the ledger, each audited in `operator_actions`.
pub trait OperatorActions {
    /// Makes a pending refund due now (`retry-now`).
    fn retry_now(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError>;

    /// Makes every flagged pending refund due now; returns their numbers.
    fn retry_all_flagged(
        &self,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<OutRefundNo>, LedgerError>;

    /// Records a final status decided by a human (`resolve`).
    fn resolve(
        &self,
        out_refund_no: &OutRefundNo,
        status: FinalStatus,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<RefundRow, LedgerError>;

    /// Clears a refund's review flag.
    fn clear_flag(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError>;

    /// Marks a discrepancy resolved (`resolve-discrepancy`).
    fn resolve_discrepancy(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError>;

    /// Asks the daemon to end a halt (`resume`).
    fn request_resume(
        &self,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<ResumeRequest, LedgerError>;
}

/// The webhook outbox: the daemon's deliverer and the `webhooks` command.
pub trait Outbox {
    /// The earliest undelivered event of each refund due at `now`, at most `limit`.
    fn due_webhooks(&self, now: Timestamp, limit: usize) -> Result<Vec<DueWebhook>, LedgerError>;

    /// When the next pending event is due, if any.
    fn next_webhook_at(&self) -> Result<Option<Timestamp>, LedgerError>;

    /// Records a wave of delivery results in one transaction.
    fn record_webhook_results(&self, results: &[DeliveryResult]) -> Result<(), LedgerError>;

    /// How many events gave up (dead).
    fn dead_webhook_count(&self) -> Result<u64, LedgerError>;

    /// The events matching `filter` (`webhooks`).
    fn webhook_events(
        &self,
        filter: &WebhookFilter,
    ) -> Result<Readout<WebhookEventRow>, LedgerError>;

    /// How many events match `filter`, ignoring its limit.
    fn webhook_events_total(&self, filter: &WebhookFilter) -> Result<u64, LedgerError>;

    /// Makes the named events pending again (`webhooks redeliver`), audited.
    fn redeliver_webhooks(
        &self,
        event_ids: &[String],
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError>;
}

/// Keeping the ledger: prune, backup, the schema re-check.
pub trait Maintenance {
    /// What [`Maintenance::prune`] would remove.
    fn prune_plan(&self, finalized_before: Timestamp) -> Result<PruneCounts, LedgerError>;

    /// Removes final refunds finalized before `finalized_before` and their history, after
    /// archiving them to `archive` when given; audited.
    fn prune(
        &self,
        finalized_before: Timestamp,
        actor: &str,
        reason: &str,
        archive: Option<&Path>,
        now: Timestamp,
    ) -> Result<PruneReport, LedgerError>;

    /// A consistent copy of the ledger in the file `dest`. An engine whose copies are made by
    /// the database's own tools answers [`LedgerError::NotOnThisEngine`] naming them.
    fn backup(&self, dest: &Path) -> Result<BackupReport, LedgerError>;

    /// Checks again that the schema is this build's (the daemon, each sweep).
    fn recheck_schema(&self) -> Result<(), LedgerError>;
}

/// The whole ledger interface: every engine implements each part. `Send` so a connection can
/// move to the blocking thread that uses it.
pub trait LedgerStore:
    WorkQueue + Intake + Reads + NodePresence + OperatorActions + Outbox + Maintenance + Send + Debug
{
}

impl<T> LedgerStore for T where
    T: WorkQueue
        + Intake
        + Reads
        + NodePresence
        + OperatorActions
        + Outbox
        + Maintenance
        + Send
        + Debug
{
}
