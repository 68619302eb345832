"""Fixtures for the fleet tests: a real PostgreSQL server, a real SMTP server, databases."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import Engine

from deltaport.fleet.db import init_db
from tests.fixtures.services import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PostgresServer:
    """A running PostgreSQL server owned by the test session."""

    port: int
    data: Path
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def admin(self, sql: str) -> None:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        name = f"t{next(self.counter)}"
        self.admin(f"CREATE DATABASE {name}")
        return name


def _as_postgres(*args: str) -> None:
    subprocess.run(["su", "postgres", "-c", " ".join(args)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Start PostgreSQL 15 in a temp folder (initdb as user postgres), stop it by pg_ctl."""
    root = Path(tempfile.mkdtemp(prefix="dp-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    _as_postgres(
        str(PG_BIN / "initdb"),
        "-D",
        str(data),
        "-U postgres -A trust -E UTF8",
        "--locale=C.UTF-8 --no-sync",
    )
    opts = f"'-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off'"
    _as_postgres(
        str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", opts, "start"
    )
    try:
        yield PostgresServer(port=port, data=data)
    finally:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m fast -w stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fleet.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url(server.new_database())


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The fleet database at db_url, migrated to head."""
    eng = init_db(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = init_db(sqlite_url)
    yield eng
    eng.dispose()


# --- SMTP ----------------------------------------------------------------------


@dataclass
class SmtpServer:
    """A running aiosmtpd server and the messages it received."""

    host: str
    port: int
    received: list[Message]
    logins: list[str]
    lock: threading.Lock
    cert: Path | None = None

    def messages(self) -> list[Message]:
        with self.lock:
            return list(self.received)


class _Collect:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.server.lock:
            self.server.received.append(message_from_bytes(envelope.original_content))
        return "250 OK"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp.crt", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server (aiosmtpd) on a free port, collecting what it receives."""
    from aiosmtpd.controller import Controller

    server = SmtpServer("127.0.0.1", free_port(), [], [], threading.Lock())
    controller = Controller(_Collect(server), hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_tls_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """An SMTP server requiring STARTTLS and a login (user 'dp', password 'secret')."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = SmtpServer("127.0.0.1", free_port(), [], [], threading.Lock(), cert)

    def authenticator(_srv: Any, _sess: Any, _env: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"dp" and data.password == b"secret"
        if ok:
            server.logins.append(data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(
        _Collect(server),
        hostname=server.host,
        port=server.port,
        tls_context=ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
