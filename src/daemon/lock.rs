//! The single-daemon lock: an exclusive file lock on `<ledger>.lock`, held for the daemon's life,
//! and the [`Guard`] that notices when the lock file or the ledger at their paths are no longer
//! the files this daemon opened.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::DaemonError;

/// Holds the exclusive daemon lock on `<ledger>.lock` for as long as it lives. The kernel
/// drops the lock when the process dies, even by SIGKILL, so no stale lock survives a crash.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
    /// The guard taken with the lock: the lock file's and the ledger's identities.
    guard: Guard,
}

/// A file's identity: the device and inode it had when the daemon opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The lock file and the ledger as the daemon opened them. An flock guards an inode, not a
/// path: once `<ledger>.lock` is deleted, a second daemon locks a new file at the same path and
/// runs beside the first; once the ledger is replaced, the daemon would keep writing to the
/// moved-away file. [`Guard::check`] sees both before every sweep.
#[derive(Debug, Clone)]
pub(super) struct Guard {
    lock: (PathBuf, FileId),
    ledger: (PathBuf, FileId),
}

impl Guard {
    /// `Ok` while both paths still name the files this daemon opened.
    pub(super) async fn check(&self) -> Result<(), DaemonError> {
        for (what, (path, id)) in [("lock file", &self.lock), ("ledger", &self.ledger)] {
            let how = match tokio::fs::metadata(path).await {
                Ok(meta) if FileId::of(&meta) == *id => continue,
                Ok(_) => "replaced",
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "deleted",
                // Unreadable for another reason (e.g. a directory made unsearchable): not proof
                // of a replacement, and the next sweep looks again.
                Err(_) => continue,
            };
            return Err(DaemonError::IdentityLost {
                what,
                path: path.clone(),
                how,
            });
        }
        Ok(())
    }
}

impl DaemonLock {
    /// Takes the lock for `ledger_path`, or says who holds it.
    pub fn acquire(ledger_path: &Path) -> Result<Self, DaemonError> {
        let mut name = ledger_path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| DaemonError::Lock {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {
                let id = |p: &Path, meta: std::io::Result<std::fs::Metadata>| {
                    meta.map(|m| (p.to_owned(), FileId::of(&m)))
                        .map_err(|source| DaemonError::Lock {
                            path: p.to_owned(),
                            source,
                        })
                };
                let guard = Guard {
                    lock: id(&path, file.metadata())?,
                    ledger: id(ledger_path, std::fs::metadata(ledger_path))?,
                };
                Ok(Self {
                    _file: file,
                    path,
                    guard,
                })
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::AlreadyRunning { path }),
            Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Lock { path, source }),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The guard over the lock file's and the ledger's identities.
    pub(super) fn guard(&self) -> Guard {
        self.guard.clone()
    }
}
