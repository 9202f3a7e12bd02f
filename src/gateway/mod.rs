//! The Checus side: keys and signatures, the `/refundQuery` envelope, the HTTP client, and
//! the classification of every answer into a typed [`crate::domain::QueryOutcome`].

pub mod keys;

pub use keys::{GatewayKey, KeyError, MerchantKey, PrivateKeyFormat, SignatureError};
