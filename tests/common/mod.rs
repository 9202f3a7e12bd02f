//! Shared test harness: a temp ledger, the sandbox on 127.0.0.1:0 and a worker wired to it,
//! all on one manual clock so hours of schedule pass instantly.
#![allow(dead_code)]

pub mod audit;
pub mod fixtures;
pub mod pg;
pub mod proc;
pub mod tools;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use checus_reconciler::config::WorkerSettings;
use checus_reconciler::domain::{
    Clock, Currency, ManualClock, NewRefund, OutRefundNo, Policy, RefundStatus, Timestamp, parse_ts,
};
use checus_reconciler::gateway::{GatewayClient, GatewayKey, GatewaySettings, MerchantKey};
use checus_reconciler::ledger::{Ledger, RefundDetail, SqliteLedger};
use checus_reconciler::sandbox::{self, RefundScript, Sandbox, SandboxOptions, Step};
use checus_reconciler::worker::{LedgerHandle, SweepReport, Worker};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

pub const T0: &str = "2026-11-25T10:00:00.000Z";

pub fn ts(s: &str) -> Timestamp {
    parse_ts(s).unwrap()
}

/// The sandbox's view of time: the shared manual clock plus a skew a test can set.
pub struct SkewedClock {
    base: Arc<ManualClock>,
    skew_ms: std::sync::atomic::AtomicI64,
}

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        self.base.now()
            + chrono::TimeDelta::milliseconds(
                self.skew_ms.load(std::sync::atomic::Ordering::SeqCst),
            )
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sandbox_clock: Arc<SkewedClock>,
    pub ledger_path: PathBuf,
    pub clock: Arc<ManualClock>,
    pub sandbox: Sandbox,
    pub worker: Worker,
    pub policy: Policy,
}

pub fn merchant_key() -> Arc<MerchantKey> {
    Arc::new(MerchantKey::from_text(sandbox::test_keys::INSECURE_MERCHANT_PRIVATE_B64).unwrap())
}

pub fn gateway_key() -> Arc<GatewayKey> {
    Arc::new(GatewayKey::from_text(sandbox::test_keys::INSECURE_GATEWAY_PUBLIC_B64).unwrap())
}

pub fn settings_for(sb: &Sandbox) -> GatewaySettings {
    let mut s = GatewaySettings::new(
        sb.base_url(),
        sandbox::TEST_APP_ID.to_owned(),
        sandbox::TEST_MERCHANT_NO.to_owned(),
    );
    s.request_timeout = Duration::from_secs(2);
    s.connect_timeout = Duration::from_secs(1);
    s
}

pub fn worker_settings() -> WorkerSettings {
    WorkerSettings {
        sweep_cron: "*/30 * * * * *".into(),
        concurrency: 4,
        rate_per_second: 1000.0,
        batch_size: 500,
        shutdown_deadline: Duration::from_secs(5),
        node_name: checus_reconciler::domain::NodeName::parse("test-node").unwrap(),
        ..WorkerSettings::default()
    }
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_settings(|_| {}).await
    }

    /// A harness whose gateway settings are adjusted by `tweak` (e.g. a wrong app id).
    pub async fn with_settings(tweak: impl FnOnce(&mut GatewaySettings)) -> Self {
        let clock = Arc::new(ManualClock::new(ts(T0)));
        let sandbox_clock = Arc::new(SkewedClock {
            base: clock.clone(),
            skew_ms: 0.into(),
        });
        let sb = sandbox::start(SandboxOptions::insecure_test(
            sandbox_clock.clone() as Arc<dyn Clock>
        ))
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger_path = dir.path().join("ledger.sqlite");
        let ledger = SqliteLedger::open(&ledger_path).unwrap();
        let mut settings = settings_for(&sb);
        tweak(&mut settings);
        let client = GatewayClient::new(
            settings.validate().unwrap(),
            merchant_key(),
            gateway_key(),
            clock.clone(),
        )
        .unwrap();
        let policy = Policy::default();
        let worker = Worker::new(
            LedgerHandle::new(ledger.into()),
            client,
            policy.clone(),
            worker_settings(),
            clock.clone(),
        )
        .with_jitter(Arc::new(|| 0.5));
        Self {
            dir,
            sandbox_clock,
            ledger_path,
            clock,
            sandbox: sb,
            worker,
            policy,
        }
    }

    /// Another worker on the same ledger and sandbox (as a SIGHUP reload would build).
    pub fn new_worker(&self, tweak: impl FnOnce(&mut GatewaySettings)) -> Worker {
        let mut settings = settings_for(&self.sandbox);
        tweak(&mut settings);
        let client = GatewayClient::new(
            settings.validate().unwrap(),
            merchant_key(),
            gateway_key(),
            self.clock.clone(),
        )
        .unwrap();
        Worker::new(
            LedgerHandle::new(self.ledger()),
            client,
            self.policy.clone(),
            worker_settings(),
            self.clock.clone(),
        )
        .with_jitter(Arc::new(|| 0.5))
    }

    /// Adds a pending refund created now, and scripts the sandbox for it.
    pub fn refund(&self, no: &str, steps: Vec<Step>) -> RefundScript {
        let script = RefundScript {
            refund_trade_no: format!("T-{no}"),
            out_trade_no: format!("O-{no}"),
            amount: Decimal::from_str("12.50").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            steps,
        };
        self.sandbox.script(no, script.clone()).unwrap();
        self.ledger()
            .insert_refund(&NewRefund {
                out_refund_no: OutRefundNo::parse(no).unwrap(),
                refund_trade_no: None,
                out_trade_no: Some(script.out_trade_no.clone()),
                amount: script.amount,
                currency: script.currency,
                status: RefundStatus::Pending,
                created_at: self.clock.now(),
            })
            .unwrap();
        script
    }

    /// A second connection, as another process would have.
    pub fn ledger(&self) -> Ledger {
        SqliteLedger::open_existing(&self.ledger_path)
            .unwrap()
            .into()
    }

    pub fn detail(&self, no: &str) -> RefundDetail {
        self.ledger()
            .show(&OutRefundNo::parse(no).unwrap())
            .unwrap()
            .expect("refund exists")
    }

    pub async fn sweep(&self) -> SweepReport {
        self.worker.sweep(&CancellationToken::new()).await.unwrap()
    }

    pub fn clock_now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sets how far ahead of our clock the gateway's clock runs.
    pub fn set_gateway_skew(&self, skew: Duration) {
        self.sandbox_clock
            .skew_ms
            .store(skew.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Advances to the refund's next_query_at (or by `grace` if it was never scheduled) and sweeps.
    pub async fn step(&self, no: &str) -> SweepReport {
        let d = self.detail(no);
        match d.refund.next_query_at {
            Some(next) => self.clock.set(next.max(self.clock.now())),
            None => self.advance(self.policy.schedule.grace),
        }
        self.sweep().await
    }

    /// Waits (by polling the sandbox's counter, never a fixed sleep) until `no` was queried `n` times.
    pub async fn wait_for_queries(&self, no: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.sandbox.queries_for(no) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sandbox never saw query {n} for {no}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
