//! The merchant application's SQL contract: the exact statements its code (or an operator in
//! the `sqlite3` shell) uses to add refunds and record verified notifications. The text lives
//! in `contract.sql` so the README can copy it verbatim and the tests can execute it verbatim.

/// The whole contract file, comments included.
pub const CONTRACT_SQL: &str = include_str!("contract.sql");

/// The same contract for a PostgreSQL ledger (`schema.postgres.sql`): the same snippet names,
/// with `$1..$n` placeholders.
pub const CONTRACT_POSTGRES_SQL: &str = include_str!("contract.postgres.sql");

/// Names of the snippets in [`CONTRACT_SQL`], in file order.
pub const SNIPPETS: [&str; 3] = [
    "insert_refund",
    "insert_failed_refund",
    "record_notification",
];

const MARKER: &str = "-- contract: ";

/// The text of one snippet: from its `-- contract: NAME` line (included) up to the next
/// marker or the end of the file, with surrounding blank lines trimmed. `None` for an unknown
/// name.
pub fn snippet(name: &str) -> Option<&'static str> {
    snippet_of(CONTRACT_SQL, name)
}

/// [`snippet`] of the PostgreSQL contract ([`CONTRACT_POSTGRES_SQL`]).
pub fn postgres_snippet(name: &str) -> Option<&'static str> {
    snippet_of(CONTRACT_POSTGRES_SQL, name)
}

fn snippet_of(file: &'static str, name: &str) -> Option<&'static str> {
    let start = file.find(&format!("{MARKER}{name}\n"))?;
    let rest = &file[start..];
    let end = rest[MARKER.len()..]
        .find(MARKER)
        .map_or(rest.len(), |i| i + MARKER.len());
    Some(rest[..end].trim())
}
