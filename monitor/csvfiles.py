"""CSV files as text: the header, and which line of the file a data row or a parse error is on,
so that messages about history files can name `path:line` as an editor shows it."""

from __future__ import annotations

import csv
import mmap
from collections.abc import Sequence

from monitor.errors import DataError


def csv_header(path: str) -> list[str]:
    """The header row (a DataError for an unreadable, non-UTF-8, empty or repeated-name one)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next((row for row in csv.reader(f) if row), None)
    except OSError as exc:
        raise DataError(path, f"cannot open: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(path, "not UTF-8 text", line=_undecodable_line(path)) from exc
    except csv.Error as exc:
        raise DataError(path, f"cannot read the header: {exc}", line=1) from exc
    if header is None:
        raise DataError(path, "empty file")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(path, "column name appears twice", line=1, column=name)
        seen.add(name)
    return header


def csv_failure(path: str, width: int, exc: Exception) -> DataError:
    """Find the line polars refused: a row wider than the header, or bytes that are not UTF-8."""
    line = _undecodable_line(path)
    if line is not None:
        return DataError(path, "not UTF-8 text", line=line)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if len(row) > width:
                    message = f"{len(row)} fields but the header has {width}"
                    return DataError(path, message, line=reader.line_num)
    except csv.Error:
        pass
    line = _stray_return_line(path)
    if line is not None:
        return DataError(path, "a carriage return (\\r) inside the line", line=line)
    return DataError(path, f"cannot read as CSV: {first_line(exc)}")


def _stray_return_line(path: str) -> int | None:
    """The first line (ended by a line feed) holding a carriage return anywhere but at its end:
    polars and the csv module split such a line in different places."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if b"\r" in raw.rstrip(b"\r\n"):
                return number
    return None


def _undecodable_line(path: str) -> int | None:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def csv_lines(path: str, rows: Sequence[int]) -> dict[int, int]:
    """File lines (1-based, header = line 1) where the given 0-based data rows start.

    polars skips blank lines before the header, keeps later ones as rows of nulls, and lets a
    quoted field span lines; the csv module, counting its empty rows, agrees on all three.
    """
    wanted = set(rows)
    if _is_plain(path):
        return {r: r + 2 for r in wanted}
    found: dict[int, int] = {}
    last = max(wanted, default=-1)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            index, before = -2, 0  # the header is row -1
            for row in reader:
                if row or index > -2:
                    index += 1
                    if index in wanted:
                        found[index] = before + 1
                    if index >= last:
                        break
                before = reader.line_num
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    return {r: found.get(r, r + 2) for r in wanted}


def _is_plain(path: str) -> bool:
    """True when data row i is on line i + 2: no quotes, no blank lines before the header."""
    try:  # (mapped, not read: a universe file is tens of MB, and only searched)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            head = data[:8].removeprefix(b"\xef\xbb\xbf")
            return data.find(b'"') == -1 and not head.startswith((b"\n", b"\r"))
    except (OSError, ValueError):  # (ValueError: an empty file cannot be mapped)
        return False


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
