#!/usr/bin/env python3
"""reconcile on local sandboxes. Printed, never asserted.

crd-forms: the documented 3-datacenter demo with `--config-source auto` (and --no-gate, so a
first run writes all three) on each real CassandraDatacenter CRD form: production (auto goes
inline) and unpatched (auto goes through configSecret). For a first run and a no-op run: wall
time, requests by method, how many were dry runs (the auto probe and the validation before
writing) and how many were real writes. 3 clusters: a control plane, one cluster per form, each
registered under three contexts (one per datacenter).

scale: for N datacenters spread evenly over 3 data planes (--no-gate): wall time and requests of
a first reconcile (creates) and of a no-op reconcile. Then the same 60 datacenters all in one
cluster, side by side with 3 x 20, to show that time follows the busiest cluster, not the sum.
Usage: python benchmarks/reconcile.py [--only crd-forms|scale] [--rtt-ms 0,100] [--sizes 20,60,120]
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
from k8sctl.apis import k8ssandracluster as k8c  # noqa: E402
from k8sctl.cache import ClientCache  # noqa: E402
from k8sctl.reconcile import ReconcileOptions, run  # noqa: E402
from k8sctl_sandbox import binaries, cluster, crds_and_identity  # noqa: E402
from k8sctl_sandbox.crds_and_identity import install_cassandradatacenter_crd  # noqa: E402

NS = crds_and_identity.OPERATOR_NAMESPACE


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


def timed_reconcile(local: kube.KubeClient, name: str, requests: Requests):
    """One reconcile (no gating), its requests logged afresh: its result and wall time."""
    requests.log.clear()
    t0 = time.perf_counter()
    cache = ClientCache.from_clientconfigs(local, NS)
    try:
        result = run(ReconcileOptions(name=name, namespace=NS, gate=False), cache)
    finally:
        cache.close()
    elapsed = time.perf_counter() - t0
    assert not result.failed, [r.error for r in result.datacenters if r.error]
    return result, elapsed


def measure(local: kube.KubeClient, name: str, requests: Requests) -> tuple[float, int, int, int]:
    """Wall time, requests, dry runs and real writes of one reconcile."""
    _, elapsed = timed_reconcile(local, name, requests)
    dry = sum(1 for _, d in requests.log if d)
    writes = sum(1 for m, d in requests.log if m != "GET" and not d)
    return elapsed, len(requests.log), dry, writes


def demo(name: str, contexts: list[str]) -> dict:
    """examples/k8ssandracluster-demo.yaml, named `name`, its dc1..dc3 (as <name>-dcN) in `contexts`."""
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "k8ssandracluster-demo.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": NS}
    for dc, ctx in zip(doc["spec"]["cassandra"]["datacenters"], contexts):
        dc["metadata"]["name"] = f"{name}-{dc['metadata']['name']}"
        dc["k8sContext"] = ctx
    return doc


class Requests:
    """Every request of this process: method and whether it was a dry run (kube.STATS does not tell)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, bool]] = []
        self.rtt = 0.0  # seconds added before each request: a stand-in for a remote region's round trip
        real = kube.KubeClient.request

        def spy(client, method, path, body=None, *, query=None, **kw):
            self.log.append((method, (query or {}).get("dryRun") == "All"))
            if self.rtt:
                time.sleep(self.rtt)
            return real(client, method, path, body, query=query, **kw)

        kube.KubeClient.request = spy  # type: ignore[method-assign]

    def summary(self) -> str:
        by_method: dict[str, int] = {}
        for method, _ in self.log:
            by_method[method] = by_method.get(method, 0) + 1
        dry = sum(1 for _, d in self.log if d)
        writes = sum(1 for m, d in self.log if m != "GET" and not d)
        methods = " ".join(f"{m}={n}" for m, n in sorted(by_method.items()))
        return f"{len(self.log):>4} requests ({methods}; {dry} dry runs, {writes} writes)"


def crd_forms(bins: binaries.Binaries, rtts_ms: list[int], requests: Requests) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "sb"
        state = cluster.up(d, 3, bins, prefix="bench")
        try:
            crds_and_identity.install_all(state)
            forms = {"production": state.clusters[1], "unpatched": state.clusters[2]}
            for form, c in forms.items():
                client = kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context)
                install_cassandradatacenter_crd(client, form)
                client.close()
                for n in (1, 2, 3):
                    opts = clientconfigs.CreateOptions(
                        src_kubeconfig=Path(c.kubeconfig), dest_kubeconfig=[Path(state.clusters[0].kubeconfig)],
                        in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig), name=f"{form}-{n}",
                        context_name=f"{form}-{n}", output_dir=Path(tmp) / "clientconfigs")
                    clientconfigs.run(clientconfigs.complete(opts, {}))
            local = kube.KubeClient(kc.read_file(Path(state.clusters[0].kubeconfig)), state.clusters[0].context)
            print("the demo (3 datacenters, 3 contexts), --config-source auto --no-gate; with an added delay per "
                  "request standing in for the round trip to a remote region, wall time / delay ~ round trips in a row")
            for rtt in rtts_ms:
                requests.rtt = rtt / 1000
                for form in forms:
                    name = f"demo-{form}-{rtt}"
                    local.apply(k8c.RESOURCE, demo(name, [f"{form}-{n}" for n in (1, 2, 3)]), force=True)
                    for run_name in ("first run", "no-op run"):
                        result, elapsed = timed_reconcile(local, name, requests)
                        sources = sorted({r.config_source or "-" for r in result.datacenters})
                        acts = ",".join(r.action for r in result.datacenters)
                        in_a_row = f" ~{elapsed / requests.rtt:4.1f} in a row" if requests.rtt else ""
                        print(f"  +{rtt:>3} ms {form:<11}{run_name:<10}{elapsed:>7.2f} s{in_a_row} "
                              f"{requests.summary()}  source {'/'.join(sources)}; {acts}")
            local.close()
        finally:
            cluster.down(d)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20,60,120")
    ap.add_argument("--only", choices=("crd-forms", "scale"))
    ap.add_argument("--rtt-ms", default="0,100", help="delays added per request in crd-forms, comma-separated")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    bins = binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None)
    requests = Requests()
    if args.only != "scale":
        crd_forms(bins, [int(x) for x in args.rtt_ms.split(",")], requests)
        requests.rtt = 0.0
    if args.only == "crd-forms":
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "sb"
        state = cluster.up(d, 4, bins)
        try:
            crds_and_identity.install_all(state)
            for c in state.clusters[1:]:
                opts = clientconfigs.CreateOptions(src_kubeconfig=Path(c.kubeconfig),
                                                   dest_kubeconfig=[Path(state.clusters[0].kubeconfig)],
                                                   in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig))
                done = clientconfigs.complete(opts, {})
                clientconfigs.run(done)
            local = kube.KubeClient(kc.read_file(Path(state.clusters[0].kubeconfig)), state.clusters[0].context)
            remotes = [c.context for c in state.clusters[1:]]
            print(f"{'datacenters':>12}{'layout':>10}{'first s':>10}{'requests':>10}{'dry':>6}{'writes':>8}"
                  f"{'no-op s':>10}{'requests':>10}{'writes':>8}")
            def spread(n: int) -> str:
                return "/".join(str(len(range(i, n, 3))) for i in range(3))

            runs = [(n, spread(n), [remotes[i % 3] for i in range(n)]) for n in sizes]
            runs.append((60, "60/0/0", [remotes[0]] * 60))
            timing = {}
            for n, layout, contexts in runs:
                name = f"b{n}-{len(timing)}"
                local.apply(k8c.RESOURCE, k8ssandra_cluster(name, contexts), force=True)
                first = measure(local, name, requests)
                noop = measure(local, name, requests)
                timing[layout] = (first[0], noop[0])
                print(f"{n:>12}{layout:>10}{first[0]:>10.2f}{first[1]:>10}{first[2]:>6}{first[3]:>8}"
                      f"{noop[0]:>10.2f}{noop[1]:>10}{noop[3]:>8}")
            if "20/20/20" in timing:
                a, b = timing["60/0/0"], timing["20/20/20"]
                print(f"60 datacenters: one cluster / three clusters = {a[0] / b[0]:.2f}x (first), {a[1] / b[1]:.2f}x (no-op)")
            print("no-op requests = 1 K8ssandraCluster GET + 1 ClientConfig list + 3 Secret GETs + 1 GET per datacenter "
                  "(inline config)")
        finally:
            cluster.down(d)


if __name__ == "__main__":
    main()
