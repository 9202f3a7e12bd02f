//! [`read_notification`]'s rules as a table: real RSA signatures with the INSECURE test keys.

use super::*;
use crate::domain::parse_ts;
use crate::sandbox::test_keys::{
    insecure_gateway_private, insecure_gateway_public, insecure_stranger_private,
};

const MERCHANT: &str = "SANDBOX-MERCHANT";

fn now() -> Timestamp {
    parse_ts("2026-11-25T10:00:00.000Z").unwrap()
}

/// A notification body with `data` fields replaced (or removed, with `null` meaning absent
/// when `drop` names them).
fn body(top: &[(&str, serde_json::Value)], data: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut d = serde_json::json!({
        "outRefundNo": "R-1",
        "refundTradeNo": "T-1",
        "outTradeNo": "O-1",
        "refundAmount": 12.5,
        "refundCurrency": "USD",
        "status": "REFUND_SUCCESS",
        "refundFinishTime": "2026-11-25T09:59:00.123Z",
    });
    for (k, v) in data {
        if v.is_null() {
            d.as_object_mut().unwrap().remove(*k);
        } else {
            d[*k] = v.clone();
        }
    }
    let mut b = serde_json::json!({
        "code": "APPLY_SUCCESS",
        "msg": "Success.",
        "keyVersion": "1",
        "merchantNo": MERCHANT,
        "notifyTime": "2026-11-25T09:59:30.000+00:00",
        "notifyType": "REFUND",
        "data": d,
    });
    for (k, v) in top {
        if v.is_null() {
            b.as_object_mut().unwrap().remove(*k);
        } else {
            b[*k] = v.clone();
        }
    }
    serde_json::to_vec(&b).unwrap()
}

fn read(body: &[u8]) -> Result<Notification, Rejected> {
    let sign = insecure_gateway_private().sign_b64(body);
    read_notification(
        body,
        Some(&sign),
        &insecure_gateway_public(),
        MERCHANT,
        now(),
    )
}

#[test]
fn a_verified_notification_is_read_exactly() {
    let n = read(&body(&[], &[])).unwrap();
    let r = &n.record;
    assert_eq!(r.out_refund_no.as_str(), "R-1");
    assert_eq!(r.status, FinalStatus::Success);
    assert_eq!(r.amount.to_string(), "12.5");
    assert_eq!(r.currency.as_str(), "USD");
    assert_eq!(r.refund_trade_no.as_deref(), Some("T-1"));
    assert_eq!(
        r.refund_finish_time,
        Some(parse_ts("2026-11-25T09:59:00.123Z").unwrap())
    );
    assert_eq!(r.notify_time, parse_ts("2026-11-25T09:59:30.000Z").unwrap());
    assert_eq!(n.code.as_deref(), Some("APPLY_SUCCESS"));
}

#[test]
fn the_signature_is_checked_first_over_the_raw_bytes() {
    let b = body(&[], &[]);
    let key = insecure_gateway_public();
    let good = insecure_gateway_private().sign_b64(&b);
    let cases: [(Option<&str>, &[u8], &str); 5] = [
        (None, &b, "no sign header"),
        (Some("not base64!"), &b, "not standard base64"),
        (
            Some(&insecure_stranger_private().sign_b64(&b)),
            &b,
            "does not verify",
        ),
        // The same JSON re-encoded (a space added) is not what was signed.
        (
            Some(&good),
            &[&b[..1], b" ", &b[1..]].concat(),
            "does not verify",
        ),
        // Unreadable bodies are refused as unverified before any parsing.
        (Some(&good), b"not json", "does not verify"),
    ];
    for (sign, body, want) in cases {
        match read_notification(body, sign, &key, MERCHANT, now()) {
            Err(Rejected::Unverified(why)) => assert!(why.contains(want), "{why}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    // Padding may be missing, as for query answers.
    let unpadded = good.trim_end_matches('=');
    assert!(read_notification(&b, Some(unpadded), &key, MERCHANT, now()).is_ok());
}

#[test]
fn what_decides_is_read_strictly() {
    use serde_json::json;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"[1,2]".to_vec(), "not the expected JSON object"),
        (body(&[("notifyType", json!("PAYMENT"))], &[]), "notifyType"),
        (body(&[("notifyType", json!(7))], &[]), "notifyType"),
        (body(&[("merchantNo", json!("OTHER"))], &[]), "merchantNo"),
        (
            body(&[("data", serde_json::Value::Null)], &[]),
            "data is missing",
        ),
        (body(&[("data", json!("x"))], &[]), "data is not"),
        (
            body(&[], &[("status", json!("REFUND_PENDING"))]),
            "not a final status",
        ),
        (
            body(&[], &[("status", json!("SUCCESS"))]),
            "not a final status",
        ),
        (
            body(&[], &[("status", serde_json::Value::Null)]),
            "data.status is missing",
        ),
        (body(&[], &[("status", json!(1))]), "data.status is missing"),
        (
            body(&[], &[("outRefundNo", serde_json::Value::Null)]),
            "data.outRefundNo is missing",
        ),
        (
            body(&[], &[("outRefundNo", json!(42))]),
            "data.outRefundNo is missing",
        ),
        (
            body(&[], &[("outRefundNo", json!("R 1"))]),
            "data.outRefundNo",
        ),
        (
            body(&[], &[("outRefundNo", json!("R".repeat(65)))]),
            "data.outRefundNo",
        ),
        (
            body(&[], &[("outRefundNo", json!("Ré-1"))]),
            "data.outRefundNo",
        ),
        (
            body(&[], &[("refundAmount", serde_json::Value::Null)]),
            "refundAmount is missing",
        ),
        (body(&[], &[("refundAmount", json!(0))]), "positive"),
        (body(&[], &[("refundAmount", json!(-5))]), "positive"),
        (body(&[], &[("refundAmount", json!("ten"))]), "refundAmount"),
        (
            body(&[], &[("refundCurrency", json!("DOLLARS"))]),
            "refundCurrency",
        ),
        (
            body(&[], &[("refundCurrency", serde_json::Value::Null)]),
            "refundCurrency is missing",
        ),
    ];
    for (b, want) in cases {
        match read(&b) {
            Err(Rejected::Unreadable(why)) => assert!(why.contains(want), "{want}: {why}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    // A duplicated deciding key is refused, so no two readers can disagree.
    let dup = br#"{"code":"APPLY_SUCCESS","data":{"outRefundNo":"R-1","status":"REFUND_SUCCESS","status":"REFUND_FAILED","refundAmount":1,"refundCurrency":"USD"}}"#;
    assert!(matches!(read(dup), Err(Rejected::Unreadable(_))));
}

#[test]
fn what_informs_is_read_tolerantly() {
    use serde_json::json;
    // code never decides: a failure code with a final status is recorded by the status.
    let n = read(&body(
        &[("code", json!("REFUND_INSUFFICIENT_BALANCE"))],
        &[("status", json!(" REFUND_FAILED "))],
    ))
    .unwrap();
    assert_eq!(n.record.status, FinalStatus::Failed);
    assert_eq!(n.code.as_deref(), Some("REFUND_INSUFFICIENT_BALANCE"));
    // Absent notifyType, merchantNo and code are fine; amount as a string is exact.
    let n = read(&body(
        &[
            ("notifyType", serde_json::Value::Null),
            ("merchantNo", serde_json::Value::Null),
            ("code", serde_json::Value::Null),
            ("notifyTime", json!("yesterday")),
        ],
        &[
            ("refundAmount", json!("12.5000")),
            ("refundCurrency", json!(" usd")),
            ("refundTradeNo", json!("T".repeat(65))),
            ("refundFinishTime", json!("soon")),
        ],
    ))
    .unwrap();
    assert_eq!(n.record.amount.to_string(), "12.5000");
    assert_eq!(n.record.currency.as_str(), "USD");
    assert_eq!(n.record.refund_trade_no, None);
    assert_eq!(n.record.refund_finish_time, None);
    assert_eq!(n.record.notify_time, now());
    assert_eq!(n.code, None);
    // Offsets are converted to UTC.
    let n = read(&body(
        &[("notifyTime", json!("2026-11-25T17:59:30.000+08:00"))],
        &[],
    ))
    .unwrap();
    assert_eq!(
        n.record.notify_time,
        parse_ts("2026-11-25T09:59:30.000Z").unwrap()
    );
}
