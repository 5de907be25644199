"""Chinese search on SQLite FTS5: a Chinese query finds Chinese articles, in either script,
and snippets read as written. The Chinese text is written for these tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.search.base import SearchDocument, SearchQuery
from pipeline.search.sqlite_fts import SqliteSearch

DOCS = [
    ("zh-1", "國防部：共機31架次逼近臺灣", "國防部今天表示，國軍在臺灣周邊偵獲共機31架次，已派遣兵力監控。",
     "zh-Hant"),
    ("zh-2", "国台办回应两岸交流", "国台办发言人表示，两岸交流应当继续推进。", "zh-Hans"),
    ("zh-3", "颱風凱米登陸 全台停班停課", "中度颱風凱米深夜登陸宜蘭，各縣市停班停課。", "zh-Hant"),
    ("en-1", "Taiwan tracks Chinese aircraft", "The defence ministry said 31 aircraft flew near "
     "Taiwan.", "en"),
]


@pytest.fixture
def search(tmp_path):
    backend = SqliteSearch(tmp_path / "search.db")
    backend.index([SearchDocument(
        article_id=aid, title=title, text=text, url=f"https://example.com/{aid}",
        source="Fictional", published_at=datetime(2026, 3, 10, tzinfo=UTC), language=lang,
        story_id=None, content_hash=f"h-{aid}", feeds=["1"]) for aid, title, text, lang in DOCS])
    yield backend
    backend.close()


def _ids(search: SqliteSearch, text: str) -> set[str]:
    return {h.article_id for h in search.search(SearchQuery(text=text, mode="keyword")).hits}


@pytest.mark.parametrize(("query", "expected"), [
    ("國防部", {"zh-1"}), ("臺灣", {"zh-1"}), ("共機", {"zh-1"}), ("颱風", {"zh-3"}),
    ("停班停課", {"zh-3"}), ("兩岸", {"zh-2"}),  # Traditional query, Simplified article
    ("台灣", {"zh-1"}),  # the everyday variant of 臺
    ("国防部", {"zh-1"}),  # Simplified query, Traditional article
    ("国防部 共机", {"zh-1"}), ("颱風 -宜蘭", set()), ("Taiwan", {"en-1"}),
])
def test_a_chinese_query_finds_chinese_articles(search, query, expected):
    assert _ids(search, query) == expected


def test_snippets_read_as_written(search):
    hit = search.search(SearchQuery(text="共機", mode="keyword")).hits[0]
    # no spaces between characters; a number keeps the spaces the index put round it
    assert hit.snippet == "國防部今天表示，國軍在臺灣周邊偵獲[[共機]] 31 架次，已派遣…"
    assert hit.title == DOCS[0][1]
