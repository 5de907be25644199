"""One search contract, every backend: the same cases run on SQLite FTS5, on osmem-server (an
in-memory OpenSearch fake speaking the ES REST API) and, when ``NEWSWATCH_TEST_ES_URL`` is set,
on a real Elasticsearch cluster (the only place kNN/vector cases run besides SQLite).

``pytest -m elasticsearch`` runs the Elasticsearch-API backends only.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pipeline.search.base import SearchBackend, SearchDocument, SearchQuery
from pipeline.search.elastic import ElasticSearch
from pipeline.search.sqlite_fts import SqliteSearch
from pipeline.settings import SearchSettings

ES_URL_ENV = "NEWSWATCH_TEST_ES_URL"
NO_REAL_ES = f"real Elasticsearch tests need {ES_URL_ENV} (e.g. http://localhost:9200)"
NO_OSMEM_KNN = "osmem-server has no Elasticsearch kNN; vectors are off there"
DIMS = 8


def _vector(i: int) -> list[float]:
    """Distinct, non-orthogonal unit-ish vectors: doc i is nearest to itself."""
    values = [0.0] * DIMS
    values[i % DIMS] = 1.0
    values[(i + 1) % DIMS] = 0.2
    return values


def _doc(i: int, article_id: str, title: str, text: str, source: str, story: str | None,
         day: int | None) -> SearchDocument:
    return SearchDocument(
        article_id=article_id, title=title, text=text, url=f"https://example.com/{article_id}",
        source=source, published_at=datetime(2024, 3, day, 12, tzinfo=UTC) if day else None,
        language="en", story_id=story, content_hash=f"h-{article_id}", feeds=["1"],
        embedding=_vector(i))


CORPUS = [
    _doc(0, "a1", "Taiwan Strait tensions rise",
         "Chinese warships sailed near the island on Monday, officials said.",
         "Reuters", "s1", 1),
    _doc(1, "a2", "Markets wrap",
         "Asian shares fell. Investors watched Taiwan closely as chip stocks slipped.",
         "AP", "s2", 2),
    _doc(2, "a3", "Baseball: Taiwan beats Japan",
         "Taiwan won the baseball final in Tokyo after extra innings.", "AP", "s3", 3),
    _doc(3, "a4", "Qin Gang removed as foreign minister",
         "China's parliament voted to remove Qin Gang, who had not been seen for a month.",
         "Reuters", "s4", 4),
    _doc(4, "a5", "Museum reopens",
         "The tomb of Qin Shi Huang reopened after a gang of thieves was arrested.",
         "BBC", "s6", 4),
    _doc(5, "a6", "Zürich climate summit",
         "Delegates met in Zürich to discuss emissions targets and coal.", "BBC", "s5", 6),
    _doc(6, "a7", "Navy drills continue",
         "Drills in the Taiwan Strait continued for a second day, the ministry said.",
         "BBC", "s1", 5),
]
ALL_IDS = {d.article_id for d in CORPUS}
TITLE_TAIWAN = {"a1", "a3"}
BODY_ONLY_TAIWAN = {"a2", "a7"}


# ---- backends ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def osmem_server():
    """Overrides the osmem plugin's fixture: no seed, no Japanese analysis (faster start)."""
    from osmem_server import OsmemServer

    server = OsmemServer.start(japanese=False)
    yield server
    server.close()


def _sqlite(tmp_path) -> Iterator[SqliteSearch]:
    backend = SqliteSearch(tmp_path / "search.db")
    yield backend
    backend.close()


def _osmem(request) -> Iterator[ElasticSearch]:
    from tests.support.es_compat import OsmemCompatNode

    clone = request.getfixturevalue("osmem_clone")  # a fresh copy of the empty base per test
    backend = ElasticSearch(SearchSettings(url=clone.url, vectors=False, index_prefix="nwtest"),
                            node_class=OsmemCompatNode, max_retries=0, initial_backoff=0.1)
    yield backend
    backend.close()


def _es_real() -> Iterator[ElasticSearch]:
    settings = SearchSettings(
        url=os.environ[ES_URL_ENV], vectors=True, index_prefix=f"nwtest-{uuid.uuid4().hex[:8]}",
        api_key=os.environ.get("NEWSWATCH_TEST_ES_API_KEY") or None,
        username=os.environ.get("NEWSWATCH_TEST_ES_USERNAME") or None,
        password=os.environ.get("NEWSWATCH_TEST_ES_PASSWORD") or None,
        verify_certs=os.environ.get("NEWSWATCH_TEST_ES_VERIFY_CERTS", "1") != "0",
        ca_certs=os.environ.get("NEWSWATCH_TEST_ES_CA_CERTS") or None)
    backend = ElasticSearch(settings, dims=DIMS, max_retries=1, initial_backoff=0.5)
    yield backend
    backend.drop()
    backend.close()


@pytest.fixture(params=[
    "sqlite",
    pytest.param("osmem", marks=pytest.mark.elasticsearch),
    pytest.param("es-real", marks=[
        pytest.mark.elasticsearch,
        pytest.mark.skipif(not os.environ.get(ES_URL_ENV), reason=NO_REAL_ES)]),
])
def backend(request, tmp_path) -> Iterator[SearchBackend]:
    if request.param == "sqlite":
        yield from _sqlite(tmp_path)
    elif request.param == "osmem":
        yield from _osmem(request)
    else:
        yield from _es_real()


@pytest.fixture
def loaded(backend) -> SearchBackend:
    backend.ensure_ready()
    assert backend.index(list(CORPUS)) == len(CORPUS)
    return backend


def _vectors_or_skip(backend: SearchBackend) -> None:
    if isinstance(backend, ElasticSearch) and not backend.vectors:
        pytest.skip(NO_OSMEM_KNN)


def ids(backend: SearchBackend, text: str, **kwargs) -> list[str]:
    return [h.article_id for h in backend.search(SearchQuery(text=text, **kwargs)).hits]


# ---- cases ---------------------------------------------------------------------------------

def test_backend_satisfies_protocol(backend):
    assert isinstance(backend, SearchBackend)
    backend.ensure_ready()
    backend.ensure_ready()  # idempotent
    assert backend.count() == 0


def test_indexing_twice_is_idempotent(loaded):
    first = loaded.search(SearchQuery(text="taiwan"))
    assert loaded.count() == len(CORPUS)
    assert loaded.index(list(CORPUS)) == len(CORPUS)
    assert loaded.count() == len(CORPUS)
    again = loaded.search(SearchQuery(text="taiwan"))
    assert [h.article_id for h in again.hits] == [h.article_id for h in first.hits]
    assert again.total == first.total == 4


def test_title_match_ranks_above_body_only_match(loaded):
    ranked = ids(loaded, "taiwan")
    assert set(ranked) == TITLE_TAIWAN | BODY_ONLY_TAIWAN
    assert max(ranked.index(a) for a in TITLE_TAIWAN) < min(
        ranked.index(a) for a in BODY_ONLY_TAIWAN)
    scores = [h.score for h in loaded.search(SearchQuery(text="taiwan")).hits]
    assert scores == sorted(scores, reverse=True)


def test_words_are_anded_and_quotes_make_a_phrase(loaded):
    assert set(ids(loaded, "Qin Gang")) == {"a4", "a5"}
    assert ids(loaded, '"Qin Gang"') == ["a4"]
    assert set(ids(loaded, '"Taiwan Strait"')) == {"a1", "a7"}


def test_exclusion_and_or(loaded):
    assert set(ids(loaded, "taiwan -baseball")) == {"a1", "a2", "a7"}
    assert set(ids(loaded, 'taiwan -"chip stocks" NOT baseball')) == {"a1", "a7"}
    assert set(ids(loaded, "baseball OR emissions")) == {"a3", "a6"}
    assert set(ids(loaded, "strait OR baseball -navy")) == {"a1", "a3"}


def test_stemming(loaded):
    assert ids(loaded, "warship") == ["a1"]
    assert set(ids(loaded, "drill")) == {"a7"}


def test_since_until_filter(loaded):
    since = datetime(2024, 3, 3, tzinfo=UTC)
    until = datetime(2024, 3, 5, 12, tzinfo=UTC)  # exclusive: a7 (2024-03-05 12:00) is out
    assert set(ids(loaded, "taiwan", since=since)) == {"a3", "a7"}
    assert ids(loaded, "taiwan", since=since, until=until) == ["a3"]
    early = datetime(2024, 3, 2, 13, tzinfo=UTC)
    assert set(ids(loaded, "taiwan", until=early)) == {"a1", "a2"}


def test_source_and_story_filters(loaded):
    assert set(ids(loaded, "taiwan", sources=["AP"])) == {"a2", "a3"}
    assert set(ids(loaded, "taiwan", sources=["AP", "BBC"])) == {"a2", "a3", "a7"}
    assert ids(loaded, "taiwan", sources=["Nobody"]) == []
    assert set(ids(loaded, "taiwan", story_id="s1")) == {"a1", "a7"}


def test_limit_and_total(loaded):
    result = loaded.search(SearchQuery(text="taiwan", limit=2))
    assert len(result.hits) == 2
    assert result.total == 4
    assert result.groups is None


def test_story_grouping(loaded):
    flat = loaded.search(SearchQuery(text="taiwan"))
    grouped = loaded.search(SearchQuery(text="taiwan", by_story=True))
    assert [h.article_id for h in grouped.hits] == [h.article_id for h in flat.hits]
    assert grouped.groups is not None
    story_order = list(dict.fromkeys(h.story_id for h in flat.hits))
    assert [g.story_id for g in grouped.groups] == story_order
    s1 = next(g for g in grouped.groups if g.story_id == "s1")
    assert {h.article_id for h in s1.hits} == {"a1", "a7"}
    rank = [h.article_id for h in flat.hits]
    assert [h.article_id for h in s1.hits] == sorted(
        (h.article_id for h in s1.hits), key=rank.index)
    assert sum(len(g.hits) for g in grouped.groups) == len(grouped.hits)
    assert grouped.to_json()["groups"][0]["hits"]


def test_snippet_marks_matched_terms(loaded):
    hit = loaded.search(SearchQuery(text="warships")).hits[0]
    assert re.search(r"\[\[[^\]]*warships[^\]]*\]\]", hit.snippet, re.IGNORECASE), hit.snippet
    assert "<" not in hit.snippet  # plain text, not HTML
    stemmed = loaded.search(SearchQuery(text="investor")).hits[0]
    assert re.search(r"\[\[Investors", stemmed.snippet), stemmed.snippet
    title_only = loaded.search(SearchQuery(text="museum")).hits[0]
    assert title_only.snippet  # body text shown even when only the title matched


def test_hit_fields(loaded):
    hit = loaded.search(SearchQuery(text='"Qin Gang"')).hits[0]
    assert hit.title == "Qin Gang removed as foreign minister"
    assert hit.url == "https://example.com/a4"
    assert hit.source == "Reuters"
    assert hit.story_id == "s4"
    assert hit.published_at == datetime(2024, 3, 4, 12, tzinfo=UTC)
    assert hit.score > 0
    assert hit.to_json()["published_at"].startswith("2024-03-04T12:00:00")


def test_update_replaces_text(loaded):
    old = next(d for d in CORPUS if d.article_id == "a2")
    new = dataclasses.replace(old, text="Asian shares fell as investors watched Korea.",
                              story_id="s9")
    loaded.index([new])
    assert loaded.count() == len(CORPUS)
    assert "a2" not in ids(loaded, "taiwan")
    assert ids(loaded, "korea") == ["a2"]
    assert ids(loaded, "korea", story_id="s9") == ["a2"]


def test_delete(loaded):
    loaded.delete(["a3", "does-not-exist"])
    assert loaded.count() == len(CORPUS) - 1
    assert ids(loaded, "baseball") == []
    loaded.delete([])
    assert loaded.count() == len(CORPUS) - 1


def test_clear_then_index_again(loaded):
    loaded.clear()
    assert loaded.count() == 0
    assert ids(loaded, "taiwan") == []
    loaded.index(CORPUS[:2])
    assert loaded.count() == 2
    assert set(ids(loaded, "taiwan")) == {"a1", "a2"}


def test_diacritics_fold_both_ways(loaded):
    assert ids(loaded, "Zürich") == ["a6"]
    assert ids(loaded, "zurich") == ["a6"]
    assert ids(loaded, "ZURICH summit") == ["a6"]


# Inputs that must never reach a backend as syntax. Those with no letter or digit (or only
# operators / exclusions) are defined to return empty results; others just must not raise.
EMPTY_INPUTS = ["", "   ", "*", "-", "--", "AND", "OR", "NOT", "AND OR NOT", '"', '""', "()",
                "-taiwan", "NOT taiwan", "\x00", "&&||!", "[[ ]]"]
ODD_INPUTS = ['"unbalanced taiwan', 'taiwan"', "taiwan*", "tai*wan", "title:taiwan",
              "NEAR(taiwan strait)", "taiwan AND", "OR taiwan", "taiwan OR", "(taiwan",
              "taiwan)", "+taiwan", "taiwan^2", "taiwan~", "{taiwan}", "taiwan/strait",
              "北京", "Ελλάδα", "🙂 taiwan", "'taiwan'", "taiwan's", "a" * 300,
              " ".join(["taiwan"] * 200), "taiwan \\", "c++", "U.S.", "e-mail", "\ttaiwan\n"]


@pytest.mark.parametrize("text", EMPTY_INPUTS)
def test_unsearchable_input_returns_empty_results(loaded, text):
    result = loaded.search(SearchQuery(text=text))
    assert (result.hits, result.total) == ([], 0)
    assert loaded.search(SearchQuery(text=text, by_story=True)).groups == []


def test_odd_input_never_raises(loaded):
    for text in ODD_INPUTS:
        result = loaded.search(SearchQuery(text=text))
        assert result.total >= len(result.hits)
    assert "a1" in ids(loaded, "taiwan*")
    assert "a1" in ids(loaded, '"unbalanced taiwan') or ids(loaded, '"unbalanced taiwan') == []
    assert "a1" in ids(loaded, "(taiwan")
    assert "a4" in ids(loaded, "China's")


def test_invalid_query_raises_value_error(loaded):
    with pytest.raises(ValueError, match="limit"):
        loaded.search(SearchQuery(text="taiwan", limit=0))
    with pytest.raises(ValueError, match="mode"):
        loaded.search(SearchQuery(text="taiwan", mode="fuzzy"))  # type: ignore[arg-type]


def test_semantic_and_hybrid_without_vector_degrade_to_keyword(loaded):
    keyword = ids(loaded, "taiwan")
    assert ids(loaded, "taiwan", mode="semantic") == keyword
    assert ids(loaded, "taiwan", mode="hybrid") == keyword


def test_semantic_and_hybrid_with_vectors(loaded):
    _vectors_or_skip(loaded)
    zurich = _vector(5)  # a6's embedding: not a keyword match for "taiwan"
    semantic = loaded.search(SearchQuery(text="", mode="semantic", vector=zurich, limit=3))
    assert semantic.hits[0].article_id == "a6"
    assert len(semantic.hits) == 3
    assert semantic.hits[0].snippet.startswith("Delegates met")
    keyword = ids(loaded, "taiwan", vector=zurich)  # keyword mode ignores the vector
    assert "a6" not in keyword
    hybrid = loaded.search(SearchQuery(text="taiwan", mode="hybrid", vector=zurich, limit=10))
    hybrid_ids = [h.article_id for h in hybrid.hits]
    assert "a6" in hybrid_ids and set(keyword) <= set(hybrid_ids)
    assert hybrid.total >= 5
    # A document that matches both lists beats those that match one.
    both = loaded.search(SearchQuery(text="baseball", mode="hybrid", vector=_vector(2)))
    assert both.hits[0].article_id == "a3"
    filtered = ids(loaded, "", mode="semantic", vector=zurich, sources=["Reuters"])
    assert filtered and set(filtered) <= {"a1", "a4"}


# ---- translation and layout (no server needed unless marked) -------------------------------

def test_query_translation_is_quoted_and_structured():
    from pipeline.search.base import parse_query_text
    from pipeline.search.elastic import text_query
    from pipeline.search.sqlite_fts import fts5_expression, fts5_fallback

    parsed = parse_query_text('china OR taiwan "Qin Gang" -"chip stocks" NOT AND')
    assert parsed.clauses == (("china", "taiwan"), ("Qin Gang",))
    assert parsed.excluded == ("chip stocks",)  # a dangling NOT negates the next item: AND
    assert fts5_expression(parsed) == '(("china" OR "taiwan") AND "Qin Gang") NOT "chip stocks"'
    assert fts5_fallback('a"b NEAR( * OR -x') == '"ab" AND "NEAR("'
    body = text_query(parsed)
    assert len(body["must"]) == 2 and len(body["must_not"]) == 1
    assert body["must"][1]["bool"]["should"][0] == {
        "match_phrase": {"title": {"query": "Qin Gang", "boost": 3.0, "zero_terms_query": "all"}}}


def test_es_hybrid_is_one_request_with_knn_and_query_sharing_filters():
    from pipeline.search.elastic import article_mappings

    es = ElasticSearch(SearchSettings(url="http://127.0.0.1:9", vectors=True), dims=DIMS)
    query = SearchQuery(text="taiwan", mode="hybrid", vector=_vector(1), sources=["AP"],
                        since=datetime(2024, 3, 1, tzinfo=UTC), story_id="s1", limit=7)
    body = es.search_body(query)
    assert body is not None and "query" in body and "knn" in body
    assert body["knn"]["filter"] == body["query"]["bool"]["filter"]
    assert body["knn"]["k"] == 7 and body["size"] == 7
    assert abs(sum(x * x for x in body["knn"]["query_vector"]) - 1) < 1e-6
    assert body["highlight"]["pre_tags"] == ["[["]
    semantic = es.search_body(dataclasses.replace(query, mode="semantic"))
    assert "query" not in semantic and "knn" in semantic
    keyword = es.search_body(dataclasses.replace(query, mode="keyword"))
    assert "knn" not in keyword
    assert es.search_body(SearchQuery(text="*")) is None
    mapping = article_mappings(True, 384)
    assert mapping["dynamic"] == "strict"
    assert mapping["properties"]["embedding"] == {
        "type": "dense_vector", "index": True, "similarity": "cosine",
        "index_options": {"type": "int8_hnsw"}, "dims": 384}
    assert "dims" not in article_mappings(True, None)["properties"]["embedding"]
    assert "embedding" not in article_mappings(False, 384)["properties"]
    es.close()


@pytest.mark.elasticsearch
def test_es_layout_templates_aliases_strict_mapping_and_stories(request):
    backend = next(_osmem(request))
    backend.ensure_ready()
    indices = backend.client.indices
    assert indices.get_alias(name="nwtest-articles").body == {
        "nwtest-articles-000001": {"aliases": {"nwtest-articles": {"is_write_index": True}}}}
    assert indices.exists_index_template(name="nwtest-articles")
    mapping = indices.get_mapping(index="nwtest-articles")["nwtest-articles-000001"]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert mapping["properties"]["title"]["fields"]["raw"]["type"] == "keyword"
    assert mapping["properties"]["published_at"]["type"] == "date"
    assert "embedding" not in mapping["properties"]  # vectors off
    assert backend.index_stories([{
        "story_id": "s1", "title": "Taiwan Strait", "article_count": 2,
        "first_seen_at": datetime(2024, 3, 1, tzinfo=UTC), "last_seen_at": "2024-03-05T12:00:00Z",
        "sources": ["Reuters", "BBC"]}]) == 1
    assert backend.client.get(index="nwtest-stories", id="s1")["_source"]["article_count"] == 2
    backend._ready = False
    backend.ensure_ready()  # a second process: nothing to create, nothing fails
    backend.drop()
    assert not indices.exists_alias(name="nwtest-articles")
    assert not indices.exists_index_template(name="nwtest-stories")
    backend.close()


def test_sqlite_two_connections_share_one_file(tmp_path):
    writer, reader = SqliteSearch(tmp_path / "s.db"), SqliteSearch(f"sqlite:///{tmp_path}/s.db")
    writer.index(CORPUS[:3])
    assert reader.count() == 3
    writer.delete(["a1"])
    assert set(ids(reader, "taiwan")) == {"a2", "a3"}
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.close()
    reader.close()


def test_sqlite_falls_back_when_fts5_rejects_an_expression(tmp_path, monkeypatch):
    from pipeline.search import sqlite_fts

    backend = SqliteSearch(tmp_path / "s.db")
    backend.index(list(CORPUS))
    monkeypatch.setattr(sqlite_fts, "fts5_expression", lambda parsed: "AND (")
    # The fallback keeps the words, drops operators and exclusions (wider, never inverted).
    assert set(ids(backend, "taiwan -baseball")) == TITLE_TAIWAN | BODY_ONLY_TAIWAN
    backend.close()
