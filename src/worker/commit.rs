//! The worker's way into the ledger: a [`LedgerHandle`] runs ledger calls on blocking threads
//! (rusqlite blocks, and a blocked async worker thread would stall every in-flight query) and
//! records attempts with group commit.
//!
//! Group commit: attempts that complete close together are written by one transaction (one
//! fsync), each in its own savepoint. A caller gets its result only once its attempt is
//! committed, so nothing is logged or acted upon before it is durable. While queries are
//! still in flight ([`LedgerHandle::attempt_coming`]), the writer waits up to
//! [`GATHER_WINDOW`] for their answers to join the batch, and stops waiting as soon as the
//! batch holds as many answers as the worker has queries on the wire
//! ([`LedgerHandle::set_batch_target`]); with nothing else in flight it commits at once, so a
//! lone query (the CLI's `query`, a quiet ledger) pays no delay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::warn;

use crate::domain::{Decision, QueryReport};
use crate::ledger::{Applied, Ledger, LedgerError};

/// How long the writer waits at most for answers still in flight to join a batch.
///
/// Measured with `target/release/examples/bench run --only 1` (BENCHMARKS.md, figure 1):
/// committing whatever had queued meanwhile gave about 3 attempts per transaction at 2,700
/// answers/s, and SQLite's commit (WAL frames + fsync) was the largest cost after RSA.
/// Windows of 5, 15 and 30 ms measured 0.38–0.39, 0.36 and 0.36 ms of CPU per refund (two
/// runs each) at 0 ms latency. At a real gateway's 50 ms (figure 1b) answers arrive one by
/// one and a 20 ms window closed batches of about 13; windows of 20, 40 and 60 ms measured
/// 0.369–0.384, 0.358–0.367 and 0.342–0.354 ms per refund, but at 60 ms the answers waiting
/// reached the worker's bound on uncommitted answers (2 × concurrency) and throughput fell
/// from 94 % to 90 % of ideal. So the window is long and the batch target
/// ([`LedgerHandle::set_batch_target`]: the worker's concurrency) ends the wait first under
/// load, before that bound is reached. More commit latency is nothing next to a gateway round
/// trip, and it does not slow querying: a query's concurrency slot is released when its
/// answer is in, not when it is committed.
pub const GATHER_WINDOW: Duration = Duration::from_millis(100);

/// The most attempts one transaction writes (the worker never has more than
/// 2 × concurrency uncommitted; this bounds a transaction for any other caller).
pub const MAX_BATCH: usize = 512;

/// The ledger behind a mutex, used from async code through blocking threads only.
#[derive(Clone)]
pub struct LedgerHandle {
    inner: Arc<Mutex<Ledger>>,
    /// Attempts waiting for the next group commit (see [`LedgerHandle::record_attempt`]).
    commits: Arc<Commits>,
    /// Ledger calls completed, successful or not: the daemon's watchdog pings systemd during a
    /// sweep only while this moves, so a worker stuck anywhere stops the pings.
    completed: Arc<AtomicU64>,
    /// [`GATHER_WINDOW`] unless changed by [`LedgerHandle::with_gather_window`].
    gather_window: Duration,
}

/// An attempt waiting to be committed, and who to tell once it is.
type WaitingAttempt = (
    Option<i64>,
    QueryReport,
    Decision,
    oneshot::Sender<Result<Applied, LedgerError>>,
);

/// The group-commit queue and the writer's doorbell.
#[derive(Default)]
struct Commits {
    queue: Mutex<CommitQueue>,
    /// Rung while the writer is gathering, once the batch is complete (so the writer wakes
    /// once per batch, not once per attempt).
    complete: Condvar,
}

/// `flushing` is true while a blocking task owns the queue's draining; it is read and set
/// under the same lock as `waiting`, so no attempt is ever left behind.
#[derive(Default)]
struct CommitQueue {
    waiting: Vec<WaitingAttempt>,
    flushing: bool,
    /// Queries between [`LedgerHandle::attempt_coming`] and the end of their recording.
    coming: usize,
    /// The writer is waiting on `complete` (so only then is it worth a wake-up).
    gathering: bool,
    /// A batch this big is complete even while more queries are announced
    /// ([`LedgerHandle::set_batch_target`]); `None`: [`MAX_BATCH`].
    target: Option<usize>,
}

impl Commits {
    fn lock(&self) -> MutexGuard<'_, CommitQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes a gathering writer if `q` now holds a complete batch.
    fn ring_if_complete(&self, q: &CommitQueue) {
        if q.gathering && q.complete() {
            self.complete.notify_one();
        }
    }
}

impl CommitQueue {
    /// Every announced query has queued its attempt, or the batch reached its target (or is
    /// full).
    fn complete(&self) -> bool {
        let full = self.target.unwrap_or(MAX_BATCH).clamp(1, MAX_BATCH);
        !self.waiting.is_empty()
            && (self.waiting.len() >= self.coming || self.waiting.len() >= full)
    }
}

/// Held by a query from before it is sent until its attempts are recorded: while any are
/// held, the writer waits (briefly) for their answers before committing.
#[must_use = "the writer waits for this query only while the guard is held"]
pub struct Coming(Arc<Commits>);

impl Drop for Coming {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.coming -= 1;
        self.0.ring_if_complete(&q);
    }
}

/// Clears `flushing` if the flushing task panics, and drops the attempts still waiting, so
/// their callers fail instead of waiting forever. A normal end clears `flushing` in
/// [`next_batch`], under the lock that saw the queue empty: clearing it again here could
/// clear the flag of the next flusher, started meanwhile.
struct FlushGuard(Arc<Commits>);

impl Drop for FlushGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = self.0.lock();
            q.flushing = false;
            q.gathering = false;
            q.waiting.clear();
        }
    }
}

impl LedgerHandle {
    /// Wraps an open ledger.
    pub fn new(ledger: Ledger) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ledger)),
            commits: Arc::default(),
            completed: Arc::default(),
            gather_window: GATHER_WINDOW,
        }
    }

    /// Changes how long the writer waits for announced answers (tests use a long window to
    /// show that a complete batch, not the clock, ends the wait).
    #[must_use]
    pub fn with_gather_window(mut self, window: Duration) -> Self {
        self.gather_window = window;
        self
    }

    /// Ends the writer's wait once `answers` attempts are waiting, even while more queries are
    /// announced. The worker sets its concurrency: with as many answers waiting as queries on
    /// the wire, waiting longer only brings the bound on uncommitted answers (2 ×
    /// concurrency) closer, which would hold back new queries. Shared by every clone.
    pub fn set_batch_target(&self, answers: usize) {
        let mut q = self.commits.lock();
        q.target = Some(answers.max(1));
        self.commits.ring_if_complete(&q);
    }

    /// How many ledger calls have completed so far (a progress counter).
    pub fn completed_calls(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Announces a query whose attempt(s) will be recorded soon; hold the guard until they are.
    pub fn attempt_coming(&self) -> Coming {
        self.commits.lock().coming += 1;
        Coming(Arc::clone(&self.commits))
    }

    /// Records one attempt like [`WorkQueue::record_attempt`](crate::ledger::WorkQueue::record_attempt), with group commit (see the module
    /// documentation). Returns only once this attempt is committed (or failed); the
    /// compare-and-set on `REFUND_PENDING` is the same statement as without batching.
    pub async fn record_attempt(
        &self,
        attempt: QueryReport,
        decision: Decision,
    ) -> Result<Applied, LedgerError> {
        self.record_attempt_in(None, attempt, decision).await
    }

    /// [`LedgerHandle::record_attempt`] for an attempt of the sweep `sweep`, like
    /// [`WorkQueue::record_attempt_in`](crate::ledger::WorkQueue::record_attempt_in).
    pub async fn record_attempt_in(
        &self,
        sweep: Option<i64>,
        attempt: QueryReport,
        decision: Decision,
    ) -> Result<Applied, LedgerError> {
        let (tx, rx) = oneshot::channel();
        let start_flush = {
            let mut q = self.commits.lock();
            q.waiting.push((sweep, attempt, decision, tx));
            self.commits.ring_if_complete(&q);
            !std::mem::replace(&mut q.flushing, true)
        };
        if start_flush {
            let ledger = Arc::clone(&self.inner);
            let commits = Arc::clone(&self.commits);
            let completed = Arc::clone(&self.completed);
            let window = self.gather_window;
            // Detached on purpose: the flush runs to completion even if this caller is
            // dropped, because other callers' attempts ride in the same transaction.
            drop(tokio::task::spawn_blocking(move || {
                flush_commits(&ledger, commits, &completed, window)
            }));
        }
        rx.await
            .unwrap_or_else(|_| panic!("the ledger writer panicked while recording an attempt"))
    }

    /// Runs `f` on a blocking thread with exclusive use of the ledger.
    pub async fn call<R, F>(&self, f: F) -> Result<R, LedgerError>
    where
        F: FnOnce(&mut Ledger) -> Result<R, LedgerError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let completed = Arc::clone(&self.completed);
        let joined = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: every ledger
            // method is one transaction, rolled back on unwind.
            let mut ledger = inner.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut ledger);
            completed.fetch_add(1, Ordering::Relaxed);
            out
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Takes the next batch: waits (up to `window`) while announced queries have not yet
/// queued their attempts, then takes everything queued. `None` once the queue is empty, with
/// `flushing` cleared under the same lock.
fn next_batch(commits: &Commits, window: Duration) -> Option<Vec<WaitingAttempt>> {
    let deadline = Instant::now() + window;
    let mut q = commits.lock();
    loop {
        if q.waiting.is_empty() {
            q.flushing = false;
            q.gathering = false;
            return None;
        }
        let now = Instant::now();
        if q.complete() || now >= deadline {
            q.gathering = false;
            let take = q.waiting.len().min(MAX_BATCH);
            return Some(q.waiting.drain(..take).collect());
        }
        q.gathering = true;
        q = commits
            .complete
            .wait_timeout(q, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Drains the commit queue: each round takes a batch (see [`next_batch`]) and commits it in
/// one transaction. If that transaction fails as a whole, each attempt is retried in its own
/// transaction, so every caller gets exactly the result (and the error) it would have had
/// without batching.
fn flush_commits(
    ledger: &Mutex<Ledger>,
    commits: Arc<Commits>,
    completed: &AtomicU64,
    window: Duration,
) {
    let guard = FlushGuard(commits);
    while let Some(batch) = next_batch(&guard.0, window) {
        let mut records = Vec::with_capacity(batch.len());
        let mut senders = Vec::with_capacity(batch.len());
        for (sweep, attempt, decision, tx) in batch {
            records.push((sweep, attempt, decision));
            senders.push(tx);
        }
        let results = {
            let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
            match records.as_slice() {
                [(sweep, attempt, decision)] => {
                    vec![ledger.record_attempt_in(*sweep, attempt, decision)]
                }
                _ => match ledger.record_attempts(&records) {
                    Ok(results) => results,
                    Err(e) => {
                        warn!(error = %e, count = records.len(), "group commit failed; recording attempts one by one");
                        records
                            .iter()
                            .map(|(s, a, d)| ledger.record_attempt_in(*s, a, d))
                            .collect()
                    }
                },
            }
        };
        completed.fetch_add(1, Ordering::Relaxed);
        for (tx, result) in senders.into_iter().zip(results) {
            // A caller that went away (drain deadline) no longer waits; its attempt is
            // committed all the same.
            let _ = tx.send(result);
        }
    }
}
