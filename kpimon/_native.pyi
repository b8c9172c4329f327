# The compiled batch core (native/src/lib.rs), built by setuptools-rust; the types mypy checks callers by.
from collections.abc import Callable, Sequence
from typing import Any

from kpimon.agents.pipeline.counters import PartitionCounters
from kpimon.agents.pipeline.folding import SegmentFolder
from kpimon.streams.userstate import UserState

class ApplyError(RuntimeError):
    """The core failed while writing a batch's results (states or counters may be partly updated)."""

class Core:
    def __init__(
        self,
        passive_types: set[str],
        policy_lateness_days: int,
        engine_lateness_days: int,
        max_future_ms: int,
        max_message_bytes: int,
    ) -> None: ...
    @staticmethod
    def counters() -> list[tuple[str, str]]: ...
    def process(
        self,
        kind: str,
        records: Sequence[Any],
        next_offset: int,
        get_state: Callable[[bytes], UserState | None],
        state_class: type[UserState],
        counters: PartitionCounters,
        folder: SegmentFolder,
        now_ms: int,
        partition: int,
    ) -> tuple[
        list[tuple[bytes, UserState, bytes | None]],
        int,
        int,
        list[float],
        int | None,
        list[int],
    ]: ...
