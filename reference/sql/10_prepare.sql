-- Shared preparation for every KPI file: de-duplicated surveys, the current day, per-user first days,
-- the kept segment values, and each event's segments. Rules: docs/definitions.md.

-- The output of every KPI file: one row per output key. Counts set count_value; ratios set ratio_value
-- (NULL when undefined) with their numerator and denominator. The ratios with a 95 % interval get
-- ci_low/ci_high from 40_uncertainty.sql, once every ratio is in; every other record leaves them NULL.
CREATE OR REPLACE TABLE kpi_records (
    kpi         VARCHAR NOT NULL,
    "window"    VARCHAR NOT NULL,
    dimension   VARCHAR NOT NULL,
    segment     VARCHAR NOT NULL,
    day         INTEGER NOT NULL,
    count_value BIGINT,
    ratio_value DOUBLE,
    numerator   BIGINT,
    denominator BIGINT,
    ci_low      DOUBLE,
    ci_high     DOUBLE,
    PRIMARY KEY (kpi, "window", dimension, segment, day)
);

-- Surveys count once per (user_id, event_id), whatever their action: the first in arrival order wins.
CREATE OR REPLACE TABLE surveys AS
SELECT *
FROM survey_events
QUALIFY row_number() OVER (PARTITION BY user_id, event_id ORDER BY seq) = 1;

-- Click events that mark their user active on their day (every type but the passive ones).
CREATE OR REPLACE TABLE active_clicks AS
SELECT c.*
FROM clicks AS c
ANTI JOIN passive_types AS p ON p.type = c.type;

-- The current day D: the newest event day of any accepted event, click or survey. NULL without events.
CREATE OR REPLACE TABLE current_day AS
SELECT max(day) AS day
FROM (SELECT day FROM clicks UNION ALL SELECT day FROM surveys);

-- Per user: the first day seen (any accepted event: the stage fallback for a missing signup_ts) and the
-- first active day (active clicks only: the fallback signup day of the "new" lifecycle status).
CREATE OR REPLACE TABLE users AS
WITH seen AS (
    SELECT user_id, min(day) AS first_seen
    FROM (SELECT user_id, day FROM clicks UNION ALL SELECT user_id, day FROM surveys)
    GROUP BY user_id
),
active AS (
    SELECT user_id, min(day) AS first_active
    FROM active_clicks
    GROUP BY user_id
)
SELECT seen.user_id, seen.first_seen, active.first_active
FROM seen
LEFT JOIN active USING (user_id);

-- The values each capped dimension keeps: the first `max_segment_values` distinct values in order of
-- first appearance (clicks file first, then surveys file, each in line order). 'unknown' (also what an
-- absent value becomes) and 'other' are never folded and take no place. Values that look like personal
-- data are never kept and take no place either: an e-mail address anywhere in the value (something @
-- something . something, no whitespace or second '@' in the parts), or a match of the configured pattern.
-- Later values, and personal ones, fold into 'other'.
CREATE OR REPLACE TABLE segment_values AS
WITH appearances AS (
    SELECT 'platform' AS dimension, platform AS value, 0 AS source, seq FROM clicks
    UNION ALL SELECT 'plan', plan, 0, seq FROM clicks
    UNION ALL SELECT 'platform', platform, 1, seq FROM surveys
    UNION ALL SELECT 'plan', plan, 1, seq FROM surveys
),
firsts AS (
    SELECT dimension, value, source, seq
    FROM appearances, settings
    WHERE value IS NOT NULL AND value NOT IN ('unknown', 'other')
        AND NOT regexp_matches(value, '[^@ \t\n\r\f\v]+@[^@ \t\n\r\f\v]+\.[^@ \t\n\r\f\v]+')
        AND NOT (settings.personal_pattern <> '' AND regexp_matches(value, settings.personal_pattern))
    QUALIFY row_number() OVER (PARTITION BY dimension, value ORDER BY source, seq) = 1
)
SELECT dimension, value
FROM firsts
QUALIFY row_number() OVER (PARTITION BY dimension ORDER BY source, seq)
    <= (SELECT max_segment_values FROM settings);

-- Every segment of every active click and every (de-duplicated) survey event: one row per event and
-- dimension. `seq` with `source` identifies the event. The stage of an event is 'onboarding' when its
-- day is less than 14 days after its signup day (its own signup_ts, else the user's first day seen).
CREATE OR REPLACE TABLE event_segments AS
WITH events AS (
    SELECT 'click' AS source, seq, user_id, day, signup_day, platform, plan FROM active_clicks
    UNION ALL
    SELECT 'survey', seq, user_id, day, signup_day, platform, plan FROM surveys
),
attributed AS (
    SELECT
        e.source,
        e.seq,
        e.user_id,
        e.day,
        CASE
            WHEN e.platform IS NULL THEN 'unknown'
            WHEN kp.value IS NOT NULL OR e.platform IN ('unknown', 'other') THEN e.platform
            ELSE 'other'
        END AS platform,
        CASE
            WHEN e.plan IS NULL THEN 'unknown'
            WHEN kq.value IS NOT NULL OR e.plan IN ('unknown', 'other') THEN e.plan
            ELSE 'other'
        END AS plan,
        CASE
            WHEN e.day - coalesce(e.signup_day, u.first_seen) < 14 THEN 'onboarding'
            ELSE 'established'
        END AS stage
    FROM events AS e
    JOIN users AS u USING (user_id)
    LEFT JOIN segment_values AS kp ON kp.dimension = 'platform' AND kp.value = e.platform
    LEFT JOIN segment_values AS kq ON kq.dimension = 'plan' AND kq.value = e.plan
)
SELECT source, seq, user_id, day, 'all' AS dimension, 'all' AS segment FROM attributed
UNION ALL SELECT source, seq, user_id, day, 'platform', platform FROM attributed
UNION ALL SELECT source, seq, user_id, day, 'plan', plan FROM attributed
UNION ALL SELECT source, seq, user_id, day, 'stage', stage FROM attributed;
