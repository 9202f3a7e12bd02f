//! The shipped monitoring files against the real daemon (issue 12): every metric that
//! `packaging/prometheus/alerts.yml` or the Grafana dashboard names is on a running daemon's
//! `/metrics`; promtool accepts the rules, and their unit tests (`alerts_test.yml`: each alert
//! fires on the series that should raise it, and not before its `for`) pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::proc::{LiveSandbox, Proc, fast_schedule, write_config};
use crate::common::tools::require_tool;
use crate::observe::{get, http_section, start};

/// Our metric names a text mentions: every token that starts with the prefix.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("checus_reconciler_") {
        let token: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + token.len()..];
        names.insert(token);
    }
    names
}

/// The sample names a `/metrics` page serves (what PromQL can select), comments skipped.
fn served(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `expr` of the dashboard's panels' targets, however deep.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn packaging(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(rel)
}

/// A daemon on an empty ledger with its listener on, and its first `/metrics` page.
fn scrape_a_running_daemon(dir: &Path) -> (Proc, BTreeSet<String>) {
    let sandbox = LiveSandbox::start(Vec::new());
    let extra = format!("{}{}", fast_schedule(""), http_section("127.0.0.1:0"));
    let config = write_config(dir, &sandbox.base_url(), &extra);
    let (daemon, addr) = start(dir, &config);
    let page = get(addr, "/metrics");
    assert_eq!(page.status, 200, "{}", page.body);
    (daemon, served(&page.body))
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_served_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    // The daemon stays up until the end of the test (dropping it kills it).
    let (_daemon, served) = scrape_a_running_daemon(dir.path());

    let rules = std::fs::read_to_string(packaging("prometheus/alerts.yml")).unwrap();
    let in_rules = metric_names(&rules);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(packaging("grafana/checus-reconciler.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    assert_eq!(dashboard["uid"], "checus-reconciler");
    let mut queries = Vec::new();
    exprs(&dashboard["panels"], &mut queries);
    let in_dashboard = metric_names(&queries.join("\n"));

    // Neither file can pass by naming nothing: the rules page on at least the six
    // conditions of the issue, and the dashboard draws most of the interface.
    assert!(in_rules.len() >= 7, "{in_rules:?}");
    assert!(in_dashboard.len() >= 15, "{in_dashboard:?}");
    for (file, names) in [
        ("alerts.yml", &in_rules),
        ("checus-reconciler.json", &in_dashboard),
    ] {
        let missing: Vec<_> = names.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics the daemon does not serve: {missing:?}\nserved: {served:?}"
        );
    }
}

#[test]
fn promtool_accepts_the_alert_rules_and_each_alert_fires_when_it_should() {
    if !require_tool("promtool") {
        return;
    }
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let o = Command::new("promtool")
            .args(args)
            .current_dir(packaging("prometheus"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn metric_names_are_found_wherever_a_text_mentions_them() {
    let expr = "time() - checus_reconciler_last_sweep_end_timestamp_seconds > 3 * \
                checus_reconciler_sweep_interval_seconds{instance=~\"a\"}";
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        [
            "checus_reconciler_last_sweep_end_timestamp_seconds",
            "checus_reconciler_sweep_interval_seconds"
        ]
    );
    let page = "# TYPE checus_reconciler_sweeps counter\nchecus_reconciler_sweeps_total 3\n\
                checus_reconciler_refunds{status=\"REFUND_PENDING\"} 1\n# EOF\n";
    assert_eq!(
        served(page).into_iter().collect::<Vec<_>>(),
        [
            "checus_reconciler_refunds",
            "checus_reconciler_sweeps_total"
        ]
    );
}

/// `GET path` with a bare HTTP/1.0 request; `None` while nothing listens.
fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn the_demo_serves_its_metrics_while_it_runs_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = crate::common::proc::cmd(dir.path());
    c.args(["demo", "--refunds", "40", "--listen", &port.to_string()]);
    c.args(["--dir", dir.path().to_str().unwrap()]);
    let mut demo = Proc::spawn(c);
    // Scrape until the demo's daemon has counted a query of its own, or the demo ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let page = loop {
        let page = try_get(port, "/metrics").unwrap_or_default();
        if page.contains("checus_reconciler_queries_total{outcome=\"final\"} ")
            && !page.contains("checus_reconciler_queries_total{outcome=\"final\"} 0\n")
        {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics from the demo: {}",
            demo.tail(20)
        );
        // Polling the demo's listener: it has no readiness signal of its own.
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    assert_eq!(
        demo.wait_exit(std::time::Duration::from_secs(120)),
        0,
        "{}",
        demo.tail(20)
    );
}
