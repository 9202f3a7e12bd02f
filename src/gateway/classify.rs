//! Turns one raw `/refundQuery` answer (HTTP status, `sign` header, body bytes) into a typed
//! [`QueryOutcome`]. Pure and network-free, so every rule is a table test.
//!
//! Strict where it decides, tolerant where it informs (issue 11; fact sheet §2.2, §3, §4):
//! 1. the body is read whatever the HTTP status: a non-2xx answer whose body is a JSON object
//!    with a `code` is classified by that code, as the Java SDK does; without a readable code
//!    it is a retryable HTTP failure; a non-2xx answer is never trusted for a status;
//! 2. the body is parsed only far enough to read `code`;
//! 3. only for `APPLY_SUCCESS` (on a 2xx) is the `sign` header verified over the raw body (its
//!    base64 padding may be missing), and only a verified body's `data` is parsed. It decides
//!    by `data.status` (trimmed; an unknown value is not final) and by `data.outRefundNo`,
//!    which must match when present; everything else only informs and is read by
//!    [`super::reader`]: absent or unreadable is named in [`ObservedRefund::unconfirmed`], a
//!    value the ledger cannot store is dropped and named ([`ObservedRefund::recordable`]),
//!    and neither is a reason to refuse the answer;
//! 4. every other code maps through [`classify_code`]. `msg` and `resultMsg` never decide.

use std::borrow::Cow;

use chrono::FixedOffset;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::keys::{GatewayKey, SignatureError};
use super::reader::{self, Read, json_kind};
use crate::domain::{ObservedRefund, QueryOutcome, RefundStatus, RetryReason, Unconfirmed};

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

/// A refund's `data` object as Checus sends it, in a query answer or a notification, kept raw
/// field by field: `status` and `outRefundNo` are read strictly (here in [`parse_data`], and
/// by the notification endpoint), the informative ones tolerantly ([`super::reader`]).
/// Unlisted fields (`outTradeNo`, `resultMsg`, ...) are ignored; `null` is the same as absent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Data<'a> {
    #[serde(borrow)]
    pub(crate) out_refund_no: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) refund_trade_no: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) refund_amount: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) refund_currency: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) status: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) refund_finish_time: Option<&'a RawValue>,
}

/// Classifies one raw answer. `sign_header` is the response's `sign` header, if any; `key` is
/// the gateway public key. A time without an offset is read as UTC ([`classify_with`] takes
/// the zone). Never panics; every oddity is an outcome.
pub fn classify(
    http_status: u16,
    sign_header: Option<&str>,
    body: &[u8],
    key: &GatewayKey,
) -> Classified {
    classify_with(
        http_status,
        sign_header,
        body,
        key,
        FixedOffset::east_opt(0).expect("UTC"),
    )
}

/// [`classify`], reading a `refundFinishTime` that names no offset as a time in
/// `naive_time_offset` (the setting `gateway.naive_time_offset`).
pub fn classify_with(
    http_status: u16,
    sign_header: Option<&str>,
    body: &[u8],
    key: &GatewayKey,
    naive_time_offset: FixedOffset,
) -> Classified {
    let head = serde_json::from_slice::<Head<'_>>(body);
    let is_2xx = (200..300).contains(&http_status);
    if !is_2xx {
        return classify_error_status(http_status, head.ok().and_then(|h| h.code));
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
    if classify_code(code) == CodeClass::Success {
        return classify_success(
            sign_header,
            body,
            head.data,
            key,
            code.to_owned(),
            naive_time_offset,
        );
    }
    Classified {
        outcome: outcome_of_code(code),
        gateway_code: Some(code.to_owned()),
        data_status: None,
    }
}

/// A non-2xx answer (3xx included: redirects are never followed, because a signed request must
/// not be replayed to wherever a Location header points). Its body is read whatever the
/// status, as the Java SDK does: a JSON object with a `code` is classified by that code (a 500
/// carrying `SYSTEM_ERROR` is `SYSTEM_ERROR`, a 400 carrying `SIGN_VERIFY_FAILED` halts).
/// Without a readable code it stays a retryable `http_status` failure, and so does
/// `APPLY_SUCCESS`: an error answer is never trusted for a status, signed or not, so its
/// signature is not even looked at.
fn classify_error_status(http_status: u16, code: Option<Cow<'_, str>>) -> Classified {
    let gateway_code = code.map(Cow::into_owned);
    let outcome = match gateway_code.as_deref() {
        Some(code) if classify_code(code) != CodeClass::Success => outcome_of_code(code),
        Some(_) => retry(
            RetryReason::HttpStatus,
            format!("HTTP status {http_status} with code APPLY_SUCCESS is not trusted"),
        ),
        None => retry(
            RetryReason::HttpStatus,
            format!("HTTP status {http_status}"),
        ),
    };
    Classified {
        outcome,
        gateway_code,
        data_status: None,
    }
}

/// The outcome of a code that is not `APPLY_SUCCESS`, whatever the HTTP status carried it.
fn outcome_of_code(code: &str) -> QueryOutcome {
    match classify_code(code) {
        // Callers handle APPLY_SUCCESS before; were one to slip through, it decides nothing.
        CodeClass::Success => malformed("APPLY_SUCCESS read as an error code".to_owned()),
        CodeClass::Unknown => QueryOutcome::Unknown {
            code: code.to_owned(),
        },
        CodeClass::Retryable(RetryReason::UnknownCode) => retry(
            RetryReason::UnknownCode,
            format!("unknown gateway code {:?}", truncate(code, 64)),
        ),
        CodeClass::Retryable(reason) => retry(reason, format!("gateway code {code}")),
        CodeClass::RateLimited => QueryOutcome::RateLimited,
        CodeClass::ClockSkew => QueryOutcome::ClockSkew,
        CodeClass::ConfigError => QueryOutcome::ConfigError {
            code: code.to_owned(),
        },
        CodeClass::RequestRejected => QueryOutcome::RequestRejected {
            code: code.to_owned(),
        },
    }
}

/// `APPLY_SUCCESS`: verify first, then parse `data`.
fn classify_success(
    sign_header: Option<&str>,
    body: &[u8],
    data: Option<&RawValue>,
    key: &GatewayKey,
    code: String,
    naive_time_offset: FixedOffset,
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
    classified.outcome = match parse_data(data, &mut classified.data_status, naive_time_offset) {
        Ok(observed) if observed.status.is_final() => QueryOutcome::Final(observed),
        Ok(observed) => QueryOutcome::Pending(observed),
        Err(detail) => malformed(detail),
    };
    classified
}

/// Parses verified `data` into an [`ObservedRefund`]; the error is the attempt-log detail.
/// Records `data.status` text in `status_text` as soon as it is known to be a string.
///
/// Strict where it decides: `status` must be a string naming a known status once surrounding
/// whitespace is trimmed (the OpenAPI enum itself has `"REFUND_PENDING\t"`), and
/// `outRefundNo`, when present, must be a string (`decide` then compares it exactly).
/// Tolerant where it informs ([`super::reader`]): what is absent or unreadable is named in
/// [`ObservedRefund::unconfirmed`] and never refuses the answer.
fn parse_data(
    data: &RawValue,
    status_text: &mut Option<String>,
    naive_time_offset: FixedOffset,
) -> Result<ObservedRefund, String> {
    let data: Data<'_> =
        serde_json::from_str(data.get()).map_err(|e| format!("data does not parse: {e}"))?;
    let status = data.status.ok_or("data.status is missing")?;
    let status: String =
        serde_json::from_str(status.get()).map_err(|_| "data.status is not a string".to_owned())?;
    *status_text = Some(status.clone());
    let status: RefundStatus = status.trim().parse().map_err(|_| {
        format!(
            "data.status {:?} is not a known status",
            truncate(&status, 32)
        )
    })?;
    let out_refund_no = match data.out_refund_no {
        None => None,
        Some(raw) => Some(serde_json::from_str::<String>(raw.get()).map_err(|_| {
            format!(
                "data.outRefundNo must be a string, got {}",
                json_kind(raw.get())
            )
        })?),
    };
    let mut unconfirmed = Vec::new();
    if out_refund_no.is_none() {
        unconfirmed.push(Unconfirmed::absent("data.outRefundNo"));
    }
    let amount = match reader::read_amount(data.refund_amount) {
        Read::Inexact(detail) => return Err(detail),
        read => noted("data.refundAmount", read, &mut unconfirmed),
    };
    let observed = ObservedRefund {
        out_refund_no,
        amount,
        currency: noted(
            "data.refundCurrency",
            reader::read_currency(data.refund_currency),
            &mut unconfirmed,
        ),
        refund_trade_no: noted(
            "data.refundTradeNo",
            reader::read_trade_no(data.refund_trade_no),
            &mut unconfirmed,
        ),
        refund_finish_time: match reader::read_finish_time(
            data.refund_finish_time,
            naive_time_offset,
        ) {
            // Absent while pending is the normal case (the refund has not finished), not news.
            Read::Absent if !status.is_final() => None,
            read => noted("data.refundFinishTime", read, &mut unconfirmed),
        },
        status,
        unconfirmed,
        dropped: Vec::new(),
    };
    Ok(observed.recordable())
}

/// The value of an informative field, or `None` with the field named in `unconfirmed` (absent,
/// or unreadable and why).
fn noted<T>(field: &'static str, read: Read<T>, unconfirmed: &mut Vec<Unconfirmed>) -> Option<T> {
    match read {
        Read::Value(value) => Some(value),
        Read::Absent => {
            unconfirmed.push(Unconfirmed::absent(field));
            None
        }
        Read::Unreadable(why) | Read::Inexact(why) => {
            unconfirmed.push(Unconfirmed::unreadable(field, why));
            None
        }
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
    use crate::domain::parse_ts;
    use crate::gateway::keys::MerchantKey;
    use rust_decimal::Decimal;

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
        assert_eq!(o.out_refund_no.as_deref(), Some("R1"));
        assert_eq!(o.refund_trade_no.as_deref(), Some("T1"));
        assert_eq!(o.amount.unwrap().to_string(), "10.50");
        assert_eq!(o.amount, Some(Decimal::new(1050, 2)));
        assert_eq!(o.currency.unwrap().as_str(), "USD");
        assert!(o.unconfirmed.is_empty(), "{o:?}");
        assert_eq!(c.outcome.notes_text(), None);
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
            // Surrounding whitespace is trimmed: the OpenAPI enum itself has a trailing tab.
            ("REFUND_PENDING\\t", false),
            (" REFUND_SUCCESS\\n", true),
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
            assert_eq!(
                observed(&c).status.as_str(),
                status.split('\\').next().unwrap().trim()
            );
            assert_eq!(observed(&c).refund_trade_no, None);
            assert_eq!(
                c.data_status.as_deref(),
                Some(status.replace("\\t", "\t").replace("\\n", "\n").as_str()),
                "the attempt log keeps the status as received"
            );
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
    fn amounts_are_exact_decimals_as_numbers_or_strings() {
        let cases = [
            ("10.50", "10.50"),
            ("0.1", "0.1"),
            ("0.2", "0.2"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("12345678901234567.8901", "12345678901234567.8901"),
            ("15000", "15000"),
            ("1.05E1", "10.5"),
            ("0", "0"),
            (r#""10.50""#, "10.50"),
            (r#""12.3400""#, "12.3400"),
        ];
        for (raw, expected) in cases {
            let data = data_raw("refundAmount", Some(raw));
            let c = signed(&success_body(&data));
            assert_eq!(
                observed(&c).amount.map(|a| a.to_string()).as_deref(),
                Some(expected),
                "{raw}"
            );
            assert_eq!(c.outcome.notes_text(), None, "{raw}");
        }
        // Never rounded: a definite amount a Decimal cannot hold exactly is not the ledger's
        // amount and must not become it, so the answer is refused (issue 10, part 7).
        for raw in [
            "1e999",
            "12.4999999999999999999999999999999e0",
            r#""12.4999999999999999999999999999999""#,
            "1e65",
        ] {
            let c = signed(&success_body(&data_raw("refundAmount", Some(raw))));
            assert_eq!(reason(&c), RetryReason::Malformed, "{raw}");
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
            ("status as number", with("status", "1")),
            ("status unknown", with("status", r#""REFUND_DONE""#)),
            ("status lower case", with("status", r#""refund_success""#)),
            ("status missing", with("status", "")),
            ("status null", with("status", "null")),
            ("status empty", with("status", r#""""#)),
            ("status blank", with("status", r#"" \t""#)),
            ("outRefundNo number", with("outRefundNo", "7")),
            ("outRefundNo object", with("outRefundNo", "{}")),
            (
                "duplicate status",
                success_body(&DATA_SUCCESS.replace(
                    r#""status":"REFUND_SUCCESS""#,
                    r#""status":"REFUND_PENDING","status":"REFUND_SUCCESS""#,
                )),
            ),
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

    /// [`DATA_SUCCESS`] field by field, as raw JSON text.
    const DATA_FIELDS: [(&str, &str); 8] = [
        ("outRefundNo", r#""R1""#),
        ("refundTradeNo", r#""T1""#),
        ("refundAmount", "10.50"),
        ("refundCurrency", r#""USD""#),
        ("outTradeNo", r#""O1""#),
        ("status", r#""REFUND_SUCCESS""#),
        ("resultMsg", r#""""#),
        ("refundFinishTime", r#""2023-10-20T03:28:23.092Z""#),
    ];

    /// `data` of [`DATA_SUCCESS`] with `field` set to the raw JSON text `value` exactly (its
    /// number text is kept: `10.50` stays `10.50`), or left out when `value` is `None`.
    fn data_raw(field: &str, value: Option<&str>) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut seen = false;
        for (name, raw) in DATA_FIELDS {
            let raw = if name == field {
                seen = true;
                match value {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                raw
            };
            parts.push(format!(r#""{name}":{raw}"#));
        }
        if let (false, Some(v)) = (seen, value) {
            parts.push(format!(r#""{field}":{v}"#));
        }
        format!("{{{}}}", parts.join(","))
    }

    #[test]
    fn data_raw_is_data_success() {
        assert_eq!(data_raw("none", None), DATA_SUCCESS);
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
                "refundFinishTime",
                r#""9999-12-31T23:30:00.000-05:00""#,
                "data.refundFinishTime dropped: +10000-01-01T04:30:00.000Z is past year 9999, \
                 the last the ledger stores",
            ),
            (
                "refundFinishTime",
                r#""yesterday""#,
                r#"data.refundFinishTime unreadable: "yesterday" is not a time"#,
            ),
            (
                "refundFinishTime",
                "1700000000",
                "data.refundFinishTime unreadable: must be a string, got a number",
            ),
            (
                "refundFinishTime",
                "{}",
                "data.refundFinishTime unreadable: must be a string, got an object",
            ),
            (
                "refundTradeNo",
                "true",
                "data.refundTradeNo unreadable: must be a string, got a boolean",
            ),
        ];
        for (field, value, text) in cases {
            let c = signed(&success_body(&data_with(field, value)));
            let QueryOutcome::Final(o) = &c.outcome else {
                panic!("{field}={value}: {:?}", c.outcome)
            };
            assert_eq!(o.status, RefundStatus::Success, "{field}={value}");
            assert_eq!(o.amount, Some(Decimal::new(1050, 2)), "{field}={value}");
            assert_eq!(
                c.outcome.notes_text().as_deref(),
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
            Some(format!("R\u{1b}{}", "R".repeat(70)))
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

    /// Part 3: the body is read whatever the HTTP status. A code decides as it would on a 200;
    /// no code, or APPLY_SUCCESS (an error answer is never trusted for a status), stays a
    /// retryable `http_status` failure.
    #[test]
    fn non_2xx_is_classified_by_its_code_when_it_has_one() {
        let success = success_body(DATA_SUCCESS);
        let sign = gateway_signer().sign_b64(success.as_bytes());
        for status in [
            100, 199, 204, 299, 300, 301, 302, 304, 400, 404, 429, 500, 502, 503,
        ] {
            let c = classify(status, Some(&sign), success.as_bytes(), &key());
            if (200..300).contains(&status) {
                assert!(matches!(c.outcome, QueryOutcome::Final(_)), "{status}");
            } else {
                assert_eq!(reason(&c), RetryReason::HttpStatus, "{status}");
                assert_eq!(c.gateway_code.as_deref(), Some("APPLY_SUCCESS"));
                assert_eq!(c.data_status, None);
            }
        }
        for (status, body) in [
            (503, &b"<html>down</html>"[..]),
            (500, b""),
            (500, br#"{"msg":"no code"}"#),
            (500, br#"{"code":null}"#),
            (500, br#"{"code":500}"#),
            (500, br#"["SYSTEM_ERROR"]"#),
            (502, br#"{"code":"SYSTEM_ERROR""#),
        ] {
            let c = classify(status, None, body, &key());
            assert_eq!(reason(&c), RetryReason::HttpStatus, "{status}");
            assert_eq!(c.gateway_code, None);
        }
        for &(code, class) in CODE_TABLE {
            if class == CodeClass::Success {
                continue;
            }
            for status in [400, 404, 429, 500, 503] {
                let body = format!(r#"{{"code":"{code}","msg":"x"}}"#);
                let on_error = classify(status, None, body.as_bytes(), &key());
                let on_200 = classify(200, None, body.as_bytes(), &key());
                assert_eq!(on_error, on_200, "{status} {code}");
            }
        }
        let c = classify(
            500,
            None,
            br#"{"code":"SYSTEM_ERROR","msg":"busy"}"#,
            &key(),
        );
        assert_eq!(reason(&c), RetryReason::SystemError);
        let c = classify(400, None, br#"{"code":"SIGN_VERIFY_FAILED"}"#, &key());
        assert_eq!(
            c.outcome,
            QueryOutcome::ConfigError {
                code: "SIGN_VERIFY_FAILED".into()
            }
        );
    }

    /// An error answer is accepted the same signed or unsigned, whatever its signature is
    /// worth, and its `data` never decides anything.
    #[test]
    fn signed_error_answers_are_read_like_unsigned_ones() {
        let stranger = MerchantKey::from_text(STRANGER_PRIVATE).unwrap();
        for status in [200, 400, 500] {
            for code in ["SYSTEM_ERROR", "ORDER_NOT_EXIST", "SIGN_VERIFY_FAILED"] {
                let body = format!(
                    r#"{{"code":"{code}","msg":"x","data":{{"outRefundNo":"R1","status":"REFUND_SUCCESS"}}}}"#
                );
                let unsigned = classify(status, None, body.as_bytes(), &key());
                for sign in [
                    gateway_signer().sign_b64(body.as_bytes()),
                    stranger.sign_b64(body.as_bytes()),
                    "***".to_owned(),
                ] {
                    let c = classify(status, Some(&sign), body.as_bytes(), &key());
                    assert_eq!(c, unsigned, "{status} {code}");
                    assert_eq!(c.data_status, None);
                    assert!(
                        !matches!(c.outcome, QueryOutcome::Final(_) | QueryOutcome::Pending(_)),
                        "{status} {code}"
                    );
                }
            }
        }
    }

    /// A `sign` header whose `=` padding was stripped is accepted when it decodes; wrong
    /// padding, or a stripped signature that no longer verifies, is not.
    #[test]
    fn a_sign_header_without_padding_is_accepted_if_it_decodes() {
        let body = success_body(DATA_SUCCESS);
        let padded = gateway_signer().sign_b64(body.as_bytes());
        assert!(
            padded.ends_with('='),
            "a 256-byte signature is padded: {padded}"
        );
        let bare = padded.trim_end_matches('=');
        let c = classify(200, Some(bare), body.as_bytes(), &key());
        assert!(matches!(c.outcome, QueryOutcome::Final(_)), "{c:?}");
        let c = classify(200, Some(&format!("{bare}===")), body.as_bytes(), &key());
        assert_eq!(reason(&c), RetryReason::Unverified);
        let c = classify(200, Some(&bare[..bare.len() - 1]), body.as_bytes(), &key());
        assert_eq!(reason(&c), RetryReason::Unverified);
    }

    /// What a verified answer with one informative field in one form leads to, through
    /// `classify` and `decide`: the attempt's class, the flag, and the attempt's error text.
    struct Cell {
        field: &'static str,
        form: &'static str,
        /// The raw JSON value, `None` for absent.
        value: Option<&'static str>,
        class: crate::domain::OutcomeClass,
        /// The attempt's error text (`None`: the answer confirmed everything).
        text: Option<&'static str>,
    }

    const fn cell(
        field: &'static str,
        form: &'static str,
        value: Option<&'static str>,
        class: crate::domain::OutcomeClass,
        text: Option<&'static str>,
    ) -> Cell {
        Cell {
            field,
            form,
            value,
            class,
            text,
        }
    }

    /// The table of [`every_informative_field_in_every_form`].
    const ABSENT_AMOUNT: Option<&str> = Some("data.refundAmount not confirmed: absent");
    const ABSENT_CURRENCY: Option<&str> = Some("data.refundCurrency not confirmed: absent");
    const ABSENT_TRADE_NO: Option<&str> = Some("data.refundTradeNo not confirmed: absent");
    const ABSENT_TIME: Option<&str> = Some("data.refundFinishTime not confirmed: absent");
    const ABSENT_NO: Option<&str> = Some("data.outRefundNo not confirmed: absent");

    fn informative_cells() -> Vec<Cell> {
        let mut cells = money_cells();
        cells.extend(text_cells());
        cells
    }

    /// Amount and currency: compared when present.
    fn money_cells() -> Vec<Cell> {
        use crate::domain::OutcomeClass::{Final, Mismatch};
        vec![
            cell("refundAmount", "absent", None, Final, ABSENT_AMOUNT),
            cell("refundAmount", "null", Some("null"), Final, ABSENT_AMOUNT),
            cell("refundAmount", "empty", Some(r#""""#), Final, ABSENT_AMOUNT),
            cell("refundAmount", "odd", Some(r#""10.5000""#), Final, None),
            cell(
                "refundAmount",
                "unreadable",
                Some(r#""ten""#),
                Final,
                Some(r#"data.refundAmount unreadable: "ten" is not a decimal number"#),
            ),
            cell("refundAmount", "conflicting", Some("10.51"), Mismatch, None),
            cell("refundCurrency", "absent", None, Final, ABSENT_CURRENCY),
            cell(
                "refundCurrency",
                "null",
                Some("null"),
                Final,
                ABSENT_CURRENCY,
            ),
            cell(
                "refundCurrency",
                "empty",
                Some(r#""""#),
                Final,
                ABSENT_CURRENCY,
            ),
            cell("refundCurrency", "odd", Some(r#"" usd""#), Final, None),
            cell(
                "refundCurrency",
                "unreadable",
                Some("840"),
                Final,
                Some("data.refundCurrency unreadable: must be a string, got a number"),
            ),
            cell(
                "refundCurrency",
                "conflicting",
                Some(r#""EUR""#),
                Mismatch,
                None,
            ),
        ]
    }

    /// Trade number, finish time (informative only) and the refund number (decides when
    /// present).
    fn text_cells() -> Vec<Cell> {
        use crate::domain::OutcomeClass::{Final, Mismatch};
        vec![
            cell("refundTradeNo", "absent", None, Final, ABSENT_TRADE_NO),
            cell(
                "refundTradeNo",
                "null",
                Some("null"),
                Final,
                ABSENT_TRADE_NO,
            ),
            cell(
                "refundTradeNo",
                "empty",
                Some(r#""""#),
                Final,
                ABSENT_TRADE_NO,
            ),
            cell("refundTradeNo", "odd", Some("2023102012345"), Final, None),
            cell(
                "refundTradeNo",
                "unreadable",
                Some("{}"),
                Final,
                Some("data.refundTradeNo unreadable: must be a string, got an object"),
            ),
            // Informs only: the ledger keeps a trade number it already has (coalesce).
            cell(
                "refundTradeNo",
                "conflicting",
                Some(r#""T-OTHER""#),
                Final,
                None,
            ),
            cell("refundFinishTime", "absent", None, Final, ABSENT_TIME),
            cell("refundFinishTime", "null", Some("null"), Final, ABSENT_TIME),
            cell(
                "refundFinishTime",
                "empty",
                Some(r#""""#),
                Final,
                ABSENT_TIME,
            ),
            cell(
                "refundFinishTime",
                "odd",
                Some(r#""2023-10-20 03:28:23.092""#),
                Final,
                None,
            ),
            cell(
                "refundFinishTime",
                "unreadable",
                Some(r#""not a time""#),
                Final,
                Some(r#"data.refundFinishTime unreadable: "not a time" is not a time"#),
            ),
            // Informs only: nothing in the ledger to compare a finish time with.
            cell(
                "refundFinishTime",
                "conflicting",
                Some(r#""2031-01-01T00:00:00+08:00""#),
                Final,
                None,
            ),
            cell("outRefundNo", "absent", None, Final, ABSENT_NO),
            cell("outRefundNo", "null", Some("null"), Final, ABSENT_NO),
            // Present: it decides, and "" is not our refund number.
            cell("outRefundNo", "empty", Some(r#""""#), Mismatch, None),
            cell(
                "outRefundNo",
                "conflicting",
                Some(r#""R2""#),
                Mismatch,
                None,
            ),
        ]
    }

    /// Issue 11, part 1: every informative field (and the refund number, which decides only
    /// when present) × {absent, null, empty, odd form, unreadable, conflicting}. Only a
    /// present, disagreeing amount, currency or refund number stops the status from deciding.
    #[test]
    fn every_informative_field_in_every_form() {
        use crate::domain::OutcomeClass::Final;
        let table = informative_cells();
        let state = crate::domain::RefundState {
            out_refund_no: crate::domain::OutRefundNo::parse("R1").unwrap(),
            refund_trade_no: Some("T1".into()),
            amount: Decimal::new(1050, 2),
            currency: crate::domain::Currency::parse("USD").unwrap(),
            created_at: parse_ts("2023-10-20T00:00:00Z").unwrap(),
            attempts: 0,
            unknown_since: None,
            flagged: false,
            rejected_before: false,
            last_error: None,
        };
        let now = parse_ts("2023-10-20T04:00:00Z").unwrap();
        for c in table {
            let name = format!("{} {}", c.field, c.form);
            let answer = signed(&success_body(&data_raw(c.field, c.value)));
            assert_eq!(answer.outcome.notes_text().as_deref(), c.text, "{name}");
            let d = crate::domain::decide(
                RefundStatus::Pending,
                &state,
                &answer.outcome,
                now,
                0.5,
                &crate::domain::Policy::default(),
            );
            assert_eq!(d.class, c.class, "{name}: {d:?}");
            match c.class {
                Final => assert!(
                    matches!(d.change, crate::domain::Change::Finalize { flag: None, .. }),
                    "{name}: finalized, never flagged: {d:?}"
                ),
                _ => assert_eq!(d.discrepancies.len(), 1, "{name}: {d:?}"),
            }
            // What was read in an odd form is kept, exactly.
            let o = observed(&answer);
            match (c.field, c.form) {
                ("refundAmount", "odd") => {
                    assert_eq!(o.amount.unwrap().to_string(), "10.5000", "{name}")
                }
                ("refundCurrency", "odd") => {
                    assert_eq!(o.currency.unwrap().as_str(), "USD", "{name}")
                }
                ("refundTradeNo", "odd") => {
                    assert_eq!(o.refund_trade_no.as_deref(), Some("2023102012345"))
                }
                ("refundFinishTime", "odd") => assert_eq!(
                    o.refund_finish_time,
                    Some(parse_ts("2023-10-20T03:28:23.092Z").unwrap())
                ),
                _ => {}
            }
        }
    }

    /// Several fields missing at once are all named, in the answer's order; a pending answer
    /// without a finish time is the normal case and names nothing for it.
    #[test]
    fn absent_fields_are_all_named_and_a_pending_finish_time_is_not_news() {
        let c = signed(&success_body(r#"{"status":"REFUND_SUCCESS"}"#));
        assert!(matches!(c.outcome, QueryOutcome::Final(_)), "{c:?}");
        assert_eq!(
            c.outcome.notes_text().as_deref(),
            Some(
                "data.outRefundNo not confirmed: absent; data.refundAmount not confirmed: absent; \
                 data.refundCurrency not confirmed: absent; data.refundTradeNo not confirmed: \
                 absent; data.refundFinishTime not confirmed: absent"
            )
        );
        let c = signed(&success_body(
            r#"{"outRefundNo":"R1","refundTradeNo":"T1","refundAmount":"1","refundCurrency":"USD","status":"REFUND_PENDING","refundFinishTime":""}"#,
        ));
        assert!(matches!(c.outcome, QueryOutcome::Pending(_)), "{c:?}");
        assert_eq!(c.outcome.notes_text(), None);
        // Unreadable and unstorable values are named together, unreadable ones listed alone.
        let t65 = format!(r#""{}""#, "T".repeat(65));
        let data = data_raw("refundTradeNo", Some(&t65)).replace("10.50", r#""x""#);
        let c = signed(&success_body(&data));
        assert_eq!(
            c.outcome.notes_text().as_deref(),
            Some(
                r#"data.refundAmount unreadable: "x" is not a decimal number; data.refundTradeNo dropped: 65 characters, the ledger stores at most 64"#
            )
        );
        assert_eq!(
            c.outcome.unreadable_text().as_deref(),
            Some(r#"data.refundAmount unreadable: "x" is not a decimal number"#)
        );
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
