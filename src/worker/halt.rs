//! The global halt: when Checus says our configuration (or our clock) is wrong, querying stops
//! for every refund, so a bad key never burns through the ledger. One probe query goes out per
//! re-check interval; only an answer that is not a halt resumes querying. Answers still in
//! flight when the halt began change nothing but the halt's kind.
//!
//! A per-refund code (`PARAMS_INVALID`, [`QueryOutcome::RequestRejected`]) is that refund's
//! trouble, not the fleet's: `decide` flags the refund. Only when the same code comes back for
//! `halt_after_rejected_refunds` different refunds in a row does this machine call it
//! systematic and halt, as a configuration code would. That count is state across refunds, so
//! it lives here, next to the halt it leads to, rather than in the pure per-answer `decide`.
//! Pure, like [`super::breaker`]: time is an argument, and the worker owns the I/O and logging.

use std::time::Duration;

use crate::domain::{Halt, OutRefundNo, QueryOutcome, Timestamp};

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

/// What a per-refund rejection means for querying as a whole ([`Halting::observe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a rejection, or one this refund alone answers for (so far): `decide` alone rules.
    Alone,
    /// The refund is rejected, decided as such (flagged), and querying halts too: the same
    /// code came back for `refunds` different refunds in a row, or querying is halted on this
    /// code already and this refund is one of those that halted it.
    Halts {
        /// The halt to enter (a configuration halt naming the code).
        halt: Halt,
        /// Different refunds rejected in the run so far.
        refunds: usize,
    },
    /// Querying is halted on this code and another refund (a probe, an operator's query) got
    /// it too: more evidence that the code is systematic. The answer is the halt's (the
    /// refund is not flagged, and is retried with the next probe).
    Systematic {
        /// The gateway code: decide it as the configuration code it has shown itself to be.
        code: String,
    },
}

/// The current run of per-refund rejections: one code, and the different refunds it came
/// back for without an accepted answer in between.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    code: String,
    refunds: Vec<OutRefundNo>,
}

/// The halt's state: running, or halted until a probe gets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halting {
    state: Option<HaltState>,
    recheck: Duration,
    /// Per-refund rejections in a row; kept while the halt it led to is in force, so a probe
    /// can tell one of the refunds that halted it from new evidence.
    run: Option<Run>,
    /// How many different refunds in a row make a per-refund code systematic (at least 1).
    halt_after: usize,
    /// The next probe is an operator's (`resume`): with nothing due to probe with, it resumes
    /// querying rather than waiting another interval.
    operator_probe: bool,
}

impl Halting {
    /// Not halted; once halted, probes every `recheck`. A per-refund code halts once it came
    /// back for `halt_after` different refunds in a row (0 is taken as 1).
    pub fn new(recheck: Duration, halt_after: usize) -> Self {
        Self {
            state: None,
            recheck,
            run: None,
            halt_after: halt_after.max(1),
            operator_probe: false,
        }
    }

    /// Counts one answer towards (or against) a run of per-refund rejections and says what a
    /// rejection means. An answer the gateway accepted (a status, or "unknown refund") ends
    /// the run; a different per-refund code starts a new one; failures that say nothing about
    /// the request (transport, rate limit, clock, configuration) leave it as it is. The same
    /// refund rejected again does not count twice, nor does a refund Checus refused before
    /// this run (`rejected_before`, its flag): once only such refunds are left to poll, their
    /// refusals would otherwise make a run of their own and halt a healthy fleet. It neither
    /// counts nor ends the run (unless querying is halted on its code: then it is a probe).
    pub fn observe(
        &mut self,
        outcome: &QueryOutcome,
        refund: &OutRefundNo,
        rejected_before: bool,
    ) -> Rejection {
        let code = match outcome {
            QueryOutcome::RequestRejected { code } => code,
            QueryOutcome::Final(_) | QueryOutcome::Pending(_) | QueryOutcome::Unknown { .. } => {
                self.run = None;
                return Rejection::Alone;
            }
            _ => return Rejection::Alone,
        };
        let halt = Halt::ConfigError { code: code.clone() };
        let halted_on_it = self.state.as_ref().is_some_and(|h| h.halt == halt);
        if rejected_before && !halted_on_it {
            return Rejection::Alone;
        }
        let run = match self.run.take() {
            Some(run) if run.code == *code => run,
            _ => Run {
                code: code.clone(),
                refunds: Vec::new(),
            },
        };
        let run = self.run.insert(run);
        let known = run.refunds.contains(refund);
        if halted_on_it && !known {
            return Rejection::Systematic { code: code.clone() };
        }
        if !known {
            run.refunds.push(refund.clone());
        }
        let refunds = run.refunds.len();
        if halted_on_it || refunds >= self.halt_after {
            Rejection::Halts { halt, refunds }
        } else {
            Rejection::Alone
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
        self.operator_probe = false;
        transition
    }

    /// Records an answer to a probe (or to an operator's query) that is not a halt: querying
    /// resumes. Returns when querying had halted, if it had.
    pub fn resume(&mut self) -> Option<Timestamp> {
        self.run = None;
        self.operator_probe = false;
        self.state.take().map(|h| h.since)
    }

    /// An operator asked to resume (`checus-reconciler resume`): the next probe is due `now`
    /// instead of at the end of the re-check interval. Returns false when not halted.
    pub fn probe_now(&mut self, now: Timestamp) -> bool {
        match self.state.as_mut() {
            Some(h) => {
                h.next_probe_at = h.next_probe_at.min(now);
                self.operator_probe = true;
                true
            }
            None => false,
        }
    }

    /// Pushes the next probe out by one interval (nothing was due to probe with).
    pub fn postpone(&mut self, now: Timestamp) {
        if let Some(h) = self.state.as_mut() {
            h.next_probe_at = now + self.recheck;
        }
    }

    /// Nothing was due to probe with. An operator's probe resumes querying then (they vouched
    /// for the fix, and the first answer that halts again restores the halt, having cost no
    /// attempt): returns since when it had halted. Otherwise the probe waits one interval.
    pub fn nothing_to_probe(&mut self, now: Timestamp) -> Option<Timestamp> {
        if self.operator_probe {
            return self.resume();
        }
        self.postpone(now);
        None
    }

    /// Takes over the halt of the machine this one replaces (a reload does not resume
    /// querying with what may be the same bad configuration).
    pub fn carry_over(&mut self, previous: &Halting) {
        self.state = previous.state.clone();
        self.run = previous.run.clone();
        self.operator_probe = previous.operator_probe;
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
        let mut h = Halting::new(minute, 3);
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
        let mut next = Halting::new(minute, 3);
        next.carry_over(&h);
        assert_eq!(next, h);
        assert_eq!(next.resume(), Some(t0));
        assert_eq!(next.halted_until(), None);
        // Postponing a running machine changes nothing.
        next.postpone(t1);
        assert_eq!(next.current(), None);
    }

    #[test]
    fn an_operator_resume_probes_at_once_and_resumes_when_nothing_is_due_to_probe_with() {
        let t0 = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let hour = Duration::from_secs(3600);
        let bad_key = Halt::ConfigError {
            code: "SIGN_VERIFY_FAILED".into(),
        };
        let mut h = Halting::new(hour, 3);
        // Not halted: nothing to probe.
        assert!(!h.probe_now(t0));
        h.enter(bad_key.clone(), t0);
        let t1 = t0 + Duration::from_secs(5);
        assert!(h.probe_now(t1));
        assert_eq!(h.halted_until(), Some(t1), "probe due now, not in an hour");
        // The operator's probe halts again: the normal interval from then, and an idle probe
        // later waits as usual.
        assert_eq!(h.enter(bad_key.clone(), t1), Transition::StillHalted);
        assert_eq!(h.halted_until(), Some(t1 + hour));
        assert_eq!(h.nothing_to_probe(t1 + hour), None);
        assert_eq!(h.halted_until(), Some(t1 + hour + hour));
        // Asked again with nothing due to probe with: resumed, since the halt began.
        assert!(h.probe_now(t1 + hour));
        assert_eq!(h.nothing_to_probe(t1 + hour), Some(t0));
        assert_eq!(h.current(), None);
        // Without the operator, an idle probe only waits.
        h.enter(bad_key, t1);
        assert_eq!(h.nothing_to_probe(t1), None);
        assert!(h.current().is_some());
    }

    fn no(n: &str) -> OutRefundNo {
        OutRefundNo::parse(n).unwrap()
    }

    fn rejected(code: &str) -> QueryOutcome {
        QueryOutcome::RequestRejected { code: code.into() }
    }

    fn params_halt(refunds: usize) -> Rejection {
        Rejection::Halts {
            halt: Halt::ConfigError {
                code: "PARAMS_INVALID".into(),
            },
            refunds,
        }
    }

    /// Answers in order: what was answered, for which refund.
    type Answers<'a> = Vec<(QueryOutcome, &'a str)>;

    /// Feeds `(outcome, refund)` answers in order; returns what the last one meant.
    fn feed(h: &mut Halting, answers: &[(QueryOutcome, &str)]) -> Rejection {
        let mut last = Rejection::Alone;
        for (o, n) in answers {
            last = h.observe(o, &no(n), false);
        }
        last
    }

    #[test]
    fn the_same_code_for_n_different_refunds_in_a_row_halts() {
        let p = || rejected("PARAMS_INVALID");
        let accepted = QueryOutcome::Unknown {
            code: "ORDER_NOT_EXIST".into(),
        };
        let failure = QueryOutcome::Retryable {
            reason: crate::domain::RetryReason::SystemError,
            detail: "gateway code SYSTEM_ERROR".into(),
        };
        let cases: Vec<(&str, Answers<'_>, Rejection)> = vec![
            (
                "N-1 different refunds",
                vec![(p(), "A"), (p(), "B")],
                Rejection::Alone,
            ),
            (
                "N different refunds",
                vec![(p(), "A"), (p(), "B"), (p(), "C")],
                params_halt(3),
            ),
            (
                "the same refund N times",
                vec![(p(), "A"), (p(), "A"), (p(), "A"), (p(), "A")],
                Rejection::Alone,
            ),
            (
                "an accepted answer in between resets",
                vec![(p(), "A"), (p(), "B"), (accepted.clone(), "X"), (p(), "C")],
                Rejection::Alone,
            ),
            (
                "an accepted answer for a refund of the run resets too",
                vec![
                    (p(), "A"),
                    (p(), "B"),
                    (accepted, "B"),
                    (p(), "C"),
                    (p(), "D"),
                ],
                Rejection::Alone,
            ),
            (
                "a failure in between says nothing and keeps the run",
                vec![(p(), "A"), (failure, "X"), (p(), "B"), (p(), "C")],
                params_halt(3),
            ),
            (
                "another code starts its own run",
                vec![
                    (p(), "A"),
                    (p(), "B"),
                    (rejected("OTHER_CODE"), "C"),
                    (p(), "D"),
                ],
                Rejection::Alone,
            ),
            (
                "repeats do not count, new refunds do",
                vec![(p(), "A"), (p(), "A"), (p(), "B"), (p(), "B"), (p(), "C")],
                params_halt(3),
            ),
        ];
        for (name, answers, want) in cases {
            let mut h = Halting::new(Duration::from_secs(60), 3);
            assert_eq!(feed(&mut h, &answers), want, "{name}");
        }
        // 1 halts at the first rejection, as before issue 11.
        let mut h = Halting::new(Duration::from_secs(60), 1);
        assert_eq!(h.observe(&p(), &no("A"), false), params_halt(1));
    }

    #[test]
    fn refunds_refused_before_neither_count_nor_end_a_run() {
        let p = || rejected("PARAMS_INVALID");
        let mut h = Halting::new(Duration::from_secs(60), 3);
        // Only the refunds Checus refused earlier are left to poll (the demo's end, or a quiet
        // ledger): however many, and however often, they never halt a healthy fleet.
        for _ in 0..3 {
            for n in ["OLD-1", "OLD-2", "OLD-3", "OLD-4"] {
                assert_eq!(h.observe(&p(), &no(n), true), Rejection::Alone, "{n}");
            }
        }
        // Nor do they end a run of new refusals: the request format broke for everyone.
        assert_eq!(h.observe(&p(), &no("A"), false), Rejection::Alone);
        assert_eq!(h.observe(&p(), &no("OLD-1"), true), Rejection::Alone);
        assert_eq!(h.observe(&p(), &no("B"), false), Rejection::Alone);
        assert_eq!(h.observe(&p(), &no("C"), false), params_halt(3));
        // Once halted on the code, any refund is a probe, refused before or not.
        let t0 = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let Rejection::Halts { halt, .. } = params_halt(3) else {
            unreachable!()
        };
        assert_eq!(h.enter(halt, t0), Transition::Halted);
        assert_eq!(
            h.observe(&p(), &no("OLD-2"), true),
            Rejection::Systematic {
                code: "PARAMS_INVALID".into()
            }
        );
    }

    #[test]
    fn while_halted_on_a_code_new_refunds_are_evidence_and_only_an_accepted_answer_resumes() {
        let t0 = parse_ts("2026-11-25T10:00:00.000Z").unwrap();
        let p = || rejected("PARAMS_INVALID");
        let mut h = Halting::new(Duration::from_secs(60), 3);
        let Rejection::Halts { halt, .. } = feed(&mut h, &[(p(), "A"), (p(), "B"), (p(), "C")])
        else {
            panic!("no halt")
        };
        assert_eq!(h.enter(halt, t0), Transition::Halted);
        // A probe of another refund answers the same code: the halt's answer, no flag.
        let systematic = Rejection::Systematic {
            code: "PARAMS_INVALID".into(),
        };
        assert_eq!(h.observe(&p(), &no("D"), false), systematic);
        // One of the refunds that halted it: rejected as itself, and still halted.
        assert_eq!(h.observe(&p(), &no("B"), false), params_halt(3));
        // A reload keeps the run with the halt.
        let mut next = Halting::new(Duration::from_secs(60), 3);
        next.carry_over(&h);
        assert_eq!(next.observe(&p(), &no("E"), false), systematic);
        // Resumed (an accepted probe): the run starts over.
        assert!(h.resume().is_some());
        assert_eq!(h.observe(&p(), &no("D"), false), Rejection::Alone);
        assert_eq!(h.observe(&p(), &no("A"), false), Rejection::Alone);
        // Halted for another reason: a per-refund code still counts its own run.
        let mut h = Halting::new(Duration::from_secs(60), 2);
        h.enter(Halt::ClockSkew, t0);
        assert_eq!(h.observe(&p(), &no("A"), false), Rejection::Alone);
        assert_eq!(h.observe(&p(), &no("B"), false), params_halt(2));
    }
}
