"""A session-wide guard: no output of k8sctl in any test may contain a credential.

Credentials come from three places, all gathered before each check:
- every token and key k8sctl itself read in this process (k8sctl.redact),
- what tests register: the sandboxes' admin keys, tokens tests mint (`add`),
- refreshers: functions that read the live clusters (every service-account token
  Secret, every stored kubeconfig's token), registered by the integration conftest.
Every CliRunner invocation is checked (tests/conftest.py patches it), and tests that
run k8sctl as a subprocess pass its output to `check`.
"""
from __future__ import annotations

import base64
from collections.abc import Callable, Iterable

from k8sctl import redact

_known: set[str] = set()
_refreshers: list[Callable[[], Iterable[str]]] = []
checked_outputs = 0


def add(*values: str | bytes | None) -> None:
    for v in values:
        if not v:
            continue
        text = v.decode() if isinstance(v, bytes) else v
        for line in [text, text.strip(), *text.strip().splitlines()]:
            line = line.strip()
            if len(line) >= 16 and not line.startswith("-----"):
                _known.add(line)
                _known.add(base64.b64encode(line.encode()).decode())


def add_refresher(fn: Callable[[], Iterable[str]]) -> None:
    _refreshers.append(fn)


def remove_refresher(fn: Callable[[], Iterable[str]]) -> None:
    if fn in _refreshers:
        _refreshers.remove(fn)


def known() -> set[str]:
    for fn in list(_refreshers):
        add(*fn())
    with redact._lock:
        _known.update(v for v in redact._known if len(v) >= 16)
    return _known


def check(*texts: str | None, where: str = "output") -> None:
    global checked_outputs
    secrets = known()
    for text in texts:
        if not text:
            continue
        checked_outputs += 1
        for s in secrets:
            assert s not in text, f"a credential reached the {where} of k8sctl"
