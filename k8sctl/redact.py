"""Every credential this process has read, so no message can carry one out.

Whatever reads a token or a private key registers it here (`remember`); the
places that turn errors and log records into text pass them through `redact`.
This is structural: a bug that puts a token into an exception message (a
header-value error, a server echoing a request) still prints `<redacted>`.
"""
from __future__ import annotations

import base64
import threading

REDACTED = "<redacted>"
_MIN_LENGTH = 8  # shorter values would redact ordinary words; no real credential is that short

_lock = threading.Lock()
_known: set[str] = set()


def remember(value: str | bytes | None) -> None:
    """Register a credential: its text, its stripped text and its base64 form."""
    if not value:
        return
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    forms = {text, text.strip()}
    forms |= {base64.b64encode(f.encode()).decode() for f in list(forms)}
    # Each line of a multi-line secret (a PEM key) is redacted too.
    forms |= {line.strip() for f in list(forms) for line in f.splitlines()}
    with _lock:
        _known.update(f for f in forms if len(f) >= _MIN_LENGTH and not f.startswith("-----"))


def redact(text: str) -> str:
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # longest first: a token inside a longer form
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def known_count() -> int:
    with _lock:
        return len(_known)
