"""`k8sctl create-clientconfig`: register data-plane clusters with the operator's control plane."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from k8sctl.cli.common import (
    WAIT_OPERATOR_DEFAULT,
    ContextOption,
    KubeconfigOption,
    NamespaceOption,
    Output,
    OutputOption,
    RequestTimeoutOption,
    Spinner,
    WaitOperatorOption,
    connect,
    console,
    env,
    handle_errors,
    optional_value,
    render,
    request_timeouts,
    wait_seconds,
    warn,
)
from k8sctl.cli.groups import FullHelpGroup

_WAITS = optional_value("--wait-operator", WAIT_OPERATOR_DEFAULT)
# The same check, with the same meaning, for create-clientconfig and clientconfig rotate.
NoVerifyServerOption = typer.Option(False, "--no-verify-server", help="Check the new credentials through the source's "
                                    "own address (rotate: --src-kubeconfig's), not the stored server, with a warning "
                                    "(for addresses only the operator's pods reach).")
group = typer.Typer(help="ClientConfigs of the control plane: list with health, verify, rotate, delete.",
                    no_args_is_help=True, rich_markup_mode=None, cls=FullHelpGroup)


def register(app: typer.Typer) -> None:
    app.command("create-clientconfig", cls=_WAITS)(create_clientconfig)
    app.add_typer(group, name="clientconfig")


@handle_errors
def create_clientconfig(
    src_kubeconfig: Optional[Path] = typer.Option(None, "--src-kubeconfig", help="Kubeconfig of the data-plane cluster(s)."),
    src_context: list[str] = typer.Option([], "--src-context", help="Source context (repeat for several clusters; default: current-context)."),
    dest_kubeconfig: Optional[Path] = typer.Option(None, "--dest-kubeconfig", help="Control-plane kubeconfig (default: $KUBECONFIG, then ~/.kube/config)."),
    dest_context: Optional[str] = typer.Option(None, "--dest-context", help="Control-plane context (default: its current-context)."),
    namespace: Optional[str] = typer.Option(None, "-n", "--namespace", help="Operator namespace on both sides (default: the context's, else k8ssandra-operator)."),
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
    no_verify_server: bool = NoVerifyServerOption,
    allow_self: bool = typer.Option(False, "--allow-self", help="Allow registering the destination cluster to itself."),
    force: bool = typer.Option(False, "--force", help="Take over a Secret or ClientConfig of that name that k8sctl does not manage (e.g. made by create-clientconfig.sh)."),
    wait_operator: Optional[str] = WaitOperatorOption,
    request_timeout: Optional[str] = RequestTimeoutOption,
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
        request_timeout=request_timeouts(request_timeout),
    )
    wait = wait_seconds(wait_operator)
    completed = clientconfigs.complete(opts, env())
    clientconfigs.validate(completed)
    with Spinner("working") as spinner:
        result = clientconfigs.run(completed, progress=spinner.update)
        operator_timeouts = _wait_for_operator(completed, result, wait, spinner) if wait and not dry_run else []
    data = result.as_dict()
    if dry_run and output is Output.text:
        import yaml

        typer.echo(yaml.safe_dump_all(clientconfigs.rendered_manifests(result, show_secrets), sort_keys=False), nl=False)
    render(data, output, _text)
    for r in result.registrations:
        for w in r.warnings:
            warn(f"{r.source_context}: {w}")
    if operator_timeouts:
        from k8sctl.errors import ClusterError

        raise ClusterError(operator_timeouts[0])


def _wait_for_operator(completed, result, timeout: float, spinner: Spinner) -> list[str]:
    """--wait-operator: each registration that restarts the operator, until it is loaded again."""
    from k8sctl import kube, lifecycle, waiting

    timeouts = []
    with kube.KubeClient(completed.dest_doc, completed.dest_view.name, source="the destination kubeconfig") as dest:
        for reg in result.registrations:
            if not reg.restarts_operator:
                reg.operator = "no change to load"
                continue
            try:
                lifecycle.wait_operator_loaded(dest, reg.clientconfig["apiVersion"].split("/")[1], reg.name,
                                               result.destination_namespace, reg.previous_operator_hashes, timeout,
                                               spinner.update)
                reg.operator = "loaded"
            except waiting.TimedOut as e:
                reg.operator = "timeout"
                timeouts.append(str(e))
    return timeouts


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
    for r in d["registrations"]:
        if r.get("operator") == "loaded":
            out.print(f"k8ssandra-operator has loaded {e(r['name'])}")



# --- `k8sctl clientconfig ...` ------------------------------------------------------------

CheckTimeoutOption = typer.Option("5s", "--timeout", help="Limit for each cluster's live check (e.g. 5s).")


@group.command("list")
@handle_errors
def list_cmd(
    check: bool = typer.Option(False, "--check", help="Also check every cluster live, all at once: reachable, TLS, "
                                                      "identity, may manage CassandraDatacenters. Exits 0 whatever it finds: "
                                                      "the gate for CI is `clientconfig verify`."),
    timeout: str = CheckTimeoutOption,
    kubeconfig: Optional[Path] = KubeconfigOption, context: Optional[str] = ContextOption,
    namespace: Optional[str] = NamespaceOption, request_timeout: Optional[str] = RequestTimeoutOption,
    output: Output = OutputOption,
) -> None:
    """A row per ClientConfig: context, Secret, server, credentials, token expiry, loaded by the operator, problems."""
    from k8sctl import durations, lifecycle

    conn = connect(kubeconfig, context, namespace, request_timeout)
    seconds = durations.parse_positive(timeout, "--timeout")
    with conn.client() as client, Spinner("reading ClientConfigs") as spinner:
        listing = lifecycle.list_clientconfigs(client, conn.namespace, live=check, timeout=seconds,
                                               progress=spinner.update)
    render(listing.as_dict(), output, _list_text)


@group.command("verify")
@handle_errors
def verify_cmd(
    names: list[str] = typer.Argument(None, help="ClientConfigs to verify (default: all in the namespace)."),
    timeout: str = CheckTimeoutOption,
    kubeconfig: Optional[Path] = KubeconfigOption, context: Optional[str] = ContextOption,
    namespace: Optional[str] = NamespaceOption, request_timeout: Optional[str] = RequestTimeoutOption,
    output: Output = OutputOption,
) -> None:
    """Check each ClientConfig live, as the operator will use it; exit 1 if any fails (for CI, before a restart)."""
    from k8sctl import durations, lifecycle

    conn = connect(kubeconfig, context, namespace, request_timeout)
    seconds = durations.parse_positive(timeout, "--timeout")
    with conn.client() as client, Spinner("verifying ClientConfigs") as spinner:
        listing = lifecycle.list_clientconfigs(client, conn.namespace, names=list(names or []), live=True,
                                               timeout=seconds, progress=spinner.update)
    if not listing.entries:  # a gate that checked nothing has not passed
        from k8sctl.errors import ClusterError

        raise ClusterError(f"no ClientConfig in namespace {conn.namespace!r} of {listing.context}: nothing was "
                           f"verified; pass -n with the operator's namespace (is it {conn.namespace!r}?)")
    data = listing.as_dict()
    data["failed"] = listing.failed
    render(data, output, _verify_text)
    if listing.failed:
        raise typer.Exit(1)


@group.command("rotate", cls=_WAITS)
@handle_errors
def rotate_cmd(
    names: list[str] = typer.Argument(None, help="ClientConfigs to rotate."),
    all_: bool = typer.Option(False, "--all", help="Rotate every ClientConfig of the namespace."),
    if_expiring_within: Optional[str] = typer.Option(None, "--if-expiring-within", help="Only tokens expiring "
                                                     "within this duration (e.g. 7d, 12h): a no-op otherwise, for "
                                                     "schedules. Token Secret tokens never expire: skipped."),
    src_kubeconfig: Optional[Path] = typer.Option(None, "--src-kubeconfig", help="Kubeconfig of the data-plane "
                                                  "cluster(s) (default: the stored credentials themselves)."),
    src_context: Optional[str] = typer.Option(None, "--src-context", help="Source context (default: the "
                                              "ClientConfig's context name)."),
    token_timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for a new token Secret to be filled."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what rotate would do for each ClientConfig, found by "
                                                          "reading only: no token minted, nothing written."),
    serviceaccount: Optional[str] = typer.Option(None, "--serviceaccount", help="The service account to rotate "
                                                 "(default: the one the source cluster confirms for the stored token "
                                                 "with --src-kubeconfig, else k8ssandra-operator). Never taken from "
                                                 "the token's claims alone."),
    src_namespace: Optional[str] = typer.Option(None, "--src-namespace", help="Namespace of that service account "
                                                "in the source cluster (default: as confirmed, else -n's)."),
    no_verify_server: bool = NoVerifyServerOption,
    wait_operator: Optional[str] = WaitOperatorOption,
    kubeconfig: Optional[Path] = KubeconfigOption, context: Optional[str] = ContextOption,
    namespace: Optional[str] = NamespaceOption, request_timeout: Optional[str] = RequestTimeoutOption,
    output: Output = OutputOption,
) -> None:
    """New token for the same service account, verified, Secret updated in place, then the old token revoked.

    With --src-kubeconfig, the account is the one the source cluster confirms (TokenReview) or the one
    named; a new token goes to the stored server only once its certificate checks against the CA the
    source cluster publishes (ConfigMap kube-root-ca.crt)."""
    from k8sctl import durations, rotation

    opts = rotation.RotateOptions(
        names=list(names or []), all=all_, src_kubeconfig=src_kubeconfig.expanduser() if src_kubeconfig else None,
        src_context=src_context, token_timeout=token_timeout, wait_operator=wait_seconds(wait_operator),
        if_expiring_within=durations.parse(if_expiring_within, "--if-expiring-within")
        if if_expiring_within is not None else None, dry_run=dry_run, verify_server=not no_verify_server,
        serviceaccount=serviceaccount, src_namespace=src_namespace)
    opts.validate()
    conn = connect(kubeconfig, context, namespace, request_timeout)
    with conn.client() as client, Spinner("reading" if dry_run else "rotating") as spinner:
        rotations = rotation.rotate(client, conn.namespace, opts, progress=spinner.update)
    data = {"context": conn.context, "namespace": conn.namespace, "dryRun": dry_run,
            "rotations": [r.as_dict() for r in rotations], "changed": any(r.switches for r in rotations),
            "restartsOperator": any(r.switches for r in rotations)}
    render(data, output, _rotate_text)
    for r in rotations:
        for w in r.warnings:
            warn(f"{r.name}: {w}")
    if any(r.action == "failed" or (r.operator or "").startswith("timeout") for r in rotations):
        raise typer.Exit(1)


@group.command("delete", cls=_WAITS)
@handle_errors
def delete_cmd(
    name: str = typer.Argument(..., help="The ClientConfig to delete."),
    force: bool = typer.Option(False, "--force", help="Delete even while K8ssandraCluster datacenters use its context."),
    revoke: bool = typer.Option(False, "--revoke", help="Also delete the token Secret in the source cluster "
                                                        "(revokes the token)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be deleted; delete nothing."),
    src_kubeconfig: Optional[Path] = typer.Option(None, "--src-kubeconfig", help="Kubeconfig of the data-plane "
                                                  "cluster for --revoke (default: the stored credentials)."),
    src_context: Optional[str] = typer.Option(None, "--src-context", help="Source context for --revoke."),
    operator_deployment: str = typer.Option("k8ssandra-operator", "--operator-deployment",
                                            help="The operator's Deployment, for --wait-operator."),
    wait_operator: Optional[str] = WaitOperatorOption,
    kubeconfig: Optional[Path] = KubeconfigOption, context: Optional[str] = ContextOption,
    namespace: Optional[str] = NamespaceOption, request_timeout: Optional[str] = RequestTimeoutOption,
    output: Output = OutputOption,
) -> None:
    """Delete a ClientConfig, then its Secret when k8sctl manages it; refused while a datacenter uses it."""
    from k8sctl import lifecycle
    from k8sctl.errors import UsageError

    if not name.strip():
        raise UsageError("the ClientConfig name is empty: give the name of one (clientconfig delete NAME)")
    opts = lifecycle.DeleteOptions(name=name, force=force, revoke=revoke, dry_run=dry_run,
                                   src_kubeconfig=src_kubeconfig.expanduser() if src_kubeconfig else None,
                                   src_context=src_context, wait_operator=wait_seconds(wait_operator),
                                   operator_deployment=operator_deployment)
    conn = connect(kubeconfig, context, namespace, request_timeout)
    with conn.client() as client, Spinner("deleting") as spinner:
        result = lifecycle.delete(client, conn.namespace, opts, progress=spinner.update)
    render(result.as_dict(), output, _delete_text)
    if result.operator is not None and result.operator.startswith("timeout"):
        from k8sctl.errors import ClusterError

        raise ClusterError(result.operator.removeprefix("timeout: "))


def _columns(header: list[str], rows: list[list[tuple[str, str]]]) -> list[str]:
    """kubectl-style columns, never cut: each cell is (text, rich style); text is escaped here."""
    from rich.markup import escape

    widths = [max([len(h)] + [len(r[i][0]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        cells = [(f"[{style}]{escape(text)}[/]" if style and text else escape(text)) + " " * (w - len(text))
                 for (text, style), w in zip(r, widths)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _list_text(d: dict) -> None:
    from rich.markup import escape as e

    out = console(stderr=False)
    header = ["name", "context", "secret", "server", "auth", "token expiry", "loaded"]
    if d["checked"]:
        header.append("health")
    rows = []
    for r in d["clientConfigs"]:
        auth = (r["auth"] or "-") + (f" ({r['tokenSource']})" if r["tokenSource"] else "")
        expiry = r["tokenExpiry"] or ("never" if r["auth"] == "token" else "-")
        row = [(r["name"], ""), (r["context"], ""), (r["secret"], ""), (r["server"] or "-", ""), (auth, ""),
               (expiry, ""), ("yes", "green") if r["operatorLoaded"] else ("no", "")]
        if d["checked"]:
            row.append(("ok", "green") if r["health"]["ok"] else ("failed", "red"))
        rows.append(row)
    if not rows:
        out.print(f"no ClientConfig in {e(d['context'])}/{e(d['namespace'])}")
        return
    for line in _columns(header, rows):
        out.print(line)
    for r in d["clientConfigs"]:
        for p in r["problems"]:
            out.print(f"[yellow]{e(r['name'])}:[/] {e(p)}")
        if d["checked"] and not r["health"]["ok"] and r["usable"]:
            out.print(f"[red]{e(r['name'])}:[/] {e(r['health']['error'])}")
        if r["usedBy"]:
            out.print(f"[dim]{e(r['name'])}: used by {e(', '.join(r['usedBy']))}[/]")


def _verify_text(d: dict) -> None:
    from rich.markup import escape as e

    out = console(stderr=False)
    for r in d["clientConfigs"]:
        h = r["health"]
        if h["ok"]:
            out.print(f"[green]ok[/]      {e(r['name'])}  {e(h['identity'] or '')} at {e(r['server'] or '')}")
        else:
            out.print(f"[red]failed[/]  {e(r['name'])}  {e(h['error'] or '')}")
    if not d["clientConfigs"]:
        out.print(f"no ClientConfig in {e(d['context'])}/{e(d['namespace'])}")


def _rotate_text(d: dict) -> None:
    from rich.markup import escape as e

    out = console(stderr=False)
    style = {"rotated": "green", "would be rotated": "yellow", "skipped": "dim", "failed": "red"}
    for r in d["rotations"]:
        line = f"[{style.get(r['action'], '')}]{e(r['action'])}[/] {e(r['name'])}"
        if r["reason"]:
            line += f": {e(r['reason'])}"
        out.print(line)
        if r["action"] == "would be rotated":
            out.print(f"  service account {e(r['serviceAccount'])} in {e(r['sourceContext'])} "
                      f"({e(r['sourceServer'])}), through {e(r['sourceAccess'])}")
            for o in r["objects"]:
                out.print(f"  {o['kind']:<12} {e(o['name'])} in {e(o['context'])}: [yellow]{e(o['action'])}[/] "
                          f"[dim]({e(o['why'])})[/]")
            out.print("  operator: would restart to load the new Secret data")
        if r["action"] == "rotated":
            made = f"new token Secret {r['newTokenSecret']}" if r["newTokenSecret"] else "new TokenRequest token"
            out.print(f"  {e(made)} through {e(r['sourceAccess'])}"
                      + (f", expires {e(r['newTokenExpiry'])}" if r["newTokenExpiry"] else ""))
            out.print(f"  {e(r['revocation'])}")
            if r["bothValidSeconds"] is not None:
                out.print(f"  old and new token both valid for {r['bothValidSeconds']:.2f}s")
            out.print(f"  operator: {e(r['operator'] or 'restarts to load the new Secret data (--wait-operator waits)')}")
    if not d["rotations"]:
        out.print(f"no ClientConfig in {e(d['context'])}/{e(d['namespace'])}")


def _delete_text(d: dict) -> None:
    from rich.markup import escape as e

    out = console(stderr=False)
    rows = [[(o["kind"], ""), (o["name"], ""), (o["action"], "yellow" if o["action"].endswith("deleted") else ""),
             (o.get("why") or "", "dim")] for o in d["objects"]]
    for line in _columns(["kind", "name", "action", "why"], rows):
        out.print(line)
    for n in d["notes"]:
        out.print(f"[yellow]note:[/] {e(n)}")
    if d["operator"]:
        out.print(f"k8ssandra-operator: {e(d['operator'])}")
    elif d["restartsOperator"] and not d["dryRun"]:
        out.print("k8ssandra-operator exits on this deletion and its Deployment starts it again "
                  "(--wait-operator waits for that)")
