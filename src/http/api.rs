//! The refunds API, for a merchant's app on another host (issue 13 part 2; the contract is
//! `docs/openapi.yaml`, the guide `docs/integration.md`):
//! - `POST /v1/refunds` registers a refund: 201 created, 200 when the same refund is already
//!   registered (a repeat is safe), 409 when the number is taken by a refund that differs;
//! - `GET /v1/refunds/{outRefundNo}` reads its state; 404 when there is none.
//!
//! On only while `http.api_token` is configured (404 otherwise, as for any unknown path).
//! Every request needs `Authorization: Bearer <token>` (401 otherwise, checked before the body
//! is looked at). A body is validated by the same [`RawRefund::validate`] as `add` and
//! `import`, after this module has read the JSON's shape: a JSON object, only the documented
//! fields, each once, strings (the amount also as a JSON number, read from its exact text).
//! Any refusal writes nothing. Ledger calls run on the blocking pool, on a connection of the
//! API's own ([`crate::daemon::Live::api_call`]); a ledger busy past its busy timeout, or a
//! full disk, is 503 (try again later).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{error, info, warn};

use super::AppState;
use crate::domain::{
    FinalSource, InvalidValue, NewRefund, OutRefundNo, RefundStatus, Timestamp, format_ts,
};
use crate::import::{RawRefund, json_amount_text};
use crate::ledger::{LedgerError, RefundRow, Registered};
use crate::report::escape;

/// The fields a `POST /v1/refunds` body may hold; any other is refused (400) naming it.
pub const FIELDS: [&str; 7] = [
    "outRefundNo",
    "amount",
    "currency",
    "refundTradeNo",
    "outTradeNo",
    "status",
    "createdAt",
];

/// The longest field name quoted back in an "unknown field" refusal.
const QUOTED_NAME_CHARS: usize = 64;

/// The API's routes, merged into the listener's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/refunds", post(register))
        .route("/v1/refunds/{out_refund_no}", get(read))
}

/// Every refusal's body: `{"error":{"field":…,"reason":…}}`.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: Refusal,
}

/// What was refused (a body field, a header, the path's `outRefundNo`, or `null` for the
/// request as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The field, header or parameter refused.
    pub field: Option<String>,
    /// Why, for people.
    pub reason: String,
}

impl Refusal {
    fn new(field: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }

    fn answer(self, code: StatusCode) -> Response {
        (code, Json(ErrorBody { error: self })).into_response()
    }
}

/// A validation refusal under the API's field names (`createdAt`, not `add`'s column name).
impl From<InvalidValue> for Refusal {
    fn from(e: InvalidValue) -> Self {
        let field = match e.field {
            "created_at" => "createdAt",
            other => other,
        };
        Self::new(Some(field), e.reason)
    }
}

/// A refund as the API shows it (`GET`, and the body of a 201 or 200).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RefundView {
    out_refund_no: String,
    /// Exact, as a decimal string.
    amount: String,
    currency: String,
    refund_trade_no: Option<String>,
    out_trade_no: Option<String>,
    status: String,
    created_at: String,
    /// Who reported the final status (`notification`, `query`, `refund_response`, `operator`).
    final_source: Option<String>,
    finalized_at: Option<String>,
    refund_finish_time: Option<String>,
    notified_at: Option<String>,
    /// True while a person should look at the refund.
    flagged: bool,
    flag_reason: Option<String>,
    flagged_at: Option<String>,
    /// Queries counted toward the backoff schedule.
    attempts: u32,
    next_query_at: Option<String>,
}

impl From<&RefundRow> for RefundView {
    fn from(r: &RefundRow) -> Self {
        let ts = |t: Option<Timestamp>| t.map(format_ts);
        Self {
            out_refund_no: r.out_refund_no.to_string(),
            amount: r.amount.to_string(),
            currency: r.currency.to_string(),
            refund_trade_no: r.refund_trade_no.clone(),
            out_trade_no: r.out_trade_no.clone(),
            status: r.status.to_string(),
            created_at: format_ts(r.created_at),
            final_source: r.final_source.map(|s| s.to_string()),
            finalized_at: ts(r.finalized_at),
            refund_finish_time: ts(r.refund_finish_time),
            notified_at: ts(r.notified_at),
            flagged: r.review_flag,
            flag_reason: r.review_reason.map(|s| s.to_string()),
            flagged_at: ts(r.flagged_at),
            attempts: r.attempts,
            next_query_at: ts(r.next_query_at),
        }
    }
}

/// The refusal, if any: 404 while `http.api_token` is not configured; 401 unless the request
/// carries the token.
fn refuse_unauthorized(s: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = s.live.api_token() else {
        return Some(
            Refusal::new(
                None,
                "the refunds API is off: set http.api_token to turn it on",
            )
            .answer(StatusCode::NOT_FOUND),
        );
    };
    let presented = headers.get(header::AUTHORIZATION);
    if presented.is_some_and(|v| token.admits(v.as_bytes())) {
        return None;
    }
    warn!(
        presented = presented.is_some(),
        "api request refused: missing or wrong token"
    );
    let mut answer = Refusal::new(
        Some("Authorization"),
        "a valid `Authorization: Bearer <token>` header is required",
    )
    .answer(StatusCode::UNAUTHORIZED);
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(answer)
}

/// True for `application/json`, bare or with `charset=utf-8` (any case).
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(text) = content_type.and_then(|v| std::str::from_utf8(v).ok()) else {
        return false;
    };
    let mut parts = text.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

/// A JSON object's members in order, repeats kept (a map would keep one silently).
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

/// A field name as it may be quoted back: escaped and cut short.
fn quoted(name: &str) -> String {
    let cut: String = name.chars().take(QUOTED_NAME_CHARS).collect();
    escape(&cut).into_owned()
}

/// Reads a `POST /v1/refunds` body into the text fields `add` takes, and whether `createdAt`
/// was given. `null` counts as absent. Refuses, naming the field: anything but a JSON object,
/// an unknown or repeated field, a value of the wrong JSON type, a missing required field.
pub fn parse_body(body: &[u8]) -> Result<(RawRefund, bool), Refusal> {
    let text =
        std::str::from_utf8(body).map_err(|_| Refusal::new(None, "the body is not UTF-8 text"))?;
    let Members(members) = serde_json::from_str(text)
        .map_err(|e| Refusal::new(None, format!("the body is not a JSON object: {e}")))?;
    let mut raw = RawRefund::default();
    let mut seen = [false; FIELDS.len()];
    for (name, value) in &members {
        let Some(i) = FIELDS.iter().position(|f| f == name) else {
            return Err(Refusal::new(
                Some(&quoted(name)),
                format!("unknown field; the fields are {}", FIELDS.join(", ")),
            ));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(Refusal::new(Some(FIELDS[i]), "given more than once"));
        }
        let json = value.get();
        if json == "null" {
            continue;
        }
        if FIELDS[i] == "amount" {
            if !(json.starts_with('"')
                || json.starts_with('-')
                || json.starts_with(|c: char| c.is_ascii_digit()))
            {
                return Err(Refusal::new(
                    Some("amount"),
                    "must be a decimal string (\"12.50\") or a JSON number (12.50)",
                ));
            }
            raw.amount = json_amount_text(value);
            continue;
        }
        let s: String = serde_json::from_str(json)
            .map_err(|_| Refusal::new(Some(FIELDS[i]), "must be a JSON string"))?;
        match FIELDS[i] {
            "outRefundNo" => raw.out_refund_no = s,
            "currency" => raw.currency = s,
            "refundTradeNo" => raw.refund_trade_no = Some(s),
            "outTradeNo" => raw.out_trade_no = Some(s),
            "status" => raw.status = Some(s),
            _ => raw.created_at = Some(s),
        }
    }
    for (i, required) in FIELDS.iter().enumerate().take(3) {
        let given = match i {
            0 => !raw.out_refund_no.is_empty(),
            1 => !raw.amount.is_empty(),
            _ => !raw.currency.is_empty(),
        };
        if !seen[i] || !given {
            return Err(Refusal::new(Some(required), "is required"));
        }
    }
    let created_at_given = raw.created_at.is_some();
    Ok((raw, created_at_given))
}

/// The first field in which `asked` differs from the refund already registered, if any. A
/// field the request leaves out is not compared (`createdAt` defaults to now; the gateway's
/// `refundTradeNo` may have been filled in since). The status compared is the one the refund
/// was registered with: REFUND_FAILED when `/refund` said so (final source
/// `refund_response`), else REFUND_PENDING, whatever it became since.
pub fn differing(
    asked: &NewRefund,
    created_at_given: bool,
    row: &RefundRow,
) -> Option<&'static str> {
    let registered = if row.final_source == Some(FinalSource::RefundResponse) {
        RefundStatus::Failed
    } else {
        RefundStatus::Pending
    };
    let differs_if_given = |a: &Option<String>, b: &Option<String>| a.is_some() && a != b;
    if asked.amount != row.amount {
        Some("amount")
    } else if asked.currency != row.currency {
        Some("currency")
    } else if differs_if_given(&asked.refund_trade_no, &row.refund_trade_no) {
        Some("refundTradeNo")
    } else if differs_if_given(&asked.out_trade_no, &row.out_trade_no) {
        Some("outTradeNo")
    } else if asked.status != registered {
        Some("status")
    } else if created_at_given && format_ts(asked.created_at) != format_ts(row.created_at) {
        Some("createdAt")
    } else {
        None
    }
}

/// `POST /v1/refunds`.
async fn register(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refuse_unauthorized(&s, &headers) {
        return refused;
    }
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    if !is_json(content_type) {
        return Refusal::new(Some("Content-Type"), "must be application/json")
            .answer(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let (raw, created_at_given) = match parse_body(&body) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.answer(StatusCode::BAD_REQUEST),
    };
    let asked = match raw.validate(s.live.now()) {
        Ok(refund) => refund,
        Err(e) => return Refusal::from(e).answer(StatusCode::BAD_REQUEST),
    };
    let refund = asked.clone();
    let written = s.live.api_call(move |l| l.register_refund(&refund)).await;
    let no = asked.out_refund_no.as_str();
    match written {
        Ok(Registered::Created(row)) => {
            info!(out_refund_no = no, status = %row.status, "refund registered");
            (StatusCode::CREATED, Json(RefundView::from(&*row))).into_response()
        }
        Ok(Registered::Existing(row)) => match differing(&asked, created_at_given, &row) {
            None => (StatusCode::OK, Json(RefundView::from(&*row))).into_response(),
            Some(field) => Refusal::new(
                Some(field),
                format!("refund {no} is already registered with a different {field}"),
            )
            .answer(StatusCode::CONFLICT),
        },
        Ok(Registered::Pruned) => Refusal::new(
            Some("outRefundNo"),
            format!("refund {no} was registered before and has since been pruned; a refund number is never reused"),
        )
        .answer(StatusCode::CONFLICT),
        Err(e) => ledger_failed(&e),
    }
}

/// `GET /v1/refunds/{outRefundNo}`.
async fn read(
    State(s): State<AppState>,
    headers: HeaderMap,
    no: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(refused) = refuse_unauthorized(&s, &headers) {
        return refused;
    }
    let no = match no {
        Ok(Path(no)) => OutRefundNo::parse(&no),
        Err(_) => Err(InvalidValue::new("outRefundNo", "is not UTF-8 text")),
    };
    let no = match no {
        Ok(no) => no,
        Err(e) => return Refusal::from(e).answer(StatusCode::BAD_REQUEST),
    };
    let shown = no.to_string();
    match s.live.api_call(move |l| l.refund(&no)).await {
        Ok(Some(row)) => (StatusCode::OK, Json(RefundView::from(&row))).into_response(),
        Ok(None) => Refusal::new(
            Some("outRefundNo"),
            format!("no refund {shown} in the ledger"),
        )
        .answer(StatusCode::NOT_FOUND),
        Err(e) => ledger_failed(&e),
    }
}

/// 503 when the ledger may take the request later (busy past its timeout, disk full), else
/// 500; logged either way, with the cause chain (which holds no secret).
fn ledger_failed(e: &LedgerError) -> Response {
    let chain = crate::logging::one_line_chain(e);
    if e.is_unavailable() {
        warn!(error = %chain, "api request failed: ledger unavailable");
        let mut answer = Refusal::new(None, "the ledger is busy or its disk is full; try again")
            .answer(StatusCode::SERVICE_UNAVAILABLE);
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return answer;
    }
    error!(error = %chain, "api request failed: ledger error");
    Refusal::new(None, "the ledger failed; see the daemon's log")
        .answer(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> (Option<String>, String) {
        let e = parse_body(body.as_bytes()).unwrap_err();
        (e.field, e.reason)
    }

    #[test]
    fn bodies_are_read_with_exact_amounts_and_null_as_absent() {
        let (raw, given) = parse_body(
            br#"{"outRefundNo":"R1","amount":12.50,"currency":"USD","outTradeNo":null}"#,
        )
        .unwrap();
        assert_eq!(raw.amount, "12.50");
        assert_eq!(raw.out_trade_no, None);
        assert!(!given);
        let (raw, given) = parse_body(
            br#"{"amount":"0.10","currency":"EUR","outRefundNo":"R2","createdAt":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!((raw.amount.as_str(), given), ("0.10", true));
        // A number too long for any float keeps every digit.
        let (raw, _) = parse_body(
            br#"{"outRefundNo":"R3","amount":12345678901234567890.123456,"currency":"USD"}"#,
        )
        .unwrap();
        assert_eq!(raw.amount, "12345678901234567890.123456");
    }

    #[test]
    fn bodies_of_the_wrong_shape_are_refused_naming_the_field() {
        let f = |s: &str| Some(s.to_owned());
        for (body, field, reason) in [
            (
                r#"{"outRefundNo":"R1","amount":"1","currency":"USD","memo":"x"}"#,
                f("memo"),
                "unknown field",
            ),
            (
                r#"{"outRefundNo":"R1","outRefundNo":"R2","amount":"1","currency":"USD"}"#,
                f("outRefundNo"),
                "given more than once",
            ),
            (
                r#"{"outRefundNo":7,"amount":"1","currency":"USD"}"#,
                f("outRefundNo"),
                "must be a JSON string",
            ),
            (
                r#"{"outRefundNo":"R1","amount":true,"currency":"USD"}"#,
                f("amount"),
                "must be a decimal",
            ),
            (
                r#"{"outRefundNo":"R1","amount":["1"],"currency":"USD"}"#,
                f("amount"),
                "must be a decimal",
            ),
            (
                r#"{"outRefundNo":"R1","currency":"USD"}"#,
                f("amount"),
                "is required",
            ),
            (
                r#"{"outRefundNo":"R1","amount":"1","currency":null}"#,
                f("currency"),
                "is required",
            ),
            (
                r#"{"outRefundNo":"","amount":"1","currency":"USD"}"#,
                f("outRefundNo"),
                "is required",
            ),
            (r#"[1,2]"#, None, "not a JSON object"),
            (r#"{"outRefundNo":"R1""#, None, "not a JSON object"),
            (r#"{} {}"#, None, "not a JSON object"),
        ] {
            let (got_field, got_reason) = refused(body);
            assert_eq!(got_field, field, "{body}");
            assert!(got_reason.contains(reason), "{body}: {got_reason}");
        }
        assert_eq!(
            parse_body(b"\xff\xfe").unwrap_err().reason,
            "the body is not UTF-8 text"
        );
        // An unknown field's name is quoted escaped and cut short.
        let long = format!(r#"{{"{}\n":1}}"#, "é".repeat(100));
        let (field, _) = refused(&long);
        assert_eq!(field.unwrap().chars().count(), QUOTED_NAME_CHARS);
    }

    #[test]
    fn content_types() {
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON", true),
            ("application/json; charset=utf-8", true),
            ("application/json;charset=\"UTF-8\"", true),
            ("application/json; charset=latin1", false),
            ("text/plain", false),
            ("application/jsonx", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            assert_eq!(is_json(Some(ct.as_bytes())), ok, "{ct}");
        }
        assert!(!is_json(None));
    }

    fn row(body: &str) -> (NewRefund, bool, RefundRow) {
        let (raw, given) = parse_body(body.as_bytes()).unwrap();
        let now = crate::domain::parse_ts("2026-06-01T00:00:00Z").unwrap();
        let n = raw.validate(now).unwrap();
        let row = RefundRow {
            out_refund_no: n.out_refund_no.clone(),
            refund_trade_no: Some("T-FROM-GATEWAY".into()),
            out_trade_no: n.out_trade_no.clone(),
            amount: n.amount,
            currency: n.currency,
            status: RefundStatus::Success,
            created_at: crate::domain::parse_ts("2026-05-01T00:00:00Z").unwrap(),
            notified_at: None,
            finalized_at: None,
            final_source: Some(FinalSource::Query),
            refund_finish_time: None,
            next_query_at: None,
            attempts: 2,
            unknown_since: None,
            last_attempt_at: None,
            last_outcome: None,
            last_error: None,
            review_flag: false,
            review_reason: None,
            flagged_at: None,
        };
        (n, given, row)
    }

    #[test]
    fn a_repeat_differs_only_in_what_it_gives() {
        let base = r#"{"outRefundNo":"R1","amount":"12.50","currency":"USD""#;
        // The same request, after the refund was reconciled and the gateway's number filled in.
        let (asked, given, stored) = row(&format!("{base}}}"));
        assert_eq!(differing(&asked, given, &stored), None);
        let (asked, given, _) = row(r#"{"outRefundNo":"R1","amount":12.5,"currency":"USD"}"#);
        assert_eq!(differing(&asked, given, &stored), None, "12.5 is 12.50");
        for (body, field) in [
            (
                r#"{"outRefundNo":"R1","amount":"13","currency":"USD"}"#,
                "amount",
            ),
            (
                r#"{"outRefundNo":"R1","amount":"12.50","currency":"EUR"}"#,
                "currency",
            ),
            (
                &format!(r#"{base},"refundTradeNo":"OTHER"}}"#),
                "refundTradeNo",
            ),
            (&format!(r#"{base},"outTradeNo":"O1"}}"#), "outTradeNo"),
            (&format!(r#"{base},"status":"REFUND_FAILED"}}"#), "status"),
            (
                &format!(r#"{base},"createdAt":"2026-05-01T00:00:01Z"}}"#),
                "createdAt",
            ),
        ] {
            let (asked, given, _) = row(body);
            assert_eq!(differing(&asked, given, &stored), Some(field), "{body}");
        }
        let (asked, given, _) = row(&format!(
            r#"{base},"createdAt":"2026-05-01T02:00:00+02:00"}}"#
        ));
        assert_eq!(differing(&asked, given, &stored), None, "the same instant");
    }
}
