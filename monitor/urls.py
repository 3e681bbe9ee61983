"""URLs for people: what logs and error messages may show of a URL that may hold a secret.

Apart from `monitor.config` because the adapters (the Redis publisher) mask the URLs they log
too, and adapters do not import the config.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

# A query parameter (or fragment parameter) whose name holds one of these is taken for a
# secret and its value masked: password, token, apikey, api_key, key, secret, access_token,
# client_secret, auth, sig, ... (redis-py reads `?password=` as the login's password; a
# provider's stream or REST URL may carry `?token=` or `?apiKey=`). A harmless one masked
# (`ssl_keyfile`) costs a log line's detail; a secret shown costs the secret.
_SECRET_WORDS = re.compile(r"pass|pwd|secret|token|key|auth|credential|sig", re.IGNORECASE)
_PARAMETER = re.compile(r"([?&;#])([^=&;#]*)=([^&;#]*)")


def _is_secret(name: str) -> bool:
    """Whether a URL query parameter named `name` may hold a secret (see `_SECRET_WORDS`)."""
    plain = unquote(name)
    return plain.lower() == "pw" or _SECRET_WORDS.search(plain) is not None


def mask_url(url: str) -> str:
    """`redis://user:pw@host/0?password=pw&db=1` -> `redis://user:***@host/0?password=***&db=1`:
    the user info's password and the value of every parameter that may be a secret
    (`_is_secret`) masked, the rest as written (a password may hold `/`, `?` or
    `#`: the user info ends at the last `@`, see `_user_info`)."""
    scheme, sep, rest = url.partition("://") if "://" in url else ("", "", url)
    cred, at, host = _user_info(rest)
    if at:
        user, colon, _ = cred.partition(":")
        rest = f"{user}{':***' if colon else ''}@{host}"
    return scheme + sep + _PARAMETER.sub(_masked_parameter, rest)


def _user_info(rest: str) -> tuple[str, str, str]:
    """(user info, "@", the rest) of what follows a URL's `://`, or ("", "", rest) without
    user info: it ends at the last `@`, unless the text before that holds no user (a `/`, `?`
    or `#` before its `:`: the `@` is in the path or query)."""
    cred, at, host = rest.rpartition("@")
    if not at or any(c in cred.partition(":")[0] for c in "/?#"):
        return "", "", rest
    return cred, at, host


def _masked_parameter(found: re.Match[str]) -> str:
    mark, name, value = found.groups()
    return f"{mark}{name}={'***' if _is_secret(name) and value else value}"


def url_password(url: str) -> bool:
    """Whether a URL carries a password the Redis client sends: in its user info
    (`redis://user:pw@host`) or as its `?password=` parameter, which redis-py reads too."""
    cred = _user_info(url.partition("://")[2])[0]
    return ":" in cred or any(
        unquote(name).lower() == "password" and value for _, name, value in _PARAMETER.findall(url)
    )


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
