"""The stand-in cluster's certificate authority and its API server's serving certificate.

A cluster has a CA its clients trust: kubeconfigs carry it as
``certificate-authority-data``, every pod finds it at
``/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`` (the ``kube-root-ca.crt``
ConfigMap the root-CA publisher puts in each namespace), and the API server's serving
certificate is signed by it for the names a client may dial: ``127.0.0.1``, ``localhost``
and ``kubernetes.default.svc`` (kubeadm adds the same ``kubernetes*`` names).

Both are made anew when a :class:`Cluster` is made (an EC P-256 key each, a few
milliseconds): the stand-in's objects, tokens and CA live and die together.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The names the serving certificate is good for (kube-apiserver's own, and loopback).
SERVING_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = ("127.0.0.1",)
CA_DAYS = 3650
SERVING_DAYS = 365


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A self-signed CA (``CN=kubernetes``, as kubeadm names the cluster CA)."""

    def __init__(self) -> None:
        self._key = _key()
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        #: The CA certificate, PEM: ``ca.crt`` of kubeconfigs and pods.
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def serving(self, ips: Sequence[str] = ()) -> Pair:
        """A serving certificate for the API server, signed by this CA, good for
        :data:`SERVING_NAMES`, :data:`SERVING_IPS` and ``ips``."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVING_NAMES]
        addresses = dict.fromkeys([*SERVING_IPS, *ips])
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in addresses]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SERVING_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem(key))

    def server_context(self, ips: Sequence[str] = ()) -> ssl.SSLContext:
        """A TLS server context with a fresh serving certificate (HTTP/1.1 only, so Go
        clients do not try HTTP/2, which the server does not speak)."""
        pair = self.serving(ips)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.set_alpn_protocols(["http/1.1"])
        # ssl loads a certificate chain only from files: written, loaded, removed.
        with tempfile.TemporaryDirectory(prefix="durapod-tls-") as scratch:
            cert, key = Path(scratch, "tls.crt"), Path(scratch, "tls.key")
            cert.write_bytes(pair.cert_pem + self.cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(pair.key_pem)
            context.load_cert_chain(cert, key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA (and only it)."""
        return ssl.create_default_context(cadata=self.cert_pem.decode())
