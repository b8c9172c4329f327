-- Engagement KPIs: active users 1d/7d/30d, stickiness, lifecycle, churn 7d/30d, for every segment and day.
-- Rules: docs/definitions.md ("Engagement KPIs" and "Which records exist").
--
-- Method. Every count is "the users u for whom a condition holds on day d", and every condition depends
-- only on u's active days in the segment (A_s) and on u's new days. Take one active day a of u in s, with
-- next = u's next active day in s. The days d whose latest active day (<= d) is a form [a, next - 1], so
-- "u active within [d-W+1, d]" holds, with a as the witness, exactly on the span [a, min(next, a+W) - 1].
-- Each condition below is such a span of days per active day. The spans of one user and condition are
-- disjoint (a day has one latest active day), so a count on d is the number of spans containing d:
-- +1 where a span starts, -1 after it ends, summed over the days up to d.
-- tests/unit/test_reference.py holds this against a brute-force recount of the definitions.

-- New days, user-level: d is new when one of the user's active clicks on d has signup day d, an event
-- without signup_ts taking the user's first active day.
CREATE OR REPLACE TABLE new_days AS
SELECT DISTINCT c.user_id, c.day
FROM active_clicks AS c
JOIN users AS u USING (user_id)
WHERE coalesce(c.signup_day, u.first_active) = c.day;

-- Each day a on which a user is active in a segment, described by all that the spans depend on: the
-- user's next active day in the segment (a + 60 when there is none or it is further: no condition looks
-- 60 days past a), whether the user was active in the segment on a - 1, and whether a is a new day.
-- Users with the same description have the same spans, so they are one row, `users` saying how many.
CREATE OR REPLACE TABLE activity_runs AS
WITH segment_days AS (
    SELECT
        dimension,
        segment,
        user_id,
        day,
        lag(day) OVER w AS prev_day,
        lead(day) OVER w AS next_day
    FROM event_segments
    WHERE source = 'click'
    GROUP BY dimension, segment, user_id, day
    WINDOW w AS (PARTITION BY dimension, segment, user_id ORDER BY day)
)
SELECT
    a.dimension,
    a.segment,
    a.day,
    CASE WHEN a.next_day IS NULL OR a.next_day > a.day + 60 THEN a.day + 60 ELSE a.next_day END AS next_day,
    coalesce(a.prev_day = a.day - 1, false) AS active_before,
    n.day IS NOT NULL AS is_new,
    count(*) AS users
FROM segment_days AS a
LEFT JOIN new_days AS n ON n.user_id = a.user_id AND n.day = a.day
GROUP BY a.dimension, a.segment, a.day, 4, 5, 6;

-- The spans [first_day, last_day] of every condition, `users` users each.
CREATE OR REPLACE TABLE engagement_spans AS
-- active within [d-W+1, d]: a <= d < min(next, a + W)
SELECT dimension, segment, 'active_users' AS kpi, '1d' AS "window", day AS first_day, day AS last_day, users
FROM activity_runs
UNION ALL
SELECT dimension, segment, 'active_users', '7d', day, least(next_day, day + 7) - 1, users
FROM activity_runs
UNION ALL
SELECT dimension, segment, 'active_users', '30d', day, least(next_day, day + 30) - 1, users
FROM activity_runs
-- not a KPI: active within [d-59, d], which decides the records that exist
UNION ALL
SELECT dimension, segment, 'present', '60d', day, least(next_day, day + 60) - 1, users
FROM activity_runs
-- lifecycle on d = a: new on a new day; else returning when active on a - 1; else resurrecting
UNION ALL
SELECT dimension, segment, 'lifecycle_new', '1d', day, day, users
FROM activity_runs
WHERE is_new
UNION ALL
SELECT dimension, segment, 'lifecycle_returning', '1d', day, day, users
FROM activity_runs
WHERE NOT is_new AND active_before
UNION ALL
SELECT dimension, segment, 'lifecycle_resurrecting', '1d', day, day, users
FROM activity_runs
WHERE NOT is_new AND NOT active_before
-- lifecycle on d = a + 1 when not active on a + 1: dormant
UNION ALL
SELECT dimension, segment, 'lifecycle_dormant', '1d', day + 1, day + 1, users
FROM activity_runs
WHERE next_day > day + 1
-- churn base W: active within [d-2W+1, d-W], i.e. a <= d - W < min(next, a + W)
UNION ALL
SELECT dimension, segment, 'churn_base', '7d', day + 7, least(next_day, day + 7) + 6, users
FROM activity_runs
UNION ALL
SELECT dimension, segment, 'churn_base', '30d', day + 30, least(next_day, day + 30) + 29, users
FROM activity_runs
-- churned W: in the base and not active within [d-W+1, d], i.e. also d < next
UNION ALL
SELECT dimension, segment, 'churned', '7d', day + 7, least(next_day, day + 14) - 1, users
FROM activity_runs
UNION ALL
SELECT dimension, segment, 'churned', '30d', day + 30, least(next_day, day + 60) - 1, users
FROM activity_runs;

-- One row per segment, condition and day, from the segment's first active day to the current day D
-- (nothing is published after D): how many users the condition holds for.
CREATE OR REPLACE TABLE engagement_counts AS
WITH changes AS (
    SELECT dimension, segment, kpi, "window", day, sum(delta) AS delta
    FROM (
        SELECT dimension, segment, kpi, "window", first_day AS day, users AS delta
        FROM engagement_spans
        WHERE first_day <= last_day
        UNION ALL
        SELECT dimension, segment, kpi, "window", last_day + 1, -users
        FROM engagement_spans
        WHERE first_day <= last_day
    )
    GROUP BY dimension, segment, kpi, "window", day
),
conditions (kpi, "window") AS (
    VALUES
        ('active_users', '1d'), ('active_users', '7d'), ('active_users', '30d'), ('present', '60d'),
        ('lifecycle_new', '1d'), ('lifecycle_returning', '1d'), ('lifecycle_resurrecting', '1d'),
        ('lifecycle_dormant', '1d'),
        ('churn_base', '7d'), ('churn_base', '30d'), ('churned', '7d'), ('churned', '30d')
),
calendar AS (
    SELECT dimension, segment, unnest(range(first_day, (SELECT day FROM current_day) + 1)) AS day
    FROM (SELECT dimension, segment, min(day) AS first_day FROM activity_runs GROUP BY dimension, segment)
)
SELECT
    c.dimension,
    c.segment,
    k.kpi,
    k."window",
    c.day,
    sum(coalesce(x.delta, 0)) OVER (
        PARTITION BY c.dimension, c.segment, k.kpi, k."window"
        ORDER BY c.day
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS users
FROM calendar AS c
CROSS JOIN conditions AS k
LEFT JOIN changes AS x
    ON x.dimension = c.dimension
    AND x.segment = c.segment
    AND x.kpi = k.kpi
    AND x."window" = k."window"
    AND x.day = c.day;

-- The records that exist: segment s and day d <= D such that some user was active in s within [d-59, d].
CREATE OR REPLACE TABLE engagement_days AS
SELECT dimension, segment, day
FROM engagement_counts
WHERE kpi = 'present' AND users > 0;

-- The counts, zeros included.
INSERT INTO kpi_records (kpi, "window", dimension, segment, day, count_value)
SELECT n.kpi, n."window", n.dimension, n.segment, n.day, n.users
FROM engagement_counts AS n
JOIN engagement_days USING (dimension, segment, day)
WHERE n.kpi <> 'present';

-- The ratios, from the counts of the same segment and day.
INSERT INTO kpi_records (kpi, "window", dimension, segment, day, ratio_value, numerator, denominator)
WITH wide AS (
    SELECT
        dimension,
        segment,
        day,
        max(users) FILTER (WHERE kpi = 'active_users' AND "window" = '1d') AS dau,
        max(users) FILTER (WHERE kpi = 'active_users' AND "window" = '30d') AS mau,
        max(users) FILTER (WHERE kpi = 'churned' AND "window" = '7d') AS churned_7d,
        max(users) FILTER (WHERE kpi = 'churn_base' AND "window" = '7d') AS base_7d,
        max(users) FILTER (WHERE kpi = 'churned' AND "window" = '30d') AS churned_30d,
        max(users) FILTER (WHERE kpi = 'churn_base' AND "window" = '30d') AS base_30d
    FROM engagement_counts
    JOIN engagement_days USING (dimension, segment, day)
    GROUP BY dimension, segment, day
)
-- stickiness: DAU / MAU, null (undefined, not 0) when MAU is 0
SELECT 'stickiness', '30d', dimension, segment, day,
    CASE WHEN mau = 0 THEN NULL ELSE dau::DOUBLE / mau END, dau, mau
FROM wide
UNION ALL
-- churn rate: churned / base, null (undefined, not 0) when the base is 0
SELECT 'churn_rate', '7d', dimension, segment, day,
    CASE WHEN base_7d = 0 THEN NULL ELSE churned_7d::DOUBLE / base_7d END, churned_7d, base_7d
FROM wide
UNION ALL
SELECT 'churn_rate', '30d', dimension, segment, day,
    CASE WHEN base_30d = 0 THEN NULL ELSE churned_30d::DOUBLE / base_30d END, churned_30d, base_30d
FROM wide;
