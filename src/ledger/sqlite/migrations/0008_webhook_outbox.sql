-- Schema version 7 -> 8 (issue 13 part 3): outgoing webhooks from a transactional outbox.
--   * a new table, webhook_events, with its indexes and the triggers that keep what an event
--     says immutable and never delete it (except a delivered event of a pruned refund);
--   * three triggers that write the events in the same transaction as the change:
--     refund.finalized and refund.flagged (refunds_webhook_on_insert and
--     refunds_webhook_on_update) and discrepancy.recorded (discrepancies_webhook_on_insert);
--   * operator_actions.action gains 'redeliver_webhook' (`checus-reconciler webhooks
--     redeliver`, audited like the other operator commands).
--
-- No event is written for what happened before the upgrade: the outbox starts empty.
-- The CHECK change of the STRICT operator_actions table is SQLite's documented table rebuild
-- (https://sqlite.org/lang_altertable.html#otheralter), as in 0002 to 0004: run by
-- src/ledger/migrate.rs in ONE `BEGIN IMMEDIATE` transaction that also sets user_version,
-- with foreign keys off and `legacy_alter_table` on. The old table is renamed away and the new
-- one created under its final name, so sqlite_master equals a fresh schema.sql ledger's; the
-- texts below are copied from schema.sql. Every row is copied unchanged.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: rename operator_actions to operator_actions_v4 (its index and triggers go with it)
ALTER TABLE operator_actions RENAME TO operator_actions_v4;

-- step: create operator_actions with the redeliver_webhook action (text identical to schema.sql)
CREATE TABLE operator_actions (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL
                  CHECK (at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(at))),
    -- Who: the operator's name (--by, else the login name).
    actor         TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    action        TEXT NOT NULL
                  CHECK (action IN ('resolve', 'retry_now', 'resolve_discrepancy', 'prune',
                                    'clear_flag', 'resume', 'redeliver_webhook')),
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

-- step: copy every operator action, unchanged
INSERT INTO operator_actions SELECT * FROM operator_actions_v4;

-- step: drop operator_actions_v4 with its index and triggers
DROP TABLE operator_actions_v4;

-- step: recreate the index and triggers of operator_actions (text identical to schema.sql)
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

-- step: create webhook_events, its indexes and triggers, and the triggers that write events on refunds and discrepancies (text identical to schema.sql)
CREATE TABLE webhook_events (
    -- AUTOINCREMENT: an id is never reused after a prune, so "earlier event" stays id order.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The id receivers deduplicate on: random, so a ledger restored from a backup never
    -- gives an old id to a new event. Sent as the `Checus-Reconciler-Event-Id` header and `id`.
    event_id         TEXT    NOT NULL UNIQUE DEFAULT ('evt_' || lower(hex(randomblob(16))))
                     CHECK (event_id GLOB 'evt_*' AND length(event_id) BETWEEN 5 AND 64),
    type             TEXT    NOT NULL
                     CHECK (type IN ('refund.finalized', 'refund.flagged', 'discrepancy.recorded')),
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
                     CHECK (state IN ('pending', 'delivered', 'dead')),
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
WHEN EXISTS (SELECT 1 FROM webhook_events WHERE id = NEW.id OR event_id = NEW.event_id)
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

CREATE TRIGGER refunds_webhook_on_update
AFTER UPDATE OF status, review_flag ON refunds
WHEN (OLD.status = 'REFUND_PENDING' AND NEW.status <> 'REFUND_PENDING')
  OR (OLD.review_flag = 0 AND NEW.review_flag = 1)
BEGIN
    INSERT INTO webhook_events (type, out_refund_no, payload)
    SELECT 'refund.finalized', NEW.out_refund_no,
           json_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                       'final_source', NEW.final_source, 'amount', NEW.amount,
                       'currency', NEW.currency, 'finalized_at', NEW.finalized_at,
                       'refund_finish_time', NEW.refund_finish_time,
                       'refund_trade_no', NEW.refund_trade_no, 'out_trade_no', NEW.out_trade_no)
     WHERE OLD.status = 'REFUND_PENDING' AND NEW.status <> 'REFUND_PENDING';
    INSERT INTO webhook_events (type, out_refund_no, payload)
    SELECT 'refund.flagged', NEW.out_refund_no,
           json_object('out_refund_no', NEW.out_refund_no, 'status', NEW.status,
                       'review_reason', NEW.review_reason, 'flagged_at', NEW.flagged_at,
                       'amount', NEW.amount, 'currency', NEW.currency)
     WHERE OLD.review_flag = 0 AND NEW.review_flag = 1;
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
