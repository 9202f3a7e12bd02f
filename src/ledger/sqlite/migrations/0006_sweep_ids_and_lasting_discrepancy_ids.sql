-- Schema version 5 -> 6 (issue 12, parts 5 and 6): logs and audit rows that point at the right row.
--   * attempts gain `sweep_id`, the `sweeps.id` of the sweep that made the attempt (the `sweep`
--     field of the daemon's log lines). `ALTER TABLE ... ADD COLUMN` of a nullable column with
--     no default and no CHECK only rewrites the table's CREATE text, so it takes the same time
--     on any ledger (no row is read or written); old attempts keep NULL.
--   * discrepancies.id becomes AUTOINCREMENT: a prune that deletes the newest discrepancy no
--     longer lets the next one take its id, which operator_actions (resolve-discrepancy's
--     `{"discrepancy":N}` detail) and prune archives name. SQLite cannot add AUTOINCREMENT to
--     a table, so discrepancies is rebuilt with its documented procedure
--     (https://sqlite.org/lang_altertable.html#otheralter), as in 0002 to 0004: run by
--     src/ledger/migrate.rs in ONE `BEGIN IMMEDIATE` transaction that also sets user_version,
--     with foreign keys off and `legacy_alter_table` on, so renaming it away rewrites no
--     trigger of another table that names it (refunds_are_never_deleted, notifications_apply).
--     Every row is copied with its id; indexes and triggers are created after the copy. The
--     table is small (one row per disagreement), so this costs little even on a big ledger.
--   * the id counter starts above every id ever used that the ledger still knows of: the
--     highest kept row and the highest id an audit row names (a prune before this version may
--     already have deleted the newest rows).
--
-- The texts below are copied from schema.sql version 6, so sqlite_master equals a fresh
-- ledger's (tests/it/migrate.rs compares them). Each `-- step:` line is what
-- `checus-reconciler migrate --dry-run` prints.

-- step: add attempts.sweep_id (nullable, no default: O(1), no row is rewritten)
ALTER TABLE attempts ADD COLUMN sweep_id
                  -- The sweep that made it (NULL: recorded before this column existed, or
                  -- by `checus-reconciler query`, outside any sweep).
                  INTEGER;

-- step: rename discrepancies to discrepancies_v4 (its indexes and triggers go with it)
ALTER TABLE discrepancies RENAME TO discrepancies_v4;

-- step: create discrepancies with an AUTOINCREMENT id (text identical to schema.sql)
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

-- step: copy every discrepancy with its id, then start the id counter above every id in use
INSERT INTO discrepancies SELECT * FROM discrepancies_v4;
DELETE FROM sqlite_sequence WHERE name = 'discrepancies';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'discrepancies', used
  FROM (SELECT max(id) AS used
          FROM (SELECT max(id) AS id FROM discrepancies
                UNION ALL
                SELECT max(CAST(json_extract(detail, '$.discrepancy') AS INTEGER))
                  FROM operator_actions
                 WHERE action = 'resolve_discrepancy' AND json_valid(detail)))
 WHERE used IS NOT NULL;

-- step: drop discrepancies_v4 with its indexes and triggers
DROP TABLE discrepancies_v4;

-- step: recreate the indexes and triggers of discrepancies (text identical to schema.sql)
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
