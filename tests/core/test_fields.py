"""Messages for files that do not validate: the field's path first, and for a misspelt key the
nearest name its table takes, followed through lists, optional tables and tagged unions."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from monitor.config import Config
from monitor.core.fields import field_message
from monitor.core.rules.spec import RulesFile


def message(raw: dict[str, Any], root: type) -> str:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(raw, root)
    return field_message(str(caught.value), root, raw)


def test_a_wrong_type_is_led_by_its_path() -> None:
    raw = {"redis": {"maxlen": "many"}}
    assert message(raw, Config) == "redis.maxlen: Expected `int`, got `str`"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"stor": {}}, "Object contains unknown field `stor`; did you mean `store`?"),
        (
            {"store": {"snapshot_intervl_s": 5}},
            "store: Object contains unknown field `snapshot_intervl_s`; "
            "did you mean `snapshot_interval_s`?",
        ),
        (
            {"feeds": [{"kind": "mqtt", "url": "mqtt://x"}, {"kind": "mqtt", "topic": "a"}]},
            "feeds[1]: Object contains unknown field `topic`; did you mean `topics`?",
        ),
        (
            {"store": {"zzzz": 1}},
            "store: Object contains unknown field `zzzz`; it takes intraday_interval_s, "
            "journal_fsync, path, snapshot_interval_s",
        ),
    ],
)
def test_a_misspelt_config_key_gets_the_nearest_name(raw: dict[str, Any], expected: str) -> None:
    assert message(raw, Config) == expected


def test_a_rule_parameter_is_matched_against_its_own_kind() -> None:
    """`rise_windw` in a fade rule is `rise_window`; `windw` in a surge rule is `window`, and
    in a streak rule, which has no window, nothing (the union of kinds is told apart by `kind`)."""
    fade = {"rules": [{"id": "f", "kind": "fade", "universe": True, "rise_windw": 5}]}
    surge = {"rules": [{"id": "s", "kind": "surge", "universe": True, "windw": 5}]}
    assert message(fade, RulesFile).endswith("did you mean `rise_window`?")
    assert message(surge, RulesFile).endswith("did you mean `window`?")
    streak = {"rules": [{"id": "s", "kind": "streak", "universe": True, "windw": 5}]}
    assert "window" not in message(streak, RulesFile)  # (a streak has no window)
