"""The CassandraDatacenter API's pure rules: config source, Secret names, drift, schema errors (no cluster)."""
from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.datacenters import build_datacenters

FIXTURES = Path(__file__).parent.parent / "fixtures"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def demo_inline() -> dict:
    doc = yaml.safe_load((FIXTURES / "k8ssandracluster-demo.yaml").read_text())
    doc["metadata"]["namespace"] = "k8ssandra-operator"
    return build_datacenters(doc)[0].object


def test_secret_name_is_derived_and_dns1123_safe():
    assert cdc.config_secret_name("demo", "dc1") == "demo-dc1-cassandra-config"
    # Never cass-operator's own <clusterName>-<dc>-config, which it writes the merged config to.
    assert cdc.config_secret_name("demo", "dc1") != "demo-dc1-config"
    for cluster, dc in (("Demo_Cluster", "DC.1"), ("a" * 60, "dc1"), ("x" * 200, "y" * 200), ("-x-", "_")):
        name = cdc.config_secret_name(cluster, dc)
        assert DNS1123_LABEL.match(name) and len(name) <= 63, name
    long_a, long_b = cdc.config_secret_name("c" * 70, "dc1"), cdc.config_secret_name("c" * 70, "dc2")
    assert long_a != long_b  # cut names stay apart by their hash suffix


def test_secret_source_moves_config_into_a_labelled_secret():
    inline = demo_inline()
    dc, secret = cdc.for_source(inline, cdc.SECRET, "demo")
    assert "config" not in dc["spec"] and dc["spec"]["configSecret"] == "demo-dc1-cassandra-config"
    assert secret["metadata"]["name"] == dc["spec"]["configSecret"]
    assert secret["metadata"]["namespace"] == inline["metadata"]["namespace"]
    labels = secret["metadata"]["labels"]
    assert labels[cdc.MANAGED_BY_LABEL] == "k8sctl" and labels["k8ssandra.io/cluster-name"] == "demo"
    assert labels["app.kubernetes.io/part-of"] == "k8ssandra"
    assert secret["metadata"]["annotations"] == {cdc.DATACENTER_ANNOTATION: "dc1"}
    assert list(secret["data"]) == ["config"]
    assert json.loads(base64.b64decode(secret["data"]["config"])) == inline["spec"]["config"]
    assert cdc.secret_config(secret) == inline["spec"]["config"]
    # The datacenter is hashed again without its config: a config change alone changes only the Secret.
    assert cdc.stored_hash(dc) != cdc.stored_hash(inline)
    changed = copy.deepcopy(inline)
    changed["spec"]["config"]["cassandra-yaml"]["num_tokens"] = 32
    dc2, secret2 = cdc.for_source(cdc.with_hash(changed), cdc.SECRET, "demo")
    assert cdc.stored_hash(dc2) == cdc.stored_hash(dc) and secret2["data"] != secret["data"]
    assert cdc.for_source(inline, cdc.INLINE, "demo") == (inline, None)
    with pytest.raises(ValueError):
        cdc.for_source(inline, cdc.AUTO, "demo")


def test_live_source():
    inline = demo_inline()
    dc, _ = cdc.for_source(inline, cdc.SECRET, "demo")
    assert cdc.live_source(inline, "demo") == cdc.INLINE
    assert cdc.live_source(dc, "demo") == cdc.SECRET
    assert cdc.live_source(dc, "other") is None  # a Secret k8sctl does not name
    assert cdc.live_source(None, "demo") is None


def test_drift_sees_changed_and_removed_owned_fields_only():
    desired = {"metadata": {"labels": {"a": "1"}, "annotations": {"h": "x"}},
               "spec": {"size": 3, "racks": [{"name": "r1"}], "stopped": False}}
    live = copy.deepcopy(desired)
    live["metadata"]["annotations"]["cassandra.datastax.com/config-hash"] = "by cass-operator"
    live["spec"]["racks"][0]["nodeAffinityLabels"] = {}  # a server default
    live["spec"]["other"] = "another manager's field"
    live["status"] = {"cassandraOperatorProgress": "Ready"}
    assert cdc.owned_drift(desired, live) == []
    live["spec"]["size"] = 5
    del live["spec"]["racks"]
    live["metadata"]["labels"]["a"] = "2"
    assert cdc.owned_drift(desired, live) == ["metadata.labels.a", "spec.size", "spec.racks"]
    assert cdc.drift(False, 0) == [""] and cdc.drift(1, 1.0) == [] and cdc.drift([1], [1, 2]) == [""]


def test_invalid_fields_from_api_server_messages():
    one = ('CassandraDatacenter.cassandra.datastax.com "dc1" is invalid: spec.config: Invalid value: "object": '
           'spec.config in body must be of type byte: "object"')
    assert cdc.invalid_fields(one) == ["spec.config"] and cdc.refuses_inline_config(["spec.config"])
    many = ('CassandraDatacenter.cassandra.datastax.com "dc1" is invalid: [spec.size: Invalid value: -1: should be '
            'greater than or equal to 1, spec.racks[0].name: Required value]')
    assert cdc.invalid_fields(many) == ["spec.size", "spec.racks[0].name"]
    assert not cdc.refuses_inline_config(cdc.invalid_fields(many))
    typed = ('failed to create typed patch object (cassandra.datastax.com/v1beta1, Kind=CassandraDatacenter): '
             '.spec.podTemplateSpec.spec.containers: element 0: associative list with keys has an element that '
             'omits key field "name"')
    assert cdc.invalid_fields(typed) == ["spec.podTemplateSpec.spec.containers"]
    assert cdc.invalid_fields("connection refused") == []


def test_ready_state_and_stand_in_status():
    dc = {"metadata": {"generation": 2}}
    assert cdc.ready_state(None) == (None, None)
    assert cdc.ready_state(dc) == (False, None)
    dc["status"] = cdc.ready_status(dc)
    assert cdc.ready_state(dc) == (True, "Ready") and dc["status"]["observedGeneration"] == 2


def test_schema_detail_never_echoes_a_config_value():
    typed = ("PATCH /apis/x in context 'c': 500 failed to create typed patch object (ns/dc1; cassandra.datastax.com/v1beta1,"
             " Kind=CassandraDatacenter): .spec.config: expected string, got &value.valueUnstructured{Value:map[string]"
             "interface {}{\"cassandra-yaml\":map[string]interface {}{\"password\":\"hunter2\"}}}")
    detail = cdc.schema_detail(typed)
    assert "hunter2" not in detail and "byte string" in detail
    label = ('422 Invalid CassandraDatacenter.cassandra.datastax.com "dc2" is invalid: metadata.labels: Invalid value: '
             '"bad value!": a valid label must be an empty string')
    assert cdc.schema_detail(label) == 'metadata.labels: Invalid value: "bad value!": a valid label must be an empty string'
    dup = ("500 failed to create typed patch object (x): .spec.podTemplateSpec.spec.containers[name=\"cassandra\"].ports: "
           "duplicate entries for key [containerPort=9042,protocol=\"TCP\"]")
    assert cdc.schema_detail(dup) == ('spec.podTemplateSpec.spec.containers[name="cassandra"].ports: duplicate entries '
                                      'for key [containerPort=9042,protocol="TCP"]')
    many = 'X "dc1" is invalid: [spec.size: Invalid value: 0: must be >= 1, spec.racks[0].name: Required value]'
    assert cdc.schema_detail(many) == "spec.size: Invalid value: 0: must be >= 1, spec.racks[0].name: Required value"
    assert len(cdc.schema_detail("spec.size: " + "x" * 1000)) == 300
