"""Certificates and keys for one sandbox cluster.

The rules follow what Go and strict OpenSSL contexts (VERIFY_X509_STRICT, the
default from Python 3.13) require: CA with critical basic constraints and key
usage plus a subject key id; leaves with an authority key id, key usage, EKU
and, for the server, a SAN (Go ignores the CN for host checks).
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k8sctl.errors import SandboxError

_VALIDITY = _dt.timedelta(days=365)


def _file(name: str) -> property:
    return property(lambda self: self.directory / name)


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of one cluster's PKI files (all PEM)."""

    directory: Path

    ca_cert = _file("ca.crt")
    ca_key = _file("ca.key")
    serving_cert = _file("apiserver.crt")
    serving_key = _file("apiserver.key")
    sa_key = _file("sa.key")       # signs service-account tokens (apiserver and token controller)
    sa_pub = _file("sa.pub")
    admin_cert = _file("admin.crt")  # CN=admin, O=system:masters
    admin_key = _file("admin.key")
    kcm_cert = _file("kcm.crt")      # CN=system:kube-controller-manager
    kcm_key = _file("kcm.key")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    # Keys are credentials: created 0600, never world-readable even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _key_usage(ca: bool) -> x509.KeyUsage:
    # EC keys sign only (no key encipherment); a CA also signs certificates and CRLs.
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = _dt.datetime.now(_dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def generate_cluster_pki(directory: Path, cluster_name: str, hosts: list[str]) -> ClusterPKI:
    """Create a CA, serving cert, admin and controller-manager client certs and
    the service-account signing key for one cluster, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = ClusterPKI(directory)

    ca_key = _new_key()
    ca_subject = _name(f"{cluster_name}-ca")
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(pki.ca_key, _key_pem(ca_key))

    sans: list[x509.GeneralName] = []
    for h in ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
              "kubernetes.default.svc.cluster.local", *hosts]:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    for extra_ip in ("127.0.0.1", "10.0.0.1"):
        ip = x509.IPAddress(ipaddress.ip_address(extra_ip))
        if ip not in sans:
            sans.append(ip)

    leaves = [
        (pki.serving_cert, pki.serving_key, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans),
        (pki.admin_cert, pki.admin_key, _name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, None),
        (pki.kcm_cert, pki.kcm_key, _name("system:kube-controller-manager"), ExtendedKeyUsageOID.CLIENT_AUTH, None),
    ]
    for cert_path, key_path, subject, usage, leaf_sans in leaves:
        cert, key = _leaf(ca_cert, ca_key, subject, usage, leaf_sans)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, _key_pem(key))

    sa_key = _new_key()
    _write_private(pki.sa_key, _key_pem(sa_key))
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def issue_serving_cert(pki: ClusterPKI, cert_path: Path, key_path: Path, hosts: list[str], cn: str) -> None:
    """A serving certificate from the cluster's CA for `hosts` (IPs or DNS names), e.g. for a webhook."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SandboxError(f"{pki.ca_key} is not the EC key this sandbox made: run 'k8sctl sandbox down' and up again")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert, key = _leaf(ca_cert, ca_key, _name(cn), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, _key_pem(key))
