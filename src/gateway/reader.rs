//! The tolerant reader for the *informative* fields of a verified `/refundQuery` answer
//! (`refundAmount`, `refundCurrency`, `refundTradeNo`, `refundFinishTime`): what the official
//! SDKs accept, we read. Pure, and every field is one small function with a table test.
//!
//! Issue 11's rule: strict where it decides (signature, `code`, `data.status`,
//! `data.outRefundNo`: see [`classify`](mod@super::classify)), tolerant where it informs. Each
//! informative field comes out as a [`Read`]:
//! - absent, `null` or `""` (the SDKs and docs-v2 mark every field conditional) is
//!   [`Read::Absent`];
//! - a value in an unexpected but unambiguous form is read: an amount as a JSON string of an
//!   exact decimal (`"12.3400"`, kept exactly, trailing zeros and all), a currency in lower
//!   case or with surrounding blanks, a gateway refund number as a JSON integer, a time with a
//!   space instead of `T`, with `+0800` for `+08:00`, or with no offset at all (then in the
//!   configured zone, `gateway.naive_time_offset`, UTC unless set: the notification page says
//!   UTC+0 for the same field, the query page names no zone);
//! - anything else is [`Read::Unreadable`] with a short reason that quotes the value escaped
//!   and cut: recorded, never a reason to refuse the answer.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::domain::{Currency, Timestamp, exact_decimal};

/// One informative field, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    /// Read, in the expected or an unambiguous odd form.
    Value(T),
    /// Absent, `null`, or the empty string.
    Absent,
    /// Present, but in no form we can read; the reason quotes the value escaped and cut.
    Unreadable(String),
    /// A definite value that cannot be held exactly: an amount with more digits than a
    /// `Decimal` keeps (`12.4999999999999999999999999999999`). It is not unreadable (it
    /// plainly is not the ledger's amount) and rounding it once finalized a 12.50 refund
    /// (issue 10, part 7), so the answer is refused as malformed, as before issue 11.
    Inexact(String),
}

/// A raw informative value, sorted by JSON kind: absent (`None`, `null`, `""` or only blanks),
/// a string (unescaped), or any other JSON value (kept raw, for numbers and error texts).
enum Raw<'a> {
    Absent,
    Text(String),
    Other(&'a str),
}

fn sort(raw: Option<&RawValue>) -> Raw<'_> {
    let Some(raw) = raw.map(RawValue::get) else {
        return Raw::Absent;
    };
    match serde_json::from_str::<Option<String>>(raw) {
        Ok(None) => Raw::Absent,
        Ok(Some(text)) if text.trim().is_empty() => Raw::Absent,
        Ok(Some(text)) => Raw::Text(text),
        Err(_) => Raw::Other(raw.trim()),
    }
}

/// `data.refundAmount`: a JSON number, or a JSON string holding one (as TIZ36's SDK types it),
/// converted exactly ([`exact_decimal`]: never through `f64`, never rounded; `"12.3400"` stays
/// `12.3400`, which compares equal to `12.34`).
pub fn read_amount(raw: Option<&RawValue>) -> Read<Decimal> {
    let (text, quoted) = match sort(raw) {
        Raw::Absent => return Read::Absent,
        Raw::Text(text) => (Cow::Owned(text.trim().to_owned()), true),
        Raw::Other(raw) if starts_like_a_number(raw) => (Cow::Borrowed(raw), false),
        Raw::Other(raw) => {
            return Read::Unreadable(format!(
                "must be a number or a string of one, got {}",
                json_kind(raw)
            ));
        }
    };
    if !starts_like_a_number(&text) {
        return Read::Unreadable(format!("{} is not a decimal number", quote(&text, quoted)));
    }
    match exact_decimal(&text) {
        Ok(amount) => Read::Value(amount),
        Err(e) if is_decimal_syntax(&text) => Read::Inexact(format!(
            "data.refundAmount {} is not an exact decimal: {}",
            quote(&text, quoted),
            e.reason
        )),
        Err(e) => Read::Unreadable(format!(
            "{} is not an exact decimal: {}",
            quote(&text, quoted),
            e.reason
        )),
    }
}

/// `data.refundCurrency`: a three-letter ISO 4217 code; surrounding blanks and lower case are
/// unambiguous and read (`" usd"` is `USD`).
pub fn read_currency(raw: Option<&RawValue>) -> Read<Currency> {
    match sort(raw) {
        Raw::Absent => Read::Absent,
        Raw::Text(text) => match Currency::parse(&text.trim().to_ascii_uppercase()) {
            Ok(currency) => Read::Value(currency),
            Err(_) => Read::Unreadable(format!("{} is not an ISO 4217 code", quote(&text, true))),
        },
        Raw::Other(raw) => Read::Unreadable(format!("must be a string, got {}", json_kind(raw))),
    }
}

/// `data.refundTradeNo`: a string, kept as it is (whether the ledger can store it is
/// [`crate::domain::ObservedRefund::recordable`]'s question). A JSON integer (digits only) is
/// read as its digits, which is unambiguous; any other number (`1e3`, `1.0`) is not.
pub fn read_trade_no(raw: Option<&RawValue>) -> Read<String> {
    match sort(raw) {
        Raw::Absent => Read::Absent,
        Raw::Text(text) => Read::Value(text),
        Raw::Other(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            Read::Value(digits.to_owned())
        }
        Raw::Other(raw) => Read::Unreadable(format!("must be a string, got {}", json_kind(raw))),
    }
}

/// `data.refundFinishTime`: a string holding a time ([`read_time`]), in `assumed` when it
/// names no offset. The SDKs keep it as an opaque string; we read it because the ledger keeps
/// it, and record it as unreadable when it is no time.
pub fn read_finish_time(raw: Option<&RawValue>, assumed: FixedOffset) -> Read<Timestamp> {
    match sort(raw) {
        Raw::Absent => Read::Absent,
        Raw::Text(text) => match read_time(&text, assumed) {
            Some(at) => Read::Value(at),
            None => Read::Unreadable(format!("{} is not a time", quote(&text, true))),
        },
        Raw::Other(raw) => Read::Unreadable(format!("must be a string, got {}", json_kind(raw))),
    }
}

/// A time in any unambiguous form: RFC 3339 (`2023-10-20T03:28:23.092Z`,
/// `...T11:28:23.092+08:00`), a space instead of the `T`, an offset without its colon
/// (`+0800`), or no offset at all (then it is a time in `assumed`). A date alone, an epoch
/// number or anything else is not read: which instant it means would be a guess.
pub fn read_time(text: &str, assumed: FixedOffset) -> Option<Timestamp> {
    let text = text.trim();
    let text: Cow<'_, str> = match text.as_bytes().get(10) {
        Some(b' ') => Cow::Owned(format!("{}T{}", &text[..10], &text[11..])),
        _ => Cow::Borrowed(text),
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(at.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    // A fixed offset has no gaps or folds, so `single` always has its one answer.
    assumed
        .from_local_datetime(&naive)
        .single()
        .map(|at| at.with_timezone(&Utc))
}

/// True for the grammar of a JSON number (`-`? digits (`.` digits)? (`e` `±`? digits)?), which
/// is a definite decimal value whether or not a `Decimal` can hold it.
fn is_decimal_syntax(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let text = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    digits(int)
        && frac.is_none_or(digits)
        && exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

fn starts_like_a_number(text: &str) -> bool {
    text.as_bytes()
        .first()
        .is_some_and(|&b| b == b'-' || b.is_ascii_digit())
}

/// `text` for an error detail: cut to 40 characters, control characters escaped (Rust's
/// `Debug` escaping), in quotes when it was a JSON string.
fn quote(text: &str, quoted: bool) -> String {
    let cut: String = text.chars().take(40).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    let shown = format!("{cut:?}");
    if quoted {
        format!("{}{more}", shown)
    } else {
        format!("{}{more}", &shown[1..shown.len() - 1])
    }
}

/// A word for the JSON type of a raw value, for error details.
pub(super) fn json_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn amounts_in_every_form() {
        let cases: &[(&str, Read<Decimal>)] = &[
            ("10.50", Read::Value(dec("10.50"))),
            (r#""12.3400""#, Read::Value(dec("12.3400"))),
            (r#"" 7.5 ""#, Read::Value(dec("7.5"))),
            (r#""1.05E1""#, Read::Value(dec("10.5"))),
            ("null", Read::Absent),
            (r#""""#, Read::Absent),
            (r#""  ""#, Read::Absent),
            (
                r#""ten""#,
                Read::Unreadable(r#""ten" is not a decimal number"#.into()),
            ),
            (
                r#""10,50""#,
                Read::Unreadable(
                    r#""10,50" is not an exact decimal: is not a decimal number"#.into(),
                ),
            ),
            (
                "true",
                Read::Unreadable("must be a number or a string of one, got a boolean".into()),
            ),
            (
                "{}",
                Read::Unreadable("must be a number or a string of one, got an object".into()),
            ),
            (
                "12.4999999999999999999999999999999e0",
                Read::Inexact(String::new()),
            ),
            (
                r#""12.4999999999999999999999999999999""#,
                Read::Inexact(String::new()),
            ),
            ("1e65", Read::Inexact(String::new())),
            ("1e999", Read::Inexact(String::new())),
            (
                r#""1e""#,
                Read::Unreadable(
                    r#""1e" is not an exact decimal: has a malformed exponent"#.into(),
                ),
            ),
        ];
        for (json, want) in cases {
            let got = read_amount(Some(&raw(json)));
            match (want, &got) {
                (Read::Unreadable(_), Read::Unreadable(why))
                | (Read::Inexact(_), Read::Inexact(why)) => {
                    assert!(why.len() < 200, "{json}: {why}");
                }
                _ => assert_eq!(&got, want, "{json}"),
            }
        }
        assert_eq!(read_amount(None), Read::Absent);
        // Exactness: the string's trailing zeros are kept, and compare equal to the number.
        let Read::Value(a) = read_amount(Some(&raw(r#""12.3400""#))) else {
            panic!()
        };
        assert_eq!(a.to_string(), "12.3400");
        assert_eq!(a, dec("12.34"));
    }

    #[test]
    fn currencies_in_every_form() {
        let usd = Currency::parse("USD").unwrap();
        for (json, want) in [
            (r#""USD""#, Read::Value(usd)),
            (r#""usd""#, Read::Value(usd)),
            (r#"" USD ""#, Read::Value(usd)),
            ("null", Read::Absent),
            (r#""""#, Read::Absent),
            (
                r#""US$""#,
                Read::Unreadable(r#""US$" is not an ISO 4217 code"#.into()),
            ),
            (
                r#""DOLLAR""#,
                Read::Unreadable(r#""DOLLAR" is not an ISO 4217 code"#.into()),
            ),
            (
                "840",
                Read::Unreadable("must be a string, got a number".into()),
            ),
        ] {
            assert_eq!(read_currency(Some(&raw(json))), want, "{json}");
        }
    }

    #[test]
    fn trade_numbers_in_every_form() {
        for (json, want) in [
            (r#""T1""#, Read::Value("T1".to_owned())),
            ("null", Read::Absent),
            (r#""""#, Read::Absent),
            ("2023102012345", Read::Value("2023102012345".to_owned())),
            (
                "1e3",
                Read::Unreadable("must be a string, got a number".into()),
            ),
            (
                "true",
                Read::Unreadable("must be a string, got a boolean".into()),
            ),
            (
                "[]",
                Read::Unreadable("must be a string, got an array".into()),
            ),
        ] {
            assert_eq!(read_trade_no(Some(&raw(json))), want, "{json}");
        }
    }

    #[test]
    fn times_in_every_unambiguous_form() {
        let at = parse_ts("2023-10-20T03:28:23.092Z").unwrap();
        let east8 = FixedOffset::east_opt(8 * 3600).unwrap();
        for (text, zone, want) in [
            ("2023-10-20T03:28:23.092Z", utc(), Some(at)),
            ("2023-10-20T11:28:23.092+08:00", utc(), Some(at)),
            ("2023-10-20T11:28:23.092+0800", utc(), Some(at)),
            ("2023-10-20 03:28:23.092Z", utc(), Some(at)),
            ("2023-10-20 11:28:23.092+08:00", utc(), Some(at)),
            ("2023-10-20T03:28:23.092", utc(), Some(at)),
            ("2023-10-20 03:28:23.092", utc(), Some(at)),
            // No offset: a time in the configured zone.
            ("2023-10-20T11:28:23.092", east8, Some(at)),
            // An explicit offset wins over the configured zone.
            ("2023-10-20T03:28:23.092Z", east8, Some(at)),
            (
                "2023-10-20T03:28:23",
                utc(),
                Some(parse_ts("2023-10-20T03:28:23Z").unwrap()),
            ),
            ("2023-10-20", utc(), None),
            ("1697772503092", utc(), None),
            ("yesterday", utc(), None),
            ("2023-13-40T03:28:23Z", utc(), None),
            ("2023-10-20X03:28:23Z", utc(), None),
        ] {
            assert_eq!(read_time(text, zone), want, "{text} in {zone}");
        }
    }

    #[test]
    fn finish_times_in_every_form() {
        let at = parse_ts("2023-10-20T03:28:23.092Z").unwrap();
        for (json, want) in [
            (r#""2023-10-20T03:28:23.092Z""#, Read::Value(at)),
            (r#""2023-10-20 03:28:23.092""#, Read::Value(at)),
            ("null", Read::Absent),
            (r#""""#, Read::Absent),
            (
                r#""yesterday""#,
                Read::Unreadable(r#""yesterday" is not a time"#.into()),
            ),
            (
                r#""\u001b[31m""#,
                Read::Unreadable(r#""\u{1b}[31m" is not a time"#.into()),
            ),
            (
                "1697772503092",
                Read::Unreadable("must be a string, got a number".into()),
            ),
        ] {
            assert_eq!(read_finish_time(Some(&raw(json)), utc()), want, "{json}");
        }
        let long = format!(r#""{}""#, "9".repeat(100));
        let Read::Unreadable(why) = read_finish_time(Some(&raw(&long)), utc()) else {
            panic!()
        };
        assert!(why.len() < 80, "{why}");
    }
}
