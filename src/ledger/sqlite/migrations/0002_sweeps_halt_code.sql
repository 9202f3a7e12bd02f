-- Schema version 1 -> 2: sweeps gain `halt_code`, the halt in force when the sweep ended, as a
-- stable code that `status` reads instead of parsing halted_reason's text.
--
-- SQLite cannot add a column with a CHECK to a STRICT table's definition in place, so this is
-- its documented table rebuild (https://sqlite.org/lang_altertable.html#otheralter), run by
-- src/ledger/migrate.rs inside ONE `BEGIN IMMEDIATE` transaction that also sets user_version,
-- with foreign keys off and `PRAGMA foreign_key_check` before the commit. One deviation, on
-- purpose: the OLD table is renamed away and the new one is created under its final name.
-- `ALTER TABLE new_sweeps RENAME TO sweeps` would store `CREATE TABLE "sweeps"` (SQLite quotes
-- a renamed name), and a migrated ledger's sqlite_master must equal a fresh schema.sql
-- ledger's. The runner turns `legacy_alter_table` on, so the rename rewrites no reference to
-- sweeps elsewhere (a view the merchant's app may have made keeps naming sweeps, the new
-- table); the old table's own trigger is dropped with it and created again below.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: rename sweeps to sweeps_v1 (its trigger goes with it)
ALTER TABLE sweeps RENAME TO sweeps_v1;

-- step: create sweeps with the new halt_code column (text identical to schema.sql)
CREATE TABLE sweeps (
    id            INTEGER PRIMARY KEY,
    started_at    TEXT    NOT NULL
                  CHECK (started_at GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9]Z'),
    -- NULL while running (or if the process died mid-sweep).
    finished_at   TEXT
                  CHECK (finished_at GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9]Z'),
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

-- step: copy every sweep, backfilling halt_code from halted_reason ('clock skew...' -> clock_skew, 'configuration rejected...' -> config_error, anything else -> NULL)
INSERT INTO sweeps (id, started_at, finished_at, claimed, finalized, rescheduled, failed,
                    halted_reason, halt_code)
SELECT id, started_at, finished_at, claimed, finalized, rescheduled, failed, halted_reason,
       CASE
           WHEN halted_reason LIKE 'clock skew%' THEN 'clock_skew'
           WHEN halted_reason LIKE 'configuration rejected%' THEN 'config_error'
       END
  FROM sweeps_v1;

-- step: drop sweeps_v1 and its trigger
DROP TABLE sweeps_v1;

-- step: recreate the trigger sweeps_finished_are_immutable (text identical to schema.sql)
CREATE TRIGGER sweeps_finished_are_immutable
BEFORE UPDATE ON sweeps
WHEN OLD.finished_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'checus-reconciler: a finished sweep is immutable');
END;
