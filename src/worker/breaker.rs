//! The gateway circuit breaker: after a run of consecutive "gateway unavailable" answers
//! (connection failures, timeouts, 5xx, `SYSTEM_ERROR`, `REQUEST_TIMEOUT`) the worker stops
//! querying and defers every due refund, untouched, instead of cycling the whole ledger
//! through retries against a dead gateway. One probe query goes out per probe interval; the
//! first answer that shows the gateway is back closes the breaker and the sweep catches up.
//! Pure: time is an argument, and the worker owns the I/O and the logging.

use std::time::Duration;

use crate::domain::{QueryOutcome, RetryReason, Timestamp};

/// Consecutive outage answers that open the breaker.
pub const OPEN_AFTER: u32 = 5;

/// Whether an attempt says the gateway is down (rather than up, even if unhappy).
///
/// Outage: the transport failed, an HTTP 5xx, or the gateway's own "busy / timed out" codes.
/// Everything else (any verified or unverified body, 4xx/3xx, rate limiting, configuration
/// codes) proves something answered, so it closes the run.
pub fn is_outage(outcome: &QueryOutcome, http_status: Option<u16>) -> bool {
    match outcome {
        QueryOutcome::Retryable { reason, .. } => match reason {
            RetryReason::Transport | RetryReason::SystemError | RetryReason::RequestTimeout => true,
            RetryReason::HttpStatus => http_status.is_some_and(|s| s >= 500),
            _ => false,
        },
        _ => false,
    }
}

/// A state change the worker logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The breaker opened: querying is paused until `next_probe_at`.
    Opened {
        /// Outage answers in a row that tripped it.
        consecutive: u32,
        /// When the first probe may go out.
        next_probe_at: Timestamp,
    },
    /// A probe failed too: still paused until `next_probe_at`.
    StillOpen {
        /// When the next probe may go out.
        next_probe_at: Timestamp,
    },
    /// The gateway answered again: querying resumes.
    Closed {
        /// When the breaker opened.
        since: Timestamp,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        since: Timestamp,
        next_probe_at: Timestamp,
    },
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    state: State,
    probe_every: Duration,
}

impl Breaker {
    /// A closed breaker that, once open, probes every `probe_every`.
    pub fn new(probe_every: Duration) -> Self {
        Self {
            state: State::Closed { consecutive: 0 },
            probe_every,
        }
    }

    /// `Some(since)` while open: when it opened.
    pub fn open_since(&self) -> Option<Timestamp> {
        match self.state {
            State::Open { since, .. } => Some(since),
            State::Closed { .. } => None,
        }
    }

    /// `Some(next_probe_at)` while open.
    pub fn open_until(&self) -> Option<Timestamp> {
        match self.state {
            State::Open { next_probe_at, .. } => Some(next_probe_at),
            State::Closed { .. } => None,
        }
    }

    /// Whether querying is paused.
    pub fn is_open(&self) -> bool {
        self.open_until().is_some()
    }

    /// Records one attempt's verdict (`outage` from [`is_outage`]) observed at `now`. While
    /// open, only an outage seen at or after the probe time (a failed probe) moves the probe.
    pub fn observe(&mut self, outage: bool, now: Timestamp) -> Option<Transition> {
        match (self.state, outage) {
            (State::Closed { .. }, false) => {
                self.state = State::Closed { consecutive: 0 };
                None
            }
            (State::Closed { consecutive }, true) => {
                let consecutive = consecutive + 1;
                if consecutive >= OPEN_AFTER {
                    let next_probe_at = now + self.probe_every;
                    self.state = State::Open {
                        since: now,
                        next_probe_at,
                    };
                    Some(Transition::Opened {
                        consecutive,
                        next_probe_at,
                    })
                } else {
                    self.state = State::Closed { consecutive };
                    None
                }
            }
            // Stragglers that were in flight when the breaker opened change nothing.
            (State::Open { next_probe_at, .. }, true) if now < next_probe_at => None,
            (State::Open { since, .. }, true) => {
                let next_probe_at = now + self.probe_every;
                self.state = State::Open {
                    since,
                    next_probe_at,
                };
                Some(Transition::StillOpen { next_probe_at })
            }
            (State::Open { since, .. }, false) => {
                self.state = State::Closed { consecutive: 0 };
                Some(Transition::Closed { since })
            }
        }
    }

    /// Pushes the next probe out by one interval (nothing was due to probe with).
    pub fn postpone(&mut self, now: Timestamp) {
        if let State::Open { since, .. } = self.state {
            self.state = State::Open {
                since,
                next_probe_at: now + self.probe_every,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{QueryOutcome, parse_ts};

    fn retry(reason: RetryReason) -> QueryOutcome {
        QueryOutcome::Retryable {
            reason,
            detail: String::new(),
        }
    }

    #[test]
    fn outage_means_the_gateway_did_not_answer() {
        let cases = [
            (retry(RetryReason::Transport), None, true),
            (retry(RetryReason::SystemError), Some(200), true),
            (retry(RetryReason::RequestTimeout), Some(200), true),
            (retry(RetryReason::HttpStatus), Some(503), true),
            (retry(RetryReason::HttpStatus), Some(500), true),
            (retry(RetryReason::HttpStatus), Some(302), false),
            (retry(RetryReason::HttpStatus), Some(404), false),
            (retry(RetryReason::Malformed), Some(200), false),
            (retry(RetryReason::Unverified), Some(200), false),
            (retry(RetryReason::UnknownCode), Some(200), false),
            (QueryOutcome::RateLimited, Some(200), false),
            (
                QueryOutcome::Unknown {
                    code: "ORDER_NOT_EXIST".into(),
                },
                Some(200),
                false,
            ),
        ];
        for (outcome, status, want) in cases {
            assert_eq!(is_outage(&outcome, status), want, "{outcome:?} {status:?}");
        }
    }

    #[test]
    fn opens_after_a_run_probes_and_closes_on_the_first_answer() {
        let t0 = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let minute = Duration::from_secs(60);
        let mut b = Breaker::new(minute);
        for _ in 0..OPEN_AFTER - 1 {
            assert_eq!(b.observe(true, t0), None);
        }
        // An answer in between resets the run.
        assert_eq!(b.observe(false, t0), None);
        for _ in 0..OPEN_AFTER - 1 {
            assert_eq!(b.observe(true, t0), None);
        }
        assert!(!b.is_open());
        assert_eq!(
            b.observe(true, t0),
            Some(Transition::Opened {
                consecutive: OPEN_AFTER,
                next_probe_at: t0 + minute
            })
        );
        assert_eq!(b.open_until(), Some(t0 + minute));
        // Answers still in flight when it opened change nothing.
        assert_eq!(b.observe(true, t0), None);
        assert_eq!(b.open_until(), Some(t0 + minute));
        let t1 = t0 + minute;
        assert_eq!(
            b.observe(true, t1),
            Some(Transition::StillOpen {
                next_probe_at: t1 + minute
            })
        );
        b.postpone(t1 + minute);
        assert_eq!(b.open_until(), Some(t1 + minute + minute));
        assert_eq!(
            b.observe(false, t1 + minute),
            Some(Transition::Closed { since: t0 })
        );
        assert!(!b.is_open());
        // Closed again: a fresh run is needed to reopen.
        assert_eq!(b.observe(true, t1), None);
    }
}
