//! What the operator commands can say about the daemon from another process: whether one holds
//! the ledger's lock (the kernel drops an SQLite ledger's file lock when the process dies, the
//! server a PostgreSQL node's lock when its session ends, so neither goes stale), and
//! how its latest finished sweep ended (halted, the gateway unavailable). `retry-now` words it
//! as who will query the refunds and when; `resume` decides from it whether there is a halt
//! to end.

use checus_reconciler::daemon::{self, Presence};
use checus_reconciler::domain::format_ts;
use checus_reconciler::ledger::{Ledger, LedgerError, LedgerTarget, OpenMode, PgLedger, SweepRow};

/// The daemon as seen from the ledger and its lock.
#[derive(Debug)]
pub struct Heartbeat {
    /// The lock that was tested, for messages: `<ledger>.lock`, or the node locks on a
    /// PostgreSQL ledger.
    pub lock: String,
    /// What "not running" rests on, in a few words: "`<ledger>.lock` is not locked".
    pub unlocked: String,
    /// Whether a process holds it.
    pub presence: Presence,
    /// The newest finished sweep, if any.
    pub last: Option<SweepRow>,
}

impl Heartbeat {
    /// Looks at the lock of the ledger `l` was opened from and at its newest finished sweep:
    /// the file lock beside an SQLite ledger; on PostgreSQL, whether any node the ledger knows
    /// holds its node lock.
    pub fn read(l: &Ledger) -> Result<Self, LedgerError> {
        let (lock, unlocked, presence) = match l.target() {
            LedgerTarget::Sqlite(path) => {
                let lock = daemon::lock_path(path).display().to_string();
                let unlocked = format!("{lock} is not locked");
                (lock, unlocked, daemon::presence(path))
            }
            LedgerTarget::Postgres(target) => (
                format!("the node locks on {}", target.url),
                format!("no node holds its lock on {}", target.url),
                node_presence(target),
            ),
        };
        Ok(Self {
            lock,
            unlocked,
            presence,
            last: l.latest_finished_sweep()?,
        })
    }

    /// Whether a daemon holds the lock, as `--json` says it: `running`, `not_running` or
    /// `unknown` (the lock file could not be tested).
    pub fn state(&self) -> &'static str {
        match self.presence {
            Presence::Running => "running",
            Presence::NotRunning => "not_running",
            Presence::Unknown(_) => "unknown",
        }
    }

    /// The halt the latest finished sweep ended with, in the daemon's words.
    pub fn halt(&self) -> Option<String> {
        let sweep = self.last.as_ref()?;
        let code = sweep.halt_code?;
        Some(
            sweep
                .halted_reason
                .clone()
                .unwrap_or_else(|| code.to_string()),
        )
    }

    /// Who queries refunds made due now, and when: the end of `retry-now`'s sentence, about
    /// one refund (`it`) or several (`them`).
    pub fn who_queries(&self, one: bool) -> String {
        let (them, they) = if one {
            ("it", "it is")
        } else {
            ("them", "they are")
        };
        let when_running = if let Some(halt) = self.halt() {
            format!(
                "the running daemon is halted ({halt}): it queries {them} once querying resumes \
                 (`checus-reconciler resume` probes now)"
            )
        } else if let Some(since) = self.last.as_ref().and_then(|s| s.breaker_open_since) {
            format!(
                "the running daemon has querying paused, the gateway unavailable since {}: it \
                 queries {them} once Checus answers again",
                format_ts(since)
            )
        } else {
            format!("the running daemon queries {them} at its next sweep")
        };
        match &self.presence {
            Presence::Running => when_running,
            Presence::NotRunning => format!(
                "no daemon is running on this ledger ({}): {they} queried when one starts \
                 (`systemctl start checus-reconciler`)",
                self.unlocked
            ),
            Presence::Unknown(e) => {
                let last = self.last.as_ref().and_then(|s| s.finished_at).map_or_else(
                    || "no sweep has finished yet".to_owned(),
                    |t| format!("the latest sweep finished at {}", format_ts(t)),
                );
                format!(
                    "cannot tell whether a daemon is running ({}: {e}); {last}",
                    self.lock
                )
            }
        }
    }
}

/// Whether a daemon of any node the ledger knows holds its node lock (asked on a connection of
/// its own; an error is "cannot tell").
fn node_presence(target: &checus_reconciler::ledger::PostgresTarget) -> Presence {
    let asked = PgLedger::open(target, OpenMode::Reading).and_then(|pg| pg.any_node_lock_held());
    match asked {
        Ok(true) => Presence::Running,
        Ok(false) => Presence::NotRunning,
        Err(e) => Presence::Unknown(std::io::Error::other(e.to_string())),
    }
}
