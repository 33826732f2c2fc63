#!/usr/bin/env python3
"""The real k8ssandra-operator on a sandbox: build, start-up, restarts per k8sctl command.

Figures: the manager's build (cache hit; a rebuild with Go's caches warm into an empty
k8sctl cache), `sandbox up --clusters 2 --operator`, the manager's start-up, and for each
create-clientconfig run (new registration, unchanged rerun, token rotation) the restarts it
caused and how long until the operator served again; then K8ssandraCluster applied to
CassandraDatacenter in the data plane. A cold build needs empty Go caches, which other
work shares: it is not redone here (the README gives the figure measured once).
Printed, never asserted. Usage: python benchmarks/operator.py
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typer.testing import CliRunner  # noqa: E402

from k8sctl import kube  # noqa: E402
from k8sctl import kubeconfig as kc  # noqa: E402
from k8sctl.apis import cassandradatacenter as cdc  # noqa: E402
from k8sctl.apis import k8ssandracluster as k8c  # noqa: E402
from k8sctl.cli import app  # noqa: E402
from k8sctl_sandbox import operator  # noqa: E402

NS = "k8ssandra-operator"
SETTLE = 5.0  # seconds given to the operator to react to a command before counting restarts


def invoke(*argv: str) -> str:
    r = CliRunner().invoke(app, list(argv))
    if r.exit_code != 0:
        sys.exit(f"k8sctl {' '.join(argv[:2])} failed: {r.output.strip()}")
    return r.stdout


def main() -> None:
    why = operator.unavailable_reason()
    if why:
        sys.exit(f"cannot run the operator here: {why}")
    source = operator.resolve_source(None)
    t0 = time.monotonic()
    operator.build(source)
    print(f"manager build, cache hit:                 {time.monotonic() - t0:6.2f} s")
    with tempfile.TemporaryDirectory(dir=operator.cache_root().parent) as tmp:
        t0 = time.monotonic()
        manager, _ = operator.build(source, root=Path(tmp))
        print(f"manager build, Go caches warm:            {time.monotonic() - t0:6.2f} s "
              f"({manager.stat().st_size / 2**20:.0f} MB)")

    with tempfile.TemporaryDirectory(prefix="k8sctl-bench-operator-") as tmp:
        d = Path(tmp) / "sandbox"
        t0 = time.monotonic()
        up = json.loads(invoke("sandbox", "up", "--clusters", "2", "--operator", "--dir", str(d), "-o", "json"))
        print(f"sandbox up --clusters 2 --operator (warm cache):  {time.monotonic() - t0:6.2f} s")
        print(f"operator start-up (spawn to serving):     {up['operator']['startupSeconds']:6.2f} s")
        try:
            c0, c1 = up["clusters"]
            register = ["create-clientconfig", "--src-kubeconfig", c1["kubeconfig"], "--dest-kubeconfig",
                        c0["kubeconfig"], "--in-cluster-kubeconfig", c1["inClusterKubeconfig"],
                        "--output-dir", str(Path(tmp) / "cc"), "-o", "json"]
            for label, extra in (("new registration", []), ("same input again", []),
                                 ("token rotation", ["--token-source", "request"])):
                before = operator.wait_ready(d, timeout=60)
                t0 = time.monotonic()
                out = json.loads(invoke(*register, *extra))
                actions = [o["action"] for o in out["registrations"][0]["objects"]]
                if out["changed"]:
                    operator.wait_ready(d, timeout=60, after_runs=before["runs"])
                    back = time.monotonic() - t0
                time.sleep(SETTLE)
                after = operator.wait_ready(d, timeout=60)
                restarts = after["restarts"] - before["restarts"]
                served = f", serving again after {back:.2f} s" if out["changed"] else ""
                print(f"create-clientconfig, {label + ':':17s} {restarts} restart(s) ({'/'.join(actions)}){served}")

            control = kube.KubeClient(kc.read_file(Path(c0["kubeconfig"])), c0["context"])
            data = kube.KubeClient(kc.read_file(Path(c1["kubeconfig"])), c1["context"])
            doc = {"apiVersion": "k8ssandra.io/v1alpha1", "kind": "K8ssandraCluster",
                   "metadata": {"name": "bench", "namespace": NS},
                   "spec": {"cassandra": {"serverVersion": "4.0.17", "datacenters": [{
                       "metadata": {"name": "dc1"}, "k8sContext": c1["context"], "size": 1,
                       "storageConfig": {"cassandraDataVolumeClaimSpec": {
                           "storageClassName": "standard", "accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "5Gi"}}}}}]}}}
            t0 = time.monotonic()
            control.apply(k8c.RESOURCE, doc, force=True)
            while data.get_or_none(cdc.RESOURCE, "dc1", NS) is None:
                time.sleep(0.05)
            print(f"K8ssandraCluster applied -> CassandraDatacenter in the data plane: {time.monotonic() - t0:.2f} s")
            control.close()
            data.close()
        finally:
            invoke("sandbox", "down", "--dir", str(d))


if __name__ == "__main__":
    main()
