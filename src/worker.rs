//! One sweep: ledger → gateway → `domain::decide` → ledger. Bounded concurrency, a rate limit
//! that backs off when Checus says TOO_MANY_REQUEST, and a global halt when Checus says our
//! configuration (or our clock) is wrong, so a bad key never burns through the ledger.
//! A circuit breaker ([`breaker`]) pauses querying while the gateway is down, deferring due
//! refunds without spending their attempts, and catches up when a probe gets through.
//! Answers reach the ledger through [`commit`]: ledger calls on blocking threads, and group
//! commit for attempts.

pub mod breaker;
pub mod commit;

pub use commit::LedgerHandle;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::WorkerSettings;
use crate::domain::{
    Change, Clock, Decision, Halt, OutRefundNo, Policy, QueryOutcome, RefundState, RefundStatus,
    Timestamp, decide, format_ts,
};
use crate::gateway::{GatewayClient, QueryReport};
use crate::ledger::{Applied, LedgerError, SweepCounts};

/// Errors a sweep or a single query can end with. Gateway trouble is never an error here: it
/// is an outcome, recorded like any other.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// `query` named a refund the ledger does not have.
    #[error("refund {0} is not in the ledger")]
    NotFound(OutRefundNo),
}

/// A token bucket of one: successive queries are spaced `1 / rate` apart. The rate halves on
/// TOO_MANY_REQUEST and creeps back up toward the configured ceiling on quiet sweeps.
#[derive(Debug)]
struct RateLimiter {
    state: Mutex<RateState>,
    ceiling: f64,
}

#[derive(Debug)]
struct RateState {
    rate: f64,
    next_slot: Instant,
}

impl RateLimiter {
    /// The slowest the limiter will go, however often Checus pushes back.
    const FLOOR: f64 = 0.2;

    fn new(rate: f64) -> Self {
        Self {
            state: Mutex::new(RateState {
                rate,
                next_slot: Instant::now(),
            }),
            ceiling: rate,
        }
    }

    async fn acquire(&self) {
        let slot = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = s.next_slot.max(now);
            s.next_slot = slot + Duration::from_secs_f64(1.0 / s.rate);
            slot
        };
        // A slot already due needs no timer: registering one costs two timer-wheel locks per
        // query, which at a high configured rate is every query.
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }

    fn slow_down(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rate = (s.rate / 2.0).max(Self::FLOOR.min(self.ceiling));
        s.rate
    }

    fn recover(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rate = (s.rate * 1.25).min(self.ceiling);
        s.rate
    }

    fn rate(&self) -> f64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).rate
    }
}

/// Why querying is halted and when to probe again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaltState {
    /// Why.
    pub halt: Halt,
    /// Since when.
    pub since: Timestamp,
    /// When the next probe query may go out.
    pub next_probe_at: Timestamp,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Refunds claimed as due.
    pub claimed: u64,
    /// Queries sent (including the immediate clock-skew retry).
    pub queried: u64,
    /// Refunds finalized by this sweep.
    pub finalized: u64,
    /// Refunds rescheduled (still pending, unknown, or after a failure).
    pub rescheduled: u64,
    /// Refunds newly flagged for review.
    pub flagged: u64,
    /// Discrepancies recorded.
    pub discrepancies: u64,
    /// Attempts that failed retryably (transport, 5xx, unverified, rate limited, ...).
    pub failed: u64,
    /// Querying is halted, and why.
    pub halted: Option<String>,
    /// The earliest `next_query_at` still pending after the sweep.
    #[serde(skip)]
    pub next_due_at: Option<Timestamp>,
    /// When a halted worker will probe next.
    #[serde(skip)]
    pub next_probe_at: Option<Timestamp>,
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

/// The reconciliation worker. One per daemon; sweeps are run one at a time by its owner.
pub struct Worker {
    inner: Arc<Inner>,
}

/// The worker's state, shared with the per-refund tasks a sweep spawns.
struct Inner {
    ledger: LedgerHandle,
    client: Arc<GatewayClient>,
    policy: Policy,
    settings: WorkerSettings,
    clock: Arc<dyn Clock>,
    jitter: JitterSource,
    limiter: Arc<RateLimiter>,
    halt: Mutex<Option<HaltState>>,
    /// Pauses querying while the gateway is unreachable (see [`breaker`]).
    breaker: Mutex<breaker::Breaker>,
    /// The last refund finalized elsewhere that was logged: `None` until the first sweep
    /// reads the ledger's current watermark (history before start-up is not re-logged).
    logged_until: Mutex<Option<Option<(Timestamp, i64)>>>,
}

impl Worker {
    /// Builds a worker.
    pub fn new(
        ledger: LedgerHandle,
        client: GatewayClient,
        policy: Policy,
        settings: WorkerSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let limiter = Arc::new(RateLimiter::new(settings.rate_per_second));
        let breaker = Mutex::new(breaker::Breaker::new(policy.schedule.retry));
        Self::from_inner(Inner {
            ledger,
            client: Arc::new(client),
            policy,
            settings,
            clock,
            jitter: Arc::new(rand::random::<f64>),
            limiter,
            halt: Mutex::new(None),
            breaker,
            logged_until: Mutex::new(None),
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

    /// Carries state over from a worker this one replaces (SIGHUP reload): the halt, so a
    /// reload does not silently resume querying with the same bad configuration, and the
    /// log watermark, so no final outcome is logged twice or skipped.
    pub fn inherit_halt(&self, previous: &Worker) {
        *self.inner.halt_lock() = previous.halted();
        // An open breaker stays open: the gateway did not come back because of a reload.
        if previous.inner.breaker_lock().is_open() {
            *self.inner.breaker_lock() = *previous.inner.breaker_lock();
        }
        let wm = *previous
            .inner
            .logged_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *self
            .inner
            .logged_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = wm;
    }

    /// Logs refunds finalized elsewhere only after this watermark (the daemon reads it when
    /// it opens the ledger, so outcomes that land before the first sweep are still logged).
    pub fn log_finalized_after(&self, watermark: Option<(Timestamp, i64)>) {
        *self
            .inner
            .logged_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(watermark);
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
    pub async fn query_now(&self, out_refund_no: &OutRefundNo) -> Result<Processed, WorkerError> {
        let no = out_refund_no.clone();
        let inner = &self.inner;
        let found = inner.ledger.call(move |l| l.state(&no)).await?;
        let (status, state) = found.ok_or_else(|| WorkerError::NotFound(out_refund_no.clone()))?;
        let processed = inner.process(status, state, None).await?;
        if processed.decision.halt.is_none() {
            inner.halt_lock().take();
        }
        Ok(processed)
    }
}

impl Inner {
    fn halted(&self) -> Option<HaltState> {
        self.halt_lock().clone()
    }

    fn halt_lock(&self) -> std::sync::MutexGuard<'_, Option<HaltState>> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn breaker_lock(&self) -> std::sync::MutexGuard<'_, breaker::Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn paused(&self) -> bool {
        self.breaker_lock().is_open()
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
        let grace = self.policy.schedule.grace;
        let batch = self.settings.batch_size;
        let sweep_id = self.ledger.call(move |l| l.begin_sweep(started)).await?;
        let mut report = SweepReport::default();
        let result = self.sweep_inner(shutdown, grace, batch, &mut report).await;
        let finished = self.clock.now();
        let counts = SweepCounts {
            claimed: report.claimed,
            finalized: report.finalized,
            rescheduled: report.rescheduled,
            failed: report.failed,
        };
        let halted = report.halted.clone();
        self.ledger
            .call(move |l| l.finish_sweep(sweep_id, finished, &counts, halted.as_deref()))
            .await?;
        result?;
        report.next_due_at = self.ledger.call(|l| l.next_due_at()).await?;
        // Deferred refunds stay due; while the breaker is open the next sweep worth running
        // is the probe, not the (past) due time, or the daemon would spin.
        let paused_until = self.breaker_lock().open_until();
        if let Some(probe) = paused_until {
            report.next_due_at = Some(report.next_due_at.map_or(probe, |due| due.max(probe)));
        }
        report.next_probe_at = self.halted().map(|h| h.next_probe_at);
        Ok(report)
    }

    async fn sweep_inner(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        grace: Duration,
        batch: usize,
        report: &mut SweepReport,
    ) -> Result<(), WorkerError> {
        let scheduled = self.ledger.call(move |l| l.schedule_new(grace)).await?;
        if scheduled > 0 {
            debug!(count = scheduled, "new refunds scheduled");
        }
        self.log_finalized_elsewhere().await?;
        let now = self.clock.now();
        if let Some(h) = self.halted() {
            report.halted = Some(describe_halt(&h.halt));
            if now < h.next_probe_at {
                return Ok(());
            }
            // Probe with a single due refund; only an answer that is not a halt resumes.
            let due = self.ledger.call(move |l| l.due(now, 1)).await?;
            let Some(state) = due.into_iter().next() else {
                if let Some(h) = self.halt_lock().as_mut() {
                    h.next_probe_at = now + self.policy.halt_recheck;
                }
                return Ok(());
            };
            report.claimed += 1;
            let processed = self.process(RefundStatus::Pending, state, None).await?;
            tally(report, &processed);
            match &processed.decision.halt {
                Some(_) => return Ok(()),
                None => {
                    let h = self.halt_lock().take();
                    report.halted = None;
                    info!(
                        halted_since = h.map(|h| format_ts(h.since)).unwrap_or_default(),
                        "querying resumed"
                    );
                }
            }
        }
        let paused_until = self.breaker_lock().open_until();
        if let Some(probe_at) = paused_until {
            if now < probe_at {
                return Ok(());
            }
            // Probe with a single due refund; any answer that shows the gateway is back
            // closes the breaker (in `process`) and this sweep catches up below.
            let due = self.ledger.call(move |l| l.due(now, 1)).await?;
            let Some(state) = due.into_iter().next() else {
                self.breaker_lock().postpone(now);
                return Ok(());
            };
            report.claimed += 1;
            let processed = self.process(RefundStatus::Pending, state, None).await?;
            tally(report, &processed);
            if self.paused() || processed.decision.halt.is_some() {
                return Ok(());
            }
        }
        let confirm_after = self.policy.confirm_after;
        let due = self
            .ledger
            .call(move |l| {
                // Pending refunds first; then final outcomes from notifications waiting for
                // their one confirming query (a contradiction becomes a discrepancy).
                let mut due: Vec<(RefundStatus, RefundState)> = l
                    .due(now, batch)?
                    .into_iter()
                    .map(|s| (RefundStatus::Pending, s))
                    .collect();
                let room = batch.saturating_sub(due.len());
                if room > 0 {
                    due.extend(l.due_confirmations(now, confirm_after, room)?);
                }
                Ok(due)
            })
            .await?;
        report.claimed += due.len() as u64;
        let semaphore = Arc::new(Semaphore::new(self.settings.concurrency));
        // Answers not yet committed are bounded too: a task holds one of these from dispatch
        // until its attempt is committed, so at most `concurrency` queries are on the wire and
        // at most as many more answers wait for the group commit. A crash can therefore cost
        // at most 2 × concurrency answers (re-queried after restart), however slow the disk.
        let uncommitted = Arc::new(Semaphore::new(2 * self.settings.concurrency));
        let mut tasks: JoinSet<Result<Option<Processed>, WorkerError>> = JoinSet::new();
        for (recorded, state) in due {
            // Refunds left undispatched stay due, untouched: deferred, no attempt spent.
            if shutdown.is_cancelled() || self.halted().is_some() || self.paused() {
                break;
            }
            let pending_commit = tokio::select! {
                p = Arc::clone(&uncommitted).acquire_owned() => p.expect("semaphore is never closed"),
                () = shutdown.cancelled() => break,
            };
            let permit = tokio::select! {
                p = Arc::clone(&semaphore).acquire_owned() => p.expect("semaphore is never closed"),
                () = shutdown.cancelled() => break,
            };
            let me = Arc::clone(self);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let _pending_commit = pending_commit;
                tokio::select! {
                    () = me.limiter.acquire() => {}
                    () = shutdown.cancelled() => return Ok(None),
                }
                // Re-check at the last moment: a sibling may have halted querying, or
                // tripped the circuit breaker.
                if me.halted().is_some() || me.paused() {
                    return Ok(None);
                }
                me.process(recorded, state, Some(permit)).await.map(Some)
            });
        }
        let mut first_error = None;
        let mut slowed = false;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(Some(processed))) => {
                    slowed |= processed.decision.slow_down;
                    tally(report, &processed);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    error!(error = %e, "refund attempt not recorded");
                    first_error.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        if slowed {
            let rate = self.limiter.slow_down();
            warn!(rate_per_second = rate, "gateway rate limited; slowing down");
        } else if report.claimed > 0 {
            self.limiter.recover();
        }
        report.halted = self.halted().map(|h| describe_halt(&h.halt));
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Queries, decides and records one refund. A REQ_TIME_OVER_TIME answer is retried once at
    /// once with a fresh requestTime (both attempts are recorded); only a repeat halts.
    ///
    /// `slot` is the sweep's concurrency permit: it bounds queries in flight toward Checus, so
    /// it is released as soon as the last answer is in, and the next query goes out while this
    /// attempt waits for its (group) commit.
    async fn process(
        &self,
        recorded: RefundStatus,
        state: RefundState,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Processed, WorkerError> {
        // Lets the group commit wait for this answer rather than commit without it.
        let _coming = self.ledger.attempt_coming();
        let mut report = self.client.query(&state.out_refund_no).await;
        if report.outcome == QueryOutcome::ClockSkew {
            let first = self.decide(recorded, &state, &report);
            warn!(
                out_refund_no = %state.out_refund_no,
                outcome = "clock_skew",
                "gateway reports clock skew; retrying once with a fresh requestTime"
            );
            // The retry's decision supersedes this one, so its halt is not applied.
            self.record(&state, &report, first).await?;
            report = self.client.query(&state.out_refund_no).await;
        }
        let decision = self.decide(recorded, &state, &report);
        // The breaker hears of this answer before the slot is given back, so a query
        // dispatched into the freed slot already sees an opened breaker.
        self.observe_gateway(&state.out_refund_no, &report);
        // A halting answer keeps its slot until the halt is in force, so no sibling query
        // slips out meanwhile (a bad key must not burn through the ledger).
        let slot = slot.filter(|_| decision.halt.is_some());
        let applied = self.record(&state, &report, decision.clone()).await?;
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
        report: &QueryReport,
    ) -> Decision {
        decide(
            recorded,
            state,
            &report.outcome,
            self.clock.now(),
            (self.jitter)(),
            &self.policy,
        )
    }

    async fn record(
        &self,
        state: &RefundState,
        report: &QueryReport,
        decision: Decision,
    ) -> Result<Applied, WorkerError> {
        let applied = self
            .ledger
            .record_attempt(report.clone(), decision.clone())
            .await?;
        log_applied(state, report, &decision, &applied);
        Ok(applied)
    }

    /// Logs one "refund finalized" line for each refund that became final without our query
    /// (a notification, an immediate `/refund` failure, an operator), so the log has one line
    /// per final outcome whoever wrote it.
    async fn log_finalized_elsewhere(&self) -> Result<(), WorkerError> {
        const BATCH: usize = 1000;
        let known = *self.logged_until.lock().unwrap_or_else(|p| p.into_inner());
        let mut after = match known {
            Some(after) => after,
            None => {
                let start = self.ledger.call(|l| l.finalized_watermark()).await?;
                *self.logged_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(start);
                return Ok(());
            }
        };
        loop {
            let rows = self
                .ledger
                .call(move |l| l.finalized_elsewhere_since(after, BATCH))
                .await?;
            for (id, row) in &rows {
                let source = row.final_source.map_or("", |s| s.as_str());
                log_finalized(row.out_refund_no.as_str(), row.status, source, row.attempts);
                if let Some(at) = row.finalized_at {
                    after = Some((at, *id));
                }
            }
            *self.logged_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(after);
            if rows.len() < BATCH {
                return Ok(());
            }
        }
    }

    fn enter_halt(&self, halt: &Halt, no: &OutRefundNo, report: &QueryReport) {
        let now = self.clock.now();
        let mut guard = self.halt_lock();
        let first = guard.is_none();
        let since = guard.as_ref().map_or(now, |h| h.since);
        *guard = Some(HaltState {
            halt: halt.clone(),
            since,
            next_probe_at: now + self.policy.halt_recheck,
        });
        drop(guard);
        let what = describe_halt(halt);
        if first {
            error!(
                out_refund_no = %no,
                gateway_code = report.gateway_code.as_deref().unwrap_or(""),
                reason = %what,
                recheck_in_s = self.policy.halt_recheck.as_secs(),
                "querying halted: fix the configuration; the daemon keeps running and re-checks periodically"
            );
        } else {
            error!(reason = %what, "querying still halted");
        }
    }
}

fn describe_halt(h: &Halt) -> String {
    match h {
        Halt::ConfigError { code } => format!("configuration rejected by Checus ({code})"),
        Halt::ClockSkew => "clock skew: requestTime off by more than 2 minutes (check NTP)".into(),
    }
}

fn tally(report: &mut SweepReport, p: &Processed) {
    report.queried += 1;
    report.discrepancies += p.decision.discrepancies.len() as u64;
    match &p.applied {
        Applied::Finalized(_) => report.finalized += 1,
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

/// The one line every final outcome gets: INFO for success, WARN for REFUND_FAILED, so
/// operators can follow failures by level or by field.
fn log_finalized(no: &str, status: RefundStatus, source: &str, attempt: u32) {
    let status_text = status.as_str();
    if status == RefundStatus::Failed {
        warn!(
            out_refund_no = no,
            status = status_text,
            source,
            attempt,
            "refund finalized"
        );
    } else {
        info!(
            out_refund_no = no,
            status = status_text,
            source,
            attempt,
            "refund finalized"
        );
    }
}

/// One stable message per kind of result, with the same field names everywhere.
fn log_applied(state: &RefundState, report: &QueryReport, decision: &Decision, applied: &Applied) {
    let no = state.out_refund_no.as_str();
    let outcome = decision.class.as_str();
    let latency_ms = report.latency.as_millis() as u64;
    for d in &decision.discrepancies {
        error!(
            out_refund_no = no,
            kind = d.kind.as_str(),
            expected = %d.expected,
            observed = %d.observed,
            source = "query",
            "discrepancy recorded"
        );
    }
    match applied {
        Applied::Finalized(status) => {
            log_finalized(no, status.status(), "query", state.attempts + 1);
        }
        Applied::Rescheduled {
            next_query_at,
            flagged,
        } => {
            let (attempt, next) = match &decision.change {
                Change::Reschedule { attempts, .. } => (*attempts, format_ts(*next_query_at)),
                _ => (state.attempts, format_ts(*next_query_at)),
            };
            if let Some(reason) = flagged {
                error!(out_refund_no = no, reason = reason.as_str(), outcome, attempt, next_query_at = %next, "refund flagged for review");
            }
            match &report.outcome {
                QueryOutcome::Retryable { reason, .. } => warn!(
                    out_refund_no = no,
                    outcome,
                    reason = reason.as_str(),
                    error = report.error.as_deref().unwrap_or(""),
                    http_status = report.http_status.unwrap_or(0),
                    attempt,
                    next_query_at = %next,
                    "refund query failed; will retry"
                ),
                QueryOutcome::RateLimited => {
                    warn!(out_refund_no = no, outcome, attempt, next_query_at = %next, "refund query rate limited; will retry")
                }
                _ => {
                    info!(out_refund_no = no, outcome, attempt, latency_ms, next_query_at = %next, "refund still pending")
                }
            }
        }
        Applied::Mismatch { flagged } => {
            if let Some(reason) = flagged {
                error!(
                    out_refund_no = no,
                    reason = reason.as_str(),
                    outcome,
                    "refund flagged for review"
                );
            }
        }
        Applied::AlreadyFinal(status) => {
            debug!(
                out_refund_no = no,
                status = status.as_str(),
                outcome,
                "refund already final"
            );
        }
        Applied::Conflict { recorded, observed } => {
            error!(
                out_refund_no = no,
                kind = "conflicting_final",
                expected = recorded.as_str(),
                observed = observed.as_str(),
                source = "query",
                "discrepancy recorded"
            );
        }
    }
}
