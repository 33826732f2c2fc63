"""Pure parts of the ClientConfig workflow: names, addresses, manifests, option checks."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from k8sctl import clientconfigs as cc
from k8sctl.errors import UsageError


@pytest.mark.parametrize("context, name", [
    ("kind-k8ssandra-1", "kind-k8ssandra-1"),
    ("gke_my-project_us-east1_prod", "gke-my-project-us-east1-prod"),
    ("arn:aws:eks:us-east-1:123:cluster/Prod.Cluster", "arnawseksus-east-1123clusterprod-cluster"),
    ("--Weird__Name--", "weird-name"),
])
def test_sanitize_name(context, name):
    assert cc.sanitize_name(context) == name


def test_sanitize_long_names_are_cut_with_a_hash():
    long = "x" * 100
    a, b = cc.sanitize_name(long), cc.sanitize_name(long + "y")
    assert len(a) == 63 and a != b and a.startswith("x" * 50)
    with pytest.raises(UsageError, match="pass --name"):
        cc.sanitize_name("___")


@pytest.mark.parametrize("server, loopback", [
    ("https://127.0.0.1:6443", True), ("https://127.1.2.3:1", True), ("https://localhost:6443", True),
    ("https://0.0.0.0:6443", True), ("https://[::1]:6443", True), ("https://10.0.0.1:6443", False),
    ("https://example.com", False), ("https://[fd00::1]:6443", False),
])
def test_is_loopback_server(server, loopback):
    assert cc.is_loopback_server(server) is loopback


def test_server_url_brackets_ipv6():
    assert cc.server_url("fd00::5", 6443) == "https://[fd00::5]:6443"
    assert cc.server_url("10.1.2.3", 443) == "https://10.1.2.3:443"
    with pytest.raises(UsageError, match="not an https URL"):
        cc.validate_server("10.1.2.3:6443", "--server")
    with pytest.raises(UsageError, match="not an https URL"):
        cc.validate_server("https://10.1.2.3:99999", "--server")


def test_manifests_and_actions():
    secret = cc.secret_manifest("n-config", "ns", "kubeconfig: text\n")
    assert base64.b64decode(secret["data"]["kubeconfig"]) == b"kubeconfig: text\n"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "k8sctl"}
    assert cc.secret_action(None, secret) == "created"
    assert cc.secret_action(secret, secret) == "unchanged"
    assert cc.secret_action(cc.secret_manifest("n-config", "ns", "other"), secret) == "updated"
    unlabelled = {**secret, "metadata": {"name": "n-config"}}
    assert cc.secret_action(unlabelled, secret) == "updated"  # taken over from the script
    redacted = cc.redact_secret(secret)
    assert "text" not in yaml.safe_dump(redacted) and secret["data"]["kubeconfig"] != redacted["data"]["kubeconfig"]

    ccm = cc.clientconfig_manifest("n", "ns", "v1beta1", "ctx", "n-config")
    assert ccm["apiVersion"] == "config.k8ssandra.io/v1beta1"
    assert ccm["spec"] == {"contextName": "ctx", "kubeConfigSecret": {"name": "n-config"}}
    assert cc.clientconfig_action(ccm, ccm) == "unchanged"
    other = cc.clientconfig_manifest("n", "ns", "v1beta1", "ctx2", "n-config")
    assert cc.clientconfig_action(other, ccm) == "updated"


def _kubeconfig(tmp_path: Path, name: str, contexts: dict[str, str]) -> Path:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": next(iter(contexts)),
           "clusters": [{"name": c, "cluster": {"server": s}} for c, s in contexts.items()],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": c, "context": {"cluster": c, "user": "u"}} for c in contexts]}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


def _complete(tmp_path, **kw) -> cc.Completed:
    src = _kubeconfig(tmp_path, "src", {"data-1": "https://10.0.0.1:6443", "data-2": "https://10.0.0.2:6443"})
    dest = _kubeconfig(tmp_path, "dest", {"control": "https://10.0.0.9:6443"})
    opts = cc.CreateOptions(src_kubeconfig=src, dest_kubeconfig=[dest], **kw)
    return cc.complete(opts, {"HOME": str(tmp_path)})


def test_complete_defaults(tmp_path):
    c = _complete(tmp_path)
    assert c.src_contexts == ["data-1"] and c.dest_view.name == "control"
    assert c.dest_namespace == "k8ssandra-operator"
    assert _complete(tmp_path, namespace="ops").dest_namespace == "ops"
    assert _complete(tmp_path, namespace="ops", dest_namespace="cp").dest_namespace == "cp"
    cc.validate(c)


@pytest.mark.parametrize("kw, message", [
    ({"token_source": "vault"}, "--token-source must be"),
    ({"token_duration": 3600}, "only with --token-source request"),
    ({"token_source": "request", "token_duration": 10}, "at least 600"),
    ({"server": "ftp://x"}, "not an https URL"),
    ({"src_contexts": ["data-1", "data-2"], "name": "x"}, "single --src-context"),
    ({"src_contexts": ["data-1", "data-1"]}, "given twice"),
    ({"src_contexts": ["data-1", "data-2"], "server": "https://x:1"}, "single --src-context"),
    ({"name": "Bad_Name"}, "not a valid DNS-1123 name"),
    ({"timeout": 0}, "--timeout must be a positive number"),
    ({"timeout": float("nan")}, "--timeout must be a positive number"),
    ({"timeout": float("inf")}, "--timeout must be a positive number"),
    ({"server": "https://10.0.0.5:6443/k8s"}, "has a path, query or user info"),
    ({"server": "https://user@10.0.0.5:6443"}, "has a path, query or user info"),
    ({"server": "https://10.0.0.5:6443?x=1"}, "has a path, query or user info"),
])
def test_validate_rejects(tmp_path, kw, message):
    with pytest.raises(UsageError, match=message):
        cc.validate(_complete(tmp_path, **kw))


@pytest.mark.parametrize("field, flag", [
    ("serviceaccount", "--serviceaccount"), ("name", "--name"), ("namespace", "--namespace"),
    ("src_namespace", "--src-namespace"), ("dest_namespace", "--dest-namespace"), ("context_name", "--context-name"),
    ("server", "--server"),
])
def test_empty_strings_are_refused_not_defaulted(tmp_path, field, flag):
    with pytest.raises(UsageError, match=f"{flag} is empty"):
        _complete(tmp_path, **{field: " " if field == "server" else ""})


def test_self_registration_is_refused(tmp_path):
    dest = _kubeconfig(tmp_path, "d", {"control": "https://localhost:6443"})
    src = _kubeconfig(tmp_path, "s", {"same": "https://127.0.0.1:6443/"})
    c = cc.complete(cc.CreateOptions(src_kubeconfig=src, dest_kubeconfig=[dest]), {})
    with pytest.raises(UsageError, match="--allow-self"):
        cc.validate(c)
    c.opts.allow_self = True
    cc.validate(c)


def test_no_source_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--src-kubeconfig, --src-context"):
        cc.complete(cc.CreateOptions(), {"HOME": str(tmp_path)})


def test_in_cluster_kubeconfig_must_hold_every_source_by_name(tmp_path):
    in_cluster = _kubeconfig(tmp_path, "in", {"data-1": "https://172.18.0.2:6443"})
    c = _complete(tmp_path, src_contexts=["data-1", "data-2"], in_cluster_kubeconfig=in_cluster)
    with pytest.raises(UsageError, match="--in-cluster-kubeconfig has no context 'data-2'"):
        cc.validate(c)
    cc.validate(_complete(tmp_path, src_contexts=["data-1"], in_cluster_kubeconfig=in_cluster))


# --- which token Secret's token is stored (create-clientconfig --token-source secret) --------

SA, NS = "k8ssandra-operator", "k8ssandra-operator"


def _jwt(claims: dict) -> str:
    import json

    def part(doc: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def _token_secret(name: str, created: str = "2026-01-01T00:00:00Z", sa: str = SA) -> dict:
    """A filled token Secret of `sa`; its token a legacy token naming it, as the token controller makes."""
    token = _jwt({"iss": "kubernetes/serviceaccount", "kubernetes.io/serviceaccount/namespace": NS,
                  "kubernetes.io/serviceaccount/secret.name": name,
                  "kubernetes.io/serviceaccount/service-account.name": sa,
                  "sub": f"system:serviceaccount:{NS}:{sa}"})
    return {"metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
                         "annotations": {cc.SA_NAME_ANNOTATION: sa}},
            "type": cc.SA_TOKEN_TYPE, "data": {"token": base64.b64encode(token.encode()).decode(),
                                               "ca.crt": base64.b64encode(b"CA").decode()}}


def _token(secret: dict) -> str:
    return base64.b64decode(secret["data"]["token"]).decode()


class FakeSource:
    """The source cluster's Secrets: reads only, each counted."""

    def __init__(self, *secrets: dict):
        self.secrets = {s["metadata"]["name"]: s for s in secrets}
        self.gets: list[str] = []
        self.lists = 0

    def get_or_none(self, resource, name, namespace=None):
        self.gets.append(name)
        return self.secrets.get(name)

    def list(self, resource, namespace=None, **_):
        self.lists += 1
        return list(self.secrets.values())


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _dest_state(stored_token: str | None):
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "ctx",
           "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
           "users": [{"name": "u", "user": {"token": stored_token}}],
           "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}]}
    secret = None if stored_token is None else {
        "data": {"kubeconfig": base64.b64encode(yaml.safe_dump(doc).encode()).decode()}}

    class DestState:
        def secret(self):
            return secret
    return DestState()


def _choose(src: FakeSource, stored_token: str | None, listed: tuple[str, ...] = ()) -> str:
    """The token Secret create-clientconfig takes, the way _plan reads: the `<sa>-token` guess and
    the stored token's Secret (from the destination's Secret) first, then _secret_token."""
    c = cc.Completed(cc.CreateOptions(), {}, "", ["ctx"], {}, None, NS, None)  # type: ignore[arg-type]
    reg = cc.Registration(source_context="ctx", name="n", secret_name="n-config", context_name="ctx",
                          src_namespace=NS, server="", server_reason="", token_source="secret")
    guess = _Done(src.get_or_none(None, f"{SA}-token", NS))
    stored = _Done(cc._stored_token_secret(c, reg, src, NS, _dest_state(stored_token)))
    sa = {"metadata": {"name": SA}, "secrets": [{"name": n} for n in listed]}
    token, _ = cc._secret_token(src, sa, NS, c.opts, reg, lambda s: None, [], guess, stored)  # type: ignore[arg-type]
    assert token == _token(src.secrets[reg.token_secret])
    return reg.token_secret


def test_a_rerun_keeps_the_stored_token_while_a_token_secret_of_the_account_holds_it():
    old = _token_secret(f"{SA}-token", "2026-01-01T00:00:00Z")
    rotated = _token_secret(f"{SA}-token-x7k2p", "2026-02-01T00:00:00Z")
    leftover = _token_secret(f"{SA}-a-leftover", "2026-03-01T00:00:00Z")  # sorts first, and newest
    # After `clientconfig rotate`, before the old token Secret is deleted (or kept for another
    # ClientConfig): the guess `<sa>-token` exists, the stored token is the rotated one's.
    src = FakeSource(old, rotated, leftover)
    assert _choose(src, _token(rotated), listed=(f"{SA}-token",)) == f"{SA}-token-x7k2p"
    assert src.lists == 0 and src.gets.count(f"{SA}-token-x7k2p") == 1  # read once, with the guess
    # Once the old one is deleted (the account still lists it): no LIST either.
    src = FakeSource(rotated, leftover)
    assert _choose(src, _token(rotated), listed=(f"{SA}-token",)) == f"{SA}-token-x7k2p" and src.lists == 0
    # A stored token no token Secret holds any more (revoked): the usual order.
    gone = _token_secret(f"{SA}-token-gone00")
    assert _choose(FakeSource(old, rotated, leftover), _token(gone)) == f"{SA}-token"
    assert _choose(FakeSource(rotated, leftover), _token(gone)) == f"{SA}-a-leftover"  # the newest
    # Another account's token, or a Secret whose token is not the stored one, is never taken.
    other = _token_secret(f"{SA}-token-other1", sa="someone-else")
    assert _choose(FakeSource(old, other), _token(other)) == f"{SA}-token"
    forged = {**rotated, "data": {**rotated["data"], "token": leftover["data"]["token"]}}
    assert _choose(FakeSource(old, forged, leftover), _token(rotated)) == f"{SA}-token"


def test_a_stored_token_without_claims_is_found_among_the_listed_token_secrets():
    first, second = _token_secret(f"{SA}-token-aaaaa"), _token_secret(f"{SA}-token-bbbbb")
    second["data"]["token"] = base64.b64encode(b"opaque-token-without-claims").decode()
    src = FakeSource(first, second)
    assert _choose(src, "opaque-token-without-claims") == f"{SA}-token-bbbbb" and src.lists == 1


def test_first_run_reads_nothing_more():
    src = FakeSource(_token_secret(f"{SA}-token"))
    assert _choose(src, None, listed=(f"{SA}-token",)) == f"{SA}-token"
    assert src.gets == [f"{SA}-token"] and src.lists == 0


def test_token_secret_order_is_the_guess_then_the_newest_then_the_name():
    secrets = [_token_secret("b", "2026-01-01T00:00:00Z"), _token_secret("a", "2026-01-01T00:00:00Z"),
               _token_secret("z", "2026-05-01T00:00:00Z"), _token_secret(f"{SA}-token", "2025-01-01T00:00:00Z"),
               {**_token_secret("no-time"), "metadata": {"name": "no-time"}}]
    ordered = [s["metadata"]["name"] for s in sorted(secrets, key=cc.token_secret_order(SA))]
    assert ordered == [f"{SA}-token", "z", "a", "b", "no-time"]


def test_the_stored_token_is_read_only_through_the_untrusted_kubeconfig_parser():
    c = cc.Completed(cc.CreateOptions(), {}, "", ["ctx"], {}, None, NS, None)  # type: ignore[arg-type]
    reg = cc.Registration(source_context="ctx", name="n", secret_name="n-config", context_name="ctx",
                          src_namespace=NS, server="", server_reason="", token_source="secret")
    assert cc._stored_token(c, reg, _dest_state("stored-token").secret()) == "stored-token"
    doc = yaml.safe_load(base64.b64decode(_dest_state("stored-token").secret()["data"]["kubeconfig"]))
    doc["users"][0]["user"]["exec"] = {"command": "touch", "args": ["/tmp/pwned"], "apiVersion": "v1"}
    refused = {"data": {"kubeconfig": base64.b64encode(yaml.safe_dump(doc).encode()).decode()}}
    assert cc._stored_token(c, reg, refused) is None  # refused as a whole: no token taken from it
    other_context = {**reg.__dict__, "context_name": "another"}
    assert cc._stored_token(c, cc.Registration(**other_context), _dest_state("stored-token").secret()) is None


# --- a stored server that never answers (create-clientconfig's verification) -----------------

def test_the_preconnects_timeout_is_the_verifications_answer_in_the_same_words():
    from k8sctl import kube

    class Ahead:
        server, timed_out = "https://10.0.0.9:6443", "connection timed out"

    reg = cc.Registration(source_context="ctx", name="n", secret_name="n-config", context_name="ctx",
                          src_namespace=NS, server="https://10.0.0.9:6443", server_reason="--server",
                          token_source="secret")
    answer = cc._preconnect_timed_out(Ahead(), reg.server)  # type: ignore[arg-type]
    assert answer is not None and answer.cause == "connection timed out"
    with pytest.raises(cc.ClusterError) as e:
        cc.verify_new_kubeconfig(reg, None, NS, SA, lambda s: None, unreachable=answer)
    assert str(e.value) == str(cc._unverifiable(reg, reg.server, None, kube.Unreachable("x", "connection timed out"),
                                                cc.SERVER_HINT))
    assert "cannot be reached from here (connection timed out)" in str(e.value)
    assert cc._preconnect_timed_out(Ahead(), "https://10.0.0.8:6443") is None  # another server: tried
    assert cc._preconnect_timed_out(None, reg.server) is None
