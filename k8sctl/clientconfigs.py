"""The ClientConfig workflow: what create-clientconfig.sh did, typed and checked.

For each source context: read the operator's service-account token and the CA
from the source cluster, build a single-context kubeconfig, verify it against
the source API server, then server-side apply a Secret holding it and a
ClientConfig referencing that Secret in the destination (control-plane) cluster.
Everything is read and verified for every source before anything is written.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import yaml

from k8sctl import kube, redact, tokens, waiting
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as api
from k8sctl.errors import ClusterError, K8sctlError, UsageError

DEFAULT_NAMESPACE = "k8ssandra-operator"
DEFAULT_SERVICEACCOUNT = "k8ssandra-operator"
MANAGED_BY = {"app.kubernetes.io/managed-by": "k8sctl"}
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
REDACTED = "<redacted: run with --show-secrets to include>"
_DNS1123_MAX = 63


# --- pure helpers ------------------------------------------------------------

def sanitize_name(context: str) -> str:
    """A DNS-1123 label from a context name: lower-case, `_` and `.` become `-`,
    other invalid characters dropped; cut with a short hash suffix when too long."""
    name = re.sub(r"[^a-z0-9-]", "", context.lower().replace("_", "-").replace(".", "-"))
    name = re.sub(r"-{2,}", "-", name).strip("-")
    if not name:
        raise UsageError(f"cannot derive a ClientConfig name from context {context!r}: pass --name")
    if len(name) > _DNS1123_MAX:
        digest = hashlib.sha256(context.encode()).hexdigest()[:8]
        name = name[: _DNS1123_MAX - 9].rstrip("-") + "-" + digest
    return name


def is_loopback_server(server: str) -> bool:
    host = urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def server_url(host: str, port: int | str) -> str:
    """https URL for host:port, IPv6 addresses bracketed."""
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def _normalized_server(server: str) -> str:
    parts = urlsplit(server)
    host = (parts.hostname or "").lower()
    if host == "localhost":
        host = "127.0.0.1"
    return f"{host}:{parts.port or 443}"


def validate_server(server: str, flag: str) -> str:
    """A server address to store: https://HOST[:PORT] and nothing else (no path, query or user info)."""
    if not kc.is_server_url(server, ("https",)):
        raise UsageError(f"{flag} {server!r} is not an https URL like https://10.0.0.5:6443")
    parts = urlsplit(server)
    if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise UsageError(f"{flag} {server!r} has a path, query or user info: give only https://HOST[:PORT]")
    return server.rstrip("/")


def secret_manifest(name: str, namespace: str, kubeconfig_text: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "type": "Opaque",
        "data": {"kubeconfig": base64.b64encode(kubeconfig_text.encode()).decode()},
    }


def clientconfig_manifest(name: str, namespace: str, api_version: str, context_name: str, secret_name: str,
                          token_source: str | None = None) -> dict:
    metadata: dict = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if token_source:
        # How the token was made, for `clientconfig rotate` (an annotation: no operator restart).
        metadata["annotations"] = {api.TOKEN_SOURCE_ANNOTATION: token_source}
    return {
        "apiVersion": f"{api.GROUP}/{api_version}", "kind": api.KIND, "metadata": metadata,
        "spec": {"contextName": context_name, "kubeConfigSecret": {"name": secret_name}},
    }


def redact_secret(manifest: dict) -> dict:
    out = {**manifest, "data": {k: REDACTED for k in manifest.get("data", {})}}
    return out


def is_managed(obj: dict | None) -> bool:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return labels.items() >= MANAGED_BY.items()


def secret_data_changed(existing: dict | None, desired: dict) -> bool:
    """What the operator compares (its secret-hash covers `data` only)."""
    return existing is None or (existing.get("data") or {}) != desired["data"]


def clientconfig_spec_changed(existing: dict | None, desired: dict) -> bool:
    """What the operator compares (its resource-hash covers the spec only)."""
    if existing is None:
        return True
    spec = existing.get("spec") or {}
    return spec.get("contextName") != desired["spec"]["contextName"] \
        or (spec.get("kubeConfigSecret") or {}).get("name") != desired["spec"]["kubeConfigSecret"]["name"]


def secret_action(existing: dict | None, desired: dict) -> str:
    if existing is None:
        return "created"
    same = not secret_data_changed(existing, desired) and existing.get("type") == desired["type"] and is_managed(existing)
    return "unchanged" if same else "updated"


def clientconfig_action(existing: dict | None, desired: dict) -> str:
    if existing is None:
        return "created"
    same_source = api.token_source_of(existing) == api.token_source_of(desired)
    same = not clientconfig_spec_changed(existing, desired) and is_managed(existing) and same_source
    return "unchanged" if same else "updated"


OPERATOR_RESTART_NOTE = ("k8ssandra-operator loads ClientConfigs at start-up: on this change it exits and its "
                         "Deployment starts it again, which reloads every ClientConfig (one restart)")


# --- options -----------------------------------------------------------------

@dataclass
class CreateOptions:
    """Flags of `create-clientconfig`, completed from kubeconfigs and defaults."""

    src_kubeconfig: Path | None = None
    src_contexts: list[str] = field(default_factory=list)
    dest_kubeconfig: list[Path] = field(default_factory=list)
    dest_context: str | None = None
    namespace: str | None = None
    src_namespace: str | None = None
    dest_namespace: str | None = None
    serviceaccount: str = DEFAULT_SERVICEACCOUNT
    output_dir: Path | None = None
    in_cluster_kubeconfig: Path | None = None
    server: str | None = None
    name: str | None = None
    context_name: str | None = None
    token_source: str = "secret"
    token_duration: int | None = None
    timeout: float = 60.0
    dry_run: bool = False
    show_secrets: bool = False
    verify: bool = True
    verify_server: bool = True
    allow_self: bool = False
    force: bool = False
    request_timeout: tuple = kube.DEFAULT_TIMEOUT  # (connect, read) seconds for each request: --request-timeout


@dataclass
class Completed:
    """Options with every kubeconfig read and every default resolved."""

    opts: CreateOptions
    src_doc: dict
    src_base: str
    src_contexts: list[str]
    dest_doc: dict
    dest_view: kc.ContextView
    dest_namespace: str
    in_cluster_doc: dict | None
    # Credentials a run created in a source cluster (`<sa>-token`): named when a later step fails.
    created_in_sources: list[str] = field(default_factory=list)


_NON_EMPTY = (("serviceaccount", "--serviceaccount"), ("name", "--name"), ("namespace", "--namespace"),
              ("src_namespace", "--src-namespace"), ("dest_namespace", "--dest-namespace"),
              ("context_name", "--context-name"), ("server", "--server"), ("dest_context", "--dest-context"))


def complete(opts: CreateOptions, env: dict[str, str]) -> Completed:
    # Empty strings first: an empty --name must not silently mean "derive one".
    for attr, flag in _NON_EMPTY:
        value = getattr(opts, attr)
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty: give a value or leave the option out")
    if any(not c.strip() for c in opts.src_contexts):
        raise UsageError("--src-context is empty: give a context name or leave the option out")
    if not opts.src_kubeconfig and not opts.src_contexts:
        raise UsageError("pass --src-kubeconfig, --src-context, or both, to name the data-plane cluster(s)")
    dest_doc = kc.load_or_in_cluster(opts.dest_kubeconfig, env)  # in a pod: its service account
    dest_view = kc.select_context(dest_doc, opts.dest_context, "the destination kubeconfig")
    if opts.src_kubeconfig:
        src_doc = kc.load([opts.src_kubeconfig])
        src_base = str(opts.src_kubeconfig.parent)
    else:
        src_doc, src_base = dest_doc, ""
    contexts = opts.src_contexts or [src_doc.get("current-context") or ""]
    for c in contexts:
        kc.select_context(src_doc, c or None, "the source kubeconfig")
    contexts = [c or src_doc["current-context"] for c in contexts]
    dest_ns = opts.dest_namespace or opts.namespace or dest_view.namespace or DEFAULT_NAMESPACE
    in_cluster_doc = kc.load([opts.in_cluster_kubeconfig]) if opts.in_cluster_kubeconfig else None
    return Completed(opts, src_doc, src_base, contexts, dest_doc, dest_view, dest_ns, in_cluster_doc)


def validate(c: Completed) -> None:
    o = c.opts
    if o.token_source not in ("secret", "request"):
        raise UsageError(f"--token-source must be 'secret' or 'request' (got {o.token_source!r})")
    if o.token_duration is not None and o.token_source != "request":
        raise UsageError("--token-duration applies only with --token-source request")
    if o.token_duration is not None and o.token_duration < 600:
        raise UsageError("--token-duration must be at least 600 seconds (the API server's minimum)")
    if o.server:
        o.server = validate_server(o.server, "--server")
    if len(c.src_contexts) > 1 and (o.name or o.context_name or o.server):
        raise UsageError("--name, --context-name and --server name one cluster: give a single --src-context with them")
    if c.in_cluster_doc is not None and len(c.src_contexts) > 1:
        missing = [ctx for ctx in c.src_contexts if ctx not in kc.context_names(c.in_cluster_doc)]
        if missing:
            raise UsageError(f"--in-cluster-kubeconfig has no context {missing[0]!r}: with several --src-context it "
                             f"must hold each of them by name")
    if len(set(c.src_contexts)) != len(c.src_contexts):
        raise UsageError("the same --src-context is given twice")
    if not math.isfinite(o.timeout) or o.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds (got {o.timeout})")
    if o.name:
        if sanitize_name(o.name) != o.name:
            raise UsageError(f"--name {o.name!r} is not a valid DNS-1123 name; for example {sanitize_name(o.name)!r}")
    names = [o.name or sanitize_name(ctx) for ctx in c.src_contexts]
    if len(set(names)) != len(names):
        raise UsageError(f"two source contexts give the same ClientConfig name ({', '.join(names)}): pass --name")
    if not o.allow_self:
        dest = _normalized_server(c.dest_view.server)
        for ctx in c.src_contexts:
            if _normalized_server(kc.select_context(c.src_doc, ctx).server) == dest:
                raise UsageError(
                    f"source context {ctx!r} is the destination cluster itself: a K8ssandraCluster datacenter with an "
                    f"empty k8sContext already runs in the control plane; pass --allow-self to register it anyway")
    if o.output_dir is not None and o.output_dir.exists() and not o.output_dir.is_dir():
        raise UsageError(f"--output-dir {o.output_dir} is a file: give a folder")


# --- run ---------------------------------------------------------------------

@dataclass
class Destination:
    """What the control plane holds for one registration before anything is written."""

    version: str
    clientconfig: dict | None
    secret: dict | None
    others: list[dict] = field(default_factory=list)  # the namespace's other ClientConfigs


@dataclass
class Registration:
    """Everything decided for one source context (the token stays in `kubeconfig_doc` only)."""

    source_context: str
    name: str
    secret_name: str
    context_name: str
    src_namespace: str
    server: str
    server_reason: str
    token_source: str
    # The TLS name to check the server's certificate against, where the kubeconfig the server came
    # from sets one (an address the certificate does not list): stored with it, or it cannot work.
    tls_server_name: str | None = None
    service_account: str = ""
    token_secret: str | None = None
    token_expiry: str | None = None
    ca_source: str = ""
    identity: str | None = None
    authorized: bool | None = None
    verified_at: str | None = None
    kubeconfig_doc: dict = field(default_factory=dict, repr=False)
    secret: dict = field(default_factory=dict, repr=False)
    clientconfig: dict = field(default_factory=dict, repr=False)
    previous_secret: dict | None = field(default=None, repr=False)
    # The operator's stamps on the ClientConfig before our write (--wait-operator waits for new ones).
    previous_operator_hashes: tuple = field(default=(None, None), repr=False)
    secret_action: str = ""
    clientconfig_action: str = ""
    restarts_operator: bool = False
    artifacts: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    operator: str | None = None  # --wait-operator: loaded, timeout, no change to load

    def summary(self, dest_namespace: str, dry_run: bool) -> dict:
        would = "would be " if dry_run else ""
        return {
            "name": self.name, "namespace": dest_namespace, "sourceContext": self.source_context,
            "contextName": self.context_name, "k8sContext": self.context_name,
            "server": self.server, "serverReason": self.server_reason,
            "serviceAccount": f"{self.src_namespace}/{self.service_account}",
            "tokenSource": self.token_source, "tokenSecret": self.token_secret, "tokenExpiry": self.token_expiry,
            "caSource": self.ca_source, "identity": self.identity, "authorized": self.authorized,
            "verifiedAt": self.verified_at,
            "clientConfigApiVersion": self.clientconfig.get("apiVersion"),
            "objects": [
                {"kind": "Secret", "name": self.secret_name, "action": would + self.secret_action},
                {"kind": "ClientConfig", "name": self.name, "action": would + self.clientconfig_action},
            ],
            "restartsOperator": self.restarts_operator, "operator": self.operator,
            "artifacts": self.artifacts, "warnings": self.warnings,
        }


@dataclass
class Result:
    destination_context: str
    destination_namespace: str
    output_dir: str | None
    dry_run: bool
    registrations: list[Registration]

    @property
    def changed(self) -> bool:
        return any(r.secret_action != "unchanged" or r.clientconfig_action != "unchanged" for r in self.registrations)

    @property
    def restarts_operator(self) -> bool:
        return any(r.restarts_operator for r in self.registrations)

    def as_dict(self) -> dict:
        return {
            "destinationContext": self.destination_context,
            "namespace": self.destination_namespace,
            "dryRun": self.dry_run,
            "outputDir": self.output_dir,
            "changed": self.changed,
            "restartsOperator": self.restarts_operator,
            "operatorNote": OPERATOR_RESTART_NOTE if self.restarts_operator and not self.dry_run else None,
            "registrations": [r.summary(self.destination_namespace, self.dry_run) for r in self.registrations],
        }


Progress = Callable[[str], None]


def run(c: Completed, progress: Progress = lambda s: None) -> Result:
    """Read the destination and every source at once, verify each new kubeconfig, then write.

    Nothing is written until every registration is verified; artifacts only after the writes
    succeeded, only to --output-dir; a dry run creates no credential and writes no file.
    """
    o = c.opts
    names = [o.name or sanitize_name(ctx) for ctx in c.src_contexts]
    with kube.KubeClient(c.dest_doc, c.dest_view.name, timeout=o.request_timeout,
                         source="the destination kubeconfig") as dest, \
            ThreadPoolExecutor(max_workers=min(32, 3 * len(names))) as pool:
        # The control plane is read while the sources are (its ClientConfigs, one LIST for all,
        # and each registration's Secret, at once), and every source at once: round trips overlap.
        listed = pool.submit(_list_clientconfigs, dest, c.dest_namespace)
        dest_state = {n: _DestinationRead(pool, dest, n, c.dest_namespace, listed) for n in names}
        planned = [pool.submit(_plan, c, ctx, name, dest_state[name], progress)
                   for ctx, name in zip(c.src_contexts, names)]
        try:
            regs = [f.result() for f in planned]
            for reg in regs:
                _decide(c, reg, dest_state[reg.name].result())
        except ClusterError as e:
            raise ClusterError(f"{e}; {_nothing_written(c)}") from None
        if o.output_dir is not None and not o.dry_run:
            _check_artifact_paths(o.output_dir, regs)  # before any write: a bad path must not stop us half-way
        if not o.dry_run:
            # Each registration's Secret, then its ClientConfig; the registrations at once.
            writes = [pool.submit(_apply, reg, dest, c.dest_namespace, o.force, progress) for reg in regs]
            failed = [(reg, err) for reg, f in zip(regs, writes) if (err := f.exception()) is not None]
            if failed:
                _, first = failed[0]
                if not isinstance(first, K8sctlError):
                    raise first
                done = [r.name for r, f in zip(regs, writes) if f.exception() is None]
                more = [r.name for r, _ in failed[1:]]
                tail = ((f"; registrations written: {', '.join(done)}" if done else "")
                        + (f"; also failed: {', '.join(more)} (run the same command again to finish)" if more else ""))
                raise (UsageError if isinstance(first, UsageError) else ClusterError)(f"{first}{tail}") from None
        out_dir = None
        if o.output_dir is not None and not o.dry_run:
            out_dir = _output_dir(o.output_dir)
            for reg in regs:
                _write_artifacts(reg, out_dir, o.show_secrets)
        return Result(c.dest_view.name, c.dest_namespace, str(out_dir) if out_dir else None, o.dry_run, regs)


def _nothing_written(c: Completed) -> str:
    created = ", ".join(c.created_in_sources)
    return (f"nothing was written to the destination {c.dest_view.name}"
            + (f" (created in a source, and used by the next run: {created})" if created else ""))


class _DestinationRead:
    """The control plane's ClientConfigs (one LIST shared by every registration of the run: this
    one's, and the others, whose context names it must not repeat) and the registration's Secret,
    the requests at once."""

    def __init__(self, pool: ThreadPoolExecutor, dest: kube.KubeClient, name: str, ns: str, listed: Future):
        self._dest, self._name, self._ns, self._listed = dest, name, ns, listed
        self._secret = pool.submit(dest.get_or_none, kube.SECRET, f"{name}-config", ns)

    def secret(self) -> dict | None:
        """The registration's Secret as the destination holds it (the GET sent with the LIST)."""
        return self._secret.result()

    def result(self) -> Destination:
        listed = self._listed.result()
        if listed is None:  # allowed to read ClientConfigs one by one only: ours, without the check
            version, mine = api.get_with_version(self._dest, self._name, self._ns)
            return Destination(version, mine, self._secret.result())
        version, items = listed
        mine = next((cc for cc in items if cc["metadata"]["name"] == self._name), None)
        others = [cc for cc in items if cc["metadata"]["name"] != self._name]
        return Destination(version, mine, self._secret.result(), others)


def _list_clientconfigs(dest: kube.KubeClient, ns: str) -> tuple[str, list[dict]] | None:
    """The served version and the namespace's ClientConfigs; None where LIST is forbidden."""
    try:
        return api.list_with_version(dest, ns, api.not_installed_in_destination)
    except kube.ApiError as e:
        if e.status != 403:
            raise
        return None


def _plan(c: Completed, ctx: str, name: str, dest_state: _DestinationRead, progress: Progress) -> Registration:
    o = c.opts
    view = kc.select_context(c.src_doc, ctx)
    src_ns = o.src_namespace or o.namespace or view.namespace or DEFAULT_NAMESPACE
    reg = Registration(source_context=ctx, name=name, secret_name=f"{name}-config",
                       context_name=o.context_name or ctx, src_namespace=src_ns, server="", server_reason="",
                       token_source=o.token_source, service_account=o.serviceaccount)
    progress(f"reading service account {o.serviceaccount} from {ctx}")
    known_server = _known_server(c, view, reg)
    with kube.KubeClient(c.src_doc, ctx, c.src_base, timeout=o.request_timeout, source="the source kubeconfig") as src, \
            ThreadPoolExecutor(max_workers=3) as own:
        # The verification's connections open while the source is read (see _preconnect_verification).
        warm = own.submit(_preconnect_verification, c, view, known_server)
        # The token Secret k8sctl makes (and the operator's manifests list) is read together with
        # the service account, on a guess: one round trip instead of two where the guess is right.
        guess = own.submit(src.get_or_none, kube.SECRET, f"{o.serviceaccount}-token", src_ns) \
            if o.token_source == "secret" else None
        # On a re-run: the token the destination stores, and the token Secret it names, read as soon
        # as the destination's Secret is in (with the source reads; a first run sends nothing more).
        stored = own.submit(_stored_token_secret, c, reg, src, src_ns, dest_state) \
            if o.token_source == "secret" else None
        try:
            return _plan_with(c, reg, view, src, src_ns, known_server, guess, stored, warm, dest_state, progress)
        finally:
            preconnected = warm.result()
            if preconnected is not None:
                preconnected.close()


def _preconnect_verification(c: Completed, view: kc.ContextView,
                             known_server: tuple[str, str] | None) -> kube.Preconnected | None:
    """Open the verification's two connections (its two reviews go at once) before its token
    exists: a connection proves the server and CA, the token travels per request (kube's shared
    pools). The CA stored is the token Secret's, read later; the source kubeconfig's is the guess,
    and the pools are keyed by CA, so a wrong guess costs only these idle connections."""
    o = c.opts
    server = view.server if not o.verify_server else (known_server or ("", ""))[0]
    if not o.verify or not server or (o.dry_run and o.token_source == "request"):
        return None
    try:
        ca = kc.ca_pem_of(view.cluster)
    except UsageError:
        return None
    return kube.Preconnected(server, ca, 2, o.request_timeout) if ca else None


def _preconnect_timed_out(preconnected: kube.Preconnected | None, server: str) -> kube.Unreachable | None:
    """The verification's answer when its connections, opened ahead to the same server, all timed
    out: trying again would take another whole connect timeout to say the same. (A timeout does
    not depend on the CA guessed for them; other failures come fast and are met again.)"""
    if preconnected is None or preconnected.timed_out is None or preconnected.server != server.rstrip("/"):
        return None
    return kube.Unreachable(f"cannot reach {server}: {preconnected.timed_out}", preconnected.timed_out)


def _plan_with(c: Completed, reg: Registration, view: kc.ContextView, src: kube.KubeClient, src_ns: str,
               known_server: tuple[str, str] | None, guess: Future | None, stored: Future | None, warm: Future,
               dest_state: _DestinationRead, progress: Progress) -> Registration:
    o, ctx = c.opts, view.name
    sa = src.get_or_none(kube.SERVICEACCOUNT, o.serviceaccount, src_ns)
    if sa is None:
        _missing_serviceaccount(src, ctx, src_ns, o.serviceaccount)
    reg.server, reg.server_reason = known_server or _discovered_server(src, view, reg)
    if o.token_source == "request":
        token, secret_ca = _request_token(src, src_ns, o, reg, _stored_token(c, reg, dest_state.secret()))
    else:
        token, secret_ca = _secret_token(src, sa, src_ns, o, reg, progress, c.created_in_sources, guess, stored)
    ca = secret_ca
    reg.ca_source = "token Secret ca.crt" if ca else ""
    if not ca:
        cm = src.get_or_none(kube.CONFIGMAP, "kube-root-ca.crt", src_ns)
        ca = ((cm or {}).get("data") or {}).get("ca.crt", "").encode()
        reg.ca_source = f"ConfigMap {src_ns}/kube-root-ca.crt" if ca else ""
    if not ca:
        ca = kc.ca_pem_of(view.cluster) or b""
        reg.ca_source = "source kubeconfig" if ca else ""
    if not ca.strip():
        raise ClusterError(f"no CA certificate for {ctx}: the token Secret has no ca.crt, there is no kube-root-ca.crt "
                           f"ConfigMap, and the kubeconfig carries none; refusing to write an unverified kubeconfig")
    reg.kubeconfig_doc = kc.build_kubeconfig(
        cluster_name=view.cluster_name, server=reg.server, ca_pem=ca, tls_server_name=reg.tls_server_name,
        user_name=f"{view.cluster_name}-{o.serviceaccount}", token=token, context_name=reg.context_name)
    if token == _NOT_MINTED:
        reg.warnings.append("dry run: no token was requested (that would create a credential), so the new "
                            "credentials were not verified")
    elif o.verify:
        wait([warm])  # handshakes under way finish sooner than new ones would
        via = view.server if not o.verify_server else None
        verify_new_kubeconfig(reg, via, src_ns, o.serviceaccount, progress, o.request_timeout,
                              unreachable=_preconnect_timed_out(warm.result(), via or reg.server))
    else:
        reg.warnings.append("--no-verify: the new kubeconfig was not checked; the operator exits at start-up if "
                            "it does not work")
    return reg


def _missing_serviceaccount(src: kube.KubeClient, ctx: str, ns: str, sa: str) -> NoReturn:
    try:
        ns_missing = src.get_or_none(kube.NAMESPACE, ns) is None
    except kube.ApiError:
        ns_missing = False
    if ns_missing:
        raise UsageError(f"namespace {ns!r} does not exist in {ctx}: is k8ssandra-operator installed there? "
                         f"(pass --src-namespace or --namespace if it runs elsewhere)")
    raise UsageError(f"service account {sa!r} not found in namespace {ns!r} of {ctx}: install k8ssandra-operator "
                     f"there, or pass --serviceaccount")


def _decode(secret: dict, key: str) -> bytes:
    value = (secret.get("data") or {}).get(key)
    return base64.b64decode(value) if value else b""


def _is_token_secret_for(secret: dict, sa: str) -> bool:
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    return secret.get("type") == SA_TOKEN_TYPE and annotations.get(SA_NAME_ANNOTATION) == sa


def _token_of(secret: dict) -> str:
    return _decode(secret, "token").decode(errors="replace").strip()


def _created_at(secret: dict) -> float:
    stamp = str((secret.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def token_secret_order(sa: str) -> Callable[[dict], tuple]:
    """The order among several token Secrets of account `sa` (none listed, no match for the stored
    token): `<sa>-token` (the one k8sctl makes), then the newest (`clientconfig rotate` makes a new
    `<sa>-token-xxxxx` and deletes the old), then by name; the first is used."""
    def key(secret: dict) -> tuple:
        name = str((secret.get("metadata") or {}).get("name") or "")
        return name != f"{sa}-token", -_created_at(secret), name
    return key


@dataclass
class _Stored:
    """The token the destination already stores for a registration (a re-run), and the token
    Secrets read for it from the source, by name (None: not there)."""

    token: str | None = None
    read: dict[str, dict | None] = field(default_factory=dict)


def _stored_token_secret(c: Completed, reg: Registration, src: kube.KubeClient, ns: str,
                         dest_state: _DestinationRead) -> _Stored:
    """The token stored in the destination for this registration, and the token Secret its claims
    name (a token Secret's token names its Secret: after `clientconfig rotate`, `<sa>-token-xxxxx`),
    read from the source. A hint: the token is kept only where a token Secret of the account holds
    it (_secret_token). Never fails: a failure of the destination is reported where its state is
    used (_decide), one of the source by the reads that need it."""
    try:
        token = _stored_token(c, reg, dest_state.secret())
    except K8sctlError:
        return _Stored()
    sa = c.opts.serviceaccount
    claims = tokens.jwt_claims(token or "") or {}
    name = claims.get("kubernetes.io/serviceaccount/secret.name")
    if not token or not isinstance(name, str) or not name or name == f"{sa}-token" \
            or claims.get("kubernetes.io/serviceaccount/namespace") != ns \
            or claims.get("kubernetes.io/serviceaccount/service-account.name") != sa:
        return _Stored(token)  # `<sa>-token` is read anyway (the guess); another account's is not ours
    try:
        return _Stored(token, {name: src.get_or_none(kube.SECRET, name, ns)})
    except K8sctlError:
        return _Stored(token)


def _secret_token(src: kube.KubeClient, sa: dict, ns: str, o: CreateOptions, reg: Registration,
                  progress: Progress, created: list[str], guess: Future | None = None,
                  stored: Future | None = None) -> tuple[str, bytes]:
    """The account's token. The one the destination already stores for this registration, when a
    token Secret of the account still holds it: a re-run after `clientconfig rotate` must not switch
    back to another token Secret (that write would restart the operator for nothing). Otherwise:
    from the Secret the account lists, else `<sa>-token`, else one annotated for it (several: see
    token_secret_order), else a new `<sa>-token` (filled by the token controller). `guess` is
    `<sa>-token`, read already; `stored` the _Stored of _stored_token_secret."""
    secret = None
    guessed_name = f"{o.serviceaccount}-token"
    guessed, guess_ok = None, False
    if guess is not None:
        try:
            guessed, guess_ok = guess.result(), True
        except kube.ApiError:
            pass  # e.g. a Role that grants only the listed Secret: read that one as before
    kept: _Stored = stored.result() if stored is not None else _Stored()

    def read(name: str) -> dict | None:
        if name == guessed_name and guess_ok:
            return guessed
        return kept.read[name] if name in kept.read else src.get_or_none(kube.SECRET, name, ns)

    def holds_stored(candidate: dict | None) -> bool:
        return bool(kept.token) and candidate is not None and _is_token_secret_for(candidate, o.serviceaccount) \
            and _token_of(candidate) == kept.token

    for ref in sa.get("secrets") or []:
        candidate = read(ref.get("name", ""))
        if candidate and _is_token_secret_for(candidate, o.serviceaccount):
            secret = candidate
            break
    if secret is None and guessed is not None and _is_token_secret_for(guessed, o.serviceaccount):
        secret = guessed
    keep = next((s for s in (secret, guessed, *kept.read.values()) if holds_stored(s)), None)
    if keep is None and secret is None:
        matches = [s for s in src.list(kube.SECRET, ns) if _is_token_secret_for(s, o.serviceaccount)]
        keep = next((s for s in matches if holds_stored(s)), None)
        secret = min(matches, key=token_secret_order(o.serviceaccount)) if matches else None
    if keep is not None:
        secret = keep
    if secret is None:
        name = f"{o.serviceaccount}-token"
        if o.dry_run:
            raise UsageError(f"service account {ns}/{o.serviceaccount} has no token Secret and --dry-run writes nothing: "
                             f"run without --dry-run to create {name}, or use --token-source request")
        progress(f"creating token Secret {ns}/{name}")
        try:
            secret = src.create(kube.SECRET, {
                "apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_TYPE,
                "metadata": {"name": name, "namespace": ns, "labels": dict(MANAGED_BY),
                             "annotations": {SA_NAME_ANNOTATION: o.serviceaccount}},
            }, ns)
            created.append(f"token Secret {ns}/{name} in {reg.source_context}")
        except kube.ApiError as e:
            if e.status != 409:
                raise
            # Another run created it a moment ago: use that one.
            secret = src.get(kube.SECRET, name, ns)
            if not _is_token_secret_for(secret, o.serviceaccount):
                raise UsageError(f"Secret {ns}/{name} exists in {reg.source_context} but is not a token Secret for "
                                 f"{o.serviceaccount}: delete or rename it") from None
    name = secret["metadata"]["name"]
    reg.token_secret = name
    if not _decode(secret, "token"):
        def filled() -> dict | None:
            current = src.get(kube.SECRET, name, ns)
            return current if _decode(current, "token") else None

        secret = waiting.until(
            filled, timeout=o.timeout, interval=0.2, progress=progress,
            what=f"waiting for the token controller to fill {ns}/{name}",
            message=f"token Secret {ns}/{name} in {reg.source_context} was not filled within {o.timeout:.0f}s: "
                    f"is kube-controller-manager's token controller running? (or use --token-source request)")
    token = _decode(secret, "token").decode()
    redact.remember(token)
    return token, _decode(secret, "ca.crt")


# Stands in for a token in a dry run's kubeconfig: requesting a real one would create a credential.
_NOT_MINTED = "dry-run-no-token-requested"


def _stored_token(c: Completed, reg: Registration, secret: dict | None) -> str | None:
    """The bearer token in the destination's kubeconfig Secret for this registration (its context),
    if it holds one. Through the one parser of kubeconfigs read from a cluster: untrusted data."""
    token = api.inspect_stored_kubeconfig(secret, f"{c.dest_namespace}/{reg.secret_name}", reg.context_name).token
    if token:
        redact.remember(token)
    return token


def _request_token(src: kube.KubeClient, ns: str, o: CreateOptions, reg: Registration,
                   kept: str | None) -> tuple[str, bytes]:
    subject = f"system:serviceaccount:{ns}:{o.serviceaccount}"
    if kept and tokens.fresh_for_reuse(kept, subject):
        # Re-minting every run would rewrite the Secret, and so restart the operator, every run.
        reg.token_expiry = _iso(tokens.expires_at(kept))
        reg.warnings.append("kept the stored token: more than half of its lifetime is left")
        return kept, b""
    if o.dry_run:
        return _NOT_MINTED, b""
    body: dict = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    if o.token_duration:
        body["spec"]["expirationSeconds"] = o.token_duration
    resp = src.request("POST", kube.SERVICEACCOUNT.path(ns, o.serviceaccount, "token"), body)
    token = resp["status"]["token"]
    redact.remember(token)
    reg.token_expiry = (resp.get("status") or {}).get("expirationTimestamp")
    return token, b""


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def _known_server(c: Completed, view: kc.ContextView, reg: Registration) -> tuple[str, str] | None:
    """The server to store and why, where the flags or the kubeconfigs give it (no request); None
    when the source server is loopback and only the cluster can tell (`_discovered_server`)."""
    o = c.opts
    if o.server:
        return o.server, "--server"
    if c.in_cluster_doc is not None:
        names = kc.context_names(c.in_cluster_doc)
        if view.name in names:
            ctx = view.name
        elif len(names) == 1:
            ctx = names[0]
            reg.warnings.append(f"--in-cluster-kubeconfig has no context {view.name!r}; used its only context "
                                f"{ctx!r}")
        else:
            raise UsageError(f"--in-cluster-kubeconfig has no context {view.name!r} (it has "
                             f"{', '.join(names) or 'none'}): add it, or pass --server")
        in_view = kc.select_context(c.in_cluster_doc, ctx, "--in-cluster-kubeconfig")
        server = validate_server(in_view.server, "--in-cluster-kubeconfig server")
        reg.tls_server_name = in_view.cluster.get("tls-server-name")
        return server, f"--in-cluster-kubeconfig (context {in_view.name})"
    if not is_loopback_server(view.server):
        server = validate_server(view.server, f"the server of source context {view.name!r}")
        reg.tls_server_name = view.cluster.get("tls-server-name")
        return server, "source kubeconfig"
    return None


def _discovered_server(src: kube.KubeClient, view: kc.ContextView, reg: Registration) -> tuple[str, str]:
    found = _discover_server(src, reg)
    if found:
        return found
    raise UsageError(
        f"the source server {view.server} is a loopback address the operator's pods cannot reach, and neither "
        f"kube-public/cluster-info nor a kube-apiserver pod gives another: pass --server https://HOST:PORT or "
        f"--in-cluster-kubeconfig FILE")


def _usable_server(server: str) -> bool:
    try:
        validate_server(server, "server")
    except UsageError:
        return False
    return not is_loopback_server(server)


def _discover_server(src: kube.KubeClient, reg: Registration) -> tuple[str, str] | None:
    cm = src.get_or_none(kube.CONFIGMAP, "cluster-info", "kube-public")
    text = ((cm or {}).get("data") or {}).get("kubeconfig")
    if text:
        try:
            doc = kc.load_yaml(text) or {}
            server = str(((doc.get("clusters") or [{}])[0].get("cluster") or {}).get("server", ""))
        except (yaml.YAMLError, AttributeError, IndexError, TypeError):
            server = ""
        if _usable_server(server):
            return server.rstrip("/"), "kube-public/cluster-info ConfigMap (the source server is loopback)"
        if server:
            reg.warnings.append(f"ignored kube-public/cluster-info: its server {server!r} is not a usable https "
                                f"address")
    try:
        pods = src.list(kube.POD, "kube-system", label_selector="component=kube-apiserver")
    except kube.ApiError:
        pods = []
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        port: str | int = 6443
        for container in (pod.get("spec") or {}).get("containers") or []:
            for arg in (container.get("command") or []) + (container.get("args") or []):
                if str(arg).startswith("--secure-port="):
                    port = str(arg).split("=", 1)[1]
        server = server_url(ip, port) if str(port).isdigit() else ""
        if _usable_server(server):
            return server, "kube-apiserver pod IP (the source server is loopback)"
        reg.warnings.append(f"ignored kube-apiserver pod {pod_name}: IP {ip!r} with --secure-port {port!r} is not a "
                            f"usable address")
    return None


def with_server(doc: dict, server: str) -> dict:
    return {**doc, "clusters": [{"name": cl["name"], "cluster": {**cl["cluster"], "server": server}}
                                for cl in doc["clusters"]]}


SERVER_HINT = "check --server or --in-cluster-kubeconfig"


def verify_new_kubeconfig(reg: Registration, via_server: str | None, ns: str, sa: str, progress: Progress,
                          timeout: tuple = kube.DEFAULT_TIMEOUT, server_hint: str = SERVER_HINT,
                          unreachable: kube.Unreachable | None = None) -> None:
    """One identity check with exactly the kubeconfig that will be stored, as the operator will use it.

    `via_server` (--no-verify-server) checks the same credentials through the source's own
    address instead, for stored servers that only the operator's pods can reach.
    `clientconfig rotate` checks its new token with it too. `server_hint` says how to fix an
    address that is not the cluster's API server (the calling command's own options).
    `unreachable`: the server is known not to answer already (_preconnect_timed_out); the check
    fails with it, as it would have after trying.
    """
    server = via_server or reg.server
    progress(f"verifying the new kubeconfig of {reg.source_context} at {server}")
    if unreachable is not None:
        raise _unverifiable(reg, server, via_server, unreachable, server_hint)
    doc = reg.kubeconfig_doc if via_server is None else with_server(reg.kubeconfig_doc, via_server)
    expected = f"system:serviceaccount:{ns}:{sa}"
    with kube.KubeClient(doc, reg.context_name, trusted=False, timeout=timeout, source="the new kubeconfig") as client, \
            ThreadPoolExecutor(max_workers=1) as own:
        try:
            # Both reviews at once (one round trip). The access review does not need the identity:
            # it only counts when the identity is the expected one, checked below.
            review = own.submit(client.request, "POST", kube.SELF_SUBJECT_ACCESS_REVIEW.path(), {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": ns, "verb": "create", "group": "cassandra.datastax.com",
                                                "resource": "cassandradatacenters"}}})
            try:
                # None on old servers without SelfSubjectReview: the access review still authenticates.
                reg.identity = client.whoami()
            finally:
                wait([review])
            if reg.identity is not None and reg.identity != expected:
                raise ClusterError(f"the new kubeconfig for {reg.source_context} authenticates as {reg.identity}, "
                                   f"not {expected}")
            access = review.result()
        except kube.Unreachable as e:
            raise _unverifiable(reg, server, via_server, e, server_hint) from None
        except kube.ApiError as e:
            if e.status == 401:
                raise ClusterError(f"the new kubeconfig for {reg.source_context} does not authenticate at {server} "
                                   f"(401): its token is not valid there; is {server} the API server of "
                                   f"{reg.source_context}?") from None
            raise
    reg.verified_at = server
    if via_server is not None:
        reg.warnings.append(f"--no-verify-server: the credentials were checked through {via_server}; the stored "
                            f"server {reg.server} was not contacted")
    reg.authorized = bool((access.get("status") or {}).get("allowed"))
    if not reg.authorized:
        reg.warnings.append(f"{expected} may not create CassandraDatacenters in {ns} of {reg.source_context}: "
                            f"the operator will fail there until its Role allows it")


def _unverifiable(reg: Registration, server: str, via_server: str | None, e: kube.Unreachable,
                  server_hint: str) -> ClusterError:
    why = e.cause or str(e)
    if e.tls:
        return ClusterError(f"the new kubeconfig for {reg.source_context} does not work at {server}: {why}; the "
                            f"address is not the API server of {reg.source_context} ({server_hint})")
    if via_server is not None:
        return ClusterError(f"cannot verify the new kubeconfig for {reg.source_context} at {server}: {why}")
    return ClusterError(
        f"the server the new kubeconfig for {reg.source_context} names, {server} ({reg.server_reason}), cannot be "
        f"reached from here ({why}): if only the operator's pods can reach it, pass --no-verify-server to check the "
        f"credentials through the source's own address instead")


def _decide(c: Completed, reg: Registration, dest: Destination) -> None:
    """The desired objects and what writing them means; refuses to take over objects k8sctl does not manage."""
    ns = c.dest_namespace
    reg.secret = secret_manifest(reg.secret_name, ns, kc.dump(reg.kubeconfig_doc))
    reg.clientconfig = clientconfig_manifest(reg.name, ns, dest.version, reg.context_name, reg.secret_name,
                                             reg.token_source)
    same_context = sorted(cc["metadata"]["name"] for cc in dest.others if api.context_of(cc) == reg.context_name)
    if same_context:
        raise UsageError(f"ClientConfig {ns}/{same_context[0]} in {c.dest_view.name} already names context "
                         f"{reg.context_name!r}: with two, the operator picks either (and k8sctl uses neither); "
                         f"delete it first (k8sctl clientconfig delete {same_context[0]}) to register this cluster "
                         f"as {reg.name}, or give this one another --context-name")
    for kind, name, existing in (("Secret", reg.secret_name, dest.secret),
                                 ("ClientConfig", reg.name, dest.clientconfig)):
        if existing is not None and not is_managed(existing) and not c.opts.force:
            raise UsageError(f"{kind} {ns}/{name} exists in {c.dest_view.name} and is not managed by k8sctl (no label "
                             f"app.kubernetes.io/managed-by=k8sctl): pass --force to take it over (for example from "
                             f"create-clientconfig.sh), or --name to register under another name")
    reg.previous_secret = dest.secret
    reg.previous_operator_hashes = api.operator_hashes(dest.clientconfig)
    reg.secret_action = secret_action(dest.secret, reg.secret)
    reg.clientconfig_action = clientconfig_action(dest.clientconfig, reg.clientconfig)
    reg.restarts_operator = secret_data_changed(dest.secret, reg.secret) \
        or clientconfig_spec_changed(dest.clientconfig, reg.clientconfig)


def _apply(reg: Registration, dest: kube.KubeClient, ns: str, force: bool, progress: Progress) -> None:
    """The Secret, then the ClientConfig (a ClientConfig whose Secret is missing makes the operator exit
    at start-up). When the ClientConfig write fails, the Secret goes back to what it was."""
    version = reg.clientconfig["apiVersion"].split("/")[1]
    secret_written = False
    try:
        if reg.secret_action != "unchanged":
            progress(f"applying Secret {ns}/{reg.secret_name}")
            dest.apply(kube.SECRET, reg.secret, force=force)
            secret_written = True
        if reg.clientconfig_action != "unchanged":
            progress(f"applying ClientConfig {ns}/{reg.name}")
            dest.apply(api.resource(version), reg.clientconfig, force=force)
    except kube.NotFound as e:
        if e.details_kind == "namespaces":
            raise UsageError(f"namespace {ns!r} does not exist in the destination {dest.context}: "
                             f"create it or pass --dest-namespace") from None
        raise (_undo_secret(reg, dest, ns, e) if secret_written else _nothing_of(reg, ns, e)) from None
    except K8sctlError as e:
        raise (_undo_secret(reg, dest, ns, e) if secret_written else _nothing_of(reg, ns, e)) from None


def _nothing_of(reg: Registration, ns: str, cause: K8sctlError) -> K8sctlError:
    if reg.secret_action == "unchanged":
        what = f"Secret {ns}/{reg.secret_name} was already as wanted; ClientConfig {ns}/{reg.name} was not written"
    else:
        what = f"neither Secret {ns}/{reg.secret_name} nor ClientConfig {ns}/{reg.name} was written"
    return (UsageError if isinstance(cause, UsageError) else ClusterError)(f"{cause}; {what}")


def _undo_secret(reg: Registration, dest: kube.KubeClient, ns: str, cause: K8sctlError) -> K8sctlError:
    where = f"Secret {ns}/{reg.secret_name}"
    try:
        if reg.previous_secret is None:
            dest.delete(kube.SECRET, reg.secret_name, ns)
            undone = f"nothing is left half-written: {where}, written just before, was deleted again"
        else:
            dest.apply(kube.SECRET, {**reg.secret, "data": reg.previous_secret.get("data") or {}}, force=True)
            undone = f"nothing is left half-written: {where} was restored to its previous content"
    except K8sctlError as e:
        why = e.cause if isinstance(e, kube.Unreachable) and e.cause else str(e)
        if reg.previous_secret is None:
            left = "alone it changes nothing for the operator (no ClientConfig names it)"
        else:
            left = "the operator reads its new, verified kubeconfig through the ClientConfig that names it"
        undone = (f"{where} was written but ClientConfig {ns}/{reg.name} was not, and the Secret could not be put "
                  f"back ({why}); {left}; run the same command again to finish (no cleanup needed)")
    return (UsageError if isinstance(cause, UsageError) else ClusterError)(f"{cause}; {undone}")


def _output_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise UsageError(f"--output-dir {path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"--output-dir {path} is not writable")
    return path


def _artifact_paths(out_dir: Path, name: str) -> dict[str, Path]:
    return {"kubeconfig": out_dir / f"{name}.kubeconfig", "secret": out_dir / f"{name}-secret.yaml",
            "clientconfig": out_dir / f"{name}-clientconfig.yaml"}


def _check_artifact_paths(out_dir: Path, regs: list[Registration]) -> None:
    for reg in regs:
        for path in _artifact_paths(out_dir, reg.name).values():
            if path.exists() and not path.is_file():
                raise UsageError(f"{path} is a folder or special file: remove it or pass another --output-dir")


def _write_artifacts(reg: Registration, out_dir: Path, show_secrets: bool) -> None:
    paths = _artifact_paths(out_dir, reg.name)
    secret = reg.secret if show_secrets else redact_secret(reg.secret)
    try:
        kc.write_private(paths["kubeconfig"], kc.dump(reg.kubeconfig_doc))
        kc.write_private(paths["secret"], yaml.safe_dump(secret, sort_keys=False))
        kc.write_private(paths["clientconfig"], yaml.safe_dump(reg.clientconfig, sort_keys=False))
    except OSError as e:
        raise UsageError(f"cannot write {e.filename or out_dir}: {e.strerror}; the cluster objects were written, "
                         f"only the files in --output-dir are missing") from None
    reg.artifacts = {k: str(v) for k, v in paths.items()}


def rendered_manifests(result: Result, show_secrets: bool) -> list[dict]:
    out = []
    for reg in result.registrations:
        out.append(reg.secret if show_secrets else redact_secret(reg.secret))
        out.append(reg.clientconfig)
    return out
