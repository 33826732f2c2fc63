"""ClientConfig lifecycle: list (with health), verify, delete, and waiting for the operator
(rotation, written against this model, is `k8sctl.rotation`).

One model: an `Entry` is a ClientConfig and its kubeconfig Secret, read from the control
plane and looked at through `apis.clientconfig.inspect_stored_kubeconfig` (the one parser).
Stored kubeconfigs are untrusted data: clients built from them are `trusted=False`.
No token ever leaves this module in a result: only its kind, its expiry and its claims' names.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from k8sctl import durations, kube, tokens, waiting
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.clientconfigs import is_managed
from k8sctl.errors import ClusterError, K8sctlError, UsageError

Progress = Callable[[str], None]
DEPLOYMENT = kube.Resource("apps", "v1", "deployments", "Deployment")
DEFAULT_OPERATOR_DEPLOYMENT = "k8ssandra-operator"
_LEGACY_ISSUER = "kubernetes/serviceaccount"
MAX_PARALLEL = 32  # checks are I/O-bound: 20 clusters in one wave


# --- tokens: what the claims say (decoded locally, never verified, never shown) -------------

@dataclass(frozen=True)
class ServiceAccountRef:
    """The service account a token is for."""

    namespace: str
    name: str

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


@dataclass(frozen=True)
class TokenFacts:
    namespace: str | None
    service_account: str | None
    secret_name: str | None  # the token Secret a legacy token comes from (deleting it revokes the token)
    expires_at: float | None
    issued_at: float | None

    @property
    def account(self) -> ServiceAccountRef | None:
        """The service account, when the claims name both its namespace and its name."""
        if self.namespace and self.service_account:
            return ServiceAccountRef(self.namespace, self.service_account)
        return None

    @property
    def subject(self) -> str | None:
        account = self.account
        return account.subject if account else None

    @property
    def inferred_source(self) -> str:
        # A token Secret's token never expires; a TokenRequest token always does.
        return "secret" if self.expires_at is None else "request"


def token_facts(token: str | None) -> TokenFacts:
    claims = tokens.jwt_claims(token or "") or {}
    bound = claims.get("kubernetes.io")
    if not isinstance(bound, dict):
        bound = {}
    ns = claims.get("kubernetes.io/serviceaccount/namespace") or bound.get("namespace")
    sa = claims.get("kubernetes.io/serviceaccount/service-account.name") \
        or (bound.get("serviceaccount") or {}).get("name")
    secret = claims.get("kubernetes.io/serviceaccount/secret.name")
    if (not ns or not sa) and str(claims.get("sub", "")).startswith("system:serviceaccount:"):
        parts = str(claims["sub"]).split(":")
        if len(parts) == 4:
            ns, sa = parts[2], parts[3]
    exp, iat = claims.get("exp"), claims.get("iat")
    return TokenFacts(ns if isinstance(ns, str) else None, sa if isinstance(sa, str) else None,
                      secret if isinstance(secret, str) else None,
                      float(exp) if isinstance(exp, (int, float)) else None,
                      float(iat) if isinstance(iat, (int, float)) else None)


def iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


# --- the model: a ClientConfig and its kubeconfig Secret -----------------------------------

@dataclass
class Entry:
    clientconfig: dict
    secret: dict | None
    stored: api.StoredKubeconfig

    @property
    def name(self) -> str:
        return self.clientconfig["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.clientconfig["metadata"].get("namespace", "")

    @property
    def context(self) -> str:
        return api.context_of(self.clientconfig)

    @property
    def secret_name(self) -> str:
        return api.secret_name_of(self.clientconfig)

    @property
    def version(self) -> str:
        return self.clientconfig.get("apiVersion", f"{api.GROUP}/{api.VERSIONS[0]}").split("/")[-1]

    @property
    def server(self) -> str | None:
        return self.stored.view.server if self.stored.view else None

    @property
    def auth(self) -> str | None:
        return kc.auth_kind(self.stored.view.user) if self.stored.view else None

    @property
    def token(self) -> str | None:
        return self.stored.token

    @property
    def facts(self) -> TokenFacts:
        return token_facts(self.token)

    @property
    def token_source(self) -> str | None:
        """As recorded at creation, else inferred from the token's claims (None without a token)."""
        return api.token_source_of(self.clientconfig) or (self.facts.inferred_source if self.token else None)

    def row(self) -> dict:
        facts = self.facts
        return {
            "name": self.name, "namespace": self.namespace, "context": self.context, "secret": self.secret_name,
            "server": self.server, "auth": self.auth, "tokenSource": self.token_source,
            "tokenExpiry": iso(facts.expires_at), "serviceAccount": facts.subject,
            "managedByK8sctl": is_managed(self.clientconfig), "operatorLoaded": api.operator_loaded(self.clientconfig),
            "problems": ([self.stored.problem] if self.stored.problem else []) + self.stored.notes,
            "usable": self.stored.usable,
        }


def _entry(cc: dict, secret: dict | None) -> Entry:
    ns = cc["metadata"].get("namespace", "")
    secret_name = api.secret_name_of(cc)
    if not secret_name:
        return Entry(cc, None, api.StoredKubeconfig(problem="spec.kubeConfigSecret.name is empty"))
    return Entry(cc, secret, api.inspect_stored_kubeconfig(secret, f"{ns}/{secret_name}", api.context_of(cc)))


def read_entries(client: kube.KubeClient, namespace: str, names: list[str] | None = None) -> list[Entry]:
    """The ClientConfigs of `namespace` (all, or `names`) with their Secrets: one LIST, then the
    Secrets' GETs in parallel (one round trip of wall time, and no Secret read that is not named)."""
    ccs = api.list_clientconfigs(client, namespace)
    if names:
        known = {cc["metadata"]["name"] for cc in ccs}
        missing = [n for n in names if n not in known]
        if missing:
            raise UsageError(f"ClientConfig {', '.join(missing)} not found in namespace {namespace!r} of "
                             f"{client.context}; there: {', '.join(sorted(known)) or 'none'}")
        ccs = [cc for cc in ccs if cc["metadata"]["name"] in names]
    ccs.sort(key=lambda cc: cc["metadata"]["name"])

    def secret_of(cc: dict) -> dict | None:
        name = api.secret_name_of(cc)
        return client.get_or_none(kube.SECRET, name, namespace) if name else None

    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(ccs)))) as pool:
        secrets = list(pool.map(secret_of, ccs))
    return [_entry(cc, s) for cc, s in zip(ccs, secrets)]


def datacenters_by_context(client: kube.KubeClient, namespace: str) -> dict[str, list[str]]:
    """k8sContext -> the K8ssandraCluster datacenters naming it (`cluster/dc`), in `namespace`."""
    try:
        clusters = client.list(k8c.RESOURCE, namespace)
    except kube.NotFound:
        return {}  # no K8ssandraCluster CRD: nothing can use a context
    out: dict[str, list[str]] = {}
    for k in clusters:
        for dc in ((k.get("spec") or {}).get("cassandra") or {}).get("datacenters") or []:
            context = dc.get("k8sContext") or ""
            if context:
                dc_name = (dc.get("metadata") or {}).get("name") or "?"
                out.setdefault(context, []).append(f"{k['metadata']['name']}/{dc_name}")
    return out


# --- live health --------------------------------------------------------------------------

@dataclass
class Health:
    reachable: bool = False
    tls_verified: bool = False
    identity: str | None = None
    may_manage_datacenters: bool | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "reachable": self.reachable, "tlsVerified": self.tls_verified,
                "identity": self.identity, "mayManageCassandraDatacenters": self.may_manage_datacenters,
                "error": self.error, "seconds": round(self.seconds, 3)}


def access_review(namespace: str | None, group: str = "cassandra.datastax.com",
                   resource: str = "cassandradatacenters", **more: str) -> dict:
    """A SelfSubjectAccessReview: may I create `resource` (`more`: subresource, name) in `namespace`?"""
    attrs = {"verb": "create", "group": group, "resource": resource, **more}
    if namespace:
        attrs["namespace"] = namespace
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}


def check(entry: Entry, timeout: float, stats: kube.RequestStats | None = None) -> Health:
    """Reachable, TLS verified, identity (SelfSubjectReview), may create CassandraDatacenters
    (SelfSubjectAccessReview): two requests sent at once, so one round trip. `timeout` bounds the
    whole check in wall time (a server that accepts and never answers included)."""
    t0 = time.monotonic()
    health = Health()
    if not entry.stored.usable:
        health.error = entry.stored.problem
        return health
    pair = ThreadPoolExecutor(max_workers=2)
    client = None
    try:
        doc, _ = entry.stored.usable_kubeconfig()
        client = kube.KubeClient(doc, entry.context, timeout=(timeout, timeout), trusted=False,
                                 source=f"the kubeconfig of ClientConfig {entry.name}", stats=stats)
        who = pair.submit(client.whoami)
        access = pair.submit(client.request, "POST", kube.SELF_SUBJECT_ACCESS_REVIEW.path(),
                             access_review(entry.facts.namespace))
        left = lambda: max(0.01, t0 + timeout - time.monotonic())  # noqa: E731
        health.identity = who.result(timeout=left())
        health.reachable = health.tls_verified = True
        health.may_manage_datacenters = bool((access.result(timeout=left()).get("status") or {}).get("allowed"))
    except FutureTimeout:
        health.error = f"no answer from {entry.server} within {durations.show(timeout)}"
    except kube.Unreachable as e:
        health.reachable = e.tls  # a TLS failure means something answered, with another certificate
        health.error = f"cannot reach {entry.server}: {e.cause or e}"
    except kube.ApiError as e:
        health.reachable = health.tls_verified = True
        health.error = ("credentials rejected (401): the token is invalid, expired or revoked" if e.status == 401
                        else " ".join(str(e).split()))
    except K8sctlError as e:
        health.error = " ".join(str(e).split())
    finally:
        if client is not None:
            client.close()  # also ends requests still waiting on a silent server
        pair.shutdown(wait=False)
    expected = entry.facts.subject
    if health.ok and expected and health.identity and health.identity != expected:
        health.error = f"authenticates as {health.identity}, not {expected}"
    if health.ok and health.may_manage_datacenters is False:
        health.error = (f"{health.identity or 'its identity'} may not create CassandraDatacenters"
                        f"{' in ' + entry.facts.namespace if entry.facts.namespace else ''}")
    health.seconds = time.monotonic() - t0
    return health


@dataclass
class Listing:
    context: str
    namespace: str
    entries: list[Entry]
    used_by: dict[str, list[str]]
    health: dict[str, Health] | None = None

    def as_dict(self) -> dict:
        rows = []
        for e in self.entries:
            row = e.row()
            row["usedBy"] = self.used_by.get(e.context, [])
            if self.health is not None:
                row["health"] = self.health[e.name].as_dict()
            rows.append(row)
        return {"context": self.context, "namespace": self.namespace, "checked": self.health is not None,
                "clientConfigs": rows}

    @property
    def failed(self) -> list[str]:
        return [e.name for e in self.entries if self.health is not None and not self.health[e.name].ok]


def list_clientconfigs(client: kube.KubeClient, namespace: str, *, names: list[str] | None = None,
                       live: bool = False, timeout: float = 5.0, progress: Progress = lambda s: None) -> Listing:
    """Every ClientConfig of `namespace` (or `names`) and what is wrong with it; with `live`, every
    cluster is checked at once, each bounded by `timeout`, while the K8ssandraClusters are read."""
    progress("reading ClientConfigs and their Secrets")
    entries = read_entries(client, namespace, names)
    with ThreadPoolExecutor(max_workers=max(2, min(MAX_PARALLEL, len(entries) + 1))) as pool:
        used = pool.submit(datacenters_by_context, client, namespace)
        health = None
        if live:
            progress(f"checking {len(entries)} cluster(s)")
            futures = {e.name: pool.submit(check, e, timeout) for e in entries}
            health = {n: f.result() for n, f in futures.items()}
        return Listing(client.context, namespace, entries, used.result(), health)


# --- waiting for the operator --------------------------------------------------------------

def _no_operator_hint(namespace: str) -> str:
    return (f"check that k8ssandra-operator runs in the control plane and watches namespace {namespace} "
            f"(kubectl -n {namespace} get deployment,pods; its logs)")


def wait_operator_loaded(client: kube.KubeClient, version: str, name: str, namespace: str,
                         before: tuple[str | None, str | None], timeout: float,
                         progress: Progress = lambda s: None) -> None:
    """Wait until the operator has stamped ClientConfig `name` again after our write: both hash
    annotations present and, where they were there before, changed (it re-stamps on restart)."""
    resource = api.resource(version)

    def loaded() -> bool | None:
        cc = client.get_or_none(resource, name, namespace)
        hashes = api.operator_hashes(cc)
        if not all(hashes):
            return None
        if all(before) and hashes == before:
            return None
        return True

    waiting.until(loaded, timeout=timeout, progress=progress, what=f"waiting for k8ssandra-operator to load {name}",
                  message=f"k8ssandra-operator did not load ClientConfig {namespace}/{name} within "
                          f"{durations.show(timeout)} (no new {api.RESOURCE_HASH_ANNOTATION} and "
                          f"{api.SECRET_HASH_ANNOTATION} annotations): {_no_operator_hint(namespace)}")


def available_since(deployment: dict | None) -> str | None:
    """When the Deployment's Available condition last turned True (None while it is not available)."""
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Available" and cond.get("status") == "True":
            return cond.get("lastTransitionTime") or ""
    return None


def wait_operator_restarted(client: kube.KubeClient, namespace: str, deployment: str, before: str | None,
                            timeout: float, progress: Progress = lambda s: None) -> None:
    """Wait until the operator's Deployment is available again after it restarted (its Available
    condition turned True after `before`, the transition time read before our write)."""
    def restarted() -> bool | None:
        since = available_since(client.get_or_none(DEPLOYMENT, deployment, namespace))
        return True if since is not None and since != before else None

    waiting.until(restarted, timeout=timeout, progress=progress,
                  what=f"waiting for Deployment {deployment} to be available again",
                  message=f"Deployment {namespace}/{deployment} did not become available again within "
                          f"{durations.show(timeout)}: {_no_operator_hint(namespace)} (or name it with "
                          f"--operator-deployment)")


# --- the source cluster: the client that mints and revokes tokens, and who holds a token -------

def source_client(entry: Entry, src_doc: dict | None, src_kubeconfig: Path | None,
                  src_context: str | None) -> tuple[kube.KubeClient, str]:
    """The client that mints and revokes: the user's --src-kubeconfig (trusted), else the stored
    credentials themselves (the operator's own service account, as a CronJob in the control plane has)."""
    if src_doc is not None:
        context = src_context or entry.context
        if context not in kc.context_names(src_doc):
            raise UsageError(f"--src-kubeconfig has no context {context!r} for ClientConfig {entry.name}: pass "
                             f"--src-context")
        return kube.KubeClient(src_doc, context, str(src_kubeconfig.parent) if src_kubeconfig else "",
                               source="the source kubeconfig"), f"--src-kubeconfig context {context}"
    doc, _ = entry.stored.usable_kubeconfig()
    return kube.KubeClient(doc, entry.context, trusted=False,
                           source=f"the kubeconfig of ClientConfig {entry.name}"), "the stored credentials"


def holders_of(entries: list[Entry], server: str | None, facts: TokenFacts) -> list[str]:
    """ClientConfigs whose stored token comes from the same token Secret (same server and namespace)."""
    return [e.name for e in entries if e.token and e.server == server and e.facts.secret_name == facts.secret_name
            and e.facts.namespace == facts.namespace]


# --- delete ---------------------------------------------------------------------------------

@dataclass
class DeleteOptions:
    name: str
    force: bool = False
    revoke: bool = False
    dry_run: bool = False
    src_kubeconfig: Path | None = None
    src_context: str | None = None
    wait_operator: float | None = None
    operator_deployment: str = DEFAULT_OPERATOR_DEPLOYMENT


@dataclass
class Deletion:
    name: str
    namespace: str
    context: str
    dry_run: bool
    objects: list[dict] = field(default_factory=list)  # kind, name, action, why
    used_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    operator: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "namespace": self.namespace, "context": self.context, "dryRun": self.dry_run,
                "usedBy": self.used_by, "objects": self.objects, "notes": self.notes,
                "restartsOperator": any(o["kind"] == "ClientConfig" and o["action"].endswith("deleted")
                                        for o in self.objects),
                "operator": self.operator}


def delete(client: kube.KubeClient, namespace: str, opts: DeleteOptions,
           progress: Progress = lambda s: None) -> Deletion:
    """Delete a ClientConfig (refused while a datacenter uses its context, unless forced), then its
    Secret when k8sctl manages it and nothing else uses it; with `revoke`, the token Secret too."""
    would = "would be " if opts.dry_run else ""
    entries = read_entries(client, namespace)
    entry = next((e for e in entries if e.name == opts.name), None)
    if entry is None:
        raise UsageError(f"ClientConfig {opts.name!r} not found in namespace {namespace!r} of {client.context}; "
                         f"there: {', '.join(e.name for e in entries) or 'none'}")
    result = Deletion(entry.name, namespace, entry.context, opts.dry_run)
    result.used_by = datacenters_by_context(client, namespace).get(entry.context, [])
    if result.used_by and not opts.force:
        raise UsageError(f"ClientConfig {entry.name} is in use: K8ssandraCluster datacenter(s) "
                         f"{', '.join(result.used_by)} run in its context {entry.context!r}; the operator would "
                         f"lose them. Move them first, or pass --force")
    if result.used_by:
        result.notes.append(f"--force: datacenter(s) {', '.join(result.used_by)} lose their cluster")
    revoking: tuple[kube.KubeClient, str] | None = None  # with --revoke: the source client, the token Secret
    if opts.revoke:
        token_secret_name = entry.facts.secret_name
        if not entry.stored.usable or not entry.token or not token_secret_name:
            raise UsageError(f"--revoke: ClientConfig {entry.name} holds no token from a token Secret (only those can "
                             f"be revoked){': ' + entry.stored.problem if entry.stored.problem else ''}")
        src_doc = kc.load([opts.src_kubeconfig]) if opts.src_kubeconfig else None
        src, access = source_client(entry, src_doc, opts.src_kubeconfig, opts.src_context)
        revoking = (src, token_secret_name)
        result.notes.append(f"the token Secret is deleted through {access}")
    before_available = None
    if opts.wait_operator is not None and not opts.dry_run:
        deployment = client.get_or_none(DEPLOYMENT, opts.operator_deployment, namespace)
        if deployment is None:
            raise ClusterError(f"--wait-operator: there is no Deployment {namespace}/{opts.operator_deployment}: "
                               f"is k8ssandra-operator installed there? (name it with --operator-deployment); "
                               f"nothing was deleted")
        before_available = available_since(deployment)
    try:
        progress(f"deleting ClientConfig {namespace}/{entry.name}")
        if not opts.dry_run:
            client.delete(api.resource(entry.version), entry.name, namespace)
        result.objects.append({"kind": "ClientConfig", "name": entry.name, "action": would + "deleted"})
        others = [e.name for e in entries if e.name != entry.name and e.secret_name == entry.secret_name]
        if entry.secret is None:
            result.objects.append({"kind": "Secret", "name": entry.secret_name, "action": "absent"})
        elif not is_managed(entry.secret):
            result.objects.append({"kind": "Secret", "name": entry.secret_name, "action": "kept",
                                   "why": "not managed by k8sctl (no app.kubernetes.io/managed-by=k8sctl label)"})
        elif others:
            result.objects.append({"kind": "Secret", "name": entry.secret_name, "action": "kept",
                                   "why": f"also used by ClientConfig {', '.join(others)}"})
        else:
            if not opts.dry_run:
                try:
                    client.delete(kube.SECRET, entry.secret_name, namespace)
                except kube.NotFound:
                    pass
            result.objects.append({"kind": "Secret", "name": entry.secret_name, "action": would + "deleted"})
        if revoking is not None:
            src, token_secret_name = revoking
            facts = entry.facts
            holders = [n for n in holders_of(entries, entry.server, facts) if n != entry.name]
            token_secret = f"{facts.namespace}/{token_secret_name}"
            if holders:
                result.objects.append({"kind": "Secret", "name": token_secret, "action": "kept",
                                       "why": f"its token is also used by ClientConfig {', '.join(holders)}"})
            else:
                if not opts.dry_run:
                    src.delete(kube.SECRET, token_secret_name, facts.namespace)
                result.objects.append({"kind": "Secret", "name": token_secret, "action": would + "deleted",
                                       "why": f"token Secret in {src.context} (revokes the token)"})
    finally:
        if revoking is not None:
            revoking[0].close()
    # before_available was read in exactly this case (None if the operator was not available then).
    if opts.wait_operator is not None and not opts.dry_run:
        try:
            wait_operator_restarted(client, namespace, opts.operator_deployment, before_available,
                                    opts.wait_operator, progress)
            result.operator = "available again"
        except waiting.TimedOut as e:
            result.operator = f"timeout: {e}"
    return result
