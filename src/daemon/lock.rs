//! The single-daemon lock, held for the daemon's life: on an SQLite ledger an exclusive file
//! lock on `<ledger>.lock`; on a PostgreSQL ledger several daemons share, the lock of this
//! daemon's node name ([`NodeLock`], one daemon per node). And the [`Guard`] that checks before
//! every sweep that the lock still holds: the lock file and the ledger at their paths are
//! still the files this daemon opened, or the node lock's session is alive (taken again after
//! the server restarted).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::DaemonError;
use crate::domain::NodeName;
use crate::ledger::LedgerTarget;
use crate::ledger::postgres::NodeLock;

/// The lock a running daemon holds, by engine.
#[derive(Debug)]
pub(super) enum Held {
    /// `<ledger>.lock` beside an SQLite file.
    File(DaemonLock),
    /// The node's lock on a PostgreSQL ledger, on its own connection.
    Node(Arc<Mutex<NodeLock>>),
}

/// What the lock is, as "daemon ready" logs it: the lock file, or the node lock's name.
impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(lock) => write!(f, "{}", lock.path().display()),
            Self::Node(lock) => {
                let node = lock
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .node()
                    .clone();
                write!(f, "node lock {node}")
            }
        }
    }
}

impl Held {
    /// Takes the lock for `target` as the node `node`, or says who holds it. Blocks (the
    /// file lock's brief retry, or a connection to the server): called on the blocking pool.
    pub(super) fn acquire(target: &LedgerTarget, node: &NodeName) -> Result<Self, DaemonError> {
        match target {
            LedgerTarget::Sqlite(path) => DaemonLock::acquire(path).map(Self::File),
            LedgerTarget::Postgres(pg) => Ok(Self::Node(Arc::new(Mutex::new(NodeLock::acquire(
                pg, node,
            )?)))),
        }
    }

    /// The guard that checks the lock still holds.
    pub(super) fn guard(&self) -> Guard {
        match self {
            Self::File(lock) => Guard::Files(lock.guard.clone()),
            Self::Node(lock) => Guard::Node(Arc::clone(lock)),
        }
    }
}

/// Holds the exclusive daemon lock on `<ledger>.lock` for as long as it lives. The kernel
/// drops the lock when the process dies, even by SIGKILL, so no stale lock survives a crash.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
    /// The guard taken with the lock: the lock file's and the ledger's identities.
    guard: Files,
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

/// What the daemon checks before every sweep and on `/readyz`: that its lock still holds.
#[derive(Debug, Clone)]
pub(super) enum Guard {
    /// The SQLite ledger's lock file and the ledger.
    Files(Files),
    /// The PostgreSQL node lock.
    Node(Arc<Mutex<NodeLock>>),
}

impl Guard {
    /// `Ok` while the lock holds. An error [`DaemonError::is_transient`] says the ledger's
    /// server cannot be reached now (check again later); any other stops the daemon.
    pub(super) async fn check(&self) -> Result<(), DaemonError> {
        match self {
            Self::Files(files) => files.check().await,
            Self::Node(lock) => {
                let lock = Arc::clone(lock);
                let checked = tokio::task::spawn_blocking(move || {
                    lock.lock().unwrap_or_else(|p| p.into_inner()).check()
                })
                .await;
                match checked {
                    Ok(r) => r.map_err(DaemonError::from),
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
        }
    }

    /// Whether the node lock was taken again since the last call (its session was lost with
    /// the server); never for the file lock.
    pub(super) fn take_retaken(&self) -> bool {
        match self {
            Self::Files(_) => false,
            Self::Node(lock) => lock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take_retaken(),
        }
    }
}

/// The lock file and the ledger as the daemon opened them. An flock guards an inode, not a
/// path: once `<ledger>.lock` is deleted, a second daemon locks a new file at the same path and
/// runs beside the first; once the ledger is replaced, the daemon would keep writing to the
/// moved-away file. [`Files::check`] sees both before every sweep.
#[derive(Debug, Clone)]
pub(super) struct Files {
    lock: (PathBuf, FileId),
    ledger: (PathBuf, FileId),
}

impl Files {
    /// `Ok` while both paths still name the files this daemon opened.
    async fn check(&self) -> Result<(), DaemonError> {
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
                let guard = Files {
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
