//! checus-reconciler: drives every pending Checus refund to a recorded final outcome.
//!
//! Crate map, one owner per concern:
//! - [`domain`]: pure core — statuses, outcomes, the decision state machine, backoff.
//! - [`ledger`]: every SQL statement; the SQLite ledger shared with the merchant's app.
//! - [`gateway`]: the signed `/refundQuery` client, keys, and answer classification.
//! - [`sandbox`]: a protocol-faithful simulated Checus gateway for tests, demo and benchmarks.

pub mod domain;
pub mod gateway;
pub mod ledger;
