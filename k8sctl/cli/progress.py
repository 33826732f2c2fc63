"""Progress of long commands on stderr: a live spinner on a terminal, one line per step elsewhere.

In CI logs and behind `| tee` a spinner prints nothing useful, so each step is one plain
line with the time elapsed since the command started, and a step that runs long says so
every `heartbeat` seconds (some CI systems stop jobs that print nothing for 10 minutes).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any


def clock(seconds: float) -> str:
    """12s, 3m05s."""
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class StepReporter:
    """Call it with each step's description as the step starts; `close()` at the end. Thread-safe."""

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None, heartbeat: float = 60.0):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.heartbeat = heartbeat
        self.t0 = time.monotonic()
        self.step = ""
        self.step_t0 = self.t0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._live: Any = None
        self._task: Any = None
        if self.tty:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=Console(file=self.stream, highlight=False), transient=True)
            self._live.start()
            self._task = self._live.add_task("starting")
        elif heartbeat > 0:
            threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True).start()

    def __call__(self, message: str) -> None:
        with self._lock:
            now = time.monotonic()
            if self._live is not None:
                from rich.markup import escape

                if self.step:  # the finished step stays on screen, with how long it took
                    self._live.console.print(f"[green]✓[/] {escape(self.step)} [dim]({clock(now - self.step_t0)})[/]")
                self._live.update(self._task, description=escape(message))
            else:
                self._line(message, now)
            self.step, self.step_t0 = message, now

    def _line(self, message: str, now: float) -> None:
        self.stream.write(f"[{clock(now - self.t0):>6}] {message}\n")
        self.stream.flush()

    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat):
            with self._lock:
                now = time.monotonic()
                if self.step and now - self.step_t0 >= self.heartbeat:
                    self._line(f"... {self.step}: still running ({clock(now - self.step_t0)} in this step)", now)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._live is not None:
                from rich.markup import escape

                if self.step:
                    self._live.console.print(f"[green]✓[/] {escape(self.step)} "
                                             f"[dim]({clock(time.monotonic() - self.step_t0)})[/]")
                self._live.stop()
                self._live = None
