"""The wheel, installed with its pinned dependencies into a clean venv, runs on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor import __version__
from tests.conftest import ROOT


def copy_source(dest: Path) -> Path:
    """The files a wheel is built from, copied so the build leaves nothing in the work tree."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "monitor", src / "monitor", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return src


def run(cmd: list[str], cwd: Path, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails. Without PYTHONPATH: a
    checkout it names (a clone run with PYTHONPATH=its folder) would be imported instead of the
    installed wheel, and the test failed there though the wheel was right."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
    assert res.returncode == 0, f"{cmd}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.timeout(300)
def test_the_installed_wheel_runs_the_demo_outside_the_source_tree(tmp_path: Path) -> None:
    """The wheel built from pyproject.toml, installed with constraints.txt into an empty venv,
    answers --version and replays the July 2024 rally from its packaged data, run from a folder
    that holds no source."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
         str(copy_source(tmp_path))], cwd=tmp_path)  # fmt: skip
    (wheel,) = wheels.glob("market_monitor-*.whl")
    timings["build"] = time.monotonic() - t0

    # An empty venv (no pip of its own, no site packages); the dev venv's pip installs into it.
    # Dependencies come from the package index, pinned by constraints.txt as in scripts/setup.
    t0 = time.monotonic()
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile",
         "-c", str(ROOT / "constraints.txt"), str(wheel)], cwd=tmp_path, timeout_s=240)  # fmt: skip
    timings["install"] = time.monotonic() - t0

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    where = run([str(python), "-c", "import monitor; print(monitor.__file__)"], cwd=workdir)
    assert where.stdout.strip().startswith(str(venv))
    exe = str(venv / "bin" / "market-monitor")
    assert run([exe, "--version"], cwd=workdir).stdout == f"market-monitor {__version__}\n"
    t0 = time.monotonic()
    demo = run([exe, "demo"], cwd=workdir)
    timings["demo"] = time.monotonic() - t0
    assert "Russell 2000 rose 11.5% in 5 sessions" in demo.stdout
    print("wheel test timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
