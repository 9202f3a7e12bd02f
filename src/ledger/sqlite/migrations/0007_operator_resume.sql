-- Schema version 6 -> 7 (issue 12, part 6): operator_actions.action gains 'resume'
-- (`checus-reconciler resume`: an audited request that a running daemon halted on a
-- configuration error or clock skew probes Checus now instead of at its next halt_recheck;
-- the daemon watches for new resume rows while it is halted). A resume row names no refund.
--
-- It only rebuilds operator_actions (written beside 0005 and 0006, each self-contained).
--
-- The CHECK of a STRICT table changes, so operator_actions is rebuilt with SQLite's documented
-- procedure (https://sqlite.org/lang_altertable.html#otheralter), as in 0004: run by
-- src/ledger/migrate.rs in ONE `BEGIN IMMEDIATE` transaction that also sets user_version, with
-- `legacy_alter_table` on, so the rename rewrites no trigger of refunds that reads
-- operator_actions (refunds_operator_decision_is_audited names it, and finds the new table
-- once it exists under that name). Every row is copied unchanged: each action version 6
-- allowed, version 7 allows too. The index and triggers are created after the copy.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: rename operator_actions to operator_actions_v4 (its index and triggers go with it)
ALTER TABLE operator_actions RENAME TO operator_actions_v4;

-- step: create operator_actions with the action resume (text identical to schema.sql)
CREATE TABLE operator_actions (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL
                  CHECK (at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(at))),
    -- Who: the operator's name (--by, else the login name).
    actor         TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    action        TEXT NOT NULL
                  CHECK (action IN ('resolve', 'retry_now', 'resolve_discrepancy', 'prune',
                                    'clear_flag', 'resume')),
    -- The refund concerned (NULL for prune and resume).
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
