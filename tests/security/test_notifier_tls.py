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


def test_the_notifier_takes_its_acl_user_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[redis] username_file` and `username_env` name the ACL user as `password_file` names
    the password (issue #3: "password or ACL user via *_env / *_file"): the notifier logs in as
    that user; a user Redis does not know is refused (78); two of the three names are refused
    at load, naming them."""
    from tests.alerts.redis_server import RedisServer

    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user notifier on >s3cret resetkeys ~mm-ntls:* -@all +hgetall +ping +hello +auth\n"
    )
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "user").write_text("notifier\n")
    (tmp_path / "nobody").write_text("nobody\n")
    password = f'password_file = "{tmp_path / "password"}"\n'
    with RedisServer(None, "--aclfile", str(acl)) as server:
        by_file = notify_config(tmp_path, server.url, f'{password}username_file = "user"')
        assert main(["silence", "--config", str(by_file), "list"]) == 0
        monkeypatch.setenv("MM_NOTIFY_USER", "notifier")
        by_env = notify_config(tmp_path, server.url, f'{password}username_env = "MM_NOTIFY_USER"')
        assert main(["silence", "--config", str(by_env), "list"]) == 0
        unknown = notify_config(tmp_path, server.url, f'{password}username_file = "nobody"')
        assert main(["silence", "--config", str(unknown), "list"]) == 78
        capsys.readouterr()
        both = notify_config(
            tmp_path, server.url, f'{password}username = "notifier"\nusername_file = "user"'
        )
        assert main(["silence", "--config", str(both), "list"]) == 78
    said = capsys.readouterr().err
    assert "redis.username: set one of username, username_env, username_file" in said


def test_a_user_name_file_of_two_lines_is_refused_naming_it(tmp_path: Path) -> None:
    """A `username_file` holding two lines, or a name with a space, is refused by `config
    check` and at load (78, naming the field); before, both passed and every login failed
    later with an authentication error that did not say why."""
    from monitor import credentials
    from monitor.errors import ConfigError

    for text in ("monitor\nextra\n", "monitor user\n"):
        (tmp_path / "user").write_text(text)
        with pytest.raises(ConfigError, match=r"redis\.username_file: not a user name"):
            credentials.login_name("redis.username", "", "", str(tmp_path / "user"))
        conf = tmp_path / "monitor.toml"
        conf.write_text(f'[redis]\nusername_file = "{tmp_path / "user"}"\n')
        conf.chmod(0o600)
        assert main(["config", "check", "--config", str(conf)]) == 78
