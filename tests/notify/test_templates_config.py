"""`[templates]` strings are checked at load: a `$` that starts no placeholder or a name that is
no field is refused naming the field (before, it went out to every channel as written)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.errors import ConfigError
from monitor.notify.config import TEMPLATE_FIELDS, parse
from monitor.notify.render import fields
from tests.notify.conftest import RUT_ALERT


def config(templates: dict[str, str]) -> dict[str, Any]:
    """A notifier config with one receiver and these templates."""
    return {
        "receivers": [{"name": "hook", "url": "json://127.0.0.1:9/alerts"}],
        "route": {"receivers": ["hook"]},
        "templates": templates,
    }


@pytest.mark.parametrize(
    ("templates", "error"),
    [
        (
            {"title": "[$severity] $titel"},
            "config: templates.title: $titel is no field (did you mean $title?): a template"
            " takes $title, $text, $history, $symbol, $rule, $kind, $severity, $session,"
            " $timeframe, $id",
        ),
        (
            {"markdown": "**$title** ${symbol"},
            "config: templates.markdown: '${symbol' (character 12) starts no placeholder: write"
            " $name or ${name} with a name of $title, $text, $history, $symbol, $rule, $kind,"
            " $severity, $session, $timeframe, $id, and $$ for a dollar sign",
        ),
        (
            {"html": "<p>$text</p><p>costs $5</p>"},
            "config: templates.html: '$5</p>' (character 22) starts no placeholder: write $name"
            " or ${name} with a name of $title, $text, $history, $symbol, $rule, $kind,"
            " $severity, $session, $timeframe, $id, and $$ for a dollar sign",
        ),
        (
            {"text": "$Title"},
            "config: templates.text: $Title is no field (did you mean $title?): a template takes"
            " $title, $text, $history, $symbol, $rule, $kind, $severity, $session, $timeframe,"
            " $id",
        ),
    ],
)
def test_a_template_that_would_not_fill_is_refused_naming_the_field(
    templates: dict[str, str], error: str
) -> None:
    """A misspelt field, an unclosed `${`, or a bare `$` before a digit is a ConfigError
    naming templates.FIELD and what to write instead."""
    with pytest.raises(ConfigError) as caught:
        parse(config(templates), environ={})
    assert str(caught.value) == error


def test_templates_of_every_field_and_dollar_signs_are_taken() -> None:
    """Every field, braced or not, and `$$` for a dollar sign load as they are."""
    every = " ".join(f"${{{f}}} ${f}" for f in TEMPLATE_FIELDS) + " costs $$5"
    loaded = parse(config({k: every for k in ("title", "markdown", "html", "text")}), environ={})
    assert loaded.templates.title == every


def test_the_checked_fields_are_the_fields_a_template_is_filled_with() -> None:
    """TEMPLATE_FIELDS (what the check takes) are exactly the keys render fills."""
    assert set(fields(RUT_ALERT, "text")) == set(TEMPLATE_FIELDS)
