"""A local HTTPS upstream for tests: its own CA, a certificate for 127.0.0.1, and a record of what it received."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the connection it came on
    fields: list[tuple[str, str]] = field(default_factory=list)  # every header line as sent, repeats included


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    chunks: list[bytes]  # sent as they are, chunked encoding when there is more than one


Responder = Callable[[Received], Reply | None]


@dataclass
class Upstream:
    url: str
    ca_file: Path
    port: int = 0
    received: list[Received] = field(default_factory=list)
    responders: list[Responder] = field(default_factory=list)
    # A request whose path has a /hang segment is received (and recorded) and never answered until this is set.
    release: threading.Event = field(default_factory=threading.Event)

    def last(self) -> Received:
        assert self.received, "the upstream received nothing"
        return self.received[-1]


def _certificates(folder: Path, hosts: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aileron test upstream CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                + [x509.DNSName(h) for h in hosts]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


@contextmanager
def fake_upstream(folder: Path, hosts: tuple[str, ...] = ()) -> Iterator[Upstream]:
    """Serves HTTPS on 127.0.0.1 with a certificate for 127.0.0.1, localhost and `hosts`.

    Each request is recorded; the first responder that returns a Reply answers it, else a JSON echo does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = _certificates(folder, hosts)
    upstream = Upstream(url="", ca_file=ca_file)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            fields = list(self.headers.items())
            received = Received(self.command, self.path, headers, body, peer=self.client_address, fields=fields)
            upstream.received.append(received)
            if "/hang" in self.path.split("?", 1)[0]:
                upstream.release.wait(timeout=120)
                self.close_connection = True
                return
            reply = next((r for r in (f(received) for f in upstream.responders) if r is not None), None)
            if reply is None:
                echo = json.dumps({"ok": True, "method": self.command, "path": self.path}).encode()
                reply = Reply(201 if self.command == "POST" else 200, {"Content-Type": "application/json"}, [echo])
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if len(reply.chunks) == 1:
                self.send_header("Content-Length", str(len(reply.chunks[0])))
                self.end_headers()
                self.wfile.write(reply.chunks[0])
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in reply.chunks:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    upstream.port = int(server.server_address[1])
    upstream.url = f"https://127.0.0.1:{upstream.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        upstream.release.set()
        server.shutdown()
        server.server_close()
