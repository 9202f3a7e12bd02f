//! The gateway client's settings: where to send `/refundQuery`, who we are, the envelope's
//! version strings, and the HTTP limits. This file is the one home of their defaults (the
//! `DEFAULT_*` constants) and of their rules: [`GatewaySettings::validate`] is the only code that
//! decides whether a set of settings is usable, and the [`ValidGatewaySettings`] it returns is
//! what the client takes, so nothing downstream checks them again.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderValue;

/// Default envelope `version`: `"1.4"`.
///
/// The sources disagree (fact sheet §1): the current PayerMax API reference page says `"1.5"`,
/// while the vendor's OpenAPI file (`api.json`), the Java SDK default and the TIZ36 Go SDK all
/// send `"1.4"`. We default to the value the vendor's own *code* sends, because that is what
/// the gateway has demonstrably been accepting from real integrations. It is a setting so the
/// operator can switch to `"1.5"` once the Checus sandbox confirms which one it enforces.
pub const DEFAULT_VERSION: &str = "1.4";

/// Default envelope `keyVersion`: `"1"`, the only value current docs and every SDK send.
pub const DEFAULT_KEY_VERSION: &str = "1";

/// Default connect timeout. Short, because a gateway that does not accept a TCP/TLS connection
/// within seconds will not answer usefully either; the worker retries later anyway.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default total timeout for one query (connect + send + whole answer): 15 s, what the Java,
/// Go and PHP SDKs use.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Default cap on the answer body. A `/refundQuery` answer is well under 2 KiB; 64 KiB leaves
/// room for verbose error pages while bounding memory per in-flight query.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Default `User-Agent` header: crate name and version.
pub const DEFAULT_USER_AGENT: &str =
    concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// Default zone for a `refundFinishTime` that names no offset: UTC. The query page names no
/// zone for the field; the notification page says UTC+0 for the same field, so UTC is the
/// documented guess. Unconfirmed, hence a setting (`gateway.naive_time_offset`). The value only
/// informs (it is stored, never decides), so a wrong zone cannot finalize anything wrongly.
pub const DEFAULT_NAIVE_TIME_OFFSET: &str = "+00:00";

/// Parses a `±HH:MM` UTC offset from -14:00 to +14:00 (the range of real time zones).
pub fn parse_utc_offset(text: &str) -> Option<chrono::FixedOffset> {
    let bytes = text.as_bytes();
    let sign = match bytes.first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return None,
    };
    let digits = |r: std::ops::Range<usize>| {
        let part = text.get(r)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse::<i32>().ok())
            .flatten()
    };
    if bytes.len() != 6 || bytes[3] != b':' {
        return None;
    }
    let (hours, minutes) = (digits(1..3)?, digits(4..6)?);
    let seconds = hours * 3600 + minutes * 60;
    if minutes >= 60 || seconds > 14 * 3600 {
        return None;
    }
    chrono::FixedOffset::east_opt(sign * seconds)
}

/// Longest `appId` Checus accepts.
const MAX_APP_ID: usize = 64;
/// Longest `merchantNo` Checus accepts (current docs; old docs said 15).
const MAX_MERCHANT_NO: usize = 32;
/// Longest `version` / `keyVersion` Checus accepts.
const MAX_VERSION: usize = 8;
/// Smallest answer-body cap accepted (1 KiB): below it, ordinary answers could exceed the cap
/// and queries would fail as transport errors.
pub const MIN_RESPONSE_BYTES: usize = 1024;

/// Everything the gateway client needs besides keys and a clock, as written (by config or by a
/// test): plain data, not yet checked. [`GatewaySettings::validate`] turns it into
/// [`ValidGatewaySettings`]. Contains no secrets, so the derived `Debug` is safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Gateway base URL without the endpoint, e.g.
    /// `https://p-gate-uat.checus.com/aggregate-pay/api/gateway`; the client appends
    /// `/refundQuery`. Must be `https://`, except `http://` to a loopback host (127.0.0.0/8,
    /// `::1`, `localhost`), which is how tests and the simulated gateway are reached.
    pub base_url: String,
    /// Envelope `appId`: the merchant app id from the Checus portal (differs per environment).
    pub app_id: String,
    /// Envelope `merchantNo`: always sent (documented as optional, required in practice).
    pub merchant_no: String,
    /// Envelope `version`; see [`DEFAULT_VERSION`] for why the default is `"1.4"`.
    pub version: String,
    /// Envelope `keyVersion`; default [`DEFAULT_KEY_VERSION`] (`"1"`).
    pub key_version: String,
    /// How long to wait for the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long one whole query may take, from connecting to the last byte of the answer.
    pub request_timeout: Duration,
    /// The most answer-body bytes read; a longer answer is a transport failure.
    pub max_response_bytes: usize,
    /// `User-Agent` header value.
    pub user_agent: String,
    /// The zone of a `refundFinishTime` that names no offset; default
    /// [`DEFAULT_NAIVE_TIME_OFFSET`] (UTC).
    pub naive_time_offset: chrono::FixedOffset,
}

/// A setting that cannot be used. Every variant carries the setting's name ([`Self::setting`]);
/// the message says what is wrong with it, so a caller prefixes the name the way its user knows
/// it (config names it `gateway.<setting>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Not a parseable absolute URL.
    #[error("not a valid URL")]
    InvalidUrl {
        /// The rejected setting's name.
        setting: &'static str,
        /// Why the URL parser refused it.
        #[source]
        source: url::ParseError,
    },
    /// A URL the client refuses to send signed requests to.
    #[error("{reason}")]
    UnsupportedUrl {
        /// The rejected setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `http://` to a host that is not loopback: signed requests would cross the network in
    /// clear text.
    #[error(
        "http:// is only allowed to a loopback host (127.0.0.0/8, ::1, localhost); use https:// for {host}"
    )]
    InsecureScheme {
        /// The rejected setting's name.
        setting: &'static str,
        /// The offending host.
        host: String,
    },
    /// An empty value.
    #[error("must not be empty")]
    Empty {
        /// The rejected setting's name.
        setting: &'static str,
    },
    /// Longer than the gateway accepts.
    #[error("is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// The rejected setting's name.
        setting: &'static str,
        /// Its length in characters.
        len: usize,
        /// The most characters accepted.
        max: usize,
    },
    /// Contains a control character (would corrupt a header or a log line).
    #[error("contains a control character")]
    ControlCharacter {
        /// The rejected setting's name.
        setting: &'static str,
    },
    /// A zero timeout, which would make every query fail.
    #[error("must be greater than zero")]
    Zero {
        /// The rejected setting's name.
        setting: &'static str,
    },
    /// Below the smallest value that can work.
    #[error("must be at least {min}")]
    TooSmall {
        /// The rejected setting's name.
        setting: &'static str,
        /// The smallest accepted value.
        min: usize,
    },
    /// The connect timeout exceeds the total timeout, so it could never take effect.
    #[error("must not exceed request_timeout")]
    ConnectExceedsTotal {
        /// The rejected setting's name.
        setting: &'static str,
    },
}

impl SettingsError {
    /// The name of the rejected setting.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::InvalidUrl { setting, .. }
            | Self::UnsupportedUrl { setting, .. }
            | Self::InsecureScheme { setting, .. }
            | Self::Empty { setting }
            | Self::TooLong { setting, .. }
            | Self::ControlCharacter { setting }
            | Self::Zero { setting }
            | Self::TooSmall { setting, .. }
            | Self::ConnectExceedsTotal { setting } => setting,
        }
    }
}

impl GatewaySettings {
    /// Settings for `base_url`, `app_id` and `merchant_no`, with every other field at its
    /// documented default. Not validated yet: call [`GatewaySettings::validate`].
    pub fn new(
        base_url: impl Into<String>,
        app_id: impl Into<String>,
        merchant_no: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            app_id: app_id.into(),
            merchant_no: merchant_no.into(),
            version: DEFAULT_VERSION.to_owned(),
            key_version: DEFAULT_KEY_VERSION.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            naive_time_offset: parse_utc_offset(DEFAULT_NAIVE_TIME_OFFSET)
                .expect("the default offset parses"),
        }
    }

    /// Checks every setting without touching the network and returns them as
    /// [`ValidGatewaySettings`]; the first problem found is returned instead. This is the one
    /// place these rules live: config maps its keys onto [`GatewaySettings`] and calls this.
    pub fn validate(self) -> Result<ValidGatewaySettings, SettingsError> {
        let query_url = query_url(&self.base_url)?;
        check_text("app_id", &self.app_id, MAX_APP_ID)?;
        check_text("merchant_no", &self.merchant_no, MAX_MERCHANT_NO)?;
        check_text("version", &self.version, MAX_VERSION)?;
        check_text("key_version", &self.key_version, MAX_VERSION)?;
        if self.connect_timeout.is_zero() {
            return Err(SettingsError::Zero {
                setting: "connect_timeout",
            });
        }
        if self.request_timeout.is_zero() {
            return Err(SettingsError::Zero {
                setting: "request_timeout",
            });
        }
        if self.connect_timeout > self.request_timeout {
            return Err(SettingsError::ConnectExceedsTotal {
                setting: "connect_timeout",
            });
        }
        if self.max_response_bytes < MIN_RESPONSE_BYTES {
            return Err(SettingsError::TooSmall {
                setting: "max_response_bytes",
                min: MIN_RESPONSE_BYTES,
            });
        }
        if self.user_agent.is_empty() {
            return Err(SettingsError::Empty {
                setting: "user_agent",
            });
        }
        if HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(SettingsError::ControlCharacter {
                setting: "user_agent",
            });
        }
        Ok(ValidGatewaySettings {
            settings: self,
            query_url,
        })
    }
}

/// Gateway settings that passed [`GatewaySettings::validate`], with the `/refundQuery` URL
/// built once. The only way to make one is `validate`, so holding one means every rule held;
/// it reads as [`GatewaySettings`] through `Deref` and cannot be changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidGatewaySettings {
    /// The settings, exactly as validated.
    settings: GatewaySettings,
    /// `base_url` + `/refundQuery`.
    query_url: Url,
}

impl ValidGatewaySettings {
    /// The full `/refundQuery` URL.
    pub fn query_url(&self) -> &Url {
        &self.query_url
    }

    /// True when `base_url` points at this machine (the simulated gateway in tests and demos).
    pub fn is_loopback(&self) -> bool {
        self.query_url.host().is_some_and(|h| is_loopback(&h))
    }

    /// The plain settings, e.g. to change one and validate again.
    pub fn into_inner(self) -> GatewaySettings {
        self.settings
    }
}

impl std::ops::Deref for ValidGatewaySettings {
    type Target = GatewaySettings;

    fn deref(&self) -> &GatewaySettings {
        &self.settings
    }
}

/// The full `/refundQuery` URL for `base_url`, or why `base_url` is refused.
fn query_url(base_url: &str) -> Result<Url, SettingsError> {
    const SETTING: &str = "base_url";
    let url = Url::parse(base_url.trim()).map_err(|source| SettingsError::InvalidUrl {
        setting: SETTING,
        source,
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs and error messages.
        return Err(SettingsError::UnsupportedUrl {
            setting: SETTING,
            reason: "must not contain a user name or password",
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        // The client appends `/refundQuery`; a query or fragment would end up before it.
        return Err(SettingsError::UnsupportedUrl {
            setting: SETTING,
            reason: "must not contain a query (?...) or fragment (#...)",
        });
    }
    let host = url.host().ok_or(SettingsError::UnsupportedUrl {
        setting: SETTING,
        reason: "has no host",
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(SettingsError::InsecureScheme {
                setting: SETTING,
                host: host.to_string(),
            });
        }
        _ => {
            return Err(SettingsError::UnsupportedUrl {
                setting: SETTING,
                reason: "must start with https:// (or http:// to a loopback host)",
            });
        }
    }
    let path = format!("{}/refundQuery", url.path().trim_end_matches('/'));
    let mut query_url = url;
    query_url.set_path(&path);
    Ok(query_url)
}

/// Loopback by address, or the literal name `localhost` (which resolves to loopback by
/// RFC 6761). Any other name could resolve anywhere, so it does not count.
fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// Not blank, at most `max` characters, no control characters.
fn check_text(setting: &'static str, value: &str, max: usize) -> Result<(), SettingsError> {
    if value.trim().is_empty() {
        return Err(SettingsError::Empty { setting });
    }
    let len = value.chars().count();
    if len > max {
        return Err(SettingsError::TooLong { setting, len, max });
    }
    if value.chars().any(char::is_control) {
        return Err(SettingsError::ControlCharacter { setting });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_offsets_parse_within_real_zones() {
        for (text, seconds) in [
            ("+00:00", Some(0)),
            ("-00:00", Some(0)),
            ("+08:00", Some(8 * 3600)),
            ("-05:30", Some(-(5 * 3600 + 1800))),
            ("+14:00", Some(14 * 3600)),
            ("-14:00", Some(-14 * 3600)),
            ("+14:01", None),
            ("+08:60", None),
            ("08:00", None),
            ("+8:00", None),
            ("+0800", None),
            ("+08:00:00", None),
            ("UTC", None),
            ("", None),
            ("+0\u{e9}:0", None),
        ] {
            assert_eq!(
                parse_utc_offset(text).map(|o| o.local_minus_utc()),
                seconds,
                "{text}"
            );
        }
    }

    fn with_url(url: &str) -> GatewaySettings {
        GatewaySettings::new(url, "app-1", "M-1")
    }

    #[test]
    fn defaults_are_documented_values() {
        let s = with_url("https://p-gate-uat.checus.com/aggregate-pay/api/gateway");
        assert_eq!(s.version, "1.4");
        assert_eq!(s.key_version, "1");
        assert_eq!(s.request_timeout, Duration::from_secs(15));
        let valid = s.validate().unwrap();
        assert!(!valid.is_loopback());
        assert!(
            with_url("http://[::1]:9/gw")
                .validate()
                .unwrap()
                .is_loopback()
        );
    }

    #[test]
    fn query_url_appends_the_endpoint_once() {
        for base in [
            "https://p-gate-uat.checus.com/aggregate-pay/api/gateway",
            "https://p-gate-uat.checus.com/aggregate-pay/api/gateway/",
        ] {
            assert_eq!(
                with_url(base).validate().unwrap().query_url().as_str(),
                "https://p-gate-uat.checus.com/aggregate-pay/api/gateway/refundQuery"
            );
        }
        assert_eq!(
            with_url("http://127.0.0.1:8080")
                .validate()
                .unwrap()
                .query_url()
                .as_str(),
            "http://127.0.0.1:8080/refundQuery"
        );
    }

    #[test]
    fn url_rules() {
        let accepted = [
            "https://pay-gate-hk-prod.checus.com/aggregate-pay/api/gateway",
            "http://127.0.0.1:1234/gw",
            "http://127.9.8.7/gw",
            "http://[::1]:80/gw",
            "http://localhost:9/gw",
            "http://LOCALHOST:9/gw",
        ];
        for url in accepted {
            assert!(with_url(url).validate().is_ok(), "{url} refused");
        }
        type Expect = fn(&SettingsError) -> bool;
        let refused: [(&str, Expect); 10] = [
            ("http://example.com/gw", |e| {
                matches!(e, SettingsError::InsecureScheme { .. })
            }),
            ("http://10.0.0.1/gw", |e| {
                matches!(e, SettingsError::InsecureScheme { .. })
            }),
            ("http://localhost.example.com/gw", |e| {
                matches!(e, SettingsError::InsecureScheme { .. })
            }),
            ("http://128.0.0.1/gw", |e| {
                matches!(e, SettingsError::InsecureScheme { .. })
            }),
            ("ftp://127.0.0.1/gw", |e| {
                matches!(e, SettingsError::UnsupportedUrl { .. })
            }),
            ("not a url", |e| {
                matches!(e, SettingsError::InvalidUrl { .. })
            }),
            ("", |e| matches!(e, SettingsError::InvalidUrl { .. })),
            ("https://user:pw@checus.com/gw", |e| {
                matches!(e, SettingsError::UnsupportedUrl { .. })
            }),
            ("https://checus.com/gw?x=1", |e| {
                matches!(e, SettingsError::UnsupportedUrl { .. })
            }),
            ("https://checus.com/gw#f", |e| {
                matches!(e, SettingsError::UnsupportedUrl { .. })
            }),
        ];
        for (url, expected) in refused {
            let err = with_url(url).validate().unwrap_err();
            assert!(expected(&err), "{url}: unexpected {err:?}");
            assert_eq!(err.setting(), "base_url");
            assert!(
                !err.to_string().contains("base_url"),
                "named once, by the caller: {err}"
            );
        }
    }

    #[test]
    fn every_other_setting_is_named_when_rejected() {
        let ok = with_url("https://checus.com/gw");
        type Mutate = fn(&mut GatewaySettings);
        let cases: [(&str, Mutate); 13] = [
            ("app_id", |s| s.app_id.clear()),
            ("app_id", |s| s.app_id = "  ".into()),
            ("app_id", |s| s.app_id = "a".repeat(65)),
            ("merchant_no", |s| s.merchant_no = "M\n1".into()),
            ("merchant_no", |s| s.merchant_no.clear()),
            ("version", |s| s.version = "1.4.0.0.0".into()),
            ("key_version", |s| s.key_version.clear()),
            ("connect_timeout", |s| s.connect_timeout = Duration::ZERO),
            ("request_timeout", |s| s.request_timeout = Duration::ZERO),
            ("connect_timeout", |s| {
                s.connect_timeout = s.request_timeout + Duration::from_secs(1)
            }),
            ("max_response_bytes", |s| s.max_response_bytes = 0),
            ("max_response_bytes", |s| {
                s.max_response_bytes = MIN_RESPONSE_BYTES - 1
            }),
            ("user_agent", |s| s.user_agent = "ua\r\nx: y".into()),
        ];
        for (setting, mutate) in cases {
            let mut s = ok.clone();
            mutate(&mut s);
            let err = s.validate().unwrap_err();
            assert_eq!(err.setting(), setting, "{err}");
        }
    }
}
