"""`k8sctl clientconfig list/verify/rotate/delete` and --wait-operator on real API servers.

Each test gets its own "operator namespace" (a fresh name) in the source cluster 1 (the operator's
service account, its token Secret and Role, as sandbox --k8ssandra installs them) and the same name
in the control plane cluster 0 for the ClientConfigs, so rotating and revoking never touch what
other tests use. No k8ssandra-operator runs in the sandbox: where a test needs it, a thread stands
in for it by stamping the annotations it stamps (k8ssandra.io/resource-hash, secret-hash), and
says so. Every output is checked for credentials by the session's leak guard (tests/conftest.py).
"""
from __future__ import annotations

import _thread
import base64
import json
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from k8sctl import kube, redact
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.cli import app
from k8sctl.clientconfigs import clientconfig_manifest
from k8sctl_sandbox import crds_and_identity
from tests.sockets import silent_server

CC = api.resource("v1beta1")
SRC, DEST = 1, 0


def make_env(sandbox, admins, namespace_factory, prefix: str) -> Env:
    """An isolated operator namespace: in the source (identity installed) and the control plane."""
    ns = namespace_factory(SRC, DEST, prefix=prefix)
    crds_and_identity.install_operator_identity(admins[SRC], ns)
    crds_and_identity.wait_token_filled(admins[SRC], ns, "k8ssandra-operator-token")
    return Env(sandbox, admins, ns)


@pytest.fixture
def env(sandbox, admins, namespace_factory):
    return make_env(sandbox, admins, namespace_factory, "lc")


class Env:
    def __init__(self, sandbox, admins, ns):
        self.sandbox, self.admins, self.ns = sandbox, admins, ns
        self.dest, self.src = admins[DEST], admins[SRC]

    def k8sctl(self, *args: str, dest_kubeconfig: bool = True):
        argv = list(args)
        if dest_kubeconfig:
            argv += ["--kubeconfig", self.sandbox.clusters[DEST].kubeconfig, "-n", self.ns]
        return CliRunner().invoke(app, argv)

    def create(self, name: str, *args: str):
        c = self.sandbox.clusters[SRC]
        r = CliRunner().invoke(app, [
            "create-clientconfig", "--src-kubeconfig", c.kubeconfig, "--in-cluster-kubeconfig",
            c.in_cluster_kubeconfig, "--dest-kubeconfig", self.sandbox.clusters[DEST].kubeconfig, "-n", self.ns,
            "--name", name, "--context-name", f"ctx-{name}", "-o", "json", *args])
        assert r.exit_code == 0, r.output
        return r

    def stored(self, name: str) -> dict:
        secret = self.dest.get(kube.SECRET, f"{name}-config", self.ns)
        return api.parse_stored_kubeconfig(secret, f"{self.ns}/{name}-config", f"ctx-{name}")

    def put(self, name: str, kubeconfig_text: str, managed: bool = False) -> None:
        """A Secret and ClientConfig written by hand (as create-clientconfig.sh or a user would)."""
        labels = {"app.kubernetes.io/managed-by": "k8sctl"} if managed else {}
        self.dest.apply(kube.SECRET, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-config", "namespace": self.ns,
                                                               "labels": labels},
            "data": {"kubeconfig": base64.b64encode(kubeconfig_text.encode()).decode()}}, force=True)
        cc = clientconfig_manifest(name, self.ns, "v1beta1", f"ctx-{name}", f"{name}-config")
        cc["metadata"]["labels"] = labels
        self.dest.apply(CC, cc, force=True)


def token_of(doc: dict) -> str:
    return doc["users"][0]["user"]["token"]


def whoami(doc: dict, context: str) -> str | None:
    with kube.KubeClient(doc, context, trusted=False, source="test") as c:
        return c.whoami()


def status_of(doc: dict, context: str) -> int:
    try:
        whoami(doc, context)
        return 200
    except kube.ApiError as e:
        return e.status


def rejected_soon(doc: dict, context: str, timeout: float = 30.0) -> bool:
    """Whether the token is rejected (401) within `timeout`: the API server caches a token's review
    for 10 s, so a deletion shows within 10 s of the last cache miss, which may come after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status_of(doc, context) == 401:
            return True
        time.sleep(0.1)
    return False


SUBJECT_ACCESS_REVIEW = kube.Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview",
                                      namespaced=False)


def allowed_soon(admin: kube.KubeClient, user: str, namespace: str, attributes: dict, timeout: float = 30.0) -> None:
    """Until the API server's authorizer allows `user` what `attributes` name (a SubjectAccessReview)."""
    groups = ["system:authenticated"]
    if user.startswith("system:serviceaccount:"):
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "groups": groups, "resourceAttributes": {"namespace": namespace, **attributes}}}
    deadline = time.monotonic() + timeout
    while not admin.request("POST", SUBJECT_ACCESS_REVIEW.path(), review)["status"].get("allowed"):
        assert time.monotonic() < deadline, f"{user} not allowed {attributes} in {namespace} within {timeout:.0f}s"
        time.sleep(0.1)


def as_json(r) -> dict:
    return json.loads(r.stdout)


def rows(r) -> dict:
    return {row["name"]: row for row in as_json(r)["clientConfigs"]}


def test_list_and_verify_name_every_kind_of_failure(env):
    env.create("ok")
    good = env.stored("ok")
    env.dest.apply(CC, clientconfig_manifest("nosecret", env.ns, "v1beta1", "ctx-nosecret", "nosecret-config"))
    env.put("yaml", "clusters: [unclosed\n")
    # A token that was valid and is revoked: its token Secret is deleted (what an expired token also gets: 401).
    env.src.create(kube.SECRET, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                                 "metadata": {"name": "gone", "annotations": {
                                     "kubernetes.io/service-account.name": "k8ssandra-operator"}}}, env.ns)
    crds_and_identity.wait_token_filled(env.src, env.ns, "gone")
    revoked_token = base64.b64decode(env.src.get(kube.SECRET, "gone", env.ns)["data"]["token"]).decode()
    rejected = json.loads(json.dumps(good))
    rejected["users"][0]["user"]["token"] = revoked_token
    rejected["contexts"][0]["name"] = rejected["current-context"] = "ctx-rejected"
    env.put("rejected", kc.dump(rejected))
    env.src.delete(kube.SECRET, "gone", env.ns)
    assert rejected_soon(rejected, "ctx-rejected")  # before list --check expects the 401
    unreachable = json.loads(json.dumps(good))
    unreachable["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens there
    unreachable["contexts"][0]["name"] = unreachable["current-context"] = "ctx-unreachable"
    env.put("unreachable", kc.dump(unreachable))
    v6 = json.loads(json.dumps(unreachable))
    v6["clusters"][0]["cluster"]["server"] = "https://[::1]:1"  # printed as itself, not as rich markup
    v6["contexts"][0]["name"] = v6["current-context"] = "ctx-v6"
    env.put("v6", kc.dump(v6))
    typed = json.loads(json.dumps(good))
    typed["clusters"][0]["cluster"]["tls-server-name"] = 123  # YAML's int: client-go cannot decode it
    typed["contexts"][0]["name"] = typed["current-context"] = "ctx-typed"
    env.put("typed", kc.dump(typed))

    r = env.k8sctl("clientconfig", "list", "-o", "json")
    assert r.exit_code == 0, r.output
    listed = rows(r)
    assert set(listed) == {"ok", "nosecret", "yaml", "rejected", "unreachable", "v6", "typed"}
    assert listed["ok"]["problems"] == [] and listed["ok"]["auth"] == "token"
    assert listed["ok"]["tokenSource"] == "secret" and listed["ok"]["tokenExpiry"] is None
    assert listed["ok"]["serviceAccount"] == f"system:serviceaccount:{env.ns}:k8ssandra-operator"
    assert listed["ok"]["operatorLoaded"] is False  # no operator runs here
    assert listed["nosecret"]["problems"] == [f"Secret {env.ns}/nosecret-config not found"]
    assert "not valid YAML" in listed["yaml"]["problems"][0]
    assert "tls-server-name of cluster" in listed["typed"]["problems"][0] and "must be a string" in listed["typed"]["problems"][0]
    assert listed["rejected"]["problems"] == [] and listed["unreachable"]["problems"] == []
    assert "health" not in listed["ok"]

    r = env.k8sctl("clientconfig", "list", "--check", "--timeout", "3s", "-o", "json")
    assert r.exit_code == 0, r.output
    health = {n: row["health"] for n, row in rows(r).items()}
    assert health["ok"]["ok"] and health["ok"]["tlsVerified"] and health["ok"]["mayManageCassandraDatacenters"]
    assert health["ok"]["identity"] == f"system:serviceaccount:{env.ns}:k8ssandra-operator"
    assert "401" in health["rejected"]["error"] and health["rejected"]["reachable"]
    assert "connection refused" in health["unreachable"]["error"] and not health["unreachable"]["reachable"]
    assert "not found" in health["nosecret"]["error"] and "YAML" in health["yaml"]["error"]
    assert "must be a string" in health["typed"]["error"]

    r = env.k8sctl("clientconfig", "list", "--check")  # text: columns, never cut, and one line per problem
    assert r.exit_code == 0 and "401" in r.output and "https://[::1]:1" in r.output, r.output
    assert f"{env.ns}/nosecret-config not found" in r.output

    r = env.k8sctl("clientconfig", "verify", "ok")
    assert r.exit_code == 0, r.output
    r = env.k8sctl("clientconfig", "verify", "-o", "json")
    assert r.exit_code == 1 and sorted(as_json(r)["failed"]) == ["nosecret", "rejected", "typed", "unreachable", "v6", "yaml"]
    r = env.k8sctl("clientconfig", "verify", "v6")
    assert r.exit_code == 1 and "cannot reach https://[::1]:1" in r.output, r.output
    r = env.k8sctl("clientconfig", "verify", "ok", "rejected")
    assert r.exit_code == 1 and "credentials rejected (401)" in r.output
    # A server that accepts connections and never answers: the per-cluster --timeout ends its check.
    with silent_server() as hole:
        hung = json.loads(json.dumps(unreachable))
        hung["clusters"][0]["cluster"]["server"] = hole.url()
        hung["contexts"][0]["name"] = hung["current-context"] = "ctx-hung"
        env.put("hung", kc.dump(hung))
        # 3 s: enough for `ok`'s two connections and two reviews on a loaded machine.
        r = env.k8sctl("clientconfig", "verify", "hung", "ok", "--timeout", "3s", "-o", "json")
    assert r.exit_code == 1 and as_json(r)["failed"] == ["hung"], r.output
    error = rows(r)["hung"]["health"]["error"]
    assert "within 3s" in error or "timed out" in error, error
    r = env.k8sctl("clientconfig", "verify", "nope")
    assert r.exit_code == 2 and r.output.startswith("error: ClientConfig nope not found"), r.output
    assert len(r.output.strip().splitlines()) == 1


def test_rotate_a_token_secret_keeps_the_stored_kubeconfig_valid_and_revokes_the_old(env):
    env.create("rot")
    before = env.stored("rot")
    old_token, secret_rv = token_of(before), env.dest.get(kube.SECRET, "rot-config", env.ns)["metadata"]["resourceVersion"]
    failures: list[str] = []
    stop = threading.Event()
    polls = [0]

    def poll():
        # The operator may restart at any moment: what is stored must work at every read.
        with kube.KubeClient(kc.read_file(Path(env.sandbox.clusters[DEST].kubeconfig)),
                             env.sandbox.clusters[DEST].context, stats=kube.RequestStats()) as dest:
            while not stop.is_set():
                secret = None
                try:
                    secret = dest.get(kube.SECRET, "rot-config", env.ns)
                    doc = api.parse_stored_kubeconfig(secret, "rot-config", "ctx-rot")
                    if not whoami(doc, "ctx-rot"):
                        raise AssertionError("the stored kubeconfig authenticates as nobody")
                    polls[0] += 1
                except Exception as e:
                    if secret is not None and isinstance(e, kube.ApiError) and e.status == 401 and \
                            dest.get(kube.SECRET, "rot-config", env.ns)["metadata"]["resourceVersion"] \
                            != secret["metadata"]["resourceVersion"]:
                        continue  # read before the rotation's write, checked after its revocation: stale, not wrong  # any failure fails the test at once, in the main thread
                    failures.append(redact.redact(f"{type(e).__name__}: {e}"))  # a failure must not print a token
                    _thread.interrupt_main(signal.SIGUSR1)
                    return
                time.sleep(0.02)

    def fail_now(signum, frame):
        raise AssertionError(f"the stored kubeconfig was not valid during the rotation: {failures}")

    previous = signal.signal(signal.SIGUSR1, fail_now)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        # No --src-kubeconfig: the stored credentials mint and revoke (what the CronJob does).
        r = env.k8sctl("clientconfig", "rotate", "rot", "-o", "json")
    finally:
        stop.set()
        poller.join(10)
        signal.signal(signal.SIGUSR1, previous)
    assert not failures, failures
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "rotated" and rot["tokenSource"] == "secret" and rot["sourceAccess"] == "the stored credentials"
    assert rot["revoked"] is True and rot["oldTokenSecret"] == "k8ssandra-operator-token"
    assert rot["bothValidSeconds"] is not None and rot["bothValidSeconds"] > 0
    assert polls[0] > 0
    after = env.stored("rot")
    assert token_of(after) != old_token
    assert whoami(after, "ctx-rot") == f"system:serviceaccount:{env.ns}:k8ssandra-operator"
    assert status_of(before, "ctx-rot") == 401
    assert env.src.get_or_none(kube.SECRET, "k8ssandra-operator-token", env.ns) is None
    assert env.src.get_or_none(kube.SECRET, rot["newTokenSecret"], env.ns) is not None
    assert env.dest.get(kube.SECRET, "rot-config", env.ns)["metadata"]["resourceVersion"] != secret_rv

    # A token Secret's token never expires: on a schedule it is left alone, and nothing is written.
    rv = env.dest.get(kube.SECRET, "rot-config", env.ns)["metadata"]["resourceVersion"]
    r = env.k8sctl("clientconfig", "rotate", "--all", "--if-expiring-within", "30d", "-o", "json")
    assert r.exit_code == 0, r.output
    assert [x["action"] for x in as_json(r)["rotations"]] == ["skipped"] and not as_json(r)["changed"]
    assert env.dest.get(kube.SECRET, "rot-config", env.ns)["metadata"]["resourceVersion"] == rv


def test_rotate_keeps_an_old_token_secret_another_clientconfig_still_uses(env):
    env.create("one")
    env.create("two")  # the same service-account token Secret
    old = env.stored("two")
    r = env.k8sctl("clientconfig", "rotate", "one", "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "rotated" and rot["revoked"] is False and "two" in rot["revocation"]
    assert whoami(old, "ctx-two")  # the other ClientConfig still works
    r = env.k8sctl("clientconfig", "rotate", "two", "-o", "json")
    assert as_json(r)["rotations"][0]["revoked"] is True, r.output
    assert status_of(old, "ctx-two") == 401


def test_create_clientconfig_again_after_rotate_keeps_the_rotated_token_and_writes_nothing(env):
    """The documented workflow: create-clientconfig, `clientconfig rotate`, create-clientconfig
    unchanged. The second create must not switch to another token Secret of the account (it did:
    the old `<sa>-token` while it was still there, else the first by name): that write restarts
    the operator. A leftover token Secret whose name sorts first, and newest, is there throughout."""
    env.create("one")
    env.create("two")  # the same token Secret: rotating "one" keeps it for "two"
    r = env.k8sctl("clientconfig", "rotate", "one", "-o", "json")
    assert r.exit_code == 0, r.output
    rotated_one = as_json(r)["rotations"][0]["newTokenSecret"]
    assert env.src.get_or_none(kube.SECRET, "k8ssandra-operator-token", env.ns) is not None  # kept for "two"
    env.src.create(kube.SECRET, {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "k8ssandra-operator-0-leftover",
                     "annotations": {"kubernetes.io/service-account.name": "k8ssandra-operator"}}}, env.ns)
    crds_and_identity.wait_token_filled(env.src, env.ns, "k8ssandra-operator-0-leftover")

    def create_again_writes_nothing(name: str, token_secret: str) -> None:
        before = env.dest.get(kube.SECRET, f"{name}-config", env.ns)["metadata"]["resourceVersion"]
        doc = as_json(env.create(name))
        reg = doc["registrations"][0]
        assert [o["action"] for o in reg["objects"]] == ["unchanged", "unchanged"], reg
        assert doc["restartsOperator"] is False and doc["changed"] is False
        assert reg["tokenSecret"] == token_secret
        assert env.dest.get(kube.SECRET, f"{name}-config", env.ns)["metadata"]["resourceVersion"] == before

    # While the old `<sa>-token` is still there (the account lists it, and it is the guess).
    create_again_writes_nothing("one", rotated_one)
    create_again_writes_nothing("two", "k8ssandra-operator-token")
    r = env.k8sctl("clientconfig", "rotate", "two", "-o", "json")
    assert r.exit_code == 0 and as_json(r)["rotations"][0]["revoked"] is True, r.output
    rotated_two = as_json(r)["rotations"][0]["newTokenSecret"]
    # Once it is deleted (the account still lists it; three token Secrets of the account left).
    create_again_writes_nothing("one", rotated_one)
    create_again_writes_nothing("two", rotated_two)
    assert whoami(env.stored("one"), "ctx-one") == f"system:serviceaccount:{env.ns}:k8ssandra-operator"


def test_rotate_all_revokes_a_shared_old_token_once_every_holder_is_switched(env):
    env.create("x")
    env.create("y")  # the same service-account token Secret
    old = env.stored("x")
    r = env.k8sctl("clientconfig", "rotate", "--all", "-o", "json")
    assert r.exit_code == 0, r.output
    rotations = as_json(r)["rotations"]
    assert [(x["name"], x["action"], x["revoked"]) for x in rotations] == [("x", "rotated", True),
                                                                         ("y", "rotated", True)]
    assert rotations[0]["newTokenSecret"] != rotations[1]["newTokenSecret"]
    assert rejected_soon(old, "ctx-x")
    for name in ("x", "y"):
        assert whoami(env.stored(name), f"ctx-{name}")


def test_rotate_a_token_request_token_and_if_expiring_within(env):
    env.create("req", "--token-source", "request", "--token-duration", "3600")
    before = env.stored("req")
    assert env.dest.get(CC, "req", env.ns)["metadata"]["annotations"][api.TOKEN_SOURCE_ANNOTATION] == "request"
    rv = env.dest.get(kube.SECRET, "req-config", env.ns)["metadata"]["resourceVersion"]
    r = env.k8sctl("clientconfig", "rotate", "req", "--if-expiring-within", "10m", "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "skipped" and "expires in" in rot["reason"]
    assert env.dest.get(kube.SECRET, "req-config", env.ns)["metadata"]["resourceVersion"] == rv  # nothing written

    # The operator's own Role may not request tokens: said, with the way out, and nothing written.
    r = env.k8sctl("clientconfig", "rotate", "req", "-o", "json")
    assert r.exit_code == 1, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "failed" and "403" in rot["reason"] and "data-plane.yaml" in rot["reason"], rot
    assert "was not changed" in rot["reason"]
    assert env.dest.get(kube.SECRET, "req-config", env.ns)["metadata"]["resourceVersion"] == rv
    r = env.k8sctl("clientconfig", "rotate", "req", "--src-kubeconfig", env.sandbox.clusters[SRC].kubeconfig,
                   "--src-context", "no-such-context")
    assert r.exit_code == 2 and "no context 'no-such-context'" in r.output, r.output

    # The source's admin kubeconfig may.
    c = env.sandbox.clusters[SRC]
    r = env.k8sctl("clientconfig", "rotate", "req", "--if-expiring-within", "2h", "--src-kubeconfig",
                   c.kubeconfig, "--src-context", c.context, "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "rotated" and rot["revoked"] is False and "cannot be revoked" in rot["revocation"]
    assert rot["newTokenExpiry"]
    after = env.stored("req")
    assert token_of(after) != token_of(before) and whoami(after, "ctx-req")


def snapshot(env) -> dict:
    """Every Secret and ClientConfig of the test's namespace (control plane and source), by resourceVersion."""
    found = {}
    for side, client, resources in (("dest", env.dest, (kube.SECRET, CC)), ("src", env.src, (kube.SECRET,))):
        for resource in resources:
            for o in client.list(resource, env.ns):
                found[(side, resource.kind, o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
    return found


def record_requests(monkeypatch) -> list[tuple[str, str]]:
    """(method, path) of every request k8sctl sends from now on (the leak guard's GETs too)."""
    made: list[tuple[str, str]] = []
    original = kube.KubeClient.request

    def request(self, method, path, *args, **kwargs):
        made.append((method, path))
        return original(self, method, path, *args, **kwargs)

    monkeypatch.setattr(kube.KubeClient, "request", request)
    return made


REVIEWS = ("/selfsubjectaccessreviews", "/selfsubjectreviews", "/tokenreviews")  # POSTs that store nothing


def test_rotate_dry_run_says_what_it_would_do_and_writes_and_mints_nothing(env, monkeypatch):
    env.create("dry")
    env.create("dry2")  # the same service-account token Secret
    env.create("dreq", "--token-source", "request", "--token-duration", "3600")
    c, dest_context = env.sandbox.clusters[SRC], env.sandbox.clusters[DEST].context
    src_args = ("--src-kubeconfig", c.kubeconfig, "--src-context", c.context)
    before, tokens = snapshot(env), {n: token_of(env.stored(n)) for n in ("dry", "dry2", "dreq")}
    made = record_requests(monkeypatch)

    # Alone, through the stored credentials: dry2 still holds the old token, so its token Secret would stay.
    r = env.k8sctl("clientconfig", "rotate", "dry", "--dry-run", "-o", "json")
    assert r.exit_code == 0, r.output
    doc = as_json(r)
    assert doc["dryRun"] is True and doc["changed"] is True and doc["restartsOperator"] is True
    rot = doc["rotations"][0]
    assert rot["action"] == "would be rotated" and rot["sourceAccess"] == "the stored credentials", rot
    assert rot["serviceAccount"] == f"{env.ns}/k8ssandra-operator" and rot["tokenSource"] == "secret"
    assert rot["sourceContext"] == "ctx-dry" and rot["sourceServer"] == c.server
    assert rot["verifiedAt"] is None and rot["newTokenSecret"] is None and rot["restartsOperator"] is True
    assert [(o["kind"], o["name"], o["context"], o["action"]) for o in rot["objects"]] == [
        ("Secret", f"{env.ns}/k8ssandra-operator-token-<generated>", "ctx-dry", "would be created"),
        ("Secret", f"{env.ns}/dry-config", dest_context, "would be updated"),
        ("Secret", f"{env.ns}/k8ssandra-operator-token", "ctx-dry", "kept")]
    assert "dry2" in rot["objects"][2]["why"] and rot["revoked"] is False
    assert c.server in rot["objects"][1]["why"]  # where the new token would be checked

    # All of them: the shared token Secret would go; the operator's Role may not request tokens: found
    # by asking (an access review), exit 1 as the real run (test_rotate_a_token_request_token_...).
    r = env.k8sctl("clientconfig", "rotate", "--all", "--dry-run", "-o", "json")
    assert r.exit_code == 1, r.output
    by = {x["name"]: x for x in as_json(r)["rotations"]}
    assert [o["action"] for o in by["dry"]["objects"]] == ["would be created", "would be updated", "would be deleted"]
    assert [(o["name"], o["action"]) for o in by["dry2"]["objects"][2:]] == [
        (f"{env.ns}/k8ssandra-operator-token", "would be deleted")] and by["dry"]["revoked"] is True
    assert by["dreq"]["action"] == "failed" and by["dreq"]["objects"] == [], by["dreq"]
    assert "may not request tokens" in by["dreq"]["reason"] and "data-plane.yaml" in by["dreq"]["reason"]

    # --if-expiring-within as the real run: token Secret tokens never expire; a 1 h token is not due in 10 min.
    r = env.k8sctl("clientconfig", "rotate", "--all", "--dry-run", "--if-expiring-within", "10m", "-o", "json")
    assert r.exit_code == 0, r.output
    reasons = {x["name"]: (x["action"], x["reason"]) for x in as_json(r)["rotations"]}
    assert reasons["dry"] == ("skipped", "its token never expires (a token Secret's token)")
    assert reasons["dreq"][0] == "skipped" and "expires in" in reasons["dreq"][1] and not as_json(r)["changed"]
    r = env.k8sctl("clientconfig", "rotate", "dreq", "--dry-run", "--if-expiring-within", "2h", *src_args,
                   "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "would be rotated" and rot["sourceAccess"] == f"--src-kubeconfig context {c.context}"
    assert [(o["kind"], o["name"], o["context"], o["action"]) for o in rot["objects"]] == [
        ("TokenRequest", f"{env.ns}/k8ssandra-operator", c.context, "would be requested"),
        ("Secret", f"{env.ns}/dreq-config", dest_context, "would be updated")]
    assert "cannot be revoked" in rot["revocation"] and rot["newTokenExpiry"] is None

    # Text: what it would do, per object; bad input is exit 2, one line.
    r = env.k8sctl("clientconfig", "rotate", "dry", "--dry-run")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("would be rotated dry\n") and "would be deleted" not in r.output, r.output
    assert f"{env.ns}/dry-config in {dest_context}: would be updated" in r.output
    assert "operator: would restart" in r.output
    r = env.k8sctl("clientconfig", "rotate", "nope", "--dry-run")
    assert r.exit_code == 2 and r.output.startswith("error: ClientConfig nope not found"), r.output
    assert len(r.output.strip().splitlines()) == 1

    # Nothing written anywhere, no token minted: no object changed, only reads and reviews were sent.
    assert snapshot(env) == before
    assert {n: token_of(env.stored(n)) for n in tokens} == tokens
    assert [(m, p) for m, p in made if m != "GET" and not p.endswith(REVIEWS)] == []
    assert sum(1 for m, p in made if p.endswith("/selfsubjectaccessreviews")) >= 4

    # The real run does what the dry run said.
    r = env.k8sctl("clientconfig", "rotate", "dry", "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert [o["action"] for o in rot["objects"]] == ["created", "updated", "kept"], rot
    assert rot["objects"][0]["name"] == f"{env.ns}/{rot['newTokenSecret']}" and rot["verifiedAt"] == c.server


def with_server(doc: dict, server: str) -> dict:
    out = json.loads(json.dumps(doc))
    out["clusters"][0]["cluster"]["server"] = server
    return out


def test_rotate_no_verify_server_checks_through_the_source_when_the_stored_server_is_out_of_reach(env):
    env.create("far")
    c = env.sandbox.clusters[SRC]
    src_args = ("--src-kubeconfig", c.kubeconfig, "--src-context", c.context)
    # A server only "the operator's pods" reach (here: nothing listens there; also not rich markup).
    old = with_server(env.stored("far"), "https://[::1]:1")
    env.put("far", kc.dump(old), managed=True)
    subject = f"system:serviceaccount:{env.ns}:k8ssandra-operator"
    before = snapshot(env)

    # Without the flag: one line naming it, nothing minted or written, the old token still works.
    for args in ((), src_args):
        r = env.k8sctl("clientconfig", "rotate", "far", *args)
        assert r.exit_code == 1, r.output
        assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("failed far: "), r.output
        assert "https://[::1]:1" in r.output and "--no-verify-server" in r.output
        assert f"Secret {env.ns}/far-config was not changed" in r.output
    r = env.k8sctl("clientconfig", "rotate", "far", "--dry-run", *src_args, "-o", "json")
    assert r.exit_code == 1 and "--no-verify-server" in as_json(r)["rotations"][0]["reason"], r.output
    assert snapshot(env) == before
    assert whoami(with_server(old, c.server), "ctx-far") == subject
    r = env.k8sctl("clientconfig", "rotate", "far", "--no-verify-server")
    assert r.exit_code == 2 and r.output.startswith("error: --no-verify-server checks the new token through "
                                                    "--src-kubeconfig's address"), r.output
    assert len(r.output.strip().splitlines()) == 1

    r = env.k8sctl("clientconfig", "rotate", "far", "--dry-run", "--no-verify-server", *src_args, "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "would be rotated" and c.server in rot["objects"][1]["why"]
    assert "warning: far: --no-verify-server: the new token would be checked through" in r.stderr
    assert snapshot(env) == before

    # With it: checked through the source's own address, with create-clientconfig's warning.
    r = env.k8sctl("clientconfig", "rotate", "far", "--no-verify-server", *src_args, "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "rotated" and rot["verifiedAt"] == c.server, rot
    warning = (f"--no-verify-server: the credentials were checked through {c.server}; the stored server "
               f"https://[::1]:1 was not contacted")
    assert rot["warnings"] == [warning] and f"warning: far: {warning}" in r.stderr
    after = env.stored("far")
    assert after["clusters"][0]["cluster"]["server"] == "https://[::1]:1" and token_of(after) != token_of(old)
    assert whoami(with_server(after, c.server), "ctx-far") == subject
    # The old token Secret is deleted, and the old token seen rejected through the same address.
    assert rot["revoked"] is True and rot["bothValidSeconds"] is not None
    assert status_of(with_server(old, c.server), "ctx-far") == 401


def test_rotate_no_verify_server_through_another_cluster_says_which_option_is_wrong(env):
    """--src-kubeconfig naming another cluster that has the same service account (every data plane
    has one): a token is minted there, and the stored CA refuses that cluster's certificate. The
    message names rotate's own options (it has no --server), and nothing is stored."""
    env.create("elsewhere")
    crds_and_identity.install_operator_identity(env.dest, env.ns)  # the same account in another cluster
    other = env.sandbox.clusters[DEST]
    env.put("elsewhere", kc.dump(with_server(env.stored("elsewhere"), "https://[::1]:1")), managed=True)
    stored = env.dest.get(kube.SECRET, "elsewhere-config", env.ns)["metadata"]["resourceVersion"]
    secrets_there = {o["metadata"]["name"] for o in env.dest.list(kube.SECRET, env.ns)}
    r = env.k8sctl("clientconfig", "rotate", "elsewhere", "--no-verify-server",
                   "--src-kubeconfig", other.kubeconfig, "--src-context", other.context)
    assert r.exit_code == 1, r.output
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("failed elsewhere: "), r.output
    assert "--src-kubeconfig and --src-context must name the cluster of ctx-elsewhere" in r.output, r.output
    assert "--server" not in r.output and "--in-cluster-kubeconfig" not in r.output, r.output
    assert env.dest.get(kube.SECRET, "elsewhere-config", env.ns)["metadata"]["resourceVersion"] == stored
    # The token Secret it minted in the wrong cluster is deleted again.
    assert {o["metadata"]["name"] for o in env.dest.list(kube.SECRET, env.ns)} == secrets_there


def one_dc_cluster(name: str, ns: str, context: str) -> dict:
    return {"apiVersion": "k8ssandra.io/v1alpha1", "kind": "K8ssandraCluster",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"cassandra": {"serverVersion": "4.0.6", "datacenters": [
                {"metadata": {"name": "dc1"}, "k8sContext": context, "size": 1}]}}}


def test_delete_is_refused_while_used_and_keeps_secrets_k8sctl_does_not_manage(env):
    env.create("del")
    env.dest.apply(k8c.RESOURCE, one_dc_cluster("demo", env.ns, "ctx-del"), force=True)
    r = env.k8sctl("clientconfig", "delete", "del")
    assert r.exit_code == 2 and "demo/dc1" in r.output and "--force" in r.output, r.output
    assert env.dest.get_or_none(CC, "del", env.ns) is not None
    r = env.k8sctl("clientconfig", "delete", "del", "--force", "--dry-run", "-o", "json")
    assert r.exit_code == 0, r.output
    assert [o["action"] for o in as_json(r)["objects"]] == ["would be deleted", "would be deleted"]
    assert env.dest.get_or_none(CC, "del", env.ns) is not None
    r = env.k8sctl("clientconfig", "delete", "del", "--force", "-o", "json")
    assert r.exit_code == 0, r.output
    assert as_json(r)["usedBy"] == ["demo/dc1"]
    assert env.dest.get_or_none(CC, "del", env.ns) is None
    assert env.dest.get_or_none(kube.SECRET, "del-config", env.ns) is None

    # Made by hand or by create-clientconfig.sh: the ClientConfig goes, its Secret stays.
    env.create("tmp")
    env.put("script", kc.dump(env.stored("tmp")).replace("ctx-tmp", "ctx-script"))
    r = env.k8sctl("clientconfig", "delete", "script")
    assert r.exit_code == 0 and "kept" in r.output and "not managed by k8sctl" in r.output, r.output
    assert env.dest.get_or_none(CC, "script", env.ns) is None
    assert env.dest.get_or_none(kube.SECRET, "script-config", env.ns) is not None

    # --revoke deletes the token Secret in the source, through the stored credentials.
    old = env.stored("tmp")
    r = env.k8sctl("clientconfig", "delete", "tmp", "--revoke", "-o", "json")
    assert r.exit_code == 0, r.output
    assert [o["action"] for o in as_json(r)["objects"]] == ["deleted", "deleted", "deleted"]
    assert rejected_soon(old, "ctx-tmp")


class StandInOperator(threading.Thread):
    """Stands in for k8ssandra-operator (not run in the sandbox): stamps its two annotations on the
    ClientConfig whenever they are missing or the Secret's data changed, as it does on (re)start."""

    def __init__(self, env: Env, name: str):
        super().__init__(daemon=True)
        self.env, self.name, self.stop = env, name, threading.Event()
        self.stamps = 0

    def run(self):
        seen = None
        while not self.stop.is_set():
            cc = self.env.dest.get_or_none(CC, self.name, self.env.ns)
            secret = self.env.dest.get_or_none(kube.SECRET, f"{self.name}-config", self.env.ns)
            if cc and secret:
                data = json.dumps(secret.get("data"), sort_keys=True)
                if data != seen or not api.operator_loaded(cc):
                    seen = data
                    self.stamps += 1
                    self.env.dest.request("PATCH", CC.path(self.env.ns, self.name), {"metadata": {"annotations": {
                        api.RESOURCE_HASH_ANNOTATION: uuid.uuid4().hex,
                        api.SECRET_HASH_ANNOTATION: uuid.uuid4().hex}}},
                        content_type="application/merge-patch+json")
            time.sleep(0.2)


def test_wait_operator_succeeds_when_loaded_and_times_out_cleanly_when_nothing_runs(env):
    stand_in = StandInOperator(env, "w")
    stand_in.start()
    try:
        r = env.k8sctl("create-clientconfig", "--src-kubeconfig", env.sandbox.clusters[SRC].kubeconfig,
                       "--in-cluster-kubeconfig", env.sandbox.clusters[SRC].in_cluster_kubeconfig,
                       "--dest-kubeconfig", env.sandbox.clusters[DEST].kubeconfig, "-n", env.ns, "--name", "w",
                       "--context-name", "ctx-w", "--wait-operator=30s", "-o", "json", dest_kubeconfig=False)
        assert r.exit_code == 0, r.output
        assert as_json(r)["registrations"][0]["operator"] == "loaded"
        r = env.k8sctl("clientconfig", "rotate", "w", "--wait-operator=30s", "-o", "json")
        assert r.exit_code == 0, r.output
        assert as_json(r)["rotations"][0]["operator"] == "loaded"
    finally:
        stand_in.stop.set()
        stand_in.join(5)
    assert stand_in.stamps >= 2

    # Nothing stamps any more: the wait ends at its limit, with one line saying what to check.
    r = env.k8sctl("clientconfig", "rotate", "w", "--wait-operator=2s")
    assert r.exit_code == 1, r.output
    assert "did not load ClientConfig" in r.output and "check that k8ssandra-operator runs" in r.output
    assert "Traceback" not in r.output
    r = env.k8sctl("clientconfig", "delete", "w", "--wait-operator=2s")
    assert r.exit_code == 1 and "no Deployment" in r.output and "nothing was deleted" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert env.dest.get_or_none(CC, "w", env.ns) is not None


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rotate-cronjob"
CRONJOB = kube.Resource("batch", "v1", "cronjobs", "CronJob")


def in_namespace(doc: dict, ns: str) -> dict:
    doc["metadata"]["namespace"] = ns
    for s in doc.get("subjects", []):
        s["namespace"] = ns
    return doc


def test_the_cronjob_example_rotates_in_cluster_with_only_its_rbac(env, tmp_path, monkeypatch):
    """examples/rotate-cronjob as a pod would run it: no kubeconfig, the k8sctl-rotate service
    account's token mounted, only the example's Roles; the data plane reached with the stored credentials."""
    for doc in yaml.safe_load_all((EXAMPLES / "data-plane.yaml").read_text()):
        env.src.apply(kube.BUILTIN[doc["kind"]], in_namespace(doc, env.ns), force=True)
    cronjob = None
    for doc in yaml.safe_load_all((EXAMPLES / "control-plane.yaml").read_text()):
        doc = in_namespace(doc, env.ns)
        if doc["kind"] == "CronJob":
            cronjob = doc
            env.dest.apply(CRONJOB, doc, dry_run=True)  # the API server validates it; nothing would run here
        else:
            env.dest.apply(kube.BUILTIN[doc["kind"]], doc, force=True)
    # The API server's authorizer sees new Roles through its own cache: a moment later when loaded.
    allowed_soon(env.src, f"system:serviceaccount:{env.ns}:k8ssandra-operator", env.ns,
                 {"verb": "create", "resource": "serviceaccounts", "subresource": "token", "name": "k8ssandra-operator"})
    allowed_soon(env.dest, f"system:serviceaccount:{env.ns}:k8sctl-rotate", env.ns,
                 {"verb": "patch", "resource": "secrets"})
    env.create("cron", "--token-source", "request", "--token-duration", "3600")
    before = env.stored("cron")

    # The pod's mounted service account, and nothing else to find a cluster with.
    token = env.dest.request("POST", kube.SERVICEACCOUNT.path(env.ns, "k8sctl-rotate", "token"),
                             {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(token["status"]["token"])
    admin_doc = kc.read_file(Path(env.sandbox.clusters[DEST].kubeconfig))
    (sa_dir / "ca.crt").write_bytes(base64.b64decode(admin_doc["clusters"][0]["cluster"]["certificate-authority-data"]))
    (sa_dir / "namespace").write_text(env.ns)
    server = env.sandbox.clusters[DEST].server
    monkeypatch.setattr(kc, "SERVICE_ACCOUNT_DIR", sa_dir)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", server.rsplit(":", 1)[1])
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)

    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    args = [env.ns if a == "k8ssandra-operator" else a for a in args]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "rotated" and rot["sourceAccess"] == "the stored credentials", rot
    after = env.stored("cron")
    assert token_of(after) != token_of(before) and whoami(after, "ctx-cron")
    # Again at once: the new token is fresh, so nothing is written.
    rv = env.dest.get(kube.SECRET, "cron-config", env.ns)["metadata"]["resourceVersion"]
    r = CliRunner().invoke(app, args[:-2] + ["--if-expiring-within", "10m", "-o", "json"])
    assert r.exit_code == 0 and as_json(r)["rotations"][0]["action"] == "skipped", r.output
    assert env.dest.get(kube.SECRET, "cron-config", env.ns)["metadata"]["resourceVersion"] == rv


def test_delete_wait_operator_waits_for_the_deployment_to_be_available_again(env):
    """A Deployment named like the operator's, whose status a thread writes as the Deployment
    controller would after the operator restarted (neither runs in the sandbox: the thread stands in)."""
    from k8sctl import lifecycle

    env.create("gone")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "k8ssandra-operator", "namespace": env.ns},
                  "spec": {"selector": {"matchLabels": {"app": "op"}}, "template": {
                      "metadata": {"labels": {"app": "op"}},
                      "spec": {"containers": [{"name": "op", "image": "registry.example.com/op:1"}]}}}}
    env.dest.apply(lifecycle.DEPLOYMENT, deployment, force=True)

    def available(at: str) -> None:
        env.dest.apply(lifecycle.DEPLOYMENT, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "k8ssandra-operator",
                                                                         "namespace": env.ns},
            "status": {"conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                       "lastTransitionTime": at, "lastUpdateTime": at}]}},
            subresource="status", force=True, field_manager="stand-in")

    available("2026-01-01T00:00:00Z")
    stop = threading.Event()

    def restart_when_deleted():
        while not stop.is_set():
            if env.dest.get_or_none(CC, "gone", env.ns) is None:
                available(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                return
            time.sleep(0.1)

    stand_in = threading.Thread(target=restart_when_deleted, daemon=True)
    stand_in.start()
    try:
        r = env.k8sctl("clientconfig", "delete", "gone", "--wait-operator=30s", "-o", "yaml")
    finally:
        stop.set()
        stand_in.join(5)
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(r.stdout)
    assert doc["operator"] == "available again" and doc["restartsOperator"] is True
    assert env.dest.get_or_none(CC, "gone", env.ns) is None

    # Nothing restarts it now: the wait ends at its limit with one line, the deletion itself done.
    env.create("gone2")
    r = env.k8sctl("clientconfig", "delete", "gone2", "--wait-operator=1s")
    assert r.exit_code == 1 and "did not become available again within 1s" in r.output, r.output
    assert env.dest.get_or_none(CC, "gone2", env.ns) is None
