"""The CassandraDatacenter builder against the operator's semantics (no cluster)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from k8sctl.datacenters import (
    DEFAULT_METRIC_FILTERS,
    HASH_ANNOTATION,
    SKIP_USER_CREATION,
    build_datacenters,
    canonical_hash,
    cleanup_for_kubernetes,
    merge,
    quantity_bytes,
)
from k8sctl.errors import UsageError

FIXTURES = Path(__file__).parent.parent / "fixtures"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# The upstream samples, copied into tests/fixtures/ (each file's first line says from where).
UPSTREAM_SAMPLES = {
    "docs-multi-cluster-3dc": "k8ssandracluster-docs-multi-cluster.yaml",
    "k8ssandra-multi-kind": "k8ssandracluster-multi-kind.yaml",
    "fixture-multi-dc-mixed": "k8ssandracluster-fixture-multi-dc-mixed.yaml",
    "docs-cluster-dc-level-3dc-overrides": "k8ssandracluster-docs-cluster-dc-level-overrides.yaml",
}


def load(name: str, namespace: str = "k8ssandra-operator") -> dict:
    doc = yaml.safe_load((FIXTURES / name).read_text())
    doc["metadata"]["namespace"] = namespace
    return doc


def by_name(kc: dict) -> dict:
    return {d.name: d for d in build_datacenters(kc)}


def test_demo_three_datacenters():
    dcs = build_datacenters(load("k8ssandracluster-demo.yaml"))
    assert [(d.context, d.namespace, d.name) for d in dcs] == [
        ("kind-k8ssandra-1", "k8ssandra-operator", "dc1"), ("kind-k8ssandra-2", "k8ssandra-operator", "dc2"),
        ("kind-k8ssandra-3", "k8ssandra-operator", "dc3")]
    first, second = dcs[0].object, dcs[1].object
    spec = first["spec"]
    assert spec["clusterName"] == "demo" and spec["serverType"] == "cassandra" and spec["size"] == 3
    assert spec["superuserSecretName"] == "demo-superuser" and "stopped" not in spec  # Go omits false
    assert spec["storageConfig"]["cassandraDataVolumeClaimSpec"]["resources"]["requests"]["storage"] == "5Gi"
    assert spec["config"]["cassandra-yaml"] == {"num_tokens": 16, "authenticator": "PasswordAuthenticator",
                                                "authorizer": "CassandraAuthorizer", "role_manager": "CassandraRoleManager"}
    opts = spec["config"]["cassandra-env-sh"]["additional-jvm-opts"]
    # The operator prepends each: system replication first, then allow_alter_rf (seen on its dc1).
    assert opts == ["-Dcassandra.allow_alter_rf_during_range_movement=true", "-Dcassandra.system_distributed_replication=dc1:3"]
    assert second["spec"]["config"]["cassandra-env-sh"]["additional-jvm-opts"] == [
        "-Dcassandra.allow_alter_rf_during_range_movement=true"]
    labels = first["metadata"]["labels"]
    assert labels["k8ssandra.io/cluster-name"] == "demo" and labels["k8ssandra.io/cluster-namespace"] == "k8ssandra-operator"
    assert labels["app.kubernetes.io/part-of"] == "k8ssandra"
    assert SKIP_USER_CREATION not in first["metadata"]["annotations"]
    assert second["metadata"]["annotations"][SKIP_USER_CREATION] == "true"
    # MCAC is enabled in the example: no disabling env var, the default metric filters instead.
    assert first["spec"]["podTemplateSpec"]["spec"]["containers"] == [
        {"name": "cassandra", "env": [{"name": "METRIC_FILTERS", "value": " ".join(DEFAULT_METRIC_FILTERS)}]}]


def test_hash_is_canonical_and_follows_changes():
    kc = load("k8ssandracluster-demo.yaml")
    a = build_datacenters(kc)[0]
    obj = copy.deepcopy(a.object)
    del obj["metadata"]["annotations"][HASH_ANNOTATION]
    assert a.resource_hash == canonical_hash(obj) == build_datacenters(copy.deepcopy(kc))[0].resource_hash
    kc["spec"]["cassandra"]["datacenters"][0]["size"] = 5
    changed = build_datacenters(kc)
    assert changed[0].resource_hash != a.resource_hash
    assert changed[1].resource_hash == build_datacenters(load("k8ssandracluster-demo.yaml"))[1].resource_hash


def test_cluster_and_datacenter_levels_merge():
    dcs = by_name(load("k8ssandracluster-overrides.yaml", "db"))
    east, west = dcs["east"].object, dcs["west"].object
    assert east["spec"]["clusterName"] == "Over Rides" and east["spec"]["superuserSecretName"] == "overrides-superuser"
    assert east["spec"]["datacenterName"] == "real-east" and "datacenterName" not in west["spec"]
    assert east["spec"]["serverImage"] == "example.invalid/cassandra:4.1.5"
    # racks merged by name: cluster order kept, dc values win, new racks appended
    assert west["spec"]["racks"] == [{"name": "r1", "nodeAffinityLabels": {"zone": "a"}},
                                     {"name": "r2", "nodeAffinityLabels": {"zone": "c"}}, {"name": "r3"}]
    assert east["spec"]["racks"][1] == {"name": "r2", "nodeAffinityLabels": {"zone": "b"}}
    assert west["spec"]["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    assert west["spec"]["config"]["cassandra-yaml"]["concurrent_reads"] == 32
    assert west["spec"]["config"]["cassandra-yaml"]["concurrent_writes"] == 64
    assert "concurrent_writes" not in east["spec"]["config"]["cassandra-yaml"]
    assert west["spec"]["config"]["jvm-server-options"] == {"initial_heap_size": 512000000, "max_heap_size": 512000000}
    assert west["spec"]["stopped"] is True and west["spec"]["size"] == 5
    # dc labels, then cluster-level labels on top; cluster annotations on top
    assert east["metadata"]["labels"]["region"] == "east" and east["metadata"]["labels"]["team"] == "storage"
    assert east["metadata"]["annotations"]["owner"] == "ops" and east["metadata"]["namespace"] == "db"
    # MCAC off by default (4.1.5 has the new metrics endpoint)
    env = east["spec"]["podTemplateSpec"]["spec"]["containers"][0]["env"]
    assert {"name": "MGMT_API_DISABLE_MCAC", "value": "true"} in env


def test_cassandra_3_defaults_and_auth_off():
    kc = load("k8ssandracluster-overrides.yaml")
    kc["spec"]["cassandra"]["serverVersion"] = "3.11.14"
    kc["spec"]["auth"] = False
    east = by_name(kc)["east"].object["spec"]["config"]
    assert east["cassandra-yaml"]["num_tokens"] == 256 and east["cassandra-yaml"]["start_rpc"] is False
    assert east["cassandra-yaml"]["authenticator"] == "AllowAllAuthenticator"
    assert east["jvm-options"]["max_heap_size"] == 512000000
    assert east["cassandra-env-sh"]["additional-jvm-opts"] == ["-Dcassandra.system_distributed_replication=real-east:1"]


def test_external_secrets_and_datacenters():
    kc = load("k8ssandracluster-demo.yaml")
    kc["spec"]["secretsProvider"] = "external"
    kc["spec"]["externalDatacenters"] = ["old-dc"]
    dc1 = build_datacenters(kc)[0].object
    assert dc1["spec"]["superuserSecretName"] == ""
    assert set(dc1["metadata"]["annotations"]) == {SKIP_USER_CREATION, HASH_ANNOTATION}
    assert "-Dcassandra.system_distributed_replication=dc1:3,old-dc:3" in dc1["spec"]["config"]["cassandra-env-sh"]["additional-jvm-opts"]


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["spec"]["cassandra"].pop("serverVersion"), "template.ServerVersion is required"),
    (lambda c: c["spec"]["cassandra"].pop("storageConfig"), "storageConfig is required"),
    (lambda c: c["spec"]["cassandra"].pop("telemetry"), r"datacenters dc1, dc2, dc3: the new metrics endpoint"),
    (lambda c: c["spec"]["cassandra"]["datacenters"][1]["metadata"].update(name="dc1"), "dc1 is listed more than once"),
    (lambda c: c["spec"].pop("cassandra"), "has no spec.cassandra"),
    (lambda c: c["spec"]["cassandra"].update(datacenters=[]), "lists no datacenters"),
    (lambda c: c["spec"]["cassandra"]["config"].update({"cassandraYaml": {"commitlog_sync_period_in_ms": 1,
                                                                          "commitlog_sync_batch_window_in_ms": 2}})
     if c["spec"]["cassandra"].get("config") else c["spec"]["cassandra"].update(config={"cassandraYaml": {
         "commitlog_sync_period_in_ms": 1, "commitlog_sync_batch_window_in_ms": 2}}), "mutually exclusive"),
])
def test_validation_errors(mutate, message):
    kc = load("k8ssandracluster-demo.yaml")
    mutate(kc)
    with pytest.raises(UsageError, match=message):
        build_datacenters(kc)


def test_helpers():
    assert quantity_bytes("512M") == 512_000_000 and quantity_bytes("1Gi") == 2**30 and quantity_bytes(64) == 64
    with pytest.raises(UsageError, match="not a Kubernetes quantity"):
        quantity_bytes("lots")
    assert cleanup_for_kubernetes("demo") == "demo"
    assert cleanup_for_kubernetes("E2E Test Cluster") == "e2etestcluster"
    assert cleanup_for_kubernetes("My_Cluster") == "my-cluster"
    assert merge({"a": 1, "b": {"c": 1}}, {"b": {"d": 2}, "e": False}) == {"a": 1, "b": {"c": 1, "d": 2}, "e": False}
    assert merge({"x": True}, {"x": False}) == {"x": False}  # an explicit false wins
    assert merge([1, 2], [3], "tolerations") == [3]  # lists are atomic unless keyed


def test_upstream_samples():
    docs = {name: next(yaml.safe_load_all((FIXTURES / f).read_text())) for name, f in UPSTREAM_SAMPLES.items()}
    with pytest.raises(UsageError, match="MCAC cannot be disabled"):
        build_datacenters(docs["docs-multi-cluster-3dc"])  # the documented demo, as the operator sees it today
    kind = build_datacenters(docs["k8ssandra-multi-kind"])
    assert [d.context for d in kind] == ["", "kind-k8ssandra-1"]  # dc1 runs in the control plane
    mixed = {d.name: d for d in build_datacenters(docs["fixture-multi-dc-mixed"])}
    assert mixed["dc2"].object["spec"]["datacenterName"] == "real-dc2"
    assert mixed["dc1"].object["spec"]["superuserSecretName"] == "e2etestcluster-superuser"
    overrides = docs["docs-cluster-dc-level-3dc-overrides"]
    overrides["spec"]["cassandra"]["telemetry"] = {"mcac": {"enabled": True}}
    dcs = {d.name: d.object["spec"] for d in build_datacenters(overrides)}
    dc1, dc3 = dcs["dc1"], dcs["dc3"]
    # The merges the operator's documentation lists for this example:
    assert dc3["serverVersion"] == "3.11.12" and dc1["serverVersion"] == "3.11.11"
    assert dc3["resources"] == {"requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": "2000m", "memory": "4Gi"}}
    assert dc3["allowMultipleNodesPerWorker"] is False and dc1["allowMultipleNodesPerWorker"] is True
    assert dc3["config"]["cassandra-yaml"]["commitlog_directory"] == "/var/lib/cassandra/commitlog"
    assert dc3["config"]["cassandra-yaml"]["concurrent_reads"] == 4
    assert dc3["config"]["jvm-options"] == {"initial_heap_size": 512_000_000, "max_heap_size": 1_024_000_000}
    assert [r["name"] for r in dc3["racks"]] == ["rack1", "rack2", "rack3"]
    assert dc3["racks"][0]["nodeAffinityLabels"] == {"topology.kubernetes.io/zone": "zone1",
                                                      "topology.kubernetes.io/region": "europe"}
    assert dc3["storageConfig"]["cassandraDataVolumeClaimSpec"]["storageClassName"] == "premium"
    assert dc3["storageConfig"]["cassandraDataVolumeClaimSpec"]["resources"]["requests"]["storage"] == "5Gi"
    assert dc3["networking"] == {"hostNetwork": False} and dc1["networking"] == {"hostNetwork": True}
    sidecar = next(c for c in dc3["podTemplateSpec"]["spec"]["containers"] if c["name"] == "my-sidecar")
    assert sidecar["image"] == "my-sidecar:v.1.2.3"
    assert sidecar["env"] == [{"name": "MY_SIDECAR_VAR", "valueFrom": {"secretKeyRef": {
        "name": "my-sidecar-secret", "key": "my-sidecar-secret-key"}}}]
    assert sidecar["volumeMounts"] == [{"mountPath": "/var/lib/my-sidecar", "name": "my-sidecar-data"}]
    pvc = next(v for v in dc3["storageConfig"]["additionalVolumes"] if v["name"] == "commitlog-vol")
    assert pvc["mountPath"] == "/var/lib/cassandra/commitlog" and pvc["pvcSpec"]["storageClassName"] == "premium"
    assert pvc["pvcSpec"]["accessModes"] == ["ReadWriteOnce"]
    cassandra = next(c for c in dc3["podTemplateSpec"]["spec"]["containers"] if c["name"] == "cassandra")
    assert {"name": "MANAGEMENT_API_HEAP_SIZE", "value": str(128 * 2**20)} in cassandra["env"]
    assert dc1["podTemplateSpec"]["spec"]["volumes"] == [{"name": "my-sidecar-data", "emptyDir": {}}]


# --- what the real operator writes (seen on its datacenters in the sandbox, tests/integration/test_fidelity.py)

def test_stopped_only_when_true():
    dcs = by_name(load("k8ssandracluster-overrides.yaml"))
    assert "stopped" not in dcs["east"].object["spec"] and dcs["west"].object["spec"]["stopped"] is True


def test_jvm_options_prepended_like_the_operator_and_replication_sorted():
    kc = load("k8ssandracluster-demo.yaml")
    kc["spec"]["cassandra"]["config"] = {"jvmOptions": {"additionalOptions": ["-Dmine=1"]}}
    kc["spec"]["externalDatacenters"] = ["b-ext", "a-ext"]
    opts = build_datacenters(kc)[0].object["spec"]["config"]["cassandra-env-sh"]["additional-jvm-opts"]
    assert opts == ["-Dcassandra.allow_alter_rf_during_range_movement=true",
                    "-Dcassandra.system_distributed_replication=a-ext:3,b-ext:3,dc1:3", "-Dmine=1"]
    # An option the user gives already is not repeated and keeps its place.
    kc["spec"]["cassandra"]["config"]["jvmOptions"]["additionalOptions"] = [
        "-Dmine=1", "-Dcassandra.allow_alter_rf_during_range_movement=true"]
    opts = build_datacenters(kc)[1].object["spec"]["config"]["cassandra-env-sh"]["additional-jvm-opts"]
    assert opts == ["-Dmine=1", "-Dcassandra.allow_alter_rf_during_range_movement=true"]


def test_metric_filters_env_only_with_mcac():
    kc = load("k8ssandracluster-demo.yaml")
    kc["spec"]["cassandra"]["mgmtAPIHeap"] = "64Mi"
    env = build_datacenters(kc)[0].object["spec"]["podTemplateSpec"]["spec"]["containers"][0]["env"]
    # Injected before NewDatacenter adds the heap: that order.
    assert env == [{"name": "METRIC_FILTERS", "value": " ".join(DEFAULT_METRIC_FILTERS)},
                   {"name": "MANAGEMENT_API_HEAP_SIZE", "value": str(64 * 2**20)}]
    kc["spec"]["cassandra"]["telemetry"]["mcac"]["metricFilters"] = ["allow:a", "deny:b"]
    env = build_datacenters(kc)[0].object["spec"]["podTemplateSpec"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "METRIC_FILTERS", "value": "allow:a deny:b"}
    env = by_name(load("k8ssandracluster-overrides.yaml"))["east"].object["spec"]["podTemplateSpec"]["spec"]
    assert all(e["name"] != "METRIC_FILTERS" for e in env["containers"][0]["env"])


def test_cassandra_container_comes_after_the_users_containers():
    kc = load("k8ssandracluster-demo.yaml")
    kc["spec"]["cassandra"]["containers"] = [{"name": "sidecar", "image": "s:1"}]
    containers = build_datacenters(kc)[0].object["spec"]["podTemplateSpec"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["sidecar", "cassandra"]


def test_metrics_agent_volume_names_the_operators_config_map():
    dcs = by_name(load("k8ssandracluster-overrides.yaml"))
    # clusterName "Over Rides" and datacenterName real-east, cleaned up as one name.
    volumes = dcs["east"].object["spec"]["storageConfig"]["additionalVolumes"]
    assert volumes[-1] == {"name": "metrics-agent-config", "mountPath": "/opt/management-api/configs",
                           "volumeSource": {"configMap": {"name": "overrides-real-east-metrics-agent-config",
                                                          "items": [{"key": "metrics-collector.yaml",
                                                                     "path": "metrics-collector.yaml"}]}}}
    assert dcs["west"].object["spec"]["storageConfig"]["additionalVolumes"][-1]["volumeSource"]["configMap"]["name"] \
        == "overrides-west-metrics-agent-config"


def test_service_config_always_labels_the_all_pods_service():
    kc = load("k8ssandracluster-demo.yaml", "db")
    assert build_datacenters(kc)[0].object["spec"]["additionalServiceConfig"] == {
        "allpodsService": {"additionalLabels": {"k8ssandra.io/cluster-name": "demo", "k8ssandra.io/cluster-namespace": "db"}}}
    kc["spec"]["cassandra"]["metadata"] = {"services": {
        "allPodsService": {"labels": {"k8ssandra.io/cluster-name": "spoof", "a": "1"}},
        "dcService": {"annotations": {"b": "2"}}}}
    assert build_datacenters(kc)[0].object["spec"]["additionalServiceConfig"] == {
        "dcService": {"additionalAnnotations": {"b": "2"}},
        "allpodsService": {"additionalLabels": {"a": "1", "k8ssandra.io/cluster-name": "demo",
                                                "k8ssandra.io/cluster-namespace": "db"}}}


def test_jvm_options_go_where_the_operators_struct_tags_send_them():
    """gc goes to jvm11-server-options from Cassandra 4 on; heapNewGenSize is CMS's young generation,
    a 3.11-only option (seen on the operator's datacenter for the multi-dc-mixed fixture)."""
    kc = load("k8ssandracluster-demo.yaml")
    kc["spec"]["cassandra"]["serverVersion"] = "4.0.17"
    kc["spec"]["cassandra"]["config"] = {"jvmOptions": {
        "heapSize": "512Mi", "heapNewGenSize": "256Mi", "gc": "CMS", "vm_enable_non_root_thread_priority": True,
        "additionalJvm11ServerOptions": ["-Dx=1"]}}
    config = build_datacenters(kc)[0].object["spec"]["config"]
    assert config["jvm-server-options"] == {"initial_heap_size": 2**29, "max_heap_size": 2**29}
    assert config["jvm11-server-options"] == {"garbage_collector": "CMS", "additional-jvm-opts": ["-Dx=1"]}
    kc["spec"]["cassandra"]["serverVersion"] = "3.11.14"
    config = build_datacenters(kc)[0].object["spec"]["config"]
    assert config["jvm-options"] == {"initial_heap_size": 2**29, "max_heap_size": 2**29, "garbage_collector": "CMS",
                                     "heap_size_young_generation": 2**28, "thread_priority_policy_42": True}
    assert config["jvm11-server-options"] == {"additional-jvm-opts": ["-Dx=1"]}


def test_vector_adds_the_system_logger_its_resources_and_its_volume():
    kc = load("k8ssandracluster-demo.yaml")
    kc["spec"]["cassandra"]["clusterName"] = "E2E Test"
    kc["spec"]["cassandra"]["telemetry"]["vector"] = {"enabled": True}
    spec = build_datacenters(kc)[0].object["spec"]
    assert [c["name"] for c in spec["podTemplateSpec"]["spec"]["containers"]] == ["cassandra", "server-system-logger"]
    assert spec["systemLoggerResources"] == {"requests": {"cpu": "200m", "memory": "128Mi"},
                                             "limits": {"cpu": "2", "memory": "2Gi"}}
    assert [v["name"] for v in spec["storageConfig"]["additionalVolumes"]] == ["vector-config", "metrics-agent-config"]
    assert spec["storageConfig"]["additionalVolumes"][0] == {
        "name": "vector-config", "mountPath": "/etc/vector", "volumeSource": {"configMap": {"name": "e2etest-dc1-cass-vector"}}}
    kc["spec"]["cassandra"]["telemetry"]["vector"] |= {"image": "vector:1", "resources": {"limits": {"cpu": "1"}}}
    spec = build_datacenters(kc)[0].object["spec"]
    assert spec["podTemplateSpec"]["spec"]["containers"][1] == {"name": "server-system-logger", "image": "vector:1"}
    assert spec["systemLoggerResources"] == {"limits": {"cpu": "1"}}
    del kc["spec"]["cassandra"]["telemetry"]["vector"]
    spec = build_datacenters(kc)[0].object["spec"]
    assert "systemLoggerResources" not in spec and len(spec["podTemplateSpec"]["spec"]["containers"]) == 1


def test_metrics_agent_config_map_is_the_operators():
    kc = load("k8ssandracluster-demo.yaml")
    kc["spec"]["cassandra"]["metadata"] = {"commonLabels": {"team": "db", "k8ssandra.io/cluster-name": "spoof"},
                                           "commonAnnotations": {"note": "x"}}
    agent = build_datacenters(kc)[0].agent_config
    assert agent["metadata"]["name"] == "demo-dc1-metrics-agent-config" and agent["metadata"]["namespace"] == "k8ssandra-operator"
    # The cluster's common labels, under the operator's own (which win).
    assert agent["metadata"]["labels"] == {"team": "db", "k8ssandra.io/cleaned-up-by": "k8ssandracluster-controller",
                                           "k8ssandra.io/cluster-name": "demo",
                                           "k8ssandra.io/cluster-namespace": "k8ssandra-operator"}
    assert agent["metadata"]["annotations"]["note"] == "x" and HASH_ANNOTATION in agent["metadata"]["annotations"]
    text = agent["data"]["metrics-collector.yaml"]
    # sigs.k8s.io/yaml's form: sorted keys, unindented lists, double quotes (seen byte for byte on the operator's).
    assert text.startswith('relabels:\n- regex: .+\n  replacement: "true"\n  sourceLabels:\n  - table\n  targetLabel: should_drop\n')
    assert text.endswith('- action: drop\n  regex: "true"\n  sourceLabels:\n  - should_drop\n')
    assert yaml.safe_load(text)["relabels"][1]["regex"] == "org_apache_cassandra_metrics_table_live_ss_table_count"
    kc["spec"]["cassandra"]["telemetry"]["cassandra"] = {"endpoint": {"port": "9000"}}
    assert yaml.safe_load(build_datacenters(kc)[0].agent_config["data"]["metrics-collector.yaml"])["endpoint"] == {"port": "9000"}


def test_superuser_secret_and_its_copies():
    from k8sctl.datacenters import (
        replicated_superuser_secret,
        secret_data_hash,
        superuser_secret,
        superuser_secret_name,
    )

    kc = load("k8ssandracluster-overrides.yaml")
    kc["metadata"]["uid"] = "u-1"
    assert superuser_secret_name(kc) == "overrides-superuser"  # "Over Rides", cleaned up
    source = superuser_secret(kc, "pw-0123456789")
    assert source["data"] == {"username": "b3ZlcnJpZGVzLXN1cGVydXNlcg==", "password": "cHctMDEyMzQ1Njc4OQ=="}
    assert source["metadata"]["labels"] == {"k8ssandra.io/replicated-by": "k8ssandracluster-controller",
                                            "k8ssandra.io/cluster-name": "overrides",
                                            "k8ssandra.io/cluster-namespace": "k8ssandra-operator"}
    assert source["metadata"]["ownerReferences"][0]["uid"] == "u-1" and source["type"] == "Opaque"
    source["metadata"]["annotations"] = {"k8ssandra.io/resource-hash": "h", "cassandra.datastax.com/x": "y", "keep": "z"}
    copy_ = replicated_superuser_secret(source, kc, "db")
    assert copy_["metadata"]["namespace"] == "db" and "ownerReferences" not in copy_["metadata"]
    assert copy_["metadata"]["labels"]["k8ssandra.io/replicated-secret-name"] == "k8ssandra-operator.overrides"
    assert copy_["metadata"]["annotations"] == {"keep": "z", HASH_ANNOTATION: secret_data_hash(source["data"])}
    assert copy_["data"] == source["data"]
    kc["spec"]["secretsProvider"] = "external"
    assert superuser_secret_name(kc) is None


def test_secret_data_hash_is_the_operators():
    """go-spew's `%#v` of map[string][]byte, as the operator's replication hashes a Secret (checked
    against its annotation on a Secret it made: tests/integration/test_fidelity.py)."""
    import base64 as b64
    import hashlib

    from k8sctl.datacenters import secret_data_hash

    data = {"username": b64.b64encode(b"ab").decode(), "password": b64.b64encode(b"c").decode()}
    # The dump go-spew v1.1.2 printed for this map (a probe run once with the operator's go-spew).
    dump = "(map[string][]uint8)map[password:[99] username:[97 98]]"
    assert secret_data_hash(data) == b64.b64encode(hashlib.sha256(dump.encode()).digest()).decode()


def test_config_map_hash_follows_go_spew():
    """The dump go-spew v1.1.2 printed for this *v1.ConfigMap (k8s.io/api v0.35.5; a probe run once
    with the operator's modules); the operator's own annotation is compared in test_fidelity.py."""
    import base64 as b64
    import hashlib

    from k8sctl.datacenters import config_map_hash

    dump = ('(*v1.ConfigMap){TypeMeta:(v1.TypeMeta){Kind:(string) APIVersion:(string)} ObjectMeta:(v1.ObjectMeta){'
            'Name:(string)n GenerateName:(string) Namespace:(string)ns SelfLink:(string) UID:(types.UID) '
            'ResourceVersion:(string) Generation:(int64)0 CreationTimestamp:(v1.Time){Time:(time.Time){wall:(uint64)0 '
            'ext:(int64)0 loc:(*time.Location)<nil>}} DeletionTimestamp:(*v1.Time)<nil> '
            'DeletionGracePeriodSeconds:(*int64)<nil> Labels:(map[string]string)map[l:v] '
            'Annotations:(map[string]string)<nil> OwnerReferences:([]v1.OwnerReference)<nil> Finalizers:([]string)<nil> '
            'ManagedFields:([]v1.ManagedFieldsEntry)<nil>} Immutable:(*bool)<nil> Data:(map[string]string)map[k:a\nb "q"] '
            'BinaryData:(map[string][]uint8)<nil>}')
    cm = {"metadata": {"name": "n", "namespace": "ns", "labels": {"l": "v"}}, "data": {"k": 'a\nb "q"'}}
    assert config_map_hash(cm, None) == b64.b64encode(hashlib.sha256(dump.encode()).digest()).decode()
