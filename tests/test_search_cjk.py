"""Chinese search: a Chinese query finds Chinese articles, in either script, on SQLite FTS5
and on the Elasticsearch API (osmem-server); snippets read as written. The Chinese text is
written for these tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.search.base import SearchDocument, SearchQuery
from pipeline.search.elastic import ElasticSearch, article_mappings
from pipeline.search.sqlite_fts import SqliteSearch
from pipeline.settings import SearchSettings

DOCS = [
    ("zh-1", "國防部：共機31架次逼近臺灣",
     "國防部今天表示，國軍在臺灣周邊偵獲共機31架次，已派遣兵力監控。", "zh-Hant"),
    ("zh-2", "国台办回应两岸交流", "国台办发言人表示，两岸交流应当继续推进。", "zh-Hans"),
    ("zh-3", "颱風凱米登陸 全台停班停課", "中度颱風凱米深夜登陸宜蘭，各縣市停班停課。", "zh-Hant"),
    ("en-1", "Taiwan tracks Chinese aircraft", "The defence ministry said 31 aircraft flew near "
     "Taiwan.", "en"),
]


@pytest.fixture(scope="module")
def osmem_server():
    """As in test_search_contract.py: no seed, no Japanese analysis (faster start)."""
    from osmem_server import OsmemServer

    server = OsmemServer.start(japanese=False)
    yield server
    server.close()


@pytest.fixture(params=["sqlite", pytest.param("osmem", marks=pytest.mark.elasticsearch)])
def search(request, tmp_path):
    if request.param == "sqlite":
        backend = SqliteSearch(tmp_path / "search.db")
    else:
        from tests.support.es_compat import OsmemCompatNode

        clone = request.getfixturevalue("osmem_clone")
        backend = ElasticSearch(SearchSettings(url=clone.url, vectors=False,
                                               index_prefix="nwcjk"),
                                node_class=OsmemCompatNode, max_retries=0, initial_backoff=0.1)
    backend.index([SearchDocument(
        article_id=aid, title=title, text=text, url=f"https://example.com/{aid}",
        source="Fictional", published_at=datetime(2026, 3, 10, tzinfo=UTC), language=lang,
        story_id=None, content_hash=f"h-{aid}", feeds=["1"]) for aid, title, text, lang in DOCS])
    yield backend
    backend.close()


def test_elasticsearch_text_fields_have_a_cjk_subfield():
    properties = article_mappings(vectors=False, dims=None)["properties"]
    for field in ("title", "text"):
        assert properties[field]["fields"]["cjk"] == {"type": "text", "analyzer": "cjk"}
        assert properties[field]["analyzer"] == "english"  # English analysis unchanged


def _ids(search, text: str) -> set[str]:
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


def test_snippets_read_as_written(tmp_path):
    search = SqliteSearch(tmp_path / "search.db")
    search.index([SearchDocument(
        article_id="zh-1", title=DOCS[0][1], text=DOCS[0][2], url="https://example.com/zh-1",
        source="Fictional", published_at=None, language="zh-Hant", story_id=None,
        content_hash="h", feeds=["1"])])
    hit = search.search(SearchQuery(text="共機", mode="keyword")).hits[0]
    # no spaces between characters; a number keeps the spaces the index put round it
    assert hit.snippet == "國防部今天表示，國軍在臺灣周邊偵獲[[共機]] 31 架次，已派遣…"
    assert hit.title == DOCS[0][1]
    search.close()
