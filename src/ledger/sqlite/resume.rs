//! `resume`: the ledger is the channel between the operator's command and the running daemon.
//! The command appends an audited `resume` row to `operator_actions`; a daemon halted on a
//! configuration error or clock skew looks for a newer one every second and probes Checus at
//! once. The sweep the daemon runs for it is the answer the command waits for.
//!
//! Why the ledger and not a signal: the command already writes the audit row there, both
//! processes can always reach the file (a signal needs the daemon's pid, the same user or
//! root, and no PID namespace in between), and a request written while the daemon was busy
//! is still there when it looks, so nothing is lost.

use rusqlite::{OptionalExtension, params};

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::rows::{RawRow, RawSweep, select};
use super::types::{SweepRow, ts_text};
use crate::domain::Timestamp;
use crate::ledger::{ResumeAction, ResumeRequest};

impl SqliteLedger {
    /// Records an operator's request to resume querying (`operator_actions` action `resume`,
    /// with who and why) and returns it with the newest sweep id, read in the same write
    /// transaction, so no sweep can start between the two.
    pub fn request_resume(
        &self,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<ResumeRequest, LedgerError> {
        const OP: &str = "record resume request";
        self.write(OP, |tx| {
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, reason)
                 VALUES (?1, ?2, 'resume', ?3)",
                params![ts_text(now), actor, reason],
            )
            .during(OP)?;
            let action_id = tx.last_insert_rowid();
            let after_sweep = tx
                .query_row("SELECT coalesce(max(id), 0) FROM sweeps", [], |r| r.get(0))
                .during(OP)?;
            Ok(ResumeRequest {
                action_id,
                after_sweep,
            })
        })
    }

    /// The newest `operator_actions` id (0: none), where a daemon starts watching for resume
    /// requests: older ones were for another run. O(1): the rowid's maximum.
    pub fn operator_actions_watermark(&self) -> Result<i64, LedgerError> {
        const OP: &str = "read operator actions watermark";
        self.read(OP, |tx| {
            tx.query_row(
                "SELECT coalesce(max(id), 0) FROM operator_actions",
                [],
                |r| r.get(0),
            )
            .during(OP)
        })
    }

    /// The newest resume request after `after` (an `operator_actions` id), if any. Walks only
    /// the rows after `after` (a rowid range), so a halted daemon can ask every second.
    pub fn resume_requested_after(&self, after: i64) -> Result<Option<ResumeAction>, LedgerError> {
        const OP: &str = "read resume requests";
        self.read(OP, |tx| {
            tx.query_row(
                "SELECT id, actor FROM operator_actions
                  WHERE id > ?1 AND action = 'resume' ORDER BY id DESC LIMIT 1",
                [after],
                |r| {
                    Ok(ResumeAction {
                        id: r.get(0)?,
                        actor: r.get(1)?,
                    })
                },
            )
            .optional()
            .during(OP)
        })
    }

    /// The newest sweep that finished, if any: whether the daemon was halted (or the breaker
    /// open) when it last looked. Walks `sweeps` backwards from the newest row.
    pub fn latest_finished_sweep(&self) -> Result<Option<SweepRow>, LedgerError> {
        const OP: &str = "read latest finished sweep";
        self.read(OP, |tx| {
            let sql = format!(
                "SELECT {} FROM sweeps WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                RawSweep::COLUMNS
            );
            Ok(select::<RawSweep>(tx, OP, &sql, [])?.pop())
        })
    }

    /// The first sweep after `after` (a `sweeps` id) that finished, if one has: the sweep a
    /// resume request was answered by.
    pub fn first_finished_sweep_after(&self, after: i64) -> Result<Option<SweepRow>, LedgerError> {
        const OP: &str = "read the sweep after a resume request";
        self.read(OP, |tx| {
            let sql = format!(
                "SELECT {} FROM sweeps WHERE id > ?1 AND finished_at IS NOT NULL
                  ORDER BY id LIMIT 1",
                RawSweep::COLUMNS
            );
            Ok(select::<RawSweep>(tx, OP, &sql, [after])?.pop())
        })
    }
}
