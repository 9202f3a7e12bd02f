-- checus-reconciler: the merchant application's SQL contract with a PostgreSQL ledger
-- (schema.postgres.sql). The same three statements as contract.sql, with the same names and
-- meaning; these statements are the whole of what the merchant's app writes.
--
-- Placeholders are PostgreSQL's own $1..$n, each used exactly once and in order, so the text
-- runs verbatim with node-postgres (client.query(text, values)), psycopg 3's RawCursor
-- (conn.cursor(raw=True) or psycopg.RawCursor), pgx, libpq's PQexecParams, the Rust
-- `postgres` crate, and in psql as `PREPARE name AS <statement>; EXECUTE name(...)` (the tests
-- run them that way). For JDBC (and psycopg's default cursor), replace each $n with ? (resp.
-- %s): the order is already right, nothing else changes.
--
-- Bind every value as a string (setString, a JS string, a Python str), amounts too: the exact
-- number text, e.g. '12.50', never a float; the statements cast it ($4::text::numeric: the
-- parameter is text, so a driver that types its parameters, such as JDBC or the Rust
-- `postgres` crate, accepts a string, and a numeric bound by psycopg still works). NULL where
-- a value is absent. Connect with the ledger's schema first in search_path when the database
-- holds several ledgers (e.g. options=-csearch_path=merchant_a in the URL). Run each statement
-- in its own transaction (autocommit is fine); a concurrent writer makes you wait on a row
-- lock, never fail. Everything else (scheduling, polling, applying notifications, refusing to
-- change a final status) is done by the ledger's triggers and by checus-reconciler.

-- contract: insert_refund
-- A refund the /refund call accepted (data.status REFUND_PENDING). $1 out_refund_no,
-- $2 refund_trade_no (may be NULL), $3 out_trade_no (may be NULL), $4 amount, $5 currency.
-- created_at defaults to now; checus-reconciler schedules the first query after its grace
-- window. A second insert of the same out_refund_no is refused ('checus-reconciler: refund
-- already exists', or unique_violation 23505 when both inserts race).
INSERT INTO refunds (out_refund_no, refund_trade_no, out_trade_no, amount, currency)
VALUES ($1, $2, $3, $4::text::numeric, $5);

-- contract: insert_failed_refund
-- A refund the /refund call answered with data.status REFUND_FAILED: recorded as final.
-- The same five parameters as insert_refund.
INSERT INTO refunds (out_refund_no, refund_trade_no, out_trade_no, amount, currency,
                     status, final_source, finalized_at)
VALUES ($1, $2, $3, $4::text::numeric, $5,
        'REFUND_FAILED', 'refund_response', statement_timestamp());

-- contract: record_notification
-- One row per refund result notification whose signature VERIFIED, inserted before you
-- acknowledge it. Duplicate deliveries are fine: insert them too. $1 data.outRefundNo,
-- $2 data.status (REFUND_SUCCESS or REFUND_FAILED), $3 data.refundTradeNo, $4 data.refundAmount's
-- exact number text, $5 data.refundCurrency, $6 data.refundFinishTime (may be NULL) and
-- $7 notifyTime: the RFC 3339 texts as received (any offset). checus_instant() turns them into
-- instants and refuses a time that is not a real instant (2026-02-31, hour 24, second 60, no
-- offset): the INSERT fails, so do not acknowledge the notification then, and Checus delivers
-- it again. The ledger's trigger applies the notification in the same transaction, or records
-- a discrepancy when it disagrees.
INSERT INTO notifications (out_refund_no, status, refund_trade_no, amount, currency,
                           refund_finish_time, notify_time)
VALUES ($1, $2, $3, $4::text::numeric, $5, checus_instant($6), checus_instant($7));
