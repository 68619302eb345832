"""TLS for the hub and its clients: a starter certificate pair, client contexts, failures.

``deltaport hub init --self-signed HOSTS`` writes, for a first try without a PKI:

- ``ca.crt``  a one-off CA certificate: what agents and operators trust (``ca_file``);
- ``hub.crt`` the hub's certificate, signed by that CA, with the names and IPs given
  plus ``localhost``, ``127.0.0.1`` and ``::1`` as subject alternative names;
- ``hub.key`` its private key (mode 0600).

The CA's own private key is never written: nobody can sign another certificate that
the devices would trust, so renewing means running ``hub init`` again (and giving the
devices the new ``ca.crt``). A separate CA, rather than one self-signed leaf, is what
strict verifiers (OpenSSL's X509_STRICT, Python 3.13 defaults) accept.

Clients verify with :func:`client_context`: the CA file alone when one is configured
(a pin: no public CA can vouch for the hub), else the system trust store. Nothing here
imports the fleet, the hub or the agent; both sides use it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deltaport.errors import StateError, StorageError, UsageError

CERT_DAYS = 825  # validity of a starter certificate (the longest browsers accept)
HOSTS_MAX = 100  # names and IPs in one --self-signed list
ALWAYS_HOSTS = ("localhost", "127.0.0.1", "::1")  # in every starter certificate
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class StarterPair:
    """A CA certificate and the hub certificate and key it signed, all PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def parse_hosts(text: str) -> tuple[str, ...]:
    """``"hub.example,10.0.0.5"`` as checked names and IPs, ALWAYS_HOSTS appended.

    Raises:
        UsageError: an entry is neither a DNS name nor an IP address, or too many.
    """
    given = [h.strip() for h in text.split(",") if h.strip()]
    if len(given) > HOSTS_MAX:
        raise UsageError(f"--self-signed takes at most {HOSTS_MAX} names, got {len(given)}")
    for host in given:
        if not (_is_ip(host) or _DNS_NAME.fullmatch(host)):
            raise UsageError(f"--self-signed: {host!r} is neither a DNS name nor an IP address")
    return tuple(dict.fromkeys([*given, *ALWAYS_HOSTS]))


def is_loopback(host: str) -> bool:
    """Whether HOST (a name or an IP) stays on this machine: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts
    ]
    return x509.SubjectAlternativeName(names)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def starter_pair(hosts: Sequence[str], *, days: int = CERT_DAYS,
                 now: dt.datetime | None = None) -> StarterPair:
    """A fresh CA and a hub certificate for HOSTS (pure but for the random keys)."""
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"deltaport hub starter CA {start:%Y-%m-%d %H:%M}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return StarterPair(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=leaf.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context: CA_FILE alone when given, else the system trust store.

    Raises:
        UsageError: CA_FILE cannot be read or holds no certificate.
    """
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use CA file {ca_file}: {exc}") from exc


def check_server_files(cert: Path, key: Path) -> None:
    """Load the hub's certificate and key as a server would, to fail early and clearly.

    Raises:
        UsageError: a file is missing or unreadable, or the key does not match the cert.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"hub TLS: cannot load certificate {cert} with key {key}: {exc}") \
            from exc


def tls_failure(exc: BaseException | None) -> ssl.SSLError | None:
    """The SSL error somewhere in EXC's chain of causes (what httpx wraps), or None."""
    seen = 0
    while exc is not None and seen < 20:  # a bounded walk: chains can loop
        if isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def describe_tls_failure(error: ssl.SSLError) -> str:
    """What went wrong in words: an untrusted certificate, or no TLS at all."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({error.verify_message or error})"
    return f"the TLS handshake failed ({error.reason or error}; is it really serving https?)"


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write DATA to a new file PATH atomically; never replace an existing file.

    The data goes to a fresh temp file in the same folder (created 0600, then chmod-ed
    to MODE), which is then hard-linked to PATH: the link fails if PATH exists.

    Raises:
        StateError: PATH exists. StorageError: the folder or file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, mode)
            os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except FileExistsError as exc:
        raise StateError(f"{path} exists already: refusing to overwrite it") from exc
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
