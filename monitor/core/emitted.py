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
from monitor.core.payload import LINE_SCHEMA


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
        """The lines whose alert ids were never emitted, sorted by ts, rule, symbol and id; their
        ids join `ids`."""
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


ORDER = ["ts", "rule", "symbol", "id"]  # (of the lines a step hands out; ids are unique)


def _in_order(lines: pl.DataFrame) -> pl.DataFrame:
    """`lines` sorted by ORDER. Each rule's lines come in time order, an instant's by symbol
    (and id): sorted by `ts` and `rule` alone, that order kept, they are sorted by all four,
    as one comparison of each row with the one before confirms (else the four-key sort
    follows). A third of the four-key sort's cost (a replay's chunk of 40,000 lines)."""
    by_time = lines.sort("ts", "rule", maintain_order=True)
    if sorted_unique(by_time, ORDER):
        return by_time
    return by_time.sort(ORDER)
