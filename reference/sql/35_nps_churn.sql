-- Churn by NPS group: churn_base, churned and churn_rate (7d, 30d) in dimension 'nps_group', segments
-- promoter, passive, detractor and none. Rules: docs/definitions.md ("Engagement x satisfaction"); the
-- interval of churn_rate: 40_uncertainty.sql.
--
-- Method: straight from the definition, one row per (day d, window W, base user). A base user of d is
-- active (any active click: dimension all) in [d-2W+1, d-W]; churned when not active in [d-W+1, d]. Its
-- group is that of its latest answered NPS survey (de-duplicated, `surveys`) whose day lies in
-- [d-2W+1, d-W], latest by event timestamp, then by arrival order (file order); 'none' without one. The
-- four segments exist for the days d whose all/all engagement record exists, zeros included.

CREATE OR REPLACE TABLE nps_churn_members AS
WITH windows (w) AS (VALUES (7), (30)),
record_days AS (
    SELECT day FROM engagement_days WHERE dimension = 'all' AND segment = 'all'
),
active_days AS (
    SELECT DISTINCT user_id, day FROM active_clicks
),
members AS (
    SELECT
        d.day AS d,
        k.w,
        a.user_id,
        bool_or(a.day > d.day - k.w) AS recent
    FROM record_days AS d
    CROSS JOIN windows AS k
    JOIN active_days AS a ON a.day BETWEEN d.day - 2 * k.w + 1 AND d.day
    GROUP BY d.day, k.w, a.user_id
    HAVING bool_or(a.day <= d.day - k.w)
),
answers AS (
    SELECT user_id, day, ts_ms, seq, score
    FROM surveys
    WHERE survey = 'nps' AND action = 'answered'
)
SELECT
    m.d,
    m.w,
    m.user_id,
    NOT m.recent AS churned,
    CASE
        WHEN x.score IS NULL THEN 'none'
        WHEN x.score >= 9 THEN 'promoter'
        WHEN x.score >= 7 THEN 'passive'
        ELSE 'detractor'
    END AS nps_group
FROM members AS m
LEFT JOIN answers AS x
    ON x.user_id = m.user_id AND x.day BETWEEN m.d - 2 * m.w + 1 AND m.d - m.w
QUALIFY row_number() OVER (PARTITION BY m.d, m.w, m.user_id ORDER BY x.ts_ms DESC, x.seq DESC) = 1;

CREATE OR REPLACE TABLE nps_churn_counts AS
WITH windows (w) AS (VALUES (7), (30)),
nps_groups (nps_group) AS (VALUES ('promoter'), ('passive'), ('detractor'), ('none')),
record_days AS (
    SELECT day FROM engagement_days WHERE dimension = 'all' AND segment = 'all'
)
SELECT
    d.day,
    k.w,
    g.nps_group,
    count(m.user_id) AS base,
    count(m.user_id) FILTER (WHERE m.churned) AS churned
FROM record_days AS d
CROSS JOIN windows AS k
CROSS JOIN nps_groups AS g
LEFT JOIN nps_churn_members AS m ON m.d = d.day AND m.w = k.w AND m.nps_group = g.nps_group
GROUP BY d.day, k.w, g.nps_group;

INSERT INTO kpi_records (kpi, "window", dimension, segment, day, count_value)
SELECT 'churn_base', w || 'd', 'nps_group', nps_group, day, base FROM nps_churn_counts
UNION ALL
SELECT 'churned', w || 'd', 'nps_group', nps_group, day, churned FROM nps_churn_counts;

-- churn rate: churned / base, NULL (undefined) when the base is 0 (as for the other segments, 20_engagement.sql)
INSERT INTO kpi_records (kpi, "window", dimension, segment, day, ratio_value, numerator, denominator)
SELECT
    'churn_rate',
    w || 'd',
    'nps_group',
    nps_group,
    day,
    CASE WHEN base = 0 THEN NULL ELSE churned::DOUBLE / base END,
    churned,
    base
FROM nps_churn_counts;
