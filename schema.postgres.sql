-- checus-reconciler ledger on PostgreSQL, schema version 10: the PostgreSQL form of schema.sql.
--
-- Same tables, same columns, same meaning, same rules as schema.sql (version 10: version 9 only
-- changed how SQLite words its CHECKs and triggers, which PostgreSQL does not need) with version 10's
-- additions for several daemons on one ledger (refunds.claimed_by/claimed_until, attempts.node,
-- sweeps.node, the `nodes` table, the `schema_version` table). What schema.sql says about each
-- column holds here; this file only says where PostgreSQL differs.
--
-- How it is applied: to an EMPTY schema, in ONE transaction, e.g.
--     psql -v ON_ERROR_STOP=1 --single-transaction -f schema.postgres.sql
-- or as one simple-query string (PostgreSQL runs a multi-statement simple query as one
-- implicit transaction). The file holds no BEGIN/COMMIT, so it also runs inside a transaction
-- the caller opened. No name is schema-qualified: every object goes into the first schema of
-- `search_path`, so one database can hold several merchants' ledgers, one schema each
--     SET search_path = merchant_a; \i schema.postgres.sql
-- Each trigger function keeps the search_path it was created with (`SET search_path FROM
-- CURRENT`), so a trigger of merchant_a's ledger reads merchant_a's tables whatever the
-- search_path of the session that fired it. Applied a second time to a schema that already
-- holds a ledger, the first statement refuses ('checus-reconciler: ... already holds a
-- ledger') and nothing is changed.
--
-- The rules that protect money (the same list as schema.sql's header) are CHECKs and PL/pgSQL
-- triggers, so they bind every writer: the daemon, the merchant's app, an operator in psql.
-- Trigger errors start with 'checus-reconciler:' and have exactly schema.sql's texts (SQLSTATE
-- P0001, raise_exception), so one classification serves both engines
-- (src/ledger/error.rs). Where PostgreSQL differs from SQLite:
--   * Instants are timestamptz(3): milliseconds, like the SQLite text form, and always a real
--     instant. A CHECK keeps them finite and within years 0001..9999 (the 4-digit years of
--     the SQLite form). How they are displayed depends on the session's TimeZone; what is
--     stored does not. The merchant contract (src/ledger/contract.postgres.sql) turns the RFC
--     3339 texts of a notification into instants with `checus_instant(text)`, which refuses a
--     text that is not one (2026-02-31, hour 24, second 60, no offset) as SQLite does.
--   * Amounts are NUMERIC: exact, with the scale written ('12.50' stays 12.50). The CHECK is
--     schema.sql's textual rule on the value: positive, not NaN or infinite, and at most 28
--     characters written out. Amounts compare as numbers (10.00 = 10), which is exactly the
--     canonical-text comparison schema.sql spells out by hand; an amount's identity (the
--     immutability triggers) still compares the written text, so 10.00 never becomes 10.0.
--   * INTEGER columns are bigint (SQLite's INTEGER is 64-bit); ids are identity columns
--     (GENERATED ALWAYS: nobody picks an id by hand, so the sequence never collides).
--   * PostgreSQL has no INSERT OR REPLACE. An upsert (INSERT ... ON CONFLICT DO UPDATE) is an
--     UPDATE and meets the UPDATE triggers; a duplicate id is a primary-key violation. So only
--     `refunds_insert_is_not_replace` is kept of schema.sql's *_insert_is_not_replace
--     triggers, for its message ('refund already exists'). Under concurrency two inserts of
--     one out_refund_no can both pass it; the later one then fails with unique_violation
--     (23505) on refunds_out_refund_no_key, which means the same thing.
--   * TRUNCATE skips row triggers, so every table whose rows are never deleted refuses it.
--   * The notification-apply trigger locks the refund row (SELECT ... FOR UPDATE) before it
--     classifies the notification, so a concurrent finalization by the daemon is either seen
--     (already_final / conflicting_final) or waits; a classification never goes stale. Under
--     REPEATABLE READ or SERIALIZABLE such a race is a serialization failure (40001) instead:
--     retry it.
--   * refund_counts rows are locked by every transaction that inserts, finalizes or prunes a
--     refund, until it commits. Inserts and deletes update them once per statement (transition
--     tables), so a multi-row INSERT or COPY of 25 000 refunds is one update, not 25 000.
--     Two transactions that take the count rows in opposite orders can deadlock (40P01):
--     PostgreSQL aborts one, which retries. A status change is counted per row, so a
--     transaction that changes the status of many thousands of refunds updates the same count
--     row that many times, and each update walks the row versions the transaction made before
--     it: 20 000 finalizations in one transaction took 11.5 s, against 0.5 s for 20 000
--     inserts. Keep such transactions to a few thousand rows (the daemon's batches are far
--     smaller).
--   * The trigger functions that look a row up by key (the refund of a notification, an
--     attempt, a discrepancy; the duplicate check of a new refund) run with enable_seqscan off.
--     PL/pgSQL caches their plans, and a plan made while the table was small (a new ledger
--     being loaded, statistics not yet gathered) is a sequential scan that stays: loading
--     20 000 refunds into a new ledger in one INSERT took 10 s (quadratic) with it, well under
--     a second with the index.
--   * "now" is statement_timestamp() (SQLite's 'now' is fixed for one statement too).
--   * The rules are enforced by triggers; a role that owns the tables can disable them
--     (ALTER TABLE ... DISABLE TRIGGER, session_replication_role). Neither the daemon nor the
--     merchant's app should own the ledger's tables: packaging/postgres/roles.sql sets up an
--     owner role that does, and a daemon role and an app role with only the grants they need
--     (docs/postgres.md).
--   * The trigger functions that write where the writer itself may not (the notification
--     apply, refund_counts, the webhook outbox) are SECURITY DEFINER: they run as the ledger's
--     owner, so the merchant's app needs INSERT on refunds and notifications and no right to
--     UPDATE refunds, write refund_counts or forge webhook events. Trigger functions cannot be
--     called directly, so they do only what the row that fired them says. Every function's
--     search_path is the ledger's schema then pg_temp (set below for this transaction, kept by
--     SET search_path FROM CURRENT): named last, a session's temporary tables can never stand
--     in for the ledger's tables inside a function that runs as the owner. This is why the file
--     must run in one transaction; the last statement checks it did.

-- Refuse to apply over an existing ledger (the CREATE TABLEs would fail too, less clearly).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_tables
                WHERE schemaname = pg_catalog.current_schema()
                  AND tablename IN ('schema_version', 'refunds')) THEN
        RAISE EXCEPTION 'checus-reconciler: schema % already holds a ledger; schema.postgres.sql applies only to an empty schema (upgrade an older ledger with its migrations)',
            pg_catalog.current_schema();
    END IF;
END
$$;

-- For the rest of this transaction: the ledger's schema, then pg_temp, named last so that no
-- function created below resolves a table name to a session's temporary table (see the header).
DO $$
BEGIN
    PERFORM pg_catalog.set_config('search_path',
                                  pg_catalog.quote_ident(pg_catalog.current_schema()) || ', pg_temp',
                                  true);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Helpers.
-- ---------------------------------------------------------------------------------------------

-- The generic refusal: a trigger whose condition is its WHEN clause raises its argument.
CREATE FUNCTION ledger_refuse() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;

-- An RFC 3339 date-time as received (any offset, e.g. 2023-10-20T11:28:24.5+08:00) to an
-- instant. Refuses what is not a real instant in that form (2026-02-31, hour 24, second 60,
-- month 13, no offset, 'now', 'infinity'), as the SQLite contract's CHECKs do. NULL stays NULL.
-- PostgreSQL's own parser would take hour 24 and second 60 as the next day / minute, and a
-- text with no offset in the session's TimeZone, so the shape is checked here first.
CREATE FUNCTION checus_instant(t text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path FROM CURRENT AS $$
DECLARE
    f text[];
BEGIN
    f := regexp_match(t, '^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-]([0-9]{2}):([0-9]{2}))$');
    IF f IS NULL
       OR f[1]::int < 1 OR f[2]::int NOT BETWEEN 1 AND 12 OR f[3]::int < 1
       OR f[3]::int > extract(day FROM make_date(f[1]::int, f[2]::int, 1) + interval '1 month - 1 day')
       OR f[4]::int > 23 OR f[5]::int > 59 OR f[6]::int > 59
       OR coalesce(f[9]::int > 23 OR f[10]::int > 59, false) THEN
        RAISE EXCEPTION 'checus-reconciler: % is not a real RFC 3339 instant (YYYY-MM-DDTHH:MM:SS[.fff] with Z or an offset)',
            quote_literal(t)
            USING ERRCODE = 'invalid_datetime_format';
    END IF;
    RETURN t::timestamptz;
END
$$;

-- An instant in the ledger's text form, YYYY-MM-DDTHH:MM:SS.mmmZ in UTC (what schema.sql
-- stores), whatever the session's TimeZone: the webhook payloads use it.
CREATE FUNCTION checus_instant_text(x timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path FROM CURRENT
RETURN to_char(x AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

-- True when a running prune (visible only inside its own transaction) covers a final refund
-- finalized before its cutoff. NULL (no running prune) is false: refused, not allowed.
CREATE FUNCTION ledger_prune_covers(status text, finalized_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
BEGIN
    RETURN coalesce(status <> 'REFUND_PENDING'
                    AND finalized_at < (SELECT p.finalized_before FROM prunes AS p
                                         WHERE p.state = 'running'), false);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- refunds (schema.sql's column comments hold).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE refunds (
    id                 bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    out_refund_no      text    NOT NULL
                       CONSTRAINT refunds_out_refund_no_key UNIQUE
                       CHECK (out_refund_no ~ '^[!-~]{1,64}$'),
    refund_trade_no    text    CHECK (length(refund_trade_no) BETWEEN 1 AND 64),
    out_trade_no       text    CHECK (length(out_trade_no) BETWEEN 1 AND 64),
    -- Positive, finite, at most 28 characters written out (schema.sql's textual rule).
    amount             numeric NOT NULL
                       CHECK (amount > 0 AND amount < 1e28 AND length(amount::text) <= 28),
    currency           text    NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status             text    NOT NULL DEFAULT 'REFUND_PENDING'
                       CHECK (status IN ('REFUND_PENDING', 'REFUND_SUCCESS', 'REFUND_FAILED')),
    created_at         timestamptz(3) NOT NULL DEFAULT statement_timestamp()
                       CHECK (created_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    notified_at        timestamptz(3)
                       CHECK (notified_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    finalized_at       timestamptz(3)
                       CHECK (finalized_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    final_source       text
                       CHECK (final_source IN ('notification', 'query', 'refund_response', 'operator')),
    refund_finish_time timestamptz(3)
                       CHECK (refund_finish_time BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    next_query_at      timestamptz(3)
                       CHECK (next_query_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    attempts           bigint  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    unknown_since      timestamptz(3)
                       CHECK (unknown_since BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    last_attempt_at    timestamptz(3)
                       CHECK (last_attempt_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    last_outcome       text
                       CHECK (last_outcome IN ('final', 'pending', 'unknown', 'retryable', 'rate_limited',
                                               'clock_skew', 'config_error', 'mismatch')),
    last_error         text,
    review_flag        bigint  NOT NULL DEFAULT 0 CHECK (review_flag IN (0, 1)),
    review_reason      text
                       CHECK (review_reason IN ('pending_too_long', 'unknown_at_gateway_too_long',
                                                'answer_mismatch', 'answer_unrecordable',
                                                'row_unreadable', 'row_unwritable',
                                                'gateway_rejected_request')),
    flagged_at         timestamptz(3)
                       CHECK (flagged_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    confirm_at         timestamptz(3)
                       CHECK (confirm_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    -- Version 10: the node holding this refund's lease, and when the lease ends (both NULL when
    -- unclaimed). A lease exists only on a pending refund: finalizing clears both in the same
    -- UPDATE (the notification-apply trigger does). Not part of the refund's identity or outcome.
    claimed_by         text
                       CHECK (claimed_by ~ '^[A-Za-z0-9._-]{1,64}$'),
    claimed_until      timestamptz(3)
                       CHECK (claimed_until BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),

    CHECK ((status = 'REFUND_PENDING') = (final_source IS NULL)),
    CHECK ((final_source IS NULL) = (finalized_at IS NULL)),
    CHECK (final_source IS DISTINCT FROM 'refund_response' OR status = 'REFUND_FAILED'),
    CHECK ((review_flag = 1) = (review_reason IS NOT NULL)),
    CHECK ((review_flag = 1) = (flagged_at IS NOT NULL)),
    CHECK ((claimed_by IS NULL) = (claimed_until IS NULL)),
    CHECK (claimed_by IS NULL OR status = 'REFUND_PENDING')
);

-- Due work: pending refunds by next query time, O(due) not O(ledger). It serves the lease claim
--   SELECT id FROM refunds WHERE status = 'REFUND_PENDING' AND next_query_at <= $now
--     AND (claimed_until IS NULL OR claimed_until < $now)
--   ORDER BY next_query_at LIMIT $n FOR UPDATE SKIP LOCKED
-- as an ordered scan of this index that stops after $n rows (claimed and locked rows are
-- skipped as they come): the cost does not grow with the ledger. Two conditions:
--   * the status is written as the literal 'REFUND_PENDING' (not a parameter), or the planner
--     cannot use this partial index;
--   * the claim's transaction runs `SET LOCAL enable_bitmapscan = off` first. The planner
--     multiplies the selectivities of status = 'REFUND_PENDING' and next_query_at <= $now as
--     if they were independent (next_query_at is set only on pending rows), so it
--     underestimates the due rows by the share of pending refunds, and below $n estimated
--     rows it reads ALL due rows with a bitmap scan and sorts them: O(due), not O(n).
--     Measured, LIMIT 1000, 10M refunds of which 1% pending: 77 ms with 12 600 due and 280 ms
--     to 1.25 s with 50 000 due; with bitmap scans off, 2.9 to 3.2 ms, as at 100k refunds
--     (3.3 ms). With 10% pending the planner chose the ordered scan by itself (1.4 to 2.7 ms).
CREATE INDEX refunds_due ON refunds (next_query_at) WHERE status = 'REFUND_PENDING';
CREATE INDEX refunds_unscheduled ON refunds (created_at)
    WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL;
CREATE INDEX refunds_final ON refunds (status, created_at) WHERE status <> 'REFUND_PENDING';
CREATE INDEX refunds_to_confirm ON refunds (confirm_at) WHERE confirm_at IS NOT NULL;
CREATE INDEX refunds_by_finalized ON refunds (finalized_at, id) WHERE finalized_at IS NOT NULL;
CREATE INDEX refunds_by_created ON refunds (created_at);
CREATE INDEX refunds_flagged ON refunds (status, created_at) WHERE review_flag = 1;
CREATE INDEX refunds_pending_unflagged ON refunds (created_at)
    WHERE status = 'REFUND_PENDING' AND review_flag = 0;

-- A refund's outcome is final.
CREATE TRIGGER refunds_final_status_is_immutable
BEFORE UPDATE OF status, final_source, finalized_at, refund_finish_time ON refunds
FOR EACH ROW
WHEN (OLD.status <> 'REFUND_PENDING'
      AND (NEW.status IS DISTINCT FROM OLD.status
           OR NEW.final_source IS DISTINCT FROM OLD.final_source
           OR NEW.finalized_at IS DISTINCT FROM OLD.finalized_at
           OR NEW.refund_finish_time IS DISTINCT FROM OLD.refund_finish_time))
EXECUTE FUNCTION ledger_refuse('checus-reconciler: final refund status is immutable');

-- What was refunded never changes (the amount as written: 10.00 never becomes 10.0).
CREATE TRIGGER refunds_identity_is_immutable
BEFORE UPDATE OF id, out_refund_no, amount, currency ON refunds
FOR EACH ROW
WHEN (NEW.id IS DISTINCT FROM OLD.id
      OR NEW.out_refund_no IS DISTINCT FROM OLD.out_refund_no
      OR NEW.amount::text IS DISTINCT FROM OLD.amount::text
      OR NEW.currency IS DISTINCT FROM OLD.currency)
EXECUTE FUNCTION ledger_refuse('checus-reconciler: out_refund_no, amount and currency of a refund are immutable');

-- Refunds are never deleted, except by a running audited prune, and then only final refunds
-- finalized before its cutoff with no unresolved discrepancy.
CREATE FUNCTION refunds_are_never_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF NOT (ledger_prune_covers(OLD.status, OLD.finalized_at)
            AND NOT EXISTS (SELECT 1 FROM discrepancies AS d
                             WHERE d.out_refund_no = OLD.out_refund_no AND d.resolved_at IS NULL)) THEN
        RAISE EXCEPTION 'checus-reconciler: refunds are never deleted (only an audited prune removes old final refunds)';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER refunds_are_never_deleted
BEFORE DELETE ON refunds
FOR EACH ROW EXECUTE FUNCTION refunds_are_never_deleted();

CREATE TRIGGER refunds_are_never_truncated
BEFORE TRUNCATE ON refunds
FOR EACH STATEMENT
EXECUTE FUNCTION ledger_refuse('checus-reconciler: refunds are never deleted (only an audited prune removes old final refunds)');

-- An operator decision is audited before it is applied.
CREATE FUNCTION refunds_operator_decision_is_audited() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM operator_actions AS a
                    WHERE a.action = 'resolve' AND a.out_refund_no = NEW.out_refund_no
                      AND a.to_status = NEW.status) THEN
        RAISE EXCEPTION 'checus-reconciler: an operator decision needs its operator_actions audit row';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER refunds_operator_decision_is_audited
BEFORE UPDATE OF final_source ON refunds
FOR EACH ROW
WHEN (NEW.final_source IS NOT DISTINCT FROM 'operator' AND OLD.status = 'REFUND_PENDING')
EXECUTE FUNCTION refunds_operator_decision_is_audited();

CREATE TRIGGER refunds_operator_insert_is_audited
BEFORE INSERT ON refunds
FOR EACH ROW
WHEN (NEW.final_source IS NOT DISTINCT FROM 'operator')
EXECUTE FUNCTION ledger_refuse('checus-reconciler: an operator decision needs its operator_actions audit row');

-- A second insert of the same out_refund_no is refused with the message the ledger classifies
-- (the unique constraint catches the concurrent case, see the header).
CREATE FUNCTION refunds_insert_is_not_replace() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM refunds AS r
                WHERE r.out_refund_no = NEW.out_refund_no OR r.id = NEW.id) THEN
        RAISE EXCEPTION 'checus-reconciler: refund already exists';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER refunds_insert_is_not_replace
BEFORE INSERT ON refunds
FOR EACH ROW EXECUTE FUNCTION refunds_insert_is_not_replace();

-- ---------------------------------------------------------------------------------------------
-- attempts: append-only log of every /refundQuery attempt. No foreign key on sweep_id (old
-- sweeps are pruned while the attempts of kept refunds are not).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE attempts (
    id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    out_refund_no text    NOT NULL REFERENCES refunds (out_refund_no),
    attempted_at  timestamptz(3) NOT NULL
                  CHECK (attempted_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    outcome       text    NOT NULL
                  CHECK (outcome IN ('final', 'pending', 'unknown', 'retryable', 'rate_limited',
                                     'clock_skew', 'config_error', 'mismatch')),
    http_status   bigint  CHECK (http_status BETWEEN 100 AND 599),
    gateway_code  text,
    data_status   text,
    latency_ms    bigint  NOT NULL CHECK (latency_ms >= 0),
    error         text,
    decision      text,
    sweep_id      bigint,
    -- Version 10: the node that made the attempt (NULL on rows older than version 10).
    node          text    CHECK (node ~ '^[A-Za-z0-9._-]{1,64}$')
);

CREATE INDEX attempts_by_refund ON attempts (out_refund_no, id);

CREATE TRIGGER attempts_are_append_only_no_update
BEFORE UPDATE ON attempts
FOR EACH ROW EXECUTE FUNCTION ledger_refuse('checus-reconciler: attempts are append-only');

CREATE FUNCTION attempts_are_append_only_no_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF NOT coalesce((SELECT ledger_prune_covers(r.status, r.finalized_at)
                       FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no), false) THEN
        RAISE EXCEPTION 'checus-reconciler: attempts are append-only';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER attempts_are_append_only_no_delete
BEFORE DELETE ON attempts
FOR EACH ROW EXECUTE FUNCTION attempts_are_append_only_no_delete();

CREATE TRIGGER attempts_are_never_truncated
BEFORE TRUNCATE ON attempts
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse('checus-reconciler: attempts are append-only');

-- ---------------------------------------------------------------------------------------------
-- discrepancies: disagreements between sources, recorded, never applied. Identity ids are
-- never reused (schema.sql's AUTOINCREMENT).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE discrepancies (
    id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    out_refund_no text    NOT NULL CHECK (out_refund_no ~ '^[!-~]{1,64}$'),
    detected_at   timestamptz(3) NOT NULL DEFAULT statement_timestamp()
                  CHECK (detected_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    source        text    NOT NULL CHECK (source IN ('query', 'notification', 'operator')),
    kind          text    NOT NULL
                  CHECK (kind IN ('conflicting_final', 'refund_no_mismatch', 'amount_mismatch',
                                  'currency_mismatch', 'unknown_refund')),
    expected      text,
    observed      text,
    resolved_at   timestamptz(3)
                  CHECK (resolved_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    resolved_by   text,
    resolution    text,
    CHECK ((resolved_at IS NULL) = (resolved_by IS NULL)),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);

CREATE INDEX discrepancies_by_refund ON discrepancies (out_refund_no, id);
CREATE INDEX discrepancies_unresolved ON discrepancies (detected_at) WHERE resolved_at IS NULL;

CREATE TRIGGER discrepancies_are_immutable
BEFORE UPDATE ON discrepancies
FOR EACH ROW
WHEN (NEW.id IS DISTINCT FROM OLD.id
      OR NEW.out_refund_no IS DISTINCT FROM OLD.out_refund_no
      OR NEW.detected_at IS DISTINCT FROM OLD.detected_at
      OR NEW.source IS DISTINCT FROM OLD.source
      OR NEW.kind IS DISTINCT FROM OLD.kind
      OR NEW.expected IS DISTINCT FROM OLD.expected
      OR NEW.observed IS DISTINCT FROM OLD.observed
      OR OLD.resolved_at IS NOT NULL)
EXECUTE FUNCTION ledger_refuse('checus-reconciler: discrepancies are immutable once recorded or resolved');

CREATE FUNCTION discrepancies_are_never_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF NOT (OLD.resolved_at IS NOT NULL
            AND coalesce((SELECT ledger_prune_covers(r.status, r.finalized_at)
                            FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no), false)) THEN
        RAISE EXCEPTION 'checus-reconciler: discrepancies are never deleted';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER discrepancies_are_never_deleted
BEFORE DELETE ON discrepancies
FOR EACH ROW EXECUTE FUNCTION discrepancies_are_never_deleted();

CREATE TRIGGER discrepancies_are_never_truncated
BEFORE TRUNCATE ON discrepancies
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse('checus-reconciler: discrepancies are never deleted');

-- ---------------------------------------------------------------------------------------------
-- notifications: the merchant app's inbox and its whole write contract for results. The app
-- INSERTs one row per VERIFIED refund result notification (src/ledger/contract.postgres.sql);
-- the trigger below applies it to `refunds` in the same transaction and writes what it did
-- into `effect`. Amounts compare as numbers: NUMERIC equality is schema.sql's canonical-text
-- equality ('10.00', '10' and '010.0' are equal; '10.001' is not).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE notifications (
    id                 bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    out_refund_no      text    NOT NULL CHECK (out_refund_no ~ '^[!-~]{1,64}$'),
    status             text    NOT NULL CHECK (status IN ('REFUND_SUCCESS', 'REFUND_FAILED')),
    refund_trade_no    text    CHECK (length(refund_trade_no) BETWEEN 1 AND 64),
    amount             numeric NOT NULL
                       CHECK (amount > 0 AND amount < 1e28 AND length(amount::text) <= 28),
    currency           text    NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    refund_finish_time timestamptz(3)
                       CHECK (refund_finish_time BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    notify_time        timestamptz(3) NOT NULL
                       CHECK (notify_time BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    received_at        timestamptz(3) NOT NULL DEFAULT statement_timestamp()
                       CHECK (received_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    effect             text
                       CHECK (effect IN ('finalized', 'already_final', 'conflicting_final',
                                         'mismatch', 'unknown_refund'))
);

CREATE INDEX notifications_by_refund ON notifications (out_refund_no, id);

CREATE TRIGGER notifications_effect_is_set_by_the_ledger
BEFORE INSERT ON notifications
FOR EACH ROW
WHEN (NEW.effect IS NOT NULL)
EXECUTE FUNCTION ledger_refuse('checus-reconciler: notifications are append-only and effect is set by the ledger');

-- Only the apply trigger may write, and only `effect`, and only once.
CREATE TRIGGER notifications_are_append_only_no_update
BEFORE UPDATE ON notifications
FOR EACH ROW
WHEN (OLD.effect IS NOT NULL
      OR NEW.id IS DISTINCT FROM OLD.id
      OR NEW.out_refund_no IS DISTINCT FROM OLD.out_refund_no
      OR NEW.status IS DISTINCT FROM OLD.status
      OR NEW.refund_trade_no IS DISTINCT FROM OLD.refund_trade_no
      OR NEW.amount::text IS DISTINCT FROM OLD.amount::text
      OR NEW.currency IS DISTINCT FROM OLD.currency
      OR NEW.refund_finish_time IS DISTINCT FROM OLD.refund_finish_time
      OR NEW.notify_time IS DISTINCT FROM OLD.notify_time
      OR NEW.received_at IS DISTINCT FROM OLD.received_at)
EXECUTE FUNCTION ledger_refuse('checus-reconciler: notifications are append-only and effect is set by the ledger');

CREATE FUNCTION notifications_are_never_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF NOT coalesce((SELECT ledger_prune_covers(r.status, r.finalized_at)
                       FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no), false) THEN
        RAISE EXCEPTION 'checus-reconciler: notifications are append-only and effect is set by the ledger';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER notifications_are_never_deleted
BEFORE DELETE ON notifications
FOR EACH ROW EXECUTE FUNCTION notifications_are_never_deleted();

CREATE TRIGGER notifications_are_never_truncated
BEFORE TRUNCATE ON notifications
FOR EACH STATEMENT
EXECUTE FUNCTION ledger_refuse('checus-reconciler: notifications are append-only and effect is set by the ledger');

-- Applies one notification, atomically with its INSERT. It locks the refund row, classifies
-- the notification against it once, stores that in `effect`, and acts on that one
-- classification (schema.sql's notifications_apply, branch for branch):
--   mismatch           amount or currency differ: one discrepancy per differing field
--   finalized          pending -> the notified status (compare-and-set on REFUND_PENDING;
--                      the row lock makes it hold), the lease cleared
--   already_final      notified_at set if it was empty
--   conflicting_final  a discrepancy, nothing changed
--   unknown_refund     a discrepancy that keeps what was said
CREATE FUNCTION notifications_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
DECLARE
    r refunds%ROWTYPE;
    e text;
BEGIN
    SELECT * INTO r FROM refunds WHERE out_refund_no = NEW.out_refund_no FOR UPDATE;
    IF NOT FOUND THEN
        e := 'unknown_refund';
    ELSIF r.currency <> NEW.currency OR r.amount <> NEW.amount THEN
        e := 'mismatch';
    ELSIF r.status = 'REFUND_PENDING' THEN
        e := 'finalized';
    ELSIF r.status = NEW.status THEN
        e := 'already_final';
    ELSE
        e := 'conflicting_final';
    END IF;

    UPDATE notifications SET effect = e WHERE id = NEW.id;

    IF e = 'finalized' THEN
        UPDATE refunds
           SET status = NEW.status,
               final_source = 'notification',
               finalized_at = NEW.received_at,
               notified_at = NEW.received_at,
               refund_finish_time = NEW.refund_finish_time,
               refund_trade_no = coalesce(refund_trade_no, NEW.refund_trade_no),
               next_query_at = NULL,
               confirm_at = NEW.received_at,
               claimed_by = NULL,
               claimed_until = NULL
         WHERE id = r.id AND status = 'REFUND_PENDING';
    ELSIF e = 'already_final' THEN
        UPDATE refunds SET notified_at = NEW.received_at
         WHERE id = r.id AND notified_at IS NULL;
    ELSIF e = 'conflicting_final' THEN
        INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
        VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'conflicting_final',
                r.status, NEW.status);
    ELSIF e = 'mismatch' THEN
        IF r.amount <> NEW.amount THEN
            INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
            VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'amount_mismatch',
                    r.amount::text, NEW.amount::text);
        END IF;
        IF r.currency <> NEW.currency THEN
            INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
            VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'currency_mismatch',
                    r.currency, NEW.currency);
        END IF;
    ELSE
        INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
        VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'unknown_refund', NULL,
                NEW.status || ' ' || NEW.amount::text || ' ' || NEW.currency);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER notifications_apply
AFTER INSERT ON notifications
FOR EACH ROW EXECUTE FUNCTION notifications_apply();

-- ---------------------------------------------------------------------------------------------
-- sweeps: one row per worker sweep. Operational statistics, not money: old rows may be
-- deleted, but a finished sweep is never rewritten.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE sweeps (
    id                 bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at         timestamptz(3) NOT NULL
                       CHECK (started_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    finished_at        timestamptz(3)
                       CHECK (finished_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    claimed            bigint  NOT NULL DEFAULT 0 CHECK (claimed >= 0),
    finalized          bigint  NOT NULL DEFAULT 0 CHECK (finalized >= 0),
    rescheduled        bigint  NOT NULL DEFAULT 0 CHECK (rescheduled >= 0),
    failed             bigint  NOT NULL DEFAULT 0 CHECK (failed >= 0),
    halted_reason      text,
    halt_code          text    CHECK (halt_code IN ('config_error', 'clock_skew')),
    unreadable         bigint  NOT NULL DEFAULT 0 CHECK (unreadable >= 0),
    error              text,
    breaker_open_since timestamptz(3)
                       CHECK (breaker_open_since BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    -- Version 10: the node that ran the sweep (NULL on rows older than version 10).
    node               text    CHECK (node ~ '^[A-Za-z0-9._-]{1,64}$')
);

CREATE TRIGGER sweeps_finished_are_immutable
BEFORE UPDATE ON sweeps
FOR EACH ROW
WHEN (OLD.finished_at IS NOT NULL)
EXECUTE FUNCTION ledger_refuse('checus-reconciler: a finished sweep is immutable');

-- ---------------------------------------------------------------------------------------------
-- operator_actions: the audit log of every operator command. Append-only.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE operator_actions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz(3) NOT NULL
                  CHECK (at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    actor         text NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    action        text NOT NULL
                  CHECK (action IN ('resolve', 'retry_now', 'resolve_discrepancy', 'prune',
                                    'clear_flag', 'resume', 'redeliver_webhook')),
    out_refund_no text CHECK (out_refund_no ~ '^[!-~]{1,64}$'),
    to_status     text CHECK (to_status IN ('REFUND_SUCCESS', 'REFUND_FAILED')),
    reason        text CHECK (length(reason) BETWEEN 1 AND 2000),
    detail        text,
    CHECK (action = 'retry_now' OR reason IS NOT NULL),
    CHECK ((action = 'resolve') = (to_status IS NOT NULL))
);

CREATE INDEX operator_actions_by_refund ON operator_actions (out_refund_no, id);

CREATE TRIGGER operator_actions_are_append_only_no_update
BEFORE UPDATE ON operator_actions
FOR EACH ROW EXECUTE FUNCTION ledger_refuse('checus-reconciler: operator_actions are append-only');

CREATE TRIGGER operator_actions_are_append_only_no_delete
BEFORE DELETE ON operator_actions
FOR EACH ROW EXECUTE FUNCTION ledger_refuse('checus-reconciler: operator_actions are append-only');

CREATE TRIGGER operator_actions_are_never_truncated
BEFORE TRUNCATE ON operator_actions
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse('checus-reconciler: operator_actions are append-only');

-- ---------------------------------------------------------------------------------------------
-- prunes: the only path by which rows of refunds, attempts, notifications and discrepancies
-- are ever deleted; one transaction per prune, so other sessions never see a running one.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE prunes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at       timestamptz(3) NOT NULL
                     CHECK (started_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    actor            text NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    finalized_before timestamptz(3) NOT NULL
                     CHECK (finalized_before BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    archive_path     text,
    archive_sha256   text CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
    state            text NOT NULL CHECK (state IN ('running', 'done')),
    refunds          bigint CHECK (refunds >= 0),
    attempts         bigint CHECK (attempts >= 0),
    notifications    bigint CHECK (notifications >= 0),
    discrepancies    bigint CHECK (discrepancies >= 0),
    sweeps           bigint CHECK (sweeps >= 0),
    CHECK ((state = 'done') = (refunds IS NOT NULL))
);

-- One running prune at a time across sessions too: a second prune's INSERT waits here for the
-- first one's transaction, and goes on once that one is done (the trigger alone cannot see
-- another session's uncommitted row).
CREATE UNIQUE INDEX prunes_one_running ON prunes ((true)) WHERE state = 'running';

CREATE FUNCTION prunes_start_running_one_at_a_time() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM 'running'
       OR EXISTS (SELECT 1 FROM prunes AS p WHERE p.state = 'running' OR p.id = NEW.id) THEN
        RAISE EXCEPTION 'checus-reconciler: a prune starts running, one at a time';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER prunes_start_running_one_at_a_time
BEFORE INSERT ON prunes
FOR EACH ROW EXECUTE FUNCTION prunes_start_running_one_at_a_time();

CREATE TRIGGER prunes_done_are_immutable
BEFORE UPDATE ON prunes
FOR EACH ROW
WHEN (OLD.state IS DISTINCT FROM 'running' OR NEW.state IS DISTINCT FROM 'done'
      OR NEW.id IS DISTINCT FROM OLD.id OR NEW.started_at IS DISTINCT FROM OLD.started_at
      OR NEW.actor IS DISTINCT FROM OLD.actor OR NEW.reason IS DISTINCT FROM OLD.reason
      OR NEW.finalized_before IS DISTINCT FROM OLD.finalized_before
      OR NEW.archive_path IS DISTINCT FROM OLD.archive_path
      OR NEW.archive_sha256 IS DISTINCT FROM OLD.archive_sha256)
EXECUTE FUNCTION ledger_refuse('checus-reconciler: a prune is immutable once done');

CREATE TRIGGER prunes_are_never_deleted
BEFORE DELETE ON prunes
FOR EACH ROW EXECUTE FUNCTION ledger_refuse('checus-reconciler: a prune is immutable once done');

CREATE TRIGGER prunes_are_never_truncated
BEFORE TRUNCATE ON prunes
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse('checus-reconciler: a prune is immutable once done');

-- ---------------------------------------------------------------------------------------------
-- refund_counts: how many refunds have each status, kept by the triggers below, whoever
-- writes. Inserts and deletes are counted once per statement from its transition table (a
-- COPY or multi-row INSERT of many refunds is one update of each count row); a status change
-- is counted per row, when it happens (a finalization changes one row at a time).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE refund_counts (
    status text   NOT NULL PRIMARY KEY,
    n      bigint NOT NULL
);

INSERT INTO refund_counts (status, n)
VALUES ('REFUND_PENDING', 0), ('REFUND_SUCCESS', 0), ('REFUND_FAILED', 0);

CREATE FUNCTION refund_counts_on_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- ORDER BY: every statement takes the count rows in one order, fewer deadlocks.
    INSERT INTO refund_counts AS c (status, n)
    SELECT status, count(*) FROM new_refunds GROUP BY status ORDER BY status
        ON CONFLICT (status) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$;
CREATE TRIGGER refund_counts_on_insert
AFTER INSERT ON refunds
REFERENCING NEW TABLE AS new_refunds
FOR EACH STATEMENT EXECUTE FUNCTION refund_counts_on_insert();

CREATE FUNCTION refund_counts_on_status_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE refund_counts SET n = n - 1 WHERE status = OLD.status;
    INSERT INTO refund_counts AS c (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = c.n + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER refund_counts_on_status_change
AFTER UPDATE OF status ON refunds
FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status)
EXECUTE FUNCTION refund_counts_on_status_change();

CREATE FUNCTION refund_counts_on_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE refund_counts AS c SET n = c.n - d.n
      FROM (SELECT status, count(*) AS n FROM old_refunds GROUP BY status) AS d
     WHERE c.status = d.status;
    RETURN NULL;
END
$$;
CREATE TRIGGER refund_counts_on_delete
AFTER DELETE ON refunds
REFERENCING OLD TABLE AS old_refunds
FOR EACH STATEMENT EXECUTE FUNCTION refund_counts_on_delete();

-- ---------------------------------------------------------------------------------------------
-- webhook_events: the transactional outbox of outgoing webhooks, written by the triggers below
-- in the same transaction as the change that caused it, whoever made the change. payload is
-- jsonb built with jsonb_build_object: amounts as strings (their written text), instants in
-- the ledger's text form (checus_instant_text), as schema.sql's json_object builds them.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webhook_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 'evt_' and 32 random hex digits (gen_random_uuid: 122 random bits).
    event_id         text   NOT NULL UNIQUE
                     DEFAULT ('evt_' || replace(gen_random_uuid()::text, '-', ''))
                     CHECK (left(event_id, 4) = 'evt_' AND length(event_id) BETWEEN 5 AND 64),
    type             text   NOT NULL
                     CHECK (type IN ('refund.finalized', 'refund.flagged', 'discrepancy.recorded')),
    out_refund_no    text   NOT NULL CHECK (out_refund_no ~ '^[!-~]{1,64}$'),
    queued_at        timestamptz(3) NOT NULL DEFAULT statement_timestamp()
                     CHECK (queued_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    payload          jsonb  NOT NULL,
    state            text   NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         bigint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    first_attempt_at timestamptz(3)
                     CHECK (first_attempt_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    next_attempt_at  timestamptz(3) NOT NULL DEFAULT statement_timestamp()
                     CHECK (next_attempt_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    last_error       text,
    delivered_at     timestamptz(3)
                     CHECK (delivered_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);

CREATE INDEX webhook_events_undelivered ON webhook_events (out_refund_no, id)
    WHERE state <> 'delivered';
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_events_dead ON webhook_events (id) WHERE state = 'dead';
CREATE INDEX webhook_events_by_refund ON webhook_events (out_refund_no, id);

CREATE TRIGGER webhook_events_content_is_immutable
BEFORE UPDATE ON webhook_events
FOR EACH ROW
WHEN (NEW.id IS DISTINCT FROM OLD.id
      OR NEW.event_id IS DISTINCT FROM OLD.event_id
      OR NEW.type IS DISTINCT FROM OLD.type
      OR NEW.out_refund_no IS DISTINCT FROM OLD.out_refund_no
      OR NEW.queued_at IS DISTINCT FROM OLD.queued_at
      OR NEW.payload IS DISTINCT FROM OLD.payload)
EXECUTE FUNCTION ledger_refuse('checus-reconciler: a webhook event''s content is immutable');

-- Events are never deleted, except a delivered event of a refund a running prune removes.
CREATE FUNCTION webhook_events_are_never_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF NOT (OLD.state = 'delivered'
            AND coalesce((SELECT ledger_prune_covers(r.status, r.finalized_at)
                            FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no), false)) THEN
        RAISE EXCEPTION 'checus-reconciler: webhook events are never deleted';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER webhook_events_are_never_deleted
BEFORE DELETE ON webhook_events
FOR EACH ROW EXECUTE FUNCTION webhook_events_are_never_deleted();

CREATE TRIGGER webhook_events_are_never_truncated
BEFORE TRUNCATE ON webhook_events
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse('checus-reconciler: webhook events are never deleted');

-- The events of one refund row: refund.finalized when it is (or became) final, then
-- refund.flagged when it is (or became) flagged.
CREATE FUNCTION refunds_webhook_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    was_pending boolean := true;
    was_flagged boolean := false;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        was_pending := OLD.status = 'REFUND_PENDING';
        was_flagged := OLD.review_flag = 1;
    END IF;
    IF was_pending AND NEW.status <> 'REFUND_PENDING' THEN
        INSERT INTO webhook_events (type, out_refund_no, payload)
        VALUES ('refund.finalized', NEW.out_refund_no,
                jsonb_build_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                                   'final_source', NEW.final_source, 'amount', NEW.amount::text,
                                   'currency', NEW.currency,
                                   'finalized_at', checus_instant_text(NEW.finalized_at),
                                   'refund_finish_time', checus_instant_text(NEW.refund_finish_time),
                                   'refund_trade_no', NEW.refund_trade_no,
                                   'out_trade_no', NEW.out_trade_no));
    END IF;
    IF NOT was_flagged AND NEW.review_flag = 1 THEN
        INSERT INTO webhook_events (type, out_refund_no, payload)
        VALUES ('refund.flagged', NEW.out_refund_no,
                jsonb_build_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                                   'review_reason', NEW.review_reason,
                                   'flagged_at', checus_instant_text(NEW.flagged_at),
                                   'amount', NEW.amount::text, 'currency', NEW.currency));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER refunds_webhook_on_insert
AFTER INSERT ON refunds
FOR EACH ROW
WHEN (NEW.status <> 'REFUND_PENDING' OR NEW.review_flag = 1)
EXECUTE FUNCTION refunds_webhook_events();

CREATE TRIGGER refunds_webhook_on_update
AFTER UPDATE OF status, review_flag ON refunds
FOR EACH ROW
WHEN ((OLD.status = 'REFUND_PENDING' AND NEW.status <> 'REFUND_PENDING')
      OR (OLD.review_flag = 0 AND NEW.review_flag = 1))
EXECUTE FUNCTION refunds_webhook_events();

CREATE FUNCTION discrepancies_webhook_on_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO webhook_events (type, out_refund_no, payload)
    VALUES ('discrepancy.recorded', NEW.out_refund_no,
            jsonb_build_object('discrepancy_id', NEW.id, 'out_refund_no', NEW.out_refund_no,
                               'source', NEW.source, 'kind', NEW.kind, 'expected', NEW.expected,
                               'observed', NEW.observed,
                               'detected_at', checus_instant_text(NEW.detected_at)));
    RETURN NULL;
END
$$;
CREATE TRIGGER discrepancies_webhook_on_insert
AFTER INSERT ON discrepancies
FOR EACH ROW EXECUTE FUNCTION discrepancies_webhook_on_insert();

-- ---------------------------------------------------------------------------------------------
-- nodes (version 10): one row per daemon node name ever seen. Never deleted by the daemon; an
-- operator may remove a retired node by hand only when it holds no live lease.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE nodes (
    name         text   PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- The hostname it ran on last, its process id and version at its last start.
    host         text   NOT NULL,
    pid          bigint NOT NULL,
    version      text   NOT NULL,
    started_at   timestamptz(3) NOT NULL
                 CHECK (started_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    heartbeat_at timestamptz(3) NOT NULL
                 CHECK (heartbeat_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    -- Set by a clean stop, cleared by the next start.
    stopped_at   timestamptz(3)
                 CHECK (stopped_at BETWEEN '0001-01-01 00:00:00Z' AND '9999-12-31 23:59:59.999Z'),
    CHECK (heartbeat_at >= started_at)
);

-- ---------------------------------------------------------------------------------------------
-- schema_version: one row per applied version; the highest is the ledger's version. SQLite
-- counts its own in PRAGMA user_version: the same numbers up to 10; SQLite's 11 (time-ordered
-- webhook event ids) changed nothing here. Migrations add a row in their transaction.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE schema_version (
    version    integer     NOT NULL PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_version (version) VALUES (10);

-- Every SECURITY DEFINER function searches pg_temp last (the header says why). Fails when the
-- file did not run in one transaction, so the DO at the top no longer held.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                WHERE p.pronamespace = pg_catalog.current_schema()::regnamespace
                  AND p.prosecdef
                  AND NOT coalesce(p.proconfig @> ARRAY['search_path=' || pg_catalog.quote_ident(pg_catalog.current_schema()) || ', pg_temp'], false)) THEN
        RAISE EXCEPTION 'checus-reconciler: schema.postgres.sql must be applied in one transaction (psql --single-transaction), or its SECURITY DEFINER functions would search pg_temp first';
    END IF;
END
$$;
