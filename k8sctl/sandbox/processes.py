"""Background processes of a sandbox: started with a pid file and a log file,
stopped by pid file, so `down` works even after a crashed or interrupted `up`."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


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


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, chosen below the ephemeral range.

    bind(0) would hand out an ephemeral port, and outgoing connections (API server
    to etcd, controllers to API servers) draw from that same range, so one could
    take the port before the server binds it. Below the range only listeners compete.
    """
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
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


def start(name: str, argv: list[str], run_dir: Path, log_dir: Path, env: dict[str, str] | None = None) -> Started:
    """Start `argv` in its own session (it outlives this CLI), logging to log_dir/name.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as logf:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    (run_dir / f"{name}.pid").write_text(f"{p.pid}\n")
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


def _owned(pid: int, marker: str) -> bool:
    # Only stop a pid whose command line names this sandbox's folder: pids get reused.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def running(run_dir: Path, marker: str) -> dict[str, int]:
    """Processes of this sandbox that are still alive, by name."""
    out = {}
    if run_dir.is_dir():
        for pidfile in sorted(run_dir.glob("*.pid")):
            try:
                pid = int(pidfile.read_text().strip())
            except ValueError:
                continue
            if pid_alive(pid) and _owned(pid, marker):
                out[pidfile.stem] = pid
    return out


def stop_all(run_dir: Path, marker: str, grace: float = 10.0, names: list[str] | None = None,
             order: tuple[str, ...] = ()) -> list[str]:
    """Stop live processes (or those in `names`): SIGTERM, then SIGKILL after `grace` seconds.

    Processes whose names start with order[0] stop first, then order[1], ...: a server
    whose storage disappears first hangs in its graceful shutdown.
    """
    procs = {n: p for n, p in running(run_dir, marker).items() if names is None or n in names}

    def tier(name: str) -> int:
        return next((i for i, prefix in enumerate(order) if name.startswith(prefix)), len(order))

    for t in sorted({tier(n) for n in procs}):
        _terminate([p for n, p in procs.items() if tier(n) == t], grace)
    for n in procs:
        (run_dir / f"{n}.pid").unlink(missing_ok=True)
    return sorted(procs)


def _terminate(pids: list[int], grace: float) -> None:
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        _reap()
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline + 5:
        _reap()
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap() -> None:
    # Children of this very process (when `up` fails) must be waited for, or they linger as zombies.
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
