//! Checus refund result notifications (Method 1 of the refund guide; fact sheet §5), received
//! on `POST http.notify_path`: [`read_notification`] verifies and reads one (pure), the
//! [`Inbox`] records it through the merchant's SQL contract with group commit, and [`receive`]
//! is the route that answers Checus.
//!
//! What each notification gets (issue 13's table):
//! - the `sign` header missing, not base64, or not verifying over the RAW body with the gateway
//!   public key: 401, no ack, nothing written, WARN, counted (`unverified`);
//! - verified, but not a refund notification or not readable where it decides (`notifyType`
//!   other than `REFUND`, another `merchantNo`, `data.status` not a final status,
//!   `data.outRefundNo`, amount or currency missing or unreadable), or refused by the ledger's
//!   CHECKs: 400, no ack, nothing written, WARN, counted (`unreadable`);
//! - recorded: the ledger's trigger decides the effect (finalized, a duplicate, a conflict,
//!   a mismatch, an unknown refund: the last three as discrepancies) and, only after the
//!   commit, 200 with exactly [`ACK_BODY`];
//! - the ledger unavailable (busy past its busy timeout, the disk full, the writer gone):
//!   503, no ack; Checus delivers it again.
//!
//! Strict where it decides, tolerant where it informs, as for query answers
//! ([`crate::gateway::classify`]): the signature is checked first and over the raw bytes by
//! the same [`GatewayKey::verify_b64`]; `code` never decides (a verified notification whose
//! code is not `APPLY_SUCCESS` is recorded by `data.status`, fact sheet §5's recommendation);
//! `refundTradeNo`, `refundFinishTime` and `notifyTime` are read with the query reader
//! ([`crate::gateway::reader`]) and dropped, not refused, when unreadable.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::FixedOffset;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::AppState;
use crate::domain::{Clock, FinalStatus, OutRefundNo, Timestamp};
use crate::gateway::reader::{Read, read_amount, read_currency, read_finish_time, read_time};
use crate::gateway::{GatewayKey, SignatureError, read_trade_no};
use crate::ledger::{Ledger, LedgerError, NotificationEffect, NotificationRecord};
use crate::metrics::Metrics;

/// The acknowledgement Checus expects, byte for byte (fact sheet §5).
pub const ACK_BODY: &str = r#"{"code":"SUCCESS","msg":"Success"}"#;

/// Most notifications recorded in one transaction. A batch is what arrived while the previous
/// commit ran, so at low rates it is one notification and the ack waits for one commit; 256
/// bounds a storm's transaction (and every ack in it) to a few milliseconds of inserts.
pub const MAX_BATCH: usize = 256;

/// Notifications waiting for the writer. Past it, handlers wait to enqueue (back-pressure on
/// the connections), never drop: the listener's connection cap bounds the waiters anyway.
const QUEUE: usize = 4 * MAX_BATCH;

/// A verified, readable refund notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// What the ledger records (the contract's `record_notification` parameters).
    pub record: NotificationRecord,
    /// The body's `code`, when it had one: logged, never deciding.
    pub code: Option<String>,
}

/// Why a notification is not acknowledged before it reaches the ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The `sign` header is missing or does not verify (401).
    #[error("notification not verified: {0}")]
    Unverified(&'static str),
    /// Verified, but not a refund notification we can read where it decides (400).
    #[error("notification unreadable: {0}")]
    Unreadable(String),
}

/// The top level of a notification. Unlisted fields (`msg`, `keyVersion`, `appId`) are
/// ignored; a duplicated listed key is a parse error, so no two readers can disagree.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    notify_type: Option<&'a RawValue>,
    #[serde(borrow)]
    merchant_no: Option<&'a RawValue>,
    #[serde(borrow)]
    notify_time: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// A JSON string's text, `None` for absent, `null` or another JSON type.
fn text<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    raw.and_then(|r| serde_json::from_str::<Cow<'a, str>>(r.get()).ok())
}

fn unreadable(why: impl Into<String>) -> Rejected {
    Rejected::Unreadable(why.into())
}

/// Verifies `sign` over the raw `body` with `key`, then reads the notification. `merchant_no`
/// is ours (a notification naming another is refused); `received_at` stands in for a
/// `notifyTime` that is absent or unreadable. Pure: every rule is a table test.
pub fn read_notification(
    body: &[u8],
    sign: Option<&str>,
    key: &GatewayKey,
    merchant_no: &str,
    received_at: Timestamp,
) -> Result<Notification, Rejected> {
    let sign = sign.ok_or(Rejected::Unverified("no sign header"))?;
    key.verify_b64(body, sign).map_err(|e| match e {
        SignatureError::NotBase64 => Rejected::Unverified("sign header is not standard base64"),
        SignatureError::Invalid => Rejected::Unverified("sign does not verify over the body"),
    })?;
    let head: Head<'_> = serde_json::from_slice(body)
        .map_err(|e| unreadable(format!("body is not the expected JSON object: {e}")))?;
    if let Some(kind) = head.notify_type.map(RawValue::get).filter(|r| *r != "null") {
        match serde_json::from_str::<String>(kind) {
            Ok(k) if k.trim() == "REFUND" => {}
            _ => return Err(unreadable(format!("notifyType {kind} is not \"REFUND\""))),
        }
    }
    if let Some(theirs) = text(head.merchant_no)
        && theirs.trim() != merchant_no
    {
        return Err(unreadable("merchantNo is not this merchant's"));
    }
    let data = head.data.ok_or_else(|| unreadable("data is missing"))?;
    let data: crate::gateway::classify::Data<'_> = serde_json::from_str(data.get())
        .map_err(|e| unreadable(format!("data is not the expected JSON object: {e}")))?;
    let utc = FixedOffset::east_opt(0).expect("UTC");
    let record = NotificationRecord {
        out_refund_no: read_out_refund_no(data.out_refund_no)?,
        status: read_status(data.status)?,
        refund_trade_no: match read_trade_no(data.refund_trade_no) {
            Read::Value(t) if (1..=64).contains(&t.len()) => Some(t),
            _ => None,
        },
        amount: read_positive_amount(data.refund_amount)?,
        currency: match read_currency(data.refund_currency) {
            Read::Value(c) => c,
            Read::Absent => return Err(unreadable("data.refundCurrency is missing")),
            Read::Unreadable(why) | Read::Inexact(why) => {
                return Err(unreadable(format!("data.refundCurrency {why}")));
            }
        },
        // The notification page says UTC+0 for refundFinishTime.
        refund_finish_time: match read_finish_time(data.refund_finish_time, utc) {
            Read::Value(at) => Some(at),
            _ => None,
        },
        notify_time: text(head.notify_time)
            .and_then(|t| read_time(&t, utc))
            .unwrap_or(received_at),
    };
    Ok(Notification {
        record,
        code: text(head.code).map(Cow::into_owned),
    })
}

/// `data.outRefundNo`: decides which refund, so a string naming a valid refund number.
fn read_out_refund_no(raw: Option<&RawValue>) -> Result<OutRefundNo, Rejected> {
    let no = text(raw).ok_or_else(|| unreadable("data.outRefundNo is missing or not a string"))?;
    OutRefundNo::parse(&no).map_err(|e| unreadable(format!("data.outRefundNo {}", e.reason)))
}

/// `data.status`: decides, so a string naming a final status (surrounding blanks trimmed).
fn read_status(raw: Option<&RawValue>) -> Result<FinalStatus, Rejected> {
    let status = text(raw).ok_or_else(|| unreadable("data.status is missing or not a string"))?;
    status.trim().parse().map_err(|_| {
        let cut: String = status.chars().take(32).collect();
        unreadable(format!("data.status {cut:?} is not a final status"))
    })
}

/// `data.refundAmount`: the trigger compares it with the ledger, so it must be read exactly
/// and be a positive amount the ledger can hold.
fn read_positive_amount(raw: Option<&RawValue>) -> Result<Decimal, Rejected> {
    match read_amount(raw) {
        Read::Value(a) if a > Decimal::ZERO && a.to_string().len() <= 28 => Ok(a),
        Read::Value(a) => Err(unreadable(format!(
            "data.refundAmount {a} is not a positive amount the ledger can hold"
        ))),
        Read::Absent => Err(unreadable("data.refundAmount is missing")),
        Read::Unreadable(why) => Err(unreadable(format!("data.refundAmount {why}"))),
        Read::Inexact(why) => Err(unreadable(why)),
    }
}

/// Why a readable notification was not recorded.
#[derive(Debug)]
enum Unrecorded {
    /// The ledger refused this one row (a CHECK): 400, as unreadable.
    Refused(LedgerError),
    /// The ledger or the writer failed as a whole: 503, Checus delivers it again.
    Unavailable(String),
}

/// One notification waiting for the writer, and where its result goes.
struct Job {
    record: NotificationRecord,
    /// Answered once the batch holding it committed (or failed).
    done: oneshot::Sender<Result<NotificationEffect, Unrecorded>>,
}

/// What verification needs; a SIGHUP reload replaces it.
#[derive(Clone)]
struct Verifier {
    key: Arc<GatewayKey>,
    merchant_no: String,
}

/// The notification route's state: the verifier, the queue to the writer thread, the
/// counter, and the path it serves.
pub struct Inbox {
    /// The gateway key and merchant number in force (replaced on a reload).
    verifier: Mutex<Verifier>,
    /// Feeds the writer thread; when the inbox is dropped, the writer sees the channel close,
    /// records what is queued, and ends.
    jobs: mpsc::Sender<Job>,
    /// Counts every notification by result.
    metrics: Arc<Metrics>,
    /// `received_at` for a notification without a readable `notifyTime`.
    clock: Arc<dyn Clock>,
    /// `http.notify_path`.
    path: String,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("path", &self.path).finish()
    }
}

impl Inbox {
    /// Starts the writer thread on `ledger` (a connection of its own, so notifications never
    /// wait behind the worker's ledger calls) and returns the inbox that feeds it.
    pub fn start(
        ledger: Ledger,
        key: Arc<GatewayKey>,
        merchant_no: String,
        path: String,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("notify-writer".into())
            .spawn(move || write_loop(ledger, rx))?;
        Ok(Self {
            verifier: Mutex::new(Verifier { key, merchant_no }),
            jobs,
            metrics,
            clock,
            path,
        })
    }

    /// The path the route is served on (`http.notify_path`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A reload's keys and merchant number verify from now on.
    pub fn set_verifier(&self, key: Arc<GatewayKey>, merchant_no: String) {
        *self.verifier.lock().unwrap_or_else(|p| p.into_inner()) = Verifier { key, merchant_no };
    }

    fn verifier(&self) -> Verifier {
        self.verifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Verifies, reads and records one notification; the HTTP answer.
    pub async fn handle(&self, sign: Option<&str>, body: &[u8]) -> Response {
        let v = self.verifier();
        let now = self.clock.now();
        // RSA verification is CPU work of a few tens of microseconds: fine on the async
        // worker, and cheaper than a hop to the blocking pool.
        let n = match read_notification(body, sign, &v.key, &v.merchant_no, now) {
            Ok(n) => n,
            Err(r) => return self.rejected(&r, body.len()),
        };
        let (done, result) = oneshot::channel();
        let job = Job {
            record: n.record.clone(),
            done,
        };
        let recorded = match self.jobs.send(job).await {
            Ok(()) => result
                .await
                .unwrap_or_else(|_| Err(Unrecorded::Unavailable("writer ended".into()))),
            Err(_) => Err(Unrecorded::Unavailable("writer ended".into())),
        };
        match recorded {
            Ok(effect) => self.acknowledged(&n, effect),
            Err(Unrecorded::Refused(e)) => {
                let r = unreadable(format!("the ledger refused it: {e}"));
                self.rejected(&r, body.len())
            }
            Err(Unrecorded::Unavailable(e)) => {
                self.metrics.notification_received("unavailable");
                error!(out_refund_no = n.record.out_refund_no.as_str(), error = %e,
                       "notification not recorded: ledger unavailable; not acknowledged");
                (StatusCode::SERVICE_UNAVAILABLE, "ledger unavailable\n").into_response()
            }
        }
    }

    fn rejected(&self, r: &Rejected, body_bytes: usize) -> Response {
        let (code, result, reason) = match r {
            Rejected::Unverified(why) => (StatusCode::UNAUTHORIZED, "unverified", (*why).into()),
            Rejected::Unreadable(why) => (StatusCode::BAD_REQUEST, "unreadable", why.clone()),
        };
        self.metrics.notification_received(result);
        warn!(result, reason = %reason, body_bytes, "notification refused; not acknowledged");
        (code, format!("{r}\n")).into_response()
    }

    fn acknowledged(&self, n: &Notification, effect: NotificationEffect) -> Response {
        self.metrics.notification_received(effect.as_str());
        let r = &n.record;
        let (no, status) = (r.out_refund_no.as_str(), r.status.as_str());
        let (amount, currency) = (r.amount.to_string(), r.currency.as_str());
        let code = n.code.as_deref().unwrap_or("");
        let effect_text = effect.as_str();
        match effect {
            NotificationEffect::UnknownRefund => error!(
                out_refund_no = no,
                status,
                amount,
                currency,
                code,
                effect = effect_text,
                "notification for an unknown refund"
            ),
            NotificationEffect::Mismatch | NotificationEffect::ConflictingFinal => warn!(
                out_refund_no = no,
                status,
                amount,
                currency,
                code,
                effect = effect_text,
                "notification disagrees with the ledger; discrepancy recorded"
            ),
            NotificationEffect::Finalized => info!(
                out_refund_no = no,
                status,
                code,
                effect = effect_text,
                "notification acknowledged"
            ),
            NotificationEffect::AlreadyFinal => debug!(
                out_refund_no = no,
                status,
                code,
                effect = effect_text,
                "notification acknowledged"
            ),
        }
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            ACK_BODY,
        )
            .into_response()
    }
}

/// The writer thread: takes what is queued (up to [`MAX_BATCH`]), records it in one
/// transaction, answers each job, and repeats until the inbox is dropped.
fn write_loop(mut ledger: Ledger, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let records: Vec<NotificationRecord> = batch.iter().map(|j| j.record.clone()).collect();
        match ledger.record_notifications(&records) {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.done.send(result.map_err(|e| {
                        if e.is_row_refusal() {
                            Unrecorded::Refused(e)
                        } else {
                            Unrecorded::Unavailable(crate::logging::one_line_chain(&e))
                        }
                    }));
                }
            }
            Err(e) => {
                let why = crate::logging::one_line_chain(&e);
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(Unrecorded::Unavailable(why.clone())));
                }
            }
        }
    }
}

/// `POST http.notify_path`: the body as raw bytes (the signature covers exactly them) and
/// the `sign` header; the listener's body cap (413) and timeouts apply.
pub async fn receive(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let sign = headers.get("sign").and_then(|v| v.to_str().ok());
    s.live.inbox().handle(sign, &body).await
}

#[cfg(test)]
mod tests;
