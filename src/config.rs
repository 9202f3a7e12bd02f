//! Configuration: TOML text, then environment overrides, then one validation pass into typed
//! values. Parsing takes strings and an explicit environment, so it is tested without files;
//! after start-up nothing reads environment variables again.
//!
//! Each default is written once, on the type that owns the value: the schedule and policy in
//! [`Schedule::default`] and [`Policy::default`], the gateway's in the `DEFAULT_*` constants of
//! [`crate::gateway::settings`], the worker's and the log's in [`WorkerSettings::default`] and
//! [`LogSettings::default`]. The raw TOML structs below take their defaults from those and
//! write no value of their own. Rules work the same way: the gateway settings' rules live in
//! [`GatewaySettings::validate`], and a refusal is wrapped here as [`ConfigError::Gateway`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{Policy, Schedule};
use crate::gateway::{GatewaySettings, SettingsError, ValidGatewaySettings};

/// Prefix of environment variables that override config keys:
/// `CHECUS_RECONCILER__GATEWAY__APP_ID` overrides `gateway.app_id`.
pub const ENV_PREFIX: &str = "CHECUS_RECONCILER__";

/// A configuration problem. Every variant names the key (or file, or variable) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    // The I/O error is the source, not part of the message: printed as a cause chain, it then
    // appears once.
    #[error("cannot read config file {path}")]
    Read {
        /// The config file that could not be read.
        path: PathBuf,
        /// The I/O error reading it.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, missing key or wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or "config text").
        origin: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// An environment override that maps to no key or does not parse.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The `CHECUS_RECONCILER__*` variable at fault.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `worker.concurrency`.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A `[gateway]` value that the gateway settings' own rules refuse. The message is the key;
    /// the reason is the source, so a printed cause chain says it once.
    #[error("{key}")]
    Gateway {
        /// The dotted key, e.g. `gateway.base_url`.
        key: String,
        /// The settings' refusal, which names the setting.
        #[source]
        source: SettingsError,
    },
}

impl ConfigError {
    /// The message and every cause after it, `: `-joined, for a log field: `main` prints the
    /// cause chain itself, a log line does not.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The validated configuration of a daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger file.
    pub ledger_path: PathBuf,
    /// How to reach Checus, already checked by the gateway settings' rules.
    pub gateway: ValidGatewaySettings,
    /// Where the keys come from (loaded by [`KeySources::load`]; material is never kept here).
    pub keys: KeySources,
    /// The decision policy (schedule, escalation).
    pub policy: Policy,
    /// Worker limits and timings.
    pub worker: WorkerSettings,
    /// Log format and filter.
    pub log: LogSettings,
}

/// Worker limits and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// Six-field cron expression (seconds first, UTC) for the safety-net sweep.
    pub sweep_cron: String,
    /// Queries in flight at once.
    pub concurrency: usize,
    /// Queries per second toward Checus.
    pub rate_per_second: f64,
    /// Most refunds claimed per sweep.
    pub batch_size: usize,
    /// How long SIGTERM may take to drain in-flight queries.
    pub shutdown_deadline: Duration,
}

impl Default for WorkerSettings {
    /// The documented defaults (`examples/config.toml`): a safety-net sweep every 30 s, 8
    /// queries in flight, 5 queries/s (well under what Checus tolerates), 500 refunds per sweep,
    /// and 10 s to drain, which leaves margin under the unit's `TimeoutStopSec=30s`.
    fn default() -> Self {
        Self {
            sweep_cron: "*/30 * * * * *".to_owned(),
            concurrency: 8,
            rate_per_second: 5.0,
            batch_size: 500,
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
    /// journald's native protocol, with every field queryable (`OUT_REFUND_NO=`, `STATUS=`).
    /// Chosen automatically for `text` when stderr is the journal (`$JOURNAL_STREAM`).
    Journald,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Text, JSON or journald.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `checus_reconciler=debug`.
    pub level: String,
}

impl Default for LogSettings {
    /// Text lines at `info`.
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Where one key comes from. Key *material* never lives in `Config`.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file path.
    File(PathBuf),
    /// An environment variable's value, captured once at start-up.
    Env {
        /// The variable name.
        var: String,
        /// Its value (redacted in Debug).
        value: Option<String>,
    },
    /// A file in systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`).
    Credential {
        /// The credential name.
        name: String,
        /// `$CREDENTIALS_DIRECTORY` as it was at start-up.
        dir: Option<PathBuf>,
    },
    /// A key compiled into the binary (the INSECURE test keys of the demo), which its user
    /// parses itself and hands over as [`LoadedKeys`]. No config text can name it, and
    /// [`KeySources::load`] refuses it: it records where the keys came from, nothing more.
    Embedded {
        /// What the key is, for `Debug` (never the material).
        name: &'static str,
    },
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Env { var, .. } => write!(f, "env:{var}"),
            Self::Credential { name, .. } => write!(f, "credential:{name}"),
            Self::Embedded { name } => write!(f, "embedded:{name}"),
        }
    }
}

/// Where the two keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySources {
    /// The merchant's private key (signs requests).
    pub merchant_private_key: KeySource,
    /// The Checus gateway's public key (verifies answers).
    pub gateway_public_key: KeySource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ledger: RawLedger,
    gateway: RawGateway,
    keys: RawKeys,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    base_url: String,
    app_id: String,
    merchant_no: String,
    #[serde(default = "default_version")]
    version: String,
    #[serde(default = "default_key_version")]
    key_version: String,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "default_request_timeout")]
    request_timeout: String,
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    merchant_private_key: String,
    gateway_public_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default = "d_grace")]
    grace: String,
    #[serde(default = "d_backoff")]
    backoff: Vec<String>,
    #[serde(default = "d_steady")]
    steady: String,
    #[serde(default = "d_retry")]
    retry: String,
    #[serde(default = "d_jitter")]
    jitter: f64,
    #[serde(default = "d_pending_flag")]
    pending_flag_after: String,
    #[serde(default = "d_unknown_flag")]
    unknown_flag_after: String,
    #[serde(default = "d_halt_recheck")]
    halt_recheck: String,
    #[serde(default = "d_confirm_after")]
    confirm_after: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    #[serde(default = "d_cron")]
    sweep_cron: String,
    #[serde(default = "d_concurrency")]
    concurrency: usize,
    #[serde(default = "d_rate")]
    rate_per_second: f64,
    #[serde(default = "d_batch")]
    batch_size: usize,
    #[serde(default = "d_deadline")]
    shutdown_deadline: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "d_format")]
    format: LogFormat,
    #[serde(default = "d_level")]
    level: String,
}

// The raw structs' defaults, all taken from the types that own the values (see the module
// docs). Durations are text so the TOML reads like the docs.
fn default_version() -> String {
    crate::gateway::DEFAULT_VERSION.to_owned()
}
fn default_key_version() -> String {
    crate::gateway::DEFAULT_KEY_VERSION.to_owned()
}
fn default_connect_timeout() -> String {
    fmt_d(crate::gateway::DEFAULT_CONNECT_TIMEOUT)
}
fn default_request_timeout() -> String {
    fmt_d(crate::gateway::DEFAULT_REQUEST_TIMEOUT)
}
fn default_max_response_bytes() -> usize {
    crate::gateway::DEFAULT_MAX_RESPONSE_BYTES
}
fn fmt_d(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
fn d_grace() -> String {
    fmt_d(Schedule::default().grace)
}
fn d_backoff() -> Vec<String> {
    Schedule::default().steps.into_iter().map(fmt_d).collect()
}
fn d_steady() -> String {
    fmt_d(Schedule::default().steady)
}
fn d_retry() -> String {
    fmt_d(Schedule::default().retry)
}
fn d_jitter() -> f64 {
    Schedule::default().jitter
}
fn d_pending_flag() -> String {
    fmt_d(Policy::default().pending_flag_after)
}
fn d_unknown_flag() -> String {
    fmt_d(Policy::default().unknown_flag_after)
}
fn d_halt_recheck() -> String {
    fmt_d(Policy::default().halt_recheck)
}
fn d_confirm_after() -> String {
    fmt_d(Policy::default().confirm_after)
}
fn d_cron() -> String {
    WorkerSettings::default().sweep_cron
}
fn d_concurrency() -> usize {
    WorkerSettings::default().concurrency
}
fn d_rate() -> f64 {
    WorkerSettings::default().rate_per_second
}
fn d_batch() -> usize {
    WorkerSettings::default().batch_size
}
fn d_deadline() -> String {
    fmt_d(WorkerSettings::default().shutdown_deadline)
}
fn d_format() -> LogFormat {
    LogSettings::default().format
}
fn d_level() -> String {
    LogSettings::default().level
}

impl Default for RawSchedule {
    fn default() -> Self {
        Self {
            grace: d_grace(),
            backoff: d_backoff(),
            steady: d_steady(),
            retry: d_retry(),
            jitter: d_jitter(),
            pending_flag_after: d_pending_flag(),
            unknown_flag_after: d_unknown_flag(),
            halt_recheck: d_halt_recheck(),
            confirm_after: d_confirm_after(),
        }
    }
}

impl Default for RawWorker {
    fn default() -> Self {
        Self {
            sweep_cron: d_cron(),
            concurrency: d_concurrency(),
            rate_per_second: d_rate(),
            batch_size: d_batch(),
            shutdown_deadline: d_deadline(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: d_format(),
            level: d_level(),
        }
    }
}

/// The process environment, captured once at start-up (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// Captures the real environment.
    pub fn capture() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An explicit environment, for tests.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// One variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

impl Config {
    /// Reads, overrides and validates the config file at `path`.
    pub fn load(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Parses config text. `origin` names the text in errors (usually the file path).
    pub fn parse(text: &str, origin: &str, env: &Environment) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        apply_env_overrides(&mut table, env)?;
        let raw: RawConfig =
            RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
        raw.validate(env)
    }
}

/// `CHECUS_RECONCILER__SECTION__KEY=value` sets `section.key`. Values parse as TOML when they
/// can (numbers, arrays), else they are taken as strings.
fn apply_env_overrides(table: &mut toml::Table, env: &Environment) -> Result<(), ConfigError> {
    for (var, value) in &env.vars {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            return Err(ConfigError::Env {
                var: var.clone(),
                reason: format!("expected {ENV_PREFIX}SECTION__KEY"),
            });
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::Env {
                var: var.clone(),
                reason: format!("{section} is not a section"),
            });
        };
        section_table.insert(key, parsed);
    }
    Ok(())
}

/// Parses `500ms`, `30s`, `10m`, `1h`, `2d` and sums like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration like 30s, 10m or 1h30m"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86_400),
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
                ));
            }
        };
        total += part;
    }
    Ok(total)
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|reason| ConfigError::invalid(key, reason))
}

fn positive_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, text)?;
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

/// Parses `file:PATH`, `env:VAR` or `credential:NAME`.
fn key_source(key: &str, text: &str, env: &Environment) -> Result<KeySource, ConfigError> {
    let (scheme, rest) = text.split_once(':').ok_or_else(|| {
        ConfigError::invalid(
            key,
            "expected file:/path/to/key, env:VARIABLE or credential:NAME",
        )
    })?;
    if rest.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{scheme}: needs a value"),
        ));
    }
    match scheme {
        "file" => Ok(KeySource::File(PathBuf::from(rest))),
        "env" => Ok(KeySource::Env {
            var: rest.to_owned(),
            value: env.get(rest).map(str::to_owned),
        }),
        "credential" => {
            if rest.contains('/') {
                return Err(ConfigError::invalid(key, "a credential name has no '/'"));
            }
            Ok(KeySource::Credential {
                name: rest.to_owned(),
                dir: env.get("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            })
        }
        other => Err(ConfigError::invalid(
            key,
            format!("unknown key source {other:?}; use file:, env: or credential:"),
        )),
    }
}

/// Checks a six-field cron expression the way the scheduler will read it.
pub fn validate_cron(key: &str, expr: &str) -> Result<(), ConfigError> {
    if expr.split_whitespace().count() != 6 {
        return Err(ConfigError::invalid(
            key,
            format!("{expr:?} must have six fields, seconds first (e.g. \"*/30 * * * * *\")"),
        ));
    }
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| {
            ConfigError::invalid(key, format!("{expr:?} is not a valid cron expression: {e}"))
        })
}

impl RawConfig {
    fn validate(self, env: &Environment) -> Result<Config, ConfigError> {
        if self.ledger.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("ledger.path", "is empty"));
        }
        let gateway = self.gateway.validate()?;
        let policy = self.schedule.validate()?;
        let worker = self.worker.validate()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid("log.level", e.to_string()));
        }
        Ok(Config {
            ledger_path: self.ledger.path,
            gateway,
            keys: KeySources {
                merchant_private_key: key_source(
                    "keys.merchant_private_key",
                    &self.keys.merchant_private_key,
                    env,
                )?,
                gateway_public_key: key_source(
                    "keys.gateway_public_key",
                    &self.keys.gateway_public_key,
                    env,
                )?,
            },
            policy,
            worker,
            log: LogSettings {
                format: self.log.format,
                level: self.log.level,
            },
        })
    }
}

impl RawGateway {
    /// Parses the duration texts and hands everything to the settings' own rules, which are
    /// the only ones: their refusal comes back typed, under its `gateway.` key.
    fn validate(self) -> Result<ValidGatewaySettings, ConfigError> {
        let mut gateway = GatewaySettings::new(self.base_url, self.app_id, self.merchant_no);
        gateway.version = self.version;
        gateway.key_version = self.key_version;
        gateway.connect_timeout = duration("gateway.connect_timeout", &self.connect_timeout)?;
        gateway.request_timeout = duration("gateway.request_timeout", &self.request_timeout)?;
        gateway.max_response_bytes = self.max_response_bytes;
        gateway.validate().map_err(|source| ConfigError::Gateway {
            key: format!("gateway.{}", source.setting()),
            source,
        })
    }
}

impl RawSchedule {
    fn validate(self) -> Result<Policy, ConfigError> {
        if self.backoff.is_empty() {
            return Err(ConfigError::invalid(
                "schedule.backoff",
                "needs at least one step",
            ));
        }
        let steps = self
            .backoff
            .iter()
            .map(|t| positive_duration("schedule.backoff", t))
            .collect::<Result<Vec<_>, _>>()?;
        if !(0.0..=0.5).contains(&self.jitter) || self.jitter.is_nan() {
            return Err(ConfigError::invalid(
                "schedule.jitter",
                "must be a fraction between 0 and 0.5",
            ));
        }
        Ok(Policy {
            schedule: Schedule {
                grace: duration("schedule.grace", &self.grace)?,
                steps,
                steady: positive_duration("schedule.steady", &self.steady)?,
                retry: positive_duration("schedule.retry", &self.retry)?,
                jitter: self.jitter,
            },
            pending_flag_after: positive_duration(
                "schedule.pending_flag_after",
                &self.pending_flag_after,
            )?,
            unknown_flag_after: positive_duration(
                "schedule.unknown_flag_after",
                &self.unknown_flag_after,
            )?,
            halt_recheck: positive_duration("schedule.halt_recheck", &self.halt_recheck)?,
            confirm_after: duration("schedule.confirm_after", &self.confirm_after)?,
        })
    }
}

impl RawWorker {
    fn validate(self) -> Result<WorkerSettings, ConfigError> {
        validate_cron("worker.sweep_cron", &self.sweep_cron)?;
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                "must be between 1 and 1024",
            ));
        }
        if !(self.rate_per_second > 0.0 && self.rate_per_second.is_finite()) {
            return Err(ConfigError::invalid(
                "worker.rate_per_second",
                "must be a positive number",
            ));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                "must be at least 1",
            ));
        }
        Ok(WorkerSettings {
            sweep_cron: self.sweep_cron,
            concurrency: self.concurrency,
            rate_per_second: self.rate_per_second,
            batch_size: self.batch_size,
            shutdown_deadline: positive_duration(
                "worker.shutdown_deadline",
                &self.shutdown_deadline,
            )?,
        })
    }
}

/// The two keys, parsed once.
#[derive(Debug, Clone)]
pub struct LoadedKeys {
    /// Signs requests.
    pub merchant: std::sync::Arc<crate::gateway::MerchantKey>,
    /// Verifies answers.
    pub gateway: std::sync::Arc<crate::gateway::GatewayKey>,
    /// Things worth a warning at start-up (a converted key format, loose file permissions).
    pub warnings: Vec<String>,
}

impl KeySource {
    /// Reads the key text. Private key files readable or writable by "other" are refused;
    /// group-readable ones are accepted with a warning (systemd credentials are 0400/0440).
    fn read(
        &self,
        key: &str,
        private: bool,
        warnings: &mut Vec<String>,
    ) -> Result<String, ConfigError> {
        let path = match self {
            Self::Env { var, value } => {
                return value.clone().ok_or_else(|| {
                    ConfigError::invalid(key, format!("environment variable {var} is not set"))
                });
            }
            Self::File(path) => path.clone(),
            Self::Credential { name, dir } => {
                let dir = dir.as_ref().ok_or_else(|| {
                    ConfigError::invalid(
                        key,
                        format!(
                            "credential:{name} needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=)"
                        ),
                    )
                })?;
                dir.join(name)
            }
            Self::Embedded { name } => {
                return Err(ConfigError::invalid(
                    key,
                    format!("embedded:{name} is loaded by the caller, not from config"),
                ));
            }
        };
        let meta = std::fs::metadata(&path).map_err(|e| {
            ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
        })?;
        if private {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o007 != 0 {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{} is accessible to other users (mode {:o}); run: chmod 600 {}",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    ),
                ));
            }
            if mode & 0o070 != 0 {
                warnings.push(format!(
                    "{key}: {} is group-accessible (mode {:o}); 0600 or 0400 is recommended",
                    path.display(),
                    mode & 0o777
                ));
            }
        }
        std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
    }
}

impl KeySources {
    /// Reads and parses both keys. Errors name the config key and never contain key material.
    pub fn load(&self) -> Result<LoadedKeys, ConfigError> {
        use crate::gateway::{GatewayKey, MerchantKey, PrivateKeyFormat};
        let mut warnings = Vec::new();
        let k = "keys.merchant_private_key";
        let text = self.merchant_private_key.read(k, true, &mut warnings)?;
        let merchant = MerchantKey::from_text(&text)
            .map_err(|e| ConfigError::invalid(k, format!("{:?} {e}", self.merchant_private_key)))?;
        if merchant.format() == PrivateKeyFormat::Pkcs1 {
            warnings.push(format!(
                "{k}: PKCS#1 key accepted and used as PKCS#8; Checus documents PKCS#8 (openssl pkcs8 -topk8 -nocrypt)"
            ));
        }
        let k = "keys.gateway_public_key";
        let text = self.gateway_public_key.read(k, false, &mut warnings)?;
        let gateway = GatewayKey::from_text(&text)
            .map_err(|e| ConfigError::invalid(k, format!("{:?} {e}", self.gateway_public_key)))?;
        Ok(LoadedKeys {
            merchant: std::sync::Arc::new(merchant),
            gateway: std::sync::Arc::new(gateway),
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[ledger]
path = "/var/lib/checus-reconciler/ledger.sqlite"

[gateway]
base_url = "https://p-gate-uat.checus.com/aggregate-pay/api/gateway"
app_id = "APP1"
merchant_no = "M1"

[keys]
merchant_private_key = "credential:merchant-private-key"
gateway_public_key = "file:/etc/checus-reconciler/gateway-public.key"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &Environment::default())
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_takes_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.worker.concurrency, 8);
        assert_eq!(c.worker.rate_per_second, 5.0);
        assert_eq!(c.worker.sweep_cron, "*/30 * * * * *");
        assert_eq!(c.worker.shutdown_deadline, Duration::from_secs(10));
        assert_eq!(c.gateway.key_version, "1");
        assert_eq!(c.gateway.request_timeout, Duration::from_secs(15));
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn errors_name_the_key() {
        let unknown = MINIMAL.replace("app_id = \"APP1\"", "app_id = \"APP1\"\nappid = \"x\"");
        assert!(err(&unknown).contains("appid"), "{}", err(&unknown));
        let missing = MINIMAL.replace("merchant_no = \"M1\"", "");
        assert!(err(&missing).contains("merchant_no"), "{}", err(&missing));
        let syntax = MINIMAL.replace("[keys]", "[keys");
        assert!(err(&syntax).starts_with("test.toml:"), "{}", err(&syntax));
        let dur = format!("{MINIMAL}\n[schedule]\ngrace = \"ten minutes\"\n");
        assert!(err(&dur).starts_with("schedule.grace:"), "{}", err(&dur));
        let cron = format!("{MINIMAL}\n[worker]\nsweep_cron = \"*/30 * * * *\"\n");
        assert!(
            err(&cron).starts_with("worker.sweep_cron:"),
            "{}",
            err(&cron)
        );
        let cron = format!("{MINIMAL}\n[worker]\nsweep_cron = \"99 * * * * *\"\n");
        assert!(
            err(&cron).starts_with("worker.sweep_cron:"),
            "{}",
            err(&cron)
        );
        let conc = format!("{MINIMAL}\n[worker]\nconcurrency = 0\n");
        assert!(
            err(&conc).starts_with("worker.concurrency:"),
            "{}",
            err(&conc)
        );
        let src = MINIMAL.replace("credential:merchant-private-key", "/etc/key.pem");
        assert!(
            err(&src).starts_with("keys.merchant_private_key:"),
            "{}",
            err(&src)
        );
        let level = format!("{MINIMAL}\n[log]\nlevel = \"info,,=[\"\n");
        assert!(err(&level).starts_with("log.level:"), "{}", err(&level));
    }

    #[test]
    fn gateway_refusals_keep_the_settings_error_as_their_source() {
        use std::error::Error as _;
        for (edit, key) in [
            (("app_id = \"APP1\"", "app_id = \" \""), "gateway.app_id"),
            (
                (
                    "merchant_no = \"M1\"",
                    "merchant_no = \"M1\"\nmax_response_bytes = 1023",
                ),
                "gateway.max_response_bytes",
            ),
            (
                (
                    "merchant_no = \"M1\"",
                    "merchant_no = \"M1\"\nconnect_timeout = \"0s\"",
                ),
                "gateway.connect_timeout",
            ),
            (
                ("https://p-gate-uat", "http://p-gate-uat"),
                "gateway.base_url",
            ),
        ] {
            let e = parse(&MINIMAL.replace(edit.0, edit.1)).unwrap_err();
            let ConfigError::Gateway { key: got, source } = &e else {
                panic!("{key}: {e:?}");
            };
            assert_eq!(got, key);
            assert_eq!(format!("gateway.{}", source.setting()), key);
            // The key once, then the reason once, as a printed cause chain shows them.
            let chain = e.with_causes();
            assert_eq!(chain, format!("{e}: {}", e.source().unwrap()));
            assert_eq!(chain.matches(source.setting()).count(), 1, "{chain}");
        }
    }

    #[test]
    fn the_example_config_shows_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml"))
                .unwrap();
        let example = parse(&text).unwrap();
        assert_eq!(example.policy, Policy::default());
        assert_eq!(example.worker, WorkerSettings::default());
        assert_eq!(example.log, LogSettings::default());
        let defaults = GatewaySettings::new(
            example.gateway.base_url.clone(),
            example.gateway.app_id.clone(),
            example.gateway.merchant_no.clone(),
        );
        assert_eq!(*example.gateway, defaults);
        // And leaving every optional key out gives the same values.
        let minimal = parse(MINIMAL).unwrap();
        assert_eq!(minimal.policy, example.policy);
        assert_eq!(minimal.worker, example.worker);
        assert_eq!(minimal.log, example.log);
    }

    #[test]
    fn environment_overrides_apply_once_and_unknown_ones_are_named() {
        let env = Environment::from_pairs([
            ("CHECUS_RECONCILER__GATEWAY__APP_ID", "FROM-ENV"),
            ("CHECUS_RECONCILER__WORKER__CONCURRENCY", "3"),
            ("CHECUS_RECONCILER__SCHEDULE__BACKOFF", "[\"1s\", \"2s\"]"),
        ]);
        let c = Config::parse(MINIMAL, "t", &env).unwrap();
        assert_eq!(c.gateway.app_id, "FROM-ENV");
        assert_eq!(c.worker.concurrency, 3);
        assert_eq!(
            c.policy.schedule.steps,
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
        let env = Environment::from_pairs([("CHECUS_RECONCILER__GATEWAY__APPID", "x")]);
        let e = Config::parse(MINIMAL, "t", &env).unwrap_err().to_string();
        assert!(e.contains("appid"), "{e}");
        let env = Environment::from_pairs([("CHECUS_RECONCILER__GATEWAY", "x")]);
        let e = Config::parse(MINIMAL, "t", &env).unwrap_err().to_string();
        assert!(e.contains("CHECUS_RECONCILER__GATEWAY"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "10", "m", "1x", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_sources_and_their_debug_never_show_material() {
        let env = Environment::from_pairs([("MY_KEY", "c2VjcmV0LWtleS1tYXRlcmlhbA==")]);
        let text = MINIMAL.replace("credential:merchant-private-key", "env:MY_KEY");
        let c = Config::parse(&text, "t", &env).unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("env:MY_KEY"));
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        // Loading reports a clear, material-free error for garbage.
        let e = c.keys.load().unwrap_err().to_string();
        assert!(e.starts_with("keys.merchant_private_key:"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let c = parse(MINIMAL).unwrap();
        let e = c.keys.load().unwrap_err().to_string();
        assert!(e.contains("CREDENTIALS_DIRECTORY"), "{e}");
    }

    fn test_key(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/testdata/INSECURE-test-keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn write_private(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn keys_load_from_a_file_an_env_var_and_the_systemd_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        let private = test_key("merchant_private.b64");
        let public = test_key("gateway_public.pem");
        write_private(dir.path(), "merchant-private-key", &private, 0o400);
        write_private(dir.path(), "gateway-public-key", &public, 0o444);
        // credential: (LoadCredential=) for both.
        let env =
            Environment::from_pairs([("CREDENTIALS_DIRECTORY", dir.path().display().to_string())]);
        let c = Config::parse(
            &MINIMAL.replace(
                "file:/etc/checus-reconciler/gateway-public.key",
                "credential:gateway-public-key",
            ),
            "t",
            &env,
        )
        .unwrap();
        let keys = c.keys.load().unwrap();
        assert!(keys.warnings.is_empty(), "{:?}", keys.warnings);
        let sig = keys.merchant.sign_b64(b"body");
        // The merchant key verifies against its own public half: it really loaded.
        keys.merchant
            .public_key()
            .verify_b64(b"body", &sig)
            .unwrap();
        // env: for the private key, file: for the public one.
        let file = dir.path().join("gateway-public-key");
        let env = Environment::from_pairs([("MERCHANT_KEY", private.as_str())]);
        let text = MINIMAL
            .replace("credential:merchant-private-key", "env:MERCHANT_KEY")
            .replace(
                "file:/etc/checus-reconciler/gateway-public.key",
                &format!("file:{}", file.display()),
            );
        let keys = Config::parse(&text, "t", &env)
            .unwrap()
            .keys
            .load()
            .unwrap();
        keys.merchant
            .public_key()
            .verify_b64(b"x", &keys.merchant.sign_b64(b"x"))
            .unwrap();
        // A missing env var is named.
        let e = Config::parse(&text, "t", &Environment::default())
            .unwrap()
            .keys
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("MERCHANT_KEY is not set"), "{e}");
    }

    #[test]
    fn private_key_files_open_to_others_are_refused_and_group_access_warns() {
        let dir = tempfile::tempdir().unwrap();
        let private = test_key("merchant_private.b64");
        let public = dir.path().join("pub.pem");
        std::fs::write(&public, test_key("gateway_public.pem")).unwrap();
        for (mode, refused, warned) in [
            (0o600, false, false),
            (0o640, false, true),
            (0o644, true, false),
            (0o606, true, false),
        ] {
            let key = write_private(dir.path(), &format!("k{mode:o}"), &private, mode);
            let text = MINIMAL
                .replace(
                    "credential:merchant-private-key",
                    &format!("file:{}", key.display()),
                )
                .replace(
                    "file:/etc/checus-reconciler/gateway-public.key",
                    &format!("file:{}", public.display()),
                );
            let result = parse(&text).unwrap().keys.load();
            match result {
                Err(e) => {
                    assert!(refused, "mode {mode:o} refused: {e}");
                    let e = e.to_string();
                    assert!(
                        e.contains("chmod 600") && e.contains(&key.display().to_string()),
                        "{e}"
                    );
                }
                Ok(keys) => {
                    assert!(!refused, "mode {mode:o} accepted");
                    assert_eq!(
                        !keys.warnings.is_empty(),
                        warned,
                        "mode {mode:o}: {:?}",
                        keys.warnings
                    );
                }
            }
        }
    }

    #[test]
    fn pkcs1_private_keys_are_accepted_with_a_warning_and_public_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A committed fixture (made by `openssl rsa -traditional`), so no tool is needed here.
        let pkcs1 = test_key("merchant_private_pkcs1.pem");
        assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
        let public = dir.path().join("pub.pem");
        std::fs::write(&public, test_key("gateway_public.pem")).unwrap();
        let load = |private_text: &str| {
            let key = write_private(dir.path(), "k", private_text, 0o600);
            let text = MINIMAL
                .replace(
                    "credential:merchant-private-key",
                    &format!("file:{}", key.display()),
                )
                .replace(
                    "file:/etc/checus-reconciler/gateway-public.key",
                    &format!("file:{}", public.display()),
                );
            parse(&text).unwrap().keys.load()
        };
        let keys = load(&pkcs1).unwrap();
        assert!(
            keys.warnings.iter().any(|w| w.contains("PKCS#1")),
            "{:?}",
            keys.warnings
        );
        let e = load(&test_key("merchant_public.b64"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("keys.merchant_private_key:") && e.contains("public key"),
            "{e}"
        );
    }
}
