"""The head of an HTTP/1.x request, as `monitor.http` reads it: the request line and the Host
header, checked. Pure: lines in, a `RequestHead` or a refusal (status and why) out.

A request line is `METHOD SP target SP HTTP/x.y`; the target is a path (`/api/state?x=1`) or,
as a proxy may send it, an absolute URL (`http://127.0.0.1:9108/healthz`), whose authority then
stands for the Host. Lines may end in CRLF or a bare LF. Anything else is a 400.

A server bound to a loopback address answers only requests whose Host is a loopback name
(`localhost`, `*.localhost`, `127.x.x.x`, `[::1]`, any port): a page on another site that had
its name resolve to 127.0.0.1 (DNS rebinding) would otherwise read /api/state and /api/closes
from the browser of whoever runs the daemon. A request without Host (HTTP/1.0, a bare client)
is answered: a browser always sends one.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")


class RequestHead(NamedTuple):
    """What a request asks: method, path, query string and Host (None when not sent)."""

    method: str
    path: str
    query: str
    host: str | None


class Refusal(NamedTuple):
    """A request answered without a route: its status and a line saying why."""

    status: int
    reason: str


def parse_head(lines: list[str]) -> RequestHead | Refusal:
    """The request line and headers of a request head (its lines without their line ends,
    the blank line left out), or a 400 saying what is wrong with them."""
    if not lines:
        return Refusal(400, "no request line")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
        return Refusal(400, "the request line must be METHOD /path HTTP/1.1")
    method, target, _ = parts
    host: str | None = None
    for line in lines[1:]:
        header = _HEADER.fullmatch(line)
        if header is None:
            return Refusal(400, "a header line must be Name: value")
        if header[1].lower() == "host":
            if host is not None:
                return Refusal(400, "more than one Host header")
            host = header[2]
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return RequestHead(method, path, query, host)
    absolute = urlsplit(target)
    if absolute.scheme.lower() not in ("http", "https") or not absolute.netloc:
        return Refusal(400, "the target must be a path (/healthz) or an http:// URL")
    return RequestHead(method, absolute.path or "/", absolute.query, absolute.netloc)


def is_loopback(host: str) -> bool:
    """Whether an address to listen on, or the name in a Host header (with or without a
    port), is a loopback one."""
    name = host.strip().lower()
    if name.startswith("["):  # ([::1]:9108)
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:  # (127.0.0.1:9108, localhost:9108; an IPv6 address has more)
        name = name.partition(":")[0]
    name = name.removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
