//! Refund value types: statuses, the final source, validated refund numbers, currencies and
//! amounts. Each type round-trips through the exact text the ledger and the gateway use.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::time::Timestamp;

/// Why a value was rejected. The message names the field and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    /// The field (or key, or column) that was rejected.
    pub field: &'static str,
    /// What is wrong with it, quoting the value where that is safe.
    pub reason: String,
}

impl InvalidValue {
    /// Builds an error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// The three Checus refund statuses, as `data.status` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefundStatus {
    /// `REFUND_PENDING`: not final yet.
    Pending,
    /// `REFUND_SUCCESS`: final; the channel accepted the refund.
    Success,
    /// `REFUND_FAILED`: final; the money went back to the merchant's balance.
    Failed,
}

impl RefundStatus {
    /// All statuses, in display order.
    pub const ALL: [RefundStatus; 3] = [Self::Pending, Self::Success, Self::Failed];

    /// The wire and ledger spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "REFUND_PENDING",
            Self::Success => "REFUND_SUCCESS",
            Self::Failed => "REFUND_FAILED",
        }
    }

    /// The final status, if this is one.
    pub fn as_final(self) -> Option<FinalStatus> {
        match self {
            Self::Pending => None,
            Self::Success => Some(FinalStatus::Success),
            Self::Failed => Some(FinalStatus::Failed),
        }
    }

    /// True for `REFUND_SUCCESS` and `REFUND_FAILED`.
    pub fn is_final(self) -> bool {
        self.as_final().is_some()
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RefundStatus {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "REFUND_PENDING" => Ok(Self::Pending),
            "REFUND_SUCCESS" => Ok(Self::Success),
            "REFUND_FAILED" => Ok(Self::Failed),
            other => Err(InvalidValue::new(
                "status",
                format!(
                    "unknown status {other:?} (expected REFUND_PENDING, REFUND_SUCCESS or REFUND_FAILED)"
                ),
            )),
        }
    }
}

/// A final status. A refund that reached one never leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinalStatus {
    /// `REFUND_SUCCESS`
    Success,
    /// `REFUND_FAILED`
    Failed,
}

impl FinalStatus {
    /// The general status this final status is.
    pub fn status(self) -> RefundStatus {
        match self {
            Self::Success => RefundStatus::Success,
            Self::Failed => RefundStatus::Failed,
        }
    }

    /// The wire and ledger spelling.
    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }
}

impl fmt::Display for FinalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FinalStatus {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RefundStatus::from_str(s)?.as_final().ok_or_else(|| {
            InvalidValue::new("status", "REFUND_PENDING is not a final status".to_string())
        })
    }
}

/// Where a final outcome came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinalSource {
    /// A signed refund result notification, written by the merchant's app.
    Notification,
    /// A verified `/refundQuery` answer, written by this daemon.
    Query,
    /// The synchronous `/refund` answer (only ever `REFUND_FAILED`).
    RefundResponse,
    /// An audited operator decision.
    Operator,
}

impl FinalSource {
    /// The ledger spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notification => "notification",
            Self::Query => "query",
            Self::RefundResponse => "refund_response",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for FinalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FinalSource {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "notification" => Ok(Self::Notification),
            "query" => Ok(Self::Query),
            "refund_response" => Ok(Self::RefundResponse),
            "operator" => Ok(Self::Operator),
            other => Err(InvalidValue::new(
                "final_source",
                format!("unknown source {other:?}"),
            )),
        }
    }
}

/// The merchant's refund number (`outRefundNo`): 1 to 64 printable ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutRefundNo(String);

impl OutRefundNo {
    /// The longest `outRefundNo` Checus accepts.
    pub const MAX_LEN: usize = 64;

    /// Validates a refund number.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        if text.is_empty() {
            return Err(InvalidValue::new("outRefundNo", "is empty"));
        }
        if text.len() > Self::MAX_LEN {
            return Err(InvalidValue::new(
                "outRefundNo",
                format!(
                    "is {} characters long; Checus allows at most {}",
                    text.len(),
                    Self::MAX_LEN
                ),
            ));
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(InvalidValue::new(
                "outRefundNo",
                format!("{text:?} contains {c:?}; only printable ASCII without spaces is allowed"),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The refund number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutRefundNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OutRefundNo {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

/// Currencies Checus settles with no decimals (fact sheet §8, plus ISO 4217 zero-exponent codes).
const ZERO_DECIMAL: &[&str] = &[
    "IDR", "TWD", "PKR", "COP", "JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG",
    "RWF", "KMF", "GNF", "DJF", "BIF", "VUV", "XPF",
];

impl Currency {
    /// Validates a currency code.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let bytes = text.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(InvalidValue::new(
                "currency",
                format!("{text:?} is not a three-letter upper-case ISO 4217 code"),
            ));
        }
        Ok(Self([bytes[0], bytes[1], bytes[2]]))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The most decimals an amount in this currency may carry. Checus allows two for the
    /// three-decimal ISO currencies (BHD, KWD, ...) and none for IDR, TWD, PKR and COP; every
    /// other currency is treated as two-decimal.
    pub fn max_scale(&self) -> u32 {
        if ZERO_DECIMAL.contains(&self.as_str()) {
            0
        } else {
            2
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The longest amount text the ledger stores (schema.sql's `length(amount) BETWEEN 1 AND 28`).
pub const MAX_AMOUNT_CHARS: usize = 28;

/// Parses and validates a refund amount in major units: a plain decimal, positive, with no
/// more decimals than `currency` allows and at most [`MAX_AMOUNT_CHARS`] characters as stored.
/// Exponents, signs other than none, and floats are refused.
pub fn validate_amount(text: &str, currency: Currency) -> Result<Decimal, InvalidValue> {
    let well_formed = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|&c| c == '.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    if !well_formed {
        return Err(InvalidValue::new(
            "amount",
            format!("{text:?} is not a plain positive decimal such as 12.50"),
        ));
    }
    let amount = Decimal::from_str_exact(text)
        .map_err(|e| InvalidValue::new("amount", format!("{text:?}: {e}")))?;
    if amount.is_zero() {
        return Err(InvalidValue::new("amount", "must be greater than zero"));
    }
    // The ledger stores the parsed value's text (`0012.50` becomes `12.50`); a longer one
    // would fail the schema's CHECK with raw SQL text instead of this message.
    let stored = amount.to_string();
    if stored.len() > MAX_AMOUNT_CHARS {
        return Err(InvalidValue::new(
            "amount",
            format!(
                "{stored} is {} characters long; the ledger stores at most {MAX_AMOUNT_CHARS}",
                stored.len()
            ),
        ));
    }
    if amount.normalize().scale() > currency.max_scale() {
        return Err(InvalidValue::new(
            "amount",
            format!(
                "{text} has more decimals than {currency} allows ({})",
                currency.max_scale()
            ),
        ));
    }
    Ok(amount)
}

/// True for a character that must never reach a terminal raw: C0 and C1 controls (escape
/// sequences, carriage returns, tabs, newlines), DEL, and the Unicode bidirectional overrides
/// and isolates that reorder what a terminal shows. Input refuses them in text fields; the
/// renderers in `report` escape any that were stored anyway (by the merchant's SQL).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Validates an optional free-text identifier (`refundTradeNo`, `outTradeNo`): empty means
/// absent; otherwise at most 64 bytes and no [`is_unsafe_char`].
pub fn validate_text(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<String>, InvalidValue> {
    let Some(text) = value.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if text.len() > 64 {
        return Err(InvalidValue::new(field, "longer than 64 characters"));
    }
    if let Some(c) = text.chars().find(|&c| is_unsafe_char(c)) {
        return Err(InvalidValue::new(
            field,
            format!(
                "{text:?} contains the control character {c:?}; control characters are refused"
            ),
        ));
    }
    Ok(Some(text))
}

/// The earliest `created_at` accepted: no refund was issued before 1970.
const EARLIEST_CREATED: &str = "1970-01-01T00:00:00Z";

/// How far past `now` a `created_at` may lie: the merchant's clock may run a little ahead, or
/// a time zone be wrong by hours, but a refund issued next year would never be queried until
/// then, a silent stall.
const CREATED_AHEAD_DAYS: i64 = 1;

/// Parses and checks a refund's `created_at` (RFC 3339, any offset): a real instant the
/// ledger can store and schedule from, between 1970-01-01 UTC and one day after `now`.
/// Leap seconds (second 60) are refused: the ledger's SQLite time functions cannot count
/// from them.
pub fn validate_created_at(
    field: &'static str,
    text: &str,
    now: Timestamp,
) -> Result<Timestamp, InvalidValue> {
    let t = super::time::parse_ts(text)
        .map_err(|e| InvalidValue::new(field, format!("{text:?} is not an RFC 3339 time: {e}")))?;
    let earliest = super::time::parse_ts(EARLIEST_CREATED).expect("a valid constant");
    let latest = now + chrono::Duration::days(CREATED_AHEAD_DAYS);
    use chrono::Timelike;
    if t.nanosecond() >= 1_000_000_000 {
        return Err(InvalidValue::new(
            field,
            format!("{text:?} is a leap second (second 60), which the ledger cannot store"),
        ));
    }
    if t < earliest || t > latest {
        return Err(InvalidValue::new(
            field,
            format!(
                "{text:?} is out of range: it must lie between {EARLIEST_CREATED} and one day from now ({})",
                super::time::format_ts(latest)
            ),
        ));
    }
    Ok(t)
}

/// The longest exponent [`exact_decimal`] expands: far beyond any amount, small enough that
/// the expanded text stays short.
const MAX_EXPONENT: u32 = 64;

/// Converts a JSON number's text (`10.50`, `-3`, `1.05E1`) to a [`Decimal`] exactly, or
/// refuses it. Never rounds: an exponent form is expanded to plain digits first, and a value
/// with more digits than a `Decimal` holds (28 after the point, 96 bits in all) is an error,
/// not the nearest representable value.
pub fn exact_decimal(text: &str) -> Result<Decimal, InvalidValue> {
    let refuse = |why: &str| InvalidValue::new("amount", why.to_owned());
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let (negative, unsigned) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !digits_only(int)
        || !digits_only(frac)
        || (unsigned.contains('.') && frac.is_empty())
    {
        return Err(refuse("is not a decimal number"));
    }
    let shift: i64 = match exponent {
        None => 0,
        Some(e) => {
            let (sign, magnitude) = match e.as_bytes().first() {
                Some(b'-') => (-1, &e[1..]),
                Some(b'+') => (1, &e[1..]),
                _ => (1, e),
            };
            if magnitude.is_empty() || !digits_only(magnitude) {
                return Err(refuse("has a malformed exponent"));
            }
            let significant = magnitude.trim_start_matches('0');
            let value: u32 = if significant.is_empty() {
                0
            } else if significant.len() > 3 {
                MAX_EXPONENT + 1
            } else {
                significant.parse().unwrap_or(MAX_EXPONENT + 1)
            };
            if value > MAX_EXPONENT {
                return Err(refuse(
                    "has an exponent beyond 64, too large to be an amount",
                ));
            }
            sign * i64::from(value)
        }
    };
    let digits = format!("{int}{frac}");
    // Where the decimal point falls in `digits` once the exponent is applied.
    let point = i64::try_from(int.len()).unwrap_or(i64::MAX) + shift;
    let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let mut plain = String::with_capacity(digits.len() + MAX_EXPONENT as usize + 3);
    if negative {
        plain.push('-');
    }
    if point <= 0 {
        plain.push_str("0.");
        plain.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        plain.push_str(&digits);
    } else if point >= len {
        plain.push_str(&digits);
        plain.extend(std::iter::repeat_n('0', (point - len) as usize));
    } else {
        let (whole, part) = digits.split_at(point as usize);
        plain.push_str(whole);
        plain.push('.');
        plain.push_str(part);
    }
    Decimal::from_str_exact(&plain).map_err(|e| {
        refuse(&format!(
            "cannot be held exactly ({e}); it is refused rather than rounded"
        ))
    })
}

/// A refund as the merchant (or `add`/`import`) hands it to the ledger: validated values only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    /// The merchant's refund number, unique in the ledger.
    pub out_refund_no: OutRefundNo,
    /// The gateway's refund number, when the `/refund` answer gave one.
    pub refund_trade_no: Option<String>,
    /// The original payment's merchant order number.
    pub out_trade_no: Option<String>,
    /// Refund amount in major units, exact.
    pub amount: Decimal,
    /// Refund currency.
    pub currency: Currency,
    /// `REFUND_PENDING`, or `REFUND_FAILED` when `/refund` failed at once.
    pub status: RefundStatus,
    /// When the refund was issued; the notification grace window counts from here.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in RefundStatus::ALL {
            assert_eq!(s.as_str().parse::<RefundStatus>().unwrap(), s);
        }
        assert!("REFUND_DONE".parse::<RefundStatus>().is_err());
        assert!("refund_success".parse::<RefundStatus>().is_err());
        assert!("REFUND_PENDING".parse::<FinalStatus>().is_err());
        for s in ["notification", "query", "refund_response", "operator"] {
            assert_eq!(s.parse::<FinalSource>().unwrap().as_str(), s);
        }
    }

    #[test]
    fn out_refund_no_rules() {
        assert!(OutRefundNo::parse("R-2026_11/25.1").is_ok());
        assert!(OutRefundNo::parse(&"x".repeat(64)).is_ok());
        assert!(OutRefundNo::parse(&"x".repeat(65)).is_err());
        assert!(OutRefundNo::parse("").is_err());
        assert!(OutRefundNo::parse("R 1").is_err());
        assert!(OutRefundNo::parse("R\u{e9}").is_err());
    }

    #[test]
    fn amounts_are_exact_and_scale_checked() {
        let usd = Currency::parse("USD").unwrap();
        let idr = Currency::parse("IDR").unwrap();
        assert_eq!(validate_amount("12.50", usd).unwrap().to_string(), "12.50");
        assert_eq!(
            validate_amount("12.500", usd).unwrap().to_string(),
            "12.500"
        );
        assert!(validate_amount("12.505", usd).is_err());
        assert!(validate_amount("15000", idr).is_ok());
        assert!(validate_amount("15000.5", idr).is_err());
        for bad in [
            "", "-1", "1e3", "0", "0.00", "abc", "1.", ".5", "1.2.3", " 1",
        ] {
            assert!(validate_amount(bad, usd).is_err(), "{bad:?} accepted");
        }
        // Longer than the ledger's CHECK allows once stored: refused here, not by SQLite.
        assert!(validate_amount(&"1".repeat(28), usd).is_ok());
        assert!(validate_amount(&"1".repeat(29), idr).is_err());
        assert!(validate_amount("1000000000000000000000000000.0", usd).is_err());
        assert!(validate_amount("0012.50", usd).is_ok());
        let schema = include_str!("../../schema.sql");
        let check = format!("length(amount) BETWEEN 1 AND {MAX_AMOUNT_CHARS}");
        assert!(schema.contains(&check), "schema.sql lost {check:?}");
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("USDT").is_err());
    }

    #[test]
    fn exponent_forms_are_expanded_exactly_or_refused() {
        let cases = [
            ("10.50", "10.50"),
            ("1.05E1", "10.50"),
            ("1.05e+1", "10.50"),
            ("1050e-2", "10.50"),
            ("125E-1", "12.5"),
            ("0.5e0", "0.5"),
            ("5e-3", "0.005"),
            ("-1.5e1", "-15"),
            ("12e3", "12000"),
            ("1e0000", "1"),
            ("0.30000000000000004", "0.30000000000000004"),
        ];
        for (text, want) in cases {
            let got = exact_decimal(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, Decimal::from_str_exact(want).unwrap(), "{text}");
        }
        // Issue 10 part 7: this finalized a 12.50 refund once, rounded by from_scientific.
        for text in [
            "12.4999999999999999999999999999999e0",
            "12.4999999999999999999999999999999",
            "1249999999999999999999999999999999e-32",
            "1e-29",
            "1e29",
            "1e65",
            "1e-99999999999999999999",
            "1e99999999999999999999",
            "",
            "e1",
            "1e",
            "1e+",
            "1.e1",
            ".5e1",
            "1.5.e1",
            "--1",
            "+1",
            "1e1.5",
            "0x10",
            " 1",
        ] {
            assert!(exact_decimal(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn text_fields_refuse_control_characters() {
        assert_eq!(validate_text("outTradeNo", None).unwrap(), None);
        assert_eq!(
            validate_text("outTradeNo", Some(String::new())).unwrap(),
            None
        );
        assert_eq!(
            validate_text("outTradeNo", Some("ORD-1 ü".into())).unwrap(),
            Some("ORD-1 ü".into())
        );
        for bad in [
            "\u{1b}[2J",
            "a\nb",
            "a\rb",
            "a\tb",
            "a\u{7f}",
            "a\u{9b}31m",
            "a\u{202e}b",
            "a\u{2066}b",
            "\0",
        ] {
            let e = validate_text("refundTradeNo", Some(bad.into())).unwrap_err();
            assert_eq!(e.field, "refundTradeNo");
            assert!(
                !e.to_string().contains('\u{1b}'),
                "{e} echoes the raw escape"
            );
        }
        assert!(validate_text("outTradeNo", Some("x".repeat(65))).is_err());
    }

    #[test]
    fn created_at_must_be_a_storable_instant() {
        let now = crate::domain::parse_ts("2026-12-01T05:00:00Z").unwrap();
        for ok in [
            "2026-11-30T23:00:00Z",
            "1970-01-01T00:00:00Z",
            "2026-12-02T04:59:59+00:00",
            "2026-12-01T13:00:00+08:00",
        ] {
            assert!(validate_created_at("created_at", ok, now).is_ok(), "{ok}");
        }
        for bad in [
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2026-12-02T05:00:01Z",
            "2026-06-30T23:59:60Z",
            "2026-02-31T03:28:23Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01",
        ] {
            let e = validate_created_at("--created-at", bad, now).unwrap_err();
            assert_eq!(e.field, "--created-at", "{bad}");
        }
    }
}
