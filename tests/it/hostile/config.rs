//! Hostile config (issue 10, parts 5, 6 and 8's key files): settings that passed validation
//! and then panicked or wrapped, command-line durations that panicked the parser, a key
//! pasted where a key source belongs, and key files that are not small regular files. Each
//! goes to the real binary: `check-config` and `run` exit 3 naming the key (or 2 for a
//! command-line value), never echoing key material, and a SIGHUP with such a file leaves the
//! running daemon running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::proc::{
    KEYS, Proc, cmd, code, config_text, fast_schedule, keys_into, run, stderr, stdout, write_config,
};

/// Hostile config cases tried (each refusal below counts one), printed for the README.
static TRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn tried() -> usize {
    TRIED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
}

const NO_GATEWAY: &str = "http://127.0.0.1:9/aggregate-pay/api/gateway";

/// The merchant private key as one base64 line, and a 40-character piece of its middle that
/// no error may contain.
fn private_key() -> (String, String) {
    let b64: String = std::fs::read_to_string(format!("{KEYS}/merchant_private.b64"))
        .unwrap()
        .split_whitespace()
        .collect();
    let piece = b64[300..340].to_owned();
    (b64, piece)
}

/// Writes `dir/config.toml` as the test config with `edit` applied.
fn config_with(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, edit(config_text(dir, NO_GATEWAY, ""))).unwrap();
    path
}

/// `check-config` and `run` both exit `want` within 20 s, with one error line naming each of
/// `names` and containing none of `never`; nothing is written to the ledger. Returns the
/// `run` message.
fn assert_refused(dir: &Path, config: &Path, names: &[&str], never: &[&str]) -> String {
    let n = tried();
    let mut last = String::new();
    for sub in ["check-config", "run"] {
        let mut c = cmd(dir);
        c.args([sub, "--config", config.to_str().unwrap()]);
        // Spawned, not run: a refusal that blocks (a FIFO) must fail the test, not hang it.
        let mut p = Proc::spawn(c);
        let exit = p.wait_exit(Duration::from_secs(20));
        let msg = p.seen.join("\n");
        assert_eq!(exit, 3, "case {n}, {sub}: {msg}");
        assert!(
            msg.starts_with("checus-reconciler: error: ") && p.seen.len() == 1,
            "case {n}, {sub}: one error line: {msg}"
        );
        for name in names {
            assert!(
                msg.contains(name),
                "case {n}, {sub}: {msg:?} lacks {name:?}"
            );
        }
        for bad in never {
            assert!(!msg.contains(bad), "case {n}, {sub}: {msg:?} shows {bad:?}");
        }
        assert!(!dir.join("ledger.sqlite").exists(), "{sub} wrote a ledger");
        last = msg;
    }
    last
}

#[test]
fn a_key_pasted_into_the_config_is_refused_without_echoing_it() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (key, piece) = private_key();
    let (private, _) = keys_into(d);
    let source = format!("\"file:{}\"", private.display());
    // Unquoted, as the portal hands it out: a TOML syntax error naming the line and the key.
    let c = config_with(d, |t| t.replace(&source, &key));
    let msg = assert_refused(d, &c, &["config.toml", "line 12"], &[&piece]);
    assert!(msg.contains("keys.merchant_private_key"), "{msg}");
    // Unquoted PEM, several lines.
    let pem = std::fs::read_to_string(format!("{KEYS}/merchant_private.pem")).unwrap();
    let c = config_with(d, |t| t.replace(&source, &pem));
    assert_refused(
        d,
        &c,
        &["config.toml", "TOML syntax error at line"],
        &[&piece, &pem[40..80]],
    );
    // After file:, where a path belongs.
    let c = config_with(d, |t| t.replace(&source, &format!("\"file:{key}\"")));
    assert_refused(
        d,
        &c,
        &["keys.merchant_private_key", "not a readable file path"],
        &[&piece, "MIIE"],
    );
    // Quoted, into a field of another type: the type error's quoted value is not shown.
    let c = config_with(d, |t| t + &format!("\n[worker]\nconcurrency = \"{key}\"\n"));
    assert_refused(d, &c, &["config.toml"], &[&piece]);
    // As a duration.
    let c = config_with(d, |t| t + &format!("\n[schedule]\ngrace = \"{key}\"\n"));
    assert_refused(d, &c, &["schedule.grace"], &[&piece]);
    // From the environment, into a key source's env: name.
    let c = config_with(d, |t| t.replace(&source, &format!("\"env:{key}\"")));
    assert_refused(d, &c, &["keys.merchant_private_key"], &[&piece]);
}

#[test]
fn settings_out_of_their_range_exit_3_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    for (section, value, key) in [
        // Issue 10's cases: panicked on SIGHUP, panicked in check-config, wrapped to 44 s.
        (
            "schedule",
            "confirm_after = \"100000000d\"",
            "schedule.confirm_after",
        ),
        ("schedule", "backoff = [\"100000000d\"]", "schedule.backoff"),
        (
            "schedule",
            "grace = \"18446744073709551615s1s\"",
            "schedule.grace",
        ),
        (
            "schedule",
            "steady = \"307445734561825861m\"",
            "schedule.steady",
        ),
        (
            "worker",
            "rate_per_second = 1e-300",
            "worker.rate_per_second",
        ),
        // Each range's far side.
        (
            "schedule",
            "confirm_after = \"31d\"",
            "schedule.confirm_after",
        ),
        ("schedule", "grace = \"8d\"", "schedule.grace"),
        ("schedule", "retry = \"1d1ms\"", "schedule.retry"),
        ("schedule", "halt_recheck = \"2d\"", "schedule.halt_recheck"),
        (
            "schedule",
            "pending_flag_after = \"366d\"",
            "schedule.pending_flag_after",
        ),
        (
            "schedule",
            "unknown_flag_after = \"0s\"",
            "schedule.unknown_flag_after",
        ),
        ("schedule", "jitter = nan", "schedule.jitter"),
        ("worker", "rate_per_second = inf", "worker.rate_per_second"),
        (
            "worker",
            "rate_per_second = 100001.0",
            "worker.rate_per_second",
        ),
        ("worker", "batch_size = 18446744073709551615", "worker"),
        ("worker", "batch_size = 100001", "worker.batch_size"),
        ("worker", "concurrency = 1025", "worker.concurrency"),
        (
            "worker",
            "shutdown_deadline = \"11m\"",
            "worker.shutdown_deadline",
        ),
    ] {
        let c = config_with(d, |t| t + &format!("\n[{section}]\n{value}\n"));
        assert_refused(d, &c, &[key], &[]);
    }
    let steps = vec!["\"1s\""; 101].join(", ");
    let c = config_with(d, |t| t + &format!("\n[schedule]\nbackoff = [{steps}]\n"));
    assert_refused(d, &c, &["schedule.backoff", "101 steps"], &[]);
    for (edit, key) in [
        ("request_timeout = \"11m\"", "gateway.request_timeout"),
        (
            "request_timeout = \"2s\"\nmax_response_bytes = 67108865",
            "gateway.max_response_bytes",
        ),
    ] {
        let c = config_with(d, |t| t.replace("request_timeout = \"2s\"", edit));
        assert_refused(d, &c, &[key], &[]);
    }
    // The same through an environment override.
    let c = config_with(d, |t| t);
    let o = cmd(d)
        .env("CHECUS_RECONCILER__SCHEDULE__CONFIRM_AFTER", "100000000d")
        .args(["check-config", "--config", c.to_str().unwrap()])
        .output()
        .unwrap();
    tried();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("schedule.confirm_after"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_reload_with_an_out_of_range_setting_is_rejected_once_and_the_daemon_keeps_running() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    // At debug, an empty sweep logs "sweep finished": the proof the daemon still sweeps.
    let extra = fast_schedule("") + "level = \"checus_reconciler=debug\"\n";
    let cfg = write_config(d, NO_GATEWAY, &extra);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let mut c = cmd(d);
    c.args(["run", "--config", cfg.to_str().unwrap()]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    for bad in [
        "confirm_after = \"100000000d\"",
        "backoff = [\"100000000d\"]",
        "retry = \"18446744073709551615s1s\"",
    ] {
        tried();
        let rejected_before = rejections(&daemon);
        std::fs::write(
            &cfg,
            good.replace("[schedule]", &format!("[schedule]\n{bad}")),
        )
        .unwrap();
        daemon.signal("-HUP");
        let line = daemon.wait_for("configuration reload rejected");
        assert!(
            line.contains("\"level\":\"ERROR\"") && line.contains("schedule."),
            "{line}"
        );
        // Still sweeping on the old configuration, and the rejection was logged once.
        daemon.wait_for("sweep finished");
        daemon.wait_for("sweep finished");
        assert_eq!(
            rejections(&daemon),
            rejected_before + 1,
            "{}",
            daemon.tail(20)
        );
    }
    // The longest accepted confirm_after reloads and sweeps (now - 30d is computed at once).
    std::fs::write(
        &cfg,
        good.replace("[schedule]", "[schedule]\nconfirm_after = \"30d\""),
    )
    .unwrap();
    daemon.signal("-HUP");
    daemon.wait_for("configuration reloaded");
    daemon.wait_for("sweep finished");
    daemon.signal("-TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        0,
        "{}",
        daemon.tail(20)
    );
    assert!(
        !daemon.seen.iter().any(|l| l.contains("panicked")),
        "{}",
        daemon.tail(40)
    );
}

fn rejections(p: &Proc) -> usize {
    p.seen
        .iter()
        .filter(|l| l.contains("configuration reload rejected"))
        .count()
}

#[test]
fn command_line_durations_and_counts_out_of_range_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    assert_eq!(code(&run(d, &["init", "--ledger", l])), 0);
    let before = std::fs::read(&ledger).unwrap();
    for args in [
        &["failed", "--ledger", l, "--since", "99999999999d"][..],
        &["failed", "--ledger", l, "--since", "307445734561825861m"],
        &[
            "export",
            "--ledger",
            l,
            "--since",
            "18446744073709551615s1s",
        ],
        &["list", "--ledger", l, "--since", "36501d"],
        &[
            "stuck",
            "--ledger",
            l,
            "--older-than",
            "18446744073709551615s1s",
        ],
        &["stuck", "--ledger", l, "--older-than", "99999999999d"],
        &[
            "prune",
            "--ledger",
            l,
            "--finalized-before",
            "99999999999d",
            "--dry-run",
        ],
        &[
            "status",
            "--ledger",
            l,
            "--stale-after",
            "307445734561825861m",
        ],
        &["sandbox", "--latency", "18446744073709551615s1s"],
        &["sandbox", "--latency", "11m"],
        &["demo", "--timeout-secs", "18446744073709551615"],
        &["demo", "--refunds", "18446744073709551615"],
    ] {
        tried();
        let o = run(d, args);
        assert_eq!(code(&o), 2, "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("out of range")
                || stderr(&o).contains("longer than")
                || stderr(&o).contains("not in 1..=")
                || stderr(&o).contains("count from"),
            "{args:?}: the reason is given: {}",
            stderr(&o)
        );
    }
    assert_eq!(std::fs::read(&ledger).unwrap(), before, "nothing written");
}

#[test]
fn key_files_that_are_not_small_regular_files_are_refused_at_once() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (private, public) = keys_into(d);
    let point_at = |which: &Path, target: &Path| {
        config_with(d, |t| {
            t.replace(
                &format!("file:{}", which.display()),
                &format!("file:{}", target.display()),
            )
        })
    };
    // A FIFO with no writer: opening it would block for ever.
    if crate::common::tools::require_tool("mkfifo") {
        let fifo = d.join("key.fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        for which in [&private, &public] {
            let c = point_at(which, &fifo);
            assert_refused(d, &c, &["key.fifo", "is a FIFO, not a regular file"], &[]);
        }
    }
    for (target, what) in [
        (Path::new("/dev/zero"), "is a device"),
        (Path::new("/dev/urandom"), "is a device"),
        (d, "is a directory"),
    ] {
        for which in [&private, &public] {
            let c = point_at(which, target);
            assert_refused(d, &c, &[what], &[]);
        }
    }
    // Over the 64 KiB cap, with private permissions: refused naming the file and the cap.
    let big = d.join("huge.key");
    let mut text = std::fs::read_to_string(&private).unwrap();
    while text.len() <= 64 * 1024 {
        text.push_str("\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    }
    std::fs::write(&big, text).unwrap();
    std::fs::set_permissions(&big, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for which in [&private, &public] {
        let c = point_at(which, &big);
        assert_refused(d, &c, &["huge.key", "at most 65536 bytes"], &[]);
    }
    // The config file itself: a FIFO or a device is refused the same way (exit 3).
    for target in [Path::new("/dev/zero"), &d.join("key.fifo")] {
        if !target.exists() {
            continue;
        }
        tried();
        let mut c = cmd(d);
        c.args(["check-config", "--config", target.to_str().unwrap()]);
        let mut p = Proc::spawn(c);
        assert_eq!(p.wait_exit(Duration::from_secs(20)), 3, "{}", p.tail(5));
        let msg = p.seen.join("\n");
        assert!(
            msg.contains("cannot read config file") && msg.contains("not a regular file"),
            "{msg}"
        );
    }
    eprintln!(
        "hostile config: {} cases so far in this process",
        TRIED.load(std::sync::atomic::Ordering::SeqCst)
    );
}

/// `ledger.url` (PostgreSQL, issue 14) selects the PostgreSQL engine: `check-config` accepts
/// it, and every command that opens the ledger (`run`, `status`, `backup`) connects to it. A
/// server that refuses the connection (here: a role that does not exist, or no server at all)
/// fails the command with one error naming the URL, never the password, and no SQLite file is
/// created instead.
#[test]
fn a_postgresql_ledger_url_that_cannot_be_connected_to_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), |text| {
        let path_line = text
            .lines()
            .find(|l| l.starts_with("path = "))
            .unwrap()
            .to_owned();
        text.replace(
            &path_line,
            "url = \"postgres://checus_no_such_role@127.0.0.1:5432/refunds?connect_timeout=5&sslmode=disable\"\npassword = \"env:PGPW\"",
        )
    });
    let cfg = config.to_str().unwrap();
    let ok = run(dir.path(), &["check-config", "--config", cfg]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert!(stdout(&ok).contains("postgres://checus_no_such_role@127.0.0.1:5432/refunds"));
    for args in [
        vec!["run", "--config", cfg],
        vec!["status", "--config", cfg],
        vec!["backup", "--config", cfg, "copy.sqlite"],
    ] {
        let mut c = cmd(dir.path());
        c.args(&args).env("PGPW", "hunter2");
        let o = c.output().unwrap();
        let msg = stderr(&o);
        assert_eq!(code(&o), 1, "{args:?}: {msg}");
        assert!(
            msg.contains("cannot connect to the PostgreSQL ledger")
                && msg.contains("postgres://checus_no_such_role@127.0.0.1:5432/refunds"),
            "{args:?}: {msg}"
        );
        assert!(!msg.contains("hunter2"), "{args:?}: {msg}");
    }
    assert!(!dir.path().join("ledger.sqlite").exists());
}

/// On a reachable PostgreSQL ledger, `backup` is refused with exit 3 (the configuration chose
/// an engine whose copies are pg_dump's), naming what to use; nothing is written.
#[test]
fn pg_backup_of_a_postgresql_ledger_says_to_use_pg_dump() {
    let Some((url, _db)) = crate::common::pg::fresh_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), |text| {
        let path_line = text
            .lines()
            .find(|l| l.starts_with("path = "))
            .unwrap()
            .to_owned();
        text.replace(&path_line, &format!("url = \"{url}\""))
    });
    let cfg = config.to_str().unwrap();
    let init = run(dir.path(), &["init", "--config", cfg]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    let o = run(dir.path(), &["backup", "--config", cfg, "copy.sqlite"]);
    let msg = stderr(&o);
    assert_eq!(code(&o), 3, "{msg}");
    assert!(
        msg.contains("PostgreSQL") && msg.contains("pg_dump"),
        "{msg}"
    );
    assert!(!dir.path().join("copy.sqlite").exists());
}

/// `ledger.ca_file` through the binary: a file that is no CA stops `check-config` (exit 3,
/// naming the key and the file); with the server's CA and `sslmode=require`, `init` and
/// `verify-ledger` work over TLS; with a CA that did not sign the server's certificate,
/// `status` is refused (exit 4) with one message naming `ledger.url` and `ledger.ca_file`.
#[test]
fn pg_tls_ledger_ca_file_is_checked_at_load_and_a_wrong_ca_is_refused_naming_it() {
    let Some(server) = crate::pg_tls::TlsServer::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(stranger) = crate::pg_tls::stranger_ca(dir.path()) else {
        return;
    };
    let url = server.url("localhost", &[("sslmode", "require")]);
    let with_ca = |ca: &Path| {
        config_with(dir.path(), |text| {
            let path_line = text
                .lines()
                .find(|l| l.starts_with("path = "))
                .unwrap()
                .to_owned();
            text.replace(
                &path_line,
                &format!("url = \"{url}\"\nca_file = \"{}\"", ca.display()),
            )
        })
    };

    let missing = dir.path().join("missing-ca.pem");
    let config = with_ca(&missing);
    let o = run(
        dir.path(),
        &["check-config", "--config", config.to_str().unwrap()],
    );
    let msg = stderr(&o);
    assert_eq!(code(&o), 3, "{msg}");
    assert!(
        msg.contains(&format!("ledger.ca_file: {}", missing.display())),
        "{msg}"
    );

    let config = with_ca(&server.cert);
    let cfg = config.to_str().unwrap();
    for sub in ["init", "verify-ledger"] {
        let o = run(dir.path(), &[sub, "--config", cfg]);
        assert_eq!(code(&o), 0, "{sub}: {}", stderr(&o));
    }

    let config = with_ca(&stranger);
    let o = run(
        dir.path(),
        &["status", "--config", config.to_str().unwrap()],
    );
    let msg = stderr(&o);
    assert_eq!(code(&o), 4, "{msg}");
    assert!(
        msg.starts_with("checus-reconciler: error: ") && msg.trim_end().lines().count() == 1,
        "one error line: {msg}"
    );
    for says in [
        "ledger.url",
        url.as_str(),
        "ledger.ca_file",
        stranger.to_str().unwrap(),
        "invalid peer certificate",
    ] {
        assert!(msg.contains(says), "no {says:?} in: {msg}");
    }
}
