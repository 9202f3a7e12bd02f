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
//!
//! Every duration, rate and count has a documented range ([`Bounds`], README "Configuration"),
//! checked here after the owners' own rules. The ranges are what keeps downstream arithmetic on
//! settings (`now + confirm_after`, `1 / rate_per_second` seconds) far from any overflow, so
//! the daemon needs no checked sums of its own.
//!
//! No error shows key material: a TOML syntax error is reported by line, column and known key,
//! never with the parser's snippet of the source, and any text an error would quote (a parser's
//! message, a duration, a `file:` path) is dropped or `<not shown>` when it could be a key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{DEFAULT_CLAIM_LEASE, LeaseTerms, NodeName, Policy, Schedule};
use crate::gateway::{GatewaySettings, SettingsError, ValidGatewaySettings};
use crate::ledger::{LedgerTarget, PostgresTarget};

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
        /// One line naming the line and column or the key, and what is wrong; never the
        /// source text, and any quoted value that could be a key is `<not shown>`.
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
    /// A value an environment override set that the configuration refuses: the message names
    /// the variable (the file never held the value); the source says what is wrong with it.
    #[error("environment variable {var}")]
    FromEnv {
        /// The `CHECUS_RECONCILER__*` variable that set the refused value.
        var: String,
        /// The refusal of the value, naming its key.
        #[source]
        source: Box<ConfigError>,
    },
    /// A value that parsed but is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `worker.concurrency`.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// `ledger.ca_file` names a file that cannot serve as the PostgreSQL server's roots. The
    /// message is the key and the file (unless the value looks like a pasted key); why is the
    /// source.
    #[error("ledger.ca_file: {}", shown_path(path))]
    CaFile {
        /// The file it names.
        path: PathBuf,
        /// Why it cannot serve.
        #[source]
        source: crate::ledger::CaFileError,
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
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The dotted key a value refusal names (`worker.concurrency`), if it names one.
    fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } | Self::Gateway { key, .. } => Some(key),
            Self::CaFile { .. } => Some("ledger.ca_file"),
            _ => None,
        }
    }

    /// Puts the blame on the environment variable that set the refused value, when one did:
    /// the operator looks for the value where the message says it is.
    fn blame(self, overrides: &Overrides) -> Self {
        match self {
            Self::Parse { origin, message } => match overrides.culprit_of_parse_error(&message) {
                Some(var) => Self::Env {
                    var: var.to_owned(),
                    reason: message,
                },
                None => Self::Parse { origin, message },
            },
            e => match e.key().and_then(|k| overrides.var_for(k)) {
                Some(var) => Self::FromEnv {
                    var: var.to_owned(),
                    source: Box::new(e),
                },
                None => e,
            },
        }
    }
}

/// The validated configuration of a daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger: `ledger.path` (an SQLite file) or `ledger.url` (PostgreSQL).
    pub ledger: LedgerTarget,
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
    /// The daemon's HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub http: HttpSettings,
    /// Outgoing webhooks (`[webhook]`); `None` when the section is absent: events are still
    /// written to the ledger's outbox, and delivered once a `[webhook]` is configured.
    pub webhook: Option<WebhookSettings>,
}

/// The `[http]` section: where the daemon serves `/metrics`, `/healthz`, `/readyz` and the
/// Checus refund notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The address and port to listen on; `None` (the key absent): no listener at all.
    /// Loopback is the intended use: anything else goes behind the operator's TLS proxy.
    pub listen: Option<std::net::SocketAddr>,
    /// Where the refunds API's bearer token comes from (`file:`, `env:` or `credential:`,
    /// like the keys); `None`: the `/v1/refunds` API is off. Loaded by [`Config::load_keys`].
    pub api_token: Option<KeySource>,
    /// The path Checus POSTs refund result notifications to ([`DEFAULT_NOTIFY_PATH`]).
    pub notify_path: String,
}

/// `http.notify_path`'s default.
pub const DEFAULT_NOTIFY_PATH: &str = "/checus/refund-notify";

/// Paths the listener serves itself, which `http.notify_path` may not take.
const RESERVED_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: None,
            api_token: None,
            notify_path: DEFAULT_NOTIFY_PATH.to_owned(),
        }
    }
}

/// Where and how the daemon delivers webhook events (README "Webhooks").
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// The receiver: `https://`, or `http://` to a loopback address only.
    pub url: url::Url,
    /// The HMAC secret's source (loaded by [`KeySources::load`] into
    /// [`LoadedKeys::webhook_secret`]; its material is never kept here).
    pub secret: KeySource,
    /// The whole request's timeout (connect included).
    pub timeout: std::time::Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// When to retry a failed delivery, and when to give up.
    pub retry: crate::domain::webhook::RetryPolicy,
}

impl WebhookSettings {
    /// The URL as logs show it: scheme, host, port and path, never a query string or
    /// fragment (a receiver may take a token there).
    pub fn shown_url(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.to_string()
    }
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
    /// The name this daemon works under (`worker.node_name`, by default the host name): on
    /// its sweeps, attempts and claim leases, and its row in the ledger's `nodes`.
    pub node_name: NodeName,
    /// The host name as read at start-up (the `nodes` row's `host`).
    pub host: String,
    /// How long a claim holds its refunds (`worker.claim_lease`): at least twice what one
    /// refund's work may take (see [`LeaseTerms::least_lease`]).
    pub claim_lease: Duration,
}

impl Default for WorkerSettings {
    /// The documented defaults (`examples/config.toml`): a safety-net sweep every 30 s, 8
    /// queries in flight, 5 queries/s (well under what Checus tolerates), 500 refunds per sweep,
    /// 10 s to drain, which leaves margin under the unit's `TimeoutStopSec=30s`, and claim
    /// leases of [`DEFAULT_CLAIM_LEASE`]. The node name's default is the host name, read when
    /// the config is loaded ([`Environment::capture`]); without one, as here, `localhost`.
    fn default() -> Self {
        Self {
            sweep_cron: "*/30 * * * * *".to_owned(),
            concurrency: 8,
            rate_per_second: 5.0,
            batch_size: 500,
            shutdown_deadline: Duration::from_secs(10),
            node_name: NodeName::parse(FALLBACK_HOST).expect("a valid node name"),
            host: FALLBACK_HOST.to_owned(),
            claim_lease: DEFAULT_CLAIM_LEASE,
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
            Self::File(p) => write!(f, "file:{}", shown_path(p)),
            Self::Env { var, .. } => write!(f, "env:{}", shown_path(Path::new(var))),
            Self::Credential { name, .. } => {
                write!(f, "credential:{}", shown_path(Path::new(name)))
            }
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
    /// `webhook.secret`, when a `[webhook]` is configured.
    pub webhook_secret: Option<KeySource>,
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
    #[serde(default)]
    http: RawHttp,
    webhook: Option<RawWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    api_token: Option<String>,
    notify_path: Option<String>,
}

impl RawHttp {
    /// An IP address and port; a host name is refused (the listener binds one address, and
    /// a name could resolve to several or to none at start-up).
    fn validate(self, env: &Environment) -> Result<HttpSettings, ConfigError> {
        let api_token = self
            .api_token
            .map(|t| key_source("http.api_token", &t, env))
            .transpose()?;
        let notify_path = match self.notify_path {
            None => DEFAULT_NOTIFY_PATH.to_owned(),
            Some(path) => validate_notify_path(&path)?,
        };
        let Some(text) = self.listen else {
            return Ok(HttpSettings {
                listen: None,
                api_token,
                notify_path,
            });
        };
        let listen = text.trim().parse::<std::net::SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "http.listen",
                format!(
                    "{:?} is not an IP address and port (e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"); \
                     leave the key out for no listener",
                    redact(&text)
                ),
            )
        })?;
        Ok(HttpSettings {
            listen: Some(listen),
            api_token,
            notify_path,
        })
    }
}

/// `http.notify_path`: an absolute URL path of plain segments (letters, digits, `-`, `_`,
/// `.`, `~`), not one the listener already serves. No query, no `{..}` (axum would read a
/// segment as a parameter), no trailing `/`.
fn validate_notify_path(path: &str) -> Result<String, ConfigError> {
    let segments_ok = path.strip_prefix('/').is_some_and(|rest| {
        !rest.is_empty()
            && rest.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            })
    });
    if !segments_ok || path.len() > 200 {
        return Err(ConfigError::invalid(
            "http.notify_path",
            format!(
                "{:?} is not a URL path like \"{DEFAULT_NOTIFY_PATH}\" (a leading /, segments \
                 of letters, digits, -, _, . and ~, no trailing /)",
                redact(path)
            ),
        ));
    }
    // The refunds API owns /v1/refunds and every path below it.
    if RESERVED_PATHS.contains(&path) || path == "/v1/refunds" || path.starts_with("/v1/refunds/") {
        return Err(ConfigError::invalid(
            "http.notify_path",
            format!("{path} is served by the listener itself; choose another path"),
        ));
    }
    Ok(path.to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: String,
    #[serde(default = "d_webhook_timeout")]
    timeout: String,
    #[serde(default = "d_webhook_concurrency")]
    concurrency: usize,
    #[serde(default = "d_webhook_retry_first")]
    retry_first: String,
    #[serde(default = "d_webhook_retry_max")]
    retry_max: String,
    #[serde(default = "d_webhook_give_up_after")]
    give_up_after: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    path: Option<PathBuf>,
    url: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
}

impl RawLedger {
    /// Exactly one of `ledger.path` (SQLite) and `ledger.url` (PostgreSQL). A URL must be a
    /// `postgres://` or `postgresql://` one that `postgres::Config` parses, with no password
    /// in it: a password comes from `ledger.password` (`file:`, `env:` or `credential:`, like
    /// the keys), so it never sits in the config file, a log line or `check-config`'s output.
    fn validate(self, env: &Environment) -> Result<LedgerTarget, ConfigError> {
        match (self.path, self.url) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "ledger.path",
                "ledger.path (SQLite) and ledger.url (PostgreSQL) are both set; keep one",
            )),
            (None, None) => Err(ConfigError::invalid(
                "ledger.path",
                "missing: set ledger.path (an SQLite file) or ledger.url (PostgreSQL)",
            )),
            (Some(path), None) => {
                if path.as_os_str().is_empty() {
                    return Err(ConfigError::invalid("ledger.path", "is empty"));
                }
                if self.password.is_some() {
                    return Err(ConfigError::invalid(
                        "ledger.password",
                        "is for ledger.url (PostgreSQL); an SQLite ledger has no password",
                    ));
                }
                if self.ca_file.is_some() {
                    return Err(ConfigError::invalid(
                        "ledger.ca_file",
                        "is for ledger.url (PostgreSQL); an SQLite ledger has no TLS",
                    ));
                }
                Ok(LedgerTarget::Sqlite(path))
            }
            (None, Some(url)) => {
                let parsed = postgres_url(&url)?;
                let password = self
                    .password
                    .map(|p| key_source("ledger.password", &p, env))
                    .transpose()?;
                let ca_file = self.ca_file.map(|p| ca_file(p, &parsed)).transpose()?;
                Ok(LedgerTarget::Postgres(PostgresTarget {
                    url,
                    password,
                    ca_file,
                }))
            }
        }
    }
}

/// Checks `ledger.ca_file`: a file of PEM certificates that can serve as roots (read now, so
/// a wrong path or file stops the start naming the key), for a URL that may use TLS.
fn ca_file(path: PathBuf, url: &postgres::Config) -> Result<PathBuf, ConfigError> {
    const KEY: &str = "ledger.ca_file";
    if path.as_os_str().is_empty() {
        return Err(ConfigError::invalid(KEY, "is empty"));
    }
    if url.get_ssl_mode() == postgres::config::SslMode::Disable {
        return Err(ConfigError::invalid(
            KEY,
            "ledger.url says sslmode=disable, so no certificate is ever checked; remove one of \
             the two",
        ));
    }
    match crate::ledger::read_ca_file(&path) {
        Ok(_) => Ok(path),
        Err(source) => Err(ConfigError::CaFile { path, source }),
    }
}

/// Checks `ledger.url`: the scheme, what `postgres::Config` makes of it, and no password;
/// returns what it parsed to. The error never repeats the URL (it could hold a password).
fn postgres_url(url: &str) -> Result<postgres::Config, ConfigError> {
    const KEY: &str = "ledger.url";
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return Err(ConfigError::invalid(
            KEY,
            "expected postgres://user@host:port/database (or postgresql://)",
        ));
    }
    let parsed: postgres::Config = url.parse().map_err(|e: postgres::Error| {
        ConfigError::invalid(KEY, format!("is not a PostgreSQL URL: {e}"))
    })?;
    if parsed.get_password().is_some() {
        return Err(ConfigError::invalid(
            KEY,
            "holds a password; remove it and set ledger.password = \"credential:NAME\" (or \
             file:/path, env:VARIABLE) instead, so it is never in the config file",
        ));
    }
    if parsed.get_user().is_none() {
        return Err(ConfigError::invalid(
            KEY,
            "names no user; write postgres://USER@host:port/database",
        ));
    }
    if parsed.get_dbname().is_none() {
        return Err(ConfigError::invalid(
            KEY,
            "names no database; write postgres://user@host:port/DATABASE",
        ));
    }
    Ok(parsed)
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
    #[serde(default = "default_naive_time_offset")]
    naive_time_offset: String,
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
    #[serde(default = "d_halt_after_rejected")]
    halt_after_rejected_refunds: usize,
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
    /// Absent: the host name.
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default = "d_claim_lease")]
    claim_lease: String,
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
fn default_naive_time_offset() -> String {
    crate::gateway::DEFAULT_NAIVE_TIME_OFFSET.to_owned()
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
fn d_halt_after_rejected() -> usize {
    Policy::default().halt_after_rejected_refunds
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
fn d_claim_lease() -> String {
    fmt_d(WorkerSettings::default().claim_lease)
}
fn d_webhook_timeout() -> String {
    fmt_d(DEFAULT_WEBHOOK_TIMEOUT)
}
fn d_webhook_concurrency() -> usize {
    DEFAULT_WEBHOOK_CONCURRENCY
}
fn d_webhook_retry_first() -> String {
    fmt_d(crate::domain::webhook::RetryPolicy::default().first)
}
fn d_webhook_retry_max() -> String {
    fmt_d(crate::domain::webhook::RetryPolicy::default().max)
}
fn d_webhook_give_up_after() -> String {
    fmt_d(crate::domain::webhook::RetryPolicy::default().give_up_after)
}

/// `webhook.timeout`'s default: a receiver that has not answered in 10 s is retried later.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// `webhook.concurrency`'s default: deliveries in flight at once (each to a different refund).
pub const DEFAULT_WEBHOOK_CONCURRENCY: usize = 4;
/// The shortest `webhook.secret` accepted, in bytes (an HMAC key shorter than this is
/// guessable; `openssl rand -hex 32` makes a 64-character one).
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;

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
            halt_after_rejected_refunds: d_halt_after_rejected(),
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
            node_name: None,
            claim_lease: d_claim_lease(),
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
#[derive(Clone)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    /// The host name (`None`: it could not be read): `worker.node_name`'s default and the
    /// `nodes` row's host.
    hostname: Option<String>,
}

impl fmt::Debug for Environment {
    /// The variable names only: a value can be a key (`env:MERCHANT_KEY`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Default for Environment {
    /// No variables, on a host named `localhost`.
    fn default() -> Self {
        Self {
            vars: BTreeMap::new(),
            hostname: Some(FALLBACK_HOST.to_owned()),
        }
    }
}

impl Environment {
    /// Captures the real environment.
    pub fn capture() -> Self {
        Self {
            vars: std::env::vars().collect(),
            hostname: read_hostname(),
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
            hostname: Some(FALLBACK_HOST.to_owned()),
        }
    }

    /// The same environment on a host named `hostname` (`None`: one whose name cannot be
    /// read), for tests.
    pub fn with_hostname(mut self, hostname: Option<&str>) -> Self {
        self.hostname = hostname.map(str::to_owned);
        self
    }

    /// The host name, when it could be read.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// One variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// The host name the kernel reports (what `hostname` prints), trimmed; `None` when it cannot
/// be read or is empty. Linux: `/proc/sys/kernel/hostname`, read once at start-up.
fn read_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The host name of an environment that names none (tests, [`WorkerSettings::default`]).
const FALLBACK_HOST: &str = "localhost";

impl Config {
    /// Reads, overrides and validates the config file at `path`.
    pub fn load(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        // A FIFO, a device or a huge file named as the config is refused, not read for ever.
        let text = std::fs::metadata(path)
            .map_err(FileRefusal::Io)
            .and_then(|meta| check_regular(&meta, MAX_CONFIG_FILE_BYTES))
            .and_then(|()| read_capped(path, MAX_CONFIG_FILE_BYTES))
            .map_err(|refusal| ConfigError::Read {
                path: path.to_owned(),
                source: refusal.into_io(),
            })?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Parses config text. `origin` names the text in errors (usually the file path).
    pub fn parse(text: &str, origin: &str, env: &Environment) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: syntax_message(text, &e),
        })?;
        let overrides = apply_env_overrides(&mut table, env)?;
        // A type error quotes the value (`invalid type: string "…"`): redacted, in case the
        // value is a key pasted into the wrong field.
        let raw: RawConfig = RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Parse {
                origin: origin.to_owned(),
                message: one_line(&redact(&e.to_string())),
            }
            .blame(&overrides)
        })?;
        raw.validate(env).map_err(|e| e.blame(&overrides))
    }
}

/// Which environment variable set which dotted key (`worker.concurrency`), so that an error
/// about a value names the variable it came from rather than the file.
#[derive(Debug, Default)]
struct Overrides {
    /// `(dotted key, variable)`, in the order applied.
    set: Vec<(String, String)>,
}

impl Overrides {
    /// The variable that set `key`, if one did.
    fn var_for(&self, key: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, var)| var.as_str())
    }

    /// The variable a deserialization error is about. toml names the path of the value at
    /// fault in a trailing ``in `section.key` `` (absent at the top level), and an unknown
    /// key's name in ``unknown field `name` ``: an override is to blame when its key is that
    /// path, or the unknown name under it (an unknown section is blamed on its first variable).
    fn culprit_of_parse_error(&self, message: &str) -> Option<&str> {
        let path = message
            .rsplit_once(" in `")
            .and_then(|(_, rest)| rest.strip_suffix('`'))
            .unwrap_or("");
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name);
        let blamed = |key: &str| match (path, unknown) {
            ("", Some(name)) => key.split('.').next() == Some(name),
            (path, Some(name)) => key == format!("{path}.{name}"),
            (path, None) => key == path,
        };
        self.set
            .iter()
            .find(|(key, _)| blamed(key))
            .map(|(_, var)| var.as_str())
    }
}

/// `CHECUS_RECONCILER__SECTION__KEY=value` sets `section.key`. Values parse as TOML when they
/// can (numbers, arrays), else they are taken as strings. Returns which variable set which key.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &Environment,
) -> Result<Overrides, ConfigError> {
    let mut overrides = Overrides::default();
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
        overrides
            .set
            .push((format!("{section}.{key}"), var.clone()));
        section_table.insert(key, parsed);
    }
    Ok(overrides)
}

/// The longest duration any setting or command-line argument may name: 100 years. Every
/// setting has a narrower range of its own ([`Bounds`]); this cap keeps the parser's own
/// arithmetic and a CLI cutoff like `--since 36500d` far inside what chrono and the OS clock
/// can add to "now".
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * DAY_SECS);

const DAY_SECS: u64 = 86_400;

/// What every duration error ends with: the units, and how they are written.
pub const DURATION_UNITS: &str =
    "valid units are ms, s, m, h and d, right after the number (500ms, 30s, 10m, 1h30m, 2d)";

/// Parses `500ms`, `30s`, `10m`, `1h`, `2d` and sums like `1h30m`, up to [`MAX_DURATION`].
/// The arithmetic is checked: a number or a sum past the cap is refused, never wrapped. Every
/// refusal lists the valid units, and suggests the spelling meant when it can (`"5 minutes"`:
/// did you mean `"5m"`?).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let not_a_duration = |why: &str| {
        let hint = suggest_duration(text)
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        format!("{text:?} is not a duration{hint}: {why}; {DURATION_UNITS}")
    };
    let mut total_ms: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("empty duration; {DURATION_UNITS}"));
    }
    let too_long = || {
        format!(
            "{text:?} is longer than {} (the longest duration accepted)",
            fmt_human(MAX_DURATION)
        )
    };
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(not_a_duration("each part starts with a whole number"));
        }
        // Too many digits for a u64 is too long a duration, not a different kind of error.
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some(unit_ms) = unit_millis(unit) else {
            let why = match unit {
                "" if rest.starts_with(char::is_whitespace) => "no space before the unit".into(),
                "" => format!("the number {n} has no unit"),
                other => format!("unknown unit {other:?}"),
            };
            return Err(not_a_duration(&why));
        };
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|part| total_ms.checked_add(part))
            .filter(|&ms| u128::from(ms) <= MAX_DURATION.as_millis())
            .ok_or_else(too_long)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Milliseconds in one `unit`, for the units a duration may use.
fn unit_millis(unit: &str) -> Option<u64> {
    match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        "d" => Some(DAY_SECS * 1_000),
        _ => None,
    }
}

/// The duration `text` probably meant, written as the parser wants it: `"5 minutes"` ->
/// `"5m"`, `"1 hour 30 min"` -> `"1h30m"`, `"10 Sec"` -> `"10s"`. `None` when there is no
/// reading of it as whole numbers with unit words.
fn suggest_duration(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        out.push_str(&rest[..digits]);
        rest = rest[digits..].trim_start();
        let word_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let word = rest[..word_len].to_ascii_lowercase();
        rest = rest[word_len..].trim_start_matches([' ', ',']);
        out.push_str(match word.as_str() {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => "ms",
            "s" | "sec" | "secs" | "second" | "seconds" => "s",
            "m" | "min" | "mins" | "minute" | "minutes" => "m",
            "h" | "hr" | "hrs" | "hour" | "hours" => "h",
            "d" | "day" | "days" => "d",
            _ => return None,
        });
    }
    // Only a suggestion that is itself valid (and not the text as given) helps.
    (out != text && parse_duration(&out).is_ok()).then_some(out)
}

/// A duration as the docs write it, in the largest unit that divides it: `90s`, `10m`, `7d`.
pub fn fmt_human(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The documented range of one setting: its dotted key and the least and most it accepts.
/// Every duration, rate and count in the config has one (README "Ranges"); the ranges are
/// what keeps a sum like "now + confirm_after" or a rate's `1 / rate` seconds from
/// overflowing anywhere downstream.
#[derive(Debug, Clone, Copy)]
pub struct Bounds<T> {
    /// The dotted key, e.g. `schedule.confirm_after`.
    pub key: &'static str,
    /// The least value accepted.
    pub least: T,
    /// The most value accepted.
    pub most: T,
}

const MS: Duration = Duration::from_millis(1);
const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}
const fn days(n: u64) -> Duration {
    Duration::from_secs(n * DAY_SECS)
}

/// The range of every duration setting, in the order of `examples/config.toml`.
pub const DURATION_BOUNDS: [Bounds<Duration>; 12] = [
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    GRACE,
    BACKOFF_STEP,
    STEADY,
    RETRY,
    PENDING_FLAG_AFTER,
    UNKNOWN_FLAG_AFTER,
    HALT_RECHECK,
    CONFIRM_AFTER,
    SHUTDOWN_DEADLINE,
    CLAIM_LEASE,
];
const CONNECT_TIMEOUT: Bounds<Duration> = Bounds::d("gateway.connect_timeout", MS, mins(5));
const REQUEST_TIMEOUT: Bounds<Duration> = Bounds::d("gateway.request_timeout", MS, mins(10));
const GRACE: Bounds<Duration> = Bounds::d("schedule.grace", Duration::ZERO, days(7));
const BACKOFF_STEP: Bounds<Duration> = Bounds::d("schedule.backoff", MS, days(30));
const STEADY: Bounds<Duration> = Bounds::d("schedule.steady", MS, days(30));
const RETRY: Bounds<Duration> = Bounds::d("schedule.retry", MS, days(1));
const PENDING_FLAG_AFTER: Bounds<Duration> =
    Bounds::d("schedule.pending_flag_after", MS, days(365));
const UNKNOWN_FLAG_AFTER: Bounds<Duration> =
    Bounds::d("schedule.unknown_flag_after", MS, days(365));
const HALT_RECHECK: Bounds<Duration> = Bounds::d("schedule.halt_recheck", MS, days(1));
const CONFIRM_AFTER: Bounds<Duration> =
    Bounds::d("schedule.confirm_after", Duration::ZERO, days(30));
const SHUTDOWN_DEADLINE: Bounds<Duration> = Bounds::d("worker.shutdown_deadline", MS, mins(10));
const CLAIM_LEASE: Bounds<Duration> =
    Bounds::d("worker.claim_lease", Duration::from_secs(2), days(1));

/// The range of every count setting.
pub const COUNT_BOUNDS: [Bounds<usize>; 5] = [
    MAX_RESPONSE_BYTES,
    BACKOFF_STEPS,
    HALT_AFTER_REJECTED_REFUNDS,
    CONCURRENCY,
    BATCH,
];
const MAX_RESPONSE_BYTES: Bounds<usize> = Bounds {
    key: "gateway.max_response_bytes",
    least: crate::gateway::MIN_RESPONSE_BYTES,
    most: 64 << 20,
};
const BACKOFF_STEPS: Bounds<usize> = Bounds {
    key: "schedule.backoff",
    least: 1,
    most: 100,
};
// 1 halts at the first per-refund code (the behaviour before issue 11); past 100 a systematic
// PARAMS_INVALID would flag a hundred refunds before anything stops.
const HALT_AFTER_REJECTED_REFUNDS: Bounds<usize> = Bounds {
    key: "schedule.halt_after_rejected_refunds",
    least: 1,
    most: 100,
};
const CONCURRENCY: Bounds<usize> = Bounds {
    key: "worker.concurrency",
    least: 1,
    most: 1024,
};
const BATCH: Bounds<usize> = Bounds {
    key: "worker.batch_size",
    least: 1,
    most: 100_000,
};

/// The range of every `[webhook]` duration and count (README "Webhooks"). Kept apart from
/// [`DURATION_BOUNDS`] because the example config shows the section commented out.
pub const WEBHOOK_DURATION_BOUNDS: [Bounds<Duration>; 4] = [
    WEBHOOK_TIMEOUT,
    WEBHOOK_RETRY_FIRST,
    WEBHOOK_RETRY_MAX,
    WEBHOOK_GIVE_UP_AFTER,
];
const WEBHOOK_TIMEOUT: Bounds<Duration> = Bounds::d("webhook.timeout", MS, mins(5));
const WEBHOOK_RETRY_FIRST: Bounds<Duration> = Bounds::d("webhook.retry_first", MS, days(1));
const WEBHOOK_RETRY_MAX: Bounds<Duration> = Bounds::d("webhook.retry_max", MS, days(1));
const WEBHOOK_GIVE_UP_AFTER: Bounds<Duration> = Bounds::d("webhook.give_up_after", MS, days(30));
/// `webhook.concurrency`'s range.
pub const WEBHOOK_CONCURRENCY: Bounds<usize> = Bounds {
    key: "webhook.concurrency",
    least: 1,
    most: 64,
};

/// The range of every fractional setting.
pub const RATE_BOUNDS: [Bounds<f64>; 2] = [JITTER, RATE];
const JITTER: Bounds<f64> = Bounds {
    key: "schedule.jitter",
    least: 0.0,
    most: 0.5,
};
// 0.01/s is one query every 100 s; 100,000/s is what the benchmark drives the sandbox at.
const RATE: Bounds<f64> = Bounds {
    key: "worker.rate_per_second",
    least: 0.01,
    most: 100_000.0,
};

impl Bounds<Duration> {
    const fn d(key: &'static str, least: Duration, most: Duration) -> Self {
        Self { key, least, most }
    }

    /// Parses `text` and checks it is in range; the error names the key.
    fn parse(&self, text: &str) -> Result<Duration, ConfigError> {
        let d = parse_duration(text).map_err(|reason| {
            ConfigError::invalid(self.key, format!("{}; {}", redact(&reason), self.range()))
        })?;
        self.check(d)
    }

    /// Checks an already-parsed duration.
    fn check(&self, d: Duration) -> Result<Duration, ConfigError> {
        if d < self.least || d > self.most {
            return Err(ConfigError::invalid(
                self.key,
                format!("{} is out of range: {}", fmt_human(d), self.range()),
            ));
        }
        Ok(d)
    }

    /// `from 1ms to 30d`, as errors and the README say it.
    pub fn range(&self) -> String {
        format!("from {} to {}", fmt_human(self.least), fmt_human(self.most))
    }

    /// A clap value parser for a command-line duration in this range (exit 2 when outside).
    pub fn parse_arg(&self, text: &str) -> Result<Duration, String> {
        let d = parse_duration(text)?;
        if d < self.least || d > self.most {
            return Err(format!("{text:?} is out of range: {}", self.range()));
        }
        Ok(d)
    }
}

impl<T: PartialOrd + fmt::Display + fmt::Debug + Copy> Bounds<T> {
    /// Checks a number is in range; the error names the key. NaN is never in range.
    fn check_number(&self, value: T) -> Result<T, ConfigError> {
        // Written as "inside" rather than "outside" so NaN, which compares false, is refused.
        if value >= self.least && value <= self.most {
            return Ok(value);
        }
        Err(ConfigError::invalid(
            self.key,
            // Debug, not Display: a float prints as `1e-300`, not as 300 digits.
            format!("{value:?} is out of range: {}", self.number_range()),
        ))
    }

    /// `from 1 to 1024`.
    pub fn number_range(&self) -> String {
        format!("from {} to {}", self.least, self.most)
    }
}

/// Whether `text` could be key material: PEM armour, the `MII` every base64 DER RSA key starts
/// with, or a run of 40 or more base64 characters mixing upper case, lower case and digits (a
/// path or a word has separators long before that). Errors never echo such text.
pub fn looks_like_key_material(text: &str) -> bool {
    let t = text.trim();
    t.starts_with("MII") || t.contains("-----BEGIN") || !material_runs(t).is_empty()
}

/// The byte ranges of `text` that look like base64 key material (see
/// [`looks_like_key_material`]).
fn material_runs(text: &str) -> Vec<std::ops::Range<usize>> {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let mut runs = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (is_b64(c) && i < text.len(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let run = &text[s..i];
                let mixed = run.chars().any(|c| c.is_ascii_uppercase())
                    && run.chars().any(|c| c.is_ascii_lowercase())
                    && run.chars().any(|c| c.is_ascii_digit());
                if run.len() >= 40 && mixed {
                    runs.push(s..i);
                }
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// `text` with every run that could be key material replaced by `<not shown>`: for messages
/// that may quote a config value (a parser's, a duration's).
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for run in material_runs(text) {
        out.push_str(&text[at..run.start]);
        out.push_str("<not shown>");
        at = run.end;
    }
    out.push_str(&text[at..]);
    out
}

/// A multi-line parser message (`... expected usize\nin `worker.concurrency``) as one line.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

/// A path for an error message, unless it could be key material (a key pasted after `file:`).
fn shown_path(path: &Path) -> String {
    let text = path.display().to_string();
    if looks_like_key_material(&text) {
        "the value (not shown: it may be key material)".to_owned()
    } else {
        text
    }
}

/// Every key name the config knows, section names included. A syntax error names the key of
/// its line only when the name is one of these: anything else on that line could be a pasted
/// key. A unit test ties this list to the raw structs' fields.
const KEY_NAMES: &[&str] = &[
    "ledger",
    "path",
    "password",
    "ca_file",
    "gateway",
    "base_url",
    "app_id",
    "merchant_no",
    "version",
    "key_version",
    "connect_timeout",
    "request_timeout",
    "max_response_bytes",
    "naive_time_offset",
    "keys",
    "merchant_private_key",
    "gateway_public_key",
    "schedule",
    "grace",
    "backoff",
    "steady",
    "retry",
    "jitter",
    "pending_flag_after",
    "unknown_flag_after",
    "halt_recheck",
    "confirm_after",
    "halt_after_rejected_refunds",
    "worker",
    "sweep_cron",
    "concurrency",
    "rate_per_second",
    "batch_size",
    "shutdown_deadline",
    "node_name",
    "claim_lease",
    "log",
    "format",
    "level",
    "http",
    "listen",
    "api_token",
    "notify_path",
    "webhook",
    "url",
    "secret",
    "timeout",
    "retry_first",
    "retry_max",
    "give_up_after",
];

/// A TOML syntax error as line, column, the key of that line when it is a known one, and the
/// parser's message, never the parser's snippet of the source: the source line could be a
/// key pasted without quotes.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let mut at = e.span().map_or(0, |s| s.start.min(text.len()));
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let known = |name: &str| KEY_NAMES.contains(&name);
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| known(k))
        .map(|k| {
            // The section this line is in: the last `[name]` header above it.
            let section = before[..line_start]
                .lines()
                .rev()
                .map(str::trim)
                .find_map(|l| l.strip_prefix('[')?.strip_suffix(']'))
                .map(str::trim)
                .filter(|s| known(s));
            match section {
                Some(s) => format!(" (key {s}.{k})"),
                None => format!(" (key {k})"),
            }
        })
        .unwrap_or_default();
    format!(
        "TOML syntax error at line {line}, column {column}{key}: {}",
        redact(e.message().trim())
    )
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
            format!(
                "unknown key source {:?}; use file:, env: or credential:",
                redact(other)
            ),
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
        let ledger = self.ledger.validate(env)?;
        let gateway = self.gateway.validate()?;
        let policy = self.schedule.validate()?;
        let worker = self.worker.validate(env, gateway.request_timeout)?;
        let http = self.http.validate(env)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid("log.level", e.to_string()));
        }
        let webhook = self.webhook.map(|w| w.validate(env)).transpose()?;
        Ok(Config {
            ledger,
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
                webhook_secret: webhook.as_ref().map(|w| w.secret.clone()),
            },
            policy,
            worker,
            log: LogSettings {
                format: self.log.format,
                level: self.log.level,
            },
            http,
            webhook,
        })
    }
}

impl RawWebhook {
    /// The receiver URL (https, or http to a loopback host; no user or password, which
    /// would be logged), the secret's source and the ranges.
    fn validate(self, env: &Environment) -> Result<WebhookSettings, ConfigError> {
        const KEY: &str = "webhook.url";
        let url = url::Url::parse(self.url.trim())
            .map_err(|e| ConfigError::invalid(KEY, format!("not an absolute URL ({e})")))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => return Err(ConfigError::invalid(KEY, "has no host")),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(ConfigError::invalid(
                    KEY,
                    "http:// is allowed only to a loopback address (127.0.0.1, ::1, localhost); \
                     use https:// (the payload names refunds and amounts)",
                ));
            }
            other => {
                return Err(ConfigError::invalid(
                    KEY,
                    format!("scheme {:?} is not http or https", redact(other)),
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::invalid(
                KEY,
                "must not hold a user name or password (they would reach logs); the receiver \
                 authenticates the sender by the signature header",
            ));
        }
        let first = WEBHOOK_RETRY_FIRST.parse(&self.retry_first)?;
        let max = WEBHOOK_RETRY_MAX.parse(&self.retry_max)?;
        if max < first {
            return Err(ConfigError::invalid(
                WEBHOOK_RETRY_MAX.key,
                format!(
                    "{} is less than webhook.retry_first ({})",
                    fmt_human(max),
                    fmt_human(first)
                ),
            ));
        }
        Ok(WebhookSettings {
            url,
            secret: key_source("webhook.secret", &self.secret, env)?,
            timeout: WEBHOOK_TIMEOUT.parse(&self.timeout)?,
            concurrency: WEBHOOK_CONCURRENCY.check_number(self.concurrency)?,
            retry: crate::domain::webhook::RetryPolicy {
                first,
                max,
                give_up_after: WEBHOOK_GIVE_UP_AFTER.parse(&self.give_up_after)?,
            },
        })
    }
}

impl RawGateway {
    /// Parses the duration texts and hands everything to the settings' own rules, which are
    /// the only rules about how the values relate (a timeout above zero, connect within
    /// request): their refusal comes back typed, under its `gateway.` key. Only then are the
    /// documented ranges' upper ends checked here, so each refusal has one author.
    fn validate(self) -> Result<ValidGatewaySettings, ConfigError> {
        let parse = |key: &str, text: &str| {
            parse_duration(text).map_err(|reason| ConfigError::invalid(key, redact(&reason)))
        };
        let mut gateway = GatewaySettings::new(self.base_url, self.app_id, self.merchant_no);
        gateway.version = self.version;
        gateway.key_version = self.key_version;
        gateway.connect_timeout = parse(CONNECT_TIMEOUT.key, &self.connect_timeout)?;
        gateway.request_timeout = parse(REQUEST_TIMEOUT.key, &self.request_timeout)?;
        gateway.max_response_bytes = self.max_response_bytes;
        gateway.naive_time_offset = crate::gateway::parse_utc_offset(&self.naive_time_offset)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "gateway.naive_time_offset",
                    format!(
                        "{:?} must be a UTC offset from -14:00 to +14:00, like +08:00",
                        redact(&self.naive_time_offset)
                    ),
                )
            })?;
        let valid = gateway.validate().map_err(|source| ConfigError::Gateway {
            key: format!("gateway.{}", source.setting()),
            source,
        })?;
        CONNECT_TIMEOUT.check(valid.connect_timeout)?;
        REQUEST_TIMEOUT.check(valid.request_timeout)?;
        MAX_RESPONSE_BYTES.check_number(valid.max_response_bytes)?;
        Ok(valid)
    }
}

impl RawSchedule {
    fn validate(self) -> Result<Policy, ConfigError> {
        if self.backoff.len() < BACKOFF_STEPS.least || self.backoff.len() > BACKOFF_STEPS.most {
            return Err(ConfigError::invalid(
                BACKOFF_STEPS.key,
                format!(
                    "{} steps is out of range: {} steps",
                    self.backoff.len(),
                    BACKOFF_STEPS.number_range()
                ),
            ));
        }
        let steps = self
            .backoff
            .iter()
            .map(|t| BACKOFF_STEP.parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            schedule: Schedule {
                grace: GRACE.parse(&self.grace)?,
                steps,
                steady: STEADY.parse(&self.steady)?,
                retry: RETRY.parse(&self.retry)?,
                jitter: JITTER.check_number(self.jitter)?,
            },
            pending_flag_after: PENDING_FLAG_AFTER.parse(&self.pending_flag_after)?,
            unknown_flag_after: UNKNOWN_FLAG_AFTER.parse(&self.unknown_flag_after)?,
            halt_recheck: HALT_RECHECK.parse(&self.halt_recheck)?,
            confirm_after: CONFIRM_AFTER.parse(&self.confirm_after)?,
            halt_after_rejected_refunds: HALT_AFTER_REJECTED_REFUNDS
                .check_number(self.halt_after_rejected_refunds)?,
        })
    }
}

impl RawWorker {
    /// Validates `[worker]`; the claim lease against the gateway's `request_timeout`.
    fn validate(
        self,
        env: &Environment,
        request_timeout: Duration,
    ) -> Result<WorkerSettings, ConfigError> {
        validate_cron("worker.sweep_cron", &self.sweep_cron)?;
        let host = env.hostname().unwrap_or(FALLBACK_HOST).to_owned();
        Ok(WorkerSettings {
            sweep_cron: self.sweep_cron,
            concurrency: CONCURRENCY.check_number(self.concurrency)?,
            rate_per_second: RATE.check_number(self.rate_per_second)?,
            batch_size: BATCH.check_number(self.batch_size)?,
            shutdown_deadline: SHUTDOWN_DEADLINE.parse(&self.shutdown_deadline)?,
            node_name: node_name(self.node_name.as_deref(), env.hostname())?,
            host,
            claim_lease: claim_lease(&self.claim_lease, request_timeout)?,
        })
    }
}

/// `worker.node_name`, or the host name when it is not set; a bad value (or a host name that
/// is not a valid node name) is refused naming the key.
fn node_name(set: Option<&str>, hostname: Option<&str>) -> Result<NodeName, ConfigError> {
    const KEY: &str = "worker.node_name";
    match (set, hostname) {
        (Some(name), _) => {
            NodeName::parse_as(KEY, name).map_err(|e| ConfigError::invalid(KEY, e.reason))
        }
        (None, Some(host)) => NodeName::parse_as(KEY, host).map_err(|e| {
            ConfigError::invalid(
                KEY,
                format!(
                    "not set, and the host name is not a node name ({}); set worker.node_name",
                    e.reason
                ),
            )
        }),
        (None, None) => Err(ConfigError::invalid(
            KEY,
            "not set, and the host name could not be read; set worker.node_name",
        )),
    }
}

/// `worker.claim_lease`: in range, and at least twice what one refund's work may take at
/// `request_timeout` (two queries and the commit window), so a claimed refund has as long to
/// wait for its turn as its query has to run.
fn claim_lease(text: &str, request_timeout: Duration) -> Result<Duration, ConfigError> {
    let lease = CLAIM_LEASE.parse(text)?;
    let window = crate::worker::commit::GATHER_WINDOW;
    let query = crate::gateway::query_timeout(request_timeout);
    let least = LeaseTerms::least_lease(query, window);
    if lease < least {
        return Err(ConfigError::invalid(
            CLAIM_LEASE.key,
            format!(
                "{} is too short: once queried, a claimed refund may take two queries of \
                 gateway.request_timeout and a margin ({} each) plus the {} commit window, and \
                 the lease must be at least twice that: {} or more",
                fmt_human(lease),
                fmt_human(query),
                fmt_human(window),
                fmt_human(least)
            ),
        ));
    }
    Ok(lease)
}

/// The keys and the secrets (webhook secret, API token), parsed once.
#[derive(Debug, Clone)]
pub struct LoadedKeys {
    /// Signs requests.
    pub merchant: std::sync::Arc<crate::gateway::MerchantKey>,
    /// Verifies answers.
    pub gateway: std::sync::Arc<crate::gateway::GatewayKey>,
    /// `webhook.secret`, when a `[webhook]` is configured.
    pub webhook_secret: Option<std::sync::Arc<WebhookSecret>>,
    /// Things worth a warning at start-up (a converted key format, loose file permissions).
    pub warnings: Vec<String>,
    /// The refunds API's bearer token (`http.api_token`); `None`: the API is off.
    pub api_token: Option<std::sync::Arc<crate::http::ApiToken>>,
}

/// The webhook HMAC secret: the bytes of `webhook.secret`'s text, surrounding whitespace
/// (a file's final newline) removed. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// The secret from its text, refused when shorter than [`MIN_WEBHOOK_SECRET_BYTES`]
    /// (the reason never quotes it).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() < MIN_WEBHOOK_SECRET_BYTES {
            return Err(format!(
                "the secret is {} bytes; at least {MIN_WEBHOOK_SECRET_BYTES} are needed \
                 (e.g. openssl rand -hex 32)",
                t.len()
            ));
        }
        Ok(Self(t.as_bytes().to_vec()))
    }

    /// The key bytes, for the HMAC.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<not shown>)")
    }
}

impl KeySource {
    /// Reads a secret that is not a key (`ledger.password`): the text with one trailing
    /// newline removed (a file written by `echo`). Errors name `key` and never hold the value.
    pub fn read_secret(&self, key: &str) -> Result<String, ConfigError> {
        let mut warnings = Vec::new();
        let mut text = self.read(key, true, &mut warnings)?;
        for w in warnings {
            tracing::warn!(key, warning = %w, "secret file accepted with a warning");
        }
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(text)
    }

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
                    ConfigError::invalid(
                        key,
                        format!(
                            "environment variable {} is not set",
                            shown_path(Path::new(var))
                        ),
                    )
                });
            }
            Self::File(path) => path.clone(),
            Self::Credential { name, dir } => {
                let dir = dir.as_ref().ok_or_else(|| {
                    ConfigError::invalid(
                        key,
                        format!(
                            "credential:{} needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=)",
                            shown_path(Path::new(name))
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
        read_key_file(key, &path, private, warnings)
    }
}

/// The largest key file accepted. An RSA-4096 private key in PEM is about 3.3 KiB; anything
/// far larger is the wrong file, and reading it whole would only cost memory.
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The largest config file accepted (the annotated example is under 4 KiB).
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Why a file that must be small regular text (a config or key file) was not read.
#[derive(Debug, thiserror::Error)]
enum FileRefusal {
    /// A directory, FIFO, device or socket: refused before it is opened, so nothing blocks.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// Over the cap (its size, the cap).
    #[error("is {0} bytes; the file may be at most {1} bytes")]
    TooBig(u64, u64),
    /// Not UTF-8 text.
    #[error("is not UTF-8 text")]
    NotText,
    /// The I/O error itself (missing, permission denied).
    #[error(transparent)]
    Io(std::io::Error),
}

impl FileRefusal {
    /// As an I/O error, for [`ConfigError::Read`]'s source: the I/O error itself when it is one.
    fn into_io(self) -> std::io::Error {
        match self {
            Self::Io(e) => e,
            other => std::io::Error::other(other),
        }
    }
}

/// Refuses anything but a regular file of at most `cap` bytes, from its metadata alone.
fn check_regular(meta: &std::fs::Metadata, cap: u64) -> Result<(), FileRefusal> {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if meta.len() > cap {
        return Err(FileRefusal::TooBig(meta.len(), cap));
    } else {
        return Ok(());
    };
    Err(FileRefusal::NotRegular(what))
}

/// Reads at most `cap` bytes of text. The type was checked first by [`check_regular`]; a file
/// swapped for a FIFO in between would need the directory's owner, who can do worse. The read
/// is capped anyway, so a file that grew (or a /proc-style file of size 0) stays bounded.
fn read_capped(path: &Path, cap: u64) -> Result<String, FileRefusal> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
        .map_err(FileRefusal::Io)?;
    if bytes.len() as u64 > cap {
        return Err(FileRefusal::TooBig(bytes.len() as u64, cap));
    }
    String::from_utf8(bytes).map_err(|_| FileRefusal::NotText)
}

/// Reads one key file: a regular file of at most [`MAX_KEY_FILE_BYTES`] (see
/// [`check_regular`]), and for a private key not accessible to other users. Errors name the
/// file unless its name could be key material.
fn read_key_file(
    key: &str,
    path: &Path,
    private: bool,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = shown_path(path);
    let meta = std::fs::metadata(path).map_err(|e| {
        if looks_like_key_material(&path.display().to_string()) {
            ConfigError::invalid(
                key,
                "the value is not a readable file path (not shown: it may be key material)",
            )
        } else {
            ConfigError::invalid(key, format!("cannot read {shown}: {e}"))
        }
    })?;
    let refused = |r: FileRefusal| match r {
        FileRefusal::Io(e) => ConfigError::invalid(key, format!("cannot read {shown}: {e}")),
        other => ConfigError::invalid(key, format!("{shown} {other}")),
    };
    check_regular(&meta, MAX_KEY_FILE_BYTES).map_err(refused)?;
    if private {
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{shown} is accessible to other users (mode {:o}); run: chmod 600 {shown}",
                    mode & 0o777,
                ),
            ));
        }
        if mode & 0o070 != 0 {
            warnings.push(format!(
                "{key}: {shown} is group-accessible (mode {:o}); 0600 or 0400 is recommended",
                mode & 0o777
            ));
        }
    }
    read_capped(path, MAX_KEY_FILE_BYTES).map_err(refused)
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
        let webhook_secret = match &self.webhook_secret {
            Some(source) => {
                let k = "webhook.secret";
                let text = source.read(k, true, &mut warnings)?;
                let secret = WebhookSecret::from_text(&text)
                    .map_err(|reason| ConfigError::invalid(k, format!("{source:?}: {reason}")))?;
                Some(std::sync::Arc::new(secret))
            }
            None => None,
        };
        Ok(LoadedKeys {
            merchant: std::sync::Arc::new(merchant),
            gateway: std::sync::Arc::new(gateway),
            webhook_secret,
            warnings,
            api_token: None,
        })
    }
}

impl Config {
    /// Reads and parses every secret the daemon uses: both keys ([`KeySources::load`]) and,
    /// when `http.api_token` is set, the API token (a secret file like the private key: not
    /// accessible to other users). Errors name the config key, never the secret.
    pub fn load_keys(&self) -> Result<LoadedKeys, ConfigError> {
        let mut keys = self.keys.load()?;
        if let Some(source) = &self.http.api_token {
            let k = "http.api_token";
            let text = source.read(k, true, &mut keys.warnings)?;
            let token = crate::http::ApiToken::from_text(&text)
                .map_err(|e| ConfigError::invalid(k, format!("{source:?} {e}")))?;
            keys.api_token = Some(std::sync::Arc::new(token));
        }
        Ok(keys)
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
            let chain = crate::logging::one_line_chain(&e);
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
        // [http] is the one section the example turns on: without it there is no listener.
        assert_eq!(minimal.http, HttpSettings::default());
        assert_eq!(
            example.http.listen,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
    }

    /// MINIMAL with its `[ledger]` table replaced by `ledger`.
    fn with_ledger(ledger: &str) -> String {
        MINIMAL.replace(
            "[ledger]\npath = \"/var/lib/checus-reconciler/ledger.sqlite\"\n",
            &format!("[ledger]\n{ledger}\n"),
        )
    }

    #[test]
    fn ledger_url_selects_postgresql_and_a_path_sqlite() {
        let sqlite = parse(MINIMAL).unwrap();
        assert_eq!(
            sqlite.ledger,
            LedgerTarget::sqlite("/var/lib/checus-reconciler/ledger.sqlite")
        );
        for url in [
            "postgres://checus@db.internal:5432/ledger",
            "postgresql://checus@127.0.0.1/ledger",
        ] {
            let c = parse(&with_ledger(&format!("url = \"{url}\""))).unwrap();
            assert_eq!(
                c.ledger,
                LedgerTarget::Postgres(PostgresTarget {
                    url: url.to_owned(),
                    password: None,
                    ca_file: None,
                }),
                "{url}"
            );
            assert_eq!(c.ledger.to_string(), url);
        }
        let with_password = parse(&with_ledger(
            "url = \"postgres://checus@db/ledger\"\npassword = \"credential:ledger-password\"",
        ))
        .unwrap();
        let LedgerTarget::Postgres(pg) = with_password.ledger else {
            panic!("not PostgreSQL");
        };
        assert!(
            matches!(pg.password, Some(KeySource::Credential { ref name, .. }) if name == "ledger-password")
        );
    }

    #[test]
    fn ledger_ca_file_is_read_at_load_and_refused_naming_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not-a-cert.pem");
        std::fs::write(
            &not_pem,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let public_key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/INSECURE-test-keys/gateway_public.pem"
        );
        let missing = dir.path().join("missing.pem");
        let cases = [
            (missing.to_str().unwrap(), "cannot read it"),
            (public_key, "holds no PEM certificate"),
            (not_pem.to_str().unwrap(), "cannot be a root certificate"),
        ];
        for (path, says) in cases {
            let e = parse(&with_ledger(&format!(
                "url = \"postgres://u@h/db\"\nca_file = \"{path}\""
            )))
            .unwrap_err();
            assert!(matches!(e, ConfigError::CaFile { .. }), "{path}: {e:?}");
            let text = crate::logging::one_line_chain(&e);
            assert!(
                text.starts_with(&format!("ledger.ca_file: {path}: ")) && text.contains(says),
                "{path}: {text}"
            );
        }
        for (ledger, says) in [
            ("url = \"postgres://u@h/db\"\nca_file = \"\"", "is empty"),
            (
                "url = \"postgres://u@h/db?sslmode=disable\"\nca_file = \"/ca.pem\"",
                "sslmode=disable",
            ),
            ("path = \"/l.sqlite\"\nca_file = \"/ca.pem\"", "no TLS"),
        ] {
            let e = err(&with_ledger(ledger));
            assert!(
                e.starts_with("ledger.ca_file: ") && e.contains(says),
                "{ledger:?}: {e}"
            );
        }
        // Set by the environment: the message names the variable, the cause the key and file.
        let env = Environment::from_pairs([(
            "CHECUS_RECONCILER__LEDGER__CA_FILE",
            missing.to_str().unwrap(),
        )]);
        let e = Config::parse(&with_ledger("url = \"postgres://u@h/db\""), "t", &env).unwrap_err();
        let text = crate::logging::one_line_chain(&e);
        assert!(
            text.starts_with(
                "environment variable CHECUS_RECONCILER__LEDGER__CA_FILE: ledger.ca_file: "
            ) && text.contains("cannot read it"),
            "{text}"
        );
    }

    #[test]
    fn the_ledger_url_comes_from_the_environment_too() {
        let env = Environment::from_pairs([(
            "CHECUS_RECONCILER__LEDGER__URL",
            "postgres://checus@db:5432/ledger",
        )]);
        let c = Config::parse(&with_ledger(""), "test.toml", &env).unwrap();
        assert_eq!(c.ledger.engine(), "PostgreSQL");
        assert_eq!(c.ledger.to_string(), "postgres://checus@db:5432/ledger");
    }

    #[test]
    fn bad_ledger_tables_are_refused_naming_the_key() {
        let cases = [
            (
                "path = \"/l.sqlite\"\nurl = \"postgres://u@h/db\"",
                "ledger.path",
                "ledger.url",
            ),
            ("", "ledger.path", "ledger.url"),
            ("url = \"mysql://u@h/db\"", "ledger.url", "postgres://"),
            (
                "url = \"postgres://u@h:notaport/db\"",
                "ledger.url",
                "not a PostgreSQL URL",
            ),
            (
                "url = \"postgres://u:hunter2@h/db\"",
                "ledger.url",
                "ledger.password",
            ),
            ("url = \"postgres://h/db\"", "ledger.url", "no user"),
            ("url = \"postgres://u@h\"", "ledger.url", "no database"),
            (
                "url = \"postgres://u@h/db\"\npassword = \"hunter2\"",
                "ledger.password",
                "credential:",
            ),
            (
                "path = \"/l.sqlite\"\npassword = \"env:PW\"",
                "ledger.password",
                "no password",
            ),
            ("path = \"\"", "ledger.path", "is empty"),
        ];
        for (ledger, key, says) in cases {
            let e = err(&with_ledger(ledger));
            assert!(e.contains(key) && e.contains(says), "{ledger:?}: {e}");
            assert!(!e.contains("hunter2"), "the password leaked: {e}");
        }
    }

    #[test]
    fn http_listen_takes_an_address_and_port_and_names_the_key_otherwise() {
        let with = |v: &str| format!("{MINIMAL}\n[http]\nlisten = \"{v}\"\n");
        assert_eq!(
            parse(&with("[::1]:9464")).unwrap().http.listen,
            Some("[::1]:9464".parse().unwrap())
        );
        for bad in [
            "localhost:9464",
            "127.0.0.1",
            "127.0.0.1:99999",
            ":9464",
            "",
        ] {
            let e = err(&with(bad));
            assert!(
                e.starts_with("http.listen: ") && e.contains("IP address and port"),
                "{bad:?}: {e}"
            );
        }
        let env = Environment::from_pairs([("CHECUS_RECONCILER__HTTP__LISTEN", "127.0.0.1:9")]);
        let c = Config::parse(MINIMAL, "test.toml", &env).unwrap();
        assert_eq!(c.http.listen, Some("127.0.0.1:9".parse().unwrap()));
    }

    #[test]
    fn http_notify_path_defaults_and_refuses_what_is_no_plain_path() {
        assert_eq!(
            parse(MINIMAL).unwrap().http.notify_path,
            "/checus/refund-notify"
        );
        let with = |v: &str| format!("{MINIMAL}\n[http]\nnotify_path = \"{v}\"\n");
        assert_eq!(
            parse(&with("/hooks/checus_v2")).unwrap().http.notify_path,
            "/hooks/checus_v2"
        );
        for bad in [
            "",
            "/",
            "hooks",
            "/hooks/",
            "/a//b",
            "/a/../b",
            "/a?x=1",
            "/{x}",
            "/a b",
            "/metrics",
            "/v1/refunds",
            "/v1/refunds/x",
        ] {
            let e = err(&with(bad));
            assert!(e.starts_with("http.notify_path: "), "{bad:?}: {e}");
        }
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
    fn an_override_the_config_refuses_names_its_variable_not_the_file() {
        let refused = |var: &str, value: &str| {
            let env = Environment::from_pairs([(var, value)]);
            let e = Config::parse(MINIMAL, "test.toml", &env).unwrap_err();
            crate::logging::one_line_chain(&e)
        };
        for (var, value, key) in [
            // Out of range, and a bad duration: the validation's refusal, under the variable.
            (
                "CHECUS_RECONCILER__WORKER__CONCURRENCY",
                "0",
                "worker.concurrency",
            ),
            (
                "CHECUS_RECONCILER__SCHEDULE__GRACE",
                "5 minutes",
                "schedule.grace",
            ),
            // A settings refusal with its own source.
            (
                "CHECUS_RECONCILER__GATEWAY__BASE_URL",
                "ftp://x",
                "gateway.base_url",
            ),
            (
                "CHECUS_RECONCILER__KEYS__GATEWAY_PUBLIC_KEY",
                "/etc/k",
                "keys.gateway_public_key",
            ),
            // The wrong type: toml's refusal, which used to name the file.
            (
                "CHECUS_RECONCILER__WORKER__CONCURRENCY",
                "abc",
                "worker.concurrency",
            ),
            // A key no section has, or a section that does not exist.
            ("CHECUS_RECONCILER__WORKER__NOPE", "1", "nope"),
            ("CHECUS_RECONCILER__GATEWAY__GRACE", "1s", "grace"),
            ("CHECUS_RECONCILER__NOPE__X", "1", "nope"),
        ] {
            let e = refused(var, value);
            assert!(
                e.starts_with(&format!("environment variable {var}: ")),
                "{var}={value}: {e}"
            );
            assert!(e.contains(key), "{var}={value}: {e}");
            assert!(!e.contains("test.toml"), "{var}={value}: {e}");
        }
        // The same refusals from the file still name the file or the key, not a variable.
        let e = err(&format!("{MINIMAL}\n[worker]\nconcurrency = \"abc\"\n"));
        assert!(e.starts_with("test.toml: "), "{e}");
        // An override that is fine does not take the blame for the file's mistake.
        let env = Environment::from_pairs([("CHECUS_RECONCILER__WORKER__CONCURRENCY", "4")]);
        let text = format!("{MINIMAL}\n[schedule]\ngrace = \"5 minutes\"\n");
        let e = Config::parse(&text, "test.toml", &env).unwrap_err();
        let e = crate::logging::one_line_chain(&e);
        assert!(e.starts_with("schedule.grace: "), "{e}");
    }

    #[test]
    fn a_bad_duration_is_told_the_valid_units_and_the_spelling_it_meant() {
        for (bad, meant) in [
            ("5 minutes", Some("5m")),
            ("5minutes", Some("5m")),
            ("1 hour 30 min", Some("1h30m")),
            ("10 Sec", Some("10s")),
            ("2 days", Some("2d")),
            ("10", None),
            ("1.5h", None),
            ("-1s", None),
            ("1x", None),
            ("ten minutes", None),
            ("", None),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(DURATION_UNITS), "{bad:?}: {e}");
            match meant {
                Some(m) => {
                    assert!(e.contains(&format!("did you mean {m:?}")), "{bad:?}: {e}");
                    assert!(parse_duration(m).is_ok());
                }
                None => assert!(!e.contains("did you mean"), "{bad:?}: {e}"),
            }
        }
        assert!(
            parse_duration("5 minutes")
                .unwrap_err()
                .contains("no space")
        );
        assert!(parse_duration("10").unwrap_err().contains("10 has no unit"));
        // The key's refusal carries the same list and the range.
        let e = err(&format!("{MINIMAL}\n[schedule]\ngrace = \"5 minutes\"\n"));
        assert!(
            e.contains("did you mean \"5m\"") && e.contains("ms, s, m, h and d"),
            "{e}"
        );
        assert!(e.ends_with("from 0ms to 7d"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        for bad in ["", "10", "m", "1x", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_past_the_cap_are_refused_not_wrapped_or_panicking() {
        for bad in [
            "18446744073709551615s1s", // the sum overflowed (a panic in check-config)
            "307445734561825861m",     // the product wrapped to 44 s
            "99999999999999999999s",   // more digits than a u64
            "100000000d",              // fits a u64, but panicked later in "now - it"
            "36501d",                  // just past the cap
            "36500d1ms",               // a sum just past the cap
            "18446744073709551615ms",  // u64::MAX milliseconds
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("longer than 36500d"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_duration_setting_accepts_its_range_and_refuses_outside_it_by_key() {
        for b in DURATION_BOUNDS {
            let (section, field) = b.key.split_once('.').unwrap();
            let text = |d: Duration| {
                let v = format!("\"{}ms\"", d.as_millis());
                let v = if field == "backoff" {
                    format!("[{v}]")
                } else {
                    v
                };
                // connect_timeout must stay within request_timeout (a settings rule), and the
                // claim lease at least twice two request timeouts and the commit window.
                let also = match field {
                    "connect_timeout" => "request_timeout = \"10m\"\n",
                    "request_timeout" => "connect_timeout = \"1ms\"\n",
                    _ => "",
                };
                let long_lease = matches!(field, "request_timeout" | "connect_timeout")
                    .then_some("\n[worker]\nclaim_lease = \"1d\"\n");
                if field == "claim_lease" {
                    let quick = MINIMAL.replace(
                        "merchant_no = \"M1\"",
                        "merchant_no = \"M1\"\nconnect_timeout = \"1ms\"\nrequest_timeout = \"1ms\"",
                    );
                    return format!("{quick}\n[{section}]\n{field} = {v}\n");
                }
                if section == "gateway" {
                    let gateway = MINIMAL.replace(
                        "merchant_no = \"M1\"",
                        &format!("merchant_no = \"M1\"\n{also}{field} = {v}"),
                    );
                    format!("{gateway}{}", long_lease.unwrap_or(""))
                } else {
                    format!("{MINIMAL}\n[{section}]\n{field} = {v}\n")
                }
            };
            parse(&text(b.least)).unwrap_or_else(|e| panic!("{}: least refused: {e}", b.key));
            parse(&text(b.most)).unwrap_or_else(|e| panic!("{}: most refused: {e}", b.key));
            let e = err(&text(b.most + MS));
            assert!(
                e.starts_with(b.key) && e.contains(&b.range()),
                "{}: {e}",
                b.key
            );
            if let Some(below) = b.least.checked_sub(MS) {
                let e = parse(&text(below)).unwrap_err();
                assert!(e.to_string().contains(b.key), "{}: {e}", b.key);
            }
        }
    }

    #[test]
    fn counts_and_rates_accept_their_range_and_refuse_outside_it_by_key() {
        for b in COUNT_BOUNDS {
            let (section, field) = b.key.split_once('.').unwrap();
            let text = |n: usize| match (section, field) {
                ("gateway", _) => MINIMAL.replace(
                    "merchant_no = \"M1\"",
                    &format!("merchant_no = \"M1\"\n{field} = {n}"),
                ),
                ("schedule", "backoff") => format!(
                    "{MINIMAL}\n[schedule]\nbackoff = [{}]\n",
                    vec!["\"1s\""; n].join(",")
                ),
                _ => format!("{MINIMAL}\n[{section}]\n{field} = {n}\n"),
            };
            parse(&text(b.least)).unwrap_or_else(|e| panic!("{}: {e}", b.key));
            parse(&text(b.most)).unwrap_or_else(|e| panic!("{}: {e}", b.key));
            for out in [b.least - 1, b.most + 1] {
                let e = err(&text(out));
                assert!(e.starts_with(b.key), "{}: {e}", b.key);
            }
        }
        for b in RATE_BOUNDS {
            let (section, field) = b.key.split_once('.').unwrap();
            let text = |v: f64| format!("{MINIMAL}\n[{section}]\n{field} = {v:?}\n");
            parse(&text(b.least)).unwrap_or_else(|e| panic!("{}: {e}", b.key));
            parse(&text(b.most)).unwrap_or_else(|e| panic!("{}: {e}", b.key));
            // 1e-300 per second was accepted, then overflowed the limiter's `1 / rate` seconds.
            let tiny = (b.key == RATE.key).then_some(1e-300);
            for out in [b.least - 1e-9, b.most * 1.000_001, f64::NAN, f64::INFINITY]
                .into_iter()
                .chain(tiny)
            {
                let e = err(&format!(
                    "{MINIMAL}\n[{section}]\n{field} = {}\n",
                    toml_float(out)
                ));
                assert!(e.starts_with(b.key), "{} = {out}: {e}", b.key);
            }
        }
    }

    fn toml_float(v: f64) -> String {
        match v {
            v if v.is_nan() => "nan".into(),
            v if v.is_infinite() => "inf".into(),
            v => format!("{v:?}"),
        }
    }

    #[test]
    fn the_readme_and_the_example_state_every_range() {
        let root = env!("CARGO_MANIFEST_DIR");
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        let example = std::fs::read_to_string(format!("{root}/examples/config.toml")).unwrap();
        let ranges = DURATION_BOUNDS
            .iter()
            .map(|b| (b.key, b.range()))
            .chain(COUNT_BOUNDS.iter().map(|b| (b.key, b.number_range())))
            .chain(RATE_BOUNDS.iter().map(|b| (b.key, b.number_range())));
        for (key, range) in ranges {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("README has no row for {key}"));
            assert!(
                row.contains(&range),
                "README {key}: {row:?} lacks {range:?}"
            );
            let field = key.split_once('.').unwrap().1;
            // The range is on the key's line, or on the comment line just above it.
            let lines: Vec<&str> = example.lines().collect();
            let at = lines
                .iter()
                .position(|l| l.starts_with(&format!("{field} =")))
                .unwrap_or_else(|| panic!("example has no {field}"));
            let near = format!("{}\n{}", lines[at.saturating_sub(1)], lines[at]);
            assert!(
                near.contains(&range),
                "example {key}: {near:?} lacks {range:?}"
            );
        }
    }

    #[test]
    fn the_key_name_list_holds_every_field_of_every_section() {
        // serde's unknown-field error lists the section's fields: all must be known names.
        for section in [
            "ledger", "gateway", "keys", "schedule", "worker", "log", "http", "webhook",
        ] {
            let text = if section == "webhook" {
                format!("{MINIMAL}\n{WEBHOOK}zzz = 1\n")
            } else if ["schedule", "worker", "log", "http"].contains(&section) {
                format!("{MINIMAL}\n[{section}]\nzzz = 1\n")
            } else {
                MINIMAL.replace(&format!("[{section}]"), &format!("[{section}]\nzzz = 1"))
            };
            let e = err(&text);
            let fields: Vec<&str> = e.split('`').skip(3).step_by(2).collect();
            assert!(!fields.is_empty(), "{e}");
            for f in fields {
                assert!(
                    KEY_NAMES.contains(&f),
                    "{section}.{f} missing from KEY_NAMES ({e})"
                );
            }
            assert!(KEY_NAMES.contains(&section));
        }
    }

    fn private_b64() -> String {
        test_key("merchant_private.b64")
            .split_whitespace()
            .collect()
    }

    #[test]
    fn a_key_pasted_into_the_toml_is_never_echoed_by_a_parse_error() {
        let key = private_b64();
        let pem = test_key("merchant_private.pem");
        let body = &key[60..100];
        for text in [
            // Unquoted, on the key's line: the syntax error names the line and the key.
            MINIMAL.replace("\"credential:merchant-private-key\"", &key),
            // A PEM block pasted as is.
            MINIMAL.replace(
                "merchant_private_key = \"credential:merchant-private-key\"",
                &pem,
            ),
            // Quoted, but into a field of another type (the type error quotes the value).
            format!("{MINIMAL}\n[worker]\nconcurrency = \"{key}\"\n"),
            format!("{MINIMAL}\n[schedule]\ngrace = \"{key}\"\n"),
            // After file:, or as a credential or env name.
            MINIMAL.replace("credential:merchant-private-key", &format!("file:{key}")),
        ] {
            let e = match parse(&text) {
                Err(e) => e,
                Ok(c) => c.keys.load().unwrap_err(),
            };
            let shown = format!("{e}\n{e:?}\n{}", crate::logging::one_line_chain(&e));
            assert!(!shown.contains(body), "{shown}");
        }
        let e = err(&MINIMAL.replace("\"credential:merchant-private-key\"", &key));
        assert!(
            e.contains("line 11") && e.contains("keys.merchant_private_key"),
            "{e}"
        );
        let c = parse(&MINIMAL.replace("credential:merchant-private-key", &format!("file:{key}")));
        let c = c.unwrap();
        assert!(!format!("{c:?}").contains(body));
        let e = c.keys.load().unwrap_err().to_string();
        assert!(e.contains("not a readable file path (not shown"), "{e}");
    }

    #[test]
    fn material_detection_spares_paths_and_words() {
        for plain in [
            "/etc/checus-reconciler/keys/merchant-private-key",
            "/var/lib/checus-reconciler/ledger.sqlite",
            "unknown field `appid`, expected one of `base_url`, `app_id`",
            "credential:merchant-private-key",
        ] {
            assert!(!looks_like_key_material(plain), "{plain}");
            assert_eq!(redact(plain), plain);
        }
        let key = private_b64();
        assert!(looks_like_key_material(&key));
        assert!(looks_like_key_material(&key[200..260]));
        assert_eq!(
            redact(&format!("x \"{}\" y", &key[200..260])),
            "x \"<not shown>\" y"
        );
    }

    #[test]
    fn key_files_must_be_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let load = |path: &Path| {
            let text = MINIMAL.replace(
                "credential:merchant-private-key",
                &format!("file:{}", path.display()),
            );
            parse(&text).unwrap().keys.load().unwrap_err().to_string()
        };
        let e = load(dir.path());
        assert!(e.contains("is a directory, not a regular file"), "{e}");
        let e = load(Path::new("/dev/null"));
        assert!(e.contains("is a device"), "{e}");
        let big = write_private(dir.path(), "big", &"A".repeat(70_000), 0o600);
        let e = load(&big);
        assert!(
            e.contains("at most 65536 bytes") && e.contains("big"),
            "{e}"
        );
    }

    #[test]
    fn key_sources_and_their_debug_never_show_material() {
        let env = Environment::from_pairs([("MY_KEY", "c2VjcmV0LWtleS1tYXRlcmlhbA==")]);
        let text = MINIMAL.replace("credential:merchant-private-key", "env:MY_KEY");
        let c = Config::parse(&text, "t", &env).unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("env:MY_KEY"));
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        let debug = format!("{env:?}");
        assert!(
            debug.contains("MY_KEY") && !debug.contains("c2VjcmV0"),
            "{debug}"
        );
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
    fn the_api_token_loads_like_the_keys_and_is_never_shown() {
        const TOKEN: &str = "tok-0123456789abcdef-xyz";
        let dir = tempfile::tempdir().unwrap();
        write_private(
            dir.path(),
            "merchant-private-key",
            &test_key("merchant_private.b64"),
            0o400,
        );
        write_private(dir.path(), "api-token", &format!("{TOKEN}\n"), 0o400);
        let public = write_private(dir.path(), "public", &test_key("gateway_public.pem"), 0o444);
        let base = MINIMAL.replace(
            "file:/etc/checus-reconciler/gateway-public.key",
            &format!("file:{}", public.display()),
        );
        let with = |source: &str| format!("{base}\n[http]\napi_token = \"{source}\"\n");
        let creds = dir.path().display().to_string();
        let load = |text: &str, pairs: Vec<(&str, &str)>| {
            let mut pairs = pairs;
            pairs.push(("CREDENTIALS_DIRECTORY", creds.as_str()));
            Config::parse(text, "t", &Environment::from_pairs(pairs)).and_then(|c| c.load_keys())
        };
        let want = crate::http::ApiToken::from_text(TOKEN).unwrap();
        // Absent: the API is off.
        assert!(load(&base, vec![]).unwrap().api_token.is_none());
        // credential:, env: (also through the CHECUS_RECONCILER__HTTP__API_TOKEN override).
        for (text, pairs) in [
            (with("credential:api-token"), vec![]),
            (with("env:API_TOKEN"), vec![("API_TOKEN", TOKEN)]),
            (
                base.clone(),
                vec![
                    ("CHECUS_RECONCILER__HTTP__API_TOKEN", "env:API_TOKEN"),
                    ("API_TOKEN", TOKEN),
                ],
            ),
        ] {
            let keys = load(&text, pairs).unwrap();
            assert_eq!(keys.api_token.as_deref(), Some(&want), "{text}");
        }
        // Refusals name the key and never the token.
        for (text, pairs, needle) in [
            (
                with("env:API_TOKEN"),
                vec![("API_TOKEN", "too-short")],
                "shorter than 16",
            ),
            (with("env:API_TOKEN"), vec![], "API_TOKEN is not set"),
            (
                with("env:API_TOKEN"),
                vec![("API_TOKEN", "tok en 0123456789abcdef")],
                "visible ASCII",
            ),
            (with("token:abc"), vec![], "unknown key source"),
            (with(TOKEN), vec![], "expected file:"),
        ] {
            let e = load(&text, pairs).unwrap_err().to_string();
            assert!(
                e.starts_with("http.api_token: ") && e.contains(needle),
                "{e}"
            );
            assert!(
                !e.contains("0123456789abcdef") && !e.contains("too-short"),
                "{e}"
            );
        }
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

    const WEBHOOK: &str = "[webhook]\nurl = \"https://app.internal/checus-refunds\"\nsecret = \"credential:webhook-secret\"\n";

    #[test]
    fn a_webhook_section_takes_its_defaults_and_is_optional() {
        assert_eq!(parse(MINIMAL).unwrap().webhook, None);
        let c = parse(&format!("{MINIMAL}\n{WEBHOOK}")).unwrap();
        let w = c.webhook.unwrap();
        assert_eq!(w.url.as_str(), "https://app.internal/checus-refunds");
        assert_eq!(w.timeout, DEFAULT_WEBHOOK_TIMEOUT);
        assert_eq!(w.concurrency, DEFAULT_WEBHOOK_CONCURRENCY);
        assert_eq!(w.retry, crate::domain::webhook::RetryPolicy::default());
        assert_eq!(c.keys.webhook_secret, Some(w.secret));
        let c = parse(&format!(
            "{MINIMAL}\n{WEBHOOK}give_up_after = \"2s\"\nretry_first = \"50ms\"\nretry_max = \"200ms\"\n"
        ))
        .unwrap();
        let retry = c.webhook.unwrap().retry;
        assert_eq!(retry.give_up_after, Duration::from_secs(2));
        assert_eq!(retry.first, Duration::from_millis(50));
        // http:// to a loopback receiver is allowed (tests, a same-host app).
        let local = WEBHOOK.replace("https://app.internal", "http://127.0.0.1:8080");
        assert!(parse(&format!("{MINIMAL}\n{local}")).is_ok());
    }

    #[test]
    fn the_readme_and_the_example_state_every_webhook_range() {
        let root = env!("CARGO_MANIFEST_DIR");
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        let example = std::fs::read_to_string(format!("{root}/examples/config.toml")).unwrap();
        let ranges = WEBHOOK_DURATION_BOUNDS
            .iter()
            .map(|b| (b.key, b.range()))
            .chain([(WEBHOOK_CONCURRENCY.key, WEBHOOK_CONCURRENCY.number_range())]);
        for (key, range) in ranges {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("README has no row for {key}"));
            assert!(
                row.contains(&range),
                "README {key}: {row:?} lacks {range:?}"
            );
            let field = key.split_once('.').unwrap().1;
            let line = example
                .lines()
                .find(|l| l.starts_with(&format!("# {field} =")))
                .unwrap_or_else(|| panic!("example has no {field}"));
            assert!(
                line.contains(&range),
                "example {key}: {line:?} lacks {range:?}"
            );
        }
    }

    #[test]
    fn bad_webhook_settings_are_refused_naming_the_key() {
        let url = |u: &str| WEBHOOK.replace("https://app.internal/checus-refunds", u);
        let cases = [
            (url("not a url"), "webhook.url: not an absolute URL"),
            (
                url("http://app.internal/x"),
                "webhook.url: http:// is allowed only to a loopback",
            ),
            (
                url("ftp://127.0.0.1/x"),
                "webhook.url: scheme \"ftp\" is not http or https",
            ),
            (
                url("https://user:pw@app.internal/x"),
                "webhook.url: must not hold a user name",
            ),
            (
                WEBHOOK.replace("credential:webhook-secret", "s3cr3t"),
                "webhook.secret: expected file:",
            ),
            (
                format!("{WEBHOOK}concurrency = 0\n"),
                "webhook.concurrency: 0 is out of range",
            ),
            (
                format!("{WEBHOOK}timeout = \"6m\"\n"),
                "webhook.timeout: 6m is out of range",
            ),
            (
                format!("{WEBHOOK}retry_first = \"1h\"\nretry_max = \"1m\"\n"),
                "webhook.retry_max: 1m is less than webhook.retry_first",
            ),
            (
                "[webhook]\nurl = \"https://a.example\"\n".to_owned(),
                "missing field `secret`",
            ),
        ];
        for (section, expected) in cases {
            let e = err(&format!("{MINIMAL}\n{section}"));
            assert!(e.contains(expected), "{section}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn the_webhook_secret_loads_from_a_private_file_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let keys = |secret: &str| {
            let text = format!("{MINIMAL}\n{WEBHOOK}")
                .replace("credential:webhook-secret", secret)
                .replace(
                    "credential:merchant-private-key",
                    &format!(
                        "file:{}",
                        write_private(
                            dir.path(),
                            "m.pem",
                            &test_key("merchant_private.pem"),
                            0o600
                        )
                        .display()
                    ),
                )
                .replace(
                    "file:/etc/checus-reconciler/gateway-public.key",
                    &format!(
                        "file:{}",
                        write_private(dir.path(), "g.pem", &test_key("gateway_public.pem"), 0o644)
                            .display()
                    ),
                );
            parse(&text).unwrap().keys.load()
        };
        let good = write_private(dir.path(), "secret", "0123456789abcdef0123\n", 0o600);
        let loaded = keys(&format!("file:{}", good.display())).unwrap();
        let secret = loaded.webhook_secret.unwrap();
        assert_eq!(secret.bytes(), b"0123456789abcdef0123");
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<not shown>)");
        let missing = keys(&format!("file:{}/nope", dir.path().display())).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("webhook.secret: cannot read"),
            "{missing}"
        );
        let open = write_private(dir.path(), "open", "0123456789abcdef0123", 0o644);
        let e = keys(&format!("file:{}", open.display()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("accessible to other users"), "{e}");
        let short = write_private(dir.path(), "short", "hunter2", 0o600);
        let e = keys(&format!("file:{}", short.display()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("webhook.secret:") && e.contains("7 bytes"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
}
