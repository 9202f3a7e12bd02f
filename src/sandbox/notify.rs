//! Refund result notifications as Checus sends them (fact sheet §5): the JSON body, signed
//! with the gateway's private key over its exact bytes, in the `sign` header, POSTed to the
//! merchant's notify URL for final states only, and redelivered on Checus's schedule until
//! acknowledged ([`NotifySender`]); some are lost on the way or never sent ([`Delivery`],
//! scripted per refund or drawn by [`super::Realism::delivery_for`]). Tests, the bad-input
//! suite and the benchmarks build their notifications here too, so every one of them is
//! byte-for-byte what the sandbox gateway sends.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::sync::Semaphore;
use tracing::debug;

use super::RefundScript;
use crate::domain::{Clock, FinalStatus, Timestamp, format_ts};
use crate::gateway::MerchantKey;

/// Checus's documented redelivery schedule: the first attempt at once, then after 30 s,
/// 5 min, 10 min, 1 h and 12 h (6 attempts in all), until one is acknowledged.
pub const CHECUS_RETRY_SCHEDULE_S: [u64; 6] = [0, 30, 300, 600, 3600, 43200];

/// One notification: the body and its `sign` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNotification {
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// Standard base64 SHA256withRSA over `body`.
    pub sign: String,
}

/// The body of a refund notification about `script`'s refund `out_refund_no`, final with
/// `status`, finished at `finished_at`, sent at `notify_time`. `amount` overrides the
/// script's (for mismatch tests); the amount is written as a JSON number from its exact text.
pub fn notification_body(
    out_refund_no: &str,
    script: &RefundScript,
    status: FinalStatus,
    amount: Option<Decimal>,
    merchant_no: &str,
    finished_at: Timestamp,
    notify_time: Timestamp,
) -> Vec<u8> {
    let data = format!(
        r#"{{"outRefundNo":{},"refundTradeNo":{},"outTradeNo":{},"refundAmount":{},"refundCurrency":"{}","status":"{}","refundFinishTime":"{}"}}"#,
        json_str(out_refund_no),
        json_str(&script.refund_trade_no),
        json_str(&script.out_trade_no),
        amount.unwrap_or(script.amount),
        script.currency.as_str(),
        status.as_str(),
        format_ts(finished_at),
    );
    format!(
        r#"{{"code":"APPLY_SUCCESS","msg":"Success.","keyVersion":"1","merchantNo":{},"notifyTime":"{}","notifyType":"REFUND","data":{data}}}"#,
        json_str(merchant_no),
        format_ts(notify_time),
    )
    .into_bytes()
}

/// Signs `body` with `key` as Checus signs notifications.
pub fn sign_notification(key: &MerchantKey, body: Vec<u8>) -> SignedNotification {
    let sign = key.sign_b64(&body);
    SignedNotification { body, sign }
}

/// What the gateway does with one refund's notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sent at once, and again on the schedule until acknowledged.
    Deliver,
    /// The first this many attempts are lost on the way (never reach the merchant); the
    /// schedule goes on.
    LoseFirst(u32),
    /// Never sent: the refund's outcome is found by polling only (as for refunds made in the
    /// Checus portal, which send no callback).
    Never,
}

/// How one refund's delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    /// Attempts made, lost ones included.
    pub attempts: u32,
    /// Attempts lost on the way.
    pub lost: u32,
    /// Whether an attempt was acknowledged (HTTP 200 with `code` `SUCCESS`).
    pub acked: bool,
}

/// Sends notifications to one notify URL as Checus does. `time_scale` compresses the retry
/// schedule (0.01: the 30 s retry after 0.3 s) for demos and tests.
pub struct NotifySender {
    client: reqwest::Client,
    url: String,
    key: MerchantKey,
    merchant_no: String,
    time_scale: f64,
    /// `notifyTime` of each attempt.
    clock: Arc<dyn Clock>,
    /// Attempts in flight at once: a gateway spreads its callbacks over a few connections.
    slots: Semaphore,
}

/// Attempts in flight at once per sender.
const SENDER_CONNECTIONS: usize = 16;

impl NotifySender {
    /// A sender to `url`, signing with the gateway's private `key`.
    pub fn new(
        url: impl Into<String>,
        key: MerchantKey,
        merchant_no: impl Into<String>,
        time_scale: f64,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            url: url.into(),
            key,
            merchant_no: merchant_no.into(),
            time_scale: if time_scale.is_finite() && time_scale > 0.0 {
                time_scale
            } else {
                1.0
            },
            clock,
            slots: Semaphore::new(SENDER_CONNECTIONS),
        })
    }

    /// The wait before attempt `i` (0-based): [`CHECUS_RETRY_SCHEDULE_S`], read as the wait
    /// after the previous attempt, scaled.
    pub fn wait_before(&self, i: usize) -> Duration {
        let s = CHECUS_RETRY_SCHEDULE_S.get(i).copied().unwrap_or(0);
        Duration::from_secs_f64(s as f64 * self.time_scale)
    }

    /// Delivers one refund's notification: attempts on the schedule until one is
    /// acknowledged or the six attempts are spent. Each attempt is signed afresh with its own
    /// `notifyTime`.
    pub async fn deliver(
        &self,
        out_refund_no: &str,
        script: &RefundScript,
        status: FinalStatus,
        finished_at: Timestamp,
        delivery: Delivery,
    ) -> Delivered {
        let mut out = Delivered::default();
        let lose = match delivery {
            Delivery::Never => return out,
            Delivery::Deliver => 0,
            Delivery::LoseFirst(n) => n,
        };
        for i in 0..CHECUS_RETRY_SCHEDULE_S.len() {
            tokio::time::sleep(self.wait_before(i)).await;
            out.attempts += 1;
            if out.lost < lose {
                out.lost += 1;
                continue;
            }
            let body = notification_body(
                out_refund_no,
                script,
                status,
                None,
                &self.merchant_no,
                finished_at,
                self.clock.now(),
            );
            if self.attempt(sign_notification(&self.key, body)).await {
                out.acked = true;
                break;
            }
        }
        out
    }

    /// One POST; true when acknowledged.
    async fn attempt(&self, n: SignedNotification) -> bool {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("sign", n.sign)
            .body(n.body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) if r.status().as_u16() == 200 => r,
            Ok(r) => {
                debug!(
                    status = r.status().as_u16(),
                    "sandbox notification not acknowledged"
                );
                return false;
            }
            Err(e) => {
                debug!(error = %e, "sandbox notification not delivered");
                return false;
            }
        };
        let body = resp.bytes().await.unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["code"] == "SUCCESS")
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;
    use crate::http::notify::read_notification;
    use crate::sandbox::test_keys::{insecure_gateway_private, insecure_gateway_public};

    #[test]
    fn the_daemon_reads_what_the_sandbox_sends() {
        let at = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let script = RefundScript::usd("R-1", vec![]);
        let body = notification_body("R-1", &script, FinalStatus::Failed, None, "M", at, at);
        let n = sign_notification(&insecure_gateway_private(), body);
        let read =
            read_notification(&n.body, Some(&n.sign), &insecure_gateway_public(), "M", at).unwrap();
        assert_eq!(read.record.out_refund_no.as_str(), "R-1");
        assert_eq!(read.record.status, FinalStatus::Failed);
        assert_eq!(read.record.amount, script.amount);
        assert_eq!(read.record.refund_trade_no.as_deref(), Some("T-R-1"));
    }
}
