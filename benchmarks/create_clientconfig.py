#!/usr/bin/env python3
"""create-clientconfig on a fresh 2-cluster sandbox: wall time, HTTP requests, peak memory.

Wall time and peak RSS come from `k8sctl` run as a separate process (interpreter
start included); requests are counted at the client (k8sctl.kube.STATS) in a
second, in-process run of the same command. Printed, never asserted.
Usage: python benchmarks/create_clientconfig.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from k8sctl import kube
from k8sctl.cli import app
from k8sctl_sandbox import binaries, cluster, crds_and_identity


def run_process(argv: list[str]) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "k8sctl", *argv], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    return wall, max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)


def run_counted(argv: list[str]) -> dict[str, int]:
    kube.STATS.reset()
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    return dict(kube.STATS.by_method, total=kube.STATS.requests)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="no-op re-runs to time")
    args = ap.parse_args()
    bins = binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "sb"
        t0 = time.perf_counter()
        state = cluster.up(d, 3, bins)
        crds_and_identity.install_all(state)
        print(f"sandbox of 3 clusters ready in {time.perf_counter() - t0:.1f}s")
        try:
            def argv(src: int, name: str) -> list[str]:
                c = state.clusters[src]
                return ["create-clientconfig", "--src-kubeconfig", c.kubeconfig,
                        "--dest-kubeconfig", state.clusters[0].kubeconfig,
                        "--in-cluster-kubeconfig", c.in_cluster_kubeconfig, "--name", name,
                        "--output-dir", str(Path(tmp) / "out"), "-o", "json"]

            first_wall, rss = run_process(argv(1, "bench-a"))
            noop_walls = [run_process(argv(1, "bench-a"))[0] for _ in range(args.repeat)]
            first_reqs = run_counted(argv(2, "bench-b"))  # a first run too, on the other data plane
            noop_reqs = run_counted(argv(2, "bench-b"))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "k8sctl", "--help"], check=True, capture_output=True)
            help_wall = time.perf_counter() - t0
        finally:
            cluster.down(d)
    print(f"{'run':<22}{'wall s':>10}{'requests':>10}  by method")
    print(f"{'first (token Secret)':<22}{first_wall:>10.3f}{first_reqs['total']:>10}  "
          f"{ {k: v for k, v in first_reqs.items() if k != 'total'} }")
    print(f"{'no-op re-run (median)':<22}{statistics.median(noop_walls):>10.3f}{noop_reqs['total']:>10}  "
          f"{ {k: v for k, v in noop_reqs.items() if k != 'total'} }")
    print(f"peak RSS of one k8sctl process: {rss / 1024:.1f} MiB")
    print(f"k8sctl --help wall: {help_wall:.3f}s (one run)")


if __name__ == "__main__":
    main()
