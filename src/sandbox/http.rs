//! Just enough HTTP/1.1 for a gateway simulator: a request-head parser over a byte buffer (no
//! socket, so it is unit-tested on its own) and a response encoder. Bodies are framed only by
//! `Content-Length`; chunked requests are refused, as are oversize heads and bodies.

use std::fmt::Write as _;

/// Largest request head (request line plus headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted. A `/refundQuery` envelope is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 64;

/// A parsed request line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target as sent (origin form, e.g. `/aggregate-pay/api/gateway/refundQuery`).
    pub target: String,
    /// True for HTTP/1.1, false for HTTP/1.0.
    pub is_http11: bool,
    /// Header names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The declared body length (0 when absent).
    pub content_length: usize,
}

impl RequestHead {
    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after this request (HTTP/1.1 default on,
    /// HTTP/1.0 default off; `Connection` overrides).
    pub fn wants_keep_alive(&self) -> bool {
        let tokens = self.header("connection").unwrap_or("").to_ascii_lowercase();
        let has = |t: &str| tokens.split(',').any(|x| x.trim() == t);
        if self.is_http11 {
            !has("close")
        } else {
            has("keep-alive")
        }
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Why a request head was refused; each maps to the status the server answers before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Unparseable request line or header.
    #[error("malformed request")]
    Malformed,
    /// Head longer than [`MAX_HEAD_BYTES`] or more than 64 headers.
    #[error("request head too large")]
    HeadTooLarge,
    /// `Content-Length` above [`MAX_BODY_BYTES`].
    #[error("request body too large")]
    BodyTooLarge,
    /// `Transfer-Encoding` used, or a body-carrying method without `Content-Length`.
    #[error("length required")]
    LengthRequired,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("http version not supported")]
    VersionNotSupported,
}

impl HeadError {
    /// The HTTP status answered for this error.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed => 400,
            HeadError::HeadTooLarge => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::LengthRequired => 411,
            HeadError::VersionNotSupported => 505,
        }
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)` means "need more bytes";
/// `Ok(Some((head, n)))` means the head occupies `buf[..n]` and the body follows.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some(end) = find_head_end(buf) else {
        return if buf.len() > MAX_HEAD_BYTES {
            Err(HeadError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD_BYTES {
        return Err(HeadError::HeadTooLarge);
    }
    let text = std::str::from_utf8(&buf[..end - 4]).map_err(|_| HeadError::Malformed)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(HeadError::Malformed)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed);
    }
    if !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let is_http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => return Err(HeadError::VersionNotSupported),
        _ => return Err(HeadError::Malformed),
    };
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::HeadTooLarge);
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed);
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return Err(HeadError::LengthRequired);
    }
    let mut lengths = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().map_err(|_| HeadError::Malformed));
    let content_length = match lengths.next() {
        None if method == "POST" || method == "PUT" => return Err(HeadError::LengthRequired),
        None => 0,
        Some(first) => {
            let first = first?;
            // Differing duplicate lengths are a request-smuggling shape: refuse them.
            for other in lengths {
                if other? != first {
                    return Err(HeadError::Malformed);
                }
            }
            first
        }
    };
    if content_length > MAX_BODY_BYTES {
        return Err(HeadError::BodyTooLarge);
    }
    Ok(Some((
        RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            is_http11,
            headers,
            content_length,
        },
        end,
    )))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The standard reason phrase for the statuses the sandbox uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// An HTTP response about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (`Content-Length`, `Connection` and `Server` are added on encoding).
    pub headers: Vec<(&'static str, String)>,
    /// The body, sent exactly as is.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type", "application/json;charset=UTF-8".to_owned())],
            body,
        }
    }

    /// A short HTML response with the given status, like a proxy in front of a gateway sends.
    pub fn html(status: u16) -> Self {
        let body = format!(
            "<html><head><title>{status} {r}</title></head><body><h1>{status} {r}</h1></body></html>",
            r = reason(status)
        );
        Self {
            status,
            headers: vec![("Content-Type", "text/html".to_owned())],
            body: body.into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The status line and headers, ending in the blank line.
    pub fn encode_head(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(
            head,
            "Content-Length: {}\r\nConnection: {}\r\nServer: checus-sandbox\r\n\r\n",
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        head.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_a_post_head_and_reports_its_length() {
        let text = "POST /a/refundQuery HTTP/1.1\r\nHost: x\r\nSign: abc=\r\nContent-Length: 5\r\n\r\nhello";
        let (head, n) = parse(text).unwrap().unwrap();
        assert_eq!(&text[n..], "hello");
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/a/refundQuery");
        assert_eq!(head.header("sign"), Some("abc="));
        assert_eq!(head.content_length, 5);
        assert!(head.wants_keep_alive());
        assert!(!head.expects_continue());
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        assert_eq!(parse("POST / HTTP/1.1\r\nContent-Length: 1\r\n"), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |t: &str| parse(t).unwrap().unwrap().0.wants_keep_alive();
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn refusals_map_to_statuses() {
        let err = |t: &str| parse(t).unwrap_err().status();
        assert_eq!(err("POST / HTTP/1.1\r\n\r\n"), 411);
        assert_eq!(
            err("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n"),
            413
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(err("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(err("POST / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(err("POST /\r\n\r\n"), 400);
        assert_eq!(err("POST http://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(err("GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&huge).unwrap_err(), HeadError::HeadTooLarge);
        let many: String = (0..100).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(err(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn response_head_frames_the_body() {
        let r = Response::json(b"{}".to_vec()).with_header("sign", "abc");
        let head = String::from_utf8(r.encode_head(true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("\r\nsign: abc\r\n"));
        assert!(head.contains("\r\nContent-Length: 2\r\n"));
        assert!(head.ends_with("Connection: keep-alive\r\nServer: checus-sandbox\r\n\r\n"));
        let head = String::from_utf8(Response::html(502).encode_head(false)).unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(head.contains("Connection: close"));
    }
}
