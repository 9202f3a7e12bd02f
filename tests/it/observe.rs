//! The daemon's HTTP listener (issue 12): `/metrics`, `/healthz` and `/readyz` through a real
//! HTTP client against the real binary and the sandbox; the listener's lifecycle (bound before
//! READY, moved by SIGHUP, closed as the drain begins, a bind failure exits 3) and its limits
//! (connection cap, header timeout, body cap). Every wait polls a condition with a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use checus_reconciler::metrics::NAMES;
use checus_reconciler::sandbox::{RefundScript, Step};
use serde_json::Value;

use crate::common::proc::{
    Answer, LiveSandbox, Proc, cmd, code, fast_schedule, http, import_scripts, recv_notify_until,
    run, sql, stderr, stdout, write_config,
};

/// An answer: status, content type, body (the common request helper's).
pub(crate) type Got = Answer;

/// One request with no headers of its own, within 10 s.
fn request(method: &str, url: &str, body: Option<Vec<u8>>) -> Result<Got, reqwest::Error> {
    http(method, url, &[], body, Duration::from_secs(10))
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> Got {
    request("GET", &format!("http://{addr}{path}"), None)
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// Polls `f` until it returns `Some`, for at most 60 s.
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        // Polling a condition with a deadline: the daemon has no signal for these.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Waits until `/metrics` has `series` at `want`.
pub(crate) fn metric_becomes(addr: SocketAddr, series: &str, want: f64) -> String {
    until(&format!("{series} = {want}"), || {
        let page = get(addr, "/metrics").body;
        (sample(&page, series) == Some(want)).then_some(page)
    })
}

/// The address in the daemon's latest "http listening" line.
fn listening(daemon: &mut Proc) -> SocketAddr {
    let line = daemon.wait_for("http listening");
    let v: Value = serde_json::from_str(&line).unwrap();
    v["address"].as_str().unwrap().parse().unwrap()
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn http_section(listen: &str) -> String {
    format!("\n[http]\nlisten = \"{listen}\"\n")
}

/// Starts the daemon on `config` and returns it with its listener's address, once ready.
pub(crate) fn start(dir: &Path, config: &Path) -> (Proc, SocketAddr) {
    let mut c = cmd(dir);
    c.args(["run", "--config", config.to_str().unwrap()]);
    let mut daemon = Proc::spawn(c);
    let addr = listening(&mut daemon);
    daemon.wait_for("daemon ready");
    (daemon, addr)
}

fn script(no: &str, steps: Vec<Step>) -> (String, RefundScript) {
    (no.to_owned(), RefundScript::usd(no, steps))
}

fn is_refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
             Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn metrics_move_with_the_daemon_and_the_ledger_and_health_is_green() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = vec![script("R-OBS-1", vec![Step::Pending, Step::Success])];
    let sandbox = LiveSandbox::start(scripts.clone());
    let extra = format!("{}{}", fast_schedule(""), http_section("127.0.0.1:0"));
    let config = write_config(dir.path(), &sandbox.base_url(), &extra);
    import_scripts(dir.path(), &config, &scripts);
    let (mut daemon, addr) = start(dir.path(), &config);

    // Every family is there from the first scrape, in the OpenMetrics format.
    let first = get(addr, "/metrics");
    assert_eq!(first.status, 200);
    assert!(
        first
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        first.content_type
    );
    for name in NAMES {
        assert!(first.body.contains(name), "{name} missing:\n{}", first.body);
    }
    // The daemon's own query finalizes the refund: its counters move.
    let page = metric_becomes(
        addr,
        "checus_reconciler_refunds_finalized_total{status=\"REFUND_SUCCESS\",source=\"query\"}",
        1.0,
    );
    assert_eq!(
        sample(&page, "checus_reconciler_queries_total{outcome=\"final\"}"),
        Some(1.0)
    );
    assert!(
        sample(
            &page,
            "checus_reconciler_queries_total{outcome=\"pending\"}"
        ) >= Some(1.0)
    );
    assert!(sample(&page, "checus_reconciler_sweeps_total") >= Some(1.0));
    assert!(sample(&page, "checus_reconciler_last_sweep_end_timestamp_seconds") > Some(0.0));
    // The ledger gauges are read from the file, so the merchant app's own insert shows up
    // within the cache time.
    metric_becomes(
        addr,
        "checus_reconciler_refunds{status=\"REFUND_SUCCESS\"}",
        1.0,
    );
    sql(&dir.path().join("ledger.sqlite"))
        .execute(
            "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('R-APP-1', '3.00', 'USD')",
            [],
        )
        .unwrap();
    let page = metric_becomes(
        addr,
        "checus_reconciler_refunds{status=\"REFUND_PENDING\"}",
        1.0,
    );
    assert!(sample(&page, "checus_reconciler_oldest_pending_age_seconds") >= Some(0.0));
    assert_eq!(sample(&page, "checus_reconciler_breaker_open"), Some(0.0));

    let health = get(addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["limit_s"], 2.0, "twice the 1 s cron");
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        ready.json(),
        serde_json::json!({"ready": true, "reasons": []})
    );
    assert_eq!(get(addr, "/nope").status, 404);

    // A body over the cap is refused before any handler reads it.
    let big = request(
        "GET",
        &format!("http://{addr}/metrics"),
        Some(vec![b'x'; checus_reconciler::http::BODY_LIMIT + 1]),
    )
    .unwrap();
    assert_eq!(big.status, 413);

    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    assert!(is_refused(addr));
}

#[test]
fn the_listener_closes_as_the_drain_begins() {
    let dir = tempfile::tempdir().unwrap();
    // Slow answers, so the drain waits for an in-flight query.
    let scripts = vec![script("R-DRAIN-1", vec![Step::Success])];
    let sandbox = LiveSandbox::start_with(scripts.clone(), |o| o.latency = Duration::from_secs(3));
    let extra = format!("{}{}", fast_schedule(""), http_section("127.0.0.1:0"));
    let config = write_config(dir.path(), &sandbox.base_url(), &extra);
    import_scripts(dir.path(), &config, &scripts);
    let (mut daemon, addr) = start(dir.path(), &config);
    assert_eq!(get(addr, "/healthz").status, 200);
    until("the query in flight", || {
        (sandbox.stats().queries > 0).then_some(())
    });
    daemon.signal("-TERM");
    daemon.wait_for("shutdown requested; draining in-flight queries");
    until("the listener closed", || is_refused(addr).then_some(()));
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "closed while the daemon still drains:\n{}",
        daemon.tail(20)
    );
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    assert!(daemon.seen.iter().any(|l| l.contains("http stopped")));
}

#[test]
fn readyz_and_the_halted_gauge_name_a_halt_with_the_status_code() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = vec![script(
        "R-HALT-1",
        vec![Step::Code("SIGN_VERIFY_FAILED".into()), Step::Success],
    )];
    let sandbox = LiveSandbox::start(scripts.clone());
    let extra = format!("{}{}", fast_schedule(""), http_section("127.0.0.1:0"));
    let config = write_config(dir.path(), &sandbox.base_url(), &extra);
    import_scripts(dir.path(), &config, &scripts);
    let (mut daemon, addr) = start(dir.path(), &config);
    let ready = until("readyz 503", || {
        let r = get(addr, "/readyz");
        (r.status == 503).then_some(r)
    });
    let v = ready.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["reasons"][0]["code"], "config_error", "{v}");
    assert!(
        v["reasons"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("SIGN_VERIFY_FAILED"),
        "{v}"
    );
    let page = get(addr, "/metrics").body;
    assert_eq!(
        sample(&page, "checus_reconciler_halted{reason=\"config_error\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            "checus_reconciler_queries_total{outcome=\"config_error\"}"
        ),
        Some(1.0)
    );
    // Halted is not dead: the loop still ticks.
    assert_eq!(get(addr, "/healthz").status, 200);
    // `status` reports the same code from the ledger, once the halted sweep's row is
    // written (`/readyz` reads the worker, which knows at the answer).
    let o = until("status exits 8", || {
        let o = run(
            dir.path(),
            &["status", "--config", config.to_str().unwrap(), "--json"],
        );
        (code(&o) == 8).then_some(o)
    });
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let codes: Vec<&str> = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"config_error"), "{codes:?}");
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}

#[test]
fn a_gateway_outage_shows_in_readyz_metrics_status_and_the_status_line() {
    let dir = tempfile::tempdir().unwrap();
    // The gateway is down: nothing listens where the config points.
    let down = format!("http://127.0.0.1:{}/gateway", free_port());
    let extra = format!("{}{}", fast_schedule(""), http_section("127.0.0.1:0"));
    let config = write_config(dir.path(), &down, &extra);
    let scripts: Vec<_> = (0..8)
        .map(|i| script(&format!("R-DOWN-{i}"), vec![Step::Success]))
        .collect();
    import_scripts(dir.path(), &config, &scripts);
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let mut c = cmd(dir.path());
    c.args(["run", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify);
    let mut daemon = Proc::spawn(c);
    let addr = listening(&mut daemon);
    let mut seen = Vec::new();
    recv_notify_until(&sock, "READY=1", &mut seen);
    let line = recv_notify_until(&sock, "GATEWAY UNAVAILABLE", &mut seen);
    assert!(line.starts_with("STATUS=last sweep "), "{line}");

    let ready = until("readyz 503", || {
        let r = get(addr, "/readyz");
        (r.status == 503).then_some(r)
    });
    let v = ready.json();
    assert_eq!(v["reasons"][0]["code"], "gateway_unavailable", "{v}");
    let page = metric_becomes(addr, "checus_reconciler_breaker_open", 1.0);
    assert!(
        sample(
            &page,
            "checus_reconciler_queries_total{outcome=\"retryable\"}"
        ) >= Some(5.0)
    );
    assert_eq!(get(addr, "/healthz").status, 200);
    // The STATUS= line above came after the sweep row was written: `status` sees it.
    let o = run(
        dir.path(),
        &["status", "--config", config.to_str().unwrap(), "--json"],
    );
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "gateway_unavailable"),
        "{s}"
    );
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}

#[test]
fn sighup_moves_the_listener_and_a_failed_bind_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = LiveSandbox::start(Vec::new());
    let base = fast_schedule("");
    let config = write_config(
        dir.path(),
        &sandbox.base_url(),
        &format!("{base}{}", http_section("127.0.0.1:0")),
    );
    let (mut daemon, first) = start(dir.path(), &config);
    assert_eq!(get(first, "/healthz").status, 200);

    // Moved: the new address serves, then the old one closes.
    let second: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_config(
        dir.path(),
        &sandbox.base_url(),
        &format!("{base}{}", http_section(&second.to_string())),
    );
    daemon.signal("-HUP");
    assert_eq!(listening(&mut daemon), second);
    daemon.wait_for("configuration reloaded");
    assert_eq!(get(second, "/metrics").status, 200);
    until("the old listener closed", || {
        is_refused(first).then_some(())
    });

    // An address in use: the reload is rejected, naming the key, and the listener stays.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    write_config(
        dir.path(),
        &sandbox.base_url(),
        &format!("{base}{}", http_section(&taken_addr.to_string())),
    );
    daemon.signal("-HUP");
    let rejected = daemon.wait_for("configuration reload rejected");
    assert!(rejected.contains("http.listen"), "{rejected}");
    assert_eq!(get(second, "/readyz").status, 200);

    // Removed: no listener at all.
    write_config(dir.path(), &sandbox.base_url(), &base);
    daemon.signal("-HUP");
    daemon.wait_for("http stopped");
    assert!(is_refused(second));
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}

#[test]
fn an_address_in_use_fails_start_up_with_exit_3_naming_http_listen() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = LiveSandbox::start(Vec::new());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!(
        "{}{}",
        fast_schedule(""),
        http_section(&taken.local_addr().unwrap().to_string())
    );
    let config = write_config(dir.path(), &sandbox.base_url(), &extra);
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let o = cmd(dir.path())
        .args(["run", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("http.listen: cannot listen on"),
        "{}",
        stderr(&o)
    );
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while let Ok(n) = sock.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !msg.contains("READY=1"),
            "READY=1 sent before the listener was bound"
        );
    }
    // And a value that is not an address is a config error naming the key.
    let config = write_config(
        dir.path(),
        &sandbox.base_url(),
        &format!("{}{}", fast_schedule(""), http_section("localhost:9464")),
    );
    let o = run(
        dir.path(),
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("http.listen"), "{}", stderr(&o));
}

#[test]
fn connections_past_the_cap_are_closed_and_idle_ones_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = LiveSandbox::start(Vec::new());
    let extra = format!("{}{}", fast_schedule(""), http_section("127.0.0.1:0"));
    let config = write_config(dir.path(), &sandbox.base_url(), &extra);
    let (mut daemon, addr) = start(dir.path(), &config);
    let cap = checus_reconciler::http::MAX_CONNECTIONS;
    // `cap` connections that send nothing hold every slot...
    let mut idle: Vec<TcpStream> = (0..cap)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // ...once the daemon has accepted them all (it says so for the one past the cap).
    let mut extra_conn = TcpStream::connect(addr).unwrap();
    daemon.wait_for("http connection refused: too many connections");
    extra_conn
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra_conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    match extra_conn.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection past the cap was served: {other:?}"),
    }
    // An idle connection is closed after the header read timeout.
    let started = Instant::now();
    idle[0]
        .set_read_timeout(Some(
            checus_reconciler::http::HEADER_READ_TIMEOUT + Duration::from_secs(5),
        ))
        .unwrap();
    let n = idle[0].read(&mut buf);
    assert!(
        matches!(n, Ok(0))
            || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{n:?} after {:?}",
        started.elapsed()
    );
    // Freed slots serve again.
    idle.clear();
    until("a slot", || {
        request("GET", &format!("http://{addr}/healthz"), None)
            .ok()
            .filter(|g| g.status == 200)
    });
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}
