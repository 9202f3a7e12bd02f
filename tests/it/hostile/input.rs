//! Hostile input (issue 10 parts 7, 8 and 11): values typed into `add`, files given to
//! `import`, and text the merchant's SQL stored, through the real binary. Refused input exits 5
//! naming the file, line or flag and writes nothing; stored control characters are printed
//! escaped (`\u{1b}`) by every text output, never raw.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use checus_reconciler::ledger::contract::snippet;

use crate::common::proc::{cmd, code, run, sql, stderr, stdout};

/// A terminal escape that would clear the screen and set the window title if printed raw.
const ESCAPE: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}";

/// `add` into `ledger` with `extra` flags after a valid refund's.
fn add(dir: &Path, ledger: &Path, no: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "add",
        "--ledger",
        ledger.to_str().unwrap(),
        "--out-refund-no",
        no,
        "--amount",
        "12.50",
        "--currency",
        "USD",
    ];
    args.extend_from_slice(extra);
    run(dir, &args)
}

/// `import` of `file` into `ledger`.
fn import(dir: &Path, ledger: &Path, file: &Path) -> Output {
    run(
        dir,
        &[
            "import",
            "--ledger",
            ledger.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    )
}

/// Asserts `o` is a refusal with exit 5 whose message contains every `needle` and no raw
/// control character other than the final newlines.
fn assert_refused(o: &Output, needles: &[&str]) {
    let msg = stderr(o);
    assert_eq!(code(o), 5, "{msg}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not name {n:?}");
    }
    assert!(
        !msg.trim_end().chars().any(|c| c.is_control() && c != '\n'),
        "{msg:?} prints a raw control character"
    );
}

#[test]
fn add_refuses_control_characters_in_every_text_flag() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    for (flag, field) in [
        ("--out-trade-no", "outTradeNo"),
        ("--refund-trade-no", "refundTradeNo"),
    ] {
        for value in [
            format!("ORD-{ESCAPE}"),
            "a\nb".into(),
            "a\u{9b}2J".into(),
            "a\u{202e}b".into(),
        ] {
            let o = add(d, &ledger, "R-1", &[flag, &value]);
            assert_refused(&o, &[field]);
        }
    }
    let o = run(
        d,
        &[
            "add",
            "--ledger",
            ledger.to_str().unwrap(),
            "--out-refund-no",
            &format!("R{ESCAPE}"),
            "--amount",
            "1.00",
            "--currency",
            "USD",
        ],
    );
    assert_refused(&o, &["outRefundNo"]);
    assert!(!ledger.exists(), "a refused add wrote nothing");
}

#[test]
fn add_refuses_a_created_at_outside_the_ledger_range_naming_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    for at in [
        // Year 10000 once converted to UTC: the CHECK refused it with raw SQL text.
        "9999-12-31T23:59:59-01:00",
        // Year -1 in UTC.
        "0000-01-01T00:00:00+01:00",
        // Second 60: stored, then never scheduled (next_query_at NULL forever).
        "2026-06-30T23:59:60Z",
        "1969-12-31T23:59:59Z",
        "2999-01-01T00:00:00Z",
        "2026-02-31T00:00:00Z",
        "not a time",
    ] {
        let o = add(d, &ledger, "R-1", &["--created-at", at]);
        assert_refused(&o, &["--created-at"]);
        let msg = stderr(&o);
        assert!(!msg.contains("CHECK"), "{at}: raw CHECK text: {msg}");
        assert!(!ledger.exists(), "{at}: a refused add wrote nothing");
    }
    let o = add(
        d,
        &ledger,
        "R-1",
        &["--created-at", "2024-02-29T12:00:00+08:00"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn add_refuses_an_amount_too_long_to_store_with_a_readable_message() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    // Both parse exactly but are longer than the schema's 28 characters once stored: the
    // CHECK refused them with exit 1 and raw SQL text.
    for (amount, currency) in [
        ("10000000000000000000000000000", "JPY"),
        ("1000000000000000000000000000.0", "USD"),
    ] {
        let o = run(
            d,
            &[
                "add",
                "--ledger",
                ledger.to_str().unwrap(),
                "--out-refund-no",
                "R-1",
                "--amount",
                amount,
                "--currency",
                currency,
            ],
        );
        assert_refused(&o, &["amount", "28"]);
        assert!(!stderr(&o).contains("CHECK"), "{amount}: {}", stderr(&o));
    }
}

#[test]
fn import_refuses_a_column_given_twice_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    for (header, named) in [
        ("out_refund_no,amount,currency,amount", "amount"),
        ("outRefundNo,out_refund_no,amount,currency", "out_refund_no"),
    ] {
        let file = d.join("dup.csv");
        std::fs::write(&file, format!("{header}\nR-1,1.00,USD,2.00\n")).unwrap();
        let o = import(d, &ledger, &file);
        assert_refused(&o, &["dup.csv:1", named, "duplicate column"]);
        assert!(!ledger.exists(), "{header}: nothing written");
    }
}

#[test]
fn import_of_an_endless_line_ends_with_exit_5_not_an_abort() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    for format in ["csv", "jsonl"] {
        let mut child = cmd(d)
            .args([
                "import",
                "--ledger",
                ledger.to_str().unwrap(),
                "--format",
                format,
                "/dev/zero",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: without the line cap this reads until memory runs out.
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("import /dev/zero --format {format} still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert_refused(&o, &["/dev/zero:1", "65536 bytes"]);
        assert!(!ledger.exists(), "{format}: nothing written");
    }
}

#[test]
fn a_bom_is_accepted_at_the_start_of_csv_and_jsonl_alike() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    let csv = d.join("bom.csv");
    std::fs::write(
        &csv,
        "\u{feff}out_refund_no,amount,currency\nR-BOM-CSV,1.00,USD\n",
    )
    .unwrap();
    let jsonl = d.join("bom.jsonl");
    std::fs::write(
        &jsonl,
        "\u{feff}{\"outRefundNo\":\"R-BOM-JSONL\",\"amount\":\"1.00\",\"currency\":\"USD\"}\n",
    )
    .unwrap();
    for file in [&csv, &jsonl] {
        let o = import(d, &ledger, file);
        assert_eq!(code(&o), 0, "{}: {}", file.display(), stderr(&o));
    }
    let list = stdout(&run(d, &["list", "--ledger", ledger.to_str().unwrap()]));
    assert!(
        list.contains("R-BOM-CSV") && list.contains("R-BOM-JSONL"),
        "{list}"
    );
}

#[test]
fn import_refuses_control_characters_naming_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    let file = d.join("esc.csv");
    std::fs::write(
        &file,
        format!("out_refund_no,amount,currency,refund_trade_no\nR-1,1.00,USD,T-1\nR-2,1.00,USD,T-{ESCAPE}\n"),
    )
    .unwrap();
    assert_refused(&import(d, &ledger, &file), &["esc.csv:3", "refundTradeNo"]);
    let file = d.join("esc.jsonl");
    std::fs::write(
        &file,
        "{\"outRefundNo\":\"R-1\",\"amount\":\"1.00\",\"currency\":\"USD\",\"outTradeNo\":\"\\u001b[31m\"}\n",
    )
    .unwrap();
    assert_refused(&import(d, &ledger, &file), &["esc.jsonl:1", "outTradeNo"]);
    assert!(!ledger.exists());
}

/// True when `text` holds a control character other than a line break: what a terminal runs.
fn has_raw_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

#[test]
fn stored_control_characters_are_printed_escaped_by_every_text_output() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    let l = ledger.to_str().unwrap();
    assert_eq!(code(&add(d, &ledger, "R-OK", &[])), 0);
    // The merchant's SQL contract cannot be stopped from storing them.
    let c = sql(&ledger);
    let bad = format!("T-{ESCAPE}\r\n");
    c.execute(
        snippet("insert_refund").unwrap(),
        rusqlite::named_params! {":out_refund_no": "R-ESC", ":refund_trade_no": bad,
        ":out_trade_no": format!("O-{ESCAPE}"), ":amount": "12.50", ":currency": "USD"},
    )
    .unwrap();
    c.execute(
        snippet("insert_failed_refund").unwrap(),
        rusqlite::named_params! {":out_refund_no": "R-ESC-F", ":refund_trade_no": bad,
        ":out_trade_no": None::<String>, ":amount": "3.00", ":currency": "USD"},
    )
    .unwrap();
    drop(c);
    let outputs = [
        vec!["show", "--ledger", l, "R-ESC"],
        vec!["explain", "--ledger", l, "R-ESC"],
        vec!["list", "--ledger", l],
        vec!["failed", "--ledger", l],
        vec!["export", "--ledger", l, "--since", "30d", "--format", "csv"],
    ];
    for args in outputs {
        let o = run(d, &args);
        let out = stdout(&o);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert!(!has_raw_control(&out), "{args:?} printed it raw: {out:?}");
        assert!(!has_raw_control(&stderr(&o)), "{args:?}: {}", stderr(&o));
        if args[0] != "list" {
            assert!(
                out.contains("T-\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"),
                "{args:?}: {out}"
            );
        }
    }
    // JSON escapes by itself, and keeps the exact value.
    let o = run(
        d,
        &[
            "export", "--ledger", l, "--since", "30d", "--format", "jsonl",
        ],
    );
    let out = stdout(&o);
    assert!(!has_raw_control(&out), "{out:?}");
    let row: serde_json::Value = out
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|v| v["out_refund_no"] == "R-ESC")
        .expect("R-ESC exported");
    assert_eq!(row["refund_trade_no"], bad.as_str());
}

/// Serves one `/refundQuery` answer: HTTP 200, `body` signed with the INSECURE gateway key,
/// to the first connection on a fresh loopback port. Returns the base URL.
fn serve_one_signed_answer(body: String) -> String {
    use std::io::Write;
    let key = checus_reconciler::gateway::keys::MerchantKey::from_text(
        checus_reconciler::sandbox::test_keys::INSECURE_GATEWAY_PRIVATE_PEM,
    )
    .unwrap();
    let sign = key.sign_b64(body.as_bytes());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        crate::common::proc::read_http_request(&mut s);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nsign: {sign}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
    });
    url
}

#[test]
fn a_signed_amount_that_only_rounds_to_the_refund_never_finalizes_it() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let ledger = d.join("ledger.sqlite");
    assert_eq!(code(&add(d, &ledger, "R-1", &[])), 0, "12.50 USD pending");
    // 12.4999…9 (31 nines) is not 12.50; Decimal::from_scientific rounded it to 12.50.
    let body =
        r#"{"code":"APPLY_SUCCESS","msg":"Success.","data":{"outRefundNo":"R-1","refundTradeNo":"T1","refundAmount":12.4999999999999999999999999999999e0,"refundCurrency":"USD","status":"REFUND_SUCCESS","refundFinishTime":"2026-11-30T03:28:23.092Z"}}"#
            .to_owned();
    let url = serve_one_signed_answer(body);
    let config = crate::common::proc::write_config(d, &url, "");
    let o = run(d, &["query", "R-1", "--config", config.to_str().unwrap()]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    let status: String = sql(&ledger)
        .query_row(
            "SELECT status FROM refunds WHERE out_refund_no = 'R-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        status, "REFUND_PENDING",
        "rounded into a final outcome: {out}"
    );
    let error: String = sql(&ledger)
        .query_row(
            "SELECT error FROM attempts ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no attempt recorded ({e}): {out}"));
    assert!(
        error.contains("refundAmount") && error.contains("exact"),
        "{error}"
    );
}
