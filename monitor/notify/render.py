"""Messages for people: Markdown for chat, HTML (Apprise adds the plain-text part) for email,
plain text for the rest. Pure. Symbols and names are escaped for the format they go into.

Templates (`[templates]` in the config) are `string.Template` strings over the fields below,
already escaped for the target format: $title $text $history $symbol $rule $kind $severity
$session $timeframe $id. They apply to one-alert messages; groups use the built-in layout.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from string import Template
from typing import Literal

from monitor.core.model import Alert
from monitor.notify.config import TemplatesSection

BodyFormat = Literal["markdown", "html", "text"]
LIST_LIMIT = 20
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>~|#])")


@dataclass(frozen=True)
class Message:
    """What a sender sends: title, body in `body_format`, attachments (name, bytes), the kind
    of notification (Apprise's type: `info`, `warning` or `failure`, from `kind_of`), and the
    alerts it tells of (a json:// receiver gets them whole: ids to deduplicate, fields to route)."""

    title: str
    body: str
    body_format: BodyFormat
    attachments: tuple[tuple[str, bytes], ...] = ()
    kind: NotifyKind = "info"
    alerts: tuple[Alert, ...] = ()
    # Targets of a receiver of several (Telegram chats, Slack channels) that have the alerts
    # already and are not sent it (`notify dead resend` of a letter some of them accepted).
    skip_targets: frozenset[str] = frozenset()


NotifyKind = Literal["info", "warning", "failure"]
_KIND: dict[str, NotifyKind] = {"warning": "warning", "critical": "failure"}


def kind_of(alerts: Sequence[Alert]) -> NotifyKind:
    """The notification type of a message of `alerts`: that of its most severe alert (info
    and notice are `info`, warning `warning`, critical `failure`)."""
    kinds = {_KIND.get(a.severity, "info") for a in alerts}
    return next((k for k in ("failure", "warning") if k in kinds), "info")


def escape(text: str, fmt: BodyFormat) -> str:
    """`text` made inert for `fmt` (Markdown specials backslashed, HTML entities)."""
    if fmt == "markdown":
        return _MD_SPECIAL.sub(r"\\\1", text)
    if fmt == "html":
        return html.escape(text, quote=True)
    return text


def history_line(alert: Alert) -> str:
    """The 'what happened next' sentence, or '' (feed health, no history)."""
    if alert.history is None:
        return ""
    if alert.history.summary:
        return alert.history.summary
    n = alert.history.prior_occurrences
    return "No earlier occurrence in the loaded history." if n == 0 else f"{n} earlier times."


def fields(alert: Alert, fmt: BodyFormat) -> dict[str, str]:
    """Template fields of an alert, escaped for `fmt`."""
    raw = {
        "title": alert.title,
        "text": alert.text,
        "history": history_line(alert),
        "symbol": alert.symbol,
        "rule": alert.rule,
        "kind": alert.kind,
        "severity": alert.severity,
        "session": alert.session,
        "timeframe": alert.timeframe,
        "id": alert.id,
    }
    return {k: escape(v, fmt) for k, v in raw.items()}


DEFAULT = {
    # (no code span around the rule: a backslash escape inside one is shown, `iwm\_qqq`)
    "markdown": "**$title**\n$text\n_${history}_\n$rule · $severity · $session",
    "html": (
        "<h3>$title</h3>\n<p>$text</p>\n<p><i>$history</i></p>\n"
        '<p style="color:#666">$rule · $severity · $session</p>'
    ),
    "text": "$title\n$text\n$history\n$rule · $severity · $session",
}


def title_of(alerts: Sequence[Alert], templates: TemplatesSection | None = None) -> str:
    """A short title: the alert's own, or "14 symbols fired squeeze.daily on 2024-07-16"."""
    first = alerts[0]
    if len(alerts) == 1:
        if templates is not None and templates.title:
            return Template(templates.title).safe_substitute(fields(first, "text"))
        return first.title
    rules = sorted({a.rule for a in alerts})
    sessions = sorted({a.session for a in alerts})
    what = rules[0] if len(rules) == 1 else f"{len(rules)} rules"
    when = f" on {sessions[0]}" if len(sessions) == 1 else ""
    symbols = len({a.symbol for a in alerts})
    return f"{symbols} symbols fired {what}{when}" if symbols > 1 else f"{len(alerts)} alerts"


def render(
    alerts: Sequence[Alert],
    fmt: BodyFormat,
    templates: TemplatesSection | None = None,
    listed: int = LIST_LIMIT,
) -> tuple[str, str]:
    """(title, body) for one message carrying `alerts` (one or a group, of which the first
    `listed` are listed, then "and N more")."""
    if not alerts:
        raise ValueError("render needs at least one alert")
    title = title_of(alerts, templates)
    if len(alerts) == 1:
        override = getattr(templates, fmt, "") if templates is not None else ""
        template = Template(override or DEFAULT[fmt])
        body = template.safe_substitute(fields(alerts[0], fmt))
        if not history_line(alerts[0]):
            body = "\n".join(
                line for line in body.split("\n") if line not in ("__", "<p><i></i></p>")
            )
        return title, body.strip()
    return title, _group(alerts, fmt, listed)


def fitted(message: Message, fits: Callable[[Message], bool]) -> Message:
    """`message`, or, when it does not `fits` (a service's length limit) and tells of a group
    of alerts, the same with fewer of them listed: the most that fits, one at least. A cut
    message would lose its end: "and N more" and the history line."""
    alerts = message.alerts
    if len(alerts) < 2 or fits(message):
        return message
    smaller = message
    for listed in range(min(LIST_LIMIT, len(alerts)) - 1, 0, -1):
        body = render(alerts, message.body_format, listed=listed)[1]
        smaller = dataclasses.replace(message, body=body)
        if fits(smaller):
            break
    return smaller


def title_in_body(message: Message) -> bool:
    """Whether the body's first line is the title (the one-alert templates start with it):
    then a sender does not put the title above the body again."""
    first = message.body.split("\n", 1)[0]
    if message.body_format == "markdown":
        first = re.sub(r"\\(.)", r"\1", first.replace("**", ""))
    elif message.body_format == "html":
        first = html.unescape(re.sub(r"<[^>]*>", "", first))
    return not message.title or first.strip() == message.title.strip()


def _group(alerts: Sequence[Alert], fmt: BodyFormat, listed: int = LIST_LIMIT) -> str:
    shown, more = alerts[:listed], len(alerts) - listed
    tail = f"and {more} more" if more > 0 else ""
    if fmt == "html":
        rows = "\n".join(
            f"<tr><td><b>{escape(a.symbol, fmt)}</b></td><td>{escape(a.text, fmt)}</td>"
            f"<td><i>{escape(history_line(a), fmt)}</i></td></tr>"
            for a in shown
        )
        return f"<table>\n{rows}\n</table>" + (f"\n<p>{tail}</p>" if tail else "")
    bullet = "•" if fmt == "markdown" else "-"
    lines = []
    for a in shown:
        sym = f"**{escape(a.symbol, fmt)}**" if fmt == "markdown" else a.symbol
        lines.append(f"{bullet} {sym}: {escape(a.text, fmt)}")
    if tail:
        lines.append(tail)
    hist = {history_line(a) for a in alerts} - {""}
    if len(hist) == 1:
        line = escape(hist.pop(), fmt)
        lines.append(f"_{line}_" if fmt == "markdown" else line)
    return "\n".join(lines)
