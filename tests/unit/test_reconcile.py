"""reconcile's decisions without a cluster: what waits for what, unchanged vs update, which config source."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from k8sctl import reconcile as rec
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.datacenters import build_datacenters

FIXTURES = Path(__file__).parent.parent / "fixtures"


def reports(source: str = cdc.INLINE) -> list[rec.DatacenterReport]:
    doc = yaml.safe_load((FIXTURES / "k8ssandracluster-demo.yaml").read_text())
    doc["metadata"]["namespace"] = "k8ssandra-operator"
    out = []
    for d in build_datacenters(doc):
        r = rec.DatacenterReport(d.context, d.namespace, d.name, inline=d.object)
        r.desired, r.desired_secret = cdc.for_source(d.object, source, "demo")
        r.config_source = source
        out.append(r)
    return out


def live(obj: dict, ready: bool) -> dict:
    obj = copy.deepcopy(obj)
    obj["metadata"]["uid"], obj["metadata"]["resourceVersion"] = "u1", "1"
    if ready:
        obj["status"] = cdc.ready_status(obj)
    return obj


def set_live(r: rec.DatacenterReport, ready: bool) -> None:
    r.existing = live(r.desired, ready)
    r.ready = cdc.ready_state(r.existing)[0]


def test_each_creation_waits_for_every_earlier_datacenter_to_exist_and_be_ready():
    rs = reports()
    assert [rec.blocker(rs, i) for i in range(3)] == [None, rs[0], rs[0]]
    set_live(rs[0], ready=False)
    assert [rec.blocker(rs, i) for i in range(3)] == [None, rs[0], rs[0]]  # exists, not Ready
    set_live(rs[0], ready=True)
    assert [rec.blocker(rs, i) for i in range(3)] == [None, None, rs[1]]
    set_live(rs[2], ready=True)  # a later one existing does not unblock what comes before it
    assert rec.blocker(rs, 2) is rs[1]
    set_live(rs[1], ready=True)
    assert [rec.blocker(rs, i) for i in range(3)] == [None, None, None]


def test_dry_run_plan_marks_blocked_creations_waiting():
    rs = reports()
    for r in rs:
        rec.classify(r, force_conflicts=False)
    rec._plan_dry_run(rs, gate=True)
    assert [r.action for r in rs] == ["would be created", "waiting", "waiting"]
    assert [r.agent_action for r in rs] == [None] * 3  # these reports carry no ConfigMap
    rs = reports()
    for r in rs:
        r.agent_config = {"kind": "ConfigMap", "metadata": {"name": f"{r.name}-metrics-agent-config"}, "data": {}}
        rec.classify(r, force_conflicts=False)
    rec._plan_dry_run(rs, gate=True)
    # A waiting datacenter's ConfigMap is written with it, not before.
    assert [r.agent_action for r in rs] == ["would be created", None, None]
    rs = reports()
    for r in rs:
        rec.classify(r, force_conflicts=False)
    rec._plan_dry_run(rs, gate=False)
    assert [r.action for r in rs] == ["would be created"] * 3


def test_unchanged_needs_our_hash_and_our_fields():
    r = reports()[0]
    set_live(r, ready=True)
    rec.classify(r, force_conflicts=False)
    assert r.action == "unchanged" and not r.restore
    # kubectl edit of a field k8sctl owns: same hash, other value -> update that takes the field back.
    r.existing["spec"]["size"] = 9
    rec.classify(r, force_conflicts=False)
    assert r.action == "update" and r.restore and r.drift == ["spec.size"]
    # Another manager's object (no hash of ours): an update, but no forced take-over.
    r.existing = live(r.desired, True)
    del r.existing["metadata"]["annotations"][cdc.HASH_ANNOTATION]
    rec.classify(r, force_conflicts=False)
    assert r.action == "update" and not r.restore
    # Fields only the live object has (another manager's, cass-operator's annotation, status) are not ours.
    r.existing = live(r.desired, True)
    r.existing["metadata"]["annotations"]["cassandra.datastax.com/config-hash"] = "x"
    r.existing["spec"]["systemLoggerResources"] = {}
    rec.classify(r, force_conflicts=False)
    assert r.action == "unchanged"


def test_an_operator_made_datacenter_with_our_fields_is_not_rewritten():
    """The operator's hash cannot be computed here: its datacenter is left alone when every
    other field k8sctl writes already has the desired value, and updated when one differs."""
    r = reports()[0]
    r.existing = live(r.desired, True)
    r.existing["metadata"]["annotations"][cdc.HASH_ANNOTATION] = "the-operators-hash="
    r.existing["metadata"]["finalizers"] = ["k8ssandracluster.k8ssandra.io/finalizer"]
    r.existing["spec"]["systemLoggerResources"] = {}  # Go zero values the operator serializes
    rec.classify(r, force_conflicts=False)
    assert r.action == "unchanged" and not r.dc_changed and r.drift == []
    r.existing["spec"]["size"] = 5
    rec.classify(r, force_conflicts=False)
    assert r.action == "update" and r.dc_changed and not r.restore
    # No hash at all: not the operator's object; written (the annotation is ours to add).
    r.existing = live(r.desired, True)
    del r.existing["metadata"]["annotations"][cdc.HASH_ANNOTATION]
    rec.classify(r, force_conflicts=False)
    assert r.action == "update"


def test_secret_content_is_part_of_unchanged():
    r = reports(cdc.SECRET)[0]
    set_live(r, ready=True)
    r.existing_secret, r.secret_read = copy.deepcopy(r.desired_secret), True
    rec.classify(r, force_conflicts=False)
    assert r.action == "unchanged" and not r.dc_changed and not r.secret_changed
    r.existing_secret["data"]["config"] = "e30="  # {} written behind our back
    rec.classify(r, force_conflicts=False)
    assert r.action == "update" and r.secret_changed and not r.dc_changed
    r.existing_secret = None  # deleted behind our back
    rec.classify(r, force_conflicts=False)
    assert r.action == "update" and r.secret_changed
    # A Secret of that name k8sctl does not manage is not taken over without --force-conflicts.
    r.existing_secret = copy.deepcopy(r.desired_secret)
    del r.existing_secret["metadata"]["labels"][cdc.MANAGED_BY_LABEL]
    rec.classify(r, force_conflicts=False)
    assert r.action == "error" and "--force-conflicts" in r.error
    rec.classify(r, force_conflicts=True)
    assert r.action == "update"


def test_switching_to_inline_removes_only_a_secret_k8sctl_manages():
    secret_form = reports(cdc.SECRET)[0]
    r = reports(cdc.INLINE)[0]
    r.existing = live(secret_form.desired, True)
    r.existing_secret, r.secret_read = live(secret_form.desired_secret, False), True
    r.config_secret = secret_form.desired_secret["metadata"]["name"]  # what _shape sets
    rec.classify(r, force_conflicts=False)
    assert r.action == "update" and r.dc_changed and r.remove_secret
    del r.existing_secret["metadata"]["labels"][cdc.MANAGED_BY_LABEL]
    rec.classify(r, force_conflicts=False)
    assert r.action == "update" and not r.remove_secret


def test_auto_source_comes_from_live_objects_or_a_probe():
    rs = reports()
    assert rec.source_from_live(rs, cdc.AUTO, "demo").source is None  # nothing live: probe
    assert rec.source_from_live(rs, cdc.SECRET, "demo").source == cdc.SECRET
    secret_rs = reports(cdc.SECRET)
    rs[1].existing = live(secret_rs[1].desired, True)
    choice = rec.source_from_live(rs, cdc.AUTO, "demo")
    assert choice.source == cdc.SECRET and "dc2" in choice.reason
    rs[2].existing = live(rs[2].desired, True)  # an inline one proves the CRD accepts spec.config
    assert rec.source_from_live(rs, cdc.AUTO, "demo").source == cdc.INLINE


def test_one_clusters_failure_stays_that_clusters():
    rs = reports()
    rs[1].context = rs[0].context  # dc1, dc2 in one cluster; dc3 in another
    for r in rs:
        r.action = "create"
    token_like = "Bearer abc.def"

    def work(context: str, items: list[rec.DatacenterReport]) -> None:
        if context == rs[0].context:
            raise ValueError(f"Invalid header value {token_like!r}")  # a bug's message may hold anything
        for r in items:
            r.action = "created"

    rec._per_context(rs, work)
    assert [r.action for r in rs] == ["error", "error", "created"]
    assert "internal error" in rs[0].error and "ValueError" in rs[0].error and token_like not in rs[0].error
    assert isinstance(rs[0].exception, ValueError)  # kept for -v

    def each_work(r: rec.DatacenterReport) -> None:
        if r.name == "dc1":
            raise KeyError("boom")
        r.action = "updated"

    rs = reports()
    for r in rs:
        r.action = "update"
    rec._each(rs, each_work)
    assert [r.action for r in rs] == ["error", "updated", "updated"]


def test_schema_errors_are_one_line_grouped_by_cause():
    errors = [("dc1", "c1", "the datacenter is refused ... at field spec.config: x"),
              ("dc2", "c1", "the datacenter is refused ... at field spec.config: x"),
              ("dc3", "", "the datacenter is refused ... at field metadata.labels: y")]
    line = rec._schema_errors_line(errors)
    assert line == ("datacenters dc1, dc2 in context c1: the datacenter is refused ... at field spec.config: x; "
                    "datacenter dc3 in context (control plane): the datacenter is refused ... at field metadata.labels: y")
    assert "\n" not in line


def test_the_metrics_agent_config_map_is_written_when_missing_or_changed_only():
    r = reports()[0]
    r.agent_config = build_datacenters(yaml.safe_load((FIXTURES / "k8ssandracluster-demo.yaml").read_text())
                                       | {"metadata": {"name": "demo", "namespace": "k8ssandra-operator"}})[0].agent_config
    set_live(r, ready=True)
    rec.classify(r, force_conflicts=False)
    assert r.agent_changed and r.action == "update" and not r.dc_changed  # missing: only the ConfigMap is written
    r.existing_agent_config = copy.deepcopy(r.agent_config)
    r.existing_agent_config["metadata"]["annotations"][cdc.HASH_ANNOTATION] = "the-operators-hash="
    rec.classify(r, force_conflicts=False)
    assert not r.agent_changed and r.action == "unchanged"  # the operator's, same content
    r.existing_agent_config["data"]["metrics-collector.yaml"] = "relabels: []\n"
    rec.classify(r, force_conflicts=False)
    assert r.agent_changed and r.action == "update"


class _FakeClient:
    """Records reads; LIST returns the labelled objects, GET any by name (a fake for pure code)."""

    def __init__(self, labelled: dict[str, dict], unlabelled: dict[str, dict]):
        self.labelled, self.unlabelled, self.calls = labelled, unlabelled, []

    def list(self, resource, namespace, label_selector=None):
        self.calls.append(("LIST", namespace, label_selector))
        return [dict(o) for o in self.labelled.values()]

    def get_or_none(self, resource, name, namespace=None):
        self.calls.append(("GET", namespace, name))
        return {**self.labelled, **self.unlabelled}.get(name)


def test_listed_reads_a_namespace_once_and_gets_only_what_the_list_missed():
    from k8sctl.apis import cassandradatacenter as cdc
    from k8sctl.reconcile import _Listed

    client = _FakeClient({"dc1": {"metadata": {"name": "dc1"}}, "dc2": {"metadata": {"name": "dc2"}}},
                         {"hand-made": {"metadata": {"name": "hand-made"}}})
    listed = _Listed(client, cdc.RESOURCE, "k8ssandra.io/cluster-name=demo")
    dc1 = listed.get("ns", "dc1")
    assert dc1["kind"] == "CassandraDatacenter" and dc1["apiVersion"] == cdc.RESOURCE.api_version
    assert listed.get("ns", "dc2")["metadata"]["name"] == "dc2"
    assert listed.get("ns", "hand-made") is not None   # no labels: still seen, through a GET
    assert listed.get("ns", "missing") is None
    assert client.calls == [("LIST", "ns", "k8ssandra.io/cluster-name=demo"), ("GET", "ns", "hand-made"),
                            ("GET", "ns", "missing")]
