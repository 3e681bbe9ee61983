"""Rules as declared in TOML (`[[rules]]` tables): typed, frozen, unknown fields refused.

Parameter names are a contract shared by config, alert payloads and logs. Returns are fractions
(`min_return = 0.01` is 1%); window lengths count periods of the rule's `timeframe`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from collections.abc import Collection, Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from monitor.core.fields import field_message
from monitor.core.model import Severity
from monitor.core.rules.unheeded import REGULAR_MINUTES, unheeded
from monitor.core.symbols import named_symbol_problem

# Every count of periods (a window, a streak's length, a cooldown, a horizon, a look-back) is
# at most MAX_PERIODS: 100,000 minutes are some 256 sessions of regular hours, the most a minute
# rule looks back over; 100,000 sessions are about 400 years, and weeks nearly 2,000, more than
# any daily or weekly history. Past it a rule's buffers take memory and time out of proportion
# (`count = 10000000` ran for minutes, `count = 2147483648` took more than 12 GB) or overflow
# (`horizons = [9223372036854775807]`), so such a value is refused with the rule's other errors.
MAX_PERIODS = 100_000
Periods = Annotated[int, Meta(ge=1, le=MAX_PERIODS)]
NonNegPeriods = Annotated[int, Meta(ge=0, le=MAX_PERIODS)]
PositiveInt = Annotated[int, Meta(ge=1)]
Fraction = Annotated[float, Meta(gt=-1.0, lt=100.0)]
Share = Annotated[float, Meta(ge=0.0, le=1.0)]
RuleTimeframe = Literal["1m", "1d", "1w"]
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


class RuleBase(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    """Fields every rule has. `symbols` or `universe = true` says what it watches; `exclude`
    removes symbols (indexes, ETFs) from the universe. `cooldown` counts periods."""

    id: str
    symbols: list[str] = []
    universe: bool = False
    exclude: list[str] = []
    timeframe: RuleTimeframe = "1d"
    cooldown: NonNegPeriods = 0
    severity: Severity | None = None
    horizons: list[Periods] = msgspec.field(default_factory=lambda: [5, 21, 63])
    enabled: bool = True
    description: str = ""


class StreakRule(RuleBase, frozen=True, tag="streak"):
    """`count` consecutive periods, each with a return above `min_return`; once per run."""

    count: Periods = 5
    min_return: Fraction = 0.01


class SurgeRule(RuleBase, frozen=True, tag="surge"):
    """A `window`-period return of at least `min_return`, with the largest-since date."""

    window: Periods = 5
    min_return: Fraction = 0.10


class SqueezeRule(RuleBase, frozen=True, tag="squeeze"):
    """A one-period jump on abnormal volume in a heavily shorted name."""

    min_return: Fraction = 0.15
    volume_ratio: Annotated[float, Meta(gt=0)] = 3.0
    volume_window: Periods = 20
    min_short_interest: Annotated[float, Meta(ge=0)] = 0.20
    min_days_to_cover: Annotated[float, Meta(ge=0)] | None = None
    short_interest_lag: NonNegPeriods = 8
    short_interest_max_age: Periods = 40  # sessions after settlement a figure still counts
    unknown_short_interest: Literal["skip", "fire"] = "skip"


class RotationRule(RuleBase, frozen=True, tag="rotation"):
    """Small caps outrunning large caps: `window` return of `small` minus that of `large`."""

    small: str = "IWM"
    large: str = "QQQ"
    window: Periods = 5
    min_spread: Fraction = 0.03
    max_large_return: Fraction | None = None


class DrawdownRule(RuleBase, frozen=True, tag="drawdown"):
    """Distance from the running high: back within `max_below_high` of it after being further
    away, and/or fallen `min_below_high` below it. `lookback` limits the high to recent periods."""

    max_below_high: Annotated[float, Meta(gt=0, lt=1)] | None = None
    min_below_high: Annotated[float, Meta(gt=0, lt=1)] | None = None
    lookback: Periods | None = None


class BreadthRule(RuleBase, frozen=True, tag="breadth"):
    """The share of the universe up over `window` periods reaches `min_share`."""

    window: Periods = 5
    min_share: Share = 0.7
    min_symbols: PositiveInt = 10
    label: str = "universe"
    min_coverage: Share = 0.9  # symbols with a bar, over the most of the 5 periods before


class MoversRule(RuleBase, frozen=True, tag="movers"):
    """The `top` biggest gainers over `window` periods (or `since` a date), each at least
    `min_return`."""

    window: Periods | None = None  # 5 when neither window nor since is given
    since: dt.date | None = None
    top: Periods = 10  # (symbols, not periods: more than a universe holds, as well)
    min_return: Fraction = 0.0
    min_coverage: Share = 0.9  # as BreadthRule's


class FadeRule(RuleBase, frozen=True, tag="fade"):
    """A rally of `rise` within `rise_window` periods that then loses `drop` from its peak,
    within `within` periods of the peak (default: `rise_window`)."""

    rise: Annotated[float, Meta(gt=0)] = 0.10
    rise_window: Periods = 10
    drop: Annotated[float, Meta(gt=0, lt=1)] = 0.05
    within: Periods | None = None


Rule = (
    StreakRule
    | SurgeRule
    | SqueezeRule
    | RotationRule
    | DrawdownRule
    | BreadthRule
    | MoversRule
    | FadeRule
)
KINDS = ("streak", "surge", "squeeze", "rotation", "drawdown", "breadth", "movers", "fade")


class RulesFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A rules file: display `names` for symbols, and the `[[rules]]`."""

    rules: list[Rule] = []
    names: dict[str, str] = {}

    @property
    def enabled(self) -> list[Rule]:
        """The rules that run (`enabled = false` keeps a rule in the file, switched off)."""
        return [r for r in self.rules if r.enabled]


NOT_FINITE = "not a finite number (inf is no setting: write the number meant)"


class RuleError(ValueError):
    """A rules file that does not validate; the message names the field path."""


def parse_rules(text: bytes | str) -> RulesFile:
    """Decode and validate a rules TOML document. Raises RuleError naming the field path."""
    try:
        parsed = msgspec.toml.decode(text, type=RulesFile)
    except msgspec.ValidationError as exc:
        raise RuleError(_invalid(text, str(exc))) from None
    except msgspec.DecodeError as exc:
        raise RuleError(f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise RuleError("not UTF-8 text") from None
    _check_words(parsed)
    seen: set[str] = set()
    for i, rule in enumerate(parsed.rules):
        if not RULE_ID.match(rule.id):
            raise RuleError(f"rules[{i}].id: {rule.id!r} must be lowercase letters, digits, . _ -")
        if rule.id in seen:
            raise RuleError(f"rules[{i}].id: duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        repeated = _first_repeat(rule.horizons)
        if repeated is not None:  # (a column of forward returns per horizon: two broke replay)
            raise RuleError(f"{_where(i, rule.id)}.horizons: {repeated} is given twice")
        for name in rule.__struct_fields__:  # (`volume_ratio = inf` passed "greater than 0")
            value = getattr(rule, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise RuleError(f"{_where(i, rule.id)}.{name}: {NOT_FINITE}")
        _check_targets(rule, _where(i, rule.id))
    return parsed


# Control characters (C0, DEL, C1): in a display name, a label or a description they would
# reach people's terminals (watch, tail), chats and mail, where ESC moves the cursor or clears
# the screen. A description may run over lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _check_words(parsed: RulesFile) -> None:
    """RuleError naming the field of a display name, a label or a description with a control
    character in it (a symbol named in `[names]` too)."""
    fields: list[tuple[str, str, re.Pattern[str]]] = []
    for symbol, name in parsed.names.items():
        key = msgspec.json.encode(symbol).decode()
        fields += [("names", symbol, _CONTROL), (f"names.{key}", name, _CONTROL)]
    for i, rule in enumerate(parsed.rules):
        fields.append((f"{_where(i, rule.id)}.description", rule.description, _CONTROL_BUT_LINES))
        if isinstance(rule, BreadthRule):
            fields.append((f"{_where(i, rule.id)}.label", rule.label, _CONTROL))
    for where, text, control in fields:
        found = control.search(text)
        if found is not None:
            raise RuleError(
                f"{where}: control character U+{ord(found.group()):04X} in "
                f"{msgspec.json.encode(text).decode()}: words for people (alert texts, the live"
                " view) may hold none"
            )


def _first_repeat(values: list[int]) -> int | None:
    """The first value of `values` seen before in it, or None when each is there once."""
    seen: set[int] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _where(index: int, rule_id: object) -> str:
    """How messages name a rule: `rules[1] (id "surge.5d")` (0-based, as the path of a field),
    or `rules[1]` when its id is not known."""
    if not isinstance(rule_id, str):
        return f"rules[{index}]"
    return f"rules[{index}] (id {msgspec.json.encode(rule_id).decode()})"


def _check_targets(rule: Rule, where: str) -> None:
    for field, names in (
        ("symbols", rule.symbols),
        ("exclude", rule.exclude),
        *(
            (("small", [rule.small]), ("large", [rule.large]))
            if isinstance(rule, RotationRule)
            else ()
        ),
    ):
        for name in names:
            problem = named_symbol_problem(name)
            if problem is not None:  # (no file or feed brings it: `bad_symbol` in replay)
                raise RuleError(f"{where}.{field}: {name!r} is no symbol: it {problem}")
    if rule.universe and rule.symbols:
        raise RuleError(
            f"{where}.symbols: give symbols = [...] or universe = true, not both"
            " (universe = true watches every symbol but those in exclude)"
        )
    if isinstance(rule, RotationRule):
        if rule.small == rule.large:
            raise RuleError(f"{where}.large: must differ from small")
        return
    if isinstance(rule, BreadthRule):
        if not rule.universe and len(rule.symbols) < 2:
            raise RuleError(f"{where}.universe: breadth needs universe = true or 2+ symbols")
        return
    if isinstance(rule, MoversRule) and rule.since is not None and rule.window is not None:
        raise RuleError(f"{where}.since: give either window or since, not both")
    if (
        isinstance(rule, DrawdownRule)
        and rule.max_below_high is None
        and rule.min_below_high is None
    ):
        raise RuleError(f"{where}: drawdown needs max_below_high and/or min_below_high")
    if isinstance(rule, SqueezeRule) and rule.short_interest_max_age <= rule.short_interest_lag:
        raise RuleError(
            f"{where}.short_interest_max_age: must be more than short_interest_lag"
            f" ({rule.short_interest_lag}): a figure would be stale before it counts"
        )
    if not rule.symbols and not rule.universe:
        raise RuleError(f"{where}.symbols: give symbols = [...] or universe = true")


def _invalid(text: bytes | str, error: str) -> str:
    """The message for a rules file that decodes but does not validate."""
    raw: Any = None
    with contextlib.suppress(msgspec.DecodeError):
        raw = msgspec.toml.decode(text)
    message = field_message(error, RulesFile, raw)
    if ".kind: Invalid value" in message:  # (msgspec says only "Invalid value 'sturge'")
        message += f"; a rule's kind is one of {', '.join(KINDS)}"
    elif message.endswith(f": {_TOO_MANY}") and ".top: " not in message:  # (top counts symbols)
        message += _TOO_MANY_WHY
    elif message == "rules: Expected `array`, got `object`":  # (`[rules]`, as in monitor.toml)
        message += (
            "; each rule is a [[rules]] table, with two brackets ([rules], one, is a single"
            " table: the daemon config's section naming this file)"
        )
    return _named(message, raw)


def _named(message: str, raw: Any) -> str:
    """`rules[1].min_return: ...` as `rules[1] (id "surge.5d").min_return: ...` when the rule's
    table has an id."""
    found = _RULE_AT.match(message)
    if found is None:
        return message
    index = int(found[1])
    rules = raw.get("rules") if isinstance(raw, dict) else None
    table = rules[index] if isinstance(rules, list) and index < len(rules) else None
    rule_id = table.get("id") if isinstance(table, dict) else None
    return _where(index, rule_id) + message[found.end() :]


_RULE_AT = re.compile(r"^rules\[(\d+)\]")
_TOO_MANY = f"Expected `int` <= {MAX_PERIODS}"
_TOO_MANY_WHY = (
    f"; a count of periods is at most {MAX_PERIODS:,} (some 400 years of sessions, or 256"
    " sessions of minutes)"
)

# Parameters that are fractions, and the value from which one was likely written in percent
# (`min_return = 10` meant 0.10, and `min_return = 1` 0.01): short interest can pass 100% of the
# float, not 500%.
_PLAUSIBLE = {
    "min_return": 1.0,
    "min_spread": 1.0,
    "max_large_return": 1.0,
    "rise": 1.0,
    "min_short_interest": 5.0,
}


NO_RULES = "no rules: the file has no [[rules]] table"


def rule_warnings(rules: RulesFile, *, session_minutes: int = REGULAR_MINUTES) -> list[str]:
    """Lines for a rules file that validates but likely does not say what was meant: no rules,
    a fraction parameter at or past a plausible bound (a percent written for a fraction:
    `min_return = 1` meant 1%), or a setting the rule will not act on (`unheeded`, in a
    session of `session_minutes`). Values are not refused: a threshold of 150% can be meant."""
    if not rules.rules:
        return [NO_RULES]
    lines = [] if rules.enabled else ["no rule is enabled (each has enabled = false)"]
    for i, rule in enumerate(rules.rules):
        for field, message in unheeded(rule, session_minutes):
            lines.append(f"{_where(i, rule.id)}.{field}: {message}")
        for name, bound in _PLAUSIBLE.items():
            value = getattr(rule, name, None)
            if value is None or value < bound:
                continue
            what = " of the float sold short" if name == "min_short_interest" else ""
            source = (
                " (the short-interest file is in percent, rules are not)"
                if name == "min_short_interest"
                else ""
            )
            lines.append(
                f"{_where(i, rule.id)}.{name}: {value:g} is {value:,.0%}{what}; it is a fraction,"
                f" 0.10 means 10%{source}: did you mean {value / 100:g}?"
            )
    return lines


def named_symbols(rule: Rule) -> list[str]:
    """The symbols a rule names: a rotation's two, else its `symbols` (none for a universe)."""
    if isinstance(rule, RotationRule):
        return [rule.small, rule.large]
    return [] if rule.universe else list(rule.symbols)


def unknown_symbols(rules: Sequence[Rule], known: Collection[str]) -> dict[str, list[str]]:
    """Per rule id, the symbols it names that are not among `known` (a rule can never fire on
    them): rules naming only known symbols are left out."""
    missing = {r.id: [s for s in named_symbols(r) if s not in known] for r in rules}
    return {rule: symbols for rule, symbols in missing.items() if symbols}


def idle_rules(rules: Sequence[Rule], known: Collection[str]) -> dict[str, list[str]]:
    """`unknown_symbols` of the rules that cannot fire at all: a rotation missing either of its
    two symbols, any other rule missing every symbol it names."""
    by_id = {r.id: r for r in rules}
    return {
        rule_id: missing
        for rule_id, missing in unknown_symbols(rules, known).items()
        if isinstance(by_id[rule_id], RotationRule)
        or len(missing) == len(named_symbols(by_id[rule_id]))
    }


def cannot_fire(
    rules: Sequence[Rule],
    known: Collection[str],
    *,
    minute_bars: bool = True,
    short_interest: bool = True,
    source: str | None = "the data",
    figured: Collection[str] | None = None,
) -> dict[str, str]:
    """Per rule id, why the rule cannot fire on data of the symbols `known` (with minute bars
    or not, with short-interest figures or not): the symbols it needs are missing (see
    `idle_rules`), its universe is empty once `exclude` removes the data's symbols, a breadth
    rule has fewer symbols than `min_symbols`, it is a `1m` rule and there are no minute bars,
    or a squeeze rule skips symbols without figures and there are none (`no_short_interest`),
    or (`figured`: the symbols the short-interest figures are of) none of those it watches.
    Rules that can fire are left out. `source` names where `known` comes from in the reasons
    (None: the symbols the rules name)."""
    reasons: dict[str, str] = {}
    missing = idle_rules(rules, known)
    spelled = {_plain(s): s for s in known} if missing else {}
    for rule in rules:
        present = _watched(rule, known)
        if rule.timeframe == "1m" and not minute_bars:
            reasons[rule.id] = (
                "it is a 1m rule and the data has daily bars only (no minute or tick file)"
            )
        elif rule.id in missing:
            near = [
                f"{s} as {spelled[_plain(s)]!r}" for s in missing[rule.id] if _plain(s) in spelled
            ]
            hint = (
                f" (symbols are matched as written, and {source or 'the data'} writes"
                f" {', '.join(near[:5])})"
                if near
                else ""
            )
            reasons[rule.id] = f"{', '.join(missing[rule.id])} not in the data{hint}"
        elif rule.universe and not present:
            excluded = sorted(s for s in known if s in rule.exclude)
            listed = ", ".join(excluded[:5]) + (", ..." if len(excluded) > 5 else "")
            reasons[rule.id] = (
                f"its universe is empty: every symbol of {source or 'the rules'} ({listed}) is"
                " in exclude"
            )
        elif isinstance(rule, BreadthRule) and len(present) < rule.min_symbols:
            reasons[rule.id] = (
                f"its universe has {len(present)} symbol{'' if len(present) == 1 else 's'}"
                f"{f' in {source}' if source else ''}, fewer than min_symbols ({rule.min_symbols})"
            )
        elif not short_interest and rule.id in no_short_interest(rules):
            reasons[rule.id] = NO_SHORT_INTEREST
        elif figured is not None and rule.id in no_short_interest(rules):
            why = _without_figures(present, figured)
            if why is not None:
                reasons[rule.id] = why
    return reasons


def _without_figures(present: set[str], figured: Collection[str]) -> str | None:
    """Why a squeeze rule that skips symbols without a short-interest figure cannot fire when
    the figures (of the symbols `figured`) are of none of the data's symbols it watches
    (`present`), with the file's spellings of those that differ in case or punctuation only
    (`gme` for GME, `BRK.B` for BRK-B); None when one has a figure."""
    if not present or not present.isdisjoint(figured):
        return None
    spelled = {_plain(s): s for s in figured}
    named = sorted(present)
    near = [f"{s} as {spelled[_plain(s)]!r}" for s in named if _plain(s) in spelled]
    listed = ", ".join(named[:5]) + (", ..." if len(named) > 5 else "")
    hint = (
        f": symbols are matched as written, and the file writes {', '.join(near[:5])}"
        if near
        else ""
    )
    return (
        f"the short-interest file has no figure for any of its symbols ({listed}), and its"
        f' unknown_short_interest is "skip"{hint}'
    )


def _plain(symbol: str) -> str:
    """A symbol without case or punctuation: `brk.b`, `BRK-B` and `BRK/B` are one."""
    return re.sub(r"[^0-9A-Z]", "", symbol.upper())


NO_SHORT_INTEREST = (
    'no short-interest figures are given, and its unknown_short_interest is "skip" (the '
    "default): give them (replay --short-interest, the daemon's [rules] short_interest) or set "
    'unknown_short_interest = "fire"'
)


def no_short_interest(rules: Sequence[Rule]) -> list[str]:
    """The ids of the squeeze rules that cannot fire without short-interest figures (those
    that skip a symbol without one)."""
    return [
        r.id for r in rules if isinstance(r, SqueezeRule) and r.unknown_short_interest == "skip"
    ]


def _watched(rule: Rule, known: Collection[str]) -> set[str]:
    """The symbols of `known` a rule watches (a universe's: all but those in `exclude`)."""
    if rule.universe and not isinstance(rule, RotationRule):
        return set(known) - set(rule.exclude)
    return set(named_symbols(rule)) & set(known)


def kind_of(rule: Rule) -> str:
    """The rule's `kind` (msgspec keeps the tag on the class, not the instance)."""
    return str(type(rule).__struct_config__.tag)
