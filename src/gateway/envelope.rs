//! The signed `/refundQuery` request: the envelope bytes, the `requestTime` format, and the
//! signature over exactly those bytes. Pure: the time is an argument and nothing here does I/O.
//!
//! The body is serialised once; the very same bytes are signed and posted (fact sheet §2.2).
//! Nothing may re-serialise, pretty-print or append a newline after signing.

use std::time::Instant;

use serde::Serialize;

use super::keys::MerchantKey;
use super::settings::GatewaySettings;
use crate::domain::{OutRefundNo, Timestamp};

/// Envelope field order is the documented one: `version`, `keyVersion`, `requestTime`,
/// `appId`, `merchantNo`, `data`. The gateway verifies raw bytes, so order is cosmetic, but a
/// fixed order makes the bytes reproducible for tests and for Checus support.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    version: &'a str,
    key_version: &'a str,
    request_time: &'a str,
    app_id: &'a str,
    merchant_no: &'a str,
    data: QueryData<'a>,
}

/// `data` of `/refundQuery`: we always query by our own refund number. `refundTradeNo` is
/// never sent alongside it, because what the gateway does with both is undocumented.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryData<'a> {
    out_refund_no: &'a str,
}

/// Formats `requestTime`: RFC 3339 in UTC with exactly three millisecond digits and the
/// explicit offset `+00:00`, e.g. `2026-11-25T07:01:23.737+00:00`.
///
/// `+00:00` rather than `Z` because it is the form the Checus/PayerMax docs show verbatim
/// (`yyyy-MM-dd'T'HH:mm:ss.SSSXXX`, example `2022-01-17T07:01:23.737+00:00`). Sub-millisecond
/// precision is truncated, never rounded, so the text never runs ahead of the clock.
pub fn format_request_time(at: Timestamp) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string()
}

/// The exact `/refundQuery` body for `out_refund_no` at `request_time`: compact JSON, no
/// trailing newline, no `requestId`, no `refundTradeNo`.
pub fn query_body(
    settings: &GatewaySettings,
    out_refund_no: &OutRefundNo,
    request_time: Timestamp,
) -> Vec<u8> {
    envelope_bytes(settings, out_refund_no, &format_request_time(request_time))
}

/// [`query_body`] with `requestTime` already formatted, so [`sign_query`] formats it once for
/// both the body and [`SignedRequest::request_time`].
fn envelope_bytes(
    settings: &GatewaySettings,
    out_refund_no: &OutRefundNo,
    request_time: &str,
) -> Vec<u8> {
    let envelope = Envelope {
        version: &settings.version,
        key_version: &settings.key_version,
        request_time,
        app_id: &settings.app_id,
        merchant_no: &settings.merchant_no,
        data: QueryData {
            out_refund_no: out_refund_no.as_str(),
        },
    };
    // A struct of `&str` fields serialises into a `Vec` without any failure path (no maps with
    // non-string keys, no I/O errors from a Vec writer).
    serde_json::to_vec(&envelope).expect("serialising a struct of strings cannot fail")
}

/// A request ready to post: the exact body, its signature, and what it cost to make.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The body bytes; post exactly these.
    pub body: Vec<u8>,
    /// Standard-base64 SHA256withRSA signature over `body`, for the `sign` header.
    pub sign: String,
    /// The `requestTime` text inside `body`.
    pub request_time: String,
    /// Time spent building the envelope and signing it (RSA signing dominates, ~0.7 ms).
    pub signing: std::time::Duration,
}

impl std::fmt::Debug for SignedRequest {
    // The signature is not secret, but it is noise in logs and the brief says never to log it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("sign", &"<omitted>")
            .field("request_time", &self.request_time)
            .field("signing", &self.signing)
            .finish()
    }
}

/// Builds the body for `out_refund_no` at `request_time` and signs exactly those bytes.
pub fn sign_query(
    settings: &GatewaySettings,
    key: &MerchantKey,
    out_refund_no: &OutRefundNo,
    request_time: Timestamp,
) -> SignedRequest {
    let started = Instant::now();
    let request_time = format_request_time(request_time);
    let body = envelope_bytes(settings, out_refund_no, &request_time);
    let sign = key.sign_b64(&body);
    SignedRequest {
        body,
        sign,
        request_time,
        signing: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;
    use crate::gateway::keys::GatewayKey;

    const MERCHANT_PRIVATE: &str =
        include_str!("../../testdata/INSECURE-test-keys/merchant_private.b64");
    const MERCHANT_PUBLIC: &str =
        include_str!("../../testdata/INSECURE-test-keys/merchant_public.b64");
    const STRANGER_PUBLIC: &str =
        include_str!("../../testdata/INSECURE-test-keys/stranger_public.pem");

    fn settings() -> GatewaySettings {
        GatewaySettings::new("https://checus.example/gw", "app-7", "M-42")
    }

    #[test]
    fn request_time_has_three_digit_millis_and_explicit_offset() {
        let cases = [
            ("2026-11-25T07:01:23.737Z", "2026-11-25T07:01:23.737+00:00"),
            ("2026-11-25T07:01:23Z", "2026-11-25T07:01:23.000+00:00"),
            ("2026-11-25T07:01:23.5Z", "2026-11-25T07:01:23.500+00:00"),
            ("2026-11-25T07:01:23.07Z", "2026-11-25T07:01:23.070+00:00"),
            // Truncated, not rounded up into the next second.
            (
                "2026-11-25T07:01:23.999999999Z",
                "2026-11-25T07:01:23.999+00:00",
            ),
            // Other offsets are converted to UTC.
            (
                "2026-11-25T15:01:23.737+08:00",
                "2026-11-25T07:01:23.737+00:00",
            ),
        ];
        for (input, expected) in cases {
            let text = format_request_time(parse_ts(input).unwrap());
            assert_eq!(text, expected, "{input}");
            assert_eq!(parse_ts(&text).unwrap().timestamp_millis(), {
                let t = parse_ts(input).unwrap();
                t.timestamp_millis()
            });
        }
    }

    #[test]
    fn envelope_bytes_are_exact() {
        let no = OutRefundNo::parse("R-2026/1").unwrap();
        let at = parse_ts("2026-11-25T07:01:23.737Z").unwrap();
        let body = query_body(&settings(), &no, at);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"version":"1.4","keyVersion":"1","requestTime":"2026-11-25T07:01:23.737+00:00","appId":"app-7","merchantNo":"M-42","data":{"outRefundNo":"R-2026/1"}}"#
        );
        assert_ne!(body.last(), Some(&b'\n'));
        assert!(!String::from_utf8_lossy(&body).contains("requestId"));
    }

    #[test]
    fn version_strings_come_from_settings() {
        let mut s = settings();
        s.version = "1.5".into();
        s.key_version = "2".into();
        let no = OutRefundNo::parse("R1").unwrap();
        let body = query_body(&s, &no, parse_ts("2026-01-01T00:00:00Z").unwrap());
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.starts_with(r#"{"version":"1.5","keyVersion":"2","#),
            "{text}"
        );
    }

    #[test]
    fn settings_text_is_json_escaped_not_injected() {
        let mut s = settings();
        s.app_id = r#"a","x":"y"#.into();
        let no = OutRefundNo::parse("R1").unwrap();
        let body = query_body(&s, &no, parse_ts("2026-01-01T00:00:00Z").unwrap());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["appId"], r#"a","x":"y"#);
        assert!(v.get("x").is_none());
    }

    #[test]
    fn signature_covers_exactly_the_body_bytes() {
        let key = MerchantKey::from_text(MERCHANT_PRIVATE).unwrap();
        let public = GatewayKey::from_text(MERCHANT_PUBLIC).unwrap();
        let stranger = GatewayKey::from_text(STRANGER_PUBLIC).unwrap();
        let no = OutRefundNo::parse("R-77").unwrap();
        let at = parse_ts("2026-11-25T07:01:23.737Z").unwrap();
        let signed = sign_query(&settings(), &key, &no, at);
        assert_eq!(signed.body, query_body(&settings(), &no, at));
        assert_eq!(signed.request_time, "2026-11-25T07:01:23.737+00:00");
        public.verify_b64(&signed.body, &signed.sign).unwrap();
        assert!(stranger.verify_b64(&signed.body, &signed.sign).is_err());
        // Standard alphabet with padding, no line breaks: 256 bytes -> 344 characters.
        assert_eq!(signed.sign.len(), 344);
        assert!(!signed.sign.contains('\n'));
        // Any single changed byte, and a trailing newline, break it.
        for i in [0, signed.body.len() / 2, signed.body.len() - 1] {
            let mut tampered = signed.body.clone();
            tampered[i] ^= 0x01;
            assert!(
                public.verify_b64(&tampered, &signed.sign).is_err(),
                "byte {i}"
            );
        }
        let mut with_newline = signed.body.clone();
        with_newline.push(b'\n');
        assert!(public.verify_b64(&with_newline, &signed.sign).is_err());
        assert!(!format!("{signed:?}").contains(&signed.sign));
    }
}
