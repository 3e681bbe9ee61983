"""Receiver URLs in logs and dead-letter reasons: tokens never shown, whatever the scheme."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.notify.delivery import AppriseSender, ChannelUnavailable, Courier, Outcome, redact
from monitor.notify.render import Message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("pbul://o.Sup3rSecretAccessTokenAbc123", "pbul://***"),
        ("pbul://o.Sup3rSecretAccessTokenAbc123/device", "pbul://***"),
        ("tgram://123456:AAH-Sup3rSecretBotToken/-1001234", "tgram://***"),
        ("slack://T1SECRET/B2SECRET/C3Sup3rSecret", "slack://***"),
        ("discord://111222333/Sup3rSecretWebhookToken", "discord://***"),
        ("ntfy://Sup3rSecretTopic", "ntfy://***"),
        ("json://127.0.0.1:8080/x?+Authorization=Sup3rSecret", "json://127.0.0.1/…"),
        (
            "https://user:Sup3rSecret@hooks.example.com/path?token=Sup3rSecret",
            "https://hooks.example.com/…",
        ),
        (
            "mailto://user:Sup3rSecret@mail.example.com?to=ops@example.com",
            "mailto://mail.example.com/…",
        ),
        ("mailto://user:pass@host", "mailto://host/…"),
        ("PBUL://o.Sup3rSecret", "pbul://***"),
        ("not a url Sup3rSecret", "***"),
        ("xoxbSup3rSecret", "***"),  # (no scheme at all: a bare token)
    ],
)
def test_redact_shows_a_host_only_for_web_and_mail_schemes(url: str, shown: str) -> None:
    """Only the scheme, plus the host for http/json/xml/form/mailto-style URLs."""
    assert redact(url) == shown
    assert "Sup3rSecret" not in shown and "pass" not in shown


async def test_apprise_failure_reason_and_retry_log_hide_a_token_in_the_host() -> None:
    """A Pushbullet token is the URL's host: a failed send shows `pbul://***` in the retry log
    and in the reason the service dead-letters."""
    token = "o.Sup3rSecretAccessTokenAbc123"
    sender = AppriseSender(f"pbul://{token}")

    def fail(**_: object) -> bool:
        return False

    sender._apprise.notify = fail  # type: ignore[method-assign]

    async def no_sleep(_: float) -> None:
        return None

    courier = Courier(
        "push", sender, backoff=Backoff(0.001, 0.001, jitter=0.0), max_attempts=2, sleep=no_sleep
    )
    with capture_logs() as logs:
        outcome = await courier.deliver(Message("t", "b", "text"))
    assert outcome == Outcome(
        False, 2, "gave up after 2 attempts: apprise could not notify pbul://***"
    )
    assert [(e["event"], e["error"]) for e in logs] == [
        ("delivery_retry", "apprise could not notify pbul://***")
    ]
    assert sender.where == "pbul://***"
    assert token.lower() not in repr(logs).lower() + outcome.reason.lower()


class Entry:
    """What Apprise hands its `log_callback`: a captured log line."""

    def __init__(self, level: str, message: str) -> None:
        self.level = level
        self.message = message


async def test_apprise_s_own_reason_is_given_with_the_url_s_secrets_masked() -> None:
    """The reason Apprise logs for a failed send (its WARNING, and of its DEBUG lines the
    exception's text) is put in the error, any part of the URL that may be a secret masked
    (user, password, path, query values, and the host where it is the token); Apprise's other
    DEBUG lines, which quote requests, are left out."""
    url = "pbul://o.Sup3rSecretAccessTokenAbc123/dev1ce?to=ops%40example.com"
    sender = AppriseSender(url)

    def fail(**kwargs: Any) -> bool:
        tell = kwargs["log_callback"]
        tell(Entry("WARNING", "Failed to send Pushbullet to o.Sup3rSecretAccessTokenAbc123."))
        tell(Entry("DEBUG", "Pushbullet POST URL: https://x/?o.Sup3rSecretAccessTokenAbc123"))
        tell(Entry("DEBUG", "Socket Exception: refused for dev1ce and ops@example.com"))
        return False

    sender._apprise.notify = fail  # type: ignore[method-assign]
    with pytest.raises(ChannelUnavailable) as caught:
        await sender.send(Message("t", "b", "text"))
    assert str(caught.value) == (
        "apprise could not notify pbul://***: Failed to send Pushbullet to ***; "
        "refused for *** and ***"
    )


async def test_a_short_password_is_masked_in_apprise_s_reason_too() -> None:
    """A password shorter than the four characters below which URL parts are taken for words
    is a secret by its place in the URL: masked in the reason all the same."""
    url = "mailto://ops:pw9@mail.example.com/?to=desk%40example.com"
    sender = AppriseSender(url)

    def fail(**kwargs: Any) -> bool:
        kwargs["log_callback"](Entry("WARNING", "SMTP login refused for ops with pw9."))
        return False

    sender._apprise.notify = fail  # type: ignore[method-assign]
    with pytest.raises(ChannelUnavailable) as caught:
        await sender.send(Message("t", "b", "text"))
    assert "pw9" not in str(caught.value)
    assert "login refused for ops with ***" in str(caught.value)
