"""The direction of dependencies: a pure core, adapters that never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "monitor"
CORE_ALLOWED = {"polars", "msgspec", "exchange_calendars", "numpy", "monitor.core"}
SHARED = {"monitor.errors", "monitor.logs", "monitor.core"}


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def stdlib(name: str) -> bool:
    import sys

    return name.split(".")[0] in sys.stdlib_module_names or name == "__future__"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_only_pure_libraries(path: Path) -> None:
    """monitor/core imports only the standard library, polars, msgspec, exchange-calendars,
    numpy and itself: no asyncio, sockets or adapters."""
    bad = {
        name
        for name in imports(path)
        if not stdlib(name) and not any(name == a or name.startswith(a + ".") for a in CORE_ALLOWED)
    }
    io = {name for name in imports(path) if name.split(".")[0] in {"asyncio", "socket", "ssl"}}
    assert bad | io == set()


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("feeds", "monitor.alerts"), ("alerts", "monitor.feeds")],
)
def test_adapters_do_not_import_each_other(package: str, forbidden: str) -> None:
    """feeds never import alerts and alerts never import feeds; neither imports the service."""
    for path in (PACKAGE / package).rglob("*.py"):
        names = {n for n in imports(path) if n.startswith("monitor")}
        assert {
            n for n in names if n.startswith((forbidden, "monitor.service", "monitor.cli"))
        } == set(), path


def test_reading_a_rules_file_imports_no_rule_family() -> None:
    """Replay reads its rules before its data, and imports the rule families (polars
    expressions, numpy) beside the read: reading rules needs none of them, nor numpy."""
    import subprocess
    import sys

    rules = PACKAGE.parent / "config" / "rules.toml"
    code = (
        "import sys\n"
        "from monitor.cli import load_rules\n"
        f"load_rules({str(rules)!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('monitor.core.rules.')"
        " or m == 'numpy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "['monitor.core.rules.spec', 'monitor.core.rules.unheeded']"


def test_a_config_run_or_notify_refuses_is_said_before_their_services_load(
    tmp_path: Path,
) -> None:
    """`run` and `notify` read their config before the modules of the daemon and the
    notifier (0.6 s and 1.4 s of them): one they refuse exits 78 with none loaded."""
    import subprocess
    import sys

    daemon, notifier = tmp_path / "monitor.toml", tmp_path / "notify.toml"
    daemon.write_text('[redis]\nmaxlen = "many"\n')
    notifier.write_text('[redis]\nurl = "redis://127.0.0.1:116999/0"\n')
    services = ("monitor.service", "monitor.notify.main", "monitor.notify.service")
    code = (
        "import sys\n"
        "from monitor.cli import main\n"
        f"codes = [main(['run', '--config', {str(daemon)!r}]),"
        f" main(['notify', '--config', {str(notifier)!r}])]\n"
        f"print(codes, [m for m in {services!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[78, 78] []\n", out.stderr
