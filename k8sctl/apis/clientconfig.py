"""What k8sctl knows of k8ssandra-operator's ClientConfig API, in one place.

A ClientConfig (config.k8ssandra.io) names a Secret whose key `kubeconfig` holds
a kubeconfig, and the context in it (`spec.contextName`, else the ClientConfig's
own name) that K8ssandraCluster datacenters refer to as `k8sContext`.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.errors import ClusterError

GROUP = "config.k8ssandra.io"
VERSIONS = ("v1beta1", "v1alpha1")  # the operator serves v1beta1; old docs show v1alpha1
KIND = "ClientConfig"
KUBECONFIG_KEY = "kubeconfig"
# Stamped by the operator when it loads a ClientConfig (controllers/config/clientconfig_controller.go).
RESOURCE_HASH_ANNOTATION = "k8ssandra.io/resource-hash"
SECRET_HASH_ANNOTATION = "k8ssandra.io/secret-hash"
# Recorded by k8sctl at creation: how the stored token was made ("secret": a legacy token
# Secret, revocable by deleting it; "request": TokenRequest, bound and expiring), so that
# `clientconfig rotate` makes the new one the same way. Annotation-only: no operator restart.
TOKEN_SOURCE_ANNOTATION = "k8sctl/token-source"
TOKEN_SOURCES = ("secret", "request")


class BrokenClientConfig(ClusterError):
    """A ClientConfig that cannot give a client: its Secret or kubeconfig is missing, invalid or refused."""


def resource(version: str) -> kube.Resource:
    return kube.Resource(GROUP, version, "clientconfigs", KIND)


def context_of(cc: dict) -> str:
    return (cc.get("spec") or {}).get("contextName") or cc["metadata"]["name"]


def secret_name_of(cc: dict) -> str:
    return ((cc.get("spec") or {}).get("kubeConfigSecret") or {}).get("name") or ""


def not_installed(context: str) -> ClusterError:
    return ClusterError(f"the ClientConfig CRD ({GROUP}) is not installed in {context}: "
                        f"is k8ssandra-operator installed there?")


def not_installed_in_destination(context: str) -> ClusterError:
    """create-clientconfig's word for it: the cluster it registers into."""
    return ClusterError(f"the ClientConfig CRD ({GROUP}) is not installed in {context}: "
                        f"install k8ssandra-operator in the destination cluster first")


def list_clientconfigs(client: kube.KubeClient, namespace: str) -> list[dict]:
    return list_with_version(client, namespace)[1]


def list_with_version(client: kube.KubeClient, namespace: str,
                      not_served: Callable[[str], ClusterError] = not_installed) -> tuple[str, list[dict]]:
    """The served ClientConfig version and the ClientConfigs of `namespace`: one LIST where
    v1beta1 is served."""
    for version in VERSIONS:
        try:
            return version, client.list(resource(version), namespace)
        except kube.NotFound:
            continue  # this version is not served; try the older one
    raise not_served(client.context)


def get_with_version(client: kube.KubeClient, name: str, namespace: str,
                     known: str | None = None) -> tuple[str, dict | None]:
    """The served ClientConfig version and the object `name` (or None), in one GET when v1beta1 is served."""
    for version in [known] if known else list(VERSIONS):
        try:
            return version, client.get(resource(version), name, namespace)
        except kube.NotFound as e:
            # A missing object comes with Status details naming its kind; a version or
            # resource type that is not served does not.
            if e.details_kind:
                return version, None
    served = [v for v in client.api_versions(GROUP) if v in VERSIONS]
    if not served:
        raise not_installed_in_destination(client.context)
    return served[0], client.get_or_none(resource(served[0]), name, namespace)


@dataclass
class StoredKubeconfig:
    """What a ClientConfig's Secret holds, looked at without network and without trusting it.

    `problem` makes it unusable (the operator exits at start-up on it); `notes` are
    oddities that do not (several contexts). `view` is set whenever the context resolves,
    even when refused, so a listing can still name its server and kind of credentials.
    """

    doc: dict | None = None
    view: kc.ContextView | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.problem is None and self.doc is not None

    @property
    def token(self) -> str | None:
        token = (self.view.user.get("token") if self.view else None) if self.usable else None
        return str(token).strip() if token else None

    def usable_kubeconfig(self) -> tuple[dict, kc.ContextView]:
        """The kubeconfig and its resolved context, to build a client from; a BrokenClientConfig
        naming the problem when it is not usable."""
        if self.problem is not None or self.doc is None or self.view is None:
            raise BrokenClientConfig(self.problem or "the Secret holds no usable kubeconfig")
        return self.doc, self.view


def inspect_stored_kubeconfig(secret: dict | None, secret_ref: str, context: str) -> StoredKubeconfig:
    """The one parser of a ClientConfig's Secret: every problem named (never the content). Pure."""
    if secret is None:
        return StoredKubeconfig(problem=f"Secret {secret_ref} not found")
    raw = (secret.get("data") or {}).get(KUBECONFIG_KEY)
    if not raw:
        return StoredKubeconfig(problem=f"Secret {secret_ref} has no {KUBECONFIG_KEY!r} key")
    try:
        doc = kc.load_yaml(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        return StoredKubeconfig(problem=f"Secret {secret_ref}: key {KUBECONFIG_KEY!r} is not valid base64")
    except yaml.YAMLError:
        return StoredKubeconfig(problem=f"Secret {secret_ref}: key {KUBECONFIG_KEY!r} is not valid YAML")
    if not isinstance(doc, dict):
        return StoredKubeconfig(problem=f"Secret {secret_ref} does not hold a kubeconfig")
    try:
        view = kc.select_context(doc, context, f"the kubeconfig in Secret {secret_ref}")
    except Exception as e:  # UsageError from the kubeconfig checks: a problem of the stored data
        return StoredKubeconfig(problem=str(e))
    notes = []
    names = kc.context_names(doc)
    if len(names) > 1:
        notes.append(f"the kubeconfig holds {len(names)} contexts; the operator uses only {context!r}")
    problem = kc.stored_kubeconfig_problem(view)
    if problem:
        return StoredKubeconfig(view=view, problem=f"the kubeconfig in Secret {secret_ref} is refused: {problem}",
                                notes=notes)
    return StoredKubeconfig(doc=doc, view=view, notes=notes)


def parse_stored_kubeconfig(secret: dict | None, secret_ref: str, context: str) -> dict:
    """The kubeconfig a ClientConfig's Secret holds, checked for `context` and for inline credentials only.

    Pure; every problem is a BrokenClientConfig whose message names it (never the content).
    """
    doc, _ = inspect_stored_kubeconfig(secret, secret_ref, context).usable_kubeconfig()
    return doc


def operator_hashes(cc: dict | None) -> tuple[str | None, str | None]:
    """The operator's (resource-hash, secret-hash) stamps on a ClientConfig: both set once it loaded it."""
    annotations = ((cc or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(RESOURCE_HASH_ANNOTATION), annotations.get(SECRET_HASH_ANNOTATION)


def operator_loaded(cc: dict | None) -> bool:
    return all(operator_hashes(cc))


def token_source_of(cc: dict | None) -> str | None:
    """How k8sctl made the stored token, as recorded at creation (None for older ClientConfigs)."""
    value = (((cc or {}).get("metadata") or {}).get("annotations") or {}).get(TOKEN_SOURCE_ANNOTATION)
    return value if value in TOKEN_SOURCES else None


def read_stored_kubeconfig(client: kube.KubeClient, cc: dict, namespace: str) -> dict:
    """Read and check the kubeconfig of ClientConfig `cc` (one GET of its Secret)."""
    secret_name = secret_name_of(cc)
    if not secret_name:
        raise BrokenClientConfig("spec.kubeConfigSecret.name is empty")
    secret = client.get_or_none(kube.SECRET, secret_name, namespace)
    return parse_stored_kubeconfig(secret, f"{namespace}/{secret_name}", context_of(cc))
