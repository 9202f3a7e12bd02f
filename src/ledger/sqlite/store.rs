//! The SQLite engine behind the ledger interface: each trait method is the inherent method of
//! the same name (one file per subject in this folder), so the SQLite tests call them directly.

use std::path::Path;
use std::time::Duration;

use super::SqliteLedger;
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

impl NodePresence for SqliteLedger {
    fn node_started(&self, node: &NodeStart) -> Result<(), LedgerError> {
        SqliteLedger::node_started(self, node)
    }

    fn node_heartbeat(&self, name: &NodeName, at: Timestamp) -> Result<bool, LedgerError> {
        SqliteLedger::node_heartbeat(self, name, at)
    }

    fn node_stopped(&self, name: &NodeName, at: Timestamp) -> Result<(), LedgerError> {
        SqliteLedger::node_stopped(self, name, at)
    }
}

impl WorkQueue for SqliteLedger {
    fn schedule_new(&self, grace: Duration) -> Result<usize, LedgerError> {
        SqliteLedger::schedule_new(self, grace)
    }

    fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        node: &NodeName,
        lease_until: Timestamp,
    ) -> Result<Readout<RefundState>, LedgerError> {
        SqliteLedger::claim_due(self, now, limit, node, lease_until)
    }

    fn due_confirmations(
        &self,
        now: Timestamp,
        confirm_after: Duration,
        limit: usize,
    ) -> Result<Readout<(RefundStatus, RefundState)>, LedgerError> {
        SqliteLedger::due_confirmations(self, now, confirm_after, limit)
    }

    fn release_node_claims(&self, node: &NodeName) -> Result<usize, LedgerError> {
        SqliteLedger::release_node_claims(self, node)
    }

    fn release_claims(
        &self,
        node: &NodeName,
        numbers: &[OutRefundNo],
    ) -> Result<usize, LedgerError> {
        SqliteLedger::release_claims(self, node, numbers)
    }

    fn next_due_at(
        &self,
        skip: &SkipList,
        node: &NodeName,
    ) -> Result<Option<Timestamp>, LedgerError> {
        SqliteLedger::next_due_at_for(self, skip, Some(node))
    }

    fn state(
        &self,
        out_refund_no: &OutRefundNo,
    ) -> Result<Option<(RefundStatus, RefundState)>, LedgerError> {
        SqliteLedger::state(self, out_refund_no)
    }

    fn begin_sweep(&self, started_at: Timestamp, node: &NodeName) -> Result<i64, LedgerError> {
        SqliteLedger::begin_sweep(self, started_at, Some(node))
    }

    fn set_node(&mut self, node: NodeName) {
        SqliteLedger::set_node(self, Some(node));
    }

    fn finish_sweep(
        &self,
        id: i64,
        finished_at: Timestamp,
        end: &SweepEnd,
    ) -> Result<(), LedgerError> {
        SqliteLedger::finish_sweep(self, id, finished_at, end)
    }

    fn close_interrupted_sweeps(&self, at: Timestamp) -> Result<usize, LedgerError> {
        SqliteLedger::close_interrupted_sweeps(self, at)
    }

    fn record_attempt_in(
        &mut self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        decision: &Decision,
    ) -> Result<Applied, LedgerError> {
        SqliteLedger::record_attempt_in(self, sweep, attempt, decision)
    }

    fn record_attempts(
        &mut self,
        batch: &[(Option<i64>, QueryReport, Decision)],
    ) -> Result<Vec<Result<Applied, LedgerError>>, LedgerError> {
        SqliteLedger::record_attempts(self, batch)
    }

    fn flag_unreadable(&self, id: i64, at: Timestamp, detail: &str) -> Result<bool, LedgerError> {
        SqliteLedger::flag_unreadable(self, id, at, detail)
    }

    fn record_refused_attempt(
        &self,
        sweep: Option<i64>,
        attempt: &QueryReport,
        class: OutcomeClass,
        refusal: &str,
    ) -> Result<(), LedgerError> {
        SqliteLedger::record_refused_attempt(self, sweep, attempt, class, refusal)
    }

    fn finalized_elsewhere_since(
        &self,
        after: Option<&Watermark>,
        limit: usize,
    ) -> Result<(Readout<RefundRow>, Option<Watermark>), LedgerError> {
        SqliteLedger::finalized_elsewhere_since(self, after, limit)
    }

    fn finalized_watermark(&self) -> Result<Option<Watermark>, LedgerError> {
        SqliteLedger::finalized_watermark(self)
    }

    fn discrepancies_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LoggedDiscrepancy>, LedgerError> {
        SqliteLedger::discrepancies_since(self, after, limit)
    }

    fn discrepancy_watermark(&self) -> Result<i64, LedgerError> {
        SqliteLedger::discrepancy_watermark(self)
    }

    fn operator_actions_watermark(&self) -> Result<i64, LedgerError> {
        SqliteLedger::operator_actions_watermark(self)
    }

    fn resume_requested_after(&self, after: i64) -> Result<Option<ResumeAction>, LedgerError> {
        SqliteLedger::resume_requested_after(self, after)
    }
}

impl Intake for SqliteLedger {
    fn insert_refund(&self, r: &NewRefund) -> Result<(), LedgerError> {
        SqliteLedger::insert_refund(self, r)
    }

    fn register_refund(&self, r: &NewRefund) -> Result<Registered, LedgerError> {
        SqliteLedger::register_refund(self, r)
    }

    fn import(
        &mut self,
        rows: &[NewRefund],
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, LedgerError> {
        SqliteLedger::import(self, rows, progress)
    }

    fn record_notification(&self, n: &NotificationRecord) -> Result<(), LedgerError> {
        SqliteLedger::record_notification(self, n)
    }

    fn record_notifications(
        &mut self,
        batch: &[NotificationRecord],
    ) -> Result<Vec<Result<NotificationEffect, LedgerError>>, LedgerError> {
        SqliteLedger::record_notifications(self, batch)
    }
}

impl Reads for SqliteLedger {
    fn status(&self, now: Timestamp) -> Result<StatusSummary, LedgerError> {
        SqliteLedger::status(self, now)
    }

    fn health_with(
        &self,
        now: Timestamp,
        stale_after: Duration,
        policy: &Policy,
    ) -> Result<Health, LedgerError> {
        SqliteLedger::health_with(self, now, stale_after, policy)
    }

    fn gauges(&self, now: Timestamp) -> Result<LedgerGauges, LedgerError> {
        SqliteLedger::gauges(self, now)
    }

    fn list(&self, filter: &ListFilter) -> Result<Readout<RefundRow>, LedgerError> {
        SqliteLedger::list(self, filter)
    }

    fn list_total(&self, filter: &ListFilter) -> Result<u64, LedgerError> {
        SqliteLedger::list_total(self, filter)
    }

    fn show(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundDetail>, LedgerError> {
        SqliteLedger::show(self, out_refund_no)
    }

    fn refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<RefundRow>, LedgerError> {
        SqliteLedger::refund(self, out_refund_no)
    }

    fn timeline(&self, out_refund_no: &OutRefundNo) -> Result<Option<Timeline>, LedgerError> {
        SqliteLedger::timeline(self, out_refund_no)
    }

    fn pruned(&self, no: &OutRefundNo) -> Result<Option<PrunedRefund>, LedgerError> {
        SqliteLedger::pruned(self, no)
    }

    fn stuck(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        SqliteLedger::stuck(self, created_before, limit)
    }

    fn stuck_total(&self, created_before: Timestamp) -> Result<u64, LedgerError> {
        SqliteLedger::stuck_total(self, created_before)
    }

    fn failed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundRow>, LedgerError> {
        SqliteLedger::failed_since(self, since, limit)
    }

    fn failed_total(&self, since: Timestamp) -> Result<u64, LedgerError> {
        SqliteLedger::failed_total(self, since)
    }

    fn export_since(&self, since: Timestamp) -> Result<Readout<RefundRow>, LedgerError> {
        SqliteLedger::export_since(self, since)
    }

    fn discrepancy(&self, id: i64) -> Result<Option<OpenDiscrepancy>, LedgerError> {
        SqliteLedger::discrepancy(self, id)
    }

    fn discrepancies(&self, all: bool) -> Result<Vec<OpenDiscrepancy>, LedgerError> {
        SqliteLedger::discrepancies(self, all)
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Readout<OperatorActionRow>, LedgerError> {
        SqliteLedger::audit(self, filter)
    }

    fn audit_total(&self, filter: &AuditFilter) -> Result<u64, LedgerError> {
        SqliteLedger::audit_total(self, filter)
    }

    fn latest_finished_sweep(&self) -> Result<Option<SweepRow>, LedgerError> {
        SqliteLedger::latest_finished_sweep(self)
    }

    fn first_finished_sweep_after(&self, after: i64) -> Result<Option<SweepRow>, LedgerError> {
        SqliteLedger::first_finished_sweep_after(self, after)
    }

    fn nodes(&self) -> Result<Vec<NodeRow>, LedgerError> {
        SqliteLedger::nodes(self)
    }
}

impl OperatorActions for SqliteLedger {
    fn retry_now(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        SqliteLedger::retry_now(self, out_refund_no, actor, now)
    }

    fn retry_all_flagged(
        &self,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<OutRefundNo>, LedgerError> {
        SqliteLedger::retry_all_flagged(self, actor, now)
    }

    fn resolve(
        &self,
        out_refund_no: &OutRefundNo,
        status: FinalStatus,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<RefundRow, LedgerError> {
        SqliteLedger::resolve(self, out_refund_no, status, actor, reason, now)
    }

    fn clear_flag(
        &self,
        out_refund_no: &OutRefundNo,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        SqliteLedger::clear_flag(self, out_refund_no, actor, reason, now)
    }

    fn resolve_discrepancy(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        SqliteLedger::resolve_discrepancy(self, id, actor, reason, now)
    }

    fn request_resume(
        &self,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<ResumeRequest, LedgerError> {
        SqliteLedger::request_resume(self, actor, reason, now)
    }
}

impl Outbox for SqliteLedger {
    fn due_webhooks(&self, now: Timestamp, limit: usize) -> Result<Vec<DueWebhook>, LedgerError> {
        SqliteLedger::due_webhooks(self, now, limit)
    }

    fn next_webhook_at(&self) -> Result<Option<Timestamp>, LedgerError> {
        SqliteLedger::next_webhook_at(self)
    }

    fn record_webhook_results(&self, results: &[DeliveryResult]) -> Result<(), LedgerError> {
        SqliteLedger::record_webhook_results(self, results)
    }

    fn dead_webhook_count(&self) -> Result<u64, LedgerError> {
        SqliteLedger::dead_webhook_count(self)
    }

    fn webhook_events(
        &self,
        filter: &WebhookFilter,
    ) -> Result<Readout<WebhookEventRow>, LedgerError> {
        SqliteLedger::webhook_events(self, filter)
    }

    fn webhook_events_total(&self, filter: &WebhookFilter) -> Result<u64, LedgerError> {
        SqliteLedger::webhook_events_total(self, filter)
    }

    fn redeliver_webhooks(
        &self,
        event_ids: &[String],
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        SqliteLedger::redeliver_webhooks(self, event_ids, actor, reason, now)
    }
}

impl Maintenance for SqliteLedger {
    fn prune_plan(&self, finalized_before: Timestamp) -> Result<PruneCounts, LedgerError> {
        SqliteLedger::prune_plan(self, finalized_before)
    }

    fn prune(
        &self,
        finalized_before: Timestamp,
        actor: &str,
        reason: &str,
        archive: Option<&Path>,
        now: Timestamp,
    ) -> Result<PruneReport, LedgerError> {
        SqliteLedger::prune(self, finalized_before, actor, reason, archive, now)
    }

    fn backup(&self, dest: &Path) -> Result<BackupReport, LedgerError> {
        SqliteLedger::backup(self, dest)
    }

    fn recheck_schema(&self) -> Result<(), LedgerError> {
        SqliteLedger::recheck_schema(self)
    }
}
