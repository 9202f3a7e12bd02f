//! The running daemon as the HTTP endpoints see it ([`Live`]): the work loop's ticks
//! (`/healthz`), the live findings and the lock and ledger checks (`/readyz`), and the metrics
//! page with its ledger gauges (`/metrics`).
//!
//! One list of findings: the halt and the open breaker are the same [`Finding`]s `status`
//! reports from the ledger (`Finding::code()` is the shared code), taken here from the running
//! worker so they are current to the moment; `/readyz` answers with them and the
//! `halted`/`breaker_open` gauges are set from them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

use super::lock::Guard;
use crate::domain::{Clock, Timestamp};
use crate::http::ApiToken;
use crate::http::notify::Inbox;
use crate::ledger::{Finding, Ledger, LedgerError, LedgerGauges};
use crate::metrics::Metrics;
use crate::worker::WorkerView;

/// How long a ledger gauge read serves scrapes: Prometheus scrapes every 15 s or so, and a
/// burst of scrapers (two Prometheus replicas, a curl) shares one read.
pub const GAUGE_CACHE: Duration = Duration::from_secs(2);

/// A reason `/readyz` answers 503, with the code scripts match on: a [`Finding::code`]
/// (`config_error`, `clock_skew`, `gateway_unavailable`), or one only a running daemon can
/// see: `lock_lost` (the lock file or the ledger is no longer the one it opened; the daemon
/// stops at its next sweep) and `ledger_unavailable` (the ledger cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReady {
    /// The stable code.
    pub code: &'static str,
    /// What it means here, for people.
    pub detail: String,
}

/// The work loop's ticks, for `/healthz`.
#[derive(Debug)]
pub struct Health {
    /// Since the loop last ticked.
    pub since_tick: Duration,
    /// Twice the sweep interval.
    pub limit: Duration,
}

impl Health {
    /// True while the loop ticked within the limit.
    pub fn is_healthy(&self) -> bool {
        self.since_tick <= self.limit
    }
}

/// The running daemon's view, shared by the sweep loop (which ticks it and swaps the worker
/// on a reload) and the HTTP handlers.
pub struct Live {
    /// Shared with the worker, which counts into it.
    metrics: Arc<Metrics>,
    /// A connection of its own, so a scrape never waits for the worker's ledger calls; used on
    /// the blocking pool only.
    reader: Arc<Mutex<Ledger>>,
    /// The latest gauge read and when it was taken (a tokio mutex: concurrent scrapes wait
    /// for one read instead of each reading).
    gauges: tokio::sync::Mutex<Option<(Instant, Result<LedgerGauges, String>)>>,
    /// The worker in charge; a SIGHUP reload replaces it.
    worker: Mutex<WorkerView>,
    /// The lock file and the ledger as opened.
    guard: Guard,
    /// The ages of gauges and findings.
    clock: Arc<dyn Clock>,
    /// When the work loop last ticked.
    last_tick: Mutex<Instant>,
    /// The sweep interval the cron gives (see [`super::sweep_interval`]).
    interval: Duration,
    /// The refunds API's own connection, used on the blocking pool only: a request waits for
    /// no worker call or scrape, only for SQLite's lock (at most [`crate::ledger::BUSY_TIMEOUT`],
    /// inside the request timeout, so a busy ledger is a 503, not a 408).
    api_ledger: Arc<Mutex<Ledger>>,
    /// The refunds API's token (`None`: the API is off); a reload replaces it.
    api_token: Mutex<Option<Arc<ApiToken>>>,
    /// Checus refund notifications: verification and the writer that records them.
    inbox: Arc<Inbox>,
}

/// The ledger connections the HTTP endpoints read and write through, each its own so that
/// none waits behind the worker's calls.
pub(super) struct Connections {
    /// The gauges' and findings' reads.
    pub(super) reader: Ledger,
    /// The refunds API's reads and writes.
    pub(super) api: Ledger,
}

impl Live {
    /// The view of a daemon that just started (its loop counts as having ticked now).
    pub(super) fn new(
        metrics: Arc<Metrics>,
        connections: Connections,
        worker: WorkerView,
        guard: Guard,
        clock: Arc<dyn Clock>,
        interval: Duration,
        inbox: Arc<Inbox>,
    ) -> Self {
        let Connections { reader, api } = connections;
        Self {
            metrics,
            reader: Arc::new(Mutex::new(reader)),
            gauges: tokio::sync::Mutex::new(None),
            worker: Mutex::new(worker),
            guard,
            clock,
            last_tick: Mutex::new(Instant::now()),
            interval,
            api_ledger: Arc::new(Mutex::new(api)),
            api_token: Mutex::new(None),
            inbox,
        }
    }

    /// Puts the (re)loaded `http.api_token` in charge (`None`: the API is off).
    pub(super) fn set_api_token(&self, token: Option<Arc<ApiToken>>) {
        *self.api_token.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// The refunds API's token, if the API is on.
    pub fn api_token(&self) -> Option<Arc<ApiToken>> {
        self.api_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `f` on the refunds API's connection, on the blocking pool.
    pub async fn api_call<R, F>(&self, f: F) -> Result<R, LedgerError>
    where
        F: FnOnce(&Ledger) -> Result<R, LedgerError> + Send + 'static,
        R: Send + 'static,
    {
        let ledger = Arc::clone(&self.api_ledger);
        let joined = tokio::task::spawn_blocking(move || {
            // Every ledger method is one transaction, rolled back on unwind: a panic leaves
            // the connection usable.
            f(&ledger.lock().unwrap_or_else(|p| p.into_inner()))
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The daemon's clock (the API's default `createdAt`).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The work loop went round once (an event, a sweep making progress, an idle tick).
    pub(super) fn ticked(&self) {
        *self.last_tick.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// The notification inbox (`POST http.notify_path`).
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// The registry the worker and the sweep loop count into.
    pub(super) fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// A reload put another worker in charge.
    pub(super) fn set_worker(&self, worker: WorkerView) {
        *self.worker.lock().unwrap_or_else(|p| p.into_inner()) = worker;
    }

    fn worker(&self) -> WorkerView {
        self.worker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The work loop's liveness.
    pub fn health(&self) -> Health {
        let last = *self.last_tick.lock().unwrap_or_else(|p| p.into_inner());
        Health {
            since_tick: last.elapsed(),
            limit: self.interval.saturating_mul(2),
        }
    }

    /// What stops querying now, as the findings `status` reports from the ledger: the halt,
    /// then the open breaker (the order of [`Finding`]'s variants).
    pub fn findings(&self, now: Timestamp) -> Vec<Finding> {
        let worker = self.worker();
        let mut findings = Vec::new();
        if let Some(h) = worker.halted() {
            findings.push(Finding::Halted {
                code: h.halt.code(),
                reason: Some(h.halt.to_string()),
            });
        }
        if let Some(since) = worker.breaker_open_since() {
            findings.push(Finding::GatewayUnavailable {
                since,
                paused_s: (now - since).num_seconds().max(0),
            });
        }
        findings
    }

    /// Why the daemon is not ready; empty when it is.
    pub async fn readiness(&self) -> Vec<NotReady> {
        let mut reasons = Vec::new();
        if let Err(e) = self.ledger_gauges().await {
            reasons.push(NotReady {
                code: "ledger_unavailable",
                detail: e,
            });
        }
        // A server that cannot be reached is `ledger_unavailable` above, not a lost lock.
        if let Err(e) = self.guard.check().await
            && !e.is_transient()
        {
            reasons.push(NotReady {
                code: "lock_lost",
                detail: e.to_string(),
            });
        }
        for f in self.findings(self.clock.now()) {
            let detail = match &f {
                Finding::Halted { reason, .. } => reason.clone().unwrap_or_default(),
                Finding::GatewayUnavailable { paused_s, .. } => {
                    format!("gateway unavailable; querying paused for {paused_s} s")
                }
                _ => String::new(),
            };
            reasons.push(NotReady {
                code: f.code(),
                detail,
            });
        }
        reasons
    }

    /// The `/metrics` page: ledger gauges (at most [`GAUGE_CACHE`] old), live gauges from the
    /// findings, and the counters.
    pub async fn metrics_page(&self) -> String {
        let now = self.clock.now();
        if let Ok(g) = self.ledger_gauges().await {
            self.metrics.set_ledger(&g, now);
        }
        let worker = self.worker();
        self.metrics
            .set_live(&self.findings(now), worker.current_rate());
        self.metrics.render()
    }

    /// The ledger gauges, read at most every [`GAUGE_CACHE`]; the error's text when the
    /// ledger cannot be read (logged once per read).
    async fn ledger_gauges(&self) -> Result<LedgerGauges, String> {
        let mut cached = self.gauges.lock().await;
        if let Some((at, read)) = cached.as_ref()
            && at.elapsed() < GAUGE_CACHE
        {
            return read.clone();
        }
        let reader = Arc::clone(&self.reader);
        let now = self.clock.now();
        let read = tokio::task::spawn_blocking(move || {
            let ledger = reader.lock().unwrap_or_else(|p| p.into_inner());
            ledger.gauges(now)
        })
        .await;
        let read = match read {
            Ok(r) => r.map_err(|e| crate::logging::one_line_chain(&e)),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if let Err(e) = &read {
            warn!(error = %e, "metrics: cannot read the ledger gauges");
        }
        *cached = Some((Instant::now(), read.clone()));
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_while_the_last_tick_is_within_twice_the_interval() {
        let s = Duration::from_secs;
        let limit = s(60);
        for (since_tick, healthy) in [(s(0), true), (s(59), true), (s(60), true), (s(61), false)] {
            assert_eq!(
                Health { since_tick, limit }.is_healthy(),
                healthy,
                "{since_tick:?}"
            );
        }
    }
}
