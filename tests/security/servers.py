"""Private TLS servers on free loopback ports: Redis on `--tls-port`, Mosquitto TLS listeners.

Both build on the plain test servers (`tests.alerts.redis_server`, `tests.feeds.mosquitto_server`)
and clean up the same way: use them as context managers.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from tests.alerts.redis_server import RedisServer, free_port
from tests.feeds.mosquitto_server import MosquittoServer
from tests.security.pki import ServerCert


class TlsRedisServer(RedisServer):
    """`redis-server --port 0 --tls-port P` with `cert`; clients are not asked for certificates.

    `args` are extra server options (`--requirepass`, `--aclfile`, ...).
    """

    def __init__(self, ca: Path, cert: ServerCert, *args: str) -> None:
        port = free_port()
        tls = (
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
        )  # fmt: skip
        super().__init__(port, *tls, *args)
        self.url = f"rediss://127.0.0.1:{port}/0"
        self._ca = ca

    def _answers_ping(self) -> bool:
        # Readiness only: the server's own certificate may be for another host.
        context = ssl.create_default_context(cafile=str(self._ca))
        context.check_hostname = False
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                context.wrap_socket(raw) as sock,
            ):
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))


class TlsMosquitto(MosquittoServer):
    """Mosquitto with its plain loopback listener plus one TLS listener per named certificate
    (`tls_ports[name]`); with `password_file`, anonymous clients are refused."""

    def __init__(
        self,
        directory: Path,
        ca: Path,
        certs: dict[str, ServerCert],
        *,
        password_file: Path | None = None,
    ) -> None:
        super().__init__(directory)
        self.tls_ports = {name: free_port() for name in certs}
        lines = []
        for name, cert in certs.items():
            lines += [
                f"listener {self.tls_ports[name]} 127.0.0.1",
                f"cafile {ca}",
                f"certfile {cert.cert}",
                f"keyfile {cert.key}",
                "require_certificate false",
            ]
        text = self.config.read_text()
        if password_file is not None:
            text = text.replace("allow_anonymous true", "allow_anonymous false")
            lines.append(f"password_file {password_file}")
        self.config.write_text(text + "\n".join(lines) + "\n")
