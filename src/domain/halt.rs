//! What a halt is called where it is stored and read: a stable [`HaltCode`] for the ledger's
//! `sweeps.halt_code` column (which `status` reads), and the one-line description of a
//! [`Halt`] that operators see in the log, in `STATUS=` and in `sweeps.halted_reason`.
//! The code, not the sentence, is the contract: the sentence may be reworded freely.

use std::fmt;
use std::str::FromStr;

use super::decide::Halt;
use super::refund::InvalidValue;

/// The kind of a halt, as `sweeps.halt_code` stores it (schema.sql's CHECK lists the same
/// strings; a unit test ties them together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HaltCode {
    /// `config_error`: Checus rejected our configuration (key, merchant, app id).
    ConfigError,
    /// `clock_skew`: REQ_TIME_OVER_TIME, again after a retry with a fresh requestTime.
    ClockSkew,
}

impl HaltCode {
    /// Every code, for tables and tests.
    pub const ALL: [HaltCode; 2] = [HaltCode::ConfigError, HaltCode::ClockSkew];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigError => "config_error",
            Self::ClockSkew => "clock_skew",
        }
    }
}

impl fmt::Display for HaltCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HaltCode {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new(
                    "halt_code",
                    format!("unknown halt code {s:?} (expected config_error or clock_skew)"),
                )
            })
    }
}

impl Halt {
    /// The halt's stable code.
    pub fn code(&self) -> HaltCode {
        match self {
            Self::ConfigError { .. } => HaltCode::ConfigError,
            Self::ClockSkew => HaltCode::ClockSkew,
        }
    }
}

/// The operator's one-line description (log `reason` field, `STATUS=`, `halted_reason`).
impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigError { code } => write!(f, "configuration rejected by Checus ({code})"),
            Self::ClockSkew => {
                f.write_str("clock skew: requestTime off by more than 2 minutes (check NTP)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_schema_check() {
        for code in HaltCode::ALL {
            assert_eq!(code.as_str().parse::<HaltCode>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert!("halted".parse::<HaltCode>().is_err());
        // schema.sql's CHECK lists exactly these strings, in this order.
        let schema = include_str!("../../schema.sql");
        let listed = HaltCode::ALL.map(|c| format!("'{c}'")).join(", ");
        let check = format!("CHECK (halt_code IN ({listed}))");
        assert!(schema.contains(&check), "schema.sql lacks {check}");
    }

    #[test]
    fn each_halt_has_its_code_and_a_sentence() {
        let config = Halt::ConfigError {
            code: "SIGN_VERIFY_FAILED".into(),
        };
        assert_eq!(config.code(), HaltCode::ConfigError);
        assert_eq!(
            config.to_string(),
            "configuration rejected by Checus (SIGN_VERIFY_FAILED)"
        );
        assert_eq!(Halt::ClockSkew.code(), HaltCode::ClockSkew);
        assert!(Halt::ClockSkew.to_string().starts_with("clock skew"));
    }
}
