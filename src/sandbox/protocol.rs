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

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::FixedOffset;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::domain::{Currency, InvalidValue, RefundStatus, Timestamp, format_ts, parse_ts};
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
/// The other code for an unknown refund (TIZ36's copy of the PayerMax list).
pub const REFUND_NO_INVALID: &str = "REFUND_NO_INVALID";

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
        REFUND_NO_INVALID => "Invalid refund order number",
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

/// A JSON value to write: raw text, or an object whose key order and spacing the
/// [`Variance`] decides. Written by hand so every variant's bytes are exactly known.
enum Node {
    Raw(String),
    Object(Vec<(&'static str, Node)>),
}

/// A JSON string literal.
fn json_str(text: &str) -> String {
    serde_json::to_string(text).expect("strings always serialize")
}

fn indent(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn write_node(out: &mut String, node: &Node, v: &Variance, depth: usize) {
    let fields = match node {
        Node::Raw(text) => return out.push_str(text),
        Node::Object(fields) => fields,
    };
    let mut fields: Vec<&(&str, Node)> = fields.iter().collect();
    if v.has(Switch::KeysSorted) {
        fields.sort_by_key(|(key, _)| *key);
    } else if v.has(Switch::KeysReversed) {
        fields.reverse();
    }
    let pretty = v.has(Switch::Pretty);
    let spaced = v.has(Switch::Spaced);
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
            if spaced {
                out.push(' ');
            }
        }
        if pretty {
            indent(out, depth + 1);
        }
        out.push_str(&json_str(key));
        out.push(':');
        if spaced || pretty {
            out.push(' ');
        }
        write_node(out, value, v, depth + 1);
    }
    if pretty && !fields.is_empty() {
        indent(out, depth);
    }
    out.push('}');
}

fn write_body(top: &Node, v: &Variance) -> Vec<u8> {
    let mut out = String::new();
    write_node(&mut out, top, v, 0);
    if v.has(Switch::Pretty) {
        out.push('\n');
    }
    out.into_bytes()
}

/// `refundAmount` as written, or `None` when the variance leaves it out.
fn amount_node(amount: Decimal, shape: Shape, v: &Variance) -> Option<Node> {
    let zeros = || {
        let mut padded = amount;
        if padded.scale() < 4 {
            padded.rescale(4);
        }
        padded.to_string()
    };
    let text = if shape == Shape::AmountAsString || v.has(Switch::AmountString) {
        json_str(&amount.to_string())
    } else if v.has(Switch::AmountStringZeros) {
        json_str(&zeros())
    } else if v.has(Switch::AmountZeros) {
        zeros()
    } else if v.has(Switch::AmountAbsent) {
        return None;
    } else {
        amount.to_string()
    };
    Some(Node::Raw(text))
}

/// `refundFinishTime` as written on a final answer, or `None` when it is left out.
fn finish_node(at: Option<Timestamp>, shape: Shape, v: &Variance) -> Option<Node> {
    if let Shape::FinishTimeText(text) = shape {
        return Some(Node::Raw(json_str(text)));
    }
    if v.has(Switch::FinishAbsent) {
        return None;
    }
    if v.has(Switch::FinishEmpty) {
        return Some(Node::Raw(json_str("")));
    }
    let at = at?;
    let text = if v.has(Switch::FinishPlus8) {
        let east8 = FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset");
        at.with_timezone(&east8)
            .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string()
    } else if v.has(Switch::FinishNoOffset) {
        at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    } else {
        format_ts(at)
    };
    Some(Node::Raw(json_str(&text)))
}

fn status_node(status: RefundStatus, shape: Shape, v: &Variance) -> Option<Node> {
    let text = match shape {
        Shape::MissingStatus => return None,
        Shape::UnknownStatus => json_str("REFUND_PROCESSING"),
        Shape::StatusAsNumber => "1".to_owned(),
        _ if v.has(Switch::StatusPadded) => json_str(&format!("{}\t", status.as_str())),
        _ => json_str(status.as_str()),
    };
    Some(Node::Raw(text))
}

/// Writes an `APPLY_SUCCESS` answer body. `refundAmount` is the decimal's own text (`12.50`)
/// as a JSON number, never routed through `f64`.
pub fn success_body(data: &AnswerData, shape: Shape) -> Vec<u8> {
    answer_body(data, shape, &Variance::default())
}

/// Writes an `APPLY_SUCCESS` answer body in the form `variance` asks for.
pub fn varied_success_body(data: &AnswerData, variance: &Variance) -> Vec<u8> {
    answer_body(data, Shape::Correct, variance)
}

fn answer_body(data: &AnswerData, shape: Shape, v: &Variance) -> Vec<u8> {
    let text = |s: &str| Node::Raw(json_str(s));
    let mut fields = vec![
        ("outRefundNo", text(&data.out_refund_no)),
        ("refundTradeNo", text(&data.refund_trade_no)),
    ];
    if let Some(amount) = amount_node(data.amount, shape, v) {
        fields.push(("refundAmount", amount));
    }
    if !v.has(Switch::CurrencyAbsent) {
        fields.push(("refundCurrency", text(data.currency.as_str())));
    }
    fields.push(("outTradeNo", text(&data.out_trade_no)));
    if let Some(status) = status_node(data.status, shape, v) {
        fields.push(("status", status));
    }
    let padding;
    let result_msg = match shape {
        Shape::PaddedTo(bytes) => {
            padding = "x".repeat(bytes);
            padding.as_str()
        }
        _ => data.result_msg(),
    };
    fields.push(("resultMsg", text(result_msg)));
    if data.status.is_final()
        && let Some(finish) = finish_node(data.finish_time, shape, v)
    {
        fields.push(("refundFinishTime", finish));
    }
    let mut top = Vec::new();
    if shape != Shape::MissingCode {
        top.push(("code", text(APPLY_SUCCESS)));
    }
    top.push(("msg", text(default_msg(APPLY_SUCCESS))));
    if shape != Shape::MissingData {
        top.push(("data", Node::Object(fields)));
    }
    write_body(&Node::Object(top), v)
}

/// Writes an error answer body: `{"code":…,"msg":…}`.
pub fn error_body(code: &str, msg: &str) -> Vec<u8> {
    varied_error_body(code, msg, &Variance::default())
}

/// Writes an error answer body with the key order and spacing `variance` asks for.
pub fn varied_error_body(code: &str, msg: &str, variance: &Variance) -> Vec<u8> {
    let top = Node::Object(vec![
        ("code", Node::Raw(json_str(code))),
        ("msg", Node::Raw(json_str(msg))),
    ]);
    write_body(&top, variance)
}

/// One way a real gateway's answer may differ from the sandbox's documented default shape.
/// Every switch keeps the answer valid and truthful; they only vary the form. Spelled in
/// snake case (`amount_string`), as in the `vary:` step and in [`Variance`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Switch {
    /// `data` has no `refundAmount`.
    AmountAbsent,
    /// `refundAmount` is a JSON string of the exact decimal (`"12.50"`).
    AmountString,
    /// `refundAmount` is a number with trailing zeros to 4 decimals (`12.5000`).
    AmountZeros,
    /// `refundAmount` is a string with trailing zeros (`"12.5000"`).
    AmountStringZeros,
    /// `data` has no `refundCurrency`.
    CurrencyAbsent,
    /// A final answer has no `refundFinishTime`.
    FinishAbsent,
    /// A final answer's `refundFinishTime` is `""`.
    FinishEmpty,
    /// `refundFinishTime` in `+08:00` (`2026-01-02T03:04:05.600+08:00`).
    FinishPlus8,
    /// `refundFinishTime` in UTC with no offset (`2026-01-01T19:04:05.600`).
    FinishNoOffset,
    /// `data.status` with a trailing tab, as the OpenAPI enum spells `"REFUND_PENDING\t"`.
    StatusPadded,
    /// Keys in alphabetical order (the shareit Go SDK's map order).
    KeysSorted,
    /// Keys in reverse documented order.
    KeysReversed,
    /// A space after every `:` and `,` (Python's `json.dumps` style).
    Spaced,
    /// Indented over several lines, with a final newline.
    Pretty,
    /// Error answers carry a valid `sign` header.
    ErrorsSigned,
    /// Error answers carry no `sign` header.
    ErrorsUnsigned,
    /// Error answers come with an HTTP status to match their code ([`error_http_status`]).
    ErrorsOnHttp,
    /// An unknown refund answers `REFUND_NO_INVALID` instead of `ORDER_NOT_EXIST`.
    RefundNoInvalid,
}

impl Switch {
    /// Every switch, in documentation order.
    pub const ALL: &[Switch] = &[
        Switch::AmountAbsent,
        Switch::AmountString,
        Switch::AmountZeros,
        Switch::AmountStringZeros,
        Switch::CurrencyAbsent,
        Switch::FinishAbsent,
        Switch::FinishEmpty,
        Switch::FinishPlus8,
        Switch::FinishNoOffset,
        Switch::StatusPadded,
        Switch::KeysSorted,
        Switch::KeysReversed,
        Switch::Spaced,
        Switch::Pretty,
        Switch::ErrorsSigned,
        Switch::ErrorsUnsigned,
        Switch::ErrorsOnHttp,
        Switch::RefundNoInvalid,
    ];

    /// The switches today's client reads to the true outcome with nothing flagged.
    pub const TOLERATED: &[Switch] = &[
        Switch::AmountZeros,
        Switch::FinishAbsent,
        Switch::FinishEmpty,
        Switch::FinishPlus8,
        Switch::KeysSorted,
        Switch::KeysReversed,
        Switch::Spaced,
        Switch::Pretty,
        Switch::ErrorsSigned,
        Switch::ErrorsUnsigned,
        Switch::RefundNoInvalid,
    ];

    /// The spelling.
    pub fn name(self) -> &'static str {
        match self {
            Switch::AmountAbsent => "amount_absent",
            Switch::AmountString => "amount_string",
            Switch::AmountZeros => "amount_zeros",
            Switch::AmountStringZeros => "amount_string_zeros",
            Switch::CurrencyAbsent => "currency_absent",
            Switch::FinishAbsent => "finish_absent",
            Switch::FinishEmpty => "finish_empty",
            Switch::FinishPlus8 => "finish_plus8",
            Switch::FinishNoOffset => "finish_no_offset",
            Switch::StatusPadded => "status_padded",
            Switch::KeysSorted => "keys_sorted",
            Switch::KeysReversed => "keys_reversed",
            Switch::Spaced => "spaced",
            Switch::Pretty => "pretty",
            Switch::ErrorsSigned => "errors_signed",
            Switch::ErrorsUnsigned => "errors_unsigned",
            Switch::ErrorsOnHttp => "errors_on_http",
            Switch::RefundNoInvalid => "refund_no_invalid",
        }
    }

    /// Switches of one dimension exclude each other (an amount is written one way).
    pub fn dimension(self) -> &'static str {
        match self {
            Switch::AmountAbsent
            | Switch::AmountString
            | Switch::AmountZeros
            | Switch::AmountStringZeros => "amount",
            Switch::CurrencyAbsent => "currency",
            Switch::FinishAbsent
            | Switch::FinishEmpty
            | Switch::FinishPlus8
            | Switch::FinishNoOffset => "finish",
            Switch::StatusPadded => "status",
            Switch::KeysSorted | Switch::KeysReversed => "keys",
            Switch::Spaced | Switch::Pretty => "spacing",
            Switch::ErrorsSigned | Switch::ErrorsUnsigned => "error_sign",
            Switch::ErrorsOnHttp => "error_http",
            Switch::RefundNoInvalid => "unknown_code",
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Switch {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Switch::ALL
            .iter()
            .copied()
            .find(|w| w.name() == s)
            .ok_or_else(|| InvalidValue::new("vary", format!("unknown switch {s:?}")))
    }
}

/// A set of [`Switch`]es, at most one per dimension, in the order given. The default (empty)
/// variance is the documented shape, with error answers signed or not as
/// [`SandboxOptions::sign_error_answers`](super::SandboxOptions::sign_error_answers) says.
/// Text form: the names joined by `,` (`amount_string,finish_plus8`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Variance(Vec<Switch>);

impl Variance {
    /// The switches, refused if two share a dimension or one repeats.
    pub fn new(switches: impl IntoIterator<Item = Switch>) -> Result<Self, InvalidValue> {
        let mut kept: Vec<Switch> = Vec::new();
        for switch in switches {
            if let Some(other) = kept.iter().find(|k| k.dimension() == switch.dimension()) {
                return Err(InvalidValue::new(
                    "vary",
                    format!("{switch} and {other} both set the {}", switch.dimension()),
                ));
            }
            kept.push(switch);
        }
        Ok(Self(kept))
    }

    /// Whether `switch` is on.
    pub fn has(&self, switch: Switch) -> bool {
        self.0.contains(&switch)
    }

    /// The switches, in the order given.
    pub fn switches(&self) -> &[Switch] {
        &self.0
    }

    /// Whether error answers carry a `sign` header, given the sandbox-wide default.
    pub fn signs_errors(&self, default: bool) -> bool {
        if self.has(Switch::ErrorsSigned) {
            true
        } else if self.has(Switch::ErrorsUnsigned) {
            false
        } else {
            default
        }
    }

    /// The code an unknown refund gets.
    pub fn unknown_code(&self) -> &'static str {
        if self.has(Switch::RefundNoInvalid) {
            REFUND_NO_INVALID
        } else {
            ORDER_NOT_EXIST
        }
    }

    /// The HTTP status an error answer with `code` comes with.
    pub fn error_status(&self, code: &str) -> u16 {
        if self.has(Switch::ErrorsOnHttp) {
            error_http_status(code)
        } else {
            200
        }
    }
}

impl fmt::Display for Variance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, switch) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(switch.name())?;
        }
        Ok(())
    }
}

impl FromStr for Variance {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidValue::new("vary", "names no switch"));
        }
        Variance::new(
            s.split(',')
                .map(str::parse)
                .collect::<Result<Vec<Switch>, _>>()?,
        )
    }
}

/// The HTTP status [`Switch::ErrorsOnHttp`] sends with an error code: the one a REST gateway
/// would pick (5xx for the gateway's own trouble, 429 for rate limits, 4xx for the rest).
pub fn error_http_status(code: &str) -> u16 {
    match code {
        "SYSTEM_ERROR" | "UNEXPECTED_ERROR" => 500,
        "REQUEST_TIMEOUT" => 504,
        TOO_MANY_REQUEST => 429,
        SIGN_VERIFY_FAILED | "AUTHENTICATE_FAILED" => 401,
        MERCHANT_INVALID | MERCHANT_APP_INVALID | "CONTRACT_INVALID" | "ONBOARD_ERROR" => 403,
        ORDER_NOT_EXIST | REFUND_NO_INVALID => 404,
        _ => 400,
    }
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

    fn varied(status: RefundStatus, switches: &str) -> String {
        let v: Variance = switches.parse().unwrap();
        String::from_utf8(varied_success_body(&data(status), &v)).unwrap()
    }

    #[test]
    fn every_switch_writes_exactly_its_form() {
        let success = RefundStatus::Success;
        let data_part = |body: &str| body[body.find("\"data\"").unwrap()..].to_owned();
        let cases: &[(&str, &str)] = &[
            (
                "amount_absent",
                r#""refundTradeNo":"T1","refundCurrency":"USD""#,
            ),
            ("amount_string", r#""refundAmount":"12.50","#),
            ("amount_zeros", r#""refundAmount":12.5000,"#),
            ("amount_string_zeros", r#""refundAmount":"12.5000","#),
            ("currency_absent", r#""refundAmount":12.50,"outTradeNo""#),
            ("finish_absent", r#""resultMsg":""}}"#),
            ("finish_empty", r#""refundFinishTime":""}}"#),
            (
                "finish_plus8",
                r#""refundFinishTime":"2026-01-02T03:04:05.600+08:00"}}"#,
            ),
            (
                "finish_no_offset",
                r#""refundFinishTime":"2026-01-01T19:04:05.600"}}"#,
            ),
            ("status_padded", r#""status":"REFUND_SUCCESS\t","#),
        ];
        for (switch, want) in cases {
            let body = varied(success, switch);
            assert!(data_part(&body).contains(want), "{switch}: {body}");
            assert!(body.starts_with(r#"{"code":"APPLY_SUCCESS","msg":"Success.","data":{"#));
        }
        // Zero-decimal currencies get trailing zeros too; longer scales are kept as they are.
        let mut idr = data(success);
        idr.amount = Decimal::new(15000, 0);
        let v: Variance = "amount_zeros".parse().unwrap();
        let body = String::from_utf8(varied_success_body(&idr, &v)).unwrap();
        assert!(body.contains(r#""refundAmount":15000.0000,"#), "{body}");
        // Every form is JSON that reads back to the same facts.
        for switch in Switch::ALL {
            let body = varied(success, switch.name());
            let value: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{switch}: {e}"));
            assert_eq!(value["data"]["outRefundNo"], "R1", "{switch}");
            assert_eq!(value["code"], APPLY_SUCCESS, "{switch}");
        }
    }

    #[test]
    fn layout_switches_write_exactly_their_bytes() {
        let success = RefundStatus::Success;
        assert_eq!(
            varied(success, "keys_sorted"),
            r#"{"code":"APPLY_SUCCESS","data":{"outRefundNo":"R1","outTradeNo":"O1","refundAmount":12.50,"refundCurrency":"USD","refundFinishTime":"2026-01-01T19:04:05.600Z","refundTradeNo":"T1","resultMsg":"","status":"REFUND_SUCCESS"},"msg":"Success."}"#
        );
        assert_eq!(
            varied(RefundStatus::Pending, "keys_reversed,spaced"),
            r#"{"data": {"resultMsg": "", "status": "REFUND_PENDING", "outTradeNo": "O1", "refundCurrency": "USD", "refundAmount": 12.50, "refundTradeNo": "T1", "outRefundNo": "R1"}, "msg": "Success.", "code": "APPLY_SUCCESS"}"#
        );
        assert_eq!(
            varied(RefundStatus::Pending, "pretty"),
            "{\n  \"code\": \"APPLY_SUCCESS\",\n  \"msg\": \"Success.\",\n  \"data\": {\n    \
             \"outRefundNo\": \"R1\",\n    \"refundTradeNo\": \"T1\",\n    \"refundAmount\": 12.50,\n    \
             \"refundCurrency\": \"USD\",\n    \"outTradeNo\": \"O1\",\n    \"status\": \"REFUND_PENDING\",\n    \
             \"resultMsg\": \"\"\n  }\n}\n"
        );
    }

    #[test]
    fn error_switches_pick_the_status_signature_and_unknown_code() {
        let v = |s: &str| s.parse::<Variance>().unwrap();
        assert_eq!(Variance::default().error_status("SYSTEM_ERROR"), 200);
        for (code, status) in [
            ("SYSTEM_ERROR", 500),
            ("TOO_MANY_REQUEST", 429),
            ("SIGN_VERIFY_FAILED", 401),
            ("MERCHANT_APP_INVALID", 403),
            ("ORDER_NOT_EXIST", 404),
            ("REFUND_NO_INVALID", 404),
            ("PARAMS_INVALID", 400),
            ("REQ_TIME_OVER_TIME", 400),
        ] {
            assert_eq!(v("errors_on_http").error_status(code), status, "{code}");
        }
        assert!(v("errors_signed").signs_errors(false));
        assert!(!v("errors_unsigned").signs_errors(true));
        assert!(Variance::default().signs_errors(true));
        assert_eq!(Variance::default().unknown_code(), ORDER_NOT_EXIST);
        assert_eq!(v("refund_no_invalid").unknown_code(), REFUND_NO_INVALID);
        assert_eq!(
            varied_error_body("SYSTEM_ERROR", "busy", &v("keys_reversed,spaced")),
            br#"{"msg": "busy", "code": "SYSTEM_ERROR"}"#
        );
        assert_eq!(
            varied_error_body("SYSTEM_ERROR", "busy", &Variance::default()),
            error_body("SYSTEM_ERROR", "busy")
        );
    }

    #[test]
    fn variance_spellings_round_trip_and_refuse_conflicts() {
        for switch in Switch::ALL {
            assert_eq!(switch.name().parse::<Switch>().unwrap(), *switch);
        }
        let text = "pretty,amount_string,finish_plus8,errors_on_http";
        assert_eq!(text.parse::<Variance>().unwrap().to_string(), text);
        for bad in [
            "",
            "amount_string,amount_zeros",
            "pretty,pretty",
            "spaced,pretty",
            "nope",
        ] {
            assert!(bad.parse::<Variance>().is_err(), "{bad:?} accepted");
        }
        assert!(
            Switch::TOLERATED.iter().all(|s| Switch::ALL.contains(s)),
            "tolerated switches are switches"
        );
    }

    #[test]
    fn every_varied_answer_verifies_with_the_gateway_key() {
        let signer = test_keys::insecure_gateway_private();
        let public = test_keys::insecure_gateway_public();
        for switch in Switch::ALL {
            for status in [
                RefundStatus::Pending,
                RefundStatus::Success,
                RefundStatus::Failed,
            ] {
                let body = varied(status, switch.name()).into_bytes();
                let sign = signer.sign_b64(&body);
                assert!(public.verify_b64(&body, &sign).is_ok(), "{switch} {status}");
            }
        }
    }
}
