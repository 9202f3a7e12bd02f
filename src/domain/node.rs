//! Daemon nodes: the name a daemon works under (`worker.node_name`, recorded on its sweeps,
//! attempts and claim leases, and in the ledger's `nodes` table), and how `status` judges a
//! node from its stored heartbeat: running, stopped, or silent.

use std::fmt;
use std::time::Duration;

use super::refund::InvalidValue;
use super::time::Timestamp;

/// A node's name: 1 to 64 characters from `[A-Za-z0-9._-]` (the same rule as the CHECKs on
/// `nodes.name`, `refunds.claimed_by`, `attempts.node` and `sweeps.node`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// The longest name allowed.
    pub const MAX_LEN: usize = 64;

    /// Validates a node name; the error names `field`.
    pub fn parse_as(field: &'static str, text: &str) -> Result<Self, InvalidValue> {
        if text.is_empty() {
            return Err(InvalidValue::new(field, "is empty"));
        }
        if text.len() > Self::MAX_LEN {
            return Err(InvalidValue::new(
                field,
                format!(
                    "{text:?} is {} characters long; at most {} are allowed",
                    text.chars().count(),
                    Self::MAX_LEN
                ),
            ));
        }
        if let Some(c) = text.chars().find(|c| !is_name_char(*c)) {
            return Err(InvalidValue::new(
                field,
                format!(
                    "{text:?} contains {c:?}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
                ),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// Validates a node name (errors name `node_name`).
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        Self::parse_as("node_name", text)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// What a node is doing, as far as its `nodes` row tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// It heartbeat recently and has not stopped.
    Running,
    /// It stopped cleanly (`stopped_at` is set).
    Stopped,
    /// It has not stopped, yet its last heartbeat is older than the silence threshold: killed,
    /// hung, or cut off from the ledger.
    Silent,
}

impl NodeState {
    /// `running`, `stopped` or `silent`, as `status --json` and `/metrics` say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Silent => "silent",
        }
    }

    /// Every state, in the order `status` and `/metrics` list them.
    pub const ALL: [Self; 3] = [Self::Running, Self::Stopped, Self::Silent];
}

/// How many heartbeat periods without a heartbeat make a running node silent.
pub const SILENT_AFTER_INTERVALS: u32 = 3;

/// The least time between two heartbeats of a daemon's `nodes` row (one write per turn of its
/// loop would be waste). Its loop turns at least once a sweep interval, so it heartbeats at
/// least every `max(sweep interval, HEARTBEAT_EVERY)`.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The silence threshold for a daemon sweeping every `sweep_interval`:
/// [`SILENT_AFTER_INTERVALS`] of its heartbeat periods, the longer of the sweep interval and
/// [`HEARTBEAT_EVERY`] (a 1 s cron still heartbeats only every 5 s).
pub fn silent_after(sweep_interval: Duration) -> Duration {
    sweep_interval
        .max(HEARTBEAT_EVERY)
        .saturating_mul(SILENT_AFTER_INTERVALS)
}

/// Judges a node at `now` from its last heartbeat and its clean stop, if any. A heartbeat
/// exactly `silent_after` old is still running; a heartbeat in the future (another host's
/// clock ahead of ours) counts as fresh.
pub fn node_state(
    heartbeat_at: Timestamp,
    stopped_at: Option<Timestamp>,
    now: Timestamp,
    silent_after: Duration,
) -> NodeState {
    if stopped_at.is_some() {
        return NodeState::Stopped;
    }
    let age = (now - heartbeat_at).to_std().unwrap_or(Duration::ZERO);
    if age > silent_after {
        NodeState::Silent
    } else {
        NodeState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    #[test]
    fn node_names_follow_the_schema_rule() {
        for ok in [
            "a",
            "node-1",
            "host.example.com",
            "A_b.C-9",
            &"x".repeat(64),
        ] {
            assert_eq!(NodeName::parse(ok).unwrap().as_str(), ok);
        }
        let cases = [
            ("", "node_name: is empty"),
            (
                &"x".repeat(65),
                "is 65 characters long; at most 64 are allowed",
            ),
            ("a b", "contains ' '"),
            ("é", "contains 'é'"),
            ("a/b", "contains '/'"),
            ("a:b", "contains ':'"),
        ];
        for (bad, says) in cases {
            let e = NodeName::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let e = NodeName::parse_as("worker.node_name", "").unwrap_err();
        assert_eq!(e.field, "worker.node_name");
    }

    #[test]
    fn a_node_is_running_stopped_or_silent() {
        let t = |s: &str| parse_ts(s).unwrap();
        let now = t("2026-11-25T10:01:30.000Z");
        let limit = silent_after(Duration::from_secs(30));
        assert_eq!(limit, Duration::from_secs(90));
        // A sweep interval shorter than the heartbeat's period: the period counts.
        assert_eq!(
            silent_after(Duration::from_secs(1)),
            Duration::from_secs(15)
        );
        let table = [
            // heartbeat, stopped, state
            ("2026-11-25T10:01:29.000Z", None, NodeState::Running),
            ("2026-11-25T10:00:00.000Z", None, NodeState::Running), // exactly 90 s
            ("2026-11-25T09:59:59.999Z", None, NodeState::Silent),
            ("2026-11-25T10:05:00.000Z", None, NodeState::Running), // clock ahead
            (
                "2026-11-25T09:00:00.000Z",
                Some("2026-11-25T09:00:00.000Z"),
                NodeState::Stopped,
            ),
            (
                "2026-11-25T10:01:29.000Z",
                Some("2026-11-25T10:01:29.000Z"),
                NodeState::Stopped,
            ),
        ];
        for (hb, stopped, want) in table {
            assert_eq!(
                node_state(t(hb), stopped.map(t), now, limit),
                want,
                "{hb} {stopped:?}"
            );
        }
    }
}
