"""Rule families, one module each. A module provides:

- `condition(bars, rule, ctx) -> pl.DataFrame`: per symbol and period, whether the rule's condition
  holds (`cond`) plus the metric columns, vectorised over the universe;
- `words(rule, ctx) -> (title, text)`: words for people, with the numbers, as polars string
  expressions over the firing frame (dates already YYYY-MM-DD text; see monitor/core/payload.py);
- `SEVERITY`: the default severity;
- `PER_SYMBOL`: whether a symbol's firings depend on its own bars alone (the engine may then
  evaluate a universe a piece of symbols at a time);
- optionally `blocked(rule) -> pl.Expr`: why a symbol does not hold whatever its measure
  (`monitor.core.progress`) reads, as words over the condition frame (null where nothing
  else stands in the way): a squeeze's short interest, a mover outside the top N.

The engine turns conditions into episodes (fire when the condition turns true), applies cooldowns,
and attaches history.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_NAMES = ("streak", "surge", "squeeze", "rotation", "drawdown", "breadth", "movers", "fade")


def __getattr__(name: str) -> dict[str, ModuleType]:
    """`FAMILIES`, kind -> module, the modules imported on first use: reading a rules file
    (`spec`) needs none of them, nor polars' and numpy's expressions, and replay reads its
    rules before its data while the engine's modules are imported beside the read."""
    if name != "FAMILIES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    families = {n: importlib.import_module(f"{__name__}.{n}") for n in _NAMES}
    globals()["FAMILIES"] = families
    return families
