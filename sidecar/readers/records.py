"""JSON exports as readable text: arrays of records become Markdown tables, ids become names.

A task tool's export (Trello, Asana, Notion, Jira…) is a list of cards that point at their
list, members and labels by id. Flattened to ``cards[3].idMembers[0]: 9c5d…`` lines, nothing
downstream can see a task in it; as a table with the names filled in it reads like the
spreadsheet task list a CSV export gives, and the same table handling finds owner, due date,
status and priority in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

#: Keys whose value names the thing (what an id is replaced with).
_NAME_KEYS = ("name", "fullName", "full_name", "displayName", "display_name", "title",
              "username", "email")
_ID_KEY = re.compile(r"^(?:id|_id|gid|uuid|key)$", re.I)
_ID_VALUE = re.compile(r"^(?:[0-9a-f]{16,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                       r"[0-9a-f]{12}|\d{9,})$", re.I)
_REF_KEY = re.compile(r"^(?:id(?P<a>[A-Z]\w*)|id_(?P<c>\w+)|(?P<b>\w+?)(?:_ids?|Ids?))$")
_ISO_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?"
                           r"\d{2})?$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
#: Bookkeeping a person never reads: sort keys and change stamps.
_NOISE_KEY = re.compile(r"^(?:pos|position|index|order|rank|sort\w*|date_?last\w*|"
                        r"(?:created|updated|modified)_?(?:at|on|time)?|etag|version|color|"
                        r"colou?r|initials|avatar\w*)$", re.I)
MAX_CELL = 300
MIN_RECORDS = 2


def render_json(value: Any) -> list[str]:
    """Lines of text for a parsed JSON document (tables for record arrays, else key: value)."""
    names = dict(_names(value))
    out: list[str] = []
    _walk(value, "", out, names)
    return out


def _names(value: Any) -> Iterator[tuple[str, str]]:
    """(id, display name) for every object that has both, anywhere in the document."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            ident = next((v[k] for k in v if _ID_KEY.match(k)), None)
            name = next((v[k] for k in _NAME_KEYS if isinstance(v.get(k), str) and v[k]), None)
            if isinstance(ident, str | int) and not isinstance(ident, bool) and name:
                yield str(ident), name
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _is_records(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= MIN_RECORDS
            and sum(isinstance(v, dict) for v in value) >= 0.8 * len(value))


def _walk(value: Any, path: str, out: list[str], names: dict[str, str]) -> None:
    if _is_records(value):
        _table(value, path, out, names)
    elif isinstance(value, dict):
        if not value:
            out.append(f"{path}: {{}}" if path else "{}")
        for key, item in value.items():
            _walk(item, f"{path}.{key}" if path else str(key), out, names)
    elif isinstance(value, list):
        if not value:
            out.append(f"{path}: []" if path else "[]")
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", out, names)
    else:
        scalar = value if isinstance(value, str) else json.dumps(value)
        out.append(f"{path}: {scalar}" if path else str(scalar))


def _column(key: str) -> str:
    """``idMembers`` → ``members``, ``list_id`` → ``list``: the name a reader would use."""
    m = _REF_KEY.match(key)
    return (m.group("a") or m.group("b") or m.group("c") or key) if m else key


def _text(value: Any, names: dict[str, str], ref: bool = False) -> str | None:
    """One cell: names for ids (``ref``: the key says it holds ids), dates for timestamps,
    None for what a reader would not see."""
    if value is None or (isinstance(value, dict | list) and not value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return names.get(str(value), str(value)) if ref else str(value)
    if isinstance(value, str):
        if (ref or _ID_VALUE.match(value)) and value in names:
            return names[value]
        if _ID_VALUE.match(value) or _URL.match(value):
            return None
        m = _ISO_DATETIME.match(value)
        return m.group(1) if m else value
    if isinstance(value, dict):
        name = next((value[k] for k in _NAME_KEYS if isinstance(value.get(k), str)), None)
        return name
    parts = [_text(v, names, ref) for v in value]
    joined = ", ".join(p for p in parts if p)
    return joined or None


def _fields(rec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """A record's fields, with unnamed nested objects opened one level (``data.text``)."""
    for key, value in rec.items():
        if isinstance(value, dict) and not any(k in value for k in _NAME_KEYS):
            for sub, v in value.items():
                if isinstance(v, str):  # not counters and flags: badges.comments = 0
                    yield f"{key}.{sub}", v
        else:
            yield key, value


def _table(records: list[Any], path: str, out: list[str], names: dict[str, str]) -> None:
    """A Markdown table of the records' readable fields; nested record lists follow it."""
    columns: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    nested: list[tuple[str, Any]] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            continue
        row: dict[str, str] = {}
        for key, value in _fields(rec):
            if _ID_KEY.match(key) or _NOISE_KEY.match(key):
                continue
            if _is_records(value) or (isinstance(value, list) and value
                                      and isinstance(value[0], dict)
                                      and not any(k in value[0] for k in _NAME_KEYS)):
                nested.append((f"{path}[{i}].{key}", value))
                continue
            cell = _text(value, names, bool(_REF_KEY.match(key)))
            if cell is None:
                continue
            col = columns.setdefault(_column(key).lower(), _column(key))
            cell = " ".join(cell.replace("|", "/").split())[:MAX_CELL]
            if row.get(col, cell) != cell:
                cell = f"{row[col]}, {cell}"
            row[col] = cell
        if row:
            rows.append(row)
    heads = [h for h in columns.values()
             if len(rows) < 3 or len({r.get(h, "") for r in rows}) > 1]  # constant: no news
    if rows and heads:
        out.append("")
        out.append(f"{path or 'records'}:")
        out.append("| " + " | ".join(heads) + " |")
        out.append("|" + "---|" * len(heads))
        out += ["| " + " | ".join(r.get(h, "") for h in heads) + " |" for r in rows]
        out.append("")
    for sub_path, value in nested:
        _walk(value, sub_path, out, names)
