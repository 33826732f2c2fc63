"""`clientconfig rotate` trusts nothing a cluster says (issue 16): a planted ClientConfig with forged
token claims and an attacker's server, an answer lost after the Secret write, interrupts.

The attacker has write access to the control plane's operator namespace (the README's threat
model): it plants a Secret and ClientConfig whose token is an unsigned JWT naming a privileged
account of a data plane, and whose server is its own TLS listener on loopback (a certificate of a
CA of its own, from the sandbox PKI), which records every Authorization header it receives.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from typer.testing import CliRunner

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as api
from k8sctl.cli import app
from k8sctl.clientconfigs import clientconfig_manifest
from k8sctl_sandbox import pki
from tests import leakguard
from tests.integration.test_lifecycle import CC, DEST, SRC, Env, as_json, make_env, status_of, token_of, whoami

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(sandbox, admins, namespace_factory):
    return make_env(sandbox, admins, namespace_factory, "tr")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(claims: dict, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A JWT of `claims`: unsigned (what an attacker can make) or ES256-signed with `key`."""
    header = {"alg": "ES256" if key else "none", "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "." + b64url(b"forged")
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def legacy_claims(namespace: str, account: str, secret: str, **more) -> dict:
    return {"iss": "kubernetes/serviceaccount", "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": account,
            "kubernetes.io/serviceaccount/service-account.uid": str(uuid.uuid4()),
            "sub": f"system:serviceaccount:{namespace}:{account}", **more}


class TLSServer:
    """An HTTPS server on loopback with `cert`/`key`, serving `handler` in threads from `with` on."""

    def serve(self, handler: type[BaseHTTPRequestHandler], cert: Path, key: Path) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class Attacker(TLSServer):
    """An HTTPS server that answers like an API server confirming whoever the token claims to be."""

    def __init__(self, directory: Path):
        own = pki.generate_cluster_pki(directory, "attacker", ["127.0.0.1"])
        self.ca = own.ca_cert.read_bytes()
        self.authorizations: list[str] = []
        self.requests: list[str] = []
        attacker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                attacker.requests.append(f"{self.command} {self.path}")
                if self.headers.get("Authorization"):
                    attacker.authorizations.append(self.headers["Authorization"])
                claims = _claims_of(self.headers.get("Authorization") or "")
                if self.path.endswith("/selfsubjectreviews"):
                    doc: dict = {"status": {"userInfo": {"username": claims.get("sub", "")}}}
                elif self.path.endswith("/selfsubjectaccessreviews"):
                    doc = {"status": {"allowed": True}}
                elif self.command == "PATCH":
                    doc = json.loads(body or b"{}")
                else:
                    doc = {"major": "1", "minor": "37"}
                out = json.dumps(doc).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = answer

        self.serve(Handler, own.serving_cert, own.serving_key)


def _claims_of(authorization: str) -> dict:
    from k8sctl import tokens

    return tokens.jwt_claims(authorization.removeprefix("Bearer ")) or {}


def plant(env: Env, name: str, context: str, server: str, ca: bytes, token: str) -> None:
    """What the attacker writes in the control plane's operator namespace: a Secret and a ClientConfig."""
    doc = kc.build_kubeconfig(cluster_name=context, server=server, ca_pem=ca, user_name=context, token=token,
                              context_name=context)
    env.dest.apply(kube.SECRET, {"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": f"{name}-config", "namespace": env.ns},
                                 "data": {"kubeconfig": base64.b64encode(kc.dump(doc).encode()).decode()}}, force=True)
    env.dest.apply(CC, clientconfig_manifest(name, env.ns, "v1beta1", context, f"{name}-config"), force=True)


def secret_names(client: kube.KubeClient, namespace: str) -> set[str]:
    return {s["metadata"]["name"] for s in client.list(kube.SECRET, namespace)}


def privileged_account(admin: kube.KubeClient) -> str:
    """An existing service account of kube-system (the controllers' own, with wide rights)."""
    names = sorted(sa["metadata"]["name"] for sa in admin.list(kube.SERVICEACCOUNT, "kube-system"))
    return next(n for n in names if n != "default")


def one_failed_line(r, name: str) -> str:
    lines = r.stdout.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"failed {name}: "), r.output
    return lines[0]


def test_rotate_refuses_forged_claims_and_an_unproven_server_and_sends_the_attacker_nothing(env, tmp_path):
    c = env.sandbox.clusters[SRC]
    victim = privileged_account(env.src)
    with Attacker(tmp_path / "attacker") as attacker:
        # 1. Claims naming kube-system/<a controller's account>: refused before anything is minted.
        plant(env, "forged", c.context, attacker.url, attacker.ca,
              jwt(legacy_claims("kube-system", victim, f"{victim}-token-x")))
        # 2. Claims naming the operator's own account, at the attacker's address: the address is not proven.
        plant(env, "elsewhere", c.context, attacker.url, attacker.ca,
              jwt(legacy_claims(env.ns, "k8ssandra-operator", "k8ssandra-operator-token")))
        before = {"kube-system": secret_names(env.src, "kube-system"), env.ns: secret_names(env.src, env.ns)}
        stored = {n: env.dest.get(kube.SECRET, f"{n}-config", env.ns)["metadata"]["resourceVersion"]
                  for n in ("forged", "elsewhere")}
        for dry in ((), ("--dry-run",)):
            r = env.k8sctl("clientconfig", "rotate", "forged", "--src-kubeconfig", c.kubeconfig, *dry)
            line = one_failed_line(r, "forged")
            assert "--serviceaccount" in line and "--src-namespace" in line, line
            r = env.k8sctl("clientconfig", "rotate", "elsewhere", "--src-kubeconfig", c.kubeconfig, *dry)
            line = one_failed_line(r, "elsewhere")
            assert attacker.url in line and "--no-verify-server" in line, line
        assert attacker.authorizations == [] and attacker.requests == []
    assert {"kube-system": secret_names(env.src, "kube-system"), env.ns: secret_names(env.src, env.ns)} == before
    assert {n: env.dest.get(kube.SECRET, f"{n}-config", env.ns)["metadata"]["resourceVersion"]
            for n in ("forged", "elsewhere")} == stored


def test_rotate_all_refuses_a_planted_clientconfig_whose_context_matches_a_real_one(env, tmp_path):
    """all.yaml holds the contexts of clusters 1 and 2; the planted ClientConfig names cluster 2's."""
    one, two = env.sandbox.clusters[SRC], env.sandbox.clusters[2]
    all_yaml = tmp_path / "all.yaml"
    kc.write_private(all_yaml, kc.dump(kc.merge([kc.read_file(Path(one.kubeconfig)),
                                                 kc.read_file(Path(two.kubeconfig))])))
    env.create("legit", "--context-name", one.context)
    admin2 = env.admins[2]
    victim = privileged_account(admin2)
    with Attacker(tmp_path / "attacker") as attacker:
        plant(env, "planted", two.context, attacker.url, attacker.ca,
              jwt(legacy_claims("kube-system", victim, f"{victim}-token-x")))
        before = secret_names(admin2, "kube-system")
        r = env.k8sctl("clientconfig", "rotate", "--all", "--src-kubeconfig", str(all_yaml), "-o", "json")
        assert r.exit_code == 1, r.output
        by = {x["name"]: x for x in as_json(r)["rotations"]}
        assert by["legit"]["action"] == "rotated", by["legit"]
        assert by["planted"]["action"] == "failed" and "--serviceaccount" in by["planted"]["reason"], by["planted"]
        assert attacker.authorizations == []
    assert secret_names(admin2, "kube-system") == before
    stored = api.parse_stored_kubeconfig(env.dest.get(kube.SECRET, "legit-config", env.ns), "legit-config", one.context)
    assert whoami(stored, one.context) == f"system:serviceaccount:{env.ns}:k8ssandra-operator"


def test_an_expired_token_rotates_with_the_account_named_and_a_confirmed_one_is_not_overridden(env):
    c = env.sandbox.clusters[SRC]
    env.create("exp")
    good = env.stored("exp")
    # An expired token of the operator's account, signed by the cluster's own key: the cluster rejects it.
    key = serialization.load_pem_private_key(
        (Path(env.sandbox.directory) / "clusters" / c.name / "sa.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    expired = jwt(legacy_claims(env.ns, "k8ssandra-operator", "k8ssandra-operator-token",
                                iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), key)
    leakguard.add(expired)
    doc = json.loads(json.dumps(good))
    doc["users"][0]["user"]["token"] = expired
    env.put("exp", kc.dump(doc), managed=True)
    assert status_of(doc, "ctx-exp") == 401
    # A confirmed account is the account: a different --serviceaccount is refused, nothing written.
    env.create("ok")
    rv = env.dest.get(kube.SECRET, "ok-config", env.ns)["metadata"]["resourceVersion"]
    r = env.k8sctl("clientconfig", "rotate", "ok", "--src-kubeconfig", c.kubeconfig, "--src-context", c.context,
                   "--serviceaccount", "someone-else")
    line = one_failed_line(r, "ok")
    assert f"{env.ns}/k8ssandra-operator" in line and "someone-else" in line, line
    assert env.dest.get(kube.SECRET, "ok-config", env.ns)["metadata"]["resourceVersion"] == rv

    r = env.k8sctl("clientconfig", "rotate", "exp", "--src-kubeconfig", c.kubeconfig, "--src-context", c.context,
                   "--serviceaccount", "k8ssandra-operator", "--src-namespace", env.ns, "-o", "json")
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "rotated" and rot["serviceAccount"] == f"{env.ns}/k8ssandra-operator", rot
    # The old token Secret's token is not the stored (expired) one: not deleted on the claims' word.
    assert rot["revoked"] is False and env.src.get_or_none(kube.SECRET, "k8ssandra-operator-token", env.ns)
    assert whoami(env.stored("exp"), "ctx-exp") == f"system:serviceaccount:{env.ns}:k8ssandra-operator"


# --- an answer lost after the Secret write -------------------------------------------------

class LosingProxy(TLSServer):
    """An HTTPS proxy in front of the control plane's API server (a certificate of its CA, the
    admin's client certificate upstream) that forwards every request, and for the server-side
    apply of Secret `lose` forwards it, lets the server apply it, and never answers."""

    def __init__(self, directory: Path, cluster_dir: Path, upstream_port: int, lose: str):
        own = pki.ClusterPKI(cluster_dir)
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "proxy.crt", directory / "proxy.key"
        pki.issue_serving_cert(own, cert, key, ["127.0.0.1"], "proxy")
        self.upstream = ssl.create_default_context(cafile=str(own.ca_cert))
        self.upstream.load_cert_chain(str(own.admin_cert), str(own.admin_key))
        self.port_up, self.lose = upstream_port, lose
        self.lost: list[str] = []
        self.stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPSConnection("127.0.0.1", proxy.port_up, context=proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if self.command == "PATCH" and f"/secrets/{proxy.lose}?" in self.path:
                    proxy.lost.append(f"{resp.status}")
                    proxy.stop.wait(60)  # applied upstream; the answer never comes
                    self.close_connection = True
                    return
                self.send_response(resp.status)
                for k in ("Content-Type", "Retry-After"):
                    if resp.getheader(k):
                        self.send_header(k, resp.getheader(k))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

        self.serve(Handler, cert, key)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        super().__exit__(*exc)


def test_an_answer_lost_after_the_secret_write_keeps_the_new_token_and_says_so(env, tmp_path):
    dest = env.sandbox.clusters[DEST]
    env.create("lost")
    old = env.stored("lost")
    with LosingProxy(tmp_path / "proxy", Path(env.sandbox.directory) / "clusters" / dest.name, dest.port,
                     "lost-config") as proxy:
        doc = kc.read_file(Path(dest.kubeconfig))
        doc["clusters"][0]["cluster"]["server"] = proxy.url
        through = tmp_path / "through-proxy.yaml"
        kc.write_private(through, kc.dump(doc))
        r = CliRunner().invoke(app, ["clientconfig", "rotate", "lost", "--kubeconfig", str(through), "-n", env.ns,
                                     "--request-timeout", "3s", "-o", "json"])
        assert proxy.lost == ["200"]  # the server applied it; the answer was lost
    assert r.exit_code == 0, r.output
    rot = as_json(r)["rotations"][0]
    assert rot["action"] == "rotated", rot
    assert any("outcome" in w and "unknown" in w for w in rot["warnings"]) and "unknown" in r.stderr, r.output
    stored = env.stored("lost")
    assert token_of(stored) != token_of(old)
    assert env.src.get_or_none(kube.SECRET, rot["newTokenSecret"], env.ns) is not None
    time.sleep(11)  # past the API server's 10 s cache of the token's last successful review
    assert whoami(stored, "ctx-lost") == f"system:serviceaccount:{env.ns}:k8ssandra-operator"


# --- interrupts ------------------------------------------------------------------------------

@pytest.fixture
def token_controller_held(env):
    """The token controller may not fill token Secrets in the test's namespace of the source cluster
    (a ValidatingAdmissionPolicy refusing its updates there): rotate waits for ever."""
    name = f"hold-{env.ns}"
    group = "admissionregistration.k8s.io"
    policy = kube.Resource(group, "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", namespaced=False)
    binding = kube.Resource(group, "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding",
                            namespaced=False)
    env.src.apply(policy, {"apiVersion": f"{group}/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
                           "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [
                               {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                                "resources": ["secrets"]}]},
                               "validations": [{"expression":
                                                "request.userInfo.username != 'system:kube-controller-manager'"}]}})
    env.src.apply(binding, {"apiVersion": f"{group}/v1", "kind": "ValidatingAdmissionPolicyBinding",
                            "metadata": {"name": name},
                            "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {
                                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.ns}}}}})
    # Until the policy is in force: a token Secret made now stays empty.
    probe = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
             "metadata": {"generateName": "probe-", "annotations": {
                 "kubernetes.io/service-account.name": "k8ssandra-operator"}}}
    deadline = time.monotonic() + 30
    while True:
        made = env.src.create(kube.SECRET, probe, env.ns)["metadata"]["name"]
        time.sleep(1.5)
        filled = (env.src.get(kube.SECRET, made, env.ns).get("data") or {}).get("token")
        env.src.delete(kube.SECRET, made, env.ns)
        if not filled:
            break
        assert time.monotonic() < deadline, "the admission policy did not take effect"
    yield
    env.src.delete(binding, name)
    env.src.delete(policy, name)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupt_while_waiting_for_the_token_controller_deletes_the_unused_token_secret(
        env, token_controller_held, signum):
    env.create("int")
    before = secret_names(env.src, env.ns)
    stored = env.dest.get(kube.SECRET, "int-config", env.ns)["metadata"]["resourceVersion"]
    proc = subprocess.Popen([sys.executable, "-m", "k8sctl", "clientconfig", "rotate", "int", "--kubeconfig",
                             env.sandbox.clusters[DEST].kubeconfig, "-n", env.ns, "--timeout", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not secret_names(env.src, env.ns) - before:  # the new token Secret: rotate waits for it now
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    leakguard.check(out + err)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert err.strip().splitlines() == ["error: interrupted"], err
    assert secret_names(env.src, env.ns) == before
    assert env.dest.get(kube.SECRET, "int-config", env.ns)["metadata"]["resourceVersion"] == stored
