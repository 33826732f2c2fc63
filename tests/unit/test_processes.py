"""Ownership of sandbox processes, with real processes: only the recorded process is ever signalled."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from k8sctl_sandbox import processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def start_sleeper(tmp_path: Path, name: str, *extra: str) -> processes.Started:
    return processes.start(name, SLEEPER + list(extra), tmp_path / "run", tmp_path / "logs")


def stranger(*extra: str) -> subprocess.Popen:
    """A process that is not the sandbox's (another sandbox's, or a pid reused)."""
    p = subprocess.Popen(SLEEPER + list(extra))
    deadline = time.monotonic() + 10
    while processes.command_line(p.pid) != tuple(SLEEPER + list(extra)):  # exec'd
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return p


def test_pid_file_records_pid_start_time_and_command_line(tmp_path):
    s = start_sleeper(tmp_path, "etcd", str(tmp_path))
    try:
        doc = json.loads((tmp_path / "run" / "etcd.pid").read_text())
        assert doc == {"pid": s.pid, "startTime": processes.start_time(s.pid), "argv": SLEEPER + [str(tmp_path)]}
        assert processes.running(tmp_path / "run") == {"etcd": s.pid}
    finally:
        assert processes.stop_all(tmp_path / "run", grace=5) == ["etcd"]
    assert s.popen.wait(5) is not None and processes.running(tmp_path / "run") == {}


def test_a_reused_pid_is_not_ours_even_when_its_command_line_names_our_folder(tmp_path):
    """Before: a substring match on the folder killed another sandbox's process (folder sb-2 contains sb)."""
    ours = tmp_path / "sb"
    other = stranger(str(tmp_path / "sb-2" / "etcd"))  # its command line contains str(ours)
    try:
        record = processes.ProcessRecord(other.pid, processes.start_time(other.pid) + 1, tuple(SLEEPER + [str(ours)]))
        (ours / "run").mkdir(parents=True)
        (ours / "run" / "etcd.pid").write_text(record.to_json())
        assert processes.running(ours / "run") == {}
        assert processes.stop_all(ours / "run", grace=1) == []
        # Same start time, other command line: not ours either.
        same_start = processes.ProcessRecord(other.pid, processes.start_time(other.pid), tuple(SLEEPER + [str(ours)]))
        (ours / "run" / "etcd.pid").write_text(same_start.to_json())
        assert processes.stop_all(ours / "run", grace=1) == []
        # An old pid file (a bare number) proves nothing either.
        (ours / "run" / "etcd.pid").write_text(f"{other.pid}\n")
        assert processes.stop_all(ours / "run", grace=1) == []
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


def test_a_record_without_command_line_matches_on_start_time(tmp_path):
    """For a process that execs another program after it is recorded (a wrapper)."""
    p = stranger("wrapped")
    try:
        (tmp_path / "run").mkdir()
        processes.ProcessRecord.of(p.pid).write(tmp_path / "run" / "operator.pid")
        assert processes.running(tmp_path / "run") == {"operator": p.pid}
        assert processes.stop_all(tmp_path / "run", grace=5) == ["operator"]
        assert p.wait(5) is not None
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_only_the_named_processes_stop(tmp_path):
    a, b = start_sleeper(tmp_path, "kube-apiserver-x"), start_sleeper(tmp_path, "etcd")
    try:
        assert processes.stop_all(tmp_path / "run", names=["kube-apiserver-x"], grace=5) == ["kube-apiserver-x"]
        assert a.popen.wait(5) is not None and b.popen.poll() is None
        assert processes.running(tmp_path / "run") == {"etcd": b.pid}
    finally:
        processes.stop_all(tmp_path / "run", grace=5)
    assert b.popen.wait(5) is not None
