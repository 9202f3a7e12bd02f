//! Outgoing webhooks: the daemon's delivery task. It runs next to the sweep loop on its own
//! task, its own ledger connection and its own HTTP client, so a slow or failing receiver
//! never slows reconciliation: the worst it costs the sweeps is a short write of results.
//!
//! The loop: every [`POLL_INTERVAL`] (or at once after a wave that sent something) it asks
//! the ledger for the events due now, at most `webhook.concurrency`, each the earliest
//! undelivered event of its refund ([`crate::ledger::Outbox::due_webhooks`]); sends them all
//! at once; then records every result in one transaction. Because a refund's next event is
//! only taken once the one before it is recorded delivered, each refund's events arrive in
//! order. A result is recorded only after the answer, so a crash in between sends the event
//! again: at least once, deduplicated by the receiver on the event id.
//!
//! Configuration comes through a `watch` channel: the daemon sends the new target on a
//! SIGHUP reload (`None`: no `[webhook]`, the task idles and events wait in the ledger).

pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::redirect;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{WebhookSecret, WebhookSettings};
use crate::domain::webhook::{AfterFailure, RetryPolicy};
use crate::domain::{Clock, format_ts};
use crate::ledger::{DeliveryOutcome, DeliveryResult, DueWebhook};
use crate::worker::{JitterSource, LedgerHandle};

pub use sign::{EVENT_ID_HEADER, SIGNATURE_HEADER, signature};

/// How often an idle delivery task looks for new events: an event is sent within this long
/// of its commit. Each look is one probe of the partial index `webhook_events_due` on the
/// blocking pool (README "Webhooks" gives the measured idle cost).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long the task pauses after a ledger call failed (busy beyond its timeout, disk full).
const LEDGER_RETRY: Duration = Duration::from_secs(5);

/// What one wave did.
enum Wave {
    /// Events were sent and their results recorded: look again at once.
    Sent,
    /// Nothing was due.
    Idle,
    /// The ledger could not be read or written.
    LedgerFailed,
}

/// The longest `last_error` kept (a receiver's error text is not ours to store in full).
const MAX_ERROR_CHARS: usize = 300;

/// The HTTP client could not be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client")]
pub struct ClientError(#[source] reqwest::Error);

/// Where and how to deliver: the validated settings, the secret and a client built for them.
#[derive(Debug, Clone)]
pub struct Target {
    url: reqwest::Url,
    shown_url: String,
    secret: Arc<WebhookSecret>,
    client: reqwest::Client,
    concurrency: usize,
    retry: RetryPolicy,
}

impl Target {
    /// The target for `settings`, signing with `secret`. The client follows no redirect (a
    /// redirect would re-send a signed body elsewhere) and times out after `timeout`.
    pub fn new(
        settings: &WebhookSettings,
        secret: Arc<WebhookSecret>,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .redirect(redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("checus-reconciler/", env!("CARGO_PKG_VERSION")));
        if settings.url.scheme() == "http" {
            // http:// is only allowed to loopback: an HTTP_PROXY must not intercept it.
            builder = builder.no_proxy();
        }
        Ok(Self {
            url: settings.url.clone(),
            shown_url: settings.shown_url(),
            secret,
            client: builder.build().map_err(ClientError)?,
            concurrency: settings.concurrency,
            retry: settings.retry,
        })
    }

    /// The URL as logs show it (no query string).
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }
}

/// The delivery task's parts; [`Delivery::run`] consumes it.
pub struct Delivery {
    /// Its own ledger connection: the sweeps never wait on this task's calls.
    pub ledger: LedgerHandle,
    /// Attempt times and the retry schedule's `now`.
    pub clock: Arc<dyn Clock>,
    /// The retry jitter draw, in [0, 1).
    pub jitter: JitterSource,
    /// The current target (`None`: webhooks not configured); a reload sends a new one.
    pub target: watch::Receiver<Option<Arc<Target>>>,
}

impl Delivery {
    /// Delivers until `stop` fires. A wave in flight when it fires is dropped unrecorded:
    /// those events are sent again by the next run.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let target = self.target.borrow_and_update().clone();
            let wave = match &target {
                Some(t) => tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    wave = self.wave(t) => wave,
                },
                None => Wave::Idle,
            };
            let pause = match wave {
                Wave::Sent => continue,
                Wave::Idle => POLL_INTERVAL,
                Wave::LedgerFailed => LEDGER_RETRY,
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                changed = self.target.changed() => {
                    if changed.is_err() {
                        // The daemon dropped its sender: it is stopping.
                        stop.cancelled().await;
                        return;
                    }
                }
                () = tokio::time::sleep(pause), if target.is_some() => {}
            }
        }
    }

    /// Sends the events due now and records the results.
    async fn wave(&self, target: &Arc<Target>) -> Wave {
        let now = self.clock.now();
        let limit = target.concurrency;
        let due = match self.ledger.call(move |l| l.due_webhooks(now, limit)).await {
            Ok(due) => due,
            Err(e) => {
                error!(error = %e, "cannot read due webhook events");
                return Wave::LedgerFailed;
            }
        };
        if due.is_empty() {
            return Wave::Idle;
        }
        let results = join_all(due.into_iter().map(|e| self.deliver(target, e))).await;
        let recorded = self
            .ledger
            .call(move |l| l.record_webhook_results(&results))
            .await;
        match recorded {
            Ok(()) => Wave::Sent,
            Err(e) => {
                // Not recorded: the events stay pending and are sent again (at least once),
                // after a pause so a failing disk does not resend them in a tight loop.
                error!(error = %e, "cannot record webhook deliveries; they will be sent again");
                Wave::LedgerFailed
            }
        }
    }

    /// One attempt: POST the body, signed; a 2xx answer is delivered, anything else failed.
    async fn deliver(&self, target: &Target, event: DueWebhook) -> DeliveryResult {
        let attempted_at = self.clock.now();
        let body = event.body.into_bytes();
        let sig = signature(&target.secret, attempted_at.timestamp(), &body);
        let sent = target
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sig)
            .header(EVENT_ID_HEADER, &event.event_id)
            .body(body)
            .send()
            .await;
        let error = match sent {
            Ok(r) if r.status().is_success() => {
                debug!(event_id = %event.event_id, out_refund_no = %event.out_refund_no,
                       attempt = event.attempts + 1, "webhook delivered");
                return DeliveryResult {
                    id: event.id,
                    attempted_at,
                    outcome: DeliveryOutcome::Delivered,
                };
            }
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            // Without the URL: its query string may hold a receiver's token.
            Err(e) => clip(&crate::logging::one_line_chain(&e.without_url())),
        };
        let failures = u32::try_from(event.attempts + 1).unwrap_or(u32::MAX);
        let first = event.first_attempt_at.unwrap_or(attempted_at);
        let outcome =
            match target
                .retry
                .after_failure(failures, first, attempted_at, (self.jitter)())
            {
                AfterFailure::RetryAt(at) => {
                    warn!(event_id = %event.event_id, out_refund_no = %event.out_refund_no,
                      attempt = failures, next_attempt_at = %format_ts(at), error = %error,
                      "webhook delivery failed");
                    DeliveryOutcome::Retry { error, at }
                }
                AfterFailure::Dead => {
                    error!(event_id = %event.event_id, out_refund_no = %event.out_refund_no,
                       attempt = failures, error = %error,
                       "webhook event dead; redeliver it with `webhooks redeliver`");
                    DeliveryOutcome::Dead { error }
                }
            };
        DeliveryResult {
            id: event.id,
            attempted_at,
            outcome,
        }
    }
}

/// The target for a configuration, or `None` when it has no `[webhook]` (or the client cannot
/// be built, which is logged: events then wait in the ledger).
pub fn target_for(
    settings: Option<&WebhookSettings>,
    secret: Option<&Arc<WebhookSecret>>,
) -> Option<Arc<Target>> {
    let (settings, secret) = (settings?, secret?);
    match Target::new(settings, Arc::clone(secret)) {
        Ok(t) => {
            info!(url = %t.shown_url(), concurrency = settings.concurrency, "webhooks enabled");
            Some(Arc::new(t))
        }
        Err(e) => {
            error!(error = %crate::logging::one_line_chain(&e), "webhooks disabled");
            None
        }
    }
}

/// `text` cut to [`MAX_ERROR_CHARS`] characters.
fn clip(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}
