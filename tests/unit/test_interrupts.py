"""Signals during a first-run build: go and everything it started stop, with real processes.

The `go` here is a stand-in (a shell script that starts a child, as go starts compilers, and
waits): what is tested is k8sctl's handling of its process group, not Go.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLOW_GO = """#!/bin/sh
# Stands in for a long `go build`: a child that names the output folder, like go's compilers.
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
"{python}" -c 'import time; time.sleep(300)' "$out" &
echo started > "{ready}"
wait
"""


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig, code, words", [(signal.SIGTERM, 143, "terminated by SIGTERM"),
                                              (signal.SIGINT, 130, "interrupted")])
def test_signal_during_first_build_stops_go_and_its_children(tmp_path, sig, code, words):
    bindir, cache = tmp_path / "bin", tmp_path / "cache"
    bindir.mkdir()
    ready = tmp_path / "go-started"
    (bindir / "go").write_text(SLOW_GO.format(python=sys.executable, ready=ready))
    (bindir / "go").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "XDG_CACHE_HOME": str(cache),
           "KUBEBUILDER_ASSETS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "k8sctl", "sandbox", "binaries"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert processes_mentioning(str(cache))  # go's child runs
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert f"error: {words}: stopped everything this run had started" in err and "Traceback" not in err
    assert processes_mentioning(str(cache)) == []
    # No half-written cache: the build folder is gone and the lock is free.
    assert sorted(p.name for p in (cache / "k8sctl" / "controlplane").iterdir()) == [".build.lock", "build.log"]
