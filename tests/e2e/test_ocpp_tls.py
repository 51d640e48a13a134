"""OCPP security profile 2 for real: ``evbilling serve --tls-cert --tls-key`` (a subprocess, a
certificate made for the test) and chargers over wss:// with HTTP Basic auth; TLS below 1.2
fails the handshake (RELIABILITY S7)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update
from websockets.exceptions import InvalidStatus

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.engine import make_engine
from evbilling.adapters.db.uow import write_transaction
from evbilling.services.demo import DEMO_CHARGER_PASSWORD

EVBILLING = str(Path(sys.executable).with_name("evbilling"))
PROFILE2 = "DEMO-CP16-AMS"


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_file: Path
    database_url: str

    def url(self, identity: str) -> str:
        return f"wss://localhost:{self.port}/ocpp/{identity}"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 (it is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = _certificate(directory)
    database_url = f"sqlite:///{directory / 'tls.sqlite3'}"
    subprocess.run([EVBILLING, "demo", "seed", "--database-url", database_url], check=True,
                   capture_output=True, timeout=120)
    engine = make_engine(database_url)
    with write_transaction(engine) as conn:
        conn.execute(update(s.chargers).where(s.chargers.c.ocpp_identity == PROFILE2)
                     .values(security_profile=2))
    engine.dispose()
    port = _free_port()
    log = (directory / "serve.log").open("wb")
    proc = subprocess.Popen(
        [EVBILLING, "serve", "--port", str(port), "--database-url", database_url,
         "--tls-cert", str(cert_file), "--tls-key", str(key_file)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "EVBILLING_ENV": "test"})
    tls = TlsServer(port, cert_file, database_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (directory / "serve.log").read_text()[-2000:]
            try:
                context = tls.client_context()
                with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                        context.wrap_socket(raw, server_hostname="localhost") as tls_sock:
                    tls_sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                     b"Connection: close\r\n\r\n")
                    if tls_sock.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "evbilling serve --tls-cert did not start"
            time.sleep(0.3)
        yield tls
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_a_profile_2_charger_boots_over_wss_with_its_password(server: TlsServer) -> None:
    async def boot() -> list[object]:
        async with websockets.connect(server.url(PROFILE2), ssl=server.client_context(),
                                      subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      additional_headers=_basic(PROFILE2,
                                                                DEMO_CHARGER_PASSWORD)) as ws:
            assert ws.subprotocol == "ocpp1.6"
            await ws.send(orjson.dumps([2, "b1", "BootNotification", {
                "chargePointVendor": "evbilling-test", "chargePointModel": "tls"}]).decode())
            answer: list[object] = orjson.loads(await ws.recv())
            return answer

    answer = asyncio.run(boot())
    assert answer[0] == 3 and answer[1] == "b1"
    assert answer[2]["status"] == "Accepted"  # type: ignore[index]


def test_a_wrong_password_over_wss_is_refused_and_audited(server: TlsServer) -> None:
    async def attempt() -> int:
        try:
            async with websockets.connect(server.url(PROFILE2), ssl=server.client_context(),
                                          subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                          additional_headers=_basic(PROFILE2,
                                                                    "not-the-password-0000")):
                return 101
        except InvalidStatus as exc:
            return int(exc.response.status_code)

    assert asyncio.run(attempt()) == 401
    engine = make_engine(server.database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(s.audit_log).where(
            s.audit_log.c.action == "ocpp.connect", s.audit_log.c.outcome == "failure")).all()
    engine.dispose()
    assert any("wrong password" in (r.detail or "") for r in rows)


def _handshake(server: TlsServer, version: ssl.TLSVersion) -> str:
    """A TLS handshake pinned to ``version`` by a client that allows legacy protocols and
    ciphers (so a failure is the server's refusal, not the client's own policy)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(server.ca_file))
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls_sock:
        return str(tls_sock.version())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_fails_the_handshake_and_1_2_passes(server: TlsServer) -> None:
    assert _handshake(server, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        # the client sends its hello (it allows the old protocol); the server ends the
        # handshake (it closes the connection: the client sees EOF, or an alert)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            _handshake(server, old)


def test_plain_ws_to_the_tls_port_does_not_connect(server: TlsServer) -> None:
    async def attempt() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ocpp/{PROFILE2}",
                                      subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      additional_headers=_basic(PROFILE2,
                                                                DEMO_CHARGER_PASSWORD),
                                      open_timeout=5):
            pass

    with pytest.raises((OSError, websockets.exceptions.WebSocketException, TimeoutError)):
        asyncio.run(attempt())
