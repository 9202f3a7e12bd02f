//! The async `/refundQuery` client: one signed POST per [`GatewayClient::query`], a bounded
//! read of the answer, and [`classify_with`] to turn it into a [`QueryOutcome`]. Every failure,
//! whatever the gateway or the network does, comes back as an outcome in a [`QueryReport`] (the
//! domain's attempt type, which the worker hands on to the ledger as is); only construction can
//! fail.
//!
//! HTTP choices: rustls only (reqwest's `rustls` feature, aws-lc-rs provider, TLS 1.2+);
//! redirects are never followed (a signed body must not be replayed to wherever a `Location`
//! points; a 3xx is a retryable `http_status`); one `reqwest::Client` per `GatewayClient`, so
//! connections are pooled and reused; the answer body is read chunk by chunk and abandoned as
//! soon as it passes the cap (no decompression feature is enabled, so the bytes counted are
//! the bytes received).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::redirect;
use tokio::time::Instant;

use super::classify::{Classified, classify_with};
use super::envelope::{SignedRequest, sign_query};
use super::keys::{GatewayKey, MerchantKey};
use super::settings::{GatewaySettings, ValidGatewaySettings};
use crate::domain::{Clock, OutRefundNo, QueryOutcome, QueryReport, RetryReason};

/// How much later than reqwest's own total timeout the outer backstop fires.
const BACKSTOP_MARGIN: Duration = Duration::from_millis(250);

/// The longest one query can take with `request_timeout`: reqwest's timeout, then the
/// backstop's margin. Claim leases are sized from it.
pub fn query_timeout(request_timeout: Duration) -> Duration {
    request_timeout + BACKSTOP_MARGIN
}

/// Why a [`GatewayClient`] could not be built. Nothing the gateway does at query time is an
/// error, and the settings were checked before (they arrive as [`ValidGatewaySettings`]), so
/// what is left is the local TLS stack; it is found at start-up and is not retryable.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The HTTP client (TLS stack) could not be initialised.
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

/// The signed `/refundQuery` client. Cheap to share behind an `Arc`; `query` takes `&self`.
pub struct GatewayClient {
    /// Checked once, before the client existed; `query_url` comes from here.
    settings: ValidGatewaySettings,
    /// One client for the process: its pool is what makes connection reuse happen.
    http: reqwest::Client,
    merchant_key: Arc<MerchantKey>,
    gateway_key: Arc<GatewayKey>,
    /// The only source of `requestTime`; tests inject their own.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient")
            .field("query_url", &self.settings.query_url().as_str())
            .field("settings", &*self.settings)
            .field("merchant_key", &"<redacted>")
            .field("gateway_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// Builds the HTTP client for settings that [`GatewaySettings::validate`] accepted. No
    /// network traffic happens here.
    pub fn new(
        settings: ValidGatewaySettings,
        merchant_key: Arc<MerchantKey>,
        gateway_key: Arc<GatewayKey>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .redirect(redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(settings.user_agent.as_str());
        if settings.is_loopback() {
            // The simulated gateway lives on this machine: an HTTP(S)_PROXY in the
            // environment must not intercept it.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(GatewayError::HttpClient)?;
        Ok(Self {
            settings,
            http,
            merchant_key,
            gateway_key,
            clock,
        })
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// Builds and signs the request `query` would send now, without sending it. Useful to
    /// measure the signing cost on its own and for interop tests.
    pub fn sign(&self, out_refund_no: &OutRefundNo) -> SignedRequest {
        sign_query(
            &self.settings,
            &self.merchant_key,
            out_refund_no,
            self.clock.now(),
        )
    }

    /// Queries the refund once: a fresh `requestTime` from the clock, a fresh signature, one
    /// HTTP POST, no retries (the worker owns retrying, including the one immediate retry on
    /// clock skew). Never panics and never fails: every problem is in the report's outcome.
    pub async fn query(&self, out_refund_no: &OutRefundNo) -> QueryReport {
        let attempted_at = self.clock.now();
        let signed = sign_query(
            &self.settings,
            &self.merchant_key,
            out_refund_no,
            attempted_at,
        );
        tracing::debug!(
            out_refund_no = %out_refund_no,
            request_time = %signed.request_time,
            signing_us = signed.signing.as_micros() as u64,
            "refund query sent"
        );
        let started = Instant::now();
        // reqwest's total timeout already covers the body; this outer bound makes the
        // guarantee independent of how any reqwest version scopes its timer. It is a backstop
        // a little later than reqwest's own timer: with equal deadlines the two raced, and
        // when the backstop won, an answer whose head had arrived lost its HTTP status.
        let backstop = query_timeout(self.settings.request_timeout);
        let exchanged = tokio::time::timeout(backstop, self.exchange(signed)).await;
        let latency = started.elapsed();
        let (http_status, result) = match exchanged {
            Ok(exchange) => exchange,
            Err(_elapsed) => (
                None,
                Err(format!("timed out after {} ms", backstop.as_millis())),
            ),
        };
        let classified = match result {
            Ok(answer) => classify_with(
                http_status.unwrap_or(0),
                answer.sign.as_deref(),
                &answer.body,
                &self.gateway_key,
                self.settings.naive_time_offset,
            ),
            Err(detail) => Classified {
                outcome: QueryOutcome::Retryable {
                    reason: RetryReason::Transport,
                    detail,
                },
                gateway_code: None,
                data_status: None,
            },
        };
        let error = error_text(&classified.outcome);
        tracing::debug!(
            out_refund_no = %out_refund_no,
            http_status,
            gateway_code = classified.gateway_code.as_deref(),
            data_status = classified.data_status.as_deref(),
            outcome = %classified.outcome.class(),
            latency_ms = latency.as_millis() as u64,
            error = error.as_deref(),
            "refund query answered"
        );
        QueryReport {
            out_refund_no: out_refund_no.clone(),
            outcome: classified.outcome,
            attempted_at,
            http_status,
            gateway_code: classified.gateway_code,
            data_status: classified.data_status,
            latency,
            error,
        }
    }

    /// Sends the request and reads the answer within the cap. The status is returned as soon
    /// as it is known, so a body failure still reports it. `Err` is a transport detail.
    async fn exchange(&self, signed: SignedRequest) -> (Option<u16>, Result<RawAnswer, String>) {
        let sent = self
            .http
            .post(self.settings.query_url().clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("sign", signed.sign)
            .body(signed.body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return (None, Err(transport_detail(&e))),
        };
        let status = response.status().as_u16();
        // Header values that are not visible ASCII cannot be base64; keep them as "present but
        // invalid" rather than "missing", so the detail says what happened.
        let sign = response
            .headers()
            .get("sign")
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
        let cap = self.settings.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return (Some(status), Err(over_cap(cap)));
        }
        let mut body = Vec::with_capacity(response.content_length().map_or(1024, |l| l as usize));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > cap {
                        return (Some(status), Err(over_cap(cap)));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return (Some(status), Err(transport_detail(&e))),
            }
        }
        (Some(status), Ok(RawAnswer { sign, body }))
    }
}

/// An answer as received: the `sign` header and the exact body bytes.
struct RawAnswer {
    sign: Option<String>,
    body: Vec<u8>,
}

fn over_cap(cap: usize) -> String {
    format!("answer body exceeds the {cap}-byte cap")
}

/// A short description of a reqwest failure: its kind plus the innermost cause. The URL is
/// left out (it is in the settings) and no request data is quoted.
fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "answer body failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport failed"
    };
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let mut text = format!("{kind}: {root}");
    if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The attempt-log text for an outcome that is not a verified answer, or for a verified one
/// that did not confirm every informative field (absent or unreadable) or lost values the
/// ledger could not store (it names each).
fn error_text(outcome: &QueryOutcome) -> Option<String> {
    match outcome {
        QueryOutcome::Final(_) | QueryOutcome::Pending(_) => outcome.notes_text(),
        QueryOutcome::Retryable { reason, detail } => {
            Some(format!("{}: {detail}", reason.as_str()))
        }
        QueryOutcome::Unknown { code } => {
            Some(format!("gateway does not know the refund ({code})"))
        }
        QueryOutcome::RateLimited => Some("rate limited (TOO_MANY_REQUEST)".to_owned()),
        QueryOutcome::ClockSkew => {
            Some("requestTime rejected as outside 2 minutes (REQ_TIME_OVER_TIME)".to_owned())
        }
        QueryOutcome::ConfigError { code } => {
            Some(format!("gateway rejected our configuration ({code})"))
        }
        QueryOutcome::RequestRejected { code } => Some(format!(
            "gateway rejected the request for this refund ({code})"
        )),
    }
}
