"""The rules and short-interest files a daemon's config names, and what its rules cannot see.

`load_rules_file` and `load_short_interest` read them relative to the config file;
`outside_universe`, `never_fire` and `short_interest_coverage` are the warnings of `config
check`, start and reload about rules that can never fire on what the daemon may get.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from monitor.config import Config, resolve
from monitor.errors import ConfigError

if TYPE_CHECKING:  # (the rules pull in polars: the notifier and `config check` need not)
    from monitor.core.rules.spec import RulesFile
    from monitor.short_interest_io import ShortInterestFile


def outside_universe(config: Config, rules: RulesFile) -> list[str]:
    """A line for each rule naming symbols that `[engine] universe` (when set) leaves out: their
    prices are rejected as unknown, so the rule cannot fire on them."""
    from monitor.core.rules.spec import unknown_symbols

    if not config.engine.universe:
        return []
    return [
        f"rule {rule_id} names {', '.join(missing)}, outside [engine] universe: it never sees "
        f"{'its' if len(missing) == 1 else 'their'} prices"
        for rule_id, missing in unknown_symbols(rules.enabled, set(config.engine.universe)).items()
    ]


def never_fire(config: Config, rules: RulesFile) -> list[str]:
    """A line for each rule that can fire on no data the daemon may get: a breadth rule given
    fewer symbols than its `min_symbols`, or, with `[engine] universe`, a universe rule left
    with none (or too few) once `exclude` goes. Symbols outside the universe, and squeeze rules
    without short interest, have lines of their own (`outside_universe`, NO_SHORT_INTEREST).
    `replay` says the same of the data it reads."""
    from monitor.core.rules.spec import NO_SHORT_INTEREST, cannot_fire, named_symbols

    universe = set(config.engine.universe)
    # (without [engine] universe, a universe rule's symbols are whatever the feeds send)
    checked = [r for r in rules.enabled if universe or not r.universe]
    known = universe or {s for r in checked for s in named_symbols(r)}
    source = "[engine] universe" if universe else None
    found = cannot_fire(checked, known, minute_bars=True, short_interest=True, source=source)
    return [
        f"rule {rule_id} cannot fire: {why}"
        for rule_id, why in found.items()
        if why != NO_SHORT_INTEREST and "not in the data" not in why
    ]


def short_interest_coverage(
    config: Config, rules: RulesFile, figured: Collection[str], history: Collection[str] = ()
) -> list[tuple[str, str]]:
    """(rule id, line) for each squeeze rule that skips a symbol without a short-interest
    figure (`unknown_short_interest = "skip"`) and watches symbols the `[rules] short_interest`
    file has no figure for (`figured`: those it has one for). A rule with none of its symbols
    covered cannot fire: said in replay's words (`cannot_fire`); one with some covered names
    the others, which never fire. A universe rule's symbols are `[engine] universe`'s, else
    those of the bar history (`history`); its line gives the share covered. With neither, a
    universe rule is not said: what the feeds will send cannot be told."""
    from monitor.core.rules.spec import cannot_fire, named_symbols, no_short_interest

    skipping = set(no_short_interest(rules.enabled))
    universe = set(config.engine.universe) or set(history)
    where = "[engine] universe" if config.engine.universe else "the bar history"
    skip = 'unknown_short_interest is "skip"'
    found: list[tuple[str, str]] = []
    for rule in rules.enabled:
        if rule.id not in skipping:
            continue
        watched = (universe - set(rule.exclude)) if rule.universe else set(named_symbols(rule))
        missing = sorted(watched.difference(figured))
        if not missing:
            continue
        source = where if rule.universe else None
        why = cannot_fire([rule], watched, source=source, figured=figured).get(rule.id)
        if why is not None:
            found.append((rule.id, f"rule {rule.id} cannot fire: {why}"))
        elif rule.universe:
            covered = len(watched) - len(missing)
            share = f"{covered:,} of the {len(watched):,} symbols of {where} it watches"
            listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            found.append(
                (
                    rule.id,
                    f"rule {rule.id}: the short-interest file has figures for {share}"
                    f" ({covered / len(watched):.0%}), and its {skip}: it never fires for the"
                    f" others ({listed})",
                )
            )
        else:
            found.append(
                (
                    rule.id,
                    f"rule {rule.id}: the short-interest file has no figure for"
                    f" {', '.join(missing)} ({len(missing)} of its {len(watched)} symbols), and"
                    f" its {skip}: it never fires for {'it' if len(missing) == 1 else 'them'}",
                )
            )
    return found


def history_symbols(config: Config) -> set[str]:
    """The symbols of the store's bar history (`config check`: the daemon's universe rules
    watch them at start); empty when there is none, or it cannot be read (`run` says why)."""
    import polars as pl

    from monitor.store import BARS

    path = resolve(config, config.store.path) / BARS
    if not path.is_file():
        return set()
    try:
        symbols = pl.scan_parquet(path).select(pl.col("symbol").unique()).collect()
    except (OSError, pl.exceptions.PolarsError):
        return set()
    return set(symbols.get_column("symbol").to_list())


def session_minutes(config: Config) -> int:
    """The minutes of a session the daemon's minute rules see: regular hours, or 04:00 to 20:00
    New York with `[engine] extended_hours`."""
    from monitor.core.rules.unheeded import EXTENDED_MINUTES, REGULAR_MINUTES

    return EXTENDED_MINUTES if config.engine.extended_hours else REGULAR_MINUTES


def load_short_interest(config: Config) -> ShortInterestFile | None:
    """The `[rules] short_interest` file, relative to the config file (None when unset), and
    its rows left out; DataError (exit 65) naming the file when it cannot be read, has a
    malformed cell or no usable row."""
    if not config.rules.short_interest:
        return None
    from monitor.short_interest_io import read_short_interest

    return read_short_interest(resolve(config, config.rules.short_interest))


def load_rules_file(config: Config) -> RulesFile:
    """The rules file `[rules] file` names; ConfigError says what is wrong with it."""
    from monitor.core.rules.spec import RuleError, parse_rules

    path = resolve(config, config.rules.file)
    try:
        return parse_rules(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"rules.file: cannot read {path}: {exc.strerror}") from None
    except RuleError as exc:
        raise ConfigError(f"rules.file {path}: {exc}") from None
