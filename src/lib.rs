//! checus-reconciler: drives every pending Checus refund to a recorded final outcome.
//!
//! Crate map, one owner per concern:
//! - [`domain`]: pure core — statuses, outcomes, the decision state machine, backoff. No I/O.
//! - [`config`]: TOML + environment overrides → validated `Config`, parsed once.
//! - [`ledger`]: every SQL statement; the SQLite ledger shared with the merchant's app.
//! - [`gateway`]: keys, the signed `/refundQuery` envelope, the HTTP client, classification.
//! - [`worker`]: one sweep — ledger → gateway → `domain::decide` → ledger.
//! - [`daemon`]: scheduling, the single-daemon lock, SIGHUP reload, the drain deadline.
//! - [`webhook`]: outgoing webhooks from the ledger's outbox — signing and the delivery task.
//! - [`sandbox`]: a protocol-faithful simulated Checus gateway for tests, demo and benchmarks.
//! - [`demo`]: the README's first command, end to end against the sandbox.
//! - [`cli`], [`import`], [`report`]: the command line, input parsing and output rendering.
//! - [`notify`], [`logging`]: running under systemd — `Type=notify` messages and journald fields.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod gateway;
pub mod import;
pub mod ledger;
pub mod logging;
pub mod notify;
pub mod report;
pub mod sandbox;
pub mod webhook;
pub mod worker;
