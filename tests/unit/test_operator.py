"""Pure parts of `sandbox up --operator`: source checks, cache key, manifests, restart reasons,
and the supervisor with a stand-in manager (a shell script, not the operator)."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k8sctl.errors import UsageError
from k8sctl_sandbox import operator, operator_supervisor, processes


def fake_source(root: Path) -> Path:
    (root / "config" / "rbac").mkdir(parents=True)
    (root / "go.mod").write_text(f"module {operator.MODULE}\n\ngo 1.26\n")
    (root / "main.go").write_text("package main\n\nfunc main() {}\n")
    (root / "config" / "rbac" / "role.yaml").write_text(
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: k8ssandra-operator\n"
        "  namespace: k8ssandra\nrules:\n- apiGroups: ['']\n  resources: [secrets]\n  verbs: [get]\n")
    return root


def test_source_missing_says_what_to_pass(tmp_path):
    with pytest.raises(UsageError, match=r"no k8ssandra-operator source at .*: pass --operator-source DIR \(a checkout"):
        operator.resolve_source(None, default=tmp_path / "absent")


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "has no go.mod"),
    (lambda d: (d / "go.mod").write_text("module example.com/other\n"), "is not the k8ssandra-operator module"),
])
def test_wrong_source_is_refused(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(UsageError, match=message):
        operator.resolve_source(tmp_path)


def test_source_hash_follows_code_not_manifests(tmp_path):
    src = operator.resolve_source(fake_source(tmp_path))
    first = operator.source_hash(src, "go1.26.8")
    (src / "config" / "rbac" / "role.yaml").write_text("changed: true\n")
    assert operator.source_hash(src, "go1.26.8") == first
    assert operator.source_hash(src, "go1.27.0") != first
    (src / "main.go").write_text("package main\n\nfunc main() { println() }\n")
    assert operator.source_hash(src, "go1.26.8") != first


def test_role_gets_the_namespace_and_its_binding(tmp_path):
    role = operator.role_document(fake_source(tmp_path), "ops")
    assert role["metadata"] == {"name": "k8ssandra-operator", "namespace": "ops"}
    binding = operator.role_binding_document(role, "ops")
    assert binding["roleRef"]["name"] == "k8ssandra-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "k8ssandra-operator", "namespace": "ops"}]


def test_webhook_points_at_the_fixed_loopback_port():
    doc = operator.webhook_document(b"-----BEGIN CERTIFICATE-----\n")
    hook = doc["webhooks"][0]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/validate-k8ssandra-io-v1alpha1-k8ssandracluster"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == b"-----BEGIN CERTIFICATE-----\n"
    assert hook["rules"][0]["resources"] == ["k8ssandraclusters"] and hook["failurePolicy"] == "Fail"


def test_missing_cass_operator_crds_are_named(tmp_path):
    src = fake_source(tmp_path / "src")
    (src / "config" / "crd" / "bases").mkdir(parents=True)
    (src / "config" / "crd" / "bases" / "k8ssandra.io_k8ssandraclusters.yaml").write_text("kind: CustomResourceDefinition\n")
    with pytest.raises(UsageError, match="cassandra.datastax.com_cassandradatacenters.yaml"):
        operator.crd_paths(src, tmp_path / "no-crds")


def test_port_holder_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert operator.webhook_port_holder(port).startswith(f"process {os.getpid()} (")
    assert operator.webhook_port_holder(port) is None


@pytest.mark.parametrize("log, reason", [
    ("INFO a\nINFO ClientConfig ns/x is missing hash annotations, shutting down the operator\nINFO Stopping\n",
     "INFO ClientConfig ns/x is missing hash annotations, shutting down the operator"),
    ("INFO a\nERROR setup unable to load image config\nINFO b\n", "ERROR setup unable to load image config"),
    ("INFO a\nINFO last\n\n", "INFO last"),
    ("", ""),
])
def test_reason_line(log, reason):
    assert operator_supervisor.reason_line(log) == reason


def test_backoff_grows_and_resets():
    assert operator_supervisor.backoff(0.0, 60.0) == 0.0
    assert operator_supervisor.backoff(0.0, 0.5) == 1.0
    assert operator_supervisor.backoff(8.0, 0.5) == 16.0
    assert operator_supervisor.backoff(30.0, 0.5) == 30.0


def test_supervisor_restarts_counts_and_stops(tmp_path):
    # Stand-in manager: the first two runs log a reason and exit 0, later runs stay up.
    script = tmp_path / "manager.sh"
    script.write_text('n=$(cat "$1" 2>/dev/null || echo 0); echo $((n+1)) > "$1"\n'
                      'if [ "$n" -lt 2 ]; then echo "INFO run $n: ClientConfig x was deleted, shutting down the operator";'
                      ' echo "INFO Stopping and waiting"; exit 0; fi\n'
                      'echo "INFO serving"; exec sleep 60\n')
    config = {"argv": ["/bin/sh", str(script), str(tmp_path / "count")], "env": {"X": "1"}, "unsetEnv": [],
              "log": str(tmp_path / "operator.log"), "pidFile": str(tmp_path / "operator.pid"),
              "status": str(tmp_path / "status.json")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    sup = subprocess.Popen([sys.executable, "-m", "k8sctl_sandbox.operator_supervisor", str(tmp_path)],
                           stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        status = {}
        while time.monotonic() < deadline:
            status = json.loads((tmp_path / "status.json").read_text()) if (tmp_path / "status.json").exists() else {}
            if status.get("runs") == 3 and status.get("state") == "running":
                break
            time.sleep(0.1)
        assert status["restarts"] == 2 and status["runs"] == 3
        assert status["lastExit"]["code"] == 0
        assert status["lastExit"]["reason"] == "INFO run 1: ClientConfig x was deleted, shutting down the operator"
        # A pid record (sandbox/processes.py): pid and start time; no command line (the wrapper execs).
        record = processes.ProcessRecord.read(tmp_path / "operator.pid")
        assert record is not None and record.pid == status["pid"] and record.argv == ()
    finally:
        sup.send_signal(signal.SIGTERM)
        out, _ = sup.communicate(timeout=15)
    assert sup.returncode == 0
    lines = out.splitlines()
    assert "run 0: ClientConfig x was deleted" in lines[0] and "restart #1" in lines[0]
    assert "run 1:" in lines[1] and "restart #2 in 2s" in lines[1]
    assert "operator stopped" in lines[2]
    final = json.loads((tmp_path / "status.json").read_text())
    assert final["state"] == "stopped" and final["restarts"] == 2
    assert not (tmp_path / "operator.pid").exists()


@pytest.mark.parametrize("argv, message", [
    (["--operator", "--operator-source", "/nonexistent/k8ssandra-operator"],
     "error: --operator-source /nonexistent/k8ssandra-operator has no go.mod: pass a checkout of "
     "k8ssandra/k8ssandra-operator v1.32.5"),
    (["--operator-source", "/tmp"], "error: --operator-source needs --operator"),
])
def test_up_refuses_a_bad_operator_source_in_one_line(tmp_path, argv, message):
    from typer.testing import CliRunner

    from k8sctl.cli import app

    r = CliRunner().invoke(app, ["sandbox", "up", "--dir", str(tmp_path / "sb"), *argv])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "sb").exists()


def test_status_line_shows_the_reason_without_time_and_fields():
    r = {"state": "running", "pid": 42, "started": "2026-11-27T05:37:36Z", "context": "kind-k8ssandra-0",
         "namespace": "k8ssandra-operator", "restarts": 1,
         "lastExit": {"code": 0, "reason": '2026-11-27T05:37:35.263Z\tINFO\tClientConfig k8ssandra-operator/x is missing '
                                           'hash annotations, shutting down the operator\t{"controller": "clientconfig"}'}}
    assert operator.status_line(r) == (
        "operator: running (pid 42, since 2026-11-27T05:37:36Z) in kind-k8ssandra-0/k8ssandra-operator, 1 restart(s); "
        "last exit: INFO ClientConfig k8ssandra-operator/x is missing hash annotations, shutting down the operator")


def test_no_unshare_is_one_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(operator.shutil, "which", lambda name: None)
    assert operator.check_private_namespace("ns", tmp_path / "utab") == "unshare (util-linux) is not installed"


def test_namespace_wrapper_gives_the_file_and_keeps_the_hosts_run(tmp_path):
    """The wrapper itself (no operator): the command sees the namespace file, the host does not."""
    if operator.check_private_namespace("ns-x", tmp_path / "utab" / "utab"):
        pytest.skip("no private mount namespace on this machine")
    prefix, env = operator.namespace_wrapper("ns-x", tmp_path / "utab" / "utab")
    out = subprocess.run([*prefix, "sh", "-c", f'cat {operator.NAMESPACE_FILE}; echo; grep -c k8sctl-operator-run /proc/self/mountinfo'],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["ns-x", "1"]  # the file, then its tmpfs in this namespace's mounts
    assert "k8sctl-operator-run" not in Path("/proc/self/mountinfo").read_text()
