"""Which alerts an engine has emitted: a firing found again (a period evaluated again, a
correction, a restored engine) passes once.

Why apart from `monitor.core.engine`: a replay emits hundreds of thousands of alerts, whose ids
stay polars columns until something asks for them as a set; that bookkeeping reads better on
its own than among the engine's steps.
"""

from __future__ import annotations

import polars as pl

from monitor.core.bar_history import sorted_unique
from monitor.core.model import empty
from monitor.core.payload import LINE_ORDER, LINE_SCHEMA


class Emitted:
    """The ids of the alerts emitted (or restored), and the filter new lines pass."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._pending: list[pl.Series] = []  # emitted, not yet in `_ids` (see `ids`)
        self._earlier = 0  # how many of `_pending` earlier steps emitted (see `new`)

    def step(self) -> None:
        """A step begins: every id emitted so far is of an earlier one."""
        self._earlier = len(self._pending)

    def new(self, lines: list[pl.DataFrame]) -> pl.DataFrame:
        """The lines whose alert ids were never emitted, sorted by ts, period (minutes, days,
        weeks), rule, rank (a movers rule's) then symbol, and id (LINE_ORDER); their ids join
        `ids`."""
        lines = [part for part in lines if part.height]
        if not lines:
            return empty(LINE_SCHEMA)
        both = pl.concat(lines) if len(lines) > 1 else lines[0]
        ids = both.get_column("id")
        # A replay's chunks are checked by polars, without a loop over their ids; past a few
        # pending columns (many small steps, as the daemon makes) the set takes over.
        # The chunks of one step hold the firings of different instants, and an id is made of
        # the instant: only ids of earlier steps can come again (a period evaluated again).
        if not self._ids and len(self._pending) < 16:
            keep = ids.is_first_distinct()
            earlier = self._pending[: self._earlier]
            if earlier:
                keep = keep & ~ids.is_in(pl.concat(earlier).implode())
            self._pending.append(ids.filter(keep))
        else:
            fired, new = self.ids, []
            for alert_id in ids.to_list():
                new.append(alert_id not in fired)
                fired.add(alert_id)
            keep = pl.Series(new, dtype=pl.Boolean)
        if not keep.all():
            both = both.filter(keep)
        return _in_order(both)

    @property
    def ids(self) -> set[str]:
        """The ids of every alert emitted (or restored). Until something asks, ids emitted into
        an empty set stay polars columns: a replay's hundreds of thousands never become Python
        strings."""
        for ids in self._pending:
            self._ids.update(ids.to_list())
        self._pending.clear()
        self._earlier = 0
        return self._ids


# (a rule's lines come in time order, an instant's by symbol and id: sorted by the keys up to
# the rule, that order kept, they are in LINE_ORDER but for a movers rule's ranks)
_BY_RULE = LINE_ORDER[: LINE_ORDER.index("rule") + 1]


def _in_order(lines: pl.DataFrame) -> pl.DataFrame:
    """`lines` sorted by LINE_ORDER. Sorted by the keys up to the rule alone (`_BY_RULE`),
    their order kept, they are mostly in LINE_ORDER already, as one comparison of each row
    with the one before confirms (else, a movers rule's lines say, the whole sort follows). A
    third of the whole sort's cost (a replay's chunk of 40,000 lines)."""
    by_rule = lines.sort(_BY_RULE, maintain_order=True)
    if sorted_unique(by_rule, LINE_ORDER):
        return by_rule
    return by_rule.sort(LINE_ORDER)
