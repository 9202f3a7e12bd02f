//! The long-running daemon, in named steps: [`Daemon::start`] opens the ledger, takes the
//! single-daemon lock ([`lock`]) and starts the scheduler (tokio-cron-scheduler as the safety
//! net); [`Daemon::run`] runs the sweep loop ([`sweeps`]: sweeps with their watchdog, plus a
//! wake-up at the earliest `next_query_at`, and SIGHUP reloads between sweeps) until `shutdown`
//! fires, then drains within a deadline and stops the parts. Next to the sweep loop runs the
//! webhook delivery task ([`crate::webhook`]), started before READY and stopped when the
//! drain begins.
//! `shutdown` is created by the caller and cancelled only by the caller's signal handler (or a
//! test): this is the one shutdown path. Every ledger call and file read runs on the blocking
//! pool, never on an async worker thread.

mod live;
mod lock;
mod sweeps;

pub use live::{GAUGE_CACHE, Health, Live, NotReady};
use lock::Held;
pub use lock::{DaemonLock, Presence, lock_path, presence};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, LoadedKeys};
use crate::domain::{Clock, NodeName, Timestamp, format_ts};
use crate::gateway::{GatewayClient, GatewayError};
use crate::http::notify::Inbox;
use crate::http::{AppState, HttpError, Listener, Server};
use crate::ledger::{self, Ledger, LedgerError, NodeStart, OpenMode};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::webhook::{Delivery, Target};
use crate::worker::{JitterSource, LedgerHandle, SweepReport, Worker};

use sweeps::{SweepLoop, Totals};

/// Why the daemon could not start, or had to stop: once started, it stops on `shutdown`, or
/// when the file it guards is no longer the one it opened ([`DaemonError::IdentityLost`]).
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
        /// The lock file the other daemon holds.
        path: PathBuf,
    },
    /// The lock file could not be created.
    #[error("cannot create lock file {path}: {source}")]
    Lock {
        /// The lock file that could not be opened or locked.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The gateway client could not be built from the configuration.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The scheduler failed to start.
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// The HTTP listener could not be bound (`http.listen`).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The notification writer's thread could not be started.
    #[error("cannot start the notification writer thread")]
    NotifyWriter(#[source] std::io::Error),
    /// The lock file or the ledger file at its path is no longer the one the daemon opened
    /// (deleted, or replaced by another file): the daemon stops so that systemd restarts it on
    /// what is there now, where the lock decides again who runs.
    #[error("the {what} {path} is no longer the file this daemon opened ({how}); stopping")]
    IdentityLost {
        /// "lock file" or "ledger".
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// "deleted" or "replaced".
        how: &'static str,
    },
}

impl DaemonError {
    /// True when the ledger's server cannot be reached now but may be later (PostgreSQL
    /// restarting, a network cut): the daemon skips the sweep and tries again at the next
    /// tick instead of stopping.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Ledger(e) if e.is_unavailable())
    }
}

/// Re-reads the configuration for a SIGHUP reload. It reads files, so the daemon calls it on
/// the blocking pool.
pub type Reloader = Arc<dyn Fn() -> Result<(Config, LoadedKeys), ConfigError> + Send + Sync>;

/// Builds the worker for a configuration: the gateway client from its settings and keys, and
/// the worker on `ledger`. The daemon and the CLI's `query` both build theirs here.
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

/// Called after every sweep with its report. It may block: the daemon calls it on the
/// blocking pool, and the sweep loop waits for it.
pub type SweepHook = Box<dyn Fn(&SweepReport) + Send + Sync>;

/// Hooks tests and the demo use to watch the daemon; production passes `Hooks::default()`.
#[derive(Default)]
pub struct Hooks {
    /// Called after every sweep with its report.
    pub on_sweep: Option<SweepHook>,
    /// Called once the daemon is ready (ledger open, lock held, scheduler running).
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// Replaces the jitter draw (tests: no jitter).
    pub jitter: Option<JitterSource>,
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
    reload: mpsc::Receiver<Reloader>,
    hooks: Hooks,
) -> Result<(), DaemonError> {
    Daemon::start(config, keys, clock, hooks)
        .await?
        .run(shutdown, reload)
        .await
}

/// A started daemon: the parts running, and the sweep loop ready to go.
pub struct Daemon {
    /// Ledger, lock, scheduler: what start-up set up and [`Parts::stop`] takes down.
    parts: Parts,
    /// The sweep loop, moved onto its own task by [`Daemon::run`].
    sweeps: SweepLoop,
}

/// What the daemon runs besides the sweep loop, and needs again to drain and stop.
struct Parts {
    /// Held until the daemon has stopped, so no second daemon sweeps this ledger meanwhile.
    lock: Held,
    /// The cron safety net; it pokes the sweep loop, and is shut down last.
    scheduler: JobScheduler,
    /// Closes the sweep row of a sweep abandoned at the drain deadline.
    ledger: LedgerHandle,
    /// Stamps the closed row and "daemon stopped".
    clock: Arc<dyn Clock>,
    /// Says `STOPPING=1` when the drain begins.
    notifier: Notifier,
    /// How long in-flight queries get to finish after `shutdown`.
    deadline: Duration,
    /// Shared with the sweep loop, which may be aborted: read for "daemon stopped".
    totals: Arc<Mutex<Totals>>,
    /// The HTTP listener, if `http.listen` is set; the sweep loop moves it on a reload.
    http: Arc<HttpSlot>,
    /// Stops the webhook delivery task (cancelled when the drain begins: a delivery cut
    /// short is sent again by the next run, so it need not finish).
    webhook_stop: CancellationToken,
    /// The webhook delivery task, awaited in [`Parts::stop`].
    webhook_task: JoinHandle<()>,
    /// This daemon's node, whose `nodes` row records the clean stop.
    node: NodeName,
}

/// The serving HTTP listener, if any. Shared by the sweep loop (a reload replaces it) and
/// the daemon's stop.
#[derive(Debug, Default)]
pub(crate) struct HttpSlot(tokio::sync::Mutex<Option<Server>>);

impl HttpSlot {
    /// Stops accepting at once (the drain begins); in-flight requests finish.
    async fn begin_stop(&self) {
        if let Some(server) = self.0.lock().await.as_ref() {
            server.begin_stop();
        }
    }

    /// Stops the listener and waits for its in-flight requests.
    async fn stop(&self) {
        let server = self.0.lock().await.take();
        if let Some(server) = server {
            server.stop().await;
        }
    }
}

/// What the start-up's blocking part hands back.
struct Opened {
    lock: Held,
    ledger: LedgerHandle,
    worker: Worker,
    /// A second connection, for the HTTP endpoints' reads.
    reader: Ledger,
    /// A third, for the refunds API: its writes wait for no worker call (at most one busy
    /// timeout, inside the request timeout).
    api: Ledger,
    /// A third, for the notification writer's group commits.
    inbox: Ledger,
    /// The webhook delivery task's own connection.
    webhook_ledger: LedgerHandle,
    /// The webhook target of the configuration (`None`: no `[webhook]`).
    webhook_target: Option<Arc<Target>>,
}

impl Daemon {
    /// Starts the parts: opens the ledger and takes the lock, builds the worker, starts the
    /// scheduler, then says "daemon ready" (log, `READY=1`, `on_ready`).
    pub async fn start(
        config: Config,
        keys: LoadedKeys,
        clock: Arc<dyn Clock>,
        hooks: Hooks,
    ) -> Result<Self, DaemonError> {
        for w in &keys.warnings {
            warn!(warning = %w, "key warning");
        }
        let metrics = Arc::new(Metrics::new());
        metrics.set_node(&config.worker.node_name);
        let opened = open(&config, &keys, &clock, hooks.jitter.clone(), &metrics).await?;
        let interval = sweep_interval(&config.worker.sweep_cron, clock.now());
        let inbox = Inbox::start(
            opened.inbox,
            Arc::clone(&keys.gateway),
            config.gateway.merchant_no.clone(),
            config.http.notify_path.clone(),
            Arc::clone(&metrics),
            Arc::clone(&clock),
        )
        .map_err(DaemonError::NotifyWriter)?;
        metrics.set_settings(interval, config.policy.pending_flag_after);
        let connections = live::Connections {
            reader: opened.reader,
            api: opened.api,
        };
        let live = Arc::new(Live::new(
            metrics,
            connections,
            opened.worker.view(),
            opened.lock.guard(),
            Arc::clone(&clock),
            interval,
            Arc::new(inbox),
        ));
        live.set_api_token(keys.api_token.clone());
        // Bound and serving before READY=1: a bad address fails start-up (exit 3).
        let http = Arc::new(HttpSlot::default());
        if let Some(addr) = config.http.listen {
            let server = serve(addr, &live)?;
            *http.0.lock().await = Some(server);
        }
        let (webhook_tx, webhook_rx) = watch::channel(opened.webhook_target);
        let webhook_stop = CancellationToken::new();
        let delivery = Delivery {
            ledger: opened.webhook_ledger,
            clock: Arc::clone(&clock),
            jitter: hooks
                .jitter
                .clone()
                .unwrap_or_else(|| Arc::new(rand::random::<f64>)),
            target: webhook_rx,
        };
        let webhook_task = tokio::spawn(delivery.run(webhook_stop.clone()));
        let (poke_tx, poke_rx) = mpsc::channel::<()>(1);
        let scheduler = start_scheduler(&config.worker.sweep_cron, poke_tx).await?;
        info!(
            ledger = %config.ledger,
            lock = %opened.lock,
            gateway = %config.gateway.base_url,
            sweep_cron = %config.worker.sweep_cron,
            node = %config.worker.node_name,
            concurrency = config.worker.concurrency,
            rate_per_second = config.worker.rate_per_second,
            "daemon ready"
        );
        // Config validated (by the caller), ledger open, lock held, scheduler running: ready.
        let notifier = hooks.notify;
        notifier.ready(&format!(
            "ready: ledger {}, waiting for the first sweep",
            config.ledger
        ));
        if let Some(ready) = hooks.on_ready {
            ready();
        }
        let totals = Arc::new(Mutex::new(Totals::default()));
        let deadline = config.worker.shutdown_deadline;
        let node = config.worker.node_name.clone();
        let sweeps = SweepLoop {
            worker: opened.worker,
            ledger: opened.ledger.clone(),
            clock: Arc::clone(&clock),
            config,
            jitter: hooks.jitter,
            on_sweep: hooks.on_sweep.map(Arc::from),
            notifier: notifier.clone(),
            totals: Arc::clone(&totals),
            poke: poke_rx,
            guard: opened.lock.guard(),
            live,
            http: Arc::clone(&http),
            interval,
            webhook: webhook_tx,
            heartbeat_at: Mutex::new(None),
        };
        let parts = Parts {
            lock: opened.lock,
            scheduler,
            ledger: opened.ledger,
            clock,
            notifier,
            deadline,
            totals,
            http,
            webhook_stop,
            webhook_task,
            node,
        };
        Ok(Self { parts, sweeps })
    }

    /// Runs the sweep loop until `shutdown` fires, drains, and stops the parts.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        reload: mpsc::Receiver<Reloader>,
    ) -> Result<(), DaemonError> {
        let Self { parts, sweeps } = self;
        let mut handle = tokio::spawn(sweeps.run(shutdown.clone(), reload));
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
                // The listener closes as the drain begins: a load balancer stops sending,
                // and in-flight scrapes finish.
                parts.http.begin_stop().await;
                parts.drain(&mut handle).await
            }
        };
        let stopped = match outcome {
            Ok(stopped) => stopped,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Aborted at the drain deadline: the drain logged it.
            Err(_) => Ok(()),
        };
        parts.stop().await;
        stopped
    }
}

impl Parts {
    /// Lets in-flight queries finish within the deadline; past it, abandons them and closes
    /// the abandoned sweep's row.
    async fn drain(
        &self,
        handle: &mut JoinHandle<Result<(), DaemonError>>,
    ) -> Result<Result<(), DaemonError>, JoinError> {
        self.notifier.stopping();
        self.webhook_stop.cancel();
        let deadline = self.deadline;
        info!(
            deadline_s = deadline.as_secs_f64(),
            "shutdown requested; draining in-flight queries"
        );
        if let Ok(r) = tokio::time::timeout(deadline, &mut *handle).await {
            return r;
        }
        handle.abort();
        // The aborted sweep cannot finish its own row; close it so no row is left
        // half-written. Its ledger calls that already started complete first: the ledger
        // mutex serialises this after them.
        let at = self.clock.now();
        let closed = self
            .ledger
            .call(move |l| l.close_interrupted_sweeps(at))
            .await;
        if let Err(e) = closed {
            error!(error = %e, "could not close the interrupted sweep row");
        }
        warn!(
            deadline_s = deadline.as_secs_f64(),
            "drain deadline passed; abandoned in-flight queries are not recorded and will be re-queried"
        );
        Ok(Ok(()))
    }

    /// Stops the parts: the HTTP listener and the scheduler, then logs the totals, then
    /// releases the lock.
    async fn stop(mut self) {
        self.http.stop().await;
        self.webhook_stop.cancel();
        if let Err(e) = (&mut self.webhook_task).await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        let _ = self.scheduler.shutdown().await;
        // A clean stop: `status` shows the node stopped, not silent.
        let (node, at) = (self.node.clone(), self.clock.now());
        if let Err(e) = self.ledger.call(move |l| l.node_stopped(&node, at)).await {
            warn!(node = %self.node, error = %e, "could not record the node's stop");
        }
        let t = self
            .totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        info!(
            at = %format_ts(self.clock.now()),
            sweeps = t.sweeps,
            claimed = t.claimed,
            queried = t.queried,
            finalized = t.finalized,
            rescheduled = t.rescheduled,
            failed = t.failed,
            "daemon stopped"
        );
        drop(self.lock);
    }
}

/// Opens the ledger, takes the lock, closes sweep rows a previous run left open and builds
/// the worker, all on the blocking pool (SQLite, the lock file and the TLS set-up block).
async fn open(
    config: &Config,
    keys: &LoadedKeys,
    clock: &Arc<dyn Clock>,
    jitter: Option<JitterSource>,
    metrics: &Arc<Metrics>,
) -> Result<Opened, DaemonError> {
    let (config, keys, clock) = (config.clone(), keys.clone(), Arc::clone(clock));
    let metrics = Arc::clone(metrics);
    let opening = tokio::task::spawn_blocking(move || {
        let target = &config.ledger;
        let mut ledger = ledger::open(target, OpenMode::Create)?;
        let lock = Held::acquire(target, &config.worker.node_name)?;
        // Every attempt the worker's connection records is this node's.
        ledger.set_node(config.worker.node_name.clone());
        ledger.node_started(&NodeStart {
            name: config.worker.node_name.clone(),
            host: config.worker.host.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            at: clock.now(),
        })?;
        // What is already final or recorded when the daemon starts is not logged again (a
        // restart does not repeat lines); what lands from here on is logged once each.
        let watermark = ledger.finalized_watermark()?;
        let resumes_after = ledger.operator_actions_watermark()?;
        let discrepancies = ledger.discrepancy_watermark()?;
        let closed = ledger.close_interrupted_sweeps(clock.now())?;
        if closed > 0 {
            warn!(count = closed, "closed sweep rows a previous run left open");
        }
        let reader = ledger::open(target, OpenMode::Existing)?;
        let api = ledger::open(target, OpenMode::Existing)?;
        let inbox = ledger::open(target, OpenMode::Existing)?;
        let ledger = LedgerHandle::new(ledger);
        let mut worker = build_worker(&config, &keys, ledger.clone(), clock)?.with_metrics(metrics);
        if let Some(j) = jitter {
            worker = worker.with_jitter(j);
        }
        worker.log_finalized_after(watermark);
        worker.watch_resumes_after(resumes_after);
        worker.log_discrepancies_after(discrepancies);
        // Its own connection: a slow webhook write never holds the sweeps' ledger mutex.
        let webhook_ledger = LedgerHandle::new(ledger::open(target, OpenMode::Existing)?);
        let webhook_target =
            crate::webhook::target_for(config.webhook.as_ref(), keys.webhook_secret.as_ref());
        Ok(Opened {
            lock,
            ledger,
            worker,
            reader,
            api,
            inbox,
            webhook_ledger,
            webhook_target,
        })
    });
    match opening.await {
        Ok(opened) => opened,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Binds `addr` and serves the endpoints of `live` on it.
pub(crate) fn serve(addr: std::net::SocketAddr, live: &Arc<Live>) -> Result<Server, HttpError> {
    let app = crate::http::router(AppState {
        live: Arc::clone(live),
    });
    Listener::bind(addr)?.serve(app)
}

/// The sweep interval of `cron` as of `now`: the longest gap between its next few fires (for
/// "every 30 s" that is 30 s; for an uneven list of times, its longest gap). `/healthz` allows
/// twice this between two ticks of the work loop, and the loop ticks at least this often.
/// A cron that never fires again (validated crons always do) counts as one hour.
pub fn sweep_interval(cron: &str, now: Timestamp) -> Duration {
    const FALLBACK: Duration = Duration::from_secs(3600);
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron);
    let Ok(cron) = parsed else {
        return FALLBACK;
    };
    // One fire after another with `find_next_occurrence`: croner's own iterator steps a
    // second past each fire before searching exclusively, and skips every other fire of an
    // every-second cron.
    let mut fires: Vec<Timestamp> = Vec::with_capacity(5);
    let mut after = now;
    while fires.len() < 5 {
        match cron.find_next_occurrence(&after, false) {
            Ok(next) => {
                fires.push(next);
                after = next;
            }
            Err(_) => break,
        }
    }
    fires
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .filter(|gap| !gap.is_zero())
        .max()
        .unwrap_or(FALLBACK)
}

/// Starts the cron safety net. The job only pokes the sweep loop; the loop runs sweeps one at
/// a time, so a sweep can never overlap itself however slow it is. A full channel means a
/// sweep is already queued, and the poke is coalesced.
async fn start_scheduler(cron: &str, poke: mpsc::Sender<()>) -> Result<JobScheduler, DaemonError> {
    let failed = |e: tokio_cron_scheduler::JobSchedulerError| DaemonError::Scheduler(e.to_string());
    let scheduler = JobScheduler::new().await.map_err(failed)?;
    let job = Job::new_async(cron, move |_, _| {
        let poke = poke.clone();
        Box::pin(async move {
            let _ = poke.try_send(());
        })
    })
    .map_err(failed)?;
    scheduler.add(job).await.map_err(failed)?;
    scheduler.start().await.map_err(failed)?;
    Ok(scheduler)
}

/// The one-line `STATUS=` systemd shows in `systemctl status` after a sweep: the counts, rows
/// skipped as unreadable, then what stops querying (a halt, the circuit breaker) or when the
/// next refund is due.
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
    if report.unreadable > 0 {
        line.push_str(&format!(", UNREADABLE ROWS SKIPPED {}", report.unreadable));
    }
    if let Some(h) = &report.halted {
        line.push_str(&format!("; QUERYING HALTED: {h}"));
        if let Some(p) = report.next_probe_at {
            line.push_str(&format!("; probe at {}", format_ts(p)));
        }
    }
    match (report.breaker_open_since, report.next_due_at) {
        (Some(since), next) => {
            line.push_str(&format!(
                "; GATEWAY UNAVAILABLE: querying paused since {}",
                format_ts(since)
            ));
            // While the breaker is open the worker's next due time is its probe (a halt, if
            // any, is probed first and named above).
            if let (None, Some(p)) = (&report.halted, next) {
                line.push_str(&format!("; next probe at {}", format_ts(p)));
            }
        }
        _ if report.halted.is_some() => {}
        (None, Some(next)) => line.push_str(&format!("; next due {}", format_ts(next))),
        (None, None) => line.push_str("; nothing pending"),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Halt, parse_ts};

    #[test]
    fn the_sweep_interval_is_the_longest_gap_between_the_crons_next_fires() {
        let now = parse_ts("2026-11-25T10:00:07.250Z").unwrap();
        let s = Duration::from_secs;
        for (cron, want) in [
            ("*/30 * * * * *", s(30)),
            ("* * * * * *", s(1)),
            ("0 */5 * * * *", s(300)),
            ("0 0 * * * *", s(3600)),
            // Uneven: 0, 10 and 50 past each minute; the longest gap is 40 s.
            ("0,10,50 * * * * *", s(40)),
        ] {
            assert_eq!(sweep_interval(cron, now), want, "{cron}");
        }
        assert_eq!(sweep_interval("not a cron", now), s(3600));
    }

    #[test]
    fn status_line_names_the_halt_the_outage_or_the_next_due_time() {
        let now = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let later = parse_ts("2026-11-25T10:05:00.000Z").unwrap();
        let counts = "last sweep 2026-11-25T10:00:00.000Z: claimed 3, finalized 1, \
                      rescheduled 2, flagged 0, failed 1";
        let report = SweepReport {
            claimed: 3,
            finalized: 1,
            rescheduled: 2,
            failed: 1,
            ..SweepReport::default()
        };
        let halted = SweepReport {
            halted: Some(Halt::ConfigError {
                code: "SIGN_VERIFY_FAILED".into(),
            }),
            next_probe_at: Some(later),
            next_due_at: Some(now),
            ..report.clone()
        };
        let due = SweepReport {
            next_due_at: Some(later),
            ..report.clone()
        };
        let since = parse_ts("2026-11-25T09:58:00.000Z").unwrap();
        let paused = SweepReport {
            breaker_open_since: Some(since),
            next_due_at: Some(later),
            ..report.clone()
        };
        let paused_and_halted = SweepReport {
            breaker_open_since: Some(since),
            ..halted.clone()
        };
        let skipped = SweepReport {
            unreadable: 2,
            ..due.clone()
        };
        let cases = [
            (
                halted,
                "; QUERYING HALTED: configuration rejected by Checus (SIGN_VERIFY_FAILED); \
                 probe at 2026-11-25T10:05:00.000Z",
            ),
            (
                paused,
                "; GATEWAY UNAVAILABLE: querying paused since 2026-11-25T09:58:00.000Z; \
                 next probe at 2026-11-25T10:05:00.000Z",
            ),
            (
                paused_and_halted,
                "; QUERYING HALTED: configuration rejected by Checus (SIGN_VERIFY_FAILED); \
                 probe at 2026-11-25T10:05:00.000Z; \
                 GATEWAY UNAVAILABLE: querying paused since 2026-11-25T09:58:00.000Z",
            ),
            (
                skipped,
                ", UNREADABLE ROWS SKIPPED 2; next due 2026-11-25T10:05:00.000Z",
            ),
            (due, "; next due 2026-11-25T10:05:00.000Z"),
            (report, "; nothing pending"),
        ];
        for (report, tail) in cases {
            assert_eq!(sweep_status(&report, now), format!("{counts}{tail}"));
        }
    }
}
