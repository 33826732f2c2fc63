"""`k8sctl create-clientconfig`: register data-plane clusters with the operator's control plane."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from k8sctl.cli.common import Output, OutputOption, console, env, handle_errors, render, warn


def register(app: typer.Typer) -> None:
    app.command("create-clientconfig")(create_clientconfig)


@handle_errors
def create_clientconfig(
    src_kubeconfig: Optional[Path] = typer.Option(None, "--src-kubeconfig", help="Kubeconfig of the data-plane cluster(s)."),
    src_context: list[str] = typer.Option([], "--src-context", help="Source context (repeat for several clusters; default: current-context)."),
    dest_kubeconfig: Optional[Path] = typer.Option(None, "--dest-kubeconfig", help="Control-plane kubeconfig (default: $KUBECONFIG, then ~/.kube/config)."),
    dest_context: Optional[str] = typer.Option(None, "--dest-context", help="Control-plane context (default: its current-context)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Operator namespace on both sides (default: the context's, else k8ssandra-operator)."),
    src_namespace: Optional[str] = typer.Option(None, "--src-namespace", help="Namespace of the service account in the source cluster."),
    dest_namespace: Optional[str] = typer.Option(None, "--dest-namespace", help="Namespace of the Secret and ClientConfig in the control plane."),
    serviceaccount: str = typer.Option("k8ssandra-operator", "--serviceaccount", help="The operator's service account in the source cluster."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Also write the kubeconfig and manifests there (0600 files, after success; none by default)."),
    in_cluster_kubeconfig: Optional[Path] = typer.Option(None, "--in-cluster-kubeconfig", help="Kubeconfig whose server address the operator's pods can reach."),
    server: Optional[str] = typer.Option(None, "--server", help="Server URL to write into the generated kubeconfig (overrides --in-cluster-kubeconfig)."),
    name: Optional[str] = typer.Option(None, "--name", help="ClientConfig name (default: the source context, sanitized). The Secret is <name>-config."),
    context_name: Optional[str] = typer.Option(None, "--context-name", help="Context name inside the kubeconfig: what datacenters[].k8sContext must say."),
    token_source: str = typer.Option("secret", "--token-source", help="secret: the service account's token Secret; request: a bound, expiring token (TokenRequest)."),
    token_duration: Optional[int] = typer.Option(None, "--token-duration", help="Seconds a requested token lives (--token-source request)."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for a new token Secret to be filled."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build and verify everything, print the manifests, write nothing to any cluster."),
    show_secrets: bool = typer.Option(False, "--show-secrets", help="Keep the token in the Secret manifest written to --output-dir and printed by --dry-run."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Do not check the new kubeconfig at all (a warning is printed)."),
    no_verify_server: bool = typer.Option(False, "--no-verify-server", help="Check the new credentials through the source's own address, not the stored server (for addresses only the operator's pods reach)."),
    allow_self: bool = typer.Option(False, "--allow-self", help="Allow registering the destination cluster to itself."),
    force: bool = typer.Option(False, "--force", help="Take over a Secret or ClientConfig of that name that k8sctl does not manage (e.g. made by create-clientconfig.sh)."),
    output: Output = OutputOption,
) -> None:
    """Create or update the kubeconfig Secret and ClientConfig through which the operator reaches a cluster."""
    from k8sctl import clientconfigs

    opts = clientconfigs.CreateOptions(
        src_kubeconfig=src_kubeconfig.expanduser() if src_kubeconfig else None,
        src_contexts=list(src_context),
        dest_kubeconfig=[dest_kubeconfig.expanduser()] if dest_kubeconfig else [],
        dest_context=dest_context, namespace=namespace, src_namespace=src_namespace, dest_namespace=dest_namespace,
        serviceaccount=serviceaccount, output_dir=output_dir.expanduser() if output_dir else None,
        in_cluster_kubeconfig=in_cluster_kubeconfig.expanduser() if in_cluster_kubeconfig else None,
        server=server, name=name, context_name=context_name, token_source=token_source,
        token_duration=token_duration, timeout=timeout, dry_run=dry_run, show_secrets=show_secrets,
        verify=not no_verify, verify_server=not no_verify_server, allow_self=allow_self, force=force,
    )
    completed = clientconfigs.complete(opts, env())
    clientconfigs.validate(completed)
    status = console().status("working", spinner="dots")
    status.start()
    try:
        result = clientconfigs.run(completed, progress=lambda m: status.update(m))
    finally:
        status.stop()
    data = result.as_dict()
    if dry_run and output is Output.text:
        import yaml

        typer.echo(yaml.safe_dump_all(clientconfigs.rendered_manifests(result, show_secrets), sort_keys=False), nl=False)
    render(data, output, _text)
    for r in result.registrations:
        for w in r.warnings:
            warn(f"{r.source_context}: {w}")


_ACTION_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim"}


def _text(d: dict) -> None:
    from rich.markup import escape as e

    out = console(stderr=False)
    for r in d["registrations"]:
        out.print(f"[bold]{e(r['name'])}[/] in {e(d['destinationContext'])}/{e(d['namespace'])} "
                  f"(source context {e(r['sourceContext'])})")
        for o in r["objects"]:
            style = _ACTION_STYLE.get(o["action"].split()[-1], "")
            out.print(f"  {o['kind']:<13} {e(o['name']):<40} [{style}]{e(o['action'])}[/]")
        out.print(f"  server      {e(r['server'])}  [dim]({e(r['serverReason'])})[/]")
        verified = f"  [dim](checked at {e(r['verifiedAt'])})[/]" if r["verifiedAt"] else ""
        out.print(f"  identity    {e(r['identity'] or 'not verified')}{verified}"
                  + ("" if r["authorized"] is None else
                     ("  [green]may create CassandraDatacenters[/]" if r["authorized"] else "  [red]may NOT create CassandraDatacenters[/]")))
        if r["tokenExpiry"]:
            out.print(f"  token       expires {e(r['tokenExpiry'])}")
        out.print(f"  k8sContext  [bold]{e(r['k8sContext'])}[/]  (use this in K8ssandraCluster datacenters[].k8sContext)")
    if d["outputDir"]:
        out.print(f"artifacts in {e(d['outputDir'])}")
    if d["operatorNote"]:
        out.print(e(d["operatorNote"]))
