"""Durations as users type them on a command line: `90`, `90s`, `10m`, `1h30m`, `7d`. Pure."""
from __future__ import annotations

import math
import re

from k8sctl.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse(text: str, flag: str) -> float:
    """Seconds in `text`; a bare number is seconds. A UsageError naming `flag` otherwise."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise UsageError(f"{flag} {text!r} is not a duration: write it like 90s, 10m, 1h30m or 7d") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"{flag} {text!r} must be a non-negative duration like 90s, 10m, 1h30m or 7d")
    return seconds


def parse_positive(text: str, flag: str) -> float:
    """Like `parse`, but zero is refused too: for limits, where zero would fail everything at once."""
    seconds = parse(text, flag)
    if seconds == 0:
        raise UsageError(f"{flag} {text!r} must be more than zero, like 5s or 1m")
    return seconds


def show(seconds: float) -> str:
    """A short human form: 45s, 12m, 3h10m, 6d4h."""
    s = int(round(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"
