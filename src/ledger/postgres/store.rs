//! The PostgreSQL engine behind the ledger interface: each trait method is the inherent method
//! of the same name (one file per subject in this folder), so the PostgreSQL tests call them
//! directly. `due` is the lease claim ([`PgLedger::claim_due`]) for this ledger's node and
//! `due_confirmations` its counterpart for final refunds ([`PgLedger::claim_confirmations`]),
//! both with [`DEFAULT_LEASE`] until the interface passes the lease itself.

use std::path::Path;
use std::time::Duration;

use super::{DEFAULT_LEASE, PgLedger};
use crate::domain::{
    Decision, FinalStatus, NewRefund, NodeName, OutRefundNo, OutcomeClass, Policy, QueryReport,
    RefundState, RefundStatus, Timestamp,
};
use crate::ledger::store::{
    Intake, Maintenance, NodePresence, OperatorActions, Outbox, Reads, WorkQueue,
};
use crate::ledger::webhooks::{DeliveryResult, DueWebhook, WebhookEventRow, WebhookFilter};
use crate::ledger::{
    Applied, AuditFilter, BackupReport, Health, LedgerError, LedgerGauges, ListFilter,
    LoggedDiscrepancy, NodeRow, NodeStart, NotificationEffect, NotificationRecord, OpenDiscrepancy,
    OperatorActionRow, PruneCounts, PruneReport, PrunedRefund, Readout, RefundDetail, RefundRow,
    Registered, ResumeAction, ResumeRequest, SkipList, StatusSummary, SweepEnd, SweepRow, Timeline,
    Watermark,
};

impl WorkQueue for PgLedger {
    fn schedule_new(&self, grace: Duration) -> Result<usize, LedgerError> {
        PgLedger::schedule_new(self, grace)
    }

    fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        node: &NodeName,
        lease_until: Timestamp,
    ) -> Result<Readout<RefundState>, LedgerError> {
        PgLedger::claim_due(self, now, limit, node.as_str(), lease_until)
    }

    fn due_confirmations(
        &self,
        now: Timestamp,
        confirm_after: Duration,
        limit: usize,
    ) -> Result<Readout<(RefundStatus, RefundState)>, LedgerError> {
        let until =
            now + chrono::TimeDelta::from_std(DEFAULT_LEASE).unwrap_or(chrono::TimeDelta::MAX);
        PgLedger::claim_confirmations(self, now, confirm_after, limit, until)
    }

    fn release_node_claims(&self, node: &NodeName) -> Result<usize, LedgerError> {
        PgLedger::release_node_claims(self, node.as_str())
    }

    fn release_claims(
        &self,
        node: &NodeName,
        numbers: &[OutRefundNo],
    ) -> Result<usize, LedgerError> {
        PgLedger::release_claims(self, node.as_str(), numbers)
    }

    fn next_due_at(
        &self,
        skip: &SkipList,
        _node: &NodeName,
    ) -> Result<Option<Timestamp>, LedgerError> {
        PgLedger::next_due_at(self, skip)
    }

    fn state(
        &self,
        out_refund_no: &OutRefundNo,
    ) -> Result<Option<(RefundStatus, RefundState)>, LedgerError> {
        PgLedger::state(self, out_refund_no)
    }

    fn begin_sweep(&self, started_at: Timestamp, node: &NodeName) -> Result<i64, LedgerError> {
        PgLedger::begin_sweep(self, started_at, node.as_str())
    }

    fn set_node(&mut self, node: NodeName) {
        // A NodeName already keeps the rule the PostgreSQL CHECK enforces.
        self.node = Some(node.as_str().to_owned());
    }

    fn finish_sweep(
        &self,
        id: i64,
        finished_at: Timestamp,
        end: &SweepEnd,
    ) -> Result<(), LedgerError> {
        PgLedger::finish_sweep(self, id, finished_at, end)
    }

    fn close_interrupted_sweeps(&self, at: Timestamp) -> Result<usize, LedgerError> {
        PgLedger::close_interrupted_sweeps(self, at)
    }

    fn record_attempt_in(
        &mut self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError> {
        PgLedger::record_attempt_in(self, sweep, attempt, decision)
    }

    fn record_attempts(
        &mut self,
        batch: &[(Option<i64>, QueryReport, Decision)],
    ) -> Result<Vec<Result<Applied, LedgerError>>, LedgerError> {
        PgLedger::record_attempts(self, batch)
    }

    fn flag_unreadable(&self, id: i64, at: Timestamp, detail: &str) -> Result<bool, LedgerError> {
        PgLedger::flag_unreadable(self, id, at, detail)
    }

    fn record_refused_attempt(
        &self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        class: OutcomeClass,
        refusal: &str,
    ) -> Result<(), LedgerError> {
        PgLedger::record_refused_attempt(self, sweep, attempt, class, refusal)
    }

    fn finalized_elsewhere_since(
        &self,
        after: Option<&Watermark>,
        limit: usize,
    ) -> Result<(Readout<RefundRow>, Option<Watermark>), LedgerError> {
        PgLedger::finalized_elsewhere_since(self, after, limit)
    }

    fn finalized_watermark(&self) -> Result<Option<Watermark>, LedgerError> {
        PgLedger::finalized_watermark(self)
    }

    fn discrepancies_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LoggedDiscrepancy>, LedgerError> {
        PgLedger::discrepancies_since(self, after, limit)
    }

    fn discrepancy_watermark(&self) -> Result<i64, LedgerError> {
        PgLedger::discrepancy_watermark(self)
    }

    fn operator_actions_watermark(&self) -> Result<i64, LedgerError> {
        PgLedger::operator_actions_watermark(self)
    }

    fn resume_requested_after(&self, after: i64) -> Result<Option<ResumeAction>, LedgerError> {
        PgLedger::resume_requested_after(self, after)
    }
}

impl Intake for PgLedger {
    fn insert_refund(&self, r: &NewRefund) -> Result<(), LedgerError> {
        PgLedger::insert_refund(self, r)
    }

    fn register_refund(&self, r: &NewRefund) -> Result<Registered, LedgerError> {
        PgLedger::register_refund(self, r)
    }

    fn import(
        &mut self,
        rows: &[NewRefund],
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, LedgerError> {
        PgLedger::import(self, rows, progress)
    }

    fn record_notification(&self, n: &NotificationRecord) -> Result<(), LedgerError> {
        PgLedger::record_notification(self, n)
    }

    fn record_notifications(
        &mut self,
        batch: &[NotificationRecord],
    ) -> Result<Vec<Result<NotificationEffect, LedgerError>>, LedgerError> {
        PgLedger::record_notifications(self, batch)
    }
}

impl NodePresence for PgLedger {
    fn node_started(&self, node: &NodeStart) -> Result<(), LedgerError> {
        PgLedger::node_started(self, node)
    }

    fn node_heartbeat(&self, name: &NodeName, at: Timestamp) -> Result<bool, LedgerError> {
        PgLedger::node_heartbeat(self, name, at)
    }

    fn node_stopped(&self, name: &NodeName, at: Timestamp) -> Result<(), LedgerError> {
        PgLedger::node_stopped(self, name, at)
    }
}

impl Reads for PgLedger {
    fn nodes(&self) -> Result<Vec<NodeRow>, LedgerError> {
        PgLedger::nodes(self)
    }

    fn status(&self, now: Timestamp) -> Result<StatusSummary, LedgerError> {
        PgLedger::status(self, now)
    }

    fn health_with(
        &self,
        now: Timestamp,
        stale_after: Duration,
        policy: &Policy,
    ) -> Result<Health, LedgerError> {
        PgLedger::health_with(self, now, stale_after, policy)
    }

    fn gauges(&self, now: Timestamp) -> Result<LedgerGauges, LedgerError> {
        PgLedger::gauges(self, now)
    }

    fn list(&self, filter: &ListFilter) -> Result<Readout<RefundRow>, LedgerError> {
        PgLedger::list(self, filter)
    }

    fn list_total(&self, filter: &ListFilter) -> Result<u64, LedgerError> {
        PgLedger::list_total(self, filter)
    }

    fn show(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundDetail>, LedgerError> {
        PgLedger::show(self, out_refund_no)
    }

    fn refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundRow>, LedgerError> {
        PgLedger::refund(self, out_refund_no)
    }

    fn timeline(&self, out_refund_no: &OutRefundNo) -> Result<Option<Timeline>, LedgerError> {
        PgLedger::timeline(self, out_refund_no)
    }

    fn pruned(&self, no: &OutRefundNo) -> Result<Option<PrunedRefund>, LedgerError> {
        PgLedger::pruned(self, no)
    }

    fn stuck(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        PgLedger::stuck(self, created_before, limit)
    }

    fn stuck_total(&self, created_before: Timestamp) -> Result<u64, LedgerError> {
        PgLedger::stuck_total(self, created_before)
    }

    fn failed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        PgLedger::failed_since(self, since, limit)
    }

    fn failed_total(&self, since: Timestamp) -> Result<u64, LedgerError> {
        PgLedger::failed_total(self, since)
    }

    fn export_since(&self, since: Timestamp) -> Result<Readout<RefundRow>, LedgerError> {
        PgLedger::export_since(self, since)
    }

    fn discrepancy(&self, id: i64) -> Result<Option<OpenDiscrepancy>, LedgerError> {
        PgLedger::discrepancy(self, id)
    }

    fn discrepancies(&self, all: bool) -> Result<Vec<OpenDiscrepancy>, LedgerError> {
        PgLedger::discrepancies(self, all)
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Readout<OperatorActionRow>, LedgerError> {
        PgLedger::audit(self, filter)
    }

    fn audit_total(&self, filter: &AuditFilter) -> Result<u64, LedgerError> {
        PgLedger::audit_total(self, filter)
    }

    fn latest_finished_sweep(&self) -> Result<Option<SweepRow>, LedgerError> {
        PgLedger::latest_finished_sweep(self)
    }

    fn first_finished_sweep_after(&self, after: i64) -> Result<Option<SweepRow>, LedgerError> {
        PgLedger::first_finished_sweep_after(self, after)
    }
}

impl OperatorActions for PgLedger {
    fn retry_now(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        PgLedger::retry_now(self, out_refund_no, actor, now)
    }

    fn retry_all_flagged(
        &self,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<OutRefundNo>, LedgerError> {
        PgLedger::retry_all_flagged(self, actor, now)
    }

    fn resolve(
        &self,
        out_refund_no: &OutRefundNo,
        status: FinalStatus,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<RefundRow, LedgerError> {
        PgLedger::resolve(self, out_refund_no, status, actor, reason, now)
    }

    fn clear_flag(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        PgLedger::clear_flag(self, out_refund_no, actor, reason, now)
    }

    fn resolve_discrepancy(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        PgLedger::resolve_discrepancy(self, id, actor, reason, now)
    }

    fn request_resume(
        &self,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<ResumeRequest, LedgerError> {
        PgLedger::request_resume(self, actor, reason, now)
    }
}

impl Outbox for PgLedger {
    fn due_webhooks(&self, now: Timestamp, limit: usize) -> Result<Vec<DueWebhook>, LedgerError> {
        PgLedger::due_webhooks(self, now, limit)
    }

    fn next_webhook_at(&self) -> Result<Option<Timestamp>, LedgerError> {
        PgLedger::next_webhook_at(self)
    }

    fn record_webhook_results(&self, results: &[DeliveryResult]) -> Result<(), LedgerError> {
        PgLedger::record_webhook_results(self, results)
    }

    fn dead_webhook_count(&self) -> Result<u64, LedgerError> {
        PgLedger::dead_webhook_count(self)
    }

    fn webhook_events(
        &self,
        filter: &WebhookFilter,
    ) -> Result<Readout<WebhookEventRow>, LedgerError> {
        PgLedger::webhook_events(self, filter)
    }

    fn webhook_events_total(&self, filter: &WebhookFilter) -> Result<u64, LedgerError> {
        PgLedger::webhook_events_total(self, filter)
    }

    fn redeliver_webhooks(
        &self,
        event_ids: &[String],
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        PgLedger::redeliver_webhooks(self, event_ids, actor, reason, now)
    }
}

impl Maintenance for PgLedger {
    fn prune_plan(&self, finalized_before: Timestamp) -> Result<PruneCounts, LedgerError> {
        PgLedger::prune_plan(self, finalized_before)
    }

    fn prune(
        &self,
        finalized_before: Timestamp,
        actor: &str,
        reason: &str,
        archive: Option<&Path>,
        now: Timestamp,
    ) -> Result<PruneReport, LedgerError> {
        PgLedger::prune(self, finalized_before, actor, reason, archive, now)
    }

    fn backup(&self, dest: &Path) -> Result<BackupReport, LedgerError> {
        PgLedger::backup(self, dest)
    }

    fn recheck_schema(&self) -> Result<(), LedgerError> {
        PgLedger::recheck_schema(self)
    }
}
