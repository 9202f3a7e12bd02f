//! The global halt: when Checus says our configuration (or our clock) is wrong, querying stops
//! for every refund, so a bad key never burns through the ledger. One probe query goes out per
//! re-check interval; only an answer that is not a halt resumes querying. Answers still in
//! flight when the halt began change nothing but the halt's kind.
//! Pure, like [`super::breaker`]: time is an argument, and the worker owns the I/O and logging.

use std::time::Duration;

use crate::domain::{Halt, Timestamp};

/// Why querying is halted and when to probe again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaltState {
    /// What Checus objected to (the latest halting answer).
    pub halt: Halt,
    /// When querying first halted (kept while halting answers repeat).
    pub since: Timestamp,
    /// When the next probe query may go out.
    pub next_probe_at: Timestamp,
}

/// What a halting answer did, for the worker to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Querying halted: the first halting answer.
    Halted,
    /// Another halting answer (a failed probe, or a straggler) while already halted.
    StillHalted,
}

/// The halt's state: running, or halted until a probe gets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halting {
    state: Option<HaltState>,
    recheck: Duration,
}

impl Halting {
    /// Not halted; once halted, probes every `recheck`.
    pub fn new(recheck: Duration) -> Self {
        Self {
            state: None,
            recheck,
        }
    }

    /// The halt in force, if any.
    pub fn current(&self) -> Option<&HaltState> {
        self.state.as_ref()
    }

    /// `Some(next_probe_at)` while halted.
    pub fn halted_until(&self) -> Option<Timestamp> {
        self.state.as_ref().map(|h| h.next_probe_at)
    }

    /// Records a halting answer seen at `now`: querying stops (or stays stopped) until one
    /// re-check interval from now.
    pub fn enter(&mut self, halt: Halt, now: Timestamp) -> Transition {
        let (since, transition) = match &self.state {
            Some(h) => (h.since, Transition::StillHalted),
            None => (now, Transition::Halted),
        };
        self.state = Some(HaltState {
            halt,
            since,
            next_probe_at: now + self.recheck,
        });
        transition
    }

    /// Records an answer to a probe (or to an operator's query) that is not a halt: querying
    /// resumes. Returns when querying had halted, if it had.
    pub fn resume(&mut self) -> Option<Timestamp> {
        self.state.take().map(|h| h.since)
    }

    /// Pushes the next probe out by one interval (nothing was due to probe with).
    pub fn postpone(&mut self, now: Timestamp) {
        if let Some(h) = self.state.as_mut() {
            h.next_probe_at = now + self.recheck;
        }
    }

    /// Takes over the halt of the machine this one replaces (a reload does not resume
    /// querying with what may be the same bad configuration).
    pub fn carry_over(&mut self, previous: &Halting) {
        self.state = previous.state.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    #[test]
    fn halts_probes_and_resumes_on_an_answer_that_is_not_a_halt() {
        let t0 = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let minute = Duration::from_secs(60);
        let bad_key = Halt::ConfigError {
            code: "SIGN_VERIFY_FAILED".into(),
        };
        let mut h = Halting::new(minute);
        assert_eq!(h.current(), None);
        assert_eq!(h.resume(), None, "nothing to resume");
        assert_eq!(h.enter(bad_key.clone(), t0), Transition::Halted);
        assert_eq!(h.halted_until(), Some(t0 + minute));
        // A failed probe: still halted since t0, next probe one interval later; the latest
        // answer names the halt.
        let t1 = t0 + minute;
        assert_eq!(h.enter(Halt::ClockSkew, t1), Transition::StillHalted);
        let state = h.current().unwrap();
        assert_eq!(
            (state.halt.clone(), state.since, state.next_probe_at),
            (Halt::ClockSkew, t0, t1 + minute)
        );
        h.postpone(t1 + minute);
        assert_eq!(h.halted_until(), Some(t1 + minute + minute));
        // A replacing machine keeps the halt.
        let mut next = Halting::new(minute);
        next.carry_over(&h);
        assert_eq!(next, h);
        assert_eq!(next.resume(), Some(t0));
        assert_eq!(next.halted_until(), None);
        // Postponing a running machine changes nothing.
        next.postpone(t1);
        assert_eq!(next.current(), None);
    }
}
