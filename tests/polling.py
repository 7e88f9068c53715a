"""The one way tests wait for something another thread or process does: poll, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float = 20.0, what: str = "the condition", every: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy, and return that; fail naming `what` and
    the last answer, so a timeout says what was awaited and how far it got."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(every)
