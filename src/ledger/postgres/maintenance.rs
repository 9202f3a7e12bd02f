//! Keeping a PostgreSQL ledger: `prune` (archive, then delete, old final refunds with their
//! history, in one audited transaction the schema's delete triggers accept only while its
//! `prunes` row is running), what a prune left to say about a refund it removed, and `backup`,
//! which is the database's own tools' job here (pg_dump).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Db, PgLedger, ms};
use crate::domain::{OutRefundNo, Timestamp, format_ts};
use crate::ledger::error::LedgerError;
use crate::ledger::sqlite::pruned::archive_line_of;
use crate::ledger::types::to_u64;
use crate::ledger::{BackupReport, PruneCounts, PruneReport, PrunedRefund};

/// What makes a refund prunable (the schema's delete triggers' rule; `$1` is the cutoff).
const PRUNABLE: &str = "status <> 'REFUND_PENDING' AND finalized_at < $1
    AND NOT EXISTS (SELECT 1 FROM discrepancies AS d
                     WHERE d.out_refund_no = refunds.out_refund_no AND d.resolved_at IS NULL)";

/// The refund numbers a prune removes.
fn victims() -> String {
    format!("SELECT out_refund_no FROM refunds WHERE {PRUNABLE}")
}

impl PgLedger {
    /// What a prune with this cutoff would remove; writes nothing.
    pub fn prune_plan(&self, finalized_before: Timestamp) -> Result<PruneCounts, LedgerError> {
        let cutoff = ms(finalized_before);
        self.read("plan prune", |db| counts_for(db, cutoff))
    }

    /// Removes final refunds finalized before `finalized_before` with their attempts,
    /// notifications, resolved discrepancies and delivered webhook events (and sweeps finished
    /// before it), in ONE transaction: the rows go to `archive` first (JSON lines, created new,
    /// synced, SHA-256 recorded), then the running `prunes` row, the deletes, the prune marked
    /// done, the audit row. Refunds with an unresolved discrepancy are kept. A second prune
    /// waits for the first (`prunes_one_running`).
    pub fn prune(
        &self,
        finalized_before: Timestamp,
        actor: &str,
        reason: &str,
        archive: Option<&Path>,
        now: Timestamp,
    ) -> Result<PruneReport, LedgerError> {
        const OP: &str = "prune";
        let cutoff = ms(finalized_before);
        let now = ms(now);
        let archive_text = archive.map(|p| p.display().to_string());
        self.write(OP, |db| {
            let counts = counts_for(db, cutoff)?;
            let sha = match archive {
                Some(path) => Some(write_archive(db, path, cutoff, actor, reason, now)?),
                None => None,
            };
            let id: i64 = db
                .query_one(
                    OP,
                    "INSERT INTO prunes (started_at, actor, reason, finalized_before, archive_path,
                                         archive_sha256, state)
                     VALUES ($1, $2, $3, $4, $5, $6, 'running') RETURNING id",
                    &[&now, &actor, &reason, &cutoff, &archive_text, &sha],
                )?
                .get(0);
            let v = victims();
            let mut n = |sql: String| -> Result<u64, LedgerError> {
                db.tx
                    .execute(sql.as_str(), &[&cutoff])
                    .map_err(|source| LedgerError::Postgres { op: OP, source })
            };
            let attempts = n(format!("DELETE FROM attempts WHERE out_refund_no IN ({v})"))?;
            let notifications = n(format!(
                "DELETE FROM notifications WHERE out_refund_no IN ({v})"
            ))?;
            let discrepancies = n(format!(
                "DELETE FROM discrepancies WHERE resolved_at IS NOT NULL AND out_refund_no IN ({v})"
            ))?;
            // A pruned refund's delivered events go with it (derived from the archived rows);
            // undelivered ones stay to be sent.
            n(format!(
                "DELETE FROM webhook_events WHERE state = 'delivered' AND out_refund_no IN ({v})"
            ))?;
            let refunds = n(format!("DELETE FROM refunds WHERE {PRUNABLE}"))?;
            let sweeps = n("DELETE FROM sweeps WHERE finished_at < $1".to_owned())?;
            let done = PruneCounts {
                refunds,
                attempts,
                notifications,
                discrepancies,
                sweeps,
                kept_unresolved: counts.kept_unresolved,
            };
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            db.execute(
                OP,
                "UPDATE prunes SET state = 'done', refunds = $2, attempts = $3,
                        notifications = $4, discrepancies = $5, sweeps = $6
                  WHERE id = $1",
                &[
                    &id,
                    &i(done.refunds),
                    &i(done.attempts),
                    &i(done.notifications),
                    &i(done.discrepancies),
                    &i(done.sweeps),
                ],
            )?;
            let detail =
                serde_json::json!({"prune": id, "finalized_before": format_ts(cutoff)}).to_string();
            db.execute(
                OP,
                "INSERT INTO operator_actions (at, actor, action, reason, detail)
                 VALUES ($1, $2, 'prune', $3, $4)",
                &[&now, &actor, &reason, &detail],
            )?;
            Ok(PruneReport {
                prune_id: Some(id),
                finalized_before,
                counts: done,
                archive: archive.map(Path::to_path_buf),
                archive_sha256: sha.clone(),
                dry_run: false,
            })
        })
    }

    /// Which prune removed `no`, when the ledger does not have it (see the SQLite engine's
    /// `pruned`: the newest prune whose archive holds its row, else the first prune after the
    /// last operator action about it).
    pub fn pruned(&self, no: &OutRefundNo) -> Result<Option<PrunedRefund>, LedgerError> {
        const OP: &str = "look for a pruned refund";
        let (prunes, last_action) = self.read(OP, |db| {
            let prunes: Vec<(i64, Timestamp, Timestamp, String, Option<String>)> = db
                .query(
                    OP,
                    "SELECT id, started_at, finalized_before, actor, archive_path
                       FROM prunes WHERE state = 'done' ORDER BY id DESC",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect();
            let last: Option<Timestamp> = db
                .query_one(
                    OP,
                    "SELECT max(at) FROM operator_actions WHERE out_refund_no = $1",
                    &[&no.as_str()],
                )?
                .get(0);
            Ok((prunes, last))
        })?;
        let found = |p: &(i64, Timestamp, Timestamp, String, Option<String>),
                     archive: Option<PathBuf>,
                     archive_line: Option<u64>| PrunedRefund {
            out_refund_no: no.clone(),
            prune_id: p.0,
            pruned_at: p.1,
            finalized_before: p.2,
            actor: p.3.clone(),
            archive,
            archive_line,
        };
        for p in &prunes {
            if let Some(path) = p.4.as_deref().map(PathBuf::from)
                && let Some(line) = archive_line_of(&path, no)
            {
                return Ok(Some(found(p, Some(path), Some(line))));
            }
        }
        let Some(last_action) = last_action else {
            return Ok(None);
        };
        Ok(prunes
            .iter()
            .rev()
            .find(|p| p.1 >= last_action)
            .map(|p| found(p, None, None)))
    }

    /// Not on PostgreSQL: a consistent copy of the database is pg_dump's job (or the
    /// server's own backups). Nothing is written.
    pub fn backup(&self, _dest: &Path) -> Result<BackupReport, LedgerError> {
        Err(LedgerError::NotOnThisEngine {
            what: "backup",
            engine: "PostgreSQL",
            instead: "use pg_dump (e.g. pg_dump --format=custom --file=ledger.dump DBNAME), or \
                      the server's own backups",
        })
    }
}

/// Counts what a prune with this cutoff removes.
fn counts_for(db: &mut Db<'_>, cutoff: Timestamp) -> Result<PruneCounts, LedgerError> {
    const OP: &str = "plan prune";
    let v = victims();
    let mut n = |sql: String| -> Result<u64, LedgerError> {
        let rows = db.query_dyn(OP, &sql, &[&cutoff])?;
        Ok(to_u64(rows[0].get(0)))
    };
    Ok(PruneCounts {
        refunds: n(format!("SELECT count(*) FROM refunds WHERE {PRUNABLE}"))?,
        attempts: n(format!(
            "SELECT count(*) FROM attempts WHERE out_refund_no IN ({v})"
        ))?,
        notifications: n(format!(
            "SELECT count(*) FROM notifications WHERE out_refund_no IN ({v})"
        ))?,
        discrepancies: n(format!(
            "SELECT count(*) FROM discrepancies WHERE resolved_at IS NOT NULL
                AND out_refund_no IN ({v})"
        ))?,
        sweeps: n("SELECT count(*) FROM sweeps WHERE finished_at < $1".to_owned())?,
        kept_unresolved: n("SELECT count(*) FROM refunds
              WHERE status <> 'REFUND_PENDING' AND finalized_at < $1
                AND EXISTS (SELECT 1 FROM discrepancies AS d
                             WHERE d.out_refund_no = refunds.out_refund_no
                               AND d.resolved_at IS NULL)"
            .to_owned())?,
    })
}

/// Writes every row a prune will remove to `path` (created new), one JSON object per line: a
/// header, then `{"table": ..., "row": {...}}`, the row as PostgreSQL's `to_jsonb` gives it
/// with amounts as their exact text (never a JSON number) and instants in UTC. Synced before
/// its SHA-256 (hex) is returned.
fn write_archive(
    db: &mut Db<'_>,
    path: &Path,
    cutoff: Timestamp,
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
    let mut line = |text: String| -> Result<(), LedgerError> {
        let text = text + "\n";
        hasher.update(text.as_bytes());
        out.write_all(text.as_bytes()).map_err(io)
    };
    line(
        serde_json::json!({
            "checus_reconciler_prune_archive": 1,
            "engine": "postgresql",
            "finalized_before": format_ts(cutoff),
            "actor": actor,
            "reason": reason,
            "at": format_ts(now),
        })
        .to_string(),
    )?;
    db.tx
        .batch_execute("SET LOCAL TimeZone = 'UTC'")
        .map_err(|source| LedgerError::Postgres { op: OP, source })?;
    let v = victims();
    let with_amount = "(to_jsonb(t) || jsonb_build_object('amount', t.amount::text))::text";
    let selects = [
        (
            "refunds",
            format!("SELECT {with_amount} FROM refunds AS t WHERE {PRUNABLE_T} ORDER BY id"),
        ),
        (
            "attempts",
            format!(
                "SELECT to_jsonb(t)::text FROM attempts AS t WHERE out_refund_no IN ({v}) ORDER BY id"
            ),
        ),
        (
            "notifications",
            format!(
                "SELECT {with_amount} FROM notifications AS t
                  WHERE out_refund_no IN ({v}) ORDER BY id"
            ),
        ),
        (
            "discrepancies",
            format!(
                "SELECT to_jsonb(t)::text FROM discrepancies AS t WHERE resolved_at IS NOT NULL
                    AND out_refund_no IN ({v}) ORDER BY id"
            ),
        ),
        (
            "sweeps",
            "SELECT to_jsonb(t)::text FROM sweeps AS t WHERE finished_at < $1 ORDER BY id"
                .to_owned(),
        ),
    ];
    for (table, sql) in selects {
        for r in db.query_dyn(OP, &sql, &[&cutoff])? {
            let row: String = r.get(0);
            line(format!(r#"{{"table":"{table}","row":{row}}}"#))?;
        }
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let digest = hasher.finish();
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// [`PRUNABLE`] for the refunds table aliased `t`.
const PRUNABLE_T: &str = "t.status <> 'REFUND_PENDING' AND t.finalized_at < $1
    AND NOT EXISTS (SELECT 1 FROM discrepancies AS d
                     WHERE d.out_refund_no = t.out_refund_no AND d.resolved_at IS NULL)";
