//! Bad input: every malformed config file, config value, key, ledger file and import row of
//! issue 3 is given to the real binary. Each gets a message naming the file, key or row, its
//! documented exit code (3 config, 4 ledger refused, 5 input rejected), and leaves the ledger
//! untouched: not created, or byte-for-byte unchanged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::proc::{KEYS, cmd, code, config_text, keys_into, run, stderr, stdout};

/// Bad inputs tried (each case below counts one), printed for the README's figures.
static TRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn tried() {
    TRIED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The config for `dir` with `edit` applied to its text.
fn config_with(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = edit(config_text(
        dir,
        "http://127.0.0.1:9/aggregate-pay/api/gateway",
        "",
    ));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `check-config` and `run` on `config`; both must fail with `want` naming every one of
/// `names`, and the ledger must not exist afterwards.
fn assert_config_refused(dir: &Path, config: &Path, want: i32, names: &[&str]) -> String {
    tried();
    let ledger = dir.join("ledger.sqlite");
    let mut last = String::new();
    for sub in ["check-config", "run"] {
        let o = run(dir, &[sub, "--config", config.to_str().unwrap()]);
        let msg = stderr(&o);
        assert_eq!(code(&o), want, "{sub}: {msg}");
        assert!(
            msg.starts_with("checus-reconciler: error: "),
            "{sub}: one clear error line: {msg}"
        );
        for name in names {
            assert!(msg.contains(name), "{sub}: {msg:?} does not name {name:?}");
        }
        assert!(!ledger.exists(), "{sub}: nothing written to the ledger");
        last = msg;
    }
    last
}

#[test]
fn bad_config_files_are_refused_with_exit_3_naming_the_file_or_key() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    // Missing.
    let missing = d.join("absent.toml");
    assert_config_refused(d, &missing, 3, &["absent.toml", "cannot read config file"]);
    // Unreadable (a directory where the file should be: unreadable even for root).
    let unreadable = d.join("dir.toml");
    std::fs::create_dir(&unreadable).unwrap();
    assert_config_refused(d, &unreadable, 3, &["dir.toml", "cannot read config file"]);
    // TOML syntax error: file and line.
    let c = config_with(d, |t| {
        t.replace("app_id = \"SANDBOX-APP\"", "app_id = SANDBOX-APP\"")
    });
    assert_config_refused(d, &c, 3, &["config.toml", "line 6"]);
    // Unknown key.
    let c = config_with(d, |t| t + "\n[worker]\nconcurency = 3\n");
    assert_config_refused(d, &c, 3, &["config.toml", "concurency"]);
    // Missing required key.
    let c = config_with(d, |t| t.replace("merchant_no = \"SANDBOX-MERCHANT\"\n", ""));
    assert_config_refused(d, &c, 3, &["config.toml", "merchant_no"]);
    // An unknown environment override is a config error too, naming the variable.
    let c = config_with(d, |t| t);
    let o = cmd(d)
        .env("CHECUS_RECONCILER__GATEWAY__APPID", "x")
        .args(["check-config", "--config", c.to_str().unwrap()])
        .output()
        .unwrap();
    tried();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("appid"), "{}", stderr(&o));
}

#[test]
fn bad_config_values_are_refused_with_exit_3_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let base = "http://127.0.0.1:9/aggregate-pay/api/gateway";
    for (bad_url, also) in [
        ("not a url", "gateway.base_url"),
        ("ftp://127.0.0.1/x", "gateway.base_url"),
        (
            "http://checus.example.com/aggregate-pay/api/gateway",
            "https",
        ),
        ("http://10.0.0.8/aggregate-pay/api/gateway", "https"),
    ] {
        let c = config_with(d, |t| t.replace(base, bad_url));
        assert_config_refused(d, &c, 3, &["gateway.base_url", also]);
    }
    for cron in ["*/30 * * * *", "61 * * * * *", "every minute please x"] {
        let c = config_with(d, |t| t + &format!("\n[worker]\nsweep_cron = \"{cron}\"\n"));
        assert_config_refused(d, &c, 3, &["worker.sweep_cron"]);
    }
    for (key, value) in [
        ("schedule", "grace = \"ten minutes\""),
        ("schedule", "jitter = 0.9"),
        ("worker", "concurrency = 0"),
        ("worker", "rate_per_second = -1.0"),
        ("worker", "shutdown_deadline = \"0s\""),
        ("log", "level = \"loud[\""),
    ] {
        let c = config_with(d, |t| t + &format!("\n[{key}]\n{value}\n"));
        let field = value.split(' ').next().unwrap();
        assert_config_refused(d, &c, 3, &[&format!("{key}.{field}")]);
    }
}

#[test]
fn bad_webhook_settings_are_refused_with_exit_3_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let secret = d.join("webhook.secret");
    std::fs::write(&secret, "whsec-0123456789abcdef-SECRET\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good_secret = format!("file:{}", secret.display());
    let section = |url: &str, secret: &str, extra: &str| {
        format!("\n[webhook]\nurl = \"{url}\"\nsecret = \"{secret}\"\n{extra}")
    };
    let local = "http://127.0.0.1:9/hooks";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            section("not a url", &good_secret, ""),
            vec!["webhook.url", "not an absolute URL"],
        ),
        (
            section("http://app.example.com/hooks", &good_secret, ""),
            vec!["webhook.url", "loopback"],
        ),
        (
            section("https://u:pw@app.example.com/hooks", &good_secret, ""),
            vec!["webhook.url", "user name"],
        ),
        (
            section("gopher://127.0.0.1/x", &good_secret, ""),
            vec!["webhook.url", "not http or https"],
        ),
        (
            "\n[webhook]\nurl = \"http://127.0.0.1:9/hooks\"\n".to_owned(),
            vec!["secret"],
        ),
        (
            section(local, "whsec-0123456789abcdef", ""),
            vec!["webhook.secret", "expected file:"],
        ),
        (
            section(local, &format!("file:{}/absent", d.display()), ""),
            vec!["webhook.secret", "cannot read"],
        ),
        (
            section(local, "env:WEBHOOK_KEY_UNSET", ""),
            vec!["webhook.secret", "not set"],
        ),
        (
            section(local, &good_secret, "concurrency = 0\n"),
            vec!["webhook.concurrency"],
        ),
        (
            section(local, &good_secret, "give_up_after = \"3 days\"\n"),
            vec!["webhook.give_up_after"],
        ),
        (
            section(local, &good_secret, "retries = 3\n"),
            vec!["retries"],
        ),
    ];
    for (extra, names) in cases {
        let c = config_with(d, |t| t + &extra);
        let msg = assert_config_refused(d, &c, 3, &names);
        assert!(!msg.contains("SECRET"), "the secret is never shown: {msg}");
        assert!(!msg.contains("pw@"), "{msg}");
    }
    // A secret file others can read, and one too short to be a key.
    let open = d.join("open.secret");
    std::fs::write(&open, "whsec-0123456789abcdef-SECRET").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = config_with(d, |t| {
        t + &section(local, &format!("file:{}", open.display()), "")
    });
    assert_config_refused(d, &c, 3, &["webhook.secret", "accessible to other users"]);
    let short = d.join("short.secret");
    std::fs::write(&short, "SECRET").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = config_with(d, |t| {
        t + &section(local, &format!("file:{}", short.display()), "")
    });
    let msg = assert_config_refused(d, &c, 3, &["webhook.secret", "at least 16"]);
    assert!(!msg.contains("SECRET"), "{msg}");
}

/// Points `keys.merchant_private_key` at `text` written with `mode`.
fn config_with_private_key(dir: &Path, text: &[u8], mode: u32) -> PathBuf {
    let key = dir.join("candidate.key");
    std::fs::write(&key, text).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    config_with(dir, |t| {
        let (private, _) = keys_into(dir);
        t.replace(
            &format!("file:{}", private.display()),
            &format!("file:{}", key.display()),
        )
    })
}

#[test]
fn bad_keys_are_refused_or_converted_and_said_so() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let key_name = "keys.merchant_private_key";
    // Neither base64 DER nor PEM.
    for junk in [
        &b"this is not a key"[..],
        b"-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n",
        b"TUlJQm9ndXM=",
    ] {
        let c = config_with_private_key(d, junk, 0o600);
        assert_config_refused(d, &c, 3, &[key_name, "candidate.key"]);
    }
    // The public key given as the private key.
    let public = std::fs::read(format!("{KEYS}/merchant_public.b64")).unwrap();
    let c = config_with_private_key(d, &public, 0o600);
    assert_config_refused(d, &c, 3, &[key_name]);
    let public_pem = std::fs::read(format!("{KEYS}/merchant_public.pem")).unwrap();
    let c = config_with_private_key(d, &public_pem, 0o600);
    assert_config_refused(d, &c, 3, &[key_name]);
    // A private key readable by other users is refused (and says how to fix it).
    let private = std::fs::read(format!("{KEYS}/merchant_private.b64")).unwrap();
    for mode in [0o644, 0o604, 0o606] {
        let c = config_with_private_key(d, &private, mode);
        assert_config_refused(
            d,
            &c,
            3,
            &[key_name, "accessible to other users", "chmod 600"],
        );
    }
    // Group-readable: accepted, with a warning.
    let c = config_with_private_key(d, &private, 0o640);
    let o = run(d, &["check-config", "--config", c.to_str().unwrap()]);
    tried();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("warning: keys.merchant_private_key") && stdout(&o).contains("group"),
        "{}",
        stdout(&o)
    );
    // PKCS#1 where PKCS#8 is expected: converted, with a warning that says so; it signs.
    // The committed PKCS#1 fixture (no external tool needed); its bare base64 form is the PEM
    // body on one line.
    let pkcs1_pem = std::fs::read(format!("{KEYS}/merchant_private_pkcs1.pem")).unwrap();
    let pem_text = String::from_utf8_lossy(&pkcs1_pem).into_owned();
    assert!(pem_text.contains("BEGIN RSA PRIVATE KEY"));
    let pkcs1_b64: String = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for text in [pkcs1_pem, pkcs1_b64.into_bytes()] {
        let c = config_with_private_key(d, &text, 0o600);
        let o = run(d, &["check-config", "--config", c.to_str().unwrap()]);
        tried();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(stdout(&o).contains("PKCS#1 key accepted"), "{}", stdout(&o));
    }
}

/// Runs `init` as an unprivileged user when we are root (root ignores directory modes).
fn init_as_unprivileged(dir: &Path, ledger: &Path) -> Output {
    let mut c = if crate::common::tools::is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::common::proc::BIN,
        ]);
        c.current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        c
    } else {
        cmd(dir)
    };
    c.args(["init", "--ledger", ledger.to_str().unwrap()])
        .output()
        .unwrap()
}

fn digest(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn ledgers_that_cannot_be_used_are_refused_with_exit_4_and_left_untouched() {
    // As root, the read-only directory case runs `init` through `setpriv`.
    if crate::common::tools::is_root() && !crate::common::tools::require_tool("setpriv") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    // Ledger path in a missing directory: named, nothing created.
    let missing = d.join("no-such-dir").join("ledger.sqlite");
    let c = config_with(d, |t| {
        t.replace(
            &d.join("ledger.sqlite").display().to_string(),
            &missing.display().to_string(),
        )
    });
    for sub in ["run", "status"] {
        let o = if sub == "run" {
            run(d, &["run", "--config", c.to_str().unwrap()])
        } else {
            run(d, &["status", "--ledger", missing.to_str().unwrap()])
        };
        tried();
        assert_eq!(code(&o), 4, "{sub}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no-such-dir/ledger.sqlite"),
            "{}",
            stderr(&o)
        );
        assert!(!d.join("no-such-dir").exists());
    }
    // Ledger path in a read-only directory.
    let ro = d.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let o = init_as_unprivileged(d, &ro.join("ledger.sqlite"));
    tried();
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("read-only/ledger.sqlite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "nothing created"
    );
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A file that is not SQLite: refused by every command, byte-for-byte unchanged.
    let junk = d.join("ledger.sqlite");
    std::fs::write(&junk, "refund,amount\nR1,12.50\n".repeat(300)).unwrap();
    let before = digest(&junk);
    let c = config_with(d, |t| t);
    for args in [
        vec!["run", "--config", c.to_str().unwrap()],
        vec!["init", "--ledger", junk.to_str().unwrap()],
        vec!["status", "--ledger", junk.to_str().unwrap()],
        vec![
            "add",
            "--ledger",
            junk.to_str().unwrap(),
            "--out-refund-no",
            "R1",
            "--amount",
            "1",
            "--currency",
            "USD",
        ],
    ] {
        let o = run(d, &args);
        tried();
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("ledger.sqlite"), "{}", stderr(&o));
        assert_eq!(digest(&junk), before, "{args:?} changed the file");
    }
    std::fs::remove_file(&junk).unwrap();

    // A ledger with a newer schema version: refused, version named, unchanged.
    assert_eq!(
        code(&run(d, &["init", "--ledger", junk.to_str().unwrap()])),
        0
    );
    {
        let conn = rusqlite::Connection::open(&junk).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA user_version = {}; PRAGMA wal_checkpoint(TRUNCATE);",
            checus_reconciler::ledger::SCHEMA_VERSION + 1
        ))
        .unwrap();
    }
    let before = digest(&junk);
    for args in [
        vec!["run", "--config", c.to_str().unwrap()],
        vec!["status", "--ledger", junk.to_str().unwrap()],
    ] {
        let o = run(d, &args);
        tried();
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let newer = (checus_reconciler::ledger::SCHEMA_VERSION + 1).to_string();
        assert!(stderr(&o).contains(&newer), "{}", stderr(&o));
        assert!(stderr(&o).contains("ledger.sqlite"), "{}", stderr(&o));
        assert_eq!(digest(&junk), before, "{args:?} changed the file");
    }
}

#[test]
fn bad_import_rows_are_refused_with_exit_5_naming_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    let long = "R".repeat(65);
    let cases: Vec<(String, &str)> = vec![
        (",10.00,USD".into(), "outRefundNo"),
        (format!("{long},10.00,USD"), "outRefundNo"),
        ("R 1,10.00,USD".into(), "outRefundNo"),
        ("R-OK-1,10.00,USD".into(), "duplicate"),
        ("R-X,abc,USD".into(), "amount"),
        ("R-X,-5.00,USD".into(), "amount"),
        ("R-X,0,USD".into(), "amount"),
        ("R-X,1e3,USD".into(), "amount"),
        ("R-X,1.005,USD".into(), "amount"),
        ("R-X,10.5,IDR".into(), "amount"),
        ("R-X,1.123,KWD".into(), "amount"),
        ("R-X,10.00,usd".into(), "currency"),
        ("R-X,10.00,US".into(), "currency"),
        ("R-X,10.00,XYZ1".into(), "currency"),
        ("R-X,10.00,USD,REFUND_DONE".into(), "status"),
        ("R-X,10.00,USD,REFUND_SUCCESS".into(), "status"),
    ];
    for (row, field) in &cases {
        let with_status = row.matches(',').count() == 3;
        let header = if with_status {
            "out_refund_no,amount,currency,status"
        } else {
            "out_refund_no,amount,currency"
        };
        let good = if with_status {
            "R-OK-1,10.00,USD,REFUND_PENDING"
        } else {
            "R-OK-1,10.00,USD"
        };
        let file = d.join("refunds.csv");
        std::fs::write(&file, format!("{header}\n{good}\n{row}\n")).unwrap();
        let o = run(
            d,
            &[
                "import",
                "--ledger",
                ledger.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        );
        tried();
        let msg = stderr(&o);
        assert_eq!(code(&o), 5, "{row}: {msg}");
        assert!(msg.contains("refunds.csv:3"), "{row}: {msg:?} names no row");
        assert!(msg.contains(field), "{row}: {msg:?} does not name {field}");
        assert!(!ledger.exists(), "{row}: nothing written");
    }
    // The same rules for JSONL, and a malformed line names its line.
    for (line, field) in [
        (
            r#"{"outRefundNo":"","amount":"1.00","currency":"USD"}"#,
            "outRefundNo",
        ),
        (
            r#"{"outRefundNo":"R-J","amount":"-1","currency":"USD"}"#,
            "amount",
        ),
        (
            r#"{"outRefundNo":"R-J","amount":1.005,"currency":"USD"}"#,
            "amount",
        ),
        (
            r#"{"outRefundNo":"R-J","amount":"1.00","currency":"DOLLARS"}"#,
            "currency",
        ),
        (
            r#"{"outRefundNo":"R-J","amount":"1.00","currency":"USD","status":"DONE"}"#,
            "status",
        ),
        (
            r#"{"outRefundNo":"R-J","amount":"1.00","currency":"USD","colour":"red"}"#,
            "colour",
        ),
        (r#"{"outRefundNo":"R-J", nope"#, "refunds.jsonl:2"),
    ] {
        let file = d.join("refunds.jsonl");
        std::fs::write(
            &file,
            format!(
                "{}\n{line}\n",
                r#"{"outRefundNo":"R-J-OK","amount":"1.00","currency":"USD"}"#
            ),
        )
        .unwrap();
        let o = run(
            d,
            &[
                "import",
                "--ledger",
                ledger.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        );
        tried();
        let msg = stderr(&o);
        assert_eq!(code(&o), 5, "{line}: {msg}");
        assert!(msg.contains("refunds.jsonl:2"), "{line}: {msg:?}");
        assert!(msg.contains(field), "{line}: {msg:?} does not name {field}");
        assert!(!ledger.exists(), "{line}: nothing written");
    }
    // A row clashing with the ledger: nothing from the file is written.
    let file = d.join("ok.csv");
    std::fs::write(&file, "out_refund_no,amount,currency\nR-A,1.00,USD\n").unwrap();
    assert_eq!(
        code(&run(
            d,
            &[
                "import",
                "--ledger",
                ledger.to_str().unwrap(),
                file.to_str().unwrap()
            ]
        )),
        0
    );
    let before = crate::common::proc::count(&ledger, "refunds");
    std::fs::write(
        &file,
        "out_refund_no,amount,currency\nR-B,1.00,USD\nR-A,2.00,USD\n",
    )
    .unwrap();
    let o = run(
        d,
        &[
            "import",
            "--ledger",
            ledger.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    tried();
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("ok.csv:3"), "{}", stderr(&o));
    assert_eq!(crate::common::proc::count(&ledger, "refunds"), before);
    eprintln!(
        "bad input: {} cases in this test, each refused with its exit code, nothing written",
        TRIED.load(std::sync::atomic::Ordering::SeqCst)
    );
}
