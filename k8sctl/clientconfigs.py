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
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.errors import ClusterError, UsageError

DEFAULT_NAMESPACE = "k8ssandra-operator"
DEFAULT_SERVICEACCOUNT = "k8ssandra-operator"
MANAGED_BY = {"app.kubernetes.io/managed-by": "k8sctl"}
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
CLIENTCONFIG_GROUP = "config.k8ssandra.io"
CLIENTCONFIG_VERSIONS = ("v1beta1", "v1alpha1")  # the operator serves v1beta1; old docs show v1alpha1
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
    if not kc.is_server_url(server, ("https",)):
        raise UsageError(f"{flag} {server!r} is not an https URL like https://10.0.0.5:6443")
    return server.rstrip("/")


def secret_manifest(name: str, namespace: str, kubeconfig_text: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "type": "Opaque",
        "data": {"kubeconfig": base64.b64encode(kubeconfig_text.encode()).decode()},
    }


def clientconfig_manifest(name: str, namespace: str, api_version: str, context_name: str, secret_name: str) -> dict:
    return {
        "apiVersion": f"{CLIENTCONFIG_GROUP}/{api_version}", "kind": "ClientConfig",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {"contextName": context_name, "kubeConfigSecret": {"name": secret_name}},
    }


def redact_secret(manifest: dict) -> dict:
    out = {**manifest, "data": {k: REDACTED for k in manifest.get("data", {})}}
    return out


def secret_action(existing: dict | None, desired: dict) -> str:
    if existing is None:
        return "created"
    labels = (existing.get("metadata") or {}).get("labels") or {}
    same = (existing.get("data") or {}).get("kubeconfig") == desired["data"]["kubeconfig"] \
        and existing.get("type") == desired["type"] and labels.items() >= MANAGED_BY.items()
    return "unchanged" if same else "updated"


def clientconfig_action(existing: dict | None, desired: dict) -> str:
    if existing is None:
        return "created"
    labels = (existing.get("metadata") or {}).get("labels") or {}
    spec = existing.get("spec") or {}
    same = spec.get("contextName") == desired["spec"]["contextName"] \
        and (spec.get("kubeConfigSecret") or {}).get("name") == desired["spec"]["kubeConfigSecret"]["name"] \
        and labels.items() >= MANAGED_BY.items()
    return "unchanged" if same else "updated"


def restart_command(dest_context: str, namespace: str) -> str:
    return f"kubectl --context {dest_context} -n {namespace} rollout restart deployment k8ssandra-operator"


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
    allow_self: bool = False


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


def complete(opts: CreateOptions, env: dict[str, str]) -> Completed:
    if not opts.src_kubeconfig and not opts.src_contexts:
        raise UsageError("pass --src-kubeconfig, --src-context, or both, to name the data-plane cluster(s)")
    dest_paths = opts.dest_kubeconfig or kc.default_paths(env)
    dest_doc = kc.load(dest_paths)
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
    if o.timeout <= 0:
        raise UsageError("--timeout must be positive")
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


# --- run ---------------------------------------------------------------------

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
    service_account: str = ""
    token_secret: str | None = None
    token_expiry: str | None = None
    ca_source: str = ""
    identity: str | None = None
    authorized: bool | None = None
    kubeconfig_doc: dict = field(default_factory=dict, repr=False)
    secret: dict = field(default_factory=dict, repr=False)
    clientconfig: dict = field(default_factory=dict, repr=False)
    secret_action: str = ""
    clientconfig_action: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self, dest_namespace: str, dry_run: bool) -> dict:
        would = "would be " if dry_run else ""
        return {
            "name": self.name, "namespace": dest_namespace, "sourceContext": self.source_context,
            "contextName": self.context_name, "k8sContext": self.context_name,
            "server": self.server, "serverReason": self.server_reason,
            "serviceAccount": f"{self.src_namespace}/{self.service_account}",
            "tokenSource": self.token_source, "tokenSecret": self.token_secret, "tokenExpiry": self.token_expiry,
            "caSource": self.ca_source, "identity": self.identity, "authorized": self.authorized,
            "clientConfigApiVersion": self.clientconfig.get("apiVersion"),
            "objects": [
                {"kind": "Secret", "name": self.secret_name, "action": would + self.secret_action},
                {"kind": "ClientConfig", "name": self.name, "action": would + self.clientconfig_action},
            ],
            "artifacts": self.artifacts, "warnings": self.warnings,
        }


@dataclass
class Result:
    destination_context: str
    destination_namespace: str
    output_dir: str
    dry_run: bool
    registrations: list[Registration]

    @property
    def changed(self) -> bool:
        return any(r.secret_action != "unchanged" or r.clientconfig_action != "unchanged" for r in self.registrations)

    def as_dict(self) -> dict:
        return {
            "destinationContext": self.destination_context,
            "namespace": self.destination_namespace,
            "dryRun": self.dry_run,
            "outputDir": self.output_dir,
            "changed": self.changed,
            "restartCommand": restart_command(self.destination_context, self.destination_namespace)
            if self.changed and not self.dry_run else None,
            "registrations": [r.summary(self.destination_namespace, self.dry_run) for r in self.registrations],
        }


Progress = Callable[[str], None]


def run(c: Completed, progress: Progress = lambda s: None) -> Result:
    """Plan and verify every registration, then write artifacts and apply to the destination."""
    o = c.opts
    dest = kube.KubeClient(c.dest_doc, c.dest_view.name)
    try:
        regs = []
        for ctx in c.src_contexts:
            progress(f"reading service account {o.serviceaccount} from {ctx}")
            src = kube.KubeClient(c.src_doc, ctx, c.src_base)
            try:
                regs.append(_plan(c, ctx, src, progress))
            finally:
                src.close()
        version = None
        for reg in regs:
            progress(f"comparing with {c.dest_view.name}")
            version = _plan_destination(c, reg, dest, version)
        out_dir = _output_dir(o.output_dir)
        for reg in regs:
            _write_artifacts(reg, out_dir, o.show_secrets)
        if not o.dry_run:
            for reg in regs:
                _apply(reg, dest, c.dest_namespace, progress)
        return Result(c.dest_view.name, c.dest_namespace, str(out_dir), o.dry_run, regs)
    finally:
        dest.close()


def _plan(c: Completed, ctx: str, src: kube.KubeClient, progress: Progress) -> Registration:
    o = c.opts
    view = kc.select_context(c.src_doc, ctx)
    src_ns = o.src_namespace or o.namespace or view.namespace or DEFAULT_NAMESPACE
    name = o.name or sanitize_name(ctx)
    reg = Registration(source_context=ctx, name=name, secret_name=f"{name}-config",
                       context_name=o.context_name or ctx, src_namespace=src_ns, server="", server_reason="",
                       token_source=o.token_source, service_account=o.serviceaccount)
    sa = src.get_or_none(kube.SERVICEACCOUNT, o.serviceaccount, src_ns)
    if sa is None:
        _missing_serviceaccount(src, ctx, src_ns, o.serviceaccount)
    if o.token_source == "request":
        token, secret_ca = _request_token(src, src_ns, o.serviceaccount, o.token_duration, reg)
    else:
        token, secret_ca = _secret_token(src, sa, src_ns, o, reg, progress)
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
    reg.server, reg.server_reason = _choose_server(c, view, src)
    reg.kubeconfig_doc = kc.build_kubeconfig(
        cluster_name=view.cluster_name, server=reg.server, ca_pem=ca,
        user_name=f"{view.cluster_name}-{o.serviceaccount}", token=token, context_name=reg.context_name)
    if o.verify:
        progress(f"verifying the new credentials against {view.server}")
        _verify(reg, view.server, src_ns, o.serviceaccount)
    return reg


def _missing_serviceaccount(src: kube.KubeClient, ctx: str, ns: str, sa: str):
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


def _secret_token(src: kube.KubeClient, sa: dict, ns: str, o: CreateOptions, reg: Registration,
                  progress: Progress) -> tuple[str, bytes]:
    secret = None
    for ref in sa.get("secrets") or []:
        candidate = src.get_or_none(kube.SECRET, ref.get("name", ""), ns)
        if candidate and _is_token_secret_for(candidate, o.serviceaccount):
            secret = candidate
            break
    if secret is None:
        matches = [s for s in src.list(kube.SECRET, ns) if _is_token_secret_for(s, o.serviceaccount)]
        secret = sorted(matches, key=lambda s: s["metadata"]["name"])[0] if matches else None
    if secret is None:
        name = f"{o.serviceaccount}-token"
        if o.dry_run:
            raise UsageError(f"service account {ns}/{o.serviceaccount} has no token Secret and --dry-run writes nothing: "
                             f"run without --dry-run to create {name}, or use --token-source request")
        progress(f"creating token Secret {ns}/{name}")
        secret = src.create(kube.SECRET, {
            "apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_TYPE,
            "metadata": {"name": name, "namespace": ns, "labels": dict(MANAGED_BY),
                         "annotations": {SA_NAME_ANNOTATION: o.serviceaccount}},
        }, ns)
    name = secret["metadata"]["name"]
    reg.token_secret = name
    deadline = time.monotonic() + o.timeout
    while not _decode(secret, "token"):
        if time.monotonic() > deadline:
            raise ClusterError(f"token Secret {ns}/{name} in {reg.source_context} was not filled within {o.timeout:.0f}s: "
                               f"is kube-controller-manager's token controller running? (or use --token-source request)")
        progress(f"waiting for the token controller to fill {ns}/{name}")
        time.sleep(0.2)
        secret = src.get(kube.SECRET, name, ns)
    return _decode(secret, "token").decode(), _decode(secret, "ca.crt")


def _request_token(src: kube.KubeClient, ns: str, sa: str, duration: int | None, reg: Registration) -> tuple[str, bytes]:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    if duration:
        body["spec"]["expirationSeconds"] = duration
    resp = src.request("POST", kube.SERVICEACCOUNT.path(ns, sa, "token"), body)
    reg.token_expiry = (resp.get("status") or {}).get("expirationTimestamp")
    return resp["status"]["token"], b""


def _choose_server(c: Completed, view: kc.ContextView, src: kube.KubeClient) -> tuple[str, str]:
    o = c.opts
    if o.server:
        return o.server, "--server"
    if c.in_cluster_doc is not None:
        # The same context name, else (one source only) its current or only context.
        names = kc.context_names(c.in_cluster_doc)
        ctx = view.name if view.name in names else (names[0] if len(names) == 1 else None)
        in_view = kc.select_context(c.in_cluster_doc, ctx, "--in-cluster-kubeconfig")
        return validate_server(in_view.server, "--in-cluster-kubeconfig server"), \
            f"--in-cluster-kubeconfig (context {in_view.name})"
    if not is_loopback_server(view.server):
        return view.server, "source kubeconfig"
    found = _discover_server(src)
    if found:
        return found
    raise UsageError(
        f"the source server {view.server} is a loopback address the operator's pods cannot reach, and neither "
        f"kube-public/cluster-info nor a kube-apiserver pod gives another: pass --server https://HOST:PORT or "
        f"--in-cluster-kubeconfig FILE")


def _discover_server(src: kube.KubeClient) -> tuple[str, str] | None:
    cm = src.get_or_none(kube.CONFIGMAP, "cluster-info", "kube-public")
    text = ((cm or {}).get("data") or {}).get("kubeconfig")
    if text:
        try:
            doc = yaml.safe_load(text) or {}
            server = ((doc.get("clusters") or [{}])[0].get("cluster") or {}).get("server", "")
        except (yaml.YAMLError, AttributeError, IndexError):
            server = ""
        if server and not is_loopback_server(server):
            return server.rstrip("/"), "kube-public/cluster-info ConfigMap (the source server is loopback)"
    try:
        pods = src.list(kube.POD, "kube-system", label_selector="component=kube-apiserver")
    except kube.ApiError:
        pods = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        port = 6443
        for container in (pod.get("spec") or {}).get("containers") or []:
            for arg in (container.get("command") or []) + (container.get("args") or []):
                if arg.startswith("--secure-port="):
                    port = int(arg.split("=", 1)[1])
        return server_url(ip, port), "kube-apiserver pod IP (the source server is loopback)"
    return None


def _verify(reg: Registration, reachable_server: str, ns: str, sa: str) -> None:
    doc = {**reg.kubeconfig_doc, "clusters": [
        {"name": cl["name"], "cluster": {**cl["cluster"], "server": reachable_server}}
        for cl in reg.kubeconfig_doc["clusters"]]}
    client = kube.KubeClient(doc, reg.context_name)
    expected = f"system:serviceaccount:{ns}:{sa}"
    try:
        # None on old servers without SelfSubjectReview: the access review below still authenticates.
        reg.identity = client.whoami()
        if reg.identity is not None and reg.identity != expected:
            raise ClusterError(f"the new kubeconfig for {reg.source_context} authenticates as {reg.identity}, "
                               f"not {expected}")
        access = client.request("POST", kube.SELF_SUBJECT_ACCESS_REVIEW.path(), {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": ns, "verb": "create", "group": "cassandra.datastax.com",
                                            "resource": "cassandradatacenters"}}})
        reg.authorized = bool((access.get("status") or {}).get("allowed"))
        if not reg.authorized:
            reg.warnings.append(f"{expected} may not create CassandraDatacenters in {ns} of {reg.source_context}: "
                                f"the operator will fail there until its Role allows it")
    except kube.ApiError as e:
        if e.status == 401:
            raise ClusterError(f"the new kubeconfig for {reg.source_context} does not authenticate at "
                               f"{reachable_server} (401): the token is invalid") from None
        raise
    finally:
        client.close()


def _clientconfig_probe(dest: kube.KubeClient, name: str, ns: str, known: str | None) -> tuple[str, dict | None]:
    """The served ClientConfig version and the existing object, in one GET when v1beta1 is served."""
    versions = [known] if known else list(CLIENTCONFIG_VERSIONS)
    for version in versions:
        try:
            return version, dest.get(kube.clientconfig_resource(version), name, ns)
        except kube.NotFound as e:
            # A missing object comes with Status details naming its kind; a version or
            # resource type that is not served does not.
            if e.details_kind:
                return version, None
    served = [v for v in dest.api_versions(CLIENTCONFIG_GROUP) if v in CLIENTCONFIG_VERSIONS]
    if not served:
        raise ClusterError(f"the ClientConfig CRD ({CLIENTCONFIG_GROUP}) is not installed in {dest.context}: "
                           f"install k8ssandra-operator in the destination cluster first")
    return served[0], dest.get_or_none(kube.clientconfig_resource(served[0]), name, ns)


def _plan_destination(c: Completed, reg: Registration, dest: kube.KubeClient, version: str | None) -> str:
    ns = c.dest_namespace
    version, existing_cc = _clientconfig_probe(dest, reg.name, ns, version)
    existing_secret = dest.get_or_none(kube.SECRET, reg.secret_name, ns)
    reg.secret = secret_manifest(reg.secret_name, ns, kc.dump(reg.kubeconfig_doc))
    reg.clientconfig = clientconfig_manifest(reg.name, ns, version, reg.context_name, reg.secret_name)
    reg.secret_action = secret_action(existing_secret, reg.secret)
    reg.clientconfig_action = clientconfig_action(existing_cc, reg.clientconfig)
    return version


def _output_dir(path: Path | None) -> Path:
    if path is None:
        return Path(tempfile.mkdtemp(prefix="k8sctl-clientconfig-"))  # mode 0700
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise UsageError(f"--output-dir {path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"--output-dir {path} is not writable")
    return path


def _write_artifacts(reg: Registration, out_dir: Path, show_secrets: bool) -> None:
    paths = {
        "kubeconfig": out_dir / f"{reg.name}.kubeconfig",
        "secret": out_dir / f"{reg.name}-secret.yaml",
        "clientconfig": out_dir / f"{reg.name}-clientconfig.yaml",
    }
    kc.write_private(paths["kubeconfig"], kc.dump(reg.kubeconfig_doc))
    secret = reg.secret if show_secrets else redact_secret(reg.secret)
    kc.write_private(paths["secret"], yaml.safe_dump(secret, sort_keys=False))
    kc.write_private(paths["clientconfig"], yaml.safe_dump(reg.clientconfig, sort_keys=False))
    reg.artifacts = {k: str(v) for k, v in paths.items()}


def _apply(reg: Registration, dest: kube.KubeClient, ns: str, progress: Progress) -> None:
    # The Secret first: a ClientConfig whose Secret is missing makes the operator exit at start-up.
    version = reg.clientconfig["apiVersion"].split("/")[1]
    for kind, action, resource, manifest in (
        ("Secret", reg.secret_action, kube.SECRET, reg.secret),
        ("ClientConfig", reg.clientconfig_action, kube.clientconfig_resource(version), reg.clientconfig),
    ):
        if action == "unchanged":
            continue
        progress(f"applying {kind} {ns}/{manifest['metadata']['name']}")
        try:
            # force: these objects are k8sctl's (or the script's, which k8sctl takes over).
            dest.apply(resource, manifest, force=True)
        except kube.NotFound as e:
            if e.details_kind == "namespaces":
                raise UsageError(f"namespace {ns!r} does not exist in the destination {dest.context}: "
                                 f"create it or pass --dest-namespace") from None
            raise


def rendered_manifests(result: Result, show_secrets: bool) -> list[dict]:
    out = []
    for reg in result.registrations:
        out.append(reg.secret if show_secrets else redact_secret(reg.secret))
        out.append(reg.clientconfig)
    return out
