//! Audited operator actions: `retry-now`, `resolve`, `resolve-discrepancy`, `clear-flag`.
//! Each names who acted (and, where the audit log asks, why) before the ledger is opened.

use checus_reconciler::cli::{
    ClearFlagArgs, ExitCode, ResolveArgs, ResolveDiscrepancyArgs, RetryNowArgs,
};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::{Clock, SystemClock, format_ts};
use checus_reconciler::report;

use super::args::{actor, open_existing, reason, refund_no};
use super::heartbeat::Heartbeat;
use super::output::{print, print_json};
use super::{Failure, Outcome};

/// `retry-now`: make one refund, or every flagged one, due now with a fresh backoff.
pub fn retry_now(args: RetryNowArgs, env: &Environment) -> Outcome {
    let by = actor(&args.operator, env)?;
    let l = open_existing(&args.ledger, env)?;
    let now = SystemClock.now();
    let done = match args.out_refund_no {
        Some(no) if !args.all_flagged => {
            let no = refund_no(&no)?;
            l.retry_now(&no, &by, now)?;
            vec![no]
        }
        Some(_) => {
            return Err(Failure::usage("name one refund or --all-flagged, not both"));
        }
        None => l.retry_all_flagged(&by, now)?,
    };
    let names: Vec<String> = done.iter().map(ToString::to_string).collect();
    // Who will query them: a daemon holds the lock or none does, and it may be halted.
    let heartbeat = Heartbeat::read(&l)?;
    if args.json {
        print_json(&serde_json::json!({
            "due_at": format_ts(now),
            "refunds": names,
            "daemon": heartbeat.state(),
            "halted": heartbeat.halt(),
        }))?;
        return Ok(ExitCode::Ok);
    }
    let mut text = String::new();
    for n in &names {
        text.push_str(&format!("{n}: due now, backoff restarted\n"));
    }
    let n = u64::try_from(names.len()).unwrap_or(u64::MAX);
    text.push_str(&format!(
        "{} due now; {}\n",
        report::count(n, "refund", "refunds"),
        heartbeat.who_queries(n == 1)
    ));
    print(text)?;
    Ok(ExitCode::Ok)
}

/// `clear-flag`: acknowledge a refund's review flag and clear it (audited).
pub fn clear_flag(args: ClearFlagArgs, env: &Environment) -> Outcome {
    let by = actor(&args.operator, env)?;
    let why = reason(&args.reason)?;
    let no = refund_no(&args.out_refund_no)?;
    let l = open_existing(&args.ledger, env)?;
    let now = SystemClock.now();
    l.clear_flag(&no, &by, why, now)?;
    if args.json {
        print_json(&serde_json::json!({
            "out_refund_no": no.as_str(),
            "action": "clear_flag",
            "by": by,
            "at": format_ts(now),
        }))?;
    } else {
        print(format!(
            "{no}: flag cleared (by {by}, recorded in operator_actions)\n"
        ))?;
    }
    Ok(ExitCode::Ok)
}

/// `resolve`: record an operator's final status for a pending refund.
pub fn resolve(args: ResolveArgs, env: &Environment) -> Outcome {
    let by = actor(&args.operator, env)?;
    let why = reason(&args.reason)?;
    let no = refund_no(&args.out_refund_no)?;
    let l = open_existing(&args.ledger, env)?;
    let row = l.resolve(&no, args.status.into(), &by, why, SystemClock.now())?;
    if args.json {
        print_json(&row)?;
    } else {
        print(format!(
            "{}: {} (source operator, by {by}, recorded in operator_actions)\n",
            row.out_refund_no, row.status
        ))?;
    }
    Ok(ExitCode::Ok)
}

/// `resolve-discrepancy`: mark one discrepancy resolved; what was detected stays.
pub fn resolve_discrepancy(args: ResolveDiscrepancyArgs, env: &Environment) -> Outcome {
    let by = actor(&args.operator, env)?;
    let why = reason(&args.reason)?;
    let l = open_existing(&args.ledger, env)?;
    l.resolve_discrepancy(args.id, &by, why, SystemClock.now())?;
    if args.json {
        // Read back, so the output is what `discrepancies --json` lists from now on.
        print_json(&l.discrepancy(args.id)?)?;
    } else {
        print(format!("discrepancy {} resolved by {by}\n", args.id))?;
    }
    Ok(ExitCode::Ok)
}
