//! The one integration-test crate (as ripgrep's `tests/tests.rs`): every suite is a module, so
//! the library and the harness link once. Suites drive the real binary
//! (`CARGO_BIN_EXE_checus-reconciler`) and the library against the sandbox on 127.0.0.1, on
//! real SQLite files in temp dirs; shared helpers live in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod bad_input;
mod cli;
mod concurrency;
mod crash;
mod faults;
mod gateway_client;
mod gateway_openssl;
mod group_commit;
mod hostile;
mod ledger;
mod logs;
mod migrate;
mod monitoring;
mod nodes;
mod notify;
mod observe;
mod operations;
mod operator;
mod papercuts;
mod pg_concurrency;
mod pg_crash;
mod pg_daemon;
mod pg_ledger;
mod pg_roles;
mod pg_schema;
mod pg_tls;
mod reconcile;
mod sandbox;
mod secrets;
mod shutdown;
mod tolerant;
mod webhooks;
