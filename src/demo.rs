//! `checus-reconciler demo`: the whole product in one command. A fresh ledger, a few hundred
//! refunds with scripted outcomes, the simulated gateway on 127.0.0.1, and the real daemon with
//! short timings, run until every refund is final or flagged; then the ledger is checked
//! against the sandbox's truth. The sandbox runs in its realistic mode (every answer form the
//! world sends, `PARAMS_INVALID` for a few refunds), seeded with the demo's seed. Keys are the
//! committed INSECURE test keys, used here only.
//!
//! Both methods of the refund guide run together: once the daemon is ready, the sandbox
//! finalizes each refund whose script ends final and POSTs its signed notification to the
//! daemon's `http.notify_path` (about one in ten never sent, one in ten with its first attempt
//! lost and redelivered on Checus's schedule, compressed [`NOTIFY_TIME_SCALE`] times); the
//! daemon's polling finds the rest. The summary says how many came each way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{
    Config, HttpSettings, KeySource, KeySources, LoadedKeys, LogFormat, LogSettings, WorkerSettings,
};
use crate::domain::{
    Clock, NewRefund, OutRefundNo, Policy, RefundStatus, Schedule, SystemClock, Timestamp,
    format_ts,
};
use crate::gateway::{GatewayKey, GatewaySettings, MerchantKey};
use crate::ledger::{
    self, Ledger, LedgerError, LedgerTarget, ListFilter, NotificationRecord, OpenMode,
};
use crate::sandbox::notify::NotifySender;
use crate::sandbox::{self, RefundScript, Sandbox, SandboxOptions};

/// Demo parameters.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Parent folder; each run gets a fresh `run-<time>/` inside it.
    pub dir: PathBuf,
    /// How many refunds to seed.
    pub refunds: usize,
    /// Seed for the scripted outcomes (printed, so a run can be repeated).
    pub seed: u64,
    /// Give up after this long.
    pub timeout: Duration,
    /// Where the daemon serves `/metrics`, `/healthz`, `/readyz` and the notifications the
    /// sandbox sends while it runs (`None`: a free loopback port).
    pub listen: Option<std::net::SocketAddr>,
}

/// Why the demo could not run (a mismatch is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder the demo could not create or write.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Ledger trouble.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The daemon failed to start.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    /// The sandbox failed to start.
    #[error("sandbox: {0}")]
    Sandbox(std::io::Error),
    /// The run did not settle in time.
    #[error("demo did not settle within {0:?}")]
    Timeout(Duration),
    /// A row of the demo's own ledger could not be read.
    #[error("{0}")]
    Unreadable(crate::ledger::UnreadableRow),
}

/// What the demo found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoReport {
    /// The ledger file of this run.
    pub ledger: PathBuf,
    /// The seed of the scripted outcomes; the same seed replays the same run.
    pub seed: u64,
    /// Refunds seeded.
    pub refunds: usize,
    /// Final counts by status.
    pub by_status: BTreeMap<String, u64>,
    /// Pending refunds flagged for review.
    pub flagged: u64,
    /// Refunds finalized by a Checus notification rather than a query.
    pub finalized_by_notification: u64,
    /// Refunds finalized by the daemon's own query.
    pub finalized_by_query: u64,
    /// Notifications the sandbox gateway sent (attempts, lost ones included).
    pub notification_attempts: u64,
    /// Refunds whose notification the daemon acknowledged.
    pub notifications_acked: u64,
    /// Discrepancies recorded (conflicting notifications sent on purpose).
    pub discrepancies: u64,
    /// Queries sent to the sandbox.
    pub queries: u64,
    /// Refunds whose ledger outcome disagrees with the sandbox's truth (must be empty).
    pub mismatches: Vec<String>,
    /// Wall-clock duration of the whole run, in milliseconds.
    pub elapsed_ms: u128,
}

impl DemoReport {
    /// True when the ledger matches the sandbox's truth for every refund.
    pub fn matches_truth(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// The demo's compression of Checus's notification retry schedule: the 30 s retry after
/// 0.3 s, the 5 min one after 3 s.
pub const NOTIFY_TIME_SCALE: f64 = 0.01;

/// The short timings the demo runs with: the real policy, compressed from hours to seconds.
pub fn demo_policy() -> Policy {
    let s = Duration::from_secs;
    Policy {
        schedule: Schedule {
            // As in production (minutes there), the grace window lets a notification arrive
            // before the first query; polling finds what was never notified.
            grace: s(2),
            steps: vec![
                Duration::from_millis(300),
                Duration::from_millis(600),
                s(1),
                s(2),
            ],
            steady: s(2),
            retry: Duration::from_millis(400),
            jitter: 0.1,
        },
        // Long enough that every scripted timeline that does end (at most four pending
        // answers plus transient faults) ends before its refund could be flagged.
        pending_flag_after: s(20),
        unknown_flag_after: s(5),
        confirm_after: s(1),
        halt_recheck: s(2),
        halt_after_rejected_refunds: Policy::default().halt_after_rejected_refunds,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The refunds of one demo run and their scripted outcomes, by refund number.
type Scripts = Vec<(String, RefundScript)>;

/// Runs the demo end to end. `shutdown` cuts it short (Ctrl-C).
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<DemoReport, DemoError> {
    let started = std::time::Instant::now();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let run_dir = opts
        .dir
        .join(format!("run-{}", clock.now().format("%Y%m%dT%H%M%S%.3fZ")));
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    let ledger_path = run_dir.join("ledger.sqlite");

    let mut options = SandboxOptions::insecure_test(Arc::clone(&clock));
    options.realism = Some(sandbox::Realism::world(opts.seed));
    let sb = sandbox::start(options).await.map_err(DemoError::Sandbox)?;
    let scripts = sandbox::mixed_scripts(opts.refunds, opts.seed, "DEMO-");
    seed_ledger(&ledger_path, &sb, &scripts, clock.now())?;

    // The sandbox must know the notify URL before the daemon binds its listener.
    let listen = match opts.listen {
        Some(addr) => addr,
        None => free_loopback_port().map_err(io(&run_dir))?,
    };
    let config = demo_config(&ledger_path, &sb, listen);
    let notify_url = format!("http://{listen}{}", config.http.notify_path);
    let sender = Arc::new(
        NotifySender::new(
            notify_url,
            sandbox::test_keys::insecure_gateway_private(),
            sandbox::TEST_MERCHANT_NO,
            NOTIFY_TIME_SCALE,
            Arc::clone(&clock),
        )
        .map_err(|e| DemoError::Sandbox(std::io::Error::other(e)))?,
    );
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let realism = sandbox::Realism::world(opts.seed);
    // Once the daemon listens, Checus finalizes and notifies (in the background).
    let notifying = async {
        if ready_rx.await.is_err() {
            return Vec::new();
        }
        scripts
            .iter()
            .filter_map(|(no, _)| sb.notify(&sender, no, realism.delivery_for(no)))
            .collect::<Vec<_>>()
    };
    let settling = run_until_settled(
        config,
        demo_keys(),
        &clock,
        &shutdown,
        opts.timeout,
        ready_tx,
    );
    let (settled, deliveries) = tokio::join!(settling, notifying);
    let (attempts, acked) = delivery_totals(deliveries).await;
    if !settled? {
        sb.shutdown().await;
        return Err(DemoError::Timeout(opts.timeout));
    }

    let ledger = ledger::open(&LedgerTarget::sqlite(&ledger_path), OpenMode::Existing)?;
    send_conflicting_notification(&ledger, &scripts, clock.now())?;
    let mut report = check_against_truth(&ledger, &sb, clock.now())?;
    report.ledger = ledger_path;
    report.seed = opts.seed;
    report.notification_attempts = attempts;
    report.notifications_acked = acked;
    sb.shutdown().await;
    report.elapsed_ms = started.elapsed().as_millis();
    tracing::info!(at = %format_ts(clock.now()), "demo finished");
    Ok(report)
}

/// Seeds the ledger as the merchant's app would: one row per refund issued. Also hands the
/// scripts to the sandbox.
fn seed_ledger(
    ledger_path: &Path,
    sb: &Sandbox,
    scripts: &Scripts,
    now: Timestamp,
) -> Result<(), DemoError> {
    let mut ledger = ledger::open(&LedgerTarget::sqlite(ledger_path), OpenMode::Create)?;
    let rows: Vec<NewRefund> = scripts
        .iter()
        .map(|(no, script)| NewRefund {
            out_refund_no: OutRefundNo::parse(no).expect("generated refund numbers are valid"),
            refund_trade_no: Some(script.refund_trade_no.clone()),
            out_trade_no: Some(script.out_trade_no.clone()),
            amount: script.amount,
            currency: script.currency,
            status: RefundStatus::Pending,
            created_at: now,
        })
        .collect();
    ledger.import(&rows, &mut |_| {})?;
    sb.script_many(scripts.iter().cloned())
        .expect("generated scripts are valid");
    Ok(())
}

/// The compiled-in INSECURE test keys, parsed (what [`KeySource::Embedded`] stands for).
fn demo_keys() -> LoadedKeys {
    LoadedKeys {
        merchant: Arc::new(
            MerchantKey::from_text(sandbox::test_keys::INSECURE_MERCHANT_PRIVATE_B64)
                .expect("committed test key parses"),
        ),
        gateway: Arc::new(
            GatewayKey::from_text(sandbox::test_keys::INSECURE_GATEWAY_PUBLIC_B64)
                .expect("committed test key parses"),
        ),
        webhook_secret: None,
        warnings: Vec::new(),
        api_token: None,
    }
}

/// Runs the real daemon until nothing is left to do (every refund final, or pending and
/// flagged), `shutdown` fires, or `timeout` passes. False when it timed out unsettled.
async fn run_until_settled(
    config: Config,
    keys: LoadedKeys,
    clock: &Arc<dyn Clock>,
    shutdown: &CancellationToken,
    timeout: Duration,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<bool, DemoError> {
    let daemon_stop = shutdown.child_token();
    let settled = CancellationToken::new();
    let on_sweep = {
        let target = config.ledger.clone();
        let stop = daemon_stop.clone();
        let settled = settled.clone();
        let clock = Arc::clone(clock);
        move |_: &crate::worker::SweepReport| {
            let open = ledger::open(&target, OpenMode::Existing)
                .and_then(|l| l.status(clock.now()))
                .map(|s| s.pending.saturating_sub(s.flagged));
            if let Ok(0) = open {
                settled.cancel();
                stop.cancel();
            }
        }
    };
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let hooks = crate::daemon::Hooks {
        on_sweep: Some(Box::new(on_sweep)),
        on_ready: Some(Box::new(move || {
            let _ = ready.send(());
        })),
        ..Default::default()
    };
    let daemon = crate::daemon::run(
        config,
        keys,
        Arc::clone(clock),
        daemon_stop.clone(),
        reload_rx,
        hooks,
    );
    let timed_out = tokio::select! {
        r = daemon => { r?; false }
        () = tokio::time::sleep(timeout) => { daemon_stop.cancel(); true }
    };
    Ok(!timed_out || settled.is_cancelled())
}

/// Attempts made and refunds acknowledged over the sandbox's deliveries; those still waiting
/// for a retry when the demo settled are stopped.
async fn delivery_totals(
    deliveries: Vec<tokio::task::JoinHandle<crate::sandbox::notify::Delivered>>,
) -> (u64, u64) {
    let (mut attempts, mut acked) = (0, 0);
    for d in deliveries {
        if !d.is_finished() {
            d.abort();
        }
        if let Ok(d) = d.await {
            attempts += u64::from(d.attempts);
            acked += u64::from(d.acked);
        }
    }
    (attempts, acked)
}

/// A loopback address with a port free right now, for the daemon's listener (the sandbox
/// must know the notify URL before the daemon binds it).
fn free_loopback_port() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// After the fact, the merchant's app records a late, conflicting notification for one
/// refund a query finalized successfully, through the SQL contract (the same-host
/// alternative): it must be recorded as a discrepancy, not applied.
fn send_conflicting_notification(
    ledger: &Ledger,
    scripts: &Scripts,
    now: Timestamp,
) -> Result<(), DemoError> {
    let by_query = ledger.list(&ListFilter {
        limit: usize::MAX,
        ..Default::default()
    })?;
    let conflicting = by_query.rows.iter().find_map(|row| {
        (row.status == RefundStatus::Success
            && row.final_source == Some(crate::domain::FinalSource::Query))
        .then(|| {
            scripts
                .iter()
                .find(|(no, _)| no == row.out_refund_no.as_str())
        })
        .flatten()
    });
    if let Some((no, script)) = conflicting {
        ledger.record_notification(&NotificationRecord {
            out_refund_no: OutRefundNo::parse(no).expect("generated refund numbers are valid"),
            status: crate::domain::FinalStatus::Failed,
            refund_trade_no: Some(script.refund_trade_no.clone()),
            amount: script.amount,
            currency: script.currency,
            refund_finish_time: Some(now),
            notify_time: now,
        })?;
    }
    Ok(())
}

/// Checks every refund in the ledger against the sandbox's truth. The caller fills in the
/// ledger path, the seed and the elapsed time.
fn check_against_truth(
    ledger: &Ledger,
    sb: &Sandbox,
    now: Timestamp,
) -> Result<DemoReport, DemoError> {
    let read = ledger.list(&ListFilter {
        limit: usize::MAX,
        ..Default::default()
    })?;
    if let Some(bad) = read.unreadable.into_iter().next() {
        return Err(DemoError::Unreadable(bad));
    }
    let rows = read.rows;
    let mut report = DemoReport {
        ledger: PathBuf::new(),
        seed: 0,
        refunds: rows.len(),
        by_status: BTreeMap::new(),
        flagged: 0,
        finalized_by_notification: 0,
        finalized_by_query: 0,
        notification_attempts: 0,
        notifications_acked: 0,
        discrepancies: ledger.status(now)?.unresolved_discrepancies,
        queries: sb.stats().requests,
        mismatches: Vec::new(),
        elapsed_ms: 0,
    };
    for row in &rows {
        *report.by_status.entry(row.status.to_string()).or_default() += 1;
        match row.final_source {
            Some(crate::domain::FinalSource::Notification) => report.finalized_by_notification += 1,
            Some(crate::domain::FinalSource::Query) => report.finalized_by_query += 1,
            _ => {}
        }
        let truth = sb.truth(row.out_refund_no.as_str());
        let ok = match truth {
            Some(t) if t.is_final() => row.status == t,
            // Never final at the gateway: the refund must be pending and flagged for a human.
            _ => row.status == RefundStatus::Pending && row.review_flag,
        };
        if row.status == RefundStatus::Pending && row.review_flag {
            report.flagged += 1;
        }
        if !ok {
            report.mismatches.push(format!(
                "{}: ledger {} (flagged: {}), sandbox truth {}",
                row.out_refund_no,
                row.status,
                row.review_flag,
                truth.map_or("never final".to_string(), |t| t.to_string())
            ));
        }
    }
    Ok(report)
}

/// The daemon's config for the demo. Its keys are the compiled-in INSECURE test keys, which
/// `run` parses and hands to the daemon as [`LoadedKeys`]; `KeySource::Embedded` says so.
fn demo_config(ledger_path: &Path, sb: &Sandbox, listen: std::net::SocketAddr) -> Config {
    let mut gateway = GatewaySettings::new(
        sb.base_url(),
        sandbox::TEST_APP_ID,
        sandbox::TEST_MERCHANT_NO,
    );
    gateway.connect_timeout = Duration::from_secs(2);
    gateway.request_timeout = Duration::from_secs(2);
    Config {
        ledger: LedgerTarget::sqlite(ledger_path),
        gateway: gateway
            .validate()
            .expect("the sandbox's loopback URL and test ids are valid settings"),
        keys: KeySources {
            merchant_private_key: KeySource::Embedded {
                name: "INSECURE_MERCHANT_PRIVATE_B64",
            },
            gateway_public_key: KeySource::Embedded {
                name: "INSECURE_GATEWAY_PUBLIC_B64",
            },
            webhook_secret: None,
        },
        policy: demo_policy(),
        worker: WorkerSettings {
            sweep_cron: "* * * * * *".to_owned(),
            concurrency: 16,
            rate_per_second: 400.0,
            batch_size: 1000,
            shutdown_deadline: Duration::from_secs(5),
            node_name: crate::domain::NodeName::parse("demo").expect("a valid node name"),
            ..WorkerSettings::default()
        },
        log: LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
        },
        http: HttpSettings {
            listen: Some(listen),
            ..HttpSettings::default()
        },
        webhook: None,
    }
}
