//! Secrets: the merchant private key must never leave the signer. A full daemon run at TRACE
//! level (every crate's logs: reqwest, hyper, rustls, ours) against the sandbox, the operator
//! commands, error messages about broken keys, the error output of `check-config` and `run`
//! and the SIGHUP reload's ERROR line for a key pasted where a key source belongs, the Debug
//! output of the configuration and the loaded keys, and the ledger file itself (attempt log
//! included, WAL too) are all searched for the key, in base64 fragments, as DER bytes in hex
//! and as Rust's Debug byte lists.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::proc::{
    KEYS, LiveSandbox, Proc, cmd, code, config_text, count, import_csv, run, stderr, stdout,
    write_config,
};
use base64::Engine as _;
use checus_reconciler::config::{Config, Environment};
use checus_reconciler::sandbox::{RefundScript, Step};

/// Every way a leak of the merchant private key could look: 20-character windows of its
/// base64 text (skipping the ASN.1 header every PKCS#8 RSA key shares), 16-byte windows of
/// its DER in hex, and the same bytes as a Debug list (`[48, 130, ...`).
fn needles() -> Vec<String> {
    let b64: String = std::fs::read_to_string(format!("{KEYS}/merchant_private.b64"))
        .unwrap()
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let mut out = Vec::new();
    for start in (40..b64.len() - 20).step_by(20) {
        out.push(b64[start..start + 20].to_owned());
    }
    for start in (32..der.len() - 16).step_by(64) {
        let w = &der[start..start + 16];
        out.push(w.iter().map(|b| format!("{b:02x}")).collect());
        out.push(w.iter().map(|b| format!("{b:02X}")).collect());
        out.push(format!("{:?}", w).trim_matches(['[', ']']).to_owned());
    }
    assert!(out.len() > 100);
    out
}

#[track_caller]
fn assert_no_key(what: &str, haystack: &str) {
    assert!(!haystack.is_empty(), "{what}: nothing captured to search");
    let flat: String = haystack
        .replace("\\n", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for n in needles() {
        let n_flat: String = n.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(
            !haystack.contains(&n) && !flat.contains(&n_flat),
            "{what}: private key material {n:?} found"
        );
    }
}

fn file_text(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

#[test]
fn trace_logs_of_a_full_run_and_the_ledger_never_contain_the_private_key() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scripts: Vec<(String, RefundScript)> = (0..30)
        .map(|i| {
            let no = format!("R-SEC-{i:03}");
            let steps = match i % 5 {
                0 => vec![Step::Success],
                1 => vec![Step::Pending, Step::Failed],
                2 => vec!["fault:bad_signature".parse().unwrap(), Step::Success],
                3 => vec!["fault:http:503".parse().unwrap(), Step::Success],
                _ => vec![
                    Step::Unknown,
                    "fault:wrong_amount".parse().unwrap(),
                    Step::Success,
                ],
            };
            (no.clone(), RefundScript::usd(&no, steps))
        })
        .collect();
    let sandbox = LiveSandbox::start(scripts.clone());
    let extra = "[schedule]\ngrace = \"0s\"\nbackoff = [\"50ms\"]\nretry = \"50ms\"\nsteady = \"100ms\"\n\n\
                 [worker]\nsweep_cron = \"* * * * * *\"\nrate_per_second = 500.0\n\n\
                 [log]\nformat = \"json\"\nlevel = \"trace\"\n";
    let config = write_config(d, &sandbox.base_url(), extra);
    let cfg = config.to_str().unwrap();
    let csv = import_csv(d, &scripts);
    assert_eq!(
        code(&run(d, &["import", "--config", cfg, csv.to_str().unwrap()])),
        0
    );

    let mut c = cmd(d);
    c.args(["run", "--config", cfg]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    let ledger = d.join("ledger.sqlite");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&ledger, "refunds WHERE status = 'REFUND_PENDING'") > 0 {
        assert!(Instant::now() < deadline, "{}", daemon.tail(20));
        daemon.next_line(Duration::from_secs(2));
    }
    // The operator's one-off query and config check, while the ledger is live.
    let q = run(d, &["query", "--config", cfg, "R-SEC-000", "--json"]);
    assert_eq!(code(&q), 0, "{}", stderr(&q));
    let cc = run(d, &["check-config", "--config", cfg]);
    assert_eq!(code(&cc), 0, "{}", stderr(&cc));
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);

    let logs = daemon.seen.join("\n");
    let trace_lines = daemon
        .json_lines()
        .iter()
        .filter(|v| v["level"] == "TRACE")
        .count();
    assert!(
        trace_lines > 100,
        "the run really logged at TRACE: {trace_lines}"
    );
    assert!(
        logs.contains("\"target\":\"rustls") || logs.contains("\"target\":\"hyper"),
        "dependency TRACE logs included"
    );
    assert_no_key("daemon logs at TRACE", &logs);
    assert_no_key("query output", &(stdout(&q) + &stderr(&q)));
    assert_no_key("check-config output", &(stdout(&cc) + &stderr(&cc)));

    // The attempt log and every other text in the ledger, through SQL and as raw bytes.
    let conn = crate::common::proc::sql(&ledger);
    let mut dump = String::new();
    for table in [
        "refunds",
        "attempts",
        "discrepancies",
        "notifications",
        "sweeps",
    ] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let cols = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..cols {
                let v: rusqlite::types::Value = row.get(i).unwrap();
                dump.push_str(&format!("{v:?}\n"));
            }
        }
    }
    assert!(count(&ledger, "attempts WHERE error IS NOT NULL") > 0);
    assert_no_key("ledger rows (attempt log included)", &dump);
    drop(conn);
    let raw = file_text(&ledger) + &file_text(&d.join("ledger.sqlite-wal"));
    assert_no_key("ledger file bytes", &raw);
    eprintln!(
        "secrets: {} log lines ({trace_lines} at TRACE), {} ledger values and the raw file searched \
         for {} key fragments: 0 found",
        daemon.seen.len(),
        dump.lines().count(),
        needles().len()
    );
}

#[test]
fn debug_output_and_error_messages_never_contain_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b64 = std::fs::read_to_string(format!("{KEYS}/merchant_private.b64")).unwrap();
    let pem = std::fs::read_to_string(format!("{KEYS}/merchant_private.pem")).unwrap();

    // The search finds the key wherever it really is (so a pass means something): in the
    // base64 file, the PEM, and the DER as hex.
    for (what, text) in [("b64", b64.clone()), ("pem", pem.clone())] {
        let found = std::panic::catch_unwind(|| assert_no_key(what, &text));
        assert!(found.is_err(), "{what}: the search cannot see the key");
    }

    // Debug of the config (file, env and credential sources) and of the loaded keys.
    let text = config_text(d, "http://127.0.0.1:9/aggregate-pay/api/gateway", "");
    let env = Environment::from_pairs([("MERCHANT_KEY", b64.trim())]);
    let from_env = text.replace(
        &format!("file:{}", d.join("merchant_private.b64").display()),
        "env:MERCHANT_KEY",
    );
    for text in [&text, &from_env] {
        let cfg = Config::parse(text, "config.toml", &env).unwrap();
        let keys = cfg.keys.load().unwrap();
        assert_no_key("Debug of Config", &format!("{cfg:?}\n{cfg:#?}"));
        assert_no_key("Debug of the loaded keys", &format!("{keys:?}\n{keys:#?}"));
    }

    // Error messages about keys that are almost right: a truncated key, a key with a typo,
    // a PEM with a broken body, the key in a world-readable file. They name the key and the
    // source, never the material.
    let truncated = &b64.trim()[..b64.trim().len() - 40];
    let typo = b64.trim().replacen('A', "!", 1);
    let broken_pem = pem.replacen('M', "*", 2);
    let mut messages = String::new();
    for (i, bad) in [truncated, typo.as_str(), broken_pem.as_str()]
        .into_iter()
        .enumerate()
    {
        let env = Environment::from_pairs([("MERCHANT_KEY", bad)]);
        let cfg = Config::parse(&from_env, "config.toml", &env).unwrap();
        let err = cfg.keys.load().unwrap_err();
        let msg = format!("{err}\n{err:?}");
        assert!(msg.contains("keys.merchant_private_key"), "{msg}");
        messages.push_str(&msg);
        // And through the binary, from a file.
        let key = d.join(format!("bad-{i}.key"));
        std::fs::write(&key, bad).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let path = d.join("config.toml");
        std::fs::write(
            &path,
            text.replace(
                &format!("file:{}", d.join("merchant_private.b64").display()),
                &format!("file:{}", key.display()),
            ),
        )
        .unwrap();
        for sub in ["check-config", "run"] {
            let o = run(d, &[sub, "--config", path.to_str().unwrap()]);
            assert_eq!(code(&o), 3, "{}", stderr(&o));
            messages.push_str(&(stdout(&o) + &stderr(&o)));
        }
    }
    let loose = d.join("merchant_private.b64");
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let path = d.join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let o = run(d, &["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    messages.push_str(&stderr(&o));
    assert_no_key("error messages about keys", &messages);
}

/// A key pasted where a key source belongs: unquoted into the TOML (the parser's snippet used
/// to print the whole line), after `file:` ("cannot read MIIE…"), as an `env:` or
/// `credential:` name, and into a field of another type. The error output of `check-config`
/// and `run`, and the ERROR line a SIGHUP reload of such a file logs, are searched like the
/// logs are.
#[test]
fn error_output_about_a_pasted_key_never_contains_it() {
    if !crate::common::tools::require_tool("kill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b64: String = std::fs::read_to_string(format!("{KEYS}/merchant_private.b64"))
        .unwrap()
        .split_whitespace()
        .collect();
    let pem = std::fs::read_to_string(format!("{KEYS}/merchant_private.pem")).unwrap();
    let good = config_text(d, "http://127.0.0.1:9/aggregate-pay/api/gateway", "");
    let source = format!("\"file:{}\"", d.join("merchant_private.b64").display());
    let pasted = [
        good.replace(&source, &b64),
        good.replace(&source, &pem),
        good.replace(&source, &format!("'{}'", pem.trim())),
        good.replace(&source, &format!("\"file:{b64}\"")),
        good.replace(&source, &format!("\"env:{b64}\"")),
        good.replace(&source, &format!("\"credential:{}\"", b64.replace('/', ""))),
        good.replace(&source, &format!("\"{b64}\"")),
        format!("{good}\n[worker]\nconcurrency = \"{b64}\"\n"),
        format!("{good}\n[schedule]\ngrace = \"{b64}\"\n"),
    ];
    let path = d.join("config.toml");
    let mut output = String::new();
    for text in &pasted {
        std::fs::write(&path, text).unwrap();
        for sub in ["check-config", "run"] {
            let o = run(d, &[sub, "--config", path.to_str().unwrap()]);
            assert_eq!(code(&o), 3, "{sub}: {}", stderr(&o));
            assert!(stderr(&o).contains("error"), "{}", stderr(&o));
            output.push_str(&(stdout(&o) + &stderr(&o)));
        }
    }
    assert_no_key("check-config and run error output", &output);

    // The same files handed to a running daemon by SIGHUP: one ERROR line each, no key.
    std::fs::write(&path, &good).unwrap();
    let mut c = cmd(d);
    c.args(["run", "--config", path.to_str().unwrap()]);
    let mut daemon = Proc::spawn(c);
    daemon.wait_for("daemon ready");
    let mut rejected = String::new();
    for text in &pasted {
        std::fs::write(&path, text).unwrap();
        daemon.signal("-HUP");
        rejected.push_str(&daemon.wait_for("configuration reload rejected"));
        rejected.push('\n');
    }
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    assert_eq!(rejected.lines().count(), pasted.len());
    assert_no_key("SIGHUP reload ERROR lines", &rejected);
    assert_no_key("the daemon's whole output", &daemon.seen.join("\n"));
}
