"""Trade conditions: which trades a provider sends are prices a bar may take.

The consolidated tape (the SIP) marks each trade with sale conditions. Some trades are not
prices the market traded at when they were reported: an average price of several fills, a
trade settled next day or in cash, a price agreed earlier (prior reference price, sold out of
sequence), a price derived from other instruments, a contingent leg of a larger deal, a market
center's official open or close (a repeat of a price already on the tape). The SIP's rules keep
those out of the consolidated last sale (most out of the day's high and low too); a bar built
from them could close at, or spike to, a price nobody traded at then. The feeds reject such
trades as `trade_condition` (counted and logged like every rejection), so their volume is not
in the bars either.

Kept: regular trades, intermarket sweeps, opening, reopening and closing prints, crosses, odd
lots (their prices are the market's; the SIP leaves them out of the last sale by a rule about
size, not price) and Form T trades (reported as they trade, outside regular hours: the session
window, `[engine] extended_hours`, decides those by their time). The SIP counts most rejected
trades in the day's volume, so bars built from a stream have a little less volume than the
provider's own bars (and the minutes fetched after a reconnect). A `c` that is not a list of
codes is a `bad_message`: the feeds read the stock streams, where it always is.

Codes: the SIP's letters (Alpaca sends them as they come; CTA's for tapes A and B, UTP's for
tape C: "B" is an average-price trade in CTA and a bunched trade in UTP) and Polygon's numbers
for the same conditions (its /v3/reference/conditions).
"""

from __future__ import annotations

from collections.abc import Iterable

# Letters that keep a trade out of the consolidated last sale, on both plans: cash (C),
# derivatively priced (4), market center official close and open (M, Q), next day (N), price
# variation (H), prior reference price (P), seller (R), sold out of sequence (Z) and its
# extended-hours twin (U: reported late, its time is not when it traded), contingent (V) and
# qualified contingent (7) trades.
_BOTH = frozenset("C4MQNHPRZUV7")
CTA_EXCLUDED = _BOTH | {"B"}  # (B: average price trade)
UTP_EXCLUDED = _BOTH | {"W", "G"}  # (W: average price trade; G: bunched sold trade)
_ANY = CTA_EXCLUDED | UTP_EXCLUDED

# Polygon's numbers of the same conditions: average price (2), bunched sold (5), cash (7),
# derivatively priced (10), official close and open (15, 16), next day (20), price variation
# (21), prior reference price (22), seller (29), sold out of sequence (33) and its extended-hours
# twin (13), contingent (52), qualified contingent (53).
POLYGON_EXCLUDED = frozenset({2, 5, 7, 10, 13, 15, 16, 20, 21, 22, 29, 33, 52, 53})

REASON = "trade_condition"


def sip_excluded(conditions: Iterable[str], tape: str | None) -> bool:
    """Whether SIP sale `conditions` (letters) keep a trade out of bars; `tape` "A", "B" (CTA)
    or "C" (UTP), or unknown: then only the letters both plans agree on (and W and G, which
    CTA does not use), so a bunched trade of tape C is not taken for an average price."""
    if _ANY.isdisjoint(conditions):  # (the common case, without a set of its own)
        return False
    if tape in ("A", "B"):
        return not CTA_EXCLUDED.isdisjoint(conditions)
    return not UTP_EXCLUDED.isdisjoint(conditions)


def polygon_excluded(conditions: Iterable[int]) -> bool:
    """Whether Polygon's condition numbers keep a trade out of bars."""
    return not POLYGON_EXCLUDED.isdisjoint(conditions)
