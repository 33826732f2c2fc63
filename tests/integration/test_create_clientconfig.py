"""create-clientconfig against real API servers (sandbox clusters 0..5, see conftest)."""
from __future__ import annotations

import base64
import json
import stat
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from k8sctl import clientconfigs, kube
from k8sctl import kubeconfig as kc
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.cli import app
from k8sctl_sandbox import crds_and_identity
from tests.sockets import silent_server

from .conftest import BARE, V1ALPHA1

OPERATOR_NS = crds_and_identity.OPERATOR_NAMESPACE


class Runner:
    """create-clientconfig between sandbox clusters (every output is checked by the session's leak guard).

    Each call remembers the registration it could write (destination cluster, namespace, name),
    whether it is meant to or not: `cli` removes them all when the test ends, however it ends.
    """

    def __init__(self, sandbox, tmp_path):
        self.sandbox, self.tmp = sandbox, tmp_path
        self.runner = CliRunner()
        self.written: list[tuple[int, str, str]] = []

    def kubeconfig(self, i: int) -> str:
        return self.sandbox.clusters[i].kubeconfig

    def __call__(self, *args: str, src: int = 1, dest: int = 0, in_cluster: bool = True):
        self._remember(args, src, dest)
        argv = ["create-clientconfig", "--dest-kubeconfig", self.kubeconfig(dest)]
        if src is not None:
            argv += ["--src-kubeconfig", self.kubeconfig(src)]
            if in_cluster and "--server" not in args:
                argv += ["--in-cluster-kubeconfig", self.sandbox.clusters[src].in_cluster_kubeconfig]
        return self.runner.invoke(app, argv + list(args))

    def _remember(self, args: tuple[str, ...], src: int | None, dest: int) -> None:
        def flag(*names: str) -> str | None:
            for i, a in enumerate(args[:-1]):
                if a in names:
                    return args[i + 1]
            return None

        name = flag("--name") or (clientconfigs.sanitize_name(self.sandbox.clusters[src].context)
                                  if src is not None else None)
        ns = flag("--dest-namespace") or flag("-n", "--namespace") or OPERATOR_NS
        if name and (dest, ns, name) not in self.written:
            self.written.append((dest, ns, name))


@pytest.fixture
def cli(sandbox, admins, tmp_path):
    runner = Runner(sandbox, tmp_path)
    yield runner
    # Also after a failed assertion: a ClientConfig left for a context makes every later registration
    # of that context under another name fail ("already names context"), in this file and in others.
    failures = []
    for dest, ns, name in reversed(runner.written):
        try:
            cleanup(admins[dest], name, ns, version="v1alpha1" if dest == V1ALPHA1 else "v1beta1")
        except kube.ClusterError as e:  # the others are still removed
            failures.append(e)
    if failures:
        raise failures[0]


def as_json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def actions(doc: dict, i: int = 0) -> list[str]:
    return [o["action"] for o in doc["registrations"][i]["objects"]]


def cleanup(admin: kube.KubeClient, name: str, ns: str = OPERATOR_NS, version: str = "v1beta1") -> None:
    for resource, n in ((clientconfig_api.resource(version), name), (kube.SECRET, f"{name}-config")):
        try:
            admin.delete(resource, n, ns)
        except kube.NotFound:
            pass


def test_full_flow_with_legacy_token_secret(cli, sandbox, admins, tmp_path):
    out = tmp_path / "artifacts"
    doc = as_json(cli("--output-dir", str(out), "-o", "json", "--name", "legacy-flow"))
    reg = doc["registrations"][0]
    assert actions(doc) == ["created", "created"]
    assert reg["k8sContext"] == "kind-k8ssandra-1" and reg["tokenSecret"] == "k8ssandra-operator-token"
    assert reg["identity"] == "system:serviceaccount:k8ssandra-operator:k8ssandra-operator"
    assert reg["authorized"] is True and reg["caSource"] == "token Secret ca.crt"
    assert doc["restartsOperator"] is True and "exits" in doc["operatorNote"]
    assert reg["verifiedAt"] == reg["server"]  # the stored kubeconfig itself was checked

    cc = admins[0].get(clientconfig_api.resource("v1beta1"), "legacy-flow", OPERATOR_NS)
    assert cc["spec"] == {"contextName": "kind-k8ssandra-1", "kubeConfigSecret": {"name": "legacy-flow-config"}}
    assert cc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "k8sctl"
    assert any(m["manager"] == "k8sctl" and m["operation"] == "Apply" for m in cc["metadata"]["managedFields"])
    secret = admins[0].get(kube.SECRET, "legacy-flow-config", OPERATOR_NS)
    stored = yaml.safe_load(base64.b64decode(secret["data"]["kubeconfig"]))
    # Exactly one cluster, user and context; bearer token only; the operator's context name.
    assert [len(stored[k]) for k in ("clusters", "users", "contexts")] == [1, 1, 1]
    assert list(stored["users"][0]["user"]) == ["token"]
    assert stored["users"][0]["name"] == "kind-k8ssandra-1-k8ssandra-operator"
    assert stored["current-context"] == stored["contexts"][0]["name"] == "kind-k8ssandra-1"
    assert "insecure-skip-tls-verify" not in stored["clusters"][0]["cluster"]
    # What the operator will do: build a client from the Secret and talk to the data plane as its SA.
    op = kube.KubeClient(stored, cc["spec"]["contextName"])
    assert op.whoami() == "system:serviceaccount:k8ssandra-operator:k8ssandra-operator"
    assert isinstance(op.list(cdc.RESOURCE, OPERATOR_NS), list)  # allowed: no 403

    files = {p.name: p for p in out.iterdir()}
    assert set(files) == {"legacy-flow.kubeconfig", "legacy-flow-secret.yaml", "legacy-flow-clientconfig.yaml"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    assert yaml.safe_load(files["legacy-flow.kubeconfig"].read_text()) == stored
    assert "redacted" in files["legacy-flow-secret.yaml"].read_text()


def test_rerun_is_a_noop_that_writes_nothing(cli, admins):
    first = as_json(cli("-o", "json", "--name", "rerun"))
    before = admins[0].get(kube.SECRET, "rerun-config", OPERATOR_NS)["metadata"]["resourceVersion"]
    kube.STATS.reset()
    second = as_json(cli("-o", "json", "--name", "rerun"))
    assert actions(first) == ["created", "created"]
    assert actions(second) == ["unchanged", "unchanged"]
    assert second["changed"] is False and second["restartsOperator"] is False and second["operatorNote"] is None
    assert kube.STATS.by_method.get("PATCH", 0) == 0 and kube.STATS.by_method.get("PUT", 0) == 0
    assert admins[0].get(kube.SECRET, "rerun-config", OPERATOR_NS)["metadata"]["resourceVersion"] == before


def test_a_context_already_registered_under_another_name_is_refused(cli, admins):
    """Two ClientConfigs naming one context: the operator keeps either (a map by context name)
    and k8sctl's client cache neither. The second is refused before anything is written."""
    as_json(cli("-o", "json", "--name", "first-name"))
    kube.STATS.reset()
    r = cli("-o", "json", "--name", "second-name")
    assert r.exit_code == 2
    assert "ClientConfig k8ssandra-operator/first-name" in r.stderr and "already names context 'kind-k8ssandra-1'" \
        in r.stderr and "--context-name" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert kube.STATS.writes == 2  # the verification's two reviews: nothing stored
    assert admins[0].get_or_none(kube.SECRET, "second-name-config", OPERATOR_NS) is None
    # Under its own context name it is another registration, and allowed.
    doc = as_json(cli("-o", "json", "--name", "second-name", "--context-name", "second-context"))
    assert actions(doc) == ["created", "created"]


def test_token_request_and_rotation_update_in_place(cli, admins):
    as_json(cli("-o", "json", "--name", "rotate"))
    secret = admins[0].get(kube.SECRET, "rotate-config", OPERATOR_NS)
    uid, rv = secret["metadata"]["uid"], secret["metadata"]["resourceVersion"]
    absent = []
    stop = threading.Event()

    def watch_presence():  # the Secret must never be absent while it is rotated
        while not stop.is_set():
            if admins[0].get_or_none(kube.SECRET, "rotate-config", OPERATOR_NS) is None:
                absent.append(time.monotonic())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_presence)
    watcher.start()
    try:
        kube.STATS.reset()
        doc = as_json(cli("-o", "json", "--name", "rotate", "--token-source", "request", "--token-duration", "3600"))
    finally:
        stop.set()
        watcher.join()
    # The ClientConfig's recorded token source changes too (an annotation: the operator ignores it).
    assert actions(doc) == ["updated", "updated"]
    assert admins[0].get(clientconfig_api.resource("v1beta1"), "rotate", OPERATOR_NS)["metadata"]["annotations"][
        "k8sctl/token-source"] == "request"
    assert doc["registrations"][0]["tokenExpiry"]
    assert absent == [] and kube.STATS.by_method.get("DELETE", 0) == 0
    after = admins[0].get(kube.SECRET, "rotate-config", OPERATOR_NS)
    assert after["metadata"]["uid"] == uid and after["metadata"]["resourceVersion"] != rv
    stored = yaml.safe_load(base64.b64decode(after["data"]["kubeconfig"]))
    op = kube.KubeClient(stored, "kind-k8ssandra-1")
    assert isinstance(op.list(cdc.RESOURCE, OPERATOR_NS), list)  # allowed: no 403


def test_in_cluster_kubeconfig_and_server_change_only_the_server(cli, sandbox, admins, tmp_path):
    in_cluster = tmp_path / "in-cluster.yaml"
    doc = kc.read_file(Path(sandbox.clusters[2].in_cluster_kubeconfig))
    doc["clusters"][0]["cluster"]["server"] = "https://172.18.0.3:6443"
    in_cluster.write_text(kc.dump(doc))
    # These addresses are not on this machine: the credentials are checked through the source's own address.
    a = as_json(cli("-o", "json", "--name", "addr-a", "--output-dir", str(tmp_path / "a"), "--no-verify-server",
                    "--in-cluster-kubeconfig", str(in_cluster), src=2, in_cluster=False))
    cleanup(admins[0], "addr-a")  # one ClientConfig per context (see the test of a second name)
    b = as_json(cli("-o", "json", "--name", "addr-b", "--output-dir", str(tmp_path / "b"), "--no-verify-server",
                    "--server", "https://[fd00::5]:6443", src=2))
    assert a["registrations"][0]["server"] == "https://172.18.0.3:6443"
    assert a["registrations"][0]["serverReason"].startswith("--in-cluster-kubeconfig")
    assert b["registrations"][0]["server"] == "https://[fd00::5]:6443"
    ka = yaml.safe_load((tmp_path / "a" / "addr-a.kubeconfig").read_text())
    kb = yaml.safe_load((tmp_path / "b" / "addr-b.kubeconfig").read_text())
    assert ka["clusters"][0]["cluster"].pop("server") == "https://172.18.0.3:6443"
    assert kb["clusters"][0]["cluster"].pop("server") == "https://[fd00::5]:6443"
    assert ka == kb  # everything else is identical
    # Verification went to the address this machine uses, and says so.
    assert a["registrations"][0]["identity"] == b["registrations"][0]["identity"] != None  # noqa: E711
    assert a["registrations"][0]["verifiedAt"] == sandbox.clusters[2].server
    assert any("--no-verify-server" in w for w in b["registrations"][0]["warnings"])


def test_a_tls_server_name_comes_with_the_server_it_was_set_for(cli, sandbox, tmp_path):
    """An in-cluster address the certificate does not list (127.1 is 127.0.0.1 to the resolver, a
    host name to TLS), with tls-server-name set to a name it does list: stored together, verified
    at that address. Without the name the stored kubeconfig could not work (and is not written)."""
    in_cluster = tmp_path / "in-cluster.yaml"
    doc = kc.read_file(Path(sandbox.clusters[2].in_cluster_kubeconfig))
    port = doc["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1]
    doc["clusters"][0]["cluster"]["server"] = f"https://127.1:{port}"
    doc["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes.default"
    in_cluster.write_text(kc.dump(doc))
    r = cli("-o", "json", "--name", "sni", "--output-dir", str(tmp_path / "out"), "--in-cluster-kubeconfig",
            str(in_cluster), src=2, in_cluster=False)
    assert r.exit_code == 0, r.output
    reg = as_json(r)["registrations"][0]
    assert reg["verifiedAt"] == f"https://127.1:{port}" and reg["identity"]
    stored = yaml.safe_load((tmp_path / "out" / "sni.kubeconfig").read_text())["clusters"][0]["cluster"]
    assert (stored["server"], stored["tls-server-name"]) == (f"https://127.1:{port}", "kubernetes.default")
    # The name is what makes it work: without it, the certificate is refused by name.
    doc["clusters"][0]["cluster"].pop("tls-server-name")
    in_cluster.write_text(kc.dump(doc))
    r = cli("--name", "sni", "--in-cluster-kubeconfig", str(in_cluster), src=2, in_cluster=False)
    assert r.exit_code == 1 and "not valid for the host name" in r.output, r.output


def test_loopback_source_without_server_is_explained(cli):
    r = cli(src=1, in_cluster=False)
    assert r.exit_code == 2
    assert "loopback" in r.output and "--server" in r.output and "--in-cluster-kubeconfig" in r.output


def test_loopback_source_uses_cluster_info(cli, admins, tmp_path):
    admins[3].apply(kube.CONFIGMAP, {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                                     "data": {"kubeconfig": kc.dump({"clusters": [{"name": "", "cluster": {"server": "https://10.96.0.1:443"}}]})}})
    try:
        doc = as_json(cli("-o", "json", "--dry-run", "--no-verify-server", src=3, in_cluster=False))
    finally:
        admins[3].delete(kube.CONFIGMAP, "cluster-info", "kube-public")
    reg = doc["registrations"][0]
    assert reg["server"] == "https://10.96.0.1:443" and "cluster-info" in reg["serverReason"]
    assert actions(doc) == ["would be created", "would be created"]


def test_dry_run_writes_nothing(cli, admins, tmp_path):
    out = tmp_path / "out"
    kube.STATS.reset()
    r = cli("--dry-run", "--name", "dry", "--output-dir", str(out))
    assert r.exit_code == 0, r.output
    assert "kind: ClientConfig" in r.stdout and "redacted" in r.stdout
    assert kube.STATS.writes == 2  # the verification reviews (POST, nothing stored)
    assert admins[0].get_or_none(kube.SECRET, "dry-config", OPERATOR_NS) is None
    assert admins[0].get_or_none(clientconfig_api.resource("v1beta1"), "dry", OPERATOR_NS) is None
    assert not out.exists()  # no file either
    # With TokenRequest, a dry run mints no token (that would create a credential) and says so.
    kube.STATS.reset()
    r = cli("--dry-run", "--name", "dry", "--token-source", "request", "-o", "json")
    assert r.exit_code == 0, r.output
    assert kube.STATS.by_method.get("POST", 0) == 0
    assert any("no token was requested" in w for w in json.loads(r.stdout)["registrations"][0]["warnings"])


def test_several_source_contexts_in_one_run(cli, sandbox, admins, tmp_path, namespace_factory):
    merged = Path(sandbox.kubeconfig)
    dest_ns = namespace_factory(0, prefix="multi")  # its own namespace: no other test's registrations matter
    common = ["--src-kubeconfig", str(merged), "--src-context", "kind-k8ssandra-2", "--src-context", "kind-k8ssandra-3",
              "--dest-kubeconfig", str(merged), "--dest-context", "kind-k8ssandra-0", "--dest-namespace", dest_ns]
    r = cli.runner.invoke(app, ["create-clientconfig", *common, "--server", "https://192.0.2.10:6443", "-o", "json"])
    assert r.exit_code == 2 and "single --src-context" in r.output
    # Several clusters in one run: each context's in-cluster address found by its name.
    r = cli.runner.invoke(app, ["create-clientconfig", *common, "--in-cluster-kubeconfig", str(merged), "-o", "json",
                                "--output-dir", str(tmp_path / "multi")])
    doc = as_json(r)
    assert [(g["name"], g["k8sContext"]) for g in doc["registrations"]] == [
        ("kind-k8ssandra-2", "kind-k8ssandra-2"), ("kind-k8ssandra-3", "kind-k8ssandra-3")]
    assert [actions(doc, i) for i in (0, 1)] == [["created", "created"]] * 2
    assert doc["registrations"][1]["server"] == sandbox.clusters[3].server
    for name in ("kind-k8ssandra-2", "kind-k8ssandra-3"):
        assert admins[0].get(clientconfig_api.resource("v1beta1"), name, dest_ns)["spec"]["contextName"] == name
    env_file = tmp_path / "kc"
    env_file.write_text(merged.read_text())
    r = cli.runner.invoke(app, ["create-clientconfig", "--src-context", "kind-k8ssandra-1", "--src-context",
                                "kind-k8ssandra-3", "--dest-context", "kind-k8ssandra-0", "-o", "json",
                                "--dest-namespace", dest_ns], env={"KUBECONFIG": f"/nonexistent:{env_file}"})
    # The sources are loopback and no address was given: refused before anything is written.
    assert r.exit_code == 2 and "loopback" in r.output
    assert admins[0].get_or_none(kube.SECRET, "kind-k8ssandra-1-config", dest_ns) is None


def test_v1alpha1_only_destination(cli, admins):
    doc = as_json(cli("-o", "json", "--name", "old-api", dest=V1ALPHA1))
    assert doc["registrations"][0]["clientConfigApiVersion"] == "config.k8ssandra.io/v1alpha1"
    assert admins[V1ALPHA1].get(clientconfig_api.resource("v1alpha1"), "old-api", OPERATOR_NS)["spec"]["contextName"] == "kind-k8ssandra-1"


@pytest.mark.parametrize("case", [
    "missing-crd", "missing-sa", "missing-namespace", "unknown-context", "invalid-kubeconfig",
    "unreadable-kubeconfig", "unreachable", "self", "bad-server-url", "bad-name",
])
def test_errors_are_one_line_with_exit_code_and_write_nothing(case, cli, sandbox, admins, tmp_path):
    broken = tmp_path / "broken.yaml"
    kwargs: dict = {}
    if case == "missing-crd":
        args, code, words = ["--name", "e1"], 1, "not installed"
        kwargs = {"dest": BARE}
    elif case == "missing-sa":
        args, code, words = ["--name", "e1", "--serviceaccount", "nobody"], 2, "service account 'nobody' not found"
    elif case == "missing-namespace":
        args, code, words = ["--name", "e1", "--src-namespace", "nowhere"], 2, "namespace 'nowhere' does not exist"
    elif case == "unknown-context":
        args, code, words = ["--name", "e1", "--src-context", "nope"], 2, "context 'nope' not found"
    elif case == "invalid-kubeconfig":
        broken.write_text("clusters: [unclosed\n")
        args, code, words = ["--src-kubeconfig", str(broken)], 2, "not valid YAML"
        kwargs = {"src": None}
    elif case == "unreadable-kubeconfig":
        args, code, words = ["--src-kubeconfig", str(tmp_path)], 2, "cannot be read"
        kwargs = {"src": None}
    elif case == "unreachable":
        doc = kc.read_file(Path(sandbox.clusters[1].kubeconfig))
        doc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
        broken.write_text(kc.dump(doc))
        args, code, words = ["--src-kubeconfig", str(broken), "--server", "https://192.0.2.1:6443", "--name", "e1"], 1, "connection refused"
        kwargs = {"src": None}
    elif case == "self":
        args, code, words = ["--name", "e1"], 2, "--allow-self"
        kwargs = {"src": 0}
    elif case == "bad-server-url":
        args, code, words = ["--server", "http://x", "--name", "e1"], 2, "not an https URL"
    else:
        args, code, words = ["--name", "Not_Valid"], 2, "not a valid DNS-1123 name"
    r = cli(*args, **kwargs)
    assert r.exit_code == code, r.output
    assert words in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    dest = kwargs.get("dest", 0)
    assert admins[dest].get_or_none(kube.SECRET, "e1-config", OPERATOR_NS) is None


def test_a_stored_server_that_never_answers_fails_after_one_connect_timeout(cli, admins):
    """A --server that accepts TCP and never answers: the verification's connections, opened ahead
    while the source is read, time out once, and that is the verification's answer (it used to
    open two more and wait a second timeout). Counted at the listener: one attempt per connection."""
    with silent_server() as hole:
        server = hole.url()
        r = cli("--server", server, "--request-timeout", "1s", "--name", "silent")
        attempts = hole.attempts()
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert f"names, {server} (--server), cannot be reached from here (connection timed out)" in r.output, r.output
    assert "nothing was written to the destination kind-k8ssandra-0" in r.output
    assert attempts == 2, f"{attempts} connections to the silent server"  # the two reviews' own
    assert admins[0].get_or_none(kube.SECRET, "silent-config", OPERATOR_NS) is None
    assert admins[0].get_or_none(clientconfig_api.resource("v1beta1"), "silent", OPERATOR_NS) is None


def test_token_never_filled_times_out(cli, sandbox, admins, namespace_factory):
    """Cluster 4 with its controller manager stopped: a new token Secret is never filled."""
    ns = namespace_factory(BARE, prefix="nofill")
    admins[BARE].create(kube.SERVICEACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}}, ns)
    run_dir = Path(sandbox.directory) / "run"
    from k8sctl_sandbox import processes

    processes.stop_all(run_dir, str(Path(sandbox.directory).resolve()),
                       names=[f"kube-controller-manager-{sandbox.clusters[BARE].name}"])
    r = cli("--namespace", ns, "--serviceaccount", "op", "--timeout", "2", "--name", "nofill",
            "--server", "https://192.0.2.1:6443", src=BARE)
    assert r.exit_code == 1, r.output
    assert "was not filled within 2s" in r.output
    assert admins[0].get_or_none(kube.SECRET, "nofill-config", OPERATOR_NS) is None


@pytest.mark.parametrize("pod_ip, expected", [("10.89.0.5", "https://10.89.0.5:7443"), ("fd00::7", "https://[fd00::7]:7443")])
def test_loopback_source_uses_the_apiserver_pod_ip(cli, admins, tmp_path, pod_ip, expected):
    """No cluster-info: the kube-apiserver pod's IP and --secure-port, as kind's static pod has them."""
    admin = admins[3]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "kube-apiserver-test", "namespace": "kube-system", "labels": {"component": "kube-apiserver"}},
           "spec": {"containers": [{"name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.37.2",
                                    "command": ["kube-apiserver", "--secure-port=7443"]}]}}
    admin.create(kube.POD, pod, "kube-system")
    try:
        admin.request("PATCH", kube.POD.path("kube-system", "kube-apiserver-test", "status"),
                      {"status": {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}},
                      content_type="application/merge-patch+json")
        doc = as_json(cli("-o", "json", "--dry-run", "--no-verify-server", src=3, in_cluster=False))
    finally:
        admin.request("DELETE", kube.POD.path("kube-system", "kube-apiserver-test"), query={"gracePeriodSeconds": "0"})
    reg = doc["registrations"][0]
    assert reg["server"] == expected and "kube-apiserver pod IP" in reg["serverReason"]
