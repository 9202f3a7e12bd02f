//! RSA keys in the forms the Checus portal hands out: the merchant's PKCS#8 private key and
//! the gateway's SubjectPublicKeyInfo public key, each as bare base64 DER (or PEM). Keys are
//! parsed once at start-up; nothing here ever prints, logs or formats key material.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::PublicEncryptingKey;
use aws_lc_rs::signature::{
    KeyPair, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// Standard base64 that decodes with or without the `=` padding (and refuses wrong padding
/// lengths and non-canonical trailing bits, like [`STANDARD`]). Only for a `sign` header we
/// verify: what we send is always padded.
const STANDARD_PADDING_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key could not be loaded. Messages describe the shape of the problem, never the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Neither PEM nor standard base64.
    #[error("is neither PEM nor base64-encoded DER")]
    NotBase64OrPem,
    /// Decoded, but not an RSA private key in PKCS#8 or PKCS#1 form.
    #[error("is not an RSA private key (expected PKCS#8 DER, as the Checus portal gives it)")]
    NotPrivateKey,
    /// A public key where the private key was expected.
    #[error(
        "is a public key; the merchant *private* key is required here (keep the public one for the Checus portal)"
    )]
    PublicGivenAsPrivate,
    /// Decoded, but not an RSA SubjectPublicKeyInfo.
    #[error(
        "is not an RSA public key (expected X.509 SubjectPublicKeyInfo DER, as the Checus portal gives it)"
    )]
    NotPublicKey,
    /// A private key where the gateway public key was expected.
    #[error(
        "is a private key; the Checus gateway *public* key is required here (download it from the Checus portal)"
    )]
    PrivateGivenAsPublic,
}

/// The format a private key arrived in, so callers can say what they converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateKeyFormat {
    /// PKCS#8 `PrivateKeyInfo`, the documented form.
    Pkcs8,
    /// PKCS#1 `RSAPrivateKey` (`BEGIN RSA PRIVATE KEY`), accepted and used as PKCS#8 would be.
    Pkcs1,
}

/// Extracts DER from PEM (any label) or bare base64 (whitespace tolerated), returning the PEM
/// label if there was one.
fn decode_der(text: &str) -> Result<(Vec<u8>, Option<String>), KeyError> {
    let trimmed = text.trim();
    if let Some(rest) = trimmed.strip_prefix("-----BEGIN ") {
        let (label, body) = rest.split_once("-----").ok_or(KeyError::NotBase64OrPem)?;
        let end = format!("-----END {label}-----");
        let body = body
            .split(end.as_str())
            .next()
            .ok_or(KeyError::NotBase64OrPem)?;
        if !trimmed.contains(&end) {
            return Err(KeyError::NotBase64OrPem);
        }
        let b64: String = body.split_whitespace().collect();
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| KeyError::NotBase64OrPem)?;
        return Ok((der, Some(label.to_owned())));
    }
    let b64: String = trimmed.split_whitespace().collect();
    if b64.is_empty() {
        return Err(KeyError::NotBase64OrPem);
    }
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| KeyError::NotBase64OrPem)?;
    Ok((der, None))
}

/// The merchant's private key: signs every request body.
pub struct MerchantKey {
    pair: RsaKeyPair,
    format: PrivateKeyFormat,
    rng: SystemRandom,
}

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MerchantKey(<redacted>)")
    }
}

impl MerchantKey {
    /// Loads a private key from bare base64 DER or PEM; PKCS#8 or PKCS#1.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let (der, _label) = decode_der(text)?;
        let (pair, format) = if let Ok(pair) = RsaKeyPair::from_pkcs8(&der) {
            (pair, PrivateKeyFormat::Pkcs8)
        } else if let Ok(pair) = RsaKeyPair::from_der(&der) {
            (pair, PrivateKeyFormat::Pkcs1)
        } else if PublicEncryptingKey::from_der(&der).is_ok() {
            return Err(KeyError::PublicGivenAsPrivate);
        } else {
            return Err(KeyError::NotPrivateKey);
        };
        Ok(Self {
            pair,
            format,
            rng: SystemRandom::new(),
        })
    }

    /// The form the key arrived in.
    pub fn format(&self) -> PrivateKeyFormat {
        self.format
    }

    /// SHA256withRSA (RSASSA-PKCS1-v1_5) over `body`, standard base64 with padding.
    pub fn sign_b64(&self, body: &[u8]) -> String {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, body, &mut sig)
            .expect("RSA signing with a validated key and a correctly sized buffer cannot fail");
        STANDARD.encode(sig)
    }

    /// The matching public key as SubjectPublicKeyInfo DER (what the portal wants uploaded).
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.pair
            .public_key()
            .as_der()
            .map(|d: PublicKeyX509Der<'static>| d.as_ref().to_vec())
            .expect("an RSA public key always encodes as SPKI")
    }

    /// The matching public key as a verifier.
    pub fn public_key(&self) -> GatewayKey {
        GatewayKey {
            key: ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, self.public_key_spki_der())
                .expect("the SPKI of our own RSA key pair parses"),
        }
    }
}

/// A public key that verifies signatures: the gateway's (for answers) or, in the sandbox,
/// the merchant's (for requests).
pub struct GatewayKey {
    /// Parsed once when the config is loaded: `UnparsedPublicKey` would re-parse the DER on
    /// every verification, once per answer.
    key: ParsedPublicKey,
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayKey(RSA SubjectPublicKeyInfo)")
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `sign` header is not standard base64.
    #[error("sign header is not standard base64")]
    NotBase64,
    /// The signature does not verify over the exact bytes.
    #[error("signature does not verify")]
    Invalid,
}

impl GatewayKey {
    /// Loads a public key from bare base64 SPKI DER or PEM (`BEGIN PUBLIC KEY`).
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let (der, _label) = decode_der(text)?;
        if PublicEncryptingKey::from_der(&der).is_ok() {
            let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                .map_err(|_| KeyError::NotPublicKey)?;
            return Ok(Self { key });
        }
        if RsaKeyPair::from_pkcs8(&der).is_ok() || RsaKeyPair::from_der(&der).is_ok() {
            return Err(KeyError::PrivateGivenAsPublic);
        }
        Err(KeyError::NotPublicKey)
    }

    /// Verifies a standard-base64 SHA256withRSA signature over exactly `body`. The `=` padding
    /// may be missing (issue 11: some stacks strip it); the alphabet and the bits must be
    /// exact, so nothing ambiguous is accepted.
    pub fn verify_b64(&self, body: &[u8], sign_b64: &str) -> Result<(), SignatureError> {
        let sig = STANDARD_PADDING_OPTIONAL
            .decode(sign_b64.trim().as_bytes())
            .map_err(|_| SignatureError::NotBase64)?;
        self.key
            .verify_sig(body, &sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERCHANT_PRIVATE_PEM: &str =
        include_str!("../../testdata/INSECURE-test-keys/merchant_private.pem");
    const MERCHANT_PRIVATE_B64: &str =
        include_str!("../../testdata/INSECURE-test-keys/merchant_private.b64");
    const MERCHANT_PUBLIC_PEM: &str =
        include_str!("../../testdata/INSECURE-test-keys/merchant_public.pem");
    const MERCHANT_PUBLIC_B64: &str =
        include_str!("../../testdata/INSECURE-test-keys/merchant_public.b64");
    const STRANGER_PUBLIC_PEM: &str =
        include_str!("../../testdata/INSECURE-test-keys/stranger_public.pem");

    #[test]
    fn pem_and_bare_base64_are_the_same_key() {
        let body = br#"{"a":1}"#;
        for private in [MERCHANT_PRIVATE_PEM, MERCHANT_PRIVATE_B64] {
            let key = MerchantKey::from_text(private).unwrap();
            assert_eq!(key.format(), PrivateKeyFormat::Pkcs8);
            let sign = key.sign_b64(body);
            for public in [MERCHANT_PUBLIC_PEM, MERCHANT_PUBLIC_B64] {
                GatewayKey::from_text(public)
                    .unwrap()
                    .verify_b64(body, &sign)
                    .unwrap();
            }
            key.public_key().verify_b64(body, &sign).unwrap();
            assert_eq!(
                GatewayKey::from_text(STRANGER_PUBLIC_PEM)
                    .unwrap()
                    .verify_b64(body, &sign),
                Err(SignatureError::Invalid)
            );
        }
        let spki = MerchantKey::from_text(MERCHANT_PRIVATE_B64)
            .unwrap()
            .public_key_spki_der();
        assert_eq!(STANDARD.encode(spki), MERCHANT_PUBLIC_B64.trim());
    }

    #[test]
    fn wrong_kinds_of_key_are_named() {
        assert_eq!(
            MerchantKey::from_text(MERCHANT_PUBLIC_B64).unwrap_err(),
            KeyError::PublicGivenAsPrivate
        );
        assert_eq!(
            GatewayKey::from_text(MERCHANT_PRIVATE_B64).unwrap_err(),
            KeyError::PrivateGivenAsPublic
        );
        for garbage in [
            "",
            "   ",
            "not base64 at all!",
            "-----BEGIN PUBLIC KEY-----\nAAAA",
        ] {
            assert_eq!(
                MerchantKey::from_text(garbage).unwrap_err(),
                KeyError::NotBase64OrPem,
                "{garbage:?}"
            );
        }
        assert_eq!(
            GatewayKey::from_text("AAAA").unwrap_err(),
            KeyError::NotPublicKey
        );
        assert_eq!(
            MerchantKey::from_text("AAAA").unwrap_err(),
            KeyError::NotPrivateKey
        );
    }

    #[test]
    fn signatures_are_standard_base64_and_verification_is_strict() {
        let key = MerchantKey::from_text(MERCHANT_PRIVATE_B64).unwrap();
        let public = key.public_key();
        let sign = key.sign_b64(b"body");
        assert_eq!(sign.len(), 344);
        assert!(sign.ends_with('='));
        assert_eq!(
            public.verify_b64(b"body", "not*base64"),
            Err(SignatureError::NotBase64)
        );
        assert_eq!(public.verify_b64(b"body", ""), Err(SignatureError::Invalid));
        assert_eq!(
            public.verify_b64(b"body ", &sign),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = MerchantKey::from_text(MERCHANT_PRIVATE_B64).unwrap();
        assert_eq!(format!("{key:?}"), "MerchantKey(<redacted>)");
        let public = GatewayKey::from_text(MERCHANT_PUBLIC_B64).unwrap();
        assert!(!format!("{public:?}").contains(&MERCHANT_PUBLIC_B64[30..60]));
    }
}
