#!/usr/bin/env python3
"""k8sctl against the upstream create-clientconfig.sh over a network: one sandbox of 4 clusters
(0 the control plane, 1..3 data planes) behind toxiproxy, the round-trip time changed between
rounds through toxiproxy's API (half of it each way), so every figure comes from the same
clusters. Printed, never asserted.

Tables (wall time of a separate process, interpreter start included; median, min, max of
--runs runs; the two tools alternate run by run):
  create      first-run create-clientconfig: the script vs k8sctl, and k8sctl's no-op re-run
  handshakes  the same at --handshake-rtt with each new connection held one round trip more
              (benchmarks/handshake_delay.py): TCP's handshake, which toxiproxy does not delay
  sources     k8sctl with 1 and with 10 --src-context (first run and no-op)
  reconcile   a no-op `k8sctl reconcile` of a K8ssandraCluster with 20 datacenters over 3 clusters
  imports     `python -X importtime`: what each CLI path imports, and what it costs

Requests: k8sctl's are counted at its client (k8sctl.kube.STATS, an in-process run of the same
command); the script's from `kubectl -v=6` logs (a run through a logging kubectl, not timed).
The script runs unchanged except for its kind-only rewrite of a 127.0.0.1 server, which a
sandbox must skip (../shared/reference/README.md). It needs bash, GNU getopt, kubectl, yq, jq.
The script runs twice per round: with kubectl's discovery cache kept between runs (KUBECACHEDIR in
the benchmark's folder), as on a user's machine, and with it empty, as on a fresh CI runner or
container, where its first kubectl calls read the discovery documents (4 requests more a run).

Note: toxiproxy delays data, not the TCP handshake, so a new connection costs one round trip
(TLS 1.3) where a real network costs two (TCP + TLS). That favours the script: each of its
kubectl processes opens its own connection, one after another (about 9 a run), where k8sctl
opens its connections at once (one handshake on its critical path). The `handshakes` table
measures it: a relay in front of each proxy holds every new connection one round trip.

Usage: python benchmarks/network.py [--script PATH] [--kubectl PATH] [--rtt 0,50,100,200]
                                    [--runs 5] [--only create,handshakes,sources,reconcile,imports]
                                    [--handshake-rtt 100,200] [--plot DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from typer.testing import CliRunner  # noqa: E402

from k8sctl import kube  # noqa: E402
from k8sctl import kubeconfig as kc  # noqa: E402
from k8sctl.apis import clientconfig as clientconfig_api  # noqa: E402
from k8sctl.apis import k8ssandracluster as k8c  # noqa: E402
from k8sctl.cli import app  # noqa: E402
from k8sctl_sandbox import binaries, cluster, crds_and_identity, toxiproxy  # noqa: E402

NS = crds_and_identity.OPERATOR_NAMESPACE
CC = clientconfig_api.resource("v1beta1")
DEFAULT_SCRIPT = ROOT.parent / "shared" / "reference" / "create-clientconfig.sh"


def k8sctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "k8sctl", *args]


def timed(argv: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return wall


def counted(args: list[str]) -> int:
    kube.STATS.reset()
    r = CliRunner().invoke(app, args)
    if r.exit_code != 0:
        raise SystemExit(f"k8sctl {' '.join(args[:2])} failed: {r.output[-500:]}")
    return kube.STATS.requests


def stats(walls: list[float]) -> tuple[float, float, float]:
    return statistics.median(walls), min(walls), max(walls)


def direct_admin(c: cluster.ClusterInfo) -> kube.KubeClient:
    doc = kc.read_file(Path(c.kubeconfig))
    doc["clusters"][0]["cluster"]["server"] = c.direct_server
    return kube.KubeClient(doc, c.context, stats=kube.RequestStats())


def unregister(admin: kube.KubeClient, name: str, secret: str) -> None:
    for resource, obj in ((CC, name), (kube.SECRET, secret)):
        try:
            admin.delete(resource, obj, NS)
        except kube.NotFound:
            pass


class Script:
    """The upstream script, its 127.0.0.1 rewrite disabled, with a kubectl of our choosing first on PATH."""

    def __init__(self, path: Path, kubectl: str, work: Path):
        self.dir = work / "script"
        (self.dir / "bin").mkdir(parents=True)
        text = path.read_text()
        if '*"127.0.0.1"*' not in text:
            raise SystemExit(f"{path}: its 127.0.0.1 rewrite is not where expected; is it the upstream script?")
        self.path = self.dir / "create-clientconfig.sh"
        self.path.write_text(text.replace('*"127.0.0.1"*', '*"no-such-server-in-a-sandbox"*'))
        os.symlink(kubectl, self.dir / "bin" / "kubectl")
        # The same kubectl, logging every request (-v=6), for counting only.
        self.log = self.dir / "kubectl.log"
        (self.dir / "logbin").mkdir()
        shim = self.dir / "logbin" / "kubectl"
        shim.write_text(f'#!/bin/sh\nexec {kubectl} -v=6 "$@" 2>>{self.log}\n')
        shim.chmod(0o755)
        self.cache = work / "kubecache"
        self.cold_cache = work / "kubecache-cold"

    def argv(self, src_kubeconfig: str, dest_kubeconfig: str) -> list[str]:
        return ["bash", str(self.path), "--src-kubeconfig", src_kubeconfig, "--dest-kubeconfig", dest_kubeconfig,
                "--namespace", NS, "--output-dir", str(self.dir / "out")]

    def env(self, logging: bool = False, cold: bool = False) -> dict:
        """`cold`: an empty discovery cache, as on a fresh CI runner or container (each kubectl
        then reads /api and /apis first); else the cache the previous runs filled, as a user's."""
        first = self.dir / ("logbin" if logging else "bin")
        cache = self.cache
        if cold:
            shutil.rmtree(self.cold_cache, ignore_errors=True)
            cache = self.cold_cache
        return {**os.environ, "PATH": f"{first}:{os.environ['PATH']}", "KUBECACHEDIR": str(cache)}

    def requests(self, argv: list[str], cold: bool = False) -> int:
        self.log.write_text("")
        subprocess.run(argv, capture_output=True, env=self.env(logging=True, cold=cold), check=True)
        text = self.log.read_text()
        # kubectl >= 1.30 logs `"Response" verb="GET" url="https://..."`; older ones `GET https://... 200 OK`.
        return (len(re.findall(r'"Response" verb="[A-Z]+" url="https://', text))
                or len(re.findall(r"\b(?:GET|POST|PUT|PATCH|DELETE) https://\S+ \d{3}", text)))


def row(label: str, walls: list[float], requests: int | str, ratio: str = "") -> str:
    med, lo, hi = stats(walls)
    return f"| {label} | {med:.3f} | {lo:.3f} | {hi:.3f} | {requests} | {ratio} |"


HEADER = "| run | median s | min s | max s | requests | ratio |\n|---|---|---|---|---|---|"


class Files:
    """The kubeconfigs one create-clientconfig run uses: the source's (and its in-cluster view,
    whose server is stored), the destination's."""

    def __init__(self, src: str, src_in_cluster: str, dest: str):
        self.src, self.src_in_cluster, self.dest = src, src_in_cluster, dest


def bench_create(state, admins, script: Script | None, rtts: list[float], runs: int, set_rtt, plot: dict,
                 files: Files | None = None, title: str = "create-clientconfig, first run: upstream script vs k8sctl",
                 ) -> None:
    src, dest = state.clusters[1], state.clusters[0]
    files = files or Files(src.kubeconfig, src.in_cluster_kubeconfig, dest.kubeconfig)
    k_args = ["create-clientconfig", "--src-kubeconfig", files.src, "--dest-kubeconfig", files.dest,
              "--in-cluster-kubeconfig", files.src_in_cluster, "--name", "bench-k", "-o", "json"]
    s_argv = script.argv(files.src, files.dest) if script is not None else []
    script_name = src.context  # what the script names its ClientConfig (and Secret <name>-config)

    def clean() -> None:
        unregister(admins[0], "bench-k", "bench-k-config")
        unregister(admins[0], script_name, f"{script_name}-config")

    tools = ["script-warm", "script-cold", "k8sctl"] if script is not None else ["k8sctl"]
    labels = {"script-warm": "create-clientconfig.sh, kubectl discovery cache warm",
              "script-cold": "create-clientconfig.sh, kubectl discovery cache empty (fresh CI runner)",
              "k8sctl": "k8sctl, first run", "noop": "k8sctl, no-op re-run"}
    print(f"\n### {title}\n")
    for rtt in rtts:
        set_rtt(rtt)
        walls: dict[str, list[float]] = {t: [] for t in (*tools, "noop")}
        if script is not None:
            clean()
            timed(s_argv, script.env())  # warms kubectl's discovery cache, as a user's is
        for i in range(runs):
            for tool in tools[i % len(tools):] + tools[:i % len(tools)]:  # each goes first in turn
                clean()
                if tool == "k8sctl":
                    walls["k8sctl"].append(timed(k8sctl_argv(*k_args)))
                    walls["noop"].append(timed(k8sctl_argv(*k_args)))
                else:
                    walls[tool].append(timed(s_argv, script.env(cold=tool == "script-cold")))
        clean()
        reqs: dict[str, int | str] = {"k8sctl": counted(k_args), "noop": counted(k_args)}
        if script is not None:
            for tool in ("script-warm", "script-cold"):
                clean()
                reqs[tool] = script.requests(s_argv, cold=tool == "script-cold")
        print(f"RTT {rtt:g} ms\n\n{HEADER}")
        k8sctl_median = statistics.median(walls["k8sctl"])
        for tool in (*tools, "noop"):
            ratio = (f"k8sctl {statistics.median(walls[tool]) / k8sctl_median:.1f}x faster"
                     if tool.startswith("script") else "")
            print(row(labels[tool], walls[tool], reqs[tool], ratio))
            plot.setdefault(labels[tool], []).append((rtt, *stats(walls[tool])))
        print()
    clean()


def bench_create_with_handshakes(state, admins, script: Script | None, work: Path, rtts: list[float], runs: int,
                                 set_rtt, plot: dict) -> None:
    """The same, with each new connection held one round trip more (benchmarks/handshake_delay.py):
    TCP's handshake, which toxiproxy does not delay."""
    from handshake_delay import HandshakeDelay  # benchmarks/handshake_delay.py

    src, dest = state.clusters[1], state.clusters[0]

    def through(path: str, relay_port: int, proxy_port: int, name: str) -> str:
        text = Path(path).read_text().replace(f"127.0.0.1:{proxy_port}", f"127.0.0.1:{relay_port}")
        out = work / "handshake" / name
        out.parent.mkdir(exist_ok=True)
        kc.write_private(out, text)
        return str(out)

    for rtt in rtts:  # a relay per round-trip time
        relay = HandshakeDelay({c.context: c.proxy_port for c in (src, dest)}, rtt)
        try:
            files = Files(through(src.kubeconfig, relay.ports[src.context], src.proxy_port, "src.yaml"),
                          through(src.in_cluster_kubeconfig, relay.ports[src.context], src.proxy_port,
                                  "src-in-cluster.yaml"),
                          through(dest.kubeconfig, relay.ports[dest.context], dest.proxy_port, "dest.yaml"))
            bench_create(state, admins, script, [rtt], runs, set_rtt, plot, files,
                         f"create-clientconfig, first run, TCP handshakes delayed too (RTT {rtt:g} ms)")
        finally:
            relay.close()


def sources_kubeconfig(state, path: Path, n: int) -> list[str]:
    """n contexts src-0..src-(n-1), each an alias of one of the data planes 1..3 (round robin)."""
    docs = []
    names = []
    for i in range(n):
        c = state.clusters[1 + i % 3]
        doc = kc.read_file(Path(c.kubeconfig))
        name = f"src-{i}"
        doc["contexts"][0]["name"] = name
        doc["current-context"] = name
        doc["clusters"][0]["name"] = f"cluster-{i}"
        doc["contexts"][0]["context"]["cluster"] = f"cluster-{i}"
        doc["users"][0]["name"] = f"admin-{i}"
        doc["contexts"][0]["context"]["user"] = f"admin-{i}"
        docs.append(doc)
        names.append(name)
    kc.write_private(path, kc.dump(kc.merge(docs)))
    return names


def bench_sources(state, admins, work: Path, rtts: list[float], runs: int, set_rtt, plot: dict) -> None:
    path = work / "sources.kubeconfig"
    names = sources_kubeconfig(state, path, 10)
    dest = state.clusters[0]

    def args(n: int) -> list[str]:
        a = ["create-clientconfig", "--src-kubeconfig", str(path), "--dest-kubeconfig", dest.kubeconfig,
             "--in-cluster-kubeconfig", str(path), "-o", "json"]
        for name in names[:n]:
            a += ["--src-context", name]
        return a

    def clean() -> None:
        for name in names:
            unregister(admins[0], name, f"{name}-config")

    print("\n### create-clientconfig with 1 and with 10 --src-context (k8sctl)\n")
    for rtt in rtts:
        set_rtt(rtt)
        walls: dict[tuple[int, str], list[float]] = {}
        for i in range(runs):
            for n in ((1, 10) if i % 2 == 0 else (10, 1)):
                clean()
                walls.setdefault((n, "first"), []).append(timed(k8sctl_argv(*args(n))))
                walls.setdefault((n, "no-op"), []).append(timed(k8sctl_argv(*args(n))))
        reqs = {}
        for n in (1, 10):
            clean()
            reqs[(n, "first")] = counted(args(n))
            reqs[(n, "no-op")] = counted(args(n))
        print(f"RTT {rtt:g} ms\n\n{HEADER}")
        for kind in ("first", "no-op"):
            one = statistics.median(walls[(1, kind)])
            for n in (1, 10):
                ratio = "" if n == 1 else f"{statistics.median(walls[(n, kind)]) / one:.2f}x the time of 1"
                print(row(f"{n} source(s), {kind}", walls[(n, kind)], reqs[(n, kind)], ratio))
                plot.setdefault(f"{n} source(s), {kind}", []).append((rtt, *stats(walls[(n, kind)])))
        print()
    clean()


def bench_reconcile(state, admins, rtts: list[float], runs: int, set_rtt, plot: dict) -> None:
    from reconcile import k8ssandra_cluster  # benchmarks/reconcile.py

    from k8sctl import clientconfigs

    control = state.clusters[0]
    contexts = [state.clusters[1 + i % 3].context for i in range(20)]
    set_rtt(0)
    for i in (1, 2, 3):
        c = state.clusters[i]
        opts = clientconfigs.CreateOptions(src_kubeconfig=Path(c.kubeconfig), dest_kubeconfig=[Path(control.kubeconfig)],
                                           in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig))
        done = clientconfigs.complete(opts, {})
        clientconfigs.validate(done)
        clientconfigs.run(done)
    admins[0].apply(k8c.RESOURCE, k8ssandra_cluster("bench", contexts), force=True)
    args = ["reconcile", "bench", "--kubeconfig", control.kubeconfig, "-n", NS, "--no-gate", "-o", "json"]
    counted(args)  # creates the 20 datacenters
    print("\n### reconcile, no-op: 20 datacenters in 3 clusters (7, 7, 6)\n")
    print(HEADER)
    for rtt in rtts:
        set_rtt(rtt)
        walls = [timed(k8sctl_argv(*args)) for _ in range(runs)]
        reqs = counted(args)
        print(row(f"RTT {rtt:g} ms", walls, reqs))
        plot.setdefault("k8sctl reconcile, no-op", []).append((rtt, *stats(walls)))
    print()


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def import_costs(argv: list[str]) -> tuple[float, dict[str, float]]:
    """Total import time of a run and the cumulative time of each top-level package, in seconds."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "k8sctl", *argv], capture_output=True, text=True)
    tops: dict[str, float] = {}
    for m in IMPORT_LINE.finditer(r.stderr):
        if len(m.group(3)) == 1:  # a top-level import (one space of indent)
            name = m.group(4).split(".")[0]
            tops[name] = tops.get(name, 0.0) + int(m.group(2)) / 1e6
    return sum(tops.values()), tops


def bench_imports(state, work: Path) -> None:
    src, dest = state.clusters[2], state.clusters[0]
    exec_kc = work / "exec.kubeconfig"
    doc = kc.read_file(Path(dest.kubeconfig))
    # A user kubeconfig with an exec plugin: only the kubernetes package's loader serves it.
    # (`cat` of a file holding an ExecCredential with the admin's certificate and key.)
    import json
    user = doc["users"][0]["user"]
    import base64
    cred = work / "cred.json"
    cred.write_text(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                                "status": {"clientCertificateData": base64.b64decode(user["client-certificate-data"]).decode(),
                                           "clientKeyData": base64.b64decode(user["client-key-data"]).decode()}}))
    cred.chmod(0o600)
    doc["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "cat",
                                        "args": [str(cred)], "interactiveMode": "Never"}}
    kc.write_private(exec_kc, kc.dump(doc))
    paths = {
        "k8sctl --help": ["--help"],
        "create-clientconfig, inline kubeconfigs (no-op)": [
            "create-clientconfig", "--src-kubeconfig", src.kubeconfig, "--dest-kubeconfig", dest.kubeconfig,
            "--in-cluster-kubeconfig", src.in_cluster_kubeconfig, "--name", "imports", "--context-name", "imports",
            "-o", "json"],
        "create-clientconfig, destination with an exec plugin (no-op)": [
            "create-clientconfig", "--src-kubeconfig", src.kubeconfig, "--dest-kubeconfig", str(exec_kc),
            "--in-cluster-kubeconfig", src.in_cluster_kubeconfig, "--name", "imports", "--context-name", "imports",
            "-o", "json"],
        "reconcile, no-op": ["reconcile", "bench", "--kubeconfig", dest.kubeconfig, "-n", NS, "--no-gate", "-o", "json"],
    }
    counted(paths["create-clientconfig, inline kubeconfigs (no-op)"][:])  # registered once: the runs below are no-ops
    print("\n### python -X importtime: import cost per CLI path (seconds, cumulative per top-level package)\n")
    print("| path | all imports | largest |\n|---|---|---|")
    for label, argv in paths.items():
        runs = [import_costs(argv) for _ in range(3)]
        total = statistics.median(t for t, _ in runs)
        tops = runs[-1][1]
        largest = ", ".join(f"{k} {v:.3f}" for k, v in sorted(tops.items(), key=lambda kv: -kv[1])[:6])
        print(f"| {label} | {total:.3f} | {largest} |")
    print()


def write_plots(folder: Path, plots: dict[str, dict], day: str) -> None:
    from svgchart import line_chart  # benchmarks/svgchart.py

    titles = {"create": "create-clientconfig, first run: script vs k8sctl",
              "sources": "k8sctl create-clientconfig: 1 and 10 sources",
              "reconcile": "k8sctl reconcile, no-op: 20 datacenters, 3 clusters"}
    folder.mkdir(parents=True, exist_ok=True)
    for table, series in plots.items():
        if series and len(next(iter(series.values()))) > 1:
            path = folder / f"network-{table}.svg"
            line_chart(path, f"{titles[table]} ({day})", "round-trip time added (ms)", "wall time (s)", series)
            print(f"chart: {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", type=Path, default=DEFAULT_SCRIPT, help="the upstream create-clientconfig.sh")
    ap.add_argument("--kubectl", default=os.environ.get("KUBECTL") or shutil.which("kubectl") or "",
                    help="kubectl for the script (default: $KUBECTL, else kubectl on PATH)")
    ap.add_argument("--rtt", default="0,50,100,200", help="round-trip times in ms, comma-separated")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="create,handshakes,sources,reconcile,imports")
    ap.add_argument("--handshake-rtt", default="100,200",
                    help="round-trip times (ms) of the `handshakes` table: create-clientconfig with TCP's "
                         "handshake delayed too")
    ap.add_argument("--plot", type=Path, metavar="DIR",
                    help="also write a chart per table as DIR/network-<table>.svg (median, min-max band)")
    args = ap.parse_args()
    rtts = [float(x) for x in args.rtt.split(",")]
    only = set(args.only.split(","))
    script_ok = args.script.is_file() and args.kubectl and all(shutil.which(t) for t in ("yq", "jq", "getopt"))
    if "create" in only and not script_ok:
        print(f"note: the script is not run ({args.script} missing, or kubectl/yq/jq/getopt not found): "
              f"k8sctl's figures only")
    # k8sctl's byte code, as `pip install` leaves it: an editable install under
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run (~35 ms).
    import compileall

    compileall.compile_dir(str(ROOT / "k8sctl"), quiet=1)
    bins = binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None)
    proxy = toxiproxy.ensure(progress=print)
    with tempfile.TemporaryDirectory(prefix="k8sctl-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        state = cluster.up(work / "sb", 4, bins, prefix="bench", proxy_binary=proxy, rtt_ms=0)
        admins = []
        try:
            crds_and_identity.install_all(state)
            print(f"sandbox of 4 clusters behind toxiproxy ready in {time.perf_counter() - t0:.1f}s; "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
                  f"{os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
            if script_ok:
                v = subprocess.run([args.kubectl, "version", "--client"], capture_output=True, text=True).stdout
                print(f"script: {args.script}; kubectl {args.kubectl} ({v.splitlines()[0] if v else '?'})")
            admins = [direct_admin(c) for c in state.clusters]
            api = toxiproxy.Api(state.toxiproxy_port)

            def set_rtt(ms: float) -> None:
                for c in state.clusters:
                    toxiproxy.set_rtt(api, c.context, ms)

            script = Script(args.script, args.kubectl, work) if script_ok else None
            plots: dict[str, dict] = {"create": {}, "sources": {}, "reconcile": {}}
            if "create" in only:
                bench_create(state, admins, script, rtts, args.runs, set_rtt, plots["create"])
            if "handshakes" in only:
                bench_create_with_handshakes(state, admins, script, work,
                                             [float(x) for x in args.handshake_rtt.split(",")], args.runs, set_rtt,
                                             {})
            if "sources" in only:
                bench_sources(state, admins, work, rtts, args.runs, set_rtt, plots["sources"])
            if "reconcile" in only or "imports" in only:
                bench_reconcile(state, admins, rtts if "reconcile" in only else [0], args.runs, set_rtt,
                                plots["reconcile"])
            if args.plot:
                write_plots(args.plot, plots, time.strftime("%Y-%m-%d", time.gmtime()))
            if "imports" in only:
                set_rtt(0)
                bench_imports(state, work)
        finally:
            for a in admins:
                a.close()
            cluster.down(work / "sb")


if __name__ == "__main__":
    main()
