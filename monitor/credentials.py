"""Secrets: where they come from (an environment variable or a file, never the config file), the
`Secret` value that never shows itself, and the checks of a credential file's permissions.

`secret` reads `*_env` or `*_file` for the daemon, the notifier and the commands that log in to
Redis; a systemd credential (`/run/credentials/UNIT/NAME`, LoadCredential=) is a file that
exists only while its unit runs, and the errors say so (`absent_unit_credential`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from monitor.errors import ConfigError


class Secret(str):
    """A string that never shows itself in a repr, a log line or `config check`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"

    def masked(self) -> str:
        """What to print instead of the value."""
        return "***"


def secret(
    where: str,
    *,
    env_name: str,
    file_name: str,
    environ: dict[str, str] | None = None,
    fields: tuple[str, str] | None = None,
) -> Secret | None:
    """Resolve a secret from `*_env` or `*_file`; None when neither is set. ConfigError when
    the variable or file is missing or empty, naming `{where}_env` or `{where}_file` (or
    `fields`, the names of the two, e.g. a command's options). A relative `file_name` is read
    from the current folder: `load` has made a config's absolute."""
    env = os.environ if environ is None else environ
    env_field, file_field = fields or (f"{where}_env", f"{where}_file")
    if env_name:
        if env_name not in env:
            raise ConfigError(f"{env_field}: environment variable {env_name} is not set")
        if not env[env_name].strip():  # (a secret named but empty: a unit or a mount gone wrong)
            raise ConfigError(f"{env_field}: environment variable {env_name} is empty")
        return Secret(env[env_name])
    if file_name:
        try:
            text = Path(file_name).read_text().strip()
        except OSError as exc:
            unit = absent_unit_credential(file_name)
            hint = f" ({UNIT_ONLY.format(unit=unit)})" if unit is not None else ""
            raise ConfigError(
                f"{file_field}: cannot read {file_name}: {exc.strerror}{hint}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file_field}: {file_name} is not UTF-8 text") from None
        if not text:
            raise ConfigError(f"{file_field}: {file_name} is empty")
        return Secret(text)
    return None


def login_name(
    where: str, name: str, env_name: str, file_name: str, environ: dict[str, str] | None = None
) -> str | None:
    """A login (an ACL user, a broker user): written in the config (`name`), or read as a
    secret from `*_env` or `*_file` (`where`: the field path without the suffix, as `secret`
    takes it); None when none is set."""
    if name:
        return name
    found = secret(where, env_name=env_name, file_name=file_name, environ=environ)
    if found is None:
        return None
    field = f"{where}_env" if env_name else f"{where}_file"
    _login_problem(field, found)
    return str(found)


def _login_problem(field: str, login: str) -> None:
    """ConfigError naming `field` when `login` cannot be a user name: a space, a newline or
    another control character in it (a file of two lines, a name pasted with its label) makes
    every login fail later, with nothing that says why."""
    if any(c.isspace() or not c.isprintable() for c in login):
        raise ConfigError(f"{field}: not a user name (a space or control character in it)")


def readable_by_others(path: str | Path) -> bool:
    """True when a config or credential file can be read by group or others."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


def credential_too_open(path: str | Path) -> bool:
    """True when a credential file can be read by group or others AND is this process's user's
    own, so that its `chmod go-rwx` is a fix the user can make and still read the file. A file
    of another owner is read through group or others on purpose (a compose secret is a bind
    mount of the host user's file, 0644 so that the container's user can read it, guarded by
    its 0700 folder on the host): tightening it would lock the daemon out (exit 78)."""
    try:
        owner = Path(path).stat().st_uid
    except OSError:
        return False
    return owner == os.geteuid() and readable_by_others(path)


CREDENTIALS = Path("/run/credentials")  # systemd's $CREDENTIALS_DIRECTORY is CREDENTIALS/UNIT
UNIT_ONLY = (
    "a systemd credential: systemd creates /run/credentials/{unit}/ from the unit's "
    "LoadCredential= only while {unit} runs"
)


def absent_unit_credential(path: str) -> str | None:
    """The unit (`market-monitor.service`) whose systemd credential `path` is, when it is one
    (`/run/credentials/UNIT/NAME`) and that unit's credentials folder does not exist: systemd
    makes it only while the unit runs, so outside the unit (`config check` from a shell, before
    the first start) the file cannot be there. None for any other path, or when the folder is
    there (the unit runs, or this is the unit: then the file is read as any other)."""
    try:
        parts = Path(path).relative_to(CREDENTIALS).parts
    except ValueError:
        return None
    if len(parts) < 2 or ".." in parts:
        return None
    try:
        (CREDENTIALS / parts[0]).stat()
    except FileNotFoundError:
        return parts[0]
    except OSError:  # (there, but not ours to look into: read the file as any other)
        return None
    return None


def writable_by_others(path: str | Path) -> bool:
    """True when a config file can be changed by group or others."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))
