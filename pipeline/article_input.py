"""Reading articles from JSONL, the input format of ``newswatch cluster`` and ``match``.

One object per line: ``id, title, text, url, source, published_at``; extra keys are ignored,
``published_at`` may be null and ``text`` empty. Every line is checked before anything runs,
so a bad line stops the command with its file and line number and leaves no partial output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TEXT_KEYS = ("title", "text", "url", "source", "published_at")


class ArticleInputError(ValueError):
    """A bad input line; the message names the file and line."""


def iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """``("FILE:LINE", value)`` for each non-blank line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ArticleInputError(f"{where}: not JSON ({exc.msg})") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line's JSON object, unchecked beyond being an object (evaluation files)."""
    records = []
    for where, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise ArticleInputError(f"{where}: expected a JSON object, got "
                                    f"{type(record).__name__}")
        records.append(record)
    return records


def read_articles(path: Path) -> list[dict[str, Any]]:
    """Every line as an article, checked: a usable unique ``id`` and string-or-null fields."""
    records: list[dict[str, Any]] = []
    first_line: dict[str, str] = {}
    for where, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise ArticleInputError(f"{where}: expected a JSON object, got "
                                    f"{type(record).__name__}")
        article_id = record.get("id")
        if isinstance(article_id, bool) or not isinstance(article_id, str | int) \
                or str(article_id).strip() == "":
            raise ArticleInputError(f"{where}: 'id' must be a non-empty string or number")
        for key in _TEXT_KEYS:
            value = record.get(key)
            if value is not None and not isinstance(value, str):
                raise ArticleInputError(f"{where}: {key!r} must be a string or null, got "
                                        f"{type(value).__name__}")
        key = str(article_id)
        if key in first_line:
            raise ArticleInputError(f"{where}: duplicate id {key!r} (first on line "
                                    f"{first_line[key].rsplit(':', 1)[1]})")
        first_line[key] = where
        records.append(record)
    return records
