//! The hostile suite (issue 10): values a careless or adversarial user can hand the daemon, each
//! answered with its documented exit code or status finding, and none of them stopping the
//! reconciliation of the other refunds. One module per kind of input (`readonly`: ledgers on a
//! read-only file system or that this user may not write).

mod answers;
mod api;
mod config;
mod findings;
mod guard;
mod input;
mod ledger;
mod notify;
mod readonly;
mod rows;
