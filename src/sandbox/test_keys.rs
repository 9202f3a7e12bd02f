//! INSECURE RSA test keys, compiled in once so the demo, the tests and the benchmarks share a
//! single copy of `testdata/INSECURE-test-keys/`. Their private halves are public knowledge:
//! they exist only to talk to the sandbox and must never sign anything real.

use crate::gateway::{GatewayKey, MerchantKey};

/// INSECURE merchant private key (PKCS#8 PEM): signs requests to the sandbox.
pub const INSECURE_MERCHANT_PRIVATE_PEM: &str =
    include_str!("../../testdata/INSECURE-test-keys/merchant_private.pem");
/// INSECURE merchant private key as bare base64 PKCS#8 DER (the Checus portal form).
pub const INSECURE_MERCHANT_PRIVATE_B64: &str =
    include_str!("../../testdata/INSECURE-test-keys/merchant_private.b64");
/// INSECURE merchant public key (SPKI PEM): the sandbox verifies requests with it.
pub const INSECURE_MERCHANT_PUBLIC_PEM: &str =
    include_str!("../../testdata/INSECURE-test-keys/merchant_public.pem");
/// INSECURE merchant public key as bare base64 SPKI DER.
pub const INSECURE_MERCHANT_PUBLIC_B64: &str =
    include_str!("../../testdata/INSECURE-test-keys/merchant_public.b64");
/// INSECURE simulated-gateway private key (PKCS#8 PEM): the sandbox signs answers with it.
pub const INSECURE_GATEWAY_PRIVATE_PEM: &str =
    include_str!("../../testdata/INSECURE-test-keys/gateway_private.pem");
/// INSECURE simulated-gateway private key as bare base64 PKCS#8 DER.
pub const INSECURE_GATEWAY_PRIVATE_B64: &str =
    include_str!("../../testdata/INSECURE-test-keys/gateway_private.b64");
/// INSECURE simulated-gateway public key (SPKI PEM): clients verify sandbox answers with it.
pub const INSECURE_GATEWAY_PUBLIC_PEM: &str =
    include_str!("../../testdata/INSECURE-test-keys/gateway_public.pem");
/// INSECURE simulated-gateway public key as bare base64 SPKI DER.
pub const INSECURE_GATEWAY_PUBLIC_B64: &str =
    include_str!("../../testdata/INSECURE-test-keys/gateway_public.b64");
/// INSECURE unrelated private key (PEM), for "signed with the wrong key" faults.
pub const INSECURE_STRANGER_PRIVATE_PEM: &str =
    include_str!("../../testdata/INSECURE-test-keys/stranger_private.pem");
/// INSECURE unrelated public key (PEM), the other half of [`INSECURE_STRANGER_PRIVATE_PEM`].
pub const INSECURE_STRANGER_PUBLIC_PEM: &str =
    include_str!("../../testdata/INSECURE-test-keys/stranger_public.pem");

/// Loads a compiled-in key. The files are committed and checked by the unit test below, so a
/// failure here is a broken checkout, not a runtime condition.
fn private(text: &str) -> MerchantKey {
    MerchantKey::from_text(text).expect("committed INSECURE test private key parses")
}

fn public(text: &str) -> GatewayKey {
    GatewayKey::from_text(text).expect("committed INSECURE test public key parses")
}

/// The INSECURE merchant private key, ready to sign requests.
pub fn insecure_merchant_private() -> MerchantKey {
    private(INSECURE_MERCHANT_PRIVATE_PEM)
}

/// The INSECURE merchant public key, ready to verify requests (what the sandbox uses).
pub fn insecure_merchant_public() -> GatewayKey {
    public(INSECURE_MERCHANT_PUBLIC_PEM)
}

/// The INSECURE gateway private key, ready to sign answers (what the sandbox uses).
pub fn insecure_gateway_private() -> MerchantKey {
    private(INSECURE_GATEWAY_PRIVATE_PEM)
}

/// The INSECURE gateway public key, ready to verify sandbox answers (what clients use).
pub fn insecure_gateway_public() -> GatewayKey {
    public(INSECURE_GATEWAY_PUBLIC_PEM)
}

/// The INSECURE stranger private key: valid RSA, but nobody trusts it.
pub fn insecure_stranger_private() -> MerchantKey {
    private(INSECURE_STRANGER_PRIVATE_PEM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_match_and_forms_agree() {
        let body = b"{\"code\":\"APPLY_SUCCESS\"}";
        let merchant = insecure_merchant_private();
        let gateway = insecure_gateway_private();
        let stranger = insecure_stranger_private();
        insecure_merchant_public()
            .verify_b64(body, &merchant.sign_b64(body))
            .unwrap();
        insecure_gateway_public()
            .verify_b64(body, &gateway.sign_b64(body))
            .unwrap();
        assert!(
            insecure_gateway_public()
                .verify_b64(body, &stranger.sign_b64(body))
                .is_err()
        );
        // The bare base64 forms are the same keys as the PEM forms.
        let b64 = MerchantKey::from_text(INSECURE_MERCHANT_PRIVATE_B64).unwrap();
        GatewayKey::from_text(INSECURE_MERCHANT_PUBLIC_B64)
            .unwrap()
            .verify_b64(body, &b64.sign_b64(body))
            .unwrap();
        let b64 = MerchantKey::from_text(INSECURE_GATEWAY_PRIVATE_B64).unwrap();
        GatewayKey::from_text(INSECURE_GATEWAY_PUBLIC_B64)
            .unwrap()
            .verify_b64(body, &b64.sign_b64(body))
            .unwrap();
        GatewayKey::from_text(INSECURE_STRANGER_PUBLIC_PEM)
            .unwrap()
            .verify_b64(body, &stranger.sign_b64(body))
            .unwrap();
    }
}
