//! Issue 11, parts 1 and 3, through the real binary: strict where it decides, tolerant where it
//! informs, and the body read whatever the HTTP status. Each test serves canned answers from a
//! tiny loopback server (one answer per connection, in order), runs `query` and `explain`, and
//! checks the ledger file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use checus_reconciler::gateway::keys::MerchantKey;
use checus_reconciler::sandbox::test_keys::INSECURE_GATEWAY_PRIVATE_PEM;

use crate::common::proc::{code, config_text, run, sql, stderr, stdout};

/// How a canned answer is signed.
#[derive(Clone, Copy)]
enum Sign {
    /// No `sign` header.
    None,
    /// Signed with the INSECURE gateway key, standard base64 with padding.
    Gateway,
    /// The same signature with its `=` padding stripped.
    GatewayUnpadded,
    /// A header that is no signature at all.
    Bogus,
}

/// One canned answer: HTTP status, signing, body.
struct Canned {
    status: u16,
    sign: Sign,
    body: String,
}

fn answer(status: u16, sign: Sign, body: &str) -> Canned {
    Canned {
        status,
        sign,
        body: body.to_owned(),
    }
}

/// A verified `APPLY_SUCCESS` answer with `data`.
fn success(data: &str) -> Canned {
    answer(
        200,
        Sign::Gateway,
        &format!(r#"{{"code":"APPLY_SUCCESS","msg":"Success.","data":{data}}}"#),
    )
}

/// Serves `answers` in order, one per connection, on a fresh loopback port; returns the base
/// URL. The thread ends after the last answer (a further query would be refused: connect
/// failed, which the tests would see as a `transport` attempt).
fn serve(answers: Vec<Canned>) -> String {
    let key = MerchantKey::from_text(INSECURE_GATEWAY_PRIVATE_PEM).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for canned in answers {
            let (mut s, _) = listener.accept().unwrap();
            crate::common::proc::read_http_request(&mut s);
            let signature = key.sign_b64(canned.body.as_bytes());
            let sign = match canned.sign {
                Sign::None => String::new(),
                Sign::Gateway => format!("sign: {signature}\r\n"),
                Sign::GatewayUnpadded => {
                    format!("sign: {}\r\n", signature.trim_end_matches('='))
                }
                Sign::Bogus => "sign: bm90IGEgc2lnbmF0dXJl\r\n".to_owned(),
            };
            let head = format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\n{sign}content-length: {}\r\nconnection: close\r\n\r\n",
                canned.status,
                canned.body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(canned.body.as_bytes()).unwrap();
        }
    });
    url
}

/// A temp dir with a ledger holding `R-1` (12.50 USD, pending) and a config for `url`;
/// `gateway` is extra `[gateway]` keys.
fn setup(url: &str, gateway: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ledger = d.join("ledger.sqlite");
    let o = run(
        d,
        &[
            "add",
            "--ledger",
            ledger.to_str().unwrap(),
            "--out-refund-no",
            "R-1",
            "--amount",
            "12.50",
            "--currency",
            "USD",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = config_text(d, url, "").replace("[keys]", &format!("{gateway}\n[keys]"));
    std::fs::write(d.join("config.toml"), text).unwrap();
    (dir, ledger)
}

fn query(d: &Path) -> Output {
    run(
        d,
        &[
            "query",
            "R-1",
            "--config",
            d.join("config.toml").to_str().unwrap(),
        ],
    )
}

fn explain(d: &Path, ledger: &Path) -> String {
    let o = run(d, &["explain", "R-1", "--ledger", ledger.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
}

/// The refund's (status, review_flag, refund_finish_time).
fn refund(ledger: &Path) -> (String, bool, Option<String>) {
    sql(ledger)
        .query_row(
            "SELECT status, review_flag, refund_finish_time FROM refunds WHERE out_refund_no = 'R-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

/// Every attempt, oldest first: (outcome, http_status, gateway_code, error).
type AttemptRow = (String, Option<i64>, Option<String>, Option<String>);

fn attempt_rows(ledger: &Path) -> Vec<AttemptRow> {
    let c = sql(ledger);
    let mut stmt = c
        .prepare("SELECT outcome, http_status, gateway_code, error FROM attempts ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn output(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

#[test]
fn an_answer_without_informative_fields_finalizes_and_explain_names_them() {
    let url = serve(vec![success(
        r#"{"outRefundNo":"R-1","status":"REFUND_SUCCESS"}"#,
    )]);
    let (dir, ledger) = setup(&url, "");
    let o = query(dir.path());
    assert_eq!(
        refund(&ledger),
        ("REFUND_SUCCESS".into(), false, None),
        "{}",
        output(&o)
    );
    let rows = attempt_rows(&ledger);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "final");
    let want = "data.refundAmount not confirmed: absent; data.refundCurrency not confirmed: \
                absent; data.refundTradeNo not confirmed: absent; data.refundFinishTime not \
                confirmed: absent";
    assert_eq!(rows[0].3.as_deref(), Some(want));
    let shown = explain(dir.path(), &ledger);
    assert!(
        shown.contains("data.refundAmount not confirmed: absent"),
        "{shown}"
    );
}

#[test]
fn odd_but_unambiguous_forms_are_read_exactly() {
    // The amount as a string with trailing zeros, the currency in lower case, a trade number as
    // an integer, a finish time with a space and no offset, in the configured +08:00.
    let url = serve(vec![success(
        r#"{ "status" : "REFUND_SUCCESS\t", "refundFinishTime":"2026-11-30 11:28:23.092",
            "refundAmount":"12.5000","refundCurrency":"usd","refundTradeNo":2026113000001,
            "outRefundNo":"R-1" }"#,
    )]);
    let (dir, ledger) = setup(&url, r#"naive_time_offset = "+08:00""#);
    let o = query(dir.path());
    assert_eq!(
        refund(&ledger),
        (
            "REFUND_SUCCESS".into(),
            false,
            Some("2026-11-30T03:28:23.092Z".into())
        ),
        "{}",
        output(&o)
    );
    let rows = attempt_rows(&ledger);
    assert_eq!(rows[0].0, "final");
    assert_eq!(rows[0].3, None, "a complete answer names nothing");
    let trade_no: String = sql(&ledger)
        .query_row("SELECT refund_trade_no FROM refunds", [], |r| r.get(0))
        .unwrap();
    assert_eq!(trade_no, "2026113000001");
}

#[test]
fn a_present_disagreeing_amount_is_still_a_mismatch() {
    let url = serve(vec![success(
        r#"{"outRefundNo":"R-1","refundAmount":"12.5100","status":"REFUND_SUCCESS"}"#,
    )]);
    let (dir, ledger) = setup(&url, "");
    let o = query(dir.path());
    let (status, flagged, _) = refund(&ledger);
    assert_eq!(
        (status.as_str(), flagged),
        ("REFUND_PENDING", true),
        "{}",
        output(&o)
    );
    assert_eq!(attempt_rows(&ledger)[0].0, "mismatch");
    let kind: String = sql(&ledger)
        .query_row("SELECT kind FROM discrepancies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kind, "amount_mismatch");
}

/// An unreadable finish time is recorded on every attempt, WARNed about once (the refund's
/// last error already names it on the second poll), never flags, and never blocks the status.
#[test]
fn an_unreadable_field_is_recorded_warned_once_and_never_blocks() {
    let pending = r#"{"outRefundNo":"R-1","refundAmount":12.5,"refundCurrency":"USD","refundTradeNo":"T1","status":"REFUND_PENDING","refundFinishTime":"soon"}"#;
    let done = pending.replace("REFUND_PENDING", "REFUND_SUCCESS");
    let url = serve(vec![success(pending), success(pending), success(&done)]);
    let (dir, ledger) = setup(&url, "");
    const WARN: &str = "answer field unreadable";
    let first = query(dir.path());
    assert!(output(&first).contains(WARN), "{}", output(&first));
    let second = query(dir.path());
    assert!(!output(&second).contains(WARN), "{}", output(&second));
    assert_eq!(refund(&ledger), ("REFUND_PENDING".into(), false, None));
    let third = query(dir.path());
    assert_eq!(
        refund(&ledger),
        ("REFUND_SUCCESS".into(), false, None),
        "{}",
        output(&third)
    );
    let text = r#"data.refundFinishTime unreadable: "soon" is not a time"#;
    let rows = attempt_rows(&ledger);
    let outcomes: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(outcomes, ["pending", "pending", "final"]);
    assert!(
        rows.iter().all(|r| r.3.as_deref() == Some(text)),
        "{rows:?}"
    );
    assert!(explain(dir.path(), &ledger).contains(text));
}

/// Part 3: a non-2xx answer with a code is classified by the code, signed or not; without a
/// readable code it stays a retryable `http_status` failure.
#[test]
fn non_2xx_answers_are_classified_by_their_code() {
    let url = serve(vec![
        answer(500, Sign::None, r#"{"code":"SYSTEM_ERROR","msg":"busy"}"#),
        answer(503, Sign::Bogus, r#"{"code":"SYSTEM_ERROR","msg":"busy"}"#),
        answer(502, Sign::None, "<html>bad gateway</html>"),
        answer(404, Sign::Gateway, r#"{"code":"ORDER_NOT_EXIST","msg":""}"#),
        // Never trusted for a status, even signed.
        answer(
            500,
            Sign::Gateway,
            r#"{"code":"APPLY_SUCCESS","data":{"outRefundNo":"R-1","status":"REFUND_SUCCESS"}}"#,
        ),
        answer(
            400,
            Sign::Gateway,
            r#"{"code":"SIGN_VERIFY_FAILED","msg":"x"}"#,
        ),
    ]);
    let (dir, ledger) = setup(&url, "");
    for _ in 0..6 {
        query(dir.path());
    }
    let rows = attempt_rows(&ledger);
    let got: Vec<(&str, Option<i64>, Option<&str>)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1, r.2.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("retryable", Some(500), Some("SYSTEM_ERROR")),
            ("retryable", Some(503), Some("SYSTEM_ERROR")),
            ("retryable", Some(502), None),
            ("unknown", Some(404), Some("ORDER_NOT_EXIST")),
            ("retryable", Some(500), Some("APPLY_SUCCESS")),
            ("config_error", Some(400), Some("SIGN_VERIFY_FAILED")),
        ],
        "{rows:?}"
    );
    assert!(rows[0].3.as_deref().unwrap().starts_with("system_error: "));
    assert!(rows[2].3.as_deref().unwrap().starts_with("http_status: "));
    assert!(rows[4].3.as_deref().unwrap().starts_with("http_status: "));
    assert_eq!(refund(&ledger).0, "REFUND_PENDING");
}

#[test]
fn a_sign_header_without_padding_is_accepted() {
    let mut canned = success(
        r#"{"outRefundNo":"R-1","refundAmount":12.50,"refundCurrency":"USD","status":"REFUND_FAILED","refundTradeNo":"T1","refundFinishTime":"2026-11-30T03:28:23.092Z"}"#,
    );
    canned.sign = Sign::GatewayUnpadded;
    let url = serve(vec![canned]);
    let (dir, ledger) = setup(&url, "");
    let o = query(dir.path());
    assert_eq!(refund(&ledger).0, "REFUND_FAILED", "{}", output(&o));
    assert_eq!(attempt_rows(&ledger)[0].3, None);
}
