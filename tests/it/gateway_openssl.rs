//! Interop with an independent implementation: the `openssl` command line. Requests the
//! client signs must verify with `openssl dgst -sha256 -verify`, and answers signed with
//! `openssl dgst -sha256 -sign` must verify in `GatewayKey` and classify as verified. Tampered
//! bytes and wrong keys must fail on both sides.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use checus_reconciler::domain::{Clock, OutRefundNo, QueryOutcome, RetryReason, Timestamp};
use checus_reconciler::gateway::{
    GatewayClient, GatewayKey, GatewaySettings, MerchantKey, classify, sign_query,
};

fn key_path(name: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "testdata",
        "INSECURE-test-keys",
        name,
    ]
    .iter()
    .collect()
}

fn key_text(name: &str) -> String {
    std::fs::read_to_string(key_path(name)).unwrap()
}

struct FixedClock(Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// Runs `openssl dgst -sha256 -verify <public_pem> -signature <sig> <body>`; true on
/// "Verified OK".
fn openssl_verifies(dir: &Path, public_pem: &Path, body: &[u8], sign_b64: &str) -> bool {
    let body_path = dir.join("body.json");
    let sig_path = dir.join("sig.bin");
    std::fs::write(&body_path, body).unwrap();
    std::fs::write(&sig_path, STANDARD.decode(sign_b64).unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_pem)
        .arg("-signature")
        .arg(&sig_path)
        .arg(&body_path)
        .output()
        .expect("openssl is installed on every machine");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok = out.status.success();
    assert_eq!(ok, stdout.contains("Verified OK"), "{stdout}");
    ok
}

/// Runs `openssl dgst -sha256 -sign <private_pem> <body>` and returns standard base64.
fn openssl_sign(dir: &Path, private_pem: &Path, body: &[u8]) -> String {
    let body_path = dir.join("answer.json");
    std::fs::write(&body_path, body).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(private_pem)
        .arg(&body_path)
        .output()
        .expect("openssl is installed on every machine");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 256, "RSA-2048 signature");
    STANDARD.encode(out.stdout)
}

fn client() -> GatewayClient {
    GatewayClient::new(
        GatewaySettings::new(
            "https://p-gate-uat.checus.com/aggregate-pay/api/gateway",
            "app-interop",
            "M-interop",
        )
        .validate()
        .unwrap(),
        Arc::new(MerchantKey::from_text(&key_text("merchant_private.b64")).unwrap()),
        Arc::new(GatewayKey::from_text(&key_text("gateway_public.b64")).unwrap()),
        Arc::new(FixedClock(
            checus_reconciler::domain::parse_ts("2026-11-25T07:01:23.737Z").unwrap(),
        )),
    )
    .unwrap()
}

#[test]
fn requests_the_client_signs_verify_with_openssl() {
    if !crate::common::tools::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signed = client().sign(&OutRefundNo::parse("R-interop-1").unwrap());
    assert!(
        std::str::from_utf8(&signed.body)
            .unwrap()
            .contains(r#""requestTime":"2026-11-25T07:01:23.737+00:00""#)
    );
    let merchant_public = key_path("merchant_public.pem");
    assert!(openssl_verifies(
        dir.path(),
        &merchant_public,
        &signed.body,
        &signed.sign
    ));

    // Tampering: one changed byte, an appended newline, the wrong public key.
    let mut tampered = signed.body.clone();
    let i = tampered.len() / 2;
    tampered[i] ^= 0x01;
    assert!(!openssl_verifies(
        dir.path(),
        &merchant_public,
        &tampered,
        &signed.sign
    ));
    let mut newline = signed.body.clone();
    newline.push(b'\n');
    assert!(!openssl_verifies(
        dir.path(),
        &merchant_public,
        &newline,
        &signed.sign
    ));
    assert!(!openssl_verifies(
        dir.path(),
        &key_path("stranger_public.pem"),
        &signed.body,
        &signed.sign
    ));
}

#[test]
fn pem_and_bare_base64_merchant_keys_sign_identically() {
    // PKCS#1 v1.5 signatures are deterministic, so both key forms must give the same bytes.
    let settings = GatewaySettings::new("https://x.example/gw", "a", "m");
    let no = OutRefundNo::parse("R-1").unwrap();
    let at = checus_reconciler::domain::parse_ts("2026-01-01T00:00:00Z").unwrap();
    let from_pem = MerchantKey::from_text(&key_text("merchant_private.pem")).unwrap();
    let from_b64 = MerchantKey::from_text(&key_text("merchant_private.b64")).unwrap();
    assert_eq!(
        sign_query(&settings, &from_pem, &no, at).sign,
        sign_query(&settings, &from_b64, &no, at).sign
    );
}

const ANSWER: &str = r#"{"code":"APPLY_SUCCESS","msg":"Success.","data":{"outRefundNo":"R-interop-1","refundTradeNo":"20261125TI0001","refundAmount":10.50,"refundCurrency":"USD","outTradeNo":"O-1","status":"REFUND_SUCCESS","resultMsg":"","refundFinishTime":"2026-11-25T07:05:00.000Z"}}"#;

#[test]
fn answers_signed_by_openssl_verify_and_classify_as_final() {
    if !crate::common::tools::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gateway_key = GatewayKey::from_text(&key_text("gateway_public.pem")).unwrap();
    let sign = openssl_sign(
        dir.path(),
        &key_path("gateway_private.pem"),
        ANSWER.as_bytes(),
    );

    gateway_key.verify_b64(ANSWER.as_bytes(), &sign).unwrap();
    let c = classify(200, Some(&sign), ANSWER.as_bytes(), &gateway_key);
    match c.outcome {
        QueryOutcome::Final(o) => {
            assert_eq!(o.out_refund_no.as_deref(), Some("R-interop-1"));
            assert_eq!(o.amount.unwrap().to_string(), "10.50");
        }
        other => panic!("{other:?}"),
    }

    // Also with the key in the portal's bare-base64 form.
    let bare = GatewayKey::from_text(&key_text("gateway_public.b64")).unwrap();
    bare.verify_b64(ANSWER.as_bytes(), &sign).unwrap();
}

#[test]
fn tampered_or_foreign_answers_fail_verification() {
    if !crate::common::tools::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gateway_key = GatewayKey::from_text(&key_text("gateway_public.pem")).unwrap();
    let good = openssl_sign(
        dir.path(),
        &key_path("gateway_private.pem"),
        ANSWER.as_bytes(),
    );
    let foreign = openssl_sign(
        dir.path(),
        &key_path("stranger_private.pem"),
        ANSWER.as_bytes(),
    );
    let changed = ANSWER.replace("10.50", "10.51");
    let with_newline = format!("{ANSWER}\n");
    let cases: [(&str, &[u8], &str); 3] = [
        ("amount changed after signing", changed.as_bytes(), &good),
        ("signed by the stranger key", ANSWER.as_bytes(), &foreign),
        (
            "trailing newline added after signing",
            with_newline.as_bytes(),
            &good,
        ),
    ];
    for (name, body, sign) in cases {
        assert!(gateway_key.verify_b64(body, sign).is_err(), "{name}");
        let c = classify(200, Some(sign), body, &gateway_key);
        assert!(
            matches!(
                c.outcome,
                QueryOutcome::Retryable {
                    reason: RetryReason::Unverified,
                    ..
                }
            ),
            "{name}: {:?}",
            c.outcome
        );
        // openssl agrees with us.
        assert!(
            !openssl_verifies(dir.path(), &key_path("gateway_public.pem"), body, sign),
            "{name}"
        );
    }
    // And openssl accepts the untampered pair, so the failures above are real.
    assert!(openssl_verifies(
        dir.path(),
        &key_path("gateway_public.pem"),
        ANSWER.as_bytes(),
        &good
    ));
}
