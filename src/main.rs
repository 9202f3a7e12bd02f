//! The binary's edge: parse the command line, start logging, run the command, and map every
//! error to a documented exit code. Errors are printed once, here, with their cause chain.
//! The commands themselves live in `commands/`, one module per family.

mod commands;

use std::io::Write;

use clap::Parser;

use checus_reconciler::cli::Cli;
use checus_reconciler::config::{Environment, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let env = Environment::capture();
    if let Some(level) = commands::log_level(&cli.command) {
        // Operator commands log to stderr as asked; only `run` looks at $JOURNAL_STREAM.
        checus_reconciler::logging::init(LogFormat::Text, level, &Environment::default());
    }
    // Under systemd (stderr is the journal) the error line starts with `<3>`: journald reads
    // that prefix (SyslogLevelPrefix=, on by default) as priority err, so the one line that
    // says why the service did not start (a config error names the file or the key) shows in
    // `journalctl -p err` / `-p warning` next to systemd's own lines, not at the default info.
    let prefix = if checus_reconciler::logging::stderr_is_journal(&env) {
        "<3>"
    } else {
        ""
    };
    let code = match commands::run(cli.command, env) {
        Ok(code) => code,
        Err(commands::Failure { code, error }) => {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "{prefix}checus-reconciler: error: {error}");
            for cause in error.chain().skip(1) {
                let _ = write!(stderr, ": {cause}");
            }
            let _ = writeln!(stderr);
            code
        }
    };
    std::process::ExitCode::from(code as u8)
}
