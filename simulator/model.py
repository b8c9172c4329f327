"""The simulated population and its behaviour: pure, seeded, no I/O.

Who the users are (platform, plan, time zone, signup, how engaged and how satisfied), when they are active
(daily and weekly rhythm, quiet spells, churn), what they do (sessions of typed click events with
properties), what they answer to NPS and CSAT questions, and how the messages reach Kafka (some late, some
twice, a few broken). Everything random comes from `random.Random` instances seeded from the `--seed` and a
purpose, so the same arguments always give the same traffic.

Two drivers share the population and the behaviour: `batch_traffic` (history, day by day, in send order)
and `LiveModel` (events stamped with the current time, at a given rate). `simulator.render` turns a `Draft`
into message bytes; nothing here formats JSON.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import accumulate
from typing import Literal, TypeVar

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

_T = TypeVar("_T")
Topic = Literal["clicks", "surveys"]
Role = Literal["event", "late", "duplicate", "invalid"]

# ---------------------------------------------------------------------------------------------------------
# Population shares. The numbers are plausible for a consumer SaaS app with a mobile and a web client; they
# only need to be realistic enough that segments differ and dashboards look like something.

PLATFORMS = ("ios", "android", "web")
PLANS = ("free", "pro", "team")
PLAN_SHARES = (0.68, 0.22, 0.10)
#: Platform shares per plan: team accounts live mostly on the web (desktop at work), free users on Android.
PLATFORM_SHARES_BY_PLAN = {
    "free": (0.36, 0.40, 0.24),
    "pro": (0.45, 0.25, 0.30),
    "team": (0.25, 0.15, 0.60),
}
#: Overall user shares these imply (free/pro/team mixed): ios 0.37, android 0.34, web 0.29.
EXPECTED_PLATFORM_SHARES = {
    p: sum(PLAN_SHARES[j] * PLATFORM_SHARES_BY_PLAN[plan][i] for j, plan in enumerate(PLANS))
    for i, p in enumerate(PLATFORMS)
}
EXPECTED_PLAN_SHARES = dict(zip(PLANS, PLAN_SHARES, strict=True))

#: Share of users who also use a second platform, and the share of their sessions there.
SECOND_PLATFORM_SHARE = 0.25
SECOND_PLATFORM_SESSIONS = 0.2
#: Per event: server-side events without client context lack the platform; a plan lookup sometimes fails.
NO_PLATFORM_SHARE = 0.02
NO_PLAN_SHARE = 0.03
#: Users on an old client that never sends the plan at all.
PLANLESS_USER_SHARE = 0.02
#: Legacy accounts migrated without a signup date: their events carry no signup_ts.
NO_SIGNUP_TS_SHARE = 0.02
#: Users already signed up when the simulated period starts (the rest sign up during it).
PRE_PERIOD_SHARE = 0.55

#: (UTC offset in minutes, weight): Americas, Europe, India, East Asia.
TIME_ZONES = (
    (-480, 10),
    (-420, 4),
    (-360, 6),
    (-300, 16),
    (-180, 8),
    (0, 9),
    (60, 20),
    (120, 6),
    (180, 3),
    (330, 8),
    (480, 6),
    (540, 4),
)

# fmt: off
#: Relative session starts per local hour: quiet nights, a working-day plateau, an evening peak.
WEEKDAY_HOURS = (0.4, 0.25, 0.15, 0.1, 0.1, 0.25, 0.7, 1.5, 2.4, 3.0, 3.2, 3.1,
                 2.8, 2.9, 3.0, 2.9, 2.7, 2.6, 2.8, 3.2, 3.4, 2.9, 1.9, 0.9)
#: Weekends start later and stay flatter.
WEEKEND_HOURS = (0.8, 0.5, 0.3, 0.2, 0.15, 0.15, 0.3, 0.6, 1.2, 2.0, 2.6, 2.9,
                 3.0, 2.9, 2.8, 2.7, 2.7, 2.8, 3.0, 3.2, 3.1, 2.7, 2.0, 1.3)
# fmt: on
#: Activity on Saturday and Sunday relative to a weekday: a work tool for teams, a pastime for free users.
WEEKEND_FACTOR = {"free": 0.8, "pro": 0.6, "team": 0.35}

# Activity dynamics (per day).
ONBOARDING_DAYS = 14  # the onboarding stage: the first 14 days after signup (docs/definitions.md)
ONBOARDING_CHURN = 0.035  # many new users leave in their first two weeks (about 40 %)
ESTABLISHED_CHURN = 0.0025
QUIET_START = 0.008  # chance to go quiet for a while (holiday, busy spell) and come back later
QUIET_DAYS = (4, 28)
ONBOARDING_BOOST = 1.3  # curiosity: new users come back more often while they still stay

# Sessions and events.
EXTRA_SESSIONS_MEAN = (0.3, 1.2)  # extra sessions per active day: casual .. power users
EXTRA_EVENTS_MEAN = 2.5  # events per session beyond the first
EVENT_GAP_MEAN_MS = 35_000
CLICK_TYPES = ("page_view", "click", "feature_used", "search", "share", "invite_sent", "push_received")
CLICK_WEIGHTS = (45, 28, 15, 6, 2, 1, 3)
NO_PROPERTIES_SHARE = 0.08
UPGRADE_CHANCE = 0.004  # a free user upgrades to pro on an active day
ADDON_CHANCE = 0.002  # a pro or team user buys something (seats, add-ons) on an active day

# Surveys. NPS is asked rarely (cooldown), CSAT after a session where the user got something done.
NPS_COOLDOWN_DAYS = 30
NPS_FIRST_AFTER_DAYS = 7  # not in the very first week
NPS_ASK_CHANCE = 0.12  # per session, when eligible
CSAT_COOLDOWN_DAYS = 7
CSAT_ASK_CHANCE = 0.2  # per session with a feature_used or purchase, when eligible
#: (answered, dismissed); the rest ignore the question (shown only).
NPS_OUTCOMES = (0.42, 0.36)
CSAT_OUTCOMES = (0.55, 0.25)
#: Answers and dismissals usually follow a logged `shown`; sometimes the client lost it.
SHOWN_LOGGED = 0.97
COMMENT_SHARE = 0.25

# Satisfaction: a latent mean score per survey kind, additive in plan, platform and stage, plus a personal
# bias. The effects are chosen so segments disagree: team accounts rate their experience highly (CSAT) but
# would not recommend the product (NPS: price, admin pain); Android users love the product (NPS) but not the
# app (CSAT: crashes); onboarding users are enthusiastic (NPS) and confused (CSAT).
NPS_BASE = 8.1
NPS_PLAN = {"free": -0.2, "pro": 0.5, "team": -1.7}
NPS_PLATFORM = {"ios": 0.2, "android": 0.9, "web": -0.5}
NPS_ONBOARDING = 0.4
NPS_SPREAD = 1.8
NPS_BIAS_SD = 0.8
CSAT_BASE = 4.1
CSAT_PLAN = {"free": -0.1, "pro": 0.15, "team": 0.55}
CSAT_PLATFORM = {"ios": 0.15, "android": -0.6, "web": 0.15}
CSAT_ONBOARDING = -0.3
CSAT_SPREAD = 0.85
CSAT_BIAS_SD = 0.3

# Engagement x satisfaction (issue #17). Engaged users answer surveys more often and more favourably, and
# the opinion behind a user's latest NPS prompt moves their churn: detractors leave more, promoters less.
# Both effects are always on (modest); the scenarios below make them loud.
#: The chance to answer a survey prompt (rather than dismiss or ignore it) scales by ENGAGED_ANSWER_BASE +
#: ENGAGED_ANSWER_SLOPE x the user's engagement (their chance to be active on a weekday, 0.04 .. 0.95):
#: about 0.65 for casual users, 0.95 for regulars, 1.3 for power users; about 1 on average over the
#: prompts, so the number of answers stays what it was without the effect.
ENGAGED_ANSWER_BASE = 0.55
ENGAGED_ANSWER_SLOPE = 0.9
#: Latent score points per unit of engagement above ENGAGED_PIVOT (about the mean engagement of the users
#: who get asked, so the population's scores stay where they were): power users rate about +0.4 NPS
#: points higher, casual users about 0.7 lower.
ENGAGED_PIVOT = 0.55
ENGAGED_NPS_BONUS = 1.5
ENGAGED_CSAT_BONUS = 0.4
#: Daily churn hazard factors by the user's latest NPS answer (detractor 0..6, promoter 9..10).
DETRACTOR_CHURN_FACTOR = 2.0
PROMOTER_CHURN_FACTOR = 0.7

# Scenarios.
NPS_DROP_DAYS = 7  # nps-drop: the last 7 days of a batch
NPS_DROP = 4.0  # points off the latent NPS mean: from about +10 to below -60
#: nps-noise: the segment gives only this many NPS answers in the scenario's period (batch: the last 7 days,
#: so exactly the 7d window), each dropped by NPS_DROP: a swing as large as nps-drop's on a sample too small
#: to tell from chance (below the alerts' minimum sample).
NPS_NOISE_ANSWERS = 5
CHURN_WAVE_DAYS = 10  # churn-wave: the last 10 days of a batch
CHURN_WAVE_HAZARD = 0.25  # per day: half the segment is gone within 3 days, 95 % after 10
LIVE_CHURN_WAVE_SECONDS = 300  # live: segment users fall silent over 5 minutes
LIVE_CHURN_WAVE_SHARE = 0.85
#: retention-drop: the segment's users who sign up in the last 14 days of a batch (live: after the delay)
#: hardly come back: a daily churn hazard of 0.95 after their signup day, so D1 retention of those cohorts
#: falls to a few percent and D7 to about nothing (from about 20 % each).
RETENTION_DROP_DAYS = 14
RETENTION_DROP_HAZARD = 0.95
#: dau-drop: the segment's users are active on fewer days, their daily chance to come back times 0.6 (DAU of
#: the segment about 40 % lower; batch: the last 7 days, live: after the delay).
DAU_DROP_DAYS = 7
DAU_DROP_FACTOR = 0.6
#: detractor-churn: in the last 14 days of a batch (live: after the delay), a user of the segment whose
#: latest NPS answer, given in that period, is a detractor's leaves with a daily hazard of 0.5.
DETRACTOR_CHURN_DAYS = 14
DETRACTOR_CHURN_HAZARD = 0.5

# Delivery.
LATE_MIN_MS = 5 * MINUTE_MS  # a late event is at least this late, so it really arrives out of order
DUPLICATE_DELAY_MS = (1_000, 5 * MINUTE_MS)  # a retry re-sends the same bytes a little later
FUTURE_LEAD_DAYS = 2  # future-timestamp messages start 2 days after the day of `now` ...
FUTURE_SPREAD_MS = 28 * DAY_MS  # ... and spread over 4 weeks (a device clock set wrong)
TS_CAP_MS = MINUTE_MS  # no event of the last day is later than now - 1 minute

#: How a timestamp is written: RFC 3339 in UTC ("Z"), RFC 3339 in the user's local offset, epoch ms.
TS_UTC, TS_LOCAL, TS_EPOCH_MS = 0, 1, 2


class InvalidKind(enum.StrEnum):
    """The kinds of broken message the simulator sprinkles in (docs/events.md, "Rejections")."""

    NOT_JSON = "not_json"  # truncated, trailing comma, single quotes, plain text
    NOT_OBJECT = "not_object"  # a JSON array, number, string or null
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_STRING = "empty_string"
    BAD_TIMESTAMP = "bad_timestamp"  # no offset, or not a date at all
    FUTURE_TIMESTAMP = "future_timestamp"
    NOT_UTF8 = "not_utf8"  # Latin-1 bytes inside a string
    UNKNOWN_ENUM = "unknown_enum"  # surveys: unknown survey or action value
    SCORE_OUT_OF_RANGE = "score_out_of_range"
    SCORE_MISSING = "score_missing"  # answered without a score
    SCORE_FORBIDDEN = "score_forbidden"  # shown with a score
    COMMENT_TOO_LONG = "comment_too_long"


SURVEY_ONLY_KINDS = frozenset(
    {
        InvalidKind.UNKNOWN_ENUM,
        InvalidKind.SCORE_OUT_OF_RANGE,
        InvalidKind.SCORE_MISSING,
        InvalidKind.SCORE_FORBIDDEN,
        InvalidKind.COMMENT_TOO_LONG,
    }
)
CLICK_KINDS = tuple(k for k in InvalidKind if k not in SURVEY_ONLY_KINDS)
SURVEY_KINDS = tuple(InvalidKind)


# ---------------------------------------------------------------------------------------------------------
# Scenarios

ScenarioKind = Literal["nps-drop", "nps-noise", "churn-wave", "retention-drop", "detractor-churn", "dau-drop"]
#: Every scenario the simulator runs, with the one line `kpimon simulate --help` shows for it (the help is
#: generated from this registry, so it lists every kind `Scenario.parse` accepts).
SCENARIOS: dict[ScenarioKind, str] = {
    "nps-drop": "the segment's NPS answers drop by about 100 points (batch: the last 7 days)",
    "nps-noise": "the same drop on only 5 answers, noise an alert must ignore (batch: the last 7 days)",
    "churn-wave": "the segment's users go quiet (batch: the last 10 days)",
    "retention-drop": "the segment's new users hardly come back (batch: cohorts of the last 14 days)",
    "detractor-churn": "the segment's detractors leave (batch: those who answered 0..6 in the last 14 days)",
    "dau-drop": "the segment's users come on about 40 % fewer days (batch: the last 7 days)",
}
SCENARIO_KINDS: tuple[ScenarioKind, ...] = tuple(SCENARIOS)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A deliberate change in behaviour of one platform or plan segment, for dashboards and alerts to catch.

    `nps-drop`: the segment's NPS answers drop sharply (batch: the last 7 days; live: after the delay).
    `nps-noise`: the same drop, seen through a handful of answers: only the first `NPS_NOISE_ANSWERS` NPS
    answers of the segment in that period are given, its other NPS prompts are dismissed. The raw NPS swings
    as much as with nps-drop, on a sample no alert should trust (what chance does to a small segment).
    `churn-wave`: the segment's users go quiet (batch: during the last 10 days; live: after the delay).
    `retention-drop`: the segment's new users hardly come back (batch: cohorts of the last 14 days; live:
    users who sign up after the delay).
    `detractor-churn`: the segment's detractors leave (batch: those who answered 0..6 in the last 14 days;
    live: after the delay). Its segment may be `all`.
    `dau-drop`: the segment's users come on fewer days (batch: the last 7 days; live: after the delay).

    Batch: `KIND:SEGMENT@N` starts the scenario N days before the end instead (day end - N + 1) and keeps
    its usual length (nps-drop, nps-noise and dau-drop: 7 days; the others: to the end), so several
    scenarios can follow one another in one history (the alert back-test measures detection that way).
    """

    kind: ScenarioKind
    dimension: Literal["platform", "plan", "all"]
    value: str
    #: Batch: days before the end the scenario starts (None: its default period at the end).
    start_days_before_end: int | None = None

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """`KIND:SEGMENT[@N]` with SEGMENT a platform or plan value (`android`) or `DIMENSION=VALUE`."""
        text, at, start = text.partition("@")
        days = None
        if at:
            if not start.isdigit() or int(start) < 1:
                raise ValueError(f"@N must be a number of days >= 1, got {start!r}")
            days = int(start)
        kind, sep, segment = text.partition(":")
        if not sep or kind not in SCENARIO_KINDS:
            kinds = ", ".join(f"{k}:SEGMENT" for k in SCENARIO_KINDS)
            raise ValueError(f"scenario must be one of {kinds}, got {text!r}")
        if segment == "all":
            return cls(kind, "all", "all", days)
        dimension, eq, value = segment.partition("=")
        if not eq:
            value = dimension
            dimension = "platform" if value in PLATFORMS else "plan"
        if dimension == "platform" and value in PLATFORMS:
            return cls(kind, "platform", value, days)
        if dimension == "plan" and value in PLANS:
            return cls(kind, "plan", value, days)
        known = ", ".join([*PLATFORMS, *PLANS])
        raise ValueError(f"unknown scenario segment {segment!r} (one of {known}, or platform=/plan=VALUE)")

    def __str__(self) -> str:
        at = "" if self.start_days_before_end is None else f"@{self.start_days_before_end}"
        return f"{self.kind}:{self.dimension}={self.value}{at}"

    def period(self, end_day: int, default_days: int, length: int | None) -> tuple[int, int]:
        """Batch: the scenario's first and last day, given the default period (the last `default_days`
        days) and its length when moved with @N (None: to the end)."""
        if self.start_days_before_end is None:
            return end_day - default_days + 1, end_day
        first = end_day - self.start_days_before_end + 1
        return first, end_day if length is None else first + length - 1

    def active(self, day: int, end_day: int, default_days: int, length: int | None) -> bool:
        """Batch: whether the scenario is in force on `day`."""
        first, last = self.period(end_day, default_days, length)
        return first <= day <= last

    def covers(self, platform: str, plan: str) -> bool:
        """Whether a session on `platform` by a user on `plan` is in the scenario's segment."""
        if self.dimension == "all":
            return True
        return (platform if self.dimension == "platform" else plan) == self.value


@dataclass(slots=True)
class NpsNoise:
    """An nps-noise scenario in force and how many NPS answers its segment may still give."""

    scenario: Scenario
    answers_left: int = NPS_NOISE_ANSWERS


# ---------------------------------------------------------------------------------------------------------
# Data


@dataclass(slots=True)
class User:
    """One simulated user: fixed traits and the little state the behaviour model keeps."""

    user_id: str
    platform: str  # the main platform
    second_platform: str | None
    plan: str  # current plan (free users may upgrade)
    sends_plan: bool
    tz_min: int  # UTC offset of the user's local time, minutes
    signup_ms: int  # whole seconds
    signup_known: bool  # False: the user's events carry no signup_ts
    engagement: float  # chance to be active on a weekday, when neither quiet nor gone
    extra_sessions: float  # mean sessions per active day beyond the first
    ts_style: int  # how this user's client writes ts (TS_UTC, TS_LOCAL, TS_EPOCH_MS)
    signup_style: int  # how the backend writes signup_ts (TS_UTC or TS_EPOCH_MS)
    nps_bias: float
    csat_bias: float
    app_version: str
    quiet_until: int = 0  # day number: no activity before it
    churned: bool = False
    last_nps_day: int = -(10**6)
    last_csat_day: int = -(10**6)
    #: The user's opinion at their latest NPS prompt (the score they would give, before any scenario) and
    #: its day (None: never asked): moves their churn hazard.
    last_nps_score: int | None = None
    last_nps_answer_day: int = -(10**6)

    def churn_factor(self) -> float:
        """How the user's latest NPS answer scales their daily churn hazard: detractors leave more."""
        if self.last_nps_score is None:
            return 1.0
        if self.last_nps_score <= 6:
            return DETRACTOR_CHURN_FACTOR
        return PROMOTER_CHURN_FACTOR if self.last_nps_score >= 9 else 1.0

    def answer_factor(self) -> float:
        """How much more likely than average the user is to answer a prompt (engaged users more)."""
        return ENGAGED_ANSWER_BASE + ENGAGED_ANSWER_SLOPE * self.engagement

    def recent_detractor(self, since_day: int) -> bool:
        """Whether the user's latest NPS answer is a detractor's, given on `since_day` or later."""
        score = self.last_nps_score
        return score is not None and score <= 6 and self.last_nps_answer_day >= since_day

    @property
    def signup_day(self) -> int:
        return self.signup_ms // DAY_MS

    def in_segment(self, scenario: Scenario) -> bool:
        """Whether the user belongs to the scenario's segment (their main platform, their current plan)."""
        return scenario.covers(self.platform, self.plan)


@dataclass(slots=True)
class Draft:
    """One event as the model made it: everything `render` needs, nothing formatted yet.

    `invalid` marks a deliberately broken copy; `variant` picks among the ways to break it.
    """

    topic: Topic
    event_id: str
    user_id: str
    ts_ms: int
    ts_style: int
    tz_min: int
    signup_ms: int | None
    signup_style: int
    platform: str | None
    plan: str | None
    type: str = ""
    session_id: str | None = None
    properties: dict[str, object] | None = None
    survey: str = ""
    action: str = ""
    score: int | None = None
    comment: str | None = None
    invalid: InvalidKind | None = None
    variant: int = 0


@dataclass(slots=True)
class Outgoing:
    """One message to send, in send order: the draft and why it is there."""

    draft: Draft
    role: Role  # event (on time), late (delivered after later events), duplicate, invalid


@dataclass(slots=True)
class Counts:
    """What a simulation produced, for the one-line summary on stderr."""

    clicks: int = 0
    surveys: int = 0
    invalid: int = 0
    duplicates: int = 0
    late: int = 0

    def add(self, out: Outgoing) -> None:
        if out.draft.topic == "clicks":
            self.clicks += 1
        else:
            self.surveys += 1
        if out.role == "invalid":
            self.invalid += 1
        elif out.role == "duplicate":
            self.duplicates += 1
        elif out.role == "late":
            self.late += 1

    def line(self) -> str:
        return (
            f"clicks={self.clicks} surveys={self.surveys} invalid={self.invalid} "
            f"duplicates={self.duplicates} late={self.late}"
        )


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """Everything that determines a batch simulation (the CLI options)."""

    users: int
    days: int
    end_day: int  # UTC day number of the last simulated day
    now_ms: int  # no event after now - 1 minute
    seed: int = 0
    late_fraction: float = 0.03
    duplicate_fraction: float = 0.01
    invalid_fraction: float = 0.005
    lateness_days: float = 3.0
    scenarios: tuple[Scenario, ...] = ()
    #: Users whose events carry no signup_ts; their stage then depends on arrival order
    #: (docs/architecture.md, "What is not guaranteed").
    no_signup_fraction: float = NO_SIGNUP_TS_SHARE
    #: Mean clicks per active user-day (one session a day of about this many clicks), or None for the
    #: model's own sessions (several a day of a few clicks each, about 6 clicks per active user-day).
    #: A low value gives traffic where most clicks turn a new (user, day) active.
    clicks_per_day: float | None = None
    #: Each plan split into this many price tiers, reported as plan `<plan>-1` .. `<plan>-N` (a user's tier
    #: follows from their id; behaviour follows the plan): more plan segments, each smaller. 1: plain plans.
    plan_tiers: int = 1
    #: Only the messages that can change a KPI (`thin_clicks`): the same KPIs from about a quarter of the
    #: messages, for a quick backfill (the demo's history).
    thin: bool = False

    @property
    def first_day(self) -> int:
        return self.end_day - self.days + 1

    @property
    def cap_ms(self) -> int:
        """The latest event time: the end of the last day, or now minus a minute when that is earlier."""
        return min((self.end_day + 1) * DAY_MS - 1, self.now_ms - TS_CAP_MS)

    def check(self) -> None:
        """Refuse configurations that cannot produce the promised traffic."""
        if self.users < 1 or self.days < 1:
            raise ValueError("users and days must be at least 1")
        if self.end_day > self.now_ms // DAY_MS:
            raise ValueError("the end day lies after the day of now: no event may be in the future")
        if self.cap_ms < self.first_day * DAY_MS:
            raise ValueError("now is too early: the simulated period would be empty")
        for name in ("late_fraction", "duplicate_fraction", "invalid_fraction", "no_signup_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1")
        if self.lateness_days * DAY_MS < LATE_MIN_MS:
            raise ValueError("lateness_days must allow at least 5 minutes")
        if self.clicks_per_day is not None and self.clicks_per_day < 1:
            raise ValueError("clicks_per_day must be at least 1")
        if self.plan_tiers < 1:
            raise ValueError("plan_tiers must be at least 1")


# ---------------------------------------------------------------------------------------------------------
# Random helpers


def seeded(seed: int, *purpose: object) -> random.Random:
    """An independent generator per purpose (and day), so one knob does not shift everything else."""
    return random.Random("kpimon-simulate:" + ":".join(str(p) for p in (seed, *purpose)))


def _uuid4(rng: random.Random) -> str:
    """A UUID version 4 string from the seeded generator (uuid.uuid4 would use the OS's randomness)."""
    h = f"{rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"  # version 4, variant 10
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_SET = (0x4 << 76) | (0x2 << 62)


def _weighted(rng: random.Random, values: Sequence[_T], cum_weights: Sequence[float]) -> _T:
    """One of `values` by cumulative weight (what rng.choices does, several times faster)."""
    return values[bisect.bisect(cum_weights, rng.random() * cum_weights[-1])]


def _one_of(rng: random.Random, values: Sequence[_T]) -> _T:
    """A uniform pick (rng.choice, without its overhead)."""
    return values[int(rng.random() * len(values))]


def _geometric(rng: random.Random, mean: float) -> int:
    """A count >= 0 with the given mean (geometric): many small, a few large."""
    if mean <= 0:
        return 0
    return int(math.log(1.0 - rng.random()) / math.log(mean / (1.0 + mean)))


_HOURS = tuple(range(24))
_WEEKDAY_CUM = tuple(accumulate(WEEKDAY_HOURS))
_WEEKEND_CUM = tuple(accumulate(WEEKEND_HOURS))
_TZ_VALUES = tuple(tz for tz, _ in TIME_ZONES)
_TZ_CUM = tuple(accumulate(w for _, w in TIME_ZONES))
_CLICK_CUM = tuple(accumulate(CLICK_WEIGHTS))


def random_time_zone(rng: random.Random) -> int:
    """A UTC offset in minutes, weighted by where the users are."""
    return _weighted(rng, _TZ_VALUES, _TZ_CUM)


def is_weekend(day: int) -> bool:
    """Saturday or Sunday (1970-01-01, day 0, was a Thursday)."""
    return (day + 3) % 7 >= 5


def _time_of_day_ms(rng: random.Random, day: int, tz_min: int) -> int:
    """A session start within UTC day `day`, drawn from the local hour-of-day profile of the user's zone.

    The local hour maps back into the same UTC day (modulo 24 h), which keeps each day's events in that
    day: the rhythm stays right, and generation can go day by day.
    """
    hour = _weighted(rng, _HOURS, _WEEKEND_CUM if is_weekend(day) else _WEEKDAY_CUM)
    local_ms = hour * HOUR_MS + rng.randrange(HOUR_MS)
    return (local_ms - tz_min * MINUTE_MS) % DAY_MS


# ---------------------------------------------------------------------------------------------------------
# Population


def make_user(
    rng: random.Random,
    user_id: str,
    signup_ms: int,
    first_day: int,
    tz_min: int,
    no_signup_share: float = NO_SIGNUP_TS_SHARE,
) -> User:
    """A user with traits drawn from the population shares; `first_day` seeds the survey cooldowns."""
    plan = rng.choices(PLANS, weights=PLAN_SHARES)[0]
    platform = rng.choices(PLATFORMS, weights=PLATFORM_SHARES_BY_PLAN[plan])[0]
    second = None
    if rng.random() < SECOND_PLATFORM_SHARE:
        second = "web" if platform != "web" else rng.choice(("ios", "android"))
    kind = rng.random()  # a mixture: power users, regulars, casual visitors
    if kind < 0.2:
        engagement, extra = rng.uniform(0.65, 0.95), EXTRA_SESSIONS_MEAN[1]
    elif kind < 0.65:
        engagement, extra = rng.uniform(0.25, 0.55), (EXTRA_SESSIONS_MEAN[0] + EXTRA_SESSIONS_MEAN[1]) / 2
    else:
        engagement, extra = rng.uniform(0.04, 0.15), EXTRA_SESSIONS_MEAN[0]
    # Each client writes time its own way; the mix exercises both accepted timestamp forms.
    style_weights = {"ios": (0.1, 0.7, 0.2), "android": (0.3, 0.0, 0.7), "web": (0.6, 0.0, 0.4)}[platform]
    ts_style = rng.choices((TS_UTC, TS_LOCAL, TS_EPOCH_MS), weights=style_weights)[0]
    return User(
        user_id=user_id,
        platform=platform,
        second_platform=second,
        plan=plan,
        sends_plan=rng.random() >= PLANLESS_USER_SHARE,
        tz_min=tz_min,
        signup_ms=signup_ms,
        signup_known=rng.random() >= no_signup_share,
        engagement=engagement,
        extra_sessions=extra,
        ts_style=ts_style,
        signup_style=TS_UTC if rng.random() < 0.7 else TS_EPOCH_MS,
        nps_bias=rng.gauss(0.0, NPS_BIAS_SD),
        csat_bias=rng.gauss(0.0, CSAT_BIAS_SD),
        app_version=f"{rng.choice((4, 5, 5, 5))}.{rng.randrange(20)}.{rng.randrange(4)}",
        # Veterans were last asked for NPS some time before the period; newcomers not in their first week.
        last_nps_day=first_day - rng.randrange(NPS_COOLDOWN_DAYS + 20)
        if signup_ms < first_day * DAY_MS
        else signup_ms // DAY_MS + NPS_FIRST_AFTER_DAYS - NPS_COOLDOWN_DAYS,
    )


def make_population(
    rng: random.Random, n: int, first_day: int, cap_ms: int, no_signup_share: float = NO_SIGNUP_TS_SHARE
) -> list[User]:
    """`n` users: some signed up before `first_day` (up to two years), the others spread over the period.

    Signups during the period grow slowly (a product gaining traction) and follow the hour-of-day rhythm;
    none is later than `cap_ms`.
    """
    last_day = cap_ms // DAY_MS
    period = last_day - first_day + 1
    days = list(range(first_day, last_day + 1))
    growth = [1.0 + 0.5 * i / max(1, period - 1) for i in range(period)]
    users: list[User] = []
    seen: set[str] = set()
    for _ in range(n):
        user_id = f"u_{rng.getrandbits(48):012x}"
        while user_id in seen:  # practically never, but ids must be unique
            user_id = f"u_{rng.getrandbits(48):012x}"
        seen.add(user_id)
        tz_min = random_time_zone(rng)
        if rng.random() < PRE_PERIOD_SHARE:
            # Skewed towards recent signups: survivors of old cohorts are fewer.
            day = first_day - 1 - int(730 * rng.random() ** 2)
        else:
            day = rng.choices(days, weights=growth)[0]
        signup_ms = day * DAY_MS + _time_of_day_ms(rng, day, tz_min)
        if signup_ms > cap_ms:  # the last day is cut at now: sign up earlier that day
            signup_ms = day * DAY_MS + rng.randrange(max(1, cap_ms - day * DAY_MS))
        signup_ms -= signup_ms % 1000
        user = make_user(rng, user_id, signup_ms, first_day, tz_min, no_signup_share)
        if day < first_day and rng.random() < 0.08:
            user.quiet_until = first_day + rng.randrange(1, 21)  # in a quiet spell when the period starts
        users.append(user)
    return users


# ---------------------------------------------------------------------------------------------------------
# Behaviour shared by batch and live


_PATHS = ("/", "/dashboard", "/projects", "/projects/new", "/settings", "/billing", "/reports", "/help")
_SCREENS = ("home", "project", "editor", "settings", "inbox", "search", "profile")
_ELEMENTS = ("save", "share_button", "nav_menu", "new_project", "filter", "export", "upgrade_banner")
_FEATURES = ("export", "templates", "collaboration", "automation", "reports", "offline_mode", "ai_assist")
_REFERRERS = ("direct", "search", "email", "social", "partner")
_CAMPAIGNS = ("weekly_digest", "reminder", "mention", "promo")
_COMMENTS = {
    "low": ("Too slow", "App keeps crashing", "Too expensive for what it does", "Hard to find anything"),
    "mid": ("OK", "Does the job", "Fine, a few bugs", "Export could be better", "ça va"),
    "high": ("Love it!", "Great support", "Works perfectly", "Indispensable pour mon équipe", "Super 👍"),
}


class Behaviour:
    """What a user does in a session and how they answer surveys; shared by batch and live traffic.

    Stateless: everything it changes lives on the `User` (plan upgrades, survey cooldowns).
    """

    def session(
        self,
        rng: random.Random,
        user: User,
        start_ms: int,
        end_ms: int,
        first_type: str | None,
        nps_drops: Sequence[Scenario] = (),
        survey_day: int | None = None,
        nps_noise: Sequence[NpsNoise] = (),
        extra_events: float = EXTRA_EVENTS_MEAN,
    ) -> list[Draft]:
        """One session starting at `start_ms` (events after `end_ms` are cut), with a survey maybe after.

        `first_type` forces the first event (signup); `nps_drops` are the nps-drop scenarios in force: an
        NPS answer given in their segment (this session's platform, the user's plan) drops. `nps_noise` are
        the nps-noise scenarios in force: in their segment an NPS answer drops the same and uses up one of
        the answers left (none left: the prompt is dismissed instead).
        `survey_day` is the day survey cooldowns count in (live mode compresses time); default: the day.
        `extra_events` is the mean number of events beyond the first.
        """
        day = start_ms // DAY_MS
        platform = user.platform
        if user.second_platform is not None and rng.random() < SECOND_PLATFORM_SESSIONS:
            platform = user.second_platform
        session_id = f"{rng.getrandbits(64):016x}"
        count = 1 + _geometric(rng, extra_events)
        types: list[str] = []
        if first_type is not None:
            types.append(first_type)
        elif platform != "web":
            if rng.random() < 0.1:
                types.append("push_received")  # a tapped notification opens the app
            types.append("app_open")
        while len(types) < count:
            types.append(_weighted(rng, CLICK_TYPES, _CLICK_CUM))
        # Free users upgrade (a purchase of pro), paying users buy seats or add-ons.
        if rng.random() < (UPGRADE_CHANCE if user.plan == "free" else ADDON_CHANCE):
            types.insert(rng.randrange(1, len(types) + 1), "purchase")
        out: list[Draft] = []
        t = start_ms
        productive = False
        for i, kind in enumerate(types):
            if i:
                t += 200 + int(rng.expovariate(1.0 / EVENT_GAP_MEAN_MS))
            if t > end_ms:
                break
            properties = self._properties(rng, user, kind, platform)
            if kind == "purchase" and user.plan == "free":
                user.plan = "pro"  # the upgrade takes effect on the purchase itself
            productive = productive or kind in ("feature_used", "purchase")
            server_side = kind in ("purchase", "push_received")
            out.append(
                Draft(
                    topic="clicks",
                    event_id=_uuid4(rng),
                    user_id=user.user_id,
                    ts_ms=t,
                    ts_style=TS_UTC if server_side else user.ts_style,
                    tz_min=user.tz_min,
                    signup_ms=user.signup_ms if user.signup_known else None,
                    signup_style=user.signup_style,
                    platform=None if rng.random() < NO_PLATFORM_SHARE else platform,
                    plan=user.plan if user.sends_plan and rng.random() >= NO_PLAN_SHARE else None,
                    type=kind,
                    session_id=None if kind == "push_received" else session_id,
                    properties=properties,
                )
            )
        if out:
            drop = any(s.covers(platform, user.plan) for s in nps_drops)
            noise = next((n for n in nps_noise if n.scenario.covers(platform, user.plan)), None)
            cooldown_day = day if survey_day is None else survey_day
            out.extend(
                self._survey(
                    rng, user, day, cooldown_day, out[-1].ts_ms, end_ms, platform, productive, drop, noise
                )
            )
        return out

    @staticmethod
    def _properties(rng: random.Random, user: User, kind: str, platform: str) -> dict[str, object] | None:
        if rng.random() < NO_PROPERTIES_SHARE:
            return None
        if kind == "page_view":
            if platform == "web":
                return {"path": _one_of(rng, _PATHS), "referrer": _one_of(rng, _REFERRERS)}
            return {"screen": _one_of(rng, _SCREENS)}
        if kind == "click":
            return {"element": _one_of(rng, _ELEMENTS)}
        if kind == "feature_used":
            return {"feature": _one_of(rng, _FEATURES), "duration_ms": int(rng.expovariate(1 / 20_000))}
        if kind == "search":
            return {"query_length": rng.randint(2, 40), "results": rng.randint(0, 50)}
        if kind == "share":
            return {"channel": _one_of(rng, ("link", "email", "slack"))}
        if kind == "invite_sent":
            return {"invitees": rng.randint(1, 5)}
        if kind == "push_received":
            return {"campaign": _one_of(rng, _CAMPAIGNS)}
        if kind == "purchase":
            if user.plan == "free":
                return {"sku": "pro_monthly", "amount": 12.0, "currency": "USD"}
            seats = rng.randint(1, 10)
            return {
                "sku": "seat" if user.plan == "team" else "addon_storage",
                "quantity": seats,
                "amount": round(8.0 * seats, 2),
                "currency": "USD",
            }
        if kind == "app_open":
            return {"app_version": user.app_version, "cold_start": rng.random() < 0.4}
        if kind == "signup":
            return {"method": _one_of(rng, ("email", "google", "apple" if platform == "ios" else "github"))}
        return None

    def _survey(
        self,
        rng: random.Random,
        user: User,
        day: int,
        cooldown_day: int,
        after_ms: int,
        end_ms: int,
        platform: str,
        productive: bool,
        nps_drop: bool,
        nps_noise: NpsNoise | None = None,
    ) -> list[Draft]:
        """Maybe ask a question at the end of a session: shown, then answered, dismissed or ignored."""
        since_nps, since_csat = cooldown_day - user.last_nps_day, cooldown_day - user.last_csat_day
        engaged = user.answer_factor()
        if since_nps >= NPS_COOLDOWN_DAYS and rng.random() < NPS_ASK_CHANCE:
            kind, outcomes = "nps", NPS_OUTCOMES
            user.last_nps_day = cooldown_day
        elif productive and since_csat >= CSAT_COOLDOWN_DAYS and rng.random() < CSAT_ASK_CHANCE:
            kind, outcomes = "csat", CSAT_OUTCOMES
            user.last_csat_day = cooldown_day
        else:
            return []
        onboarding = day - user.signup_day < ONBOARDING_DAYS
        shown_ms = after_ms + rng.randint(1_000, 20_000)
        reply_ms = shown_ms + rng.randint(4_000, 120_000)
        r = rng.random()
        # Engaged users answer more (and dismiss correspondingly less): the answered share scales.
        answered = min(outcomes[0] * engaged, 0.95)
        dismissed = outcomes[1] * (1 - answered) / (1 - outcomes[0])
        action = "answered" if r < answered else "dismissed" if r < answered + dismissed else None
        if kind == "nps" and nps_noise is not None and action == "answered":
            # A small segment: its few answers drop like nps-drop's; beyond them the prompt is dismissed.
            nps_drop = True
            if nps_noise.answers_left > 0 and reply_ms <= end_ms:
                nps_noise.answers_left -= 1
            else:
                action = "dismissed"
        # Always draw the same numbers, so a scenario changes scores and nothing else.
        z, comment_roll, comment_pick, shown_roll = (
            rng.gauss(0.0, 1.0),
            rng.random(),
            rng.random(),
            rng.random(),
        )
        if kind == "nps":
            # The user's opinion behind the prompt, whatever they do with it and whatever a scenario does
            # to the answer: it moves their churn (detractors leave more), so a scenario that changes
            # scores changes nothing else.
            opinion_mean = NPS_BASE + NPS_PLAN[user.plan] + NPS_PLATFORM[platform] + user.nps_bias
            opinion_mean += NPS_ONBOARDING if onboarding else 0.0
            opinion_mean += ENGAGED_NPS_BONUS * (user.engagement - ENGAGED_PIVOT)
            user.last_nps_score = min(10, max(0, round(opinion_mean + NPS_SPREAD * z)))
            user.last_nps_answer_day = day
        base = Draft(
            topic="surveys",
            event_id="",
            user_id=user.user_id,
            ts_ms=shown_ms,
            ts_style=user.ts_style,
            tz_min=user.tz_min,
            signup_ms=user.signup_ms if user.signup_known else None,
            signup_style=user.signup_style,
            platform=platform,
            plan=user.plan if user.sends_plan else None,
            survey=kind,
            action="shown",
        )
        out: list[Draft] = []
        if (action is None or shown_roll < SHOWN_LOGGED) and shown_ms <= end_ms:
            out.append(replace(base, event_id=_uuid4(rng)))
        if action is not None and reply_ms <= end_ms:
            reply = replace(base, event_id=_uuid4(rng), ts_ms=reply_ms, action=action)
            if action == "answered":
                if kind == "nps":
                    mean = opinion_mean - (NPS_DROP if nps_drop else 0.0)
                    reply.score = min(10, max(0, round(mean + NPS_SPREAD * z)))
                    band = "low" if reply.score <= 6 else "mid" if reply.score <= 8 else "high"
                else:
                    mean = CSAT_BASE + CSAT_PLAN[user.plan] + CSAT_PLATFORM[platform] + user.csat_bias
                    mean += CSAT_ONBOARDING if onboarding else 0.0
                    mean += ENGAGED_CSAT_BONUS * (user.engagement - ENGAGED_PIVOT)
                    reply.score = min(5, max(1, round(mean + CSAT_SPREAD * z)))
                    band = "low" if reply.score <= 2 else "mid" if reply.score <= 3 else "high"
                if comment_roll < COMMENT_SHARE:
                    choices = _COMMENTS[band]
                    reply.comment = choices[int(comment_pick * len(choices))]
            out.append(reply)
        return out


# ---------------------------------------------------------------------------------------------------------
# Batch traffic


class BatchModel:
    """The population's history, one UTC day at a time (valid events only, in event-time order)."""

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.users = make_population(
            seeded(config.seed, "population"),
            config.users,
            config.first_day,
            config.cap_ms,
            config.no_signup_fraction,
        )
        self.behaviour = Behaviour()
        end = config.end_day
        self._drop = [s for s in config.scenarios if s.kind == "nps-drop"]
        # One answer budget per scenario for the whole period (the 7d window of the last day).
        self._noise = [NpsNoise(s) for s in config.scenarios if s.kind == "nps-noise"]
        self._wave = [s for s in config.scenarios if s.kind == "churn-wave"]
        self._retention = [s for s in config.scenarios if s.kind == "retention-drop"]
        self._detractors = [s for s in config.scenarios if s.kind == "detractor-churn"]
        self._dau = [s for s in config.scenarios if s.kind == "dau-drop"]
        self._retention_from = [s.period(end, RETENTION_DROP_DAYS, None)[0] for s in self._retention]
        self._detractors_from = [s.period(end, DETRACTOR_CHURN_DAYS, None)[0] for s in self._detractors]
        #: The users active on the day generated last, sessions cut at `now` or not (live traffic goes on
        #: with them: `Population`).
        self.active: list[User] = []

    def day(self, day: int) -> list[Draft]:
        """Every valid event of UTC day `day`, sorted by event time."""
        rng = seeded(self.config.seed, "day", day)
        end_ms = min((day + 1) * DAY_MS - 1, self.config.cap_ms)
        weekend = is_weekend(day)
        end = self.config.end_day
        waves = [s for s in self._wave if s.active(day, end, CHURN_WAVE_DAYS, None)]
        dau_drops = [s for s in self._dau if s.active(day, end, DAU_DROP_DAYS, DAU_DROP_DAYS)]
        drafts: list[Draft] = []
        self.active = []
        for user in self.users:
            if user.churned or day < user.signup_day:
                continue
            signup_today = day == user.signup_day
            if not signup_today:
                if day < user.quiet_until:
                    continue
                onboarding = day - user.signup_day < ONBOARDING_DAYS
                hazard = (ONBOARDING_CHURN if onboarding else ESTABLISHED_CHURN) * user.churn_factor()
                if waves and any(user.in_segment(s) for s in waves):
                    hazard = max(hazard, CHURN_WAVE_HAZARD)
                if any(
                    user.signup_day >= first and user.in_segment(s)
                    for s, first in zip(self._retention, self._retention_from, strict=True)
                ):
                    hazard = max(hazard, RETENTION_DROP_HAZARD)
                if any(
                    user.recent_detractor(first) and user.in_segment(s)
                    for s, first in zip(self._detractors, self._detractors_from, strict=True)
                ):
                    hazard = max(hazard, DETRACTOR_CHURN_HAZARD)
                r = rng.random()
                if r < hazard:
                    user.churned = True  # gone for good
                    continue
                if r < hazard + QUIET_START:
                    user.quiet_until = day + rng.randint(*QUIET_DAYS)  # back later, as a resurrection
                    continue
                chance = user.engagement * (WEEKEND_FACTOR[user.plan] if weekend else 1.0)
                if onboarding:
                    chance = min(0.98, chance * ONBOARDING_BOOST)
                if dau_drops and any(user.in_segment(s) for s in dau_drops):
                    chance *= DAU_DROP_FACTOR  # the same draw below: the other users' traffic is unchanged
                if rng.random() >= chance:
                    continue
            self.active.append(user)
            drafts.extend(self._user_day(rng, user, day, end_ms, signup_today))
        drafts.sort(key=lambda d: d.ts_ms)
        return drafts

    def _user_day(
        self, rng: random.Random, user: User, day: int, end_ms: int, signup_today: bool
    ) -> list[Draft]:
        day_ms = day * DAY_MS
        per_day = self.config.clicks_per_day
        sessions = 1 if per_day is not None else 1 + _geometric(rng, user.extra_sessions)
        extra_events = EXTRA_EVENTS_MEAN if per_day is None else per_day - 1
        starts = [day_ms + _time_of_day_ms(rng, day, user.tz_min) for _ in range(sessions)]
        if signup_today:
            # The first session is the signup itself; nothing happens before it.
            starts = [user.signup_ms] + [s for s in starts[1:] if s > user.signup_ms]
        starts.sort()
        end = self.config.end_day
        drops = [s for s in self._drop if s.active(day, end, NPS_DROP_DAYS, NPS_DROP_DAYS)]
        noise = [n for n in self._noise if n.scenario.active(day, end, NPS_DROP_DAYS, NPS_DROP_DAYS)]
        out: list[Draft] = []
        for i, start in enumerate(starts):
            if start > end_ms:
                break
            first = "signup" if signup_today and i == 0 else None
            out.extend(
                self.behaviour.session(
                    rng, user, start, end_ms, first, drops, nps_noise=noise, extra_events=extra_events
                )
            )
        tiers = self.config.plan_tiers
        if tiers > 1:
            tier = int(user.user_id[-6:], 16) % tiers + 1
            for draft in out:
                if draft.plan is not None:
                    draft.plan = f"{draft.plan}-{tier}"
        return out


@dataclass(slots=True)
class _Deck:
    """Invalid kinds dealt like cards: every kind comes up once per round, in a shuffled order."""

    kinds: tuple[InvalidKind, ...]
    hand: list[InvalidKind] = field(default_factory=list)

    def draw(self, rng: random.Random) -> InvalidKind:
        if not self.hand:
            self.hand = list(self.kinds)
            rng.shuffle(self.hand)
        return self.hand.pop()


class Delivery:
    """How events reach Kafka: mostly on time, some late, some twice, a few broken.

    `late_fraction` of the events arrive between 5 minutes and `lateness_days` after their event time
    (log-uniform: mostly hours, sometimes days); `duplicate_fraction` are sent a second time, byte for byte,
    1 s to 5 min later; per event, an extra broken message follows with chance `invalid_fraction`.
    """

    def __init__(
        self,
        late_fraction: float,
        duplicate_fraction: float,
        invalid_fraction: float,
        lateness_days: float,
        future_from_ms: int,
    ) -> None:
        self.late_fraction = late_fraction
        self.duplicate_fraction = duplicate_fraction
        self.invalid_fraction = invalid_fraction
        self._log_late = (math.log(LATE_MIN_MS), math.log(max(LATE_MIN_MS, lateness_days * DAY_MS)))
        self.future_from_ms = future_from_ms
        self._decks: dict[str, _Deck] = {"clicks": _Deck(CLICK_KINDS), "surveys": _Deck(SURVEY_KINDS)}

    def late_delay(self, rng: random.Random) -> int:
        """How late a late event is."""
        return int(math.exp(rng.uniform(*self._log_late)))

    def broken(self, rng: random.Random, draft: Draft) -> Draft:
        """A broken message made from a real event (so it looks like the real thing), with its own id."""
        kind = self._decks[draft.topic].draw(rng)
        bad = replace(draft, event_id=_uuid4(rng), invalid=kind, variant=rng.getrandbits(16))
        if kind is InvalidKind.FUTURE_TIMESTAMP:
            bad.ts_ms = self.future_from_ms + rng.randrange(FUTURE_SPREAD_MS)
        return bad


def future_from_ms(now_ms: int) -> int:
    """Where future-timestamp messages start: 2 days after the day of `now`.

    Far enough ahead to stay in the future for a replay hours later, and the same for every `now` of one
    UTC day, so runs without `--now` agree on those lines within a day.
    """
    return (now_ms // DAY_MS + FUTURE_LEAD_DAYS) * DAY_MS


def batch_traffic(config: BatchConfig, model: BatchModel | None = None) -> Iterator[Outgoing]:
    """The whole simulation in send order, generated day by day (memory: a few days of late events).

    Messages are ordered by delivery time (ties: in the order they were made). After day d, everything due
    before day d + 1 is released: later days only add messages with event times, hence delivery times,
    from day d + 1 on. `config.thin` leaves out the clicks that change no KPI (`thin_clicks`). `model`:
    the BatchModel of `config` to run (its users' state after the history: `LiveModel.continuing`).
    """
    config.check()
    traffic = _batch_traffic(config, model if model is not None else BatchModel(config))
    return thin_clicks(traffic) if config.thin else traffic


def _batch_traffic(config: BatchConfig, model: BatchModel) -> Iterator[Outgoing]:
    delivery = Delivery(
        config.late_fraction,
        config.duplicate_fraction,
        config.invalid_fraction,
        config.lateness_days,
        future_from_ms(config.now_ms),
    )
    # Messages not yet due (late ones, duplicates, broken ones), by delivery time; on-time events go
    # straight out, in event-time order, merged with whatever falls due before them.
    pending: list[tuple[int, int, Outgoing]] = []
    seq = 0
    for day in range(config.first_day, config.end_day + 1):
        rng = seeded(config.seed, "delivery", day)
        for draft in model.day(day):
            ts = draft.ts_ms
            while pending and pending[0][0] <= ts:
                yield heapq.heappop(pending)[2]
            deliver = ts
            if rng.random() < delivery.late_fraction:
                deliver += delivery.late_delay(rng)
                heapq.heappush(pending, (deliver, seq, Outgoing(draft, "late")))
                seq += 1
            else:
                yield Outgoing(draft, "event")
            if rng.random() < delivery.duplicate_fraction:
                again = deliver + rng.randint(*DUPLICATE_DELAY_MS)
                heapq.heappush(pending, (again, seq, Outgoing(draft, "duplicate")))
                seq += 1
            if rng.random() < delivery.invalid_fraction:
                bad = Outgoing(delivery.broken(rng, draft), "invalid")
                heapq.heappush(pending, (deliver + rng.randint(0, 10_000), seq, bad))
                seq += 1
        horizon = (day + 1) * DAY_MS
        while pending and pending[0][0] < horizon:
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]


def thin_clicks(traffic: Iterable[Outgoing]) -> Iterator[Outgoing]:
    """The traffic without the clicks that change no KPI, in the same order (docs/definitions.md).

    A click counts through its user's activity on its day in its segments (platform, plan, stage) only;
    for a user with a signup_ts the stage follows from the day, so after the first click of a (user, day,
    platform, plan) the others of that key change nothing, and they are left out. Kept whole: surveys,
    broken messages, duplicates of kept clicks, and every click of users without a signup_ts (their stage
    depends on the first day kpimon saw them, hence on arrival order). Assumes no passive click types.
    """
    seen: set[tuple[str, int, str | None, str | None]] = set()
    kept: set[str] = set()
    for out in traffic:
        draft = out.draft
        if draft.topic != "clicks" or out.role == "invalid" or draft.signup_ms is None:
            yield out
        elif out.role == "duplicate":
            if draft.event_id in kept:
                yield out
        else:
            key = (draft.user_id, draft.ts_ms // DAY_MS, draft.platform, draft.plan)
            if key not in seen:
                seen.add(key)
                kept.add(draft.event_id)
                yield out


# ---------------------------------------------------------------------------------------------------------
# Population state: where live traffic takes over from a history


@dataclass(slots=True)
class Population:
    """The simulated users at the end of a history (who left, who is quiet, when each was last asked what)
    and who of them is active on its last day: what live traffic continues (`LiveModel`)."""

    users: list[User]
    #: The UTC day number of the history's last day, and the ids of the users active on it.
    day: int
    active: list[str]

    @classmethod
    def after(cls, config: BatchConfig) -> Population:
        """Run the history of `config` (every message generated and dropped) and return its end state."""
        model = BatchModel(config)
        for _ in batch_traffic(config, model):
            pass
        return cls.of(model)

    @classmethod
    def of(cls, model: BatchModel) -> Population:
        """The end state of a BatchModel that has generated its history."""
        return cls(model.users, model.config.end_day, [u.user_id for u in model.active])

    def dumps(self) -> str:
        """The state as JSON text (a few hundred bytes per user)."""
        data = {"day": self.day, "active": self.active, "users": [asdict(u) for u in self.users]}
        return json.dumps(data, separators=(",", ":")) + "\n"

    @classmethod
    def loads(cls, text: str) -> Population:
        """The state `dumps` wrote."""
        data = json.loads(text)
        return cls([User(**u) for u in data["users"]], int(data["day"]), list(data["active"]))


# ---------------------------------------------------------------------------------------------------------
# Live traffic


@dataclass(slots=True)
class _LiveSession:
    drafts: list[Draft]  # planned events; their times are replaced by the time they are sent
    user: User


class LiveModel:
    """Traffic happening now: about `rate` click events per second from overlapping sessions.

    The sessions are those of the day's active users: the users of `population` (the state a history left,
    `Population`) active on its last day when that is today, else those drawn by their engagement, as a
    batch day draws them (nobody who left, nobody in a quiet spell), and again at each new UTC day. The
    rate is far above a real day's, so the day's users are all seen within minutes; drawing from all users
    would make every user active every day (stickiness near 100 %, churn 0, the churned back). A few new
    users sign up as time goes by. Without `population`, a population of `users` made as for a history of
    60 days. Surveys follow sessions a few seconds later. Late events carry a time up to `lateness_days`
    back (never before the user's signup); duplicates repeat a message 1 s to 5 min later; broken messages
    as in batch. Scenarios start `scenario_after_s` seconds after `start_ms`.
    """

    def __init__(
        self,
        users: int,
        seed: int,
        start_ms: int,
        rate: float,
        *,
        late_fraction: float = 0.03,
        duplicate_fraction: float = 0.01,
        invalid_fraction: float = 0.005,
        lateness_days: float = 3.0,
        scenarios: Sequence[Scenario] = (),
        scenario_after_s: float = 120.0,
        population: Population | None = None,
    ) -> None:
        self.rng = seeded(seed, "live")
        self.seed = seed
        self.start_ms = start_ms
        self.rate = rate
        today = self.today = start_ms // DAY_MS
        if population is not None:
            self.users = population.users
        else:
            self.users = make_population(seeded(seed, "population"), users, today - 60, start_ms - MINUTE_MS)
        # Live time is busy: every user is around every few minutes, not every few days. Survey cooldowns
        # count in "days" of about the time it takes the population to produce one event per user, so
        # surveys keep coming (at about the batch share of the traffic) however long the run.
        self.survey_day_ms = max(1_000, int(len(self.users) / rate * 1000))
        #: The day's active users and their cumulative weights (sessions per day) for picking.
        self.active: list[User] = []
        self._weights: list[float] = []
        self.active_day = today
        if population is not None and population.day == today:
            by_id = {u.user_id: u for u in self.users}
            self._set_active([by_id[i] for i in population.active if i in by_id])
        else:
            self._draw_active(today)
        self.behaviour = Behaviour()
        self.scenarios = tuple(scenarios)
        self.scenario_at_ms = start_ms + int(scenario_after_s * 1000)
        self.delivery = Delivery(
            late_fraction, duplicate_fraction, invalid_fraction, lateness_days, future_from_ms(start_ms)
        )
        self.lateness_ms = int(lateness_days * DAY_MS)
        self.sessions: list[_LiveSession] = []
        self.busy: set[str] = set()
        self.silent_from: dict[str, int] = {}  # churn-wave: user_id -> when they fall silent
        self.pending: list[tuple[int, int, Outgoing]] = []  # surveys and duplicates not yet due
        self.seq = 0
        self.scenario_started = False
        self._noise = [NpsNoise(s) for s in self.scenarios if s.kind == "nps-noise"]
        self._signups = 0

    def step(self, now_ms: int, clicks: int) -> list[Outgoing]:
        """The messages to send at `now_ms`: `clicks` click events plus whatever else is due."""
        rng = self.rng
        if now_ms // DAY_MS != self.active_day:
            self.active_day = now_ms // DAY_MS
            self._draw_active(self.active_day)
        if not self.scenario_started and now_ms >= self.scenario_at_ms:
            self._start_scenarios(now_ms)
        out: list[Outgoing] = []
        for _ in range(clicks):
            session = self._session(now_ms)
            if session is None:
                break
            draft = session.drafts.pop(0)
            # The client stamped it a moment before sending (but not before the user signed up).
            draft.ts_ms = max(now_ms - rng.randrange(2_000), session.user.signup_ms)
            self._emit(draft, now_ms, out)
            if not session.drafts:
                self._close(session)
        while self.pending and self.pending[0][0] <= now_ms:
            due = heapq.heappop(self.pending)[2]
            if due.role == "duplicate":
                out.append(due)
            else:
                self._emit(due.draft, now_ms, out)
        return out

    def _emit(self, draft: Draft, now_ms: int, out: list[Outgoing]) -> None:
        rng = self.rng
        role: Role = "event"
        if rng.random() < self.delivery.late_fraction:
            # Sent now, but it happened earlier (an offline phone catching up).
            earliest = draft.signup_ms if draft.signup_ms is not None else now_ms - self.lateness_ms
            delay = min(self.delivery.late_delay(rng), self.lateness_ms, max(0, draft.ts_ms - earliest))
            if delay >= LATE_MIN_MS:
                draft.ts_ms -= delay
                role = "late"
        out.append(Outgoing(draft, role))
        if rng.random() < self.delivery.duplicate_fraction:
            self._later(now_ms + rng.randint(*DUPLICATE_DELAY_MS), Outgoing(draft, "duplicate"))
        if rng.random() < self.delivery.invalid_fraction:
            out.append(Outgoing(self.delivery.broken(rng, draft), "invalid"))

    def _later(self, due_ms: int, out: Outgoing) -> None:
        heapq.heappush(self.pending, (due_ms, self.seq, out))
        self.seq += 1

    def _session(self, now_ms: int) -> _LiveSession | None:
        """A random open session, opening new ones to keep the pool full."""
        rng = self.rng
        attempts = 0
        while len(self.sessions) < self.pool_size and attempts < 20:
            attempts += 1
            user = self._pick_user(now_ms)
            if user is None:
                continue
            first = "signup" if user.signup_ms >= now_ms - MINUTE_MS else None
            started = self.scenario_started
            drops = [s for s in self.scenarios if s.kind == "nps-drop"] if started else []
            noise = self._noise if started else []
            survey_day = self.today + (now_ms - self.start_ms) // self.survey_day_ms
            drafts = self.behaviour.session(
                rng, user, now_ms, now_ms + DAY_MS, first, drops, survey_day, nps_noise=noise
            )
            if started and first is not None and self._covered(user, "retention-drop"):
                self.silent_from[user.user_id] = now_ms + MINUTE_MS  # the signup session, then gone
            if started and user.recent_detractor(now_ms // DAY_MS) and self._covered(user, "detractor-churn"):
                self.silent_from[user.user_id] = now_ms + MINUTE_MS  # answers, finishes, leaves
            clicks = [d for d in drafts if d.topic == "clicks"]
            for survey in (d for d in drafts if d.topic == "surveys"):
                # Asked after the session: at the time the session will end, roughly.
                # Each open session gets about rate / pool_size events per second.
                offset = survey.ts_ms - clicks[-1].ts_ms
                due = now_ms + int(len(clicks) * 1000 * self.pool_size / self.rate) + offset
                survey.ts_ms = due
                self._later(due, Outgoing(survey, "event"))
            self.sessions.append(_LiveSession(clicks, user))
            self.busy.add(user.user_id)
        if not self.sessions:
            return None
        return self.sessions[rng.randrange(len(self.sessions))]

    def _pick_user(self, now_ms: int) -> User | None:
        rng = self.rng
        if rng.random() < 0.002:  # now and then, somebody new signs up
            self._signups += 1
            user = make_user(
                rng,
                f"u_new{self._signups:06d}_{rng.getrandbits(24):06x}",
                now_ms - now_ms % 1000,
                now_ms // DAY_MS,
                random_time_zone(rng),
            )
            self.users.append(user)
            self._add_active(user)
            return user
        if not self.active:
            return None
        user = _weighted(rng, self.active, self._weights)
        if user.user_id in self.busy or self.silent_from.get(user.user_id, now_ms + 1) <= now_ms:
            return None
        if self.scenario_started and self._covered(user, "dau-drop") and rng.random() >= DAU_DROP_FACTOR:
            return None  # dau-drop: fewer of the segment's users come
        return user

    def _set_active(self, users: list[User]) -> None:
        self.active, self._weights = [], []
        for user in users:
            self._add_active(user)
        # Enough concurrent sessions that each lasts a realistic tens of seconds at this rate.
        self.pool_size = max(1, min(max(1, len(self.active) // 2), int(self.rate * 3)))

    def _add_active(self, user: User) -> None:
        # Picked in proportion to their sessions per day: power users come back more often.
        weight = 1.0 + user.extra_sessions
        self.active.append(user)
        self._weights.append(self._weights[-1] + weight if self._weights else weight)

    def _draw_active(self, day: int) -> None:
        """The users active on `day`: as a batch day draws them (engagement, weekends, onboarding), among
        those who have not left and are not in a quiet spell."""
        rng = seeded(self.seed, "live-day", day)
        weekend = is_weekend(day)
        active = []
        for user in self.users:
            if user.churned or day < user.signup_day or day < user.quiet_until:
                continue
            chance = user.engagement * (WEEKEND_FACTOR[user.plan] if weekend else 1.0)
            if day - user.signup_day < ONBOARDING_DAYS:
                chance = min(0.98, chance * ONBOARDING_BOOST)
            if day == user.signup_day or rng.random() < chance:
                active.append(user)
        self._set_active(active)

    def _covered(self, user: User, kind: str) -> bool:
        """Whether a scenario of `kind` covers the user's segment."""
        return any(s.kind == kind and user.in_segment(s) for s in self.scenarios)

    def _close(self, session: _LiveSession) -> None:
        self.sessions.remove(session)
        self.busy.discard(session.user.user_id)

    def _start_scenarios(self, now_ms: int) -> None:
        self.scenario_started = True
        rng = self.rng
        for scenario in self.scenarios:
            if scenario.kind != "churn-wave":
                continue
            for user in self.users:
                if user.in_segment(scenario) and rng.random() < LIVE_CHURN_WAVE_SHARE:
                    # Open sessions finish; no new one starts once the user's silence has begun.
                    self.silent_from[user.user_id] = now_ms + rng.randrange(LIVE_CHURN_WAVE_SECONDS * 1000)
