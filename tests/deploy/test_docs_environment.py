"""The docs and the code agree on the environment: every variable the cache's place is read from
is documented, every `$NAME` the docs' prose says is read is read by the code, and the README
backfills the service's store as the unit runs the daemon (its user, its store variable)."""

from __future__ import annotations

import ast
import inspect
import re

from monitor import calendar
from tests.conftest import ROOT
from tests.deploy.test_systemd import DAEMON_UNIT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^ *```.*?^ *```", re.MULTILINE | re.DOTALL)


def constants(source: str) -> set[str]:
    """The string constants of Python source that could be environment variables' names."""
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value)
    }


def test_the_readme_names_every_variable_the_cache_place_is_read_from() -> None:
    """`calendar.cache_dir` reads MARKET_MONITOR_CACHE_DIR, CACHE_DIRECTORY and XDG_CACHE_HOME;
    the README names each (it left XDG_CACHE_HOME out)."""
    readme = (ROOT / "README.md").read_text()
    read = constants(inspect.getsource(calendar.cache_dir))
    assert read == {"MARKET_MONITOR_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"}
    assert {name for name in read if f"${name}" not in readme} == set()


def test_every_variable_the_docs_prose_names_is_read_by_the_code() -> None:
    """A `$NAME` in the docs' prose (shell examples aside; `$SYS` is MQTT's topic tree) is one
    the code reads: docs/security.md said secrets were read from `$CREDENTIALS_DIRECTORY`,
    which nothing reads (a `password_file` is its path, relative to the config file)."""
    read = set().union(*(constants(p.read_text()) for p in (ROOT / "monitor").rglob("*.py")))
    named = {
        (doc.name, name)
        for doc in DOCS
        for name in re.findall(r"\$([A-Z][A-Z0-9_]+)", FENCE.sub("", doc.read_text()))
        if name != "SYS"
    }
    assert {(doc, name) for doc, name in named if name not in read} == set()


def test_the_readme_backfills_the_services_store_as_its_user() -> None:
    """Under systemd the daemon's store is the unit's MARKET_MONITOR__STORE__PATH, and its files
    its user's: the README's backfill for the service gives both (a backfill from a shell filled
    the config's own store path, as root, and the daemon's gap stayed)."""
    unit = DAEMON_UNIT.read_text()
    user = re.search(r"^User=(\S+)$", unit, re.MULTILINE)
    store = re.search(r"^Environment=MARKET_MONITOR__STORE__PATH=%S/(\S+)$", unit, re.MULTILINE)
    assert user is not None and store is not None
    readme = (ROOT / "README.md").read_text()
    command = (
        f"runuser -u {user[1]} -- env MARKET_MONITOR__STORE__PATH=/var/lib/{store[1]} \\\n"
        "      /opt/market-monitor/bin/market-monitor backfill --config"
        " /etc/market-monitor/monitor.toml"
    )
    assert command in readme
