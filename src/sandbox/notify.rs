//! Refund result notifications as Checus sends them (fact sheet §5): the JSON body, signed
//! with the gateway's private key over its exact bytes, in the `sign` header. Tests, the
//! bad-input suite and the benchmarks build their notifications here, so every one of them
//! is byte-for-byte what the sandbox gateway would send.

use rust_decimal::Decimal;

use super::RefundScript;
use crate::domain::{FinalStatus, Timestamp, format_ts};
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
