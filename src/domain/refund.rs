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

/// Parses and validates a refund amount in major units: a plain decimal, positive, with no
/// more decimals than `currency` allows. Exponents, signs other than none, and floats are refused.
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
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("USDT").is_err());
    }
}
