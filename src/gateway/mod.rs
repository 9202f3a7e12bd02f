//! The Checus side: keys and signatures, the `/refundQuery` envelope, the HTTP client, and
//! the classification of every answer into a typed [`crate::domain::QueryOutcome`].
//!
//! - [`settings`]: the client's settings: their one set of defaults and their one set of rules.
//! - [`envelope`]: the exact request bytes, `requestTime`, and the signature over them.
//! - [`classify`](mod@classify): raw answer (status, `sign`, body) to outcome; pure.
//! - [`reader`]: the tolerant reader of an answer's informative fields; pure.
//! - [`client`]: the async HTTP client that ties them together.
//! - [`keys`]: RSA keys in the portal's formats.

pub mod classify;
pub mod client;
pub mod envelope;
pub mod keys;
pub mod reader;
pub mod settings;

/// The client's answer is the domain's attempt type; re-exported where `query` returns it.
pub use crate::domain::QueryReport;
pub use classify::{APPLY_SUCCESS, Classified, CodeClass, classify, classify_code, classify_with};
pub use client::{GatewayClient, GatewayError, query_timeout};
pub use envelope::{SignedRequest, format_request_time, query_body, sign_query};
pub use keys::{GatewayKey, KeyError, MerchantKey, PrivateKeyFormat, SignatureError};
pub use reader::{Read, read_amount, read_currency, read_finish_time, read_time, read_trade_no};
pub use settings::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_VERSION, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_NAIVE_TIME_OFFSET, DEFAULT_REQUEST_TIMEOUT, DEFAULT_USER_AGENT, DEFAULT_VERSION,
    GatewaySettings, MIN_RESPONSE_BYTES, SettingsError, ValidGatewaySettings, parse_utc_offset,
};
