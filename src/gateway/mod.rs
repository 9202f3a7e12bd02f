//! The Checus side: keys and signatures, the `/refundQuery` envelope, the HTTP client, and
//! the classification of every answer into a typed [`crate::domain::QueryOutcome`].

pub mod classify;
pub mod envelope;
pub mod keys;
pub mod settings;

pub use classify::{APPLY_SUCCESS, Classified, CodeClass, classify, classify_code, parse_amount};
pub use envelope::{SignedRequest, format_request_time, query_body, sign_query};
pub use keys::{GatewayKey, KeyError, MerchantKey, PrivateKeyFormat, SignatureError};
pub use settings::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_VERSION, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_USER_AGENT, DEFAULT_VERSION, GatewaySettings, SettingsError,
};
