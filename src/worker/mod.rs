//! One sweep: ledger → gateway → `domain::decide` → ledger. Bounded concurrency, a rate limit
//! ([`rate`]) that backs off when Checus says TOO_MANY_REQUEST, and a global halt ([`halt`])
//! when Checus says our configuration (or our clock) is wrong, so a bad key never burns through
//! the ledger. A circuit breaker ([`breaker`]) pauses querying while the gateway is down,
//! deferring due refunds without spending their attempts. Both pauses are lifted the same way:
//! one probe query per interval ([`Inner::pass`]), and the sweep catches up when it gets through.
//! Answers reach the ledger through [`commit`]: ledger calls on blocking threads, and group
//! commit for attempts.

pub mod breaker;
pub mod commit;
pub mod halt;
mod log;
mod rate;
mod skip;

pub use commit::LedgerHandle;
pub use halt::HaltState;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::WorkerSettings;
use crate::domain::{
    Change, Clock, Decision, DiscrepancyKind, FinalSource, Halt, LeaseTerms, OutRefundNo, Policy,
    QueryOutcome, RefundState, RefundStatus, Timestamp, decide, format_ts,
};
use crate::gateway::{GatewayClient, QueryReport};
use crate::ledger::{Applied, LedgerError, Readout, SweepCounts, SweepEnd, Watermark};
use crate::metrics::Metrics;

use log::{log_applied, log_discrepancy, log_finalized};
use rate::RateLimiter;

/// Errors a sweep or a single query can end with. Gateway trouble is never an error here: it
/// is an outcome, recorded like any other.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A ledger call failed; what the sweep did not record stays due and is queried again.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// `query` named a refund the ledger does not have.
    #[error("refund {0} is not in the ledger")]
    NotFound(OutRefundNo),
    /// The ledger refused to record the attempt because of this refund's row: the attempt was
    /// recorded bare and the refund flagged `row_unwritable` (or skipped), and the sweep went
    /// on (see `skip.rs`).
    #[error(
        "the ledger refused the attempt for refund {0}; it is flagged row_unwritable and skipped"
    )]
    RowRefused(OutRefundNo),
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// The sweep's row in the `sweeps` table: the `sweep` field of its log lines, and the
    /// `sweep_id` of its attempts.
    pub sweep_id: i64,
    /// Refunds claimed as due (probes included).
    pub claimed: u64,
    /// Queries sent (including the immediate clock-skew retry).
    pub queried: u64,
    /// Refunds finalized by this sweep.
    pub finalized: u64,
    /// Refunds rescheduled (still pending, unknown, or after a failure).
    pub rescheduled: u64,
    /// Refunds newly flagged for review.
    pub flagged: u64,
    /// Discrepancies recorded (answers that contradict what the ledger holds).
    pub discrepancies: u64,
    /// Attempts that failed retryably (transport, 5xx, unverified, rate limited, ...).
    pub failed: u64,
    /// Rows skipped because they could not be read or updated.
    pub unreadable: u64,
    /// Since when the circuit breaker had querying paused when the sweep ended.
    #[serde(skip)]
    pub breaker_open_since: Option<Timestamp>,
    /// The halt in force when the sweep ended (serialized as its description).
    #[serde(serialize_with = "halt_text")]
    pub halted: Option<Halt>,
    /// The earliest `next_query_at` still pending after the sweep.
    #[serde(skip)]
    pub next_due_at: Option<Timestamp>,
    /// When a halted worker will probe next.
    #[serde(skip)]
    pub next_probe_at: Option<Timestamp>,
}

/// Serializes a halt as its description (or null), as before halts were typed.
fn halt_text<S: serde::Serializer>(halt: &Option<Halt>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&halt.as_ref().map(ToString::to_string), s)
}

/// What happened to one refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The last attempt's report.
    pub report: QueryReport,
    /// The decision taken on it.
    pub decision: Decision,
    /// What the ledger did with it.
    pub applied: Applied,
}

/// Draws the jitter unit. A seam so tests can make schedules exact.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

/// How far the "refund finalized" log of outcomes written elsewhere (notifications, operators)
/// has got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum LogWatermark {
    /// Not read yet: the first sweep reads the ledger's current watermark, so history from
    /// before start-up is not re-logged.
    #[default]
    Unread,
    /// Logged up to this `(finalized_at, id)`; `None`: nothing was final when it was read.
    After(Option<Watermark>),
}

/// The two pauses that stop querying until a probe gets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// Checus rejected our configuration or our clock ([`halt`]).
    Halt,
    /// The gateway is unreachable ([`breaker`]).
    Breaker,
}

/// The reconciliation worker. One per daemon; sweeps are run one at a time by its owner.
pub struct Worker {
    inner: Arc<Inner>,
}

/// What the daemon's HTTP endpoints read of a worker: its pauses and its query rate, as they
/// are at the moment of the call.
#[derive(Clone)]
pub struct WorkerView {
    inner: Arc<Inner>,
}

impl WorkerView {
    /// The current halt, if querying is stopped.
    pub fn halted(&self) -> Option<HaltState> {
        self.inner.halted()
    }

    /// Since when the circuit breaker has querying paused (`None`: closed).
    pub fn breaker_open_since(&self) -> Option<Timestamp> {
        self.inner.breaker_lock().open_since()
    }

    /// The current query rate (queries per second).
    pub fn current_rate(&self) -> f64 {
        self.inner.limiter.rate()
    }
}

/// The worker's state, shared with the per-refund tasks a sweep spawns.
struct Inner {
    ledger: LedgerHandle,
    /// The claim lease and what one refund's query needs of it (see [`LeaseTerms`]).
    lease: LeaseTerms,
    client: Arc<GatewayClient>,
    policy: Policy,
    settings: WorkerSettings,
    clock: Arc<dyn Clock>,
    jitter: JitterSource,
    limiter: Arc<RateLimiter>,
    /// Stops all querying while Checus rejects our configuration or clock (see [`halt`]).
    halt: Mutex<halt::Halting>,
    /// Pauses querying while the gateway is unreachable (see [`breaker`]).
    breaker: Mutex<breaker::Breaker>,
    /// The last refund finalized elsewhere that was logged.
    logged_until: Mutex<LogWatermark>,
    /// The last discrepancy id the log has passed (`None`: not read yet; the first sweep
    /// reads the ledger's newest, as for [`LogWatermark::Unread`]).
    discrepancies_logged: Mutex<Option<i64>>,
    /// The `sweeps.id` of the latest sweep's row (`None`: no sweep yet, or its row could not
    /// be written), for the lines logged about a sweep after it ended.
    last_sweep: Mutex<Option<i64>>,
    /// Rows skipped because they could not be read, recorded or flagged (see [`skip`]).
    skipping: skip::Skipping,
    /// The newest `operator_actions` id already looked at for `resume` requests.
    resume_seen: Mutex<i64>,
    /// Counts queries, finalizations and discrepancies for `/metrics` (the daemon's registry;
    /// a registry of its own for the CLI's `query`).
    metrics: Arc<Metrics>,
}

impl Worker {
    /// Builds a worker: running (no halt, breaker closed) at the configured rate.
    pub fn new(
        ledger: LedgerHandle,
        client: GatewayClient,
        policy: Policy,
        settings: WorkerSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let limiter = Arc::new(RateLimiter::new(settings.rate_per_second));
        let breaker = Mutex::new(breaker::Breaker::new(policy.schedule.retry));
        let halt = Mutex::new(halt::Halting::new(
            policy.halt_recheck,
            policy.halt_after_rejected_refunds,
        ));
        let lease = LeaseTerms::new(
            settings.claim_lease,
            crate::gateway::query_timeout(client.settings().request_timeout),
            commit::GATHER_WINDOW,
        );
        // A group commit is as big as the queries on the wire, at most.
        ledger.set_batch_target(settings.concurrency);
        Self::from_inner(Inner {
            ledger,
            lease,
            client: Arc::new(client),
            policy,
            settings,
            clock,
            jitter: Arc::new(rand::random::<f64>),
            limiter,
            halt,
            breaker,
            logged_until: Mutex::new(LogWatermark::Unread),
            discrepancies_logged: Mutex::new(None),
            last_sweep: Mutex::new(None),
            skipping: skip::Skipping::default(),
            resume_seen: Mutex::new(0),
            metrics: Arc::new(Metrics::new()),
        })
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Replaces the jitter source (tests use a constant 0.5: no jitter).
    pub fn with_jitter(self, jitter: JitterSource) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_jitter is called before the worker is shared"));
        inner.jitter = jitter;
        Self::from_inner(inner)
    }

    /// Counts into `metrics` (the daemon's registry, shared with `/metrics`).
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_metrics is called before the worker is shared"));
        inner.metrics = metrics;
        Self::from_inner(inner)
    }

    /// A view of this worker's pauses and rate for the HTTP endpoints.
    pub fn view(&self) -> WorkerView {
        WorkerView {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Carries state over from a worker this one replaces (SIGHUP reload): the halt, so a
    /// reload does not silently resume querying with the same bad configuration, an open
    /// breaker, and the log watermark, so no final outcome is logged twice or skipped.
    pub fn inherit_halt(&self, previous: &Worker) {
        let halted = previous.inner.halt_lock().clone();
        self.inner.halt_lock().carry_over(&halted);
        // An open breaker stays open: the gateway did not come back because of a reload.
        let breaker = *previous.inner.breaker_lock();
        if breaker.is_open() {
            *self.inner.breaker_lock() = breaker;
        }
        let watermark = previous.inner.watermark_lock().clone();
        *self.inner.watermark_lock() = watermark;
        let logged = *previous.inner.discrepancies_lock();
        *self.inner.discrepancies_lock() = logged;
        self.inner.skipping.carry_over(&previous.inner.skipping);
        let seen = *previous.inner.resume_seen_lock();
        *self.inner.resume_seen_lock() = seen;
    }

    /// Resume requests older than `watermark` (an `operator_actions` id) were for an earlier
    /// run: the daemon reads the watermark when it opens the ledger.
    pub fn watch_resumes_after(&self, watermark: i64) {
        *self.inner.resume_seen_lock() = watermark;
    }

    /// Whether an operator asked to resume (`checus-reconciler resume`) since the last sweep
    /// looked: one read of the `operator_actions` rows added since. The halted daemon asks
    /// every second and runs a sweep at once when it is true; that sweep takes the request.
    pub async fn resume_requested(&self) -> Result<bool, WorkerError> {
        let seen = *self.inner.resume_seen_lock();
        let found = self
            .inner
            .ledger
            .call(move |l| l.resume_requested_after(seen))
            .await?;
        Ok(found.is_some())
    }

    /// Logs refunds finalized elsewhere only after this watermark (the daemon reads it when
    /// it opens the ledger, so outcomes that land before the first sweep are still logged).
    pub fn log_finalized_after(&self, watermark: Option<Watermark>) {
        *self.inner.watermark_lock() = LogWatermark::After(watermark);
    }

    /// Logs discrepancies recorded by others (the notification trigger, the merchant's app)
    /// only when their id is above `id` (the daemon reads it when it opens the ledger: the
    /// same rule as [`Worker::log_finalized_after`]).
    pub fn log_discrepancies_after(&self, id: i64) {
        *self.inner.discrepancies_lock() = Some(id);
    }

    /// The `sweeps.id` of the latest sweep this worker began (`None`: none, or its row could
    /// not be written): the `sweep` field of a line logged about it once it has ended, such
    /// as the daemon's "sweep failed".
    pub fn last_sweep_id(&self) -> Option<i64> {
        *self
            .inner
            .last_sweep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The ledger this worker writes to.
    pub fn ledger(&self) -> &LedgerHandle {
        &self.inner.ledger
    }

    /// The current halt, if querying is stopped.
    pub fn halted(&self) -> Option<HaltState> {
        self.inner.halted()
    }

    /// `Some(next_probe_at)` while the circuit breaker has querying paused.
    pub fn paused_until(&self) -> Option<Timestamp> {
        self.inner.breaker_lock().open_until()
    }

    /// The current query rate (queries per second).
    pub fn current_rate(&self) -> f64 {
        self.inner.limiter.rate()
    }

    /// Runs one sweep: schedules newly inserted refunds, claims due ones and queries them.
    /// Stops dispatching when `shutdown` is cancelled; in-flight queries finish and are recorded.
    pub async fn sweep(&self, shutdown: &CancellationToken) -> Result<SweepReport, WorkerError> {
        self.inner.sweep(shutdown).await
    }

    /// Queries one refund now, whatever its schedule, and records the attempt like any other.
    /// An answer that is not a halt lifts a halt (silently: the operator asked for it).
    pub async fn query_now(&self, out_refund_no: &OutRefundNo) -> Result<Processed, WorkerError> {
        let no = out_refund_no.clone();
        let inner = &self.inner;
        let found = inner.ledger.call(move |l| l.state(&no)).await?;
        let (status, state) = found.ok_or_else(|| WorkerError::NotFound(out_refund_no.clone()))?;
        // Outside any sweep: the attempt row has no sweep id.
        let processed = inner.process(status, state, None, None).await?;
        if processed.decision.halt.is_none() {
            inner.halt_lock().resume();
        }
        Ok(processed)
    }
}

/// A sweep's claimed work: the status each refund had when claimed, and its state.
type Claimed = Vec<(RefundStatus, RefundState)>;

/// The tasks of a sweep's dispatched queries (`Err`: the refund was not sent after all).
type Dispatched = JoinSet<Result<Result<Processed, OutRefundNo>, WorkerError>>;

impl Inner {
    fn halted(&self) -> Option<HaltState> {
        self.halt_lock().current().cloned()
    }

    fn halt_lock(&self) -> MutexGuard<'_, halt::Halting> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn breaker_lock(&self) -> MutexGuard<'_, breaker::Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watermark_lock(&self) -> MutexGuard<'_, LogWatermark> {
        self.logged_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resume_seen_lock(&self) -> MutexGuard<'_, i64> {
        self.resume_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an operator's resume request written since the last look, if any: while halted,
    /// the halt's probe becomes due `now`. A request while querying runs only moves the mark.
    async fn take_resume_request(&self, now: Timestamp) -> Result<(), WorkerError> {
        let seen = *self.resume_seen_lock();
        let Some(request) = self
            .ledger
            .call(move |l| l.resume_requested_after(seen))
            .await?
        else {
            return Ok(());
        };
        *self.resume_seen_lock() = request.id;
        if self.halt_lock().probe_now(now) {
            info!(
                by = %request.actor,
                operator_action = request.id,
                "resume requested by an operator; probing now"
            );
        }
        Ok(())
    }

    fn discrepancies_lock(&self) -> MutexGuard<'_, Option<i64>> {
        self.discrepancies_logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn paused(&self) -> bool {
        self.breaker_lock().is_open()
    }

    /// Whether either pause stops new queries now.
    fn is_stopped(&self) -> bool {
        self.halted().is_some() || self.paused()
    }

    /// Feeds one attempt to the circuit breaker and logs any state change.
    fn observe_gateway(&self, no: &OutRefundNo, report: &QueryReport) {
        let outage = breaker::is_outage(&report.outcome, report.http_status);
        let now = self.clock.now();
        let transition = self.breaker_lock().observe(outage, now);
        match transition {
            Some(breaker::Transition::Opened {
                consecutive,
                next_probe_at,
            }) => error!(
                out_refund_no = %no,
                consecutive_failures = consecutive,
                error = report.error.as_deref().unwrap_or(""),
                next_probe_at = %format_ts(next_probe_at),
                "gateway unavailable; circuit breaker opened, querying paused and due refunds deferred"
            ),
            Some(breaker::Transition::StillOpen { next_probe_at }) => warn!(
                out_refund_no = %no,
                error = report.error.as_deref().unwrap_or(""),
                next_probe_at = %format_ts(next_probe_at),
                "gateway still unavailable; querying stays paused"
            ),
            Some(breaker::Transition::Closed { since }) => info!(
                out_refund_no = %no,
                paused_since = %format_ts(since),
                "gateway reachable again; circuit breaker closed, catching up"
            ),
            None => {}
        }
    }

    async fn sweep(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
    ) -> Result<SweepReport, WorkerError> {
        let started = self.clock.now();
        *self.last_sweep.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let node = self.settings.node_name.clone();
        let sweep_id = self
            .ledger
            .call(move |l| l.begin_sweep(started, &node))
            .await?;
        *self.last_sweep.lock().unwrap_or_else(|p| p.into_inner()) = Some(sweep_id);
        // Every line the sweep logs carries its `sweeps.id`, the id its attempt rows carry,
        // so a log line leads to the ledger's rows and back across restarts.
        self.sweep_in_row(sweep_id, shutdown)
            .instrument(info_span!("sweep", sweep = sweep_id))
            .await
    }

    /// The sweep whose row [`Inner::sweep`] began: its work, then the row's end.
    async fn sweep_in_row(
        self: &Arc<Self>,
        sweep_id: i64,
        shutdown: &CancellationToken,
    ) -> Result<SweepReport, WorkerError> {
        let mut report = SweepReport {
            sweep_id,
            ..SweepReport::default()
        };
        let result = self.sweep_inner(shutdown, sweep_id, &mut report).await;
        // The sweep row records the halt in force when the sweep ended, whichever way it ended.
        report.halted = self.halted().map(|h| h.halt);
        let finished = self.clock.now();
        let end = SweepEnd {
            counts: SweepCounts {
                claimed: report.claimed,
                finalized: report.finalized,
                rescheduled: report.rescheduled,
                failed: report.failed,
                unreadable: report.unreadable,
            },
            halt: report.halted.clone(),
            error: result.as_ref().err().map(ToString::to_string),
            breaker_open_since: self.breaker_lock().open_since(),
        };
        report.breaker_open_since = end.breaker_open_since;
        self.ledger
            .call(move |l| l.finish_sweep(sweep_id, finished, &end))
            .await?;
        result?;
        let skip = self.skipping.snapshot();
        let node = self.settings.node_name.clone();
        report.next_due_at = self
            .ledger
            .call(move |l| l.next_due_at(&skip, &node))
            .await?;
        // Deferred refunds stay due; while the breaker is open the next sweep worth running
        // is the probe, not the (past) due time, or the daemon would spin.
        let paused_until = self.breaker_lock().open_until();
        if let Some(probe) = paused_until {
            report.next_due_at = Some(report.next_due_at.map_or(probe, |due| due.max(probe)));
        }
        report.next_probe_at = self.halt_lock().halted_until();
        Ok(report)
    }

    async fn sweep_inner(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        sweep: i64,
        report: &mut SweepReport,
    ) -> Result<(), WorkerError> {
        let grace = self.policy.schedule.grace;
        let scheduled = self.ledger.call(move |l| l.schedule_new(grace)).await?;
        if scheduled > 0 {
            debug!(count = scheduled, "new refunds scheduled");
        }
        self.log_finalized_elsewhere(report).await?;
        self.log_discrepancies_elsewhere().await?;
        let now = self.clock.now();
        self.take_resume_request(now).await?;
        // A halt is probed first: while Checus rejects us, whether the gateway is up is moot.
        if !self.pass(Pause::Halt, now, sweep, report).await?
            || !self.pass(Pause::Breaker, now, sweep, report).await?
        {
            return Ok(());
        }
        let (tasks, mut unsent) = self.claim_and_dispatch(sweep, shutdown, report).await?;
        let result = self.collect(tasks, report).await;
        // Claimed and in the end not sent (a pause or the drain cut the sweep short, a lease
        // too short to query): due again at once, for any node. Nothing is in flight now.
        unsent.extend(result.unsent.iter().cloned());
        self.release_claims(unsent).await?;
        if result.slowed {
            let rate = self.limiter.slow_down();
            warn!(rate_per_second = rate, "gateway rate limited; slowing down");
        } else if report.claimed > 0 {
            self.limiter.recover();
        }
        match result.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// When `pause` lets its next probe out; `None`: not paused.
    fn probe_at(&self, pause: Pause) -> Option<Timestamp> {
        match pause {
            Pause::Halt => self.halt_lock().halted_until(),
            Pause::Breaker => self.breaker_lock().open_until(),
        }
    }

    /// Whether the sweep may go past `pause`: it is not in force, or its probe got through.
    /// The one probe routine for both pauses: at the probe time, one due refund is queried
    /// (and recorded like any other); with none due, the probe is pushed out one interval.
    /// Only an answer that is not a halt lifts the halt; the breaker closes (in `process`) on
    /// any answer that shows the gateway is back.
    async fn pass(
        &self,
        pause: Pause,
        now: Timestamp,
        sweep: i64,
        report: &mut SweepReport,
    ) -> Result<bool, WorkerError> {
        let Some(probe_at) = self.probe_at(pause) else {
            return Ok(true);
        };
        if now < probe_at {
            return Ok(false);
        }
        let skip = self.skipping.snapshot();
        let room = 1 + skip.len();
        let due = self.claim(now, room).await?;
        let leased: Vec<OutRefundNo> = due.rows.iter().map(|s| s.out_refund_no.clone()).collect();
        let due = self.usable(due, now, report).await?;
        let probe = due.first().map(|s| &s.out_refund_no);
        let unsent = leased.into_iter().filter(|no| Some(no) != probe).collect();
        self.release_claims(unsent).await?;
        let Some(state) = due.into_iter().next() else {
            match pause {
                Pause::Halt => {
                    let resumed = self.halt_lock().nothing_to_probe(now);
                    if let Some(since) = resumed {
                        info!(
                            halted_since = format_ts(since),
                            "querying resumed; an operator asked and nothing was due to probe with"
                        );
                        return Ok(true);
                    }
                }
                Pause::Breaker => self.breaker_lock().postpone(now),
            }
            return Ok(false);
        };
        report.claimed += 1;
        let processed = self
            .process(RefundStatus::Pending, state, None, Some(sweep))
            .await?;
        tally(report, &processed);
        if processed.decision.halt.is_some() {
            return Ok(false);
        }
        match pause {
            Pause::Halt => {
                let resumed = self.halt_lock().resume();
                if let Some(since) = resumed {
                    info!(halted_since = format_ts(since), "querying resumed");
                }
                Ok(true)
            }
            Pause::Breaker => Ok(!self.paused()),
        }
    }

    /// Ends this node's leases on `unsent`: claimed and not sent, left for the next claim of
    /// any node.
    async fn release_claims(&self, unsent: Vec<OutRefundNo>) -> Result<(), WorkerError> {
        if unsent.is_empty() {
            return Ok(());
        }
        let node = self.settings.node_name.clone();
        self.ledger
            .call(move |l| l.release_claims(&node, &unsent))
            .await?;
        Ok(())
    }

    /// Claims up to `limit` due refunds leased to this node for [`LeaseTerms::lease`] from
    /// `now`; the lease's end comes with them.
    async fn claim(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Readout<RefundState>, WorkerError> {
        let node = self.settings.node_name.clone();
        let until = self.lease.lease_until(now);
        Ok(self
            .ledger
            .call(move |l| l.claim_due(now, limit, &node, until))
            .await?)
    }

    /// Claims the sweep's batch and sends it: pending refunds first, claimed in chunks the
    /// rate limiter can send well within their lease ([`LeaseTerms::chunk`]), each chunk
    /// dispatched before the next is claimed; then final outcomes from notifications waiting
    /// for their one confirming query (a contradiction becomes a discrepancy; final rows take
    /// no lease).
    ///
    /// Rows that cannot be read are flagged and skipped (see [`skip`]); rows on the skip list
    /// are passed without taking a place in the batch. Every claimed refund that is not sent
    /// (a skip-list row, one past the chunk) has its lease ended at once, so it is due again
    /// for any node; a claim never returns a live lease, this node's own included.
    async fn claim_and_dispatch(
        self: &Arc<Self>,
        sweep: i64,
        shutdown: &CancellationToken,
        report: &mut SweepReport,
    ) -> Result<(Dispatched, Vec<OutRefundNo>), WorkerError> {
        let batch = self.settings.batch_size;
        let mut sender = Sender::new(self.settings.concurrency);
        let mut taken: HashSet<OutRefundNo> = HashSet::new();
        let mut first = true;
        while taken.len() < batch && !shutdown.is_cancelled() && !self.is_stopped() {
            let now = self.clock.now();
            let want = self
                .lease
                .chunk(self.limiter.rate(), sender.queued(), batch - taken.len());
            let skip = self.skipping.snapshot();
            let room = want.saturating_add(skip.len());
            let read = self.claim(now, room).await?;
            let full = read.rows.len() + read.unreadable.len() >= room;
            let leased: Vec<OutRefundNo> =
                read.rows.iter().map(|s| s.out_refund_no.clone()).collect();
            let lease_until = self.lease.lease_until(now);
            let usable = self
                .usable_counted(read.map(|s| (RefundStatus::Pending, s)), now, report, first)
                .await?;
            first = false;
            let mut fresh: Claimed = usable
                .into_iter()
                .filter(|(_, s)| !taken.contains(&s.out_refund_no))
                .collect();
            fresh.truncate(want);
            report.claimed += fresh.len() as u64;
            taken.extend(fresh.iter().map(|(_, s)| s.out_refund_no.clone()));
            let unsent = leased
                .into_iter()
                .filter(|no| !taken.contains(no))
                .collect();
            self.release_claims(unsent).await?;
            let got = fresh.len();
            sender
                .send(self, fresh, Some(lease_until), sweep, shutdown)
                .await;
            if !full || got == 0 {
                break;
            }
        }
        let left = batch.saturating_sub(taken.len());
        if left > 0 && !shutdown.is_cancelled() && !self.is_stopped() {
            let now = self.clock.now();
            let confirm_after = self.policy.confirm_after;
            let room = left.saturating_add(self.skipping.snapshot().len());
            let confirming = self
                .ledger
                .call(move |l| l.due_confirmations(now, confirm_after, room))
                .await?;
            let mut confirming = self.usable(confirming, now, report).await?;
            confirming.truncate(left);
            report.claimed += confirming.len() as u64;
            sender.send(self, confirming, None, sweep, shutdown).await;
        }
        Ok((sender.tasks, sender.unsent))
    }

    /// The rows of a lenient read the worker can use: unreadable ones are flagged and
    /// counted (see [`skip`]), and rows on the skip list are passed.
    async fn usable<T: AsRefundNo>(
        &self,
        read: Readout<T>,
        now: Timestamp,
        report: &mut SweepReport,
    ) -> Result<Vec<T>, WorkerError> {
        self.usable_counted(read, now, report, true).await
    }

    /// [`Inner::usable`], counting the skip list's rows only when `count_skipped` (a sweep
    /// that claims in chunks meets them in every chunk, and counts them once).
    async fn usable_counted<T: AsRefundNo>(
        &self,
        read: Readout<T>,
        now: Timestamp,
        report: &mut SweepReport,
        count_skipped: bool,
    ) -> Result<Vec<T>, WorkerError> {
        report.unreadable += self
            .skipping
            .unreadable(&self.ledger, read.unreadable, now)
            .await?;
        let skip = self.skipping.snapshot();
        let (usable, skipped): (Vec<T>, Vec<T>) = read
            .rows
            .into_iter()
            .partition(|row| !skip.refund_nos.contains(row.refund_no()));
        if count_skipped {
            report.unreadable += skipped.len() as u64;
        }
        Ok(usable)
    }

    /// Waits for every dispatched query and tallies it; a panic in one is re-raised here.
    async fn collect(&self, mut tasks: Dispatched, report: &mut SweepReport) -> Collected {
        let mut out = Collected::default();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(Ok(processed))) => {
                    out.slowed |= processed.decision.slow_down;
                    tally(report, &processed);
                }
                Ok(Ok(Err(no))) => out.unsent.push(no),
                Ok(Err(WorkerError::RowRefused(_))) => report.unreadable += 1,
                Ok(Err(e)) => {
                    error!(error = %e, "refund attempt not recorded");
                    out.first_error.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        out
    }

    /// Queries, decides and records one refund. A REQ_TIME_OVER_TIME answer is retried once at
    /// once with a fresh requestTime (both attempts are recorded); only a repeat halts.
    ///
    /// `slot` is the sweep's concurrency permit: it bounds queries in flight toward Checus, so
    /// it is released as soon as the last answer is in, and the next query goes out while this
    /// attempt waits for its (group) commit. `sweep` is the sweep's row (`None`: `query`).
    async fn process(
        &self,
        recorded: RefundStatus,
        state: RefundState,
        slot: Option<OwnedSemaphorePermit>,
        sweep: Option<i64>,
    ) -> Result<Processed, WorkerError> {
        // Lets the group commit wait for this answer rather than commit without it.
        let _coming = self.ledger.attempt_coming();
        let mut report = self.client.query(&state.out_refund_no).await;
        if report.outcome == QueryOutcome::ClockSkew {
            let first = self.decide(recorded, &state, &report.outcome);
            warn!(
                out_refund_no = %state.out_refund_no,
                outcome = "clock_skew",
                "gateway reports clock skew; retrying once with a fresh requestTime"
            );
            // The retry's decision supersedes this one, so its halt is not applied.
            self.record(&state, &report, first, sweep).await?;
            report = self.client.query(&state.out_refund_no).await;
        }
        let decision = self.decide_counted(recorded, &state, &report);
        // The breaker hears of this answer before the slot is given back, so a query
        // dispatched into the freed slot already sees an opened breaker.
        self.observe_gateway(&state.out_refund_no, &report);
        // A halting answer keeps its slot until the halt is in force, so no sibling query
        // slips out meanwhile (a bad key must not burn through the ledger).
        let slot = slot.filter(|_| decision.halt.is_some());
        let applied = self
            .record(&state, &report, decision.clone(), sweep)
            .await?;
        if let Some(halt) = &decision.halt {
            self.enter_halt(halt, &state.out_refund_no, &report);
        }
        drop(slot);
        Ok(Processed {
            report,
            decision,
            applied,
        })
    }

    fn decide(
        &self,
        recorded: RefundStatus,
        state: &RefundState,
        outcome: &QueryOutcome,
    ) -> Decision {
        decide(
            recorded,
            state,
            outcome,
            self.clock.now(),
            (self.jitter)(),
            &self.policy,
        )
    }

    /// Decides an answer after counting it towards a run of per-refund rejections (see
    /// [`halt::Halting::observe`]): a rejection the run makes systematic also halts querying
    /// (the refund is still flagged), and one that arrives while querying is halted on its
    /// code for a refund outside the run is decided as the configuration halt it is.
    fn decide_counted(
        &self,
        recorded: RefundStatus,
        state: &RefundState,
        report: &QueryReport,
    ) -> Decision {
        let no = &state.out_refund_no;
        let rejection = self
            .halt_lock()
            .observe(&report.outcome, no, state.rejected_before);
        match rejection {
            halt::Rejection::Alone => self.decide(recorded, state, &report.outcome),
            halt::Rejection::Halts { halt, refunds } => {
                warn!(
                    out_refund_no = %no,
                    gateway_code = report.gateway_code.as_deref().unwrap_or(""),
                    refunds_in_a_row = refunds,
                    "per-refund code came back for different refunds in a row; treated as configuration"
                );
                Decision {
                    halt: Some(halt),
                    ..self.decide(recorded, state, &report.outcome)
                }
            }
            halt::Rejection::Systematic { code } => {
                self.decide(recorded, state, &QueryOutcome::ConfigError { code })
            }
        }
    }

    async fn record(
        &self,
        state: &RefundState,
        report: &QueryReport,
        decision: Decision,
        sweep: Option<i64>,
    ) -> Result<Applied, WorkerError> {
        let class = decision.class;
        self.metrics.query_answered(class, report.latency);
        let applied = match self
            .ledger
            .record_attempt_in(sweep, report.clone(), decision.clone())
            .await
        {
            Ok(applied) => applied,
            Err(e) if e.is_row_refusal() => {
                self.skipping
                    .unwritable(&self.ledger, sweep, report, class, &e)
                    .await?;
                return Err(WorkerError::RowRefused(state.out_refund_no.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        log_applied(state, report, &decision, &applied);
        self.count_applied(&decision, &applied);
        Ok(applied)
    }

    /// Logs one "refund finalized" line for each refund that became final without our query
    /// (a notification, an immediate `/refund` failure, an operator), so the log has one line
    /// per final outcome whoever wrote it.
    async fn log_finalized_elsewhere(&self, report: &mut SweepReport) -> Result<(), WorkerError> {
        const BATCH: usize = 1000;
        let known = self.watermark_lock().clone();
        let mut after = match known {
            LogWatermark::After(after) => after,
            LogWatermark::Unread => {
                let start = self.ledger.call(|l| l.finalized_watermark()).await?;
                *self.watermark_lock() = LogWatermark::After(start);
                return Ok(());
            }
        };
        loop {
            let from = after.clone();
            let (read, next) = self
                .ledger
                .call(move |l| l.finalized_elsewhere_since(from.as_ref(), BATCH))
                .await?;
            let seen = read.rows.len() + read.unreadable.len();
            for row in &read.rows {
                let source = row.final_source.map_or("", |s| s.as_str());
                log_finalized(row.out_refund_no.as_str(), row.status, source, row.attempts);
                if let Some(s) = row.final_source {
                    self.metrics.refund_finalized(row.status, s);
                }
            }
            report.unreadable += self
                .skipping
                .unreadable(&self.ledger, read.unreadable, self.clock.now())
                .await?;
            after = next;
            *self.watermark_lock() = LogWatermark::After(after.clone());
            if seen < BATCH {
                return Ok(());
            }
        }
    }

    /// Counts a recorded attempt's final outcome and discrepancies for `/metrics`.
    fn count_applied(&self, decision: &Decision, applied: &Applied) {
        for d in &decision.discrepancies {
            self.metrics.discrepancy_recorded(d.kind);
        }
        match applied {
            Applied::Finalized(status) => self
                .metrics
                .refund_finalized(status.status(), FinalSource::Query),
            Applied::Conflict { .. } => self
                .metrics
                .discrepancy_recorded(DiscrepancyKind::ConflictingFinal),
            _ => {}
        }
    }

    /// Logs one "discrepancy recorded" ERROR line for each discrepancy this daemon did not
    /// record itself (the notification trigger's, written when the merchant's app inserts a
    /// notification that disagrees; any other writer's), once each: the watermark is the
    /// last id logged, and ids are never reused. The daemon's own (source `query`) were
    /// logged when it recorded them, and are only passed here.
    async fn log_discrepancies_elsewhere(&self) -> Result<(), WorkerError> {
        const BATCH: usize = 1000;
        let Some(mut after) = *self.discrepancies_lock() else {
            let start = self.ledger.call(|l| l.discrepancy_watermark()).await?;
            *self.discrepancies_lock() = Some(start);
            return Ok(());
        };
        loop {
            let from = after;
            let rows = self
                .ledger
                .call(move |l| l.discrepancies_since(from, BATCH))
                .await?;
            for d in rows.iter().filter(|d| d.source != "query") {
                log_discrepancy(d);
            }
            after = rows.last().map_or(after, |d| d.id);
            *self.discrepancies_lock() = Some(after);
            if rows.len() < BATCH {
                return Ok(());
            }
        }
    }

    /// Puts a halting answer's halt in force and logs it.
    fn enter_halt(&self, halt: &Halt, no: &OutRefundNo, report: &QueryReport) {
        let now = self.clock.now();
        let transition = self.halt_lock().enter(halt.clone(), now);
        match transition {
            halt::Transition::Halted => error!(
                out_refund_no = %no,
                gateway_code = report.gateway_code.as_deref().unwrap_or(""),
                reason = %halt,
                recheck_in_s = self.policy.halt_recheck.as_secs(),
                "querying halted: fix the configuration; the daemon keeps running and re-checks periodically"
            ),
            halt::Transition::StillHalted => error!(reason = %halt, "querying still halted"),
        }
    }
}

/// Sends a sweep's claimed queries, chunk after chunk, `concurrency` at a time at the
/// limiter's rate, into one set of tasks.
struct Sender {
    /// Bounds queries on the wire: a task holds a slot from dispatch until its last answer.
    slots: Arc<Semaphore>,
    /// Answers not yet committed are bounded too: a task holds one of these from dispatch
    /// until its attempt is committed, so at most `concurrency` queries are on the wire and
    /// at most as many more answers wait for the group commit. A crash can therefore cost at
    /// most 2 × concurrency answers (re-queried after restart), however slow the disk.
    uncommitted: Arc<Semaphore>,
    /// How many `uncommitted` permits there are.
    limit: usize,
    /// The tasks, collected when the sweep's dispatching is done.
    tasks: Dispatched,
    /// Refunds handed to [`Sender::send`] and not dispatched (the drain or a pause came
    /// first): their leases are ended when the sweep's tasks are in.
    unsent: Vec<OutRefundNo>,
}

impl Sender {
    fn new(concurrency: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            uncommitted: Arc::new(Semaphore::new(2 * concurrency)),
            limit: 2 * concurrency,
            tasks: Dispatched::new(),
            unsent: Vec::new(),
        }
    }

    /// Queries dispatched and not yet committed: those a new claim's refunds queue behind.
    fn queued(&self) -> usize {
        self.limit
            .saturating_sub(self.uncommitted.available_permits())
    }

    /// Dispatches `due` until it is done, `shutdown` fires, or a pause stops querying. A
    /// refund leased until `lease_until` is sent only while its answer can still be recorded
    /// within the lease ([`LeaseTerms::may_send`]); otherwise it is left, still due, for the
    /// next claim.
    async fn send(
        &mut self,
        worker: &Arc<Inner>,
        due: Claimed,
        lease_until: Option<Timestamp>,
        sweep: i64,
        shutdown: &CancellationToken,
    ) {
        let mut due = due.into_iter();
        for (recorded, state) in due.by_ref() {
            // Refunds left undispatched stay due, untouched: deferred, no attempt spent (their
            // leases are ended once the sweep's tasks are in).
            if shutdown.is_cancelled() || worker.is_stopped() {
                self.unsent.push(state.out_refund_no);
                break;
            }
            let pending_commit = tokio::select! {
                p = Arc::clone(&self.uncommitted).acquire_owned() => p.expect("semaphore is never closed"),
                () = shutdown.cancelled() => { self.unsent.push(state.out_refund_no); break }
            };
            let permit = tokio::select! {
                p = Arc::clone(&self.slots).acquire_owned() => p.expect("semaphore is never closed"),
                () = shutdown.cancelled() => { self.unsent.push(state.out_refund_no); break }
            };
            let no = state.out_refund_no.clone();
            let me = Arc::clone(worker);
            let shutdown = shutdown.clone();
            self.tasks.spawn(
                async move {
                    let _pending_commit = pending_commit;
                    tokio::select! {
                        () = me.limiter.acquire() => {}
                        () = shutdown.cancelled() => return Ok(Err(no)),
                    }
                    // Re-check at the last moment: a sibling may have halted querying, or
                    // tripped the circuit breaker.
                    if me.is_stopped() {
                        return Ok(Err(no));
                    }
                    if let Some(until) = lease_until
                        && !me.lease.may_send(until, me.clock.now())
                    {
                        debug!(
                            out_refund_no = %state.out_refund_no,
                            lease_until = %format_ts(until),
                            "claim lease too short to query; left for the next claim"
                        );
                        return Ok(Err(no));
                    }
                    me.process(recorded, state, Some(permit), Some(sweep))
                        .await
                        .map(Ok)
                }
                .in_current_span(),
            );
        }
        self.unsent.extend(due.map(|(_, s)| s.out_refund_no));
    }
}

/// A claimed row's refund number, for the skip list.
trait AsRefundNo {
    fn refund_no(&self) -> &str;
}

impl AsRefundNo for RefundState {
    fn refund_no(&self) -> &str {
        self.out_refund_no.as_str()
    }
}

impl AsRefundNo for (RefundStatus, RefundState) {
    fn refund_no(&self) -> &str {
        self.1.out_refund_no.as_str()
    }
}

/// What collecting a sweep's dispatched queries found beyond the tallies.
#[derive(Default)]
struct Collected {
    /// Checus asked us to slow down.
    slowed: bool,
    /// The first attempt that could not be recorded (the sweep fails with it).
    first_error: Option<WorkerError>,
    /// Refunds whose task ended without sending (a pause, the drain, a lease too short).
    unsent: Vec<OutRefundNo>,
}

fn tally(report: &mut SweepReport, p: &Processed) {
    report.queried += 1;
    report.discrepancies += p.decision.discrepancies.len() as u64;
    match &p.applied {
        Applied::Finalized(_) => {
            report.finalized += 1;
            let flagged = matches!(p.decision.change, Change::Finalize { flag: Some(_), .. });
            report.flagged += u64::from(flagged);
        }
        Applied::Rescheduled { flagged, .. } => {
            report.rescheduled += 1;
            report.flagged += u64::from(flagged.is_some());
        }
        Applied::Mismatch { flagged } => {
            report.rescheduled += 1;
            report.flagged += u64::from(flagged.is_some());
        }
        Applied::AlreadyFinal(_) | Applied::Conflict { .. } => {}
    }
    if matches!(
        p.report.outcome,
        QueryOutcome::Retryable { .. } | QueryOutcome::RateLimited
    ) {
        report.failed += 1;
    }
}
