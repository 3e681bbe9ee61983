"""A receiver URL of several targets (a Telegram URL of two chats, a Slack webhook of two
channels) one of which refuses an alert for good: the dead letter names the targets that
accepted it, and `notify dead resend` sends it to the others only, never a second time to a
chat that has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notify.test_dead_command import SURGE, cli, dead_letters, letter_ids, write_config
from tests.notify.test_rate_limits import TG, FakeApi

pytestmark = pytest.mark.integration


async def test_telegram_resend_goes_only_to_the_chat_that_refused(
    stream: str, tmp_path: Path
) -> None:
    """-1001 takes the alert, -1002 answers 400 "chat not found": the letter says -1001
    accepted it (`dead list`), and `dead resend --all` once -1002 works sends it to -1002
    alone (it used to send it to -1001 a second time)."""
    async with FakeApi() as api:
        send = f"/bot{TG}/sendMessage"
        api.reply(send, 200, {"ok": True})
        api.reply(send, 400, {"ok": False, "description": "Bad Request: chat not found"})
        url = f"tgram://{TG}/-1001/-1002?api_base={api.base}"
        conf = write_config(tmp_path / "notify.toml", stream, url)
        (key,) = await dead_letters(conf, stream, [SURGE])
        assert [r.json()["chat_id"] for r in api.requests] == ["-1001", "-1002"]

        code, out, err = await cli(conf, "list")
        assert (code, err) == (0, "")
        assert out.rstrip("\n").endswith(
            "tgram://***: HTTP 400 Bad Request: chat not found  (accepted by -1001)"
        )
        code, out, err = await cli(conf, "resend", "--all")
        assert (code, out, err) == (0, f"{key}  chat  surge.daily IWM: sent\n", "")
    assert [r.json()["chat_id"] for r in api.requests] == ["-1001", "-1002", "-1002"]
    assert await letter_ids(stream) == []


async def test_slack_resend_goes_only_to_the_channel_that_refused(
    stream: str, tmp_path: Path
) -> None:
    """#a takes the alert, #b answers 404 channel_not_found: `dead resend --all` sends it to
    #b alone; a resend that fails again keeps the letter, still skipping #a."""
    async with FakeApi() as api:
        hook = "/services/T000/B000/XXXX"
        api.reply(hook, 200, b"ok")
        api.reply(hook, 404, b"channel_not_found")
        url = f"slack://T000/B000/XXXX/#a/#b?api_base={api.base}"
        conf = write_config(tmp_path / "notify.toml", stream, url)
        (key,) = await dead_letters(conf, stream, [SURGE])
        assert [r.json()["channel"] for r in api.requests] == ["#a", "#b"]

        api.reply(hook, 404, b"channel_not_found")
        code, out, _ = await cli(conf, "resend", "--all")
        assert code == 1
        assert out.startswith(f"{key}  chat  surge.daily IWM: failed: ")
        assert await letter_ids(stream) == [key]
        code, out, err = await cli(conf, "resend", "--all")
        assert (code, out, err) == (0, f"{key}  chat  surge.daily IWM: sent\n", "")
    assert [r.json()["channel"] for r in api.requests] == ["#a", "#b", "#b", "#b"]
    assert await letter_ids(stream) == []


async def test_a_resend_that_reaches_more_targets_before_failing_again_records_them(
    stream: str, tmp_path: Path
) -> None:
    """Three channels: #a takes the alert, #b refuses it; a resend reaches #b and #c refuses
    it: the letter is replaced by one naming #a and #b, so the next resend goes to #c alone
    (before, the letter kept naming #a only, and #b got the alert twice)."""
    async with FakeApi() as api:
        hook = "/services/T000/B000/XXXX"
        api.reply(hook, 200, b"ok")
        api.reply(hook, 404, b"channel_not_found")
        url = f"slack://T000/B000/XXXX/#a/#b/#c?api_base={api.base}"
        conf = write_config(tmp_path / "notify.toml", stream, url)
        (key,) = await dead_letters(conf, stream, [SURGE])

        api.reply(hook, 200, b"ok")
        api.reply(hook, 404, b"channel_not_found")
        code, out, _ = await cli(conf, "resend", "--all")
        assert code == 1
        (new,) = await letter_ids(stream)
        assert new != key
        assert out.startswith(f"{key}  chat  surge.daily IWM: failed: ")
        assert out.endswith(f" (accepted by #a, #b now: the letter is {new})\n")
        code, out, _ = await cli(conf, "list")
        assert out.startswith(new) and "(accepted by #a, #b)" in out
        code, out, err = await cli(conf, "resend", "--all")
        assert (code, out, err) == (0, f"{new}  chat  surge.daily IWM: sent\n", "")
    assert [r.json()["channel"] for r in api.requests] == ["#a", "#b", "#b", "#c", "#c"]
    assert await letter_ids(stream) == []
