//! Everything a command prints for its reader goes through here. A reader that has gone away
//! (`checus-reconciler list | head -1`) is a normal end, not an error and never a panic:
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE, which `print!` turns
//! into a panic. The rest of the output is dropped and the command ends with its own exit
//! code (so `status | head -1` still exits 8 when something needs a human).

use std::io::Write;

use checus_reconciler::cli::ExitCode;
use checus_reconciler::ledger::UnreadableRow;
use checus_reconciler::report;

use super::{Failure, Outcome};

/// Standard output that treats a closed pipe as "nobody is reading": writes succeed and are
/// dropped. Any other write error is returned.
pub struct Stdout(std::io::Stdout);

impl Stdout {
    /// The process's standard output.
    pub fn new() -> Self {
        Self(std::io::stdout())
    }
}

fn reader_gone<T>(result: std::io::Result<T>, dropped: T) -> std::io::Result<T> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(dropped),
        other => other,
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        reader_gone(self.0.write(buf), buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        reader_gone(self.0.flush(), ())
    }
}

/// Prints `text` as is (callers end it with a newline).
pub fn print(text: impl AsRef<[u8]>) -> Result<(), Failure> {
    let mut out = Stdout::new();
    out.write_all(text.as_ref())?;
    out.flush()?;
    Ok(())
}

/// Prints `value` as pretty JSON, for scripts.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), Failure> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Failure::new(ExitCode::Failure, e))?;
    print(format!("{text}\n"))
}

/// One stderr warning per unreadable row; exit 8 when there was one, else 0.
pub fn warn_unreadable(rows: &[UnreadableRow]) -> ExitCode {
    for row in rows {
        eprintln!(
            "checus-reconciler: warning: {}; skipped (README \"Rows the daemon cannot read\")",
            report::escape(&row.to_string())
        );
    }
    if rows.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::NeedsHuman
    }
}

/// Prints `value` as JSON for scripts, or rendered by `render` for people; exit 0.
pub fn emit<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> Outcome {
    if json {
        print_json(value)?;
    } else {
        print(render(value))?;
    }
    Ok(ExitCode::Ok)
}
