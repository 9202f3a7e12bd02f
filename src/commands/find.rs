//! Read-only questions to the ledger: `status`, `list`, `show`, `stuck`, `failed`, `explain`,
//! `discrepancies`. None of them creates or changes a ledger.

use checus_reconciler::cli::{
    DiscrepanciesArgs, ExitCode, FailedArgs, LedgerArgs, ListArgs, RefundArgs, StatusArgs,
    StuckArgs,
};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::{Clock, Policy, RefundStatus, SystemClock};
use checus_reconciler::ledger::{Ledger, ListFilter};
use checus_reconciler::report;

use super::args::{load_config, not_in_ledger, open_for_reading, refund_no};
use super::output::{emit, emit_read};
use super::{Failure, Outcome};

/// `status`: the health summary; exit 8 when something needs a human.
pub fn status(args: StatusArgs, env: &Environment) -> Outcome {
    let (l, policy) = ledger_and_policy(&args.ledger, env)?;
    let health = l.health_with(SystemClock.now(), args.stale_after, &policy)?;
    emit(args.json, &report::HealthView::new(&health), |_| {
        report::health_table(&health)
    })?;
    Ok(if health.needs_human() {
        ExitCode::NeedsHuman
    } else {
        ExitCode::Ok
    })
}

/// The ledger and the schedule the daemon runs: the config, when one is named, is read once
/// for both (`--ledger` still wins for the path); without one, the documented defaults.
fn ledger_and_policy(args: &LedgerArgs, env: &Environment) -> Result<(Ledger, Policy), Failure> {
    let Some(config) = &args.config else {
        return Ok((open_for_reading(args, env)?, Policy::default()));
    };
    let config = load_config(config, env)?;
    let ledger = LedgerArgs {
        config: None,
        ledger: Some(args.ledger.clone().unwrap_or(config.ledger_path)),
    };
    Ok((open_for_reading(&ledger, env)?, config.policy))
}

/// `stuck`: pending refunds created before the cutoff, oldest first.
pub fn stuck(args: StuckArgs, env: &Environment) -> Outcome {
    let now = SystemClock.now();
    let cutoff = args.older_than.resolve(now);
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.stuck(cutoff, args.limit)?;
    emit_read(args.json, &read, |v| report::stuck_table(v, now))
}

/// `failed`: refunds that became REFUND_FAILED since a time.
pub fn failed(args: FailedArgs, env: &Environment) -> Outcome {
    let since = args.since.resolve(SystemClock.now());
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.failed_since(since, args.limit)?;
    emit_read(args.json, &read, report::failed_table)
}

/// `explain`: one refund's history in time order.
pub fn explain(args: RefundArgs, env: &Environment) -> Outcome {
    let no = refund_no(&args.out_refund_no)?;
    let l = open_for_reading(&args.ledger, env)?;
    let Some(t) = l.timeline(&no)? else {
        return Err(not_in_ledger(&no, &l));
    };
    emit(args.json, &report::TimelineView::new(&t), report::timeline)
}

/// `discrepancies`: unresolved ones, or all with `--all`.
pub fn discrepancies(args: DiscrepanciesArgs, env: &Environment) -> Outcome {
    let l = open_for_reading(&args.ledger, env)?;
    let rows = l.discrepancies(args.all)?;
    emit(args.json, &rows, |v| report::discrepancy_table(v))
}

/// `list`: refunds matching the filters, oldest first.
pub fn list(args: ListArgs, env: &Environment) -> Outcome {
    let since = args.since.map(|s| s.resolve(SystemClock.now()));
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.list(&ListFilter {
        status: args.status.map(RefundStatus::from),
        flagged: args.flagged.then_some(true),
        since,
        limit: args.limit,
    })?;
    emit_read(args.json, &read, report::refund_table)
}

/// `show`: one refund with its attempts and discrepancies.
pub fn show(args: RefundArgs, env: &Environment) -> Outcome {
    let no = refund_no(&args.out_refund_no)?;
    let l = open_for_reading(&args.ledger, env)?;
    let Some(detail) = l.show(&no)? else {
        return Err(not_in_ledger(&no, &l));
    };
    emit(args.json, &detail, report::detail)
}
