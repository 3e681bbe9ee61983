"""docs/reliability.md names, for each fault, the test that proves what survives it: every one
of those tests exists."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_every_test_the_reliability_table_names_exists() -> None:
    """`tests/x.py::name` names a test of that file; a following `::other` one of the same."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    named, missing, current = 0, [], None
    for match in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", text):
        path, name, same_file = match.groups()
        if path is not None:
            current = ROOT / path
            if not current.exists():
                missing.append(path)
                continue
        name = name or same_file
        if name is not None and current is not None and current.exists():
            named += 1
            if not re.search(rf"^(async )?def {name}\(", current.read_text(), re.MULTILINE):
                missing.append(f"{current.relative_to(ROOT)}::{name}")
    assert named > 30
    assert missing == []
