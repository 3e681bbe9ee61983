"""What can be a symbol: the test a data file's symbols meet (`bad_symbol` past it, in replay,
backfill and the short-interest file) and a rule's or `[engine] universe`'s symbols too, so that
a rule never names a symbol no file or feed can bring.

In the core because the rules' own checks (monitor/core/rules/spec.py) apply it.
"""

from __future__ import annotations

MAX_SYMBOL_CHARS = 64  # (a ticker is a few; an index's or fund's name some tens)


def symbol_problem(name: str) -> str | None:
    """Why a symbol from a file cannot be one: a control or formatting character (an escape
    sequence a terminal would run, a right-to-left override that reverses what follows it on
    the board), or past MAX_SYMBOL_CHARS. None for a usable symbol."""
    if not name.isprintable():
        return "has a control or formatting character"
    if len(name) > MAX_SYMBOL_CHARS:
        return f"is longer than {MAX_SYMBOL_CHARS} characters"
    return None


def named_symbol_problem(name: str) -> str | None:
    """Why a symbol a config or rule names cannot be one: empty, blank at either end (no file
    or feed sends `IWM `), or `symbol_problem`'s reasons. None for a usable symbol."""
    if not name:
        return "is empty"
    if name != name.strip():
        return "has a space at its start or end"
    return symbol_problem(name)
