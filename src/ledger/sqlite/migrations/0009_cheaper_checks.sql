-- Schema version 8 -> 9 (issue 15): the same rules, checked with less work.
--   * Every enum CHECK of three or more values becomes an OR chain: `x IN ('a', 'b', 'c')`
--     -> `(x = 'a' OR x = 'b' OR x = 'c')`. SQLite builds a temporary index for an IN list of
--     more than two constants each time a statement or trigger runs; recording one refund
--     built about 40. The meaning is the same, NULL included, so no stored row can newly fail.
--     A CHECK cannot be changed by ALTER TABLE, and a table rebuild would copy every row
--     (minutes on 10M refunds) for a change that touches no row: src/ledger/sqlite/migrate.rs
--     rewrites the tables' CREATE text in sqlite_schema instead, the procedure SQLite documents
--     for changes that need no rewrite of the content
--     (https://sqlite.org/lang_altertable.html#otheralter: writable_schema, then a new
--     schema_version so every connection, the merchant's app's too, reloads the schema).
--     The rewrite (src/ledger/sqlite/checks.rs) is the one that made schema.sql's text, so
--     the migrated and the fresh schema compare equal.
--   * refunds_webhook_on_update becomes two triggers (on finalize, on flag) that insert with
--     VALUES: an INSERT ... SELECT into webhook_events, which has triggers, is staged in a
--     temporary table first, even when its WHERE is false.
--   * webhook_events_insert_is_not_replace looks the id and the event_id up with two EXISTS,
--     each on its own index, instead of one OR that SQLite answers with a temporary table.
--   * notifications_apply keeps the classification and the refund updates; the four
--     discrepancies it may record move to four triggers skipped by their WHEN in the common
--     case, inserting with VALUES. They are created before the new notifications_apply,
--     because SQLite fires the newest trigger first and they read the effect it stores.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: write enum CHECKs of three or more values as OR chains (the tables' CREATE text only; no row is rewritten)

-- step: replace refunds_webhook_on_update by refunds_webhook_on_flag and refunds_webhook_on_finalize (VALUES, no temporary table)
DROP TRIGGER refunds_webhook_on_update;

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

-- step: webhook_events_insert_is_not_replace looks up the id and the event_id on their own indexes
DROP TRIGGER webhook_events_insert_is_not_replace;

CREATE TRIGGER webhook_events_insert_is_not_replace
BEFORE INSERT ON webhook_events
WHEN EXISTS (SELECT 1 FROM webhook_events WHERE id = NEW.id)
  OR EXISTS (SELECT 1 FROM webhook_events WHERE event_id = NEW.event_id)
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a webhook event''s content is immutable');
END;

-- step: notifications_apply records its discrepancies through four triggers that run only when one is due
DROP TRIGGER notifications_apply;

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

CREATE TRIGGER notifications_record_conflicting_final
AFTER INSERT ON notifications
WHEN (SELECT effect FROM notifications WHERE id = NEW.id) = 'conflicting_final'
BEGIN
    INSERT INTO discrepancies (out_refund_no, detected_at, source, kind, expected, observed)
    VALUES (NEW.out_refund_no, NEW.received_at, 'notification', 'conflicting_final',
            (SELECT status FROM refunds WHERE out_refund_no = NEW.out_refund_no), NEW.status);
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
END;
