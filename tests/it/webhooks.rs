//! Outgoing webhooks (issue 13 part 3) through the real binary: the outbox triggers write each
//! event in the transaction of its change (daemon and SQL contract alike), the daemon delivers
//! them signed to a loopback receiver that checks the signature with an independent
//! implementation (python3's hmac), in order per refund, at least once across SIGKILLs with a
//! receiver failing 30 % of requests, and an event retried past its window is dead, makes
//! `status` exit 8, and comes back with an audited `webhooks redeliver`.
//!
//! `WEBHOOK_SEED=<n>` replays the crash run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, count, import_scripts, run, seed_from_env, sql, stderr, stdout,
    write_config,
};
use crate::common::tools::require_tool;
use checus_reconciler::domain::Currency;
use checus_reconciler::sandbox::{RefundScript, Step};
use rust_decimal::Decimal;

const SECRET: &str = "whsec-test-0123456789abcdef";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event_id: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
    /// The status it answered.
    status: u16,
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Fail,
    /// Fails with this probability, drawn from the receiver's seeded RNG.
    FailSome(f64),
}

/// A loopback HTTP receiver: one thread per connection, every request logged in arrival
/// order under one lock, at the moment its answer is decided.
struct Receiver {
    port: u16,
    log: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<(Answer, StdRng)>>,
}

impl Receiver {
    fn start(answer: Answer, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new((answer, StdRng::seed_from_u64(seed))));
        let (l, a) = (Arc::clone(&log), Arc::clone(&answer));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (l, a) = (Arc::clone(&l), Arc::clone(&a));
                std::thread::spawn(move || serve(stream, &l, &a));
            }
        });
        Self { port, log, answer }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks?token=not-logged", self.port)
    }

    fn set(&self, answer: Answer) {
        self.answer.lock().unwrap().0 = answer;
    }

    fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

/// Reads one request (head, then Content-Length bytes of body), logs it, answers.
fn serve(mut s: TcpStream, log: &Mutex<Vec<Received>>, answer: &Mutex<(Answer, StdRng)>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let (head, body) = loop {
        let Ok(n) = s.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
            if got.len() >= end + 4 + length {
                break (head, got[end + 4..end + 4 + length].to_vec());
            }
        }
    };
    let status = {
        let mut a = answer.lock().unwrap();
        let fail = match a.0 {
            Answer::Ok => false,
            Answer::Fail => true,
            Answer::FailSome(p) => a.1.random_bool(p),
        };
        let status = if fail { 503 } else { 200 };
        log.lock().unwrap().push(Received {
            event_id: header(&head, "checus-reconciler-event-id").unwrap_or_default(),
            signature: header(&head, "checus-reconciler-signature").unwrap_or_default(),
            content_type: header(&head, "content-type").unwrap_or_default(),
            body,
            status,
        });
        status
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The secret file (private, as the daemon demands) and the `[webhook]` section using it.
fn webhook_section(dir: &Path, url: &str, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("webhook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "\n[webhook]\nurl = \"{url}\"\nsecret = \"file:{}\"\nretry_first = \"20ms\"\nretry_max = \"200ms\"\n{extra}",
        path.display()
    )
}

/// A fast schedule with no confirming query during the test (the SQL-contract refunds are not
/// scripted in the sandbox), JSON logs.
fn schedule() -> String {
    "[schedule]\ngrace = \"0s\"\nbackoff = [\"50ms\", \"100ms\"]\nretry = \"100ms\"\nsteady = \"1s\"\n\
     confirm_after = \"30d\"\n\n[worker]\nsweep_cron = \"* * * * * *\"\nconcurrency = 8\n\
     rate_per_second = 2000.0\nshutdown_deadline = \"5s\"\n\n[log]\nformat = \"json\"\n"
        .to_owned()
}

fn spawn_daemon(dir: &Path, config: &Path) -> Proc {
    let mut c = cmd(dir);
    c.args(["run", "--config", config.to_str().unwrap()]);
    let mut p = Proc::spawn(c);
    p.wait_for("daemon ready");
    p
}

/// Polls `cond` until it holds, for up to `within`.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling a condition with a deadline (the ledger file has no readiness signal).
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Scripts that finalize at the first query: the daemon writes their events.
fn success_scripts(n: usize, prefix: &str) -> Vec<(String, RefundScript)> {
    (1..=n)
        .map(|i| {
            let no = format!("{prefix}{i:04}");
            let script = RefundScript {
                refund_trade_no: format!("T-{no}"),
                out_trade_no: format!("O-{no}"),
                amount: Decimal::new(1250 + i as i64, 2),
                currency: Currency::parse("USD").unwrap(),
                steps: vec![Step::Success],
            };
            (no, script)
        })
        .collect()
}

/// Through the SQL contract, in ONE transaction: a pending refund, a notification that
/// finalizes it (refund.finalized), one that contradicts it (discrepancy.recorded).
fn contract_refund(c: &rusqlite::Connection, no: &str) {
    c.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('{no}', '7.10', 'EUR');
         INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
              VALUES ('{no}', 'REFUND_SUCCESS', '7.1', 'EUR', '2026-11-25T10:00:00.000Z');
         INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
              VALUES ('{no}', 'REFUND_FAILED', '7.10', 'EUR', '2026-11-25T10:00:01.000Z');
         COMMIT;"
    ))
    .unwrap();
}

fn ledger_events(ledger: &Path) -> Vec<(i64, String, String, String, String)> {
    let c = sql(ledger);
    let mut stmt = c
        .prepare("SELECT id, event_id, type, out_refund_no, state FROM webhook_events ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn hmac_ok(r: &Received) -> bool {
    let Some((t, v1)) = r
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let tag: String = hmac::sign(&key, &signed)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tag == v1
}

#[test]
fn events_are_written_by_triggers_in_the_same_transaction_and_never_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    assert_eq!(code(&run(dir.path(), &["init", "--ledger", l])), 0);
    let c = sql(&ledger);
    // A pending refund is no event; a rolled-back finalization leaves none either.
    c.execute_batch(
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('W-1', '0012.50', 'USD');
         BEGIN IMMEDIATE;
         INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
              VALUES ('W-1', 'REFUND_SUCCESS', '12.5', 'USD', '2026-11-25T10:00:00.000Z');
         ROLLBACK;",
    )
    .unwrap();
    assert_eq!(count(&ledger, "webhook_events"), 0);
    // The same through the sqlite3 shell, as a merchant's script would: rolled back, nothing.
    if require_tool("sqlite3") {
        let shell = |sql: &str| {
            let o = std::process::Command::new("sqlite3")
                .args([l, sql])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        shell(
            "BEGIN IMMEDIATE;
             INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
                  VALUES ('W-1', 'REFUND_FAILED', '12.50', 'USD', '2026-11-25T10:00:00.000Z');
             ROLLBACK;",
        );
        assert_eq!(count(&ledger, "webhook_events"), 0);
    }
    // Finalized by a notification; flagged by hand; a conflicting notification; an unknown
    // refund; a refund inserted already final (the synchronous /refund failure).
    c.execute_batch(
        "INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
              VALUES ('W-1', 'REFUND_SUCCESS', '12.5', 'USD', '2026-11-25T10:00:00.000Z');
         UPDATE refunds SET review_flag = 1, review_reason = 'answer_mismatch',
                flagged_at = '2026-11-25T10:00:02.000Z' WHERE out_refund_no = 'W-1';
         INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
              VALUES ('W-1', 'REFUND_FAILED', '12.5', 'USD', '2026-11-25T10:00:03.000Z');
         INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
              VALUES ('W-404', 'REFUND_SUCCESS', '1', 'USD', '2026-11-25T10:00:04.000Z');
         INSERT INTO refunds (out_refund_no, amount, currency, status, final_source, finalized_at)
              VALUES ('W-2', '99999999999999.99', 'IDR', 'REFUND_FAILED', 'refund_response',
                      '2026-11-25T10:00:05.000Z');",
    )
    .unwrap();
    let events = ledger_events(&ledger);
    let kinds: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(_, _, t, no, s)| (t.as_str(), no.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("refund.finalized", "W-1", "pending"),
            ("refund.flagged", "W-1", "pending"),
            ("discrepancy.recorded", "W-1", "pending"),
            ("discrepancy.recorded", "W-404", "pending"),
            ("refund.finalized", "W-2", "pending"),
        ]
    );
    let payload = |id: i64| -> serde_json::Value {
        let text: String = c
            .query_row(
                "SELECT payload FROM webhook_events WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let p = payload(events[0].0);
    assert_eq!(p["status"], "REFUND_SUCCESS");
    assert_eq!(p["final_source"], "notification");
    // Amounts are the ledger's exact text, as strings.
    assert_eq!(p["amount"], "0012.50");
    assert_eq!(payload(events[4].0)["amount"], "99999999999999.99");
    assert_eq!(payload(events[1].0)["review_reason"], "answer_mismatch");
    assert_eq!(payload(events[2].0)["kind"], "conflicting_final");
    assert_eq!(payload(events[3].0)["kind"], "unknown_refund");
    let ids: BTreeSet<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    assert!(
        ids.iter()
            .all(|id| id.starts_with("evt_") && id.len() == 36)
    );
    // What an event says never changes, and events are never deleted; only delivery moves.
    for bad in [
        "UPDATE webhook_events SET payload = '{}' WHERE id = 1",
        "UPDATE webhook_events SET type = 'refund.flagged' WHERE id = 1",
        "UPDATE webhook_events SET event_id = 'evt_x' WHERE id = 1",
        "DELETE FROM webhook_events WHERE id = 1",
        "INSERT OR REPLACE INTO webhook_events (id, type, out_refund_no, payload) VALUES (1, 'refund.flagged', 'W-1', '{}')",
    ] {
        let e = c.execute_batch(bad).unwrap_err().to_string();
        assert!(e.contains("checus-reconciler: "), "{bad}: {e}");
    }
    c.execute_batch(
        "UPDATE webhook_events SET state = 'delivered', attempts = 1,
                delivered_at = '2026-11-25T10:01:00.000Z' WHERE id = 1",
    )
    .unwrap();
    let o = run(dir.path(), &["verify-ledger", "--ledger", l]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // `webhooks` lists them in the list style.
    let o = run(
        dir.path(),
        &["webhooks", "--ledger", l, "--state", "pending", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let page: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(page["total"], 4);
    assert_eq!(page["rows"][0]["type"], "refund.flagged");
    let o = run(
        dir.path(),
        &["webhooks", "--ledger", l, "--refund", "W-1", "--limit", "2"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("EVENT_ID"), "{text}");
    assert!(
        text.contains("(2 of 3 events shown; --limit N to see more)"),
        "{text}"
    );
}

/// One UPDATE that finalizes and flags a refund (a final answer the ledger records with a
/// value dropped) writes refund.finalized before refund.flagged, as the insert trigger does:
/// schema.sql creates the flag's trigger first because SQLite fires the newest first.
#[test]
fn one_update_that_finalizes_and_flags_queues_finalized_before_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    assert_eq!(code(&run(dir.path(), &["init", "--ledger", l])), 0);
    let c = sql(&ledger);
    c.execute_batch(
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('W-9', '3.00', 'USD');
         UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'query',
                finalized_at = '2026-11-25T10:00:00.000Z', review_flag = 1,
                review_reason = 'answer_unrecordable', flagged_at = '2026-11-25T10:00:00.000Z'
          WHERE out_refund_no = 'W-9';",
    )
    .unwrap();
    let types: Vec<String> = ledger_events(&ledger).into_iter().map(|e| e.2).collect();
    assert_eq!(types, ["refund.finalized", "refund.flagged"]);
}

#[test]
fn the_daemon_delivers_signed_events_that_an_independent_hmac_verifies() {
    if !require_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let receiver = Receiver::start(Answer::Ok, 1);
    let scripts = success_scripts(3, "R-SIG-");
    let sandbox = LiveSandbox::start(scripts.clone());
    let extra = schedule() + &webhook_section(d, &receiver.url(), "");
    let config = write_config(d, &sandbox.base_url(), &extra);
    let ledger = d.join("ledger.sqlite");
    import_scripts(d, &config, &scripts);
    let mut daemon = spawn_daemon(d, &config);
    // The daemon's own finalizations and a contract write while it runs.
    contract_refund(&sql(&ledger), "S-SIG-1");
    wait_until(Duration::from_secs(30), "5 events delivered", || {
        ledger_events(&ledger)
            .iter()
            .filter(|e| e.4 == "delivered")
            .count()
            == 5
    });
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
    let log = receiver.log();
    assert_eq!(log.len(), 5, "one request per event: {log:#?}");
    // Python's hmac, not ours: the documented verification snippet, run on each request.
    let verify = r#"
import hashlib, hmac, sys
secret, header, body = sys.argv[1].encode(), sys.argv[2], open(sys.argv[3], 'rb').read()
parts = dict(p.split('=', 1) for p in header.split(','))
expected = hmac.new(secret, parts['t'].encode() + b'.' + body, hashlib.sha256).hexdigest()
sys.exit(0 if hmac.compare_digest(expected, parts['v1']) else 1)
"#;
    let py = |header: &str, body: &[u8]| -> i32 {
        let file = d.join("body.json");
        std::fs::write(&file, body).unwrap();
        std::process::Command::new("python3")
            .args(["-c", verify, SECRET, header, file.to_str().unwrap()])
            .status()
            .unwrap()
            .code()
            .unwrap()
    };
    let ids: BTreeSet<String> = ledger_events(&ledger).into_iter().map(|e| e.1).collect();
    for r in &log {
        assert_eq!(py(&r.signature, &r.body), 0, "python verifies {r:?}");
        assert_eq!(r.content_type, "application/json");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body["id"],
            r.event_id.as_str(),
            "the header's id is the body's"
        );
        assert!(ids.contains(&r.event_id));
        assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(body["data"]["out_refund_no"].is_string());
        // Tampering: one byte of the body, or another timestamp, fails verification.
        let mut altered = r.body.clone();
        let at = altered.iter().position(|b| *b == b'R').unwrap();
        altered[at] = b'S';
        assert_eq!(py(&r.signature, &altered), 1, "altered body refused");
        let (t, v1) = r.signature.split_once(",v1=").unwrap();
        let later: i64 = t.trim_start_matches("t=").parse::<i64>().unwrap() + 1;
        assert_eq!(
            py(&format!("t={later},v1={v1}"), &r.body),
            1,
            "altered t refused"
        );
    }
    // One the daemon wrote itself (the contract's refund may have been sent first).
    let first: serde_json::Value = log
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .find(|b| {
            b["data"]["out_refund_no"]
                .as_str()
                .unwrap()
                .starts_with("R-SIG-")
        })
        .unwrap();
    assert_eq!(first["type"], "refund.finalized");
    assert_eq!(first["data"]["final_source"], "query");
    assert_eq!(first["data"]["currency"], "USD");
    // The receiver's query token never reaches a log line.
    assert!(
        !daemon.seen.iter().any(|l| l.contains("not-logged")),
        "{}",
        daemon.tail(20)
    );
}

#[test]
fn every_event_is_delivered_at_least_once_in_order_across_sigkills_and_failures() {
    let seed = seed_from_env("WEBHOOK_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let receiver = Receiver::start(Answer::FailSome(0.3), seed);
    let scripts = success_scripts(150, "R-WH-");
    let sandbox = LiveSandbox::start(scripts.clone());
    let extra = schedule() + &webhook_section(d, &receiver.url(), "concurrency = 8\n");
    let config = write_config(d, &sandbox.base_url(), &extra);
    let ledger = d.join("ledger.sqlite");
    import_scripts(d, &config, &scripts);
    // 150 finalized by the daemon's queries; 120 refunds of 2 events each and 30 unknown
    // refunds through the SQL contract, written while the daemon is killed and restarted.
    let writer = {
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            let c = sql(&ledger);
            for i in 1..=120 {
                contract_refund(&c, &format!("S-WH-{i:04}"));
                if i <= 30 {
                    c.execute(
                        "INSERT INTO notifications (out_refund_no, status, amount, currency,
                                                    notify_time)
                         VALUES (?1, 'REFUND_SUCCESS', '1', 'USD', '2026-11-25T10:00:00.000Z')",
                        [format!("U-WH-{i:04}")],
                    )
                    .unwrap();
                }
            }
        })
    };
    const TOTAL: usize = 150 + 240 + 30;
    let mut daemon = spawn_daemon(d, &config);
    let mut kills = 0;
    for _ in 0..3 {
        let at = receiver.requests() + rng.random_range(20..120);
        wait_until(Duration::from_secs(60), "requests before a kill", || {
            receiver.requests() >= at
        });
        daemon.kill9();
        kills += 1;
        daemon = spawn_daemon(d, &config);
    }
    writer.join().unwrap();
    wait_until(Duration::from_secs(120), "every event delivered", || {
        let events = ledger_events(&ledger);
        events.len() == TOTAL && events.iter().all(|e| e.4 == "delivered")
    });
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
    let events = ledger_events(&ledger);
    let log = receiver.log();
    let failed = log.iter().filter(|r| r.status != 200).count();
    eprintln!(
        "events {TOTAL}, requests {}, failed {failed}, duplicates {}, kills {kills}",
        log.len(),
        log.len() - failed - TOTAL
    );
    assert!(failed > 0, "the receiver failed some requests");
    // Every event delivered at least once, none unknown, every request signed.
    let by_id: HashMap<&str, (i64, &str)> = events
        .iter()
        .map(|e| (e.1.as_str(), (e.0, e.3.as_str())))
        .collect();
    let accepted: BTreeSet<&str> = log
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.event_id.as_str())
        .collect();
    assert_eq!(
        accepted.len(),
        TOTAL,
        "every event acknowledged at least once"
    );
    for r in &log {
        assert!(
            by_id.contains_key(r.event_id.as_str()),
            "unknown event {r:?}"
        );
        assert!(hmac_ok(r), "bad signature on {r:?}");
    }
    // Per refund: no request for an event before every earlier event of its refund was
    // acknowledged.
    let mut per_refund: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (id, _, _, no, _) in &events {
        per_refund.entry(no.as_str()).or_default().push(*id);
    }
    let mut acked: BTreeSet<i64> = BTreeSet::new();
    for r in &log {
        let (id, no) = by_id[r.event_id.as_str()];
        for earlier in per_refund[no].iter().filter(|e| **e < id) {
            assert!(
                acked.contains(earlier),
                "event {id} of {no} sent before event {earlier} was acknowledged (seed {seed})"
            );
        }
        if r.status == 200 {
            acked.insert(id);
        }
    }
    assert!(per_refund.values().any(|ids| ids.len() >= 2));
}

/// `webhooks redeliver IDS --reason WHY --by ops` on the ledger of `cfg`.
fn redeliver(d: &Path, cfg: &str, ids: &[&str], why: &str) -> std::process::Output {
    let mut args = vec!["webhooks", "redeliver", "--config", cfg];
    args.extend_from_slice(ids);
    args.extend_from_slice(&["--reason", why, "--by", "ops"]);
    run(d, &args)
}

#[test]
fn an_event_retried_past_its_window_is_dead_until_an_audited_redeliver() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let receiver = Receiver::start(Answer::Fail, 2);
    let sandbox = LiveSandbox::start(Vec::new());
    let extra = schedule()
        + &webhook_section(d, &receiver.url(), "give_up_after = \"300ms\"\n")
        + &crate::observe::http_section("127.0.0.1:0");
    let config = write_config(d, &sandbox.base_url(), &extra);
    let ledger = d.join("ledger.sqlite");
    let (mut daemon, addr) = crate::observe::start(d, &config);
    contract_refund(&sql(&ledger), "S-DEAD-1");
    wait_until(Duration::from_secs(30), "the first event dead", || {
        ledger_events(&ledger)
            .first()
            .is_some_and(|e| e.4 == "dead")
    });
    // /metrics counts the dead event from the ledger (alerts: CheckusWebhooksDead).
    crate::observe::metric_becomes(addr, "checus_reconciler_webhooks_dead", 1.0);
    let events = ledger_events(&ledger);
    let (dead, held) = (&events[0], &events[1]);
    // The refund's second event waits behind the dead one: never sent.
    assert_eq!(held.4, "pending");
    assert!(receiver.log().iter().all(|r| r.event_id == dead.1));
    assert!(receiver.requests() >= 2, "retried before giving up");
    let cfg = config.to_str().unwrap();
    let o = run(d, &["status", "--config", cfg, "--json"]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    let status: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        status.to_string().contains("\"dead_webhooks\""),
        "{status:#}"
    );
    let o = run(d, &["webhooks", "--config", cfg, "--state", "dead"]);
    assert!(stdout(&o).contains(&dead.1), "{}", stdout(&o));
    // A pending or unknown event cannot be redelivered; nothing is changed then.
    for (ids, want, says) in [
        (vec![dead.1.as_str(), held.1.as_str()], 5, "still pending"),
        (vec!["evt_nosuchevent"], 6, "not in the ledger"),
        (vec!["not-an-id"], 5, "not a webhook event id"),
    ] {
        let o = redeliver(d, cfg, &ids, "x");
        assert_eq!(code(&o), want, "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
    assert_eq!(ledger_events(&ledger)[0].4, "dead");
    // The receiver is fixed; the operator redelivers; both events arrive, in order.
    receiver.set(Answer::Ok);
    let o = redeliver(d, cfg, &[&dead.1], "receiver fixed");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_until(Duration::from_secs(30), "both delivered", || {
        ledger_events(&ledger).iter().all(|e| e.4 == "delivered")
    });
    crate::observe::metric_becomes(addr, "checus_reconciler_webhooks_dead", 0.0);
    let ok: Vec<String> = receiver
        .log()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.event_id)
        .collect();
    assert_eq!(ok, [dead.1.clone(), held.1.clone()]);
    let o = run(d, &["audit", "--config", cfg, "--json"]);
    let audit: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let row = &audit["rows"][0];
    assert_eq!(row["action"], "redeliver_webhook");
    assert_eq!(row["actor"], "ops");
    assert_eq!(row["out_refund_no"], "S-DEAD-1");
    assert_eq!(row["detail"]["state"], "dead");
    let o = run(d, &["status", "--config", cfg, "--json"]);
    assert!(!stdout(&o).contains("dead_webhooks"), "{}", stdout(&o));
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
}

#[test]
fn without_a_webhook_events_wait_and_a_sighup_that_adds_one_delivers_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let receiver = Receiver::start(Answer::Ok, 3);
    let sandbox = LiveSandbox::start(Vec::new());
    let config = write_config(d, &sandbox.base_url(), &schedule());
    let ledger = d.join("ledger.sqlite");
    let mut daemon = spawn_daemon(d, &config);
    contract_refund(&sql(&ledger), "S-HUP-1");
    // The daemon keeps sweeping (two more sweeps finish); nothing is sent anywhere.
    let swept = |n: i64| {
        let c = sql(&ledger);
        c.query_row(
            "SELECT count(*) FROM sweeps WHERE finished_at IS NOT NULL",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            >= n
    };
    let before = (1..).find(|n| !swept(*n)).unwrap();
    wait_until(Duration::from_secs(30), "two more sweeps", || {
        swept(before + 1)
    });
    assert_eq!(receiver.requests(), 0);
    assert!(ledger_events(&ledger).iter().all(|e| e.4 == "pending"));
    let with: PathBuf = write_config(
        d,
        &sandbox.base_url(),
        &(schedule() + &webhook_section(d, &receiver.url(), "")),
    );
    assert_eq!(with, config);
    daemon.signal("-HUP");
    daemon.wait_for("webhooks enabled");
    wait_until(Duration::from_secs(30), "the backlog delivered", || {
        ledger_events(&ledger).iter().all(|e| e.4 == "delivered")
    });
    assert_eq!(receiver.requests(), 2);
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
}
