-- Schema version 4 -> 5 (issue 12, part 2): refunds counted by status without a scan.
--   * a new table, refund_counts, holds how many refunds have each status; /metrics reads it
--     for checus_reconciler_refunds{status} (a count(*) of the final refunds walks all of them);
--   * three triggers on refunds keep it: after an insert, a status change and a (pruning)
--     delete, whoever the writer is.
-- Nothing is rebuilt: the table is filled once from refunds (one pass over refunds_final and
-- refunds_due) in the upgrade's one transaction, which src/ledger/migrate.rs runs with
-- user_version. The texts below are copied from schema.sql version 5.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: create refund_counts (text identical to schema.sql)
CREATE TABLE refund_counts (
    status TEXT    NOT NULL PRIMARY KEY,
    n      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- step: count the refunds of each status into refund_counts (the three statuses start at 0)
INSERT INTO refund_counts (status, n)
VALUES ('REFUND_PENDING', 0), ('REFUND_SUCCESS', 0), ('REFUND_FAILED', 0);
INSERT INTO refund_counts (status, n)
SELECT status, count(*) FROM refunds WHERE true GROUP BY status
    ON CONFLICT (status) DO UPDATE SET n = excluded.n;

-- step: create the triggers that keep refund_counts (text identical to schema.sql)
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
