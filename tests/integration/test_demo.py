"""`make demo`'s script, end to end, as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_script_runs_the_whole_story(tmp_path, control_plane_binaries):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "KUBEBUILDER_ASSETS": str(control_plane_binaries.kube_apiserver.parent), "DEMO_DIR": str(tmp_path)}
    r = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    assert out.count("ClientConfig  kind-k8ssandra-") == 3 and "changed: False ['unchanged', 'unchanged']" in out
    assert out.count("marked Ready (standing in for cass-operator)") == 3
    final = out.split("CassandraDatacenters found in each cluster")[1]
    for i in (1, 2, 3):
        assert f"kind-k8ssandra-{i} │ k8ssandra-operator │ dc{i}" in final
    assert not (tmp_path / "sandbox").exists()  # torn down
