"""config/monitor.example.toml shows every key of the daemon's config, as the README says."""

from __future__ import annotations

import re
import tomllib

import msgspec

from monitor.config import Config
from monitor.feeds.generic import FieldMap
from tests.conftest import ROOT

EXAMPLE = ROOT / "config" / "monitor.example.toml"


def test_every_config_key_is_in_the_example_set_or_commented() -> None:
    """Each field of each section (and of a feed) appears as `key =`, set or after a `#`: a
    key the code takes and the example hides is a key nobody finds."""
    text = EXAMPLE.read_text()
    shown = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.MULTILINE))
    shown |= set(re.findall(r"#\s*or ([a-z_]+) =", text))  # ("... # or password_file = ...")
    sections = {f.name: f.type for f in msgspec.structs.fields(Config) if f.name != "base_dir"}
    missing = []
    for name, kind in sections.items():
        struct = kind.__args__[0] if name == "feeds" else kind  # (list[FeedConfig])
        missing += [
            f"{name}.{f.name}" for f in msgspec.structs.fields(struct) if f.name not in shown
        ]
    assert missing == []


def test_the_examples_field_map_is_one_the_feed_takes() -> None:
    """The commented `field_map` line, uncommented, is a valid map of the generic feed."""
    line = next(x for x in EXAMPLE.read_text().splitlines() if x.startswith("# field_map"))
    table = tomllib.loads(line.removeprefix("# ").split("  #")[0])
    msgspec.convert(table["field_map"], FieldMap)


def test_every_key_the_example_sets_outside_its_feeds_shows_its_default() -> None:
    """The README says the example gives each key "with its default": a key set outside
    `[[feeds]]` (whose entries are examples of a feed) has the value the daemon takes when the
    key is left out, so a default changed in the code and not in the example fails here."""
    example = tomllib.loads(EXAMPLE.read_text())
    defaults = msgspec.to_builtins(Config())
    differ = [
        f"{section}.{key}: example {value!r}, default {defaults[section][key]!r}"
        for section, table in example.items()
        if section != "feeds"
        for key, value in table.items()
        if value != defaults[section][key]
    ]
    assert differ == []
