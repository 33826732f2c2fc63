"""Issue 8's security rules on real API servers: stored kubeconfigs are data, what is written is
what is verified, nothing is left half-written, and no credential reaches any output."""
from __future__ import annotations

import base64
import json
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from k8sctl import clientconfigs, kube
from k8sctl import kubeconfig as kc
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.cli import app
from k8sctl_sandbox import crds_and_identity
from tests import leakguard

from .conftest import wait_for

NS = crds_and_identity.OPERATOR_NAMESPACE
FIXTURES = Path(__file__).parent.parent / "fixtures"
CC = clientconfig_api.resource("v1beta1")


@pytest.fixture
def uid():
    return uuid.uuid4().hex[:6]


def create(sandbox, *args: str, src: int = 1, dest: int = 0, dest_kubeconfig: str | None = None):
    argv = ["create-clientconfig", "--src-kubeconfig", sandbox.clusters[src].kubeconfig,
            "--dest-kubeconfig", dest_kubeconfig or sandbox.clusters[dest].kubeconfig, *args]
    if "--server" not in args:
        argv += ["--in-cluster-kubeconfig", sandbox.clusters[src].in_cluster_kubeconfig]
    return CliRunner().invoke(app, argv)


def reconcile(sandbox, name: str, *args: str):
    return CliRunner().invoke(app, ["reconcile", name, "--kubeconfig", sandbox.clusters[0].kubeconfig, "-o", "json",
                                    "--no-gate", *args])


def remove(admin: kube.KubeClient, *objects: tuple[kube.Resource, str]) -> None:
    for resource, name in objects:
        try:
            admin.delete(resource, name, NS)
        except kube.NotFound:
            pass


def stored_secret(name: str, doc: dict | str) -> dict:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {"kubeconfig": base64.b64encode(text.encode()).decode()}}


def one_dc_cluster(name: str, context: str) -> dict:
    doc = yaml.safe_load((FIXTURES / "k8ssandracluster-demo.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": NS}
    doc["spec"]["cassandra"]["datacenters"] = [{"metadata": {"name": f"{name}-dc1"}, "k8sContext": context, "size": 1}]
    return doc


def test_a_hostile_clientconfig_never_runs_code_and_a_pasted_token_works(sandbox, admins, uid, tmp_path):
    """A stored kubeconfig with an exec plugin: refused with its reason, the command never runs, and
    runs that do not need it are not affected. A token with a trailing newline is cleaned, not leaked."""
    marker = tmp_path / "exec-ran"
    good, evil, pasted = f"good-{uid}", f"evil-{uid}", f"pasted-{uid}"
    objects = [(CC, n) for n in (good, evil, pasted)] + [(kube.SECRET, f"{n}-config") for n in (good, evil, pasted)]
    objects += [(k8c.RESOURCE, n) for n in (f"a{uid}", f"b{uid}", f"c{uid}")]
    try:
        r = create(sandbox, "--name", good, "--context-name", f"ctx-{good}")
        assert r.exit_code == 0, r.output
        stored = yaml.safe_load(base64.b64decode(admins[0].get(kube.SECRET, f"{good}-config", NS)["data"]["kubeconfig"]))
        hostile = json.loads(json.dumps(stored))
        hostile["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh",
                                                "args": ["-c", f"touch {marker}"]}}
        hostile["contexts"][0]["name"] = hostile["current-context"] = f"ctx-{evil}"
        admins[0].apply(kube.SECRET, stored_secret(f"{evil}-config", hostile))
        admins[0].apply(CC, clientconfigs.clientconfig_manifest(evil, NS, "v1beta1", f"ctx-{evil}", f"{evil}-config"))
        newline = json.loads(json.dumps(stored))
        newline["users"][0]["user"]["token"] += "\n"
        newline["contexts"][0]["name"] = newline["current-context"] = f"ctx-{pasted}"
        admins[0].apply(kube.SECRET, stored_secret(f"{pasted}-config", newline))
        admins[0].apply(CC, clientconfigs.clientconfig_manifest(pasted, NS, "v1beta1", f"ctx-{pasted}", f"{pasted}-config"))

        admins[0].apply(k8c.RESOURCE, one_dc_cluster(f"a{uid}", f"ctx-{good}"), force=True)
        for extra in (["--dry-run"], []):
            r = reconcile(sandbox, f"a{uid}", *extra)
            assert r.exit_code == 0, r.output
        assert admins[1].get_or_none(cdc.RESOURCE, f"a{uid}-dc1", NS) is not None

        admins[0].apply(k8c.RESOURCE, one_dc_cluster(f"b{uid}", f"ctx-{evil}"), force=True)
        r = reconcile(sandbox, f"b{uid}")
        assert r.exit_code == 1
        assert f"ClientConfig {evil} is broken" in r.output and "'exec', which runs a command" in r.output
        assert "Traceback" not in r.output

        admins[0].apply(k8c.RESOURCE, one_dc_cluster(f"c{uid}", f"ctx-{pasted}"), force=True)
        r = reconcile(sandbox, f"c{uid}")
        assert r.exit_code == 0, r.output
        assert [d["action"] for d in json.loads(r.stdout)["datacenters"]] == ["created"]
        assert not marker.exists(), "a command from a stored kubeconfig ran"
    finally:
        remove(admins[0], *objects)
        remove(admins[1], *[(cdc.RESOURCE, f"{p}{uid}-dc1") for p in "abc"])


def test_the_stored_server_is_what_is_verified(sandbox, admins, uid):
    name = f"v-{uid}"
    try:
        # Nothing listens there: the stored kubeconfig could never work from here.
        r = create(sandbox, "--name", name, "--server", "https://127.0.0.1:1")
        assert r.exit_code == 1 and "cannot be reached from here" in r.output and "--no-verify-server" in r.output
        # Another cluster's address: its CA does not match, so it is not this cluster.
        r = create(sandbox, "--name", name, "--server", sandbox.clusters[2].server)
        assert r.exit_code == 1 and "is not the API server of kind-k8ssandra-1" in r.output, r.output
        for result in (r,):
            assert len(result.output.strip().splitlines()) == 1
        assert admins[0].get_or_none(kube.SECRET, f"{name}-config", NS) is None
        assert admins[0].get_or_none(CC, name, NS) is None
        # The narrower skip: credentials checked through the source's own address, with a warning.
        r = create(sandbox, "--name", name, "--server", "https://127.0.0.1:1", "--no-verify-server", "-o", "json")
        assert r.exit_code == 0, r.output
        reg = json.loads(r.stdout)["registrations"][0]
        assert reg["verifiedAt"] == sandbox.clusters[1].server and reg["server"] == "https://127.0.0.1:1"
        assert "warning: kind-k8ssandra-1: --no-verify-server" in r.stderr
    finally:
        remove(admins[0], (CC, name), (kube.SECRET, f"{name}-config"))


def test_an_unmanaged_secret_is_not_taken_over_without_force(sandbox, admins, uid):
    name = f"m-{uid}"
    admins[0].apply(kube.SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-config",
                                  "namespace": NS}, "data": {"kubeconfig": base64.b64encode(b"someone else's").decode()}})
    try:
        r = create(sandbox, "--name", name)
        assert r.exit_code == 2 and "not managed by k8sctl" in r.output and "--force" in r.output
        assert base64.b64decode(admins[0].get(kube.SECRET, f"{name}-config", NS)["data"]["kubeconfig"]) == b"someone else's"
        assert admins[0].get_or_none(CC, name, NS) is None
        r = create(sandbox, "--name", name, "--force", "-o", "json")
        assert r.exit_code == 0, r.output
        assert [o["action"] for o in json.loads(r.stdout)["registrations"][0]["objects"]] == ["updated", "created"]
    finally:
        remove(admins[0], (CC, name), (kube.SECRET, f"{name}-config"))


def _restricted_dest_kubeconfig(admin: kube.KubeClient, dest_server: str, ca_data: str, uid: str, path: Path) -> str:
    """A control-plane user that may write Secrets but not ClientConfigs (a Role without clientconfigs patch),
    nor list them: create-clientconfig then reads its ClientConfig with a GET (without the check of a
    second ClientConfig naming the same context)."""
    sa = f"limited-{uid}"
    admin.create(kube.SERVICEACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}, NS)
    admin.apply(kube.ROLE, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                            "metadata": {"name": sa, "namespace": NS},
                            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "delete"]},
                                      {"apiGroups": ["config.k8ssandra.io"], "resources": ["clientconfigs"], "verbs": ["get"]}]})
    admin.apply(kube.ROLEBINDING, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                   "metadata": {"name": sa, "namespace": NS},
                                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
                                   "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS}]})
    token = admin.request("POST", kube.SERVICEACCOUNT.path(NS, sa, "token"),
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})["status"]["token"]
    leakguard.add(token)
    doc = kc.build_kubeconfig(cluster_name="cp", server=dest_server, ca_pem=base64.b64decode(ca_data),
                              user_name=sa, token=token, context_name="limited")
    kc.write_private(path, kc.dump(doc))
    with kube.KubeClient(doc, "limited") as client:
        _wait_role_in_effect(client, [kube.SECRET, CC])
    return sa


def _wait_role_in_effect(client: kube.KubeClient, resources: list[kube.Resource], timeout: float = 30.0) -> None:
    """Until a GET the new Role allows is answered as allowed (404 for a name that does not exist)
    rather than 403: the API server's RBAC authorizer sees new Roles and RoleBindings through
    its own cache, a moment later on a slow machine (as test_sandbox's test_rbac_denies_then_allows)."""
    def allowed() -> bool:
        for resource in resources:
            try:
                client.get_or_none(resource, f"absent-{uuid.uuid4().hex[:8]}", NS)
            except kube.ApiError as e:
                if e.status not in (401, 403):  # 401: the new service account not yet seen either
                    raise
                return False
        return True

    wait_for(f"the Role of {client.context!r} in effect", allowed, timeout=timeout)


def test_a_refused_clientconfig_write_leaves_no_secret_behind(sandbox, admins, uid, tmp_path):
    dest_doc = kc.read_file(Path(sandbox.clusters[0].kubeconfig))
    limited = tmp_path / "limited.yaml"
    name, sa = f"h-{uid}", f"limited-{uid}"  # sa: the helper's service account, Role and RoleBinding
    try:
        _restricted_dest_kubeconfig(admins[0], sandbox.clusters[0].server,
                                    dest_doc["clusters"][0]["cluster"]["certificate-authority-data"], uid, limited)
        r = create(sandbox, "--name", name, dest_kubeconfig=str(limited))
        assert r.exit_code == 1 and "403" in r.output and "deleted again" in r.output, r.output
        assert "PATCH" in r.output and "clientconfigs" in r.output  # the write refused, not the read
        assert admins[0].get_or_none(kube.SECRET, f"{name}-config", NS) is None
    finally:
        # The ClientConfig too: written by mistake, it would name kind-k8ssandra-1 for every later test.
        remove(admins[0], (kube.SERVICEACCOUNT, sa), (kube.ROLE, sa), (kube.ROLEBINDING, sa),
               (CC, name), (kube.SECRET, f"{name}-config"))


def test_parallel_first_runs_share_one_new_token_secret(sandbox, admins, namespace_factory):
    """Two runs at once for a service account without a token Secret: both succeed (AlreadyExists is success).
    Each registers under its own context name: two ClientConfigs naming one context are refused
    (whichever run lists them second), which is not what this is about."""
    ns = namespace_factory(2, prefix="race")  # cluster 2: its token controller runs (another test stops 4's)
    admins[2].create(kube.SERVICEACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}}, ns)
    results, errors = [], []

    def one(i: int) -> None:
        try:
            opts = clientconfigs.CreateOptions(
                src_kubeconfig=Path(sandbox.clusters[2].kubeconfig), dest_kubeconfig=[Path(sandbox.clusters[1].kubeconfig)],
                src_namespace=ns, dest_namespace=NS, serviceaccount="op", name=f"race{i}", context_name=f"race{i}",
                in_cluster_kubeconfig=Path(sandbox.clusters[2].in_cluster_kubeconfig))
            done = clientconfigs.complete(opts, {})
            clientconfigs.validate(done)
            results.append(clientconfigs.run(done))
        except Exception as e:  # collected: the assertion below names it
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in (1, 2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    try:
        assert errors == [] and len(results) == 2
        assert {r.registrations[0].token_secret for r in results} == {"op-token"}
    finally:
        for i in (1, 2):
            remove(admins[1], (CC, f"race{i}"), (kube.SECRET, f"race{i}-config"))


def test_a_requested_token_is_kept_while_fresh(sandbox, admins, uid):
    name = f"tr-{uid}"
    try:
        r = create(sandbox, "--name", name, "--token-source", "request", "-o", "json")
        assert r.exit_code == 0, r.output
        kube.STATS.reset()
        r = create(sandbox, "--name", name, "--token-source", "request", "-o", "json")
        doc = json.loads(r.stdout)
        assert [o["action"] for o in doc["registrations"][0]["objects"]] == ["unchanged", "unchanged"]
        assert doc["restartsOperator"] is False and kube.STATS.by_method.get("PATCH", 0) == 0
    finally:
        remove(admins[0], (CC, name), (kube.SECRET, f"{name}-config"))


def test_ipv6_servers_and_brackets_print_as_themselves(sandbox, admins, uid):
    name = f"six-{uid}"
    r = create(sandbox, "--name", name, "--server", "https://[fd00::5]:6443", "--no-verify-server", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "https://[fd00::5]:6443" in r.stdout


def test_the_users_own_kubeconfig_keeps_exec_plugins(sandbox, admins, tmp_path):
    """EKS, GKE and AKS kubeconfigs need exec plugins: a trusted file still gets the kubernetes loader."""
    token = base64.b64decode(admins[1].get(kube.SECRET, "k8ssandra-operator-token", NS)["data"]["token"]).decode()
    credential = json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                             "status": {"token": token}})
    plugin = tmp_path / "plugin.sh"
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{credential}\nEOF\n")
    plugin.chmod(0o700)
    doc = kc.read_file(Path(sandbox.clusters[1].kubeconfig))
    doc["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                                        "interactiveMode": "Never"}}
    with kube.KubeClient(doc, doc["current-context"]) as client:
        assert client.whoami() == "system:serviceaccount:k8ssandra-operator:k8ssandra-operator"


def test_inline_kubeconfigs_do_not_import_the_kubernetes_package(sandbox):
    import subprocess
    import sys

    code = ("import sys\nfrom pathlib import Path\nfrom k8sctl import kube, kubeconfig as kc\n"
            f"doc = kc.read_file(Path({sandbox.clusters[1].kubeconfig!r}))\n"
            "c = kube.KubeClient(doc, doc['current-context'])\nprint(c.whoami())\n"
            "print('kubernetes' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["admin", "False"]  # the sandbox admin's certificate is CN=admin


def test_no_credentials_and_a_failing_exec_plugin_are_named(sandbox, tmp_path):
    doc = kc.read_file(Path(sandbox.clusters[1].kubeconfig))
    doc["users"][0]["user"] = {}
    path = tmp_path / "anonymous.yaml"
    kc.write_private(path, kc.dump(doc))
    r = CliRunner().invoke(app, ["reconcile", "x", "--kubeconfig", str(path)])
    assert r.exit_code == 1 and "the context has no credentials" in r.output, r.output
    doc["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "false",
                                        "interactiveMode": "Never"}}
    kc.write_private(path, kc.dump(doc))
    r = CliRunner().invoke(app, ["reconcile", "x", "--kubeconfig", str(path)])
    assert r.exit_code == 1 and "did its exec plugin fail?" in r.output, r.output
    assert "ERROR:root" not in r.output and r.output.count("error:") == 1


def test_insecure_kubeconfig_gives_one_warning_of_ours(sandbox, tmp_path):
    """The user's own kubeconfig may turn verification off: one warning line, not urllib3's per request."""
    doc = kc.read_file(Path(sandbox.clusters[1].kubeconfig))
    del doc["clusters"][0]["cluster"]["certificate-authority-data"]
    doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    path = tmp_path / "insecure.yaml"
    kc.write_private(path, kc.dump(doc))
    r = CliRunner().invoke(app, ["reconcile", "nope", "--kubeconfig", str(path)])
    assert r.exit_code == 2 and "not found" in r.output
    assert r.stderr.count("warning: TLS verification is off") == 1 and "InsecureRequestWarning" not in r.output
