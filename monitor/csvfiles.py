"""CSV files as text: the header, and which line of the file a data row, a parse error or a row
short of fields is on, so that messages about history files can name `path:line` as an editor
shows it."""

from __future__ import annotations

import csv
import mmap
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

from monitor.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl


def csv_header(path: str, *, parquet: bool = True) -> list[str]:
    """The header row (a DataError for an unreadable, non-UTF-8, empty or repeated-name one).
    `parquet`: whether the caller reads a file named .parquet or .pq as Parquet (a Parquet
    file given it is said to be read so), or CSV only (said to be so)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next((row for row in csv.reader(f) if row), None)
    except OSError as exc:
        raise DataError(path, f"cannot open: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        kind = _binary_kind(path)
        if kind == _MAGIC[b"PAR1"] and not parquet:
            kind = "a Parquet file (this file is read as CSV only: write it as CSV)"
        if kind is not None:
            raise DataError(path, f"not CSV text but {kind}") from exc
        raise DataError(path, NOT_UTF8, line=_undecodable_line(path)) from exc
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


# Text in another encoding (Windows-1252, Latin-1: a spreadsheet's "CSV" export of a name
# with an accent, a currency sign).
NOT_UTF8 = (
    "not UTF-8 text (another encoding, as Excel's plain 'CSV' may write: save it as CSV UTF-8)"
)

# Files taken for CSV by their name that are something else, by their first bytes.
_MAGIC = {
    b"PAR1": "a Parquet file (read as Parquet when named .parquet or .pq)",
    b"\x1f\x8b": "gzip-compressed (decompress it first: gunzip)",
    b"PK\x03\x04": "a zip archive or a spreadsheet (unzip it, or save the sheet as CSV)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (decompress it first: unzstd)",
    b"BZh": "bzip2-compressed (decompress it first: bunzip2)",
    b"\xfd7zXZ": "xz-compressed (decompress it first: unxz)",
    b"\xd0\xcf\x11\xe0": (
        "an Excel 97-2003 workbook (.xls) or another Office file (save the sheet as CSV UTF-8)"
    ),
    b"\xff\xfe": "UTF-16 text, as Excel's 'Unicode Text' (save it as CSV UTF-8)",
    b"\xfe\xff": "UTF-16 text (save it as UTF-8)",
}


def _binary_kind(path: str) -> str | None:
    """What a file that is no text is, when its first bytes say."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def comment_hint(names: Sequence[str]) -> str:
    """What to say of a header (`names`) whose first line starts with `#`: a comment, which
    the readers take for the header (nothing for another header)."""
    if not names or not names[0].lstrip().startswith("#"):
        return ""
    return (
        "line 1 starts with '#': comment lines are not skipped, and it is taken for the"
        " header; remove it, or the '#' before a header"
    )


def separator_hint(names: Sequence[str]) -> str:
    """What to say of a header (`names`) that is one column holding a `;`, a tab or a `|`: a
    file separated by those (a European spreadsheet's export: `;`, with decimal commas that
    then split its rows), which is read comma-separated (nothing for another header)."""
    separator = next((c for c in ";\t|" if len(names) == 1 and c in names[0]), None)
    if separator is None:
        return ""
    return f"the header is one column holding {separator!r}; files are read comma-separated"


def csv_failure(path: str, width: int, exc: Exception) -> DataError:
    """Find the line polars refused: a row wider than the header, or bytes that are not UTF-8."""
    line = _undecodable_line(path)
    if line is not None:
        return DataError(path, NOT_UTF8, line=line)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for row in reader:
                if len(row) > width:
                    message = f"{len(row)} fields but the header has {width}"
                    hint = comment_hint(header) or separator_hint(header)
                    if hint:
                        message += f" ({hint})"
                    return DataError(path, message, line=reader.line_num)
    except csv.Error:
        pass
    line = _stray_return_line(path)
    if line is not None:
        return DataError(path, "a carriage return (\\r) inside the line", line=line)
    return DataError(path, f"cannot read as CSV: {first_line(exc)}")


def refuse_short_rows(path: str, frame: pl.DataFrame) -> None:
    """A DataError at the first row of `path` (read as `frame`) with fewer fields than the
    header; a short row leaves its last column null, so only those rows are looked at."""
    last = frame.get_column(frame.columns[-1])
    if last.null_count():
        error = short_row(path, frame.width, last.is_null().arg_true().to_numpy())
        if error is not None:
            raise error


def short_row(path: str, width: int, rows: npt.ArrayLike) -> DataError | None:
    """A DataError for the first of the given 0-based data rows (ascending) that has fewer
    fields than the header, if any: polars pads such a row with nulls. `rows` are the
    candidates, the rows whose last column came out null (a short row always leaves it so);
    a blank line is no row.
    """
    import numpy as np  # (here: replay imports numpy, 0.1 s, in a thread while polars reads)

    wanted = np.asarray(rows, dtype=np.int64)
    if width < 2 or not len(wanted):
        return None
    try:
        if not _is_plain(path):
            found = _short_quoted(path, width, wanted.tolist())
        else:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                # Walking the lines costs per line, numpy per byte: walk long lines (a wide
                # file's), count short ones with numpy.
                if (int(wanted[-1]) + 2) * _WALK_BYTES < len(data):
                    found = _short_walked(data, width, wanted.tolist())
                else:
                    found = _short_counted(data, width, wanted)
    except (OSError, ValueError, csv.Error, UnicodeDecodeError):  # (polars read it)
        return None
    if found is None:
        return None
    line, fields = found
    noun = "field" if fields == 1 else "fields"
    return DataError(path, f"{fields} {noun} but the header has {width}", line=line)


_WALK_BYTES = 64  # walk lines (rather than count with numpy) longer than this on average

# In a file without quotes data row r is line r + 2 (see `csv_lines`) and has one field more
# than commas. (numpy views of the mapped file live only inside the functions that make them:
# the map cannot be closed while one does.)


def _short_walked(data: mmap.mmap, width: int, rows: list[int]) -> tuple[int, int] | None:
    """`short_row` for a file without quotes, line by line."""
    start, row = data.find(b"\n") + 1, 0  # (the start of data row `row`)
    for wanted in rows:
        while row < wanted and start:
            start, row = data.find(b"\n", start) + 1, row + 1
        if not start:  # (no such line: not expected)
            return None
        end = data.find(b"\n", start)
        end = end if end >= 0 else len(data)
        fields = _commas(data, start, end) + 1
        if fields < width and (fields > 1 or data[start:end].strip()):
            return wanted + 2, fields
    return None


def _commas(data: mmap.mmap, start: int, end: int) -> int:
    import numpy as np

    line = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    return int(np.count_nonzero(line == ord(",")))


def _short_counted(
    data: mmap.mmap, width: int, rows: npt.NDArray[np.int64]
) -> tuple[int, int] | None:
    """`short_row` for a file without quotes, with numpy over all of its bytes."""
    import numpy as np

    text = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(text == ord("\n"))
    rows = rows[rows < len(ends)]  # (a row past the lines: not expected)
    starts = ends[rows] + 1
    stops = np.append(ends, len(text))[rows + 1]  # (the last line may have no line feed)
    # Commas per line: sums over its [start, stop), on one byte more than the file so that a
    # stop at its end is an index. (int32: reduceat is an order of magnitude slower in int64.)
    is_comma = np.zeros(len(text) + 1, dtype=np.uint8)
    np.equal(text, ord(","), out=is_comma[:-1], casting="unsafe")
    del text
    bounds = np.column_stack([starts, stops]).ravel()
    fields = np.add.reduceat(is_comma, bounds, dtype=np.int32)[::2] + 1
    for i in np.flatnonzero(fields < width).tolist():
        if fields[i] > 1 or data[starts[i] : stops[i]].strip():
            return int(rows[i]) + 2, int(fields[i])
    return None


def _short_quoted(path: str, width: int, rows: Sequence[int]) -> tuple[int, int] | None:
    """`short_row` for any other file, read with the csv module (see `csv_lines`)."""
    wanted = set(rows)
    last = max(wanted)
    with open(path, newline="", encoding="utf-8-sig") as f:
        for index, line, row in _data_rows(f):
            blank = len(row) <= 1 and not "".join(row).strip()
            if index in wanted and len(row) < width and not blank:
                return line, len(row)
            if index >= last:
                break
    return None


def _data_rows(f: TextIO) -> Iterator[tuple[int, int, list[str]]]:
    """(0-based data row, the line it starts on, its fields) of an open CSV file, counted as
    polars counts them: blank lines before the header skipped, later ones rows."""
    reader = csv.reader(f)
    index, before = -2, 0  # the header is row -1
    for row in reader:
        if row or index > -2:
            index += 1
            if index >= 0:
                yield index, before + 1, row
        before = reader.line_num


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
            for index, line, _ in _data_rows(f):
                if index in wanted:
                    found[index] = line
                if index >= last:
                    break
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    return {r: found.get(r, r + 2) for r in wanted}


def walked_column(path: str, at: int) -> list[str] | None:
    """The field at 0-based position `at` of every data row of a CSV file, line by line: cheap
    on a wide file's few long lines (polars sets up all of its columns to read one). None for
    a file with quotes or blank lines before the header (whose lines are not its rows, see
    `csv_lines`) or not UTF-8."""
    if not _is_plain(path):
        return None
    found = []
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            start = data.find(b"\n") + 1  # (the start of a data row; 0: none)
            while 0 < start < len(data):
                end = data.find(b"\n", start)
                end = len(data) if end < 0 else end
                fields = data[start:end].rstrip(b"\r").split(b",", at + 1)
                found.append(fields[at].decode() if len(fields) > at else "")
                start = end + 1
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return found


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
