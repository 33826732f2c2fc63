"""One reconcile pass of a K8ssandraCluster's CassandraDatacenters, like the operator's.

Order and gating follow k8ssandra-operator: datacenters in spec order; one that
does not exist yet is created only when every earlier one exists and is Ready,
so a new multi-datacenter cluster is never bootstrapped as separate rings.
Updates of existing datacenters are not gated and run per cluster in parallel.
"""
from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import yaml

from k8sctl import kube
from k8sctl.cache import ClientCache
from k8sctl.datacenters import HASH_ANNOTATION, DesiredDatacenter, build_datacenters
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
    poll_interval: float = 0.5


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
    desired: dict = field(default_factory=dict, repr=False)
    existing: dict | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.name} in {self.context or 'the control plane'}"

    def as_dict(self) -> dict:
        d = {"context": self.context, "namespace": self.namespace, "name": self.name, "action": self.action,
             "ready": self.ready, "cassandraOperatorProgress": self.progress}
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

    @property
    def failed(self) -> bool:
        return any(r.action == "error" for r in self.datacenters)

    def as_dict(self) -> dict:
        return {"k8ssandraCluster": self.cluster, "namespace": self.namespace, "dryRun": self.dry_run,
                "failed": self.failed, "brokenClientConfigs": self.broken_clientconfigs,
                "datacenters": [r.as_dict() for r in self.datacenters]}


def ready_state(obj: dict | None) -> tuple[bool | None, str | None]:
    """(Ready condition and progress == Ready, cassandraOperatorProgress) of a CassandraDatacenter."""
    if obj is None:
        return None, None
    status = obj.get("status") or {}
    progress = status.get("cassandraOperatorProgress")
    cond = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return cond and progress == "Ready", progress


def check_contexts(desired: list[DesiredDatacenter], cache: ClientCache) -> None:
    """Fail before anything is written when a datacenter names a context without a usable client."""
    cache.require(d.context for d in desired)


def _per_context(reports: list[DatacenterReport], work: Callable[[DatacenterReport], None]) -> None:
    """Run `work` for every report; one thread per cluster, each cluster's items in order."""
    groups: dict[str, list[DatacenterReport]] = {}
    for r in reports:
        groups.setdefault(r.context, []).append(r)

    def run_group(items: list[DatacenterReport]) -> None:
        for r in items:
            try:
                work(r)
            except kube.ClusterError as e:
                r.action, r.error = "error", str(e)

    if len(groups) <= 1:
        for items in groups.values():
            run_group(items)
        return
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        list(pool.map(run_group, groups.values()))


def _diff(existing: dict | None, desired: dict) -> str:
    def view(o: dict | None) -> list[str]:
        if o is None:
            return []
        meta = o.get("metadata") or {}
        shown = {"metadata": {k: meta.get(k) for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
                 "spec": o.get("spec")}
        return yaml.safe_dump(shown, sort_keys=True).splitlines(keepends=True)

    return "".join(difflib.unified_diff(view(existing), view(desired), "cluster", "desired"))


def run(opts: ReconcileOptions, cache: ClientCache, progress: Progress = lambda s: None) -> ReconcileResult:
    local = cache.local()
    kc = local.get_or_none(kube.K8SSANDRA_CLUSTER, opts.name, opts.namespace)
    if kc is None:
        raise UsageError(f"K8ssandraCluster {opts.namespace}/{opts.name} not found in {local.context}")
    desired = build_datacenters(kc)
    check_contexts(desired, cache)
    reports = [DatacenterReport(d.context, d.namespace, d.name, desired=d.object) for d in desired]

    progress("reading CassandraDatacenters")

    def fetch(r: DatacenterReport) -> None:
        r.existing = cache.remote(r.context).get_or_none(kube.CASSANDRA_DATACENTER, r.name, r.namespace)

    _per_context(reports, fetch)

    for r in reports:
        if r.action == "error":
            continue
        r.ready, r.progress = ready_state(r.existing)
        if r.existing is None:
            r.action = "create"
        elif (r.existing.get("spec") or {}).get("clusterName") != r.desired["spec"]["clusterName"]:
            r.action, r.error = "error", (f"Cluster name cannot be changed: {r.where} "
                                          f"has clusterName {r.existing['spec'].get('clusterName')!r}")
        elif ((r.existing.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION) \
                == r.desired["metadata"]["annotations"][HASH_ANNOTATION]:
            r.action = "unchanged"
        else:
            r.action = "update"

    if opts.dry_run:
        _plan_dry_run(reports, opts.gate)
    else:
        _push(reports, cache, opts, progress)
        if opts.update_status:
            _update_status(local, kc, reports)
    broken = [{"name": b.name, "context": b.context, "reason": b.reason} for b in cache.broken]
    return ReconcileResult(opts.name, opts.namespace, opts.dry_run, reports, broken)


def _gate_blocks(reports: list[DatacenterReport], upto: int) -> bool:
    return any(not (r.existing is not None and r.ready) for r in reports[:upto])


def _plan_dry_run(reports: list[DatacenterReport], gate: bool) -> None:
    for i, r in enumerate(reports):
        if r.action in ("error", "unchanged"):
            continue
        r.diff = _diff(r.existing, r.desired)
        if r.action == "create" and gate and _gate_blocks(reports, i):
            r.action = "waiting"
        else:
            r.action = {"create": "would be created", "update": "would be updated"}[r.action]


def _apply(r: DatacenterReport, cache: ClientCache, opts: ReconcileOptions) -> None:
    try:
        r.existing = cache.remote(r.context).apply(kube.CASSANDRA_DATACENTER, r.desired, force=opts.force_conflicts)
    except kube.ApiError as e:
        if e.status == 409:
            raise ClusterError(f"{r.where}: fields are owned by another "
                               f"manager ({e}); pass --force-conflicts to take them") from None
        raise
    r.ready, r.progress = ready_state(r.existing)


_WRITES = {"create": ("creating", "created"), "update": ("updating", "updated")}


def _push(reports: list[DatacenterReport], cache: ClientCache, opts: ReconcileOptions, progress: Progress) -> None:
    def write(r: DatacenterReport) -> None:
        doing, done = _WRITES[r.action]
        progress(f"{doing} {r.where}")
        _apply(r, cache, opts)
        r.action = done

    # Updates are not gated; with --no-gate neither are creations.
    _per_context([r for r in reports if r.action == "update" or (r.action == "create" and not opts.gate)], write)
    if not opts.gate:
        return
    for i, r in enumerate(reports):
        if r.action != "create":
            continue
        if _gate_blocks(reports, i):
            r.action = "waiting"
            continue
        try:
            write(r)
            if opts.wait:
                _wait_ready(r, cache, opts, progress)
        except kube.ClusterError as e:
            r.action, r.error = "error", str(e)


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
        r.existing = client.get(kube.CASSANDRA_DATACENTER, r.name, r.namespace)
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
    local.request("PATCH", kube.K8SSANDRA_CLUSTER.path(meta["namespace"], meta["name"], "status"),
                  {"status": {"datacenters": datacenters}}, content_type="application/merge-patch+json")
