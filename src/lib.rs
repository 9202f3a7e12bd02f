//! checus-reconciler: drives every pending Checus refund to a recorded final outcome.
//!
//! Crate map, one owner per concern:
//! - [`domain`]: pure core — statuses, outcomes, the decision state machine, backoff. No I/O.
//! - [`config`]: TOML + environment overrides → validated `Config`, parsed once.
//! - [`ledger`]: every SQL statement; the SQLite ledger shared with the merchant's app.
//! - [`gateway`]: keys, the signed `/refundQuery` envelope, the HTTP client, classification.
//! - [`worker`]: one sweep — ledger → gateway → `domain::decide` → ledger.
//! - [`daemon`]: scheduling, the single-daemon lock, SIGHUP reload, the drain deadline.
//! - [`http`]: the daemon's HTTP listener and its routes (`/metrics`, `/healthz`, `/readyz`).
//! - [`webhook`]: outgoing webhooks from the ledger's outbox — signing and the delivery task.
//! - [`sandbox`]: a protocol-faithful simulated Checus gateway for tests, demo and benchmarks.
//! - [`demo`]: the README's first command, end to end against the sandbox.
//! - [`cli`], [`import`], [`report`]: the command line, input parsing and output rendering.
//! - [`metrics`]: the Prometheus registry and the metric names (an interface).
//! - [`notify`], [`logging`]: running under systemd — `Type=notify` messages and journald fields.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod import;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod sandbox;
pub mod webhook;
pub mod worker;
