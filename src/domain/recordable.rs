//! What the ledger can store of a verified answer: the one home of "does this informative value
//! fit the ledger". Only a verified signature, `code`, `data.status` and the refund number decide
//! an outcome; every other value only informs. An informative value the ledger cannot store
//! (schema.sql's CHECKs would refuse it, or it holds control characters) is dropped here and
//! named, so the attempt is still recorded, without that value, and the refund is flagged
//! `answer_unrecordable` instead of failing its write on every sweep.
//!
//! What a verified answer did not confirm at all (an informative field absent, or present in a
//! form that cannot be read) is named too, as an [`Unconfirmed`]: recorded in the attempt's
//! error text, never a flag, never a reason to refuse the answer (issue 11: strict where it
//! decides, tolerant where it informs).
//!
//! [`ObservedRefund::recordable`] is called where an answer becomes an [`ObservedRefund`]
//! (`gateway::classify`), so every `ObservedRefund` that reaches `decide` and the ledger fits.

use std::fmt;
use std::fmt::Write as _;

use chrono::Datelike;

use super::outcome::ObservedRefund;
use super::refund::{OutRefundNo, is_unsafe_char};
use super::time::Timestamp;

/// The longest text `refunds.refund_trade_no` stores, in characters (its CHECK).
pub const MAX_TRADE_NO_CHARS: usize = 64;

/// The last year the ledger's instants can hold (`YYYY-...`, SQLite's date range).
pub const LAST_YEAR: i32 = 9999;

/// One informative value of a verified answer that the ledger did not keep, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The answer's field, as Checus spells it, e.g. `data.refundTradeNo`.
    pub field: &'static str,
    /// Why it was dropped, quoting the value only escaped and cut short.
    pub reason: String,
}

impl Dropped {
    /// A dropped `field`, for `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Dropped {
    /// `data.refundTradeNo dropped: 65 characters, the ledger stores at most 64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dropped: {}", self.field, self.reason)
    }
}

/// An informative field of a verified answer that it did not confirm: absent (or `null`, or
/// `""`), or present in a form that cannot be read. Either way the answer still decides by its
/// status; the attempt's error names the field, and `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    /// The answer's field, as Checus spells it, e.g. `data.refundAmount`.
    pub field: &'static str,
    /// `None`: absent. `Some`: why the value could not be read, quoting it escaped and cut
    /// short.
    pub unreadable: Option<String>,
}

impl Unconfirmed {
    /// `field` was absent, `null` or empty.
    pub fn absent(field: &'static str) -> Self {
        Self {
            field,
            unreadable: None,
        }
    }

    /// `field` was present but could not be read, for `reason`.
    pub fn unreadable(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            unreadable: Some(reason.into()),
        }
    }

    /// True when the field was present but could not be read.
    pub fn is_unreadable(&self) -> bool {
        self.unreadable.is_some()
    }
}

impl fmt::Display for Unconfirmed {
    /// `data.refundAmount not confirmed: absent`, or
    /// `data.refundFinishTime unreadable: "yesterday" is not a time`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unreadable {
            None => write!(f, "{} not confirmed: absent", self.field),
            Some(reason) => write!(f, "{} unreadable: {reason}", self.field),
        }
    }
}

/// `items` as attempt-log text, `; `-separated, or `None` when there are none.
fn joined<T: ToString>(items: impl Iterator<Item = T>) -> Option<String> {
    let text: Vec<String> = items.map(|i| i.to_string()).collect();
    (!text.is_empty()).then(|| text.join("; "))
}

/// The attempt-log text for what an answer lost: every dropped field, `; `-separated, or `None`
/// when nothing was dropped.
pub fn dropped_text(dropped: &[Dropped]) -> Option<String> {
    joined(dropped.iter())
}

/// An informative text value (`data.refundTradeNo`) as the ledger can keep it: empty means
/// absent; more than [`MAX_TRADE_NO_CHARS`] characters, or any control character (including
/// terminal escapes and bidirectional overrides, which input refuses too), is dropped.
pub fn recordable_text(
    field: &'static str,
    text: Option<String>,
) -> Result<Option<String>, Dropped> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let chars = text.chars().count();
    if chars > MAX_TRADE_NO_CHARS {
        return Err(Dropped::new(
            field,
            format!("{chars} characters, the ledger stores at most {MAX_TRADE_NO_CHARS}"),
        ));
    }
    if let Some(c) = text.chars().find(|&c| is_unsafe_char(c)) {
        return Err(Dropped::new(
            field,
            format!(
                "\"{}\" contains the control character {}",
                escape(&text),
                escape(c.encode_utf8(&mut [0; 4]))
            ),
        ));
    }
    Ok(Some(text))
}

/// An informative instant (`data.refundFinishTime`) as the ledger can keep it: the ledger's
/// form `YYYY-MM-DDTHH:MM:SS.mmmZ` holds UTC years 0000 to [`LAST_YEAR`] only, so an instant
/// outside them (for example `9999-12-31T23:30:00-05:00`, which is year 10000 in UTC) is
/// dropped. Sub-millisecond digits are not a reason: the ledger keeps milliseconds.
pub fn recordable_instant(field: &'static str, at: Timestamp) -> Result<Timestamp, Dropped> {
    let utc = at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
    match at.year() {
        year if year > LAST_YEAR => Err(Dropped::new(
            field,
            format!("{utc} is past year {LAST_YEAR}, the last the ledger stores"),
        )),
        year if year < 0 => Err(Dropped::new(
            field,
            format!("{utc} is before year 0000, the first the ledger stores"),
        )),
        _ => Ok(at),
    }
}

impl ObservedRefund {
    /// Keeps every informative value the ledger can store and drops the rest, adding each to
    /// [`ObservedRefund::dropped`] with its reason. The deciding values (`status`, the refund
    /// number) and the compared ones (amount, currency) are left as they are: `classify`
    /// reads them exactly (or not at all), and `decide` compares the refund number exactly (see
    /// [`observed_text`] for how an odd one is recorded).
    pub fn recordable(mut self) -> Self {
        let trade_no = self.refund_trade_no.take();
        match recordable_text("data.refundTradeNo", trade_no) {
            Ok(kept) => self.refund_trade_no = kept,
            Err(dropped) => self.dropped.push(dropped),
        }
        if let Some(at) = self.refund_finish_time.take() {
            match recordable_instant("data.refundFinishTime", at) {
                Ok(kept) => self.refund_finish_time = Some(kept),
                Err(dropped) => self.dropped.push(dropped),
            }
        }
        self
    }

    /// True when the answer held an informative value the ledger could not keep.
    pub fn is_unrecordable(&self) -> bool {
        !self.dropped.is_empty()
    }

    /// The attempt-log text for this answer: the fields it did not confirm (absent first, in
    /// the answer's field order, then unreadable ones) and the values the ledger could not
    /// store, `; `-separated; `None` for a complete answer.
    pub fn notes_text(&self) -> Option<String> {
        let absent = self.unconfirmed.iter().filter(|u| !u.is_unreadable());
        let unreadable = self.unconfirmed.iter().filter(|u| u.is_unreadable());
        joined(
            absent
                .chain(unreadable)
                .map(ToString::to_string)
                .chain(self.dropped.iter().map(ToString::to_string)),
        )
    }

    /// Only the unreadable fields' text (`None` when every present field was read).
    pub fn unreadable_text(&self) -> Option<String> {
        joined(self.unconfirmed.iter().filter(|u| u.is_unreadable()))
    }
}

/// How a refund number an answer named is written into a discrepancy's `observed` column: as
/// it is when it is a valid refund number; otherwise cut to [`OutRefundNo::MAX_LEN`] characters
/// with its control characters escaped, and a note saying so, so a hostile value can neither
/// bloat the ledger nor reach a terminal raw.
pub fn observed_text(text: &str) -> String {
    if OutRefundNo::parse(text).is_ok() {
        return text.to_owned();
    }
    let chars = text.chars().count();
    let cut: String = text.chars().take(OutRefundNo::MAX_LEN).collect();
    let escaped = escape(&cut);
    let mut notes = Vec::new();
    if chars > OutRefundNo::MAX_LEN {
        notes.push(format!(
            "{chars} characters, cut to {}",
            OutRefundNo::MAX_LEN
        ));
    }
    if escaped != cut {
        notes.push("control characters escaped".to_owned());
    }
    if notes.is_empty() {
        // Short and printable, yet not a refund number (a space, non-ASCII): kept whole.
        return text.to_owned();
    }
    format!("{escaped} [not a refund number: {}]", notes.join(", "))
}

/// `text` with every [`is_unsafe_char`] written as `\u{1b}`, the form the CLI's renderers use.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::refund::{Currency, RefundStatus};
    use crate::domain::time::parse_ts;
    use rust_decimal::Decimal;

    fn seen(trade_no: Option<&str>, finish: Option<&str>) -> ObservedRefund {
        ObservedRefund {
            out_refund_no: Some("R1".into()),
            refund_trade_no: trade_no.map(str::to_owned),
            amount: Some(Decimal::new(1250, 2)),
            currency: Some(Currency::parse("USD").unwrap()),
            status: RefundStatus::Success,
            refund_finish_time: finish.map(|t| parse_ts(t).unwrap()),
            unconfirmed: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn reasons(o: &ObservedRefund) -> Vec<String> {
        o.dropped.iter().map(ToString::to_string).collect()
    }

    /// The deciding and compared values are never touched.
    fn assert_deciding_values_kept(o: &ObservedRefund) {
        assert_eq!(
            (o.out_refund_no.as_deref(), o.status, o.amount, o.currency),
            (
                Some("R1"),
                RefundStatus::Success,
                Some(Decimal::new(1250, 2)),
                Currency::parse("USD").ok()
            )
        );
    }

    /// `data.refundTradeNo` against what `refunds.refund_trade_no` keeps: `None` means kept
    /// as it is, else the dropped text.
    #[test]
    fn trade_numbers_the_ledger_cannot_store_are_dropped_and_named() {
        let t64 = "T".repeat(64);
        let t65 = "T".repeat(65);
        let wide64 = "é".repeat(64); // 128 bytes, 64 characters: SQLite's length() is 64
        let cases: [(&str, Option<&str>); 6] = [
            ("T1", None),
            (&t64, None),
            (&wide64, None),
            (
                &t65,
                Some("data.refundTradeNo dropped: 65 characters, the ledger stores at most 64"),
            ),
            (
                "T\u{1b}[31m1",
                Some(
                    r#"data.refundTradeNo dropped: "T\u{1b}[31m1" contains the control character \u{1b}"#,
                ),
            ),
            (
                "T\u{202e}1",
                Some(
                    r#"data.refundTradeNo dropped: "T\u{202e}1" contains the control character \u{202e}"#,
                ),
            ),
        ];
        for (trade_no, dropped) in cases {
            let o = seen(Some(trade_no), None).recordable();
            let kept = dropped.is_none().then_some(trade_no);
            assert_eq!(o.refund_trade_no.as_deref(), kept, "{trade_no:?}");
            assert_eq!(reasons(&o), Vec::from_iter(dropped), "{trade_no:?}");
            assert_eq!(o.is_unrecordable(), dropped.is_some(), "{trade_no:?}");
            assert_deciding_values_kept(&o);
        }
        // Empty means absent: nothing to drop.
        let o = seen(Some(""), None).recordable();
        assert_eq!((o.refund_trade_no, o.dropped), (None, vec![]));
    }

    /// `data.refundFinishTime` against what the ledger's instants hold (UTC years 0000 to
    /// 9999): `None` means kept, else the dropped text.
    #[test]
    fn finish_times_the_ledger_cannot_store_are_dropped_and_named() {
        let cases = [
            ("2026-11-25T10:00:00.000Z", None),
            ("9999-12-31T23:59:59.999Z", None),
            ("0000-01-01T00:00:00.000Z", None),
            (
                "9999-12-31T23:30:00.000-05:00",
                Some(
                    "data.refundFinishTime dropped: +10000-01-01T04:30:00.000Z is past year \
                     9999, the last the ledger stores",
                ),
            ),
            (
                "0000-01-01T00:30:00+01:00",
                Some(
                    "data.refundFinishTime dropped: -0001-12-31T23:30:00.000Z is before year \
                     0000, the first the ledger stores",
                ),
            ),
        ];
        for (finish, dropped) in cases {
            let o = seen(Some("T1"), Some(finish)).recordable();
            let kept = dropped.is_none().then(|| parse_ts(finish).unwrap());
            assert_eq!(o.refund_finish_time, kept, "{finish}");
            assert_eq!(reasons(&o), Vec::from_iter(dropped), "{finish}");
            assert_eq!(o.refund_trade_no.as_deref(), Some("T1"), "{finish}");
            assert_deciding_values_kept(&o);
        }
        // Both at once: both named, in field order.
        let o = seen(Some(&"T".repeat(65)), Some("9999-12-31T23:30:00.000-05:00")).recordable();
        let fields: Vec<&str> = o.dropped.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["data.refundTradeNo", "data.refundFinishTime"]);
    }

    #[test]
    fn what_was_dropped_before_is_kept_in_the_list() {
        let mut o = seen(Some(&"T".repeat(65)), None);
        o.dropped.push(Dropped::new(
            "data.refundFinishTime",
            "\"yesterday\" is not an RFC 3339 time",
        ));
        let o = o.recordable();
        assert_eq!(
            dropped_text(&o.dropped).unwrap(),
            "data.refundFinishTime dropped: \"yesterday\" is not an RFC 3339 time; \
             data.refundTradeNo dropped: 65 characters, the ledger stores at most 64"
        );
        assert_eq!(dropped_text(&[]), None);
    }

    #[test]
    fn an_observed_refund_number_is_recorded_cut_and_escaped_and_says_so() {
        let r65 = "R".repeat(65);
        let cases = [
            ("R1".to_owned(), "R1".to_owned()),
            ("R-OTHER".to_owned(), "R-OTHER".to_owned()),
            ("R 1".to_owned(), "R 1".to_owned()),
            (
                r65.clone(),
                format!(
                    "{} [not a refund number: 65 characters, cut to 64]",
                    &r65[..64]
                ),
            ),
            (
                "R\u{1b}[2J1".to_owned(),
                r"R\u{1b}[2J1 [not a refund number: control characters escaped]".to_owned(),
            ),
            (
                format!("\u{1b}{}", "R".repeat(70)),
                format!(
                    r"\u{{1b}}{} [not a refund number: 71 characters, cut to 64, control characters escaped]",
                    "R".repeat(63)
                ),
            ),
        ];
        for (observed, recorded) in cases {
            let text = observed_text(&observed);
            assert_eq!(text, recorded, "{observed:?}");
            assert!(!text.chars().any(is_unsafe_char), "{text:?}");
        }
    }
}
