"""`kpimon top` (and the demo, which runs its view) ends promptly on Ctrl-C and on SIGTERM.

The view once kept refreshing after Ctrl-C: asyncio.run's SIGINT handling cancels the main task, and that
cancellation could be lost on its way through the thread-pool scrapes and aiokafka (about one demo run in
five). Ctrl-C now sets the view's stop event, and the KPI feed ends once closed even without a cancellation.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kpimon.agents.devtools.top import KpiFeed, TopConfig, run_top


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on: the feed keeps retrying, as with a broker that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _signal_after(seconds: float, signum: int) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


def test_ctrl_c_ends_the_view_with_keyboard_interrupt_and_restores_the_handler(closed_port: int) -> None:
    config = TopConfig(broker=f"127.0.0.1:{closed_port}", topic="kpimon-kpis", plain=True, interval=0.2)
    started = time.monotonic()
    timer = _signal_after(1.0, signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_top(config)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 8.0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_ends_the_view_without_an_exception(closed_port: int) -> None:
    config = TopConfig(broker=f"127.0.0.1:{closed_port}", topic="kpimon-kpis", plain=True, interval=0.2)
    previous = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    timer = _signal_after(1.0, signal.SIGTERM)
    try:
        run_top(config)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 8.0
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_closed_feed_ends_at_its_next_poll_without_being_cancelled(closed_port: int) -> None:
    async def scenario() -> str:
        feed = KpiFeed(f"127.0.0.1:{closed_port}", "kpimon-kpis", retry=0.1)
        feed.close()
        await asyncio.wait_for(feed.run(), 2.0)  # returns by itself: no cancellation needed
        return feed.state

    assert asyncio.run(scenario()) == "connecting"  # it did not even try to connect
