//! The PostgreSQL ledger's schema (`schema.postgres.sql`) and merchant contract
//! (`src/ledger/contract.postgres.sql`) on a real PostgreSQL server, each test in its own fresh
//! database that is dropped afterwards (tests/common/pg.rs). The schema is applied and the
//! contract run verbatim through `psql`, as a merchant or operator would; outside writers are
//! plain sessions of the `postgres` crate, so the rules are shown to hold for every writer.
//! The tests mirror tests/it/ledger.rs's SQLite tests of the same rules (named alike).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use checus_reconciler::ledger::contract::{CONTRACT_POSTGRES_SQL, SNIPPETS};
use checus_reconciler::ledger::{SCHEMA_POSTGRES_SQL, SCHEMA_SQL};
use postgres::Client;

use crate::common::pg::{self, DropDb};
use crate::common::tools::require_tool;

const FINAL_IMMUTABLE: &str = "checus-reconciler: final refund status is immutable";
const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.postgres.sql");

/// A fresh database holding a ledger applied through psql, and a session on it. `None`: skipped.
fn new_ledger() -> Option<(String, DropDb, Client)> {
    if !require_tool("psql") {
        return None;
    }
    let (url, db) = pg::fresh_db()?;
    apply_schema(&url);
    let client = pg::connect(&url).unwrap();
    Some((url, db, client))
}

fn apply_schema(url: &str) {
    let run = pg::run(pg::psql(url).args(["--single-transaction", "-f", SCHEMA_FILE]));
    assert!(run.ok, "schema.postgres.sql failed: {}", run.stderr);
}

/// The error text of a failed statement (the server's message, with its detail).
fn refused(c: &mut Client, sql: &str) -> String {
    match c.batch_execute(sql) {
        Ok(()) => panic!("{sql}: succeeded, expected a refusal"),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string()),
    }
}

fn one_i64(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn one_text(c: &mut Client, sql: &str) -> Option<String> {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// A pending refund inserted through the contract's statement, with string parameters.
fn insert(c: &mut Client, no: &str, amount: &str) {
    c.execute(
        snippet("insert_refund"),
        &[
            &no,
            &None::<&str>,
            &Some(format!("O-{no}")),
            &amount,
            &"USD",
        ],
    )
    .unwrap();
}

/// A verified notification recorded through the contract's statement; returns its effect.
fn notify(c: &mut Client, no: &str, status: &str, amount: &str, currency: &str) -> String {
    c.execute(
        snippet("record_notification"),
        &[
            &no,
            &status,
            &Some(format!("T-{no}")),
            &amount,
            &currency,
            &Some("2026-01-01T08:05:00.123+08:00"),
            &"2026-01-01T00:05:01Z",
        ],
    )
    .unwrap();
    one_text(
        c,
        "SELECT effect FROM notifications ORDER BY id DESC LIMIT 1",
    )
    .unwrap()
}

/// The text of one contract snippet, from its `-- contract: NAME` line to the next.
fn snippet(name: &str) -> &'static str {
    let marker = "-- contract: ";
    let start = CONTRACT_POSTGRES_SQL
        .find(&format!("{marker}{name}\n"))
        .unwrap_or_else(|| panic!("contract.postgres.sql has no snippet {name}"));
    let rest = &CONTRACT_POSTGRES_SQL[start..];
    let end = rest[marker.len()..]
        .find(marker)
        .map_or(rest.len(), |i| i + marker.len());
    rest[..end].trim()
}

/// Blocks until the session with backend `pid` waits for a lock (never a fixed sleep).
fn wait_until_blocked(c: &mut Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: bool = c
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false)
                   FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(Instant::now() < deadline, "session {pid} never blocked");
        std::thread::yield_now();
    }
}

/// refund_counts, and the same numbers counted with GROUP BY; statuses with 0 rows omitted.
fn counts_and_truth(c: &mut Client) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let kept = c
        .query("SELECT status, n FROM refund_counts WHERE n <> 0", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let truth = c
        .query("SELECT status, count(*) FROM refunds GROUP BY status", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (kept, truth)
}

// ---------------------------------------------------------------------------------------------
// applying the schema
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_schema_applies_once_and_a_second_apply_changes_nothing() {
    let Some((url, _db, mut c)) = new_ledger() else {
        return;
    };
    assert_eq!(
        one_i64(&mut c, "SELECT max(version)::bigint FROM schema_version"),
        i64::from(checus_reconciler::ledger::postgres::PG_SCHEMA_VERSION)
    );
    let objects = "SELECT (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal)
                        + (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)";
    let before = one_i64(&mut c, objects);

    let again = pg::run(pg::psql(&url).args(["--single-transaction", "-f", SCHEMA_FILE]));
    assert!(!again.ok, "a second apply succeeded");
    assert!(
        again
            .stderr
            .contains("checus-reconciler: schema public already holds a ledger"),
        "{}",
        again.stderr
    );
    assert_eq!(one_i64(&mut c, objects), before);
    assert_eq!(one_i64(&mut c, "SELECT count(*) FROM schema_version"), 1);

    // Every table of schema.sql, plus version 10's.
    for table in [
        "refunds",
        "attempts",
        "discrepancies",
        "notifications",
        "sweeps",
        "operator_actions",
        "prunes",
        "refund_counts",
        "webhook_events",
        "nodes",
        "schema_version",
    ] {
        assert_eq!(
            one_i64(
                &mut c,
                &format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'")
            ),
            1,
            "{table}"
        );
    }
}

#[test]
fn pg_schema_has_every_index_and_trigger_message_of_schema_sql() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    let sqlite_indexes: Vec<&str> = SCHEMA_SQL
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE INDEX "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(sqlite_indexes.len() >= 15, "{sqlite_indexes:?}");
    for name in sqlite_indexes {
        let def = one_text(
            &mut c,
            &format!("SELECT indexdef FROM pg_indexes WHERE indexname = '{name}'"),
        );
        assert!(def.is_some(), "index {name} is missing");
    }
    // The same texts, so src/ledger/error.rs classifies both engines' refusals alike.
    let mut rest = SCHEMA_SQL;
    let mut seen = 0;
    while let Some(i) = rest.find("RAISE(ABORT, '") {
        let msg = &rest[i + "RAISE(ABORT, '".len()..];
        let msg = &msg[..msg.find("');").unwrap()];
        assert!(
            std::fs::read_to_string(SCHEMA_FILE).unwrap().contains(msg),
            "schema.postgres.sql lacks {msg:?}"
        );
        seen += 1;
        rest = &rest[i + 1..];
    }
    assert!(seen >= 20, "{seen}");
}

#[test]
fn pg_readme_shows_the_contract_s_notification_insert_verbatim() {
    let readme = include_str!("../../README.md");
    let from = readme
        .find("**On PostgreSQL**")
        .expect("README has its PostgreSQL part");
    let block = &readme[from..];
    let block = &block[block.find("```sql\n").unwrap() + 7..];
    let block = block[..block.find("```").unwrap()].trim();
    assert!(snippet("record_notification").contains(block), "{block}");
}

#[test]
fn pg_schema_applies_into_any_schema_and_each_ledger_keeps_to_its_own() {
    if !require_tool("psql") {
        return;
    }
    let Some((url, _db)) = pg::fresh_db() else {
        return;
    };
    for schema in ["merchant_a", "merchant_b"] {
        let run = pg::psql_script(
            &url,
            &format!(
                "BEGIN;\nCREATE SCHEMA {schema};\nSET LOCAL search_path = {schema};\n\\i {SCHEMA_FILE}\nCOMMIT;\n"
            ),
        );
        assert!(run.ok, "{schema}: {}", run.stderr);
    }
    let mut c = pg::connect(&url).unwrap();
    // The daemon's way: the embedded text as one simple query, inside its own transaction.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("CREATE SCHEMA merchant_c; SET LOCAL search_path = merchant_c")
        .unwrap();
    tx.batch_execute(SCHEMA_POSTGRES_SQL).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        one_i64(
            &mut c,
            "SELECT max(version)::bigint FROM merchant_c.schema_version"
        ),
        i64::from(checus_reconciler::ledger::postgres::PG_SCHEMA_VERSION)
    );
    // A session whose search_path names merchant_b writes to merchant_a's tables: the triggers
    // read and write merchant_a's rows (their functions keep their own search_path).
    c.batch_execute(
        "SET search_path = merchant_b;
         INSERT INTO merchant_a.refunds (out_refund_no, amount, currency) VALUES ('R1', 5, 'USD');
         INSERT INTO merchant_a.notifications (out_refund_no, status, amount, currency, notify_time)
              VALUES ('R1', 'REFUND_SUCCESS', 5, 'USD', now());",
    )
    .unwrap();
    assert_eq!(
        one_text(&mut c, "SELECT status FROM merchant_a.refunds").as_deref(),
        Some("REFUND_SUCCESS")
    );
    assert_eq!(
        one_i64(&mut c, "SELECT count(*) FROM merchant_a.webhook_events"),
        1
    );
    assert_eq!(
        one_i64(&mut c, "SELECT count(*) FROM merchant_b.refunds"),
        0
    );
    assert_eq!(
        one_i64(&mut c, "SELECT count(*) FROM merchant_b.webhook_events"),
        0
    );
    assert_eq!(
        one_i64(
            &mut c,
            "SELECT n FROM merchant_b.refund_counts WHERE status = 'REFUND_SUCCESS'"
        ),
        0
    );
    // The notification in merchant_b names a refund only merchant_a has: unknown there.
    c.batch_execute(
        "INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
         VALUES ('R1', 'REFUND_SUCCESS', 5, 'USD', now())",
    )
    .unwrap();
    assert_eq!(
        one_text(&mut c, "SELECT effect FROM merchant_b.notifications").as_deref(),
        Some("unknown_refund")
    );
}

// ---------------------------------------------------------------------------------------------
// the schema's rules against outside writers
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_an_outside_connection_cannot_change_a_final_status_delete_or_replace() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    insert(&mut c, "R1", "10.00");
    assert_eq!(
        notify(&mut c, "R1", "REFUND_SUCCESS", "10.00", "USD"),
        "finalized"
    );
    for sql in [
        "UPDATE refunds SET status = 'REFUND_PENDING' WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET status = 'REFUND_FAILED' WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET status = 'REFUND_PENDING', final_source = NULL, finalized_at = NULL
          WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET final_source = 'operator' WHERE out_refund_no = 'R1'",
        "UPDATE refunds SET refund_finish_time = NULL WHERE out_refund_no = 'R1'",
    ] {
        assert!(refused(&mut c, sql).contains(FINAL_IMMUTABLE), "{sql}");
    }
    for (sql, msg) in [
        ("UPDATE refunds SET amount = 10.01", "immutable"),
        // Equal as numbers, but not what was recorded.
        ("UPDATE refunds SET amount = 10.0", "immutable"),
        ("UPDATE refunds SET currency = 'EUR'", "immutable"),
        ("UPDATE refunds SET out_refund_no = 'R2'", "immutable"),
        ("UPDATE refunds SET id = DEFAULT", "immutable"),
        ("DELETE FROM refunds", "never deleted"),
        ("TRUNCATE refunds CASCADE", "never deleted"),
        (
            "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('R1', 1, 'USD')",
            "checus-reconciler: refund already exists",
        ),
        // PostgreSQL's upsert is an UPDATE, and meets the UPDATE triggers.
        (
            "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('R1', 1, 'USD')
             ON CONFLICT DO NOTHING",
            "already exists",
        ),
    ] {
        let e = refused(&mut c, sql);
        assert!(
            e.contains(msg) && e.starts_with("checus-reconciler:"),
            "{sql}: {e}"
        );
    }
    // What an identity column refuses itself.
    assert!(refused(&mut c, "UPDATE refunds SET id = 7").contains("DEFAULT"));
    let row = c
        .query_one(
            "SELECT status, amount::text FROM refunds WHERE out_refund_no = 'R1'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "REFUND_SUCCESS");
    assert_eq!(row.get::<_, String>(1), "10.00");
    // Fields outside the outcome stay writable (e.g. an operator noting a trade number).
    c.batch_execute("UPDATE refunds SET refund_trade_no = 'T-X' WHERE out_refund_no = 'R1'")
        .unwrap();
    // Values the CHECKs refuse.
    for sql in [
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('Z1', 0, 'USD')",
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('Z2', -1, 'USD')",
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('Z3', 'NaN', 'USD')",
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('Z4', 'Infinity', 'USD')",
        "INSERT INTO refunds (out_refund_no, amount, currency)
              VALUES ('Z5', 1.00000000000000000000000000001, 'USD')",
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('Z6', 1, 'usd')",
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('Z 7', 1, 'USD')",
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('Zé', 1, 'USD')",
        "INSERT INTO refunds (out_refund_no, amount, currency, created_at)
              VALUES ('Z8', 1, 'USD', 'infinity')",
        "INSERT INTO refunds (out_refund_no, amount, currency, status)
              VALUES ('Z9', 1, 'USD', 'REFUND_SUCCESS')",
        "INSERT INTO refunds (out_refund_no, amount, currency, status, final_source, finalized_at)
              VALUES ('Z10', 1, 'USD', 'REFUND_SUCCESS', 'refund_response', now())",
        "INSERT INTO refunds (out_refund_no, amount, currency, claimed_by)
              VALUES ('Z11', 1, 'USD', 'node-1')",
        "INSERT INTO refunds (out_refund_no, amount, currency, claimed_by, claimed_until)
              VALUES ('Z12', 1, 'USD', 'node 1', now())",
    ] {
        assert!(c.batch_execute(sql).is_err(), "{sql} was stored");
    }
}

#[test]
fn pg_attempts_are_append_only_and_discrepancies_and_notifications_are_kept() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    insert(&mut c, "R1", "10.00");
    c.batch_execute(
        "INSERT INTO attempts (out_refund_no, attempted_at, outcome, latency_ms, node)
         VALUES ('R1', '2026-01-01T00:10:00Z', 'pending', 12, 'node-1');
         INSERT INTO sweeps (started_at, finished_at, node)
         VALUES ('2026-01-01T00:10:00Z', '2026-01-01T00:10:01Z', 'node-1');
         INSERT INTO operator_actions (at, actor, action) VALUES (now(), 'ops', 'retry_now');",
    )
    .unwrap();
    assert_eq!(
        notify(&mut c, "NOPE", "REFUND_SUCCESS", "1", "USD"),
        "unknown_refund"
    );
    for sql in [
        "UPDATE attempts SET outcome = 'final'",
        "DELETE FROM attempts",
        "TRUNCATE attempts",
        "INSERT INTO attempts (out_refund_no, attempted_at, outcome, latency_ms)
         VALUES ('R1', '2026-01-01T00:00:00Z', 'final', 1)
         ON CONFLICT (id) DO NOTHING; UPDATE attempts SET latency_ms = 0",
        "UPDATE discrepancies SET kind = 'amount_mismatch'",
        "DELETE FROM discrepancies",
        "TRUNCATE discrepancies",
        "UPDATE notifications SET status = 'REFUND_FAILED'",
        "UPDATE notifications SET effect = 'finalized'",
        "DELETE FROM notifications",
        "TRUNCATE notifications",
        "INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time, effect)
         VALUES ('R1', 'REFUND_SUCCESS', 10, 'USD', now(), 'finalized')",
        "UPDATE operator_actions SET actor = 'someone else'",
        "DELETE FROM operator_actions",
        "TRUNCATE operator_actions",
        "UPDATE sweeps SET claimed = 5",
        "UPDATE webhook_events SET payload = '{}'",
        "DELETE FROM webhook_events",
        "TRUNCATE webhook_events",
    ] {
        let e = refused(&mut c, sql);
        assert!(e.starts_with("checus-reconciler:"), "{sql}: {e}");
    }
    assert_eq!(one_i64(&mut c, "SELECT count(*) FROM attempts"), 1);
    assert_eq!(one_i64(&mut c, "SELECT count(*) FROM notifications"), 1);
    // Resolving a discrepancy is allowed, once.
    c.batch_execute(
        "UPDATE discrepancies SET resolved_at = '2026-01-02T00:00:00Z', resolved_by = 'ops',
                resolution = 'not ours'",
    )
    .unwrap();
    assert!(
        refused(
            &mut c,
            "UPDATE discrepancies SET resolution = 'changed my mind'"
        )
        .contains("immutable once recorded or resolved")
    );
    // A webhook event's delivery columns change; sweeps that are not finished do too.
    c.batch_execute(
        "UPDATE webhook_events SET state = 'delivered', delivered_at = now(), attempts = 1;
         INSERT INTO sweeps (started_at) VALUES (now());
         UPDATE sweeps SET claimed = 3 WHERE finished_at IS NULL;
         DELETE FROM sweeps WHERE finished_at IS NOT NULL;",
    )
    .unwrap();
}

#[test]
fn pg_an_operator_decision_needs_its_audit_row() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    insert(&mut c, "R1", "3");
    let decide = "UPDATE refunds SET status = 'REFUND_FAILED', final_source = 'operator',
                         finalized_at = now() WHERE out_refund_no = 'R1'";
    assert!(refused(&mut c, decide).contains("needs its operator_actions audit row"));
    assert!(
        refused(
            &mut c,
            "INSERT INTO refunds (out_refund_no, amount, currency, status, final_source, finalized_at)
             VALUES ('R2', 1, 'USD', 'REFUND_FAILED', 'operator', now())"
        )
        .contains("needs its operator_actions audit row")
    );
    // An audit row for the other status does not count.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "INSERT INTO operator_actions (at, actor, action, out_refund_no, to_status, reason)
         VALUES (now(), 'ops', 'resolve', 'R1', 'REFUND_SUCCESS', 'bank says so')",
    )
    .unwrap();
    assert!(tx.batch_execute(decide).is_err());
    tx.rollback().unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "INSERT INTO operator_actions (at, actor, action, out_refund_no, to_status, reason)
         VALUES (now(), 'ops', 'resolve', 'R1', 'REFUND_FAILED', 'bank says so'); {decide}"
    ))
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        one_text(&mut c, "SELECT final_source FROM refunds").as_deref(),
        Some("operator")
    );
}

#[test]
fn pg_only_a_running_prune_deletes_and_only_what_it_covers() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    for (no, amount) in [("OLD", "1"), ("OPEN", "2"), ("NEW", "3"), ("PEND", "4")] {
        insert(&mut c, no, amount);
    }
    for no in ["OLD", "OPEN", "NEW"] {
        notify(&mut c, no, "REFUND_SUCCESS", "10", "USD"); // amount mismatch: discrepancy
    }
    c.batch_execute(
        "UPDATE discrepancies SET resolved_at = now(), resolved_by = 'ops', resolution = 'typo'
          WHERE out_refund_no <> 'OPEN';
         UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'query',
                finalized_at = '2026-01-01T00:00:00Z' WHERE out_refund_no IN ('OLD', 'OPEN');
         UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'query',
                finalized_at = '2026-06-01T00:00:00Z' WHERE out_refund_no = 'NEW';
         INSERT INTO attempts (out_refund_no, attempted_at, outcome, latency_ms)
         VALUES ('OLD', '2026-01-01T00:00:00Z', 'final', 5);",
    )
    .unwrap();
    // No running prune: nothing may go.
    assert!(refused(&mut c, "DELETE FROM attempts").contains("append-only"));
    assert!(
        refused(&mut c, "DELETE FROM refunds WHERE out_refund_no = 'OLD'")
            .contains("never deleted")
    );

    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "INSERT INTO prunes (started_at, actor, reason, finalized_before, state)
         VALUES (now(), 'ops', 'retention', '2026-03-01T00:00:00Z', 'running')",
    )
    .unwrap();
    // One at a time, and a prune starts running.
    let e = tx
        .batch_execute(
            "SAVEPOINT s; INSERT INTO prunes (started_at, actor, reason, finalized_before, state)
             VALUES (now(), 'ops', 'again', '2026-03-01T00:00:00Z', 'running')",
        )
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("a prune starts running, one at a time"),
        "{e:?}"
    );
    tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    for sql in [
        // Pending, finalized after the cutoff, or with an unresolved discrepancy.
        "DELETE FROM refunds WHERE out_refund_no = 'PEND'",
        "DELETE FROM refunds WHERE out_refund_no = 'NEW'",
        "DELETE FROM webhook_events WHERE out_refund_no = 'OLD'", // not delivered
    ] {
        tx.batch_execute("SAVEPOINT s").unwrap();
        let e = tx.batch_execute(sql).unwrap_err();
        assert!(
            format!("{e:?}").contains("checus-reconciler:"),
            "{sql}: {e:?}"
        );
        tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    }
    tx.batch_execute("SAVEPOINT s").unwrap();
    let e = tx
        .batch_execute(
            "DELETE FROM notifications WHERE out_refund_no = 'OPEN';
             DELETE FROM discrepancies WHERE out_refund_no = 'OPEN'",
        )
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("discrepancies are never deleted"),
        "{e:?}"
    );
    tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    tx.batch_execute(
        "DELETE FROM attempts WHERE out_refund_no = 'OLD';
         DELETE FROM notifications WHERE out_refund_no = 'OLD';
         DELETE FROM discrepancies WHERE out_refund_no = 'OLD';
         UPDATE webhook_events SET state = 'delivered', delivered_at = now() WHERE out_refund_no = 'OLD';
         DELETE FROM webhook_events WHERE out_refund_no = 'OLD';
         DELETE FROM refunds WHERE out_refund_no = 'OLD';
         UPDATE prunes SET state = 'done', refunds = 1, attempts = 1, notifications = 1,
                discrepancies = 1, sweeps = 0;",
    )
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(one_i64(&mut c, "SELECT count(*) FROM refunds"), 3);
    for sql in [
        "UPDATE prunes SET reason = 'other'",
        "DELETE FROM prunes",
        "TRUNCATE prunes",
        "INSERT INTO prunes (started_at, actor, reason, finalized_before, state)
         VALUES (now(), 'ops', 'x', now(), 'done')",
    ] {
        assert!(refused(&mut c, sql).contains("prune"), "{sql}");
    }
    // A done prune lets nothing be deleted any more.
    assert!(
        refused(&mut c, "DELETE FROM refunds WHERE out_refund_no = 'NEW'")
            .contains("never deleted")
    );
    let (kept, truth) = counts_and_truth(&mut c);
    assert_eq!(kept, truth);
}

#[test]
fn pg_a_second_prune_waits_for_the_first_one_to_be_done() {
    let Some((url, _db, mut c)) = new_ledger() else {
        return;
    };
    let start = "INSERT INTO prunes (started_at, actor, reason, finalized_before, state)
                 VALUES (now(), 'ops', 'retention', now(), 'running')";
    let done = "UPDATE prunes SET state = 'done', refunds = 0, attempts = 0, notifications = 0,
                       discrepancies = 0, sweeps = 0 WHERE state = 'running'";
    let mut first = c.transaction().unwrap();
    first.batch_execute(start).unwrap();
    let mut c2 = pg::connect(&url).unwrap();
    let pid: i32 = c2.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let waiter = std::thread::spawn(move || {
        let mut tx = c2.transaction().unwrap();
        tx.batch_execute(start).unwrap();
        tx.batch_execute(done).unwrap();
        tx.commit().unwrap();
    });
    let mut watcher = pg::connect(&url).unwrap();
    wait_until_blocked(&mut watcher, pid);
    first.batch_execute(done).unwrap();
    first.commit().unwrap();
    waiter.join().unwrap();
    assert_eq!(
        one_i64(&mut c, "SELECT count(*) FROM prunes WHERE state = 'done'"),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// the merchant contract
// ---------------------------------------------------------------------------------------------

/// psql lines that PREPARE every contract snippet under its own name.
fn prepare_contract() -> String {
    let mut s = String::new();
    for name in SNIPPETS {
        s.push_str(&format!("PREPARE {name} AS\n{}\n", snippet(name)));
    }
    s
}

#[test]
fn pg_the_contract_sql_works_verbatim_in_psql() {
    let Some((url, _db, mut c)) = new_ledger() else {
        return;
    };
    let run = pg::psql_script(
        &url,
        &(prepare_contract()
            + "EXECUTE insert_refund('R-CLI-1', NULL, 'O-1', '12.50', 'USD');\n\
               EXECUTE insert_failed_refund('R-CLI-F', 'T-F', 'O-2', '5', 'IDR');\n\
               EXECUTE insert_refund('R-CLI-A', NULL, NULL, '7', 'EUR');\n\
               EXECUTE insert_refund('R-CLI-C', NULL, NULL, '7', 'EUR');\n\
               SET TimeZone = 'America/Los_Angeles';\n\
               EXECUTE record_notification('R-CLI-1', 'REFUND_SUCCESS', 'T-CLI-1', '12.5000', 'USD',\n\
                   '2023-10-20T03:28:23.092Z', '2023-10-20T11:28:24.5+08:00');\n\
               EXECUTE record_notification('R-CLI-1', 'REFUND_SUCCESS', 'T-CLI-1', '12.5', 'USD',\n\
                   NULL, '2023-10-20T11:28:25+08:00');\n\
               EXECUTE record_notification('R-CLI-F', 'REFUND_SUCCESS', 'T-F', '5.0', 'IDR',\n\
                   NULL, '2023-10-20T11:28:25Z');\n\
               EXECUTE record_notification('R-CLI-A', 'REFUND_FAILED', NULL, '7.01', 'USD',\n\
                   NULL, '2023-10-20T11:28:25Z');\n\
               EXECUTE record_notification('GHOST', 'REFUND_SUCCESS', NULL, '1', 'USD',\n\
                   NULL, '2023-10-20T11:28:25Z');\n"),
    );
    assert!(run.ok, "{}", run.stderr);

    let r = c
        .query_one(
            "SELECT status, final_source, refund_trade_no, amount::text,
                    checus_instant_text(refund_finish_time), notified_at = finalized_at
               FROM refunds WHERE out_refund_no = 'R-CLI-1'",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "REFUND_SUCCESS");
    assert_eq!(r.get::<_, String>(1), "notification");
    assert_eq!(r.get::<_, String>(2), "T-CLI-1");
    assert_eq!(
        r.get::<_, String>(3),
        "12.50",
        "the amount as the merchant wrote it"
    );
    assert_eq!(r.get::<_, String>(4), "2023-10-20T03:28:23.092Z");
    assert!(r.get::<_, bool>(5));
    let effects: Vec<(String, String, String)> = c
        .query(
            "SELECT out_refund_no, effect, checus_instant_text(notify_time)
               FROM notifications ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let t = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        effects,
        vec![
            t("R-CLI-1", "finalized", "2023-10-20T03:28:24.500Z"),
            t("R-CLI-1", "already_final", "2023-10-20T03:28:25.000Z"),
            t("R-CLI-F", "conflicting_final", "2023-10-20T11:28:25.000Z"),
            t("R-CLI-A", "mismatch", "2023-10-20T11:28:25.000Z"),
            t("GHOST", "unknown_refund", "2023-10-20T11:28:25.000Z"),
        ]
    );
    let found: Vec<(String, String, Option<String>, String)> = c
        .query(
            "SELECT out_refund_no, kind, expected, observed FROM discrepancies ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let d = |a: &str, b: &str, c: Option<&str>, e: &str| {
        (
            a.to_owned(),
            b.to_owned(),
            c.map(str::to_owned),
            e.to_owned(),
        )
    };
    assert_eq!(
        found,
        vec![
            d(
                "R-CLI-F",
                "conflicting_final",
                Some("REFUND_FAILED"),
                "REFUND_SUCCESS"
            ),
            d("R-CLI-A", "amount_mismatch", Some("7"), "7.01"),
            d("R-CLI-A", "currency_mismatch", Some("EUR"), "USD"),
            d("GHOST", "unknown_refund", None, "REFUND_SUCCESS 1 USD"),
        ]
    );
    assert_eq!(
        one_text(
            &mut c,
            "SELECT status FROM refunds WHERE out_refund_no = 'R-CLI-A'"
        )
        .as_deref(),
        Some("REFUND_PENDING"),
        "a disagreeing notification is recorded, never applied"
    );

    // A time that is not a real instant fails the INSERT; nothing is recorded.
    for bad in [
        "2026-02-31T03:28:23Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T23:59:60Z",
        "2026-13-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "2026-01-01T00:00:00",
        "now",
        "infinity",
    ] {
        let run = pg::psql_script(
            &url,
            &(prepare_contract()
                + &format!(
                    "EXECUTE record_notification('R-CLI-C', 'REFUND_SUCCESS', NULL, '7', 'EUR', NULL, '{bad}');\n"
                )),
        );
        assert!(!run.ok, "{bad} was accepted");
        assert!(
            run.stderr.contains("is not a real RFC 3339 instant"),
            "{bad}: {}",
            run.stderr
        );
    }
    assert_eq!(
        one_i64(
            &mut c,
            "SELECT count(*) FROM notifications WHERE out_refund_no = 'R-CLI-C'"
        ),
        0
    );

    // The same ledger refuses, from psql, a second insert and any change of a final status.
    for (sql, msg) in [
        (
            "EXECUTE insert_refund('R-CLI-1', NULL, NULL, '1', 'USD');",
            "checus-reconciler: refund already exists",
        ),
        (
            "UPDATE refunds SET status = 'REFUND_PENDING' WHERE out_refund_no = 'R-CLI-1';",
            FINAL_IMMUTABLE,
        ),
        (
            "UPDATE refunds SET status = 'REFUND_FAILED' WHERE out_refund_no = 'R-CLI-1';",
            FINAL_IMMUTABLE,
        ),
    ] {
        let run = pg::psql_script(&url, &(prepare_contract() + sql + "\n"));
        assert!(!run.ok, "{sql} succeeded");
        assert!(run.stderr.contains(msg), "{sql}: {}", run.stderr);
    }
}

#[test]
fn pg_the_contract_sql_works_verbatim_through_a_driver() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    // Every value bound as a string, as the contract's header says.
    c.execute(
        snippet("insert_refund"),
        &[&"R-APP-1", &Some("T-1"), &None::<&str>, &"7", &"EUR"],
    )
    .unwrap();
    c.execute(
        snippet("insert_failed_refund"),
        &[&"R-APP-2", &None::<&str>, &None::<&str>, &"0.01", &"EUR"],
    )
    .unwrap();
    c.execute(
        snippet("record_notification"),
        &[
            &"R-APP-1",
            &"REFUND_FAILED",
            &Some("T-1"),
            &"7.00",
            &"EUR",
            &None::<&str>,
            &"2026-01-01T00:00:00Z",
        ],
    )
    .unwrap();
    let r = c
        .query_one(
            "SELECT status, final_source FROM refunds WHERE out_refund_no = 'R-APP-1'",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "REFUND_FAILED");
    assert_eq!(r.get::<_, String>(1), "notification");
    let r = c
        .query_one(
            "SELECT status, final_source, created_at = finalized_at FROM refunds
              WHERE out_refund_no = 'R-APP-2'",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "REFUND_FAILED");
    assert_eq!(r.get::<_, String>(1), "refund_response");
    assert!(r.get::<_, bool>(2));
    // An amount that is not a number fails the INSERT.
    assert!(
        c.execute(
            snippet("insert_refund"),
            &[&"R-APP-3", &None::<&str>, &None::<&str>, &"12,50", &"EUR"],
        )
        .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// notifications
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_a_matching_notification_finalizes_and_a_duplicate_only_confirms() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    insert(&mut c, "R1", "10.00");
    c.batch_execute(
        "UPDATE refunds SET next_query_at = now() + interval '10 minutes',
                claimed_by = 'node-1', claimed_until = now() + interval '1 minute'",
    )
    .unwrap();
    // Equal as decimals though spelled differently.
    assert_eq!(
        notify(&mut c, "R1", "REFUND_SUCCESS", "10", "USD"),
        "finalized"
    );
    let r = c
        .query_one(
            "SELECT status, final_source, refund_trade_no, checus_instant_text(refund_finish_time),
                    notified_at = finalized_at, next_query_at IS NULL, confirm_at = finalized_at,
                    claimed_by IS NULL AND claimed_until IS NULL, checus_instant_text(notified_at)
               FROM refunds",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "REFUND_SUCCESS");
    assert_eq!(r.get::<_, String>(1), "notification");
    assert_eq!(r.get::<_, String>(2), "T-R1");
    assert_eq!(r.get::<_, String>(3), "2026-01-01T00:05:00.123Z");
    assert!(r.get::<_, bool>(4));
    assert!(r.get::<_, bool>(5), "a final refund is not scheduled");
    assert!(r.get::<_, bool>(6));
    assert!(r.get::<_, bool>(7), "finalizing clears the lease");
    let first_notified: String = r.get(8);

    assert_eq!(
        notify(&mut c, "R1", "REFUND_SUCCESS", "10.0", "USD"),
        "already_final"
    );
    assert_eq!(
        one_text(
            &mut c,
            "SELECT checus_instant_text(notified_at) FROM refunds"
        ),
        Some(first_notified)
    );
    assert_eq!(one_i64(&mut c, "SELECT count(*) FROM discrepancies"), 0);
}

#[test]
fn pg_a_notification_racing_a_query_finalization_sees_its_outcome() {
    let Some((url, _db, mut c)) = new_ledger() else {
        return;
    };
    insert(&mut c, "R1", "10.00");
    // The daemon's compare-and-set, held open in another session.
    let mut daemon = pg::connect(&url).unwrap();
    let mut tx = daemon.transaction().unwrap();
    let won = tx
        .execute(
            "UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'query',
                    finalized_at = now(), next_query_at = NULL
              WHERE out_refund_no = 'R1' AND status = 'REFUND_PENDING'",
            &[],
        )
        .unwrap();
    assert_eq!(won, 1);
    let mut app = pg::connect(&url).unwrap();
    let pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let notifier = std::thread::spawn(move || notify(&mut app, "R1", "REFUND_FAILED", "10", "USD"));
    wait_until_blocked(&mut c, pid);
    tx.commit().unwrap();
    // The notification waited for the row and classified it as it was committed.
    assert_eq!(notifier.join().unwrap(), "conflicting_final");
    let r = c
        .query_one("SELECT status, final_source FROM refunds", &[])
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "REFUND_SUCCESS");
    assert_eq!(r.get::<_, String>(1), "query");
    assert_eq!(
        one_text(&mut c, "SELECT kind FROM discrepancies").as_deref(),
        Some("conflicting_final")
    );
}

#[test]
fn pg_two_sessions_finalizing_the_same_refunds_exactly_one_wins_each() {
    let Some((url, _db, mut c)) = new_ledger() else {
        return;
    };
    const N: usize = 300;
    c.batch_execute(&format!(
        "INSERT INTO refunds (out_refund_no, amount, currency)
         SELECT 'R' || g, 1, 'USD' FROM generate_series(1, {N}) g"
    ))
    .unwrap();
    let sessions: Vec<_> = ["REFUND_SUCCESS", "REFUND_FAILED"]
        .into_iter()
        .enumerate()
        .map(|(k, status)| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut s = pg::connect(&url).unwrap();
                let cas = s
                    .prepare(
                        "UPDATE refunds SET status = $1, final_source = 'query',
                                finalized_at = now(), next_query_at = NULL,
                                claimed_by = NULL, claimed_until = NULL
                          WHERE out_refund_no = $2 AND status = 'REFUND_PENDING'",
                    )
                    .unwrap();
                let mut won = Vec::new();
                // One walks up, the other down: they meet in the middle, on the same rows.
                for i in 0..N {
                    let n = if k == 0 { i + 1 } else { N - i };
                    let no = format!("R{n}");
                    if s.execute(&cas, &[&status, &no]).unwrap() == 1 {
                        won.push(no);
                    }
                }
                won
            })
        })
        .collect();
    let won: Vec<Vec<String>> = sessions.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        won[0].len() + won[1].len(),
        N,
        "every refund finalized exactly once"
    );
    assert!(won[0].iter().all(|no| !won[1].contains(no)));
    assert_eq!(
        one_i64(
            &mut c,
            "SELECT count(*) FROM webhook_events WHERE type = 'refund.finalized'"
        ),
        N as i64
    );
    let (kept, truth) = counts_and_truth(&mut c);
    assert_eq!(kept, truth);
}

// ---------------------------------------------------------------------------------------------
// refund_counts and the webhook outbox
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_refund_counts_stay_equal_to_a_group_by_after_a_mix_of_writes() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    c.batch_execute(
        "INSERT INTO refunds (out_refund_no, amount, currency)
         SELECT 'M' || g, 1, 'USD' FROM generate_series(1, 500) g;
         INSERT INTO refunds (out_refund_no, amount, currency, status, final_source, finalized_at)
         SELECT 'F' || g, 1, 'USD', 'REFUND_FAILED', 'refund_response', now()
           FROM generate_series(1, 40) g;",
    )
    .unwrap();
    for i in 0..30 {
        insert(&mut c, &format!("S{i}"), "2.50");
    }
    for i in 0..20 {
        notify(&mut c, &format!("S{i}"), "REFUND_SUCCESS", "2.5", "USD");
    }
    notify(&mut c, "S0", "REFUND_FAILED", "2.5", "USD"); // conflicting: no change
    notify(&mut c, "S25", "REFUND_FAILED", "9", "USD"); // mismatch: no change
    c.batch_execute(
        "UPDATE refunds SET status = 'REFUND_FAILED', final_source = 'query', finalized_at = now()
          WHERE out_refund_no LIKE 'M%' AND right(out_refund_no, 1) = '7';
         UPDATE refunds SET next_query_at = now() WHERE status = 'REFUND_PENDING';",
    )
    .unwrap();
    // A rolled-back change leaves the counts as they were.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('ROLLED', 1, 'USD');
         UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'query', finalized_at = now()
          WHERE out_refund_no = 'M1';",
    )
    .unwrap();
    tx.rollback().unwrap();
    // A failed statement too.
    assert!(
        c.batch_execute(
            "INSERT INTO refunds (out_refund_no, amount, currency)
             VALUES ('OK1', 1, 'USD'), ('M2', 1, 'USD')"
        )
        .is_err()
    );
    // A prune's deletes.
    c.batch_execute(
        "BEGIN;
         INSERT INTO prunes (started_at, actor, reason, finalized_before, state)
         VALUES (now(), 'ops', 'retention', now() + interval '1 day', 'running');
         UPDATE webhook_events SET state = 'delivered', delivered_at = now()
          WHERE out_refund_no LIKE 'F1%';
         DELETE FROM webhook_events WHERE out_refund_no LIKE 'F1%';
         DELETE FROM refunds WHERE out_refund_no LIKE 'F1%';
         UPDATE prunes SET state = 'done', refunds = 11, attempts = 0, notifications = 0,
                discrepancies = 0, sweeps = 0;
         COMMIT;",
    )
    .unwrap();
    let (kept, truth) = counts_and_truth(&mut c);
    assert_eq!(kept, truth);
    assert_eq!(truth.values().sum::<i64>(), 570 - 11);
    assert_eq!(truth["REFUND_SUCCESS"], 20);
}

#[test]
fn pg_the_outbox_writes_one_event_per_change_in_the_same_transaction() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    // The payload is the same whatever the session's time zone.
    c.batch_execute("SET TimeZone = 'Asia/Tokyo'").unwrap();
    insert(&mut c, "R1", "12.50");
    assert_eq!(
        one_i64(&mut c, "SELECT count(*) FROM webhook_events"),
        0,
        "pending: no event"
    );
    notify(&mut c, "R1", "REFUND_SUCCESS", "12.5", "USD");
    let (event_id, payload): (String, serde_json::Value) = {
        let r = c
            .query_one(
                "SELECT event_id, payload::text FROM webhook_events WHERE type = 'refund.finalized'",
                &[],
            )
            .unwrap();
        (r.get(0), serde_json::from_str(r.get::<_, &str>(1)).unwrap())
    };
    assert!(
        event_id.starts_with("evt_") && event_id.len() == 36,
        "{event_id}"
    );
    let finalized_at = one_text(
        &mut c,
        "SELECT checus_instant_text(finalized_at) FROM refunds",
    )
    .unwrap();
    assert!(
        finalized_at.ends_with('Z') && finalized_at.len() == 24,
        "{finalized_at}"
    );
    assert_eq!(
        payload,
        serde_json::json!({
            "out_refund_no": "R1", "status": "REFUND_SUCCESS", "final_source": "notification",
            "amount": "12.50", "currency": "USD", "finalized_at": finalized_at,
            "refund_finish_time": "2026-01-01T00:05:00.123Z", "refund_trade_no": "T-R1",
            "out_trade_no": "O-R1",
        })
    );

    // A flag, then a discrepancy.
    insert(&mut c, "R2", "1");
    c.batch_execute(
        "UPDATE refunds SET review_flag = 1, review_reason = 'pending_too_long',
                flagged_at = '2026-01-01T00:00:00Z' WHERE out_refund_no = 'R2';
         UPDATE refunds SET last_error = 'x' WHERE out_refund_no = 'R2';",
    )
    .unwrap();
    notify(&mut c, "R2", "REFUND_FAILED", "1", "EUR");
    let events: Vec<(String, String, String)> = c
        .query(
            "SELECT type, out_refund_no, payload::text FROM webhook_events ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["refund.finalized", "refund.flagged", "discrepancy.recorded"]
    );
    let flagged: serde_json::Value = serde_json::from_str(&events[1].2).unwrap();
    assert_eq!(
        flagged,
        serde_json::json!({
            "out_refund_no": "R2", "status": "REFUND_PENDING", "review_reason": "pending_too_long",
            "flagged_at": "2026-01-01T00:00:00.000Z", "amount": "1", "currency": "USD",
        })
    );
    let recorded: serde_json::Value = serde_json::from_str(&events[2].2).unwrap();
    assert_eq!(recorded["kind"], "currency_mismatch");
    assert_eq!(recorded["expected"], "USD");
    assert_eq!(recorded["observed"], "EUR");
    assert!(recorded["discrepancy_id"].is_i64());

    // Inserted already final: one event. A rolled-back change: none.
    c.execute(
        snippet("insert_failed_refund"),
        &[&"R3", &None::<&str>, &None::<&str>, &"3", &"USD"],
    )
    .unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "INSERT INTO refunds (out_refund_no, amount, currency, status, final_source, finalized_at)
         VALUES ('R4', 1, 'USD', 'REFUND_FAILED', 'refund_response', now())",
    )
    .unwrap();
    tx.rollback().unwrap();
    assert_eq!(
        one_i64(
            &mut c,
            "SELECT count(*) FROM webhook_events WHERE out_refund_no IN ('R3', 'R4')"
        ),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// version 10: leases and nodes
// ---------------------------------------------------------------------------------------------

#[test]
fn pg_the_lease_claim_walks_refunds_due_and_skips_claimed_and_locked_rows() {
    let Some((url, _db, mut c)) = new_ledger() else {
        return;
    };
    // 20 000 pending refunds, one in ten due over the last hours, the rest due tomorrow.
    c.batch_execute(
        "INSERT INTO refunds (out_refund_no, amount, currency, next_query_at)
         SELECT 'R' || g, 1, 'USD',
                CASE WHEN g % 10 = 0 THEN now() - g * interval '1 second'
                     ELSE now() + interval '1 day' END
           FROM generate_series(1, 20000) g;
         ANALYZE refunds;
         UPDATE refunds SET claimed_by = 'node-a', claimed_until = now() + interval '1 minute'
          WHERE out_refund_no IN ('R20000', 'R19990');",
    )
    .unwrap();
    let claim = "SELECT id, out_refund_no FROM refunds
                  WHERE status = 'REFUND_PENDING' AND next_query_at <= $1
                    AND (claimed_until IS NULL OR claimed_until < $1)
                  ORDER BY next_query_at LIMIT 10 FOR UPDATE SKIP LOCKED";
    let plan: String = c
        .query(&format!("EXPLAIN {}", claim.replace("$1", "now()")), &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0) + "\n")
        .collect();
    assert!(plan.contains("Index Scan using refunds_due"), "{plan}");

    let now = std::time::SystemTime::now();
    let mut a = pg::connect(&url).unwrap();
    let mut ta = a.transaction().unwrap();
    let first: Vec<String> = ta
        .query(claim, &[&now])
        .unwrap()
        .iter()
        .map(|r| r.get(1))
        .collect();
    // The oldest due are R20000 and R19990, both leased: skipped.
    assert_eq!(first[0], "R19980");
    let mut b = pg::connect(&url).unwrap();
    let mut tb = b.transaction().unwrap();
    let second: Vec<String> = tb
        .query(claim, &[&now])
        .unwrap()
        .iter()
        .map(|r| r.get(1))
        .collect();
    assert_eq!(second.len(), 10);
    assert!(
        second.iter().all(|n| !first.contains(n)),
        "a refund claimed twice"
    );
    ta.commit().unwrap();
    tb.commit().unwrap();
    // A lease exists only on a pending refund: finalizing must clear it.
    assert!(
        refused(
            &mut c,
            "UPDATE refunds SET status = 'REFUND_SUCCESS', final_source = 'query',
                    finalized_at = now() WHERE out_refund_no = 'R20000'"
        )
        .contains("check constraint")
    );
}

#[test]
fn pg_nodes_hold_their_rules() {
    let Some((_url, _db, mut c)) = new_ledger() else {
        return;
    };
    c.batch_execute(
        "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at)
         VALUES ('host-1.example_a', 'host-1', 4242, '0.1.0', now(), now())",
    )
    .unwrap();
    for sql in [
        "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at)
         VALUES ('bad name', 'h', 1, 'v', now(), now())",
        "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at)
         VALUES ('', 'h', 1, 'v', now(), now())",
        "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at)
         VALUES ('host-1.example_a', 'h', 1, 'v', now(), now())",
        "UPDATE nodes SET heartbeat_at = started_at - interval '1 second'",
    ] {
        assert!(c.batch_execute(sql).is_err(), "{sql}");
    }
}
