//! Checus refund notifications received by the daemon (issue 13 part 1), through the real
//! binary: signed by the sandbox gateway's key, POSTed to `http.notify_path`, recorded through
//! the contract SQL, acknowledged only after the commit; the case table of the issue; the
//! confirming query; a ledger busy past its busy timeout; and a SIGKILL during a storm of
//! concurrent notifications, after which every acknowledged one is in the ledger.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checus_reconciler::domain::FinalStatus;
use checus_reconciler::sandbox::{RefundScript, Step};
use rust_decimal::Decimal;

use crate::common::proc::{
    LiveSandbox, Proc, cmd, code, count, http_on_loopback, import_csv, listening_addr, post, run,
    signed_notification, sql, stderr, write_config,
};

/// The acknowledgement, byte for byte.
pub(crate) const ACK: &str = r#"{"code":"SUCCESS","msg":"Success"}"#;

/// No query before a notification can arrive (grace 1 h); the confirming query 200 ms after
/// one; JSON logs.
fn notify_schedule() -> String {
    "[schedule]\ngrace = \"1h\"\nbackoff = [\"50ms\", \"100ms\"]\nretry = \"100ms\"\nsteady = \"1s\"\n\
     confirm_after = \"200ms\"\n\n[worker]\nsweep_cron = \"* * * * * *\"\n\n[log]\nformat = \"json\"\n"
        .to_owned()
}

pub(crate) fn script(no: &str, steps: Vec<Step>) -> (String, RefundScript) {
    (no.to_owned(), RefundScript::usd(no, steps))
}

/// Imports `scripts`, starts the daemon, and returns it with the notification URL.
pub(crate) fn start(
    dir: &Path,
    sandbox: &LiveSandbox,
    scripts: &[(String, RefundScript)],
) -> (Proc, String) {
    let extra = format!("{}{}", notify_schedule(), http_on_loopback());
    let config = write_config(dir, &sandbox.base_url(), &extra);
    let csv = import_csv(dir, scripts);
    let o = run(
        dir,
        &[
            "import",
            "--config",
            config.to_str().unwrap(),
            csv.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (daemon, addr) = spawn(dir, &config);
    (daemon, notify_url(addr))
}

fn spawn(dir: &Path, config: &Path) -> (Proc, SocketAddr) {
    let mut c = cmd(dir);
    c.args(["run", "--config", config.to_str().unwrap()]);
    let mut daemon = Proc::spawn(c);
    let addr = listening_addr(&mut daemon);
    daemon.wait_for("daemon ready");
    (daemon, addr)
}

fn notify_url(addr: SocketAddr) -> String {
    format!("http://{addr}/checus/refund-notify")
}

/// POSTs a signed notification about `(no, script)`; the status and body.
fn send(
    url: &str,
    s: &(String, RefundScript),
    status: FinalStatus,
    amount: Option<Decimal>,
) -> (u16, String) {
    let n = signed_notification(&s.0, &s.1, status, amount);
    let a = post(url, n.body, Some(&n.sign), "application/json").unwrap();
    if a.status == 200 {
        assert_eq!(a.body, ACK);
        assert_eq!(a.content_type, "application/json");
    }
    (a.status, a.body)
}

/// `status, final_source` of a refund.
fn refund(ledger: &Path, no: &str) -> (String, Option<String>) {
    sql(ledger)
        .query_row(
            "SELECT status, final_source FROM refunds WHERE out_refund_no = ?1",
            [no],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

fn kinds(ledger: &Path, no: &str) -> Vec<String> {
    let c = sql(ledger);
    let mut st = c
        .prepare("SELECT kind FROM discrepancies WHERE out_refund_no = ?1 ORDER BY id")
        .unwrap();
    st.query_map([no], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Polls `f` until it is true, for at most 60 s.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        // Polling a condition with a deadline: the ledger has no signal for these.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_case_of_the_table_gets_its_answer_and_its_ledger_effect() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let ok = script("R-NT-OK", vec![Step::Success]);
    let failed = script("R-NT-FAILED", vec![Step::Failed]);
    let mismatch = script("R-NT-MISMATCH", vec![Step::Pending]);
    let scripts = vec![ok.clone(), failed.clone(), mismatch.clone()];
    let sandbox = LiveSandbox::start(scripts.clone());
    let (mut daemon, url) = start(dir.path(), &sandbox, &scripts);

    // Recorded, applied with compare-and-set, then acknowledged.
    assert_eq!(send(&url, &ok, FinalStatus::Success, None).0, 200);
    assert_eq!(
        refund(&ledger, "R-NT-OK"),
        ("REFUND_SUCCESS".into(), Some("notification".into()))
    );
    assert_eq!(send(&url, &failed, FinalStatus::Failed, None).0, 200);
    assert_eq!(refund(&ledger, "R-NT-FAILED").0, "REFUND_FAILED");

    // A duplicate delivery: acknowledged, idempotent.
    assert_eq!(send(&url, &ok, FinalStatus::Success, None).0, 200);
    let effects: Vec<String> = {
        let c = sql(&ledger);
        let mut st = c
            .prepare("SELECT effect FROM notifications WHERE out_refund_no = 'R-NT-OK' ORDER BY id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(effects, ["finalized", "already_final"]);

    // The amount disagrees: acknowledged, a discrepancy, not applied.
    let odd = Some(Decimal::new(9999, 2));
    assert_eq!(send(&url, &mismatch, FinalStatus::Success, odd).0, 200);
    assert_eq!(refund(&ledger, "R-NT-MISMATCH").0, "REFUND_PENDING");
    assert_eq!(kinds(&ledger, "R-NT-MISMATCH"), ["amount_mismatch"]);

    // An unknown refund: acknowledged, an unknown_refund discrepancy, an ERROR line.
    let unknown = script("R-NT-UNKNOWN", vec![Step::Success]);
    assert_eq!(send(&url, &unknown, FinalStatus::Success, None).0, 200);
    assert_eq!(kinds(&ledger, "R-NT-UNKNOWN"), ["unknown_refund"]);
    let line = daemon.wait_for("notification for an unknown refund");
    assert!(line.contains("\"ERROR\""), "{line}");

    // A bad signature: 401, nothing written, a WARN line.
    let rows = count(&ledger, "notifications");
    let mut n = signed_notification("R-NT-OK", &ok.1, FinalStatus::Failed, None);
    n.sign = signed_notification("R-NT-OK", &ok.1, FinalStatus::Success, None).sign;
    let a = post(&url, n.body.clone(), Some(&n.sign), "application/json").unwrap();
    assert_eq!(a.status, 401);
    assert_ne!(a.body, ACK);
    let a = post(&url, n.body, None, "application/json").unwrap();
    assert_eq!(a.status, 401);
    assert_eq!(count(&ledger, "notifications"), rows);
    let line = daemon.wait_for("notification refused; not acknowledged");
    assert!(
        line.contains("\"WARN\"") && line.contains("unverified"),
        "{line}"
    );

    // The refund finalized by notification still gets its one confirming query.
    until("the confirming query of R-NT-OK", || {
        sql(&ledger)
            .query_row(
                "SELECT confirm_at IS NULL FROM refunds WHERE out_refund_no = 'R-NT-OK'",
                [],
                |r| r.get::<_, bool>(0),
            )
            .unwrap()
    });
    assert_eq!(sandbox.get().queries_for("R-NT-OK"), 1);
    assert!(kinds(&ledger, "R-NT-OK").is_empty());

    // Every result is counted.
    let page = post_free_get(&url.replace("/checus/refund-notify", "/metrics"));
    for (result, n) in [
        ("finalized", 2),
        ("already_final", 1),
        ("mismatch", 1),
        ("unknown_refund", 1),
        ("unverified", 2),
    ] {
        let series = format!("checus_reconciler_notifications_total{{result=\"{result}\"}} {n}");
        assert!(page.contains(&series), "{series}\n{page}");
    }
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
}

/// A GET with reqwest (the metrics page).
fn post_free_get(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

#[test]
fn a_ledger_busy_past_its_busy_timeout_gets_503_and_checus_retries() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let s = script("R-NT-BUSY", vec![Step::Success]);
    let sandbox = LiveSandbox::start(vec![s.clone()]);
    let (mut daemon, url) = start(dir.path(), &sandbox, std::slice::from_ref(&s));

    // Another writer holds the write lock longer than the daemon's 5 s busy timeout.
    let holder = sql(&ledger);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let (status, body) = send(&url, &s, FinalStatus::Success, None);
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    holder.execute_batch("ROLLBACK").unwrap();
    daemon.wait_for("notification not recorded: ledger unavailable");
    assert_eq!(count(&ledger, "notifications"), 0);
    assert_eq!(refund(&ledger, "R-NT-BUSY").0, "REFUND_PENDING");

    // Checus's redelivery is then recorded and acknowledged.
    assert_eq!(send(&url, &s, FinalStatus::Success, None).0, 200);
    assert_eq!(refund(&ledger, "R-NT-BUSY").0, "REFUND_SUCCESS");
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
}

#[test]
fn every_acknowledged_notification_survives_a_sigkill_during_a_storm() {
    const REFUNDS: usize = 600;
    const SENDERS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let scripts: Vec<_> = (0..REFUNDS)
        .map(|i| script(&format!("R-STORM-{i:04}"), vec![Step::Success]))
        .collect();
    let sandbox = LiveSandbox::start(scripts.clone());
    let (mut daemon, url) = start(dir.path(), &sandbox, &scripts);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let scripts = Arc::new(scripts);
    let senders: Vec<_> = (0..SENDERS)
        .map(|k| {
            let (acked, scripts, url) = (Arc::clone(&acked), Arc::clone(&scripts), url.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .no_proxy()
                    .build()
                    .unwrap();
                for s in scripts.iter().skip(k).step_by(SENDERS) {
                    let n = signed_notification(&s.0, &s.1, FinalStatus::Success, None);
                    let sent = rt.block_on(async {
                        let r = client
                            .post(&url)
                            .header("sign", n.sign)
                            .body(n.body)
                            .send()
                            .await?;
                        let status = r.status().as_u16();
                        Ok::<_, reqwest::Error>((status, r.text().await?))
                    });
                    match sent {
                        Ok((200, body)) if body == ACK => acked.lock().unwrap().push(s.0.clone()),
                        // The daemon died mid-request: this one was never acknowledged.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    until("a third of the storm acknowledged", || {
        acked.lock().unwrap().len() >= REFUNDS / 3
    });
    daemon.kill9();
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() < REFUNDS,
        "the kill landed after the storm; nothing was tested"
    );

    // After a restart, every acknowledged notification is in the ledger and applied.
    let (mut daemon, _addr) = spawn(dir.path(), &dir.path().join("config.toml"));
    let c = sql(&ledger);
    for no in &acked {
        let (notes, status): (i64, String) = c
            .query_row(
                "SELECT (SELECT count(*) FROM notifications WHERE out_refund_no = ?1),
                        (SELECT status FROM refunds WHERE out_refund_no = ?1)",
                [no],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(
            notes >= 1 && status == "REFUND_SUCCESS",
            "{no}: {notes} {status}"
        );
    }
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
}

#[test]
fn the_sandbox_sends_like_checus_final_states_only_retried_until_acknowledged() {
    use checus_reconciler::sandbox::notify::{Delivery, NotifySender};
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let scripts = vec![
        script("R-SB-AT-ONCE", vec![Step::Pending, Step::Success]),
        script("R-SB-LOST-TWICE", vec![Step::Failed]),
        script("R-SB-NEVER", vec![Step::Success]),
        script("R-SB-PENDING", vec![Step::Pending]),
    ];
    let sandbox = LiveSandbox::start(scripts.clone());
    let (mut daemon, url) = start(dir.path(), &sandbox, &scripts);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 0.001: the 30 s retry after 30 ms, the 5 min one after 300 ms.
    let sender = Arc::new(
        NotifySender::new(
            url,
            checus_reconciler::sandbox::test_keys::insecure_gateway_private(),
            "SANDBOX-MERCHANT",
            0.001,
            Arc::new(checus_reconciler::domain::SystemClock),
        )
        .unwrap(),
    );
    let sb = sandbox.get();
    let delivered = rt.block_on(async {
        let at_once = sb
            .notify(&sender, "R-SB-AT-ONCE", Delivery::Deliver)
            .unwrap();
        let lost = sb
            .notify(&sender, "R-SB-LOST-TWICE", Delivery::LoseFirst(2))
            .unwrap();
        assert!(sb.notify(&sender, "R-SB-NEVER", Delivery::Never).is_none());
        // Final states only: a refund that never finalizes gets no notification.
        assert!(
            sb.notify(&sender, "R-SB-PENDING", Delivery::Deliver)
                .is_none()
        );
        (at_once.await.unwrap(), lost.await.unwrap())
    });
    assert_eq!((delivered.0.attempts, delivered.0.acked), (1, true));
    assert_eq!(
        (delivered.1.attempts, delivered.1.lost, delivered.1.acked),
        (3, 2, true)
    );
    assert_eq!(
        refund(&ledger, "R-SB-AT-ONCE"),
        ("REFUND_SUCCESS".into(), Some("notification".into()))
    );
    assert_eq!(refund(&ledger, "R-SB-LOST-TWICE").0, "REFUND_FAILED");
    assert_eq!(refund(&ledger, "R-SB-NEVER").0, "REFUND_PENDING");
    assert_eq!(count(&ledger, "notifications"), 2);
    // Checus finalized R-SB-AT-ONCE before notifying, so its confirming query agrees.
    until("the confirming query of R-SB-AT-ONCE", || {
        sql(&ledger)
            .query_row(
                "SELECT confirm_at IS NULL FROM refunds WHERE out_refund_no = 'R-SB-AT-ONCE'",
                [],
                |r| r.get::<_, bool>(0),
            )
            .unwrap()
    });
    assert!(kinds(&ledger, "R-SB-AT-ONCE").is_empty());
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
}
