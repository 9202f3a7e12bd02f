//! Putting refunds into the ledger the way the merchant's app would: `add` one, or `import` a
//! file. Input is validated by `import::RawRefund` (one rule set for both), then written; a
//! rejected input writes nothing (exit 5).

use checus_reconciler::cli::{AddArgs, ExitCode, ImportArgs, ImportFormat};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::{Clock, RefundStatus, SystemClock};
use checus_reconciler::import::{self, RawRefund};
use checus_reconciler::ledger::{self, LedgerError, OpenMode};
use checus_reconciler::report;

use super::args::{open_or_create, resolve_ledger};
use super::output::{print, print_json};
use super::{Failure, Outcome};

/// `add`: validate one refund and insert it.
pub fn add(args: AddArgs, env: &Environment) -> Outcome {
    let raw = RawRefund {
        out_refund_no: args.out_refund_no,
        amount: args.amount,
        currency: args.currency,
        refund_trade_no: args.refund_trade_no,
        out_trade_no: args.out_trade_no,
        status: Some(RefundStatus::from(args.status).to_string()),
        created_at: args.created_at,
    };
    let refund = raw.validate(SystemClock.now()).map_err(|mut e| {
        // The flag is what the operator typed; the import column name would puzzle them.
        if e.field == "created_at" {
            e.field = "--created-at";
        }
        e
    })?;
    let l = open_or_create(&args.ledger, env)?;
    l.insert_refund(&refund)?;
    if args.json {
        // The row as stored, read back: the same fields as `list --json` and `show --json`.
        let row = l.show(&refund.out_refund_no)?.map(|d| d.refund);
        print_json(&row)?;
    } else {
        print(format!(
            "added {} {} {} ({})\n",
            refund.out_refund_no, refund.amount, refund.currency, refund.status
        ))?;
    }
    Ok(ExitCode::Ok)
}

/// `import`: validate every row of the file, then write them all in one transaction.
pub fn import(args: ImportArgs, env: &Environment) -> Outcome {
    let file = args.file;
    let jsonl = match args.format {
        Some(f) => f == ImportFormat::Jsonl,
        None => matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("jsonl" | "ndjson" | "json")
        ),
    };
    let rows = import::parse_file(&file, jsonl, SystemClock.now(), &mut |n| {
        eprintln!("validated {n} rows");
    })?;
    let (lines, refunds): (Vec<u64>, Vec<_>) = rows.into_iter().unzip();
    let target = resolve_ledger(&args.ledger, env)?;
    super::args::warn_if_root_on_service_ledger(&target);
    let mut l = ledger::open(&target, OpenMode::Create)?;
    let total = refunds.len();
    let written = l
        .import(&refunds, &mut |n| eprintln!("imported {n} of {total} rows"))
        .map_err(|e| match e {
            // The ledger knows the row's index; the operator needs the file's line.
            LedgerError::DuplicateRefund {
                out_refund_no,
                index: Some(i),
            } => Failure::new(
                ExitCode::Input,
                anyhow::anyhow!(
                    "{}:{}: outRefundNo: {out_refund_no} is already in the ledger; nothing was imported",
                    file.display(),
                    lines.get(i).copied().unwrap_or(0)
                ),
            ),
            other => other.into(),
        })?;
    if args.json {
        print_json(&serde_json::json!({
            "imported": written,
            "file": file,
            "ledger": target.to_string(),
        }))?;
    } else {
        print(format!(
            "imported {} from {} into {}\n",
            report::count(
                u64::try_from(written).unwrap_or(u64::MAX),
                "refund",
                "refunds"
            ),
            file.display(),
            target
        ))?;
    }
    Ok(ExitCode::Ok)
}
