"""One reconcile pass of a K8ssandraCluster's CassandraDatacenters, like the operator's.

Order and gating follow k8ssandra-operator: datacenters in spec order; one that
does not exist yet is created only when every earlier one exists and is Ready,
so a new multi-datacenter cluster is never bootstrapped as separate rings.
Updates of existing datacenters are not gated and run per cluster in parallel.

Phases, each cluster (context) in its own thread and each cluster's failure its own:
read the live objects; choose the config source (inline or a config Secret) per
cluster; validate every object to be written with a server-side dry run, so that a
desired datacenter the cluster's schema refuses stops the run before anything is
written; then write (Secret before the datacenter that names it) and report.
"""
from __future__ import annotations

import base64
import difflib
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import yaml

from k8sctl import kube, redact
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.apis.cassandradatacenter import ready_state
from k8sctl.cache import ClientCache
from k8sctl.datacenters import (
    SUPERUSER_PASSWORD_CHARACTERS,
    SUPERUSER_PASSWORD_LENGTH,
    DesiredDatacenter,
    build_datacenters,
    datacenter_contexts,
    replicated_superuser_secret,
    superuser_secret,
    superuser_secret_name,
)
from k8sctl.errors import ClusterError, UsageError

Progress = Callable[[str], None]


@dataclass
class ReconcileOptions:
    name: str
    namespace: str
    force_conflicts: bool = False
    wait: bool = False
    timeout: float = 600.0
    gate: bool = True
    dry_run: bool = False
    update_status: bool = False
    config_source: str = cdc.AUTO
    poll_interval: float = 0.5


@dataclass
class SourceChoice:
    """The config source of one context, and why."""

    source: str | None          # inline, secret; None until a probe decides
    reason: str

    def as_dict(self) -> dict:
        return {"source": self.source, "reason": self.reason}


@dataclass
class DatacenterReport:
    context: str
    namespace: str
    name: str
    action: str = ""                 # created, updated, unchanged, waiting, error (would be ... with --dry-run)
    ready: bool | None = None
    progress: str | None = None
    error: str | None = None
    diff: str | None = None
    config_source: str | None = None
    config_secret: str | None = None  # the config Secret's name, when k8sctl writes or removes one
    secret_action: str | None = None  # what happened to the config Secret: created, updated, unchanged, deleted
    drift: list[str] = field(default_factory=list)
    agent_action: str | None = None   # the metrics agent ConfigMap: created, updated, unchanged (would be ...)
    agent_config: dict | None = field(default=None, repr=False)           # desired
    existing_agent_config: dict | None = field(default=None, repr=False)
    agent_changed: bool = field(default=False, repr=False)
    inline: dict = field(default_factory=dict, repr=False)      # the builder's object, config inline
    desired: dict = field(default_factory=dict, repr=False)     # the datacenter as written
    desired_secret: dict | None = field(default=None, repr=False)
    existing: dict | None = field(default=None, repr=False)
    existing_secret: dict | None = field(default=None, repr=False)
    secret_read: bool = field(default=False, repr=False)      # existing_secret was read
    dc_changed: bool = field(default=True, repr=False)        # the datacenter itself is to be written
    secret_changed: bool = field(default=False, repr=False)   # the config Secret is to be written
    remove_secret: bool = field(default=False, repr=False)    # the config Secret is no longer named: delete it
    restore: bool = field(default=False, repr=False)          # our fields were changed by another manager
    # The live object holds an inline spec.config its (replaced) CRD no longer accepts: server-side
    # apply cannot even read it, so a JSON patch moves it to configSecret first.
    untyped_config: bool = field(default=False, repr=False)
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.name} in {self.context or 'the control plane'}"

    def as_dict(self) -> dict:
        d: dict[str, Any] = {"context": self.context, "namespace": self.namespace, "name": self.name,
                             "action": self.action, "ready": self.ready, "cassandraOperatorProgress": self.progress,
                             "configSource": self.config_source}
        if self.config_secret and (self.config_source == cdc.SECRET or self.secret_action):
            d["configSecret"] = {"name": self.config_secret, "keys": [cdc.CONFIG_SECRET_KEY],
                                 "action": self.secret_action}
        if self.agent_config is not None:
            d["metricsAgentConfigMap"] = {"name": self.agent_config["metadata"]["name"], "action": self.agent_action}
        if self.drift:
            d["drift"] = self.drift
        if self.error:
            d["error"] = self.error
        if self.diff is not None:
            d["diff"] = self.diff
        return d


@dataclass
class ReconcileResult:
    cluster: str
    namespace: str
    dry_run: bool
    datacenters: list[DatacenterReport]
    broken_clientconfigs: list[dict]
    config_sources: dict[str, SourceChoice] = field(default_factory=dict)
    superuser: SuperuserReport | None = None
    # Wall time spent on each cluster's work (its threads), so a slow cluster shows as itself.
    seconds_by_context: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(r.action == "error" for r in self.datacenters)

    def as_dict(self) -> dict:
        return {"k8ssandraCluster": self.cluster, "namespace": self.namespace, "dryRun": self.dry_run,
                "failed": self.failed, "brokenClientConfigs": self.broken_clientconfigs,
                "configSources": {ctx: c.as_dict() for ctx, c in self.config_sources.items()},
                "superuserSecret": self.superuser.as_dict() if self.superuser else None,
                "secondsByContext": {ctx: round(t, 3) for ctx, t in self.seconds_by_context.items()},
                "datacenters": [r.as_dict() for r in self.datacenters]}


@dataclass
class SuperuserReport:
    """The cluster-wide superuser Secret: in the control plane, and a copy where each datacenter runs."""

    name: str
    # (context, namespace) -> action (created, unchanged, would be created, error); ("", kc ns) is the source.
    actions: dict[tuple[str, str], str] = field(default_factory=dict)
    existing: dict[tuple[str, str], dict | None] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {"name": self.name, "keys": ["password", "username"],
                "copies": [{"context": c, "namespace": n, "action": a} for (c, n), a in self.actions.items()]}


def _live_secret_name(r: DatacenterReport) -> str | None:
    return ((r.existing or {}).get("spec") or {}).get("configSecret")


def check_contexts(desired: list[DesiredDatacenter], cache: ClientCache) -> None:
    """Fail before anything is written when a datacenter names a context without a usable client."""
    cache.require(d.context for d in desired)


def _fail(r: DatacenterReport, e: BaseException) -> None:
    """One datacenter's failure, reported on its row; never anybody else's."""
    r.action = "error"
    if isinstance(e, ClusterError):
        r.error = str(e)
    else:
        # Not an answer from a cluster: a bug. Its text may hold anything it was handed
        # (a credential in a header, say), so only its type goes to the report.
        r.exception = e
        r.error = f"internal error while reconciling {r.where}: {type(e).__name__} (run with -v for details)"


def by_context(reports: list[DatacenterReport]) -> dict[str, list[DatacenterReport]]:
    groups: dict[str, list[DatacenterReport]] = {}
    for r in reports:
        groups.setdefault(r.context, []).append(r)
    return groups


def _per_context(reports: list[DatacenterReport], work: Callable[[str, list[DatacenterReport]], None],
                 seconds: dict[str, float] | None = None) -> None:
    """Run `work(context, its reports)` once per context, one thread each; add each one's wall time
    to `seconds[context]`.

    Whatever `work` raises fails that context's reports that are not done yet, and only those.
    """
    groups = by_context([r for r in reports if r.action != "error"])

    def run_group(item: tuple[str, list[DatacenterReport]]) -> None:
        context, items = item
        t0 = time.monotonic()
        try:
            work(context, items)
        except Exception as e:  # noqa: BLE001 - one cluster's failure stays that cluster's
            for r in items:
                if r.action != "error":
                    _fail(r, e)
        finally:
            if seconds is not None:
                seconds[context] = seconds.get(context, 0.0) + time.monotonic() - t0

    if len(groups) <= 1:
        for item in groups.items():
            run_group(item)
        return
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        list(pool.map(run_group, groups.items()))


def _each(items: list[DatacenterReport], work: Callable[[DatacenterReport], None]) -> None:
    """`work` on each item in order; a failure is that item's only."""
    for r in items:
        if r.action == "error":
            continue
        try:
            work(r)
        except Exception as e:  # noqa: BLE001 - reported on the row
            _fail(r, e)


# --- pure decisions ------------------------------------------------------------

def source_from_live(reports: list[DatacenterReport], forced: str, cluster: str) -> SourceChoice:
    """The source for one context, from the flag or from what its live datacenters use.

    `auto` keeps the source the live datacenters there use (inline ones prove the CRD
    accepts spec.config); None when none tells, and a dry-run probe has to.
    """
    if forced != cdc.AUTO:
        return SourceChoice(forced, f"--config-source {forced}")
    for source in (cdc.INLINE, cdc.SECRET):
        for r in reports:
            if cdc.live_source(r.existing, cluster) == source:
                how = "an inline spec.config" if source == cdc.INLINE else "spec.configSecret"
                return SourceChoice(source, f"auto: the live datacenter {r.name} uses {how}")
    return SourceChoice(None, "auto: no live datacenter tells; probed with a server-side dry-run apply")


def classify(r: DatacenterReport, force_conflicts: bool) -> None:
    """Set r.action (create, update, unchanged, error) from the live objects and what is desired.

    Unchanged when the stored hash is ours AND every field k8sctl owns has the desired
    value on the live object (an edit made with kubectl is undone), or when the live object
    has another hash (the operator's) and every other field k8sctl writes has the desired
    value; and the same for the config Secret.
    """
    live, desired = r.existing, r.desired
    r.drift, r.restore, r.remove_secret = [], False, False
    r.dc_changed, r.secret_changed = True, r.desired_secret is not None
    if r.desired_secret is not None:
        live_secret = r.existing_secret
        if live_secret is not None and not cdc.managed_by_k8sctl(live_secret) and not force_conflicts:
            r.action, r.error = "error", (
                f"{r.where}: Secret {r.namespace}/{r.desired_secret['metadata']['name']} exists and is not managed "
                f"by k8sctl (no label {cdc.MANAGED_BY_LABEL}={cdc.MANAGED_BY}); pass --force-conflicts to take it "
                f"over, or remove it")
            return
        r.secret_changed = live_secret is None or bool(cdc.owned_drift(r.desired_secret, live_secret))
    r.agent_changed = _object_changed(r.agent_config, r.existing_agent_config)
    if live is None:
        r.action = "create"
        return
    if (live.get("spec") or {}).get("clusterName") != desired["spec"]["clusterName"]:
        r.action, r.error = "error", (f"Cluster name cannot be changed: {r.where} "
                                      f"has clusterName {live['spec'].get('clusterName')!r}")
        return
    ours = cdc.stored_hash(live) == cdc.stored_hash(desired)
    r.drift = cdc.owned_drift(desired, live)
    if r.desired_secret is None and r.config_secret and r.existing_secret is not None:
        # Switching to inline: the Secret k8sctl wrote (the one read is always the derived
        # name) is removed once nothing names it.
        r.remove_secret = cdc.managed_by_k8sctl(r.existing_secret)
    # A datacenter the operator made carries its hash, which k8sctl cannot compute (README,
    # "Reconcile fidelity"): when every field k8sctl writes but that annotation already has
    # the desired value, there is nothing to write.
    same_but_hash = cdc.stored_hash(live) is not None and r.drift == [cdc.HASH_PATH]
    r.dc_changed = bool(r.drift) if ours else not same_but_hash
    # Our own object, changed behind our back: take the fields back (kubectl edit took them over).
    r.restore = ours and bool(r.drift)
    if not r.restore:
        r.drift = []
    r.action = "update" if r.dc_changed or r.secret_changed or r.remove_secret or r.agent_changed else "unchanged"


def _object_changed(desired: dict | None, live: dict | None) -> bool:
    """Whether an object k8sctl writes beside a datacenter is to be written: missing, or a field
    k8sctl writes differs (the hash annotation only when the live object has none)."""
    if desired is None:
        return False
    if live is None:
        return True
    return bool([p for p in cdc.owned_drift(desired, live) if p != cdc.HASH_PATH or cdc.stored_hash(live) is None])


def blocker(reports: list[DatacenterReport], index: int) -> DatacenterReport | None:
    """The first datacenter before `index` that does not exist or is not Ready: creation waits for it."""
    for r in reports[:index]:
        if r.existing is None or not r.ready:
            return r
    return None


# --- phases --------------------------------------------------------------------

def run(opts: ReconcileOptions, cache: ClientCache, progress: Progress = lambda s: None,
        k8ssandra_cluster: Callable[[], dict | None] | None = None) -> ReconcileResult:
    """`k8ssandra_cluster`: the K8ssandraCluster read already (a caller that read it together with
    the ClientConfigs, in one round trip); else it is read here."""
    if opts.config_source not in cdc.CONFIG_SOURCES:
        raise UsageError(f"--config-source must be one of {', '.join(cdc.CONFIG_SOURCES)}, not {opts.config_source!r}")
    local = cache.local()
    kc = k8ssandra_cluster() if k8ssandra_cluster is not None \
        else local.get_or_none(k8c.RESOURCE, opts.name, opts.namespace)
    if kc is None:
        raise UsageError(f"K8ssandraCluster {opts.namespace}/{opts.name} not found in {local.context}")
    # While the datacenters are built from the spec (CPU), the clients of the contexts it names are
    # made (their kubeconfig Secrets read, connections opened) and the superuser Secret is read.
    with ThreadPoolExecutor(max_workers=2) as early:
        # Three connections each: a cluster's three LISTs go at once (see read below). Each client
        # has the control plane's request timeout, so a silent cluster holds this up for one
        # connect timeout at most.
        clients = early.submit(_attempt, lambda contexts: cache.require(contexts, connections=3),
                               datacenter_contexts(kc))
        superuser_read = early.submit(_read_superuser, kc, local)
        desired = build_datacenters(kc)
        clients.result()
        check_contexts(desired, cache)  # a failure above is raised here, once the spec is known valid
        superuser = superuser_read.result()
    cluster = kc["metadata"]["name"]
    reports = [DatacenterReport(d.context, d.namespace, d.name, inline=d.object, desired=d.object,
                                agent_config=d.agent_config) for d in desired]
    sources: dict[str, SourceChoice] = {}

    progress("reading CassandraDatacenters")

    def read(context: str, items: list[DatacenterReport]) -> None:
        client = cache.remote(context)
        # Everything the operator made for this K8ssandraCluster carries its labels: per namespace
        # one LIST of datacenters, of ConfigMaps (the metrics agents') and of Secrets (the superuser
        # copy, the config Secrets), the three at once: one round trip for any number of datacenters.
        live = _Listed(client, cdc.RESOURCE, _cluster_selector(kc))
        configmaps = _Listed(client, kube.CONFIGMAP, _cluster_selector(kc))
        labelled_secrets = _labelled_secrets(client, cluster)
        wanted = [live]
        if any(r.agent_config is not None for r in items):
            wanted.append(configmaps)
        if superuser is not None or opts.config_source != cdc.INLINE:
            wanted.append(labelled_secrets)
        _Listed.prefetch(wanted, [r.namespace for r in items])
        _each(items, lambda r: setattr(r, "existing", live.get(r.namespace, r.name)))
        _each(items, lambda r: _read_agent_config(r, configmaps))
        if superuser is not None:
            for namespace in dict.fromkeys(r.namespace for r in items):
                key = (context, namespace)
                if key not in superuser.existing:
                    superuser.existing[key] = labelled_secrets.get(namespace, superuser.name)
        choice = sources[context] = source_from_live(items, opts.config_source, cluster)
        _shape(items, client, choice.source or cdc.INLINE, cluster, opts, secrets=labelled_secrets)

    seconds: dict[str, float] = {}
    _per_context(reports, read, seconds)

    progress("checking what would be written against each cluster's schema (server-side dry run)")
    invalid: list[tuple[str, str, str]] = []

    def validate(context: str, items: list[DatacenterReport]) -> None:
        invalid.extend(_validate(items, cache.remote(context), sources[context], cluster, opts))

    _per_context(reports, validate, seconds)
    for r in reports:
        if r.context in sources and sources[r.context].source is None:
            r.config_source = None  # not decided there (nothing written)
    if invalid:
        raise ClusterError(_schema_errors_line(invalid) + " (nothing was written)")

    for r in reports:
        if r.action != "error":
            r.ready, r.progress = ready_state(r.existing)
    if opts.dry_run:
        _plan_superuser(superuser, reports, cache, kc, dry_run=True)
        _plan_dry_run(reports, opts.gate)
    else:
        _plan_superuser(superuser, reports, cache, kc, dry_run=False)
        _push(reports, cache, opts, progress, seconds)
        if opts.update_status:
            _update_status(local, kc, reports)
    broken = [{"name": b.name, "context": b.context, "reason": b.reason} for b in cache.broken]
    return ReconcileResult(opts.name, opts.namespace, opts.dry_run, reports, broken,
                           {ctx: sources[ctx] for ctx in by_context(reports) if ctx in sources}, superuser=superuser,
                           seconds_by_context=seconds)


def _read_agent_config(r: DatacenterReport, configmaps: _Listed) -> None:
    if r.agent_config is not None:
        r.existing_agent_config = configmaps.get(r.namespace, r.agent_config["metadata"]["name"])


def _read_superuser(kc: dict, local: kube.KubeClient) -> SuperuserReport | None:
    name = superuser_secret_name(kc)
    if name is None:  # external secrets: nobody creates it
        return None
    namespace = kc["metadata"]["namespace"]
    report = SuperuserReport(name)
    report.existing[("", namespace)] = local.get_or_none(kube.SECRET, name, namespace)
    return report


def _plan_superuser(report: SuperuserReport | None, reports: list[DatacenterReport], cache: ClientCache, kc: dict,
                    dry_run: bool) -> None:
    """Create the superuser Secret where it is missing, as the operator does before any datacenter:
    in the control plane (a new random password), then a copy of it in each datacenter's cluster and
    namespace. Never replaced once there: it holds the password Cassandra was given. A failure is
    that of the datacenters going where the copy is missing."""
    if report is None:
        return
    source_key = ("", kc["metadata"]["namespace"])
    source = report.existing.get(source_key)
    planned = "would be created" if dry_run else "created"
    try:
        if source is None:
            source = superuser_secret(kc, "".join(secrets.choice(SUPERUSER_PASSWORD_CHARACTERS)
                                                  for _ in range(SUPERUSER_PASSWORD_LENGTH)))
            if not dry_run:
                source = cache.local().create(kube.SECRET, source, source_key[1])
            report.actions[source_key] = planned
        else:
            report.actions[source_key] = "unchanged"
        # A credential, read or made here: no message may carry it.
        redact.remember(base64.b64decode((source.get("data") or {}).get("password") or ""))
    except Exception as e:  # noqa: BLE001 - every datacenter needs it
        report.actions[source_key] = "error"
        for r in reports:
            if r.action != "error":
                _fail(r, e)
        return
    made: set[tuple[str, str]] = set()  # (API server, namespace): several contexts may name one cluster
    for (context, namespace), live in report.existing.items():
        if (context, namespace) == source_key:
            continue
        if live is not None:
            report.actions[(context, namespace)] = "unchanged"
            continue
        try:
            client = cache.remote(context)
            if (client.server, namespace) in made:
                report.actions[(context, namespace)] = planned
                continue
            if not dry_run:
                try:
                    client.create(kube.SECRET, replicated_superuser_secret(source, kc, namespace), namespace)
                except kube.ApiError as e:
                    if e.status != 409:
                        raise
                    # Made since it was read (by the operator's replication, say): it stays as it is.
                    report.actions[(context, namespace)] = "unchanged"
                    continue
            made.add((client.server, namespace))
            report.actions[(context, namespace)] = planned
        except Exception as e:  # noqa: BLE001 - reported on the datacenters that need it
            report.actions[(context, namespace)] = "error"
            for r in reports:
                if (r.context, r.namespace) == (context, namespace) and r.action != "error":
                    _fail(r, e)


def _cluster_selector(kc: dict) -> str:
    """The operator's labels on everything made for one K8ssandraCluster."""
    meta = kc["metadata"]
    return f"k8ssandra.io/cluster-name={meta['name']},k8ssandra.io/cluster-namespace={meta['namespace']}"


def _labelled_secrets(client: kube.KubeClient, cluster: str) -> _Listed:
    """The Secrets labelled for Cassandra cluster `cluster` (the superuser copy, the config
    Secrets), by the one label they all carry."""
    return _Listed(client, kube.SECRET, f"k8ssandra.io/cluster-name={cluster}")


class _Listed:
    """Objects of one kind in one cluster, read with one LIST per namespace (by label) instead of a
    GET each. A name the LIST did not return is read with a GET: an object of that name without
    the labels (made by hand, or by another tool) must still be seen. That costs a GET only for
    objects that are missing, i.e. on a first run."""

    def __init__(self, client: kube.KubeClient, resource: kube.Resource, selector: str):
        self.client, self.resource, self.selector = client, resource, selector
        self._by_namespace: dict[str, dict[str, dict]] = {}

    def _fetch(self, namespace: str) -> None:
        items = self.client.list(self.resource, namespace, label_selector=self.selector)
        for o in items:  # a LIST's items carry neither: make them look like what a GET returns
            o.setdefault("apiVersion", self.resource.api_version)
            o.setdefault("kind", self.resource.kind)
        self._by_namespace[namespace] = {o["metadata"]["name"]: o for o in items}

    @staticmethod
    def prefetch(listed: list[_Listed], namespaces: list[str]) -> None:
        """Every LIST of every namespace at once (one round trip, not one each). A LIST that
        fails is left to `get`, which lists again and raises where the object is needed; when
        it failed because the cluster did not answer, that second LIST fails at once with the
        same cause (the run's clients, cache.RunClient): a silent cluster costs one timeout,
        not one more per datacenter."""
        jobs = [(one, ns) for one in listed for ns in dict.fromkeys(namespaces)]
        if len(jobs) <= 1:
            return
        with ThreadPoolExecutor(max_workers=min(len(jobs), 8)) as pool:
            list(pool.map(lambda job: _attempt(job[0]._fetch, job[1]), jobs))

    def get(self, namespace: str, name: str) -> dict | None:
        if namespace not in self._by_namespace:
            self._fetch(namespace)
        found = self._by_namespace[namespace].get(name)
        return found if found is not None else self.client.get_or_none(self.resource, name, namespace)


def _attempt(work: Callable[[Any], None], arg: Any) -> None:
    """Work done ahead of need: its failure is met again, and reported, where the result is used."""
    try:
        work(arg)
    except Exception:  # noqa: BLE001
        pass


def _shape(items: list[DatacenterReport], client: kube.KubeClient, source: str, cluster: str,
           opts: ReconcileOptions, keep_live: bool = True, secrets: _Listed | None = None) -> None:
    """Give each report the objects its source writes, read the Secrets it needs, and classify it.

    The source is `source`, except under `auto` for a datacenter whose live object uses one
    (`keep_live`): auto never switches a datacenter that works, also where the datacenters of
    one cluster differ (a switch interrupted half-way).
    """
    # The config Secrets carry the datacenters' operator labels (and k8sctl's): one LIST per namespace.
    if secrets is None:
        secrets = _labelled_secrets(client, cluster)

    def one(r: DatacenterReport) -> None:
        live = cdc.live_source(r.existing, cluster) if keep_live and opts.config_source == cdc.AUTO else None
        r.config_source = live or source
        r.desired, r.desired_secret = cdc.for_source(r.inline, r.config_source, cluster)
        # The Secret k8sctl writes, or the one the live datacenter names (to remove it when
        # switching to inline): always the same name for a datacenter.
        name = cdc.config_secret_name(cluster, r.name)
        wanted = {(r.desired_secret or {}).get("metadata", {}).get("name"), _live_secret_name(r)}
        r.config_secret = name if name in wanted else None
        if r.config_secret and not r.secret_read:
            r.existing_secret = secrets.get(r.namespace, name)
            r.secret_read = True
        classify(r, opts.force_conflicts)

    _each(items, one)


def _schema_error(r: DatacenterReport, e: kube.ApiError, what: str, opts: ReconcileOptions) -> tuple[str, str, str]:
    """(datacenter, context, what is wrong): grouped into one line per cause by `_schema_errors_line`."""
    fields = cdc.invalid_fields(str(e)) or ["(not named by the server)"]
    text = f"{what} is refused by the cluster's schema at field {', '.join(fields)}: {cdc.schema_detail(str(e))}"
    if cdc.refuses_inline_config(fields) and opts.config_source == cdc.INLINE:
        text += "; use --config-source secret (or auto) to write the config through spec.configSecret"
    return r.name, r.context, text


def _schema_errors_line(errors: list[tuple[str, str, str]]) -> str:
    causes: dict[tuple[str, str], list[str]] = {}
    for name, context, text in errors:
        causes.setdefault((context, text), []).append(name)
    return "; ".join(f"datacenter{'s' if len(names) > 1 else ''} {', '.join(names)} in context "
                     f"{context or '(control plane)'}: {text}" for (context, text), names in causes.items())


def _is_schema_error(e: kube.ApiError) -> bool:
    # 422 Invalid; 500 with a typed-patch error when a list-map key is missing (the raw CRD's x-kubernetes keys).
    return e.status == 422 or (e.status in (400, 500) and bool(cdc.invalid_fields(str(e))))


def _validate(items: list[DatacenterReport], client: kube.KubeClient, choice: SourceChoice, cluster: str,
              opts: ReconcileOptions) -> list[tuple[str, str, str]]:
    """Dry-run apply what one context would get (Secret, then datacenter); decide `auto` there.

    Under `auto` the first dry run is the probe. A refusal of the inline spec.config, by the
    probe or by an update's dry run where live datacenters said inline (a CRD replaced since),
    switches the context to `secret` and starts over. Returns the schema errors.
    """
    while True:
        errors: list[tuple[str, str, str]] = []
        switched = False
        # The CRD is the same for every datacenter of a context: once it refused an inline
        # spec.config, it would refuse the next one too (no need to ask again).
        inline_checked: kube.ApiError | None | bool = False
        for r in items:
            if r.action not in ("create", "update"):
                continue
            steps: list[tuple[kube.Resource, dict, str]] = []
            if r.desired_secret is not None and r.secret_changed:
                steps.append((kube.SECRET, r.desired_secret, f"Secret {r.desired_secret['metadata']['name']}"))
            if r.existing is None or r.dc_changed:
                steps.append((cdc.RESOURCE, r.desired, "the datacenter"))
            refused = False
            for resource, obj, what in steps:
                inline = resource is cdc.RESOURCE and r.desired_secret is None
                try:
                    if inline and isinstance(inline_checked, kube.ApiError):
                        raise inline_checked
                    if resource is cdc.RESOURCE and r.untyped_config:
                        _to_config_secret(r, client, dry_run=True)
                    elif inline and inline_checked is False and r.existing is None:
                        # The first inline one (the probe under auto), as a dry-run create: the
                        # schema's own answer (422, `must be of type byte`) comes at once, where
                        # an apply's typed-patch 500 is retried by kube.py for seconds.
                        client.create(cdc.RESOURCE, obj, r.namespace, dry_run=True)
                    else:
                        # force: conflicts with other managers are reported by the real write, not here.
                        client.apply(resource, obj, force=True, dry_run=True)
                    if inline:
                        inline_checked = True
                except kube.ApiError as e:
                    if not _is_schema_error(e):
                        raise
                    if inline and cdc.refuses_inline_config(cdc.invalid_fields(str(e))):
                        inline_checked = e
                    if (r.desired_secret is not None and resource is cdc.RESOURCE and not r.untyped_config
                            and _live_config_untyped(e)):
                        r.untyped_config = True  # and check that way instead
                        try:
                            _to_config_secret(r, client, dry_run=True)
                            continue
                        except kube.ApiError as e2:
                            if not _is_schema_error(e2):
                                raise
                            e = e2
                    if (opts.config_source == cdc.AUTO and choice.source != cdc.SECRET
                            and cdc.refuses_inline_config(cdc.invalid_fields(str(e)))):
                        choice.source = cdc.SECRET
                        choice.reason = (f"auto: the cluster's CassandraDatacenter CRD refuses an inline spec.config "
                                         f"(dry run of {r.name}); writing it through spec.configSecret")
                        _shape(items, client, cdc.SECRET, cluster, opts, keep_live=False)
                        switched = True
                    else:
                        errors.append(_schema_error(r, e, what, opts))
                    refused = True
                    break
            if switched:
                break
            if choice.source is None and not refused:
                choice.source = cdc.INLINE
                choice.reason = f"auto: the cluster accepts an inline spec.config (dry run of {r.name})"
        if not switched:
            break
    if choice.source is None:
        choice.reason = ("auto: nothing to write in this cluster" if not errors
                         else "auto: undecided (its datacenters are refused for other reasons)")
    return errors


def _live_config_untyped(e: kube.ApiError) -> bool:
    return "typed live object" in str(e) and cdc.refuses_inline_config(cdc.invalid_fields(str(e)))


def _to_config_secret(r: DatacenterReport, client: kube.KubeClient, dry_run: bool = False) -> None:
    """Replace the live datacenter's inline spec.config by spec.configSecret, in one JSON patch.

    Only the object read is patched (test of its resourceVersion); the Secret it names is
    written before. Server-side apply then takes the datacenter over as usual.
    """
    meta = r.existing["metadata"] if r.existing else {}
    patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
             {"op": "remove", "path": "/spec/config"},
             {"op": "add", "path": "/spec/configSecret", "value": r.desired["spec"]["configSecret"]}]
    client.request("PATCH", cdc.RESOURCE.path(r.namespace, r.name), patch,
                   query={"fieldManager": kube.FIELD_MANAGER, "dryRun": "All" if dry_run else None},
                   content_type="application/json-patch+json")


def _diff(existing: dict | None, desired: dict) -> str:
    def view(o: dict | None) -> list[str]:
        if o is None:
            return []
        meta = o.get("metadata") or {}
        keys = ("name", "namespace", "labels", "annotations")
        shown: dict[str, Any] = {"metadata": {k: meta.get(k) for k in keys if meta.get(k)}}
        if o.get("kind") == "Secret":  # names of keys, never values
            shown["data"] = {k: "(hidden)" for k in sorted(o.get("data") or {})}
        elif o.get("kind") == "ConfigMap":
            shown["data"] = o.get("data")
        else:
            shown["spec"] = o.get("spec")
        return yaml.safe_dump(shown, sort_keys=True).splitlines(keepends=True)

    return "".join(difflib.unified_diff(view(existing), view(desired), "cluster", "desired"))


def _plan_dry_run(reports: list[DatacenterReport], gate: bool) -> None:
    for i, r in enumerate(reports):
        if r.action == "unchanged" and r.agent_config is not None:
            r.agent_action = "unchanged"
        if r.action in ("error", "unchanged"):
            continue
        r.diff = _diff(r.existing, r.desired) if r.dc_changed or r.existing is None else ""
        if r.desired_secret is not None and r.secret_changed:
            r.diff += _diff(r.existing_secret, r.desired_secret)
            r.secret_action = "would be created" if r.existing_secret is None else "would be updated"
        if r.remove_secret:
            r.secret_action = "would be deleted"
        if r.agent_changed and r.agent_config is not None:  # changed implies desired
            r.diff += _diff(r.existing_agent_config, r.agent_config)
            r.agent_action = "would be created" if r.existing_agent_config is None else "would be updated"
        elif r.agent_config is not None:
            r.agent_action = "unchanged"
        if r.action == "create" and gate and blocker(reports, i) is not None:
            r.action = "waiting"
            r.secret_action = r.agent_action = None  # written with the datacenter, not before
        else:
            r.action = {"create": "would be created", "update": "would be updated"}[r.action]


def _apply(r: DatacenterReport, client: kube.KubeClient, resource: kube.Resource, obj: dict, force: bool) -> dict:
    try:
        return client.apply(resource, obj, force=force)
    except kube.ApiError as e:
        if e.status == 409:
            raise ClusterError(f"{r.where}: fields of {obj['kind']} {obj['metadata']['name']} are owned by another "
                               f"manager ({e}); pass --force-conflicts to take them") from None
        raise


def _write(r: DatacenterReport, client: kube.KubeClient, opts: ReconcileOptions) -> None:
    """Secret first (the datacenter names it), then the datacenter, then the Secret nothing names any more."""
    if r.desired_secret is not None and r.secret_changed:
        existed = r.existing_secret is not None
        # A Secret k8sctl manages is k8sctl's whole: an edit made with kubectl is taken back.
        force = opts.force_conflicts or not existed or cdc.managed_by_k8sctl(r.existing_secret)
        r.existing_secret = _apply(r, client, kube.SECRET, r.desired_secret, force)
        r.secret_action = "updated" if existed else "created"
    elif r.desired_secret is not None:
        r.secret_action = "unchanged"
    if r.agent_changed and r.agent_config is not None:  # changed implies desired
        # Before the datacenter that mounts it. The operator's own (its hash, created with an
        # update) is taken over: what k8sctl writes there is what the operator writes.
        existed = r.existing_agent_config is not None
        r.existing_agent_config = _apply(r, client, kube.CONFIGMAP, r.agent_config, True)
        r.agent_action = "updated" if existed else "created"
    elif r.agent_config is not None:
        r.agent_action = "unchanged"
    if r.untyped_config:
        _to_config_secret(r, client)
    if r.existing is None or r.dc_changed:
        r.existing = _apply(r, client, cdc.RESOURCE, r.desired, opts.force_conflicts or r.restore)
        r.ready, r.progress = ready_state(r.existing)
    if r.remove_secret and r.existing_secret is not None:
        meta = r.existing_secret["metadata"]
        # Only the object read (and found managed by k8sctl) is deleted, not one created since.
        client.request("DELETE", kube.SECRET.path(meta["namespace"], meta["name"]),
                       {"apiVersion": "v1", "kind": "DeleteOptions",
                        "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}})
        r.existing_secret, r.secret_action = None, "deleted"


_WRITES = {"create": ("creating", "created"), "update": ("updating", "updated")}


def _push(reports: list[DatacenterReport], cache: ClientCache, opts: ReconcileOptions, progress: Progress,
          seconds: dict[str, float] | None = None) -> None:
    def write(r: DatacenterReport) -> None:
        doing, done = _WRITES[r.action]
        progress(f"{doing} {r.where}")
        _write(r, cache.remote(r.context), opts)
        r.action = done

    # Updates are not gated; with --no-gate neither are creations.
    now = [r for r in reports if r.action == "update" or (r.action == "create" and not opts.gate)]
    _per_context(now, lambda _ctx, items: _each(items, write), seconds)
    for r in reports:
        if r.action == "unchanged" and r.desired_secret is not None:
            r.secret_action = "unchanged"
        if r.action == "unchanged" and r.agent_config is not None:
            r.agent_action = "unchanged"
    for i, r in enumerate(reports):
        if r.action == "error":
            continue
        try:
            if r.action == "create":
                if blocker(reports, i) is not None:
                    r.action = "waiting"
                    continue
                write(r)
            # --wait: every datacenter ends Ready, also one created by an earlier, interrupted run.
            if opts.wait and not r.ready:
                _wait_ready(r, cache, opts, progress)
        except Exception as e:  # noqa: BLE001 - one datacenter's failure; later ones wait for it
            _fail(r, e)


def _wait_ready(r: DatacenterReport, cache: ClientCache, opts: ReconcileOptions, progress: Progress) -> None:
    client = cache.remote(r.context)
    t0 = time.monotonic()
    while not r.ready:
        elapsed = time.monotonic() - t0
        if elapsed > opts.timeout:
            raise ClusterError(f"{r.where} not Ready after {opts.timeout:.0f}s "
                               f"(cassandraOperatorProgress: {r.progress or 'none'})")
        progress(f"waiting for {r.where} to become Ready ({elapsed:.0f}s)")
        time.sleep(opts.poll_interval)
        r.existing = client.get(cdc.RESOURCE, r.name, r.namespace)
        r.ready, r.progress = ready_state(r.existing)


def _update_status(local: kube.KubeClient, kc: dict, reports: list[DatacenterReport]) -> None:
    datacenters = {}
    for r in reports:
        if r.existing is not None:
            entry: dict = {"cassandra": (r.existing.get("status") or {})}
            if r.context:
                entry["contextName"] = r.context
            datacenters[r.name] = entry
    meta = kc["metadata"]
    local.request("PATCH", k8c.RESOURCE.path(meta["namespace"], meta["name"], "status"),
                  {"status": {"datacenters": datacenters}}, content_type="application/merge-patch+json")
