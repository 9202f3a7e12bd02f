-- Schema version 9 -> 10 (issue 14, part 3): node names, heartbeats and claim leases, so that
-- several daemons can share one ledger (PostgreSQL) and every row says which daemon did what.
--   * refunds gain `claimed_by` and `claimed_until`: the node holding the refund's claim lease
--     and when the lease ends (both NULL when unclaimed, together: a CHECK). The worker's
--     claim sets them in its own transaction and skips rows another node leased until later
--     than now; recording the attempt clears them.
--   * attempts and sweeps gain `node`: the node that made the attempt or ran the sweep (NULL
--     on rows older than this version, and on an attempt of `query` run without a config).
--   * a new table, `nodes`: one row per daemon node name ever seen, upserted at start,
--     heartbeat while running, stopped_at set on a clean stop. `status` reads it.
--
-- Every change is an `ALTER TABLE ... ADD COLUMN` of a nullable column with no default, which
-- rewrites only the table's CREATE text: no row is rewritten. SQLite appends the column's
-- text, CHECKs included, before the table's closing parenthesis, so schema.sql lays the new
-- columns out exactly that way and sqlite_master equals a fresh ledger's (tests/it/migrate.rs
-- compares them). On these STRICT tables with CHECKs SQLite then reads each table once
-- (pragma quick_check of the table) to confirm the existing rows pass: a read, no write.
--
-- Each `-- step:` line is what `checus-reconciler migrate --dry-run` prints.

-- step: add refunds.claimed_by (the node holding the claim lease; nullable, no default)
ALTER TABLE refunds ADD COLUMN claimed_by
                       -- The claim lease (schema version 10), laid out as ALTER TABLE ... ADD
                       -- COLUMN stores it: the node whose worker claimed this pending refund,
                       -- and until when. NULL together when unclaimed. Recording the attempt
                       -- clears both; another node skips the refund until claimed_until.
                       TEXT
                       CHECK (length(claimed_by) BETWEEN 1 AND 64
                              AND claimed_by NOT GLOB '*[^A-Za-z0-9._-]*');

-- step: add refunds.claimed_until (when the lease ends; set and cleared with claimed_by)
ALTER TABLE refunds ADD COLUMN claimed_until TEXT
                       CHECK (claimed_until IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(claimed_until)))
                       CHECK ((claimed_by IS NULL) = (claimed_until IS NULL));

-- step: add attempts.node (the node that made the attempt; NULL on older rows)
ALTER TABLE attempts ADD COLUMN node
                  -- The node that made it (`worker.node_name`; NULL: recorded before schema
                  -- version 10).
                  TEXT
                  CHECK (length(node) BETWEEN 1 AND 64 AND node NOT GLOB '*[^A-Za-z0-9._-]*');

-- step: add sweeps.node (the node that ran the sweep; NULL on older rows)
ALTER TABLE sweeps ADD COLUMN node
                  -- The node that ran it (NULL: recorded before schema version 10).
                  TEXT
                  CHECK (length(node) BETWEEN 1 AND 64 AND node NOT GLOB '*[^A-Za-z0-9._-]*');

-- step: create nodes, one row per daemon node (text identical to schema.sql)
CREATE TABLE nodes (
    -- The node's name (`worker.node_name`, by default the host name).
    name         TEXT    PRIMARY KEY
                 CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^A-Za-z0-9._-]*'),
    -- The host it last ran on, its process id and version at its last start.
    host         TEXT    NOT NULL CHECK (length(host) BETWEEN 1 AND 255),
    pid          INTEGER NOT NULL CHECK (pid > 0),
    version      TEXT    NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    -- Its last start, its last heartbeat (never before that start), and its clean stop
    -- (NULL while it runs, or when it was killed: `status` then shows it silent).
    started_at   TEXT    NOT NULL
                 CHECK (started_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(started_at))),
    heartbeat_at TEXT    NOT NULL
                 CHECK (heartbeat_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(heartbeat_at))),
    stopped_at   TEXT
                 CHECK (stopped_at IS strftime('%Y-%m-%dT%H:%M:%fZ', julianday(stopped_at))),
    CHECK (heartbeat_at >= started_at)
) STRICT;
