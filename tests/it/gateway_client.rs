//! The real `GatewayClient` over real TCP on 127.0.0.1 against a tiny in-test HTTP/1.1
//! responder: what the client sends (signed exact bytes, envelope, fresh `requestTime`,
//! connection reuse) and how it classifies what comes back (signed answers, error codes,
//! 5xx, redirects, oversized bodies, hangs, closes and resets).
//!
//! The responder is deliberately minimal and local to this file; the full simulated gateway
//! lives elsewhere. Readiness comes from binding the listener before the client starts, never
//! from sleeping.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checus_reconciler::domain::{
    Clock, OutRefundNo, QueryOutcome, RefundStatus, RetryReason, Timestamp, parse_ts,
};
use checus_reconciler::gateway::{
    GatewayClient, GatewayKey, GatewaySettings, MerchantKey, QueryReport, SettingsError,
    format_request_time,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Keys and clock
// ---------------------------------------------------------------------------------------------

fn key_text(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "testdata",
        "INSECURE-test-keys",
        name,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Signs answers the way the gateway does (the gateway's key is just an RSA private key).
fn gateway_signer() -> MerchantKey {
    MerchantKey::from_text(&key_text("gateway_private.pem")).unwrap()
}

fn stranger_signer() -> MerchantKey {
    MerchantKey::from_text(&key_text("stranger_private.pem")).unwrap()
}

/// Verifies requests the way the gateway does.
fn merchant_public() -> GatewayKey {
    GatewayKey::from_text(&key_text("merchant_public.pem")).unwrap()
}

/// A clock that returns `start`, `start + step`, `start + 2 step`, ... on successive reads.
struct SteppingClock {
    next: Mutex<Timestamp>,
    step: chrono::Duration,
}

impl SteppingClock {
    fn new(start: &str, step_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            next: Mutex::new(parse_ts(start).unwrap()),
            step: chrono::Duration::milliseconds(step_ms),
        })
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> Timestamp {
        let mut next = self.next.lock().unwrap();
        let now = *next;
        *next = now + self.step;
        now
    }
}

// ---------------------------------------------------------------------------------------------
// The responder
// ---------------------------------------------------------------------------------------------

/// One request as it arrived on the socket.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the responder does after reading a request.
enum Reply {
    /// A complete response with `Content-Length`; the connection stays open for more.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Write these bytes, then close (FIN).
    RawThenClose(Vec<u8>),
    /// Write these bytes, then reset (RST).
    RawThenReset(Vec<u8>),
    /// Write these bytes, then keep the connection open and silent forever.
    RawThenHang(Vec<u8>),
    /// A chunked 200 whose body never ends; stops when the client goes away.
    Endless,
}

type Handler = dyn Fn(&Captured) -> Reply + Send + Sync;

struct Responder {
    base_url: String,
    requests: Arc<Mutex<Vec<Captured>>>,
    connections: Arc<AtomicUsize>,
}

impl Responder {
    /// Binds 127.0.0.1:0 (so the client can connect as soon as this returns) and serves.
    async fn start(handler: impl Fn(&Captured) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, conns) = (requests.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, handler.clone(), reqs.clone()));
            }
        });
        Self {
            base_url: format!("http://{addr}/aggregate-pay/api/gateway"),
            requests,
            connections,
        }
    }

    fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, handler: Arc<Handler>, requests: Arc<Mutex<Vec<Captured>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let reply = handler(&request);
        requests.lock().unwrap().push(request);
        match reply {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (name, value) in headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::RawThenClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Reply::RawThenReset(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.flush().await;
                stream.set_zero_linger().unwrap();
                return; // dropping with zero linger sends RST
            }
            Reply::RawThenHang(bytes) => {
                let _ = stream.write_all(&bytes).await;
                std::future::pending::<()>().await;
            }
            Reply::Endless => {
                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(head).await.is_err() {
                    return;
                }
                let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
                while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                return;
            }
        }
    }
}

/// Reads one request (head plus `Content-Length` body); `None` at EOF.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Captured> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let path = request_line.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Some(Captured {
        method,
        path,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

fn answer_body(out_refund_no: &str, status: &str, amount: &str) -> Vec<u8> {
    format!(
        r#"{{"code":"APPLY_SUCCESS","msg":"Success.","data":{{"outRefundNo":"{out_refund_no}","refundTradeNo":"T-{out_refund_no}","refundAmount":{amount},"refundCurrency":"USD","outTradeNo":"O1","status":"{status}","resultMsg":"","refundFinishTime":""}}}}"#
    )
    .into_bytes()
}

/// A 200 answer signed with `signer` (the gateway key unless a test says otherwise).
fn signed(body: Vec<u8>, signer: &MerchantKey) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("sign".into(), signer.sign_b64(&body)),
        ],
        body,
    }
}

fn unsigned(status: u16, body: &str) -> Reply {
    Reply::Full {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// The refund number the client asked for, read from the captured body.
fn asked_for(request: &Captured) -> String {
    let v: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    v["data"]["outRefundNo"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

const START: &str = "2026-11-25T07:01:23.737Z";

fn settings(base_url: &str) -> GatewaySettings {
    let mut s = GatewaySettings::new(base_url, "app-test-1", "M-0001");
    s.connect_timeout = Duration::from_secs(2);
    s.request_timeout = Duration::from_secs(10);
    s.max_response_bytes = 8 * 1024;
    s
}

fn client_with(settings: GatewaySettings, clock: Arc<dyn Clock>) -> GatewayClient {
    GatewayClient::new(
        settings.validate().unwrap(),
        Arc::new(MerchantKey::from_text(&key_text("merchant_private.b64")).unwrap()),
        Arc::new(GatewayKey::from_text(&key_text("gateway_public.b64")).unwrap()),
        clock,
    )
    .unwrap()
}

fn client(base_url: &str) -> GatewayClient {
    client_with(settings(base_url), SteppingClock::new(START, 1_000))
}

fn no(text: &str) -> OutRefundNo {
    OutRefundNo::parse(text).unwrap()
}

fn retry_reason(report: &QueryReport) -> (RetryReason, &str) {
    match &report.outcome {
        QueryOutcome::Retryable { reason, detail } => (*reason, detail.as_str()),
        other => panic!("expected retryable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// What the client sends
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn signed_answers_classify_and_requests_are_signed_exact_bytes() {
    let gw = gateway_signer();
    let server = Responder::start(move |req| {
        let asked = asked_for(req);
        let status = if asked == "R-PENDING" {
            "REFUND_PENDING"
        } else {
            "REFUND_SUCCESS"
        };
        signed(answer_body(&asked, status, "10.50"), &gw)
    })
    .await;
    let clock = SteppingClock::new(START, 1_500);
    let client = client_with(settings(&server.base_url), clock);

    let first = client.query(&no("R-PENDING")).await;
    let second = client.query(&no("R-DONE")).await;

    // Outcomes.
    match &first.outcome {
        QueryOutcome::Pending(o) => {
            assert_eq!(o.out_refund_no.as_deref(), Some("R-PENDING"));
            assert_eq!(o.status, RefundStatus::Pending);
            assert_eq!(o.amount.unwrap().to_string(), "10.50");
            assert_eq!(o.refund_finish_time, None);
        }
        other => panic!("{other:?}"),
    }
    match &second.outcome {
        QueryOutcome::Final(o) => {
            assert_eq!(o.status, RefundStatus::Success);
            assert_eq!(o.refund_trade_no.as_deref(), Some("T-R-DONE"));
        }
        other => panic!("{other:?}"),
    }
    for report in [&first, &second] {
        assert_eq!(report.http_status, Some(200));
        assert_eq!(report.gateway_code.as_deref(), Some("APPLY_SUCCESS"));
    }
    // A pending answer without a finish time is complete; a final one names it (issue 11).
    assert_eq!(first.error, None);
    assert_eq!(
        second.error.as_deref(),
        Some("data.refundFinishTime not confirmed: absent")
    );
    assert_eq!(first.data_status.as_deref(), Some("REFUND_PENDING"));
    assert_eq!(second.data_status.as_deref(), Some("REFUND_SUCCESS"));
    assert_eq!(first.attempted_at, parse_ts(START).unwrap());
    assert_eq!(
        second.attempted_at,
        parse_ts("2026-11-25T07:01:25.237Z").unwrap()
    );

    // What went over the wire.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "exactly one HTTP call per query");
    let verifier = merchant_public();
    let mut times = Vec::new();
    for (request, (report, asked)) in requests
        .iter()
        .zip([(&first, "R-PENDING"), (&second, "R-DONE")])
    {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/aggregate-pay/api/gateway/refundQuery");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let sign = request.header("sign").expect("sign header");
        verifier
            .verify_b64(&request.body, sign)
            .expect("sign verifies over the exact body received");
        let mut tampered = request.body.clone();
        tampered[10] ^= 0x20;
        assert!(verifier.verify_b64(&tampered, sign).is_err());
        assert_ne!(request.body.last(), Some(&b'\n'));

        let v: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "appId",
                "data",
                "keyVersion",
                "merchantNo",
                "requestTime",
                "version"
            ]
        );
        assert_eq!(v["version"], "1.4");
        assert_eq!(v["keyVersion"], "1");
        assert_eq!(v["appId"], "app-test-1");
        assert_eq!(v["merchantNo"], "M-0001");
        assert_eq!(v["data"], serde_json::json!({ "outRefundNo": asked }));
        let request_time = v["requestTime"].as_str().unwrap();
        assert_eq!(request_time, format_request_time(report.attempted_at));
        times.push(request_time.to_owned());
    }
    assert_eq!(times[0], "2026-11-25T07:01:23.737+00:00");
    assert_eq!(times[1], "2026-11-25T07:01:25.237+00:00");
    assert_ne!(
        requests[0].header("sign"),
        requests[1].header("sign"),
        "fresh signature per call"
    );
    assert_eq!(server.connections(), 1, "the connection is reused");
}

#[tokio::test]
async fn error_codes_classify_without_a_signature_and_are_not_retried() {
    let server = Responder::start(|req| match asked_for(req).as_str() {
        "R-UNKNOWN" => unsigned(200, r#"{"code":"ORDER_NOT_EXIST","msg":"order invalid"}"#),
        "R-SKEW" => unsigned(200, r#"{"code":"REQ_TIME_OVER_TIME","msg":""}"#),
        "R-BUSY" => unsigned(200, r#"{"code":"SYSTEM_ERROR","msg":""}"#),
        "R-SLOW" => unsigned(200, r#"{"code":"TOO_MANY_REQUEST","msg":""}"#),
        "R-CONFIG" => unsigned(200, r#"{"code":"SIGN_VERIFY_FAILED","msg":""}"#),
        "R-ODD" => unsigned(200, r#"{"code":"REFUND_FAILED","msg":""}"#),
        _ => unsigned(200, "this is not json"),
    })
    .await;
    let client = client(&server.base_url);

    let r = client.query(&no("R-UNKNOWN")).await;
    assert_eq!(
        r.outcome,
        QueryOutcome::Unknown {
            code: "ORDER_NOT_EXIST".into()
        }
    );
    assert_eq!(r.gateway_code.as_deref(), Some("ORDER_NOT_EXIST"));
    assert!(r.error.as_deref().unwrap().contains("ORDER_NOT_EXIST"));

    let r = client.query(&no("R-SKEW")).await;
    assert_eq!(r.outcome, QueryOutcome::ClockSkew);
    let r = client.query(&no("R-BUSY")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::SystemError);
    let r = client.query(&no("R-SLOW")).await;
    assert_eq!(r.outcome, QueryOutcome::RateLimited);
    let r = client.query(&no("R-CONFIG")).await;
    assert_eq!(
        r.outcome,
        QueryOutcome::ConfigError {
            code: "SIGN_VERIFY_FAILED".into()
        }
    );
    let r = client.query(&no("R-ODD")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::UnknownCode);
    let r = client.query(&no("R-GARBAGE")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::Malformed);
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.gateway_code, None);

    assert_eq!(
        server.requests().len(),
        7,
        "one HTTP call per query, no retries"
    );
}

#[tokio::test]
async fn unverified_success_over_the_wire_is_never_trusted() {
    let stranger = stranger_signer();
    let gw = gateway_signer();
    let server = Responder::start(move |req| {
        let asked = asked_for(req);
        let body = answer_body(&asked, "REFUND_SUCCESS", "10.50");
        match asked.as_str() {
            "R-NOSIGN" => Reply::Full {
                status: 200,
                headers: vec![],
                body,
            },
            "R-STRANGER" => signed(body, &stranger),
            _ => {
                // Signed over one body, serves another (amount changed in transit).
                let sign = gw.sign_b64(&body);
                Reply::Full {
                    status: 200,
                    headers: vec![("sign".into(), sign)],
                    body: answer_body(&asked, "REFUND_SUCCESS", "99.50"),
                }
            }
        }
    })
    .await;
    let client = client(&server.base_url);
    for asked in ["R-NOSIGN", "R-STRANGER", "R-TAMPERED"] {
        let r = client.query(&no(asked)).await;
        assert_eq!(retry_reason(&r).0, RetryReason::Unverified, "{asked}");
        assert_eq!(r.data_status, None, "{asked}");
        let error = r.error.unwrap();
        assert!(error.starts_with("unverified: "), "{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP statuses and redirects
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn server_error_is_a_retryable_http_status() {
    let server = Responder::start(|_| unsigned(500, "<html>oops</html>")).await;
    let r = client(&server.base_url).query(&no("R-1")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::HttpStatus);
    assert_eq!(r.http_status, Some(500));
    assert_eq!(r.error.as_deref(), Some("http_status: HTTP status 500"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    // A second listener that a followed redirect would reach; nothing may connect to it.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!(
        "http://{}/aggregate-pay/api/gateway/refundQuery",
        elsewhere.local_addr().unwrap()
    );
    let server = Responder::start(move |req| {
        if req.path.ends_with("/refundQuery") {
            Reply::Full {
                status: 302,
                headers: vec![("location".into(), target.clone())],
                body: Vec::new(),
            }
        } else {
            unsigned(200, r#"{"code":"SYSTEM_ERROR"}"#)
        }
    })
    .await;
    let r = client(&server.base_url).query(&no("R-1")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::HttpStatus);
    assert_eq!(r.http_status, Some(302));
    assert_eq!(server.requests().len(), 1);
    // Had the client followed, it would have connected before `query` returned.
    assert_eq!(
        elsewhere.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the redirect target was contacted"
    );
}

// ---------------------------------------------------------------------------------------------
// Body cap
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn declared_oversized_body_is_refused() {
    let server = Responder::start(|req| {
        let mut body = answer_body(&asked_for(req), "REFUND_SUCCESS", "1");
        body.resize(8 * 1024 + 1, b' '); // valid JSON plus whitespace, one byte over the cap
        signed(body, &gateway_signer())
    })
    .await;
    let r = client(&server.base_url).query(&no("R-1")).await;
    let (reason, detail) = retry_reason(&r);
    assert_eq!(reason, RetryReason::Transport);
    assert!(detail.contains("8192-byte cap"), "{detail}");
    assert_eq!(r.http_status, Some(200));
}

#[tokio::test]
async fn body_exactly_at_the_cap_is_read() {
    let server = Responder::start(|req| {
        let mut body = answer_body(&asked_for(req), "REFUND_SUCCESS", "1");
        body.resize(8 * 1024, b' ');
        signed(body, &gateway_signer())
    })
    .await;
    let r = client(&server.base_url).query(&no("R-1")).await;
    assert!(matches!(r.outcome, QueryOutcome::Final(_)), "{r:?}");
}

#[tokio::test]
async fn endless_body_is_abandoned_at_the_cap() {
    let server = Responder::start(|_| Reply::Endless).await;
    // A long timeout, so only the cap can end this quickly.
    let mut s = settings(&server.base_url);
    s.request_timeout = Duration::from_secs(60);
    let client = client_with(s, SteppingClock::new(START, 1));
    let r = client.query(&no("R-1")).await;
    let (reason, detail) = retry_reason(&r);
    assert_eq!(reason, RetryReason::Transport);
    assert!(detail.contains("cap"), "{detail}");
    assert!(r.latency < Duration::from_secs(30), "{:?}", r.latency);
}

// ---------------------------------------------------------------------------------------------
// Hangs, closes, resets, refusals
// ---------------------------------------------------------------------------------------------

fn short_timeout_client(base_url: &str) -> GatewayClient {
    let mut s = settings(base_url);
    s.connect_timeout = Duration::from_millis(300);
    s.request_timeout = Duration::from_millis(300);
    client_with(s, SteppingClock::new(START, 1))
}

#[tokio::test]
async fn silent_gateway_times_out() {
    let server = Responder::start(|_| Reply::RawThenHang(Vec::new())).await;
    let r = short_timeout_client(&server.base_url)
        .query(&no("R-1"))
        .await;
    let (reason, detail) = retry_reason(&r);
    assert_eq!(reason, RetryReason::Transport);
    assert!(detail.contains("timed out"), "{detail}");
    assert_eq!(r.http_status, None);
    assert!(r.latency >= Duration::from_millis(300), "{:?}", r.latency);
    assert!(r.latency < Duration::from_secs(5), "{:?}", r.latency);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn body_that_stalls_midway_times_out() {
    let server = Responder::start(|_| {
        Reply::RawThenHang(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"code\":".to_vec())
    })
    .await;
    let r = short_timeout_client(&server.base_url)
        .query(&no("R-1"))
        .await;
    let (reason, detail) = retry_reason(&r);
    assert_eq!(reason, RetryReason::Transport);
    assert!(detail.contains("timed out"), "{detail}");
    assert!(r.latency < Duration::from_secs(5), "{:?}", r.latency);
}

#[tokio::test]
async fn connection_closed_before_any_answer() {
    let server = Responder::start(|_| Reply::RawThenClose(Vec::new())).await;
    let r = client(&server.base_url).query(&no("R-1")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::Transport);
    assert_eq!(r.http_status, None);
}

#[tokio::test]
async fn connection_closed_mid_body() {
    let server = Responder::start(|_| {
        Reply::RawThenClose(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"code\":\"APPLY_SUCCESS\"".to_vec(),
        )
    })
    .await;
    let r = client(&server.base_url).query(&no("R-1")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::Transport);
    assert_eq!(r.http_status, Some(200));
}

#[tokio::test]
async fn connection_reset_mid_response() {
    let server = Responder::start(|_| {
        Reply::RawThenReset(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"co".to_vec())
    })
    .await;
    let r = client(&server.base_url).query(&no("R-1")).await;
    assert_eq!(retry_reason(&r).0, RetryReason::Transport);
}

#[tokio::test]
async fn connection_refused_is_transport() {
    // Bind and drop to find a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = client(&format!("http://127.0.0.1:{port}/gw"))
        .query(&no("R-1"))
        .await;
    let (reason, detail) = retry_reason(&r);
    assert_eq!(reason, RetryReason::Transport);
    assert!(detail.starts_with("connect failed"), "{detail}");
    assert_eq!(r.http_status, None);
    assert!(r.error.unwrap().starts_with("transport: "));
}

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_http_to_a_non_loopback_host_is_refused_before_any_network() {
    for url in [
        "http://p-gate-uat.checus.com/aggregate-pay/api/gateway",
        "http://192.0.2.1/gw",
        "http://localhost.example/gw",
    ] {
        // The settings' own rules refuse it, so no client (and no connection) can exist.
        match settings(url).validate().unwrap_err() {
            SettingsError::InsecureScheme { setting, .. } => assert_eq!(setting, "base_url"),
            other => panic!("{url}: {other:?}"),
        }
    }
    let err = settings("not a url").validate().unwrap_err();
    assert_eq!(err.setting(), "base_url");
}

#[tokio::test]
async fn debug_output_carries_no_key_material() {
    let client = client("https://p-gate-uat.checus.com/aggregate-pay/api/gateway");
    let text = format!("{client:?}");
    let private = key_text("merchant_private.b64");
    let public = key_text("gateway_public.b64");
    for key in [&private, &public] {
        let sample = &key.trim()[40..80];
        assert!(!text.contains(sample), "{text}");
    }
    assert!(text.contains("<redacted>"), "{text}");
    assert!(text.contains("refundQuery"), "{text}");
}
