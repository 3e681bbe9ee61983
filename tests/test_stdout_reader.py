"""Whether the reader of standard output has gone, as `tail` looks at it while it waits."""

from __future__ import annotations

import io
import os
from pathlib import Path

from monitor.stdout_reader import is_gone


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
