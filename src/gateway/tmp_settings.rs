//! TEMPORARY stand-in for the gateway settings until the gateway branch merges.
use std::time::Duration;
/// Default API version.
pub const DEFAULT_VERSION: &str = "1.4";
/// Settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Base URL.
    pub base_url: String,
    /// App id.
    pub app_id: String,
    /// Merchant no.
    pub merchant_no: String,
    /// Version.
    pub version: String,
    /// Key version.
    pub key_version: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Max response bytes.
    pub max_response_bytes: usize,
}
/// Error.
#[derive(Debug, thiserror::Error)]
#[error("bad")]
pub struct SettingsError;
impl SettingsError {
    /// Key.
    pub fn key(&self) -> &'static str {
        "base_url"
    }
}
impl GatewaySettings {
    /// Validate.
    pub fn validate(&self) -> Result<(), SettingsError> {
        Ok(())
    }
}
