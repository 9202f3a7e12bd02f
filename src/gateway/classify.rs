//! Turns one raw `/refundQuery` answer (HTTP status, `sign` header, body bytes) into a typed
//! [`QueryOutcome`]. Pure and network-free, so every rule is a table test.
//!
//! Order of trust (fact sheet §2.2, §3, §4):
//! 1. a non-2xx status is a retryable HTTP failure, whatever the body says;
//! 2. the body is parsed only far enough to read `code`;
//! 3. only for `APPLY_SUCCESS` is the `sign` header verified over the raw body, and only a
//!    verified body's `data` is parsed: strictly where it decides or is compared (refund
//!    number, known status, exact decimal amount, currency), leniently where it only informs
//!    (`refundTradeNo`, `refundFinishTime`): a value that cannot be read, or that the ledger
//!    cannot store ([`ObservedRefund::recordable`]), is dropped and named, never a reason to
//!    refuse the answer;
//! 4. every other code maps through [`classify_code`]. `msg` and `resultMsg` never decide.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::keys::{GatewayKey, SignatureError};
use crate::domain::{
    Currency, Dropped, ObservedRefund, QueryOutcome, RefundStatus, RetryReason, Timestamp,
    exact_decimal, parse_ts,
};

/// The only code that means the request was accepted (never what state the refund is in).
pub const APPLY_SUCCESS: &str = "APPLY_SUCCESS";

/// What a gateway `code` means for a `/refundQuery`, before looking at `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// `APPLY_SUCCESS`: verify the signature, then `data.status` decides.
    Success,
    /// The gateway does not know the refund (yet).
    Unknown,
    /// Worth retrying with backoff; says nothing about the refund.
    Retryable(RetryReason),
    /// Slow down.
    RateLimited,
    /// Our `requestTime` is more than 2 minutes off the gateway's clock.
    ClockSkew,
    /// Our configuration is wrong; querying should stop until a human fixes it.
    ConfigError,
    /// Checus refused this request, which can concern this one refund: the refund is flagged;
    /// querying halts only when the code repeats for several different refunds in a row.
    RequestRejected,
}

/// Maps a gateway `code` to its class. Exact, case-sensitive match on the documented spelling.
pub fn classify_code(code: &str) -> CodeClass {
    match code {
        APPLY_SUCCESS => CodeClass::Success,
        // Which of the two refundQuery returns for an unknown refund number is unconfirmed;
        // both mean "the gateway has no such refund (yet)".
        "ORDER_NOT_EXIST" | "REFUND_NO_INVALID" => CodeClass::Unknown,
        "SYSTEM_ERROR" => CodeClass::Retryable(RetryReason::SystemError),
        "REQUEST_TIMEOUT" => CodeClass::Retryable(RetryReason::RequestTimeout),
        "UNEXPECTED_ERROR" => CodeClass::Retryable(RetryReason::UnexpectedError),
        "TOO_MANY_REQUEST" => CodeClass::RateLimited,
        // The client reports it; the worker does the one immediate retry with a fresh
        // requestTime and halts if it repeats.
        "REQ_TIME_OVER_TIME" => CodeClass::ClockSkew,
        // Codes that can only mean our configuration (key, merchant, app, contract): every
        // refund would get the same answer, so querying stops at once.
        "SIGN_VERIFY_FAILED"
        | "MERCHANT_INVALID"
        | "MERCHANT_APP_INVALID"
        | "AUTHENTICATE_FAILED"
        | "CONTRACT_INVALID"
        | "ONBOARD_ERROR" => CodeClass::ConfigError,
        // "Parameter length or type invalid": it can concern one request's values, and so one
        // refund number (fact sheet §4), so it stops that refund, not the fleet. Resending the
        // same thing cannot succeed, so the refund is flagged and slowed down.
        "PARAMS_INVALID" => CodeClass::RequestRejected,
        // Everything else, deliberately including codes that belong to `/refund` or to
        // notifications (REFUND_INSUFFICIENT_BALANCE, ORDER_REPEAT, REFUND_FAILED,
        // PAYMENT_FAILED): on a query they are out of context, and a `code` is never a refund
        // state, so REFUND_FAILED here must not finalise anything. Halting (ConfigError) would
        // stop every refund over a code that says nothing about our configuration. Retrying
        // decides nothing, costs nothing, and `UnknownCode` makes the worker log it loudly.
        _ => CodeClass::Retryable(RetryReason::UnknownCode),
    }
}

/// One answer, classified, plus what the attempt log records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The typed outcome.
    pub outcome: QueryOutcome,
    /// The body's `code`, whenever it could be read (also for non-2xx answers, where it is
    /// recorded but does not decide anything).
    pub gateway_code: Option<String>,
    /// `data.status` as text, whenever a verified body had one (also an unknown value).
    pub data_status: Option<String>,
}

/// The top level of an answer. Only `code` is read before verification; `data` is kept as raw
/// text and looked at only after the signature checked out. `msg` is ignored on purpose.
/// A duplicated `code` or `data` key is a parse error (serde rejects duplicate fields), so no
/// two readers can disagree about which one counts.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// `data` of a verified `APPLY_SUCCESS`. Unlisted fields (`outTradeNo`, `resultMsg`, ...) are
/// ignored; the deciding and compared ones must have the documented JSON type; the
/// informative ones are kept raw and read leniently ([`informative_text`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    out_refund_no: String,
    #[serde(borrow)]
    refund_trade_no: Option<&'a RawValue>,
    #[serde(borrow)]
    refund_amount: &'a RawValue,
    refund_currency: String,
    #[serde(borrow)]
    status: &'a RawValue,
    #[serde(borrow)]
    refund_finish_time: Option<&'a RawValue>,
}

/// Classifies one raw answer. `sign_header` is the response's `sign` header, if any; `key` is
/// the gateway public key. Never panics; every oddity is an outcome.
pub fn classify(
    http_status: u16,
    sign_header: Option<&str>,
    body: &[u8],
    key: &GatewayKey,
) -> Classified {
    let head = serde_json::from_slice::<Head<'_>>(body);
    let gateway_code = head
        .as_ref()
        .ok()
        .and_then(|h| h.code.as_deref())
        .map(str::to_owned);

    if !(200..300).contains(&http_status) {
        // 3xx included: redirects are never followed (a signed request must not be replayed
        // to wherever a Location header points).
        return Classified {
            outcome: retry(
                RetryReason::HttpStatus,
                format!("HTTP status {http_status}"),
            ),
            gateway_code,
            data_status: None,
        };
    }
    let head = match head {
        Ok(head) => head,
        Err(e) => {
            return Classified {
                outcome: malformed(format!("answer is not the expected JSON object: {e}")),
                gateway_code: None,
                data_status: None,
            };
        }
    };
    let Some(code) = head.code.as_deref() else {
        return Classified {
            outcome: malformed("answer has no code".to_owned()),
            gateway_code: None,
            data_status: None,
        };
    };
    let code_owned = || code.to_owned();
    let outcome = match classify_code(code) {
        CodeClass::Success => {
            return classify_success(sign_header, body, head.data, key, code_owned());
        }
        CodeClass::Unknown => QueryOutcome::Unknown { code: code_owned() },
        CodeClass::Retryable(RetryReason::UnknownCode) => retry(
            RetryReason::UnknownCode,
            format!("unknown gateway code {:?}", truncate(code, 64)),
        ),
        CodeClass::Retryable(reason) => retry(reason, format!("gateway code {code}")),
        CodeClass::RateLimited => QueryOutcome::RateLimited,
        CodeClass::ClockSkew => QueryOutcome::ClockSkew,
        CodeClass::ConfigError => QueryOutcome::ConfigError { code: code_owned() },
        CodeClass::RequestRejected => QueryOutcome::RequestRejected { code: code_owned() },
    };
    Classified {
        outcome,
        gateway_code,
        data_status: None,
    }
}

/// `APPLY_SUCCESS`: verify first, then parse `data` strictly.
fn classify_success(
    sign_header: Option<&str>,
    body: &[u8],
    data: Option<&RawValue>,
    key: &GatewayKey,
    code: String,
) -> Classified {
    let mut classified = Classified {
        outcome: QueryOutcome::RateLimited, // overwritten on every path below
        gateway_code: Some(code),
        data_status: None,
    };
    let verified = match sign_header {
        None => Err("APPLY_SUCCESS answer has no sign header"),
        Some(sign) => key.verify_b64(body, sign).map_err(|e| match e {
            SignatureError::NotBase64 => "sign header is not standard base64",
            SignatureError::Invalid => "sign header does not verify over the answer body",
        }),
    };
    if let Err(why) = verified {
        classified.outcome = retry(RetryReason::Unverified, why.to_owned());
        return classified;
    }
    let Some(data) = data else {
        classified.outcome = malformed("APPLY_SUCCESS answer has no data".to_owned());
        return classified;
    };
    classified.outcome = match parse_data(data, &mut classified.data_status) {
        Ok(observed) if observed.status.is_final() => QueryOutcome::Final(observed),
        Ok(observed) => QueryOutcome::Pending(observed),
        Err(detail) => malformed(detail),
    };
    classified
}

/// Parses verified `data` into an [`ObservedRefund`]; the error is the attempt-log detail.
/// Records `data.status` text in `status_text` as soon as it is known to be a string.
fn parse_data(data: &RawValue, status_text: &mut Option<String>) -> Result<ObservedRefund, String> {
    let data: Data<'_> =
        serde_json::from_str(data.get()).map_err(|e| format!("data does not parse: {e}"))?;
    let status: String = serde_json::from_str(data.status.get())
        .map_err(|_| "data.status is not a string".to_owned())?;
    *status_text = Some(status.clone());
    let status: RefundStatus = status.parse().map_err(|_| {
        format!(
            "data.status {:?} is not a known status",
            truncate(&status, 32)
        )
    })?;
    let amount = parse_amount(data.refund_amount.get())?;
    let currency = Currency::parse(&data.refund_currency).map_err(|_| {
        format!(
            "data.refundCurrency {:?} is not an ISO 4217 code",
            truncate(&data.refund_currency, 8)
        )
    })?;
    let mut dropped = Vec::new();
    let refund_trade_no =
        informative_text("data.refundTradeNo", data.refund_trade_no, &mut dropped);
    let refund_finish_time = parse_finish_time(data.refund_finish_time, &mut dropped);
    let observed = ObservedRefund {
        out_refund_no: data.out_refund_no,
        refund_trade_no,
        amount,
        currency,
        status,
        refund_finish_time,
        dropped,
    };
    Ok(observed.recordable())
}

/// Parses the raw text of `data.refundAmount` exactly. It must be a JSON *number*: a string,
/// `null` or anything else is malformed. Never goes through `f64`: `10.50` stays `10.50`.
/// Exponent forms (`1.05E1`, as a Java `BigDecimal` may print) are expanded exactly too; a value
/// a `Decimal` cannot hold exactly is malformed, never rounded.
pub fn parse_amount(raw: &str) -> Result<Decimal, String> {
    let raw = raw.trim();
    let is_number = raw
        .as_bytes()
        .first()
        .is_some_and(|&b| b == b'-' || b.is_ascii_digit());
    if !is_number {
        return Err(format!(
            "data.refundAmount must be a JSON number, got {}",
            json_kind(raw)
        ));
    }
    // Never `Decimal::from_scientific`: it rounds a mantissa longer than 28 digits, and
    // `12.4999999999999999999999999999999e0` once finalized a 12.50 refund that way.
    exact_decimal(raw).map_err(|e| {
        format!(
            "data.refundAmount {} is not an exact decimal: {}",
            truncate(raw, 40),
            e.reason
        )
    })
}

/// An informative string field, read leniently: absent or `null` is `None`; a string is kept
/// (for [`ObservedRefund::recordable`] to check); any other JSON type is dropped and named.
fn informative_text(
    field: &'static str,
    raw: Option<&RawValue>,
    dropped: &mut Vec<Dropped>,
) -> Option<String> {
    let raw = raw?.get();
    match serde_json::from_str::<Option<String>>(raw) {
        Ok(text) => text,
        Err(_) => {
            dropped.push(Dropped::new(
                field,
                format!("must be a JSON string, got {}", json_kind(raw)),
            ));
            None
        }
    }
}

/// `refundFinishTime`: absent, `null` or `""` mean "not finished"; anything else should be
/// RFC 3339 with an offset, and is dropped and named when it is not (it only informs).
fn parse_finish_time(raw: Option<&RawValue>, dropped: &mut Vec<Dropped>) -> Option<Timestamp> {
    const FIELD: &str = "data.refundFinishTime";
    let text = informative_text(FIELD, raw, dropped).filter(|t| !t.is_empty())?;
    match parse_ts(&text) {
        Ok(at) => Some(at),
        Err(_) => {
            dropped.push(Dropped::new(
                FIELD,
                format!("{:?} is not an RFC 3339 time", truncate(&text, 40)),
            ));
            None
        }
    }
}

/// A word for the JSON type of a raw value, for error details.
fn json_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "something else",
    }
}

/// At most `max` characters of `text`, so gateway-supplied text cannot bloat the attempt log.
fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}...", &text[..cut])),
    }
}

fn retry(reason: RetryReason, detail: String) -> QueryOutcome {
    QueryOutcome::Retryable { reason, detail }
}

fn malformed(detail: String) -> QueryOutcome {
    retry(RetryReason::Malformed, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::keys::MerchantKey;

    const GATEWAY_PRIVATE: &str =
        include_str!("../../testdata/INSECURE-test-keys/gateway_private.pem");
    const GATEWAY_PUBLIC: &str =
        include_str!("../../testdata/INSECURE-test-keys/gateway_public.b64");
    const STRANGER_PRIVATE: &str =
        include_str!("../../testdata/INSECURE-test-keys/stranger_private.pem");

    fn gateway_signer() -> MerchantKey {
        MerchantKey::from_text(GATEWAY_PRIVATE).unwrap()
    }

    fn key() -> GatewayKey {
        GatewayKey::from_text(GATEWAY_PUBLIC).unwrap()
    }

    fn success_body(data: &str) -> String {
        format!(r#"{{"code":"APPLY_SUCCESS","msg":"Success.","data":{data}}}"#)
    }

    const DATA_SUCCESS: &str = r#"{"outRefundNo":"R1","refundTradeNo":"T1","refundAmount":10.50,"refundCurrency":"USD","outTradeNo":"O1","status":"REFUND_SUCCESS","resultMsg":"","refundFinishTime":"2023-10-20T03:28:23.092Z"}"#;

    /// Classifies `body` as a 200 answer signed by the gateway key.
    fn signed(body: &str) -> Classified {
        let sign = gateway_signer().sign_b64(body.as_bytes());
        classify(200, Some(&sign), body.as_bytes(), &key())
    }

    fn observed(c: &Classified) -> &ObservedRefund {
        match &c.outcome {
            QueryOutcome::Final(o) | QueryOutcome::Pending(o) => o,
            other => panic!("expected a verified answer, got {other:?}"),
        }
    }

    fn reason(c: &Classified) -> RetryReason {
        match &c.outcome {
            QueryOutcome::Retryable { reason, .. } => *reason,
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    /// Every code the fact sheet mentions, and what it must map to.
    const CODE_TABLE: &[(&str, CodeClass)] = &[
        ("APPLY_SUCCESS", CodeClass::Success),
        ("ORDER_NOT_EXIST", CodeClass::Unknown),
        ("REFUND_NO_INVALID", CodeClass::Unknown),
        (
            "SYSTEM_ERROR",
            CodeClass::Retryable(RetryReason::SystemError),
        ),
        (
            "REQUEST_TIMEOUT",
            CodeClass::Retryable(RetryReason::RequestTimeout),
        ),
        (
            "UNEXPECTED_ERROR",
            CodeClass::Retryable(RetryReason::UnexpectedError),
        ),
        ("TOO_MANY_REQUEST", CodeClass::RateLimited),
        ("REQ_TIME_OVER_TIME", CodeClass::ClockSkew),
        ("SIGN_VERIFY_FAILED", CodeClass::ConfigError),
        ("MERCHANT_INVALID", CodeClass::ConfigError),
        ("MERCHANT_APP_INVALID", CodeClass::ConfigError),
        ("PARAMS_INVALID", CodeClass::RequestRejected),
        ("AUTHENTICATE_FAILED", CodeClass::ConfigError),
        ("CONTRACT_INVALID", CodeClass::ConfigError),
        ("ONBOARD_ERROR", CodeClass::ConfigError),
        // /refund and notification codes: out of context on a query.
        (
            "REFUND_INSUFFICIENT_BALANCE",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        (
            "ORDER_REPEAT",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        (
            "REFUND_FAILED",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        (
            "PAYMENT_FAILED",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        // The notification ack code and the Java SDK's local error are not gateway answers.
        ("SUCCESS", CodeClass::Retryable(RetryReason::UnknownCode)),
        (
            "CHECK_SIGN_ERROR",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        // Not documented at all, or not the exact spelling.
        (
            "SOMETHING_NEW",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        (
            "apply_success",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        (
            " APPLY_SUCCESS",
            CodeClass::Retryable(RetryReason::UnknownCode),
        ),
        ("", CodeClass::Retryable(RetryReason::UnknownCode)),
    ];

    #[test]
    fn every_code_maps_to_its_class() {
        for &(code, class) in CODE_TABLE {
            assert_eq!(classify_code(code), class, "{code}");
        }
    }

    #[test]
    fn every_non_success_code_classifies_without_a_signature() {
        for &(code, class) in CODE_TABLE {
            if class == CodeClass::Success {
                continue;
            }
            let body = format!(r#"{{"code":"{code}","msg":"whatever"}}"#);
            let c = classify(200, None, body.as_bytes(), &key());
            assert_eq!(c.gateway_code.as_deref(), Some(code));
            assert_eq!(c.data_status, None);
            let ok = match (class, &c.outcome) {
                (CodeClass::Unknown, QueryOutcome::Unknown { code: got }) => got == code,
                (CodeClass::ConfigError, QueryOutcome::ConfigError { code: got }) => got == code,
                (CodeClass::RequestRejected, QueryOutcome::RequestRejected { code: got }) => {
                    got == code
                }
                (CodeClass::RateLimited, QueryOutcome::RateLimited) => true,
                (CodeClass::ClockSkew, QueryOutcome::ClockSkew) => true,
                (CodeClass::Retryable(want), QueryOutcome::Retryable { reason, .. }) => {
                    *reason == want
                }
                _ => false,
            };
            assert!(ok, "{code}: {:?}", c.outcome);
        }
    }

    #[test]
    fn msg_and_result_msg_never_decide() {
        let c = classify(
            200,
            None,
            br#"{"code":"SYSTEM_ERROR","msg":"APPLY_SUCCESS","data":{"status":"REFUND_SUCCESS"}}"#,
            &key(),
        );
        assert_eq!(reason(&c), RetryReason::SystemError);
        let data = r#"{"outRefundNo":"R1","refundAmount":1,"refundCurrency":"USD","status":"REFUND_PENDING","resultMsg":"REFUND_SUCCESS"}"#;
        let c = signed(&success_body(data));
        assert!(matches!(c.outcome, QueryOutcome::Pending(_)), "{c:?}");
    }

    #[test]
    fn verified_success_is_final_with_exact_fields() {
        let c = signed(&success_body(DATA_SUCCESS));
        assert!(matches!(c.outcome, QueryOutcome::Final(_)), "{c:?}");
        assert_eq!(c.gateway_code.as_deref(), Some("APPLY_SUCCESS"));
        assert_eq!(c.data_status.as_deref(), Some("REFUND_SUCCESS"));
        let o = observed(&c);
        assert_eq!(o.out_refund_no, "R1");
        assert_eq!(o.refund_trade_no.as_deref(), Some("T1"));
        assert_eq!(o.amount.to_string(), "10.50");
        assert_eq!(o.amount, Decimal::new(1050, 2));
        assert_eq!(o.currency.as_str(), "USD");
        assert_eq!(o.status, RefundStatus::Success);
        assert_eq!(
            o.refund_finish_time,
            Some(parse_ts("2023-10-20T03:28:23.092Z").unwrap())
        );
    }

    #[test]
    fn statuses_map_to_final_or_pending() {
        for (status, is_final) in [
            ("REFUND_SUCCESS", true),
            ("REFUND_FAILED", true),
            ("REFUND_PENDING", false),
        ] {
            let data = format!(
                r#"{{"outRefundNo":"R1","refundAmount":5,"refundCurrency":"EUR","status":"{status}"}}"#
            );
            let c = signed(&success_body(&data));
            assert_eq!(
                matches!(c.outcome, QueryOutcome::Final(_)),
                is_final,
                "{c:?}"
            );
            assert_eq!(
                matches!(c.outcome, QueryOutcome::Pending(_)),
                !is_final,
                "{c:?}"
            );
            assert_eq!(observed(&c).status.as_str(), status);
            assert_eq!(observed(&c).refund_trade_no, None);
        }
    }

    #[test]
    fn refund_finish_time_absent_null_or_empty_is_none() {
        for finish in [
            "",
            r#","refundFinishTime":null"#,
            r#","refundFinishTime":"""#,
        ] {
            let data = format!(
                r#"{{"outRefundNo":"R1","refundAmount":5,"refundCurrency":"EUR","status":"REFUND_PENDING"{finish}}}"#
            );
            let c = signed(&success_body(&data));
            assert_eq!(observed(&c).refund_finish_time, None, "{finish}");
        }
        let data = r#"{"outRefundNo":"R1","refundAmount":5,"refundCurrency":"EUR","status":"REFUND_SUCCESS","refundFinishTime":"2023-10-20T11:28:23.092+08:00"}"#;
        assert_eq!(
            observed(&signed(&success_body(data))).refund_finish_time,
            Some(parse_ts("2023-10-20T03:28:23.092Z").unwrap())
        );
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let cases = [
            ("10.50", "10.50"),
            ("0.1", "0.1"),
            ("0.2", "0.2"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("12345678901234567.8901", "12345678901234567.8901"),
            ("15000", "15000"),
            ("1.05E1", "10.5"),
            ("0", "0"),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_amount(raw).unwrap().to_string(), expected, "{raw}");
        }
        // 0.1 + 0.2 == 0.3 exactly, which f64 would get wrong.
        let sum = parse_amount("0.1").unwrap() + parse_amount("0.2").unwrap();
        assert_eq!(sum, parse_amount("0.3").unwrap());
        for raw in [
            r#""10.50""#,
            "null",
            "true",
            "{}",
            "[1]",
            "1e999",
            "12.4999999999999999999999999999999e0",
            "12.4999999999999999999999999999999",
        ] {
            assert!(parse_amount(raw).is_err(), "{raw} accepted");
        }
    }

    #[test]
    fn amounts_survive_the_whole_path_exactly() {
        for (raw, expected) in [("0.1", "0.1"), ("0.2", "0.2"), ("10.50", "10.50")] {
            let data = format!(
                r#"{{"outRefundNo":"R1","refundAmount":{raw},"refundCurrency":"USD","status":"REFUND_SUCCESS"}}"#
            );
            assert_eq!(
                observed(&signed(&success_body(&data))).amount.to_string(),
                expected
            );
        }
    }

    #[test]
    fn unverified_success_is_never_trusted() {
        let body = success_body(DATA_SUCCESS);
        let other = success_body(&DATA_SUCCESS.replace("10.50", "10.51"));
        let stranger = MerchantKey::from_text(STRANGER_PRIVATE).unwrap();
        let good_sign = gateway_signer().sign_b64(body.as_bytes());
        let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
            ("no sign header", None, body.clone().into_bytes()),
            (
                "sign over a different body",
                Some(gateway_signer().sign_b64(other.as_bytes())),
                body.clone().into_bytes(),
            ),
            (
                "signed by the stranger key",
                Some(stranger.sign_b64(body.as_bytes())),
                body.clone().into_bytes(),
            ),
            ("empty sign", Some(String::new()), body.clone().into_bytes()),
            (
                "not base64",
                Some("***".to_owned()),
                body.clone().into_bytes(),
            ),
            (
                "body with a trailing newline",
                Some(good_sign.clone()),
                format!("{body}\n").into_bytes(),
            ),
            (
                "body with one byte changed",
                Some(good_sign.clone()),
                body.replace("10.50", "10.59").into_bytes(),
            ),
        ];
        for (name, sign, bytes) in cases {
            let c = classify(200, sign.as_deref(), &bytes, &key());
            assert_eq!(reason(&c), RetryReason::Unverified, "{name}");
            assert_eq!(c.gateway_code.as_deref(), Some("APPLY_SUCCESS"), "{name}");
            assert_eq!(c.data_status, None, "{name}: data read before verification");
        }
        // Sanity: the untampered pair does verify.
        assert!(matches!(
            classify(200, Some(&good_sign), body.as_bytes(), &key()).outcome,
            QueryOutcome::Final(_)
        ));
    }

    #[test]
    fn malformed_verified_answers() {
        let with = |field: &str, value: &str| {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(DATA_SUCCESS).unwrap();
            v.remove(field);
            let mut text = serde_json::to_string(&v).unwrap();
            if !value.is_empty() {
                text.pop();
                text.push_str(&format!(r#","{field}":{value}}}"#));
            }
            success_body(&text)
        };
        let cases = [
            ("amount as string", with("refundAmount", r#""10.50""#)),
            ("amount null", with("refundAmount", "null")),
            ("amount missing", with("refundAmount", "")),
            (
                "amount only roundable (issue 10 part 7)",
                with("refundAmount", "12.4999999999999999999999999999999e0"),
            ),
            ("amount exponent too large", with("refundAmount", "1e65")),
            ("status as number", with("status", "1")),
            ("status unknown", with("status", r#""REFUND_DONE""#)),
            ("status lower case", with("status", r#""refund_success""#)),
            ("status missing", with("status", "")),
            ("currency lower case", with("refundCurrency", r#""usd""#)),
            ("currency number", with("refundCurrency", "840")),
            ("outRefundNo missing", with("outRefundNo", "")),
            ("outRefundNo number", with("outRefundNo", "7")),
            (
                "data missing",
                r#"{"code":"APPLY_SUCCESS","msg":""}"#.to_owned(),
            ),
            (
                "data null",
                r#"{"code":"APPLY_SUCCESS","data":null}"#.to_owned(),
            ),
            (
                "data a string",
                r#"{"code":"APPLY_SUCCESS","data":"{}"}"#.to_owned(),
            ),
            (
                "data an array",
                r#"{"code":"APPLY_SUCCESS","data":[]}"#.to_owned(),
            ),
        ];
        for (name, body) in cases {
            let c = signed(&body);
            assert_eq!(reason(&c), RetryReason::Malformed, "{name}: {body}");
        }
        let unknown = signed(&with("status", r#""REFUND_DONE""#));
        assert_eq!(unknown.data_status.as_deref(), Some("REFUND_DONE"));
    }

    /// `data` of [`DATA_SUCCESS`] with `field` replaced by the raw JSON `value`.
    fn data_with(field: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(DATA_SUCCESS).unwrap();
        v.insert(field.to_owned(), serde_json::from_str(value).unwrap());
        serde_json::to_string(&v).unwrap()
    }

    /// Informative fields never refuse a verified answer: a value that cannot be read, or that
    /// the ledger cannot store, is dropped and named, and the status still decides.
    #[test]
    fn informative_values_that_cannot_be_kept_are_dropped_and_named() {
        let t65 = format!(r#""{}""#, "T".repeat(65));
        let cases = [
            (
                "refundTradeNo",
                t65.as_str(),
                "data.refundTradeNo dropped: 65 characters, the ledger stores at most 64",
            ),
            (
                "refundTradeNo",
                r#""T\u001b[31m1""#,
                r#"data.refundTradeNo dropped: "T\u{1b}[31m1" contains the control character \u{1b}"#,
            ),
            (
                "refundTradeNo",
                "42",
                "data.refundTradeNo dropped: must be a JSON string, got a number",
            ),
            (
                "refundFinishTime",
                r#""9999-12-31T23:30:00.000-05:00""#,
                "data.refundFinishTime dropped: +10000-01-01T04:30:00.000Z is past year 9999, \
                 the last the ledger stores",
            ),
            (
                "refundFinishTime",
                r#""yesterday""#,
                r#"data.refundFinishTime dropped: "yesterday" is not an RFC 3339 time"#,
            ),
            (
                "refundFinishTime",
                "1700000000",
                "data.refundFinishTime dropped: must be a JSON string, got a number",
            ),
            (
                "refundFinishTime",
                "{}",
                "data.refundFinishTime dropped: must be a JSON string, got an object",
            ),
        ];
        for (field, value, text) in cases {
            let c = signed(&success_body(&data_with(field, value)));
            let QueryOutcome::Final(o) = &c.outcome else {
                panic!("{field}={value}: {:?}", c.outcome)
            };
            assert_eq!(o.status, RefundStatus::Success, "{field}={value}");
            assert_eq!(o.amount, Decimal::new(1050, 2), "{field}={value}");
            assert_eq!(
                c.outcome.dropped_text().as_deref(),
                Some(text),
                "{field}={value}"
            );
            match field {
                "refundTradeNo" => {
                    assert_eq!(o.refund_trade_no, None);
                    assert!(o.refund_finish_time.is_some(), "the other field is kept");
                }
                _ => {
                    assert_eq!(o.refund_finish_time, None);
                    assert_eq!(
                        o.refund_trade_no.as_deref(),
                        Some("T1"),
                        "the other is kept"
                    );
                }
            }
        }
        // A pending answer loses its value the same way; null and "" are simply absent.
        let pending = data_with("status", r#""REFUND_PENDING""#);
        let c = signed(&success_body(&pending.replace(r#""T1""#, &t65)));
        assert!(matches!(c.outcome, QueryOutcome::Pending(_)), "{c:?}");
        assert!(
            c.outcome
                .dropped_text()
                .unwrap()
                .starts_with("data.refundTradeNo dropped")
        );
        for value in ["null", r#""""#] {
            let c = signed(&success_body(&data_with("refundTradeNo", value)));
            assert_eq!(observed(&c).refund_trade_no, None, "{value}");
            assert!(observed(&c).dropped.is_empty(), "{value}");
        }
        // The deciding refund number stays exact, however odd: `decide` compares it.
        let odd = format!(r#""R\u001b{}""#, "R".repeat(70));
        let c = signed(&success_body(&data_with("outRefundNo", &odd)));
        assert_eq!(
            observed(&c).out_refund_no,
            format!("R\u{1b}{}", "R".repeat(70))
        );
        assert!(observed(&c).dropped.is_empty());
    }

    #[test]
    fn malformed_unsigned_answers() {
        let cases: [&[u8]; 11] = [
            b"",
            b"<html>busy</html>",
            b"null",
            b"[]",
            b"\"APPLY_SUCCESS\"",
            br#"{"msg":"no code"}"#,
            br#"{"code":null}"#,
            br#"{"code":7}"#,
            br#"{"code":"APPLY_SUCCESS""#,
            br#"{"code":"SYSTEM_ERROR","code":"APPLY_SUCCESS"}"#,
            b"{\"code\":\"\xff\"}",
        ];
        for body in cases {
            let c = classify(200, None, body, &key());
            assert_eq!(
                reason(&c),
                RetryReason::Malformed,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn non_2xx_is_http_status_whatever_the_body() {
        let body = success_body(DATA_SUCCESS);
        let sign = gateway_signer().sign_b64(body.as_bytes());
        for status in [
            100, 199, 204, 299, 300, 301, 302, 304, 400, 404, 429, 500, 502, 503,
        ] {
            let c = classify(status, Some(&sign), body.as_bytes(), &key());
            if (200..300).contains(&status) {
                assert!(matches!(c.outcome, QueryOutcome::Final(_)), "{status}");
            } else {
                assert_eq!(reason(&c), RetryReason::HttpStatus, "{status}");
                assert_eq!(c.gateway_code.as_deref(), Some("APPLY_SUCCESS"));
                assert_eq!(c.data_status, None);
            }
        }
        let c = classify(503, None, b"<html>down</html>", &key());
        assert_eq!(reason(&c), RetryReason::HttpStatus);
        assert_eq!(c.gateway_code, None);
    }

    #[test]
    fn details_are_short_and_quote_no_signature() {
        let long_code = "X".repeat(500);
        let body = format!(r#"{{"code":"{long_code}"}}"#);
        let c = classify(200, None, body.as_bytes(), &key());
        match c.outcome {
            QueryOutcome::Retryable { detail, .. } => assert!(detail.len() < 120, "{detail}"),
            other => panic!("{other:?}"),
        }
        let body = success_body(DATA_SUCCESS);
        let bad_sign = MerchantKey::from_text(STRANGER_PRIVATE)
            .unwrap()
            .sign_b64(body.as_bytes());
        match classify(200, Some(&bad_sign), body.as_bytes(), &key()).outcome {
            QueryOutcome::Retryable { detail, .. } => assert!(!detail.contains(&bad_sign[..16])),
            other => panic!("{other:?}"),
        }
    }
}
