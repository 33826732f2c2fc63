"""binaries.build_once, the build-into-the-cache mechanism of the control plane, toxiproxy and the
operator, with a fake build that writes a file."""
from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import pytest

from k8sctl.errors import SandboxError
from k8sctl_sandbox.binaries import build_once


def complete(folder: Path) -> bool:
    return (folder / "tool").is_file()


class FakeBuild:
    def __init__(self, seconds: float = 0.0, fail: bool = False):
        self.seconds, self.fail, self.calls = seconds, fail, 0

    def __call__(self, work: Path, out: Path, log: Path) -> None:
        self.calls += 1
        assert out.is_dir() and not work.exists() and log.read_text() == ""
        log.write_text("building\n")
        time.sleep(self.seconds)
        if self.fail:
            raise SandboxError("the build failed")
        (out / "tool").write_text("built")


def test_built_once_then_cached(tmp_path):
    target, build, said = tmp_path / "cache" / "tool-v1", FakeBuild(), []
    assert build_once(target, complete, build, said.append, waiting="waiting") is True
    assert (target / "tool").read_text() == "built" and build.calls == 1
    assert build_once(target, complete, build, said.append, waiting="waiting") is False
    assert build.calls == 1 and said == []
    # Only the lock, the log and the target are left in the cache root: no temporary folder.
    assert sorted(p.name for p in target.parent.iterdir()) == [".build.lock", "build.log", "tool-v1"]


def test_concurrent_callers_build_once(tmp_path):
    target, build = tmp_path / "tool-v1", FakeBuild(seconds=0.5)
    results: list[bool] = []

    def call() -> None:
        results.append(build_once(target, complete, build, lambda s: None, waiting="waiting"))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert build.calls == 1 and sorted(results) == [False, False, True]


def test_a_caller_waiting_for_the_lock_says_so_then_builds(tmp_path):
    target, said, results = tmp_path / "tool-v1", [], []
    with open(tmp_path / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process is building
        t = threading.Thread(target=lambda: results.append(
            build_once(target, complete, FakeBuild(), said.append, waiting="waiting for the other")))
        t.start()
        deadline = time.monotonic() + 10
        while not said:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert said == ["waiting for the other"] and t.is_alive() and results == []
    t.join(timeout=30)
    assert results == [True] and complete(target)


@pytest.mark.parametrize("build", [FakeBuild(fail=True), lambda work, out, log: None], ids=["raises", "incomplete"])
def test_a_failed_build_leaves_no_cache_entry(tmp_path, build):
    target = tmp_path / "tool-v1"
    with pytest.raises(SandboxError):
        build_once(target, complete, build, lambda s: None, waiting="waiting")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".build.lock", "build.log"]
    # The next call builds.
    assert build_once(target, complete, FakeBuild(), lambda s: None, waiting="waiting") is True


def test_an_incomplete_folder_is_replaced(tmp_path):
    target = tmp_path / "tool-v1"
    target.mkdir()
    (target / "leftover").write_text("")
    assert build_once(target, complete, FakeBuild(), lambda s: None, waiting="waiting") is True
    assert sorted(p.name for p in target.iterdir()) == ["tool"]
