//! The bearer token that guards the refunds API (`http.api_token`): read once like the keys,
//! never shown, compared in constant time.

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};

/// The shortest token accepted: 16 characters leaves no room for a guessable word.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The longest token accepted (a header line, not a file).
pub const MAX_TOKEN_CHARS: usize = 512;

/// Why a token's text was refused. Messages describe its shape, never its characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_CHARS`] once surrounding whitespace is trimmed.
    #[error("is shorter than {MIN_TOKEN_CHARS} characters (use e.g. `openssl rand -hex 32`)")]
    TooShort,
    /// Longer than [`MAX_TOKEN_CHARS`].
    #[error("is longer than {MAX_TOKEN_CHARS} characters")]
    TooLong,
    /// Holds a space, a control character or non-ASCII: it could not travel in an
    /// `Authorization` header unchanged.
    #[error("may hold only visible ASCII characters (no spaces), as an Authorization header does")]
    NotVisibleAscii,
}

/// The API token. Only its SHA-256 is kept: comparing digests of equal length in constant
/// time leaks neither the token's bytes nor its length through timing.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiToken {
    /// The token in `text` (a file's or a variable's content; surrounding whitespace, such as
    /// a file's final newline, is trimmed).
    pub fn from_text(text: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii);
        }
        if token.len() < MIN_TOKEN_CHARS {
            return Err(TokenError::TooShort);
        }
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::TooLong);
        }
        Ok(Self {
            digest: sha256(token.as_bytes()),
        })
    }

    /// True when `presented` (an `Authorization` header's value) is `Bearer <this token>`.
    /// The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
    pub fn admits(&self, presented: &[u8]) -> bool {
        let Some((scheme, token)) = split_once(presented, b' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"Bearer") {
            return false;
        }
        aws_lc_rs::constant_time::verify_slices_are_equal(&sha256(token), &self.digest).is_ok()
    }
}

fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "s3cret-token-0123456789";

    #[test]
    fn tokens_are_trimmed_and_refused_by_shape() {
        assert!(ApiToken::from_text(&format!("{T}\n")).is_ok());
        for (text, want) in [
            ("short", TokenError::TooShort),
            ("", TokenError::TooShort),
            ("has a space in it here", TokenError::NotVisibleAscii),
            ("tökentökentökentöken", TokenError::NotVisibleAscii),
            ("tab\tinside-the-token-text", TokenError::NotVisibleAscii),
        ] {
            assert_eq!(ApiToken::from_text(text), Err(want), "{text:?}");
        }
        assert_eq!(
            ApiToken::from_text(&"x".repeat(MAX_TOKEN_CHARS + 1)),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = ApiToken::from_text(T).unwrap();
        assert!(t.admits(format!("Bearer {T}").as_bytes()));
        assert!(t.admits(format!("bearer {T}").as_bytes()));
        for wrong in [
            String::new(),
            T.to_owned(),
            format!("Basic {T}"),
            format!("Bearer {T}x"),
            format!("Bearer {}", &T[1..]),
            format!("Bearer  {T}"),
            format!("Bearer {T} "),
            "Bearer ".to_owned(),
        ] {
            assert!(!t.admits(wrong.as_bytes()), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "ApiToken(<redacted>)");
    }
}
