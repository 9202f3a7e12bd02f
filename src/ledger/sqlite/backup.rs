//! `backup`: an online, consistent copy of the ledger with SQLite's `VACUUM INTO`, opened and
//! checked before it is reported.

use std::path::Path;

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::types::to_u64;
use crate::ledger::BackupReport;

impl SqliteLedger {
    /// An online, consistent copy of the ledger at `dest` with SQLite's `VACUUM INTO` (one
    /// read transaction: the daemon and the merchant's app keep writing meanwhile). `dest`
    /// must not exist. The copy is then opened and checked (`quick_check`, schema version).
    pub fn backup(&self, dest: &Path) -> Result<BackupReport, LedgerError> {
        const OP: &str = "backup";
        if dest.exists() {
            return Err(LedgerError::TargetExists {
                path: dest.to_owned(),
            });
        }
        let target = dest.to_str().ok_or_else(|| LedgerError::File {
            path: dest.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the backup path is not valid UTF-8",
            ),
        })?;
        self.conn.execute("VACUUM INTO ?1", [target]).during(OP)?;
        // The copy is as private as the ledger it came from.
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let _ = std::fs::set_permissions(dest, meta.permissions());
        }
        let check = |detail: String| LedgerError::BackupCheck {
            path: dest.to_owned(),
            detail,
        };
        let copy = rusqlite::Connection::open_with_flags(
            dest,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| check(e.to_string()))?;
        let ok: String = copy
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| check(e.to_string()))?;
        if ok != "ok" {
            return Err(check(format!("quick_check: {ok}")));
        }
        let version: i32 = copy
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| check(e.to_string()))?;
        if version != super::SCHEMA_VERSION {
            return Err(check(format!("schema version {version}")));
        }
        let refunds: i64 = copy
            .query_row("SELECT count(*) FROM refunds", [], |r| r.get(0))
            .map_err(|e| check(e.to_string()))?;
        let bytes = std::fs::metadata(dest)
            .map_err(|source| LedgerError::File {
                path: dest.to_owned(),
                source,
            })?
            .len();
        Ok(BackupReport {
            path: dest.to_owned(),
            bytes,
            refunds: to_u64(refunds),
        })
    }
}
