//! The binary's edge: parse the command line, start logging, run the command, and map every
//! error to a documented exit code. Errors are printed once, here, with their cause chain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;

use checus_reconciler::cli::{
    Cli, Command, ConfigArgs, ExitCode, ExportFormat, ImportFormat, LedgerArgs, OperatorArgs,
};
use checus_reconciler::config::{Config, ConfigError, Environment, LogFormat, parse_duration};
use checus_reconciler::daemon::{self, DaemonError, Reloader};
use checus_reconciler::domain::{Clock, OutRefundNo, RefundStatus, SystemClock, parse_ts};
use checus_reconciler::import::{self, RawRefund};
use checus_reconciler::ledger::{Ledger, LedgerError, ListFilter};
use checus_reconciler::{demo, report, sandbox};

/// An error on its way out, with the exit code it maps to.
struct Failure {
    code: ExitCode,
    error: anyhow::Error,
}

impl Failure {
    fn new(code: ExitCode, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

type Outcome = Result<ExitCode, Failure>;

fn ledger_failure(e: LedgerError) -> Failure {
    let code = if e.is_refusal() {
        ExitCode::Ledger
    } else {
        match e {
            LedgerError::DuplicateRefund { .. }
            | LedgerError::AlreadyFinal { .. }
            | LedgerError::TargetExists { .. } => ExitCode::Input,
            LedgerError::NotFound { .. } | LedgerError::DiscrepancyNotOpen { .. } => {
                ExitCode::NotFound
            }
            _ => ExitCode::Failure,
        }
    };
    Failure::new(code, e)
}

fn config_failure(e: ConfigError) -> Failure {
    Failure::new(ExitCode::Config, e)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let env = Environment::capture();
    // One async worker thread for the daemon and the other commands. The daemon's work is one
    // RSA signature per query at a rate Checus limits (5/s by default); one thread signs about
    // 2,200 queries/s (BENCHMARKS.md run 1), and a second only added cross-thread wake-ups
    // and contention with the host's other processes: 0.354 -> 0.344 ms of CPU per refund.
    // SQLite runs on the blocking pool, so a slow disk never stalls the queries in flight.
    // The sandbox stands in for Checus and serves many clients at once: one worker per core
    // (with one, it capped BENCHMARKS.md run 2 at 88 % of the ideal throughput).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !matches!(cli.command, Command::Sandbox { .. }) {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("checus-reconciler: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Failure as u8);
        }
    };
    let result = runtime.block_on(dispatch(cli, env));
    let code = match result {
        Ok(code) => code,
        Err(Failure { code, error }) => {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "checus-reconciler: error: {error}");
            for cause in error.chain().skip(1) {
                let _ = write!(stderr, ": {cause}");
            }
            let _ = writeln!(stderr);
            code
        }
    };
    std::process::ExitCode::from(code as u8)
}

fn init_logging(format: LogFormat, level: &str) {
    // Operator commands log to stderr as asked; only `run` looks at $JOURNAL_STREAM.
    checus_reconciler::logging::init(format, level, &Environment::default());
}

/// Who is acting, for the audit log: --by (or $CHECUS_RECONCILER_OPERATOR), else the login.
fn actor(args: &OperatorArgs, env: &Environment) -> Result<String, Failure> {
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
        Some(n) if n.chars().count() <= 128 => Ok(n),
        Some(_) => Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("--by: at most 128 characters"),
        )),
        None => Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("say who you are for the audit log with --by NAME"),
        )),
    }
}

/// A non-empty reason of at most 2000 characters (the audit log's limit).
fn reason(text: &str) -> Result<&str, Failure> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > 2000 {
        return Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("--reason: 1 to 2000 characters"),
        ));
    }
    Ok(t)
}

fn parse_ago(flag: &str, text: &str) -> Result<Duration, Failure> {
    parse_duration(text).map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("{flag}: {e}")))
}

fn since_arg(
    flag: &str,
    text: &str,
    now: checus_reconciler::domain::Timestamp,
) -> Result<checus_reconciler::domain::Timestamp, Failure> {
    parse_since(text, now)
        .map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("{flag}: {e}")))
}

fn load_config(path: &Path, env: &Environment) -> Result<Config, Failure> {
    Config::load(path, env).map_err(config_failure)
}

fn resolve_ledger(args: &LedgerArgs, env: &Environment) -> Result<PathBuf, Failure> {
    if let Some(p) = &args.ledger {
        return Ok(p.clone());
    }
    match &args.config {
        Some(c) => Ok(load_config(c, env)?.ledger_path),
        None => Err(Failure::new(
            ExitCode::Usage,
            anyhow::anyhow!("name the ledger with --ledger PATH or --config FILE"),
        )),
    }
}

fn open_existing(args: &LedgerArgs, env: &Environment) -> Result<Ledger, Failure> {
    let path = resolve_ledger(args, env)?;
    Ledger::open_existing(&path).map_err(ledger_failure)
}

fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Outcome {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Failure::new(ExitCode::Failure, e))?;
    println!("{text}");
    Ok(ExitCode::Ok)
}

/// Prints `value` as JSON for scripts, or rendered by `render` for people.
fn emit<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> Outcome {
    if json {
        return print_json(value);
    }
    print!("{}", render(value));
    Ok(ExitCode::Ok)
}

/// The refund is not in this ledger (exit 6).
fn not_in_ledger(no: &OutRefundNo, l: &Ledger) -> Failure {
    Failure::new(
        ExitCode::NotFound,
        anyhow::anyhow!("refund {no} is not in the ledger {}", l.path().display()),
    )
}

fn parse_refund_no(text: &str) -> Result<OutRefundNo, Failure> {
    OutRefundNo::parse(text).map_err(|e| Failure::new(ExitCode::Input, e))
}

/// Shutdown on SIGTERM/SIGINT (the one place the token is cancelled), reload on SIGHUP.
fn install_signals(
    token: CancellationToken,
    reload: Option<(tokio::sync::mpsc::Sender<Reloader>, Reloader)>,
) -> Result<(), Failure> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Failure::new(ExitCode::Failure, e).context("installing signal handlers"))?;
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => match &reload {
                    Some((tx, reloader)) => {
                        tracing::info!("SIGHUP received; reloading configuration");
                        let _ = tx.send(Arc::clone(reloader)).await;
                    }
                    None => tracing::info!("SIGHUP ignored by this command"),
                },
                _ => {
                    tracing::info!(signal, "shutdown signal received");
                    token.cancel();
                }
            }
        }
    });
    Ok(())
}

impl Failure {
    fn context(mut self, what: &'static str) -> Self {
        self.error = self.error.context(what);
        self
    }
}

async fn dispatch(cli: Cli, env: Environment) -> Outcome {
    let clock = SystemClock;
    match cli.command {
        Command::Init(args) => {
            // info: a migration's "ledger migrated" line names the backup it took.
            init_logging(LogFormat::Text, "info");
            let path = resolve_ledger(&args, &env)?;
            let ledger = Ledger::open(&path).map_err(ledger_failure)?;
            println!(
                "ledger ready: {} (schema version {})",
                ledger.path().display(),
                checus_reconciler::ledger::SCHEMA_VERSION
            );
            Ok(ExitCode::Ok)
        }
        Command::CheckConfig(ConfigArgs { config }) => {
            init_logging(LogFormat::Text, "warn");
            let cfg = load_config(&config, &env)?;
            let keys = cfg.keys.load().map_err(config_failure)?;
            checus_reconciler::gateway::GatewayClient::new(
                cfg.gateway.clone(),
                keys.merchant.clone(),
                keys.gateway.clone(),
                Arc::new(SystemClock),
            )
            .map_err(|e| Failure::new(ExitCode::Config, e))?;
            for w in &keys.warnings {
                println!("warning: {w}");
            }
            println!(
                "config ok: {} (ledger {}, gateway {})",
                config.display(),
                cfg.ledger_path.display(),
                cfg.gateway.base_url
            );
            Ok(ExitCode::Ok)
        }
        Command::Run(ConfigArgs { config }) => {
            let cfg = load_config(&config, &env)?;
            let sink = checus_reconciler::logging::init(cfg.log.format, &cfg.log.level, &env);
            if let checus_reconciler::logging::Sink::TextAfterJournaldFailed(e) = &sink {
                tracing::warn!(error = %e, "journald socket unavailable; logging text to stderr");
            }
            let keys = cfg.keys.load().map_err(config_failure)?;
            let token = CancellationToken::new();
            let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
            let reloader: Reloader = {
                let (config, env) = (config.clone(), env.clone());
                Arc::new(move || {
                    let cfg = Config::load(&config, &env)?;
                    let keys = cfg.keys.load()?;
                    Ok((cfg, keys))
                })
            };
            install_signals(token.clone(), Some((reload_tx, reloader)))?;
            daemon::run(
                cfg,
                keys,
                Arc::new(SystemClock),
                token,
                reload_rx,
                daemon::Hooks {
                    notify: checus_reconciler::notify::Notifier::from_env(&env),
                    ..daemon::Hooks::default()
                },
            )
            .await
            .map_err(|e| match e {
                DaemonError::Ledger(e) => ledger_failure(e),
                DaemonError::AlreadyRunning { .. } => Failure::new(ExitCode::Ledger, e),
                DaemonError::Gateway(_) => Failure::new(ExitCode::Config, e),
                other => Failure::new(ExitCode::Failure, other),
            })?;
            Ok(ExitCode::Ok)
        }
        Command::Status {
            ledger,
            stale_after,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let stale_after = parse_ago("--stale-after", &stale_after)?;
            let l = open_existing(&ledger, &env)?;
            let health = l.health(clock.now(), stale_after).map_err(ledger_failure)?;
            if json {
                print_json(&health)?;
            } else {
                print!("{}", report::health_table(&health));
            }
            Ok(if health.needs_human {
                ExitCode::NeedsHuman
            } else {
                ExitCode::Ok
            })
        }
        Command::Stuck {
            ledger,
            older_than,
            limit,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let now = clock.now();
            let cutoff = since_arg("--older-than", &older_than, now)?;
            let l = open_existing(&ledger, &env)?;
            let rows = l.stuck(cutoff, limit).map_err(ledger_failure)?;
            if json {
                return print_json(&rows);
            }
            print!("{}", report::stuck_table(&rows, now));
            Ok(ExitCode::Ok)
        }
        Command::Failed {
            ledger,
            since,
            limit,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let since = since_arg("--since", &since, clock.now())?;
            let l = open_existing(&ledger, &env)?;
            let rows = l.failed_since(since, limit).map_err(ledger_failure)?;
            emit(json, &rows, |v| report::failed_table(v))
        }
        Command::Explain {
            ledger,
            out_refund_no,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let no = parse_refund_no(&out_refund_no)?;
            let l = open_existing(&ledger, &env)?;
            let Some(t) = l.timeline(&no).map_err(ledger_failure)? else {
                return Err(not_in_ledger(&no, &l));
            };
            emit(json, &t, report::timeline)
        }
        Command::RetryNow {
            ledger,
            out_refund_no,
            all_flagged,
            operator,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let by = actor(&operator, &env)?;
            let l = open_existing(&ledger, &env)?;
            let now = clock.now();
            let done = match out_refund_no {
                Some(no) if !all_flagged => {
                    let no = parse_refund_no(&no)?;
                    l.retry_now(&no, &by, now).map_err(ledger_failure)?;
                    vec![no]
                }
                Some(_) => {
                    return Err(Failure::new(
                        ExitCode::Usage,
                        anyhow::anyhow!("name one refund or --all-flagged, not both"),
                    ));
                }
                None => l.retry_all_flagged(&by, now).map_err(ledger_failure)?,
            };
            let names: Vec<String> = done.iter().map(ToString::to_string).collect();
            if json {
                return print_json(&serde_json::json!({
                    "due_at": checus_reconciler::domain::format_ts(now),
                    "refunds": names,
                }));
            }
            for n in &names {
                println!("{n}: due now, backoff restarted");
            }
            println!(
                "{} refunds due now; the running daemon queries them at its next sweep",
                names.len()
            );
            Ok(ExitCode::Ok)
        }
        Command::Resolve {
            ledger,
            out_refund_no,
            status,
            reason: why,
            operator,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let by = actor(&operator, &env)?;
            let why = reason(&why)?;
            let no = parse_refund_no(&out_refund_no)?;
            let l = open_existing(&ledger, &env)?;
            let row = l
                .resolve(&no, status.into(), &by, why, clock.now())
                .map_err(ledger_failure)?;
            if json {
                return print_json(&row);
            }
            println!(
                "{}: {} (source operator, by {by}, recorded in operator_actions)",
                row.out_refund_no, row.status
            );
            Ok(ExitCode::Ok)
        }
        Command::Discrepancies { ledger, all, json } => {
            init_logging(LogFormat::Text, "warn");
            let l = open_existing(&ledger, &env)?;
            let rows = l.discrepancies(all).map_err(ledger_failure)?;
            emit(json, &rows, |v| report::discrepancy_table(v))
        }
        Command::ResolveDiscrepancy {
            ledger,
            id,
            reason: why,
            operator,
        } => {
            init_logging(LogFormat::Text, "warn");
            let by = actor(&operator, &env)?;
            let why = reason(&why)?;
            let l = open_existing(&ledger, &env)?;
            l.resolve_discrepancy(id, &by, why, clock.now())
                .map_err(ledger_failure)?;
            println!("discrepancy {id} resolved by {by}");
            Ok(ExitCode::Ok)
        }
        Command::Export {
            ledger,
            since,
            format,
            output,
        } => {
            init_logging(LogFormat::Text, "warn");
            let since = since_arg("--since", &since, clock.now())?;
            let l = open_existing(&ledger, &env)?;
            let rows = l.export_since(since).map_err(ledger_failure)?;
            let sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(
                    std::fs::File::options()
                        .write(true)
                        .create_new(true)
                        .open(path)
                        .with_context(|| format!("creating {}", path.display()))
                        .map_err(|e| Failure::new(ExitCode::Input, e))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sink = std::io::BufWriter::new(sink);
            let fail = |e: anyhow::Error| Failure::new(ExitCode::Failure, e);
            match format {
                ExportFormat::Csv => {
                    let mut w = csv::Writer::from_writer(&mut sink);
                    for r in &rows {
                        w.serialize(r).map_err(|e| fail(e.into()))?;
                    }
                    w.flush().map_err(|e| fail(e.into()))?;
                }
                ExportFormat::Jsonl => {
                    for r in &rows {
                        serde_json::to_writer(&mut sink, r).map_err(|e| fail(e.into()))?;
                        sink.write_all(b"\n").map_err(|e| fail(e.into()))?;
                    }
                }
            }
            sink.flush().map_err(|e| fail(e.into()))?;
            if let Some(path) = output {
                eprintln!("exported {} refunds to {}", rows.len(), path.display());
            }
            Ok(ExitCode::Ok)
        }
        Command::Prune {
            ledger,
            finalized_before,
            dry_run,
            archive,
            no_archive: _,
            reason: why,
            operator,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let now = clock.now();
            let cutoff = since_arg("--finalized-before", &finalized_before, now)?;
            let l = open_existing(&ledger, &env)?;
            let report = if dry_run {
                checus_reconciler::ledger::PruneReport {
                    prune_id: None,
                    finalized_before: cutoff,
                    counts: l.prune_plan(cutoff).map_err(ledger_failure)?,
                    archive: None,
                    archive_sha256: None,
                    dry_run: true,
                }
            } else {
                let by = actor(&operator, &env)?;
                let why = reason(why.as_deref().unwrap_or(""))?;
                // The audit row keeps an absolute path: a relative one means nothing later.
                let archive = archive
                    .map(|a| std::path::absolute(&a).map_err(|e| Failure::new(ExitCode::Usage, e)))
                    .transpose()?;
                l.prune(cutoff, &by, why, archive.as_deref(), now)
                    .map_err(ledger_failure)?
            };
            emit(json, &report, report::prune_summary)
        }
        Command::Migrate(args) => migrate(args, &env),
        Command::Backup { ledger, path, json } => {
            init_logging(LogFormat::Text, "warn");
            let l = open_existing(&ledger, &env)?;
            let b = l.backup(&path).map_err(ledger_failure)?;
            if json {
                return print_json(&b);
            }
            println!(
                "backup written: {} ({} bytes, {} refunds, integrity checked)",
                b.path.display(),
                b.bytes,
                b.refunds
            );
            Ok(ExitCode::Ok)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "checus-reconciler", &mut std::io::stdout());
            Ok(ExitCode::Ok)
        }
        Command::Manpage { out_dir } => {
            use clap::CommandFactory;
            let cmd = Cli::command();
            let io = |e: std::io::Error| Failure::new(ExitCode::Failure, e);
            match out_dir {
                None => clap_mangen::Man::new(cmd)
                    .render(&mut std::io::stdout())
                    .map_err(io)?,
                Some(dir) => {
                    std::fs::create_dir_all(&dir).map_err(io)?;
                    clap_mangen::generate_to(cmd, &dir).map_err(io)?;
                }
            }
            Ok(ExitCode::Ok)
        }

        Command::List {
            ledger,
            status,
            flagged,
            since,
            limit,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let since = since
                .map(|s| parse_since(&s, clock.now()))
                .transpose()
                .map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("--since: {e}")))?;
            let l = open_existing(&ledger, &env)?;
            let rows = l
                .list(&ListFilter {
                    status: status.map(RefundStatus::from),
                    flagged: flagged.then_some(true),
                    since,
                    limit,
                })
                .map_err(ledger_failure)?;
            emit(json, &rows, |v| report::refund_table(v))
        }
        Command::Show {
            ledger,
            out_refund_no,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            let no = parse_refund_no(&out_refund_no)?;
            let l = open_existing(&ledger, &env)?;
            let Some(detail) = l.show(&no).map_err(ledger_failure)? else {
                return Err(not_in_ledger(&no, &l));
            };
            emit(json, &detail, report::detail)
        }
        Command::Add {
            ledger,
            out_refund_no,
            amount,
            currency,
            refund_trade_no,
            out_trade_no,
            status,
            created_at,
        } => {
            init_logging(LogFormat::Text, "warn");
            let raw = RawRefund {
                out_refund_no,
                amount,
                currency,
                refund_trade_no,
                out_trade_no,
                status: Some(RefundStatus::from(status).to_string()),
                created_at,
            };
            let refund = raw
                .validate(clock.now())
                .map_err(|e| Failure::new(ExitCode::Input, e))?;
            let path = resolve_ledger(&ledger, &env)?;
            let l = Ledger::open(&path).map_err(ledger_failure)?;
            l.insert_refund(&refund).map_err(ledger_failure)?;
            println!(
                "added {} {} {} ({})",
                refund.out_refund_no, refund.amount, refund.currency, refund.status
            );
            Ok(ExitCode::Ok)
        }
        Command::Import {
            ledger,
            file,
            format,
        } => {
            init_logging(LogFormat::Text, "warn");
            let jsonl = match format {
                Some(f) => f == ImportFormat::Jsonl,
                None => matches!(
                    file.extension().and_then(|e| e.to_str()),
                    Some("jsonl" | "ndjson" | "json")
                ),
            };
            let rows = import::parse_file(&file, jsonl, clock.now(), &mut |n| {
                eprintln!("validated {n} rows");
            })
            .map_err(|e| Failure::new(ExitCode::Input, e))?;
            let (lines, refunds): (Vec<u64>, Vec<_>) = rows.into_iter().unzip();
            let path = resolve_ledger(&ledger, &env)?;
            let mut l = Ledger::open(&path).map_err(ledger_failure)?;
            let total = refunds.len();
            let written = l
                .import(&refunds, &mut |n| eprintln!("imported {n} of {total} rows"))
                .map_err(|e| match e {
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
                    other => ledger_failure(other),
                })?;
            println!(
                "imported {written} refunds from {} into {}",
                file.display(),
                path.display()
            );
            Ok(ExitCode::Ok)
        }
        Command::Query {
            config,
            out_refund_no,
            json,
        } => {
            let cfg = load_config(&config.config, &env)?;
            init_logging(cfg.log.format, "warn");
            let no = parse_refund_no(&out_refund_no)?;
            let keys = cfg.keys.load().map_err(config_failure)?;
            let ledger = Ledger::open_existing(&cfg.ledger_path).map_err(ledger_failure)?;
            let client = checus_reconciler::gateway::GatewayClient::new(
                cfg.gateway.clone(),
                keys.merchant.clone(),
                keys.gateway.clone(),
                Arc::new(SystemClock),
            )
            .map_err(|e| Failure::new(ExitCode::Config, e))?;
            let worker = checus_reconciler::worker::Worker::new(
                checus_reconciler::worker::LedgerHandle::new(ledger),
                client,
                cfg.policy.clone(),
                cfg.worker.clone(),
                Arc::new(SystemClock),
            );
            let processed = worker.query_now(&no).await.map_err(|e| match e {
                checus_reconciler::worker::WorkerError::NotFound(_) => {
                    Failure::new(ExitCode::NotFound, e)
                }
                checus_reconciler::worker::WorkerError::Ledger(e) => ledger_failure(e),
            })?;
            let summary = report::QuerySummary::from_processed(&no, &processed);
            if json {
                return print_json(&summary);
            }
            print!("{}", summary.render());
            Ok(ExitCode::Ok)
        }
        Command::Sandbox {
            listen,
            scripts,
            latency,
        } => {
            init_logging(LogFormat::Text, "info");
            if !listen.ip().is_loopback() {
                return Err(Failure::new(
                    ExitCode::Usage,
                    anyhow::anyhow!(
                        "--listen {listen}: the sandbox serves loopback addresses only"
                    ),
                ));
            }
            let latency = parse_duration(&latency)
                .map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("--latency: {e}")))?;
            let scripts = match scripts {
                None => Vec::new(),
                Some(path) => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("{}", path.display()))
                        .map_err(|e| Failure::new(ExitCode::Input, e))?;
                    sandbox::parse_scripts_jsonl(std::io::BufReader::new(file)).map_err(|e| {
                        Failure::new(ExitCode::Input, anyhow::anyhow!("{}: {e}", path.display()))
                    })?
                }
            };
            let mut options = sandbox::SandboxOptions::insecure_test(Arc::new(SystemClock));
            options.listen = listen;
            options.latency = latency;
            let sb = sandbox::start(options)
                .await
                .map_err(|e| Failure::new(ExitCode::Failure, e).context("starting the sandbox"))?;
            sb.script_many(scripts)
                .map_err(|e| Failure::new(ExitCode::Input, e))?;
            let token = CancellationToken::new();
            install_signals(token.clone(), None)?;
            // The first stdout line is the readiness signal scripts wait for.
            println!("sandbox listening on {}", sb.base_url());
            token.cancelled().await;
            sb.shutdown().await;
            Ok(ExitCode::Ok)
        }
        Command::Demo {
            dir,
            refunds,
            seed,
            timeout_secs,
        } => {
            init_logging(LogFormat::Text, "warn");
            let token = CancellationToken::new();
            install_signals(token.clone(), None)?;
            println!(
                "demo: {refunds} refunds (seed {seed}) against the simulated Checus gateway on 127.0.0.1 ..."
            );
            let report = demo::run(
                demo::DemoOptions {
                    dir,
                    refunds,
                    seed,
                    timeout: Duration::from_secs(timeout_secs),
                },
                token,
            )
            .await
            .map_err(|e| Failure::new(ExitCode::Failure, e))?;
            print!("{}", report::demo_summary(&report));
            if report.matches_truth() {
                Ok(ExitCode::Ok)
            } else {
                Ok(ExitCode::DemoMismatch)
            }
        }
    }
}

/// `migrate [--dry-run] [--json]`: upgrades an older ledger (backup first) or, with
/// `--dry-run`, prints the migrations that would run and changes nothing. The work is in
/// `ledger::migrate`; this only prints. Exit 4 when the ledger is refused or the migration
/// failed (the ledger is then unchanged).
fn migrate(args: checus_reconciler::cli::MigrateArgs, env: &Environment) -> Outcome {
    use checus_reconciler::ledger::migrate::{self, MigrationReport};
    init_logging(LogFormat::Text, "warn");
    let path = resolve_ledger(&args.ledger, env)?;
    let now = SystemClock.now();
    let report = if args.dry_run {
        migrate::plan(&path, now)
    } else {
        migrate::apply(&path, now)
    }
    .map_err(ledger_failure)?;
    emit(args.json, &report, |r: &MigrationReport| {
        let ledger = r.ledger.display();
        if r.is_current() {
            return format!(
                "ledger {ledger} is at schema version {} already; nothing to do\n",
                r.to
            );
        }
        let mut out = format!("ledger {ledger}: schema version {} -> {}\n", r.from, r.to);
        if let Some(b) = &r.backup {
            let verb = if r.dry_run {
                "would be copied to"
            } else {
                "copied to"
            };
            out += &format!("backup: {verb} {}\n", b.display());
        }
        for step in &r.steps {
            out += &format!("{} ({} -> {}):\n", step.name, step.from, step.to);
            for line in &step.summary {
                out += &format!("  - {line}\n");
            }
        }
        out += &if r.dry_run {
            "dry run: nothing was changed; run without --dry-run to migrate\n".to_owned()
        } else {
            format!("migrated: ledger {ledger} is at schema version {}\n", r.to)
        };
        out
    })
}

/// `--since` takes an RFC 3339 time or a duration ago (`24h`).
fn parse_since(
    text: &str,
    now: checus_reconciler::domain::Timestamp,
) -> Result<checus_reconciler::domain::Timestamp, String> {
    if let Ok(t) = parse_ts(text) {
        return Ok(t);
    }
    let ago = parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 24h"))?;
    let ago = chrono::TimeDelta::from_std(ago).map_err(|e| e.to_string())?;
    Ok(now - ago)
}
