"""Background processes of a sandbox: started with a pid file and a log file,
stopped by pid file, so `down` works even after a crashed or interrupted `up`.

A pid file records the pid, the process's start time and its exact command line. A
process is this sandbox's only if all three still match: pids get reused, and another
sandbox's processes have command lines that look alike (a folder name can contain
another's). Write one with `ProcessRecord.of(pid, argv).write(path)`.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from k8sctl import interrupts
from k8sctl.errors import SandboxError


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    log: Path
    popen: subprocess.Popen | None = None

    def exit_code(self) -> int | None:
        """The exit code if the process has ended, else None."""
        if self.popen is not None:
            return self.popen.poll()
        return None if pid_alive(self.pid) else -1


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


# Ports this process has chosen: a sandbox picks all of its ports before its servers bind them
# (controller managers only after every API server is ready), so a later pick must not repeat one.
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, chosen below the ephemeral range.

    bind(0) would hand out an ephemeral port, and outgoing connections (API server
    to etcd, controllers to API servers) draw from that same range, so one could
    take the port before the server binds it. Below the range only listeners compete.
    """
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with _HANDED_OUT_LOCK:
            if port in _HANDED_OUT:
                continue  # free now, but promised to a server that has not bound it yet
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        with _HANDED_OUT_LOCK:
            if port in _HANDED_OUT:
                continue
            _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bind_failure(log: Path) -> bool:
    """Whether a process's log says its port was taken."""
    try:
        return "address already in use" in log.read_text(errors="replace")[-4000:].lower()
    except OSError:
        return False


def wait_ready(what: str, check: Callable[[], bool], procs: list[Started], timeout: float,
               interval: float = 0.1) -> None:
    """Poll `check` until true (an OSError or HTTPException counts as not yet); fail at once, with
    the log path, if one of `procs` exits, and after `timeout` seconds with every log path."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            code = p.exit_code()
            if code is not None:
                why = " because its port was taken by another process (a port race: run again)" \
                    if bind_failure(p.log) else ""
                raise SandboxError(f"{p.name} exited at start (exit code {code}){why}; read {p.log}")
        try:
            if check():
                return
        except (OSError, http.client.HTTPException):  # ssl.SSLError is an OSError
            pass
        if time.monotonic() > deadline:
            logs = ", ".join(str(p.log) for p in procs)
            raise SandboxError(f"{what} not ready after {timeout:.0f}s; read {logs}")
        time.sleep(interval)


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says: enough to tell this very process from a later one with its pid."""

    pid: int
    start_time: int  # clock ticks after boot (/proc/<pid>/stat field 22)
    argv: tuple[str, ...]

    @classmethod
    def of(cls, pid: int, argv: tuple[str, ...] | list[str] = ()) -> ProcessRecord | None:
        """The record of a running process (None if it is already gone)."""
        started = start_time(pid)
        return None if started is None else cls(pid, started, tuple(argv))

    def write(self, pidfile: Path) -> None:
        pidfile.write_text(self.to_json())

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "startTime": self.start_time, "argv": list(self.argv)}) + "\n"

    @classmethod
    def read(cls, pidfile: Path) -> ProcessRecord | None:
        """The record, or None if the file is missing, damaged or of an older format (not provably ours)."""
        try:
            doc = json.loads(pidfile.read_text())
            return cls(int(doc["pid"]), int(doc["startTime"]), tuple(str(a) for a in doc["argv"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def command_line(pid: int) -> tuple[str, ...] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return tuple(a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1])


def is_same_process(record: ProcessRecord) -> bool:
    """Whether record.pid is still the process the record was written for: same start time (a
    reused pid has another), and the same command line unless none was recorded (a process that
    execs another program after it is recorded, as a wrapper does, records none)."""
    if not (pid_alive(record.pid) and start_time(record.pid) == record.start_time):
        return False
    if not record.argv:
        return True
    # Just after Popen returns, the kernel may not have set the new program's arguments yet
    # (/proc/<pid>/cmdline reads empty for a moment): wait for them.
    deadline = time.monotonic() + 1.0
    argv = command_line(record.pid)
    while argv == () and time.monotonic() < deadline:
        time.sleep(0.005)
        argv = command_line(record.pid)
    return argv == record.argv


def start(name: str, argv: list[str], run_dir: Path, log_dir: Path, env: dict[str, str] | None = None) -> Started:
    """Start `argv` in its own session (it outlives this CLI), logging to log_dir/name.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    # A signal between starting the process and recording it would leave it unknown to `down`.
    with interrupts.deferred(), open(log, "ab") as logf:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
        # Popen returns once the program is exec'd: its start time and command line are final.
        record = ProcessRecord.of(p.pid, argv)
        if record is not None:
            record.write(run_dir / f"{name}.pid")
    return Started(name, p.pid, log, p)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def running(run_dir: Path, marker: str | None = None) -> dict[str, int]:
    """Processes of this sandbox that are still alive, by name.

    `marker` is no longer used (ownership is the pid file's record); kept so callers still work.
    """
    return {name: record.pid for name, record in _live_records(run_dir).items()}


def _live_records(run_dir: Path) -> dict[str, ProcessRecord]:
    out = {}
    if run_dir.is_dir():
        for pidfile in sorted(run_dir.glob("*.pid")):
            record = ProcessRecord.read(pidfile)
            if record is not None and is_same_process(record):
                out[pidfile.stem] = record
    return out


def stop_all(run_dir: Path, marker: str | None = None, grace: float = 10.0, names: list[str] | None = None,
             order: tuple[str, ...] = ()) -> list[str]:
    """Stop live processes (or those in `names`): SIGTERM, then SIGKILL after `grace` seconds.

    Only processes whose pid file's record still matches are signalled (see `running`).

    Processes whose names start with order[0] stop first, then order[1], ...: a server
    whose storage disappears first hangs in its graceful shutdown.
    """
    procs = {n: r for n, r in _live_records(run_dir).items() if names is None or n in names}

    def tier(name: str) -> int:
        return next((i for i, prefix in enumerate(order) if name.startswith(prefix)), len(order))

    for t in sorted({tier(n) for n in procs}):
        _terminate([r for n, r in procs.items() if tier(n) == t], grace)
    for n in procs:
        (run_dir / f"{n}.pid").unlink(missing_ok=True)
    return sorted(procs)


class _Handle:
    """A process to signal: through a pidfd where the system has them, so that a pid reused
    between the ownership check and the signal is never hit."""

    def __init__(self, record: ProcessRecord):
        self.pid = record.pid
        self.fd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(record.pid)
            except OSError:
                self.fd = None
        # Checked after the pidfd is open: the pidfd then names this very process.
        self.ours = is_same_process(record)

    def signal(self, sig: int) -> None:
        if not self.ours:
            return
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def alive(self) -> bool:
        if not self.ours:
            return False
        if self.fd is not None:  # a pidfd turns readable when its process has exited
            return not select.select([self.fd], [], [], 0)[0]
        return pid_alive(self.pid)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _terminate(records: list[ProcessRecord], grace: float) -> None:
    handles = [_Handle(r) for r in records]
    try:
        for h in handles:
            h.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(h.alive() for h in handles):
            _reap()
            time.sleep(0.05)
        for h in handles:
            if h.alive():
                h.signal(signal.SIGKILL)
        while any(h.alive() for h in handles) and time.monotonic() < deadline + 5:
            _reap()
            time.sleep(0.05)
    finally:
        for h in handles:
            h.close()


def _reap() -> None:
    # Children of this very process (when `up` fails) must be waited for, or they linger as zombies.
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
