-- Retention cohorts: retention_cohort (1d), retained and retention_rate for offsets k = 1, 7, 30 (window
-- `{k}d`), dimensions all, platform and plan. Rules: docs/definitions.md ("Retention cohorts"); the
-- interval of retention_rate: 40_uncertainty.sql.
--
-- Method: straight from the definition. The cohort of segment s and day c is the users active in s on c
-- for whom c is a new day (`new_days`, 20_engagement.sql); a member is retained at offset k when active in
-- s on c + k. Records are keyed by the cohort day c; they exist for the (s, c) whose engagement record
-- exists (`engagement_days`), retained and retention_rate only once c + k <= D.

-- Each (segment, user, day) with an active click of the user in the segment on that day.
CREATE OR REPLACE TABLE segment_active AS
SELECT DISTINCT dimension, segment, user_id, day
FROM event_segments
WHERE source = 'click' AND dimension IN ('all', 'platform', 'plan');

-- The cohort members: active in s on c, and c is one of the user's new days.
CREATE OR REPLACE TABLE cohort_members AS
SELECT a.dimension, a.segment, a.user_id, a.day
FROM segment_active AS a
JOIN new_days AS n ON n.user_id = a.user_id AND n.day = a.day;

-- retention_cohort: the cohort size, zeros included, for every (s, c) that has an engagement record.
INSERT INTO kpi_records (kpi, "window", dimension, segment, day, count_value)
SELECT 'retention_cohort', '1d', e.dimension, e.segment, e.day, count(m.user_id)
FROM engagement_days AS e
LEFT JOIN cohort_members AS m
    ON m.dimension = e.dimension AND m.segment = e.segment AND m.day = e.day
WHERE e.dimension IN ('all', 'platform', 'plan')
GROUP BY e.dimension, e.segment, e.day;

-- retained and retention_rate per offset, once the cohort has matured (c + k <= D).
CREATE OR REPLACE TABLE retention_counts AS
WITH offsets (k) AS (VALUES (1), (7), (30))
SELECT
    e.dimension,
    e.segment,
    e.day,
    o.k,
    count(m.user_id) AS cohort,
    count(a.user_id) AS retained
FROM engagement_days AS e
CROSS JOIN offsets AS o
LEFT JOIN cohort_members AS m
    ON m.dimension = e.dimension AND m.segment = e.segment AND m.day = e.day
LEFT JOIN segment_active AS a
    ON a.dimension = m.dimension AND a.segment = m.segment AND a.user_id = m.user_id AND a.day = m.day + o.k
WHERE e.dimension IN ('all', 'platform', 'plan') AND e.day + o.k <= (SELECT day FROM current_day)
GROUP BY e.dimension, e.segment, e.day, o.k;

INSERT INTO kpi_records (kpi, "window", dimension, segment, day, count_value)
SELECT 'retained', k || 'd', dimension, segment, day, retained
FROM retention_counts;

-- retention_rate: retained / cohort; NULL (undefined) for an empty cohort, numerator and denominator kept.
INSERT INTO kpi_records (kpi, "window", dimension, segment, day, ratio_value, numerator, denominator)
SELECT
    'retention_rate',
    k || 'd',
    dimension,
    segment,
    day,
    CASE WHEN cohort > 0 THEN retained::DOUBLE / cohort END,
    retained,
    cohort
FROM retention_counts;
