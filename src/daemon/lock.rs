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

/// `<ledger>.lock`: the file the single-daemon lock is taken on.
pub fn lock_path(ledger_path: &Path) -> PathBuf {
    let mut name = ledger_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Whether a daemon runs on a ledger, as another process (the CLI) can tell: the kernel's lock
/// is the worker's heartbeat that cannot go stale, since it dies with the process.
#[derive(Debug)]
pub enum Presence {
    /// A process holds `<ledger>.lock`: a daemon is running on this ledger.
    Running,
    /// Nobody holds it (or it does not exist: no daemon ever started here).
    NotRunning,
    /// The lock file could not be opened or tested (e.g. permissions): no answer.
    Unknown(std::io::Error),
}

/// Tells whether a daemon holds the lock on `ledger_path`'s lock file, without creating it
/// and without ever blocking or refusing a daemon for long: it tries a *shared* lock, which
/// only fails while a daemon holds the exclusive one, and drops it at once. A daemon starting
/// in that instant retries (see [`DaemonLock::acquire`]). Opened read-only: flock needs no
/// write access, so an operator who can only read the lock file gets an answer too.
pub fn presence(ledger_path: &Path) -> Presence {
    let file = match File::open(lock_path(ledger_path)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Presence::NotRunning,
        Err(e) => return Presence::Unknown(e),
    };
    match file.try_lock_shared() {
        Ok(()) => Presence::NotRunning,
        Err(std::fs::TryLockError::WouldBlock) => Presence::Running,
        Err(std::fs::TryLockError::Error(e)) => Presence::Unknown(e),
    }
}

/// How long a starting daemon keeps trying a lock that is busy: a [`presence`] check holds a
/// shared lock for microseconds, and must not make a daemon start fail (exit 4, which systemd
/// does not restart). A real second daemon holds it for good and is refused after this.
const LOCK_BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

impl DaemonLock {
    /// Takes the lock for `ledger_path`, or says who holds it.
    pub fn acquire(ledger_path: &Path) -> Result<Self, DaemonError> {
        let path = lock_path(ledger_path);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| DaemonError::Lock {
                path: path.clone(),
                source,
            })?;
        match try_lock_briefly(&file) {
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

/// Tries the exclusive lock for up to [`LOCK_BUSY_RETRY`] while it is busy (a CLI's
/// [`presence`] check may hold a shared lock for an instant). Called on the blocking pool.
fn try_lock_briefly(file: &File) -> Result<(), std::fs::TryLockError> {
    let deadline = std::time::Instant::now() + LOCK_BUSY_RETRY;
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                // A retry interval, not a wait for a condition: flock has no timed wait.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_tells_a_held_lock_from_a_free_or_missing_one_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.sqlite");
        std::fs::write(&ledger, b"").unwrap();
        // No lock file: no daemon ever ran; the check creates none.
        assert!(matches!(presence(&ledger), Presence::NotRunning));
        assert!(!lock_path(&ledger).exists());
        let lock = DaemonLock::acquire(&ledger).unwrap();
        assert!(matches!(presence(&ledger), Presence::Running));
        // A second daemon is still refused.
        assert!(matches!(
            DaemonLock::acquire(&ledger),
            Err(DaemonError::AlreadyRunning { .. })
        ));
        drop(lock);
        assert!(matches!(presence(&ledger), Presence::NotRunning));
    }
}
