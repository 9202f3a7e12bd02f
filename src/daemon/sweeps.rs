//! The daemon's sweep loop: waits for the next thing to do (a sweep falling due, a cron poke,
//! a SIGHUP reload, a watchdog tick, shutdown), runs sweeps one at a time under the watchdog,
//! and applies reloads between sweeps. `WATCHDOG=1` comes from this loop only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::live::Live;
use super::lock::Guard;
use super::{DaemonError, HttpSlot, Reloader, build_worker, sweep_status};
use crate::config::{Config, ConfigError, LoadedKeys};
use crate::domain::node::HEARTBEAT_EVERY;
use crate::domain::{Clock, Timestamp, format_ts};
use crate::http::HttpError;
use crate::notify::Notifier;
use crate::worker::{JitterSource, LedgerHandle, SweepReport, Worker, WorkerError};

/// What the daemon did over its life, logged with "daemon stopped" (benchmarks and operators
/// read it; the per-sweep numbers are in the ledger's `sweeps` table).
#[derive(Debug, Clone, Default)]
pub(super) struct Totals {
    pub(super) sweeps: u64,
    pub(super) claimed: u64,
    pub(super) queried: u64,
    pub(super) finalized: u64,
    pub(super) rescheduled: u64,
    pub(super) failed: u64,
}

impl Totals {
    fn add(&mut self, r: &SweepReport) {
        self.sweeps += 1;
        self.claimed += r.claimed;
        self.queried += r.queried;
        self.finalized += r.finalized;
        self.rescheduled += r.rescheduled;
        self.failed += r.failed;
    }
}

/// The sweep hook, shareable with the blocking thread that calls it.
type SharedHook = Arc<dyn Fn(&SweepReport) + Send + Sync>;

/// The loop's state; [`super::Daemon::start`] builds it, [`SweepLoop::run`] consumes it.
pub(super) struct SweepLoop {
    /// The worker of the running configuration; a reload replaces it.
    pub(super) worker: Worker,
    /// The ledger, for the watchdog's progress count and the reloaded worker.
    pub(super) ledger: LedgerHandle,
    /// When the next sweep falls due, and the time in `STATUS=`.
    pub(super) clock: Arc<dyn Clock>,
    /// The running configuration (its ledger path is the open ledger's, whatever a reload says).
    pub(super) config: Config,
    /// The tests' jitter override, applied to every worker this loop builds.
    pub(super) jitter: Option<JitterSource>,
    /// Called after each successful sweep, on the blocking pool.
    pub(super) on_sweep: Option<SharedHook>,
    /// `STATUS=` after each sweep and `WATCHDOG=1` pings.
    pub(super) notifier: Notifier,
    /// Shared with the daemon, which logs them at the end even if this loop was aborted.
    pub(super) totals: Arc<Mutex<Totals>>,
    /// Pokes from the cron safety net (capacity 1: pokes while a sweep is queued coalesce).
    pub(super) poke: mpsc::Receiver<()>,
    /// The lock file and the ledger as opened: checked before every sweep, so a deleted lock
    /// (a second daemon could start) or a replaced ledger stops this daemon.
    pub(super) guard: Guard,
    /// What the HTTP endpoints see: ticked on every turn of the loop, given the new worker on
    /// a reload, and the metrics the sweeps count into.
    pub(super) live: Arc<Live>,
    /// The HTTP listener, moved when a reload changes `http.listen`.
    pub(super) http: Arc<HttpSlot>,
    /// The cron's sweep interval: the loop ticks at least this often, even idle, so
    /// `/healthz` (twice this) tells a stuck loop from a quiet one.
    pub(super) interval: Duration,
    /// The webhook delivery task's target: a reload sends the new `[webhook]` here.
    pub(super) webhook: tokio::sync::watch::Sender<Option<Arc<crate::webhook::Target>>>,
    /// When this node's `nodes` row last got a heartbeat (`None`: not since start).
    pub(super) heartbeat_at: Mutex<Option<Timestamp>>,
}

/// What the loop does next.
enum Event {
    /// `shutdown` fired.
    Stop,
    /// SIGHUP: re-read the configuration.
    Reload(Reloader),
    /// Run a sweep (it fell due, or the cron poked).
    Sweep,
    /// Between sweeps: tell systemd the loop is alive.
    Ping,
    /// While halted: look whether an operator asked to resume.
    CheckResume,
    /// Idle for a sweep interval: the loop is alive (for `/healthz`).
    Tick,
}

/// How often a halted daemon looks for an operator's `resume` request in the ledger. The
/// request travels through the ledger, where its audit row is anyway (see
/// `ledger/resume.rs` for why not a signal): one read of the rows added since, once a second
/// and only while halted, so `resume` takes effect within about a second plus the probe.
const RESUME_POLL: Duration = Duration::from_secs(1);

/// A rejected reload: the configuration did not load, or no worker could be built from it.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// The config or key files did not load or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The gateway client could not be built from the new configuration.
    #[error(transparent)]
    Worker(#[from] DaemonError),
    /// The new `http.listen` could not be bound.
    #[error(transparent)]
    Http(HttpError),
}

/// The watchdog timer: its ticks exist only when systemd asked for a watchdog.
struct Watchdog {
    /// Half of `WatchdogSec=`; `None`: no watchdog, and the timer never fires.
    every: Option<Duration>,
    timer: Interval,
}

impl Watchdog {
    fn new(every: Option<Duration>) -> Self {
        let mut timer = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { every, timer }
    }

    /// The next tick; never, without a watchdog.
    async fn tick(&mut self) {
        match self.every {
            Some(_) => {
                self.timer.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

impl SweepLoop {
    /// Runs until `shutdown` fires. Sweeps once at start: refunds already due (or due before
    /// the first cron tick) must not wait for the cron safety net, and the sweep says when to
    /// wake next.
    pub(super) async fn run(
        mut self,
        shutdown: CancellationToken,
        mut reload: mpsc::Receiver<Reloader>,
    ) -> Result<(), DaemonError> {
        let mut wake_at = Some(self.clock.now());
        // WATCHDOG=1 comes from this loop only: between sweeps on every tick, during a sweep
        // only while the worker makes progress (ledger calls complete). A hung loop or a hung
        // sweep stops the pings, and systemd restarts the service after WatchdogSec=.
        let mut watchdog = Watchdog::new(self.notifier.watchdog_interval());
        let mut resume_poll = tokio::time::interval(RESUME_POLL);
        resume_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let event = self
                .next_event(
                    wake_at,
                    &shutdown,
                    &mut reload,
                    &mut watchdog,
                    (&mut resume_poll, &mut ticks),
                )
                .await;
            self.live.ticked();
            self.heartbeat().await;
            let event = match event {
                Event::CheckResume if self.resume_requested().await => Event::Sweep,
                Event::CheckResume => continue,
                other => other,
            };
            match event {
                Event::Stop => return Ok(()),
                Event::Tick => {}
                Event::Reload(reloader) => self.apply_reload(reloader).await,
                Event::Ping => self.notifier.watchdog(),
                Event::CheckResume => {}
                Event::Sweep => {
                    // The ledger's server away (PostgreSQL restarting): no sweep now, the
                    // next tick tries again; `/readyz` says `ledger_unavailable` meanwhile.
                    match self.guard.check().await {
                        Err(DaemonError::Ledger(e)) if e.is_unavailable() => {
                            wake_at = self.after_sweep(Err(e.into())).await;
                            continue;
                        }
                        Err(e) => {
                            error!(error = %e, "ledger identity lost; stopping");
                            self.notifier.status(&e.to_string());
                            return Err(e);
                        }
                        Ok(()) => {}
                    }
                    // The node lock was lost with its session and taken again: the refunds
                    // the lost session had leased are this node's still, and no query of
                    // them is in flight between sweeps. Due again now, for any node.
                    if self.guard.take_retaken() {
                        let node = self.config.worker.node_name.clone();
                        match self
                            .ledger
                            .call(move |l| l.release_node_claims(&node))
                            .await
                        {
                            Ok(count) => warn!(
                                count,
                                "node lock taken again; the leases of the lost session released"
                            ),
                            Err(e) => {
                                wake_at = self.after_sweep(Err(e.into())).await;
                                continue;
                            }
                        }
                    }
                    // A trigger dropped under a running daemon: nothing it writes from now on
                    // is protected, so it stops (exit 4, which systemd does not restart).
                    match self.ledger.call(|l| l.recheck_schema()).await {
                        Err(e) if e.is_unavailable() => {
                            wake_at = self.after_sweep(Err(e.into())).await;
                            continue;
                        }
                        Err(e) => {
                            error!(error = %e, "ledger guarantees removed; stopping");
                            self.notifier.status(&e.to_string());
                            return Err(e.into());
                        }
                        Ok(()) => {}
                    }
                    let result = self.sweep_watched(&shutdown, &mut watchdog).await;
                    wake_at = self.after_sweep(result).await;
                }
            }
        }
    }

    /// Waits for the next event. Shutdown wins over everything, then a reload, so a reload
    /// is applied before the sweep it may affect.
    async fn next_event(
        &mut self,
        wake_at: Option<Timestamp>,
        shutdown: &CancellationToken,
        reload: &mut mpsc::Receiver<Reloader>,
        watchdog: &mut Watchdog,
        (resume_poll, ticks): (&mut Interval, &mut Interval),
    ) -> Event {
        let halted = self.worker.halted().is_some();
        let sleep = wake_at.map(|t| {
            let ms = (t - self.clock.now()).num_milliseconds().max(0) as u64;
            // Wake a hair late so the refund is due by the time we look.
            Duration::from_millis(ms + 5)
        });
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Event::Stop,
            Some(reloader) = reload.recv() => Event::Reload(reloader),
            Some(()) = self.poke.recv() => Event::Sweep,
            () = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => Event::Sweep,
            () = watchdog.tick() => Event::Ping,
            _ = resume_poll.tick(), if halted => Event::CheckResume,
            _ = ticks.tick() => Event::Tick,
        }
    }

    /// Records this node's heartbeat, at most every [`HEARTBEAT_EVERY`]. A ledger error is
    /// logged and the loop goes on (the next sweep meets it and reports it).
    async fn heartbeat(&self) {
        let now = self.clock.now();
        {
            let mut last = self.heartbeat_at.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|at| {
                now < at || (now - at).to_std().unwrap_or(Duration::ZERO) >= HEARTBEAT_EVERY
            });
            if !due {
                return;
            }
            *last = Some(now);
        }
        let node = self.config.worker.node_name.clone();
        match self
            .ledger
            .call(move |l| l.node_heartbeat(&node, now))
            .await
        {
            Ok(true) => {}
            Ok(false) => warn!(
                node = %self.config.worker.node_name,
                "the node's row is gone from the ledger; it is written again at the next start"
            ),
            Err(e) => warn!(error = %e, "could not record the node's heartbeat"),
        }
    }

    /// Whether an operator asked to resume; a ledger error is logged and read as "no" (the
    /// next sweep meets it and reports it).
    async fn resume_requested(&self) -> bool {
        match self.worker.resume_requested().await {
            Ok(asked) => asked,
            Err(e) => {
                warn!(error = %e, "could not read resume requests");
                false
            }
        }
    }

    /// Runs one sweep (in its span, named by its `sweeps.id`: the worker opens it once the
    /// row exists); while it runs, pings the watchdog only when the worker made progress
    /// since the last tick.
    async fn sweep_watched(
        &self,
        shutdown: &CancellationToken,
        watchdog: &mut Watchdog,
    ) -> Result<SweepReport, WorkerError> {
        let sweep = self.worker.sweep(shutdown);
        tokio::pin!(sweep);
        let mut progress = self.ledger.completed_calls();
        // `/healthz` sees a long sweep that makes progress as a live loop, as the watchdog
        // does: its own timer, at the sweep interval, ticks only when ledger calls completed.
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticked_at = progress;
        loop {
            tokio::select! {
                r = &mut sweep => return r,
                () = watchdog.tick() => {
                    let now = self.ledger.completed_calls();
                    if now != progress {
                        progress = now;
                        self.notifier.watchdog();
                    }
                }
                _ = ticks.tick() => {
                    let now = self.ledger.completed_calls();
                    if now != ticked_at {
                        ticked_at = now;
                        self.live.ticked();
                        self.heartbeat().await;
                    }
                }
            }
        }
    }

    /// Logs and reports a finished sweep (totals, `STATUS=`, the hook) and returns when to
    /// wake next: the halt's probe while halted, else the next refund due (`None`: the
    /// cron's next tick).
    async fn after_sweep(&self, result: Result<SweepReport, WorkerError>) -> Option<Timestamp> {
        let metrics = self.live.metrics();
        metrics.sweep_ended(result.is_err(), self.clock.now());
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                // The sweep's row says why too (`sweeps.error`), when it could be written;
                // the line gives the whole cause chain (SQLite's message included).
                let chain = crate::logging::one_line_chain(&e);
                match self.worker.last_sweep_id() {
                    Some(sweep) => {
                        error!(sweep, error = %chain, "sweep failed; retrying at the next tick");
                    }
                    None => error!(error = %chain, "sweep failed; retrying at the next tick"),
                }
                self.notifier.status(&format!(
                    "sweep failed at {}: {e}; retrying at the next tick",
                    format_ts(self.clock.now())
                ));
                return None;
            }
        };
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(&report);
        if report.claimed > 0 || report.halted.is_some() {
            let halted = report.halted.as_ref().map(ToString::to_string);
            info!(
                sweep = report.sweep_id,
                claimed = report.claimed,
                finalized = report.finalized,
                rescheduled = report.rescheduled,
                flagged = report.flagged,
                failed = report.failed,
                discrepancies = report.discrepancies,
                halted = halted.as_deref().unwrap_or(""),
                "sweep finished"
            );
        } else {
            debug!(sweep = report.sweep_id, "sweep finished");
        }
        let wake_at = match (&report.halted, report.next_probe_at, report.next_due_at) {
            (Some(_), probe, _) => probe,
            (None, _, next) => next,
        };
        self.notifier
            .status(&sweep_status(&report, self.clock.now()));
        if let Some(hook) = &self.on_sweep {
            let hook = Arc::clone(hook);
            let called = tokio::task::spawn_blocking(move || hook(&report)).await;
            if let Err(e) = called
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        wake_at
    }

    /// Applies a SIGHUP reload between sweeps: the new configuration and keys are read and a
    /// worker built on the blocking pool, and the new worker takes over the old one's halt,
    /// breaker and log watermark. A rejected reload keeps everything running as it was, and
    /// logs one ERROR line with the whole cause chain.
    async fn apply_reload(&mut self, reloader: Reloader) {
        let (ledger, clock, jitter) = (
            self.ledger.clone(),
            Arc::clone(&self.clock),
            self.jitter.clone(),
        );
        let in_use = self.config.ledger.clone();
        let node_in_use = self.config.worker.node_name.clone();
        let metrics = self.live.metrics();
        let loaded = tokio::task::spawn_blocking(move || {
            let (mut config, keys) = reloader()?;
            if config.ledger != in_use {
                warn!(
                    configured = %config.ledger,
                    in_use = %in_use,
                    "ledger.path changes need a restart; keeping the open ledger"
                );
            }
            config.ledger = in_use;
            // The node's name is its rows' and its connection's: a restart changes it.
            if config.worker.node_name != node_in_use {
                warn!(
                    configured = %config.worker.node_name,
                    in_use = %node_in_use,
                    "worker.node_name changes need a restart; keeping the running name"
                );
            }
            config.worker.node_name = node_in_use;
            let mut worker = build_worker(&config, &keys, ledger, clock)?.with_metrics(metrics);
            if let Some(j) = jitter {
                worker = worker.with_jitter(j);
            }
            let target =
                crate::webhook::target_for(config.webhook.as_ref(), keys.webhook_secret.as_ref());
            Ok::<_, ReloadError>((config, keys, worker, target))
        })
        .await;
        let loaded = match loaded {
            Ok(Ok(loaded)) => Ok(loaded),
            Ok(Err(e)) => Err(e),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        // A new listen address is bound before anything changes: a failed bind rejects the
        // reload like any other error, and the old listener keeps serving.
        let moved = match loaded {
            Ok((config, keys, worker, target)) => match self.bind_moved(&config).await {
                Ok(moved) => Ok((config, keys, worker, target, moved)),
                Err(e) => Err(ReloadError::Http(e)),
            },
            Err(e) => Err(e),
        };
        let (config, keys, worker, target, moved) = match moved {
            Ok(m) => m,
            Err(e) => {
                error!(
                    error = %crate::logging::one_line_chain(&e),
                    "configuration reload rejected; keeping the running configuration"
                );
                return;
            }
        };
        if let Some(server) = moved {
            self.swap_listener(server).await;
        }
        // `worker.sweep_cron` needs a restart (README), so the interval stays.
        self.live
            .metrics()
            .set_settings(self.interval, config.policy.pending_flag_after);
        if config.webhook.is_none() && self.config.webhook.is_some() {
            info!("webhooks disabled; events wait in the ledger");
        }
        self.webhook.send_replace(target);
        self.take_over(config, &keys, worker);
    }

    /// When a reload changes `http.listen`: the new listener, bound and serving (`None`
    /// inside: the key was removed). `None`: unchanged.
    async fn bind_moved(
        &self,
        config: &Config,
    ) -> Result<Option<Option<crate::http::Server>>, HttpError> {
        if config.http.listen == self.config.http.listen {
            return Ok(None);
        }
        match config.http.listen {
            Some(addr) => Ok(Some(Some(super::serve(addr, &self.live)?))),
            None => Ok(Some(None)),
        }
    }

    /// Puts the reload's listener (or none) in place, then stops the old one: the new
    /// address serves before the old one closes.
    async fn swap_listener(&self, server: Option<crate::http::Server>) {
        let old = std::mem::replace(&mut *self.http.0.lock().await, server);
        if let Some(old) = old {
            // In the background: its in-flight requests may take a few seconds, and the
            // loop does not wait for them.
            tokio::spawn(old.stop());
        }
    }

    /// Puts a reloaded configuration's worker in charge.
    fn take_over(&mut self, config: Config, keys: &LoadedKeys, worker: Worker) {
        worker.inherit_halt(&self.worker);
        self.live.set_worker(worker.view());
        self.live.set_api_token(keys.api_token.clone());
        self.live.inbox().set_verifier(
            Arc::clone(&keys.gateway),
            config.gateway.merchant_no.clone(),
        );
        if config.http.notify_path != self.config.http.notify_path {
            warn!("http.notify_path changes need a restart");
        }
        self.worker = worker;
        for warning in &keys.warnings {
            warn!(warning = %warning, "key warning");
        }
        if config.worker.sweep_cron != self.config.worker.sweep_cron
            || config.log != self.config.log
        {
            warn!("worker.sweep_cron and [log] changes need a restart");
        }
        self.config = config;
        info!("configuration reloaded");
    }
}
