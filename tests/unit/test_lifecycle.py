"""Pure parts of the ClientConfig lifecycle: durations, token claims, the stored-kubeconfig model,
in-cluster config, the connection options and --wait-operator[=TIMEOUT]. No cluster."""
from __future__ import annotations

import base64
import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from k8sctl import clientconfigs, durations, lifecycle
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as api
from k8sctl.cli import common
from k8sctl.errors import UsageError


def jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2lnbmF0dXJl"


LEGACY = jwt({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:ops:k8ssandra-operator",
              "kubernetes.io/serviceaccount/namespace": "ops",
              "kubernetes.io/serviceaccount/secret.name": "k8ssandra-operator-token",
              "kubernetes.io/serviceaccount/service-account.name": "k8ssandra-operator"})
BOUND = jwt({"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ops:k8ssandra-operator",
             "exp": 2_000_000_000, "iat": 1_999_996_400,
             "kubernetes.io": {"namespace": "ops", "serviceaccount": {"name": "k8ssandra-operator", "uid": "u"}}})


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("7d", 604800),
                                          ("0", 0), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert durations.parse(text, "--x") == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", "5m3", "nan", "inf"])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(UsageError, match="--if-expiring-within"):
        durations.parse(text, "--if-expiring-within")


def test_show_durations():
    assert [durations.show(s) for s in (45, 600, 11400, 6 * 86400 + 4 * 3600)] == ["45s", "10m", "3h10m", "6d4h"]


def test_token_facts_of_a_token_secret_and_a_bound_token():
    legacy = lifecycle.token_facts(LEGACY)
    assert (legacy.namespace, legacy.service_account, legacy.secret_name) == ("ops", "k8ssandra-operator",
                                                                             "k8ssandra-operator-token")
    assert legacy.expires_at is None and legacy.inferred_source == "secret"
    bound = lifecycle.token_facts(BOUND)
    assert bound.subject == "system:serviceaccount:ops:k8ssandra-operator" and bound.secret_name is None
    assert bound.expires_at == 2_000_000_000 and bound.inferred_source == "request"
    assert lifecycle.token_facts("not-a-jwt").subject is None


def stored_secret(doc) -> dict:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    return {"data": {"kubeconfig": base64.b64encode(text.encode()).decode()}}


def kubeconfig(token=LEGACY, contexts=("ctx",), user=None) -> dict:
    return {"clusters": [{"name": "c", "cluster": {"server": "https://[fd00::5]:6443",
                                                   "certificate-authority-data": "Q0E="}}],
            "users": [{"name": "u", "user": user or {"token": token}}],
            "contexts": [{"name": n, "context": {"cluster": "c", "user": "u"}} for n in contexts]}


def test_one_parser_names_every_problem_and_keeps_what_can_be_shown():
    assert api.inspect_stored_kubeconfig(None, "ns/s", "ctx").problem == "Secret ns/s not found"
    assert "no 'kubeconfig' key" in api.inspect_stored_kubeconfig({"data": {}}, "ns/s", "ctx").problem
    assert "not valid YAML" in api.inspect_stored_kubeconfig(stored_secret("a: [b"), "ns/s", "ctx").problem
    assert "not found" in api.inspect_stored_kubeconfig(stored_secret(kubeconfig()), "ns/s", "other").problem
    two = api.inspect_stored_kubeconfig(stored_secret(kubeconfig(contexts=("ctx", "b"))), "ns/s", "ctx")
    assert two.usable and two.notes == ["the kubeconfig holds 2 contexts; the operator uses only 'ctx'"]
    execs = api.inspect_stored_kubeconfig(stored_secret(kubeconfig(user={"exec": {"command": "sh"}})), "ns/s", "ctx")
    assert not execs.usable and "runs a command" in execs.problem
    assert execs.view.server == "https://[fd00::5]:6443" and execs.token is None  # shown, never used
    with pytest.raises(api.BrokenClientConfig, match="runs a command"):
        api.parse_stored_kubeconfig(stored_secret(kubeconfig(user={"exec": {"command": "sh"}})), "ns/s", "ctx")


def test_entry_row_never_holds_the_token():
    cc = clientconfigs.clientconfig_manifest("a", "ns", "v1beta1", "ctx", "a-config")
    entry = lifecycle._entry(cc, stored_secret(kubeconfig(token=BOUND)))
    row = entry.row()
    assert BOUND not in json.dumps(row)
    assert row["auth"] == "token" and row["tokenSource"] == "request" and row["tokenExpiry"] == "2033-05-18T03:33:20Z"
    assert row["operatorLoaded"] is False and row["usable"] and row["problems"] == []


def test_recorded_token_source_wins_and_changing_it_is_an_update():
    cc = clientconfigs.clientconfig_manifest("a", "ns", "v1beta1", "ctx", "a-config", token_source="secret")
    assert api.token_source_of(cc) == "secret"
    assert lifecycle._entry(cc, stored_secret(kubeconfig(token=BOUND))).token_source == "secret"
    other = clientconfigs.clientconfig_manifest("a", "ns", "v1beta1", "ctx", "a-config", token_source="request")
    assert clientconfigs.clientconfig_action(cc, other) == "updated"
    assert not clientconfigs.clientconfig_spec_changed(cc, other)  # no operator restart


def test_operator_annotations():
    assert not api.operator_loaded({"metadata": {"annotations": {api.RESOURCE_HASH_ANNOTATION: "a"}}})
    assert api.operator_loaded({"metadata": {"annotations": {api.RESOURCE_HASH_ANNOTATION: "a",
                                                             api.SECRET_HASH_ANNOTATION: "b"}}})
    assert lifecycle.available_since({"status": {"conditions": [
        {"type": "Available", "status": "True", "lastTransitionTime": "t1"}]}}) == "t1"
    assert lifecycle.available_since({"status": {"conditions": [{"type": "Available", "status": "False"}]}}) is None


def test_in_cluster_service_account(tmp_path):
    (tmp_path / "token").write_text("pod-token-value-123\n")
    (tmp_path / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_text("ops")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443", "HOME": str(tmp_path)}
    doc = kc.load_or_in_cluster([], env, sa_dir=tmp_path)
    view = kc.select_context(doc, None)
    assert view.server == "https://[fd00::1]:443" and view.namespace == "ops"
    assert view.user == {"token": "pod-token-value-123"} and kc.stored_kubeconfig_problem(view) is None
    assert kc.in_cluster({}, tmp_path) is None  # not in a pod
    with pytest.raises(UsageError, match="does not exist"):
        kc.load_or_in_cluster([], {"HOME": str(tmp_path)}, sa_dir=tmp_path)


def test_connection_options_are_parsed_in_one_place(tmp_path, monkeypatch):
    path = tmp_path / "kc"
    doc = kubeconfig(contexts=("a", "b"))
    doc["contexts"][1]["context"]["namespace"] = "ns-b"
    doc["current-context"] = "a"
    path.write_text(yaml.safe_dump(doc))
    conn = common.connect(path, None, None, None)
    assert (conn.context, conn.namespace) == ("a", "k8ssandra-operator")
    conn = common.connect(path, "b", None, "30s")
    assert (conn.context, conn.namespace, conn.timeout) == ("b", "ns-b", (5.0, 30.0))
    assert common.connect(path, "b", "x", "0").timeout == (None, None)
    with pytest.raises(UsageError, match="--request-timeout"):
        common.connect(path, None, None, "soon")
    with pytest.raises(UsageError, match="--namespace is empty"):
        common.connect(path, None, " ", None)


def test_wait_operator_takes_an_optional_value():
    app = typer.Typer()

    @app.command(cls=common.optional_value("--wait-operator", "5m"))
    def cmd(name: str, wait_operator: str = common.WaitOperatorOption) -> None:
        print(name, wait_operator)

    assert CliRunner().invoke(app, ["x"]).output.strip() == "x None"
    assert CliRunner().invoke(app, ["x", "--wait-operator"]).output.strip() == "x 5m"
    assert CliRunner().invoke(app, ["--wait-operator", "x"]).output.strip() == "x 5m"
    assert CliRunner().invoke(app, ["x", "--wait-operator=90s"]).output.strip() == "x 90s"
    assert common.wait_seconds("90s") == 90 and common.wait_seconds(None) is None
    with pytest.raises(UsageError):
        common.wait_seconds("0")
