//! Outgoing webhooks' retry rule: after a failed delivery, when to try again, or that the
//! event is dead. Exponential backoff (doubling from `first`, capped at `max`) stretched by
//! ±20 % jitter, for up to `give_up_after` counted from the event's first attempt. Pure: the
//! time and the jitter draw are arguments.

use std::time::Duration;

use chrono::TimeDelta;

use super::Timestamp;

/// How far jitter stretches a delay either way (0.2: from 80 % to 120 %). Spreads the retries
/// of a burst of events that failed together (a receiver restart) instead of sending them
/// back at the same instant.
pub const JITTER: f64 = 0.2;

/// The retry schedule of webhook deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failure; each later failure doubles it.
    pub first: Duration,
    /// The longest delay between two attempts.
    pub max: Duration,
    /// How long after its first attempt an event keeps being retried before it is dead.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// 10 s, 20 s, 40 s, … up to one hour between attempts, for 3 days: about 80 attempts.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

/// What to do with an event whose delivery just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time.
    RetryAt(Timestamp),
    /// The retry window is over: the event is dead until an operator redelivers it.
    Dead,
}

impl RetryPolicy {
    /// The un-jittered delay after `failures` failed attempts (`failures` >= 1).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(40);
        self.first
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// After the `failures`-th failed attempt of an event first attempted at `first_attempt`,
    /// failing at `now`: the next attempt's time, or [`AfterFailure::Dead`] once `now` is
    /// `give_up_after` or more past the first attempt. `unit` is a caller-drawn number in
    /// [0, 1); 0.5 means no jitter.
    pub fn after_failure(
        &self,
        failures: u32,
        first_attempt: Timestamp,
        now: Timestamp,
        unit: f64,
    ) -> AfterFailure {
        let window = TimeDelta::from_std(self.give_up_after).unwrap_or(TimeDelta::MAX);
        if now.signed_duration_since(first_attempt) >= window {
            return AfterFailure::Dead;
        }
        let factor = 1.0 + JITTER * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let delay = self.delay_after(failures).mul_f64(factor);
        let delay = TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
        AfterFailure::RetryAt(now.checked_add_signed(delay).unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn delays_double_from_the_first_and_stop_at_the_max() {
        let p = RetryPolicy::default();
        let cases = [
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 80),
            (9, 2560),
            (10, 3600),
            (11, 3600),
            (80, 3600),
            (u32::MAX, 3600),
        ];
        for (failures, delay) in cases {
            assert_eq!(p.delay_after(failures), secs(delay), "failure {failures}");
        }
    }

    #[test]
    fn retries_are_jittered_within_twenty_percent_and_die_after_the_window() {
        let p = RetryPolicy::default();
        let first = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let now = parse_ts("2026-11-25T10:00:30.000Z").unwrap();
        let at = |unit| match p.after_failure(2, first, now, unit) {
            AfterFailure::RetryAt(t) => (t - now).num_milliseconds(),
            AfterFailure::Dead => panic!("dead"),
        };
        assert_eq!(at(0.5), 20_000);
        assert_eq!(at(0.0), 16_000);
        assert_eq!(at(1.0), 24_000);
        // Just inside the window: retried; at its end and after: dead.
        let window = TimeDelta::from_std(p.give_up_after).unwrap();
        let inside = first + window - TimeDelta::milliseconds(1);
        assert!(matches!(
            p.after_failure(70, first, inside, 0.5),
            AfterFailure::RetryAt(_)
        ));
        assert_eq!(
            p.after_failure(70, first, first + window, 0.5),
            AfterFailure::Dead
        );
        assert_eq!(
            p.after_failure(1, first, first + window * 2, 0.0),
            AfterFailure::Dead
        );
    }

    #[test]
    fn the_default_schedule_makes_about_eighty_attempts_in_three_days() {
        let p = RetryPolicy::default();
        let first = parse_ts("2026-11-25T00:00:00.000Z").unwrap();
        let (mut now, mut failures) = (first, 0u32);
        loop {
            failures += 1;
            match p.after_failure(failures, first, now, 0.5) {
                AfterFailure::RetryAt(t) => now = t,
                AfterFailure::Dead => break,
            }
        }
        assert!((75..=85).contains(&failures), "{failures} attempts");
    }
}
