//! `status` tells the truth (issue 10, part 4): every way reconciliation stops without a halt
//! (a gateway outage, failing sweeps, unreadable rows, refunds never scheduled or overdue and
//! unflagged, a prune row left running) makes the real binary's `status` exit 8 and name its
//! stable code in `--json`. Each fact is planted on a real ledger as the daemon, the merchant's
//! app or a careless operator would leave it; one real daemon against a dead gateway shows the
//! outage in `status` and in systemd's `STATUS=` line, and both clear once the gateway is back.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;

use checus_reconciler::domain::{Timestamp, format_ts};
use checus_reconciler::ledger::{SqliteLedger, SweepCounts, SweepEnd};
use checus_reconciler::sandbox::{Fault, RefundScript, Step};
use chrono::{TimeDelta, Utc};

use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, fast_schedule, import_csv, run, sql, stderr, stdout, write_config,
};

/// A new ledger made by `init` in `dir`.
fn new_ledger(dir: &Path) -> PathBuf {
    let path = dir.join("ledger.sqlite");
    let o = run(dir, &["init", "--ledger", path.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    path
}

/// A sweep from `at` to `at` that ended as `end` says, recorded as the daemon records one.
fn sweep(path: &Path, at: Timestamp, end: SweepEnd) {
    let ledger = SqliteLedger::open_existing(path).unwrap();
    let id = ledger.begin_sweep(at, None).unwrap();
    ledger.finish_sweep(id, at, &end).unwrap();
}

/// A pending refund as the merchant's app inserts it, created `age` ago, with the schedule
/// `next_query_at` (`None`: not scheduled yet).
fn refund(path: &Path, no: &str, age: TimeDelta, next_query_at: Option<Timestamp>) {
    sql(path)
        .execute(
            "INSERT INTO refunds (out_refund_no, amount, currency, created_at, next_query_at)
             VALUES (?1, '12.50', 'USD', ?2, ?3)",
            rusqlite::params![
                no,
                format_ts(Utc::now() - age),
                next_query_at.map(format_ts)
            ],
        )
        .unwrap();
}

/// What `status` answered: its exit code, the warning codes, the JSON and the text output.
struct Answer {
    exit: i32,
    codes: Vec<String>,
    json: serde_json::Value,
    text: String,
}

/// `status` with `args`, as JSON and as text (the two must agree on the exit code).
fn status(dir: &Path, args: &[&str]) -> Answer {
    let mut json_args = vec!["status"];
    json_args.extend_from_slice(args);
    json_args.push("--json");
    let o = run(dir, &json_args);
    let v = json(&o);
    let codes: Vec<String> = v["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings array: {v}"))
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(v["needs_human"], !codes.is_empty(), "{v}");
    let text = run(dir, &[&["status"], args].concat());
    assert_eq!(code(&text), code(&o), "{}", stderr(&text));
    Answer {
        exit: code(&o),
        codes,
        json: v,
        text: stdout(&text),
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

/// One planted stall: its name, what plants it on a ledger whose worker swept cleanly a
/// moment ago, and the one code `status` must answer with. A case that is not itself about
/// the latest sweep ends with a clean sweep after what it planted.
type Case = (&'static str, fn(&Path), &'static str);

/// A clean sweep now, after whatever was planted.
fn swept_now(path: &Path) {
    sweep(path, Utc::now(), SweepEnd::default());
}

fn breaker_open(path: &Path) {
    sweep(
        path,
        Utc::now(),
        SweepEnd {
            breaker_open_since: Some(Utc::now() - TimeDelta::minutes(12)),
            ..SweepEnd::default()
        },
    );
}

fn sweep_failed(path: &Path) {
    sweep(
        path,
        Utc::now(),
        SweepEnd {
            error: Some("ledger: write sweep: disk I/O error".into()),
            ..SweepEnd::default()
        },
    );
}

fn rows_skipped(path: &Path) {
    sweep(
        path,
        Utc::now(),
        SweepEnd {
            counts: SweepCounts {
                unreadable: 3,
                ..SweepCounts::default()
            },
            ..SweepEnd::default()
        },
    );
}

fn created_at_not_a_time(path: &Path) {
    // Only a writer that switched the CHECKs off gets such a value in.
    refund(path, "R-BAD-TIME", TimeDelta::hours(2), None);
    sql(path)
        .execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE refunds SET created_at = 'last tuesday', status = 'REFUND_FAILED',
                    final_source = 'refund_response', finalized_at = created_at
              WHERE out_refund_no = 'R-BAD-TIME';",
        )
        .unwrap();
    swept_now(path);
}

fn never_scheduled(path: &Path) {
    // Created an hour ago; the sweep after it did not schedule it.
    refund(path, "R-UNSCHEDULED", TimeDelta::hours(1), None);
    swept_now(path);
}

fn overdue_unflagged(path: &Path) {
    // Five days pending, past the default 72 h + 26.4 h + 5 min, and its last schedule long
    // past: the daemon never got an answer that would flag it.
    let next = Utc::now() - TimeDelta::hours(30);
    refund(path, "R-OVERDUE", TimeDelta::days(5), Some(next));
    swept_now(path);
}

fn prune_running(path: &Path) {
    sql(path)
        .execute(
            "INSERT INTO prunes (started_at, actor, reason, finalized_before, state)
             VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'ops', 'by hand',
                     '2026-01-01T00:00:00.000Z', 'running')",
            [],
        )
        .unwrap();
    swept_now(path);
}

const CASES: [Case; 7] = [
    ("breaker open", breaker_open, "gateway_unavailable"),
    ("sweep failed", sweep_failed, "sweeps_failing"),
    ("rows skipped", rows_skipped, "unreadable_rows"),
    (
        "created_at not a time",
        created_at_not_a_time,
        "unreadable_rows",
    ),
    ("never scheduled", never_scheduled, "unscheduled_refunds"),
    (
        "overdue, unflagged",
        overdue_unflagged,
        "overdue_unflagged_refunds",
    ),
    ("prune left running", prune_running, "prune_left_running"),
];

#[test]
fn status_exits_8_and_names_each_stall_by_its_code() {
    for (name, plant, want) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let path = new_ledger(dir.path());
        let l = path.to_str().unwrap();
        sweep(
            &path,
            Utc::now() - TimeDelta::seconds(30),
            SweepEnd::default(),
        );
        assert_eq!(status(dir.path(), &["--ledger", l]).exit, 0, "{name}");
        plant(&path);
        let a = status(dir.path(), &["--ledger", l]);
        assert_eq!(a.exit, 8, "{name}: {:?}\n{}", a.codes, a.text);
        assert_eq!(a.codes, [want], "{name}\n{}", a.text);
        assert!(
            a.text.contains("NEEDS A HUMAN") && a.text.contains(&format!("[{want}] ")),
            "{name}: {}",
            a.text
        );
    }
}

#[test]
fn healthy_refunds_raise_none_of_the_stall_findings() {
    let dir = tempfile::tempdir().unwrap();
    let path = new_ledger(dir.path());
    let l = path.to_str().unwrap();
    sweep(
        &path,
        Utc::now() - TimeDelta::seconds(30),
        SweepEnd::default(),
    );
    // Four days pending but on its daily cadence: the query that flags it is still ahead.
    let tomorrow = Utc::now() + TimeDelta::hours(20);
    refund(&path, "R-SLOW", TimeDelta::days(4), Some(tomorrow));
    // Just inserted by the app, after the latest sweep started: the next sweep schedules it.
    refund(&path, "R-NEW", TimeDelta::zero(), None);
    let a = status(dir.path(), &["--ledger", l]);
    assert_eq!((a.exit, a.codes.len()), (0, 0), "{:?}\n{}", a.codes, a.text);
    assert!(a.text.contains("OK: nothing needs a human"), "{}", a.text);
    assert_eq!(a.json["pending"], 2, "{}", a.json);
}

#[test]
fn status_judges_refunds_by_the_schedule_in_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "[schedule]\npending_flag_after = \"1h\"\nbackoff = [\"10m\"]\nsteady = \"1h\"\n";
    let config = write_config(d, "http://127.0.0.1:9/aggregate-pay/api/gateway", extra);
    let cfg = config.to_str().unwrap();
    let path = new_ledger(d);
    sweep(
        &path,
        Utc::now() - TimeDelta::seconds(30),
        SweepEnd::default(),
    );
    let in_an_hour = Utc::now() + TimeDelta::hours(1);
    refund(&path, "R-3H", TimeDelta::hours(3), Some(in_an_hour));
    // The documented defaults (72 h, a 24 h cadence) find nothing; the daemon's own 1 h flag
    // with a 1 h cadence does.
    let a = status(d, &["--ledger", path.to_str().unwrap()]);
    assert_eq!((a.exit, a.codes.len()), (0, 0), "{:?}", a.codes);
    let a = status(d, &["--config", cfg]);
    assert_eq!(a.exit, 8, "{}", a.text);
    assert_eq!(a.codes, ["overdue_unflagged_refunds"], "{}", a.text);
    // `--ledger` names the file; the config still gives the schedule.
    let a = status(d, &["--config", cfg, "--ledger", path.to_str().unwrap()]);
    assert_eq!(
        (a.exit, a.codes.as_slice()),
        (8, &["overdue_unflagged_refunds".to_owned()][..])
    );
}

#[test]
fn a_gateway_outage_shows_in_status_and_status_line_until_the_gateway_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scripts: Vec<(String, RefundScript)> = (0..6)
        .map(|i| {
            let no = format!("R-OUTAGE-{i}");
            let s = RefundScript::usd(&no, vec![Step::Success]);
            (no, s)
        })
        .collect();
    let sandbox = LiveSandbox::start(scripts.clone());
    // Every connection is reset: more than the 5 outage answers in a row that open the breaker.
    sandbox.get().set_global_fault(Some(Fault::Reset));
    let config = write_config(d, &sandbox.base_url(), &fast_schedule(""));
    let cfg = config.to_str().unwrap();
    let csv = import_csv(d, &scripts);
    let o = run(d, &["import", "--config", cfg, csv.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let notify = d.join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let mut c = cmd(d);
    c.args(["run", "--config", cfg])
        .env("NOTIFY_SOCKET", &notify);
    let _daemon = Proc::spawn(c);
    let mut seen = Vec::new();
    let line = crate::common::proc::recv_notify_until(&sock, "GATEWAY UNAVAILABLE", &mut seen);
    assert!(
        line.contains("; GATEWAY UNAVAILABLE: querying paused since ")
            && line.contains("; next probe at "),
        "{line}"
    );

    let a = status(d, &["--config", cfg]);
    assert_eq!(a.exit, 8, "{}", a.text);
    assert_eq!(a.codes, ["gateway_unavailable"], "{}", a.text);
    assert!(
        a.text.contains("the gateway has been unavailable since "),
        "{}",
        a.text
    );
    assert_eq!(a.json["pending"], 6, "deferred, untouched: {}", a.json);

    // The gateway is back: the next probe closes the breaker, the sweep catches up, and
    // nothing needs a human any more.
    sandbox.get().set_global_fault(None);
    crate::common::proc::recv_notify_until(&sock, "nothing pending", &mut seen);
    let a = status(d, &["--config", cfg]);
    assert_eq!((a.exit, a.codes.len()), (0, 0), "{:?}\n{}", a.codes, a.text);
    assert_eq!(a.json["succeeded"], 6, "{}", a.json);
}
