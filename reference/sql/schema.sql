-- The input tables of the reference, filled by reference/load.py with accepted (validated) events only.
-- Days are UTC day numbers (days since 1970-01-01, floor(epoch ms / 86,400,000)), computed at validation.

-- Every accepted click event, duplicates included (activity is a set, so they change nothing).
CREATE TABLE clicks (
    seq        BIGINT  NOT NULL,  -- 0-based line number in the clicks file: arrival order
    user_id    VARCHAR NOT NULL,
    day        INTEGER NOT NULL,  -- event day of ts
    signup_day INTEGER,           -- day of signup_ts; NULL when the event carries none
    platform   VARCHAR,           -- NULL when absent ("unknown")
    plan       VARCHAR,           -- NULL when absent ("unknown")
    type       VARCHAR NOT NULL
);

-- Every accepted survey event, duplicates included; 10_prepare.sql derives the de-duplicated `surveys`.
CREATE TABLE survey_events (
    seq        BIGINT  NOT NULL,  -- 0-based line number in the surveys file: arrival order
    event_id   VARCHAR NOT NULL,
    user_id    VARCHAR NOT NULL,
    ts_ms      BIGINT  NOT NULL,  -- event time, epoch milliseconds
    day        INTEGER NOT NULL,
    survey     VARCHAR NOT NULL,  -- 'nps' | 'csat'
    action     VARCHAR NOT NULL,  -- 'shown' | 'answered' | 'dismissed'
    score      INTEGER,           -- set exactly when action = 'answered' (validation enforces the range)
    signup_day INTEGER,
    platform   VARCHAR,
    plan       VARCHAR
);

-- Click types that do not mark a user active (KPIS.md: configurable, empty by default).
CREATE TABLE passive_types (
    type VARCHAR PRIMARY KEY
);

-- Run settings, exactly one row.
CREATE TABLE settings (
    max_segment_values INTEGER NOT NULL,  -- distinct values kept per dimension before folding into 'other'
    personal_pattern   VARCHAR NOT NULL   -- segment values matching it (searched) are personal data; '' none
);
