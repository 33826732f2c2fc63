"""Kubeconfigs read from a cluster are data: the rules that keep them from running code here."""
from __future__ import annotations

import base64
import json

import pytest
import yaml

from k8sctl import kube, redact, tokens
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as api
from k8sctl.cache import ClientCache
from k8sctl.errors import ClusterError, UsageError


def _doc(user: dict, cluster: dict | None = None) -> dict:
    return {"clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:1",
                                                              "certificate-authority-data": "Zm9v"}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}], "current-context": "ctx"}


def _secret(doc) -> dict:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    return {"data": {"kubeconfig": base64.b64encode(text.encode()).decode()}}


@pytest.mark.parametrize("user, cluster, words", [
    ({"exec": {"command": "touch", "args": ["/tmp/pwned"]}}, None, "'exec', which runs a command"),
    ({"auth-provider": {"name": "gcp"}}, None, "auth-provider plugin"),
    ({"tokenFile": "/etc/shadow"}, None, "reads the token from a local file"),
    ({"client-certificate": "/etc/x", "client-key": "/etc/y"}, None, "reads a local file"),
    ({"token": "abcdefgh"}, {"server": "https://127.0.0.1:1", "certificate-authority": "/etc/ca"}, "reads a local file"),
    ({"token": "abcdefgh"}, {"server": "https://127.0.0.1:1", "proxy-url": "http://127.0.0.1:3128"}, "proxy"),
    ({"token": "abcdefgh"}, {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}, "TLS verification off"),
    ({"token": "abcdefgh", "as": "system:admin"}, None, "impersonates"),
    ({"username": "a", "password": "b"}, None, "basic auth"),
    ({}, None, "no credentials"),
    ({"client-certificate-data": "Zm9v"}, None, "half of a client certificate"),
])
def test_stored_kubeconfig_refuses_anything_but_inline_credentials(user, cluster, words):
    view = kc.select_context(_doc(user, cluster), "ctx")
    assert words in kc.stored_kubeconfig_problem(view)
    with pytest.raises(api.BrokenClientConfig, match="refused"):
        api.parse_stored_kubeconfig(_secret(_doc(user, cluster)), "ns/s", "ctx")


@pytest.mark.parametrize("user", [{"token": "abcdefgh"}, {"client-certificate-data": "Zm9v", "client-key-data": "YmFy"}])
def test_stored_kubeconfig_accepts_inline_credentials(user):
    assert kc.stored_kubeconfig_problem(kc.select_context(_doc(user), "ctx")) is None
    assert api.parse_stored_kubeconfig(_secret(_doc(user)), "ns/s", "ctx")["users"][0]["user"] == user


def test_untrusted_client_never_reaches_the_loader(tmp_path):
    marker = tmp_path / "ran"
    doc = _doc({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh",
                         "args": ["-c", f"touch {marker}"]}})
    with pytest.raises(kube.UntrustedKubeconfig, match="runs a command"):
        kube.KubeClient(doc, "ctx", trusted=False, source="Secret ns/s")
    assert not marker.exists()


@pytest.mark.parametrize("secret, words", [
    (None, "not found"),
    ({"data": {}}, "no 'kubeconfig' key"),
    ({"data": {"kubeconfig": "%%%"}}, "not valid base64"),
    (_secret("clusters: [unclosed"), "not valid YAML"),
    (_secret("just a string"), "does not hold a kubeconfig"),
    (_secret(_doc({"token": "abcdefgh"}) | {"contexts": []}), "context 'ctx' not found"),
])
def test_broken_secrets_are_named(secret, words):
    with pytest.raises(api.BrokenClientConfig, match=words):
        api.parse_stored_kubeconfig(secret, "ns/s", "ctx")


_SERVER = "https://127.0.0.1:1"


@pytest.mark.parametrize("user, cluster, words", [
    # A quoted "false" would be true in Python and in the kubernetes package's loader.
    ({"token": "abcdefgh"}, {"server": _SERVER, "insecure-skip-tls-verify": "false"},
     "insecure-skip-tls-verify of cluster 'c' must be true or false, not a str"),
    ({"token": "abcdefgh"}, {"server": _SERVER, "tls-server-name": 123}, "tls-server-name of cluster 'c' must be a string, not a int"),
    ({"token": "abcdefgh"}, {"server": _SERVER, "certificate-authority-data": ["Zm9v"]}, "certificate-authority-data of cluster"),
    ({"token": "abcdefgh"}, {"server": 6443}, "server of cluster 'c' must be a string"),
    ({"token": 12345678}, None, "token of user 'u' must be a string, not a int"),
    ({"client-certificate-data": True, "client-key-data": "YmFy"}, None, "client-certificate-data of user 'u'"),
    ("a string", None, "user 'u' is not a mapping"),
])
def test_fields_of_another_type_than_kubectl_decodes_are_refused_by_name(user, cluster, words):
    doc = _doc(user, cluster)
    with pytest.raises(UsageError) as e:  # the user's own kubeconfig: exit 2
        kube.KubeClient(doc, "ctx")
    assert words in str(e.value) and "12345678" not in str(e.value)
    with pytest.raises(api.BrokenClientConfig, match=words.replace("(", r"\(")):  # a stored one: that ClientConfig is broken
        api.parse_stored_kubeconfig(_secret(doc), "ns/s", "ctx")


@pytest.mark.parametrize("value", [False, True])
def test_insecure_skip_tls_verify_is_what_the_boolean_says(value):
    client = kube.KubeClient(_doc({"token": "abcdefgh"}, {"server": _SERVER, "insecure-skip-tls-verify": value}), "ctx")
    try:
        assert client.insecure is value
    finally:
        client.close()


def test_malformed_lists_are_named_not_crashed_on():
    doc = _doc({"token": "abcdefgh"}) | {"contexts": ["ctx"]}
    with pytest.raises(UsageError, match="context 'ctx' not found"):
        kc.select_context(doc, "ctx")
    assert kc.context_names(doc) == [] and kc.context_names({"contexts": "x"}) == []
    with pytest.raises(UsageError, match="is not a mapping"):
        kc.select_context(_doc({"token": "abcdefgh"}) | {"contexts": [{"name": "ctx", "context": "c"}]}, "ctx")


def test_tokens_are_cleaned_or_refused():
    assert kube.clean_token("abcdefgh.ijkl\n", "x") == "abcdefgh.ijkl"
    with pytest.raises(UsageError, match="spaces or control characters") as e:
        kube.clean_token("secret-part one", "x")
    assert "secret-part" not in str(e.value)


def test_redaction_covers_every_form_of_a_remembered_credential():
    token = "eyJhbGciOi.remembered-token-value.sig"
    redact.remember(token + "\n")
    b64 = base64.b64encode(token.encode()).decode()
    text = redact.redact(f"header b'Bearer {token}' and data {b64}")
    assert token not in text and b64 not in text and text.count(redact.REDACTED) == 2


def _jwt(claims: dict) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


def test_token_claims_and_reuse():
    sub = "system:serviceaccount:ns:sa"
    assert tokens.jwt_claims("not-a-jwt") is None
    assert tokens.expires_at(_jwt({"sub": sub})) is None  # legacy Secret tokens never expire
    fresh = _jwt({"sub": sub, "iat": 1000, "exp": 5000})
    assert tokens.fresh_for_reuse(fresh, sub, now=2000) is True
    assert tokens.fresh_for_reuse(fresh, sub, now=3500) is False  # less than half left
    assert tokens.fresh_for_reuse(fresh, "system:serviceaccount:ns:other", now=2000) is False


def _cc(name: str, context: str | None = None) -> dict:
    spec = {"kubeConfigSecret": {"name": f"{name}-config"}}
    if context:
        spec["contextName"] = context
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def test_two_clientconfigs_for_one_context_are_a_conflict_and_neither_is_used():
    cache = ClientCache(None, [_cc("a", "shared"), _cc("b", "shared"), _cc("c")], "ns")  # type: ignore[arg-type]
    assert cache.contexts() == ["c"]
    conflicts = {b.name: b.reason for b in cache.broken}
    assert set(conflicts) == {"a", "b"} and "also named by ClientConfig b" in conflicts["a"]
    with pytest.raises(ClusterError, match="No known client for context-name shared.*a, b both name it"):
        cache.remote("shared")
