//! The network half of the sandbox: the accept loop, one task per connection speaking
//! keep-alive HTTP/1.1, and the byte-level execution of every answer and fault (RSTs, hangs,
//! trickled bodies). Each connection task races the shutdown token, so shutdown closes idle,
//! hung and trickling connections alike.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::http::{self, RequestHead, Response};
use super::protocol::{self, AnswerData, Expectations, Shape, Variance};
use super::script::Fault;
use super::state::{Plan, Planned, State};
use super::{OVERSIZED_MIN_BYTES, QUERY_PATH};
use crate::domain::{Clock, Currency, RefundStatus};
use crate::gateway::{GatewayKey, MerchantKey};

/// How long a keep-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client may take to send the rest of a request once it has started.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Immutable configuration plus the locked state, shared by every connection task.
pub struct Shared {
    /// The bound address (for `Location` headers).
    pub addr: SocketAddr,
    /// Accepted `appId`.
    pub app_id: String,
    /// Accepted `merchantNo`.
    pub merchant_no: String,
    /// Accepted `version` values.
    pub accepted_versions: Vec<String>,
    /// Allowed `requestTime` skew.
    pub max_skew: Duration,
    /// Whether error answers carry a `sign` header too.
    pub sign_error_answers: bool,
    /// Verifies requests.
    pub merchant_public: GatewayKey,
    /// Signs answers.
    pub gateway_private: MerchantKey,
    /// Signs `WrongKey` answers.
    pub stranger_private: MerchantKey,
    /// Gateway time, for the `requestTime` window and `refundFinishTime`.
    pub clock: Arc<dyn Clock>,
    /// Everything that changes.
    pub state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A panic while holding the lock cannot leave it half-updated in a way
    /// that matters to a simulator, so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a connection does after a request.
enum Action {
    /// Write the response.
    Respond(Response),
    /// Write the head at once, then the body one byte per interval.
    Trickle(Response, Duration),
    /// Abort the connection with an RST.
    Reset,
    /// Say nothing until shutdown.
    Hang,
}

/// Accepts connections until `token` is cancelled; each is served on `tracker`.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.lock().connection_accepted();
                debug!(%peer, "connection accepted");
                let shared = Arc::clone(&shared);
                let token = token.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        _ = token.cancelled() => debug!(%peer, "connection closed by shutdown"),
                        _ = serve_connection(&shared, stream, peer) => {}
                    }
                });
            }
            Err(error) => {
                // Typically EMFILE; pausing keeps the loop from spinning until fds free up.
                debug!(%error, "accept failed");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
    debug!(addr = %shared.addr, "sandbox stopped accepting");
}

/// Reads into `buf`; `Ok(false)` on a clean EOF or timeout.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, wait: Duration) -> bool {
    buf.reserve(4096);
    matches!(
        tokio::time::timeout(wait, stream.read_buf(buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

async fn serve_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    // Every answer is one write of a complete message; Nagle would only delay trickled bytes.
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (head, head_len) = loop {
            match http::parse_head(&buf) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(error) => {
                    debug!(%peer, status = error.status(), %error, "request refused");
                    let _ =
                        write_response(&mut stream, &Response::html(error.status()), false).await;
                    return;
                }
            }
            let wait = if buf.is_empty() {
                IDLE_TIMEOUT
            } else {
                REQUEST_TIMEOUT
            };
            if !read_more(&mut stream, &mut buf, wait).await {
                debug!(%peer, "connection closed by peer or idle");
                return;
            }
        };
        buf.drain(..head_len);
        if head.expects_continue() && buf.len() < head.content_length {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        while buf.len() < head.content_length {
            if !read_more(&mut stream, &mut buf, REQUEST_TIMEOUT).await {
                debug!(%peer, "connection closed mid-request");
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..head.content_length).collect();
        let keep_alive = head.wants_keep_alive();
        let action = answer(shared, &head, &body).await;
        match action {
            Action::Respond(response) => {
                if write_response(&mut stream, &response, keep_alive)
                    .await
                    .is_err()
                    || !keep_alive
                {
                    return;
                }
            }
            Action::Trickle(response, interval) => {
                if stream
                    .write_all(&response.encode_head(keep_alive))
                    .await
                    .is_err()
                {
                    return;
                }
                for byte in &response.body {
                    tokio::time::sleep(interval).await;
                    if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
                        return;
                    }
                }
                if !keep_alive {
                    return;
                }
            }
            Action::Reset => {
                // SO_LINGER 0 turns the close into an RST: the client sees "connection reset".
                let _ = stream.set_zero_linger();
                drop(stream);
                return;
            }
            Action::Hang => std::future::pending::<()>().await,
        }
    }
}

async fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut bytes = response.encode_head(keep_alive);
    bytes.extend_from_slice(&response.body);
    stream.write_all(&bytes).await?;
    if !keep_alive {
        stream.shutdown().await?;
        drain_before_close(stream).await;
    }
    Ok(())
}

/// Reads and discards what the client is still sending (say, the body of a refused 413
/// request) until it closes, bounded in time and bytes. Closing a socket with unread input
/// makes the kernel send an RST, which can destroy the answer before the client reads it.
async fn drain_before_close(stream: &mut TcpStream) {
    let mut scratch = [0u8; 8192];
    let mut budget = 1024 * 1024usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while budget > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => break,
        }
    }
}

/// Routes, checks, plans (under the lock), waits, then renders (signing outside the lock).
async fn answer(shared: &Shared, head: &RequestHead, body: &[u8]) -> Action {
    shared.lock().request_read();
    let path = head.target.split('?').next().unwrap_or_default();
    if path != QUERY_PATH {
        debug!(path, "request refused");
        return Action::Respond(Response::html(404));
    }
    if head.method != "POST" {
        debug!(method = head.method, "request refused");
        return Action::Respond(Response::html(405).with_header("Allow", "POST"));
    }
    let now = shared.clock.now();
    let expect = Expectations {
        merchant_public: &shared.merchant_public,
        app_id: &shared.app_id,
        merchant_no: &shared.merchant_no,
        accepted_versions: &shared.accepted_versions,
        max_skew: shared.max_skew,
    };
    let checked = protocol::check_request(body, head.header("sign"), &expect, now);
    let (planned, _in_flight) = {
        let mut state = shared.lock();
        let planned = state.plan(checked, now);
        // Started under the same lock as the plan: a second query for the refund planned
        // before this one is rendered is seen as an overlap, whatever the scheduling.
        let in_flight = planned.out_refund_no.as_ref().map(|no| {
            state.query_started(no);
            InFlight {
                shared,
                out_refund_no: no.clone(),
            }
        });
        (planned, in_flight)
    };
    let Planned {
        plan,
        delay,
        latency,
        variance,
        out_refund_no,
    } = planned;
    let out_refund_no = out_refund_no.unwrap_or_default();
    match &plan {
        Plan::Reject(r) => debug!(
            out_refund_no,
            code = r.code,
            reason = r.msg,
            "request rejected"
        ),
        Plan::Code(code) => debug!(out_refund_no, code, "request answered"),
        Plan::Answer(d) => debug!(
            out_refund_no,
            code = protocol::APPLY_SUCCESS,
            status = d.status.as_str(),
            "request answered"
        ),
        Plan::Fault(fault, source, _) => {
            debug!(out_refund_no, %fault, source = source.as_str(), "fault injected")
        }
    }
    let wait = latency + delay;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    render(shared, plan, &variance)
}

/// One query of a refund being answered: from its plan until it is rendered, or until its
/// connection task is dropped while it waits (shutdown). Dropping it ends the query in the
/// state's in-flight count, so a cancelled wait never leaves a phantom query behind.
struct InFlight<'a> {
    shared: &'a Shared,
    out_refund_no: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.lock().query_finished(&self.out_refund_no);
    }
}

fn signed(key: &MerchantKey, body: Vec<u8>) -> Response {
    let sign = key.sign_b64(&body);
    Response::json(body).with_header("sign", sign)
}

/// An error answer: signed or not, on HTTP 200 or a matching status, as `variance` says.
fn error_response(shared: &Shared, code: &str, msg: &str, variance: &Variance) -> Response {
    let body = protocol::varied_error_body(code, msg, variance);
    let mut response = if variance.signs_errors(shared.sign_error_answers) {
        signed(&shared.gateway_private, body)
    } else {
        Response::json(body)
    };
    response.status = variance.error_status(code);
    response
}

fn render(shared: &Shared, plan: Plan, variance: &Variance) -> Action {
    let gateway = &shared.gateway_private;
    let correct = |data: &AnswerData| signed(gateway, protocol::success_body(data, Shape::Correct));
    let shaped = |data: &AnswerData, shape| signed(gateway, protocol::success_body(data, shape));
    let response = match plan {
        Plan::Reject(r) => error_response(shared, r.code, &r.msg, variance),
        Plan::Code(code) => error_response(shared, &code, protocol::default_msg(&code), variance),
        Plan::Answer(data) => signed(gateway, protocol::varied_success_body(&data, variance)),
        Plan::Fault(fault, _, mut data) => match fault {
            Fault::Http(status) => Response::html(status),
            Fault::Reset => return Action::Reset,
            Fault::Hang => return Action::Hang,
            Fault::Trickle(interval) => return Action::Trickle(correct(&data), interval),
            Fault::Oversized => shaped(&data, Shape::PaddedTo(OVERSIZED_MIN_BYTES)),
            Fault::Redirect => Response::html(302).with_header(
                "Location",
                format!("http://{}/moved{QUERY_PATH}", shared.addr),
            ),
            Fault::NotJson => Response {
                status: 200,
                headers: vec![("Content-Type", "text/html".to_owned())],
                body: b"<html><body><h1>System maintenance</h1><p>Please retry later.</p></body></html>"
                    .to_vec(),
            },
            Fault::MissingCode => shaped(&data, Shape::MissingCode),
            Fault::MissingData => shaped(&data, Shape::MissingData),
            Fault::MissingStatus => shaped(&data, Shape::MissingStatus),
            Fault::UnknownStatus => shaped(&data, Shape::UnknownStatus),
            Fault::AmountAsString => shaped(&data, Shape::AmountAsString),
            Fault::StatusAsNumber => shaped(&data, Shape::StatusAsNumber),
            Fault::NoSignature => Response::json(protocol::success_body(&data, Shape::Correct)),
            Fault::BadSignature => {
                // A genuine gateway signature, but over the answer with another status.
                let body = protocol::success_body(&data, Shape::Correct);
                let mut other = data.clone();
                other.status = match data.status {
                    RefundStatus::Pending => RefundStatus::Success,
                    _ => RefundStatus::Pending,
                };
                let sign = gateway.sign_b64(&protocol::success_body(&other, Shape::Correct));
                Response::json(body).with_header("sign", sign)
            }
            Fault::WrongKey => signed(&shared.stranger_private, protocol::success_body(&data, Shape::Correct)),
            Fault::WrongRefundNo => {
                data.out_refund_no.push_str("-OTHER");
                data.refund_trade_no.push_str("-OTHER");
                correct(&data)
            }
            Fault::WrongAmount => {
                data.amount += rust_decimal::Decimal::ONE;
                correct(&data)
            }
            Fault::WrongCurrency => {
                let other = if data.currency.as_str() == "USD" { "EUR" } else { "USD" };
                data.currency = Currency::parse(other).expect("USD and EUR are valid currencies");
                correct(&data)
            }
            Fault::TooManyRequests => error_response(
                shared,
                protocol::TOO_MANY_REQUEST,
                protocol::default_msg(protocol::TOO_MANY_REQUEST),
                &Variance::default(),
            ),
            Fault::LongTradeNo => {
                data.refund_trade_no = "T".repeat(65);
                correct(&data)
            }
            Fault::EscapeTradeNo => {
                data.refund_trade_no.push_str("\u{1b}[31m");
                correct(&data)
            }
            Fault::FarFinishTime => shaped(&data, Shape::FinishTimeText(super::FAR_FINISH_TIME)),
            Fault::UnstorableRefundNo => {
                data.out_refund_no = format!("\u{1b}[2J{}", "R".repeat(70));
                correct(&data)
            }
        },
    };
    Action::Respond(response)
}
