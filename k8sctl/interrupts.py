"""Signals during `sandbox up` and builds: every exit path stops what the run started.

SIGINT already raises KeyboardInterrupt; `signals_raise` makes SIGTERM and SIGHUP raise
`Terminated` (a KeyboardInterrupt) too, so the same cleanup runs. `deferred` holds signals
off while a step must not be cut in half: starting a process and recording it, and the
cleanup itself, which a second Ctrl-C must not abort (that left an orphan etcd).
Only the main thread receives signals; elsewhere both are no-ops.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP raise Terminated, SIGINT KeyboardInterrupt."""
    if not _main_thread():
        yield
        return

    def handler(signum, frame):
        raise _interrupt(signum)

    with _handled_by(handler):
        yield


@contextmanager
def _handled_by(handler) -> Iterator[None]:
    """Within: `handler` for every signal of SIGNALS; the previous handlers back on leaving."""
    old = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def deferred(reraise: bool = True, notice: str | None = None) -> Iterator[None]:
    """Within: SIGINT, SIGTERM and SIGHUP wait. On leaving, the first one raises if `reraise`
    (else it is dropped: the caller is already stopping). `notice` is printed on stderr once
    when a signal arrives, to say why nothing happens yet."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def handler(signum, frame):
        if not pending and notice:
            print(notice, file=sys.stderr, flush=True)
        pending.append(signum)

    with _handled_by(handler):
        yield
    if pending and reraise:
        raise _interrupt(pending[0])


CLEANUP_NOTICE = "stopping what this run started; wait a few seconds (further Ctrl-C is ignored until then)"


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a child started with start_new_session=True and everything in its process group
    (go build's compilers): SIGTERM, then SIGKILL after `grace` seconds."""
    def killpg(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    killpg(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killpg(signal.SIGKILL)  # also what the leader left behind
    proc.wait()


def run_in_own_group(cmd: list[str], cwd: Path, env: dict[str, str], log: IO[bytes]) -> int:
    """Run `cmd` (a go build) in a process group of its own, output to `log`; its exit code.
    On any way out (Ctrl-C, SIGTERM, an error) the whole group stops: go and its compilers."""
    with deferred():
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        with deferred(reraise=False, notice=CLEANUP_NOTICE):
            stop_group(proc)
        raise
