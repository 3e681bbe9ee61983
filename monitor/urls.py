"""URLs for people: what logs and error messages may show of a URL that may hold a secret.

Apart from `monitor.config` because the adapters (the Redis publisher) mask the URLs they log
too, and adapters do not import the config.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def mask_url(url: str) -> str:
    """`redis://user:pw@host` -> `redis://user:***@host`."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    cred, _, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else f"{scheme}://{user}@{host}"


def host_only(url: str) -> str:
    """What a message may quote of a URL that failed a check: the scheme and the host (with
    its port), never the user, password, path or query, which may hold secrets (a token in a
    query, a password with `#` that a parser cuts), and never a string without a scheme."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "(no scheme)"
    host = rest.rpartition("@")[2]
    cut = min((host.find(c) for c in "/?#" if c in host), default=len(host))
    return f"{scheme}://{host[:cut]}" + ("/…" if cut < len(host) else "")


def split_url(url: str, *, port: bool = True) -> SplitResult | str:
    """The parts of a URL, or the message for one the parser refuses (with `port`, when its
    port is not a number of 0-65535)."""
    try:
        parts = urlsplit(url)
        if port:
            parts.port  # noqa: B018 (a bad port raises here rather than at start)
    except ValueError as exc:  # ... and so does a broken [IPv6] host
        # (Not the parser's words: with a `#` or `/` in a password they quote part of it.)
        if str(exc).startswith("Port out of range"):
            return not_valid(url, "a port outside 1-65535")
        return not_valid(url, "a port that is not a number, or a broken [IPv6] host")
    return parts


def not_valid(url: str, why: str) -> str:
    """A message for a URL the parser refuses, quoting only its scheme and host."""
    return f"not a valid url ({why}): {host_only(url)!r}"
