"""One way to wait for something in a cluster: a deadline, a poll interval, a progress hook."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from k8sctl.errors import ClusterError

T = TypeVar("T")


class TimedOut(ClusterError):
    """The awaited state was not reached before the deadline (exit 1)."""


def until(check: Callable[[], T | None], *, timeout: float, message: str, interval: float = 0.5,
          progress: Callable[[str], None] | None = None, what: str = "waiting") -> T:
    """Call `check` until it returns something other than None; TimedOut(message) after `timeout` seconds."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        result = check()
        if result is not None:
            return result
        now = time.monotonic()
        if now >= deadline:
            raise TimedOut(message)
        if progress:
            progress(f"{what} ({now - start:.0f}s of {timeout:.0f}s)")
        time.sleep(min(interval, max(0.0, deadline - now)))
