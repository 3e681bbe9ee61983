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


def test_the_readme_rules_table_gives_every_parameter_with_its_default() -> None:
    """Each kind's row lists every parameter the kind takes, with its default as
    `name = value` (and a parameter without one bare), as the rule structs declare them."""
    import msgspec

    from monitor.core.rules import spec

    text = (ROOT / "README.md").read_text()
    common = {f.name for f in msgspec.structs.fields(spec.RuleBase)}
    for kind, cls in zip(spec.KINDS, spec.Rule.__args__, strict=True):  # type: ignore[attr-defined]
        row = re.search(rf"^\| `{kind}` \| (.*?) \|", text, re.MULTILINE)
        assert row is not None, kind
        for field in msgspec.structs.fields(cls):
            if field.name in common:
                continue
            default = field.default
            if default is None or default is msgspec.NODEFAULT:
                assert f"`{field.name}`" in row[1] or f"`{field.name}` (" in row[1], field.name
            else:
                shown = f'"{default}"' if isinstance(default, str) else str(default)
                assert f"`{field.name} = {shown}`" in row[1], (kind, field.name)
