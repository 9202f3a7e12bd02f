//! The least-privilege roles of a PostgreSQL ledger (`packaging/postgres/roles.sql`) on a real
//! server, each test in its own fresh database with its own uniquely named roles (roles are
//! cluster-wide; both are dropped afterwards). Every statement runs through `psql` logged in as
//! the role under test, as the merchant's app or the daemon would: what the role needs works,
//! and what it must not do is refused by the server (permission denied), not merely by a
//! trigger.

use checus_reconciler::ledger::contract::{CONTRACT_POSTGRES_SQL, SNIPPETS};

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

    /// `script` through psql logged in as `role` (no search_path given: the role's own).
    fn as_role(&self, role: &str, script: &str) -> PsqlRun {
        let mut u = url::Url::parse(&self.url).unwrap();
        u.set_username(role).unwrap();
        pg::psql_script(u.as_str(), script)
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
