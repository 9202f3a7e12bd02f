-- Schema version 3 -> 4 (issue 10, parts 2 to 4): the ledger can say what stops progress.
--   * refunds.review_reason gains four reasons: answer_unrecordable (a verified answer held a
--     value the ledger cannot store; the attempt is recorded without it), row_unreadable and
--     row_unwritable (the daemon skips a row it cannot read or update, and flags it), and
--     gateway_rejected_request (issue 11: Checus refused the query for one refund alone).
--   * sweeps gain `unreadable` (rows the sweep skipped), `error` (why a sweep failed) and
--     `breaker_open_since` (the circuit breaker's state when the sweep ended), which `status`
--     reads.
--   * a new index, refunds_pending_unflagged, lets `status` count old pending refunds nobody
--     flagged without walking every pending row.
--   * operator_actions.action gains 'clear_flag' (`checus-reconciler clear-flag`: an audited
--     acknowledgement of a flag, also on a final refund).
--
-- Each change alters a CHECK or adds columns with one to a STRICT table, so the three tables are
-- rebuilt with SQLite's documented procedure (https://sqlite.org/lang_altertable.html#otheralter),
-- as in 0002 and 0003: run by src/ledger/migrate.rs in ONE `BEGIN IMMEDIATE` transaction that
-- also sets user_version, with foreign keys off, `legacy_alter_table` on (so the rename rewrites
-- no trigger of another table and no foreign key that names refunds) and
-- `PRAGMA foreign_key_check` before the commit. The old tables are renamed away and the new ones
-- created under their final names, so sqlite_master equals a fresh schema.sql ledger's; the
-- texts below are copied from schema.sql version 4. Every row is copied unchanged: each value
-- version 3 allowed, version 4 allows too. Indexes and triggers are created after the copy.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: rename refunds, sweeps and operator_actions to <name>_v3 (their indexes and triggers go with them)
ALTER TABLE refunds RENAME TO refunds_v3;
ALTER TABLE sweeps RENAME TO sweeps_v3;
ALTER TABLE operator_actions RENAME TO operator_actions_v3;

-- step: create refunds with the new review reasons, sweeps with unreadable, error and breaker_open_since, and operator_actions with clear_flag (text identical to schema.sql)
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
                       CHECK (status IN ('REFUND_PENDING', 'REFUND_SUCCESS', 'REFUND_FAILED')),
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
                       CHECK (final_source IN ('notification', 'query', 'refund_response', 'operator')),
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
                       CHECK (last_outcome IN ('final', 'pending', 'unknown', 'retryable', 'rate_limited',
                                               'clock_skew', 'config_error', 'mismatch')),
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
                       CHECK (review_reason IN ('pending_too_long', 'unknown_at_gateway_too_long',
                                                'answer_mismatch', 'answer_unrecordable',
                                                'row_unreadable', 'row_unwritable',
                                                'gateway_rejected_request')),
    flagged_at         TEXT
                       CHECK (flagged_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(flagged_at))),
    -- A final outcome waiting for its confirming query, from when: set when a notification
    -- finalizes the refund (the daemon queries once, schedule.confirm_after later, and records
    -- a discrepancy if Checus disagrees); NULL once confirmed, and for every other refund.
    confirm_at         TEXT
                       CHECK (confirm_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(confirm_at))),

    -- pending <=> no final_source <=> no finalized_at.
    CHECK ((status = 'REFUND_PENDING') = (final_source IS NULL)),
    CHECK ((final_source IS NULL) = (finalized_at IS NULL)),
    -- /refund never answers REFUND_SUCCESS synchronously (protocol fact sheet, section 6).
    CHECK (final_source IS NOT 'refund_response' OR status = 'REFUND_FAILED'),
    -- A flag always says why and since when.
    CHECK ((review_flag = 1) = (review_reason IS NOT NULL)),
    CHECK ((review_flag = 1) = (flagged_at IS NOT NULL))
) STRICT;

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
) STRICT;

CREATE TABLE operator_actions (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL
                  CHECK (at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(at))),
    -- Who: the operator's name (--by, else the login name).
    actor         TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    action        TEXT NOT NULL
                  CHECK (action IN ('resolve', 'retry_now', 'resolve_discrepancy', 'prune',
                                    'clear_flag')),
    -- The refund concerned (NULL for prune).
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

-- step: copy every refund, sweep and operator action, unchanged (the new sweep columns start at 0 and NULL)
INSERT INTO refunds SELECT * FROM refunds_v3;
INSERT INTO operator_actions SELECT * FROM operator_actions_v3;
INSERT INTO sweeps (id, started_at, finished_at, claimed, finalized, rescheduled, failed,
                    halted_reason, halt_code)
SELECT id, started_at, finished_at, claimed, finalized, rescheduled, failed, halted_reason,
       halt_code
  FROM sweeps_v3;

-- step: drop refunds_v3, sweeps_v3 and operator_actions_v3 with their indexes and triggers
DROP TABLE refunds_v3;
DROP TABLE sweeps_v3;
DROP TABLE operator_actions_v3;

-- step: recreate the indexes and triggers of refunds, sweeps and operator_actions, with the new index refunds_pending_unflagged (text identical to schema.sql)
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

CREATE TRIGGER sweeps_finished_are_immutable
BEFORE UPDATE ON sweeps
WHEN OLD.finished_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a finished sweep is immutable');
END;

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
