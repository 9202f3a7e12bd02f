//! Migration 0009's rewrite of a table's stored CREATE text: every CHECK of the form
//! `col IN ('a', 'b', 'c')` with three or more text literals becomes
//! `(col = 'a' OR col = 'b' OR col = 'c')`.
//!
//! Why: SQLite evaluates `x IN (list)` of more than two constants by building a temporary
//! index of the list (`OP_OpenEphemeral`), once per statement execution and once per trigger
//! firing. The daemon records each refund with a handful of short statements that check
//! enum columns of `refunds`, `attempts` and `webhook_events`, so it built about 40 such
//! indexes per refund: a third of the ledger's instructions per reconciled refund
//! (`valgrind --tool=callgrind target/release/examples/bench record --refunds 2000 --history
//! 10000`: 907 M instructions before, 597 M after; BENCHMARKS.md figure 1). A comparison
//! chain means exactly the same: `NULL IN (...)` and `NULL = 'a' OR ...` are both NULL, so a
//! CHECK passes or fails on the same rows, and the text stays an ordinary CREATE TABLE that
//! every SQLite (the merchant's `sqlite3` shell too) parses.
//!
//! The same function produced schema.sql's text from version 8's, so a migrated table and a
//! fresh one compare equal once whitespace is collapsed (what verify.rs and
//! tests/it/migrate.rs compare).

/// `sql` with every enum IN-list of three or more text literals written as an OR chain.
pub(super) fn enum_checks_as_comparisons(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 256);
    let mut rest = sql;
    while let Some(at) = rest.find(" IN (") {
        let before = &rest[..at];
        let column_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let column = &before[column_start..];
        let list_start = at + " IN (".len();
        match literals(&rest[list_start..]) {
            Some((items, used)) if !column.is_empty() && items.len() > 2 => {
                out.push_str(&before[..column_start]);
                out.push('(');
                let chain: Vec<String> = items.iter().map(|i| format!("{column} = {i}")).collect();
                out.push_str(&chain.join(" OR "));
                out.push(')');
                rest = &rest[list_start + used..];
            }
            _ => {
                out.push_str(&rest[..list_start]);
                rest = &rest[list_start..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Reads `'a', 'b', ...)` at the start of `text`: the literals as written (quotes kept) and
/// how many bytes the list took up to and including its `)`. `None` when anything other than
/// text literals, commas and whitespace comes before the `)`.
fn literals(text: &str) -> Option<(Vec<&str>, usize)> {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b'\'') {
            return None;
        }
        let start = i;
        i += 1;
        loop {
            match bytes.get(i) {
                None => return None,
                Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        i += 1;
        items.push(&text[start..i]);
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b')') => return Some((items, i + 1)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::enum_checks_as_comparisons as rewrite;

    #[test]
    fn three_or_more_literals_become_an_or_chain() {
        assert_eq!(
            rewrite("x TEXT CHECK (status IN ('A', 'B',\n    'C')),"),
            "x TEXT CHECK ((status = 'A' OR status = 'B' OR status = 'C')),"
        );
    }

    #[test]
    fn short_lists_numbers_subqueries_and_quotes_are_left_alone_or_kept_exact() {
        for same in [
            "CHECK (review_flag IN (0, 1))",
            "CHECK (to_status IN ('REFUND_SUCCESS', 'REFUND_FAILED'))",
            "WHERE id IN (SELECT id FROM t)",
            "CHECK (a IN ('x', b, 'z'))",
            "no list at all",
        ] {
            assert_eq!(rewrite(same), same);
        }
        assert_eq!(
            rewrite("CHECK (k IN ('it''s', 'b', 'c')) AND m IN ('d', 'e', 'f')"),
            "CHECK ((k = 'it''s' OR k = 'b' OR k = 'c')) AND (m = 'd' OR m = 'e' OR m = 'f')"
        );
    }

    #[test]
    fn schema_sql_holds_no_list_the_rewrite_would_change() {
        let schema = super::super::SCHEMA_SQL;
        let rewritten = rewrite(schema);
        let first = schema
            .lines()
            .zip(rewritten.lines())
            .find(|(a, b)| a != b)
            .map(|(a, _)| a);
        assert_eq!(first, None, "schema.sql still has an enum IN list");
    }
}
