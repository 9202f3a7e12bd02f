//! The sandbox's shared, mutable state: scripted refunds and their progress, the fault
//! settings, the latency and the counters. Everything here is plain data behind one
//! `std::sync::Mutex`, locked briefly and never across an `.await`; deciding what to answer
//! happens under the lock, signing and writing happen after it is released.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use super::protocol::{self, AnswerData, QueryKey, Rejection, Variance};
use super::script::{Fault, Realism, RefundScript, Step};
use crate::domain::{Currency, FinalStatus, InvalidValue, RefundStatus, Timestamp};

/// Counters describing everything the sandbox has seen since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// HTTP requests read completely (any path).
    pub requests: u64,
    /// JSON answers by their `code` (`APPLY_SUCCESS`, `ORDER_NOT_EXIST`, …), faults included.
    pub answered_by_code: BTreeMap<String, u64>,
    /// Requests refused with `SIGN_VERIFY_FAILED`.
    pub bad_signatures: u64,
    /// Requests refused with `REQ_TIME_OVER_TIME`.
    pub stale_request_times: u64,
    /// Faults injected, from script steps, the global override or the random rate.
    pub faults_injected: u64,
    /// Script steps consumed, over all refunds.
    pub queries: u64,
    /// Script steps consumed per scripted refund (refunds never queried are absent).
    pub queries_by_refund: BTreeMap<String, u64>,
    /// Moments a query for a refund started while another query for the same refund was still
    /// being answered (planned, waiting out its latency, not yet rendered): each such start
    /// counts once, so three at once count two. Zero when no two clients (or no two tasks of
    /// one client) ever had the same refund in flight.
    pub overlaps: u64,
    /// [`overlaps`](Self::overlaps) per refund (refunds never overlapped are absent).
    pub overlaps_by_refund: BTreeMap<String, u64>,
}

impl SandboxStats {
    /// Script steps consumed by `out_refund_no` (0 if never queried or not scripted).
    pub fn queries_for(&self, out_refund_no: &str) -> u64 {
        self.queries_by_refund
            .get(out_refund_no)
            .copied()
            .unwrap_or(0)
    }

    /// How many answers carried `code`.
    pub fn answered(&self, code: &str) -> u64 {
        self.answered_by_code.get(code).copied().unwrap_or(0)
    }

    /// Overlapping starts for `out_refund_no` (see [`overlaps`](Self::overlaps)).
    pub fn overlaps_for(&self, out_refund_no: &str) -> u64 {
        self.overlaps_by_refund
            .get(out_refund_no)
            .copied()
            .unwrap_or(0)
    }
}

/// One scripted refund and how far its timeline has got.
struct Entry {
    script: RefundScript,
    /// Index of the step the next query consumes (clamped to the last step).
    next: usize,
    /// Script steps consumed.
    queries: u64,
    /// Fixed the first time a final status is reported, so every answer agrees on it.
    finished_at: Option<Timestamp>,
}

impl Entry {
    /// The status the refund holds at step `i`: the latest status at or before it, else the
    /// first one after it (a fault before the first real answer describes the coming state),
    /// else pending.
    fn status_near(&self, i: usize) -> RefundStatus {
        let steps = &self.script.steps;
        steps[..=i]
            .iter()
            .rev()
            .find_map(Step::status)
            .or_else(|| steps[i..].iter().find_map(Step::status))
            .unwrap_or(RefundStatus::Pending)
    }

    fn data(&mut self, out_refund_no: &str, status: RefundStatus, now: Timestamp) -> AnswerData {
        if status.is_final() && self.finished_at.is_none() {
            self.finished_at = Some(now);
        }
        AnswerData {
            out_refund_no: out_refund_no.to_owned(),
            refund_trade_no: self.script.refund_trade_no.clone(),
            amount: self.script.amount,
            currency: self.script.currency,
            out_trade_no: self.script.out_trade_no.clone(),
            status,
            finish_time: self.finished_at.filter(|_| status.is_final()),
        }
    }
}

/// Random faults: a seeded generator deciding, request by request, whether to misbehave.
struct FaultRate {
    fraction: f64,
    faults: Vec<Fault>,
    rng: StdRng,
}

/// Where an injected fault came from (logged, so a surprising answer can be traced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSource {
    /// A script step.
    Step,
    /// [`Sandbox::set_global_fault`](super::Sandbox::set_global_fault).
    Global,
    /// [`Sandbox::set_fault_rate`](super::Sandbox::set_fault_rate).
    Random,
}

impl FaultSource {
    /// Stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultSource::Step => "step",
            FaultSource::Global => "global",
            FaultSource::Random => "random",
        }
    }
}

/// What to answer, decided under the lock and rendered after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// An error answer.
    Reject(Rejection),
    /// An error code from a script step.
    Code(String),
    /// A correct signed `APPLY_SUCCESS`.
    Answer(AnswerData),
    /// A fault, with the answer it distorts.
    Fault(Fault, FaultSource, AnswerData),
}

impl Plan {
    /// The `code` the answer body carries, if it is a JSON answer with one.
    fn code(&self) -> Option<&str> {
        match self {
            Plan::Reject(r) => Some(r.code),
            Plan::Code(code) => Some(code),
            Plan::Answer(_) => Some(protocol::APPLY_SUCCESS),
            Plan::Fault(fault, _, _) => match fault {
                Fault::Http(_) | Fault::Reset | Fault::Hang | Fault::Redirect | Fault::NotJson => {
                    None
                }
                Fault::MissingCode => None,
                Fault::TooManyRequests => Some(protocol::TOO_MANY_REQUEST),
                _ => Some(protocol::APPLY_SUCCESS),
            },
        }
    }
}

/// A plan plus how long to wait (scripted delays) before rendering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// What to answer.
    pub plan: Plan,
    /// Scripted delay before answering (on top of the global latency).
    pub delay: Duration,
    /// Global latency in force when the request was planned.
    pub latency: Duration,
    /// The form of the answer (faults keep their own).
    pub variance: Variance,
    /// The refund the request named, for logs.
    pub out_refund_no: Option<String>,
}

/// All mutable sandbox state.
pub struct State {
    refunds: HashMap<String, Entry>,
    /// `refundTradeNo` → `outRefundNo`, for queries that name the gateway's number.
    by_trade_no: HashMap<String, String>,
    global_fault: Option<Fault>,
    fault_rate: Option<FaultRate>,
    latency: Duration,
    realism: Option<Realism>,
    /// Queries being answered right now, per refund number named: what an overlap is seen
    /// against (an entry is removed when its count returns to zero).
    in_flight: HashMap<String, u32>,
    stats: SandboxStats,
}

impl State {
    /// Empty state with an initial latency.
    pub fn new(latency: Duration) -> Self {
        Self {
            refunds: HashMap::new(),
            by_trade_no: HashMap::new(),
            global_fault: None,
            fault_rate: None,
            latency,
            realism: None,
            in_flight: HashMap::new(),
            stats: SandboxStats::default(),
        }
    }

    /// Installs scripts all-or-nothing; a refund scripted again starts its timeline afresh.
    pub fn script_many(
        &mut self,
        scripts: Vec<(String, RefundScript)>,
    ) -> Result<(), InvalidValue> {
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        for (no, script) in &scripts {
            script
                .validate(no)
                .map_err(|e| InvalidValue::new(e.field, format!("{no}: {}", e.reason)))?;
            let trade = script.refund_trade_no.as_str();
            let owner = claimed
                .insert(trade, no)
                .or_else(|| self.by_trade_no.get(trade).map(String::as_str));
            if let Some(owner) = owner.filter(|owner| owner != no) {
                return Err(InvalidValue::new(
                    "refundTradeNo",
                    format!("{no}: {trade:?} already belongs to {owner}"),
                ));
            }
        }
        for (no, script) in scripts {
            if let Some(old) = self.refunds.get(&no) {
                self.by_trade_no.remove(&old.script.refund_trade_no);
            }
            self.by_trade_no
                .insert(script.refund_trade_no.clone(), no.clone());
            self.refunds.insert(
                no,
                Entry {
                    script,
                    next: 0,
                    queries: 0,
                    finished_at: None,
                },
            );
        }
        Ok(())
    }

    /// The final status `out_refund_no`'s script ends at; `None` as well when the realistic
    /// mode refuses the refund with `PARAMS_INVALID`.
    pub fn truth(&self, out_refund_no: &str) -> Option<RefundStatus> {
        if self.rejects(out_refund_no) {
            return None;
        }
        self.refunds.get(out_refund_no)?.script.truth()
    }

    /// Checus finalizes `out_refund_no` now (its side of a notification): later queries
    /// answer from the script's first final step on, with this finish time, so a query after
    /// the notification agrees with it. The script, its final status and the finish time;
    /// `None` when the script never finalizes or the realistic mode refuses the refund.
    pub fn finalize_now(
        &mut self,
        out_refund_no: &str,
        now: Timestamp,
    ) -> Option<(RefundScript, FinalStatus, Timestamp)> {
        if self.rejects(out_refund_no) {
            return None;
        }
        let entry = self.refunds.get_mut(out_refund_no)?;
        let (at, status) = entry
            .script
            .steps
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.status().and_then(RefundStatus::as_final).map(|f| (i, f)))?;
        entry.next = entry.next.max(at);
        let finished = *entry.finished_at.get_or_insert(now);
        Some((entry.script.clone(), status, finished))
    }

    /// Sets or clears the realistic mode.
    pub fn set_realism(&mut self, realism: Option<Realism>) {
        self.realism = realism;
    }

    fn rejects(&self, out_refund_no: &str) -> bool {
        self.realism
            .as_ref()
            .is_some_and(|r| r.rejects(out_refund_no))
    }

    /// The form answers about `out_refund_no` take when no step says otherwise.
    fn variance_for(&self, out_refund_no: &str) -> Variance {
        self.realism
            .as_ref()
            .map_or_else(Variance::default, |r| r.variance_for(out_refund_no))
    }

    /// Sets or clears the fault applied to every request.
    pub fn set_global_fault(&mut self, fault: Option<Fault>) {
        self.global_fault = fault;
    }

    /// Sets (fraction > 0) or clears (fraction ≤ 0, NaN, or no faults) the random fault rate.
    pub fn set_fault_rate(&mut self, fraction: f64, seed: u64, faults: Vec<Fault>) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self.fault_rate = (fraction > 0.0 && !faults.is_empty()).then(|| FaultRate {
            fraction,
            faults,
            rng: StdRng::seed_from_u64(seed),
        });
    }

    /// Sets the per-request latency.
    pub fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    /// A copy of the counters, with per-refund query counts.
    pub fn stats(&self) -> SandboxStats {
        let mut stats = self.stats.clone();
        stats.queries_by_refund = self
            .refunds
            .iter()
            .filter(|(_, e)| e.queries > 0)
            .map(|(no, e)| (no.clone(), e.queries))
            .collect();
        stats
    }

    /// Script steps consumed by one refund.
    pub fn queries_for(&self, out_refund_no: &str) -> u64 {
        self.refunds.get(out_refund_no).map_or(0, |e| e.queries)
    }

    /// Marks a query naming `out_refund_no` as being answered, from its plan until
    /// [`query_finished`](Self::query_finished); counts an overlap when another query for the
    /// same refund is already being answered.
    pub fn query_started(&mut self, out_refund_no: &str) {
        let n = self.in_flight.entry(out_refund_no.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            self.stats.overlaps += 1;
            *self
                .stats
                .overlaps_by_refund
                .entry(out_refund_no.to_owned())
                .or_default() += 1;
        }
    }

    /// Ends one query of `out_refund_no` started by [`query_started`](Self::query_started).
    pub fn query_finished(&mut self, out_refund_no: &str) {
        if let Some(n) = self.in_flight.get_mut(out_refund_no) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(out_refund_no);
            }
        }
    }

    /// Queries for `out_refund_no` being answered right now (what the unit tests read).
    #[cfg(test)]
    fn in_flight(&self, out_refund_no: &str) -> u32 {
        self.in_flight.get(out_refund_no).copied().unwrap_or(0)
    }

    /// Counts an accepted connection.
    pub fn connection_accepted(&mut self) {
        self.stats.connections += 1;
    }

    /// Counts a request read in full.
    pub fn request_read(&mut self) {
        self.stats.requests += 1;
    }

    /// Resolves a checked request to a scripted refund number, or `None` when the gateway
    /// does not know it. With both numbers sent, they must name the same refund.
    fn resolve(&self, key: &QueryKey) -> Option<String> {
        let by_trade = key
            .refund_trade_no
            .as_ref()
            .and_then(|t| self.by_trade_no.get(t));
        match (&key.out_refund_no, by_trade) {
            (Some(out), _) if !self.refunds.contains_key(out) => None,
            (Some(out), Some(owner)) if out != owner => None,
            (Some(_), None) if key.refund_trade_no.is_some() => None,
            (Some(out), _) => Some(out.clone()),
            (None, owner) => owner.cloned(),
        }
    }

    /// Decides the answer to one checked `/refundQuery` request and updates the counters.
    pub fn plan(&mut self, checked: Result<QueryKey, Rejection>, now: Timestamp) -> Planned {
        let resolved = checked.as_ref().ok().and_then(|k| self.resolve(k));
        let named = checked.as_ref().ok().and_then(|k| {
            k.out_refund_no
                .clone()
                .or_else(|| k.refund_trade_no.clone())
        });
        let mut variance =
            self.variance_for(resolved.as_deref().or(named.as_deref()).unwrap_or(""));
        let mut delay = Duration::ZERO;
        // A refund the realistic mode refuses is refused whatever else is injected: its
        // truth is "no outcome", so no fault may carry its scripted status out.
        let refused = resolved.as_deref().is_some_and(|no| self.rejects(no));
        let injected = if refused { None } else { self.injected_fault() };
        let plan = if let Some((fault, source)) = injected {
            // Override faults preempt the script: no step is consumed.
            let data = match resolved
                .as_deref()
                .and_then(|no| self.refunds.get_mut(no).map(|e| (no, e)))
            {
                Some((no, entry)) => {
                    let at = entry.next.min(entry.script.steps.len() - 1);
                    let status = entry.status_near(at);
                    entry.data(no, status, now)
                }
                None => placeholder(named.as_deref()),
            };
            Plan::Fault(fault, source, data)
        } else {
            match (checked, resolved.as_deref()) {
                (Err(rejection), _) => Plan::Reject(rejection),
                (Ok(_), None) => Plan::Reject(Rejection {
                    code: variance.unknown_code(),
                    msg: protocol::default_msg(variance.unknown_code()).to_owned(),
                }),
                (Ok(_), Some(no)) => self.step(no, now, &mut delay, &mut variance),
            }
        };
        self.count(&plan);
        Planned {
            plan,
            delay,
            latency: self.latency,
            variance,
            out_refund_no: resolved.or(named),
        }
    }

    /// The global fault, or a random one at the fault rate.
    fn injected_fault(&mut self) -> Option<(Fault, FaultSource)> {
        match &self.global_fault {
            Some(fault) => Some((fault.clone(), FaultSource::Global)),
            None => self.fault_rate.as_mut().and_then(|rate| {
                rate.rng.random_bool(rate.fraction).then(|| {
                    let fault = rate.faults.choose(&mut rate.rng).cloned();
                    (fault.expect("fault list is not empty"), FaultSource::Random)
                })
            }),
        }
    }

    /// Consumes the next step of scripted refund `no`: adds its delays to `delay` and sets
    /// `variance` when the step is a `vary:`.
    fn step(
        &mut self,
        no: &str,
        now: Timestamp,
        delay: &mut Duration,
        variance: &mut Variance,
    ) -> Plan {
        let rejected = self.rejects(no);
        let entry = self
            .refunds
            .get_mut(no)
            .expect("resolved refunds are scripted");
        let at = entry.next.min(entry.script.steps.len() - 1);
        entry.next = at + 1;
        entry.queries += 1;
        self.stats.queries += 1;
        let mut step = entry.script.steps[at].clone();
        let step = loop {
            match step {
                Step::Delay(d, inner) => {
                    *delay += d;
                    step = *inner;
                }
                Step::Vary(v, inner) => {
                    *variance = v;
                    step = *inner;
                }
                other => break other,
            }
        };
        if rejected {
            return Plan::Code(protocol::PARAMS_INVALID.to_owned());
        }
        match step {
            Step::Pending => Plan::Answer(entry.data(no, RefundStatus::Pending, now)),
            Step::Success => Plan::Answer(entry.data(no, RefundStatus::Success, now)),
            Step::Failed => Plan::Answer(entry.data(no, RefundStatus::Failed, now)),
            Step::Unknown => Plan::Code(variance.unknown_code().to_owned()),
            Step::Code(code) => Plan::Code(code),
            Step::Fault(fault) => {
                let status = entry.status_near(at);
                Plan::Fault(fault, FaultSource::Step, entry.data(no, status, now))
            }
            Step::Delay(..) | Step::Vary(..) => unreachable!("unwrapped above"),
        }
    }

    /// Counts a planned answer.
    fn count(&mut self, plan: &Plan) {
        if let Plan::Fault(..) = plan {
            self.stats.faults_injected += 1;
        }
        match plan {
            Plan::Reject(r) if r.code == protocol::SIGN_VERIFY_FAILED => {
                self.stats.bad_signatures += 1
            }
            Plan::Reject(r) if r.code == protocol::REQ_TIME_OVER_TIME => {
                self.stats.stale_request_times += 1
            }
            _ => {}
        }
        if let Some(code) = plan.code() {
            *self
                .stats
                .answered_by_code
                .entry(code.to_owned())
                .or_default() += 1;
        }
    }
}

/// The answer data a fault distorts when the request named no scripted refund.
fn placeholder(named: Option<&str>) -> AnswerData {
    AnswerData {
        out_refund_no: named.unwrap_or("UNSCRIPTED").to_owned(),
        refund_trade_no: "UNSCRIPTED".to_owned(),
        amount: Decimal::new(100, 2),
        currency: Currency::parse("USD").expect("USD is a valid currency"),
        out_trade_no: "UNSCRIPTED".to_owned(),
        status: RefundStatus::Pending,
        finish_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    fn key(no: &str) -> Result<QueryKey, Rejection> {
        Ok(QueryKey {
            out_refund_no: Some(no.to_owned()),
            refund_trade_no: None,
        })
    }

    fn steps(s: &[&str]) -> Vec<Step> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn timeline_advances_and_the_last_step_repeats() {
        let now = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let mut state = State::new(Duration::ZERO);
        state
            .script_many(vec![(
                "R1".into(),
                RefundScript::usd(
                    "R1",
                    steps(&["pending", "delay:5ms:code:SYSTEM_ERROR", "success"]),
                ),
            )])
            .unwrap();
        let status = |p: &Planned| match &p.plan {
            Plan::Answer(d) => d.status.as_str().to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(status(&state.plan(key("R1"), now)), "REFUND_PENDING");
        let second = state.plan(key("R1"), now);
        assert_eq!(second.plan, Plan::Code("SYSTEM_ERROR".into()));
        assert_eq!(second.delay, Duration::from_millis(5));
        let later = now + chrono::TimeDelta::seconds(5);
        let third = state.plan(key("R1"), later);
        let fourth = state.plan(key("R1"), later + chrono::TimeDelta::seconds(5));
        assert_eq!(status(&third), "REFUND_SUCCESS");
        assert_eq!(
            third.plan, fourth.plan,
            "final answers repeat, finish time included"
        );
        assert_eq!(state.queries_for("R1"), 4);
        assert_eq!(state.stats().answered("APPLY_SUCCESS"), 3);
        assert_eq!(state.stats().answered("SYSTEM_ERROR"), 1);
    }

    #[test]
    fn realism_varies_answers_rejects_some_refunds_and_yields_to_vary_steps() {
        let now = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let mut state = State::new(Duration::ZERO);
        let realism = Realism::world(3);
        let numbers: Vec<String> = (0..300).map(|i| format!("R{i}")).collect();
        let rejected = numbers.iter().find(|n| realism.rejects(n)).unwrap().clone();
        let kept = numbers
            .iter()
            .find(|n| !realism.rejects(n) && !realism.variance_for(n).switches().is_empty())
            .unwrap()
            .clone();
        state
            .script_many(vec![
                (
                    rejected.clone(),
                    RefundScript::usd(&rejected, steps(&["success"])),
                ),
                (
                    kept.clone(),
                    RefundScript::usd(&kept, steps(&["pending", "vary:spaced:success"])),
                ),
            ])
            .unwrap();
        assert_eq!(state.truth(&rejected), Some(RefundStatus::Success));
        state.set_realism(Some(realism.clone()));
        assert_eq!(
            state.truth(&rejected),
            None,
            "the gateway never finalizes it"
        );
        assert_eq!(state.truth(&kept), Some(RefundStatus::Success));
        let p = state.plan(key(&rejected), now);
        assert_eq!(p.plan, Plan::Code(protocol::PARAMS_INVALID.into()));
        assert_eq!(state.queries_for(&rejected), 1);
        let p = state.plan(key(&kept), now);
        assert!(matches!(p.plan, Plan::Answer(_)));
        assert_eq!(p.variance, realism.variance_for(&kept));
        let p = state.plan(key(&kept), now);
        assert_eq!(
            p.variance,
            "spaced".parse().unwrap(),
            "a vary: step overrides the draw"
        );
        // Unscripted refunds get the unknown code their own draw picks.
        let unknown = numbers
            .iter()
            .filter(|n| **n != kept && **n != rejected)
            .find(|n| {
                realism
                    .variance_for(n)
                    .has(crate::sandbox::Switch::RefundNoInvalid)
            })
            .unwrap();
        let p = state.plan(key(unknown), now);
        assert!(matches!(&p.plan, Plan::Reject(r) if r.code == protocol::REFUND_NO_INVALID));
        state.set_realism(None);
        assert_eq!(
            state.plan(key(&kept), now).variance,
            "spaced".parse().unwrap()
        );
        assert_eq!(state.truth(&rejected), Some(RefundStatus::Success));
    }

    #[test]
    fn a_query_started_while_one_for_the_same_refund_is_answered_is_an_overlap() {
        let mut state = State::new(Duration::ZERO);
        // One after the other: never an overlap.
        state.query_started("R1");
        state.query_finished("R1");
        state.query_started("R1");
        assert_eq!(state.stats().overlaps, 0);
        // Other refunds in flight at the same time are not overlaps.
        state.query_started("R2");
        assert_eq!(state.stats().overlaps, 0);
        // A second and a third R1 while the first is in flight: two overlapping starts.
        state.query_started("R1");
        state.query_started("R1");
        assert_eq!(state.in_flight("R1"), 3);
        let stats = state.stats();
        assert_eq!(stats.overlaps, 2);
        assert_eq!(stats.overlaps_for("R1"), 2);
        assert_eq!(stats.overlaps_for("R2"), 0);
        // Finishing them all and starting again is a fresh start, not an overlap.
        for _ in 0..3 {
            state.query_finished("R1");
        }
        assert_eq!(state.in_flight("R1"), 0);
        state.query_started("R1");
        assert_eq!(state.stats().overlaps, 2);
        // A finish with nothing in flight (never started) changes nothing.
        state.query_finished("R9");
        assert_eq!(state.in_flight("R9"), 0);
    }

    #[test]
    fn lookup_by_either_number() {
        let mut state = State::new(Duration::ZERO);
        state
            .script_many(vec![
                ("R1".into(), RefundScript::usd("R1", steps(&["success"]))),
                ("R2".into(), RefundScript::usd("R2", steps(&["pending"]))),
            ])
            .unwrap();
        let by = |out: Option<&str>, trade: Option<&str>| {
            state.resolve(&QueryKey {
                out_refund_no: out.map(Into::into),
                refund_trade_no: trade.map(Into::into),
            })
        };
        assert_eq!(by(Some("R1"), None).as_deref(), Some("R1"));
        assert_eq!(by(None, Some("T-R2")).as_deref(), Some("R2"));
        assert_eq!(by(Some("R1"), Some("T-R1")).as_deref(), Some("R1"));
        assert_eq!(by(Some("R1"), Some("T-R2")), None);
        assert_eq!(by(Some("R1"), Some("T-nope")), None);
        assert_eq!(by(Some("R9"), None), None);
        let conflict = RefundScript {
            refund_trade_no: "T-R1".into(),
            ..RefundScript::usd("R3", steps(&["success"]))
        };
        assert!(state.script_many(vec![("R3".into(), conflict)]).is_err());
        assert_eq!(state.truth("R3"), None, "all-or-nothing");
    }

    #[test]
    fn faults_report_the_status_near_them_without_consuming() {
        let now = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let mut state = State::new(Duration::ZERO);
        state
            .script_many(vec![(
                "R1".into(),
                RefundScript::usd("R1", steps(&["fault:wrong_amount", "success"])),
            )])
            .unwrap();
        state.set_global_fault(Some(Fault::BadSignature));
        let p = state.plan(key("R1"), now);
        assert!(
            matches!(&p.plan, Plan::Fault(Fault::BadSignature, FaultSource::Global, d) if d.status == RefundStatus::Success)
        );
        assert_eq!(state.queries_for("R1"), 0);
        state.set_global_fault(None);
        let p = state.plan(key("R1"), now);
        assert!(
            matches!(&p.plan, Plan::Fault(Fault::WrongAmount, FaultSource::Step, d) if d.status == RefundStatus::Success)
        );
        assert_eq!(state.stats().faults_injected, 2);
    }

    #[test]
    fn random_faults_are_reproducible_from_the_seed() {
        let now = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let run = |seed| {
            let mut state = State::new(Duration::ZERO);
            state.set_fault_rate(0.3, seed, Fault::TRANSIENT.to_vec());
            (0..200)
                .map(|_| match state.plan(key("R1"), now).plan {
                    Plan::Fault(f, _, _) => Some(f),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        let n = a.iter().flatten().count();
        assert!((30..90).contains(&n), "{n} faults of 200 at 30%");
    }
}
