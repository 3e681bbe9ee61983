"""What a log line or message shows of a URL: never its password, in the user info or the query."""

from __future__ import annotations

import pytest

from monitor.urls import mask_url, url_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0?password=RedisPW_7f3a9", "redis://127.0.0.1:6379/0?password=***"),
        ("redis://h:6379/0?db=1&Password=pw&socket_timeout=5",
         "redis://h:6379/0?db=1&Password=***&socket_timeout=5"),
        ("wss://stream.example/v1?token=FinTok_777", "wss://stream.example/v1?token=***"),
        ("https://api.example/v2?apiKey=K1&api_key=K2&key=K3&secret=S&access_token=T&limit=5",
         "https://api.example/v2?apiKey=***&api_key=***&key=***&secret=***&access_token=***"
         "&limit=5"),
        ("https://u:RestPW_123@api.example/v2", "https://u:***@api.example/v2"),
        ("redis://alerts:p#ss@redis.example:6380/2", "redis://alerts:***@redis.example:6380/2"),
        ("redis://u:pa&key=x@h/0", "redis://u:***@h/0"),
        ("wss://h/p?email=a@b&token=T", "wss://h/p?email=a@b&token=***"),
        ("wss://h/p#access_token=T", "wss://h/p#access_token=***"),
        ("redis://h/0?pass%77ord=pw", "redis://h/0?pass%77ord=***"),
        ("redis://monitor@h:6379/0", "redis://monitor@h:6379/0"),
        ("redis://h:6379/0?password=", "redis://h:6379/0?password="),
    ],
)  # fmt: skip
def test_mask_url_masks_the_password_and_every_secret_parameter(url: str, shown: str) -> None:
    """The user info's password and the value of each query or fragment parameter named like a
    secret (password, token, key, secret, ...) are masked; the rest stays as written."""
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("url", "has"),
    [
        ("redis://:pw@h:6379/0", True),
        ("redis://h:6379/0?password=pw", True),
        ("redis://h:6379/0?db=0&PASSWORD=pw", True),
        ("redis://monitor@h:6379/0", False),
        ("redis://h:6379/0?password=", False),
        ("redis://h:6379/0?token=t", False),
    ],
)
def test_url_password_sees_a_password_in_the_user_info_or_the_query(url: str, has: bool) -> None:
    """A Redis URL carries a password the client sends in `user:pw@` or `?password=` alike."""
    assert url_password(url) is has
