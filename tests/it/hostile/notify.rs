//! Hostile notifications (issue 13 part 4): bodies and headers a careless proxy or an attacker
//! can POST to `http.notify_path`, each answered with its documented status (401 unverified,
//! 400 unreadable, 413 too large, 405 wrong method), none acknowledged, and nothing written:
//! no notification row, no discrepancy, the refund still pending. Then the same daemon still
//! records a genuine notification.

use checus_reconciler::domain::FinalStatus;
use checus_reconciler::sandbox::Step;
use checus_reconciler::sandbox::test_keys::{insecure_gateway_private, insecure_stranger_private};

use crate::common::proc::{LiveSandbox, count, post, signed_notification, sql};
use crate::notify::{ACK, script, start};

/// A notification body for refund `no` with `data` fields replaced by raw JSON text.
fn raw_body(no: &str, status: &str, amount: &str, top_extra: &str) -> Vec<u8> {
    format!(
        r#"{{"code":"APPLY_SUCCESS","msg":"Success.","merchantNo":"SANDBOX-MERCHANT","notifyTime":"2026-11-25T10:00:00.000Z","notifyType":"REFUND"{top_extra},"data":{{"outRefundNo":{no},"refundTradeNo":"T-1","outTradeNo":"O-1","refundAmount":{amount},"refundCurrency":"USD","status":{status},"refundFinishTime":"2026-11-25T10:00:00.000Z"}}}}"#
    )
    .into_bytes()
}

/// Signed by the gateway, as Checus would: only what decides is wrong.
fn gateway_signed(body: Vec<u8>) -> (Vec<u8>, Option<String>) {
    let sign = insecure_gateway_private().sign_b64(&body);
    (body, Some(sign))
}

struct Case {
    name: &'static str,
    body: Vec<u8>,
    sign: Option<String>,
    content_type: &'static str,
    status: u16,
}

fn case(name: &'static str, (body, sign): (Vec<u8>, Option<String>), status: u16) -> Case {
    Case {
        name,
        body,
        sign,
        content_type: "application/json",
        status,
    }
}

fn cases() -> Vec<Case> {
    let good = raw_body(r#""R-HN-1""#, r#""REFUND_SUCCESS""#, "12.50", "");
    let good_sign = insecure_gateway_private().sign_b64(&good);
    let mut altered = good.clone();
    let at = altered.windows(5).position(|w| w == b"12.50").unwrap();
    altered[at] = b'9';
    let replay_other_status = raw_body(r#""R-HN-1""#, r#""REFUND_FAILED""#, "12.50", "");
    vec![
        case("no sign header", (good.clone(), None), 401),
        case("sign not base64", (good.clone(), Some("***".into())), 401),
        case(
            "signed with a stranger's key",
            (
                good.clone(),
                Some(insecure_stranger_private().sign_b64(&good)),
            ),
            401,
        ),
        case(
            "altered amount, original sign",
            (altered, Some(good_sign.clone())),
            401,
        ),
        case(
            "replayed sign on another status",
            (replay_other_status, Some(good_sign.clone())),
            401,
        ),
        case("empty body", (Vec::new(), Some(good_sign)), 401),
        Case {
            name: "form body, form content type, unsigned",
            body: b"outRefundNo=R-HN-1&status=REFUND_SUCCESS".to_vec(),
            sign: None,
            content_type: "application/x-www-form-urlencoded",
            status: 401,
        },
        case(
            "invalid JSON, signed",
            gateway_signed(b"{\"code\":".to_vec()),
            400,
        ),
        case(
            "not a refund notification (notifyType PAYMENT)",
            gateway_signed(raw_body(
                r#""R-HN-1""#,
                r#""REFUND_SUCCESS""#,
                "12.50",
                r#","notifyType":"PAYMENT""#,
            )),
            400,
        ),
        case(
            "a status that is not final",
            gateway_signed(raw_body(r#""R-HN-1""#, r#""REFUND_PENDING""#, "12.50", "")),
            400,
        ),
        case(
            "a 65-character refund number",
            gateway_signed(raw_body(
                &format!("\"{}\"", "R".repeat(65)),
                r#""REFUND_SUCCESS""#,
                "12.50",
                "",
            )),
            400,
        ),
        case(
            "a huge refund number",
            gateway_signed(raw_body(
                &format!("\"{}\"", "R".repeat(20_000)),
                r#""REFUND_SUCCESS""#,
                "12.50",
                "",
            )),
            400,
        ),
        case(
            "a unicode refund number",
            gateway_signed(raw_body(
                r#""R-HN-\u9000\u6b3e""#,
                r#""REFUND_SUCCESS""#,
                "12.50",
                "",
            )),
            400,
        ),
        case(
            "a negative amount",
            gateway_signed(raw_body(r#""R-HN-1""#, r#""REFUND_SUCCESS""#, "-12.50", "")),
            400,
        ),
        case(
            "an amount that is a boolean",
            gateway_signed(raw_body(r#""R-HN-1""#, r#""REFUND_SUCCESS""#, "true", "")),
            400,
        ),
        case(
            "another merchant's notification",
            gateway_signed(raw_body(
                r#""R-HN-1""#,
                r#""REFUND_SUCCESS""#,
                "12.50",
                r#","merchantNo":"SOMEONE-ELSE""#,
            )),
            400,
        ),
        case(
            "a body over the 64 KiB cap",
            gateway_signed(raw_body(
                r#""R-HN-1""#,
                r#""REFUND_SUCCESS""#,
                "12.50",
                &format!(r#","pad":"{}""#, "x".repeat(70 * 1024)),
            )),
            413,
        ),
    ]
}

#[test]
fn hostile_notifications_get_their_status_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let s = script("R-HN-1", vec![Step::Success]);
    let sandbox = LiveSandbox::start(vec![s.clone()]);
    let (_daemon, url) = start(dir.path(), &sandbox, std::slice::from_ref(&s));
    let cases = cases();
    assert!(cases.len() >= 10);
    for c in cases {
        let a = post(&url, c.body, c.sign.as_deref(), c.content_type)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(a.status, c.status, "{}: {}", c.name, a.body);
        assert_ne!(a.body, ACK, "{}", c.name);
        assert_eq!(count(&ledger, "notifications"), 0, "{}", c.name);
        assert_eq!(count(&ledger, "discrepancies"), 0, "{}", c.name);
    }
    // A GET is not a notification.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(got.as_u16(), 405);
    let status: String = sql(&ledger)
        .query_row(
            "SELECT status FROM refunds WHERE out_refund_no = 'R-HN-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "REFUND_PENDING");

    // Unknown fields only inform: a genuine notification carrying them is recorded.
    let body = raw_body(
        r#""R-HN-1""#,
        r#""REFUND_SUCCESS""#,
        "12.50",
        r#","futureField":{"x":[1]}"#,
    );
    let (body, sign) = gateway_signed(body);
    let a = post(&url, body, sign.as_deref(), "application/json").unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, ACK));
    let n = signed_notification("R-HN-1", &s.1, FinalStatus::Success, None);
    let a = post(&url, n.body, Some(&n.sign), "text/plain").unwrap();
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, ACK),
        "the content type does not decide"
    );
    assert_eq!(count(&ledger, "notifications"), 2);
}
