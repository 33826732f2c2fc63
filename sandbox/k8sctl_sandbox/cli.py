"""`k8sctl sandbox ...`: local Kubernetes control planes for trying and testing k8sctl."""
from __future__ import annotations

import enum
import os
import time
from pathlib import Path
from typing import Any, Optional

import typer

from k8sctl.cli.common import Output, OutputOption, console, handle_errors, render
from k8sctl.cli.groups import FullHelpGroup
from k8sctl.errors import UsageError

app = typer.Typer(help="Run real Kubernetes control planes on loopback (no Docker, no kind).", no_args_is_help=True,
                  rich_markup_mode=None, cls=FullHelpGroup)



class CassandraDatacenterCrd(str, enum.Enum):
    """The names of k8sctl_sandbox.crds_and_identity.CASSANDRADATACENTER_CRDS (kept here so --help imports nothing)."""

    production = "production"
    unpatched = "unpatched"


DirOption = typer.Option(Path(".sandbox"), "--dir", help="Folder holding the sandbox's state, kubeconfigs and logs.")


def _progress():
    """Steps on stderr (a spinner on a terminal, else one line each); returns (callback, stop)."""
    from k8sctl.cli.progress import StepReporter

    reporter = StepReporter()
    return reporter, reporter.close


def _binaries(progress, allow_build: bool = True, kubernetes_version: str | None = None):
    from k8sctl_sandbox import binaries

    return binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None, progress=progress,
                           allow_build=allow_build, kubernetes_version=kubernetes_version)


# Kept literal so that --help imports nothing; tests/unit/test_kubernetes_versions.py checks it.
KUBERNETES_VERSION_HELP = ("Kubernetes minor version to run: 1.34, 1.35, 1.36 or 1.37 (default: 1.37). Each is built "
                           "once from Go modules (about 7 minutes on 2 cores) and cached beside the others.")
KubernetesVersionOption = typer.Option(None, "--kubernetes-version", show_default=False, help=KUBERNETES_VERSION_HELP)


@app.command("binaries")
@handle_errors
def binaries_cmd(kubernetes_version: Optional[str] = KubernetesVersionOption, output: Output = OutputOption) -> None:
    """Build (once) or locate etcd, kube-apiserver and kube-controller-manager, and print where they are."""
    from k8sctl import interrupts
    from k8sctl_sandbox import binaries

    release = binaries.kubernetes_release(kubernetes_version) if kubernetes_version is not None else None
    t0 = time.monotonic()
    update, stop = _progress()
    try:
        with interrupts.signals_raise():
            bins = _binaries(update, kubernetes_version=release)
    except KeyboardInterrupt as e:
        stop()
        raise _interrupted(e, None) from None
    finally:
        stop()
    data = {
        "kubernetesVersion": release or binaries.KUBERNETES_VERSION,
        "etcdVersion": binaries.ETCD_VERSION,
        "binaries": bins.as_dict(),
        "sources": bins.sources,
        "megabytes": round(sum(binaries.disk_usage(p) for p in (bins.etcd, bins.kube_apiserver,
                                                                   bins.kube_controller_manager)) / 2**20),
        "seconds": round(time.monotonic() - t0, 1),
    }

    def text(d):
        from rich.table import Table

        t = Table("binary", "from")
        t.add_column("path", overflow="fold")
        for name, path in d["binaries"].items():
            t.add_row(name, d["sources"][name], path)
        console(stderr=False).print(t)
        console(stderr=False).print(f"{d['megabytes']} MB (Kubernetes {d['kubernetesVersion']}, etcd {d['etcdVersion']})")

    render(data, output, text)


@app.command("up")
@handle_errors
def up_cmd(
    clusters: int = typer.Option(3, "--clusters", help="How many clusters to start (1 to 16)."),
    directory: Path = DirOption,
    prefix: str = typer.Option("k8ssandra", "--prefix", help="Cluster names are <prefix>-<i>, contexts kind-<prefix>-<i>."),
    k8ssandra: bool = typer.Option(False, "--k8ssandra", help="Prepare each cluster as if k8ssandra-operator were installed."),
    cassandradatacenter_crd: Optional[CassandraDatacenterCrd] = typer.Option(
        None, "--cassandradatacenter-crd", show_default=False,
        help="With --k8ssandra, the CassandraDatacenter CRD form: 'production' (default; as cass-operator's "
             "kustomization builds it: spec.config not in the schema, an object accepted) or 'unpatched' (its raw "
             "config/crd/bases file, as some installs have it: spec.config a byte string, an object refused)."),
    run_operator: bool = typer.Option(False, "--operator", help="Build and run the real k8ssandra-operator on the first "
                                      "cluster (implies --k8ssandra), supervised; see 'sandbox logs operator'."),
    operator_source: Path = typer.Option(None, "--operator-source", help="k8ssandra-operator source to build "
                                         "(default: ../shared/upstream/k8ssandra-operator beside the project)."),
    kubernetes_version: Optional[str] = KubernetesVersionOption,
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for each component."),
    rtt: str = typer.Option("0", "--rtt", help="Round-trip time added between clients and every API server "
                            "(e.g. 100ms, 0.2s; 0: none): each API server is reached through a toxiproxy proxy "
                            "adding half of it each way, and the kubeconfigs point at the proxies."),
    proxy: bool = typer.Option(False, "--proxy", help="Put the proxies in front of the API servers even with --rtt 0 "
                               "(for adding faults later through toxiproxy's API; see 'sandbox status')."),
    output: Output = OutputOption,
) -> None:
    """Start N clusters and wait until every API server is ready."""
    from k8sctl import interrupts
    from k8sctl_sandbox import binaries, crds_and_identity
    from k8sctl_sandbox import cluster as sandbox_cluster

    # 1. Check every option before anything is built or started.
    sandbox_cluster.validate_up(clusters, prefix, timeout)
    rtt_ms = parse_rtt(rtt)
    network = proxy or rtt_ms > 0
    if operator_source is not None and not run_operator:
        raise UsageError("--operator-source needs --operator")
    if cassandradatacenter_crd is not None and not (k8ssandra or run_operator):
        raise UsageError("--cassandradatacenter-crd needs --k8ssandra (it picks the CRD that --k8ssandra installs)")
    crd_form = (cassandradatacenter_crd or CassandraDatacenterCrd.production).value
    release = binaries.kubernetes_release(kubernetes_version) if kubernetes_version is not None else None
    directory = directory.expanduser()
    logs = None  # where this run's logs are, once it writes any
    manager: Path | None = None
    source: Path | None = None
    if run_operator:
        from k8sctl_sandbox import operator

        source = operator.resolve_source(operator_source)
        operator.crd_paths(source)  # every CRD file present, before anything starts
        why = operator.unavailable_reason()
        if why:
            console().print(f"warning: running without the operator: {why}", markup=False)
            run_operator = False
        else:
            operator.check_webhook_port()
        k8ssandra = True
    sandbox_cluster.check_dir(directory)  # a folder that cannot be made fails before any build
    update, stop = _progress()
    try:
        with interrupts.signals_raise():
            # 2. The binaries (and with --operator its manager): found, or built once.
            bins = _binaries(update, kubernetes_version=release)
            proxy_binary = None
            if network:
                from k8sctl_sandbox import toxiproxy

                proxy_binary = toxiproxy.ensure(progress=update)
            if run_operator and source is not None:
                manager = operator.build(source, progress=update)[0]
            t0 = time.monotonic()
            if k8ssandra:
                crds_and_identity.parse_in_background(crd_form)
            # 3. The clusters (on failure, up stops what it started).
            logs = directory / "logs"
            state = sandbox_cluster.up(directory, clusters, bins, prefix=prefix, progress=update, timeout=timeout,
                                       proxy_binary=proxy_binary, rtt_ms=rtt_ms)
            try:
                if "KUBEBUILDER_ASSETS" not in bins.sources.values():  # else: whatever those binaries are
                    state.kubernetes_version = release or binaries.KUBERNETES_VERSION
                    state.save()
                # 4. With --k8ssandra: the CRDs and the operator's identity in every cluster.
                if k8ssandra:
                    crds_and_identity.install_all(state, progress=update, cassandradatacenter_crd=crd_form)
                # 5. With --operator: the real operator on the first cluster, supervised.
                if run_operator and source is not None and manager is not None:
                    operator.start(state, source, manager, progress=update, timeout=timeout)
            except BaseException:
                sandbox_cluster.abandon(directory)
                raise
    except KeyboardInterrupt as e:
        stop()
        raise _interrupted(e, logs) from None
    finally:
        stop()
    # 6. What was started, for people or scripts.
    data = {
        "directory": state.directory,
        "kubeconfig": state.kubeconfig,
        "k8ssandra": k8ssandra,
        "cassandraDatacenterCrd": crd_form if k8ssandra else None,
        "kubernetesVersion": state.kubernetes_version,
        "operator": state.operator,
        "rttMs": state.rtt_ms,
        "toxiproxyPort": state.toxiproxy_port,
        "seconds": round(time.monotonic() - t0, 1),
        "clusters": [{"context": c.context, "server": c.server, "kubeconfig": c.kubeconfig,
                      "inClusterKubeconfig": c.in_cluster_kubeconfig} for c in state.clusters],
    }
    render(data, output, _clusters_table)


def parse_rtt(text: str) -> float:
    """--rtt as milliseconds: `100ms`, `0.2s`, `0`. A bare number other than 0 is refused (ms or s?)."""
    import math
    import re

    value = text.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", value)
    if m is None or (m.group(2) is None and float(m.group(1)) != 0):
        raise UsageError(f"--rtt {text!r} is not a round-trip time: write it like 100ms or 0.2s (0 for none)")
    ms = float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
    if not math.isfinite(ms) or ms > 10_000:
        raise UsageError(f"--rtt {text!r} must be at most 10s")
    return ms


def _interrupted(e: KeyboardInterrupt, logs: Path | None):
    """Ctrl-C, SIGTERM or SIGHUP: what the run left (nothing running), as one line and 128+signal."""
    from k8sctl.cli.common import fail
    from k8sctl.interrupts import Terminated

    what = f"terminated by {e}" if isinstance(e, Terminated) else "interrupted"
    kept = f"; its logs are in {logs}" if logs is not None and logs.is_dir() else ""
    return fail(f"{what}: stopped everything this run had started{kept}",
                e.exit_code if isinstance(e, Terminated) else 130)


def _clusters_table(d: dict) -> None:
    from rich.table import Table

    out = console(stderr=False)
    t = Table("context", "server", *(["ready"] if "ready" in d["clusters"][0] else []))
    t.add_column("kubeconfig", overflow="fold")
    for c in d["clusters"]:
        row = [c["context"], c["server"]]
        if "ready" in c:
            row.append("[green]yes[/]" if c["ready"] else "[red]no[/]")
        t.add_row(*row, c["kubeconfig"])
    out.print(t)
    out.print(f"all contexts: export KUBECONFIG={d['kubeconfig']}")
    if "seconds" in d:
        out.print(f"ready in {d['seconds']}s")


@app.command("status")
@handle_errors
def status_cmd(directory: Path = DirOption, output: Output = OutputOption) -> None:
    """Show the sandbox's clusters, whether each API server answers, and the operator if it runs.
    Exit 1 if an API server does not answer or nothing supervises the operator any more."""
    from k8sctl_sandbox import cluster as sandbox_cluster

    state, live, ready = sandbox_cluster.status(directory.expanduser())
    data: dict[str, Any] = {
        "directory": state.directory,
        "kubeconfig": state.kubeconfig,
        "processes": live,
        "clusters": [{"context": c.context, "server": c.server, "kubeconfig": c.kubeconfig,
                      "ready": ready[c.context]} for c in state.clusters],
    }
    if state.toxiproxy_port is not None:
        from k8sctl.errors import SandboxError
        from k8sctl_sandbox import toxiproxy

        data["rttMs"] = state.rtt_ms
        data["toxiproxy"] = {"api": f"http://{toxiproxy.HOST}:{state.toxiproxy_port}"}
        try:
            data["toxiproxy"]["proxies"] = toxiproxy.describe(state.toxiproxy_port)
        except SandboxError as e:
            data["toxiproxy"]["error"] = str(e)
    operator_down = False
    if state.operator:
        from k8sctl_sandbox import operator

        data["operator"] = operator.status_report(Path(state.directory), state.operator, live)
        operator_down = data["operator"]["state"] == operator.UNSUPERVISED  # restarting is normal; unsupervised is not

    def text(d):
        _clusters_table(d)
        if "toxiproxy" in d:
            _proxies_table(d)
        if "operator" in d:
            console(stderr=False).print(operator.status_line(d["operator"]), markup=False)

    render(data, output, text)
    if not all(ready.values()) or operator_down or "error" in data.get("toxiproxy", {}):
        raise typer.Exit(1)


def _toxic_text(x: dict) -> str:
    """`latency 50ms up`, `timeout 0 down`: a toxic in a few words."""
    attrs = " ".join(f"{v}ms" if k == "latency" else f"{k}={v}" for k, v in x["attributes"].items()
                     if v or k == "timeout")
    return f"{x['type']} {attrs} {'up' if x['stream'] == 'upstream' else 'down'}".replace("  ", " ")


def _proxies_table(d: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console(stderr=False)
    tp = d["toxiproxy"]
    out.print(f"toxiproxy {escape(tp['api'])}: {d['rttMs']:g} ms round trip added")
    if "error" in tp:
        out.print(f"[red]{escape(tp['error'])}[/]")
        return
    t = Table("proxy", "listen", "upstream", "on", "toxics")
    for p in tp["proxies"]:
        toxics = ", ".join(_toxic_text(x) for x in p["toxics"]) or "-"
        t.add_row(*(escape(v) for v in (p["name"], p["listen"], p["upstream"], "yes" if p["enabled"] else "no", toxics)))
    out.print(t)


@app.command("logs")
@handle_errors
def logs_cmd(
    name: str = typer.Argument(..., help="Process: operator, operator-supervisor, etcd, kube-apiserver-<cluster>, ..."),
    tail: int = typer.Option(0, "--tail", help="Only the last N lines (0: all)."),
    directory: Path = DirOption,
) -> None:
    """Print the log of one sandbox process, such as 'operator' (the k8ssandra-operator manager)."""
    import sys

    from k8sctl_sandbox import cluster as sandbox_cluster

    text = sandbox_cluster.read_log(directory.expanduser(), name)
    lines = text.splitlines(keepends=True)
    sys.stdout.write("".join(lines[-tail:] if tail > 0 else lines))


@app.command("down")
@handle_errors
def down_cmd(directory: Path = DirOption, output: Output = OutputOption) -> None:
    """Stop every process of the sandbox and remove its state."""
    from k8sctl_sandbox import cluster as sandbox_cluster

    stopped = sandbox_cluster.down(directory.expanduser())
    render({"stopped": stopped}, output,
           lambda d: console(stderr=False).print(f"stopped {len(d['stopped'])} process(es); removed {directory}"))


@app.command("stop-cluster", hidden=True)
@handle_errors
def stop_cluster_cmd(context: str, directory: Path = DirOption) -> None:
    """Stop one cluster's API server (to see how k8sctl handles an unreachable cluster)."""
    from k8sctl_sandbox import cluster as sandbox_cluster

    console(stderr=False).print(f"stopped {', '.join(sandbox_cluster.stop_cluster(directory.expanduser(), context))}")


@app.command("apply")
@handle_errors
def apply_cmd(
    context: str = typer.Option(..., "--context", help="Sandbox context to apply to, e.g. kind-k8ssandra-0."),
    filename: Path = typer.Option(..., "-f", "--filename", help="YAML manifests (several documents allowed)."),
    namespace: str = typer.Option("k8ssandra-operator", "-n", "--namespace", help="Namespace for namespaced objects without one."),
    directory: Path = DirOption,
) -> None:
    """Server-side apply manifests to one sandbox cluster (the sandbox needs no kubectl)."""
    from k8sctl_sandbox import manifests

    for line in manifests.apply_file(directory.expanduser(), context, filename.expanduser(), namespace):
        console(stderr=False).print(line)


@app.command("datacenters")
@handle_errors
def datacenters_cmd(directory: Path = DirOption, output: Output = OutputOption) -> None:
    """List the CassandraDatacenters of every sandbox cluster."""
    from k8sctl_sandbox import cassandradatacenters

    rows = cassandradatacenters.list_datacenters(directory.expanduser())

    def text(d):
        from rich.table import Table

        t = Table("context", "namespace", "name", "size", "ready")
        for r in d["datacenters"]:
            t.add_row(r["context"], r["namespace"], r["name"], str(r["size"]), "yes" if r["ready"] else "no")
        console(stderr=False).print(t)

    render({"datacenters": rows}, output, text)


@app.command("mark-ready")
@handle_errors
def mark_ready_cmd(directory: Path = DirOption) -> None:
    """Stand in for cass-operator: mark every CassandraDatacenter Ready (no Cassandra runs in the sandbox)."""
    from k8sctl_sandbox import cassandradatacenters

    for line in cassandradatacenters.mark_ready(directory.expanduser()):
        console(stderr=False).print(line)
