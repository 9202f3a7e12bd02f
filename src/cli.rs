//! The command line, as clap definitions. The doc comments are the `--help` text; exit codes
//! are a documented contract (README "Exit codes") and live in [`ExitCode`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::parse_duration;
use crate::domain::{Timestamp, parse_ts};

/// Drives every pending Checus refund to a recorded, final outcome.
#[derive(Debug, Parser)]
#[command(name = "checus-reconciler", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the ledger is: `--ledger PATH`, or `ledger.path` from `--config FILE`.
#[derive(Debug, Args, Clone, Default)]
pub struct LedgerArgs {
    /// The config file (its ledger.path or ledger.url is used unless --ledger is given).
    #[arg(
        long,
        short = 'c',
        env = "CHECUS_RECONCILER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// The SQLite ledger file (overrides the config's ledger.path or ledger.url).
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
}

/// The config file, required (`run`, `query`, `check-config`).
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// The TOML config file: gateway, keys, ledger and worker settings.
    #[arg(
        long,
        short = 'c',
        env = "CHECUS_RECONCILER_CONFIG",
        value_name = "FILE"
    )]
    pub config: PathBuf,
}

/// The subcommands, one typed args struct each; `src/commands/` has one handler per variant.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the ledger file and apply schema.sql (idempotent).
    Init(InitArgs),
    /// Run the reconciliation daemon until SIGTERM/SIGINT (SIGHUP reloads the config).
    ///
    /// With `[http] listen` in the config it also serves GET /metrics (Prometheus), /healthz
    /// (liveness) and /readyz (readiness) on that address, bound before it reports ready, and
    /// receives Checus refund notifications on POST `http.notify_path` (default
    /// /checus/refund-notify): verified, recorded, then acknowledged. With `[http] api_token`
    /// as well, the refunds API for the merchant's app: POST /v1/refunds and
    /// GET /v1/refunds/{outRefundNo}, with `Authorization: Bearer <token>`.
    Run(ConfigArgs),
    /// Counts by status, due now, flagged, oldest pending, last sweep, and what needs a human.
    /// Exits 8 when something does (flagged refunds, a halted or stale worker, the gateway
    /// unavailable, failing sweeps, unreadable rows, refunds never scheduled or overdue and
    /// unflagged, unresolved discrepancies, a prune row left running, dead webhook events), so
    /// a monitoring check can run it. Refunds are judged by the schedule in --config, else by the defaults.
    Status(StatusArgs),
    /// Pending refunds created longer ago than --older-than, oldest first.
    Stuck(StuckArgs),
    /// Refunds that became REFUND_FAILED since a time, in the order they failed.
    Failed(FailedArgs),
    /// One refund's history in time order: creation, notifications, each query with its
    /// outcome and latency, each decision, discrepancies, operator actions, the final outcome.
    Explain(RefundArgs),
    /// Make a pending refund due now and restart its backoff (audited). Then says who queries
    /// it: the running daemon at its next sweep, or that the daemon is halted or paused, or
    /// that no daemon runs on the ledger (nobody holds its lock).
    RetryNow(RetryNowArgs),
    /// Acknowledge a refund's review flag (pending or final) and clear it, audited.
    ClearFlag(ClearFlagArgs),
    /// End a halt now: a daemon that stopped querying on a configuration error or clock skew
    /// probes Checus at once instead of at its next halt_recheck (audited with who and why).
    /// Waits for that probe's sweep. Exit 0: querying resumed; 5: nothing to resume (no
    /// daemon runs on this ledger, or it is not halted), nothing written; 8: still halted
    /// after the probe, or no answer within --wait.
    Resume(ResumeArgs),
    /// Operator override: record a final status for a still-pending refund, audited with who,
    /// when and why. A final refund is refused (exit 5): a final outcome never changes.
    Resolve(ResolveArgs),
    /// Discrepancies between the ledger and Checus or notifications (unresolved ones unless --all).
    Discrepancies(DiscrepanciesArgs),
    /// Mark a discrepancy resolved, audited with who, when and why. What was detected stays.
    ResolveDiscrepancy(ResolveDiscrepancyArgs),
    /// Export refunds created since a time, with every column.
    Export(ExportArgs),
    /// Remove final refunds finalized before a time (with their attempts, notifications and
    /// resolved discrepancies, and old sweeps): archived to a file first, then deleted in one
    /// audited transaction. Refunds with unresolved discrepancies are kept. Pending refunds are
    /// never touched.
    Prune(PruneArgs),
    /// An online, consistent copy of the ledger (SQLite VACUUM INTO), checked after writing.
    /// The daemon and the merchant's app keep running meanwhile.
    Backup(BackupArgs),
    /// Upgrade an older ledger to this build's schema version: an online backup next to it
    /// first (named in the output), then every migration in one transaction. `init` and `run`
    /// do the same on their own; the read and operator commands refuse an older ledger (exit 4).
    Migrate(MigrateArgs),
    /// Check that the ledger still has every table, CHECK, index and trigger of schema.sql,
    /// the rules that protect its outcomes; lists what is missing or altered (exit 4 then).
    /// Read-only. Every command also refuses such a ledger when it opens it.
    VerifyLedger(VerifyLedgerArgs),
    /// Print a shell completion script (for packaging).
    #[command(hide = true)]
    Completions(CompletionsArgs),
    /// Write the man pages (for packaging): to --out-dir, or the main page to stdout.
    #[command(hide = true)]
    Manpage(ManpageArgs),
    /// List refunds, oldest first.
    List(ListArgs),
    /// Show one refund: its row, every attempt and every discrepancy.
    Show(RefundArgs),
    /// Insert one refund (as the merchant's app would after calling /refund).
    Add(AddArgs),
    /// Import refunds from CSV or JSON lines: validated first, then written all-or-nothing.
    Import(ImportArgs),
    /// Query one refund at Checus now; the attempt is recorded like any other.
    Query(QueryArgs),
    /// Validate the config file and load the keys, then exit.
    CheckConfig(CheckConfigArgs),
    /// The audit log: operator actions (resolve, retry-now, resolve-discrepancy, prune,
    /// clear-flag, webhooks redeliver) with who, when, why and what each changed; the latest
    /// ones, oldest first.
    Audit(AuditArgs),
    /// Outgoing webhook events (the ledger's outbox): the latest ones, oldest first, with their
    /// delivery state; `webhooks redeliver` sends delivered or dead ones again (audited).
    Webhooks(WebhooksArgs),
    /// Serve the simulated Checus gateway on loopback (tests, demos, benchmarks).
    Sandbox(SandboxArgs),
    /// Run the whole thing against the simulated gateway with short timings, then check it.
    Demo(DemoArgs),
}

/// `init`: which ledger, and how to print the result.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Print JSON: `ledger`, `schema_version`.
    #[arg(long)]
    pub json: bool,
}

/// `check-config`: the config file, and how to print the result.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON: `config`, `ledger`, `gateway`, `warnings`.
    #[arg(long)]
    pub json: bool,
}

/// `webhooks`: which events to list, or `redeliver`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WebhooksArgs {
    /// `redeliver`; without it, the events are listed.
    #[command(subcommand)]
    pub action: Option<WebhooksAction>,
    /// What to list.
    #[command(flatten)]
    pub list: WebhooksListArgs,
}

/// What `webhooks` can do besides listing.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Put delivered or dead events back to pending, due now with a fresh retry window, each
    /// audited with who, when and why. A pending or unknown event refuses the whole command.
    Redeliver(RedeliverArgs),
}

/// A webhook event's delivery state, as `--state` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WebhookStateArg {
    /// Waiting to be sent, or to be retried.
    Pending,
    /// Answered with a 2xx.
    Delivered,
    /// Retried past webhook.give_up_after.
    Dead,
}

/// `webhooks` (list): the filters.
#[derive(Debug, Args)]
pub struct WebhooksListArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Only events in this delivery state.
    #[arg(long, value_enum)]
    pub state: Option<WebhookStateArg>,
    /// Only events about this refund.
    #[arg(long, value_name = "OUT_REFUND_NO")]
    pub refund: Option<String>,
    /// At most this many events, the latest (a list cut short says so).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON: `total`, `shown`, `limit`, `truncated` and the events under `rows`.
    #[arg(long)]
    pub json: bool,
}

/// `webhooks redeliver`: the events, and the audited why and who.
#[derive(Debug, Args)]
pub struct RedeliverArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The event ids (`evt_…`, as `webhooks` lists them).
    #[arg(required = true, value_name = "EVENT_ID")]
    pub event_ids: Vec<String>,
    /// Why (kept in the audit log), e.g. the receiver's outage that was fixed.
    #[arg(long)]
    pub reason: String,
    /// Who is acting, for the audit log.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Print JSON: `event_ids`, `action`, `by`, `at`.
    #[arg(long)]
    pub json: bool,
}

/// `audit`: which operator actions to list.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Only actions about this refund.
    #[arg(long, value_name = "OUT_REFUND_NO")]
    pub refund: Option<String>,
    /// Only actions at or after this RFC 3339 time, or this long ago (e.g. 7d).
    #[arg(long, value_name = "TIME|AGO", value_parser = TimeArg::parse)]
    pub since: Option<TimeArg>,
    /// At most this many actions, the latest (a list cut short says so).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON: `total`, `shown`, `limit`, `truncated` and the actions under `rows`.
    #[arg(long)]
    pub json: bool,
}

/// `status`: the ledger and how long a silent worker counts as stale.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Warn (and exit 8) when the worker has not swept for this long.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub stale_after: Duration,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `stuck`: pending refunds older than a cutoff.
#[derive(Debug, Args)]
pub struct StuckArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Only refunds pending for at least this long, e.g. 2h.
    #[arg(long, default_value = "2h", value_name = "DURATION", value_parser = TimeArg::parse)]
    pub older_than: TimeArg,
    /// At most this many rows (a list cut short says so, with the total).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Print JSON: `total`, `shown`, `limit`, `truncated` and the refunds under `rows`.
    #[arg(long)]
    pub json: bool,
}

/// `failed`: refunds that failed since a time.
#[derive(Debug, Args)]
pub struct FailedArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// An RFC 3339 time, or this long ago (e.g. 24h).
    #[arg(long, default_value = "24h", value_name = "TIME|AGO", value_parser = TimeArg::parse)]
    pub since: TimeArg,
    /// At most this many rows (a list cut short says so, with the total).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Print JSON: `total`, `shown`, `limit`, `truncated` and the refunds under `rows`.
    #[arg(long)]
    pub json: bool,
}

/// `explain` and `show`: one refund, by its merchant number.
#[derive(Debug, Args)]
pub struct RefundArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `retry-now`: one refund, or every flagged one.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["out_refund_no", "all_flagged"]))]
pub struct RetryNowArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The merchant's refund number.
    pub out_refund_no: Option<String>,
    /// Every pending refund flagged for review.
    #[arg(long)]
    pub all_flagged: bool,
    /// Who is acting, for the audit log.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `clear-flag`: the refund, and the audited why and who.
#[derive(Debug, Args)]
pub struct ClearFlagArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// Why (kept in the audit log), e.g. what you checked with Checus.
    #[arg(long)]
    pub reason: String,
    /// Who is acting, for the audit log.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Print JSON: `out_refund_no`, `action`, `by`, `at`.
    #[arg(long)]
    pub json: bool,
}

/// `resume`: the audited why and who, and how long to wait for the daemon's probe.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Why (kept in the audit log), e.g. what was fixed.
    #[arg(long)]
    pub reason: String,
    /// Who is acting, for the audit log.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// How long to wait for the daemon's probe and its answer (0s: do not wait; at most 10m).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_wait)]
    pub wait: Duration,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `resolve`: the refund, its final status, and the audited why and who.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// The final status, as confirmed with Checus.
    #[arg(long, value_enum)]
    pub status: FinalStatusArg,
    /// Why (kept in the audit log), e.g. a Checus support ticket.
    #[arg(long)]
    pub reason: String,
    /// Who is acting, for the audit log.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `discrepancies`: which ones to list.
#[derive(Debug, Args)]
pub struct DiscrepanciesArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Include resolved ones.
    #[arg(long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `resolve-discrepancy`: the discrepancy and the audited why and who.
#[derive(Debug, Args)]
pub struct ResolveDiscrepancyArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The discrepancy id (from `discrepancies` or `explain`).
    pub id: i64,
    /// How it was resolved.
    #[arg(long)]
    pub reason: String,
    /// Who is acting, for the audit log.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Print JSON: the discrepancy as `discrepancies --json` now lists it (with
    /// `resolved_at`, `resolved_by`, `resolution`).
    #[arg(long)]
    pub json: bool,
}

/// `export`: which refunds, in which format, to where.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// An RFC 3339 time, or this long ago (e.g. 30d).
    #[arg(long, value_name = "TIME|AGO", value_parser = TimeArg::parse)]
    pub since: TimeArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Write to this file (created new) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the summary as JSON on stdout: `exported`, `unreadable`, `output`, `format`,
    /// `since` (needs --output: without it, stdout holds the rows).
    #[arg(long, requires = "output")]
    pub json: bool,
}

/// `prune`: the cutoff, the mode (dry run, archive, or neither), and the audited why and who.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["dry_run", "archive", "no_archive"]))]
pub struct PruneArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The cutoff: an RFC 3339 time, or this long ago (e.g. 400d).
    #[arg(long, value_name = "TIME|AGO", value_parser = TimeArg::parse)]
    pub finalized_before: TimeArg,
    /// Only count what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Archive the removed rows to this file (JSON lines, created new).
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// Delete without an archive.
    #[arg(long)]
    pub no_archive: bool,
    /// Why (kept in the audit log); required unless --dry-run.
    #[arg(long, required_unless_present = "dry_run")]
    pub reason: Option<String>,
    /// Who is acting, for the audit log.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `backup`: where the copy goes.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The copy to create; never overwritten.
    pub path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `migrate`: which ledger, and whether to only show the plan.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Print the migrations that would run, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `verify-ledger`: which ledger, and how to print the result.
#[derive(Debug, Args)]
pub struct VerifyLedgerArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `completions`: the shell to write a script for.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `manpage`: stdout, or a directory for every page.
#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Directory for checus-reconciler.1 and one page per subcommand.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `list`: the filters.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Only this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only refunds flagged for review, pending or final: exactly what `status` counts as
    /// flagged.
    #[arg(long)]
    pub flagged: bool,
    /// Only refunds created at or after this RFC 3339 time, or this long ago (e.g. 24h).
    #[arg(long, value_name = "TIME|AGO", value_parser = TimeArg::parse)]
    pub since: Option<TimeArg>,
    /// At most this many rows (a list cut short says so, with the total).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON: `total`, `shown`, `limit`, `truncated` and the refunds under `rows`.
    #[arg(long)]
    pub json: bool,
}

/// `add`: one refund's fields, as text; validated by the same rules as `import`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The merchant's refund number (outRefundNo).
    #[arg(long)]
    pub out_refund_no: String,
    /// Amount in major units, e.g. 12.50.
    #[arg(long)]
    pub amount: String,
    /// ISO 4217 currency, e.g. USD.
    #[arg(long)]
    pub currency: String,
    /// The gateway's refund number from the /refund answer.
    #[arg(long)]
    pub refund_trade_no: Option<String>,
    /// The original order's merchant number.
    #[arg(long)]
    pub out_trade_no: Option<String>,
    /// REFUND_PENDING (default), or REFUND_FAILED when /refund failed at once.
    #[arg(long, value_enum, default_value_t = AddStatusArg::Pending)]
    pub status: AddStatusArg,
    /// When the refund was issued (RFC 3339); default now.
    #[arg(long)]
    pub created_at: Option<String>,
    /// Print JSON: the refund row as stored (the columns of `list --json`).
    #[arg(long)]
    pub json: bool,
}

/// `import`: the file and, optionally, its format.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Where the ledger is.
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The file (.csv, or .jsonl/.ndjson).
    pub file: PathBuf,
    /// Override the format detected from the extension.
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Print JSON: `imported`, `file`, `ledger` (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

/// `query`: the config (for the gateway and the ledger) and the refund.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The config file: the gateway, the keys and the ledger.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sandbox`: where to listen, what to script, how slow to answer.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Scripts, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub scripts: Option<PathBuf>,
    /// Latency added to every answer, e.g. 50ms (at most 10m: slower is a hang, not a latency).
    #[arg(long, default_value = "0ms", value_parser = parse_latency)]
    pub latency: Duration,
}

/// `demo`: where, how many refunds, which seed, how long at most.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Parent folder for the run's ledger (each run gets a fresh subfolder).
    #[arg(long, default_value = "checus-demo")]
    pub dir: PathBuf,
    /// Refunds to seed (1 to 100000).
    #[arg(long, default_value_t = 300, value_parser = parse_demo_refunds)]
    pub refunds: usize,
    /// Seed for the scripted outcomes.
    #[arg(long, default_value_t = 20261125)]
    pub seed: u64,
    /// Give up after this many seconds (1 to 86400).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
    /// Serve /metrics, /healthz, /readyz and the notify path on this address while the demo's
    /// daemon runs (e.g. 127.0.0.1:9464), as `[http] listen` does for `run`; default: a free
    /// loopback port (the demo's gateway sends its notifications there).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

/// `sandbox --latency`: 0 to 10 minutes, in the units of [`parse_duration`] (exit 2 outside).
fn parse_latency(text: &str) -> Result<Duration, String> {
    const LATENCY: crate::config::Bounds<Duration> = crate::config::Bounds {
        key: "--latency",
        least: Duration::ZERO,
        most: Duration::from_secs(600),
    };
    LATENCY.parse_arg(text)
}

/// `resume --wait`: 0s to 10m.
fn parse_wait(text: &str) -> Result<Duration, String> {
    const WAIT: crate::config::Bounds<Duration> = crate::config::Bounds {
        key: "--wait",
        least: Duration::ZERO,
        most: Duration::from_secs(600),
    };
    WAIT.parse_arg(text)
}

/// `demo --refunds`: 1 to 100,000 (each is scripted in memory first; exit 2 outside).
fn parse_demo_refunds(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a count from 1 to 100000")),
    }
}

/// A point in time on the command line: an RFC 3339 time, or a duration before "now".
/// Parsed by clap (so a bad value exits 2 with clap's message) and resolved against the
/// clock when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// This exact time.
    At(Timestamp),
    /// This long before the command runs.
    Ago(Duration),
}

impl TimeArg {
    /// Parses `2026-11-25T07:00:00Z` or `24h` (the units of [`parse_duration`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(t) = parse_ts(text) {
            return Ok(Self::At(t));
        }
        // Text a time could not start like (`24h`, `99999999999d`) gets the duration's own
        // reason, which says when it is too long.
        let like_a_duration = text.chars().all(|c| c.is_ascii_alphanumeric())
            && text.starts_with(|c: char| c.is_ascii_digit())
            && text.ends_with(|c: char| c.is_ascii_alphabetic());
        parse_duration(text).map(Self::Ago).map_err(|e| {
            if like_a_duration {
                e
            } else {
                format!("{text:?} is neither an RFC 3339 time nor a duration like 24h")
            }
        })
    }

    /// The time this names when the command runs at `now`. A duration reaching back before
    /// the earliest representable time means "since the beginning".
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Self::At(t) => t,
            Self::Ago(d) => chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        }
    }
}

/// Any refund status, as `list --status` filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Not final yet: the daemon keeps querying it
    #[value(name = "REFUND_PENDING", alias = "pending")]
    Pending,
    /// Final: Checus paid the refund
    #[value(name = "REFUND_SUCCESS", alias = "success")]
    Success,
    /// Final: the refund failed
    #[value(name = "REFUND_FAILED", alias = "failed")]
    Failed,
}

/// The statuses `add` accepts: what a /refund answer can leave. REFUND_SUCCESS never comes
/// from /refund, so it is not offered (clap refuses it with exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AddStatusArg {
    /// /refund accepted it: the daemon queries it until it is final
    #[value(name = "REFUND_PENDING", alias = "pending")]
    Pending,
    /// /refund failed at once: recorded final, source refund_response
    #[value(name = "REFUND_FAILED", alias = "failed")]
    Failed,
}

impl From<AddStatusArg> for crate::domain::RefundStatus {
    fn from(s: AddStatusArg) -> Self {
        match s {
            AddStatusArg::Pending => Self::Pending,
            AddStatusArg::Failed => Self::Failed,
        }
    }
}

impl From<StatusArg> for crate::domain::RefundStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Pending => Self::Pending,
            StatusArg::Success => Self::Success,
            StatusArg::Failed => Self::Failed,
        }
    }
}

/// Who is acting, for the audit log (`--by`, at most
/// [`MAX_ACTOR_CHARS`](crate::domain::limits::MAX_ACTOR_CHARS) characters).
#[derive(Debug, Args, Clone, Default)]
pub struct OperatorArgs {
    /// Your name for the audit log (default: $SUDO_USER, else $USER, else $LOGNAME).
    #[arg(long, value_name = "NAME", env = "CHECUS_RECONCILER_OPERATOR")]
    pub by: Option<String>,
}

/// A final status, as `resolve --status` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FinalStatusArg {
    /// Checus paid the refund
    #[value(name = "REFUND_SUCCESS", alias = "success")]
    Success,
    /// The refund failed
    #[value(name = "REFUND_FAILED", alias = "failed")]
    Failed,
}

impl From<FinalStatusArg> for crate::domain::FinalStatus {
    fn from(s: FinalStatusArg) -> Self {
        match s {
            FinalStatusArg::Success => Self::Success,
            FinalStatusArg::Failed => Self::Failed,
        }
    }
}

/// How `export` writes the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// How `import` reads the file, when its extension does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// Comma-separated with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Process exit codes: a contract with scripts and monitoring (README "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The command did what was asked (`status`: nothing needs a human).
    Ok = 0,
    /// A runtime failure (I/O, the ledger failed mid-operation).
    Failure = 1,
    /// Bad command-line usage: clap's own errors, and what clap cannot check (no --by name
    /// found, an empty or too long --reason, no ledger named).
    Usage = 2,
    /// The configuration or a key is invalid.
    Config = 3,
    /// The ledger was refused: missing, not a ledger, newer schema, or held by another daemon.
    Ledger = 4,
    /// Input data rejected (add/import): nothing was written.
    Input = 5,
    /// The named refund is not in the ledger.
    NotFound = 6,
    /// The demo's ledger disagrees with the sandbox's truth.
    DemoMismatch = 7,
    /// `status`: something needs a human (flagged refunds, querying halted by a configuration
    /// error or clock skew, a stale worker, unresolved discrepancies, or anything else that
    /// stops reconciliation: see `ledger::Finding`).
    NeedsHuman = 8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    #[test]
    fn the_clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn time_args_are_a_time_or_a_duration_ago() {
        let now = parse_ts("2026-11-25T12:00:00Z").unwrap();
        let cases = [
            ("2026-11-24T07:00:00Z", "2026-11-24T07:00:00Z"),
            ("24h", "2026-11-24T12:00:00Z"),
            ("1h30m", "2026-11-25T10:30:00Z"),
            ("0s", "2026-11-25T12:00:00Z"),
        ];
        for (text, want) in cases {
            let got = TimeArg::parse(text).unwrap().resolve(now);
            assert_eq!(got, parse_ts(want).unwrap(), "{text}");
        }
        for bad in ["", "yesterday", "24", "-1h", "2026-13-01T00:00:00Z"] {
            let e = TimeArg::parse(bad).unwrap_err();
            assert!(
                e.contains("neither an RFC 3339 time nor a duration"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_duration_reaching_before_the_earliest_time_means_since_the_beginning() {
        let now = parse_ts("2026-11-25T12:00:00Z").unwrap();
        let got = TimeArg::Ago(Duration::MAX).resolve(now);
        assert_eq!(got, chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let got = TimeArg::parse("36500d").unwrap().resolve(now);
        assert_eq!(got.format("%Y").to_string(), "1926");
    }

    #[test]
    fn command_line_durations_past_their_range_are_refused_not_panicking() {
        // These panicked (overflow in the parser) or reached chrono with absurd values.
        for text in [
            "99999999999d",
            "18446744073709551615s1s",
            "307445734561825861m",
            "36501d",
        ] {
            let e = TimeArg::parse(text).unwrap_err();
            assert!(e.contains("longer than 36500d"), "{text}: {e}");
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert!(parse_latency("10m").is_ok());
        let e = parse_latency("10m1ms").unwrap_err();
        assert!(e.contains("from 0ms to 10m"), "{e}");
        assert!(parse_demo_refunds("100000").is_ok());
        for bad in ["0", "100001", "18446744073709551616", "-1"] {
            assert!(parse_demo_refunds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_offers_only_what_a_refund_answer_can_leave() {
        let names: Vec<_> = AddStatusArg::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(names, ["REFUND_PENDING", "REFUND_FAILED"]);
    }
}
