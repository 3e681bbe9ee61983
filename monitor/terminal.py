"""Text for a terminal: control characters spelled out (`\x1b`), so a symbol, a comment or a
feed name from a file or the network cannot move the cursor, change colours or retitle the
window of whoever reads the output (`tail`, the daemon's console, `silence list`)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with each control character as its escape (a newline too: one line stays one)."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
