"""What a first run prints: one line per step off a terminal, a live display on one."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from k8sctl.cli.progress import StepReporter, clock

FAKE_GO = """#!/bin/sh
# Stands in for `go build ... -o OUT PKG...`: writes empty executables where go would.
echo "fake go $*"
[ -n "$FAKE_GO_SLEEP" ] && sleep "$FAKE_GO_SLEEP"
while [ $# -gt 0 ]; do
  if [ "$1" = "-o" ]; then out="$2"; shift; fi
  last="$1"; shift
done
case "$out" in
  */) for b in kube-apiserver kube-controller-manager; do printf '#!/bin/sh\\n' > "$out$b"; chmod +x "$out$b"; done ;;
  *) printf '#!/bin/sh\\n' > "$out"; chmod +x "$out" ;;
esac
"""


def fake_go(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    (bindir / "go").write_text(FAKE_GO)
    (bindir / "go").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "KUBEBUILDER_ASSETS": ""}


def test_clock():
    assert [clock(s) for s in (0, 9.9, 60, 425)] == ["0s", "9s", "1m00s", "7m05s"]


def test_off_a_terminal_one_line_per_step_with_elapsed_time():
    out = io.StringIO()
    r = StepReporter(out, tty=False, heartbeat=0)
    r("go build etcd")
    r("go build [kube-apiserver]")
    r.close()
    assert out.getvalue().splitlines() == ["[    0s] go build etcd", "[    0s] go build [kube-apiserver]"]


def test_a_long_step_says_it_is_still_running():
    out = io.StringIO()
    r = StepReporter(out, tty=False, heartbeat=0.05)
    r("go build kube-apiserver")
    time.sleep(0.3)
    r.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[    0s] go build kube-apiserver"
    assert len(lines) >= 2 and all(re.fullmatch(r"\[ +0s\] \.\.\. go build kube-apiserver: still running "
                                                r"\(0s in this step\)", x) for x in lines[1:])


def test_on_a_terminal_finished_steps_stay_with_their_duration():
    out = io.StringIO()
    r = StepReporter(out, tty=True)
    r("starting etcd")
    r("server https://[fd00::5]:6443")
    r.close()
    text = out.getvalue()
    assert "✓ starting etcd (0s)" in text
    assert "✓ server https://[fd00::5]:6443 (0s)" in text  # markup escaped


def test_first_build_prints_its_steps_when_not_on_a_terminal(tmp_path):
    env = fake_go(tmp_path)
    r = subprocess.run([sys.executable, "-m", "k8sctl", "sandbox", "binaries", "-o", "json"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    steps = [re.sub(r"^\[ *\d+(m\d\ds|s)\] ", "", line) for line in r.stderr.splitlines()]
    assert len(steps) == 4 and all(re.match(r"^\[ *\d+(m\d\ds|s)\] ", line) for line in r.stderr.splitlines())
    assert steps[0].startswith("first run: building the control plane from Go modules into ")
    assert "about 7 minutes on 2 cores" in steps[0] and steps[0].endswith("build.log")
    assert steps[1].startswith("go build etcd v3.") and steps[1].endswith("(step 1 of 2)")
    assert steps[2].startswith("go build kube-apiserver and kube-controller-manager v1.") and steps[2].endswith("(step 2 of 2)")
    assert steps[3].startswith("built etcd, kube-apiserver, kube-controller-manager (0 MB) into ")
    # A second run finds the cache and prints nothing on stderr.
    again = subprocess.run([sys.executable, "-m", "k8sctl", "sandbox", "binaries", "-o", "json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stderr == ""


def test_a_build_waiting_for_another_says_so(tmp_path):
    import fcntl

    env = fake_go(tmp_path)
    root = tmp_path / "cache" / "k8sctl" / "controlplane"
    root.mkdir(parents=True)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another k8sctl is building
        proc = subprocess.Popen([sys.executable, "-m", "k8sctl", "sandbox", "binaries", "-o", "json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stderr.readline()
        assert re.fullmatch(r"\[ +\d+s\] waiting for another k8sctl that is building the same binaries into "
                            r".*kubernetes-v1\.37\.2_etcd-v3\.6\.16\n", first), first
        assert proc.poll() is None
    _, rest = proc.communicate(timeout=60)  # the lock is free: it builds
    assert proc.returncode == 0 and "go build etcd" in rest
