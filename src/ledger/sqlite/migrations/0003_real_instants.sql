-- Schema version 2 -> 3: every time column's CHECK becomes a round trip through the day
-- number, `x IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(x))`, so the ledger stores only real
-- instants in its own form. Version 2 only checked the shape (a GLOB), which let 2026-02-31,
-- hour 24 and second 60 in: values the daemon then could not read (issue 10, part 1).
--
-- Every table has a time column, so every table is rebuilt with SQLite's documented procedure
-- (https://sqlite.org/lang_altertable.html#otheralter), run by src/ledger/migrate.rs inside ONE
-- `BEGIN IMMEDIATE` transaction that also sets user_version, with foreign keys off,
-- `legacy_alter_table` on and `PRAGMA foreign_key_check` before the commit. As in 0002, the OLD
-- tables are renamed away and the new ones created under their final names, so sqlite_master
-- equals a fresh schema.sql ledger's; the texts below are copied from schema.sql version 3.
-- Indexes and triggers are created after the rows are copied: `notifications_apply` must not
-- run again for notifications that were applied long ago.
--
-- A stored time the new CHECKs refuse makes a row copy fail and the whole migration roll back;
-- migrate.rs looks for such values first and refuses with the table, row and column (exit 4),
-- before taking a backup, so nothing is lost or changed silently.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: rename the seven tables to <name>_v2 (their indexes and triggers go with them)
ALTER TABLE refunds RENAME TO refunds_v2;
ALTER TABLE attempts RENAME TO attempts_v2;
ALTER TABLE discrepancies RENAME TO discrepancies_v2;
ALTER TABLE notifications RENAME TO notifications_v2;
ALTER TABLE sweeps RENAME TO sweeps_v2;
ALTER TABLE operator_actions RENAME TO operator_actions_v2;
ALTER TABLE prunes RENAME TO prunes_v2;

-- step: create the seven tables with the round-trip time CHECKs (text identical to schema.sql)
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
    -- 1 when a human should look at this refund; why, and since when.
    review_flag        INTEGER NOT NULL DEFAULT 0 CHECK (review_flag IN (0, 1)),
    review_reason      TEXT
                       CHECK (review_reason IN ('pending_too_long', 'unknown_at_gateway_too_long',
                                                'answer_mismatch')),
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
                  CHECK (outcome IN ('final', 'pending', 'unknown', 'retryable', 'rate_limited',
                                     'clock_skew', 'config_error', 'mismatch')),
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
) STRICT;

CREATE TABLE discrepancies (
    id            INTEGER PRIMARY KEY,
    -- No foreign key: an 'unknown_refund' row names a refund the ledger does not have.
    out_refund_no TEXT    NOT NULL
                  CHECK (length(out_refund_no) BETWEEN 1 AND 64
                         AND out_refund_no NOT GLOB '*[^!-~]*'),
    detected_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                  CHECK (detected_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(detected_at))),
    -- Who disagreed with the ledger: 'query' (a verified /refundQuery answer),
    -- 'notification' (a verified notification) or 'operator'.
    source        TEXT    NOT NULL CHECK (source IN ('query', 'notification', 'operator')),
    -- conflicting_final   a final status other than the recorded final status
    -- refund_no_mismatch  the answer named another outRefundNo
    -- amount_mismatch     the amount differs from the ledger's
    -- currency_mismatch   the currency differs from the ledger's
    -- unknown_refund      a notification about a refund the ledger does not have
    kind          TEXT    NOT NULL
                  CHECK (kind IN ('conflicting_final', 'refund_no_mismatch', 'amount_mismatch',
                                  'currency_mismatch', 'unknown_refund')),
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
                       CHECK (effect IN ('finalized', 'already_final', 'conflicting_final',
                                         'mismatch', 'unknown_refund'))
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
    halt_code     TEXT CHECK (halt_code IN ('config_error', 'clock_skew'))
) STRICT;

CREATE TABLE operator_actions (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL
                  CHECK (at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(at))),
    -- Who: the operator's name (--by, else the login name).
    actor         TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    action        TEXT NOT NULL
                  CHECK (action IN ('resolve', 'retry_now', 'resolve_discrepancy', 'prune')),
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

-- step: copy every row of every table, unchanged
INSERT INTO refunds SELECT * FROM refunds_v2;
INSERT INTO attempts SELECT * FROM attempts_v2;
INSERT INTO discrepancies SELECT * FROM discrepancies_v2;
INSERT INTO notifications SELECT * FROM notifications_v2;
INSERT INTO sweeps SELECT * FROM sweeps_v2;
INSERT INTO operator_actions SELECT * FROM operator_actions_v2;
INSERT INTO prunes SELECT * FROM prunes_v2;

-- step: drop the <name>_v2 tables with their indexes and triggers
DROP TABLE refunds_v2;
DROP TABLE attempts_v2;
DROP TABLE discrepancies_v2;
DROP TABLE notifications_v2;
DROP TABLE sweeps_v2;
DROP TABLE operator_actions_v2;
DROP TABLE prunes_v2;

-- step: recreate every index and trigger (text identical to schema.sql)
CREATE INDEX refunds_due ON refunds (next_query_at) WHERE status = 'REFUND_PENDING';

CREATE INDEX refunds_unscheduled ON refunds (created_at)
    WHERE status = 'REFUND_PENDING' AND next_query_at IS NULL;

CREATE INDEX refunds_final ON refunds (status, created_at) WHERE status <> 'REFUND_PENDING';

CREATE INDEX refunds_to_confirm ON refunds (confirm_at) WHERE confirm_at IS NOT NULL;

CREATE INDEX refunds_by_finalized ON refunds (finalized_at, id) WHERE finalized_at IS NOT NULL;

CREATE INDEX refunds_by_created ON refunds (created_at);

CREATE INDEX refunds_flagged ON refunds (status, created_at) WHERE review_flag = 1;

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

CREATE TRIGGER refunds_identity_is_immutable
BEFORE UPDATE OF id, out_refund_no, amount, currency ON refunds
WHEN NEW.id IS NOT OLD.id
  OR NEW.out_refund_no IS NOT OLD.out_refund_no
  OR NEW.amount IS NOT OLD.amount
  OR NEW.currency IS NOT OLD.currency
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: out_refund_no, amount and currency of a refund are immutable');
END;

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

CREATE TRIGGER refunds_insert_is_not_replace
BEFORE INSERT ON refunds
WHEN EXISTS (SELECT 1 FROM refunds WHERE out_refund_no = NEW.out_refund_no OR id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: refund already exists');
END;

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

CREATE INDEX discrepancies_by_refund ON discrepancies (out_refund_no, id);

CREATE INDEX discrepancies_unresolved ON discrepancies (detected_at) WHERE resolved_at IS NULL;

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

CREATE INDEX notifications_by_refund ON notifications (out_refund_no, id);

CREATE TRIGGER notifications_effect_is_set_by_the_ledger
BEFORE INSERT ON notifications
WHEN NEW.effect IS NOT NULL OR EXISTS (SELECT 1 FROM notifications WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: notifications are append-only and effect is set by the ledger');
END;

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

    -- conflicting_final: record, change nothing.
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    SELECT NEW.out_refund_no, NEW.received_at, 'notification', 'conflicting_final', r.status, NEW.status
      FROM refunds AS r
     WHERE r.out_refund_no = NEW.out_refund_no
       AND (SELECT effect FROM notifications WHERE id = NEW.id) = 'conflicting_final';

    -- mismatch: one discrepancy per differing field, nothing applied.
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    SELECT NEW.out_refund_no, NEW.received_at, 'notification', 'amount_mismatch', r.amount, NEW.amount
      FROM refunds AS r
     WHERE r.out_refund_no = NEW.out_refund_no
       AND (SELECT effect FROM notifications WHERE id = NEW.id) = 'mismatch'
       AND (CASE WHEN instr(r.amount, '.') > 0
                 THEN rtrim(rtrim(ltrim(r.amount, '0'), '0'), '.')
                 ELSE ltrim(r.amount, '0') END)
        <> (CASE WHEN instr(NEW.amount, '.') > 0
                 THEN rtrim(rtrim(ltrim(NEW.amount, '0'), '0'), '.')
                 ELSE ltrim(NEW.amount, '0') END);

    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    SELECT NEW.out_refund_no, NEW.received_at, 'notification', 'currency_mismatch', r.currency, NEW.currency
      FROM refunds AS r
     WHERE r.out_refund_no = NEW.out_refund_no
       AND (SELECT effect FROM notifications WHERE id = NEW.id) = 'mismatch'
       AND r.currency <> NEW.currency;

    -- unknown_refund: the ledger has nothing to compare with; keep what was said.
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    SELECT NEW.out_refund_no, NEW.received_at, 'notification', 'unknown_refund', NULL,
           NEW.status || ' ' || NEW.amount || ' ' || NEW.currency
     WHERE (SELECT effect FROM notifications WHERE id = NEW.id) = 'unknown_refund';
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
