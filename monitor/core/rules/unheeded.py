"""Settings a rule takes but will not act on as written: warnings, not errors (the rule still
runs, and its file kept working when they were said nothing of).

- `exclude` on a rule of `symbols = [...]`: read with `universe = true` only, so a symbol both
  lists still fires;
- `symbols` or `universe` on a rotation rule, which compares `small` with `large` only;
- a `1m` rule's window (a surge's, rotation's or breadth's `window`, a streak's `count`) as long
  as its session or longer: such a window stays within its session (390 minutes of regular
  hours, 960 with `[engine] extended_hours`), so the rule never fires;
- a symbol with a space in it: no live feed sends one (1-32 printable ASCII characters without
  a space), only a replay feed's file can;
- a movers rule's `top` as large as the list of `symbols` it ranks: every one of them that is
  up is a top mover ("#1" of a one-symbol list whenever it rises), so the rule says no more
  than that it rose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.core.rules.spec import Rule

REGULAR_MINUTES = 390  # a regular session's minute bars, 09:30 to 16:00 New York
EXTENDED_MINUTES = 960  # with extended hours, 04:00 to 20:00
# Per kind, the parameter of a 1m rule that counts minutes back within its session (a movers
# rule ranks over a symbol's last bars, and a fade's rise reaches across sessions: not these).
_IN_SESSION = {"surge": "window", "streak": "count", "rotation": "window", "breadth": "window"}


def unheeded(rule: Rule, session_minutes: int = REGULAR_MINUTES) -> list[tuple[str, str]]:
    """(field, message) for each setting of `rule` it will not act on as written, in a session
    of `session_minutes` minutes."""
    from monitor.core.rules.spec import RotationRule  # (spec imports this module)

    found: list[tuple[str, str]] = []
    if isinstance(rule, RotationRule):
        compares = f"a rotation compares small ({rule.small}) with large ({rule.large}) only"
        if rule.symbols:
            found.append(("symbols", f"ignored: {compares}; remove it"))
        if rule.universe:
            found.append(("universe", f"ignored: {compares}; remove it"))
    elif rule.exclude and not rule.universe:
        watched = [s for s in rule.exclude if s in rule.symbols]
        still = f": {', '.join(watched)} still fires, remove it from symbols" if watched else ""
        found.append(("exclude", f"read with universe = true only, ignored here{still}"))
    spaced = [s for s in [*rule.symbols, *_pair(rule)] if " " in s]
    if spaced:
        found.append(
            ("symbols", f"{', '.join(map(repr, spaced))}: no live feed sends a symbol with a space")
        )
    top = getattr(rule, "top", None)
    if isinstance(top, int) and not rule.universe and rule.symbols and top >= len(rule.symbols):
        found.append(
            ("top", f"{top} of the {len(rule.symbols)} symbols ranked: every one that rises is"
             " a top mover; list more symbols, or set universe = true")
        )  # fmt: skip
    name = _IN_SESSION.get(str(type(rule).__struct_config__.tag), "")
    value = getattr(rule, name, None) if rule.timeframe == "1m" else None
    if isinstance(value, int) and value >= session_minutes:
        found.append(
            (name, f"{value} minutes never fit in a session: a 1m window stays within its session"
             f" ({session_minutes} minutes), so the rule never fires")
        )  # fmt: skip
    return found


def _pair(rule: Rule) -> list[str]:
    from monitor.core.rules.spec import RotationRule

    return [rule.small, rule.large] if isinstance(rule, RotationRule) else []
