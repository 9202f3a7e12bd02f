//! The operator's side of the command line (issue 12, part 6): README's "Run your own daemon
//! against the sandbox" walk-through run as written, `retry-now` telling whether a daemon will
//! query, `resume` ending a halt of a real daemon at once, `query` reading `credential:` keys
//! the way the service gets them, the root-on-a-service-ledger warning, and the man pages.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use checus_reconciler::sandbox::RefundScript;

use crate::common::proc::{
    KEYS, LiveSandbox, Proc, cmd, code, count, sandbox_command, sql, stderr, stdout, write_config,
};

/// A 12.50 USD refund whose gateway answers `steps` (spellings as in a script file).
fn script(no: &str, steps: &[&str]) -> (String, RefundScript) {
    let steps = steps.iter().map(|s| s.parse().unwrap()).collect();
    (no.to_owned(), RefundScript::usd(no, steps))
}

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

/// A daemon's config against `url` with a fast schedule but a halt re-checked only hourly:
/// without `resume`, a halt lasts an hour.
fn halting_config(dir: &Path, url: &str) -> PathBuf {
    write_config(
        dir,
        url,
        "[schedule]\ngrace = \"0s\"\nbackoff = [\"50ms\"]\nretry = \"100ms\"\nsteady = \"1s\"\n\
         halt_recheck = \"1h\"\n\n[worker]\nsweep_cron = \"* * * * * *\"\n\n[log]\nformat = \"json\"\n",
    )
}

/// The halt code of the newest finished sweep (`None`: not halted, or no sweep yet).
fn latest_halt(ledger: &Path) -> Option<String> {
    sql(ledger)
        .query_row(
            "SELECT halt_code FROM sweeps WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok()
        .flatten()
}

/// A ledger and a config for the halt tests: the gateway refuses our key twice, then
/// answers (a halt, a probe refused again, and one that gets through); halt_recheck is an
/// hour, so only `resume` can end the halt quickly.
struct HaltFixture {
    dir: tempfile::TempDir,
    _sandbox: LiveSandbox,
    config: PathBuf,
    ledger: PathBuf,
}

impl HaltFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = LiveSandbox::start(vec![
            script(
                "R-HALT",
                &[
                    "code:SIGN_VERIFY_FAILED",
                    "code:SIGN_VERIFY_FAILED",
                    "success",
                ],
            ),
            script("R-LATER", &["success"]),
        ]);
        let config = halting_config(dir.path(), &sandbox.base_url());
        let ledger = dir.path().join("ledger.sqlite");
        let f = Self {
            dir,
            _sandbox: sandbox,
            config,
            ledger,
        };
        assert_eq!(code(&f.cr(&["init"])), 0);
        f.add("R-HALT");
        f
    }

    /// The binary with `args` and this fixture's `--config`.
    fn cr(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        cr(self.dir.path(), &all)
    }

    fn add(&self, no: &str) {
        let o = self.cr(&[
            "add",
            "--out-refund-no",
            no,
            "--amount",
            "12.50",
            "--currency",
            "USD",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }

    /// `retry-now R-HALT`, which also makes it due now, so a probe is R-HALT's.
    fn retry(&self, json: bool) -> Output {
        let mut args = vec!["retry-now", "R-HALT", "--by", "ops"];
        if json {
            args.push("--json");
        }
        let o = self.cr(&args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        o
    }

    fn resume(&self, by: &str, reason: &str) -> Output {
        self.cr(&["resume", "--by", by, "--reason", reason])
    }

    fn resumes(&self) -> i64 {
        count(&self.ledger, "operator_actions WHERE action = 'resume'")
    }

    fn start_daemon(&self) -> Proc {
        let mut c = cmd(self.dir.path());
        c.args(["run", "--config", self.config.to_str().unwrap()]);
        let mut daemon = Proc::spawn(c);
        daemon.wait_for("daemon ready");
        daemon
    }
}

#[test]
fn with_no_daemon_retry_now_says_so_and_resume_has_nothing_to_resume() {
    let f = HaltFixture::new();
    let o = f.retry(false);
    assert!(
        stdout(&o).contains("no daemon is running on this ledger"),
        "{}",
        stdout(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&f.retry(true).stdout).unwrap();
    assert_eq!(v["daemon"], "not_running");
    let o = f.resume("ops", "key fixed");
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no daemon is running"),
        "{}",
        stderr(&o)
    );
    assert_eq!(f.resumes(), 0, "nothing written");
    // A daemon that ran and stopped leaves its lock file unlocked: still no daemon.
    let mut daemon = f.start_daemon();
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
    assert!(f.ledger.with_extension("sqlite.lock").exists());
    let o = f.resume("ops", "key fixed");
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stdout(&f.retry(false)).contains("no daemon is running"));
}

#[test]
fn resume_ends_a_real_daemons_halt_at_once_and_retry_now_says_who_will_query() {
    let f = HaltFixture::new();
    let mut daemon = f.start_daemon();
    wait_until("the daemon halted", || {
        latest_halt(&f.ledger).as_deref() == Some("config_error")
    });
    // Halted: retry-now says the refund waits for the halt, and names resume.
    let o = f.retry(false);
    assert!(
        stdout(&o).contains("the running daemon is halted"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("checus-reconciler resume"),
        "{}",
        stdout(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&f.retry(true).stdout).unwrap();
    assert_eq!(v["daemon"], "running");
    assert!(
        v["halted"].as_str().unwrap().contains("SIGN_VERIFY_FAILED"),
        "{v}"
    );

    // The first resume probes at once; Checus refuses the key again: still halted, exit 8.
    let started = Instant::now();
    let o = f.resume("alice", "rotated the key");
    assert_eq!(code(&o), 8, "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("still halted"), "{}", stdout(&o));
    f.retry(false);
    // The second gets through: querying resumes, and the same sweep catches up.
    let o = f.cr(&[
        "resume",
        "--by",
        "alice",
        "--reason",
        "fixed the key",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let took = started.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["resumed"], true, "{v}");
    eprintln!("two resumes of a daemon halted with halt_recheck = 1h took {took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    f.add("R-LATER");
    wait_until("both refunds are final", || {
        status_of(&f.ledger, "R-HALT") == "REFUND_SUCCESS"
            && status_of(&f.ledger, "R-LATER") == "REFUND_SUCCESS"
    });
    daemon.saw_or_wait("resume requested by an operator; probing now");
    daemon.saw_or_wait("querying resumed");
    assert_eq!(
        resume_audit(&f.ledger),
        [
            ("alice".into(), "rotated the key".into(), None),
            ("alice".into(), "fixed the key".into(), None)
        ]
    );
    // Not halted now: nothing to resume (exit 5, nothing written); retry-now says it queries.
    let o = f.resume("alice", "again");
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("not halted"), "{}", stderr(&o));
    assert_eq!(f.resumes(), 2);
    let o = f.cr(&["retry-now", "R-LATER", "--by", "ops"]);
    assert_eq!(code(&o), 5, "R-LATER is final: {}", stderr(&o));
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
}

/// The `resume` rows of the audit log: who, why, and the refund (always none).
fn resume_audit(ledger: &Path) -> Vec<(String, String, Option<String>)> {
    sql(ledger)
        .prepare(
            "SELECT actor, reason, out_refund_no FROM operator_actions
              WHERE action = 'resume' ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn every_man_page_has_exit_status_environment_files_and_examples_and_the_config_has_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let o = cr(dir.path(), &["manpage", "--out-dir", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut pages: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    // One page per visible command (resume among them), the main page, and the config's.
    for want in [
        "checus-reconciler.1",
        "checus-reconciler-resume.1",
        "checus-reconciler-status.1",
        "checus-reconciler.toml.5",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("manpage")), "{pages:?}");
    let has = |page: &str, section: &str| {
        page.contains(&format!(".SH {section}\n")) || page.contains(&format!(".SH \"{section}\"\n"))
    };
    for name in pages.iter().filter(|p| p.ends_with(".1")) {
        let page = std::fs::read_to_string(out.join(name)).unwrap();
        for section in [
            "NAME",
            "SYNOPSIS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
        ] {
            assert!(has(&page, section), "{name} lacks {section}");
        }
        assert!(page.contains("CHECUS_RECONCILER_CONFIG"), "{name}");
    }
    let resume = std::fs::read_to_string(out.join("checus-reconciler-resume.1")).unwrap();
    assert!(resume.contains("resume \\-\\-reason"), "{resume}");
    // The config's page is the example config: every key, with its default and its comment.
    let toml = std::fs::read_to_string(out.join("checus-reconciler.toml.5")).unwrap();
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
    ] {
        assert!(has(&toml, section), "toml(5) lacks {section}");
    }
    for needle in [
        "halt_recheck",
        "from 1ms to 1d",
        "credential:NAME",
        "[worker]",
    ] {
        assert!(toml.contains(needle), "toml(5) lacks {needle:?}");
    }
    // The package ships it: cargo-deb's assets and the build script that gzips it.
    let cargo = include_str!("../../Cargo.toml");
    assert!(
        cargo.contains(
            r#"["target/assets/man/checus-reconciler.toml.5.gz", "usr/share/man/man5/", "644"]"#
        ),
        "Cargo.toml's deb assets lack the man5 page"
    );
    let build = include_str!("../../packaging/build-deb");
    assert!(
        build.contains(r#""$assets"/man/*.5"#),
        "build-deb does not gzip the .5 page"
    );
    let check = include_str!("../../packaging/check-deb");
    assert!(check.contains("./usr/share/man/man5/checus-reconciler.toml.5.gz"));
}

#[test]
fn query_reads_credential_keys_like_the_service_or_says_exactly_how() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sandbox = LiveSandbox::start(vec![script("R-Q", &["success"])]);
    let config = write_config(d, &sandbox.base_url(), "");
    // The keys as systemd hands them over: files named by credential in a directory.
    let creds = d.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(
        d.join("merchant_private.b64"),
        creds.join("merchant-private-key"),
    )
    .unwrap();
    std::fs::copy(
        d.join("gateway_public.b64"),
        creds.join("gateway-public-key"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .lines()
        .map(|l| match l.split_once(" = ") {
            Some(("merchant_private_key", _)) => {
                "merchant_private_key = \"credential:merchant-private-key\"".to_owned()
            }
            Some(("gateway_public_key", _)) => {
                "gateway_public_key = \"credential:gateway-public-key\"".to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    let c = ["--config", config.to_str().unwrap()];
    assert_eq!(code(&cr(d, &["init", c[0], c[1]])), 0);
    let o = cr(
        d,
        &[
            "add",
            c[0],
            c[1],
            "--out-refund-no",
            "R-Q",
            "--amount",
            "12.50",
            "--currency",
            "USD",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // Neither $CREDENTIALS_DIRECTORY nor a running service's directory: exit 3, saying how.
    if !Path::new("/run/credentials/checus-reconciler.service").exists() {
        let o = cr(d, &["query", "R-Q", c[0], c[1]]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
        let e = stderr(&o);
        for needle in [
            "credential:merchant-private-key",
            "/run/credentials/checus-reconciler.service",
            "sudo -u checus-reconciler checus-reconciler query",
            "CREDENTIALS_DIRECTORY=/etc/checus-reconciler/keys",
        ] {
            assert!(e.contains(needle), "{needle:?} in:\n{e}");
        }
    }
    // With the directory systemd would give: the query goes out and is recorded.
    let o = cmd(d)
        .args(["query", "R-Q", c[0], c[1]])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(status_of(&d.join("ledger.sqlite"), "R-Q"), "REFUND_SUCCESS");
}

#[test]
fn root_writing_a_ledger_the_service_user_owns_is_warned_about_the_wal() {
    use crate::common::tools::{is_root, require_root, require_tool};
    use std::os::unix::fs::chown;
    if !require_root("to own a ledger by another user") || !require_tool("setpriv") {
        return;
    }
    assert!(is_root());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ledger = d.join("ledger.sqlite");
    let l = ["--ledger", ledger.to_str().unwrap()];
    let add = |no: &str| -> Vec<&str> {
        let mut args = vec!["add", l[0], l[1], "--amount", "1.00", "--currency", "USD"];
        args.extend(["--out-refund-no", Box::leak(no.to_owned().into_boxed_str())]);
        args
    };
    const WARNING: &str = "writing as root to a ledger owned by another user";
    // Root on its own ledger: no warning.
    assert_eq!(code(&cr(d, &["init", l[0], l[1]])), 0);
    let o = cr(d, &add("R-ROOT"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains(WARNING), "{}", stderr(&o));
    // The ledger and its directory handed to the service user (here: nobody, 65534).
    for p in [d, ledger.as_path()] {
        chown(p, Some(65534), Some(65534)).unwrap();
    }
    // Root writing it: warned, naming the ledger and what to do.
    let o = cr(d, &add("R-AS-ROOT"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(WARNING) && e.contains("sudo -u checus-reconciler"),
        "{e}"
    );
    assert!(e.contains(ledger.to_str().unwrap()), "{e}");
    for reader in [&["status", l[0], l[1]][..], &["list", l[0], l[1]][..]] {
        assert!(
            !stderr(&cr(d, reader)).contains(WARNING),
            "{reader:?} only reads"
        );
    }
    // The owner writing it: no warning.
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::common::proc::BIN,
        ])
        .args(add("R-AS-OWNER"))
        .current_dir(d)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains(WARNING), "{}", stderr(&o));
}
