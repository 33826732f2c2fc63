"""`clientconfig rotate`: a new token for the same service account, verified, the kubeconfig Secret
updated in place and read back, then the old token revoked once nobody holds it; with `dry_run`,
the same plan found by reading only.

Written against `k8sctl.lifecycle`'s model (an `Entry` is a ClientConfig and its Secret).
Stored kubeconfigs are untrusted data: clients built from them are `trusted=False`. Nothing they
say decides what the user's credentials do: the account to mint for is the one the source
cluster confirms (TokenReview), or the one the user names (--serviceaccount, --src-namespace),
and a new token goes to the stored server only once that address is proven to be the source
cluster (`k8sctl.serviceaccounts`).
No token ever leaves this module in a result: only its kind, its expiry and its claims' names.
"""
from __future__ import annotations

import base64
import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from k8sctl import durations, kube, redact, waiting
from k8sctl import kubeconfig as kc
from k8sctl import serviceaccounts as sa
from k8sctl.apis import clientconfig as api
from k8sctl.clientconfigs import (
    DEFAULT_SERVICEACCOUNT,
    MANAGED_BY,
    SA_NAME_ANNOTATION,
    SA_TOKEN_TYPE,
    Registration,
    is_managed,
    secret_manifest,
    verify_new_kubeconfig,
    with_server,
)
from k8sctl.errors import ClusterError, K8sctlError, UsageError
from k8sctl.interrupts import deferred
from k8sctl.lifecycle import (
    MAX_PARALLEL,
    Entry,
    Progress,
    ServiceAccountRef,
    TokenFacts,
    access_review,
    holders_of,
    iso,
    read_entries,
    source_client,
    token_facts,
    wait_operator_loaded,
)

WOULD_ROTATE = "would be rotated"


@dataclass
class RotateOptions:
    names: list[str] = field(default_factory=list)
    all: bool = False
    if_expiring_within: float | None = None
    src_kubeconfig: Path | None = None
    src_context: str | None = None
    token_timeout: float = 60.0
    wait_operator: float | None = None
    dry_run: bool = False
    verify_server: bool = True  # False: --no-verify-server
    serviceaccount: str | None = None  # --serviceaccount (None: not named; the default is the operator's)
    src_namespace: str | None = None  # --src-namespace (None: not named; the default is rotate's namespace)

    def validate(self) -> None:
        if self.all == bool(self.names):
            raise UsageError("name one ClientConfig or more, or pass --all (not both)")
        if self.src_context and len(self.names) != 1:
            raise UsageError("--src-context names one cluster: give a single ClientConfig name with it")
        if not math.isfinite(self.token_timeout) or self.token_timeout <= 0:
            raise UsageError(f"--timeout must be a positive number of seconds (got {self.token_timeout})")
        if any(not n.strip() for n in self.names):
            raise UsageError("a ClientConfig name is empty: give the names of existing ClientConfigs")
        for value, flag in ((self.serviceaccount, "--serviceaccount"), (self.src_namespace, "--src-namespace")):
            if value is not None and not value.strip():
                raise UsageError(f"{flag} is empty: name the service account to rotate (or leave the flag out)")
        if not self.verify_server and self.src_kubeconfig is None:
            raise UsageError("--no-verify-server checks the new token through --src-kubeconfig's address: pass "
                             "--src-kubeconfig too (without it, rotate reaches each cluster at its stored server)")


@dataclass
class _Rotated:
    """What revoking the old token and waiting for the operator need of a rotated ClientConfig (in memory only)."""

    entry: Entry
    src: kube.KubeClient
    old_doc: dict  # at the address the new token was verified at
    minted_at: float
    before_hashes: tuple[str | None, str | None]
    account: ServiceAccountRef  # as confirmed or named, never as claimed


@dataclass
class Rotation:
    name: str
    context: str
    action: str = ""  # rotated, skipped, failed; with --dry-run "would be rotated" for rotated
    reason: str = ""
    token_source: str | None = None
    source_access: str = ""
    source_context: str | None = None
    source_server: str | None = None
    service_account: str | None = None  # namespace/name
    secret: str = ""  # the kubeconfig Secret, namespace/name
    control_plane: str = ""
    verify_at: str | None = None  # where the new token is (or would be) checked
    old_expiry: str | None = None
    new_expiry: str | None = None
    new_token_secret: str | None = None
    old_token_secret: str | None = None
    revoked: bool | None = None
    revocation: str = ""
    both_valid_seconds: float | None = None
    revoked_after_seconds: float | None = None  # from minting the new token to deleting the old token Secret
    operator: str | None = None
    warnings: list[str] = field(default_factory=list)
    # In memory only (never in a result): the source client (closed by `rotate`), and what revocation
    # needs, set together with action "rotated".
    _src: kube.KubeClient | None = field(default=None, repr=False)
    _rotated: _Rotated | None = field(default=None, repr=False)

    @property
    def switches(self) -> bool:
        """The Secret's data changes (or would): the operator restarts to load it."""
        return self.action in ("rotated", WOULD_ROTATE)

    def objects(self) -> list[dict]:
        """Each object the rotation writes (with --dry-run: would write), in order, and why."""
        if not self.switches:
            return []
        would = "would be " if self.action == WOULD_ROTATE else ""
        ns, _, sa = (self.service_account or "").partition("/")
        new: dict
        if self.token_source == "secret":
            new = {"kind": "Secret", "name": f"{ns}/{self.new_token_secret or sa + '-token-<generated>'}",
                   "context": self.source_context, "action": would + "created",
                   "why": f"the new token of service account {self.service_account}, filled by the token controller"}
        else:
            new = {"kind": "TokenRequest", "name": self.service_account, "context": self.source_context,
                   "action": would + "requested", "why": "a new bound token with the old one's lifetime"}
        out = [new, {"kind": "Secret", "name": self.secret, "context": self.control_plane, "action": would + "updated",
                     "why": f"in place, only the token changes, once it authenticates at {self.verify_at}"}]
        if self.old_token_secret:
            out.append({"kind": "Secret", "name": f"{ns}/{self.old_token_secret}", "context": self.source_context,
                        "action": would + "deleted" if self.revoked else "kept",
                        "why": "revokes the old token" if self.revoked else self.revocation})
        return out

    def as_dict(self) -> dict:
        return {"name": self.name, "context": self.context, "action": self.action, "reason": self.reason,
                "tokenSource": self.token_source, "serviceAccount": self.service_account,
                "sourceAccess": self.source_access, "sourceContext": self.source_context,
                "sourceServer": self.source_server, "secret": self.secret,
                "verifiedAt": self.verify_at if self.action == "rotated" else None,
                "oldTokenExpiry": self.old_expiry, "newTokenExpiry": self.new_expiry,
                "newTokenSecret": self.new_token_secret, "oldTokenSecret": self.old_token_secret,
                "revoked": self.revoked, "revocation": self.revocation,
                "bothValidSeconds": None if self.both_valid_seconds is None else round(self.both_valid_seconds, 3),
                "revokedAfterSeconds": None if self.revoked_after_seconds is None
                else round(self.revoked_after_seconds, 3),
                "objects": self.objects(), "restartsOperator": self.switches, "operator": self.operator,
                "warnings": self.warnings}




def _admit(client: kube.KubeClient, entry: Entry, opts: RotateOptions, now: float) -> tuple[Rotation, bool]:
    """The rotation of `entry`, and whether it goes on (False: failed or skipped), decided without network.
    The token's claims decide nothing here but --if-expiring-within (they can only make it skip)."""
    rot = Rotation(entry.name, entry.context, token_source=entry.token_source, control_plane=client.context,
                   secret=f"{entry.namespace}/{entry.secret_name}")
    if not entry.stored.usable:
        rot.action, rot.reason = "failed", entry.stored.problem or "unusable"
        return rot, False
    facts = entry.facts
    rot.old_expiry = iso(facts.expires_at)
    if not entry.token:
        rot.action, rot.reason = "failed", (f"it authenticates with a {entry.auth}, not a service-account token: "
                                            f"register it again with create-clientconfig")
        return rot, False
    if opts.if_expiring_within is not None:
        if facts.expires_at is None:
            rot.action, rot.reason = "skipped", "its token never expires (a token Secret's token)"
            return rot, False
        left = facts.expires_at - now
        if left > opts.if_expiring_within:
            rot.action, rot.reason = "skipped", (f"its token expires in {durations.show(left)}, later than "
                                                 f"--if-expiring-within {durations.show(opts.if_expiring_within)}")
            return rot, False
    return rot, True


def _open_source(rot: Rotation, opts: RotateOptions, entry: Entry, src_doc: dict | None) -> str | None:
    """Connects `rot` to its source cluster; returns the address the new token is checked through
    instead of the stored server (--no-verify-server), or None for the stored server."""
    rot._src, rot.source_access = source_client(entry, src_doc, opts.src_kubeconfig, opts.src_context)
    rot.source_context, rot.source_server = rot._src.context, rot._src.server
    via = None if opts.verify_server or _same_server(rot._src.server, entry.server) else rot._src.server
    rot.verify_at = via or entry.server
    return via


def _same_server(a: str | None, b: str | None) -> bool:
    return (a or "").rstrip("/") == (b or "").rstrip("/")


SELF = "the stored credentials"


@dataclass
class _Trusted:
    """What rotating an entry may rely on, found before any token is minted."""

    account: ServiceAccountRef
    ca: bytes | None = None  # the published CA the stored server was proven with (None: not needed)
    dry_reads: tuple[dict, dict | None] | None = None  # with --dry-run: the mint's access review, the old token Secret

    def checked(self, doc: dict) -> dict:
        """`doc` as the new token is sent with it: trusting only the published CA, when there is one."""
        return sa.with_ca(doc, self.ca) if self.ca else doc


def _decide_account(review: sa.TokenReview, entry: Entry, opts: RotateOptions, namespace: str) -> ServiceAccountRef:
    """The account to mint for: the one the source cluster confirms; else the one the user names or
    the default, when the user named it or the claims agree with the default. Claims never decide alone."""
    named = ServiceAccountRef(opts.src_namespace or namespace, opts.serviceaccount or DEFAULT_SERVICEACCOUNT)
    confirmed = review.account
    if confirmed is not None:
        differs = [f"{flag} {value}" for flag, value, theirs in (
            ("--src-namespace", opts.src_namespace, confirmed.namespace),
            ("--serviceaccount", opts.serviceaccount, confirmed.name)) if value is not None and value != theirs]
        if differs:
            raise ClusterError(f"the source cluster confirms that the stored token is for {confirmed.namespace}/"
                               f"{confirmed.name}, not {' '.join(differs)}: rotate keeps the account; drop or "
                               f"correct the flag")
        return confirmed
    if opts.serviceaccount is not None or opts.src_namespace is not None or entry.facts.account == named:
        return named
    claimed = entry.facts.account
    raise ClusterError(f"{review.why}, and its claims name "
                       f"{f'{claimed.namespace}/{claimed.name}' if claimed else 'no service account'}, not the "
                       f"default {named.namespace}/{named.name}: pass --serviceaccount and --src-namespace to name "
                       f"the account to rotate")


def _settle(rot: Rotation, entry: Entry, opts: RotateOptions, namespace: str, via: str | None) -> _Trusted:
    """The account and, where the new token goes to the stored server, the proof that it is the source
    cluster's: the TokenReview, the CA read and the TCP connect at once, then the TLS handshakes (and the
    dry run's reads) at once. Raises ClusterError saying why not (nothing minted yet)."""
    src = rot._src
    assert src is not None
    _, view = entry.stored.usable_kubeconfig()
    server = entry.server or ""
    timeout = src.timeout[0] if isinstance(src.timeout, tuple) else src.timeout
    seconds = float(timeout or kube.DEFAULT_TIMEOUT[0])
    sock = None
    with ThreadPoolExecutor(max_workers=4) as reads:
        if rot.source_access == SELF:
            # The stored credentials mint for themselves at the stored server: their own identity there.
            account = sa.account_of(src.whoami())
            if account is None:
                raise ClusterError(f"the stored credentials are not a service account's at {server} "
                                   f"(SelfSubjectReview): nothing to rotate; register it again with "
                                   f"create-clientconfig")
            trusted = _Trusted(account)
        else:
            prove = via is None
            guess = opts.src_namespace or entry.facts.namespace or namespace  # where the CA is read at once
            review = reads.submit(sa.review_token, src, entry.token or "")
            ca = reads.submit(sa.published_ca, src, guess) if prove else None
            sock = reads.submit(sa.connect, server, seconds) if prove else None
            try:
                account = _decide_account(review.result(), entry, opts, namespace)
                trusted = _Trusted(account)
                if ca is not None:
                    try:
                        trusted.ca = ca.result() if account.namespace == guess \
                            else sa.published_ca(src, account.namespace)
                    except ClusterError as e:
                        raise ClusterError(_unproven(e, src, account.namespace)) from None
            except BaseException:
                if sock is not None and sock.exception() is None:
                    sock.result().close()
                raise
        rot.service_account = f"{trusted.account.namespace}/{trusted.account.name}"
        proofs = []
        if trusted.ca is not None and sock is not None:
            tls_name = view.cluster.get("tls-server-name") if view else None
            try:
                connected = sock.result()
            except ClusterError as e:
                raise ClusterError(_unproven(e, src, trusted.account.namespace)) from None
            proofs = [reads.submit(sa.prove_server, server, tls_name, trusted.ca, seconds, connected),
                      reads.submit(sa.prove_server, server, tls_name, kc.ca_pem_of(view.cluster) if view else None,
                                   seconds)]
        dry = None
        if opts.dry_run:
            old_name = entry.facts.secret_name if rot.token_source == "secret" else None
            dry = (reads.submit(src.request, "POST", kube.SELF_SUBJECT_ACCESS_REVIEW.path(),
                                _mint_review(rot, trusted.account)),
                   reads.submit(src.get_or_none, kube.SECRET, old_name, trusted.account.namespace)
                   if old_name else None)
        if proofs:
            try:
                proofs[0].result()
            except ClusterError as e:
                raise ClusterError(_unproven(e, src, trusted.account.namespace)) from None
            try:
                proofs[1].result()
            except ClusterError as e:
                raise ClusterError(f"the stored CA does not verify {server}, which is {src.context}'s API server "
                                   f"({e}): the operator could not use it; register it again with "
                                   f"create-clientconfig") from None
        if dry is not None:
            trusted.dry_reads = (dry[0].result(), dry[1].result() if dry[1] else None)
    return trusted


def _unproven(e: ClusterError, src: kube.KubeClient, namespace: str) -> str:
    return (f"{' '.join(str(e).split())} (checked against the CA {src.context} publishes in ConfigMap "
            f"{namespace}/{sa.ROOT_CA_CONFIGMAP}); no token was minted: if only the operator's pods reach the "
            f"stored server, pass --no-verify-server to check the new token through {src.context}'s address "
            f"{src.server} instead")


def _mint_secret_token(src: kube.KubeClient, account: ServiceAccountRef, timeout: float,
                       progress: Progress) -> tuple[str, str]:
    ns, name_of_sa = account.namespace, account.name
    secret = src.create(kube.SECRET, {
        "apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_TYPE,
        "metadata": {"generateName": f"{name_of_sa}-token-", "namespace": ns, "labels": dict(MANAGED_BY),
                     "annotations": {SA_NAME_ANNOTATION: name_of_sa}}}, ns)
    name = secret["metadata"]["name"]

    def filled() -> str | None:
        data = (src.get(kube.SECRET, name, ns).get("data") or {}).get("token")
        return base64.b64decode(data).decode() if data else None

    try:
        token = waiting.until(filled, timeout=timeout, interval=0.2, progress=progress,
                              what=f"waiting for the token controller to fill {ns}/{name}",
                              message=f"token Secret {ns}/{name} in {src.context} was not filled within "
                                      f"{timeout:.0f}s: is kube-controller-manager's token controller running?")
    except BaseException:  # also an interrupt: nothing stores this token, so it must not outlive the run
        with deferred(reraise=False):
            _delete_quietly(src, name, ns)
        raise
    redact.remember(token)
    return token, name


def _request_token(src: kube.KubeClient, account: ServiceAccountRef, facts: TokenFacts) -> tuple[str, float | None]:
    body: dict = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    if facts.expires_at and facts.issued_at and facts.expires_at - facts.issued_at >= 600:
        body["spec"]["expirationSeconds"] = int(facts.expires_at - facts.issued_at)  # the same lifetime as before
    resp = src.request("POST", kube.SERVICEACCOUNT.path(account.namespace, account.name, "token"), body)
    token = resp["status"]["token"]
    redact.remember(token)
    return token, token_facts(token).expires_at


def _delete_quietly(client: kube.KubeClient, name: str, namespace: str) -> None:
    try:
        client.delete(kube.SECRET, name, namespace)
    except K8sctlError:
        pass


def with_token(doc: dict, user_name: str, token: str) -> dict:
    """A copy of kubeconfig `doc` whose user `user_name` carries `token` (everything else kept)."""
    out = copy.deepcopy(doc)
    for u in out.get("users") or []:
        if u.get("name") == user_name:
            u["user"] = {**(u.get("user") or {}), "token": token}
    return out


def _verify_new(entry: Entry, account: ServiceAccountRef, doc: dict, via: str | None,
                progress: Progress) -> Registration:
    """create-clientconfig's check of a kubeconfig before it is stored: it must authenticate as
    `account` at the stored server, or through `via` (--no-verify-server)."""
    reg = Registration(source_context=entry.context, name=entry.name, secret_name=entry.secret_name,
                       context_name=entry.context, src_namespace=account.namespace, server=entry.server or "",
                       server_reason=f"stored in Secret {entry.namespace}/{entry.secret_name}",
                       token_source=entry.token_source or "", service_account=account.name, kubeconfig_doc=doc)
    # The address is either the stored one or (--no-verify-server) --src-kubeconfig's: rotate has
    # no --server to correct.
    hint = (f"--src-kubeconfig and --src-context must name the cluster of {entry.context}" if via else
            f"the stored server is wrong: register {entry.context} again with k8sctl create-clientconfig")
    verify_new_kubeconfig(reg, via, account.namespace, account.name, progress, server_hint=hint)
    return reg


class _ControlPlaneError(ClusterError):
    """A failure of the control plane's Secret, said as it is (no hint about the source's access)."""


def _stored_token(client: kube.KubeClient, entry: Entry, rot: Rotation) -> str | None:
    stored = api.parse_stored_kubeconfig(client.get(kube.SECRET, entry.secret_name, entry.namespace),
                                         rot.secret, entry.context)
    return api.StoredKubeconfig(doc=stored, view=kc.select_context(stored, entry.context)).token


def _after_lost_answer(client: kube.KubeClient, entry: Entry, rot: Rotation, e: K8sctlError, new_token: str,
                       old_token: str | None) -> bool:
    """After a Secret write whose outcome is unknown: read it again. True: it holds the new token (go on as
    written); raises when it holds the old one (the new token may go) or cannot be told (keep everything)."""
    cause = " ".join(str(e).split())
    try:
        found = _stored_token(client, entry, rot)
    except K8sctlError as again:
        found, unreadable = None, " ".join(str(again).split())
    else:
        unreadable = ""
    if found == new_token:
        rot.warnings.append(f"the answer to the write of Secret {rot.secret} was lost ({cause}): outcome unknown "
                            f"until it was read again, and it holds the new token")
        return True
    if found is not None and found == old_token:
        raise _ControlPlaneError(f"the answer to the write of Secret {rot.secret} was lost ({cause}); read again, "
                                 f"it still holds the old token")
    what = f"reading it again failed too ({unreadable})" if unreadable else "read again, it holds neither token"
    left = (f"the new token Secret {account_namespace(rot)}/{rot.new_token_secret} is left in place (it may be "
            f"stored there)" if rot.new_token_secret else "the new token may be stored there")
    raise _Unknown(f"the outcome of the write of Secret {rot.secret} is unknown: its answer was lost ({cause}) "
                   f"and {what}; {left}: check the Secret (clientconfig verify) and run rotate again")


class _Unknown(_ControlPlaneError):
    """The Secret may hold the new token: nothing this run made may be taken back."""


def account_namespace(rot: Rotation) -> str:
    return (rot.service_account or "").partition("/")[0]


def _rotate_one(client: kube.KubeClient, entry: Entry, opts: RotateOptions, src_doc: dict | None,
                namespace: str, now: float, progress: Progress) -> Rotation:
    rot, going = _admit(client, entry, opts, now)
    if not going:
        return rot
    old_doc, view = entry.stored.usable_kubeconfig()
    facts = entry.facts
    via = _open_source(rot, opts, entry, src_doc)
    src = rot._src
    assert src is not None
    before_hashes = api.operator_hashes(entry.clientconfig)
    switched = writing = False
    account: ServiceAccountRef | None = None
    try:
        trusted = _settle(rot, entry, opts, namespace, via)
        account = trusted.account
        progress(f"{entry.name}: getting a new token for {account.subject}")
        if rot.token_source == "secret":
            new_token, rot.new_token_secret = _mint_secret_token(src, account, opts.token_timeout, progress)
            rot.old_token_secret = facts.secret_name
        else:
            new_token, new_exp = _request_token(src, account, facts)
            rot.new_expiry = iso(new_exp)
        minted_at = time.monotonic()
        new_doc = with_token(old_doc, view.user_name, new_token)
        rot.warnings += _verify_new(entry, account, trusted.checked(new_doc), via, progress).warnings
        progress(f"{entry.name}: updating Secret {rot.secret} in place")
        writing = True
        try:
            _write_secret(client, entry, new_doc)
        except K8sctlError as e:
            if not kube.outcome_unknown(e):
                raise _ControlPlaneError(" ".join(str(e).split())) from None
            _after_lost_answer(client, entry, rot, e, new_token, entry.token)
        switched = True
        writing = False
        # Verify what is stored, not what was sent: read it back through the one parser.
        stored = api.parse_stored_kubeconfig(client.get(kube.SECRET, entry.secret_name, entry.namespace),
                                             rot.secret, entry.context)
        if api.StoredKubeconfig(doc=stored, view=kc.select_context(stored, entry.context)).token != new_token:
            raise ClusterError(f"Secret {rot.secret} changed while it was being rotated (another writer?)")
        _verify_new(entry, account, trusted.checked(stored), via, progress)
    except K8sctlError as e:
        why = " ".join(str(e).split()) if isinstance(e, _ControlPlaneError) else _source_hint(e, rot)
        if switched:
            rot.action, rot.reason = "failed", f"{why}; Secret {rot.secret} was updated, the old credential was kept"
        elif isinstance(e, _Unknown):
            rot.action, rot.reason = "failed", why
        else:
            if rot.new_token_secret and account is not None:  # nothing switched to it: take the unused credential back
                _delete_quietly(src, rot.new_token_secret, account.namespace)
            rot.action, rot.reason = "failed", f"{why}; Secret {rot.secret} was not changed"
        return rot
    except KeyboardInterrupt:  # the unused token Secret goes, unless the Secret may hold it already
        if rot.new_token_secret and account is not None and not switched and not writing:
            with deferred(reraise=False):
                _delete_quietly(src, rot.new_token_secret, account.namespace)
        raise
    rot.action = "rotated"
    rot._rotated = _Rotated(entry, src, trusted.checked(old_doc) if via is None else with_server(old_doc, via),
                            minted_at, before_hashes, account)
    return rot


def _mint_verb(rot: Rotation) -> str:
    return "request tokens" if rot.token_source == "request" else "create Secrets"


_MINT_RIGHTS = ("pass --src-kubeconfig, or for TokenRequest grant serviceaccounts/token create as in "
                "examples/rotate-cronjob/data-plane.yaml")


def _source_hint(e: K8sctlError, rot: Rotation) -> str:
    text = " ".join(str(e).split())
    if rot.source_access != SELF:
        return text
    if isinstance(e, kube.ApiError) and e.status == 403:
        text += f" (the stored credentials may not {_mint_verb(rot)} for themselves: {_MINT_RIGHTS})"
    elif isinstance(e, kube.Unreachable) and not e.tls:
        text += (" (without --src-kubeconfig, rotate reaches the cluster at the stored server: if only the "
                 "operator's pods can reach it, pass --src-kubeconfig and --no-verify-server)")
    return text


def _write_secret(client: kube.KubeClient, entry: Entry, new_doc: dict) -> None:
    """Server-side apply of the new kubeconfig into the same Secret (never delete-then-create), with
    the resourceVersion read as precondition so a concurrent change is not overwritten."""
    secret = entry.secret
    if secret is None:  # a usable entry was read with its Secret
        raise api.BrokenClientConfig(f"Secret {entry.namespace}/{entry.secret_name} not found")
    meta = secret["metadata"]
    if is_managed(secret):
        body = secret_manifest(entry.secret_name, entry.namespace, kc.dump(new_doc))
        body["type"] = secret.get("type", body["type"])
    else:  # not ours: change the one key, take over nothing else (labels, type stay theirs)
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": entry.secret_name, "namespace": entry.namespace},
                "data": {api.KUBECONFIG_KEY: base64.b64encode(kc.dump(new_doc).encode()).decode()}}
    body["metadata"]["resourceVersion"] = meta["resourceVersion"]
    client.apply(kube.SECRET, body, force=True)




def _why_kept(rot: Rotation, account: ServiceAccountRef, facts: TokenFacts, still_using: list[str]) -> str | None:
    """Why the old token is not revoked, as far as the token itself tells (None: see `_why_not_deleted`)."""
    if rot.token_source != "secret":
        return (f"a TokenRequest token cannot be revoked: the old one stays valid until {rot.old_expiry}"
                if rot.old_expiry else "a TokenRequest token cannot be revoked")
    if not facts.secret_name:
        return "the old token names no token Secret: nothing to delete"
    if still_using:
        return (f"kept the old token Secret {account.namespace}/{facts.secret_name}: ClientConfig "
                f"{', '.join(still_using)} still use(s) it (rotate them too, e.g. --all)")
    return None


def _why_not_deleted(account: ServiceAccountRef, secret_name: str, old: dict | None,
                     old_token: str | None) -> str | None:
    """Why the old token Secret, as read, is not deleted (None: it is a token Secret of the account, the
    confirmed or named one, and holds exactly the stored token: the claims alone never pick what is deleted)."""
    where = f"{account.namespace}/{secret_name}"
    if old is None:
        return f"the old token Secret {where} is already gone"
    annotations = (old.get("metadata") or {}).get("annotations") or {}
    if old.get("type") != SA_TOKEN_TYPE or annotations.get(SA_NAME_ANNOTATION) != account.name:
        return f"{where} is not a token Secret of {account.name}: not deleted"
    token = (old.get("data") or {}).get("token") or ""
    try:
        held = base64.b64decode(token).decode()
    except ValueError:
        held = ""
    if not old_token or held != old_token:
        return f"{where} does not hold the old stored token: not deleted"
    return None


def _revoke(rot: Rotation, rotated: _Rotated, still_using: list[str], deleted: set, progress: Progress) -> None:
    entry, src, account = rotated.entry, rotated.src, rotated.account
    facts = entry.facts
    key = (entry.server, account.namespace, facts.secret_name)
    if key in deleted:  # several ClientConfigs shared it: deleted once, for all of them
        rot.revoked, rot.revocation = True, f"deleted token Secret {account.namespace}/{facts.secret_name}"
        return
    name = facts.secret_name or ""
    kept = _why_kept(rot, account, facts, still_using)
    if kept is None:
        kept = _why_not_deleted(account, name, src.get_or_none(kube.SECRET, name, account.namespace), entry.token)
    if kept is not None:
        rot.revoked, rot.revocation = False, kept
        return
    progress(f"{entry.name}: revoking the old token (deleting token Secret {account.namespace}/{name})")
    src.delete(kube.SECRET, name, account.namespace)
    deleted.add(key)
    rot.revoked_after_seconds = time.monotonic() - rotated.minted_at
    rot.revoked = True
    rot.revocation = f"deleted token Secret {account.namespace}/{name}"


def _until_rejected(rot: Rotation, rotated: _Rotated, timeout: float = 15.0) -> float | None:
    """Seconds from minting the new token until the old one is rejected (401), seen from here.

    kube-apiserver caches successful token authentications for 10 s, so a deleted token
    Secret's token keeps working for up to that long: rotate says when it stopped."""
    def rejected() -> bool | None:
        try:
            with kube.KubeClient(rotated.old_doc, rot.context, trusted=False, timeout=(2.0, 2.0),
                                 source="the old kubeconfig") as old:
                old.whoami()
        except kube.ApiError as e:
            return True if e.status == 401 else None
        except K8sctlError:
            return False  # cannot tell from here (unreachable): no figure
        return None

    try:
        seen = waiting.until(rejected, timeout=timeout, interval=0.1, message="old token still accepted")
    except waiting.TimedOut:
        rot.revocation += f"; the old token was still accepted {timeout:.0f}s later"
        return None
    return time.monotonic() - rotated.minted_at if seen else None


def _mint_review(rot: Rotation, account: ServiceAccountRef) -> dict:
    """The access review of what minting needs: create a token Secret, or a TokenRequest for the account."""
    if rot.token_source == "secret":
        return access_review(account.namespace, "", "secrets")
    return access_review(account.namespace, "", "serviceaccounts", subresource="token", name=account.name)


def _plan_one(client: kube.KubeClient, entry: Entry, opts: RotateOptions, src_doc: dict | None, namespace: str,
              now: float) -> tuple[Rotation, ServiceAccountRef | None, dict | None]:
    """What `_rotate_one` would do, its account and the old token Secret, found by reading only: the same
    checks of account and address, and the source asked whether its credentials may mint (an access
    review), never to mint."""
    rot, going = _admit(client, entry, opts, now)
    if not going:
        return rot, None, None
    facts = entry.facts
    via = _open_source(rot, opts, entry, src_doc)
    src = rot._src
    assert src is not None
    old_name = facts.secret_name if rot.token_source == "secret" else None
    if via is not None:
        rot.warnings.append(f"--no-verify-server: the new token would be checked through {via}; the stored server "
                            f"{entry.server} would not be contacted")
    try:
        trusted = _settle(rot, entry, opts, namespace, via)
    except K8sctlError as e:
        rot.action, rot.reason = "failed", _source_hint(e, rot)
        return rot, None, None
    assert trusted.dry_reads is not None
    review, old_secret = trusted.dry_reads
    account = trusted.account
    if not (review.get("status") or {}).get("allowed"):
        rot.action = "failed"
        rot.reason = (f"{rot.source_access} may not {_mint_verb(rot)} in namespace {account.namespace} of "
                      f"{src.context}: rotating would fail (403)"
                      + (f"; {_MINT_RIGHTS}" if rot.source_access == SELF else ""))
        return rot, None, None
    rot.action, rot.old_token_secret = WOULD_ROTATE, old_name
    return rot, account, old_secret


def _dry_run(client: kube.KubeClient, namespace: str, entries: list[Entry], opts: RotateOptions,
             src_doc: dict | None, now: float, progress: Progress) -> list[Rotation]:
    """Every rotation as `rotate` would do it, each cluster read at once; no token, no write."""
    progress(f"reading what rotating {len(entries)} ClientConfig(s) needs")
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(entries)))) as pool:
        plans = list(pool.map(lambda e: _plan_one(client, e, opts, src_doc, namespace, now), entries))
    for rot, _, _ in plans:
        if rot._src is not None:
            rot._src.close()
    going = {rot.name for rot, _, _ in plans if rot.action == WOULD_ROTATE}
    if going:
        everyone = read_entries(client, namespace)  # who would still hold each old token
        by_name = {e.name: e for e in entries}
        for rot, account, old_secret in plans:
            if rot.action == WOULD_ROTATE and account is not None:
                entry = by_name[rot.name]
                still_using = [n for n in holders_of(everyone, entry.server, entry.facts) if n not in going]
                kept = _why_kept(rot, account, entry.facts, still_using) or _why_not_deleted(
                    account, rot.old_token_secret or "", old_secret, entry.token)
                rot.revoked = kept is None
                rot.revocation = kept or f"would delete token Secret {account.namespace}/{rot.old_token_secret}"
    return [rot for rot, _, _ in plans]


def rotate(client: kube.KubeClient, namespace: str, opts: RotateOptions,
           progress: Progress = lambda s: None) -> list[Rotation]:
    """Rotate each ClientConfig's token: new token, verified, Secret updated in place and read back;
    only once every Secret is switched, the old token Secrets nobody uses any more are deleted.
    With `dry_run`, what it would do, found by reading only: no token is minted, nothing written."""
    opts.validate()
    src_doc = kc.load([opts.src_kubeconfig]) if opts.src_kubeconfig else None
    entries = read_entries(client, namespace, opts.names or None)
    if not entries:
        return []
    if src_doc is not None:  # bad input is found before anything is rotated
        for entry in entries:
            context = opts.src_context or entry.context
            if entry.token and context not in kc.context_names(src_doc):
                raise UsageError(f"--src-kubeconfig has no context {context!r} for ClientConfig {entry.name}: "
                                 f"pass --src-context, or a kubeconfig naming its contexts like the ClientConfigs")
    now = time.time()
    if opts.dry_run:
        return _dry_run(client, namespace, entries, opts, src_doc, now, progress)
    rotations = []
    try:
        for entry in entries:  # one after another: each may restart the operator; the first failure stops none
            try:
                rotations.append(_rotate_one(client, entry, opts, src_doc, namespace, now, progress))
            except K8sctlError as e:
                rotations.append(Rotation(entry.name, entry.context, action="failed", reason=" ".join(str(e).split())))
        done = [(r, r._rotated) for r in rotations if r._rotated is not None]  # action "rotated"
        if done:
            after = read_entries(client, namespace)  # who still holds each old token, after the switch
            deleted: set = set()
            for r, rotated in done:
                try:
                    _revoke(r, rotated, holders_of(after, rotated.entry.server, rotated.entry.facts), deleted,
                            progress)
                except K8sctlError as e:
                    r.revoked, r.revocation = False, f"could not delete the old token Secret: {' '.join(str(e).split())}"
            revoked = [(r, rotated) for r, rotated in done if r.revoked_after_seconds is not None]
            if revoked:
                progress("waiting until the old tokens are rejected (the API server caches them up to 10 s)")
                with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(revoked))) as pool:
                    waits = [(r, pool.submit(_until_rejected, r, rotated)) for r, rotated in revoked]
                    for r, wait in waits:
                        r.both_valid_seconds = wait.result()
            if opts.wait_operator is not None:
                for r, rotated in done:
                    try:
                        wait_operator_loaded(client, rotated.entry.version, r.name, namespace, rotated.before_hashes,
                                             opts.wait_operator, progress)
                        r.operator = "loaded"
                    except waiting.TimedOut as e:
                        r.operator = f"timeout: {e}"
    finally:
        for r in rotations:
            if r._src is not None:
                r._src.close()
    return rotations
