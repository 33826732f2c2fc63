"""`k8sctl reconcile NAME`: push a K8ssandraCluster's CassandraDatacenters once, like the operator."""
from __future__ import annotations

import enum
from pathlib import Path
from typing import Optional

import typer

from k8sctl.cli.common import (
    ContextOption,
    Globals,
    KubeconfigOption,
    Output,
    OutputOption,
    RequestTimeoutOption,
    connect,
    console,
    handle_errors,
    render,
)


class ConfigSource(str, enum.Enum):
    inline = "inline"
    secret = "secret"
    auto = "auto"


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile)


@handle_errors
def reconcile(
    name: str = typer.Argument(..., help="The K8ssandraCluster to reconcile."),
    kubeconfig: Optional[Path] = KubeconfigOption,
    context: Optional[str] = ContextOption,
    namespace: Optional[str] = typer.Option(None, "-n", "--namespace", help="The K8ssandraCluster's namespace (default: the context's, else k8ssandra-operator)."),
    request_timeout: Optional[str] = RequestTimeoutOption,
    clientconfig_namespace: Optional[str] = typer.Option(None, "--clientconfig-namespace", help="Where the ClientConfigs are (default: the K8ssandraCluster's namespace)."),
    force_conflicts: bool = typer.Option(False, "--force-conflicts", help="Take fields owned by another field manager."),
    wait: bool = typer.Option(False, "--wait", help="Wait for each datacenter to become Ready, in order, creating the next once the earlier ones are (a run interrupted while waiting resumes when run again)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds --wait waits for each datacenter."),
    no_gate: bool = typer.Option(False, "--no-gate", help="Create every missing datacenter now, not one after another."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the CassandraDatacenters and a diff; write nothing."),
    update_status: bool = typer.Option(False, "--update-status", help="Write the K8ssandraCluster's status.datacenters (the operator owns it)."),
    config_source: ConfigSource = typer.Option(ConfigSource.auto, "--config-source", help="How each datacenter gets its config: inline (spec.config), secret (a Secret named by spec.configSecret), or auto: per cluster, inline where its CRD accepts it, else secret."),
    show_secrets: bool = typer.Option(False, "--show-secrets", help="With --dry-run, print the config Secrets' content too (hidden by default)."),
    output: Output = OutputOption,
) -> None:
    """Create or update each datacenter's CassandraDatacenter in its cluster, once."""
    import math
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import wait as all_done  # `wait` is the --wait flag

    from rich.markup import escape

    from k8sctl import reconcile as rec
    from k8sctl.apis import k8ssandracluster as k8c
    from k8sctl.cache import ClientCache
    from k8sctl.errors import UsageError

    if not name.strip():
        raise UsageError("the K8ssandraCluster name is empty: give the name of one (reconcile NAME)")
    if not math.isfinite(timeout) or timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds (got {timeout})")
    if clientconfig_namespace is not None and not clientconfig_namespace.strip():
        raise UsageError("--clientconfig-namespace is empty: give a namespace or leave the option out")
    if show_secrets and not dry_run:
        raise UsageError("--show-secrets only applies to --dry-run (a real run prints no Secret content)")
    conn = connect(kubeconfig, context, namespace, request_timeout)
    ns = conn.namespace
    local = conn.client()
    status = console().status("reading ClientConfigs", spinner="dots")
    status.start()
    try:
        # The K8ssandraCluster is read while the ClientConfigs are listed: one round trip for both.
        with ThreadPoolExecutor(max_workers=1) as pool:
            cluster_doc = pool.submit(local.get_or_none, k8c.RESOURCE, name, ns)
            try:
                cache = ClientCache.from_clientconfigs(local, clientconfig_namespace or ns)
            finally:
                all_done([cluster_doc])
        try:
            opts = rec.ReconcileOptions(name=name, namespace=ns, force_conflicts=force_conflicts, wait=wait,
                                        timeout=timeout, gate=not no_gate, dry_run=dry_run, update_status=update_status,
                                        config_source=config_source.value)
            result = rec.run(opts, cache, progress=lambda m: status.update(escape(m)), k8ssandra_cluster=cluster_doc.result)
        finally:
            cache.close()
    finally:
        status.stop()
        local.close()
    data = result.as_dict()
    if dry_run and output is Output.text:
        import yaml

        docs = []
        for r in result.datacenters:
            if r.desired_secret is not None:
                docs.append(r.desired_secret if show_secrets else _hidden(r.desired_secret))
            if r.agent_config is not None:
                docs.append(r.agent_config)
            docs.append(r.desired)
        typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
    if dry_run and show_secrets:
        for row, r in zip(data["datacenters"], result.datacenters):
            if r.desired_secret is not None and "configSecret" in row:
                row["configSecret"]["data"] = r.desired_secret["data"]
    render(data, output, _text)
    if Globals.verbose:
        for r in result.datacenters:
            if r.exception is not None:
                from rich.traceback import Traceback

                console().print(Traceback.from_exception(type(r.exception), r.exception, r.exception.__traceback__))
    for b in result.broken_clientconfigs:
        console().print(f"[yellow]warning:[/] ClientConfig {escape(b['name'])} (context {escape(b['context'])}) "
                        f"has no client: {escape(b['reason'])}")
    if result.failed:
        raise typer.Exit(1)


def _hidden(secret: dict) -> dict:
    """A Secret manifest with each value replaced by its size."""
    import base64

    shown = dict(secret)
    shown["data"] = {k: f"(hidden: {len(base64.b64decode(v))} bytes; --show-secrets prints it)"
                     for k, v in secret["data"].items()}
    return shown


_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim", "waiting": "cyan", "error": "red"}


def _text(d: dict) -> None:
    """The report for people. Every piece of data is escaped: rich would read `[fd00::5]` as markup."""
    from rich.markup import escape as e
    from rich.table import Table

    out = console(stderr=False)
    t = Table("context", "namespace", "name", "action", "ready", "progress", "config",
              title=e(f"K8ssandraCluster {d['namespace']}/{d['k8ssandraCluster']}") + (" (dry run)" if d["dryRun"] else ""))
    for r in d["datacenters"]:
        ready = {True: "[green]yes[/]", False: "no", None: "-"}[r["ready"]]
        action = r["action"]
        t.add_row(e(r["context"] or "(control plane)"), e(r["namespace"]), e(r["name"]),
                  f"[{_STYLE.get(action.split()[-1], '')}]{e(action)}[/]", ready, e(r["cassandraOperatorProgress"] or "-"),
                  e(r.get("configSource") or "-"))
    out.print(t)
    for context, choice in d.get("configSources", {}).items():
        out.print(f"config source in {e(context or '(control plane)')}: {e(choice['source'] or '-')} "
                  f"({e(choice['reason'])})")
    for r in d["datacenters"]:
        secret = r.get("configSecret")
        if secret and secret.get("action"):
            out.print(e(f"{r['name']}: config Secret {r['namespace']}/{secret['name']} "
                        f"(key {', '.join(secret['keys'])}) {secret['action']}"))
    for r in d["datacenters"]:
        agent = r.get("metricsAgentConfigMap")
        if agent and agent.get("action") not in (None, "unchanged"):
            out.print(e(f"{r['name']}: metrics agent ConfigMap {r['namespace']}/{agent['name']} {agent['action']}"))
    superuser = d.get("superuserSecret")
    if superuser and any(c["action"] != "unchanged" for c in superuser["copies"]):
        where = ", ".join(f"{c['action']} in {c['context'] or '(control plane)'}/{c['namespace']}"
                          for c in superuser["copies"])
        out.print(e(f"superuser Secret {superuser['name']} (keys {', '.join(superuser['keys'])}): {where}"))
    for r in d["datacenters"]:
        if r.get("drift"):
            out.print(e(f"{r['name']}: fields k8sctl owns were changed out of band, restored: {', '.join(r['drift'])}"))
    for r in d["datacenters"]:
        if r.get("error"):
            out.print(f"[red]{e(r['name'])}:[/] {e(r['error'])}")
        if r.get("diff"):
            out.print(f"--- diff for {r['name']} ({r['context'] or 'control plane'})", markup=False)
            out.print(r["diff"], markup=False, highlight=False)
    if d.get("secondsByContext"):
        out.print("time per cluster: " + ", ".join(f"{e(ctx or '(control plane)')} {t:.2f}s"
                                                   for ctx, t in d["secondsByContext"].items()))
    if any(r["action"] == "waiting" for r in d["datacenters"]):
        out.print("waiting: created only once every earlier datacenter is Ready (run again, or use --wait)")
