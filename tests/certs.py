"""A throwaway PKI for tests: a CA, a server certificate for 127.0.0.1/localhost and a client certificate.

Made with `cryptography` (a dev dependency) into a directory of PEM files, the format both Kafka 4 (PEM key
and trust stores) and Python's ssl module read.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files of a test PKI."""

    ca: Path  #: the CA certificate: the trust store of brokers and clients
    server_cert: Path  #: server certificate chain (leaf, CA) for 127.0.0.1 and localhost
    server_key: Path  #: its private key (PKCS#8, unencrypted)
    server_keystore: Path  #: key + chain in one file: Kafka's `ssl.keystore.type=PEM` file
    client_cert: Path  #: client certificate (CN=kpimon-client) for mutual TLS
    client_key: Path
    other_ca: Path  #: a CA that signed nothing here: trusting it must fail verification


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """Write a CA, a server certificate (SAN IP 127.0.0.1, DNS localhost) and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("kpimon test CA")
    server_key, server_cert = _leaf(
        ca_key,
        ca_cert,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key, client_cert = _leaf(ca_key, ca_cert, "kpimon-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _, other_cert = _ca("kpimon unrelated CA")
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        server_keystore=directory / "server-keystore.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        other_ca=directory / "other-ca.pem",
    )
    pki.ca.write_bytes(_cert_pem(ca_cert))
    chain = _cert_pem(server_cert) + _cert_pem(ca_cert)
    pki.server_cert.write_bytes(chain)
    pki.server_key.write_bytes(_key_pem(server_key))
    pki.server_keystore.write_bytes(_key_pem(server_key) + chain)
    pki.client_cert.write_bytes(_cert_pem(client_cert) + _cert_pem(ca_cert))
    pki.client_key.write_bytes(_key_pem(client_key))
    pki.other_ca.write_bytes(_cert_pem(other_cert))
    for path in (pki.server_key, pki.server_keystore, pki.client_key):
        path.chmod(0o600)
    return pki
