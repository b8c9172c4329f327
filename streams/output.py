"""The output record of `kpimon-kpis` (and of `kpimon reference` / `kpimon kpis`): its key and value."""

from __future__ import annotations

from datetime import date, timedelta

import msgspec

from kpimon.streams import catalogue
from kpimon.streams.events import MS_PER_DAY  # noqa: F401  (re-exported for callers that format days)

_EPOCH_DATE = date(1970, 1, 1)

#: Every KPI of the output topic and its windows (the catalogue's): docs/output.md, "KPIs and windows".
OUTPUT_KPIS: dict[str, tuple[str, ...]] = catalogue.windows()


class KpiRecord(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One KPI value of one window, segment and day (for retention KPIs the cohort day). Later fields
    (targets, intervals) are optional."""

    kpi: str
    window: str
    dimension: str
    segment: str
    day: str
    value: float | int | None
    numerator: float | int | None = None
    denominator: float | int | None = None
    updated_at: str | None = None
    #: 95 % interval of nps, csat, churn_rate, retention_rate and the response rates
    #: (docs/definitions.md, Uncertainty).
    ci_low: float | None = None
    ci_high: float | None = None
    #: The configured target of this KPI and its direction ("min" or "max"); `breach`: the value misses it
    #: significantly (the alert rules' test: enough sample, the whole interval on the wrong side);
    #: `off_target`: the value alone is on the wrong side (significant or not).
    target: float | None = None
    target_direction: str | None = None
    breach: bool | None = None
    off_target: bool | None = None

    @property
    def key(self) -> str:
        """The compacted-topic key `kpi/window/dimension/segment/day`."""
        return record_key(self.kpi, self.window, self.dimension, self.segment, self.day)


def record_key(kpi: str, window: str, dimension: str, segment: str, day: str) -> str:
    """`kpi/window/dimension/segment/day`, e.g. `active_users/30d/platform/ios/2026-11-24`."""
    return f"{kpi}/{window}/{dimension}/{segment}/{day}"


def day_name(day: int) -> str:
    """ISO date of a UTC day number."""
    return (_EPOCH_DATE + timedelta(days=day)).isoformat()


def day_number(name: str) -> int:
    """UTC day number of an ISO date."""
    return (date.fromisoformat(name) - _EPOCH_DATE).days


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(KpiRecord)


def encode(record: KpiRecord) -> bytes:
    """JSON bytes of a record, as published to `kpimon-kpis`."""
    return _encoder.encode(record)


def decode(raw: bytes) -> KpiRecord:
    """A record from its JSON bytes."""
    return _decoder.decode(raw)
