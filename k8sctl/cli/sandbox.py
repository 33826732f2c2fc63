"""`k8sctl sandbox ...`: local Kubernetes control planes for trying and testing k8sctl."""
from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from k8sctl.cli.common import Output, OutputOption, console, handle_errors, render
from k8sctl.errors import UsageError

app = typer.Typer(help="Run real Kubernetes control planes on loopback (no Docker, no kind).", no_args_is_help=True,
                  rich_markup_mode=None)

DirOption = typer.Option(Path(".sandbox"), "--dir", help="Folder holding the sandbox's state, kubeconfigs and logs.")


def _progress():
    """A spinner on stderr; returns (callback, stop)."""
    status = console().status("starting", spinner="dots")
    status.start()
    t0 = time.monotonic()
    return (lambda msg: status.update(f"{msg} [dim]({time.monotonic() - t0:.0f}s)[/]")), status.stop


def _binaries(allow_build: bool = True):
    from k8sctl.sandbox import binaries

    update, stop = _progress()
    try:
        return binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None,
                               progress=update, allow_build=allow_build)
    finally:
        stop()


def _operator_manager(source: Path) -> Path:
    """The operator's manager built from `source` (into the cache, once per source hash)."""
    from k8sctl.sandbox import operator

    update, stop = _progress()
    try:
        return operator.build(source, progress=update)[0]
    finally:
        stop()


@app.command("binaries")
@handle_errors
def binaries_cmd(output: Output = OutputOption) -> None:
    """Build (once) or locate etcd, kube-apiserver and kube-controller-manager, and print where they are."""
    from k8sctl.sandbox import binaries

    t0 = time.monotonic()
    bins = _binaries()
    data = {
        "kubernetesVersion": binaries.KUBERNETES_VERSION,
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
    clusters: int = typer.Option(3, "--clusters", "-n", help="How many clusters to start."),
    directory: Path = DirOption,
    prefix: str = typer.Option("k8ssandra", "--prefix", help="Cluster names are <prefix>-<i>, contexts kind-<prefix>-<i>."),
    k8ssandra: bool = typer.Option(False, "--k8ssandra", help="Prepare each cluster as if k8ssandra-operator were installed."),
    run_operator: bool = typer.Option(False, "--operator", help="Build and run the real k8ssandra-operator on the first "
                                      "cluster (implies --k8ssandra), supervised; see 'sandbox logs operator'."),
    operator_source: Path = typer.Option(None, "--operator-source", help="k8ssandra-operator source to build "
                                         "(default: ../shared/upstream/k8ssandra-operator beside the project)."),
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for each component."),
    output: Output = OutputOption,
) -> None:
    """Start N clusters and wait until every API server is ready."""
    from k8sctl.sandbox import cluster as sandbox_cluster

    sandbox_cluster.validate_up(clusters, prefix)  # before a possible build
    manager = source = None
    if operator_source is not None and not run_operator:
        raise UsageError("--operator-source needs --operator")
    if run_operator:
        from k8sctl.sandbox import operator

        source = operator.resolve_source(operator_source)
        operator.crd_paths(source)  # every CRD file present, before anything starts
        why = operator.unavailable_reason()
        if why:
            console().print(f"warning: running without the operator: {why}", markup=False)
            run_operator = False
        else:
            operator.check_webhook_port()
            manager = _operator_manager(source)
        k8ssandra = True
    bins = _binaries()
    t0 = time.monotonic()
    update, stop = _progress()
    try:
        state = sandbox_cluster.up(directory.expanduser(), clusters, bins, prefix=prefix, progress=update, timeout=timeout)
        if k8ssandra:
            from k8sctl.sandbox import k8ssandra as operator_install

            try:
                operator_install.prepare_all(state, progress=update)
                if run_operator:
                    operator.start(state, source, manager, progress=update, timeout=timeout)
            except BaseException:
                sandbox_cluster.down(Path(state.directory))
                raise
    finally:
        stop()
    data = {
        "directory": state.directory,
        "kubeconfig": state.kubeconfig,
        "k8ssandra": k8ssandra,
        "operator": state.operator,
        "seconds": round(time.monotonic() - t0, 1),
        "clusters": [{"context": c.context, "server": c.server, "kubeconfig": c.kubeconfig,
                      "inClusterKubeconfig": c.in_cluster_kubeconfig} for c in state.clusters],
    }
    render(data, output, _clusters_table)


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
    from k8sctl.sandbox import cluster as sandbox_cluster

    state, live, ready = sandbox_cluster.status(directory.expanduser())
    data = {
        "directory": state.directory,
        "kubeconfig": state.kubeconfig,
        "processes": live,
        "clusters": [{"context": c.context, "server": c.server, "kubeconfig": c.kubeconfig,
                      "ready": ready[c.context]} for c in state.clusters],
    }
    operator_down = False
    if state.operator:
        from k8sctl.sandbox import operator

        data["operator"] = operator.status_report(Path(state.directory), state.operator, live)
        operator_down = data["operator"]["state"] == operator.UNSUPERVISED  # restarting is normal; unsupervised is not

    def text(d):
        _clusters_table(d)
        if "operator" in d:
            console(stderr=False).print(operator.status_line(d["operator"]), markup=False)

    render(data, output, text)
    if not all(ready.values()) or operator_down:
        raise typer.Exit(1)


@app.command("logs")
@handle_errors
def logs_cmd(
    name: str = typer.Argument(..., help="Process: operator, operator-supervisor, etcd, kube-apiserver-<cluster>, ..."),
    tail: int = typer.Option(0, "--tail", help="Only the last N lines (0: all)."),
    directory: Path = DirOption,
) -> None:
    """Print the log of one sandbox process (e.g. 'operator': the k8ssandra-operator manager)."""
    import sys

    from k8sctl.sandbox import cluster as sandbox_cluster

    text = sandbox_cluster.read_log(directory.expanduser(), name)
    lines = text.splitlines(keepends=True)
    sys.stdout.write("".join(lines[-tail:] if tail > 0 else lines))


@app.command("down")
@handle_errors
def down_cmd(directory: Path = DirOption, output: Output = OutputOption) -> None:
    """Stop every process of the sandbox and remove its state."""
    from k8sctl.sandbox import cluster as sandbox_cluster

    stopped = sandbox_cluster.down(directory.expanduser())
    render({"stopped": stopped}, output,
           lambda d: console(stderr=False).print(f"stopped {len(d['stopped'])} process(es); removed {directory}"))


@app.command("stop-cluster", hidden=True)
@handle_errors
def stop_cluster_cmd(context: str, directory: Path = DirOption) -> None:
    """Stop one cluster's API server (to see how k8sctl handles an unreachable cluster)."""
    from k8sctl.sandbox import cluster as sandbox_cluster

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
    from k8sctl.sandbox import tools

    for line in tools.apply_file(directory.expanduser(), context, filename.expanduser(), namespace):
        console(stderr=False).print(line)


@app.command("datacenters")
@handle_errors
def datacenters_cmd(directory: Path = DirOption, output: Output = OutputOption) -> None:
    """List the CassandraDatacenters of every sandbox cluster."""
    from k8sctl.sandbox import tools

    rows = tools.list_datacenters(directory.expanduser())

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
    from k8sctl.sandbox import tools

    for line in tools.mark_ready(directory.expanduser()):
        console(stderr=False).print(line)
