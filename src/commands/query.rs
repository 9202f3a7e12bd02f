//! `query`: ask Checus about one refund now, through the same worker the daemon builds
//! (`daemon::build_worker`), so the attempt is recorded like any other.

use std::sync::Arc;

use checus_reconciler::cli::QueryArgs;
use checus_reconciler::config::Environment;
use checus_reconciler::daemon::build_worker;
use checus_reconciler::domain::SystemClock;
use checus_reconciler::ledger::Ledger;
use checus_reconciler::worker::LedgerHandle;
use checus_reconciler::{logging, report};

use super::Outcome;
use super::args::{load_config, refund_no};
use super::output::emit;

/// `query`: one signed /refundQuery now; prints what was learned and decided.
pub async fn query(args: QueryArgs, env: Environment) -> Outcome {
    let cfg = load_config(&args.config.config, &env)?;
    // Operator commands log to stderr as asked; only `run` looks at $JOURNAL_STREAM.
    logging::init(cfg.log.format, "warn", &Environment::default());
    let no = refund_no(&args.out_refund_no)?;
    let keys = cfg.keys.load()?;
    let ledger = Ledger::open_existing(&cfg.ledger_path)?;
    // A client the config cannot build is a config error (exit 3), as for `run`.
    let worker = build_worker(
        &cfg,
        &keys,
        LedgerHandle::new(ledger),
        Arc::new(SystemClock),
    )?;
    let processed = worker.query_now(&no).await?;
    let summary = report::QuerySummary::from_processed(&no, &processed);
    emit(args.json, &summary, report::QuerySummary::render)
}
