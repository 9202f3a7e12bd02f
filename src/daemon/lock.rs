//! The single-daemon lock: an exclusive file lock on `<ledger>.lock`, held for the daemon's life.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::DaemonError;

/// Holds the exclusive daemon lock on `<ledger>.lock` for as long as it lives. The kernel
/// drops the lock when the process dies, even by SIGKILL, so no stale lock survives a crash.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
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
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::AlreadyRunning { path }),
            Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Lock { path, source }),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
