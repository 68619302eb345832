"""https with verification against a real TLS registry, not only unit logic.

Local hosts (localhost, 127.0.0.0/8) always use plain http, so the real Docker
Distribution registry serves TLS from inside a network namespace, on a veth address
that is not loopback, with a certificate (SAN IP) signed by a CA made here. Checked:
by default the certificate is refused with a clear "not trusted" error and exit code
and nothing is written; with the CA (``ca_file`` / ``--ca-file``) copy and inspect
work and agree with skopeo; with ``insecure`` they work too. Namespace, link and
registry are removed in teardown, also when a test fails.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deltaport.demo.processes import stop_process
from deltaport.errors import PlainHttpError, TransferError, UntrustedCertificateError
from deltaport.oci import TransportOptions, copy_image, inspect_image
from tests.fixtures.netns import Netns, close_namespace, join_with_veth, open_namespace
from tests.oci.conftest import ImageFiles
from tests.oci.skopeo import skopeo

DELTAPORT = str(Path(sys.executable).parent / "deltaport")
PORT = 5000
READY_TIMEOUT = 15.0  # seconds for the registry to answer https
CLI_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "COLUMNS": "400"}


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate for one IP address, as PEM files."""

    ca_file: Path
    cert_dir: Path  # holds ca.crt, the layout skopeo's --cert-dir wants
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_pki(folder: Path, ip: str) -> Pki:
    """A self-signed CA and a server certificate for IP (SAN IPAddress) signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("deltaport test CA"))
        .issuer_name(_name("deltaport test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(ip)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    cert_dir = folder / "certs.d"
    cert_dir.mkdir()
    _write_pem(cert_dir / "ca.crt", ca_pem)
    return Pki(
        ca_file=_write_pem(folder / "ca.pem", ca_pem),
        cert_dir=cert_dir,
        server_cert=_write_pem(folder / "server.pem",
                               cert.public_bytes(serialization.Encoding.PEM)),
        server_key=_write_pem(folder / "server.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())),
    )


@dataclass(frozen=True)
class TlsRegistry:
    """A TLS registry at HOST (ns_ip:PORT) in a namespace, and the PKI that signed it."""

    host: str
    storage: Path
    pki: Pki

    def ref(self, name: str) -> str:
        return f"docker://{self.host}/{name}"

    def repository(self, name: str) -> Path:
        return self.storage / "docker/registry/v2/repositories" / name


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    """A namespace joined to this one by a veth pair with non-loopback addresses."""
    ns = Netns.for_this_process("tls", 232)
    if (reason := open_namespace(ns)) is not None:
        pytest.fail(f"the TLS test needs a network namespace (root, `ip netns add`): {reason}")
    try:
        join_with_veth(ns)
        yield ns
    finally:
        close_namespace(ns)


def _wait_https(url: str, ca_file: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    context = ssl.create_default_context(cafile=str(ca_file))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"TLS registry exited {proc.returncode}: {log.read_text()}")
        try:
            httpx.get(url, timeout=0.5, verify=context)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"TLS registry did not answer {url} within {READY_TIMEOUT}s: {log.read_text()}")


@pytest.fixture(scope="module")
def tls_registry(netns: Netns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRegistry]:
    """The Docker Distribution registry serving https inside the namespace."""
    work = tmp_path_factory.mktemp("tls-registry")
    pki = make_pki(work / "pki", netns.ns_ip)
    storage = work / "storage"
    cfg = work / "config.yml"
    cfg.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage:\n  filesystem: {{rootdirectory: {storage}}}\n"
        f"http:\n  addr: {netns.ns_ip}:{PORT}\n"
        f"  tls:\n    certificate: {pki.server_cert}\n    key: {pki.server_key}\n"
    )
    log_path = work / "registry.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns.name, "docker-registry", "serve",
                                 str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_https(f"https://{netns.ns_ip}:{PORT}/v2/", pki.ca_file, proc, log_path)
        yield TlsRegistry(f"{netns.ns_ip}:{PORT}", storage, pki)
    finally:
        stop_process(proc)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `deltaport image ARGS` program."""
    return subprocess.run([DELTAPORT, "image", *args], capture_output=True, text=True,
                          timeout=60, env=CLI_ENV)


def _assert_not_trusted(message: str, host: str) -> None:
    assert host in message
    assert "not trusted" in message
    assert "--ca-file" in message and "--insecure" in message


def test_untrusted_certificate_is_refused_clearly(tls_registry: TlsRegistry,
                                                  image_files: ImageFiles) -> None:
    host = tls_registry.host
    options = TransportOptions(retries=3)
    started = time.monotonic()
    with pytest.raises(UntrustedCertificateError) as push:
        copy_image(image_files.oci, tls_registry.ref("untrusted/app:v1"), options)
    _assert_not_trusted(str(push.value), host)
    assert isinstance(push.value, TransferError)
    with pytest.raises(UntrustedCertificateError) as read:
        inspect_image(tls_registry.ref("untrusted/app:v1"), options)
    _assert_not_trusted(str(read.value), host)
    assert time.monotonic() - started < 5  # a certificate failure is not retried

    done = run_cli("inspect", f"docker://{host}/app:v1")
    assert done.returncode == UntrustedCertificateError.exit_code == 5, done.stderr
    _assert_not_trusted(done.stderr, host)
    assert "Traceback" not in done.stderr
    done = run_cli("copy", "-q", image_files.oci, tls_registry.ref("untrusted-cli/app:v1"))
    assert done.returncode == 5, done.stderr
    _assert_not_trusted(done.stderr, host)

    assert not tls_registry.repository("untrusted").exists()
    assert not tls_registry.repository("untrusted-cli").exists()


def test_ca_file_makes_copy_and_inspect_work(tls_registry: TlsRegistry,
                                             image_files: ImageFiles) -> None:
    image = image_files.image
    ca_file = tls_registry.pki.ca_file
    result = copy_image(image_files.oci, tls_registry.ref("trusted/app:v1"),
                        TransportOptions(ca_file=ca_file))
    assert result.image_id == image.image_id
    info = inspect_image(tls_registry.ref("trusted/app:v1"), TransportOptions(ca_file=ca_file))
    assert info["image_id"] == image.image_id
    assert [layer["diff_id"] for layer in info["layers"]] == image.diff_ids

    done = run_cli("copy", "-q", "--ca-file", str(ca_file), image_files.docker_archive,
                   tls_registry.ref("trusted-cli/app:v1"))
    assert done.returncode == 0, done.stderr
    done = run_cli("inspect", "--ca-file", str(ca_file), tls_registry.ref("trusted-cli/app:v1"))
    assert done.returncode == 0, done.stderr
    cli_info = json.loads(done.stdout)
    assert cli_info["image_id"] == image.image_id
    assert [layer["diff_id"] for layer in cli_info["layers"]] == image.diff_ids

    for name in ("trusted/app:v1", "trusted-cli/app:v1"):  # skopeo verifies TLS itself
        raw = skopeo("inspect", "--cert-dir", str(tls_registry.pki.cert_dir), "--config",
                     "--raw", tls_registry.ref(name))
        config = json.loads(raw)
        assert config["rootfs"]["diff_ids"] == image.diff_ids
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.image_id


def test_insecure_skips_verification(tls_registry: TlsRegistry, image_files: ImageFiles) -> None:
    image = image_files.image
    options = TransportOptions(insecure=True)
    result = copy_image(image_files.oci_archive, tls_registry.ref("insecure/app:v1"), options)
    assert result.image_id == image.image_id
    info = inspect_image(tls_registry.ref("insecure/app:v1"), options)
    assert [layer["diff_id"] for layer in info["layers"]] == image.diff_ids
    done = run_cli("inspect", "--insecure", "--quick", tls_registry.ref("insecure/app:v1"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["image_id"] == image.image_id


def test_unreadable_ca_file_is_a_usage_error(tls_registry: TlsRegistry, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("not a certificate\n")
    done = run_cli("inspect", "--ca-file", str(bogus), tls_registry.ref("trusted/app:v1"))
    assert done.returncode == 2, done.stderr
    assert str(bogus) in done.stderr


def test_a_plain_http_registry_off_loopback_says_use_insecure(
        netns: Netns, tmp_path: Path) -> None:
    """It failed with '[SSL: WRONG_VERSION_NUMBER]' (issue 13); now it says what to do."""
    cfg = tmp_path / "config.yml"
    cfg.write_text("version: 0.1\nlog: {level: error}\n"
                   f"storage:\n  filesystem: {{rootdirectory: {tmp_path / 'storage'}}}\n"
                   f"http:\n  addr: {netns.ns_ip}:{PORT + 1}\n")
    host = f"{netns.ns_ip}:{PORT + 1}"
    with open(tmp_path / "registry.log", "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns.name, "docker-registry", "serve",
                                 str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                httpx.get(f"http://{host}/v2/", timeout=0.5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(PlainHttpError, match=r"speaks plain HTTP.*--insecure"):
            inspect_image(f"docker://{host}/app:v1", TransportOptions(retries=3))
        assert time.monotonic() - started < 5  # not retried: it cannot mend itself
        done = run_cli("inspect", f"docker://{host}/app:v1")
        assert done.returncode == PlainHttpError.exit_code, done.stderr
        assert "plain HTTP" in done.stderr and "WRONG_VERSION" not in done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    finally:
        stop_process(proc)
