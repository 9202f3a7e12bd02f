//! Where the logs go. Under systemd (stderr is the journal, `$JOURNAL_STREAM`) or with
//! `log.format = "journald"`: journald's native protocol via tracing-journald, every event
//! field a journal field (`out_refund_no` → `OUT_REFUND_NO`, `status` → `STATUS`) and the level
//! mapped to `PRIORITY` (error 3, warn 4, info 5, debug 6, trace 7), so
//! `journalctl -u checus-reconciler STATUS=REFUND_FAILED` works. Anywhere else: text or JSON
//! lines on stderr.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Environment, LogFormat};

/// The `SYSLOG_IDENTIFIER` of every journal entry (what `journalctl -t` matches).
pub const SYSLOG_IDENTIFIER: &str = "checus-reconciler";

/// What [`init`] set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// journald's native socket.
    Journald,
    /// Text lines on stderr.
    Text,
    /// JSON lines on stderr.
    Json,
    /// journald was wanted but its socket could not be opened; text on stderr instead.
    TextAfterJournaldFailed(String),
}

/// True when `$JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd when it connects stdout or
/// stderr to the journal) names this process's stderr, as systemd.exec(5) recommends
/// checking before speaking the native protocol.
pub fn stderr_is_journal(env: &Environment) -> bool {
    let Some((dev, ino)) = env.get("JOURNAL_STREAM").and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.trim().parse::<u64>(), ino.trim().parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// Which sink `format` means in this environment: `text` becomes journald when stderr is the
/// journal; `json` and `journald` are taken as written.
pub fn choose(format: LogFormat, env: &Environment) -> LogFormat {
    match format {
        LogFormat::Text if stderr_is_journal(env) => LogFormat::Journald,
        other => other,
    }
}

/// The filter: `level` plus quiet scheduler internals unless asked for.
fn filter(level: &str) -> tracing_subscriber::EnvFilter {
    let level = if level.contains("tokio_cron_scheduler") {
        level.to_owned()
    } else {
        format!("{level},tokio_cron_scheduler=warn")
    };
    tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// The journald layer as this project configures it: no field prefix (tracing-journald's
/// default would make `F_OUT_REFUND_NO`), a fixed syslog identifier.
pub fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned()))
}

/// Installs the global subscriber once; later calls are no-ops. Returns what it set up.
pub fn init(format: LogFormat, level: &str, env: &Environment) -> Sink {
    let fmt = || {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    };
    match choose(format, env) {
        LogFormat::Journald => match journald_layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter(level))
                    .with(layer)
                    .try_init();
                Sink::Journald
            }
            Err(e) => {
                let _ = tracing_subscriber::registry()
                    .with(filter(level))
                    .with(fmt())
                    .try_init();
                Sink::TextAfterJournaldFailed(e.to_string())
            }
        },
        LogFormat::Json => {
            let _ = tracing_subscriber::registry()
                .with(filter(level))
                .with(fmt().json().flatten_event(true))
                .try_init();
            Sink::Json
        }
        LogFormat::Text => {
            let _ = tracing_subscriber::registry()
                .with(filter(level))
                .with(fmt())
                .try_init();
            Sink::Text
        }
    }
}

/// An error and its causes on one line, each cause once, for a log field (`main` prints a
/// cause chain itself; a log line does not): a cause whose text the line already shows (an
/// error that prints its source) is not repeated, and line breaks in a message (a TOML
/// parser's snippet) become spaces, so one rejected reload is one log line.
pub fn one_line_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_our_stderr() {
        let none = Environment::default();
        assert!(!stderr_is_journal(&none));
        assert_eq!(choose(LogFormat::Text, &none), LogFormat::Text);
        let junk = Environment::from_pairs([("JOURNAL_STREAM", "not:numbers")]);
        assert!(!stderr_is_journal(&junk));
        // A stream that is not our stderr (systemd set it for a parent whose stderr we no
        // longer share) must not switch us to journald.
        let other = Environment::from_pairs([("JOURNAL_STREAM", "1:1")]);
        assert!(!stderr_is_journal(&other));
        // Our real stderr's device and inode do.
        let fd = std::io::stderr().as_fd().try_clone_to_owned().unwrap();
        let m = std::fs::File::from(fd).metadata().unwrap();
        let ours =
            Environment::from_pairs([("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))]);
        assert!(stderr_is_journal(&ours));
        assert_eq!(choose(LogFormat::Text, &ours), LogFormat::Journald);
        assert_eq!(choose(LogFormat::Json, &ours), LogFormat::Json);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {0}: {1}")]
    struct Prints(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("reload failed")]
    struct Wraps(#[source] std::io::Error);

    #[test]
    fn a_chain_is_one_line_and_names_each_cause_once() {
        let io = || std::io::Error::other("no such file");
        assert_eq!(
            one_line_chain(&Prints("a.toml", io())),
            "cannot read a.toml: no such file"
        );
        assert_eq!(one_line_chain(&Wraps(io())), "reload failed: no such file");
        let toml = crate::config::ConfigError::Parse {
            origin: "a.toml".into(),
            message:
                "TOML parse error at line 2\n  |\n2 | bogus = 1\n  | ^^^^^\nunknown field `bogus`\n"
                    .into(),
        };
        let line = one_line_chain(&toml);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("unknown field `bogus`"), "{line}");
    }
}
