//! Scripted refund timelines: what the simulated gateway answers to each successive query of
//! one refund, the faults it can inject, the JSONL script format, and a seeded generator of a
//! realistic mix for the demo and benchmarks.
//!
//! Step spellings (JSONL `steps` array and [`Step`]'s `Display`/`FromStr`, which round-trip):
//!
//! | spelling | step |
//! |---|---|
//! | `pending`, `success`, `failed` | signed `APPLY_SUCCESS` with that `data.status` |
//! | `unknown` | `ORDER_NOT_EXIST` (the gateway does not know the refund yet) |
//! | `code:SYSTEM_ERROR` | any error code, answered as the gateway answers errors |
//! | `delay:200ms:pending` | sleep (`ms` or `s`), then the inner step |
//! | `vary:amount_string,finish_plus8:success` | the inner step's answer in another form (a [`Variance`]) |
//! | `fault:NAME` | a [`Fault`], e.g. `fault:reset`, `fault:http:502`, `fault:trickle:5ms` |

use std::collections::HashSet;
use std::fmt;
use std::io::BufRead;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::protocol::{Switch, Variance};
use crate::domain::{Currency, InvalidValue, OutRefundNo, RefundStatus, validate_amount};

/// How long [`Fault::Trickle`] waits between bytes when the spelling gives no interval.
pub const DEFAULT_TRICKLE_INTERVAL: Duration = Duration::from_millis(10);

/// A misbehaviour injected instead of (or around) a correct answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `fault:http:CODE`: a non-200 HTTP status with a short HTML body.
    Http(u16),
    /// `fault:reset`: close the TCP connection with an RST (SO_LINGER 0) without answering.
    Reset,
    /// `fault:hang`: read the request and never answer, until the sandbox shuts down.
    Hang,
    /// `fault:trickle[:INTERVAL]`: a valid signed answer whose body arrives one byte per interval.
    Trickle(Duration),
    /// `fault:oversized`: a valid signed answer larger than [`OVERSIZED_MIN_BYTES`](super::OVERSIZED_MIN_BYTES).
    Oversized,
    /// `fault:redirect`: `302 Found` with a `Location` that leads to a 404.
    Redirect,
    /// `fault:not_json`: HTTP 200 with an HTML body.
    NotJson,
    /// `fault:missing_code`: a signed answer with no `code`.
    MissingCode,
    /// `fault:missing_data`: a signed `APPLY_SUCCESS` with no `data`.
    MissingData,
    /// `fault:missing_status`: a signed `APPLY_SUCCESS` whose `data` has no `status`.
    MissingStatus,
    /// `fault:unknown_status`: a signed `APPLY_SUCCESS` with `status` `REFUND_PROCESSING`.
    UnknownStatus,
    /// `fault:amount_as_string`: `refundAmount` as a JSON string instead of a number.
    AmountAsString,
    /// `fault:status_as_number`: `status` as the JSON number `1`.
    StatusAsNumber,
    /// `fault:no_signature`: a correct `APPLY_SUCCESS` without the `sign` header.
    NoSignature,
    /// `fault:bad_signature`: a correct body whose `sign` is a gateway signature over another body.
    BadSignature,
    /// `fault:wrong_key`: a correct body signed with the INSECURE stranger key.
    WrongKey,
    /// `fault:wrong_refund_no`: a valid signed answer about another `outRefundNo`.
    WrongRefundNo,
    /// `fault:wrong_amount`: a valid signed answer whose `refundAmount` is 1 more than scripted.
    WrongAmount,
    /// `fault:wrong_currency`: a valid signed answer in another currency.
    WrongCurrency,
    /// `fault:too_many_requests`: the error code `TOO_MANY_REQUEST`.
    TooManyRequests,
    /// `fault:long_trade_no`: a valid signed answer whose `refundTradeNo` is 65 characters,
    /// one more than the ledger stores.
    LongTradeNo,
    /// `fault:escape_trade_no`: a valid signed answer whose `refundTradeNo` holds a terminal
    /// escape sequence.
    EscapeTradeNo,
    /// `fault:far_finish_time`: a valid signed answer whose `refundFinishTime` is
    /// [`FAR_FINISH_TIME`](super::FAR_FINISH_TIME), year 10000 in UTC.
    FarFinishTime,
    /// `fault:unstorable_refund_no`: a valid signed answer about a refund number no ledger
    /// holds: a terminal escape followed by 70 characters.
    UnstorableRefundNo,
}

impl Fault {
    /// Faults a correct client recovers from by retrying; the default list for
    /// [`Sandbox::set_fault_rate`](super::Sandbox::set_fault_rate). No hangs or trickles, so
    /// benchmarks stay fast, and nothing that lies about the refund.
    pub const TRANSIENT: &[Fault] = &[
        Fault::Http(500),
        Fault::Http(502),
        Fault::Http(503),
        Fault::Reset,
        Fault::NotJson,
        Fault::BadSignature,
        Fault::TooManyRequests,
    ];
}

/// Formats a duration the way the step spellings write it: whole seconds as `Ns`, else `Nms`.
fn format_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) && !d.is_zero() {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Parses `200ms` or `2s`.
fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().ok().map(Duration::from_millis)
    } else if let Some(s) = text.strip_suffix('s') {
        s.parse().ok().map(Duration::from_secs)
    } else {
        None
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Fault::Http(code) => return write!(f, "http:{code}"),
            Fault::Trickle(interval) => {
                return write!(f, "trickle:{}", format_duration(*interval));
            }
            Fault::Reset => "reset",
            Fault::Hang => "hang",
            Fault::Oversized => "oversized",
            Fault::Redirect => "redirect",
            Fault::NotJson => "not_json",
            Fault::MissingCode => "missing_code",
            Fault::MissingData => "missing_data",
            Fault::MissingStatus => "missing_status",
            Fault::UnknownStatus => "unknown_status",
            Fault::AmountAsString => "amount_as_string",
            Fault::StatusAsNumber => "status_as_number",
            Fault::NoSignature => "no_signature",
            Fault::BadSignature => "bad_signature",
            Fault::WrongKey => "wrong_key",
            Fault::WrongRefundNo => "wrong_refund_no",
            Fault::WrongAmount => "wrong_amount",
            Fault::WrongCurrency => "wrong_currency",
            Fault::TooManyRequests => "too_many_requests",
            Fault::LongTradeNo => "long_trade_no",
            Fault::EscapeTradeNo => "escape_trade_no",
            Fault::FarFinishTime => "far_finish_time",
            Fault::UnstorableRefundNo => "unstorable_refund_no",
        };
        f.write_str(name)
    }
}

impl FromStr for Fault {
    type Err = InvalidValue;

    /// Parses the part after `fault:`, e.g. `reset`, `http:502`, `trickle:5ms`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| InvalidValue::new("fault", reason);
        if let Some(code) = s.strip_prefix("http:") {
            return match code.parse::<u16>() {
                Ok(code @ 100..=599) if code != 200 => Ok(Fault::Http(code)),
                _ => Err(bad(format!(
                    "{s:?}: http fault needs a status 100..=599 other than 200"
                ))),
            };
        }
        if s == "trickle" {
            return Ok(Fault::Trickle(DEFAULT_TRICKLE_INTERVAL));
        }
        if let Some(interval) = s.strip_prefix("trickle:") {
            return parse_duration(interval)
                .map(Fault::Trickle)
                .ok_or_else(|| bad(format!("{s:?}: interval must look like 10ms or 1s")));
        }
        Ok(match s {
            "reset" => Fault::Reset,
            "hang" => Fault::Hang,
            "oversized" => Fault::Oversized,
            "redirect" => Fault::Redirect,
            "not_json" => Fault::NotJson,
            "missing_code" => Fault::MissingCode,
            "missing_data" => Fault::MissingData,
            "missing_status" => Fault::MissingStatus,
            "unknown_status" => Fault::UnknownStatus,
            "amount_as_string" => Fault::AmountAsString,
            "status_as_number" => Fault::StatusAsNumber,
            "no_signature" => Fault::NoSignature,
            "bad_signature" => Fault::BadSignature,
            "wrong_key" => Fault::WrongKey,
            "wrong_refund_no" => Fault::WrongRefundNo,
            "wrong_amount" => Fault::WrongAmount,
            "wrong_currency" => Fault::WrongCurrency,
            "too_many_requests" => Fault::TooManyRequests,
            "long_trade_no" => Fault::LongTradeNo,
            "escape_trade_no" => Fault::EscapeTradeNo,
            "far_finish_time" => Fault::FarFinishTime,
            "unstorable_refund_no" => Fault::UnstorableRefundNo,
            other => return Err(bad(format!("unknown fault {other:?}"))),
        })
    }
}

/// What the gateway does with one query of a scripted refund.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Signed `APPLY_SUCCESS`, `REFUND_PENDING`.
    Pending,
    /// Signed `APPLY_SUCCESS`, `REFUND_SUCCESS` (with `refundFinishTime`).
    Success,
    /// Signed `APPLY_SUCCESS`, `REFUND_FAILED` (with `refundFinishTime`).
    Failed,
    /// `ORDER_NOT_EXIST`: the gateway does not know the refund (yet).
    Unknown,
    /// Any error code, answered as the gateway answers errors.
    Code(String),
    /// A fault.
    Fault(Fault),
    /// Sleep, then do the inner step.
    Delay(Duration, Box<Step>),
    /// Do the inner step, writing its answer (or error answer) in the form the variance asks
    /// for. Faults keep their own form.
    Vary(Variance, Box<Step>),
}

impl Step {
    /// The refund status this step reports, looking through delays; `None` for codes and faults.
    pub fn status(&self) -> Option<RefundStatus> {
        match self {
            Step::Pending => Some(RefundStatus::Pending),
            Step::Success => Some(RefundStatus::Success),
            Step::Failed => Some(RefundStatus::Failed),
            Step::Delay(_, inner) | Step::Vary(_, inner) => inner.status(),
            Step::Unknown | Step::Code(_) | Step::Fault(_) => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Pending => f.write_str("pending"),
            Step::Success => f.write_str("success"),
            Step::Failed => f.write_str("failed"),
            Step::Unknown => f.write_str("unknown"),
            Step::Code(code) => write!(f, "code:{code}"),
            Step::Fault(fault) => write!(f, "fault:{fault}"),
            Step::Delay(d, inner) => write!(f, "delay:{}:{inner}", format_duration(*d)),
            Step::Vary(variance, inner) => write!(f, "vary:{variance}:{inner}"),
        }
    }
}

impl FromStr for Step {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(fault) = s.strip_prefix("fault:") {
            return fault.parse().map(Step::Fault);
        }
        if let Some(code) = s.strip_prefix("code:") {
            let valid = !code.is_empty()
                && code.len() <= 64
                && code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(InvalidValue::new(
                    "code",
                    format!("{code:?} is not an upper-case code such as SYSTEM_ERROR"),
                ));
            }
            return Ok(Step::Code(code.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("delay:") {
            let (d, inner) = rest.split_once(':').ok_or_else(|| {
                InvalidValue::new("delay", format!("{s:?} must look like delay:200ms:pending"))
            })?;
            let d = parse_duration(d).ok_or_else(|| {
                InvalidValue::new("delay", format!("{d:?} must look like 200ms or 2s"))
            })?;
            return Ok(Step::Delay(d, Box::new(inner.parse()?)));
        }
        if let Some(rest) = s.strip_prefix("vary:") {
            let (switches, inner) = rest.split_once(':').ok_or_else(|| {
                InvalidValue::new(
                    "vary",
                    format!("{s:?} must look like vary:amount_string:success"),
                )
            })?;
            return Ok(Step::Vary(switches.parse()?, Box::new(inner.parse()?)));
        }
        match s {
            "pending" => Ok(Step::Pending),
            "success" => Ok(Step::Success),
            "failed" => Ok(Step::Failed),
            "unknown" => Ok(Step::Unknown),
            other => Err(InvalidValue::new(
                "step",
                format!(
                    "unknown step {other:?} (expected pending, success, failed, unknown, \
                     code:CODE, fault:NAME, delay:DURATION:STEP or vary:SWITCHES:STEP)"
                ),
            )),
        }
    }
}

/// The scripted timeline of one refund: its fixed facts and the answer to each query. Query
/// *n* gets `steps[n]`; the last step repeats forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundScript {
    /// The gateway's refund number (`data.refundTradeNo`); queries may name it instead.
    pub refund_trade_no: String,
    /// The original payment's merchant order number (`data.outTradeNo`).
    pub out_trade_no: String,
    /// Refund amount in major units, exact (`data.refundAmount`, written from this text).
    pub amount: Decimal,
    /// Refund currency (`data.refundCurrency`).
    pub currency: Currency,
    /// The answers, in query order. Must not be empty.
    pub steps: Vec<Step>,
}

impl RefundScript {
    /// A 12.50 USD refund with trade numbers derived from `out_refund_no` (`T-…`, `O-…`):
    /// the short form tests use.
    pub fn usd(out_refund_no: &str, steps: Vec<Step>) -> Self {
        Self {
            refund_trade_no: format!("T-{out_refund_no}"),
            out_trade_no: format!("O-{out_refund_no}"),
            amount: Decimal::new(1250, 2),
            currency: Currency::parse("USD").expect("USD is a valid currency"),
            steps,
        }
    }

    /// The same script with every step's answer written in the form `variance` asks for.
    pub fn varied(mut self, variance: &Variance) -> Self {
        self.steps = self
            .steps
            .into_iter()
            .map(|step| Step::Vary(variance.clone(), Box::new(step)))
            .collect();
        self
    }

    /// The final status the gateway ends up holding: the first final status in the steps
    /// (a final status never changes), or `None` if the script never finalizes.
    pub fn truth(&self) -> Option<RefundStatus> {
        self.steps
            .iter()
            .filter_map(Step::status)
            .find(|s| s.is_final())
    }

    /// Checks the script against `out_refund_no`: a valid refund number, trade numbers of 1 to
    /// 64 characters, an amount valid for the currency, at least one step, and a status line a
    /// real gateway could produce (once final, never pending or the other final status).
    pub fn validate(&self, out_refund_no: &str) -> Result<(), InvalidValue> {
        OutRefundNo::parse(out_refund_no)?;
        for (field, value) in [
            ("refundTradeNo", &self.refund_trade_no),
            ("outTradeNo", &self.out_trade_no),
        ] {
            if value.is_empty() || value.len() > 64 {
                return Err(InvalidValue::new(
                    field,
                    format!("{value:?} must be 1 to 64 characters"),
                ));
            }
        }
        validate_amount(&self.amount.to_string(), self.currency)?;
        if self.steps.is_empty() {
            return Err(InvalidValue::new("steps", "must list at least one step"));
        }
        let mut reached: Option<RefundStatus> = None;
        for (i, step) in self.steps.iter().enumerate() {
            let Some(status) = step.status() else {
                continue;
            };
            match reached {
                Some(done) if done != status => {
                    return Err(InvalidValue::new(
                        "steps",
                        format!(
                            "step {} ({step}) reports {status} after the refund became {done}; \
                             a final status never changes",
                            i + 1
                        ),
                    ));
                }
                _ if status.is_final() => reached = Some(status),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A script file that could not be used. Every variant names the 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The reader failed.
    #[error("line {line}: cannot read script: {source}")]
    Read {
        /// Line being read.
        line: usize,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The line is not a JSON object of the expected shape (unknown keys are named here).
    #[error("line {line}: {source}")]
    Json {
        /// Offending line.
        line: usize,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },
    /// A field has a bad value.
    #[error("line {line}: {source}")]
    Invalid {
        /// Offending line.
        line: usize,
        /// The field and what is wrong with it.
        #[source]
        source: InvalidValue,
    },
}

impl ScriptError {
    /// The 1-based line the error is about.
    pub fn line(&self) -> usize {
        match self {
            ScriptError::Read { line, .. }
            | ScriptError::Json { line, .. }
            | ScriptError::Invalid { line, .. } => *line,
        }
    }
}

/// One JSONL line as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScriptLine {
    out_refund_no: String,
    refund_trade_no: Option<String>,
    out_trade_no: Option<String>,
    /// Raw so a JSON number keeps its exact text; a string is preferred.
    amount: Box<RawValue>,
    currency: String,
    steps: Vec<String>,
}

fn line_to_script(line: ScriptLine) -> Result<(String, RefundScript), InvalidValue> {
    OutRefundNo::parse(&line.out_refund_no)?;
    let currency = Currency::parse(&line.currency)?;
    let raw = line.amount.get();
    let amount_text = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw)
            .map_err(|e| InvalidValue::new("amount", format!("{raw}: {e}")))?
    } else {
        raw.to_owned()
    };
    let amount = validate_amount(&amount_text, currency)?;
    let steps = line
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Step>().map_err(|e| {
                InvalidValue::new("steps", format!("step {} {s:?}: {}", i + 1, e.reason))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let script = RefundScript {
        refund_trade_no: line
            .refund_trade_no
            .unwrap_or_else(|| format!("T-{}", line.out_refund_no)),
        out_trade_no: line
            .out_trade_no
            .unwrap_or_else(|| format!("O-{}", line.out_refund_no)),
        amount,
        currency,
        steps,
    };
    script.validate(&line.out_refund_no)?;
    Ok((line.out_refund_no, script))
}

/// Reads scripts, one JSON object per line:
///
/// ```json
/// {"outRefundNo":"R1","refundTradeNo":"T1","outTradeNo":"O1","amount":"12.50","currency":"USD","steps":["pending","pending","success"]}
/// ```
///
/// `refundTradeNo` and `outTradeNo` are optional (default `T-<outRefundNo>`, `O-<outRefundNo>`);
/// `amount` is a string (or a JSON number, read from its exact text). Blank lines and lines
/// starting with `#` are skipped. Unknown keys, duplicate `outRefundNo`s or `refundTradeNo`s
/// and invalid values are errors naming the line and the field.
pub fn parse_scripts_jsonl(
    reader: impl BufRead,
) -> Result<Vec<(String, RefundScript)>, ScriptError> {
    let mut scripts = Vec::new();
    let mut seen_out = HashSet::new();
    let mut seen_trade = HashSet::new();
    for (index, text) in reader.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(|source| ScriptError::Read { line, source })?;
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let raw: ScriptLine =
            serde_json::from_str(trimmed).map_err(|source| ScriptError::Json { line, source })?;
        let (out_refund_no, script) =
            line_to_script(raw).map_err(|source| ScriptError::Invalid { line, source })?;
        if !seen_out.insert(out_refund_no.clone()) {
            return Err(ScriptError::Invalid {
                line,
                source: InvalidValue::new(
                    "outRefundNo",
                    format!("{out_refund_no:?} is scripted twice"),
                ),
            });
        }
        if !seen_trade.insert(script.refund_trade_no.clone()) {
            return Err(ScriptError::Invalid {
                line,
                source: InvalidValue::new(
                    "refundTradeNo",
                    format!("{:?} is used twice", script.refund_trade_no),
                ),
            });
        }
        scripts.push((out_refund_no, script));
    }
    Ok(scripts)
}

/// Writes one script as a JSONL line that [`parse_scripts_jsonl`] reads back unchanged.
pub fn script_to_jsonl(out_refund_no: &str, script: &RefundScript) -> String {
    serde_json::json!({
        "outRefundNo": out_refund_no,
        "refundTradeNo": script.refund_trade_no,
        "outTradeNo": script.out_trade_no,
        "amount": script.amount.to_string(),
        "currency": script.currency.as_str(),
        "steps": script.steps.iter().map(Step::to_string).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Transient misbehaviour placed before the real answer in the faulty share of
/// [`mixed_scripts`]: every one is something a correct client retries through.
const TRANSIENT_STEPS: &[&str] = &[
    "fault:http:500",
    "fault:http:502",
    "fault:http:503",
    "fault:reset",
    "fault:bad_signature",
    "fault:too_many_requests",
    "code:SYSTEM_ERROR",
];

/// A realistic, seeded mix of `n` refunds numbered `{prefix}000001`, `{prefix}000002`, …:
///
/// - 30 % pending 1–4 times, then success; 10 % pending 1–4 times, then failed;
/// - 15 % immediate success; 5 % immediate failed;
/// - 10 % not queryable yet (`unknown` 1–2 times), then pending, then success;
/// - 5 % unknown forever; 5 % pending forever;
/// - 20 % one or two transient faults (5xx, reset, bad signature, `TOO_MANY_REQUEST`,
///   `SYSTEM_ERROR`), then pending 0–2 times, then success (3 in 4) or failed.
///
/// Amounts are exact decimals in USD, EUR, SAR, AED (2 decimals) or IDR (none). The same
/// `(n, seed, prefix)` always gives the same scripts.
pub fn mixed_scripts(n: usize, seed: u64, prefix: &str) -> Vec<(String, RefundScript)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=n)
        .map(|i| {
            let out_refund_no = format!("{prefix}{i:06}");
            let steps = mixed_steps(&mut rng);
            let (amount, currency) = mixed_amount(&mut rng);
            let script = RefundScript {
                refund_trade_no: format!("T-{out_refund_no}"),
                out_trade_no: format!("O-{out_refund_no}"),
                amount,
                currency,
                steps,
            };
            (out_refund_no, script)
        })
        .collect()
}

fn mixed_steps(rng: &mut StdRng) -> Vec<Step> {
    let pendings =
        |rng: &mut StdRng, lo: usize, hi: usize| vec![Step::Pending; rng.random_range(lo..=hi)];
    let roll = rng.random_range(0..100);
    let mut steps = Vec::new();
    match roll {
        0..30 => {
            steps.extend(pendings(rng, 1, 4));
            steps.push(Step::Success);
        }
        30..40 => {
            steps.extend(pendings(rng, 1, 4));
            steps.push(Step::Failed);
        }
        40..55 => steps.push(Step::Success),
        55..60 => steps.push(Step::Failed),
        60..70 => {
            steps.extend(vec![Step::Unknown; rng.random_range(1..=2)]);
            steps.push(Step::Pending);
            steps.push(Step::Success);
        }
        70..75 => steps.push(Step::Unknown),
        75..80 => steps.push(Step::Pending),
        _ => {
            for _ in 0..rng.random_range(1..=2) {
                let spelling = TRANSIENT_STEPS
                    .choose(rng)
                    .expect("TRANSIENT_STEPS is not empty");
                steps.push(spelling.parse().expect("TRANSIENT_STEPS spellings parse"));
            }
            steps.extend(pendings(rng, 0, 2));
            steps.push(if rng.random_bool(0.75) {
                Step::Success
            } else {
                Step::Failed
            });
        }
    }
    steps
}

fn mixed_amount(rng: &mut StdRng) -> (Decimal, Currency) {
    const CODES: &[&str] = &["USD", "USD", "USD", "EUR", "SAR", "AED", "IDR"];
    let code = CODES.choose(rng).expect("CODES is not empty");
    let currency = Currency::parse(code).expect("CODES are valid currencies");
    let amount = if currency.max_scale() == 0 {
        // 10,000 to 2,000,000 rupiah in whole hundreds.
        Decimal::new(rng.random_range(100..=20_000) * 100, 0)
    } else {
        // 1.00 to 500.00; a third end in 0 (12.50) so exact-text handling is exercised.
        let cents = rng.random_range(100..=50_000);
        let cents = if rng.random_range(0..3) == 0 {
            cents / 10 * 10
        } else {
            cents
        };
        Decimal::new(cents.max(100), 2)
    };
    (amount, currency)
}

/// The sandbox's realistic mode: every refund's answers take a form drawn from `switches`,
/// and a `params_invalid` share of refunds are refused with `PARAMS_INVALID` on every query,
/// as a real gateway refuses a refund number it finds ill-formed. The draw depends only on
/// the seed and the refund number, so it is the same whatever order queries arrive in.
/// A `vary:` step overrides the draw for that step.
#[derive(Debug, Clone, PartialEq)]
pub struct Realism {
    /// Fixes every draw.
    pub seed: u64,
    /// The switches a draw may pick from; each dimension present is switched on for about
    /// half the refunds, to one of its switches here.
    pub switches: Vec<Switch>,
    /// Share of refunds (0.0–1.0) answered `PARAMS_INVALID` forever; they never finalize.
    pub params_invalid: f64,
}

impl Realism {
    /// The variants today's client reads to the true outcome ([`Switch::TOLERATED`]), no
    /// `PARAMS_INVALID`.
    pub fn tolerated(seed: u64) -> Self {
        Self {
            seed,
            switches: Switch::TOLERATED.to_vec(),
            params_invalid: 0.0,
        }
    }

    /// Everything the world sends ([`Switch::ALL`]), and `PARAMS_INVALID` for 2 % of refunds.
    pub fn world(seed: u64) -> Self {
        Self {
            seed,
            switches: Switch::ALL.to_vec(),
            params_invalid: 0.02,
        }
    }

    /// A generator for one refund number and purpose: FNV-1a of the purpose and the number,
    /// mixed with the seed.
    fn rng(&self, purpose: &str, out_refund_no: &str) -> StdRng {
        let hash = purpose
            .bytes()
            .chain([0])
            .chain(out_refund_no.bytes())
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        StdRng::seed_from_u64(self.seed ^ hash)
    }

    /// How the gateway delivers `out_refund_no`'s result notification in this world: about
    /// one in ten never sent (the refund is found by polling), one in ten with its first
    /// attempt lost (delivered on the 30 s retry), the rest at once.
    pub fn delivery_for(&self, out_refund_no: &str) -> super::notify::Delivery {
        use super::notify::Delivery;
        match self.rng("notify", out_refund_no).random_range(0..10) {
            0 => Delivery::Never,
            1 => Delivery::LoseFirst(1),
            _ => Delivery::Deliver,
        }
    }

    /// Whether the gateway refuses `out_refund_no` with `PARAMS_INVALID` on every query.
    pub fn rejects(&self, out_refund_no: &str) -> bool {
        let share = if self.params_invalid.is_nan() {
            0.0
        } else {
            self.params_invalid.clamp(0.0, 1.0)
        };
        self.rng("rejects", out_refund_no).random_bool(share)
    }

    /// The form of every answer about `out_refund_no` (`""` for requests naming no refund).
    pub fn variance_for(&self, out_refund_no: &str) -> Variance {
        let mut rng = self.rng("variance", out_refund_no);
        let mut dimensions: Vec<&str> = Vec::new();
        for switch in &self.switches {
            if !dimensions.contains(&switch.dimension()) {
                dimensions.push(switch.dimension());
            }
        }
        let mut picked = Vec::new();
        for dimension in dimensions {
            let choices: Vec<Switch> = self
                .switches
                .iter()
                .copied()
                .filter(|s| s.dimension() == dimension)
                .collect();
            if rng.random_bool(0.5)
                && let Some(choice) = choices.choose(&mut rng)
            {
                picked.push(*choice);
            }
        }
        Variance::new(picked).expect("one switch per dimension")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_spellings_round_trip() {
        let spellings = [
            "pending",
            "success",
            "failed",
            "unknown",
            "code:SYSTEM_ERROR",
            "code:REFUND_NO_INVALID",
            "delay:200ms:pending",
            "delay:2s:fault:reset",
            "delay:1ms:delay:2ms:success",
            "fault:http:502",
            "fault:trickle:5ms",
            "fault:trickle:1s",
            "fault:reset",
            "fault:hang",
            "fault:oversized",
            "fault:redirect",
            "fault:not_json",
            "fault:missing_code",
            "fault:missing_data",
            "fault:missing_status",
            "fault:unknown_status",
            "fault:amount_as_string",
            "fault:status_as_number",
            "fault:no_signature",
            "fault:bad_signature",
            "fault:wrong_key",
            "fault:wrong_refund_no",
            "fault:wrong_amount",
            "fault:wrong_currency",
            "fault:too_many_requests",
            "fault:long_trade_no",
            "fault:escape_trade_no",
            "fault:far_finish_time",
            "fault:unstorable_refund_no",
            "vary:amount_string:success",
            "vary:errors_on_http,refund_no_invalid:unknown",
            "vary:pretty:delay:5ms:code:SYSTEM_ERROR",
            "delay:5ms:vary:finish_plus8,keys_sorted:failed",
        ];
        for s in spellings {
            let step: Step = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(step.to_string(), s);
        }
        assert_eq!(
            "fault:trickle".parse::<Step>().unwrap(),
            Step::Fault(Fault::Trickle(DEFAULT_TRICKLE_INTERVAL))
        );
        for bad in [
            "",
            "Pending",
            "fault:",
            "fault:resett",
            "fault:http:200",
            "fault:http:99",
            "fault:http:abc",
            "fault:trickle:5",
            "code:",
            "code:lower",
            "delay:200ms",
            "delay:fast:pending",
            "delay:200ms:bogus",
            "vary:success",
            "vary::success",
            "vary:amount_string,amount_zeros:success",
            "vary:colourful:success",
        ] {
            assert!(bad.parse::<Step>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn truth_is_the_first_final_status() {
        let s = |steps: &[&str]| {
            RefundScript::usd("R1", steps.iter().map(|s| s.parse().unwrap()).collect())
        };
        assert_eq!(
            s(&["pending", "pending", "success"]).truth(),
            Some(RefundStatus::Success)
        );
        assert_eq!(
            s(&["fault:reset", "failed"]).truth(),
            Some(RefundStatus::Failed)
        );
        assert_eq!(
            s(&["delay:5ms:success", "fault:reset"]).truth(),
            Some(RefundStatus::Success)
        );
        assert_eq!(s(&["pending"]).truth(), None);
        assert_eq!(s(&["unknown"]).truth(), None);
        assert_eq!(s(&["code:SYSTEM_ERROR"]).truth(), None);
        let varied = s(&["pending", "failed"]).varied(&"amount_string".parse().unwrap());
        assert_eq!(varied.steps[1].to_string(), "vary:amount_string:failed");
        assert_eq!(varied.truth(), Some(RefundStatus::Failed));
    }

    #[test]
    fn realism_is_seeded_per_refund_and_draws_only_its_switches() {
        let world = Realism::world(7);
        let numbers: Vec<String> = (0..2000).map(|i| format!("R{i}")).collect();
        let draws: Vec<Variance> = numbers.iter().map(|n| world.variance_for(n)).collect();
        // Same seed and number, same draw, whatever else was drawn before.
        assert_eq!(Realism::world(7).variance_for("R1999"), draws[1999]);
        assert_ne!(
            numbers
                .iter()
                .map(|n| Realism::world(8).variance_for(n))
                .collect::<Vec<_>>(),
            draws
        );
        // Every switch turns up, and most refunds get several.
        for switch in Switch::ALL {
            let n = draws.iter().filter(|v| v.has(*switch)).count();
            assert!(n > 20, "{switch} drawn {n} times of 2000");
        }
        let plain = draws.iter().filter(|v| v.switches().is_empty()).count();
        assert!(plain < 40, "{plain} of 2000 drew no switch");
        let rejected = numbers.iter().filter(|n| world.rejects(n)).count();
        assert!(
            (10..80).contains(&rejected),
            "{rejected} of 2000 rejected at 2 %"
        );
        // The tolerated draw stays inside its list and rejects nothing.
        let tolerated = Realism::tolerated(7);
        for n in &numbers {
            assert!(!tolerated.rejects(n));
            let v = tolerated.variance_for(n);
            assert!(
                v.switches().iter().all(|s| Switch::TOLERATED.contains(s)),
                "{v}"
            );
        }
    }

    #[test]
    fn validation_refuses_impossible_timelines() {
        let s = |steps: &[&str]| {
            RefundScript::usd("R1", steps.iter().map(|s| s.parse().unwrap()).collect())
        };
        assert!(
            s(&["pending", "success", "fault:reset", "success"])
                .validate("R1")
                .is_ok()
        );
        assert!(s(&["success", "pending"]).validate("R1").is_err());
        assert!(s(&["failed", "delay:1ms:success"]).validate("R1").is_err());
        assert!(s(&[]).validate("R1").is_err());
        assert!(s(&["success"]).validate("R 1").is_err());
        let mut idr = s(&["success"]);
        idr.currency = Currency::parse("IDR").unwrap();
        assert!(
            idr.validate("R1").is_err(),
            "12.50 IDR has too many decimals"
        );
    }

    #[test]
    fn jsonl_reads_the_documented_format() {
        let text = r#"
# a comment line
{"outRefundNo":"R1","refundTradeNo":"T1","outTradeNo":"O1","amount":"12.50","currency":"USD","steps":["pending","pending","success"]}
{"outRefundNo":"R2","amount":15000,"currency":"IDR","steps":["fault:reset","code:SYSTEM_ERROR","unknown","delay:200ms:pending","failed"]}
"#;
        let scripts = parse_scripts_jsonl(text.as_bytes()).unwrap();
        assert_eq!(scripts.len(), 2);
        let (no, r1) = &scripts[0];
        assert_eq!(no, "R1");
        assert_eq!(r1.refund_trade_no, "T1");
        assert_eq!(r1.out_trade_no, "O1");
        assert_eq!(r1.amount.to_string(), "12.50");
        assert_eq!(r1.steps, vec![Step::Pending, Step::Pending, Step::Success]);
        let (no, r2) = &scripts[1];
        assert_eq!(no, "R2");
        assert_eq!(r2.refund_trade_no, "T-R2");
        assert_eq!(r2.amount.to_string(), "15000");
        assert_eq!(
            r2.steps[3],
            Step::Delay(Duration::from_millis(200), Box::new(Step::Pending))
        );
        assert_eq!(r2.truth(), Some(RefundStatus::Failed));
        // Writing and reading back is lossless.
        let again: String = scripts
            .iter()
            .map(|(no, s)| script_to_jsonl(no, s) + "\n")
            .collect();
        assert_eq!(parse_scripts_jsonl(again.as_bytes()).unwrap(), scripts);
    }

    #[test]
    fn jsonl_errors_name_line_and_field() {
        let good = r#"{"outRefundNo":"R1","amount":"1.00","currency":"USD","steps":["success"]}"#;
        let cases = [
            (
                r#"{"outRefundNo":"R2","amount":"1.00","currency":"USD","steps":["fualt:reset"]}"#,
                "steps",
            ),
            (
                r#"{"outRefundNo":"R2","amount":"1.005","currency":"USD","steps":["success"]}"#,
                "amount",
            ),
            (
                r#"{"outRefundNo":"R2","amount":"1.00","currency":"usd","steps":["success"]}"#,
                "currency",
            ),
            (
                r#"{"outRefundNo":"R2","amount":"1.00","currency":"USD","steps":[]}"#,
                "steps",
            ),
            (
                r#"{"outRefundNo":"R2","amount":"1.00","currency":"USD","steps":["success"],"colour":"red"}"#,
                "colour",
            ),
            (
                r#"{"outRefundNo":"R2","currency":"USD","steps":["success"]}"#,
                "amount",
            ),
            (
                r#"{"outRefundNo":"R1","amount":"1.00","currency":"USD","steps":["success"]}"#,
                "scripted twice",
            ),
            (
                r#"{"outRefundNo":"R2","refundTradeNo":"T-R1","amount":"1.00","currency":"USD","steps":["success"]}"#,
                "refundTradeNo",
            ),
            (r#"{"outRefundNo":"R2", nope"#, "line 3"),
        ];
        for (bad, field) in cases {
            let text = format!("{good}\n\n{bad}\n");
            let err = parse_scripts_jsonl(text.as_bytes()).unwrap_err();
            assert_eq!(err.line(), 3, "{bad}: {err}");
            let msg = err.to_string();
            assert!(msg.starts_with("line 3: "), "{msg}");
            assert!(msg.contains(field), "{msg} does not name {field}");
        }
    }

    #[test]
    fn mixed_scripts_are_seeded_valid_and_varied() {
        let a = mixed_scripts(500, 7, "MIX-");
        assert_eq!(a, mixed_scripts(500, 7, "MIX-"));
        assert_ne!(a, mixed_scripts(500, 8, "MIX-"));
        assert_eq!(a[0].0, "MIX-000001");
        let mut finals = [0usize; 3];
        let mut faulty = 0;
        for (no, script) in &a {
            script.validate(no).unwrap();
            match script.truth() {
                Some(RefundStatus::Success) => finals[0] += 1,
                Some(RefundStatus::Failed) => finals[1] += 1,
                _ => finals[2] += 1,
            }
            if script
                .steps
                .iter()
                .any(|s| matches!(s, Step::Fault(_) | Step::Code(_)))
            {
                faulty += 1;
            }
        }
        assert!(finals.iter().all(|&c| c > 20), "{finals:?}");
        assert!(faulty > 50, "{faulty}");
        let text: String = a
            .iter()
            .map(|(no, s)| script_to_jsonl(no, s) + "\n")
            .collect();
        assert_eq!(parse_scripts_jsonl(text.as_bytes()).unwrap(), a);
    }
}
