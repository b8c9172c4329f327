-- 95 % intervals (ci_low, ci_high) of nps, csat, churn_rate, nps_response_rate and csat_response_rate.
-- Rules: docs/definitions.md ("Uncertainty"). This file runs after every KPI file has inserted its records,
-- so one place states the interval formulas for every KPI that has one, whatever file computed the value.
-- Both bounds stay NULL when the denominator is 0 and for a response rate above 1 (more answers than
-- `shown` events: not a proportion, so no binomial interval).

-- z: the 97.5 % quantile of the standard normal distribution, for a two-sided 95 % interval.
CREATE OR REPLACE TEMP MACRO ci_z() AS 1.959963984540054::DOUBLE;

-- Wilson score interval of k successes in n trials, p = k/n:
-- centre (p + z²/2n) / (1 + z²/n), half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
-- Preferred over p ± z·sqrt(p(1-p)/n) because it stays meaningful for small n and p near 0 or 1.
-- n is made DOUBLE first so that 4n² cannot overflow an integer.
CREATE OR REPLACE TEMP MACRO wilson_centre(p, n) AS
    (p + ci_z() * ci_z() / (2 * n::DOUBLE)) / (1 + ci_z() * ci_z() / n::DOUBLE);
CREATE OR REPLACE TEMP MACRO wilson_half(p, n) AS
    ci_z() * sqrt(p * (1 - p) / n::DOUBLE + ci_z() * ci_z() / (4 * n::DOUBLE * n::DOUBLE))
    / (1 + ci_z() * ci_z() / n::DOUBLE);

-- Proportions: csat, churn_rate and the response rates, k = numerator and n = denominator. The interval
-- lies in [0, 1] mathematically; the clipping only keeps rounding noise (~1e-17 at k = 0 or k = n) from
-- putting a bound outside it.
UPDATE kpi_records
SET
    ci_low = greatest(0.0, wilson_centre(numerator::DOUBLE / denominator, denominator)
        - wilson_half(numerator::DOUBLE / denominator, denominator)),
    ci_high = least(1.0, wilson_centre(numerator::DOUBLE / denominator, denominator)
        + wilson_half(numerator::DOUBLE / denominator, denominator))
WHERE kpi IN ('csat', 'churn_rate', 'nps_response_rate', 'csat_response_rate')
    AND denominator > 0
    AND numerator BETWEEN 0 AND denominator;

-- NPS: the adjusted Wald interval (Rocks 2016). With n responses, three pseudo-answers are added, 3/4 of
-- one each to promoters and detractors: n' = n + 3, a = (promoters + 3/4) / n', b = (detractors + 3/4) / n'.
-- The interval is centred on 100·(a - b) (not on the NPS itself) with half-width 100·z·sqrt((a + b -
-- (a - b)²) / n'). a + b - (a - b)² is the variance of one answer scored +1/0/-1, never negative in exact
-- arithmetic; greatest(0, ...) keeps rounding from turning it into sqrt(negative) = NaN.
CREATE OR REPLACE TEMP MACRO nps_share(k, n) AS (k::DOUBLE + 0.75) / (n::DOUBLE + 3);
CREATE OR REPLACE TEMP MACRO nps_centre(a, b) AS 100 * (a - b);
CREATE OR REPLACE TEMP MACRO nps_half(a, b, n) AS
    100 * ci_z() * sqrt(greatest(0.0, a + b - (a - b) * (a - b)) / (n::DOUBLE + 3));
CREATE OR REPLACE TEMP MACRO nps_low(p, d, n) AS
    greatest(-100.0, nps_centre(nps_share(p, n), nps_share(d, n)) - nps_half(nps_share(p, n), nps_share(d, n), n));
CREATE OR REPLACE TEMP MACRO nps_high(p, d, n) AS
    least(100.0, nps_centre(nps_share(p, n), nps_share(d, n)) + nps_half(nps_share(p, n), nps_share(d, n), n));

-- n is the nps record's denominator; promoters and detractors come from the count records of the same
-- window, segment and day.
UPDATE kpi_records
SET
    ci_low = nps_low(buckets.promoters, buckets.detractors, denominator),
    ci_high = nps_high(buckets.promoters, buckets.detractors, denominator)
FROM (
    SELECT
        "window",
        dimension,
        segment,
        day,
        max(count_value) FILTER (WHERE kpi = 'nps_promoters') AS promoters,
        max(count_value) FILTER (WHERE kpi = 'nps_detractors') AS detractors
    FROM kpi_records
    WHERE kpi IN ('nps_promoters', 'nps_detractors')
    GROUP BY "window", dimension, segment, day
) AS buckets
WHERE kpi_records.kpi = 'nps'
    AND kpi_records.denominator > 0
    AND kpi_records."window" = buckets."window"
    AND kpi_records.dimension = buckets.dimension
    AND kpi_records.segment = buckets.segment
    AND kpi_records.day = buckets.day;
