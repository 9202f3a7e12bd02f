//! Limits the command line and schema.sql both enforce, named once. schema.sql cannot import
//! a Rust constant, so a test below reads its CHECKs and fails if the numbers drift apart.

/// The longest operator name (`--by`, `operator_actions.actor`), in characters.
pub const MAX_ACTOR_CHARS: usize = 128;

/// The longest audit reason (`--reason`, `operator_actions.reason`), in characters.
pub const MAX_REASON_CHARS: usize = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../schema.sql");

    /// Every `length(<column>) BETWEEN 1 AND <n>` CHECK in schema.sql, as the numbers found.
    fn check_limits(column: &str) -> Vec<usize> {
        let needle = format!("length({column}) BETWEEN 1 AND ");
        SCHEMA
            .match_indices(&needle)
            .map(|(at, _)| {
                let rest = &SCHEMA[at + needle.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().expect("a number after BETWEEN 1 AND")
            })
            .collect()
    }

    #[test]
    fn schema_checks_use_the_same_limits() {
        let actor = check_limits("actor");
        assert!(!actor.is_empty(), "schema.sql has no actor length CHECK");
        assert!(actor.iter().all(|&n| n == MAX_ACTOR_CHARS), "{actor:?}");
        let reason = check_limits("reason");
        assert!(!reason.is_empty(), "schema.sql has no reason length CHECK");
        assert!(reason.iter().all(|&n| n == MAX_REASON_CHARS), "{reason:?}");
    }
}
