-- checus-reconciler: the merchant application's SQL contract with the ledger.
--
-- These statements are the whole of what the merchant's app writes. Copy them verbatim; the
-- tests execute exactly this text, through rusqlite and through the sqlite3 shell. Bind every
-- value as TEXT (amounts too: pass the exact number text, e.g. '12.50', never a float).
-- Open the ledger with a busy timeout (e.g. 5000 ms) so a concurrent writer makes you wait,
-- not fail. Everything else (scheduling, polling, applying notifications, refusing to
-- change a final status) is done by the ledger's triggers and by checus-reconciler.

-- contract: insert_refund
-- A refund the /refund call accepted (data.status REFUND_PENDING). :refund_trade_no and
-- :out_trade_no may be NULL. created_at defaults to now; checus-reconciler schedules the first
-- query after its grace window. A second insert of the same out_refund_no is refused.
INSERT INTO refunds (out_refund_no, refund_trade_no, out_trade_no, amount, currency)
VALUES (:out_refund_no, :refund_trade_no, :out_trade_no, :amount, :currency);

-- contract: insert_failed_refund
-- A refund the /refund call answered with data.status REFUND_FAILED: recorded as final.
INSERT INTO refunds (out_refund_no, refund_trade_no, out_trade_no, amount, currency,
                     status, final_source, finalized_at)
VALUES (:out_refund_no, :refund_trade_no, :out_trade_no, :amount, :currency,
        'REFUND_FAILED', 'refund_response', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- contract: record_notification
-- One row per refund result notification whose signature VERIFIED, inserted before you
-- acknowledge it. Duplicate deliveries are fine: insert them too. :status is data.status
-- (REFUND_SUCCESS or REFUND_FAILED); :amount is data.refundAmount's exact number text;
-- :refund_finish_time and :notify_time are the RFC 3339 texts as received (any offset;
-- strftime converts them to the ledger's UTC form). A time that is not a real instant
-- (2026-02-31, hour 24, second 60) is kept as received, so the ledger's CHECK fails the
-- INSERT: do not acknowledge the notification then, and Checus delivers it again. The
-- ledger's trigger applies the notification in the same transaction, or records a
-- discrepancy when it disagrees.
INSERT INTO notifications (out_refund_no, status, refund_trade_no, amount, currency,
                           refund_finish_time, notify_time)
VALUES (:out_refund_no, :status, :refund_trade_no, :amount, :currency,
        CASE WHEN substr(:refund_finish_time, 1, 19) = strftime('%Y-%m-%dT%H:%M:%S',
                  julianday(substr(:refund_finish_time, 1, 19)))
             THEN coalesce(strftime('%Y-%m-%dT%H:%M:%fZ', :refund_finish_time),
                           :refund_finish_time)
             ELSE :refund_finish_time END,
        CASE WHEN substr(:notify_time, 1, 19) = strftime('%Y-%m-%dT%H:%M:%S',
                  julianday(substr(:notify_time, 1, 19)))
             THEN coalesce(strftime('%Y-%m-%dT%H:%M:%fZ', :notify_time), :notify_time)
             ELSE :notify_time END);
