//! Read-only questions to the ledger: `status`, `list`, `show`, `stuck`, `failed`, `explain`,
//! `discrepancies`. None of them creates or changes a ledger.

use checus_reconciler::cli::{
    DiscrepanciesArgs, ExitCode, FailedArgs, ListArgs, RefundArgs, StatusArgs, StuckArgs,
};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::{Clock, RefundStatus, SystemClock};
use checus_reconciler::ledger::ListFilter;
use checus_reconciler::report;

use super::Outcome;
use super::args::{not_in_ledger, open_for_reading, refund_no};
use super::output::{emit, emit_read};

/// `status`: the health summary; exit 8 when something needs a human.
pub fn status(args: StatusArgs, env: &Environment) -> Outcome {
    let l = open_for_reading(&args.ledger, env)?;
    let health = l.health(SystemClock.now(), args.stale_after)?;
    emit(args.json, &report::HealthView::new(&health), |_| {
        report::health_table(&health)
    })?;
    Ok(if health.needs_human() {
        ExitCode::NeedsHuman
    } else {
        ExitCode::Ok
    })
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
