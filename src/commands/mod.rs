//! One handler per command, grouped by family; [`run`] picks one with a single line per
//! command. Every handler takes its typed args struct from `cli.rs` and returns an
//! [`Outcome`]: the exit code, or a [`Failure`] that carries its own. Adding a command is one
//! variant in `cli.rs`, one line in [`run`], and its handler in a module of its own (or of its
//! family).
//!
//! Families: `setup` (init, check-config, migrate), `daemon` (run), `find` (read-only questions),
//! `act` (audited actions on pending work), `resume` (ends a running daemon's halt),
//! `webhooks` (the outbox: list, redeliver), `intake` (add, import), `archive` (export, prune,
//! backup), `query`, `simulate` (sandbox, demo), `packaging` (completions; the man pages are
//! built in `manpages`). Shared pieces: `args` (ledger, actor, reason, the root-on-a-service-
//! ledger warning), `heartbeat` (is a daemon running, is it halted), `output` (EPIPE-safe
//! stdout), `failure` (exit codes), `signals`.
//!
//! This tree belongs to the binary, not the library: it is the edge where anyhow, stdout and
//! exit codes live, and nothing else links it.

mod act;
mod archive;
mod args;
mod daemon;
mod failure;
mod find;
mod heartbeat;
mod intake;
mod manpages;
mod output;
mod packaging;
mod query;
mod resume;
mod setup;
mod signals;
mod simulate;
mod webhooks;

use std::future::Future;

use checus_reconciler::cli::{Command, ExitCode};
use checus_reconciler::config::Environment;

pub use failure::{Failure, Outcome};

/// Runs the command. Synchronous commands run on this thread; only the daemon, `query`,
/// `sandbox` and `demo` start the async runtime.
pub fn run(command: Command, env: Environment) -> Outcome {
    use Command as C;
    match command {
        C::Init(a) => setup::init(a, &env),
        C::CheckConfig(a) => setup::check_config(a, &env),
        C::Run(a) => block_on(Threads::One, daemon::run(a, env)),
        C::Status(a) => find::status(a, &env),
        C::List(a) => find::list(a, &env),
        C::Show(a) => find::show(a, &env),
        C::Stuck(a) => find::stuck(a, &env),
        C::Failed(a) => find::failed(a, &env),
        C::Explain(a) => find::explain(a, &env),
        C::Discrepancies(a) => find::discrepancies(a, &env),
        C::Audit(a) => find::audit(a, &env),
        C::Webhooks(a) => webhooks::webhooks(a, &env),
        C::RetryNow(a) => act::retry_now(a, &env),
        C::ClearFlag(a) => act::clear_flag(a, &env),
        C::Resume(a) => resume::resume(a, &env),
        C::Resolve(a) => act::resolve(a, &env),
        C::ResolveDiscrepancy(a) => act::resolve_discrepancy(a, &env),
        C::Add(a) => intake::add(a, &env),
        C::Import(a) => intake::import(a, &env),
        C::Export(a) => archive::export(a, &env),
        C::Prune(a) => archive::prune(a, &env),
        C::Backup(a) => archive::backup(a, &env),
        C::Migrate(a) => setup::migrate(a, &env),
        C::VerifyLedger(a) => setup::verify_ledger(a, &env),
        C::Query(a) => block_on(Threads::One, query::query(a, env)),
        C::Sandbox(a) => block_on(Threads::PerCore, simulate::sandbox(a)),
        C::Demo(a) => block_on(Threads::One, simulate::demo(a)),
        C::Completions(a) => packaging::completions(a),
        C::Manpage(a) => packaging::manpage(a),
    }
}

/// The level stderr logging starts at before the command runs, or `None` for commands that
/// start logging themselves (`run` and `query`, from their config) or never log.
pub fn log_level(command: &Command) -> Option<&'static str> {
    match command {
        Command::Run(_) | Command::Query(_) | Command::Completions(_) | Command::Manpage(_) => None,
        // init: a migration's "ledger migrated" line names the backup it took.
        Command::Sandbox(_) | Command::Init(_) => Some("info"),
        _ => Some("warn"),
    }
}

/// How many async worker threads a command's runtime gets.
enum Threads {
    One,
    PerCore,
}

/// Runs `command` to completion on a fresh multi-thread runtime.
fn block_on(threads: Threads, command: impl Future<Output = Outcome>) -> Outcome {
    // One async worker thread for the daemon and the other commands. The daemon's work is one
    // RSA signature per query at a rate Checus limits (5/s by default); one thread signs about
    // 2,200 queries/s (BENCHMARKS.md run 1), and a second only added cross-thread wake-ups
    // and contention with the host's other processes: 0.354 -> 0.344 ms of CPU per refund.
    // SQLite runs on the blocking pool, so a slow disk never stalls the queries in flight.
    // The sandbox stands in for Checus and serves many clients at once: one worker per core
    // (with one, it capped BENCHMARKS.md run 2 at 88 % of the ideal throughput).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Threads::One = threads {
        builder.worker_threads(1);
    }
    let runtime = builder.enable_all().build().map_err(|e| {
        Failure::new(ExitCode::Failure, e).context("cannot start the async runtime")
    })?;
    runtime.block_on(command)
}
