//! Bad input at the refunds API (issue 13 part 4): each request below gets its documented
//! status and names what it refused, against one real daemon; afterwards the ledger holds no
//! refund and no log line holds the token.

use std::time::Duration;

use serde_json::json;

use crate::api::{TOKEN, api_daemon, send};

/// One hostile request and what it must get.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    /// The refused field, when the answer names one.
    field: Option<&'static str>,
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// A POST with the token and a JSON content type.
fn post(
    what: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method: "POST",
        path: "/v1/refunds".into(),
        headers: vec![
            ("authorization", bearer()),
            ("content-type", "application/json".into()),
        ],
        body: Some(body.into()),
        status,
        field,
    }
}

fn with_headers(mut c: Case, headers: Vec<(&'static str, String)>) -> Case {
    c.headers = headers;
    c
}

fn get(what: &'static str, path: &str, status: u16) -> Case {
    Case {
        what,
        method: "GET",
        path: path.to_owned(),
        headers: vec![("authorization", bearer())],
        body: None,
        status,
        field: Some("outRefundNo"),
    }
}

fn cases() -> Vec<Case> {
    let ok = json!({"outRefundNo": "R-HOSTILE", "amount": "1.00", "currency": "USD"}).to_string();
    let json_ct = ("content-type", "application/json".to_owned());
    let with = |field: &str, value: serde_json::Value| {
        let mut v = json!({"outRefundNo": "R-HOSTILE", "amount": "1.00", "currency": "USD"});
        v[field] = value;
        v.to_string()
    };
    vec![
        with_headers(
            post("no token", ok.clone(), 401, Some("Authorization")),
            vec![json_ct.clone()],
        ),
        with_headers(
            post("wrong token", ok.clone(), 401, Some("Authorization")),
            vec![
                ("authorization", "Bearer not-the-token-0123456789".into()),
                json_ct.clone(),
            ],
        ),
        with_headers(
            post(
                "token one character longer",
                ok.clone(),
                401,
                Some("Authorization"),
            ),
            vec![("authorization", format!("{}x", bearer())), json_ct.clone()],
        ),
        with_headers(
            post(
                "the token under the Basic scheme",
                ok.clone(),
                401,
                Some("Authorization"),
            ),
            vec![("authorization", format!("Basic {TOKEN}")), json_ct.clone()],
        ),
        Case {
            headers: vec![],
            field: Some("Authorization"),
            ..get("GET without a token", "/v1/refunds/R-1", 401)
        },
        with_headers(
            post("text/plain body", ok.clone(), 415, Some("Content-Type")),
            vec![
                ("authorization", bearer()),
                ("content-type", "text/plain".into()),
            ],
        ),
        with_headers(
            post(
                "form-encoded body",
                "outRefundNo=R1&amount=1&currency=USD",
                415,
                Some("Content-Type"),
            ),
            vec![
                ("authorization", bearer()),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
        ),
        with_headers(
            post("no content type", ok.clone(), 415, Some("Content-Type")),
            vec![("authorization", bearer())],
        ),
        post(
            "oversized body (80 KiB)",
            with("outTradeNo", json!("x".repeat(80 * 1024))),
            413,
            None,
        ),
        post(
            "invalid JSON",
            r#"{"outRefundNo": "R-HOSTILE", "amount": "1.00""#,
            400,
            None,
        ),
        post("empty body", "", 400, None),
        post("a JSON array", "[]", 400, None),
        post(
            "body not UTF-8",
            b"{\"outRefundNo\": \"R\xff\"}".to_vec(),
            400,
            None,
        ),
        post(
            "unknown field",
            with("memo", json!("hi")),
            400,
            Some("memo"),
        ),
        post(
            "field name in the wrong case",
            with("outrefundno", json!("R2")),
            400,
            Some("outrefundno"),
        ),
        post(
            "field given twice",
            r#"{"outRefundNo":"R-HOSTILE","amount":"1.00","amount":"1000.00","currency":"USD"}"#,
            400,
            Some("amount"),
        ),
        post(
            "refund number of 65 characters",
            with("outRefundNo", json!("R".repeat(65))),
            400,
            Some("outRefundNo"),
        ),
        post(
            "unicode refund number",
            with("outRefundNo", json!("退款-1")),
            400,
            Some("outRefundNo"),
        ),
        post(
            "refund number with a space",
            with("outRefundNo", json!("R 1")),
            400,
            Some("outRefundNo"),
        ),
        post(
            "refund number as a number",
            with("outRefundNo", json!(42)),
            400,
            Some("outRefundNo"),
        ),
        post(
            "huge amount number 1e400",
            r#"{"outRefundNo":"R-HOSTILE","amount":1e400,"currency":"USD"}"#,
            400,
            Some("amount"),
        ),
        post(
            "amount of 40 digits",
            with("amount", json!("9".repeat(40))),
            400,
            Some("amount"),
        ),
        post(
            "negative amount",
            r#"{"outRefundNo":"R-HOSTILE","amount":-1.00,"currency":"USD"}"#,
            400,
            Some("amount"),
        ),
        post(
            "zero amount",
            with("amount", json!("0.00")),
            400,
            Some("amount"),
        ),
        post(
            "more decimals than the currency has",
            with("amount", json!("1.001")),
            400,
            Some("amount"),
        ),
        post(
            "amount as a boolean",
            with("amount", json!(true)),
            400,
            Some("amount"),
        ),
        post(
            "lower-case currency",
            with("currency", json!("usd")),
            400,
            Some("currency"),
        ),
        post(
            "status REFUND_SUCCESS",
            with("status", json!("REFUND_SUCCESS")),
            400,
            Some("status"),
        ),
        post(
            "unknown status",
            with("status", json!("DONE")),
            400,
            Some("status"),
        ),
        post(
            "createdAt not RFC 3339",
            with("createdAt", json!("yesterday")),
            400,
            Some("createdAt"),
        ),
        post(
            "createdAt a year ahead",
            with("createdAt", json!("2999-01-01T00:00:00Z")),
            400,
            Some("createdAt"),
        ),
        post(
            "control character in outTradeNo",
            with("outTradeNo", json!("O\u{1b}[31m")),
            400,
            Some("outTradeNo"),
        ),
        get(
            "GET a unicode refund number",
            "/v1/refunds/%E9%80%80%E6%AC%BE",
            400,
        ),
        get(
            "GET a 200-character refund number",
            &format!("/v1/refunds/{}", "R".repeat(200)),
            400,
        ),
        get("GET a number with an encoded NUL", "/v1/refunds/R%00", 400),
    ]
}

#[test]
fn every_bad_api_request_gets_its_documented_status_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, mut daemon, addr, ledger) = api_daemon(dir.path(), Vec::new());
    let cases = cases();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = send(addr, c.method, &c.path, &headers, c.body.clone());
        assert_eq!(got.status, c.status, "{}: {}", c.what, got.body);
        if c.status == 413 {
            continue;
        }
        assert_eq!(got.content_type, "application/json", "{}", c.what);
        assert_eq!(got.field().as_deref(), c.field, "{}: {}", c.what, got.body);
        if c.status == 401 {
            assert_eq!(
                got.www_authenticate.as_deref(),
                Some("Bearer"),
                "{}",
                c.what
            );
        }
    }
    assert_eq!(crate::common::proc::count(&ledger, "refunds"), 0);
    eprintln!("api bad-input cases: {}", cases.len());
    assert!(cases.len() >= 12);
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
    daemon.drain();
    assert!(
        daemon.seen.iter().all(|l| !l.contains(TOKEN)),
        "the token was logged"
    );
}
