#!/usr/bin/env python3
"""reconcile at scale on a local sandbox: 1 control plane + 3 data-plane clusters.

For N datacenters spread evenly over the 3 data planes (--no-gate): wall time and
requests of a first reconcile (creates) and of a no-op reconcile. Then the same
60 datacenters all in one cluster, side by side with 3 x 20, to show that time
follows the busiest cluster, not the sum. Printed, never asserted.
Usage: python benchmarks/reconcile.py [--sizes 20,60,120]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k8sctl import clientconfigs, kube  # noqa: E402
from k8sctl import kubeconfig as kc  # noqa: E402
from k8sctl.cache import ClientCache  # noqa: E402
from k8sctl.reconcile import ReconcileOptions, run  # noqa: E402
from k8sctl.sandbox import binaries, cluster, k8ssandra  # noqa: E402

NS = k8ssandra.OPERATOR_NAMESPACE


def k8ssandra_cluster(name: str, contexts: list[str]) -> dict:
    return {
        "apiVersion": "k8ssandra.io/v1alpha1", "kind": "K8ssandraCluster", "metadata": {"name": name, "namespace": NS},
        "spec": {"cassandra": {
            "serverVersion": "4.1.5",
            "storageConfig": {"cassandraDataVolumeClaimSpec": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"],
                                                                "resources": {"requests": {"storage": "5Gi"}}}},
            "datacenters": [{"metadata": {"name": f"{name}-dc{i}"}, "k8sContext": ctx, "size": 3}
                            for i, ctx in enumerate(contexts)]}},
    }


def measure(local: kube.KubeClient, name: str) -> tuple[float, int, int]:
    kube.STATS.reset()
    t0 = time.perf_counter()
    cache = ClientCache.from_clientconfigs(local, NS)
    try:
        result = run(ReconcileOptions(name=name, namespace=NS, gate=False), cache)
    finally:
        cache.close()
    assert not result.failed, [r.error for r in result.datacenters if r.error]
    return time.perf_counter() - t0, kube.STATS.requests, kube.STATS.writes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20,60,120")
    sizes = [int(s) for s in ap.parse_args().sizes.split(",")]
    bins = binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "sb"
        state = cluster.up(d, 4, bins)
        try:
            for c in state.clusters:
                k8ssandra.prepare(c.kubeconfig, c.context)
            for c in state.clusters[1:]:
                opts = clientconfigs.CreateOptions(src_kubeconfig=Path(c.kubeconfig),
                                                   dest_kubeconfig=[Path(state.clusters[0].kubeconfig)],
                                                   in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig))
                done = clientconfigs.complete(opts, {})
                clientconfigs.run(done)
            local = kube.KubeClient(kc.read_file(Path(state.clusters[0].kubeconfig)), state.clusters[0].context)
            remotes = [c.context for c in state.clusters[1:]]
            print(f"{'datacenters':>12}{'layout':>10}{'first s':>10}{'requests':>10}{'writes':>8}"
                  f"{'no-op s':>10}{'requests':>10}{'writes':>8}")
            def spread(n: int) -> str:
                return "/".join(str(len(range(i, n, 3))) for i in range(3))

            runs = [(n, spread(n), [remotes[i % 3] for i in range(n)]) for n in sizes]
            runs.append((60, "60/0/0", [remotes[0]] * 60))
            timing = {}
            for n, layout, contexts in runs:
                name = f"b{n}-{len(timing)}"
                local.apply(kube.K8SSANDRA_CLUSTER, k8ssandra_cluster(name, contexts), force=True)
                first = measure(local, name)
                noop = measure(local, name)
                timing[layout] = (first[0], noop[0])
                print(f"{n:>12}{layout:>10}{first[0]:>10.2f}{first[1]:>10}{first[2]:>8}{noop[0]:>10.2f}{noop[1]:>10}{noop[2]:>8}")
            if "20/20/20" in timing:
                a, b = timing["60/0/0"], timing["20/20/20"]
                print(f"60 datacenters: one cluster / three clusters = {a[0] / b[0]:.2f}x (first), {a[1] / b[1]:.2f}x (no-op)")
            print("no-op requests = 1 K8ssandraCluster GET + 1 ClientConfig list + 3 Secret GETs + 1 GET per datacenter")
        finally:
            cluster.down(d)


if __name__ == "__main__":
    main()
