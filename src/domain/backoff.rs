//! The query schedule: a notification grace window after creation, then a fixed ladder of
//! delays, then a steady cadence, each stretched by jitter the caller draws.

use std::time::Duration;

use super::time::Timestamp;

/// When to query a pending refund. All values come from config; the defaults are Checus's own
/// notification retries (0 s, 30 s, 5 min, 10 min) given time to land before we ask.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Time after creation before the first query.
    pub grace: Duration,
    /// Delay after the 1st, 2nd, ... counted attempt.
    pub steps: Vec<Duration>,
    /// Delay once the ladder is exhausted, and for flagged refunds.
    pub steady: Duration,
    /// Delay after an attempt that did not count (transport error, rate limit, ...).
    pub retry: Duration,
    /// Jitter as a fraction of each delay: 0.1 spreads a delay over ±10 %.
    pub jitter: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        Self {
            grace: Duration::from_secs(10 * MIN),
            steps: [MIN, 5 * MIN, 15 * MIN, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            steady: Duration::from_secs(24 * HOUR),
            retry: Duration::from_secs(MIN),
            jitter: 0.1,
        }
    }
}

impl Schedule {
    /// The first query time of a refund created at `created_at` (no jitter: the grace window
    /// is a promise to the notification path, not a load-spreading device).
    pub fn first_query_at(&self, created_at: Timestamp) -> Timestamp {
        created_at + self.grace
    }

    /// The un-jittered delay after `attempts` counted attempts (`attempts` >= 1).
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let index = attempts.saturating_sub(1) as usize;
        self.steps.get(index).copied().unwrap_or(self.steady)
    }

    /// Stretches `delay` by jitter. `unit` is a caller-drawn number in [0, 1); 0.5 means none.
    pub fn jittered(&self, delay: Duration, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        delay.mul_f64(factor.max(0.0))
    }

    /// When to query next after `attempts` counted attempts, seen at `now`.
    pub fn next_after_attempt(&self, attempts: u32, now: Timestamp, unit: f64) -> Timestamp {
        now + self.jittered(self.delay_after(attempts), unit)
    }

    /// When to query next after an attempt that did not count.
    pub fn next_after_retry(&self, now: Timestamp, unit: f64) -> Timestamp {
        now + self.jittered(self.retry, unit)
    }

    /// When to query a flagged refund next: the slow cadence.
    pub fn next_slow(&self, now: Timestamp, unit: f64) -> Timestamp {
        now + self.jittered(self.steady, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_ts;

    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn default_ladder_matches_the_policy() {
        let s = Schedule::default();
        let expected = [1, 5, 15, 60, 180, 360, 720, 1440, 1440, 1440];
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(
                s.delay_after(i as u32 + 1),
                mins(*want),
                "attempt {}",
                i + 1
            );
        }
        assert_eq!(s.delay_after(1000), mins(1440));
        assert_eq!(s.grace, mins(10));
    }

    #[test]
    fn first_query_waits_for_the_grace_window_without_jitter() {
        let s = Schedule::default();
        let created = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        assert_eq!(
            s.first_query_at(created),
            parse_ts("2026-11-25T10:10:00.000Z").unwrap()
        );
    }

    #[test]
    fn jitter_stays_within_its_band_and_is_centred() {
        let s = Schedule::default();
        let d = mins(60);
        assert_eq!(s.jittered(d, 0.5), d);
        assert_eq!(s.jittered(d, 0.0), mins(54));
        assert_eq!(s.jittered(d, 1.0), mins(66));
        for i in 0..100 {
            let j = s.jittered(d, f64::from(i) / 100.0);
            assert!(j >= mins(54) && j <= mins(66), "{j:?}");
        }
        // Out-of-range draws are clamped, never negative or unbounded.
        assert_eq!(s.jittered(d, -3.0), mins(54));
        assert_eq!(s.jittered(d, 7.0), mins(66));
    }

    #[test]
    fn next_times_follow_the_ladder() {
        let s = Schedule::default();
        let now = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        assert_eq!(
            s.next_after_attempt(3, now, 0.5),
            parse_ts("2026-11-25T10:15:00.000Z").unwrap()
        );
        assert_eq!(
            s.next_after_retry(now, 0.5),
            parse_ts("2026-11-25T10:01:00.000Z").unwrap()
        );
        assert_eq!(
            s.next_slow(now, 0.5),
            parse_ts("2026-11-26T10:00:00.000Z").unwrap()
        );
    }
}
