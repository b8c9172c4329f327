-- Satisfaction KPIs: NPS, CSAT, shown/dismissed counts and response rates, windows 7d and 30d, for every
-- segment and day. Rules: docs/definitions.md ("Satisfaction KPIs"); intervals: 40_uncertainty.sql.
--
-- Method. Every satisfaction KPI is built from sums, over the survey events of a segment whose day lies in
-- the window, of what each event adds to a few counters. So: what each event adds (survey_facts), summed
-- per segment and day, then summed over the window ending at each day. `surveys` is already de-duplicated
-- per (user_id, event_id) with the first in file order winning whatever its action (10_prepare.sql), and
-- `event_segments` already gives every survey event its own segments, stage included (its own signup_ts,
-- else the user's first day seen, this event included).

-- Every counter, one row per (de-duplicated) survey event and counter it adds to. `survey_events` is not a
-- KPI: it counts every survey event, whatever its action, and decides which records exist.
-- `csat_score_sum` is the numerator of csat_mean. Validation guarantees a score exactly on answers, in range.
CREATE OR REPLACE TABLE survey_facts AS
SELECT seq, 'survey_events' AS counter, 1 AS amount
FROM surveys
UNION ALL
-- shown and dismissed are counted per survey kind; dismissed enters no response rate
SELECT seq, survey || '_' || action, 1
FROM surveys
WHERE action IN ('shown', 'dismissed')
UNION ALL
SELECT seq, survey || '_responses', 1
FROM surveys
WHERE action = 'answered'
UNION ALL
-- NPS buckets: promoters 9..10, passives 7..8, detractors 0..6
SELECT
    seq,
    CASE WHEN score >= 9 THEN 'nps_promoters' WHEN score >= 7 THEN 'nps_passives' ELSE 'nps_detractors' END,
    1
FROM surveys
WHERE survey = 'nps' AND action = 'answered'
UNION ALL
-- CSAT: satisfied is score 4..5
SELECT seq, 'csat_satisfied', 1
FROM surveys
WHERE survey = 'csat' AND action = 'answered' AND score >= 4
UNION ALL
SELECT seq, 'csat_score_sum', score
FROM surveys
WHERE survey = 'csat' AND action = 'answered';

-- One row per segment, counter, window and day, from the segment's first survey day to the current day D
-- (nothing is published after D): the counter summed over the survey events of the segment whose day is
-- in [d-W+1, d]. Every counter gets a row, zeros included, so a segment without CSAT answers still has
-- csat_responses = 0 (and csat undefined).
CREATE OR REPLACE TABLE satisfaction_counts AS
WITH daily AS (
    SELECT g.dimension, g.segment, g.day, f.counter, sum(f.amount) AS amount
    FROM event_segments AS g
    JOIN survey_facts AS f ON f.seq = g.seq
    WHERE g.source = 'survey'
    GROUP BY g.dimension, g.segment, g.day, f.counter
),
counters (counter) AS (
    VALUES
        ('survey_events'),
        ('nps_responses'), ('nps_promoters'), ('nps_passives'), ('nps_detractors'),
        ('nps_shown'), ('nps_dismissed'),
        ('csat_responses'), ('csat_satisfied'), ('csat_score_sum'), ('csat_shown'), ('csat_dismissed')
),
-- The four engagement levels are all there from the first survey day on, whatever their own events.
levels (segment) AS (VALUES ('none'), ('light'), ('regular'), ('heavy')),
firsts AS (
    SELECT dimension, segment, min(day) AS first_day
    FROM daily
    WHERE dimension <> 'engagement'
    GROUP BY dimension, segment
    UNION ALL
    SELECT 'engagement', l.segment, f.first_day
    FROM (SELECT min(day) AS first_day FROM daily WHERE dimension = 'all') AS f
    CROSS JOIN levels AS l
    WHERE f.first_day IS NOT NULL
),
calendar AS (
    SELECT dimension, segment, unnest(range(first_day, (SELECT day FROM current_day) + 1)) AS day
    FROM firsts
),
-- Dense days, so that a window sum exists for the days without any event too.
dense AS (
    SELECT c.dimension, c.segment, k.counter, c.day, coalesce(x.amount, 0) AS amount
    FROM calendar AS c
    CROSS JOIN counters AS k
    LEFT JOIN daily AS x
        ON x.dimension = c.dimension
        AND x.segment = c.segment
        AND x.counter = k.counter
        AND x.day = c.day
),
windowed AS (
    SELECT
        dimension,
        segment,
        counter,
        day,
        -- RANGE over the day number: the window [d-W+1, d] by value, whatever rows exist
        sum(amount) OVER (
            PARTITION BY dimension, segment, counter ORDER BY day RANGE BETWEEN 6 PRECEDING AND CURRENT ROW
        )::BIGINT AS in_7d,
        sum(amount) OVER (
            PARTITION BY dimension, segment, counter ORDER BY day RANGE BETWEEN 29 PRECEDING AND CURRENT ROW
        )::BIGINT AS in_30d
    FROM dense
)
SELECT dimension, segment, counter, '7d' AS "window", day, in_7d AS n
FROM windowed
UNION ALL
SELECT dimension, segment, counter, '30d', day, in_30d
FROM windowed;

-- The records that exist (both windows): segment s and day d <= D such that some survey event of s has its
-- day in [d-29, d], whatever its action (a segment with only `shown` events has records, its scores null).
-- The engagement levels exist together, zeros included, on the days the all/all records exist: a late
-- click moves surveys between levels, and a level never loses its records for that.
CREATE OR REPLACE TABLE satisfaction_days AS
SELECT dimension, segment, day
FROM satisfaction_counts
WHERE counter = 'survey_events' AND "window" = '30d' AND n > 0 AND dimension <> 'engagement'
UNION ALL
SELECT 'engagement', l.segment, d.day
FROM satisfaction_counts AS d
CROSS JOIN (VALUES ('none'), ('light'), ('regular'), ('heavy')) AS l (segment)
WHERE d.dimension = 'all' AND d.counter = 'survey_events' AND d."window" = '30d' AND d.n > 0;

-- The counts, zeros included.
INSERT INTO kpi_records (kpi, "window", dimension, segment, day, count_value)
SELECT n.counter, n."window", n.dimension, n.segment, n.day, n.n
FROM satisfaction_counts AS n
JOIN satisfaction_days USING (dimension, segment, day)
WHERE n.counter NOT IN ('survey_events', 'csat_score_sum');

-- The ratios, from the counters of the same segment, window and day; each is undefined (NULL value, with
-- its numerator and denominator still published) when its denominator is 0.
INSERT INTO kpi_records (kpi, "window", dimension, segment, day, ratio_value, numerator, denominator)
WITH wide AS (
    SELECT
        dimension,
        segment,
        "window",
        day,
        max(n) FILTER (WHERE counter = 'nps_responses') AS nps_responses,
        max(n) FILTER (WHERE counter = 'nps_promoters') AS nps_promoters,
        max(n) FILTER (WHERE counter = 'nps_detractors') AS nps_detractors,
        max(n) FILTER (WHERE counter = 'nps_shown') AS nps_shown,
        max(n) FILTER (WHERE counter = 'csat_responses') AS csat_responses,
        max(n) FILTER (WHERE counter = 'csat_satisfied') AS csat_satisfied,
        max(n) FILTER (WHERE counter = 'csat_score_sum') AS csat_score_sum,
        max(n) FILTER (WHERE counter = 'csat_shown') AS csat_shown
    FROM satisfaction_counts
    JOIN satisfaction_days USING (dimension, segment, day)
    GROUP BY dimension, segment, "window", day
)
-- nps: 100 x (promoters - detractors) / responses; numerator promoters - detractors
SELECT 'nps', "window", dimension, segment, day,
    CASE WHEN nps_responses > 0 THEN (100 * (nps_promoters - nps_detractors))::DOUBLE / nps_responses END,
    nps_promoters - nps_detractors, nps_responses
FROM wide
UNION ALL
-- csat: satisfied / responses
SELECT 'csat', "window", dimension, segment, day,
    CASE WHEN csat_responses > 0 THEN csat_satisfied::DOUBLE / csat_responses END,
    csat_satisfied, csat_responses
FROM wide
UNION ALL
-- csat_mean: sum of scores / responses; numerator the sum of scores
SELECT 'csat_mean', "window", dimension, segment, day,
    CASE WHEN csat_responses > 0 THEN csat_score_sum::DOUBLE / csat_responses END,
    csat_score_sum, csat_responses
FROM wide
UNION ALL
-- response rates: answered / shown, per survey kind; may exceed 1 (answers without a shown event)
SELECT 'nps_response_rate', "window", dimension, segment, day,
    CASE WHEN nps_shown > 0 THEN nps_responses::DOUBLE / nps_shown END,
    nps_responses, nps_shown
FROM wide
UNION ALL
SELECT 'csat_response_rate', "window", dimension, segment, day,
    CASE WHEN csat_shown > 0 THEN csat_responses::DOUBLE / csat_shown END,
    csat_responses, csat_shown
FROM wide;
