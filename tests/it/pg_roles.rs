//! The least-privilege roles of a PostgreSQL ledger (`packaging/postgres/roles.sql`) on a real
//! server, each test in its own fresh database with its own uniquely named roles (roles are
//! cluster-wide; both are dropped afterwards). Every statement runs through `psql` logged in as
//! the role under test, as the merchant's app or the daemon would: what the role needs works,
//! and what it must not do is refused by the server (permission denied), not merely by a
//! trigger.

use std::str::FromStr;
use std::time::Duration;

use checus_reconciler::domain::{
    Change, Currency, Decision, Discrepancy, DiscrepancyKind, FinalStatus, NewRefund, NodeName,
    OutcomeClass, Policy, RefundStatus, ReviewReason,
};
use checus_reconciler::ledger::contract::{CONTRACT_POSTGRES_SQL, SNIPPETS};
use checus_reconciler::ledger::postgres::NodeLock;
use checus_reconciler::ledger::{
    AuditFilter, DeliveryOutcome, DeliveryResult, LedgerError, LedgerTarget, ListFilter, NodeStart,
    NotificationRecord, OpenMode, PgLedger, PostgresTarget, SkipList, SweepCounts, SweepEnd,
    WebhookFilter, WebhookState,
};
use checus_reconciler::logging::one_line_chain;
use rust_decimal::Decimal;

use crate::common::fixtures::{finalize, no, success_answer};
use crate::common::ts;

use crate::common::pg::{self, DropDb, PsqlRun};
use crate::common::tools::require_tool;

const ROLES_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/postgres/roles.sql");
const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.postgres.sql");
const SCHEMA: &str = "merchant_a";
/// How the server refuses a role: a missing privilege, or DDL on an object it does not own.
const DENIED: &[&str] = &["permission denied", "must be owner of"];

/// A fresh database and three fresh roles; drops the database, then the roles (a role that
/// still holds privileges in a database cannot be dropped).
struct Ledger {
    url: String,
    owner: String,
    daemon: String,
    app: String,
    db: Option<DropDb>,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        drop(self.db.take());
        if let Ok(mut c) = pg::connect(&pg::server_url()) {
            for role in [&self.app, &self.daemon, &self.owner] {
                let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""));
            }
        }
    }
}

impl Ledger {
    /// A fresh database and role names unique to it. `None`: skipped (no psql or server).
    fn new() -> Option<Self> {
        if !require_tool("psql") {
            return None;
        }
        let (url, db) = pg::fresh_db()?;
        let base = db.name().to_owned();
        Some(Ledger {
            url,
            owner: format!("{base}_owner"),
            daemon: format!("{base}_daemon"),
            app: format!("{base}_app"),
            db: Some(db),
        })
    }

    /// Runs roles.sql as the server's admin, with `extra` psql arguments.
    fn roles_sql(&self, extra: &[&str]) -> PsqlRun {
        let vars = [
            format!("schema={SCHEMA}"),
            format!("owner={}", self.owner),
            format!("daemon={}", self.daemon),
            format!("app={}", self.app),
        ];
        let mut cmd = pg::psql(&self.url);
        for v in &vars {
            cmd.args(["-v", v]);
        }
        cmd.args(extra)
            .args(["-f", ROLES_FILE])
            .env("CHECUS_DAEMON_PASSWORD", "daemon-secret")
            .env("CHECUS_APP_PASSWORD", "app-secret");
        pg::run(&mut cmd)
    }

    /// A ledger set up in one run of roles.sql, which applies the schema as the owner.
    fn set_up() -> Option<Self> {
        let l = Self::new()?;
        let run = l.roles_sql(&["-v", &format!("ledger_sql={SCHEMA_FILE}")]);
        assert!(run.ok, "roles.sql failed: {}", run.stderr);
        Some(l)
    }

    /// The test database's URL logged in as `role` (no search_path given: the role's own).
    fn url_as(&self, role: &str) -> String {
        let mut u = url::Url::parse(&self.url).unwrap();
        u.set_username(role).unwrap();
        u.into()
    }

    /// `script` through psql logged in as `role`.
    fn as_role(&self, role: &str, script: &str) -> PsqlRun {
        pg::psql_script(&self.url_as(role), script)
    }

    /// `sql` as `role` must fail, with an error containing one of `expected`.
    fn refused_as(&self, role: &str, sql: &str, expected: &[&str]) {
        let run = self.as_role(role, sql);
        assert!(!run.ok, "as {role}: {sql}: succeeded, expected a refusal");
        assert!(
            expected.iter().any(|e| run.stderr.contains(e)),
            "as {role}: {sql}: expected {expected:?}, got: {}",
            run.stderr
        );
    }

    /// One line of output of `sql` run as the admin.
    fn admin(&self, sql: &str) -> String {
        let run = pg::psql_script(&self.url, &format!("SET search_path = {SCHEMA};\n{sql}\n"));
        assert!(run.ok, "{sql}: {}", run.stderr);
        run.stdout.trim().to_owned()
    }
}

/// psql lines that PREPARE every contract snippet, verbatim, under its own name.
fn prepare_contract() -> String {
    let marker = "-- contract: ";
    let mut s = String::new();
    for name in SNIPPETS {
        let start = CONTRACT_POSTGRES_SQL
            .find(&format!("{marker}{name}\n"))
            .unwrap_or_else(|| panic!("contract.postgres.sql has no snippet {name}"));
        let rest = &CONTRACT_POSTGRES_SQL[start..];
        let end = rest[marker.len()..]
            .find(marker)
            .map_or(rest.len(), |i| i + marker.len());
        s.push_str(&format!("PREPARE {name} AS\n{}\n", rest[..end].trim()));
    }
    s
}

#[test]
fn pg_roles_sql_needs_the_ledger_then_hands_it_to_the_owner_and_runs_again() {
    let Some(l) = Ledger::new() else { return };
    // No ledger and no ledger_sql: refused, but the roles and the schema are there for the
    // owner to apply it.
    let run = l.roles_sql(&[]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("the schema holds no ledger yet"),
        "{}",
        run.stderr
    );
    assert_eq!(
        l.admin(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('{}', '{}', '{}')",
            l.owner, l.daemon, l.app
        )),
        "3"
    );
    // The owner applies it (an operator with SET ROLE), then roles.sql grants.
    let apply = pg::psql_script(
        &l.url,
        &format!(
            "BEGIN;\nSET LOCAL ROLE \"{}\";\nSET LOCAL search_path = {SCHEMA};\n\\i {SCHEMA_FILE}\nCOMMIT;\n",
            l.owner
        ),
    );
    assert!(apply.ok, "{}", apply.stderr);
    for _ in 0..2 {
        let run = l.roles_sql(&[]);
        assert!(run.ok, "roles.sql failed: {}", run.stderr);
    }
    // Everything belongs to the owner; the trigger functions that write for others run as it.
    assert_eq!(
        l.admin(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{SCHEMA}' AND tableowner <> '{}'",
            l.owner
        )),
        "0"
    );
    assert_eq!(
        l.admin(&format!(
            "SELECT string_agg(proname, ' ' ORDER BY proname) FROM pg_proc
              WHERE pronamespace = '{SCHEMA}'::regnamespace AND prosecdef"
        )),
        "discrepancies_webhook_on_insert notifications_apply refund_counts_on_delete \
         refund_counts_on_insert refund_counts_on_status_change refunds_webhook_events"
    );
    // A second run changes nothing: still exactly the app's grants.
    assert_eq!(
        l.admin(&format!(
            "SELECT string_agg(table_name || '.' || privilege_type, ' ' ORDER BY table_name, privilege_type)
               FROM information_schema.table_privileges
              WHERE grantee = '{}' AND table_schema = '{SCHEMA}'",
            l.app
        )),
        "notifications.SELECT refunds.SELECT"
    );
    // The daemon's and the app's logins are usable, and only ever in the ledger's schema.
    assert_eq!(l.as_role(&l.app, "SHOW search_path;").stdout.trim(), SCHEMA);
}

#[test]
fn pg_roles_the_app_runs_the_contract_and_a_notification_finalizes_through_the_trigger() {
    let Some(l) = Ledger::set_up() else { return };
    let run = l.as_role(
        &l.app,
        &(prepare_contract()
            + "EXECUTE insert_refund('R-1', NULL, 'O-1', '12.50', 'USD');\n\
               EXECUTE insert_failed_refund('R-2', 'T-2', 'O-2', '5', 'IDR');\n\
               EXECUTE insert_refund('R-3', NULL, NULL, '7', 'EUR');\n\
               EXECUTE record_notification('R-1', 'REFUND_SUCCESS', 'T-1', '12.5', 'USD',\n\
                   '2026-11-25T03:28:23.092Z', '2026-11-25T11:28:24.540+08:00');\n\
               EXECUTE record_notification('R-3', 'REFUND_FAILED', NULL, '7.01', 'EUR',\n\
                   NULL, '2026-11-25T11:28:25Z');\n\
               SELECT out_refund_no || ' ' || status || ' ' || coalesce(final_source, '-')\n\
                 FROM refunds ORDER BY out_refund_no;\n\
               SELECT effect FROM notifications ORDER BY id;\n"),
    );
    assert!(run.ok, "as the app: {}", run.stderr);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "R-1 REFUND_SUCCESS notification",
            "R-2 REFUND_FAILED refund_response",
            "R-3 REFUND_PENDING -",
            "finalized",
            "mismatch",
        ]
    );
    // What the triggers wrote as the owner, for the app: the refund's finalization, the
    // discrepancy, the counts and the outbox.
    assert_eq!(
        l.admin(
            "SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM refund_counts;
             SELECT string_agg(type, ' ' ORDER BY id) FROM webhook_events;
             SELECT string_agg(kind, ' ') FROM discrepancies;"
        ),
        "REFUND_FAILED=1 REFUND_PENDING=1 REFUND_SUCCESS=1\n\
         refund.finalized refund.finalized discrepancy.recorded\n\
         amount_mismatch"
    );
}

#[test]
fn pg_roles_the_app_cannot_change_delete_or_reshape_the_ledger() {
    let Some(l) = Ledger::set_up() else { return };
    let seed = l.as_role(
        &l.app,
        &(prepare_contract()
            + "EXECUTE insert_refund('R-1', NULL, 'O-1', '12.50', 'USD');\n\
               EXECUTE insert_refund('R-2', NULL, 'O-2', '3', 'USD');\n\
               EXECUTE record_notification('R-1', 'REFUND_SUCCESS', 'T-1', '12.50', 'USD',\n\
                   NULL, '2026-11-25T11:28:25Z');\n"),
    );
    assert!(seed.ok, "{}", seed.stderr);
    for sql in [
        "UPDATE refunds SET status = 'REFUND_FAILED' WHERE out_refund_no = 'R-2'",
        "UPDATE refunds SET next_query_at = now()",
        "UPDATE notifications SET effect = NULL",
        "DELETE FROM refunds WHERE out_refund_no = 'R-2'",
        "DELETE FROM notifications",
        "TRUNCATE refunds",
        "TRUNCATE notifications",
        "DROP TRIGGER notifications_apply ON notifications",
        "ALTER TABLE refunds DISABLE TRIGGER ALL",
        "ALTER TABLE refunds ADD COLUMN note text",
        "DROP TABLE webhook_events",
        "CREATE TABLE merchant_a.extra (x int)",
        "CREATE FUNCTION merchant_a.f() RETURNS int LANGUAGE sql RETURN 1",
        // Not in the contract: its own created_at, schedule or lease, or another table.
        "INSERT INTO refunds (out_refund_no, amount, currency, created_at) \
         VALUES ('R-9', '1', 'USD', now())",
        "INSERT INTO refunds (out_refund_no, amount, currency, claimed_by, claimed_until) \
         VALUES ('R-9', '1', 'USD', 'me', now())",
        "INSERT INTO webhook_events (type, out_refund_no, payload) \
         VALUES ('refund.finalized', 'R-2', '{}')",
        "UPDATE refund_counts SET n = 0",
        "SELECT * FROM attempts",
        "SELECT * FROM webhook_events",
        "INSERT INTO discrepancies (out_refund_no, source, kind) \
         VALUES ('R-2', 'operator', 'unknown_refund')",
    ] {
        l.refused_as(&l.app, &format!("{sql};"), DENIED);
    }
    // Only a superuser may turn triggers off for a session.
    l.refused_as(
        &l.app,
        "SET session_replication_role = replica;",
        &["permission denied to set parameter"],
    );
    // A temporary table named like a ledger table does not stand in for it inside the trigger
    // that runs as the owner (its search_path names pg_temp last): the real R-2 is finalized.
    let shadow = l.as_role(
        &l.app,
        &(prepare_contract()
            + "CREATE TEMP TABLE refunds (LIKE merchant_a.refunds);\n\
               EXECUTE record_notification('R-2', 'REFUND_FAILED', NULL, '3', 'USD',\n\
                   NULL, '2026-11-25T11:28:25Z');\n"),
    );
    assert!(shadow.ok, "{}", shadow.stderr);
    assert_eq!(
        l.admin(
            "SELECT string_agg(out_refund_no || ' ' || status, ', ' ORDER BY out_refund_no)
               FROM refunds;
             SELECT string_agg(effect, ' ' ORDER BY id) FROM notifications;"
        ),
        "R-1 REFUND_SUCCESS, R-2 REFUND_FAILED\nfinalized finalized"
    );
}

#[test]
fn pg_roles_the_daemon_claims_records_and_sweeps_but_no_ddl() {
    let Some(l) = Ledger::set_up() else { return };
    l.admin(
        "INSERT INTO refunds (out_refund_no, amount, currency)
         SELECT 'R-' || i, '10.00', 'USD' FROM generate_series(1, 5) AS i;
         UPDATE refunds SET next_query_at = now() - interval '1 minute';",
    );
    // What one node does in a sweep: its node row, a sweep, a lease claim over the due
    // refunds, an attempt per refund, one finalization by query and the rest rescheduled, the
    // sweep closed, a heartbeat.
    let run = l.as_role(
        &l.daemon,
        "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at, stopped_at)
         VALUES ('node-a', 'host-a', 42, '0.1.0', now(), now(), NULL)
         ON CONFLICT (name) DO UPDATE
            SET host = excluded.host, pid = excluded.pid, version = excluded.version,
                started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                stopped_at = NULL;
         INSERT INTO sweeps (started_at, node) VALUES (now(), 'node-a');
         BEGIN;
         SET LOCAL enable_bitmapscan = off;
         UPDATE refunds SET claimed_by = 'node-a', claimed_until = now() + interval '2 minutes'
          WHERE id IN (SELECT id FROM refunds
                        WHERE status = 'REFUND_PENDING' AND next_query_at <= now()
                          AND (claimed_until IS NULL OR claimed_until < now())
                        ORDER BY next_query_at LIMIT 3 FOR UPDATE SKIP LOCKED);
         COMMIT;
         INSERT INTO attempts (out_refund_no, attempted_at, outcome, http_status, latency_ms,
                               sweep_id, node)
         SELECT out_refund_no, now(), 'pending', 200, 51, 1, 'node-a'
           FROM refunds WHERE claimed_by = 'node-a';
         UPDATE refunds
            SET status = 'REFUND_SUCCESS', final_source = 'query', finalized_at = now(),
                next_query_at = NULL, attempts = attempts + 1, last_attempt_at = now(),
                last_outcome = 'final', claimed_by = NULL, claimed_until = NULL
          WHERE out_refund_no = (SELECT min(out_refund_no) FROM refunds WHERE claimed_by = 'node-a')
            AND status = 'REFUND_PENDING';
         UPDATE refunds
            SET next_query_at = now() + interval '5 minutes', attempts = attempts + 1,
                last_attempt_at = now(), last_outcome = 'pending', claimed_by = NULL,
                claimed_until = NULL
          WHERE claimed_by = 'node-a' AND status = 'REFUND_PENDING';
         UPDATE sweeps SET finished_at = now(), claimed = 3, finalized = 1, rescheduled = 2
          WHERE node = 'node-a' AND finished_at IS NULL;
         UPDATE nodes SET heartbeat_at = greatest(now(), started_at) WHERE name = 'node-a';
         UPDATE webhook_events SET state = 'delivered', attempts = attempts + 1,
                first_attempt_at = now(), delivered_at = now()
          WHERE state = 'pending';",
    );
    assert!(run.ok, "as the daemon: {}", run.stderr);
    assert_eq!(
        l.admin(
            "SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM refund_counts;
             SELECT count(*) FROM attempts WHERE node = 'node-a';
             SELECT count(*) FROM refunds WHERE claimed_by IS NOT NULL;
             SELECT claimed || ' ' || finalized FROM sweeps WHERE finished_at IS NOT NULL;
             SELECT string_agg(type || ' ' || state, ', ') FROM webhook_events;"
        ),
        "REFUND_FAILED=0 REFUND_PENDING=4 REFUND_SUCCESS=1\n3\n0\n3 1\nrefund.finalized delivered"
    );
    for sql in [
        "CREATE TABLE merchant_a.extra (x int)",
        "CREATE INDEX extra ON refunds (amount)",
        "ALTER TABLE refunds ADD COLUMN note text",
        "ALTER TABLE refunds DISABLE TRIGGER refunds_final_status_is_immutable",
        "DROP TRIGGER attempts_are_append_only_no_update ON attempts",
        "DROP TABLE sweeps",
        "TRUNCATE attempts",
        "TRUNCATE sweeps",
        "CREATE FUNCTION merchant_a.f() RETURNS int LANGUAGE sql RETURN 1",
        // Columns no daemon statement writes.
        "UPDATE refunds SET amount = 1",
        "UPDATE refunds SET created_at = now()",
        "UPDATE notifications SET effect = NULL",
        "INSERT INTO webhook_events (type, out_refund_no, payload) \
         VALUES ('refund.finalized', 'R-2', '{}')",
        "UPDATE refund_counts SET n = 0",
        "DELETE FROM nodes",
        "DELETE FROM operator_actions",
        // It may read the notifications sequence's current value (currval), never move it.
        "SELECT nextval(pg_get_serial_sequence('notifications', 'id'))",
        "SELECT setval(pg_get_serial_sequence('notifications', 'id'), 1)",
    ] {
        l.refused_as(&l.daemon, &format!("{sql};"), DENIED);
    }
    // A delete it may run (for prune) is still refused by the ledger's rules outside one.
    l.refused_as(
        &l.daemon,
        "DELETE FROM refunds;",
        &["checus-reconciler: refunds are never deleted"],
    );
}

/// packaging/systemd/two-hosts: both example configs are valid, name the same PostgreSQL ledger
/// and differ only in the node name. Needs no server.
#[test]
fn pg_two_hosts_example_configs_share_one_ledger_under_two_node_names() {
    use checus_reconciler::config::{Config, Environment};
    use checus_reconciler::ledger::LedgerTarget;

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/systemd/two-hosts");
    let mut seen = Vec::new();
    for host in ["refunds-a", "refunds-b"] {
        let path = format!("{dir}/{host}.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::parse(&text, &path, &Environment::default())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let LedgerTarget::Postgres(target) = &config.ledger else {
            panic!("{path}: not a PostgreSQL ledger")
        };
        assert!(target.password.is_some(), "{path}: no ledger.password");
        assert_eq!(config.worker.node_name.as_str(), host);
        seen.push((text.replace(host, "HOST"), target.url.clone()));
    }
    assert_eq!(
        seen[0], seen[1],
        "the two configs differ beyond the node name"
    );
}

/// Calls made as a role, each named by the ledger method it is: a failure is kept with the
/// method's name and the server's whole answer, and the run goes on, so one run lists every
/// grant that is missing rather than the first.
#[derive(Default)]
struct Calls {
    failed: Vec<String>,
}

impl Calls {
    /// `result` of the method `method`: its value, or `None` with the failure kept.
    fn ok<T>(&mut self, method: &str, result: Result<T, LedgerError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.failed
                    .push(format!("{method}: {}", one_line_chain(&e)));
                None
            }
        }
    }

    /// Panics listing every failed method, if any failed.
    fn assert_all_succeeded(&self, role: &str) {
        assert!(
            self.failed.is_empty(),
            "as {role}, {} ledger method(s) failed (a grant missing from roles.sql?):\n  {}",
            self.failed.len(),
            self.failed.join("\n  ")
        );
    }
}

fn new_refund(n: &str, status: RefundStatus) -> NewRefund {
    NewRefund {
        out_refund_no: no(n),
        refund_trade_no: None,
        out_trade_no: Some(format!("O-{n}")),
        amount: Decimal::from_str("10.00").unwrap(),
        currency: Currency::parse("USD").unwrap(),
        status,
        created_at: ts("2026-01-01T00:00:00.000Z"),
    }
}

fn notification(n: &str, status: FinalStatus) -> NotificationRecord {
    NotificationRecord {
        out_refund_no: no(n),
        status,
        refund_trade_no: Some(format!("T-{n}")),
        amount: Decimal::from_str("10.00").unwrap(),
        currency: Currency::parse("USD").unwrap(),
        refund_finish_time: Some(ts("2026-01-01T00:05:00.000Z")),
        notify_time: ts("2026-01-01T00:05:01.000Z"),
    }
}

/// A pending answer's decision: query again at `next`, flagged with `flag`, recording `mismatch`
/// as a discrepancy when given.
fn pending_decision(next: &str, flag: Option<ReviewReason>, mismatch: bool) -> Decision {
    Decision {
        class: if mismatch {
            OutcomeClass::Mismatch
        } else {
            OutcomeClass::Pending
        },
        change: Change::Reschedule {
            next_query_at: ts(next),
            attempts: 1,
            unknown_since: None,
            refund_trade_no: Some("T-Q".into()),
            flag,
        },
        discrepancies: if mismatch {
            vec![Discrepancy {
                kind: DiscrepancyKind::AmountMismatch,
                expected: "10.00".into(),
                observed: "11.00".into(),
            }]
        } else {
            Vec::new()
        },
        halt: None,
        slow_down: false,
    }
}

/// The engine itself, logged in as the daemon's role with exactly roles.sql's grants, runs every
/// method of the ledger interface the daemon and its operator commands call (src/ledger/store.rs)
/// as they call it: open (create-if-empty, existing, reading) and verify-ledger; the node's
/// lock and presence; intake; a sweep with its claim, single and grouped attempt records, an unreadable
/// row and a refused attempt; confirmations and the watches; every read; every operator action;
/// the webhook outbox; prune with its archive. Only `backup` is refused, by the engine (pg_dump
/// does it). A failure names the method and the server's refusal.
#[test]
fn pg_roles_the_daemon_role_runs_every_ledger_method_the_daemon_and_commands_call() {
    let Some(l) = Ledger::set_up() else { return };
    let pg_target = PostgresTarget {
        url: l.url_as(&l.daemon),
        password: None,
        ca_file: None,
    };
    let target = LedgerTarget::Postgres(pg_target.clone());
    let mut calls = Calls::default();
    let node = NodeName::parse_as("node", "node-a").unwrap();
    let t0 = ts("2026-01-01T00:10:00.000Z");
    let later = ts("2099-01-01T00:00:00.000Z");

    // `run` opens with Create (the ledger exists: it is only checked), then Existing.
    let Some(mut d) = calls.ok(
        "ledger::open(Create)",
        checus_reconciler::ledger::open(&target, OpenMode::Create),
    ) else {
        calls.assert_all_succeeded(&l.daemon);
        unreachable!()
    };
    calls.ok(
        "ledger::open(Existing)",
        checus_reconciler::ledger::open(&target, OpenMode::Existing),
    );
    d.set_node(node.clone());

    // `run` holds its node's lock on a session of its own; `retry-now` and `resume` ask whether
    // a daemon holds it.
    let mut lock = calls.ok("NodeLock::acquire", NodeLock::acquire(&pg_target, &node));
    if let Some(lock) = &mut lock {
        calls.ok("NodeLock::check", lock.check());
    }

    // The node's presence and the start-up's cleanup.
    let start = NodeStart {
        name: node.clone(),
        host: "host-a".into(),
        pid: 42,
        version: "0.1.0".into(),
        at: t0,
    };
    calls.ok("node_started", d.node_started(&start));
    calls.ok("node_heartbeat", d.node_heartbeat(&node, t0));
    // Once the node has its row, the lock is seen held.
    if let Some(pg) = calls.ok(
        "PgLedger::open(Existing)",
        PgLedger::open(&pg_target, OpenMode::Existing),
    ) {
        let held = calls.ok("any_node_lock_held", pg.any_node_lock_held());
        assert_eq!(held, lock.as_ref().map(|_| true), "the lock is seen held");
    }
    calls.ok("close_interrupted_sweeps", d.close_interrupted_sweeps(t0));

    // Intake: `add`, the API, `import`, the listener's notifications.
    calls.ok(
        "insert_refund",
        d.insert_refund(&new_refund("R1", RefundStatus::Pending)),
    );
    calls.ok(
        "register_refund",
        d.register_refund(&new_refund("R2", RefundStatus::Pending)),
    );
    let batch: Vec<_> = ["R3", "R4", "R5", "R6", "R7", "R8", "R9"]
        .into_iter()
        .map(|n| new_refund(n, RefundStatus::Pending))
        .collect();
    calls.ok("import", d.import(&batch, &mut |_| {}));
    calls.ok(
        "record_notification",
        d.record_notification(&notification("R3", FinalStatus::Success)),
    );
    if let Some(effects) = calls.ok(
        "record_notifications",
        d.record_notifications(&[
            notification("R4", FinalStatus::Success),
            notification("R4", FinalStatus::Failed),
        ]),
    ) {
        for e in effects {
            calls.ok("record_notifications (one notification)", e);
        }
    }

    // One sweep: schedule, claim under a lease, record (one, then a group commit), an
    // unreadable row, an attempt the ledger refused, the sweep's end.
    calls.ok("schedule_new", d.schedule_new(Duration::ZERO));
    let sweep = calls.ok("begin_sweep", d.begin_sweep(t0, &node));
    let claimed = calls.ok("claim_due", d.claim_due(later, 10, &node, later));
    // R7 claimed, then not sent (a chunk cut short): its lease ends at once.
    let released = calls.ok("release_claims", d.release_claims(&node, &[no("R7")]));
    calls.ok("next_due_at", d.next_due_at(&SkipList::default(), &node));
    calls.ok("state", d.state(&no("R1")));
    calls.ok(
        "record_attempt_in",
        d.record_attempt_in(
            sweep,
            &success_answer("R1", "2026-01-01T00:15:00.000Z"),
            &finalize(FinalStatus::Success),
        ),
    );
    let group = vec![
        (
            sweep,
            success_answer("R2", "2026-01-01T00:15:00.000Z"),
            pending_decision(
                "2026-01-02T00:00:00.000Z",
                Some(ReviewReason::PendingTooLong),
                true,
            ),
        ),
        (
            sweep,
            success_answer("R5", "2026-01-01T00:15:00.000Z"),
            finalize(FinalStatus::Failed),
        ),
    ];
    if let Some(each) = calls.ok("record_attempts", d.record_attempts(&group)) {
        for r in each {
            calls.ok("record_attempts (one record)", r);
        }
    }
    // `query`: an attempt outside any sweep.
    calls.ok(
        "record_attempt",
        d.record_attempt(
            &success_answer("R6", "2026-01-01T00:16:00.000Z"),
            &pending_decision("2026-01-02T00:00:00.000Z", None, false),
        ),
    );
    let r9 = l.admin("SELECT id FROM refunds WHERE out_refund_no = 'R9'");
    calls.ok(
        "flag_unreadable",
        d.flag_unreadable(r9.parse().unwrap(), t0, "amount does not parse"),
    );
    calls.ok(
        "record_refused_attempt",
        d.record_refused_attempt(
            sweep,
            &success_answer("R8", "2026-01-01T00:16:00.000Z"),
            OutcomeClass::Pending,
            "checus-reconciler: refused by the ledger",
        ),
    );
    if let Some(id) = sweep {
        let end = SweepEnd {
            counts: SweepCounts {
                claimed: 3,
                finalized: 2,
                rescheduled: 1,
                failed: 0,
                unreadable: 1,
            },
            ..SweepEnd::default()
        };
        calls.ok("finish_sweep", d.finish_sweep(id, t0, &end));
    }
    calls.ok(
        "due_confirmations",
        d.due_confirmations(later, Duration::ZERO, 10),
    );

    // The daemon's watches.
    calls.ok("finalized_watermark", d.finalized_watermark());
    calls.ok(
        "finalized_elsewhere_since",
        d.finalized_elsewhere_since(None, 10),
    );
    calls.ok("discrepancy_watermark", d.discrepancy_watermark());
    calls.ok("discrepancies_since", d.discrepancies_since(0, 10));
    calls.ok("operator_actions_watermark", d.operator_actions_watermark());
    calls.ok("resume_requested_after", d.resume_requested_after(0));

    // The reads of status, /readyz, /metrics, the API and the read commands.
    calls.ok("status", d.status(t0));
    calls.ok("health", d.health(t0, Duration::from_secs(60)));
    calls.ok(
        "health_with",
        d.health_with(t0, Duration::from_secs(60), &Policy::default()),
    );
    calls.ok("gauges", d.gauges(t0));
    let every = ListFilter {
        status: None,
        flagged: None,
        since: None,
        limit: 100,
    };
    calls.ok("list", d.list(&every));
    calls.ok("list_total", d.list_total(&every));
    calls.ok("show", d.show(&no("R1")));
    calls.ok("refund", d.refund(&no("R1")));
    calls.ok("timeline", d.timeline(&no("R1")));
    calls.ok("stuck", d.stuck(later, 10));
    calls.ok("stuck_total", d.stuck_total(later));
    calls.ok("failed_since", d.failed_since(t0, 10));
    calls.ok("failed_total", d.failed_total(t0));
    calls.ok("export_since", d.export_since(t0));
    let open_discrepancies = calls.ok("discrepancies", d.discrepancies(false));
    let all_actions = AuditFilter {
        refund: None,
        since: None,
        limit: 100,
    };
    calls.ok("audit", d.audit(&all_actions));
    calls.ok("audit_total", d.audit_total(&all_actions));
    calls.ok("latest_finished_sweep", d.latest_finished_sweep());
    calls.ok(
        "first_finished_sweep_after",
        d.first_finished_sweep_after(0),
    );
    calls.ok("nodes", d.nodes());

    // The operator commands that write, each audited.
    calls.ok("retry_now", d.retry_now(&no("R6"), "ops", t0));
    calls.ok("clear_flag", d.clear_flag(&no("R2"), "ops", "looked", t0));
    let retried = calls.ok("retry_all_flagged", d.retry_all_flagged("ops", t0));
    calls.ok(
        "resolve",
        d.resolve(&no("R6"), FinalStatus::Failed, "ops", "by phone", t0),
    );
    for open in open_discrepancies.unwrap_or_default() {
        calls.ok("discrepancy", d.discrepancy(open.id));
        calls.ok(
            "resolve_discrepancy",
            d.resolve_discrepancy(open.id, "ops", "checked", t0),
        );
    }
    calls.ok("request_resume", d.request_resume("ops", "NTP fixed", t0));

    // The webhook outbox: the deliverer and `webhooks`.
    if let Some(due) = calls.ok("due_webhooks", d.due_webhooks(later, 10)) {
        let results: Vec<_> = due
            .iter()
            .map(|w| DeliveryResult {
                id: w.id,
                attempted_at: t0,
                outcome: DeliveryOutcome::Dead {
                    error: "HTTP 500".into(),
                },
            })
            .collect();
        calls.ok("record_webhook_results", d.record_webhook_results(&results));
    }
    calls.ok("next_webhook_at", d.next_webhook_at());
    calls.ok("dead_webhook_count", d.dead_webhook_count());
    let dead = WebhookFilter {
        state: Some(WebhookState::Dead),
        refund: None,
        limit: 10,
    };
    if let Some(events) = calls.ok("webhook_events", d.webhook_events(&dead)) {
        let ids: Vec<String> = events.rows.iter().map(|e| e.event_id.clone()).collect();
        calls.ok(
            "redeliver_webhooks",
            d.redeliver_webhooks(&ids, "ops", "receiver fixed", t0),
        );
    }
    calls.ok("webhook_events_total", d.webhook_events_total(&dead));

    // prune, with its archive; then the pruned refund is found.
    let dir = tempfile::tempdir().unwrap();
    let plan = calls.ok("prune_plan", d.prune_plan(later));
    let report = calls.ok(
        "prune",
        d.prune(
            later,
            "ops",
            "retention",
            Some(&dir.path().join("prune.jsonl")),
            t0,
        ),
    );
    calls.ok("pruned", d.pruned(&no("R1")));
    calls.ok("recheck_schema", d.recheck_schema());
    calls.ok("node_stopped", d.node_stopped(&node, t0));

    // The read commands' own session, and verify-ledger.
    if let Some(reading) = calls.ok(
        "ledger::open(Reading)",
        checus_reconciler::ledger::open(&target, OpenMode::Reading),
    ) {
        calls.ok("status (opened for reading)", reading.status(t0));
    }
    calls.ok("ledger::verify", checus_reconciler::ledger::verify(&target));
    calls.assert_all_succeeded(&l.daemon);

    // The calls did their work (so a method that silently did nothing is not a pass).
    assert_eq!(
        claimed.map(|c| c.rows.len()),
        Some(7),
        "R3 and R4 were final"
    );
    assert_eq!(released, Some(1), "R7's lease");
    assert_eq!(
        retried,
        Some(vec![no("R8"), no("R9")]),
        "flagged by the refused attempt and as unreadable; R2's flag was cleared first"
    );
    assert_eq!(plan.map(|p| p.refunds), Some(5), "R1, R3, R4, R5, R6");
    assert_eq!(report.map(|r| r.counts.refunds), Some(5));
    assert!(matches!(
        d.backup(&dir.path().join("copy")),
        Err(LedgerError::NotOnThisEngine { .. })
    ));
    assert_eq!(
        l.admin(
            "SELECT string_agg(DISTINCT action, ' ' ORDER BY action) FROM operator_actions;
             SELECT string_agg(name || ' stopped=' || (stopped_at IS NOT NULL), ',') FROM nodes;"
        ),
        "clear_flag prune redeliver_webhook resolve resolve_discrepancy resume retry_now\n\
         node-a stopped=true"
    );
}
