//! `prune`: archive, then delete, old final refunds with their attempts, notifications and
//! resolved discrepancies (and old sweeps), in one audited transaction. The schema's delete
//! triggers accept a delete only while a `prunes` row is running, so nothing else can remove
//! money rows.

use std::io::Write as _;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Transaction, params};

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::types::{to_u64, ts_text};
use crate::domain::Timestamp;
use crate::ledger::{PruneCounts, PruneReport};

/// The condition that makes a refund prunable (kept in step with the schema's delete triggers;
/// `?1` is the cutoff).
const PRUNABLE: &str = "status <> 'REFUND_PENDING' AND finalized_at < ?1
    AND NOT EXISTS (SELECT 1 FROM discrepancies AS d
                     WHERE d.out_refund_no = refunds.out_refund_no AND d.resolved_at IS NULL)";

impl SqliteLedger {
    /// What a prune with this cutoff would remove; writes nothing.
    pub fn prune_plan(&self, finalized_before: Timestamp) -> Result<PruneCounts, LedgerError> {
        const OP: &str = "plan prune";
        self.read(OP, |tx| counts_for(tx, &ts_text(finalized_before), OP))
    }

    /// Removes final refunds finalized before `finalized_before` (and their attempts,
    /// notifications and resolved discrepancies, and sweeps finished before it), in ONE
    /// transaction: every removed row is first written to `archive` as JSON lines (created
    /// new, synced, its SHA-256 recorded), then the `prunes` row is inserted as running (the
    /// only thing the schema's delete triggers accept), the rows are deleted, and the prune is
    /// marked done with its counts. Refunds with an unresolved discrepancy are kept. `archive`
    /// `None` deletes without a copy (the operator said `--no-archive`).
    pub fn prune(
        &self,
        finalized_before: Timestamp,
        actor: &str,
        reason: &str,
        archive: Option<&Path>,
        now: Timestamp,
    ) -> Result<PruneReport, LedgerError> {
        const OP: &str = "prune";
        let cutoff = ts_text(finalized_before);
        self.write(OP, |tx| {
            let counts = counts_for(tx, &cutoff, OP)?;
            let sha = match archive {
                Some(path) => Some(write_archive(tx, path, &cutoff, actor, reason, now)?),
                None => None,
            };
            tx.execute(
                "INSERT INTO prunes (started_at, actor, reason, finalized_before, archive_path,
                                     archive_sha256, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running')",
                params![
                    ts_text(now),
                    actor,
                    reason,
                    cutoff,
                    archive.map(|p| p.display().to_string()),
                    sha
                ],
            )
            .during(OP)?;
            let id = tx.last_insert_rowid();
            let victims = format!("SELECT out_refund_no FROM refunds WHERE {PRUNABLE}");
            let n = |sql: String| -> Result<u64, LedgerError> {
                Ok(tx.execute(&sql, [&cutoff]).during(OP)? as u64)
            };
            let done = PruneCounts {
                attempts: n(format!(
                    "DELETE FROM attempts WHERE out_refund_no IN ({victims})"
                ))?,
                notifications: n(format!(
                    "DELETE FROM notifications WHERE out_refund_no IN ({victims})"
                ))?,
                discrepancies: n(format!(
                    "DELETE FROM discrepancies WHERE resolved_at IS NOT NULL
                        AND out_refund_no IN ({victims})"
                ))?,
                // A pruned refund's delivered webhook events go with it (derived from the
                // archived rows, so not archived or counted); undelivered ones stay to be sent.
                refunds: n(format!(
                    "DELETE FROM webhook_events WHERE state = 'delivered'
                        AND out_refund_no IN ({victims})"
                ))
                .and_then(|_| n(format!("DELETE FROM refunds WHERE {PRUNABLE}")))?,
                sweeps: n("DELETE FROM sweeps WHERE finished_at < ?1".to_owned())?,
                kept_unresolved: counts.kept_unresolved,
            };
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            tx.execute(
                "UPDATE prunes SET state = 'done', refunds = ?2, attempts = ?3, notifications = ?4,
                        discrepancies = ?5, sweeps = ?6
                  WHERE id = ?1",
                params![
                    id,
                    i(done.refunds),
                    i(done.attempts),
                    i(done.notifications),
                    i(done.discrepancies),
                    i(done.sweeps)
                ],
            )
            .during(OP)?;
            tx.execute(
                "INSERT INTO operator_actions (at, actor, action, reason, detail)
                 VALUES (?1, ?2, 'prune', ?3, ?4)",
                params![
                    ts_text(now),
                    actor,
                    reason,
                    serde_json::json!({"prune": id, "finalized_before": cutoff}).to_string()
                ],
            )
            .during(OP)?;
            Ok(PruneReport {
                prune_id: Some(id),
                finalized_before,
                counts: done,
                archive: archive.map(Path::to_path_buf),
                archive_sha256: sha,
                dry_run: false,
            })
        })
    }
}

/// Counts what a prune with this cutoff removes (`cutoff` as stored text).
fn counts_for(
    tx: &Transaction<'_>,
    cutoff: &str,
    op: &'static str,
) -> Result<PruneCounts, LedgerError> {
    let victims = format!("SELECT out_refund_no FROM refunds WHERE {PRUNABLE}");
    let n = |sql: String| -> Result<u64, LedgerError> {
        let v: i64 = tx.query_row(&sql, [cutoff], |r| r.get(0)).during(op)?;
        Ok(to_u64(v))
    };
    Ok(PruneCounts {
        refunds: n(format!("SELECT count(*) FROM refunds WHERE {PRUNABLE}"))?,
        attempts: n(format!(
            "SELECT count(*) FROM attempts WHERE out_refund_no IN ({victims})"
        ))?,
        notifications: n(format!(
            "SELECT count(*) FROM notifications WHERE out_refund_no IN ({victims})"
        ))?,
        discrepancies: n(format!(
            "SELECT count(*) FROM discrepancies WHERE resolved_at IS NOT NULL
                AND out_refund_no IN ({victims})"
        ))?,
        sweeps: n("SELECT count(*) FROM sweeps WHERE finished_at < ?1".to_owned())?,
        kept_unresolved: n("SELECT count(*) FROM refunds
              WHERE status <> 'REFUND_PENDING' AND finalized_at < ?1
                AND EXISTS (SELECT 1 FROM discrepancies AS d
                             WHERE d.out_refund_no = refunds.out_refund_no
                               AND d.resolved_at IS NULL)"
            .to_owned())?,
    })
}

/// Writes every row a prune will remove to `path` (created new), one JSON object per line:
/// a header line, then `{"table": ..., "row": {column: value}}` with values exactly as stored.
/// Synced to disk before returning its SHA-256 (hex).
fn write_archive(
    tx: &Transaction<'_>,
    path: &Path,
    cutoff: &str,
    actor: &str,
    reason: &str,
    now: Timestamp,
) -> Result<String, LedgerError> {
    const OP: &str = "archive pruned rows";
    let io = |source: std::io::Error| LedgerError::File {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                LedgerError::TargetExists {
                    path: path.to_owned(),
                }
            } else {
                io(source)
            }
        })?;
    let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut out = std::io::BufWriter::new(file);
    let mut line = |value: &serde_json::Value| -> Result<(), LedgerError> {
        let mut text = value.to_string();
        text.push('\n');
        hasher.update(text.as_bytes());
        out.write_all(text.as_bytes()).map_err(io)
    };
    line(&serde_json::json!({
        "checus_reconciler_prune_archive": 1,
        "finalized_before": cutoff,
        "actor": actor,
        "reason": reason,
        "at": ts_text(now),
    }))?;
    let victims = format!("SELECT out_refund_no FROM refunds WHERE {PRUNABLE}");
    let selects = [
        (
            "refunds",
            format!("SELECT * FROM refunds WHERE {PRUNABLE} ORDER BY id"),
        ),
        (
            "attempts",
            format!("SELECT * FROM attempts WHERE out_refund_no IN ({victims}) ORDER BY id"),
        ),
        (
            "notifications",
            format!("SELECT * FROM notifications WHERE out_refund_no IN ({victims}) ORDER BY id"),
        ),
        (
            "discrepancies",
            format!(
                "SELECT * FROM discrepancies WHERE resolved_at IS NOT NULL
                    AND out_refund_no IN ({victims}) ORDER BY id"
            ),
        ),
        (
            "sweeps",
            "SELECT * FROM sweeps WHERE finished_at < ?1 ORDER BY id".to_owned(),
        ),
    ];
    for (table, sql) in selects {
        let mut stmt = tx.prepare(&sql).during(OP)?;
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([cutoff]).during(OP)?;
        while let Some(r) = rows.next().during(OP)? {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match r.get_ref(i).during(OP)? {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(n) => serde_json::Value::from(n),
                    // Amounts are TEXT, so no money ever passes through here.
                    ValueRef::Real(f) => serde_json::Value::from(f),
                    ValueRef::Text(t) => {
                        serde_json::Value::from(String::from_utf8_lossy(t).into_owned())
                    }
                    ValueRef::Blob(b) => serde_json::Value::from(
                        b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
                    ),
                };
                obj.insert(name.clone(), v);
            }
            line(&serde_json::json!({"table": table, "row": obj}))?;
        }
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let digest = hasher.finish();
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}
