//! Read-only questions to the ledger: `status`, `list`, `show`, `stuck`, `failed`, `explain`,
//! `discrepancies`, `audit`. None of them creates or changes a ledger.
//!
//! The lists (`list`, `stuck`, `failed`, `audit`) say when their limit cut them short: the
//! table's footer (`100 of 2,345 refunds shown; --limit N to see more`) and `--json`'s
//! `total`, `shown`, `limit` and `truncated` fields. The total is counted only when the limit
//! was reached, so a list that fits costs no second query.

use checus_reconciler::cli::{
    AuditArgs, DiscrepanciesArgs, ExitCode, FailedArgs, LedgerArgs, ListArgs, RefundArgs,
    StatusArgs, StuckArgs,
};
use std::time::Duration;

use checus_reconciler::config::{Environment, WorkerSettings};
use checus_reconciler::daemon::sweep_interval;
use checus_reconciler::domain::{
    Clock, OutRefundNo, Policy, RefundStatus, SystemClock, silent_after,
};
use checus_reconciler::ledger::{
    self, AuditFilter, Finding, Ledger, LedgerTarget, ListFilter, OpenMode, Readout,
};
use checus_reconciler::report::{self, Extent, Page};

use super::args::{load_config, not_in_ledger, open_for_reading, refund_no};
use super::output::{emit, print_json, warn_unreadable};
use super::{Failure, Outcome};

/// `status`: the health summary; exit 8 when something needs a human.
pub fn status(args: StatusArgs, env: &Environment) -> Outcome {
    let (l, policy, interval) = ledger_and_policy(&args.ledger, env)?;
    let now = SystemClock.now();
    let mut health = l.health_with(now, args.stale_after, &policy)?;
    let silent = silent_after(interval);
    let nodes = report::NodeView::judge(&l.nodes()?, now, silent);
    // On a shared ledger a dead daemon is a node gone quiet while the others sweep on.
    let quiet: Vec<String> = nodes
        .iter()
        .filter(|n| n.state == "silent")
        .map(|n| n.name.clone())
        .collect();
    if matches!(l.target(), LedgerTarget::Postgres(_)) && !quiet.is_empty() {
        health.findings.push(Finding::NodesSilent {
            names: quiet,
            silent_after_s: silent.as_secs(),
        });
    }
    let view = report::HealthView::new(&health).with_nodes(nodes);
    emit(args.json, &view, |v| {
        format!(
            "{}{}",
            report::health_table(&health),
            report::nodes_table(&v.nodes)
        )
    })?;
    Ok(if health.needs_human() {
        ExitCode::NeedsHuman
    } else {
        ExitCode::Ok
    })
}

/// The ledger, the schedule the daemon runs and its sweep interval (a node is silent after
/// three): the config, when one is named, is read once for all (`--ledger` still wins for
/// the path); without one, the documented defaults.
fn ledger_and_policy(
    args: &LedgerArgs,
    env: &Environment,
) -> Result<(Ledger, Policy, Duration), Failure> {
    let now = SystemClock.now();
    let Some(config) = &args.config else {
        let interval = sweep_interval(&WorkerSettings::default().sweep_cron, now);
        return Ok((open_for_reading(args, env)?, Policy::default(), interval));
    };
    let config = load_config(config, env)?;
    let interval = sweep_interval(&config.worker.sweep_cron, now);
    let target = match &args.ledger {
        Some(path) => LedgerTarget::sqlite(path),
        None => config.ledger,
    };
    Ok((
        ledger::open(&target, OpenMode::Reading)?,
        config.policy,
        interval,
    ))
}

/// `stuck`: pending refunds created before the cutoff, oldest first.
pub fn stuck(args: StuckArgs, env: &Environment) -> Outcome {
    let now = SystemClock.now();
    let cutoff = args.older_than.resolve(now);
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.stuck(cutoff, args.limit)?;
    let extent = extent_of(&read, args.limit, || l.stuck_total(cutoff))?;
    emit_page(args.json, &read, extent, |v| {
        report::stuck_table(v, now, &extent)
    })
}

/// `failed`: refunds that became REFUND_FAILED since a time.
pub fn failed(args: FailedArgs, env: &Environment) -> Outcome {
    let since = args.since.resolve(SystemClock.now());
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.failed_since(since, args.limit)?;
    let extent = extent_of(&read, args.limit, || l.failed_total(since))?;
    emit_page(args.json, &read, extent, |v| {
        report::failed_table(v, &extent)
    })
}

/// `explain`: one refund's history in time order.
pub fn explain(args: RefundArgs, env: &Environment) -> Outcome {
    let no = refund_no(&args.out_refund_no)?;
    let l = open_for_reading(&args.ledger, env)?;
    let Some(t) = l.timeline(&no)? else {
        return Err(missing(&no, &l, args.json)?);
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
    let filter = ListFilter {
        status: args.status.map(RefundStatus::from),
        flagged: args.flagged.then_some(true),
        since,
        limit: args.limit,
    };
    let read = l.list(&filter)?;
    let extent = extent_of(&read, args.limit, || l.list_total(&filter))?;
    emit_page(args.json, &read, extent, |v| {
        report::refund_table(v, &extent)
    })
}

/// `show`: one refund with its attempts and discrepancies.
pub fn show(args: RefundArgs, env: &Environment) -> Outcome {
    let no = refund_no(&args.out_refund_no)?;
    let l = open_for_reading(&args.ledger, env)?;
    let Some(detail) = l.show(&no)? else {
        return Err(missing(&no, &l, args.json)?);
    };
    emit(args.json, &detail, report::detail)
}

/// `audit`: the operator actions matching the filters, the latest up to `--limit`, oldest
/// first.
pub fn audit(args: AuditArgs, env: &Environment) -> Outcome {
    let filter = AuditFilter {
        refund: args.refund.as_deref().map(refund_no).transpose()?,
        since: args.since.map(|s| s.resolve(SystemClock.now())),
        limit: args.limit,
    };
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.audit(&filter)?;
    let extent = extent_of(&read, args.limit, || l.audit_total(&filter))?;
    let views: Vec<_> = read.rows.iter().map(report::ActionView::new).collect();
    if args.json {
        print_json(&Page {
            extent,
            rows: &views,
        })?;
    } else {
        super::output::print(report::audit_table(&views, &extent))?;
    }
    Ok(warn_unreadable(&read.unreadable))
}

/// How much of a list the limit let through (the total is counted only when it was reached).
fn extent_of<T>(
    read: &Readout<T>,
    limit: usize,
    total: impl FnOnce() -> Result<u64, checus_reconciler::ledger::LedgerError>,
) -> Result<Extent, Failure> {
    Ok(Extent::new(
        read.rows.len(),
        read.unreadable.len(),
        limit,
        total,
    )?)
}

/// Prints a list as a [`Page`] for `--json`, or rendered for people; then warns about each
/// row that could not be read (exit 8 when there was one).
fn emit_page<T: serde::Serialize>(
    json: bool,
    read: &Readout<T>,
    extent: Extent,
    render: impl FnOnce(&[T]) -> String,
) -> Outcome {
    if json {
        print_json(&Page {
            extent,
            rows: &read.rows,
        })?;
    } else {
        super::output::print(render(&read.rows))?;
    }
    Ok(warn_unreadable(&read.unreadable))
}

/// The refund is not in the ledger (exit 6); when a prune removed it, the error says which
/// and when, and `--json` prints that on stdout as `{"pruned": {...}}`.
fn missing(no: &OutRefundNo, l: &Ledger, json: bool) -> Result<Failure, Failure> {
    let Some(p) = l.pruned(no)? else {
        return Ok(not_in_ledger(no, l));
    };
    if json {
        print_json(&serde_json::json!({ "pruned": p }))?;
    }
    Ok(Failure::new(
        ExitCode::NotFound,
        anyhow::anyhow!(report::pruned_message(&p, l.target())),
    ))
}
