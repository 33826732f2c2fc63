"""Keeps the sandbox's k8ssandra-operator manager running, as its Deployment would.

    python -m k8sctl_sandbox.operator_supervisor DIR/operator

The manager exits (code 0) whenever a ClientConfig is created or deleted or its spec or
Secret data change: it reads ClientConfigs only at start-up. This process starts it again
each time it exits, logs each restart with the reason line from the manager's log, and keeps
the count in DIR/operator/status.json (the one writer of that file). Repeated quick exits
back off (1 s doubling to 30 s), like a pod in CrashLoopBackOff. SIGTERM stops the manager
and then this process.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from k8sctl_sandbox import processes

HEALTHY_RUN = 10.0   # seconds: a run this long resets the back-off
MAX_BACKOFF = 30.0
REASON_MARKERS = ("shutting down the operator", "ERROR", "error")


def reason_line(text: str) -> str:
    """The line that says why a run ended: the operator's own shutdown line, else the last
    error, else the last line; '' for an empty log."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in REASON_MARKERS:
        hits = [line for line in lines if marker in line]
        if hits:
            return hits[-1]
    return lines[-1] if lines else ""


def backoff(previous: float, ran_for: float) -> float:
    if ran_for >= HEALTHY_RUN:
        return 0.0
    return min(MAX_BACKOFF, max(1.0, previous * 2))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _say(line: str) -> None:
    print(f"{_now()} {line}", flush=True)


class Supervisor:
    def __init__(self, config: dict):
        self.config = config
        self.log = Path(config["log"])
        self.status_path = Path(config["status"])
        self.pid_file = Path(config["pidFile"])
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.status: dict[str, Any] = {"supervisorPid": os.getpid(), "state": "starting", "runs": 0, "restarts": 0,
                       "pid": None, "started": None, "logOffset": 0, "lastExit": None}

    def _write_status(self) -> None:
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status, indent=2))
        os.replace(tmp, self.status_path)  # readers never see half a file

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self.config.get("unsetEnv", [])}
        return {**env, **self.config["env"]}

    def on_sigterm(self, signum, frame) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def run_once(self) -> tuple[int, float, str]:
        offset = self.log.stat().st_size if self.log.exists() else 0
        t0 = time.monotonic()
        with open(self.log, "ab") as logf:
            self.child = subprocess.Popen(self.config["argv"], stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, env=self._env())
        # Pid and start time (`sandbox down` stops only that process); no command line: the
        # namespace wrapper execs the manager, which changes it.
        record = processes.ProcessRecord.of(self.child.pid)
        if record is not None:
            record.write(self.pid_file)
        self.status.update(state="running", pid=self.child.pid, started=_now(), logOffset=offset,
                           runs=self.status["runs"] + 1)
        self._write_status()
        if self.stopping:  # SIGTERM came while starting
            self.child.terminate()
        code = self.child.wait()
        ran_for = time.monotonic() - t0
        with open(self.log, "rb") as f:
            f.seek(offset)
            reason = reason_line(f.read().decode(errors="replace"))
        return code, ran_for, reason

    def loop(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigterm)
        delay = 0.0
        while True:
            code, ran_for, reason = self.run_once()
            self.status.update(pid=None, lastExit={"code": code, "at": _now(), "afterSeconds": round(ran_for, 1),
                                                   "reason": reason})
            if self.stopping:
                self.status["state"] = "stopped"
                self._write_status()
                self.pid_file.unlink(missing_ok=True)
                _say(f"operator stopped (exit code {code})")
                return 0
            delay = backoff(delay, ran_for)
            self.status["restarts"] += 1
            self.status["state"] = "backoff" if delay else "restarting"
            self._write_status()
            _say(f"operator exited (code {code}) after {ran_for:.1f}s: {reason or '(no log line)'}; "
                 f"restart #{self.status['restarts']}" + (f" in {delay:.0f}s" if delay else ""))
            end = time.monotonic() + delay
            while time.monotonic() < end and not self.stopping:
                time.sleep(0.1)
            if self.stopping:
                self.status["state"] = "stopped"
                self._write_status()
                return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m k8sctl_sandbox.operator_supervisor DIR/operator", file=sys.stderr)
        return 2
    config = json.loads((Path(argv[1]) / "config.json").read_text())
    return Supervisor(config).loop()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
