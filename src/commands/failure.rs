//! An error on its way out of a command, with the exit code it maps to. Each library error
//! says its own code through [`ExitCoded`], so a command writes `?` and never picks a code by
//! hand; the mapping lives here, on the command side, so ledger/ and gateway/ never import
//! the CLI.

use checus_reconciler::cli::ExitCode;
use checus_reconciler::config::ConfigError;
use checus_reconciler::daemon::DaemonError;
use checus_reconciler::demo::DemoError;
use checus_reconciler::domain::InvalidValue;
use checus_reconciler::import::ImportError;
use checus_reconciler::ledger::LedgerError;
use checus_reconciler::worker::WorkerError;

/// An error on its way out, with the exit code it maps to. `main` prints it once.
#[derive(Debug)]
pub struct Failure {
    /// The documented exit code (README "Exit codes").
    pub code: ExitCode,
    /// The error, with its whole cause chain.
    pub error: anyhow::Error,
}

/// What a command returns: its exit code, or why it failed.
pub type Outcome = Result<ExitCode, Failure>;

impl Failure {
    /// `error`, exiting with `code`.
    pub fn new(code: ExitCode, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }

    /// Bad command-line usage that clap cannot see (exit 2), e.g. a missing `--by`.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self::new(ExitCode::Usage, anyhow::anyhow!("{message}"))
    }

    /// The same failure, with `what` was being done in front of its message.
    pub fn context(mut self, what: &'static str) -> Self {
        self.error = self.error.context(what);
        self
    }
}

/// An error that knows which documented exit code it ends the process with.
pub trait ExitCoded: std::error::Error + Send + Sync + 'static {
    /// The exit code (README "Exit codes").
    fn exit_code(&self) -> ExitCode;
}

impl<E: ExitCoded> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::new(e.exit_code(), e)
    }
}

impl ExitCoded for LedgerError {
    fn exit_code(&self) -> ExitCode {
        if self.is_refusal() {
            return ExitCode::Ledger;
        }
        match self {
            // The configuration chose an engine that cannot do this (README "Exit codes").
            Self::NotOnThisEngine { .. } => ExitCode::Config,
            Self::NodeRunning { .. } => ExitCode::Ledger,
            Self::DuplicateRefund { .. }
            | Self::AlreadyFinal { .. }
            | Self::NotFlagged { .. }
            | Self::WebhookEventPending { .. }
            | Self::TargetExists { .. } => ExitCode::Input,
            Self::NotFound { .. }
            | Self::DiscrepancyNotOpen { .. }
            | Self::WebhookEventNotFound { .. } => ExitCode::NotFound,
            _ => ExitCode::Failure,
        }
    }
}

impl ExitCoded for ConfigError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

impl ExitCoded for DaemonError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Ledger(e) => e.exit_code(),
            Self::AlreadyRunning { .. } => ExitCode::Ledger,
            // The gateway client is built from the configuration before anything runs.
            Self::Gateway(_) => ExitCode::Config,
            // `http.listen` names an address this host cannot listen on.
            Self::Http(_) => ExitCode::Config,
            _ => ExitCode::Failure,
        }
    }
}

impl ExitCoded for WorkerError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::NotFound(_) => ExitCode::NotFound,
            // Recorded bare and flagged: the refund needs a human, as `status` says.
            Self::RowRefused(_) => ExitCode::NeedsHuman,
            Self::Ledger(e) => e.exit_code(),
        }
    }
}

impl ExitCoded for ImportError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Input
    }
}

impl ExitCoded for InvalidValue {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Input
    }
}

impl ExitCoded for DemoError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }
}

impl ExitCoded for std::io::Error {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use checus_reconciler::domain::{OutRefundNo, RefundStatus};

    use super::*;

    fn no() -> OutRefundNo {
        OutRefundNo::parse("R-1").unwrap()
    }

    #[test]
    fn ledger_errors_map_to_the_documented_exit_codes() {
        let path = PathBuf::from("ledger.sqlite");
        let cases: Vec<(LedgerError, ExitCode)> = vec![
            (
                LedgerError::Missing { path: path.clone() },
                ExitCode::Ledger,
            ),
            (
                LedgerError::SchemaTooNew {
                    path: path.clone(),
                    found: 3,
                    supported: 2,
                },
                ExitCode::Ledger,
            ),
            (
                LedgerError::NeedsMigration {
                    path: path.clone(),
                    found: 1,
                    supported: 2,
                },
                ExitCode::Ledger,
            ),
            (
                LedgerError::MigrationFailed {
                    path: path.clone(),
                    from: 1,
                    to: 2,
                    step: "0002_sweeps_halt_code",
                    backup: None,
                    source: Box::new(rusqlite::Error::InvalidQuery),
                },
                ExitCode::Ledger,
            ),
            (
                LedgerError::DuplicateRefund {
                    out_refund_no: no(),
                    index: None,
                },
                ExitCode::Input,
            ),
            (
                LedgerError::AlreadyFinal {
                    out_refund_no: no(),
                    status: RefundStatus::Success,
                },
                ExitCode::Input,
            ),
            (LedgerError::TargetExists { path }, ExitCode::Input),
            (
                LedgerError::NotFound {
                    out_refund_no: no(),
                },
                ExitCode::NotFound,
            ),
            (
                LedgerError::DiscrepancyNotOpen { id: 7 },
                ExitCode::NotFound,
            ),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            assert_eq!(Failure::from(error).code, code, "{text}");
        }
    }

    #[test]
    fn wrapped_errors_keep_the_code_of_what_they_wrap() {
        let refused = DaemonError::Ledger(LedgerError::Missing {
            path: PathBuf::from("l"),
        });
        assert_eq!(refused.exit_code(), ExitCode::Ledger);
        let running = DaemonError::AlreadyRunning {
            path: PathBuf::from("l.lock"),
        };
        assert_eq!(running.exit_code(), ExitCode::Ledger);
        assert_eq!(WorkerError::NotFound(no()).exit_code(), ExitCode::NotFound);
        let duplicate = WorkerError::Ledger(LedgerError::DuplicateRefund {
            out_refund_no: no(),
            index: Some(3),
        });
        assert_eq!(duplicate.exit_code(), ExitCode::Input);
    }

    #[test]
    fn the_cause_chain_is_kept_for_main_to_print() {
        let f = Failure::new(ExitCode::Failure, std::io::Error::other("disk on fire"))
            .context("starting the sandbox");
        let chain: Vec<String> = f.error.chain().map(ToString::to_string).collect();
        assert_eq!(chain, ["starting the sandbox", "disk on fire"]);
    }
}
