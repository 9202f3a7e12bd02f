//! Turning the arguments many commands share into values: which ledger, who is acting, why,
//! which refund. Checks clap cannot make (a name from the environment, a trimmed reason) are
//! made here, once, against the limits schema.sql also enforces.

use std::path::Path;

use checus_reconciler::cli::{ExitCode, LedgerArgs, OperatorArgs};
use checus_reconciler::config::{Config, Environment};
use checus_reconciler::domain::OutRefundNo;
use checus_reconciler::domain::limits::{MAX_ACTOR_CHARS, MAX_REASON_CHARS};
use checus_reconciler::ledger::{self, Ledger, LedgerTarget, OpenMode};

use super::Failure;

/// Loads and validates the config file (exit 3 when it is invalid).
pub fn load_config(path: &Path, env: &Environment) -> Result<Config, Failure> {
    Ok(Config::load(path, env)?)
}

/// Which ledger: `--ledger PATH` (an SQLite file), else the config's `[ledger]`.
pub fn resolve_ledger(args: &LedgerArgs, env: &Environment) -> Result<LedgerTarget, Failure> {
    if let Some(p) = &args.ledger {
        return Ok(LedgerTarget::sqlite(p));
    }
    match &args.config {
        Some(c) => Ok(load_config(c, env)?.ledger),
        None => Err(Failure::usage(
            "name the ledger with --ledger PATH or --config FILE",
        )),
    }
}

/// Opens a ledger that must already exist, for writing (operator commands never create one).
pub fn open_existing(args: &LedgerArgs, env: &Environment) -> Result<Ledger, Failure> {
    let target = resolve_ledger(args, env)?;
    warn_if_root_on_service_ledger(&target);
    Ok(ledger::open(&target, OpenMode::Existing)?)
}

/// Warns when root is about to write a ledger another user owns (the service user): SQLite
/// may create `-wal` and `-shm` next to it owned by root, and the daemon, which runs as that
/// user, then cannot open its own ledger. Called by every command that writes.
pub fn warn_if_root_on_service_ledger(target: &LedgerTarget) {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = target.path() else {
        return;
    };
    let Ok(owner) = std::fs::metadata(path).map(|m| m.uid()) else {
        return;
    };
    if effective_uid() == Some(0) && owner != 0 {
        tracing::warn!(
            ledger = %path.display(),
            owner_uid = owner,
            "writing as root to a ledger owned by another user: SQLite may leave its -wal and \
             -shm files owned by root, and the daemon could no longer open the ledger; run this \
             as the ledger's owner instead (sudo -u checus-reconciler ...)"
        );
    }
}

/// This process's effective uid, from `/proc/self/status` (no libc: unsafe code is
/// forbidden here); `None` when it cannot be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    // Real, effective, saved, filesystem.
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens a ledger that must already exist for a read command: also on a read-only file system,
/// and nothing can be written through it (`OpenMode::Reading`).
pub fn open_for_reading(args: &LedgerArgs, env: &Environment) -> Result<Ledger, Failure> {
    let target = resolve_ledger(args, env)?;
    Ok(ledger::open(&target, OpenMode::Reading)?)
}

/// Opens the ledger, creating it when it does not exist yet.
pub fn open_or_create(args: &LedgerArgs, env: &Environment) -> Result<Ledger, Failure> {
    let target = resolve_ledger(args, env)?;
    warn_if_root_on_service_ledger(&target);
    Ok(ledger::open(&target, OpenMode::Create)?)
}

/// Who is acting, for the audit log: --by (or $CHECUS_RECONCILER_OPERATOR), else the login.
pub fn actor(args: &OperatorArgs, env: &Environment) -> Result<String, Failure> {
    let name = args
        .by
        .clone()
        .or_else(|| {
            ["SUDO_USER", "USER", "LOGNAME"]
                .iter()
                .find_map(|v| env.get(v).map(str::to_owned))
        })
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    match name {
        Some(n) if n.chars().count() <= MAX_ACTOR_CHARS => Ok(n),
        Some(_) => Err(Failure::usage(format!(
            "--by: at most {MAX_ACTOR_CHARS} characters"
        ))),
        None => Err(Failure::usage(
            "say who you are for the audit log with --by NAME",
        )),
    }
}

/// A non-empty reason of at most [`MAX_REASON_CHARS`] characters (the audit log's limit).
pub fn reason(text: &str) -> Result<&str, Failure> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > MAX_REASON_CHARS {
        return Err(Failure::usage(format!(
            "--reason: 1 to {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(t)
}

/// A refund number from the command line (exit 5 when it cannot be one).
pub fn refund_no(text: &str) -> Result<OutRefundNo, Failure> {
    Ok(OutRefundNo::parse(text)?)
}

/// The refund is not in this ledger (exit 6).
pub fn not_in_ledger(no: &OutRefundNo, l: &Ledger) -> Failure {
    Failure::new(
        ExitCode::NotFound,
        anyhow::anyhow!("refund {no} is not in the ledger {}", l.target()),
    )
}
