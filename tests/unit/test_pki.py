"""Sandbox certificates carry what strict TLS verification requires."""
from __future__ import annotations

import socket
import ssl
import stat
import threading

from cryptography import x509

from k8sctl_sandbox.pki import generate_cluster_pki


def test_certificates_are_strict_x509(tmp_path):
    pki = generate_cluster_pki(tmp_path, "c0", ["127.0.0.1"])
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).critical
    leaf = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == \
        ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    assert admin.subject.rfc4514_string() == "O=system:masters,CN=admin"
    # A real handshake: strict client verification of the serving cert for "localhost".
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.serving_cert, pki.serving_key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    client_ctx.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    a, b = socket.socketpair()
    with a, b:
        t = threading.Thread(target=lambda: server_ctx.wrap_socket(a, server_side=True).close())
        t.start()
        with client_ctx.wrap_socket(b, server_hostname="localhost") as tls:
            assert tls.getpeercert()["subject"] == ((("commonName", "kube-apiserver"),),)
        t.join()
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.sa_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
