//! Claim leases: how long a node holds the refunds it claimed, how many it may claim at once,
//! and whether a claimed refund may still be queried. Pure arithmetic over the settings; the
//! worker owns the clock and the ledger.
//!
//! A claim sets `refunds.claimed_by`/`claimed_until` in the claim's own transaction, so no
//! other node (on an engine shared by several) queries the same refund until the lease ends or
//! the attempt is recorded, which clears it. A claimed refund waits in the worker's memory
//! for the rate limiter before its query is sent, then needs up to [`LeaseTerms::per_refund`]
//! to be answered and committed, so the lease must cover both:
//! - the claim takes only a chunk the limiter can send in half of what the lease leaves once
//!   that per-refund time is set aside ([`LeaseTerms::chunk`]), so leases rarely run short;
//! - a query is never sent when the lease would end before it could be answered and recorded
//!   ([`LeaseTerms::may_send`]); the refund stays due and is claimed again with a fresh lease.

use std::time::Duration;

use super::time::Timestamp;

/// `worker.claim_lease`'s default: two minutes, four times what one refund may need at the
/// default 15 s request timeout (two queries and the commit window, about 30 s).
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(120);

/// The lease a claim takes and the time one claimed refund's work may take once sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// How long a claim holds its refunds (`worker.claim_lease`).
    pub lease: Duration,
    /// How long one refund's work may take once its query is sent: two queries at the
    /// gateway's request timeout (a clock-skew answer is retried once at once) and the group
    /// commit's gather window.
    pub per_refund: Duration,
}

impl LeaseTerms {
    /// The terms for a lease of `lease`, queries that time out after `request_timeout` and a
    /// group commit that gathers answers for `commit_window`.
    pub fn new(lease: Duration, request_timeout: Duration, commit_window: Duration) -> Self {
        Self {
            lease,
            per_refund: per_refund(request_timeout, commit_window),
        }
    }

    /// The shortest lease that leaves as much time for waiting as for the query itself: twice
    /// [`LeaseTerms::per_refund`]. `worker.claim_lease` is refused below it.
    pub fn least_lease(request_timeout: Duration, commit_window: Duration) -> Duration {
        per_refund(request_timeout, commit_window).saturating_mul(2)
    }

    /// When a lease taken at `now` ends.
    pub fn lease_until(&self, now: Timestamp) -> Timestamp {
        now + chrono::TimeDelta::from_std(self.lease).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Whether a refund leased until `lease_until` may have its query sent at `now`: its
    /// answer can be back and recorded before the lease ends. When not, the refund is left
    /// due and claimed again.
    pub fn may_send(&self, lease_until: Timestamp, now: Timestamp) -> bool {
        let budget = chrono::TimeDelta::from_std(self.per_refund).unwrap_or(chrono::TimeDelta::MAX);
        now.checked_add_signed(budget)
            .is_some_and(|done| done <= lease_until)
    }

    /// How many refunds one claim may take: as many as the rate limiter lets out at
    /// `rate_per_second` in half the time the lease leaves once one refund's work is set
    /// aside, less the `queued_ahead` queries already waiting for the limiter; at least 1, at
    /// most `batch`. The half is the margin for a limiter that slows down meanwhile (Checus
    /// asked) or queries that take their whole timeout; [`LeaseTerms::may_send`] catches the
    /// rest.
    pub fn chunk(&self, rate_per_second: f64, queued_ahead: usize, batch: usize) -> usize {
        let waiting = self.lease.saturating_sub(self.per_refund).as_secs_f64() / 2.0;
        let sendable = rate_per_second * waiting;
        let sendable = if sendable.is_finite() && sendable > 0.0 {
            // Capped at `batch` before the cast, so no float is too large for a usize.
            sendable.min(batch as f64).floor() as usize
        } else {
            0
        };
        sendable.saturating_sub(queued_ahead).clamp(1, batch.max(1))
    }
}

fn per_refund(request_timeout: Duration, commit_window: Duration) -> Duration {
    request_timeout
        .saturating_mul(2)
        .saturating_add(commit_window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    const GATHER: Duration = Duration::from_millis(20);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn one_refund_needs_two_timeouts_and_the_commit_window() {
        let terms = LeaseTerms::new(s(120), s(15), GATHER);
        assert_eq!(terms.per_refund, Duration::from_millis(30_020));
        assert_eq!(
            LeaseTerms::least_lease(s(15), GATHER),
            Duration::from_millis(60_040)
        );
        // The default is well above the least lease at the default request timeout.
        assert!(DEFAULT_CLAIM_LEASE >= 2 * LeaseTerms::least_lease(s(15), GATHER) - s(1));
    }

    #[test]
    fn a_query_is_sent_only_when_its_answer_fits_in_the_lease() {
        let t = |x: &str| parse_ts(x).unwrap();
        let terms = LeaseTerms::new(s(120), s(15), GATHER);
        let claimed = t("2026-11-25T10:00:00.000Z");
        let until = terms.lease_until(claimed);
        assert_eq!(until, t("2026-11-25T10:02:00.000Z"));
        let table = [
            ("2026-11-25T10:00:00.000Z", true),
            ("2026-11-25T10:01:29.980Z", true), // exactly 30.02 s left
            ("2026-11-25T10:01:29.981Z", false),
            ("2026-11-25T10:02:00.000Z", false),
            ("2026-11-25T10:05:00.000Z", false),
        ];
        for (now, want) in table {
            assert_eq!(terms.may_send(until, t(now)), want, "{now}");
        }
    }

    #[test]
    fn a_claim_takes_what_the_limiter_sends_in_half_the_spare_lease() {
        let terms = LeaseTerms::new(s(120), s(15), GATHER);
        // (120 - 30.02) / 2 = 44.99 s at 5/s: 224 refunds.
        let table = [
            // rate, queued ahead, batch, chunk
            (5.0, 0, 500, 224),
            (5.0, 16, 500, 208),
            (5.0, 0, 100, 100),  // never more than the batch
            (0.01, 0, 500, 1),   // at least one
            (5.0, 1000, 500, 1), // even behind a long queue
            (1e9, 0, 500, 500),
            (f64::NAN, 0, 500, 1),
            (5.0, 0, 0, 1),
        ];
        for (rate, ahead, batch, want) in table {
            assert_eq!(
                terms.chunk(rate, ahead, batch),
                want,
                "{rate} {ahead} {batch}"
            );
        }
        // A lease no longer than one refund's work leaves no waiting time: one at a time.
        let tight = LeaseTerms::new(s(30), s(15), GATHER);
        assert_eq!(tight.chunk(5.0, 0, 500), 1);
    }
}
