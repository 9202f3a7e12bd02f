//! systemd's notification protocol for `run` under `Type=notify`: `READY=1` once the config is
//! validated and the ledger open, `STATUS=` after each sweep, `WATCHDOG=1` pings driven by the
//! work loop, `STOPPING=1` on shutdown.
//!
//! The message vocabulary is sd-notify's [`NotifyState`]. The transport is a datagram to the
//! socket named by `$NOTIFY_SOCKET` as captured at start-up ([`Notifier::from_env`]) rather
//! than `sd_notify::notify`, which re-reads the process environment on every call: the house
//! rule is that nothing reads the environment after start-up, and a captured address lets the
//! library tests point the daemon at a socket of their own.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

pub use sd_notify::NotifyState;

use crate::config::Environment;

/// Where notifications go: a path, or a Linux abstract socket (`@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Sends service-manager notifications; a no-op when not started by systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    address: Option<Address>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// No notifications (not under systemd, tests that do not watch).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// From systemd's variables: `NOTIFY_SOCKET`, and `WATCHDOG_USEC` (honoured only when
    /// `WATCHDOG_PID` is unset or names this process, as sd_watchdog_enabled(3) says).
    pub fn from_env(env: &Environment) -> Self {
        let address = env
            .get("NOTIFY_SOCKET")
            .and_then(|s| match s.strip_prefix('@') {
                Some(name) => Some(Address::Abstract(name.as_bytes().to_vec())),
                None if s.starts_with('/') => Some(Address::Path(PathBuf::from(s))),
                None => None,
            });
        let for_us = env
            .get("WATCHDOG_PID")
            .is_none_or(|p| p.trim().parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = env
            .get("WATCHDOG_USEC")
            .filter(|_| for_us)
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0)
            .map(Duration::from_micros);
        Self {
            address: address.clone(),
            watchdog: watchdog.filter(|_| address.is_some()),
        }
    }

    /// A notifier for the socket at `path` with a watchdog of `watchdog` (tests).
    pub fn to_path(path: impl Into<PathBuf>, watchdog: Option<Duration>) -> Self {
        Self {
            address: Some(Address::Path(path.into())),
            watchdog,
        }
    }

    /// True when notifications are sent somewhere.
    pub fn is_enabled(&self) -> bool {
        self.address.is_some()
    }

    /// How often the work loop must ping: half the service's `WatchdogSec=`, as systemd
    /// recommends. `None`: no watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends `states`, one per line. Failures are returned, never fatal for the caller.
    pub fn notify(&self, states: &[NotifyState<'_>]) -> std::io::Result<()> {
        let Some(address) = &self.address else {
            return Ok(());
        };
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        let sock = UnixDatagram::unbound()?;
        // Never block the work loop: a reader that does not keep up (a full datagram queue)
        // costs one dropped notification (WouldBlock), never a stalled worker.
        sock.set_nonblocking(true)?;
        let sent = match address {
            Address::Path(p) => sock.send_to(msg.as_bytes(), p)?,
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr)?
            }
        };
        if sent != msg.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "incomplete notification",
            ));
        }
        Ok(())
    }

    /// `READY=1` with a first status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    /// `STATUS=` with a one-line summary.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = self.notify(states) {
            tracing::warn!(error = %e, "service manager notification failed");
        }
    }
}

/// A status line must be one line: systemd reads the message as newline-separated fields.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_systemd_variables_once() {
        let pid = std::process::id().to_string();
        let env = Environment::from_pairs([
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("WATCHDOG_USEC", "60000000"),
            ("WATCHDOG_PID", pid.as_str()),
        ]);
        let n = Notifier::from_env(&env);
        assert!(n.is_enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(30)));

        // A watchdog meant for another process is not ours.
        let env = Environment::from_pairs([
            ("NOTIFY_SOCKET", "@abstract"),
            ("WATCHDOG_USEC", "60000000"),
            ("WATCHDOG_PID", "1"),
        ]);
        let n = Notifier::from_env(&env);
        assert!(n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);

        // Not under systemd: nothing, and no watchdog without a socket.
        let n = Notifier::from_env(&Environment::from_pairs([("WATCHDOG_USEC", "1000")]));
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        assert!(n.notify(&[NotifyState::Ready]).is_ok());
    }

    #[test]
    fn sends_datagrams_in_the_protocol_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to_path(&path, None);
        n.ready("ledger open\nsecond line");
        n.watchdog();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=ledger open second line\n"
        );
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), "WATCHDOG=1\n");
    }

    #[test]
    fn a_reader_that_does_not_keep_up_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to_path(&path, None);
        // Far more than the kernel's datagram queue (net.unix.max_dgram_qlen, 10 by default):
        // once it is full, sends fail with WouldBlock instead of waiting for the reader.
        let results: Vec<_> = (0..1000)
            .map(|_| n.notify(&[NotifyState::Watchdog]))
            .collect();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
            .count();
        assert!(refused > 0, "the queue never filled");
    }

    #[test]
    fn abstract_sockets_are_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("checus-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_env(&Environment::from_pairs([(
            "NOTIFY_SOCKET",
            format!("@{name}"),
        )]));
        n.status("swept");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), "STATUS=swept\n");
    }
}
