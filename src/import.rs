//! Parsing refunds for `add` and `import`: CSV with a header row, or JSON lines. Every row is
//! validated into a [`NewRefund`] before anything is written; errors name the file, the line
//! and the field.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::{
    Currency, InvalidValue, NewRefund, OutRefundNo, RefundStatus, Timestamp, parse_ts,
    validate_amount,
};

/// A rejected input row, or an unreadable file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A row is invalid.
    #[error("{file}:{line}: {field}: {reason}")]
    Row {
        /// The file.
        file: PathBuf,
        /// 1-based line number (the CSV header is line 1).
        line: u64,
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The file has no rows.
    #[error("{file}: no refunds found")]
    Empty {
        /// The file.
        file: PathBuf,
    },
}

/// One refund's fields as text, before validation.
#[derive(Debug, Default, Clone)]
pub struct RawRefund {
    /// outRefundNo
    pub out_refund_no: String,
    /// Amount text, exactly as given.
    pub amount: String,
    /// Currency code.
    pub currency: String,
    /// refundTradeNo
    pub refund_trade_no: Option<String>,
    /// outTradeNo
    pub out_trade_no: Option<String>,
    /// Status text (default REFUND_PENDING).
    pub status: Option<String>,
    /// Creation time, RFC 3339 (default now).
    pub created_at: Option<String>,
}

impl RawRefund {
    /// Validates the fields.
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
            Some(t) => parse_ts(t).map_err(|e| {
                InvalidValue::new("created_at", format!("{t:?} is not an RFC 3339 time: {e}"))
            })?,
        };
        let opt =
            |field: &'static str, v: Option<String>| -> Result<Option<String>, InvalidValue> {
                match v.filter(|s| !s.is_empty()) {
                    Some(s) if s.len() > 64 => {
                        Err(InvalidValue::new(field, "longer than 64 characters"))
                    }
                    other => Ok(other),
                }
            };
        Ok(NewRefund {
            out_refund_no,
            refund_trade_no: opt("refundTradeNo", self.refund_trade_no)?,
            out_trade_no: opt("outTradeNo", self.out_trade_no)?,
            amount,
            currency,
            status,
            created_at,
        })
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
    let reader = std::io::BufReader::new(file);
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
        let line = line.map_err(|source| ImportError::Read {
            file: file.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let row: JsonRow<'_> = serde_json::from_str(&line).map_err(|e| ImportError::Row {
            file: file.to_owned(),
            line: n,
            field: "json".into(),
            reason: e.to_string(),
        })?;
        // Amounts keep their exact text: a JSON number's digits, or a JSON string's content.
        let amount_text = row.amount.get();
        let amount = match serde_json::from_str::<String>(amount_text) {
            Ok(s) => s,
            Err(_) => amount_text.to_owned(),
        };
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
        .map_err(|e| ImportError::Row {
            file: file.to_owned(),
            line: 1,
            field: "header".into(),
            reason: e.to_string(),
        })?
        .clone();
    let known = [
        "out_refund_no",
        "amount",
        "currency",
        "refund_trade_no",
        "out_trade_no",
        "status",
        "created_at",
    ];
    let mut index = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let norm = normalise_header(h);
        if !known.contains(&norm.as_str()) {
            return Err(ImportError::Row {
                file: file.to_owned(),
                line: 1,
                field: h.to_owned(),
                reason: format!("unknown column; expected some of {}", known.join(", ")),
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
    let mut out = Vec::new();
    for record in csv.records() {
        let record = record.map_err(|e| ImportError::Row {
            file: file.to_owned(),
            line: e.position().map_or(0, |p| p.line()),
            field: "csv".into(),
            reason: e.to_string(),
        })?;
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

/// Accepts `outRefundNo`, `out_refund_no` and `OUT_REFUND_NO` alike.
fn normalise_header(h: &str) -> String {
    let mut out = String::new();
    for c in h.trim().chars() {
        if c.is_ascii_uppercase() && !out.is_empty() && !out.ends_with('_') && !h.contains('_') {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
