//! The daemon's Prometheus metrics: one registry of the `prometheus-client` crate, the names
//! (an interface: alerts and dashboards are written against them, [`NAMES`]), and the
//! recording calls the worker and the daemon make. `/metrics` ([`crate::http`]) renders it in
//! the OpenMetrics text format; nothing here writes the format by hand.
//!
//! Three kinds of series:
//! - counters of what this process did (queries by outcome class, refunds finalized by status
//!   and source, discrepancies by kind, sweeps), bumped by the worker and the sweep loop;
//! - ledger gauges (refunds by status, flagged, due, oldest pending, unresolved
//!   discrepancies), set from [`LedgerGauges`] read at scrape time, so the merchant app's
//!   writes show too;
//! - live gauges (breaker, halt, query rate), set at scrape time from the running worker's
//!   findings, the same findings `/readyz` answers with.
//!
//! Every family is registered at start, and every label value of an enum (outcome classes,
//! statuses, sources, kinds, halt codes) starts at 0, so `rate()` and alerts work from the
//! first scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::{
    DiscrepancyKind, FinalSource, HaltCode, NodeName, OutcomeClass, RefundStatus, Timestamp,
};
use crate::ledger::{Finding, LedgerGauges};

/// The metric names as PromQL sees them (counters with their `_total`; the histogram's
/// samples add `_bucket`, `_sum` and `_count`). An interface: a rename breaks operators'
/// alerts and dashboards.
pub const NAMES: [&str; 20] = [
    "checus_reconciler_queries_total",
    "checus_reconciler_query_duration_seconds",
    "checus_reconciler_refunds_finalized_total",
    "checus_reconciler_discrepancies_total",
    "checus_reconciler_refunds",
    "checus_reconciler_refunds_flagged",
    "checus_reconciler_refunds_due",
    "checus_reconciler_oldest_pending_age_seconds",
    "checus_reconciler_unresolved_discrepancies",
    "checus_reconciler_breaker_open",
    "checus_reconciler_halted",
    "checus_reconciler_query_rate_limit",
    "checus_reconciler_sweeps_total",
    "checus_reconciler_sweep_errors_total",
    "checus_reconciler_last_sweep_end_timestamp_seconds",
    "checus_reconciler_build_info",
    "checus_reconciler_sweep_interval_seconds",
    "checus_reconciler_pending_flag_after_seconds",
    "checus_reconciler_webhooks_dead",
    "checus_reconciler_notifications_total",
];

/// The `result` label values of `checus_reconciler_notifications_total`: what the daemon did
/// with each Checus refund notification it received. The first five were acknowledged (the
/// ledger trigger's effect); the last three were not (401, 400, 503).
pub const NOTIFICATION_RESULTS: [&str; 8] = [
    "finalized",
    "already_final",
    "conflicting_final",
    "mismatch",
    "unknown_refund",
    "unverified",
    "unreadable",
    "unavailable",
];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Discrepancy kinds as the ledger stores them (schema.sql's CHECK on `discrepancies.kind`):
/// the worker's four, and `unknown_refund`, which only the notification trigger writes.
fn discrepancy_kinds() -> [&'static str; 5] {
    [
        DiscrepancyKind::ConflictingFinal.as_str(),
        DiscrepancyKind::RefundNoMismatch.as_str(),
        DiscrepancyKind::AmountMismatch.as_str(),
        DiscrepancyKind::CurrencyMismatch.as_str(),
        "unknown_refund",
    ]
}

/// Every final-outcome source.
const SOURCES: [FinalSource; 4] = [
    FinalSource::Notification,
    FinalSource::Query,
    FinalSource::RefundResponse,
    FinalSource::Operator,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinalizedLabels {
    status: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// A gauge of seconds or a rate.
type FloatGauge = Gauge<f64, AtomicU64>;

/// The registry and a handle on every series. Shared (`Arc`) by the worker, the sweep loop and
/// the HTTP listener; every call is lock-free or a short lock inside the crate.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queries: Family<OutcomeLabel, Counter>,
    query_duration: Histogram,
    finalized: Family<FinalizedLabels, Counter>,
    discrepancies: Family<KindLabel, Counter>,
    refunds: Family<StatusLabel, Gauge>,
    flagged: Gauge,
    due: Gauge,
    oldest_pending_age: FloatGauge,
    unresolved: Gauge,
    breaker_open: Gauge,
    halted: Family<ReasonLabel, Gauge>,
    rate_limit: FloatGauge,
    sweeps: Counter,
    sweep_errors: Counter,
    last_sweep_end: FloatGauge,
    sweep_interval: FloatGauge,
    pending_flag_after: FloatGauge,
    webhooks_dead: Gauge,
    notifications: Family<ResultLabel, Counter>,
    node_info: Family<NodeLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered and every enum label value at 0.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("checus_reconciler"),
            queries: Family::default(),
            // 5 ms to about 10 s: a healthy answer takes tens of milliseconds, and the
            // client's timeout is seconds.
            query_duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            finalized: Family::default(),
            discrepancies: Family::default(),
            refunds: Family::default(),
            flagged: Gauge::default(),
            due: Gauge::default(),
            oldest_pending_age: FloatGauge::default(),
            unresolved: Gauge::default(),
            breaker_open: Gauge::default(),
            halted: Family::default(),
            rate_limit: FloatGauge::default(),
            sweeps: Counter::default(),
            sweep_errors: Counter::default(),
            last_sweep_end: FloatGauge::default(),
            sweep_interval: FloatGauge::default(),
            pending_flag_after: FloatGauge::default(),
            webhooks_dead: Gauge::default(),
            notifications: Family::default(),
            node_info: Family::default(),
        };
        m.register();
        m.preset();
        m
    }

    /// Registers every family under its interface name (the registry adds the prefix, and
    /// `_total` to counters).
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "queries",
            "Refund queries this process sent, by outcome class",
            self.queries.clone(),
        );
        r.register(
            "query_duration_seconds",
            "Time on the wire of each refund query",
            self.query_duration.clone(),
        );
        r.register(
            "refunds_finalized",
            "Refunds this process saw become final, by final status and source (query: its own; others: logged from the ledger)",
            self.finalized.clone(),
        );
        r.register(
            "discrepancies",
            "Discrepancies this process recorded, by kind",
            self.discrepancies.clone(),
        );
        r.register(
            "refunds",
            "Refunds in the ledger, by status",
            self.refunds.clone(),
        );
        r.register(
            "refunds_flagged",
            "Refunds flagged for review in the ledger",
            self.flagged.clone(),
        );
        r.register(
            "refunds_due",
            "Pending refunds whose next query is due now",
            self.due.clone(),
        );
        r.register(
            "oldest_pending_age_seconds",
            "Age of the oldest pending refund (0: none pending)",
            self.oldest_pending_age.clone(),
        );
        r.register(
            "unresolved_discrepancies",
            "Discrepancies in the ledger nobody has resolved",
            self.unresolved.clone(),
        );
        r.register(
            "breaker_open",
            "1 while the circuit breaker has querying paused (gateway unavailable)",
            self.breaker_open.clone(),
        );
        r.register(
            "halted",
            "1 while querying is halted, by halt code (config_error, clock_skew)",
            self.halted.clone(),
        );
        r.register(
            "query_rate_limit",
            "Current query rate limit, queries per second",
            self.rate_limit.clone(),
        );
        r.register("sweeps", "Sweeps this process ran", self.sweeps.clone());
        r.register(
            "sweep_errors",
            "Sweeps this process ran that failed as a whole",
            self.sweep_errors.clone(),
        );
        r.register(
            "last_sweep_end_timestamp_seconds",
            "Unix time the latest sweep of this process ended",
            self.last_sweep_end.clone(),
        );
        r.register(
            "sweep_interval_seconds",
            "The sweep cron's interval (alerts: no sweep for 3 intervals)",
            self.sweep_interval.clone(),
        );
        r.register(
            "pending_flag_after_seconds",
            "schedule.pending_flag_after: a refund pending longer is flagged (alerts compare the oldest pending age with it)",
            self.pending_flag_after.clone(),
        );
        r.register(
            "webhooks_dead",
            "Webhook events in the ledger retried past webhook.give_up_after and given up (webhooks redeliver sends them again)",
            self.webhooks_dead.clone(),
        );
        r.register(
            "notifications",
            "Checus refund notifications received, by result (acknowledged: the ledger's effect; not: unverified, unreadable, unavailable)",
            self.notifications.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register(
            "build_info",
            "Always 1; the version label is the running build's",
            build_info,
        );
        r.register(
            "node_info",
            "Always 1; the node label is this daemon's worker.node_name (the counters are this node's, the ledger gauges the whole ledger's)",
            self.node_info.clone(),
        );
    }

    /// Names this daemon's node on the page (`node_info{node}`), once at start.
    pub fn set_node(&self, node: &NodeName) {
        self.node_info
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .set(1);
    }

    /// Puts every enum label value on the page at 0 (creating a series is enough).
    fn preset(&self) {
        for class in OutcomeClass::ALL {
            let _ = self.queries.get_or_create(&OutcomeLabel {
                outcome: class.as_str(),
            });
        }
        for status in [RefundStatus::Success, RefundStatus::Failed] {
            for source in SOURCES {
                let _ = self.finalized.get_or_create(&FinalizedLabels {
                    status: status.as_str(),
                    source: source.as_str(),
                });
            }
        }
        for kind in discrepancy_kinds() {
            let _ = self.discrepancies.get_or_create(&KindLabel { kind });
        }
        for status in RefundStatus::ALL {
            let _ = self.refunds.get_or_create(&StatusLabel {
                status: status.as_str(),
            });
        }
        for result in NOTIFICATION_RESULTS {
            let _ = self.notifications.get_or_create(&ResultLabel { result });
        }
        for code in HaltCode::ALL {
            let _ = self.halted.get_or_create(&ReasonLabel {
                reason: code.as_str(),
            });
        }
    }

    /// One refund query was answered (or failed) with `class`, after `latency` on the wire.
    pub fn query_answered(&self, class: OutcomeClass, latency: std::time::Duration) {
        self.queries
            .get_or_create(&OutcomeLabel {
                outcome: class.as_str(),
            })
            .inc();
        self.query_duration.observe(latency.as_secs_f64());
    }

    /// A refund became final with `status`, written by `source` (this process's queries, or
    /// another writer whose outcome the worker logged).
    pub fn refund_finalized(&self, status: RefundStatus, source: FinalSource) {
        self.finalized
            .get_or_create(&FinalizedLabels {
                status: status.as_str(),
                source: source.as_str(),
            })
            .inc();
    }

    /// A discrepancy of `kind` was recorded.
    pub fn discrepancy_recorded(&self, kind: DiscrepancyKind) {
        self.discrepancies
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// A Checus refund notification was answered with `result`, one of
    /// [`NOTIFICATION_RESULTS`] (another value is counted under it all the same).
    pub fn notification_received(&self, result: &'static str) {
        debug_assert!(NOTIFICATION_RESULTS.contains(&result), "{result}");
        self.notifications
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A sweep ended at `at`; `failed`: as a whole (the ledger or the disk).
    pub fn sweep_ended(&self, failed: bool, at: Timestamp) {
        self.sweeps.inc();
        if failed {
            self.sweep_errors.inc();
        }
        self.last_sweep_end.set(unix_seconds(at));
    }

    /// The two settings the shipped alert rules compare against: the sweep cron's interval and
    /// `schedule.pending_flag_after`. Set at start and by every accepted reload.
    pub fn set_settings(
        &self,
        sweep_interval: std::time::Duration,
        pending_flag_after: std::time::Duration,
    ) {
        self.sweep_interval.set(sweep_interval.as_secs_f64());
        self.pending_flag_after
            .set(pending_flag_after.as_secs_f64());
    }

    /// Sets the ledger gauges from a read at `now`.
    pub fn set_ledger(&self, g: &LedgerGauges, now: Timestamp) {
        for (status, n) in &g.refunds {
            self.refunds
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(clamp(*n));
        }
        self.flagged.set(clamp(g.flagged));
        self.due.set(clamp(g.due));
        self.unresolved.set(clamp(g.unresolved_discrepancies));
        self.webhooks_dead.set(clamp(g.dead_webhooks));
        let age = g.oldest_pending_created_at.map_or(0.0, |t| {
            ((now - t).num_milliseconds().max(0) as f64) / 1000.0
        });
        self.oldest_pending_age.set(age);
    }

    /// Sets the live gauges from the running worker's findings (the list `/readyz` answers
    /// with) and its current query rate.
    pub fn set_live(&self, findings: &[Finding], rate_per_second: f64) {
        let breaker = findings
            .iter()
            .any(|f| matches!(f, Finding::GatewayUnavailable { .. }));
        self.breaker_open.set(i64::from(breaker));
        for result in NOTIFICATION_RESULTS {
            let _ = self.notifications.get_or_create(&ResultLabel { result });
        }
        for code in HaltCode::ALL {
            let halted = findings
                .iter()
                .any(|f| matches!(f, Finding::Halted { code: c, .. } if *c == code));
            self.halted
                .get_or_create(&ReasonLabel {
                    reason: code.as_str(),
                })
                .set(i64::from(halted));
        }
        self.rate_limit.set(rate_per_second);
    }

    /// The exposition, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// The exposition of a fresh registry, without a daemon: every family with its HELP and TYPE
/// lines and the label values at 0 (tests check alert rules and dashboards against it).
pub fn render_fresh() -> String {
    Metrics::new().render()
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix_seconds(t: Timestamp) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Halt, parse_ts};

    /// The sample names a family's lines start with.
    fn has_family(page: &str, name: &str) -> bool {
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ', '_']))
    }

    #[test]
    fn every_interface_name_is_on_a_fresh_page_with_its_label_values_at_zero() {
        let page = render_fresh();
        for name in NAMES {
            assert!(has_family(&page, name), "{name} missing in:\n{page}");
        }
        for needle in [
            "checus_reconciler_queries_total{outcome=\"config_error\"} 0",
            "checus_reconciler_refunds_finalized_total{status=\"REFUND_SUCCESS\",source=\"notification\"} 0",
            "checus_reconciler_discrepancies_total{kind=\"unknown_refund\"} 0",
            "checus_reconciler_refunds{status=\"REFUND_PENDING\"} 0",
            "checus_reconciler_halted{reason=\"clock_skew\"} 0",
            "checus_reconciler_sweeps_total 0",
            "# TYPE checus_reconciler_query_duration_seconds histogram",
            "# EOF",
        ] {
            assert!(page.contains(needle), "{needle} missing in:\n{page}");
        }
        let version = format!(
            "checus_reconciler_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(page.contains(&version), "{page}");
        assert!(!page.contains("checus_reconciler_node_info{"), "{page}");
        let m = Metrics::new();
        m.set_node(&NodeName::parse("web-1").unwrap());
        let page = m.render();
        assert!(
            page.contains("checus_reconciler_node_info{node=\"web-1\"} 1"),
            "{page}"
        );
    }

    #[test]
    fn recorded_events_and_read_gauges_move_their_series() {
        let m = Metrics::new();
        let now = parse_ts("2026-12-01T10:00:00.000Z").unwrap();
        m.query_answered(OutcomeClass::Final, std::time::Duration::from_millis(30));
        m.refund_finalized(RefundStatus::Failed, FinalSource::Notification);
        m.discrepancy_recorded(DiscrepancyKind::AmountMismatch);
        m.sweep_ended(true, now);
        m.set_ledger(
            &LedgerGauges {
                refunds: vec![(RefundStatus::Pending, 7)],
                flagged: 2,
                due: 3,
                oldest_pending_created_at: Some(parse_ts("2026-12-01T09:59:00.500Z").unwrap()),
                unresolved_discrepancies: 1,
                dead_webhooks: 4,
            },
            now,
        );
        let since = parse_ts("2026-12-01T09:00:00.000Z").unwrap();
        m.set_live(
            &[
                Finding::Halted {
                    code: Halt::ClockSkew.code(),
                    reason: None,
                },
                Finding::GatewayUnavailable {
                    since,
                    paused_s: 3600,
                },
            ],
            2.5,
        );
        let page = m.render();
        for needle in [
            "checus_reconciler_queries_total{outcome=\"final\"} 1",
            "checus_reconciler_query_duration_seconds_count 1",
            "checus_reconciler_refunds_finalized_total{status=\"REFUND_FAILED\",source=\"notification\"} 1",
            "checus_reconciler_discrepancies_total{kind=\"amount_mismatch\"} 1",
            "checus_reconciler_sweeps_total 1",
            "checus_reconciler_sweep_errors_total 1",
            "checus_reconciler_last_sweep_end_timestamp_seconds 1796119200.0",
            "checus_reconciler_refunds{status=\"REFUND_PENDING\"} 7",
            "checus_reconciler_refunds_flagged 2",
            "checus_reconciler_refunds_due 3",
            "checus_reconciler_oldest_pending_age_seconds 59.5",
            "checus_reconciler_unresolved_discrepancies 1",
            "checus_reconciler_webhooks_dead 4",
            "checus_reconciler_breaker_open 1",
            "checus_reconciler_halted{reason=\"clock_skew\"} 1",
            "checus_reconciler_halted{reason=\"config_error\"} 0",
            "checus_reconciler_query_rate_limit 2.5",
        ] {
            assert!(page.contains(needle), "{needle} missing in:\n{page}");
        }
        m.set_live(&[], 5.0);
        let page = m.render();
        assert!(page.contains("checus_reconciler_breaker_open 0"), "{page}");
        assert!(
            page.contains("checus_reconciler_halted{reason=\"clock_skew\"} 0"),
            "{page}"
        );
    }
}
