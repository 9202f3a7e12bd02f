//! What the ledger still knows about a refund it no longer has: `show` and `explain` of a
//! refund that a prune removed say so, and when. Only a prune can delete a refund (the
//! schema's delete triggers), so a refund that is gone was pruned if a prune's archive holds
//! its row, or if the audit log (append-only, never pruned) names it.
//!
//! This runs only when a lookup missed. It reads the `prunes` rows (one per prune ever run)
//! and, newest first, the archives they name, line by line, until one holds the refund: a
//! cost in proportion to the archives' size, paid once by an operator asking about a refund
//! that is not there.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use rusqlite::params;

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::types::Cell;
use crate::domain::{OutRefundNo, Timestamp};
use crate::ledger::PrunedRefund;

/// One done prune, as [`SqliteLedger::pruned`] reads it.
struct PruneRow {
    id: i64,
    started_at: Timestamp,
    finalized_before: Timestamp,
    actor: String,
    archive: Option<PathBuf>,
}

impl SqliteLedger {
    /// Which prune removed `no`, when the ledger does not have it: the newest prune whose
    /// archive holds its refund row or, when no archive that can be read does, the first
    /// prune after the last operator action about it (the audit log keeps naming a refund
    /// after a prune). `None` when nothing says the refund was ever here.
    pub fn pruned(&self, no: &OutRefundNo) -> Result<Option<PrunedRefund>, LedgerError> {
        const OP: &str = "look for a pruned refund";
        let prunes = self.read(OP, |tx| {
            let mut stmt = tx
                .prepare(
                    "SELECT id, CAST(started_at AS TEXT), CAST(finalized_before AS TEXT), actor,
                            archive_path
                       FROM prunes WHERE state = 'done' ORDER BY id DESC",
                )
                .during(OP)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .during(OP)?;
            let cell = Cell {
                out_refund_no: no.as_str(),
            };
            let mut out = Vec::new();
            for row in rows {
                let (id, started, before, actor, archive) = row.during(OP)?;
                out.push(PruneRow {
                    id,
                    started_at: cell.ts("prunes.started_at", &started)?,
                    finalized_before: cell.ts("prunes.finalized_before", &before)?,
                    actor,
                    archive: archive.map(PathBuf::from),
                });
            }
            Ok(out)
        })?;
        if prunes.is_empty() {
            return Ok(None);
        }
        let found =
            |p: &PruneRow, archive: Option<PathBuf>, archive_line: Option<u64>| PrunedRefund {
                out_refund_no: no.clone(),
                prune_id: p.id,
                pruned_at: p.started_at,
                finalized_before: p.finalized_before,
                actor: p.actor.clone(),
                archive,
                archive_line,
            };
        for p in &prunes {
            if let Some(path) = &p.archive
                && let Some(line) = archive_line_of(path, no)
            {
                return Ok(Some(found(p, Some(path.clone()), Some(line))));
            }
        }
        let last_action: Option<String> = self
            .conn
            .query_row(
                "SELECT CAST(max(at) AS TEXT) FROM operator_actions WHERE out_refund_no = ?1",
                params![no.as_str()],
                |r| r.get(0),
            )
            .during(OP)?;
        let Some(last_action) = last_action else {
            return Ok(None);
        };
        let cell = Cell {
            out_refund_no: no.as_str(),
        };
        let last_action = cell.ts("operator_actions.at", &last_action)?;
        // Oldest first: the first prune after the refund was last acted on removed it.
        Ok(prunes
            .iter()
            .rev()
            .find(|p| p.started_at >= last_action)
            .map(|p| found(p, None, None)))
    }
}

/// The line of `no`'s `refunds` row in a prune archive, if the file can be read and holds it.
/// Lines that cannot hold it are passed over by a substring test before any parsing.
pub(in crate::ledger) fn archive_line_of(path: &Path, no: &OutRefundNo) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    let needle = serde_json::to_string(no.as_str()).ok()?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.ok()?;
        if !line.contains(&needle) || !line.contains("\"refunds\"") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["table"] == "refunds" && v["row"]["out_refund_no"] == no.as_str() {
            return u64::try_from(i + 1).ok();
        }
    }
    None
}
