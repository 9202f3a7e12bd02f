//! Wall-clock time as the ledger stores it, and the `Clock` seam that keeps clock reads out of
//! the domain.
//!
//! The ledger stores every instant as UTC text `YYYY-MM-DDTHH:MM:SS.mmmZ`: it sorts
//! lexicographically (so indexes and `<=` work), it is what SQLite's
//! `strftime('%Y-%m-%dT%H:%M:%fZ','now')` produces, and an operator can read it in `sqlite3`.

use chrono::{DateTime, SecondsFormat, Utc};

/// An instant in UTC. Millisecond precision is what the ledger keeps.
pub type Timestamp = DateTime<Utc>;

/// Source of "now". The daemon uses [`SystemClock`]; tests pass their own.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// Formats an instant the way the ledger stores it: `2026-11-25T20:58:27.123Z`.
pub fn format_ts(ts: Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 instant (any offset) into UTC.
pub fn parse_ts(text: &str) -> Result<Timestamp, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_format_is_fixed_width_utc_millis() {
        let t = parse_ts("2022-01-17T15:01:23.7+08:00").unwrap();
        assert_eq!(format_ts(t), "2022-01-17T07:01:23.700Z");
        let t = parse_ts("2023-10-20T03:28:23Z").unwrap();
        assert_eq!(format_ts(t), "2023-10-20T03:28:23.000Z");
    }
}

/// A clock that only moves when told to: tests and simulations share one between the worker
/// and the sandbox, so hours of schedule pass in microseconds.
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<Timestamp>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: std::sync::Mutex::new(start),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
