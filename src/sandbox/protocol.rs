//! The gateway's side of the `/refundQuery` wire protocol, with no sockets: checking a signed
//! request envelope the way Checus does, and writing answer bodies (correct or deliberately
//! malformed) byte for byte.
//!
//! Check order, each failure answering at once: `sign` header verifies over the raw body with
//! the merchant public key (`SIGN_VERIFY_FAILED`) → body is a JSON object (`PARAMS_INVALID`) →
//! `appId` (`MERCHANT_APP_INVALID`) → `merchantNo` (`MERCHANT_INVALID`) → `keyVersion` is `"1"`
//! and `version` is accepted (`PARAMS_INVALID`) → `requestTime` parses as RFC 3339 and lies
//! within the allowed skew (`REQ_TIME_OVER_TIME`) → `data.outRefundNo` or `data.refundTradeNo`
//! (`PARAMS_INVALID`). The sandbox serves one merchant, so it can verify before parsing
//! anything: nothing about an unauthenticated body is ever interpreted.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::{Currency, RefundStatus, Timestamp, format_ts, parse_ts};
use crate::gateway::GatewayKey;

/// `APPLY_SUCCESS`: the request worked (says nothing about the refund).
pub const APPLY_SUCCESS: &str = "APPLY_SUCCESS";
/// Missing or invalid request signature.
pub const SIGN_VERIFY_FAILED: &str = "SIGN_VERIFY_FAILED";
/// Unknown `appId`.
pub const MERCHANT_APP_INVALID: &str = "MERCHANT_APP_INVALID";
/// Unknown `merchantNo`.
pub const MERCHANT_INVALID: &str = "MERCHANT_INVALID";
/// A missing or ill-typed field.
pub const PARAMS_INVALID: &str = "PARAMS_INVALID";
/// `requestTime` unparseable or more than the allowed skew from gateway time.
pub const REQ_TIME_OVER_TIME: &str = "REQ_TIME_OVER_TIME";
/// The refund is unknown to the gateway.
pub const ORDER_NOT_EXIST: &str = "ORDER_NOT_EXIST";
/// Rate limited.
pub const TOO_MANY_REQUEST: &str = "TOO_MANY_REQUEST";

/// The `msg` the gateway sends with a code (texts from the PayerMax/Checus error tables).
pub fn default_msg(code: &str) -> &'static str {
    match code {
        APPLY_SUCCESS => "Success.",
        "SYSTEM_ERROR" => "System is busy, please try again later.",
        REQ_TIME_OVER_TIME => "requestTime effective in two minutes",
        TOO_MANY_REQUEST => "Exceed request limitation, please retry later",
        SIGN_VERIFY_FAILED => "The signature verify failed.",
        MERCHANT_INVALID => "The merchant has been offline.",
        MERCHANT_APP_INVALID => "Signature key is not configured.",
        ORDER_NOT_EXIST => "order queried or operated is invalid",
        "REFUND_NO_INVALID" => "Invalid refund order number",
        "UNEXPECTED_ERROR" => "Unknown error.",
        "REQUEST_TIMEOUT" => "Request timeout.",
        _ => "",
    }
}

/// What the gateway expects of every request.
pub struct Expectations<'a> {
    /// Verifies the `sign` header.
    pub merchant_public: &'a GatewayKey,
    /// The only `appId` accepted.
    pub app_id: &'a str,
    /// The only `merchantNo` accepted.
    pub merchant_no: &'a str,
    /// Accepted `version` values.
    pub accepted_versions: &'a [String],
    /// Largest accepted distance between `requestTime` and gateway time.
    pub max_skew: Duration,
}

/// Which refund a valid request asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryKey {
    /// `data.outRefundNo`, if sent.
    pub out_refund_no: Option<String>,
    /// `data.refundTradeNo`, if sent.
    pub refund_trade_no: Option<String>,
}

/// A request the gateway refuses, with the code and message it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The error code.
    pub code: &'static str,
    /// The message.
    pub msg: String,
}

impl Rejection {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            msg: default_msg(code).to_owned(),
        }
    }

    fn params(msg: impl Into<String>) -> Self {
        Self {
            code: PARAMS_INVALID,
            msg: msg.into(),
        }
    }
}

/// A required string field: missing or non-string is `PARAMS_INVALID` naming the field.
fn string_field<'v>(
    obj: &'v Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<&'v str, Rejection> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(Rejection::params(format!("{name} is required"))),
        Some(Value::String(s)) if s.chars().count() > max => Err(Rejection::params(format!(
            "{name} length must be less than or equal to {max}"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Rejection::params(format!("{name} must be a string"))),
    }
}

/// An optional string field of `data`: empty counts as absent, non-string is refused.
fn optional_string(
    obj: &Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<String>, Rejection> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(_)) => string_field(obj, name, max).map(|s| Some(s.to_owned())),
        Some(_) => Err(Rejection::params(format!("{name} must be a string"))),
    }
}

/// Checks one `/refundQuery` request exactly as received.
pub fn check_request(
    body: &[u8],
    sign: Option<&str>,
    expect: &Expectations<'_>,
    now: Timestamp,
) -> Result<QueryKey, Rejection> {
    let sign = sign
        .filter(|s| !s.is_empty())
        .ok_or(Rejection::new(SIGN_VERIFY_FAILED))?;
    expect
        .merchant_public
        .verify_b64(body, sign)
        .map_err(|_| Rejection::new(SIGN_VERIFY_FAILED))?;
    let envelope: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| Rejection::params("request body must be a JSON object"))?;
    if string_field(&envelope, "appId", 64)? != expect.app_id {
        return Err(Rejection::new(MERCHANT_APP_INVALID));
    }
    if string_field(&envelope, "merchantNo", 32)? != expect.merchant_no {
        return Err(Rejection::new(MERCHANT_INVALID));
    }
    if string_field(&envelope, "keyVersion", 8)? != "1" {
        return Err(Rejection::params("keyVersion is invalid"));
    }
    let version = string_field(&envelope, "version", 8)?;
    if !expect.accepted_versions.iter().any(|v| v == version) {
        return Err(Rejection::params("version is invalid"));
    }
    let request_time = string_field(&envelope, "requestTime", 32)?;
    let sent = parse_ts(request_time).map_err(|_| Rejection::new(REQ_TIME_OVER_TIME))?;
    let skew_ms = (now - sent).num_milliseconds().unsigned_abs();
    if u128::from(skew_ms) > expect.max_skew.as_millis() {
        return Err(Rejection::new(REQ_TIME_OVER_TIME));
    }
    let data = match envelope.get("data") {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => return Err(Rejection::params("data is required")),
        Some(_) => return Err(Rejection::params("data must be an object")),
    };
    let key = QueryKey {
        out_refund_no: optional_string(data, "outRefundNo", 64)?,
        refund_trade_no: optional_string(data, "refundTradeNo", 64)?,
    };
    if key.out_refund_no.is_none() && key.refund_trade_no.is_none() {
        return Err(Rejection::params(
            "outRefundNo and refundTradeNo cannot both be empty",
        ));
    }
    Ok(key)
}

/// The refund facts an `APPLY_SUCCESS` answer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerData {
    /// `data.outRefundNo`.
    pub out_refund_no: String,
    /// `data.refundTradeNo`.
    pub refund_trade_no: String,
    /// `data.refundAmount`, written from its exact decimal text.
    pub amount: Decimal,
    /// `data.refundCurrency`.
    pub currency: Currency,
    /// `data.outTradeNo`.
    pub out_trade_no: String,
    /// `data.status`.
    pub status: RefundStatus,
    /// `data.refundFinishTime`, written only when the status is final.
    pub finish_time: Option<Timestamp>,
}

impl AnswerData {
    /// `data.resultMsg`: per the docs it "only has a value on failure".
    fn result_msg(&self) -> &'static str {
        match self.status {
            RefundStatus::Failed => "Refund rejected by the payment channel.",
            RefundStatus::Pending | RefundStatus::Success => "",
        }
    }
}

/// Deliberate departures from a correct answer body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// The documented shape.
    #[default]
    Correct,
    /// No `code`.
    MissingCode,
    /// No `data`.
    MissingData,
    /// No `data.status`.
    MissingStatus,
    /// `data.status` is `REFUND_PROCESSING`.
    UnknownStatus,
    /// `data.refundAmount` is a string.
    AmountAsString,
    /// `data.status` is the number 1.
    StatusAsNumber,
    /// `data.resultMsg` padded so the body is at least this many bytes.
    PaddedTo(usize),
    /// `data.refundFinishTime` is this text (when the status is final), as written.
    FinishTimeText(&'static str),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataOut<'a> {
    out_refund_no: &'a str,
    refund_trade_no: &'a str,
    refund_amount: &'a RawValue,
    refund_currency: &'a str,
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a RawValue>,
    result_msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_finish_time: Option<String>,
}

#[derive(Serialize)]
struct AnswerOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataOut<'a>>,
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).expect("the sandbox only writes valid JSON fragments")
}

/// Writes an `APPLY_SUCCESS` answer body. `refundAmount` is the decimal's own text (`12.50`)
/// as a JSON number, never routed through `f64`.
pub fn success_body(data: &AnswerData, shape: Shape) -> Vec<u8> {
    let amount = match shape {
        Shape::AmountAsString => raw(format!("\"{}\"", data.amount)),
        _ => raw(data.amount.to_string()),
    };
    let status = match shape {
        Shape::MissingStatus => None,
        Shape::UnknownStatus => Some(raw("\"REFUND_PROCESSING\"".to_owned())),
        Shape::StatusAsNumber => Some(raw("1".to_owned())),
        _ => Some(raw(format!("\"{}\"", data.status.as_str()))),
    };
    let padding;
    let result_msg = match shape {
        Shape::PaddedTo(bytes) => {
            padding = "x".repeat(bytes);
            padding.as_str()
        }
        _ => data.result_msg(),
    };
    let data_out = DataOut {
        out_refund_no: &data.out_refund_no,
        refund_trade_no: &data.refund_trade_no,
        refund_amount: &amount,
        refund_currency: data.currency.as_str(),
        out_trade_no: &data.out_trade_no,
        status: status.as_deref(),
        result_msg,
        refund_finish_time: match shape {
            Shape::FinishTimeText(text) => Some(text.to_owned()),
            _ => data.finish_time.map(format_ts),
        }
        .filter(|_| data.status.is_final()),
    };
    let answer = AnswerOut {
        code: (shape != Shape::MissingCode).then_some(APPLY_SUCCESS),
        msg: default_msg(APPLY_SUCCESS),
        data: (shape != Shape::MissingData).then_some(data_out),
    };
    serde_json::to_vec(&answer).expect("answer bodies always serialize")
}

/// Writes an error answer body: `{"code":…,"msg":…}`.
pub fn error_body(code: &str, msg: &str) -> Vec<u8> {
    serde_json::to_vec(&AnswerOut {
        code: Some(code),
        msg,
        data: None,
    })
    .expect("error bodies always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::MerchantKey;
    use crate::sandbox::test_keys;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn data(status: RefundStatus) -> AnswerData {
        AnswerData {
            out_refund_no: "R1".into(),
            refund_trade_no: "T1".into(),
            amount: Decimal::new(1250, 2),
            currency: usd(),
            out_trade_no: "O1".into(),
            status,
            finish_time: Some(parse_ts("2026-01-02T03:04:05.6+08:00").unwrap()),
        }
    }

    #[test]
    fn success_body_is_exact() {
        let body = success_body(&data(RefundStatus::Success), Shape::Correct);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"code":"APPLY_SUCCESS","msg":"Success.","data":{"outRefundNo":"R1","refundTradeNo":"T1","refundAmount":12.50,"refundCurrency":"USD","outTradeNo":"O1","status":"REFUND_SUCCESS","resultMsg":"","refundFinishTime":"2026-01-01T19:04:05.600Z"}}"#
        );
        let pending =
            String::from_utf8(success_body(&data(RefundStatus::Pending), Shape::Correct)).unwrap();
        assert!(!pending.contains("refundFinishTime"), "{pending}");
        assert!(pending.contains(r#""status":"REFUND_PENDING""#));
    }

    #[test]
    fn shapes_break_exactly_one_thing() {
        let d = data(RefundStatus::Pending);
        let text = |shape| String::from_utf8(success_body(&d, shape)).unwrap();
        assert!(!text(Shape::MissingCode).contains("\"code\""));
        assert!(!text(Shape::MissingData).contains("\"data\""));
        assert!(!text(Shape::MissingStatus).contains("\"status\""));
        assert!(text(Shape::UnknownStatus).contains(r#""status":"REFUND_PROCESSING""#));
        assert!(text(Shape::AmountAsString).contains(r#""refundAmount":"12.50""#));
        assert!(text(Shape::StatusAsNumber).contains(r#""status":1,"#));
        assert!(text(Shape::PaddedTo(5000)).len() > 5000);
        assert_eq!(
            error_body("SYSTEM_ERROR", default_msg("SYSTEM_ERROR")),
            br#"{"code":"SYSTEM_ERROR","msg":"System is busy, please try again later."}"#
        );
    }

    fn envelope(over: &[(&str, Value)]) -> Vec<u8> {
        let mut env = serde_json::json!({
            "version": "1.4", "keyVersion": "1", "requestTime": "2026-01-01T00:00:00.000+00:00",
            "appId": "APP", "merchantNo": "M", "data": {"outRefundNo": "R1"}
        });
        for (k, v) in over {
            if v.is_null() {
                env.as_object_mut().unwrap().remove(*k);
            } else {
                env[*k] = v.clone();
            }
        }
        serde_json::to_vec(&env).unwrap()
    }

    #[test]
    fn request_checks_follow_the_documented_order() {
        let merchant = MerchantKey::from_text(test_keys::INSECURE_MERCHANT_PRIVATE_PEM).unwrap();
        let public = merchant.public_key();
        let versions = vec!["1.4".to_owned(), "1.5".to_owned()];
        let expect = Expectations {
            merchant_public: &public,
            app_id: "APP",
            merchant_no: "M",
            accepted_versions: &versions,
            max_skew: Duration::from_secs(120),
        };
        let now = parse_ts("2026-01-01T00:01:00Z").unwrap();
        let check =
            |body: Vec<u8>| check_request(&body, Some(&merchant.sign_b64(&body)), &expect, now);
        let code = |over: &[(&str, Value)]| check(envelope(over)).map_err(|r| r.code);

        assert_eq!(
            code(&[]),
            Ok(QueryKey {
                out_refund_no: Some("R1".into()),
                refund_trade_no: None
            })
        );
        let body = envelope(&[]);
        assert_eq!(
            check_request(&body, None, &expect, now).unwrap_err().code,
            SIGN_VERIFY_FAILED
        );
        assert_eq!(
            check_request(&body, Some(""), &expect, now)
                .unwrap_err()
                .code,
            SIGN_VERIFY_FAILED
        );
        let other = envelope(&[("appId", "X".into())]);
        assert_eq!(
            check_request(&body, Some(&merchant.sign_b64(&other)), &expect, now)
                .unwrap_err()
                .code,
            SIGN_VERIFY_FAILED
        );
        assert_eq!(check(b"[1]".to_vec()).unwrap_err().code, PARAMS_INVALID);
        use serde_json::json;
        for (over, want) in [
            (vec![("appId", json!("X"))], MERCHANT_APP_INVALID),
            (vec![("appId", Value::Null)], PARAMS_INVALID),
            (vec![("merchantNo", json!("X"))], MERCHANT_INVALID),
            (vec![("merchantNo", json!(5))], PARAMS_INVALID),
            (vec![("keyVersion", json!(1))], PARAMS_INVALID),
            (vec![("keyVersion", json!("1.0"))], PARAMS_INVALID),
            (vec![("version", json!("1.1"))], PARAMS_INVALID),
            (vec![("version", json!("123456789"))], PARAMS_INVALID),
            (
                vec![("requestTime", json!("yesterday"))],
                REQ_TIME_OVER_TIME,
            ),
            (
                vec![("requestTime", json!("2025-12-31T23:58:59.999Z"))],
                REQ_TIME_OVER_TIME,
            ),
            (
                vec![("requestTime", json!("2026-01-01T08:03:00.001+08:00"))],
                REQ_TIME_OVER_TIME,
            ),
            (vec![("requestTime", Value::Null)], PARAMS_INVALID),
            (vec![("data", Value::Null)], PARAMS_INVALID),
            (vec![("data", json!("R1"))], PARAMS_INVALID),
            (vec![("data", json!({}))], PARAMS_INVALID),
            (vec![("data", json!({"outRefundNo": 7}))], PARAMS_INVALID),
            (
                vec![("data", json!({"outRefundNo": "x".repeat(65)}))],
                PARAMS_INVALID,
            ),
        ] {
            assert_eq!(code(&over), Err(want), "{over:?}");
        }
        // Exactly two minutes either way is still accepted; any offset form is fine.
        for ok in ["2025-12-31T23:59:00.000Z", "2026-01-01T08:03:00.000+08:00"] {
            assert!(code(&[("requestTime", json!(ok))]).is_ok(), "{ok}");
        }
        assert_eq!(
            code(&[("data", json!({"refundTradeNo": "T1", "outRefundNo": ""}))]),
            Ok(QueryKey {
                out_refund_no: None,
                refund_trade_no: Some("T1".into())
            })
        );
    }
}
