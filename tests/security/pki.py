"""A throw-away PKI made with the `openssl` CLI: a private CA and server certificates it signs.

pki = Pki(tmp_path)                              # ca.pem, ca.key
good = pki.server("localhost", ip="127.0.0.1")   # SAN DNS:localhost, IP:127.0.0.1
wrong = pki.server("elsewhere.invalid")          # same CA, another host
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class ServerCert:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path


class Pki:
    """A private CA in `directory`; `server()` issues certificates signed by it."""

    def __init__(self, directory: Path) -> None:
        if OPENSSL is None:
            raise RuntimeError("the openssl CLI is needed to make test certificates")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.pem"
        self._ca_key = directory / "ca.key"
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=market-monitor test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(self._ca_key), "-out", str(self.ca),
        )  # fmt: skip

    def server(self, dns: str, *, ip: str | None = None) -> ServerCert:
        """A server certificate for `dns` (and `ip`, when given) signed by the CA."""
        stem = self.directory / dns.replace(".", "_")
        key, csr, cert, ext = (stem.with_suffix(s) for s in (".key", ".csr", ".pem", ".ext"))
        san = f"DNS:{dns}" + (f",IP:{ip}" if ip else "")
        ext.write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        )
        self._openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={dns}",
            "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self._ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        key.chmod(0o600)
        return ServerCert(cert=cert, key=key)

    def _openssl(self, *args: str) -> None:
        assert OPENSSL is not None
        subprocess.run(
            [OPENSSL, *args], check=True, capture_output=True, timeout=30, cwd=self.directory
        )
