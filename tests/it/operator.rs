//! The operator's side of the command line (issue 12, part 6): README's "Run your own daemon
//! against the sandbox" walk-through run as written, `retry-now` telling whether a daemon will
//! query, `resume` ending a halt of a real daemon at once, `query` reading `credential:` keys
//! the way the service gets them, the root-on-a-service-ledger warning, and the man pages.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::proc::{KEYS, Proc, cmd, code, count, sandbox_command, sql, stderr, stdout};

/// The README, whose walk-through this suite runs.
const README: &str = include_str!("../../README.md");

/// Polls `done` (reading the ledger) until it holds; fails after a minute.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The text of README's section `title`, up to the next heading (`#` lines inside code
/// blocks are comments, not headings).
fn readme_section(title: &str) -> &'static str {
    let start = README
        .find(&format!("### {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title:?}"));
    let body = &README[start + 4..];
    let end = ["\n## ", "\n### ", "\n#### "]
        .iter()
        .filter_map(|h| body.find(h))
        .min()
        .map_or(body.len(), |i| i + 1);
    &body[..end]
}

/// The body of the first fenced block in `section` that starts with "```{lang}".
fn fenced(section: &str, lang: &str) -> &'static str {
    let section: &'static str = Box::leak(section.to_owned().into_boxed_str());
    let open = format!("```{lang}\n");
    let start = section.find(&open).expect("fenced block") + open.len();
    let len = section[start..].find("```").expect("closed block");
    &section[start..start + len]
}

/// Runs the binary in `dir` with `args`.
fn cr(dir: &Path, args: &[&str]) -> Output {
    cmd(dir).args(args).output().expect("binary runs")
}

/// A refund's status, read with plain SQL.
fn status_of(ledger: &Path, no: &str) -> String {
    sql(ledger)
        .query_row(
            "SELECT status FROM refunds WHERE out_refund_no = ?1",
            [no],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn the_readme_walk_through_runs_a_daemon_against_the_sandbox_as_written() {
    use std::os::unix::fs::PermissionsExt;
    let section = readme_section("Run your own daemon against the sandbox");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The keys, as the walk-through copies them (the private one 0600).
    let private = d.join("merchant_private.pem");
    std::fs::copy(format!("{KEYS}/merchant_private.pem"), &private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::copy(
        format!("{KEYS}/gateway_public.pem"),
        d.join("gateway_public.pem"),
    )
    .unwrap();
    // The scripts, as README shows them, served by the real `sandbox --scripts`.
    let (_sandbox, url) = sandbox_command(d, fenced(section, "jsonl"));
    // The config, as README writes it, on the sandbox's real port.
    let sh = fenced(section, "sh");
    let config = sh
        .split_once("<<END\n")
        .and_then(|(_, rest)| rest.split_once("\nEND\n"))
        .expect("the config heredoc")
        .0
        .replace("$dir", d.to_str().unwrap())
        .replace("http://127.0.0.1:8765/aggregate-pay/api/gateway", &url);
    assert!(config.contains("app_id = \"SANDBOX-APP\""), "{config}");
    std::fs::write(d.join("config.toml"), config).unwrap();
    let c = ["--config", "config.toml"];
    // README's commands, in order.
    let mut daemon = None;
    for line in sh.lines().filter(|l| l.starts_with("checus-reconciler ")) {
        let args: Vec<&str> = line
            .split('#')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect();
        match args[0] {
            "sandbox" => {}
            "run" => {
                daemon = Some(Proc::spawn({
                    let mut c = cmd(d);
                    c.args(&args);
                    c
                }))
            }
            "explain" => {}
            _ => {
                let o = cr(d, &args);
                assert_eq!(code(&o), 0, "{line}: {}", stderr(&o));
            }
        }
    }
    let mut daemon = daemon.expect("README runs the daemon");
    daemon.wait_for("daemon ready");
    let ledger = d.join("ledger.sqlite");
    // Scripted: pending, pending, success. Not scripted: unknown at the gateway, polled on.
    wait_until("R-OWN-1 is final", || {
        status_of(&ledger, "R-OWN-1") == "REFUND_SUCCESS"
    });
    wait_until("R-OWN-9 was answered", || {
        count(
            &ledger,
            "attempts WHERE out_refund_no = 'R-OWN-9' AND outcome = 'unknown'",
        ) > 0
    });
    assert_eq!(status_of(&ledger, "R-OWN-9"), "REFUND_PENDING");
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
    let o = cr(d, &["explain", c[0], c[1], "R-OWN-1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("REFUND_SUCCESS"), "{}", stdout(&o));
    let o = cr(d, &["explain", c[0], c[1], "R-OWN-9"]);
    assert!(stdout(&o).contains("ORDER_NOT_EXIST"), "{}", stdout(&o));
}
