//! A protocol-faithful simulated Checus gateway on loopback, for tests, the demo and
//! benchmarks. It serves `POST /aggregate-pay/api/gateway/refundQuery` over a small HTTP/1.1
//! server written directly on tokio (byte-level control is what makes RSTs, hangs and trickled
//! bodies possible), verifies signed requests as Checus does, answers each scripted refund
//! from its timeline, and injects faults on demand.
//!
//! Choices where the fact sheet is silent ([?] items), all visible to clients:
//! - Error answers are HTTP 200 `{"code","msg"}` **without** a `sign` header, the strictest
//!   case for a client (fact sheet §8.9); [`SandboxOptions::sign_error_answers`] signs them too.
//! - An unscripted refund number answers `ORDER_NOT_EXIST`.
//! - A query naming both `outRefundNo` and `refundTradeNo` must name the same refund, else
//!   `ORDER_NOT_EXIST`.
//! - `requestTime` exactly 2 minutes off is still accepted; anything further is not.
//! - `refundFinishTime` is the sandbox clock's time at the first answer that reported the final
//!   status, and is absent while pending.
//! - `version` 1.1 to 1.5 are accepted: the SDKs and docs send all of them.
//!
//! Those are the defaults. The world varies more, and so can the sandbox: every answer's form
//! can be switched per refund and per step ([`Switch`], [`Variance`], the `vary:` step), and
//! the realistic mode ([`Realism`], [`Sandbox::set_realism`]) draws a form for every refund
//! from a seed: amounts as strings or with trailing zeros, amount or currency absent,
//! `refundFinishTime` absent, empty, in `+08:00` or with no offset, signed or unsigned error
//! answers, business codes on HTTP 4xx/5xx, `REFUND_NO_INVALID` for an unknown refund, other
//! key orders and whitespace, and `PARAMS_INVALID` for some refunds.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use checus_reconciler::domain::SystemClock;
//! use checus_reconciler::sandbox::{self, RefundScript, SandboxOptions, Step};
//!
//! let sandbox = sandbox::start(SandboxOptions::insecure_test(Arc::new(SystemClock))).await?;
//! sandbox
//!     .script("R1", RefundScript::usd("R1", vec![Step::Pending, Step::Success]))
//!     .expect("valid script");
//! println!("{}", sandbox.base_url());
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

pub mod http;
pub mod notify;
pub mod protocol;
pub mod script;
mod server;
mod state;
pub mod test_keys;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::domain::{Clock, InvalidValue, RefundStatus};
use crate::gateway::{GatewayKey, MerchantKey};

pub use protocol::{Switch, Variance};
pub use script::{
    DEFAULT_TRICKLE_INTERVAL, Fault, Realism, RefundScript, ScriptError, Step, mixed_scripts,
    parse_scripts_jsonl, script_to_jsonl,
};
pub use state::SandboxStats;

/// The gateway path prefix; [`Sandbox::base_url`] ends with it.
pub const GATEWAY_PREFIX: &str = "/aggregate-pay/api/gateway";
/// The only path served.
pub const QUERY_PATH: &str = "/aggregate-pay/api/gateway/refundQuery";
/// [`Fault::Oversized`] bodies are larger than this many bytes (4 MiB).
pub const OVERSIZED_MIN_BYTES: usize = 4 * 1024 * 1024;
/// The `refundFinishTime` of [`Fault::FarFinishTime`]: a real RFC 3339 instant whose UTC year,
/// 10000, is past what the ledger stores.
pub const FAR_FINISH_TIME: &str = "9999-12-31T23:30:00.000-05:00";
/// `appId` of [`SandboxOptions::insecure_test`].
pub const TEST_APP_ID: &str = "SANDBOX-APP";
/// `merchantNo` of [`SandboxOptions::insecure_test`].
pub const TEST_MERCHANT_NO: &str = "SANDBOX-MERCHANT";
/// `version` values accepted by default: every one the SDKs and docs send (fact sheet §1, §9).
pub const DEFAULT_ACCEPTED_VERSIONS: &[&str] = &["1.1", "1.2", "1.3", "1.4", "1.5"];
/// The documented `requestTime` window: ±2 minutes of gateway time.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(120);

/// How to start a sandbox.
pub struct SandboxOptions {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// The only `appId` accepted (`MERCHANT_APP_INVALID` otherwise).
    pub app_id: String,
    /// The only `merchantNo` accepted (`MERCHANT_INVALID` otherwise).
    pub merchant_no: String,
    /// Accepted `version` values (`PARAMS_INVALID` otherwise).
    pub accepted_versions: Vec<String>,
    /// The merchant's public key: verifies each request's `sign` header.
    pub merchant_public: GatewayKey,
    /// The gateway's private key: signs answers.
    pub gateway_private: MerchantKey,
    /// Gateway time: the `requestTime` window and `refundFinishTime` come from it.
    pub clock: Arc<dyn Clock>,
    /// Sleep before every answer (changeable later with [`Sandbox::set_latency`]).
    pub latency: Duration,
    /// Largest accepted `|requestTime - now|`.
    pub max_skew: Duration,
    /// Sign error answers too (default: unsigned, see the module docs).
    pub sign_error_answers: bool,
    /// The realistic mode, if on (changeable later with [`Sandbox::set_realism`]).
    pub realism: Option<Realism>,
}

impl SandboxOptions {
    /// Loopback on a free port, the INSECURE test keys, app id `SANDBOX-APP`, merchant no
    /// `SANDBOX-MERCHANT`, versions 1.1 to 1.5, no latency, ±2 minutes, unsigned errors, the
    /// realistic mode off.
    pub fn insecure_test(clock: Arc<dyn Clock>) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            app_id: TEST_APP_ID.to_owned(),
            merchant_no: TEST_MERCHANT_NO.to_owned(),
            accepted_versions: DEFAULT_ACCEPTED_VERSIONS
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
            merchant_public: test_keys::insecure_merchant_public(),
            gateway_private: test_keys::insecure_gateway_private(),
            clock,
            latency: Duration::ZERO,
            max_skew: DEFAULT_MAX_SKEW,
            sign_error_answers: false,
            realism: None,
        }
    }
}

/// A running sandbox. Dropping it stops it too, but [`Sandbox::shutdown`] waits until every
/// connection is closed.
pub struct Sandbox {
    shared: Arc<server::Shared>,
    /// Cancelled once, by `shutdown` or drop; the accept loop and every connection select on it.
    token: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them to finish.
    tracker: TaskTracker,
    /// The accept loop; awaited on shutdown so the listener is closed when shutdown returns.
    accept: JoinHandle<()>,
}

/// Binds and starts serving in the background.
pub async fn start(options: SandboxOptions) -> std::io::Result<Sandbox> {
    let listener = TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(server::Shared {
        addr,
        app_id: options.app_id,
        merchant_no: options.merchant_no,
        accepted_versions: options.accepted_versions,
        max_skew: options.max_skew,
        sign_error_answers: options.sign_error_answers,
        merchant_public: options.merchant_public,
        gateway_private: options.gateway_private,
        stranger_private: test_keys::insecure_stranger_private(),
        clock: options.clock,
        state: Mutex::new(state::State::new(options.latency)),
    });
    shared.lock().set_realism(options.realism);
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let accept = tokio::spawn(server::accept_loop(
        listener,
        Arc::clone(&shared),
        token.clone(),
        tracker.clone(),
    ));
    debug!(%addr, "sandbox listening");
    Ok(Sandbox {
        shared,
        token,
        tracker,
        accept,
    })
}

impl Sandbox {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT/aggregate-pay/api/gateway`: append `/refundQuery`.
    pub fn base_url(&self) -> String {
        format!("http://{}{GATEWAY_PREFIX}", self.shared.addr)
    }

    /// Checus finalizes refund `out_refund_no` now and sends its result notification with
    /// `sender` in the background, as `delivery` says; queries from now on report the final
    /// status. `None` (nothing sent, nothing changed) when `delivery` is
    /// [`notify::Delivery::Never`], the refund is not scripted, never finalizes, or the
    /// realistic mode refuses it.
    pub fn notify(
        &self,
        sender: &Arc<notify::NotifySender>,
        out_refund_no: &str,
        delivery: notify::Delivery,
    ) -> Option<JoinHandle<notify::Delivered>> {
        if delivery == notify::Delivery::Never {
            return None;
        }
        let now = self.shared.clock.now();
        let (script, status, finished) = self.shared.lock().finalize_now(out_refund_no, now)?;
        let (sender, no) = (Arc::clone(sender), out_refund_no.to_owned());
        Some(tokio::spawn(async move {
            sender
                .deliver(&no, &script, status, finished, delivery)
                .await
        }))
    }

    /// Scripts one refund (replacing any earlier script and its progress).
    pub fn script(&self, out_refund_no: &str, script: RefundScript) -> Result<(), InvalidValue> {
        self.script_many([(out_refund_no.to_owned(), script)])
    }

    /// Scripts many refunds at once; on any invalid script none is installed.
    pub fn script_many(
        &self,
        scripts: impl IntoIterator<Item = (String, RefundScript)>,
    ) -> Result<(), InvalidValue> {
        let scripts: Vec<_> = scripts.into_iter().collect();
        self.shared.lock().script_many(scripts)
    }

    /// The final status the refund's script ends at; `None` if it never finalizes, is not
    /// scripted, or the realistic mode answers it `PARAMS_INVALID`.
    pub fn truth(&self, out_refund_no: &str) -> Option<RefundStatus> {
        self.shared.lock().truth(out_refund_no)
    }

    /// Makes every `/refundQuery` request misbehave with `fault` (or stops it with `None`).
    /// It preempts scripts: no script step is consumed while it is set.
    pub fn set_global_fault(&self, fault: Option<Fault>) {
        self.shared.lock().set_global_fault(fault);
    }

    /// Makes a seeded random `fraction` (0.0–1.0) of requests misbehave with a fault drawn
    /// from [`Fault::TRANSIENT`]; 0 turns it off. Like the global fault it consumes no step.
    /// The sequence of draws is fixed by the seed; which request gets which draw follows
    /// arrival order.
    pub fn set_fault_rate(&self, fraction: f64, seed: u64) {
        self.set_fault_mix(fraction, seed, Fault::TRANSIENT.to_vec());
    }

    /// [`Sandbox::set_fault_rate`] with your own list of faults.
    pub fn set_fault_mix(&self, fraction: f64, seed: u64, faults: Vec<Fault>) {
        self.shared.lock().set_fault_rate(fraction, seed, faults);
    }

    /// Turns the realistic mode on (or off with `None`). Steps that say `vary:` keep their own
    /// form.
    pub fn set_realism(&self, realism: Option<Realism>) {
        self.shared.lock().set_realism(realism);
    }

    /// Changes the sleep before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().set_latency(latency);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SandboxStats {
        self.shared.lock().stats()
    }

    /// Script steps `out_refund_no` has consumed (queries that reached its timeline).
    pub fn queries_for(&self, out_refund_no: &str) -> u64 {
        self.shared.lock().queries_for(out_refund_no)
    }

    /// Stops accepting, closes every connection (hung ones included) and waits for them.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        let _ = (&mut self.accept).await;
        self.tracker.close();
        self.tracker.wait().await;
        debug!(addr = %self.shared.addr, "sandbox stopped");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A sandbox dropped without `shutdown` (a failed test) still stops serving.
        self.token.cancel();
    }
}

/// Why [`run_until`] could not serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Binding the listen address failed.
    #[error("cannot listen on the sandbox address: {0}")]
    Bind(#[source] std::io::Error),
    /// A script was refused.
    #[error("invalid sandbox script: {0}")]
    Script(#[source] InvalidValue),
}

/// Serves `scripts` until `shutdown` completes: binds, installs the scripts, calls `ready`
/// (where a CLI prints [`Sandbox::base_url`]), waits, shuts down and returns the final counters.
pub async fn run_until(
    options: SandboxOptions,
    scripts: Vec<(String, RefundScript)>,
    ready: impl FnOnce(&Sandbox),
    shutdown: impl Future<Output = ()>,
) -> Result<SandboxStats, RunError> {
    let sandbox = start(options).await.map_err(RunError::Bind)?;
    sandbox.script_many(scripts).map_err(RunError::Script)?;
    ready(&sandbox);
    shutdown.await;
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    Ok(stats)
}
