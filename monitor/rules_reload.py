"""The rules file read again while the daemon runs: SIGHUP (`systemctl reload market-monitor`).

The signal wakes the engine loop, which reads and checks the file, and the short-interest file
it names, before its next step, on the event loop (a short-interest file of a few MB takes a
few hundred ms). A file that does not read (a TOML error, an unknown kind or parameter, a
short-interest file that cannot be read), or one without a `[[rules]]` table (an editor's
save caught half-way, more likely than a wish to stop every rule, which `enabled = false`
says), is logged as `rules_reload_failed` with the reason, and the rules in force stay. One
that reads becomes the engine's at the start of its next step, in the engine's thread (see
`Pipeline.engine_change`): a rule that is new or changed fires from the next period on, never
on periods already evaluated (`Engine.replace_rules`). Only the rules file (and the short
interest it uses) is read again; every other setting needs a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from monitor.config import Config, resolve
from monitor.core.model import FeedBatch
from monitor.core.rules.spec import (
    NO_RULES,
    NO_SHORT_INTEREST,
    RulesFile,
    no_short_interest,
    rule_warnings,
)
from monitor.errors import ConfigError, DataError
from monitor.replay import build_engine
from monitor.rules_config import (
    load_rules_file,
    never_fire,
    outside_universe,
    session_minutes,
    short_interest_coverage,
)

if TYPE_CHECKING:
    from monitor.service import Daemon


class RulesReload:
    """`request` on SIGHUP; `take` gives the pipeline the change to make, once per request."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.due = False
        daemon.counters.describe("rules_reloads", "Rules file reloads (SIGHUP), by result")
        for result in ("ok", "failed"):
            daemon.counters.zero("rules_reloads", result=result)

    def request(self) -> None:
        """Read the rules file again before the engine's next step (which this wakes)."""
        self.daemon.log.info("rules_reload_requested")
        self.due = True
        with contextlib.suppress(asyncio.QueueFull):
            self.daemon.queue.put_nowait(FeedBatch.empty("rules-reload"))

    def take(self) -> Callable[[], None] | None:
        """The engine change of a reload asked for (None when none is, or the file is bad)."""
        if not self.due:
            return None
        self.due = False
        daemon = self.daemon
        try:
            rules = load_rules_file(daemon.config)
            if not rules.rules:
                path = resolve(daemon.config, daemon.config.rules.file)
                self._refuse(
                    f"rules.file {path}: {NO_RULES}",
                    hint="a file without rules is taken for one saved half-way; to stop every"
                    " rule, set enabled = false on each and reload",
                )
                return None
            short_interest = daemon.read_short_interest()
            ctx = build_engine(rules, daemon.sessions, short_interest=short_interest).ctx
        except (ConfigError, DataError) as exc:
            hint = "fix the file (`market-monitor config check` reads it) and reload again"
            self._refuse(str(exc), hint=hint)
            return None
        warn_of(daemon.config, rules, daemon.log, daemon.figured, daemon.history_symbols())
        before = {r.id: r for r in daemon.rules.enabled}
        after = {r.id: r for r in rules.enabled}

        def change() -> None:  # (in the engine's thread, between two steps)
            recorded = daemon.engine.replace_rules(rules, ctx)
            daemon.rules = rules
            daemon.progress_gauges.refresh(daemon.engine.progress)  # (a rule gone, or changed)
            daemon.log.info(
                "rules_reloaded",
                rules=len(after),
                added=sorted(after.keys() - before.keys()),
                removed=sorted(before.keys() - after.keys()),
                changed=sorted(k for k in after.keys() & before.keys() if after[k] != before[k]),
                history_firings_recorded=recorded,
            )
            daemon.counters.inc("rules_reloads", result="ok")

        return change

    def _refuse(self, error: str, *, hint: str) -> None:
        """Log and count a reload refused: the rules in force stay."""
        self.daemon.log.error(
            "rules_reload_failed",
            error=error,
            kept=[r.id for r in self.daemon.rules.enabled],
            hint=hint,
        )
        self.daemon.counters.inc("rules_reloads", result="failed")


def warn_of(
    config: Config,
    rules: RulesFile,
    log: Any,
    figured: Collection[str] | None = None,
    history: Collection[str] = (),
) -> None:
    """Log what is odd about rules the daemon takes (at its start, and at a reload): symbols
    outside the universe it watches, percents given for fractions, squeeze rules that cannot
    fire without a short-interest file, or whose symbols (of `history`, the bar history's, for
    a universe rule without `[engine] universe`) that file has no figure for (`figured`: the
    symbols it has one for; None when no file is given)."""
    for line in outside_universe(config, rules):
        log.warning("rule_symbols_outside_universe", detail=line)
    for line in never_fire(config, rules):
        log.warning("rule_never_fires", detail=line)
    for line in rule_warnings(rules, session_minutes=session_minutes(config)):
        log.warning("rules_file_warning", detail=line)
    if not config.rules.short_interest:
        for rule_id in no_short_interest(rules.enabled):
            log.warning("rule_cannot_fire", rule=rule_id, reason=NO_SHORT_INTEREST)
    elif figured is not None:
        for rule_id, line in short_interest_coverage(config, rules, figured, history):
            log.warning("rule_short_interest_missing", rule=rule_id, detail=line)
