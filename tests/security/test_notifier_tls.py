"""The notifier on a Redis behind TLS with a private CA, and as an ACL user: `[redis] ca_file`
and `username`, as the daemon's `[redis]` has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from tests.security.pki import Pki
from tests.security.servers import TlsRedisServer

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def notify_config(tmp: Path, url: str, extra: str = "") -> Path:
    path = tmp / "notify.toml"
    path.write_text(
        f'[redis]\nurl = "{url}"\nstream = "mm-ntls:alerts"\n{extra}\n'
        '[[receivers]]\nname = "chat"\nurl = "json://127.0.0.1:9/chat"\n'
        '[route]\nreceivers = ["chat"]\n'
    )
    return path


def test_the_notifier_trusts_the_ca_it_is_given_and_says_which_setting_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `ca_file` the notifier talks to the rediss:// server (as the ACL user `username`
    names); without it, the untrusted certificate is a configuration error (78, naming
    `ca_file`), not "unreachable" (69, which systemd would retry for ever)."""
    pki = Pki(tmp_path / "pki")
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user notifier on >s3cret resetkeys ~mm-ntls:* -@all +hgetall +ping +hello +auth\n"
    )
    with TlsRedisServer(
        pki.ca, pki.server("localhost", ip="127.0.0.1"), "--aclfile", str(acl)
    ) as server:
        (tmp_path / "password").write_text("s3cret\n")
        settings = f'username = "notifier"\npassword_file = "{tmp_path / "password"}"\n'
        trusted = notify_config(tmp_path, server.url, f'{settings}ca_file = "{pki.ca}"')
        assert main(["silence", "--config", str(trusted), "list"]) == 0
        capsys.readouterr()
        untrusted = notify_config(tmp_path, server.url, settings)
        assert main(["silence", "--config", str(untrusted), "list"]) == 78
    err = capsys.readouterr().err
    assert "TLS certificate is not trusted (set [redis] ca_file" in err
