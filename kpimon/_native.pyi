# The compiled batch core (native/src/lib.rs), built by setuptools-rust; the types mypy checks callers by.
from collections.abc import Callable, Sequence
from typing import Any, Literal

from kpimon.agents.pipeline.counters import PartitionCounters
from kpimon.agents.pipeline.folding import SegmentFolder
from kpimon.streams.userstate import UserState

class ApplyError(RuntimeError):
    """The core failed (or panicked) while writing a batch's results (states or counters may be partly
    updated)."""

class CorePanic(RuntimeError):
    """The core panicked before it wrote anything: nothing changed, the Python engine can take the batch."""

def _set_failpoint(phase: Literal["compute", "write"] | None) -> None:
    """Tests only: make every later `Core.process` panic in that phase (`compute`: before any write;
    `write`: after a state was written), or nowhere (None). Process-wide."""

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
