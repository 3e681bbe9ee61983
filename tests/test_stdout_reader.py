"""Whether the reader of standard output has gone, as `tail` and `watch` look at it while they
wait."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

from monitor.stdout_reader import is_gone, sleep


def test_a_pipe_whose_read_end_is_closed_is_gone_and_a_file_never_is(tmp_path: Path) -> None:
    """The write end of a pipe is gone once its read end is closed, not before; a regular file,
    /dev/null and an output without a descriptor (a StringIO) never are: `tail > alerts.jsonl`
    runs on."""
    read_fd, write_fd = os.pipe()
    with (
        os.fdopen(write_fd, "w") as pipe,
        open(tmp_path / "alerts.jsonl", "w") as file,
        open(os.devnull, "w") as null,
    ):
        before = is_gone(pipe)
        os.close(read_fd)
        seen = [before, is_gone(pipe), is_gone(file), is_gone(null), is_gone(io.StringIO())]
    assert seen == [False, True, False, False, False]


def test_sleep_ends_as_the_reader_goes_and_sleeps_its_time_when_it_stays(tmp_path: Path) -> None:
    """`sleep(out, 30)` returns True as soon as the read end of `out`'s pipe is closed (by
    another thread here, after 0.2 s), not after 30 s; to a file it sleeps its whole time and
    returns False."""
    read_fd, write_fd = os.pipe()
    closer = threading.Timer(0.2, os.close, args=(read_fd,))
    with os.fdopen(write_fd, "w") as pipe, open(tmp_path / "alerts.jsonl", "w") as file:
        start = time.monotonic()
        closer.start()
        gone = sleep(pipe, 30)
        gone_after_s = time.monotonic() - start
        start = time.monotonic()
        stays = sleep(file, 0.3)
        slept_s = time.monotonic() - start
    assert (gone, gone_after_s < 5, stays, slept_s >= 0.3) == (True, True, False, True)
