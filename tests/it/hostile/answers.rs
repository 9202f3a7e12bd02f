//! Hostile answers (issue 10, part 3): a verified answer holding a value the ledger cannot
//! store is still recorded. The value is dropped and named in the attempt's error, the
//! answer's status is applied because everything that decides it was valid, and the refund is
//! never queried again for it, nor logged at ERROR again. A refund number no ledger can hold
//! becomes a discrepancy recorded cut and escaped. The real binary runs against the sandbox,
//! which signs these answers with the gateway's real (INSECURE test) key.

use std::path::Path;
use std::time::{Duration, Instant};

use checus_reconciler::domain::{
    Change, Currency, Decision, FinalStatus, NewRefund, ObservedRefund, QueryOutcome, RefundStatus,
    parse_ts,
};
use checus_reconciler::ledger::{LedgerError, SqliteLedger};
use checus_reconciler::sandbox::{FAR_FINISH_TIME, RefundScript};
use serde_json::Value;

use crate::common::fixtures::{finalize, no, success_answer};
use crate::common::proc::{
    LiveSandbox, Proc, attempts, cmd, code, count, fast_schedule, import_csv, refunds, run, sql,
    stderr, stdout, write_config,
};
use crate::common::ts;

/// A 12.50 USD refund whose gateway answers `steps` (spellings as in a script file).
fn script(no: &str, steps: &[&str]) -> (String, RefundScript) {
    let steps = steps.iter().map(|s| s.parse().unwrap()).collect();
    (no.to_owned(), RefundScript::usd(no, steps))
}

/// Polls `done` (reading the ledger or the sandbox) until it holds; fails after a minute.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sweeps the daemon finished so far (one row per sweep, whether or not it claimed anything).
fn finished_sweeps(ledger: &Path) -> i64 {
    count(ledger, "sweeps WHERE finished_at IS NOT NULL")
}

/// The daemon's JSON log lines about `no`.
fn lines_about(daemon: &Proc, no: &str) -> Vec<Value> {
    daemon
        .json_lines()
        .into_iter()
        .filter(|v| v["out_refund_no"] == no)
        .collect()
}

/// Imports `scripts` and starts the daemon on them with the fast schedule (a sweep a second,
/// `steady` 1 s): returns the config path and the ready daemon.
fn start_daemon(
    d: &Path,
    sandbox: &LiveSandbox,
    scripts: &[(String, RefundScript)],
) -> (String, Proc) {
    let config = write_config(d, &sandbox.base_url(), &fast_schedule(""));
    let cfg = config.to_str().unwrap().to_owned();
    let csv = import_csv(d, scripts);
    let o = run(d, &["import", "--config", &cfg, csv.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut c = cmd(d);
    c.args(["run", "--config", &cfg]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    (cfg, daemon)
}

/// One text column of one refund, as stored.
fn column(ledger: &Path, no: &str, column: &str) -> Option<String> {
    sql(ledger)
        .query_row(
            &format!("SELECT {column} FROM refunds WHERE out_refund_no = ?1"),
            [no],
            |r| r.get(0),
        )
        .unwrap()
}

/// The `status --json` warning codes, after checking the exit code is `exit`.
fn status_codes(d: &Path, cfg: &str, exit: i32) -> Vec<String> {
    let o = run(d, &["status", "--config", cfg, "--json"]);
    assert_eq!(code(&o), exit, "{}{}", stdout(&o), stderr(&o));
    let status: Value = serde_json::from_str(&stdout(&o)).unwrap();
    status["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str().map(str::to_owned))
        .collect()
}

/// A stopped daemon's run: where it ran, what it was told, and what it logged.
struct Ran<'a> {
    d: &'a Path,
    cfg: &'a str,
    sandbox: &'a LiveSandbox,
    daemon: &'a Proc,
}

impl Ran<'_> {
    fn ledger(&self) -> std::path::PathBuf {
        self.d.join("ledger.sqlite")
    }

    /// `no` was queried once, that attempt is recorded as `final` with `error`, the query
    /// finalized the refund, `show` and `explain` print the error, and no ERROR line (such as
    /// "refund attempt not recorded") was logged about it.
    fn assert_final_after_one_answer(&self, no: &str, error: Option<&str>) {
        assert_eq!(
            self.sandbox.get().queries_for(no),
            1,
            "{no} was queried again"
        );
        let mine: Vec<_> = attempts(&self.ledger())
            .into_values()
            .filter(|a| a.out_refund_no == no)
            .collect();
        assert_eq!(mine.len(), 1, "{no}: {mine:?}");
        let a = &mine[0];
        assert_eq!(
            (
                a.outcome.as_str(),
                a.data_status.as_deref(),
                a.error.as_deref()
            ),
            ("final", Some("REFUND_SUCCESS"), error),
            "{no}"
        );
        let row = &refunds(&self.ledger())[no];
        assert_eq!(row.final_source.as_deref(), Some("query"), "{no}");
        assert_eq!(row.attempts, 1, "{no}");
        for command in ["show", "explain"] {
            let o = run(self.d, &[command, "--config", self.cfg, no]);
            assert_eq!(code(&o), 0, "{command} {no}: {}", stderr(&o));
            let text = stdout(&o);
            assert!(
                text.contains(error.unwrap_or(no)),
                "{command} {no}:\n{text}"
            );
        }
        // A value lost is flagged once for a human (one ERROR line); a whole answer is not.
        let errors: Vec<_> = lines_about(self.daemon, no)
            .into_iter()
            .filter(|v| v["level"] == "ERROR")
            .collect();
        let reason = column(&self.ledger(), no, "review_reason");
        if error.is_some() {
            assert_eq!(reason.as_deref(), Some("answer_unrecordable"), "{no}");
            assert_eq!(errors.len(), 1, "{no}: {errors:?}");
            assert_eq!(errors[0]["message"], "refund flagged for review", "{no}");
            assert_eq!(errors[0]["reason"], "answer_unrecordable", "{no}");
        } else {
            assert_eq!(reason, None, "{no}");
            assert!(errors.is_empty(), "{no}: {errors:?}");
        }
    }
}

#[test]
fn final_answers_with_values_the_ledger_cannot_store_are_recorded_applied_flagged_and_not_requeried()
 {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The first answer of each is the signed final answer with the odd field; a later query
    // would get a clean one, so a second query would show in the attempt log.
    let scripts = vec![
        script("R-AN-LONG", &["fault:long_trade_no", "success"]),
        script("R-AN-FAR", &["fault:far_finish_time", "success"]),
        script("R-AN-ESC", &["fault:escape_trade_no", "success"]),
        script("R-AN-OK", &["success"]),
    ];
    let sandbox = LiveSandbox::start(scripts.clone());
    let (cfg, mut daemon) = start_daemon(d, &sandbox, &scripts);
    let ledger = d.join("ledger.sqlite");
    wait_until("every refund is final", || {
        refunds(&ledger)
            .values()
            .all(|r| r.status == "REFUND_SUCCESS")
    });
    // Two more whole sweeps: nothing is due, so nothing is queried again.
    let settled = finished_sweeps(&ledger);
    wait_until("two more sweeps finished", || {
        finished_sweeps(&ledger) >= settled + 2
    });
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), 0);

    let ran = Ran {
        d,
        cfg: &cfg,
        sandbox: &sandbox,
        daemon: &daemon,
    };
    ran.assert_final_after_one_answer(
        "R-AN-LONG",
        Some("data.refundTradeNo dropped: 65 characters, the ledger stores at most 64"),
    );
    ran.assert_final_after_one_answer(
        "R-AN-FAR",
        Some(
            "data.refundFinishTime dropped: +10000-01-01T04:30:00.000Z is past year 9999, \
             the last the ledger stores",
        ),
    );
    ran.assert_final_after_one_answer(
        "R-AN-ESC",
        Some(
            r#"data.refundTradeNo dropped: "T-R-AN-ESC\u{1b}[31m" contains the control character \u{1b}"#,
        ),
    );
    ran.assert_final_after_one_answer("R-AN-OK", None);
    // What was dropped is absent; what fit is kept.
    let kept = |no: &str, name: &str| column(&ledger, no, name);
    assert_eq!(kept("R-AN-LONG", "refund_trade_no"), None);
    assert_eq!(kept("R-AN-ESC", "refund_trade_no"), None);
    assert_eq!(kept("R-AN-FAR", "refund_finish_time"), None);
    assert!(kept("R-AN-LONG", "refund_finish_time").is_some());
    assert_eq!(kept("R-AN-FAR", "refund_trade_no").unwrap(), "T-R-AN-FAR");
    assert_eq!(kept("R-AN-OK", "refund_trade_no").unwrap(), "T-R-AN-OK");
    // Final but flagged: status says a human should look.
    assert!(status_codes(d, &cfg, 8).contains(&"flagged_refunds".to_owned()));
    // A human checks what was lost, then acknowledges the flag of the final refund (audited).
    let clear = |no: &str| {
        run(
            d,
            &[
                "clear-flag",
                "--config",
                &cfg,
                no,
                "--reason",
                "checked with Checus",
                "--by",
                "op",
            ],
        )
    };
    let o = clear("R-AN-LONG");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(kept("R-AN-LONG", "review_reason"), None);
    assert_eq!(kept("R-AN-LONG", "status").unwrap(), "REFUND_SUCCESS");
    assert_eq!(
        count(
            &ledger,
            "operator_actions WHERE action = 'clear_flag' AND out_refund_no = 'R-AN-LONG' \
             AND detail LIKE '%answer_unrecordable%'"
        ),
        1
    );
    let o = clear("R-AN-LONG");
    assert_eq!(code(&o), 5, "not flagged any more: {}", stderr(&o));
}

/// "\x1b[2J" + 70 × 'R', as a discrepancy records it.
const ODD_OBSERVED: &str = concat!(
    r"\u{1b}[2J",
    "RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR",
    " [not a refund number: 74 characters, cut to 64, control characters escaped]"
);

/// The refund number no ledger holds: one discrepancy per answer, cut and escaped, saying so,
/// and listed by `discrepancies`.
fn assert_odd_refund_number_recorded(d: &Path, cfg: &str, ledger: &Path) {
    let answers = count(ledger, "attempts WHERE out_refund_no = 'R-AN-ODD'");
    let recorded = count(
        ledger,
        "discrepancies WHERE out_refund_no = 'R-AN-ODD' AND kind = 'refund_no_mismatch' \
         AND expected = 'R-AN-ODD'",
    );
    assert_eq!(recorded, answers);
    let observed: Vec<String> = sql(ledger)
        .prepare("SELECT DISTINCT observed FROM discrepancies")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(observed, [ODD_OBSERVED]);
    let o = run(d, &["discrepancies", "--config", cfg]);
    assert!(stdout(&o).contains(&ODD_OBSERVED[..20]), "{}", stdout(&o));
}

#[test]
fn an_unrecordable_pending_answer_is_flagged_once_and_an_unstorable_refund_number_is_recorded() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scripts = vec![
        // Pending, with a 65-character refundTradeNo, on every query.
        script("R-AN-PEND", &["fault:long_trade_no"]),
        // A signed answer about "\x1b[2J" + 70 × 'R' instead of this refund, on every query.
        script("R-AN-ODD", &["fault:unstorable_refund_no"]),
    ];
    let sandbox = LiveSandbox::start(scripts.clone());
    let (cfg, mut daemon) = start_daemon(d, &sandbox, &scripts);
    let ledger = d.join("ledger.sqlite");
    // Three answers each: the first flags, the later ones only record (slow cadence, 1 s here).
    wait_until("each refund answered three times", || {
        scripts
            .iter()
            .all(|(no, _)| count(&ledger, &format!("attempts WHERE out_refund_no = '{no}'")) >= 3)
    });
    let codes = status_codes(d, &cfg, 8);
    assert!(codes.iter().any(|c| c == "flagged_refunds"), "{codes:?}");
    assert!(
        codes.iter().any(|c| c == "unresolved_discrepancies"),
        "{codes:?}"
    );
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), 0);

    let reason = |no: &str| column(&ledger, no, "review_reason");
    assert_eq!(reason("R-AN-PEND").as_deref(), Some("answer_unrecordable"));
    assert_eq!(reason("R-AN-ODD").as_deref(), Some("answer_mismatch"));
    // Every pending answer was recorded, counted, named what it lost, and kept nothing of it.
    let pend: Vec<_> = attempts(&ledger)
        .into_values()
        .filter(|a| a.out_refund_no == "R-AN-PEND")
        .collect();
    assert_eq!(refunds(&ledger)["R-AN-PEND"].attempts, pend.len() as i64);
    for a in &pend {
        assert_eq!(
            (a.outcome.as_str(), a.error.as_deref()),
            (
                "pending",
                Some("data.refundTradeNo dropped: 65 characters, the ledger stores at most 64")
            )
        );
    }
    assert_eq!(
        count(&ledger, "refunds WHERE refund_trade_no IS NOT NULL"),
        0
    );
    // Flagged once: one ERROR line for it, whatever the number of answers; none lost.
    let errors: Vec<Value> = lines_about(&daemon, "R-AN-PEND")
        .into_iter()
        .filter(|v| v["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["message"], "refund flagged for review");
    assert_eq!(errors[0]["reason"], "answer_unrecordable");
    let lost = "refund attempt not recorded";
    assert!(
        !daemon.seen.iter().any(|l| l.contains(lost)),
        "{}",
        daemon.tail(40)
    );
    assert_odd_refund_number_recorded(d, &cfg, &ledger);
    // What the operator does: read the attempt's error in `explain`, then clear the flag.
    let o = run(d, &["explain", "--config", &cfg, "R-AN-PEND"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("flagged for review: answer_unrecordable"),
        "{text}"
    );
    assert!(
        text.contains("data.refundTradeNo dropped: 65 characters"),
        "{text}"
    );
    let o = run(
        d,
        &["retry-now", "--config", &cfg, "R-AN-PEND", "--by", "alice"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(reason("R-AN-PEND"), None);
}

/// The domain's rule is schema.sql's, tied by the real ledger: what `recordable` keeps is
/// stored, and what it drops is exactly what the ledger refuses.
#[test]
fn the_ledger_stores_exactly_what_recordable_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut ledger = SqliteLedger::open(&path).unwrap();
    let at = "2026-11-25T10:00:00.000Z";
    let mut n = 0;
    let mut write = |trade_no: &str, finish: &str| -> (ObservedRefund, Result<(), LedgerError>) {
        n += 1;
        let refund = format!("R-B-{n}");
        let answer = success_answer(&refund, at);
        ledger
            .insert_refund(&NewRefund {
                out_refund_no: no(&refund),
                refund_trade_no: None,
                out_trade_no: None,
                amount: rust_decimal::Decimal::new(1250, 2),
                currency: Currency::parse("USD").unwrap(),
                status: RefundStatus::Pending,
                created_at: ts(at),
            })
            .unwrap();
        let QueryOutcome::Final(mut seen) = answer.outcome.clone() else {
            unreachable!()
        };
        seen.refund_trade_no = Some(trade_no.to_owned());
        seen.refund_finish_time = Some(parse_ts(finish).unwrap());
        // The raw values, as they were before this fix, straight into the ledger.
        let raw = Decision {
            change: Change::Finalize {
                status: FinalStatus::Success,
                refund_trade_no: seen.refund_trade_no.clone(),
                refund_finish_time: seen.refund_finish_time,
                flag: None,
            },
            ..finalize(FinalStatus::Success)
        };
        let result = ledger.record_attempt(&answer, &raw).map(|_| ());
        (seen.recordable(), result)
    };
    let fits = [
        ("T".repeat(64), "9999-12-31T23:59:59.999Z"),
        ("é".repeat(64), "0000-01-01T00:00:00.000Z"),
        ("T-\u{e9}".to_owned(), "2026-11-25T10:00:00.123456+08:00"),
    ];
    for (trade_no, finish) in &fits {
        let (kept, stored) = write(trade_no, finish);
        assert!(
            kept.dropped.is_empty(),
            "{trade_no} {finish}: {:?}",
            kept.dropped
        );
        stored.unwrap_or_else(|e| panic!("{trade_no} {finish}: {e}"));
    }
    let refused = [
        (
            "T".repeat(65),
            "2026-11-25T10:00:00.000Z",
            "data.refundTradeNo",
        ),
        ("T1".to_owned(), FAR_FINISH_TIME, "data.refundFinishTime"),
        (
            "T1".to_owned(),
            "0000-01-01T00:30:00+01:00",
            "data.refundFinishTime",
        ),
    ];
    for (trade_no, finish, field) in &refused {
        let (kept, stored) = write(trade_no, finish);
        let fields: Vec<&str> = kept.dropped.iter().map(|x| x.field).collect();
        assert_eq!(fields, vec![*field], "{trade_no} {finish}");
        let err = stored.expect_err("the ledger refuses what recordable drops");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source
                .as_deref()
                .unwrap_or("")
                .contains("CHECK constraint failed"),
            "{err}: {source:?}"
        );
    }
    // Nothing half-written: the refused attempts left no attempt row behind.
    let c = sql(&path);
    let attempts: i64 = c
        .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, fits.len() as i64);
}
