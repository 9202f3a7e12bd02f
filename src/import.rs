//! Parsing refunds for `add` and `import`: CSV with a header row, or JSON lines. Every row is
//! validated into a [`NewRefund`] before anything is written; errors name the file, the line
//! and the field.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::{
    Currency, InvalidValue, NewRefund, OutRefundNo, RefundStatus, Timestamp, validate_amount,
    validate_created_at, validate_text,
};
use crate::report::escape;

/// The longest line an import file may have, in bytes. A real row is a few hundred bytes; the
/// cap stops a file with no newlines (`/dev/zero`, a binary dump) from growing one line until
/// memory runs out.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The UTF-8 byte order mark some spreadsheet programs write first. Skipped at the start of
/// CSV and JSON lines files alike.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A rejected input row, or an unreadable file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The path given to `import`.
        file: PathBuf,
        /// The I/O error that stopped the read (not a line too long: that is a `Row`).
        source: std::io::Error,
    },
    /// A row is invalid.
    #[error("{file}:{line}: {field}: {reason}")]
    Row {
        /// The path given to `import`.
        file: PathBuf,
        /// 1-based line number (the CSV header is line 1).
        line: u64,
        /// The field or column rejected (`outRefundNo`, `amount`, …), or what was being read:
        /// `header`, `csv`, `json`, `line`. Escaped: a column name can hold anything.
        field: String,
        /// What is wrong, quoting the value escaped or in Debug form, never raw.
        reason: String,
    },
    /// The file has no rows.
    #[error("{file}: no refunds found")]
    Empty {
        /// The path given to `import`.
        file: PathBuf,
    },
}

/// One refund's fields as text, before validation.
#[derive(Debug, Default, Clone)]
pub struct RawRefund {
    /// The merchant's refund number (`outRefundNo`), checked by [`OutRefundNo::parse`].
    pub out_refund_no: String,
    /// Amount text, exactly as given.
    pub amount: String,
    /// ISO 4217 code as given; it decides how many decimals `amount` may have.
    pub currency: String,
    /// The gateway's refund number (`refundTradeNo`); empty means absent. No control characters.
    pub refund_trade_no: Option<String>,
    /// The original order's merchant number (`outTradeNo`); empty means absent. No control
    /// characters.
    pub out_trade_no: Option<String>,
    /// Status text (default REFUND_PENDING).
    pub status: Option<String>,
    /// Creation time, RFC 3339 (default now).
    pub created_at: Option<String>,
}

impl RawRefund {
    /// Validates every field into a [`NewRefund`]; `now` is the default `created_at` and
    /// the reference for its range. The error names the first field refused.
    pub fn validate(self, now: Timestamp) -> Result<NewRefund, InvalidValue> {
        let out_refund_no = OutRefundNo::parse(&self.out_refund_no)?;
        let currency = Currency::parse(&self.currency)?;
        let amount = validate_amount(&self.amount, currency)?;
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => RefundStatus::Pending,
            Some(s) => s.parse::<RefundStatus>()?,
        };
        if status == RefundStatus::Success {
            return Err(InvalidValue::new(
                "status",
                "REFUND_SUCCESS never comes from /refund; import the refund as REFUND_PENDING and let it be reconciled",
            ));
        }
        let created_at = match self.created_at.as_deref().filter(|s| !s.is_empty()) {
            None => now,
            Some(t) => validate_created_at("created_at", t, now)?,
        };
        Ok(NewRefund {
            out_refund_no,
            refund_trade_no: validate_text("refundTradeNo", self.refund_trade_no)?,
            out_trade_no: validate_text("outTradeNo", self.out_trade_no)?,
            amount,
            currency,
            status,
            created_at,
        })
    }
}

/// A JSON amount's exact text, never through a float: a JSON number's digits as written
/// (`12.50`, `1e3`, `-1`: [`RawRefund::validate`] decides), or a JSON string's content. The
/// JSON lines import and the HTTP API (`crate::http`) read amounts with it.
pub fn json_amount_text(amount: &RawValue) -> String {
    let text = amount.get();
    match serde_json::from_str::<String>(text) {
        Ok(s) => s,
        Err(_) => text.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsonRow<'a> {
    out_refund_no: String,
    #[serde(borrow)]
    amount: &'a RawValue,
    currency: String,
    #[serde(default)]
    refund_trade_no: Option<String>,
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

/// Parses and validates a whole file. `progress` is called with the count of rows validated
/// every 10,000 rows. Duplicate refund numbers inside the file are rejected with both lines.
/// A leading UTF-8 BOM is skipped in either format; a line over [`MAX_LINE_BYTES`] is refused.
pub fn parse_file(
    path: &Path,
    format_jsonl: bool,
    now: Timestamp,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<(u64, NewRefund)>, ImportError> {
    let file = std::fs::File::open(path).map_err(|source| ImportError::Read {
        file: path.to_owned(),
        source,
    })?;
    parse_reader(file, path, format_jsonl, now, progress)
}

/// [`parse_file`] over any reader; `path` is the name errors give.
fn parse_reader(
    input: impl Read,
    path: &Path,
    format_jsonl: bool,
    now: Timestamp,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<(u64, NewRefund)>, ImportError> {
    let mut reader = std::io::BufReader::new(LineCapped::new(input));
    skip_bom(&mut reader).map_err(|e| read_error(path, e))?;
    let rows = if format_jsonl {
        parse_jsonl(reader, path, now, progress)?
    } else {
        parse_csv(reader, path, now, progress)?
    };
    if rows.is_empty() {
        return Err(ImportError::Empty {
            file: path.to_owned(),
        });
    }
    let mut seen: HashMap<&str, u64> = HashMap::with_capacity(rows.len());
    for (line, r) in &rows {
        if let Some(first) = seen.insert(r.out_refund_no.as_str(), *line) {
            return Err(ImportError::Row {
                file: path.to_owned(),
                line: *line,
                field: "outRefundNo".into(),
                reason: format!("{} is a duplicate of line {first}", r.out_refund_no),
            });
        }
    }
    Ok(rows)
}

/// Consumes a UTF-8 BOM at the start of `reader`, if there is one.
fn skip_bom(reader: &mut impl BufRead) -> std::io::Result<()> {
    if reader.fill_buf()?.starts_with(BOM) {
        reader.consume(BOM.len());
    }
    Ok(())
}

/// A line longer than [`MAX_LINE_BYTES`]: the error [`LineCapped`] reads fail with.
#[derive(Debug, thiserror::Error)]
#[error("line is longer than {MAX_LINE_BYTES} bytes")]
struct LineTooLong {
    /// 1-based number of the line.
    line: u64,
}

/// A reader that fails as soon as one line grows past [`MAX_LINE_BYTES`], counting lines as
/// it goes, so neither the CSV reader nor the JSON lines reader ever buffers more than that.
struct LineCapped<R> {
    /// The file.
    inner: R,
    /// Newlines seen so far.
    newlines: u64,
    /// Bytes since the last newline.
    run: usize,
}

impl<R> LineCapped<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            newlines: 0,
            run: 0,
        }
    }
}

impl<R: Read> Read for LineCapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                self.newlines += 1;
                self.run = 0;
            } else {
                self.run += 1;
                if self.run > MAX_LINE_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        LineTooLong {
                            line: self.newlines + 1,
                        },
                    ));
                }
            }
        }
        Ok(n)
    }
}

/// A read failure as an [`ImportError`]: a [`LineTooLong`] names its line (a rejected row,
/// exit 5), anything else is an unreadable file.
fn read_error(file: &Path, source: std::io::Error) -> ImportError {
    match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<LineTooLong>())
    {
        Some(long) => too_long(file, long),
        None => ImportError::Read {
            file: file.to_owned(),
            source,
        },
    }
}

/// The refusal of an over-long line (a rejected row: exit 5).
fn too_long(file: &Path, long: &LineTooLong) -> ImportError {
    ImportError::Row {
        file: file.to_owned(),
        line: long.line,
        field: "line".into(),
        reason: format!("{long}; nothing was imported"),
    }
}

fn row_error(file: &Path, line: u64, e: InvalidValue) -> ImportError {
    ImportError::Row {
        file: file.to_owned(),
        line,
        field: e.field.to_owned(),
        reason: e.reason,
    }
}

fn parse_jsonl(
    reader: impl BufRead,
    file: &Path,
    now: Timestamp,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<(u64, NewRefund)>, ImportError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let n = i as u64 + 1;
        let line = line.map_err(|e| read_error(file, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: JsonRow<'_> = serde_json::from_str(&line).map_err(|e| ImportError::Row {
            file: file.to_owned(),
            line: n,
            field: "json".into(),
            reason: escape(&e.to_string()).into_owned(),
        })?;
        let amount = json_amount_text(row.amount);
        let raw = RawRefund {
            out_refund_no: row.out_refund_no,
            amount,
            currency: row.currency,
            refund_trade_no: row.refund_trade_no,
            out_trade_no: row.out_trade_no,
            status: row.status,
            created_at: row.created_at,
        };
        out.push((n, raw.validate(now).map_err(|e| row_error(file, n, e))?));
        if out.len() % 10_000 == 0 {
            progress(out.len());
        }
    }
    Ok(out)
}

fn parse_csv(
    reader: impl BufRead,
    file: &Path,
    now: Timestamp,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<(u64, NewRefund)>, ImportError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| csv_error(file, e, "header"))?
        .clone();
    let index = column_index(&headers, file)?;
    let mut out = Vec::new();
    for record in csv.records() {
        let record = record.map_err(|e| csv_error(file, e, "csv"))?;
        let line = record.position().map_or(0, |p| p.line());
        let get = |name: &str| {
            index
                .get(name)
                .and_then(|&i| record.get(i))
                .map(str::to_owned)
        };
        let raw = RawRefund {
            out_refund_no: get("out_refund_no").unwrap_or_default(),
            amount: get("amount").unwrap_or_default(),
            currency: get("currency").unwrap_or_default(),
            refund_trade_no: get("refund_trade_no"),
            out_trade_no: get("out_trade_no"),
            status: get("status"),
            created_at: get("created_at"),
        };
        out.push((
            line,
            raw.validate(now).map_err(|e| row_error(file, line, e))?,
        ));
        if out.len() % 10_000 == 0 {
            progress(out.len());
        }
    }
    Ok(out)
}

/// Maps each known column (normalised name) to its position in the header. Refuses an
/// unknown column, a column given twice in any spelling, and a missing required one.
fn column_index(
    headers: &csv::StringRecord,
    file: &Path,
) -> Result<HashMap<String, usize>, ImportError> {
    let known = [
        "out_refund_no",
        "amount",
        "currency",
        "refund_trade_no",
        "out_trade_no",
        "status",
        "created_at",
    ];
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let norm = normalise_header(h);
        if !known.contains(&norm.as_str()) {
            return Err(ImportError::Row {
                file: file.to_owned(),
                line: 1,
                field: escape(h).into_owned(),
                reason: format!("unknown column; expected some of {}", known.join(", ")),
            });
        }
        // Two spellings of one column (`amount` twice, or `outRefundNo` and `out_refund_no`)
        // would let the last one silently win.
        if let Some(&first) = index.get(&norm) {
            return Err(ImportError::Row {
                file: file.to_owned(),
                line: 1,
                field: escape(h).into_owned(),
                reason: format!(
                    "duplicate column: column {} ({}) and column {} both mean {norm}",
                    first + 1,
                    escape(&headers[first]),
                    i + 1
                ),
            });
        }
        index.insert(norm, i);
    }
    for required in ["out_refund_no", "amount", "currency"] {
        if !index.contains_key(required) {
            return Err(ImportError::Row {
                file: file.to_owned(),
                line: 1,
                field: required.into(),
                reason: "required column is missing from the header".into(),
            });
        }
    }
    Ok(index)
}

/// A CSV reader error as an [`ImportError`]: an over-long line names its line; `field` names
/// what was being read (the header, or a record).
fn csv_error(file: &Path, e: csv::Error, field: &str) -> ImportError {
    if let csv::ErrorKind::Io(io) = e.kind()
        && let Some(long) = io.get_ref().and_then(|e| e.downcast_ref::<LineTooLong>())
    {
        return too_long(file, long);
    }
    ImportError::Row {
        file: file.to_owned(),
        line: e.position().map_or(1, |p| p.line()),
        field: field.into(),
        reason: escape(&e.to_string()).into_owned(),
    }
}

/// Accepts `outRefundNo`, `out_refund_no` and `OUT_REFUND_NO` alike.
fn normalise_header(h: &str) -> String {
    let mut out = String::new();
    // camelCase splits at its capitals; snake_case and SHOUTING words are only lower-cased.
    let camel = !h.contains('_') && h.chars().any(|c| c.is_ascii_lowercase());
    for c in h.trim().chars() {
        if c.is_ascii_uppercase() && !out.is_empty() && !out.ends_with('_') && camel {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8], jsonl: bool) -> Result<Vec<(u64, NewRefund)>, ImportError> {
        let now = crate::domain::parse_ts("2026-12-01T05:00:00Z").unwrap();
        parse_reader(text, Path::new("f"), jsonl, now, &mut |_| {})
    }

    /// The refusal's line, field and reason, or a panic if the input was accepted.
    fn refused(text: &[u8], jsonl: bool) -> (u64, String, String) {
        match parse(text, jsonl) {
            Err(ImportError::Row {
                line,
                field,
                reason,
                ..
            }) => (line, field, reason),
            other => panic!(
                "{:?} not refused as a row: {other:?}",
                String::from_utf8_lossy(text)
            ),
        }
    }

    #[test]
    fn a_column_given_twice_is_refused_naming_it() {
        for (header, field) in [
            ("out_refund_no,amount,currency,amount", "amount"),
            ("outRefundNo,out_refund_no,amount,currency", "out_refund_no"),
            ("out_refund_no,amount,currency,CURRENCY", "CURRENCY"),
        ] {
            let text = format!("{header}\nR-1,1.00,USD,USD\n");
            let (line, got, reason) = refused(text.as_bytes(), false);
            assert_eq!((line, got.as_str()), (1, field), "{header}");
            assert!(reason.contains("duplicate column"), "{reason}");
        }
        // JSON lines: the same key twice, or both spellings, is refused by the decoder.
        for line in [
            r#"{"outRefundNo":"R-1","amount":"1.00","currency":"USD","amount":"2.00"}"#,
            r#"{"outRefundNo":"R-1","out_refund_no":"R-2","amount":"1.00","currency":"USD"}"#,
        ] {
            let (n, field, _) = refused(line.as_bytes(), true);
            assert_eq!((n, field.as_str()), (1, "json"), "{line}");
        }
    }

    #[test]
    fn a_bom_is_skipped_in_both_formats() {
        let csv = b"\xEF\xBB\xBFout_refund_no,amount,currency\nR-1,1.00,USD\n";
        let jsonl =
            b"\xEF\xBB\xBF{\"outRefundNo\":\"R-1\",\"amount\":\"1.00\",\"currency\":\"USD\"}\n";
        for (text, jsonl) in [(&csv[..], false), (&jsonl[..], true)] {
            let rows = parse(text, jsonl).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rows[0].1.out_refund_no.as_str(), "R-1");
        }
        // Only at the very start: a BOM later is part of a value and refused there.
        let late = b"out_refund_no,amount,currency\n\xEF\xBB\xBFR-1,1.00,USD\n";
        assert_eq!(refused(late, false).1, "outRefundNo");
    }

    #[test]
    fn lines_longer_than_the_cap_are_refused_with_their_number() {
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        let csv = format!("out_refund_no,amount,currency\nR-1,1.00,USD\nR-2,1.00,USD,{long}\n");
        let ok = r#"{"outRefundNo":"R-1","amount":"1.00","currency":"USD"}"#;
        let jsonl = format!("{ok}\n\n{long}\n");
        for (text, jsonl) in [(csv, false), (jsonl, true)] {
            let (line, field, reason) = refused(text.as_bytes(), jsonl);
            assert_eq!((line, field.as_str()), (3, "line"), "{reason}");
            assert!(reason.contains("65536"), "{reason}");
        }
        // A file with no newline at all: the header itself.
        let zeros = vec![0u8; 4 * MAX_LINE_BYTES];
        assert_eq!(refused(&zeros, false).0, 1);
        assert_eq!(refused(&zeros, true).0, 1);
        // Exactly at the cap is fine as far as the cap goes.
        let at_cap = format!(
            "out_refund_no,amount,currency,out_trade_no\nR-1,1.00,USD,{}\n",
            "y".repeat(MAX_LINE_BYTES - 15)
        );
        assert_eq!(refused(at_cap.as_bytes(), false).1, "outTradeNo");
    }

    #[test]
    fn control_characters_are_refused_in_every_text_field() {
        let header = "out_refund_no,amount,currency,refund_trade_no,out_trade_no";
        for (row, field) in [
            ("R-\u{1b}[2J,1.00,USD,,", "outRefundNo"),
            ("R-1,1.00,U\u{1b}D,,", "currency"),
            ("R-1,1.00,USD,T-\u{1b}]0;pwned\u{7},", "refundTradeNo"),
            ("R-1,1.00,USD,,O-\u{9b}2J", "outTradeNo"),
            ("R-1,1.00,USD,\"T\r\nX\",", "refundTradeNo"),
            ("R-1,1.00,USD,T\u{202e}1,", "refundTradeNo"),
        ] {
            let text = format!("{header}\n{row}\n");
            let (_, got, reason) = refused(text.as_bytes(), false);
            assert_eq!(got, field, "{row:?}");
            assert!(!reason.contains('\u{1b}'), "{reason:?} echoes the escape");
        }
        let line =
            r#"{"outRefundNo":"R-1","amount":"1.00","currency":"USD","outTradeNo":"\u001b[31m"}"#;
        assert_eq!(refused(line.as_bytes(), true).1, "outTradeNo");
        // An unknown column's name is quoted escaped.
        let (_, field, _) = refused(
            b"out_refund_no,amount,currency,\x1b[2J\nR-1,1.00,USD,x\n",
            false,
        );
        assert_eq!(field, "\\u{1b}[2J");
    }
}
