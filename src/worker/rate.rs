//! The worker's rate limit: queries are spaced evenly at a rate that halves when Checus says
//! TOO_MANY_REQUEST and creeps back toward the configured ceiling on quiet sweeps.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of one: successive queries are spaced `1 / rate` apart. The rate halves on
/// TOO_MANY_REQUEST and creeps back up toward the configured ceiling on quiet sweeps.
#[derive(Debug)]
pub(super) struct RateLimiter {
    state: Mutex<RateState>,
    ceiling: f64,
}

/// The current rate and the next free slot, changed together under one lock.
#[derive(Debug)]
struct RateState {
    /// Queries per second now, between the floor and the ceiling.
    rate: f64,
    /// When the next query may go out.
    next_slot: Instant,
}

impl RateLimiter {
    /// The slowest the limiter will go, however often Checus pushes back.
    const FLOOR: f64 = 0.2;

    /// A limiter at `rate` queries per second, which is also its ceiling.
    pub(super) fn new(rate: f64) -> Self {
        Self {
            state: Mutex::new(RateState {
                rate,
                next_slot: Instant::now(),
            }),
            ceiling: rate,
        }
    }

    /// Waits for this query's slot.
    pub(super) async fn acquire(&self) {
        let slot = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = s.next_slot.max(now);
            s.next_slot = slot + Duration::from_secs_f64(1.0 / s.rate);
            slot
        };
        // A slot already due needs no timer: registering one costs two timer-wheel locks per
        // query, which at a high configured rate is every query.
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// Halves the rate (down to the floor) and returns it.
    pub(super) fn slow_down(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rate = (s.rate / 2.0).max(Self::FLOOR.min(self.ceiling));
        s.rate
    }

    /// Raises the rate by a quarter (up to the ceiling) and returns it.
    pub(super) fn recover(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rate = (s.rate * 1.25).min(self.ceiling);
        s.rate
    }

    /// The current rate.
    pub(super) fn rate(&self) -> f64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).rate
    }
}
