//! The long-running daemon: opens the ledger, takes the single-daemon lock, schedules sweeps
//! (tokio-cron-scheduler as the safety net, plus a wake-up at the earliest `next_query_at`),
//! applies SIGHUP reloads between sweeps, and drains within a deadline when `shutdown` fires.
//! `shutdown` is created by the caller and cancelled only by the caller's signal handler (or a
//! test): this is the one shutdown path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::{Config, ConfigError, LoadedKeys};
use crate::domain::{Clock, Timestamp, format_ts};
use crate::gateway::{GatewayClient, GatewayError};
use crate::ledger::{Ledger, LedgerError};
use crate::notify::Notifier;
use crate::worker::{LedgerHandle, SweepReport, Worker};

/// Why the daemon could not start (once started, it only stops on `shutdown`).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Another daemon holds the ledger.
    #[error(
        "another checus-reconciler daemon is already running on this ledger (lock held on {path}); stop it first"
    )]
    AlreadyRunning {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be created.
    #[error("cannot create lock file {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The gateway client could not be built from the configuration.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The scheduler failed to start.
    #[error("scheduler: {0}")]
    Scheduler(String),
}

/// Re-reads the configuration for a SIGHUP reload.
pub type Reloader = Arc<dyn Fn() -> Result<(Config, LoadedKeys), ConfigError> + Send + Sync>;

/// Holds the exclusive daemon lock on `<ledger>.lock` for as long as it lives. The kernel
/// drops the lock when the process dies, even by SIGKILL, so no stale lock survives a crash.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock for `ledger_path`, or says who holds it.
    pub fn acquire(ledger_path: &Path) -> Result<Self, DaemonError> {
        let mut name = ledger_path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| DaemonError::Lock {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::AlreadyRunning { path }),
            Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Lock { path, source }),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Builds the worker for a configuration.
pub fn build_worker(
    config: &Config,
    keys: &LoadedKeys,
    ledger: LedgerHandle,
    clock: Arc<dyn Clock>,
) -> Result<Worker, DaemonError> {
    let client = GatewayClient::new(
        config.gateway.clone(),
        Arc::clone(&keys.merchant),
        Arc::clone(&keys.gateway),
        Arc::clone(&clock),
    )?;
    Ok(Worker::new(
        ledger,
        client,
        config.policy.clone(),
        config.worker.clone(),
        clock,
    ))
}

/// Called after every sweep with its report.
pub type SweepHook = Box<dyn Fn(&SweepReport) + Send + Sync>;

/// Hooks tests and the demo use to watch the daemon; production passes `Hooks::default()`.
#[derive(Default)]
pub struct Hooks {
    /// Called after every sweep with its report.
    pub on_sweep: Option<SweepHook>,
    /// Called once the daemon is ready (ledger open, lock held, scheduler running).
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// Replaces the jitter draw (tests: no jitter).
    pub jitter: Option<crate::worker::JitterSource>,
    /// systemd notifications (`READY=1`, `STATUS=`, `WATCHDOG=1`); disabled by default. `main`
    /// builds it from the environment systemd gives the service.
    pub notify: Notifier,
}

/// Runs the daemon until `shutdown` is cancelled, then drains within the configured deadline.
pub async fn run(
    config: Config,
    keys: LoadedKeys,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<Reloader>,
    hooks: Hooks,
) -> Result<(), DaemonError> {
    for w in &keys.warnings {
        warn!(warning = %w, "key warning");
    }
    let path = config.ledger_path.clone();
    let ledger = tokio::task::spawn_blocking({
        let path = path.clone();
        move || Ledger::open(&path)
    })
    .await
    .expect("ledger open does not panic")?;
    let lock = DaemonLock::acquire(&path)?;
    let watermark = ledger.finalized_watermark()?;
    let closed = ledger.close_interrupted_sweeps(clock.now())?;
    if closed > 0 {
        warn!(count = closed, "closed sweep rows a previous run left open");
    }
    let ledger = LedgerHandle::new(ledger);
    let mut worker = build_worker(&config, &keys, ledger.clone(), Arc::clone(&clock))?;
    if let Some(j) = hooks.jitter.clone() {
        worker = worker.with_jitter(j);
    }
    worker.log_finalized_after(watermark);

    // The cron job only pokes the worker loop; the loop runs sweeps one at a time, so a sweep
    // can never overlap itself however slow it is. A full channel means a sweep is already
    // queued, and the poke is coalesced.
    let (poke_tx, mut poke_rx) = mpsc::channel::<()>(1);
    let mut scheduler = JobScheduler::new()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    let job = Job::new_async(config.worker.sweep_cron.as_str(), move |_, _| {
        let poke = poke_tx.clone();
        Box::pin(async move {
            let _ = poke.try_send(());
        })
    })
    .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    scheduler
        .add(job)
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    scheduler
        .start()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;

    info!(
        ledger = %path.display(),
        lock = %lock.path().display(),
        gateway = %config.gateway.base_url,
        sweep_cron = %config.worker.sweep_cron,
        concurrency = config.worker.concurrency,
        rate_per_second = config.worker.rate_per_second,
        "daemon ready"
    );
    // Config validated (by the caller), ledger open, lock held, scheduler running: ready.
    let notifier = hooks.notify;
    notifier.ready(&format!(
        "ready: ledger {}, waiting for the first sweep",
        path.display()
    ));
    if let Some(ready) = hooks.on_ready {
        ready();
    }

    let deadline = config.worker.shutdown_deadline;
    let stop_clock = Arc::clone(&clock);
    let stop_ledger = ledger.clone();
    let loop_shutdown = shutdown.clone();
    let on_sweep = hooks.on_sweep;
    let jitter = hooks.jitter;
    let mut current_config = config;
    let totals = Arc::new(std::sync::Mutex::new(Totals::default()));
    let work_totals = Arc::clone(&totals);
    let loop_notifier = notifier.clone();
    let work = async move {
        let notifier = loop_notifier;
        // Sweep once at start: refunds already due (or due before the first cron tick) must
        // not wait for the cron safety net, and the sweep tells us when to wake next.
        let mut wake_at: Option<Timestamp> = Some(clock.now());
        let mut sweep_no: u64 = 0;
        // WATCHDOG=1 comes from this loop only: between sweeps on every tick, during a sweep
        // only while the worker makes progress (ledger calls complete). A hung loop or a hung
        // sweep stops the pings, and systemd restarts the service after WatchdogSec=.
        let watchdog_every = notifier.watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sleep = wake_at.map(|t| {
                let ms = (t - clock.now()).num_milliseconds().max(0) as u64;
                // Wake a hair late so the refund is due by the time we look.
                Duration::from_millis(ms + 5)
            });
            tokio::select! {
                biased;
                () = loop_shutdown.cancelled() => break,
                Some(reloader) = reload.recv() => {
                    match reloader() {
                        Ok((new_config, new_keys)) => {
                            if new_config.ledger_path != current_config.ledger_path {
                                warn!(
                                    configured = %new_config.ledger_path.display(),
                                    in_use = %current_config.ledger_path.display(),
                                    "ledger.path changes need a restart; keeping the open ledger"
                                );
                            }
                            let mut effective = new_config;
                            effective.ledger_path = current_config.ledger_path.clone();
                            match build_worker(&effective, &new_keys, ledger.clone(), Arc::clone(&clock)) {
                                Ok(mut w) => {
                                    if let Some(j) = jitter.clone() {
                                        w = w.with_jitter(j);
                                    }
                                    w.inherit_halt(&worker);
                                    worker = w;
                                    for warning in &new_keys.warnings {
                                        warn!(warning = %warning, "key warning");
                                    }
                                    if effective.worker.sweep_cron != current_config.worker.sweep_cron
                                        || effective.log != current_config.log
                                    {
                                        warn!("worker.sweep_cron and [log] changes need a restart");
                                    }
                                    current_config = effective;
                                    info!("configuration reloaded");
                                }
                                Err(e) => error!(error = %e, "configuration reload rejected; keeping the running configuration"),
                            }
                        }
                        Err(e) => error!(error = %e.with_causes(), "configuration reload rejected; keeping the running configuration"),
                    }
                    continue;
                }
                Some(()) = poke_rx.recv() => {}
                () = async { tokio::time::sleep(sleep.unwrap_or(Duration::MAX)).await }, if sleep.is_some() => {}
                _ = watchdog.tick(), if watchdog_every.is_some() => {
                    notifier.watchdog();
                    continue;
                }
            }
            sweep_no += 1;
            let span = info_span!("sweep", sweep = sweep_no);
            let sweep = worker.sweep(&loop_shutdown).instrument(span);
            tokio::pin!(sweep);
            let mut progress = ledger.completed_calls();
            let result = loop {
                tokio::select! {
                    r = &mut sweep => break r,
                    _ = watchdog.tick(), if watchdog_every.is_some() => {
                        let now = ledger.completed_calls();
                        if now != progress {
                            progress = now;
                            notifier.watchdog();
                        }
                    }
                }
            };
            match result {
                Ok(report) => {
                    work_totals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(&report);
                    if report.claimed > 0 || report.halted.is_some() {
                        info!(
                            sweep = sweep_no,
                            claimed = report.claimed,
                            finalized = report.finalized,
                            rescheduled = report.rescheduled,
                            flagged = report.flagged,
                            failed = report.failed,
                            discrepancies = report.discrepancies,
                            halted = report.halted.as_deref().unwrap_or(""),
                            "sweep finished"
                        );
                    } else {
                        debug!(sweep = sweep_no, "sweep finished");
                    }
                    wake_at = match (&report.halted, report.next_probe_at, report.next_due_at) {
                        (Some(_), probe, _) => probe,
                        (None, _, next) => next,
                    };
                    notifier.status(&sweep_status(&report, clock.now()));
                    if let Some(cb) = &on_sweep {
                        cb(&report);
                    }
                }
                Err(e) => {
                    error!(error = %e, "sweep failed; retrying at the next tick");
                    notifier.status(&format!(
                        "sweep failed at {}: {e}; retrying at the next tick",
                        format_ts(clock.now())
                    ));
                    wake_at = None;
                }
            }
        }
    };
    let mut handle = tokio::spawn(work);
    // Shutdown is checked first: the work loop also ends on it, and an unbiased select could
    // then take the "loop ended" branch and skip STOPPING=1 and the drain log.
    let finished = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        r = &mut handle => Some(r),
    };
    let outcome = match finished {
        Some(r) => r,
        None => {
            notifier.stopping();
            info!(
                deadline_s = deadline.as_secs_f64(),
                "shutdown requested; draining in-flight queries"
            );
            match tokio::time::timeout(deadline, &mut handle).await {
                Ok(r) => r,
                Err(_) => {
                    handle.abort();
                    // The aborted sweep cannot finish its own row; close it so no row is
                    // left half-written. Its ledger calls that already started complete
                    // first: the ledger mutex serialises this after them.
                    let closed = stop_ledger
                        .call({
                            let at = stop_clock.now();
                            move |l| l.close_interrupted_sweeps(at)
                        })
                        .await;
                    if let Err(e) = closed {
                        error!(error = %e, "could not close the interrupted sweep row");
                    }
                    warn!(
                        deadline_s = deadline.as_secs_f64(),
                        "drain deadline passed; abandoned in-flight queries are not recorded and will be re-queried"
                    );
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = outcome
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    let _ = scheduler.shutdown().await;
    let t = totals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    info!(
        at = %format_ts(stop_clock.now()),
        sweeps = t.sweeps,
        claimed = t.claimed,
        queried = t.queried,
        finalized = t.finalized,
        rescheduled = t.rescheduled,
        failed = t.failed,
        "daemon stopped"
    );
    drop(lock);
    Ok(())
}

/// What the daemon did over its life, logged with "daemon stopped" (benchmarks and operators
/// read it; the per-sweep numbers are in the ledger's `sweeps` table).
#[derive(Debug, Clone, Default)]
struct Totals {
    sweeps: u64,
    claimed: u64,
    queried: u64,
    finalized: u64,
    rescheduled: u64,
    failed: u64,
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

/// The one-line `STATUS=` systemd shows in `systemctl status` after a sweep.
pub fn sweep_status(report: &SweepReport, now: Timestamp) -> String {
    let mut line = format!(
        "last sweep {}: claimed {}, finalized {}, rescheduled {}, flagged {}, failed {}",
        format_ts(now),
        report.claimed,
        report.finalized,
        report.rescheduled,
        report.flagged,
        report.failed
    );
    match (&report.halted, report.next_probe_at, report.next_due_at) {
        (Some(h), probe, _) => {
            line.push_str(&format!("; QUERYING HALTED: {h}"));
            if let Some(p) = probe {
                line.push_str(&format!("; probe at {}", format_ts(p)));
            }
        }
        (None, _, Some(next)) => line.push_str(&format!("; next due {}", format_ts(next))),
        (None, _, None) => line.push_str("; nothing pending"),
    }
    line
}
