-- checus-reconciler ledger, schema version 11. The ONLY DDL of the project.
--
-- This file is embedded in the binary (src/ledger/sqlite/open.rs) and applied, in one transaction,
-- to a new or empty SQLite file. An older ledger is upgraded by the migrations in
-- src/ledger/migrations/ (one file per version, e.g. 0002_*.sql takes version 1 to 2), which
-- must leave exactly the schema this file creates; a newer or unknown version is refused.
--
-- The file is shared with the merchant's application and read by operators with `sqlite3`,
-- so the rules that protect money live HERE, as CHECKs and triggers, and hold for every
-- writer, not only for checus-reconciler:
--   * a refund that reached REFUND_SUCCESS or REFUND_FAILED never changes its outcome;
--   * out_refund_no, amount and currency of a refund never change; refunds are never deleted;
--   * the attempt log is append-only; discrepancies and notifications are never deleted;
--   * the one exception to "never deleted" is an audited prune (table `prunes`): while a prune
--     row is running, in the pruning transaction, the rows of final refunds finalized before its
--     cutoff and with no unresolved discrepancy may be deleted, and nothing else;
--   * an operator's decision (final_source 'operator') needs its audit row in
--     `operator_actions` first, and an audit row is never changed or deleted.
--
-- Conventions an operator can rely on:
--   * Every instant is TEXT in UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`, e.g. 2026-11-25T20:58:27.123Z.
--     That is exactly what strftime('%Y-%m-%dT%H:%M:%fZ','now') produces. The fixed width makes
--     text order equal time order, so `<=` and indexes work on the text. Every time column's
--     CHECK is a round trip, `x IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(x))`: through the
--     day number, an impossible instant (2026-02-31, hour 24) comes back as another one and
--     second 60 or year 10000 as NULL, so only real instants in exactly this form are stored.
--     (strftime on the text alone passes 2026-02-31 and hour 24 through unchanged.)
--   * Amounts are exact decimal TEXT in major units ('12.50'), never REAL.
--   * A CHECK whose expression is NULL passes, so a CHECK on a nullable column only applies
--     once the column is set.
--   * Every table is STRICT: a value of the wrong type is an error, not silently kept.
--   * Trigger errors start with 'checus-reconciler:' so they are easy to recognise.
--   * An enum CHECK of three or more values is an OR chain, `(x = 'a' OR x = 'b' OR x = 'c')`,
--     not an IN list of them: SQLite builds a temporary index for an IN list of more than
--     two constants each time a statement or trigger runs, which cost a third of the ledger's
--     work per reconciled refund (migration 0009, src/ledger/sqlite/checks.rs). Same meaning,
--     NULL included. For the same reason a trigger inserts with VALUES, not INSERT ... SELECT
--     (which SQLite stages in a temporary table when the target table has triggers).

-- ---------------------------------------------------------------------------------------------
-- refunds: one row per refund the merchant issued. The merchant's app inserts; the daemon
-- polls /refundQuery for the pending ones; notifications (below) finalize them too.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE refunds (
    id                 INTEGER PRIMARY KEY,
    -- The merchant's refund number (Checus `outRefundNo`): 1..64 printable ASCII, no spaces.
    out_refund_no      TEXT    NOT NULL UNIQUE
                       CHECK (length(out_refund_no) BETWEEN 1 AND 64
                              AND out_refund_no NOT GLOB '*[^!-~]*'),
    -- The gateway's refund number (`refundTradeNo`), once known.
    refund_trade_no    TEXT    CHECK (length(refund_trade_no) BETWEEN 1 AND 64),
    -- The original payment's merchant order number (`outTradeNo`).
    out_trade_no       TEXT    CHECK (length(out_trade_no) BETWEEN 1 AND 64),
    -- Refund amount in major units: a plain positive decimal ('12.50', '15000'); no sign, no
    -- exponent, at most one dot, at least one non-zero digit, no leading or trailing dot.
    amount             TEXT    NOT NULL
                       CHECK (length(amount) BETWEEN 1 AND 28
                              AND amount GLOB '[0-9]*' AND amount GLOB '*[0-9]'
                              AND amount NOT GLOB '*[^0-9.]*' AND amount NOT GLOB '*.*.*'
                              AND amount GLOB '*[1-9]*'),
    -- ISO 4217 code, three upper-case letters.
    currency           TEXT    NOT NULL CHECK (currency GLOB '[A-Z][A-Z][A-Z]'),
    -- The refund's status. REFUND_PENDING until a final outcome is recorded; final is forever.
    status             TEXT    NOT NULL DEFAULT 'REFUND_PENDING'
                       CHECK ((status = 'REFUND_PENDING' OR status = 'REFUND_SUCCESS' OR status = 'REFUND_FAILED')),
    -- When the refund was issued. The notification grace window counts from here.
    created_at         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                       CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(created_at))),
    -- When the first notification that agreed with this row arrived (NULL: none yet).
    notified_at        TEXT
                       CHECK (notified_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(notified_at))),
    -- When the ledger recorded the final status (NULL while pending).
    finalized_at       TEXT
                       CHECK (finalized_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(finalized_at))),
    -- Who told us the final status (NULL while pending):
    --   notification    a verified refund result notification, inserted by the merchant's app
    --   query           a verified /refundQuery answer, recorded by checus-reconciler
    --   refund_response the synchronous /refund answer (only ever REFUND_FAILED)
    --   operator        an audited operator decision
    final_source       TEXT
                       CHECK ((final_source = 'notification' OR final_source = 'query' OR final_source = 'refund_response' OR final_source = 'operator')),
    -- The gateway's `refundFinishTime`, when it gave one.
    refund_finish_time TEXT
                       CHECK (refund_finish_time IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(refund_finish_time))),
    -- When checus-reconciler queries this refund next. NULL on a pending row means "not
    -- scheduled yet": the daemon sets it to created_at + the grace window. NULL once final.
    next_query_at      TEXT
                       CHECK (next_query_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(next_query_at))),
    -- Counted query attempts (verified answers; transport errors and rate limits do not count).
    attempts           INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Since when the gateway has answered "unknown refund" without a break (NULL: it knows it).
    unknown_since      TEXT
                       CHECK (unknown_since IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(unknown_since))),
    -- The latest query attempt: when, its outcome class, and its error text (never secrets).
    -- The full history is in `attempts`.
    last_attempt_at    TEXT
                       CHECK (last_attempt_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(last_attempt_at))),
    last_outcome       TEXT
                       CHECK ((last_outcome = 'final' OR last_outcome = 'pending' OR last_outcome = 'unknown' OR last_outcome = 'retryable' OR last_outcome = 'rate_limited' OR last_outcome = 'clock_skew' OR last_outcome = 'config_error' OR last_outcome = 'mismatch')),
    last_error         TEXT,
    -- 1 when a human should look at this refund; why, and since when:
    --   pending_too_long             still pending past worker.pending_flag_after
    --   unknown_at_gateway_too_long  Checus has not known the refund for too long
    --   answer_mismatch              a verified answer contradicted this row
    --   answer_unrecordable          a verified answer held a value the ledger cannot store
    --                                (the attempt's error names the field that was dropped)
    --   row_unreadable               the daemon could not read this row (a stored value that
    --                                is not what this schema allows); it skips the row
    --   row_unwritable               the ledger refused the daemon's update of this row; it
    --                                skips the row
    --   gateway_rejected_request     Checus refused the query for this refund alone (e.g.
    --                                PARAMS_INVALID); it is polled at the steady cadence
    review_flag        INTEGER NOT NULL DEFAULT 0 CHECK (review_flag IN (0, 1)),
    review_reason      TEXT
                       CHECK ((review_reason = 'pending_too_long' OR review_reason = 'unknown_at_gateway_too_long' OR review_reason = 'answer_mismatch' OR review_reason = 'answer_unrecordable' OR review_reason = 'row_unreadable' OR review_reason = 'row_unwritable' OR review_reason = 'gateway_rejected_request')),
    flagged_at         TEXT
                       CHECK (flagged_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(flagged_at))),
    -- A final outcome waiting for its confirming query, from when: set when a notification
    -- finalizes the refund (the daemon queries once, schedule.confirm_after later, and records
    -- a discrepancy if Checus disagrees); NULL once confirmed, and for every other refund.
    confirm_at         TEXT
                       CHECK (confirm_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(confirm_at))), claimed_by
                       -- The claim lease (schema version 10), laid out as ALTER TABLE ... ADD
                       -- COLUMN stores it: the node whose worker claimed this pending refund,
                       -- and until when. NULL together when unclaimed. Recording the attempt
                       -- clears both; another node skips the refund until claimed_until.
                       TEXT
                       CHECK (length(claimed_by) BETWEEN 1 AND 64
                              AND claimed_by NOT GLOB '*[^A-Za-z0-9._-]*'), claimed_until TEXT
                       CHECK (claimed_until IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(claimed_until)))
                       CHECK ((claimed_by IS NULL) = (claimed_until IS NULL)),

    -- pending <=> no final_source <=> no finalized_at.
    CHECK ((status = 'REFUND_PENDING') = (final_source IS NULL)),
    CHECK ((final_source IS NULL) = (finalized_at IS NULL)),
    -- /refund never answers REFUND_SUCCESS synchronously (protocol fact sheet, section 6).
    CHECK (final_source IS NOT 'refund_response' OR status = 'REFUND_FAILED'),
    -- A flag always says why and since when.
    CHECK ((review_flag = 1) = (review_reason IS NOT NULL)),
    CHECK ((review_flag = 1) = (flagged_at IS NOT NULL))
) STRICT;

-- Due work: pending refunds by next query time. Only pending rows are in it, so finding what
-- is due costs O(due), not O(ledger). Used by the worker's claim and by `next_due_at`.
CREATE INDEX refunds_due ON refunds (next_query_at) WHERE status = 'REFUND_PENDING';
-- Pending refunds the daemon has not scheduled yet (new rows from the merchant's app).
CREATE INDEX refunds_unscheduled ON refunds (created_at)
    WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL;
-- Counts of final refunds by status. Deliberately partial: an index led by `status` that also
-- held pending rows would look cheaper than refunds_due to SQLite's planner (an equality on
-- status), and the due query would silently become O(pending) instead of O(due).
CREATE INDEX refunds_final ON refunds (status, created_at) WHERE status <> 'REFUND_PENDING';
-- Notification-finalized refunds waiting for their confirming query (few at a time).
CREATE INDEX refunds_to_confirm ON refunds (confirm_at) WHERE confirm_at IS NOT NULL;
-- Final refunds in the order they became final: the daemon logs one line for each final
-- outcome it did not write itself (notifications, immediate /refund failures, operators).
CREATE INDEX refunds_by_finalized ON refunds (finalized_at, id) WHERE finalized_at IS NOT NULL;
-- `list` in creation order, `list --since ...`.
CREATE INDEX refunds_by_created ON refunds (created_at);
-- Flagged refunds (few): the flagged count and `list --flagged`.
CREATE INDEX refunds_flagged ON refunds (status, created_at) WHERE review_flag = 1;
-- Pending refunds nobody has flagged, by age: `status` counts those older than
-- pending_flag_after (normally none) without walking every pending row. Not usable by the
-- due query, which does not constrain review_flag.
CREATE INDEX refunds_pending_unflagged ON refunds (created_at)
    WHERE status = 'REFUND_PENDING' AND review_flag = 0;

-- A refund's outcome is final: once status is REFUND_SUCCESS or REFUND_FAILED, no writer may
-- change status, final_source, finalized_at or refund_finish_time. A later source that
-- disagrees is recorded in `discrepancies` instead.
CREATE TRIGGER refunds_final_status_is_immutable
BEFORE UPDATE OF status, final_source, finalized_at, refund_finish_time ON refunds
WHEN OLD.status <> 'REFUND_PENDING'
 AND (NEW.status IS NOT OLD.status
      OR NEW.final_source IS NOT OLD.final_source
      OR NEW.finalized_at IS NOT OLD.finalized_at
      OR NEW.refund_finish_time IS NOT OLD.refund_finish_time)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: final refund status is immutable');
END;

-- What was refunded never changes.
CREATE TRIGGER refunds_identity_is_immutable
BEFORE UPDATE OF id, out_refund_no, amount, currency ON refunds
WHEN NEW.id IS NOT OLD.id
  OR NEW.out_refund_no IS NOT OLD.out_refund_no
  OR NEW.amount IS NOT OLD.amount
  OR NEW.currency IS NOT OLD.currency
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: out_refund_no, amount and currency of a refund are immutable');
END;

-- Refunds are never deleted, except by a running audited prune (see `prunes`), and then only
-- final refunds finalized before its cutoff with no unresolved discrepancy. coalesce(.., 0):
-- with no running prune the condition is NULL, and NULL must mean "refused", not "allowed".
CREATE TRIGGER refunds_are_never_deleted
BEFORE DELETE ON refunds
WHEN NOT coalesce((
    OLD.status <> 'REFUND_PENDING'
    AND OLD.finalized_at < (SELECT finalized_before FROM prunes WHERE state = 'running')
    AND NOT EXISTS (SELECT 1 FROM discrepancies
                     WHERE out_refund_no = OLD.out_refund_no AND resolved_at IS NULL)), 0)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: refunds are never deleted (only an audited prune removes old final refunds)');
END;

-- An operator decision is audited before it is applied: the `operator_actions` row of the
-- resolve must already exist in the same transaction.
CREATE TRIGGER refunds_operator_decision_is_audited
BEFORE UPDATE OF final_source ON refunds
WHEN NEW.final_source IS 'operator' AND OLD.status = 'REFUND_PENDING'
 AND NOT EXISTS (SELECT 1 FROM operator_actions
                  WHERE action = 'resolve' AND out_refund_no = NEW.out_refund_no
                    AND to_status = NEW.status)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: an operator decision needs its operator_actions audit row');
END;

CREATE TRIGGER refunds_operator_insert_is_audited
BEFORE INSERT ON refunds
WHEN NEW.final_source IS 'operator'
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: an operator decision needs its operator_actions audit row');
END;

-- `INSERT OR REPLACE` (and REPLACE INTO) would delete the existing row without firing the
-- DELETE trigger above (SQLite fires delete triggers on REPLACE only with recursive_triggers
-- on), wiping a final outcome. So a second insert of the same out_refund_no is refused
-- before conflict resolution can run.
CREATE TRIGGER refunds_insert_is_not_replace
BEFORE INSERT ON refunds
WHEN EXISTS (SELECT 1 FROM refunds WHERE out_refund_no = NEW.out_refund_no OR id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: refund already exists');
END;

-- ---------------------------------------------------------------------------------------------
-- attempts: append-only log of every /refundQuery attempt, written by checus-reconciler.
-- Never holds secrets: no keys, no signatures, no request bodies.
-- `sweep_id` (last, and laid out as `ALTER TABLE ... ADD COLUMN` stores it, so a ledger that
-- migration 0006 upgraded in O(1) holds the same text) is the `sweeps.id` of the sweep that
-- made the attempt, the `sweep` field of the daemon's log lines. No foreign key: old sweeps
-- are pruned while the attempts of refunds still kept are not.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY,
    out_refund_no TEXT    NOT NULL REFERENCES refunds (out_refund_no),
    attempted_at  TEXT    NOT NULL
                  CHECK (attempted_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(attempted_at))),
    -- What the attempt amounted to:
    --   final         verified answer with a final status
    --   pending       verified answer, still REFUND_PENDING
    --   unknown       the gateway does not know the refund (ORDER_NOT_EXIST, REFUND_NO_INVALID)
    --   retryable     transport error, HTTP error, bad or unverified body, gateway system error
    --   rate_limited  TOO_MANY_REQUEST
    --   clock_skew    the gateway says our clock is off
    --   config_error  the gateway rejected our configuration (keys, appId, merchant number)
    --   mismatch      a verified answer contradicted the ledger (see discrepancies)
    outcome       TEXT    NOT NULL
                  CHECK ((outcome = 'final' OR outcome = 'pending' OR outcome = 'unknown' OR outcome = 'retryable' OR outcome = 'rate_limited' OR outcome = 'clock_skew' OR outcome = 'config_error' OR outcome = 'mismatch')),
    -- HTTP status, when a response arrived.
    http_status   INTEGER CHECK (http_status BETWEEN 100 AND 599),
    -- The gateway's `code`, e.g. APPLY_SUCCESS, when the body had one.
    gateway_code  TEXT,
    -- The answer's `data.status`, when a verified answer had one.
    data_status   TEXT,
    -- Round trip time in milliseconds.
    latency_ms    INTEGER NOT NULL CHECK (latency_ms >= 0),
    -- What went wrong, for humans (never secrets).
    error         TEXT,
    -- What the daemon decided from this attempt, for `explain`: 'finalize REFUND_SUCCESS',
    -- 'reschedule 2026-11-25T21:00:00.000Z', '... flag pending_too_long', 'keep'.
    decision      TEXT
, sweep_id
                  -- The sweep that made it (NULL: recorded before this column existed, or
                  -- by `checus-reconciler query`, outside any sweep).
                  INTEGER, node
                  -- The node that made it (`worker.node_name`; NULL: recorded before schema
                  -- version 10).
                  TEXT
                  CHECK (length(node) BETWEEN 1 AND 64 AND node NOT GLOB '*[^A-Za-z0-9._-]*')) STRICT;

-- `show`: a refund's attempts in order.
CREATE INDEX attempts_by_refund ON attempts (out_refund_no, id);

CREATE TRIGGER attempts_are_append_only_no_update
BEFORE UPDATE ON attempts
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: attempts are append-only');
END;

CREATE TRIGGER attempts_are_append_only_no_delete
BEFORE DELETE ON attempts
WHEN NOT coalesce((
    SELECT r.status <> 'REFUND_PENDING'
       AND r.finalized_at < (SELECT finalized_before FROM prunes WHERE state = 'running')
      FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no), 0)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: attempts are append-only');
END;

CREATE TRIGGER attempts_insert_is_not_replace
BEFORE INSERT ON attempts
WHEN EXISTS (SELECT 1 FROM attempts WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: attempts are append-only');
END;

-- ---------------------------------------------------------------------------------------------
-- discrepancies: disagreements between sources. Recorded, never applied: the refund row keeps
-- what it had. resolved_* are for a later operator command.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE discrepancies (
    -- AUTOINCREMENT: an id is never used twice, even after a prune deleted the newest row, so
    -- the ids that operator_actions (resolve-discrepancy's detail), prune archives and the
    -- daemon's log name keep meaning one discrepancy.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- No foreign key: an 'unknown_refund' row names a refund the ledger does not have.
    out_refund_no TEXT    NOT NULL
                  CHECK (length(out_refund_no) BETWEEN 1 AND 64
                         AND out_refund_no NOT GLOB '*[^!-~]*'),
    detected_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                  CHECK (detected_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(detected_at))),
    -- Who disagreed with the ledger: 'query' (a verified /refundQuery answer),
    -- 'notification' (a verified notification) or 'operator'.
    source        TEXT    NOT NULL CHECK ((source = 'query' OR source = 'notification' OR source = 'operator')),
    -- conflicting_final   a final status other than the recorded final status
    -- refund_no_mismatch  the answer named another outRefundNo
    -- amount_mismatch     the amount differs from the ledger's
    -- currency_mismatch   the currency differs from the ledger's
    -- unknown_refund      a notification about a refund the ledger does not have
    kind          TEXT    NOT NULL
                  CHECK ((kind = 'conflicting_final' OR kind = 'refund_no_mismatch' OR kind = 'amount_mismatch' OR kind = 'currency_mismatch' OR kind = 'unknown_refund')),
    -- What the ledger holds, and what the source said.
    expected      TEXT,
    observed      TEXT,
    -- Set once, together, by an operator who resolved it.
    resolved_at   TEXT
                  CHECK (resolved_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(resolved_at))),
    resolved_by   TEXT,
    resolution    TEXT,
    CHECK ((resolved_at IS NULL) = (resolved_by IS NULL)),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
) STRICT;

CREATE INDEX discrepancies_by_refund ON discrepancies (out_refund_no, id);
-- The unresolved count in `status` (few rows).
CREATE INDEX discrepancies_unresolved ON discrepancies (detected_at) WHERE resolved_at IS NULL;

-- What was detected never changes; a resolution is written once.
CREATE TRIGGER discrepancies_are_immutable
BEFORE UPDATE ON discrepancies
WHEN NEW.id IS NOT OLD.id
  OR NEW.out_refund_no IS NOT OLD.out_refund_no
  OR NEW.detected_at IS NOT OLD.detected_at
  OR NEW.source IS NOT OLD.source
  OR NEW.kind IS NOT OLD.kind
  OR NEW.expected IS NOT OLD.expected
  OR NEW.observed IS NOT OLD.observed
  OR OLD.resolved_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: discrepancies are immutable once recorded or resolved');
END;

CREATE TRIGGER discrepancies_are_never_deleted
BEFORE DELETE ON discrepancies
WHEN NOT coalesce((
    OLD.resolved_at IS NOT NULL
    AND (SELECT r.status <> 'REFUND_PENDING'
            AND r.finalized_at < (SELECT finalized_before FROM prunes WHERE state = 'running')
           FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no)), 0)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: discrepancies are never deleted');
END;

CREATE TRIGGER discrepancies_insert_is_not_replace
BEFORE INSERT ON discrepancies
WHEN EXISTS (SELECT 1 FROM discrepancies WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: discrepancies are immutable once recorded or resolved');
END;

-- ---------------------------------------------------------------------------------------------
-- notifications: the merchant app's inbox and its whole write contract for results. The app
-- INSERTs one row per VERIFIED refund result notification; the trigger below applies it to
-- `refunds` in the same transaction and writes what it did into `effect`.
--
-- Amounts are compared exactly, as decimal text, never as REAL: both sides are plain decimals
-- (the CHECKs guarantee it), so each is brought to a canonical form - leading zeros of the
-- integer part removed, and only when there is a dot, trailing zeros of the fraction and then
-- a bare trailing dot removed:
--   CASE WHEN instr(x, '.') > 0 THEN rtrim(rtrim(ltrim(x, '0'), '0'), '.') ELSE ltrim(x, '0') END
-- '10.00', '10' and '010.0' all become '10'; '0.50' and '.5' become '.5'; '100' stays '100'.
-- Two plain decimals are equal as numbers exactly when their canonical forms are equal.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE notifications (
    id                 INTEGER PRIMARY KEY,
    -- data.outRefundNo
    out_refund_no      TEXT NOT NULL
                       CHECK (length(out_refund_no) BETWEEN 1 AND 64
                              AND out_refund_no NOT GLOB '*[^!-~]*'),
    -- data.status: notifications carry final statuses only.
    status             TEXT NOT NULL CHECK (status IN ('REFUND_SUCCESS', 'REFUND_FAILED')),
    -- data.refundTradeNo
    refund_trade_no    TEXT CHECK (length(refund_trade_no) BETWEEN 1 AND 64),
    -- data.refundAmount, as the exact number text of the JSON body, e.g. '12.50'.
    amount             TEXT NOT NULL
                       CHECK (length(amount) BETWEEN 1 AND 28
                              AND amount GLOB '[0-9]*' AND amount GLOB '*[0-9]'
                              AND amount NOT GLOB '*[^0-9.]*' AND amount NOT GLOB '*.*.*'
                              AND amount GLOB '*[1-9]*'),
    -- data.refundCurrency
    currency           TEXT NOT NULL CHECK (currency GLOB '[A-Z][A-Z][A-Z]'),
    -- data.refundFinishTime and notifyTime, converted to the ledger's UTC form.
    refund_finish_time TEXT
                       CHECK (refund_finish_time IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(refund_finish_time))),
    notify_time        TEXT NOT NULL
                       CHECK (notify_time IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(notify_time))),
    -- When the merchant's app stored it.
    received_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                       CHECK (received_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(received_at))),
    -- Set by the trigger, never by the app:
    --   finalized          the pending refund took this final status
    --   already_final      the refund already had this status (duplicate delivery, or the
    --                      daemon's query got there first); notified_at was set if empty
    --   conflicting_final  the refund has the other final status: discrepancy, nothing changed
    --   mismatch           amount or currency differ from the ledger: discrepancy, not applied
    --   unknown_refund     the ledger has no such refund: discrepancy
    effect             TEXT
                       CHECK ((effect = 'finalized' OR effect = 'already_final' OR effect = 'conflicting_final' OR effect = 'mismatch' OR effect = 'unknown_refund'))
) STRICT;

CREATE INDEX notifications_by_refund ON notifications (out_refund_no, id);

CREATE TRIGGER notifications_effect_is_set_by_the_ledger
BEFORE INSERT ON notifications
WHEN NEW.effect IS NOT NULL OR EXISTS (SELECT 1 FROM notifications WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: notifications are append-only and effect is set by the ledger');
END;

-- Only the apply trigger may write, and only `effect`, and only once.
CREATE TRIGGER notifications_are_append_only_no_update
BEFORE UPDATE ON notifications
WHEN OLD.effect IS NOT NULL
  OR NEW.id IS NOT OLD.id
  OR NEW.out_refund_no IS NOT OLD.out_refund_no
  OR NEW.status IS NOT OLD.status
  OR NEW.refund_trade_no IS NOT OLD.refund_trade_no
  OR NEW.amount IS NOT OLD.amount
  OR NEW.currency IS NOT OLD.currency
  OR NEW.refund_finish_time IS NOT OLD.refund_finish_time
  OR NEW.notify_time IS NOT OLD.notify_time
  OR NEW.received_at IS NOT OLD.received_at
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: notifications are append-only and effect is set by the ledger');
END;

CREATE TRIGGER notifications_are_never_deleted
BEFORE DELETE ON notifications
WHEN NOT coalesce((
    SELECT r.status <> 'REFUND_PENDING'
       AND r.finalized_at < (SELECT finalized_before FROM prunes WHERE state = 'running')
      FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no), 0)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: notifications are append-only and effect is set by the ledger');
END;

-- The discrepancies a notification's effect calls for, one trigger each, so the common case (a
-- pending refund finalized) runs none of them: each is skipped by its WHEN, and inserts with
-- VALUES (an INSERT ... SELECT into discrepancies, which has triggers, is staged in a
-- temporary table even when it selects nothing). They read the effect notifications_apply
-- stored, so they must fire after it: SQLite fires the triggers of one event newest first, and
-- notifications_apply is created after them (a test would see a missing discrepancy). They
-- are created in reverse, so a notification that differs in amount and currency gets its
-- amount_mismatch first, as when one trigger did it all.

-- unknown_refund: the ledger has nothing to compare with; keep what was said.
CREATE TRIGGER notifications_record_unknown_refund
AFTER INSERT ON notifications
WHEN (SELECT effect FROM notifications WHERE id = NEW.id) = 'unknown_refund'
BEGIN
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'unknown_refund', NULL,
            NEW.status || ' ' || NEW.amount || ' ' || NEW.currency);
END;

CREATE TRIGGER notifications_record_currency_mismatch
AFTER INSERT ON notifications
WHEN (SELECT effect FROM notifications WHERE id = NEW.id) = 'mismatch'
 AND (SELECT r.currency <> NEW.currency FROM refunds AS r WHERE r.out_refund_no = NEW.out_refund_no)
BEGIN
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'currency_mismatch',
            (SELECT currency FROM refunds WHERE out_refund_no = NEW.out_refund_no), NEW.currency);
END;

-- mismatch: one discrepancy per differing field, nothing applied.
CREATE TRIGGER notifications_record_amount_mismatch
AFTER INSERT ON notifications
WHEN (SELECT effect FROM notifications WHERE id = NEW.id) = 'mismatch'
 AND (SELECT (CASE WHEN instr(r.amount, '.') > 0
                 THEN rtrim(rtrim(ltrim(r.amount, '0'), '0'), '.')
                 ELSE ltrim(r.amount, '0') END)
        <> (CASE WHEN instr(NEW.amount, '.') > 0
                 THEN rtrim(rtrim(ltrim(NEW.amount, '0'), '0'), '.')
                 ELSE ltrim(NEW.amount, '0') END)
        FROM refunds AS r WHERE r.out_refund_no = NEW.out_refund_no)
BEGIN
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'amount_mismatch',
            (SELECT amount FROM refunds WHERE out_refund_no = NEW.out_refund_no), NEW.amount);
END;

-- conflicting_final: record, change nothing.
CREATE TRIGGER notifications_record_conflicting_final
AFTER INSERT ON notifications
WHEN (SELECT effect FROM notifications WHERE id = NEW.id) = 'conflicting_final'
BEGIN
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'conflicting_final',
            (SELECT status FROM refunds WHERE out_refund_no = NEW.out_refund_no), NEW.status);
END;

-- Applies one notification, atomically with its INSERT. It first classifies the notification
-- against the refund as it is now and stores that in `effect`; every later statement acts on
-- that one classification, so the order of the statements cannot change the outcome.
CREATE TRIGGER notifications_apply
AFTER INSERT ON notifications
BEGIN
    UPDATE notifications
       SET effect = coalesce(
               (SELECT CASE
                           WHEN r.currency <> NEW.currency
                             OR (CASE WHEN instr(r.amount, '.') > 0
                                      THEN rtrim(rtrim(ltrim(r.amount, '0'), '0'), '.')
                                      ELSE ltrim(r.amount, '0') END)
                             <> (CASE WHEN instr(NEW.amount, '.') > 0
                                      THEN rtrim(rtrim(ltrim(NEW.amount, '0'), '0'), '.')
                                      ELSE ltrim(NEW.amount, '0') END)
                               THEN 'mismatch'
                           WHEN r.status = 'REFUND_PENDING' THEN 'finalized'
                           WHEN r.status = NEW.status THEN 'already_final'
                           ELSE 'conflicting_final'
                       END
                  FROM refunds AS r
                 WHERE r.out_refund_no = NEW.out_refund_no),
               'unknown_refund')
     WHERE id = NEW.id;

    -- finalized: pending -> the notified final status.
    UPDATE refunds
       SET status = NEW.status,
           final_source = 'notification',
           finalized_at = NEW.received_at,
           notified_at = NEW.received_at,
           refund_finish_time = NEW.refund_finish_time,
           refund_trade_no = coalesce(refund_trade_no, NEW.refund_trade_no),
           next_query_at = NULL,
           confirm_at = NEW.received_at
     WHERE out_refund_no = NEW.out_refund_no
       AND status = 'REFUND_PENDING'
       AND (SELECT effect FROM notifications WHERE id = NEW.id) = 'finalized';

    -- already_final: a duplicate delivery only records that a notification arrived.
    UPDATE refunds
       SET notified_at = NEW.received_at
     WHERE out_refund_no = NEW.out_refund_no
       AND notified_at IS NULL
       AND (SELECT effect FROM notifications WHERE id = NEW.id) = 'already_final';
END;

-- ---------------------------------------------------------------------------------------------
-- sweeps: one row per worker sweep, for `status` and for operators. Operational statistics,
-- not money: old rows may be deleted, but a finished sweep is never rewritten.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE sweeps (
    id            INTEGER PRIMARY KEY,
    started_at    TEXT    NOT NULL
                  CHECK (started_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(started_at))),
    -- NULL while running (or if the process died mid-sweep).
    finished_at   TEXT
                  CHECK (finished_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(finished_at))),
    -- Refunds taken from the due list, finalized, rescheduled, and attempts that failed.
    claimed       INTEGER NOT NULL DEFAULT 0 CHECK (claimed >= 0),
    finalized     INTEGER NOT NULL DEFAULT 0 CHECK (finalized >= 0),
    rescheduled   INTEGER NOT NULL DEFAULT 0 CHECK (rescheduled >= 0),
    failed        INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
    -- Why the sweep stopped early (clock skew, configuration error, shutdown), if it did.
    halted_reason TEXT,
    -- The halt in force when the sweep ended, as a stable code that `status` reads (NULL: none).
    halt_code     TEXT CHECK (halt_code IN ('config_error', 'clock_skew')),
    -- Rows the sweep skipped because it could not read or update them (each is flagged
    -- row_unreadable or row_unwritable when the ledger lets it be).
    unreadable    INTEGER NOT NULL DEFAULT 0 CHECK (unreadable >= 0),
    -- Why the sweep failed, when it did (the ledger or the disk, not one row): `status` warns.
    error         TEXT,
    -- Since when the circuit breaker had querying paused when the sweep ended (NULL: closed).
    breaker_open_since TEXT
                  CHECK (breaker_open_since IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(breaker_open_since)))
, node
                  -- The node that ran it (NULL: recorded before schema version 10).
                  TEXT
                  CHECK (length(node) BETWEEN 1 AND 64 AND node NOT GLOB '*[^A-Za-z0-9._-]*')) STRICT;

CREATE TRIGGER sweeps_finished_are_immutable
BEFORE UPDATE ON sweeps
WHEN OLD.finished_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a finished sweep is immutable');
END;

-- ---------------------------------------------------------------------------------------------
-- nodes: one row per daemon node name ever seen (schema version 10). A daemon upserts its row at
-- start, heartbeats it while it runs (at least once a sweep interval) and sets stopped_at on a
-- clean stop; `status` shows each node running, stopped, or silent (no heartbeat for three
-- sweep intervals and no clean stop). Rows are never deleted by the daemon; an operator may
-- remove a retired node by hand once no refund is claimed by it.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE nodes (
    -- The node's name (`worker.node_name`, by default the host name).
    name         TEXT    PRIMARY KEY
                 CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^A-Za-z0-9._-]*'),
    -- The host it last ran on, its process id and version at its last start.
    host         TEXT    NOT NULL CHECK (length(host) BETWEEN 1 AND 255),
    pid          INTEGER NOT NULL CHECK (pid > 0),
    version      TEXT    NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    -- Its last start, its last heartbeat (never before that start), and its clean stop
    -- (NULL while it runs, or when it was killed: `status` then shows it silent).
    started_at   TEXT    NOT NULL
                 CHECK (started_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(started_at))),
    heartbeat_at TEXT    NOT NULL
                 CHECK (heartbeat_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(heartbeat_at))),
    stopped_at   TEXT
                 CHECK (stopped_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(stopped_at))),
    CHECK (heartbeat_at >= started_at)
) STRICT;

-- ---------------------------------------------------------------------------------------------
-- operator_actions: the audit log of every operator command that changes the ledger (resolve,
-- retry-now, resolve-discrepancy, prune, clear-flag, webhooks redeliver) or the daemon's course
-- (resume: a running daemon halted on a configuration error probes at once when it sees a new
-- resume row): who, when, why, and what it changed. Append-only.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE operator_actions (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL
                  CHECK (at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(at))),
    -- Who: the operator's name (--by, else the login name).
    actor         TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    action        TEXT NOT NULL
                  CHECK ((action = 'resolve' OR action = 'retry_now' OR action = 'resolve_discrepancy' OR action = 'prune' OR action = 'clear_flag' OR action = 'resume' OR action = 'redeliver_webhook')),
    -- The refund concerned (NULL for prune and resume; for redeliver_webhook, the event's refund).
    out_refund_no TEXT
                  CHECK (length(out_refund_no) BETWEEN 1 AND 64
                         AND out_refund_no NOT GLOB '*[^!-~]*'),
    -- resolve: the status the operator decided.
    to_status     TEXT CHECK (to_status IN ('REFUND_SUCCESS', 'REFUND_FAILED')),
    -- Why, in the operator's words. Required for every action but retry-now.
    reason        TEXT CHECK (length(reason) BETWEEN 1 AND 2000),
    -- What the action changed, as JSON (the values it replaced).
    detail        TEXT,
    CHECK (action = 'retry_now' OR reason IS NOT NULL),
    CHECK ((action = 'resolve') = (to_status IS NOT NULL))
) STRICT;

CREATE INDEX operator_actions_by_refund ON operator_actions (out_refund_no, id);

CREATE TRIGGER operator_actions_are_append_only_no_update
BEFORE UPDATE ON operator_actions
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: operator_actions are append-only');
END;

CREATE TRIGGER operator_actions_are_append_only_no_delete
BEFORE DELETE ON operator_actions
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: operator_actions are append-only');
END;

CREATE TRIGGER operator_actions_insert_is_not_replace
BEFORE INSERT ON operator_actions
WHEN EXISTS (SELECT 1 FROM operator_actions WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: operator_actions are append-only');
END;

-- ---------------------------------------------------------------------------------------------
-- prunes: the only path by which rows of refunds, attempts, notifications and discrepancies
-- are ever deleted. `checus-reconciler prune` inserts a 'running' row, archives the rows it is
-- about to delete to a file, deletes them and marks the row 'done' with its counts, all in ONE
-- transaction: other connections never see a running prune. The delete triggers above allow
-- a delete only while a prune is running, only of final refunds finalized before its cutoff
-- with no unresolved discrepancy (and their attempts, notifications, resolved discrepancies).
-- A prune row is never changed once done and never deleted.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE prunes (
    id               INTEGER PRIMARY KEY,
    started_at       TEXT NOT NULL CHECK (started_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(started_at))),
    actor            TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    reason           TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    -- Final refunds finalized strictly before this instant are removed.
    finalized_before TEXT NOT NULL CHECK (finalized_before IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(finalized_before))),
    -- Where the removed rows were archived (JSON lines) and the archive's SHA-256 (hex);
    -- NULL when the operator chose --no-archive.
    archive_path     TEXT,
    archive_sha256   TEXT CHECK (archive_sha256 GLOB '[0-9a-f]*' AND length(archive_sha256) = 64),
    state            TEXT NOT NULL CHECK (state IN ('running', 'done')),
    -- Rows removed, set when done.
    refunds          INTEGER CHECK (refunds >= 0),
    attempts         INTEGER CHECK (attempts >= 0),
    notifications    INTEGER CHECK (notifications >= 0),
    discrepancies    INTEGER CHECK (discrepancies >= 0),
    sweeps           INTEGER CHECK (sweeps >= 0),
    CHECK ((state = 'done') = (refunds IS NOT NULL))
) STRICT;

CREATE TRIGGER prunes_start_running_one_at_a_time
BEFORE INSERT ON prunes
WHEN NEW.state IS NOT 'running'
  OR EXISTS (SELECT 1 FROM prunes WHERE state = 'running' OR id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a prune starts running, one at a time');
END;

CREATE TRIGGER prunes_done_are_immutable
BEFORE UPDATE ON prunes
WHEN OLD.state IS NOT 'running' OR NEW.state IS NOT 'done'
  OR NEW.id IS NOT OLD.id OR NEW.started_at IS NOT OLD.started_at
  OR NEW.actor IS NOT OLD.actor OR NEW.reason IS NOT OLD.reason
  OR NEW.finalized_before IS NOT OLD.finalized_before
  OR NEW.archive_path IS NOT OLD.archive_path OR NEW.archive_sha256 IS NOT OLD.archive_sha256
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a prune is immutable once done');
END;

CREATE TRIGGER prunes_are_never_deleted
BEFORE DELETE ON prunes
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a prune is immutable once done');
END;

-- ---------------------------------------------------------------------------------------------
-- refund_counts: how many refunds have each status, kept by the triggers below on every
-- insert, status change and (pruning) delete of a refund, whoever writes it. The daemon's
-- /metrics reads it (checus_reconciler_refunds{status}): counting final refunds with count(*)
-- walks every one of them (seconds on 10 million rows), reading this table costs three rows.
-- Nobody writes it by hand. A status the CHECK on refunds.status does not allow (only a writer
-- that switched the CHECKs off can store one) gets its own row, so the sum stays the row count.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE refund_counts (
    status TEXT    NOT NULL PRIMARY KEY,
    n      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO refund_counts (status, n)
VALUES ('REFUND_PENDING', 0), ('REFUND_SUCCESS', 0), ('REFUND_FAILED', 0);

CREATE TRIGGER refund_counts_on_insert
AFTER INSERT ON refunds
BEGIN
    INSERT INTO refund_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER refund_counts_on_status_change
AFTER UPDATE OF status ON refunds
WHEN NEW.status IS NOT OLD.status
BEGIN
    UPDATE refund_counts SET n = n - 1 WHERE status = OLD.status;
    INSERT INTO refund_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER refund_counts_on_delete
AFTER DELETE ON refunds
BEGIN
    UPDATE refund_counts SET n = n - 1 WHERE status = OLD.status;
END;

-- ---------------------------------------------------------------------------------------------
-- webhook_events: the transactional outbox of outgoing webhooks. The triggers below write one
-- row IN THE SAME TRANSACTION as the change that caused it, whoever made the change (the
-- daemon, an operator command, the merchant's SQL contract), so a change that rolls back
-- leaves no event and a committed change always has its event:
--   refund.finalized      a refund became final (any source), or was inserted already final
--   refund.flagged        a refund's review flag went from 0 to 1 (or it was inserted flagged)
--   discrepancy.recorded  a discrepancy was recorded
-- The daemon delivers them (README "Webhooks"): in order per refund, at least once. What an
-- event says (id, type, refund, time, payload) never changes; only the delivery columns do.
-- Rows are written whether or not a [webhook] is configured: enabling webhooks later delivers
-- the backlog, oldest first.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webhook_events (
    -- AUTOINCREMENT: an id is never reused after a prune, so "earlier event" stays id order.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The id receivers deduplicate on: the time in milliseconds (12 hex digits), then 80
    -- random bits, so a ledger restored from a backup never gives an old id to a new event,
    -- and a new id lands at the end of the UNIQUE index (schema version 11: an all-random id
    -- dirtied one random index page per event). Sent as the `Checus-Reconciler-Event-Id`
    -- header and `id`.
    event_id         TEXT    NOT NULL UNIQUE
                     DEFAULT ('evt_' || printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
                              || lower(hex(randomblob(10))))
                     CHECK (event_id GLOB 'evt_*' AND length(event_id) BETWEEN 5 AND 64),
    type             TEXT    NOT NULL
                     CHECK ((type = 'refund.finalized' OR type = 'refund.flagged' OR type = 'discrepancy.recorded')),
    -- The refund concerned (no foreign key: a discrepancy can name a refund the ledger lacks).
    out_refund_no    TEXT    NOT NULL
                     CHECK (length(out_refund_no) BETWEEN 1 AND 64
                            AND out_refund_no NOT GLOB '*[^!-~]*'),
    -- When the change happened (the event's `created_at`).
    queued_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                     CHECK (queued_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(queued_at))),
    -- The event's `data` object, built by the trigger with json_object (amounts as strings).
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    -- Delivery: pending (to be sent), delivered (a 2xx answer), dead (retried past
    -- webhook.give_up_after; `webhooks redeliver` puts it back to pending).
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK ((state = 'pending' OR state = 'delivered' OR state = 'dead')),
    -- Delivery attempts made, and when the first one was (the retry window counts from it).
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    first_attempt_at TEXT
                     CHECK (first_attempt_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(first_attempt_at))),
    -- When a pending event may be sent next.
    next_attempt_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                     CHECK (next_attempt_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(next_attempt_at))),
    -- Why the latest attempt failed (an HTTP status or a transport error; never the secret).
    last_error       TEXT,
    delivered_at     TEXT
                     CHECK (delivered_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(delivered_at))),
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
) STRICT;

-- Events not delivered yet (pending or dead), by refund: the daemon's "is an earlier event of
-- this refund still undelivered?" look-up, which keeps each refund's events in order.
CREATE INDEX webhook_events_undelivered ON webhook_events (out_refund_no, id)
    WHERE state <> 'delivered';
-- Pending events by when they may be sent: what the daemon delivers next.
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE state = 'pending';
-- Dead events (normally none): `status`'s dead_webhooks finding and the metric count them.
CREATE INDEX webhook_events_dead ON webhook_events (id) WHERE state = 'dead';
-- `webhooks --refund`, and a prune's delete of a pruned refund's delivered events.
CREATE INDEX webhook_events_by_refund ON webhook_events (out_refund_no, id);

-- What an event says never changes; only state, attempts, first_attempt_at, next_attempt_at,
-- last_error and delivered_at do.
CREATE TRIGGER webhook_events_content_is_immutable
BEFORE UPDATE ON webhook_events
WHEN NEW.id IS NOT OLD.id
  OR NEW.event_id IS NOT OLD.event_id
  OR NEW.type IS NOT OLD.type
  OR NEW.out_refund_no IS NOT OLD.out_refund_no
  OR NEW.queued_at IS NOT OLD.queued_at
  OR NEW.payload IS NOT OLD.payload
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a webhook event''s content is immutable');
END;

CREATE TRIGGER webhook_events_insert_is_not_replace
BEFORE INSERT ON webhook_events
WHEN EXISTS (SELECT 1 FROM webhook_events WHERE id = NEW.id)
  OR EXISTS (SELECT 1 FROM webhook_events WHERE event_id = NEW.event_id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a webhook event''s content is immutable');
END;

-- Events are never deleted, except a delivered event of a refund a running prune removes.
CREATE TRIGGER webhook_events_are_never_deleted
BEFORE DELETE ON webhook_events
WHEN NOT coalesce((
    OLD.state = 'delivered'
    AND (SELECT r.status <> 'REFUND_PENDING'
            AND r.finalized_at < (SELECT finalized_before FROM prunes WHERE state = 'running')
           FROM refunds AS r WHERE r.out_refund_no = OLD.out_refund_no)), 0)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: webhook events are never deleted');
END;

-- The events of a refund row, in the order they happen: final first, then flagged.
CREATE TRIGGER refunds_webhook_on_insert
AFTER INSERT ON refunds
WHEN NEW.status <> 'REFUND_PENDING' OR NEW.review_flag = 1
BEGIN
    INSERT INTO webhook_events (type, out_refund_no, payload)
    SELECT 'refund.finalized', NEW.out_refund_no,
           json_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                       'final_source', NEW.final_source, 'amount', NEW.amount,
                       'currency', NEW.currency, 'finalized_at', NEW.finalized_at,
                       'refund_finish_time', NEW.refund_finish_time,
                       'refund_trade_no', NEW.refund_trade_no, 'out_trade_no', NEW.out_trade_no)
     WHERE NEW.status <> 'REFUND_PENDING';
    INSERT INTO webhook_events (type, out_refund_no, payload)
    SELECT 'refund.flagged', NEW.out_refund_no,
           json_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                       'review_reason', NEW.review_reason, 'flagged_at', NEW.flagged_at,
                       'amount', NEW.amount, 'currency', NEW.currency)
     WHERE NEW.review_flag = 1;
END;

-- One UPDATE can both finalize and flag a refund (a final answer with a value the ledger
-- cannot store). SQLite fires the triggers of one event newest first, so the flag's trigger is
-- created before the finalize trigger: the refund.finalized event gets the lower id, as the
-- insert trigger above orders them (tests/it/webhooks.rs checks the order).
CREATE TRIGGER refunds_webhook_on_flag
AFTER UPDATE OF review_flag ON refunds
WHEN OLD.review_flag = 0 AND NEW.review_flag = 1
BEGIN
    INSERT INTO webhook_events (type, out_refund_no, payload)
    VALUES ('refund.flagged', NEW.out_refund_no,
            json_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                        'review_reason', NEW.review_reason, 'flagged_at', NEW.flagged_at,
                        'amount', NEW.amount, 'currency', NEW.currency));
END;

CREATE TRIGGER refunds_webhook_on_finalize
AFTER UPDATE OF status ON refunds
WHEN OLD.status = 'REFUND_PENDING' AND NEW.status <> 'REFUND_PENDING'
BEGIN
    INSERT INTO webhook_events (type, out_refund_no, payload)
    VALUES ('refund.finalized', NEW.out_refund_no,
            json_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                        'final_source', NEW.final_source, 'amount', NEW.amount,
                        'currency', NEW.currency, 'finalized_at', NEW.finalized_at,
                        'refund_finish_time', NEW.refund_finish_time,
                        'refund_trade_no', NEW.refund_trade_no, 'out_trade_no', NEW.out_trade_no));
END;

CREATE TRIGGER discrepancies_webhook_on_insert
AFTER INSERT ON discrepancies
BEGIN
    INSERT INTO webhook_events (type, out_refund_no, payload)
    VALUES ('discrepancy.recorded', NEW.out_refund_no,
            json_object('discrepancy_id', NEW.id, 'out_refund_no', NEW.out_refund_no,
                        'source', NEW.source, 'kind', NEW.kind, 'expected', NEW.expected,
                        'observed', NEW.observed, 'detected_at', NEW.detected_at));
END;

PRAGMA user_version = 11;
