"""The head of an HTTP/1.x request, as `monitor.http` reads it: the request line and the Host
header, checked. Pure: lines in, a `RequestHead` or a refusal (status and why) out.

A request line is `METHOD SP target SP HTTP/x.y`; the target is a path (`/api/state?x=1`) or,
as a proxy may send it, an absolute URL (`http://127.0.0.1:9108/healthz`), whose authority then
stands for the Host. Lines may end in CRLF or a bare LF. Anything else is a 400.

A server bound to a loopback address answers only requests whose Host is a loopback name
(`localhost`, `*.localhost`, `127.x.x.x`, `[::1]`, any port): a page on another site that had
its name resolve to 127.0.0.1 (DNS rebinding) would otherwise read /api/state and /api/closes
from the browser of whoever runs the daemon. A request without Host (HTTP/1.0, a bare client)
is answered: a browser always sends one. `[http] allowed_hosts` (names, `*.example.com`, with
or without a port) widens that to those names, and, whatever the address the server is bound to
(0.0.0.0 in the container), limits the Host to them and the loopback names:
`host_allowed(host, allowed)`. `allowed_host_problem(entry)` says what is wrong with an entry,
for the config's check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from typing import NamedTuple
from urllib.parse import urlsplit

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")  # (a DNS label; `_` aside)
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
    name, _ = _split(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """Whether a Host header's value is a loopback name or one of `allowed` (checked entries
    of `[http] allowed_hosts`): the same name (case and a final dot aside; an IP address in any
    spelling), or under a `*.` entry's domain (`*.example.com`: `a.example.com`, `a.b.example.com`,
    not `example.com`); an entry's port, when it has one, must be the Host's."""
    if is_loopback(host):
        return True
    name, port = _split(host)
    name = _canonical(name)
    for entry in allowed:
        want, want_port = _split(entry)
        if want_port and want_port != port:
            continue
        if want.startswith("*."):
            if name.endswith(want[1:]) and len(name) > len(want) - 1:
                return True
        elif name == _canonical(want):
            return True
    return False


def allowed_host_problem(entry: str) -> str | None:
    """What is wrong with an `[http] allowed_hosts` entry, None when it is a host name (or a
    `*.` domain, or an IP address, an IPv6 one in brackets) with or without `:port`."""
    example = "a name with or without a port (monitor.example.com, *.example.com, 192.0.2.7:9108)"
    if not entry.strip() or any(c in entry for c in "/@?# \t"):
        return f"{entry!r} is not a host: give {example}"
    name, port = _split(entry)
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
        return f"{entry!r}: the port must be a number from 1 to 65535"
    if entry.strip().startswith("[") or ":" in name:  # (an IPv6 address)
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return f"{entry!r}: not an IPv6 address in brackets ([2001:db8::7]:9108)"
        return None
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:  # (`*`, `*.com`: every name, or every name of a top-level domain)
            return f"{entry!r}: a * must stand before a domain of two labels at least"
    if not labels or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{entry!r} is not a host: give {example}"
    return None


def _split(host: str) -> tuple[str, str]:
    """The name (lower case, without brackets or a final dot) and the port ('' when none) of a
    Host header's value or an `allowed_hosts` entry."""
    name = host.strip().lower()
    port = ""
    if name.startswith("["):  # ([::1]:9108)
        end = name.find("]")
        name, port = (name[1:end], name[end + 1 :].removeprefix(":")) if end > 0 else ("", "")
    elif name.count(":") == 1:  # (127.0.0.1:9108, localhost:9108; an IPv6 address has more)
        name, _, port = name.partition(":")
    return name.removesuffix("."), port


def _canonical(name: str) -> str:
    """An IP address in its one spelling (`0:0::7` and `::7` are one address), else the name."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name
