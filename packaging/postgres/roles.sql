-- checus-reconciler: least-privilege roles for a PostgreSQL ledger (docs/postgres.md).
--
-- Three roles per ledger (one schema of one database):
--   owner   (NOLOGIN) owns the schema and every ledger object; applies schema.postgres.sql and
--           its migrations. The trigger functions that must write where a writer may not
--           (the notification apply, refund_counts, the webhook outbox) run as this role
--           (SECURITY DEFINER, see schema.postgres.sql's header).
--   daemon  (LOGIN) what checus-reconciler and its operator commands run: read every table,
--           write the columns its statements write, DELETE only where a prune may (the
--           triggers refuse any other delete). No DDL, no TRUNCATE, no TRIGGER, no REFERENCES.
--   app     (LOGIN) the merchant's app: exactly the contract (src/ledger/contract.postgres.sql):
--           INSERT the contract's columns of refunds and notifications, EXECUTE checus_instant,
--           SELECT refunds and notifications to read outcomes. Nothing else.
-- Identity columns need no grant on their sequences (PostgreSQL does not check them for the
-- column's own default). One sequence is read: the daemon's notification inbox reads back the
-- effect of the row it just inserted by currval() of notifications' sequence, which needs
-- SELECT on it (SELECT allows currval only, never nextval or setval).
--
-- Run it as a superuser or a role with CREATEROLE that may create schemas in the database, in
-- the ledger's database:
--     CHECUS_DAEMON_PASSWORD=... CHECUS_APP_PASSWORD=... \
--     psql -X -d refunds -v schema=checus \
--          -v ledger_sql=/usr/share/checus-reconciler/schema.postgres.sql \
--          -f packaging/postgres/roles.sql
-- Variables (psql -v NAME=VALUE), all optional:
--   schema     the ledger's schema                                     (default: checus)
--   owner      the owner role                                          (default: checus_owner)
--   daemon     the daemon's role                                       (default: checus_daemon)
--   app        the merchant app's role                                 (default: checus_app)
--   ledger_sql schema.postgres.sql: applied as the owner when the schema holds no ledger yet
-- Passwords come from the environment (never the command line, which `ps` shows):
--   CHECUS_DAEMON_PASSWORD, CHECUS_APP_PASSWORD; unset: the password is left as it is. A
--   password is sent to the server as a statement: keep log_statement at 'none' or 'ddl'
--   off for this run, or set it afterwards with psql's \password, which sends a hash.
--
-- Idempotent: run it again after every upgrade of the ledger (a migration may add a table or a
-- column). Each run first revokes everything the daemon, the app and PUBLIC had on the ledger,
-- then grants exactly the list below, in one transaction (the roles and the schema are
-- committed first, the ledger is applied in its own). Roles are cluster-wide: with several
-- ledgers (one schema per merchant) give each its own role names (-v daemon=checus_daemon_a).

\set ON_ERROR_STOP 1
\if :{?schema}
\else
\set schema checus
\endif
\if :{?owner}
\else
\set owner checus_owner
\endif
\if :{?daemon}
\else
\set daemon checus_daemon
\endif
\if :{?app}
\else
\set app checus_app
\endif
\getenv daemon_password CHECUS_DAEMON_PASSWORD
\getenv app_password CHECUS_APP_PASSWORD

BEGIN;

-- The roles. The owner never logs in: an operator applies migrations with SET ROLE.
SELECT format('CREATE ROLE %I NOLOGIN', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'daemon')
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :'daemon') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app')
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"owner" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
ALTER ROLE :"daemon" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
ALTER ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
\if :{?daemon_password}
ALTER ROLE :"daemon" PASSWORD :'daemon_password';
\endif
\if :{?app_password}
ALTER ROLE :"app" PASSWORD :'app_password';
\endif
-- Whoever runs this acts as the owner below (a superuser already may).
SELECT format('GRANT %I TO %I', :'owner', current_user)
 WHERE NOT pg_catalog.pg_has_role(current_user, :'owner', 'MEMBER') \gexec

-- The schema, the owner's alone. The daemon and the app find the ledger first in search_path
-- when they connect to this database (a URL's options=-csearch_path=... overrides it).
SELECT format('CREATE SCHEMA %I AUTHORIZATION %I', :'schema', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :'schema') \gexec
ALTER SCHEMA :"schema" OWNER TO :"owner";
REVOKE ALL ON SCHEMA :"schema" FROM PUBLIC, :"daemon", :"app";
GRANT USAGE ON SCHEMA :"schema" TO :"daemon", :"app";
GRANT CONNECT ON DATABASE :"DBNAME" TO :"daemon", :"app";
ALTER ROLE :"daemon" IN DATABASE :"DBNAME" SET search_path = :"schema";
ALTER ROLE :"app" IN DATABASE :"DBNAME" SET search_path = :"schema";

-- The roles and the schema stay even when the ledger is not there yet (below), so its owner
-- exists to apply it.
COMMIT;

-- The ledger itself, applied as the owner when the schema is still empty and ledger_sql names
-- schema.postgres.sql. Otherwise it must be there already (applied as the owner, or by an
-- earlier run).
SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
                    WHERE schemaname = :'schema' AND tablename = 'schema_version') AS ledger_missing \gset
\if :ledger_missing
\if :{?ledger_sql}
BEGIN;
SET LOCAL ROLE :"owner";
SET LOCAL search_path = :"schema";
\i :ledger_sql
COMMIT;
\else
DO $$
BEGIN
    RAISE EXCEPTION 'checus-reconciler: the schema holds no ledger yet: pass -v ledger_sql=PATH/schema.postgres.sql, or apply it as the owner (SET ROLE) and run roles.sql again';
END
$$;
\endif
\endif

BEGIN;
SET LOCAL search_path = :"schema";

-- Everything in the schema belongs to the owner (an apply by another role is handed over), so
-- the SECURITY DEFINER trigger functions run as the owner, never as a superuser.
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'owner')
  FROM pg_catalog.pg_tables WHERE schemaname = :'schema' AND tableowner <> :'owner' \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'owner')
  FROM pg_catalog.pg_proc AS p
 WHERE p.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :'schema')
   AND p.proowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :'owner') \gexec

-- A known state: nothing for PUBLIC, the daemon or the app, then exactly what follows.
-- (Revoking a table's privileges revokes its column privileges too.)
REVOKE ALL ON ALL TABLES IN SCHEMA :"schema" FROM PUBLIC, :"daemon", :"app";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA :"schema" FROM PUBLIC, :"daemon", :"app";
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA :"schema" FROM PUBLIC, :"daemon", :"app";

-- ---------------------------------------------------------------------------------------------
-- The merchant's app: the contract's three INSERTs, with only the columns they name (so it
-- cannot set created_at, next_query_at, a lease or an effect), checus_instant for the
-- notification's times, and reading outcomes. The notification-apply trigger finalizes the
-- refund as the owner; the app itself cannot UPDATE, DELETE or TRUNCATE anything.
-- ---------------------------------------------------------------------------------------------
GRANT INSERT (out_refund_no, refund_trade_no, out_trade_no, amount, currency,
              status, final_source, finalized_at)
   ON refunds TO :"app";
GRANT INSERT (out_refund_no, status, refund_trade_no, amount, currency,
              refund_finish_time, notify_time)
   ON notifications TO :"app";
GRANT SELECT ON refunds, notifications TO :"app";
GRANT EXECUTE ON FUNCTION checus_instant(text) TO :"app";

-- ---------------------------------------------------------------------------------------------
-- The daemon (and its operator commands, which connect as it): every statement of the ledger
-- module. Reads everything, including the lease claim's SELECT ... FOR UPDATE SKIP LOCKED
-- (which needs UPDATE on a column of refunds, granted below).
-- ---------------------------------------------------------------------------------------------
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO :"daemon";
GRANT EXECUTE ON FUNCTION checus_instant(text), checus_instant_text(timestamptz),
                          ledger_prune_covers(text, timestamptz)
   TO :"daemon";

-- refunds: import and `add` insert whole refunds; the worker, the operator commands and the
-- leases update the outcome, schedule, flag and lease columns. Never id, out_refund_no, amount,
-- currency (immutable; the triggers refuse them too), created_at or out_trade_no.
GRANT INSERT ON refunds TO :"daemon";
GRANT UPDATE (status, final_source, finalized_at, refund_finish_time, refund_trade_no,
              next_query_at, attempts, unknown_since, last_attempt_at,
              last_outcome, last_error, review_flag, review_reason, flagged_at, confirm_at,
              claimed_by, claimed_until)
   ON refunds TO :"daemon";
-- History: appended by the worker, the listener and the operator commands.
GRANT INSERT ON attempts, notifications, discrepancies, operator_actions TO :"daemon";
-- The inbox's read-back of its own notification (currval; see the header).
SELECT format('GRANT SELECT ON SEQUENCE %s TO %I',
              pg_catalog.pg_get_serial_sequence(format('%I.%I', :'schema', 'notifications'), 'id'),
              :'daemon') \gexec
-- resolve-discrepancy.
GRANT UPDATE (resolved_at, resolved_by, resolution) ON discrepancies TO :"daemon";
-- Sweeps: started, then finished (or closed as interrupted at the next start).
GRANT INSERT ON sweeps TO :"daemon";
GRANT UPDATE (finished_at, claimed, finalized, rescheduled, failed, halted_reason, halt_code,
              unreadable, error, breaker_open_since)
   ON sweeps TO :"daemon";
-- Nodes: the start's upsert, the heartbeats, the clean stop. Never deleted by the daemon.
GRANT INSERT ON nodes TO :"daemon";
GRANT UPDATE (host, pid, version, started_at, heartbeat_at, stopped_at) ON nodes TO :"daemon";
-- Webhook delivery state (the outbox rows themselves are written by the triggers).
GRANT UPDATE (state, attempts, first_attempt_at, next_attempt_at, last_error, delivered_at)
   ON webhook_events TO :"daemon";
-- prune: its audit row, then the deletes the triggers allow only while it runs.
GRANT INSERT ON prunes TO :"daemon";
GRANT UPDATE (state, refunds, attempts, notifications, discrepancies, sweeps)
   ON prunes TO :"daemon";
GRANT DELETE ON refunds, attempts, notifications, discrepancies, webhook_events, sweeps
   TO :"daemon";

COMMIT;
