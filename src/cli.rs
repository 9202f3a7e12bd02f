//! The command line, as clap definitions. The doc comments are the `--help` text; exit codes
//! are a documented contract (README "Exit codes") and live in [`ExitCode`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Drives every pending Checus refund to a recorded, final outcome.
#[derive(Debug, Parser)]
#[command(name = "checus-reconciler", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the ledger is: `--ledger PATH`, or `ledger.path` from `--config FILE`.
#[derive(Debug, Args, Clone, Default)]
pub struct LedgerArgs {
    /// The config file (its ledger.path is used unless --ledger is given).
    #[arg(
        long,
        short = 'c',
        env = "CHECUS_RECONCILER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// The ledger file (overrides the config's ledger.path).
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
}

/// The config file, required.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// The config file.
    #[arg(
        long,
        short = 'c',
        env = "CHECUS_RECONCILER_CONFIG",
        value_name = "FILE"
    )]
    pub config: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the ledger file and apply schema.sql (idempotent).
    Init(LedgerArgs),
    /// Run the reconciliation daemon until SIGTERM/SIGINT (SIGHUP reloads the config).
    Run(ConfigArgs),
    /// Counts by status, due now, flagged, oldest pending, last sweep, and what needs a human.
    /// Exits 8 when something does (flagged refunds, a halted worker, a stale worker,
    /// unresolved discrepancies), so a monitoring check can run it.
    Status {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Warn (and exit 8) when the worker has not swept for this long.
        #[arg(long, default_value = "5m", value_name = "DURATION")]
        stale_after: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pending refunds created longer ago than --older-than, oldest first.
    Stuck {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Only refunds pending for at least this long, e.g. 2h.
        #[arg(long, default_value = "2h", value_name = "DURATION")]
        older_than: String,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Refunds that became REFUND_FAILED since a time, in the order they failed.
    Failed {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// An RFC 3339 time, or this long ago (e.g. 24h).
        #[arg(long, default_value = "24h", value_name = "TIME|AGO")]
        since: String,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One refund's history in time order: creation, notifications, each query with its
    /// outcome and latency, each decision, discrepancies, operator actions, the final outcome.
    Explain {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The merchant's refund number.
        out_refund_no: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a pending refund due now and restart its backoff (audited). The running daemon
    /// queries it at its next sweep.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["out_refund_no", "all_flagged"]))]
    RetryNow {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The merchant's refund number.
        out_refund_no: Option<String>,
        /// Every pending refund flagged for review.
        #[arg(long)]
        all_flagged: bool,
        #[command(flatten)]
        operator: OperatorArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Operator override: record a final status for a still-pending refund, audited with who,
    /// when and why. A final refund is refused (exit 5): a final outcome never changes.
    Resolve {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The merchant's refund number.
        out_refund_no: String,
        /// The final status, as confirmed with Checus.
        #[arg(long, value_enum)]
        status: FinalStatusArg,
        /// Why (kept in the audit log), e.g. a Checus support ticket.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        operator: OperatorArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Discrepancies between the ledger and Checus or notifications (unresolved ones unless --all).
    Discrepancies {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a discrepancy resolved, audited with who, when and why. What was detected stays.
    ResolveDiscrepancy {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The discrepancy id (from `discrepancies` or `explain`).
        id: i64,
        /// How it was resolved.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Export refunds created since a time, with every column.
    Export {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// An RFC 3339 time, or this long ago (e.g. 30d).
        #[arg(long, value_name = "TIME|AGO")]
        since: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Write to this file (created new) instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Remove final refunds finalized before a time (with their attempts, notifications and
    /// resolved discrepancies, and old sweeps): archived to a file first, then deleted in one
    /// audited transaction. Refunds with unresolved discrepancies are kept. Pending refunds are
    /// never touched.
    #[command(group = clap::ArgGroup::new("mode").required(true).args(["dry_run", "archive", "no_archive"]))]
    Prune {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The cutoff: an RFC 3339 time, or this long ago (e.g. 400d).
        #[arg(long, value_name = "TIME|AGO")]
        finalized_before: String,
        /// Only count what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Archive the removed rows to this file (JSON lines, created new).
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
        /// Delete without an archive.
        #[arg(long)]
        no_archive: bool,
        /// Why (kept in the audit log); required unless --dry-run.
        #[arg(long, required_unless_present = "dry_run")]
        reason: Option<String>,
        #[command(flatten)]
        operator: OperatorArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An online, consistent copy of the ledger (SQLite VACUUM INTO), checked after writing.
    /// The daemon and the merchant's app keep running meanwhile.
    Backup {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The copy to create; never overwritten.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upgrade an older ledger to this build's schema version: an online backup next to it
    /// first (named in the output), then every migration in one transaction. `init` and `run`
    /// do the same on their own; the read and operator commands refuse an older ledger (exit 4).
    Migrate(MigrateArgs),
    /// Print a shell completion script (for packaging).
    #[command(hide = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (for packaging): to --out-dir, or the main page to stdout.
    #[command(hide = true)]
    Manpage {
        /// Directory for checus-reconciler.1 and one page per subcommand.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// List refunds, oldest first.
    List {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only refunds flagged for review.
        #[arg(long)]
        flagged: bool,
        /// Only refunds created at or after this RFC 3339 time, or this long ago (e.g. 24h).
        #[arg(long, value_name = "TIME|AGO")]
        since: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one refund: its row, every attempt and every discrepancy.
    Show {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The merchant's refund number.
        out_refund_no: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Insert one refund (as the merchant's app would after calling /refund).
    Add {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The merchant's refund number (outRefundNo).
        #[arg(long)]
        out_refund_no: String,
        /// Amount in major units, e.g. 12.50.
        #[arg(long)]
        amount: String,
        /// ISO 4217 currency, e.g. USD.
        #[arg(long)]
        currency: String,
        /// The gateway's refund number from the /refund answer.
        #[arg(long)]
        refund_trade_no: Option<String>,
        /// The original order's merchant number.
        #[arg(long)]
        out_trade_no: Option<String>,
        /// REFUND_PENDING (default), or REFUND_FAILED when /refund failed at once.
        #[arg(long, value_enum, default_value_t = StatusArg::Pending)]
        status: StatusArg,
        /// When the refund was issued (RFC 3339); default now.
        #[arg(long)]
        created_at: Option<String>,
    },
    /// Import refunds from CSV or JSON lines: validated first, then written all-or-nothing.
    Import {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The file (.csv, or .jsonl/.ndjson).
        file: PathBuf,
        /// Override the format detected from the extension.
        #[arg(long, value_enum)]
        format: Option<ImportFormat>,
    },
    /// Query one refund at Checus now; the attempt is recorded like any other.
    Query {
        #[command(flatten)]
        config: ConfigArgs,
        /// The merchant's refund number.
        out_refund_no: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config file and load the keys, then exit.
    CheckConfig(ConfigArgs),
    /// Serve the simulated Checus gateway on loopback (tests, demos, benchmarks).
    Sandbox {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Scripts, one JSON object per line.
        #[arg(long, value_name = "FILE")]
        scripts: Option<PathBuf>,
        /// Latency added to every answer, e.g. 50ms.
        #[arg(long, default_value = "0ms")]
        latency: String,
    },
    /// Run the whole thing against the simulated gateway with short timings, then check it.
    Demo {
        /// Parent folder for the run's ledger (each run gets a fresh subfolder).
        #[arg(long, default_value = "checus-demo")]
        dir: PathBuf,
        /// Refunds to seed.
        #[arg(long, default_value_t = 300)]
        refunds: usize,
        /// Seed for the scripted outcomes.
        #[arg(long, default_value_t = 20261125)]
        seed: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
}

/// `migrate`: which ledger, and whether to only show the plan.
#[derive(Debug, Args, Clone)]
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

/// A status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// REFUND_PENDING
    #[value(name = "REFUND_PENDING", alias = "pending")]
    Pending,
    /// REFUND_SUCCESS
    #[value(name = "REFUND_SUCCESS", alias = "success")]
    Success,
    /// REFUND_FAILED
    #[value(name = "REFUND_FAILED", alias = "failed")]
    Failed,
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

/// Who is acting, for the audit log.
#[derive(Debug, Args, Clone, Default)]
pub struct OperatorArgs {
    /// Your name for the audit log (default: $SUDO_USER, else $USER, else $LOGNAME).
    #[arg(long, value_name = "NAME", env = "CHECUS_RECONCILER_OPERATOR")]
    pub by: Option<String>,
}

/// A final status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FinalStatusArg {
    /// REFUND_SUCCESS
    #[value(name = "REFUND_SUCCESS", alias = "success")]
    Success,
    /// REFUND_FAILED
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

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Import file formats.
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
    /// Success.
    Ok = 0,
    /// A runtime failure (I/O, the ledger failed mid-operation).
    Failure = 1,
    /// Bad command-line usage (clap).
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
    /// error or clock skew, a stale worker, unresolved discrepancies).
    NeedsHuman = 8,
}
