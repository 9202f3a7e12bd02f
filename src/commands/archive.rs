//! Copies and clean-up: `export` the rows, `backup` the whole ledger, `prune` old final
//! refunds (archived first, then deleted in one audited transaction).

use std::io::Write;

use anyhow::Context;
use checus_reconciler::cli::{BackupArgs, ExitCode, ExportArgs, ExportFormat, PruneArgs};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::{Clock, SystemClock};
use checus_reconciler::ledger::{PruneReport, RefundRow};
use checus_reconciler::report;

use super::args::{actor, open_existing, open_for_reading, reason};
use super::output::{Stdout, emit, print, print_json, warn_unreadable};
use super::{Failure, Outcome};

/// `export`: every column of the refunds created since a time, to stdout or a new file.
pub fn export(args: ExportArgs, env: &Environment) -> Outcome {
    let since = args.since.resolve(SystemClock.now());
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.export_since(since)?;
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))
                .map_err(|e| Failure::new(ExitCode::Input, e))?,
        ),
        None => Box::new(Stdout::new()),
    };
    write_rows(std::io::BufWriter::new(sink), &read.rows, args.format)
        .map_err(|e| Failure::new(ExitCode::Failure, e))?;
    if let Some(path) = &args.output {
        let n = u64::try_from(read.rows.len()).unwrap_or(u64::MAX);
        if args.json {
            print_json(&serde_json::json!({
                "exported": n,
                "unreadable": read.unreadable.len(),
                "output": path,
                "format": match args.format {
                    ExportFormat::Csv => "csv",
                    ExportFormat::Jsonl => "jsonl",
                },
                "since": checus_reconciler::domain::format_ts(since),
            }))?;
        } else {
            eprintln!(
                "exported {} to {}",
                report::count(n, "refund", "refunds"),
                path.display()
            );
        }
    }
    Ok(warn_unreadable(&read.unreadable))
}

fn write_rows(
    mut sink: impl Write,
    rows: &[RefundRow],
    format: ExportFormat,
) -> anyhow::Result<()> {
    match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut sink);
            // CSV has no escape for control characters; a stored terminal escape is written
            // as `\u{1b}` instead (report::escape), so opening the file cannot run it.
            for r in rows {
                w.serialize(report::escaped_row(r).as_ref())?;
            }
            w.flush()?;
        }
        ExportFormat::Jsonl => {
            for r in rows {
                serde_json::to_writer(&mut sink, r)?;
                sink.write_all(b"\n")?;
            }
        }
    }
    sink.flush()?;
    Ok(())
}

/// `prune`: count (`--dry-run`) or remove final refunds finalized before the cutoff.
pub fn prune(args: PruneArgs, env: &Environment) -> Outcome {
    let now = SystemClock.now();
    let cutoff = args.finalized_before.resolve(now);
    // A dry run only reads, so it also works on a read-only ledger.
    let open = if args.dry_run {
        open_for_reading
    } else {
        open_existing
    };
    let l = open(&args.ledger, env)?;
    let report = if args.dry_run {
        PruneReport {
            prune_id: None,
            finalized_before: cutoff,
            counts: l.prune_plan(cutoff)?,
            archive: None,
            archive_sha256: None,
            dry_run: true,
        }
    } else {
        let by = actor(&args.operator, env)?;
        let why = reason(args.reason.as_deref().unwrap_or(""))?;
        // The audit row keeps an absolute path: a relative one means nothing later.
        let archive = args
            .archive
            .map(|a| std::path::absolute(&a).map_err(|e| Failure::new(ExitCode::Usage, e)))
            .transpose()?;
        l.prune(cutoff, &by, why, archive.as_deref(), now)?
    };
    emit(args.json, &report, report::prune_summary)
}

/// `backup`: an online, checked copy of the ledger.
pub fn backup(args: BackupArgs, env: &Environment) -> Outcome {
    let l = open_for_reading(&args.ledger, env)?;
    let b = l.backup(&args.path)?;
    if args.json {
        print_json(&b)?;
    } else {
        print(format!(
            "backup written: {} ({} bytes, {}, integrity checked)\n",
            b.path.display(),
            b.bytes,
            report::count(b.refunds, "refund", "refunds")
        ))?;
    }
    Ok(ExitCode::Ok)
}
