"""Messages for config and rules files that do not validate: msgspec's error led by the path of
the field (`redis.maxlen: Expected int, got str`), for a misspelt key the nearest name the
table takes (`; did you mean window?`) or, with none near, the names it takes, for a value
outside a set the values it takes (`; severity is one of info, notice, warning, critical`),
and for a date written as a string how to write a TOML date."""

from __future__ import annotations

import datetime as dt
import difflib
import re
import types
from collections.abc import Collection
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

_AT = " - at `$"
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`$")
_STEP = re.compile(r"\.([^.\[\]`]+)|\[(\d+)\]")
_ENUM = re.compile(r"^Invalid enum value ")
_DATE = re.compile(r"^Expected `date( \| null)?`, got `str`$")


def field_message(error: str, root: type, raw: Any, hidden: Collection[str] = frozenset()) -> str:
    """`error`, the text of a msgspec ValidationError from decoding `raw` (plain data) into
    `root` (a Struct type), as "path: message", with a suggestion for an unknown field (never
    one of `hidden`, fields no file sets), the values an enumeration takes, or how to write a
    date."""
    message, at, path = error.partition(_AT)
    path = path.rstrip("`") if at else ""
    unknown = _UNKNOWN.match(message)
    if unknown is not None:
        names = [name for name in _names_at(root, raw, path) if name not in hidden]
        close = difflib.get_close_matches(unknown[1], names, n=1)
        if close:
            message += f"; did you mean `{close[0]}`?"
        elif names:
            message += f"; it takes {', '.join(sorted(names))}"
    elif _ENUM.match(message):
        values = _literals(_at(root, raw, path)[0])
        if values:
            message += f"; {_leaf(path)} is one of {', '.join(map(str, values))}"
    elif _DATE.match(message):
        value = _at(root, raw, path)[1]
        example = value if isinstance(value, str) and _is_date(value) else "YYYY-MM-DD"
        message += f"; write the date unquoted, as a TOML date: {_leaf(path)} = {example}"
    return f"{path.lstrip('.')}: {message}" if path else message


def _leaf(path: str) -> str:
    """The last name of a field path (`rules[0].since` -> `since`)."""
    names = [name for name, _ in _STEP.findall(path) if name]
    return names[-1] if names else "the value"


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _literals(kind: Any) -> list[Any]:
    """The values of the Literal types a hint stands for (none when it is not one)."""
    return [v for m in _members(kind) if get_origin(m) is Literal for v in get_args(m)]


def _names_at(root: type, raw: Any, path: str) -> list[str]:
    """The keys the table at `path` takes (none when the path cannot be followed)."""
    kind, data = _at(root, raw, path)
    struct = _struct(kind, data) if kind is not None else None
    return [f.encode_name for f in msgspec.structs.fields(struct)] if struct else []


def _at(root: type, raw: Any, path: str) -> tuple[Any, Any]:
    """The type hint and the raw value at `path` (None for the hint when the path cannot be
    followed)."""
    kind: Any = root
    data = raw
    for name, index in _STEP.findall(path):
        if name:
            struct = _struct(kind, data)
            if struct is None:
                return None, None
            kind = {f.encode_name: f.type for f in msgspec.structs.fields(struct)}.get(name)
            data = data.get(name) if isinstance(data, dict) else None
        else:
            kind = _element(kind)
            data = data[int(index)] if isinstance(data, list) and int(index) < len(data) else None
        if kind is None:
            return None, None
    return kind, data


def _struct(kind: Any, data: Any) -> type[msgspec.Struct] | None:
    """The Struct type `kind` is; of a tagged union (rule kinds), the member `data` is."""
    structs = [t for t in _members(kind) if isinstance(t, type) and issubclass(t, msgspec.Struct)]
    if len(structs) == 1:
        return structs[0]
    for struct in structs:
        config = struct.__struct_config__
        if config.tag_field and isinstance(data, dict) and data.get(config.tag_field) == config.tag:
            return struct
    return None


def _members(kind: Any) -> list[Any]:
    """The types a hint stands for: itself, or a union's members (Annotated unwrapped)."""
    origin = get_origin(kind)
    if origin is Annotated:
        return _members(get_args(kind)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(kind) for m in _members(arg)]
    return [kind]


def _element(kind: Any) -> Any:
    """The element type of a list (or tuple, set) hint, else None."""
    for member in _members(kind):
        if get_origin(member) in (list, tuple, set, frozenset):
            return get_args(member)[0]
    return None
