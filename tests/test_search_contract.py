"""One search contract, every backend: the same cases run on SQLite FTS5, on osmem-server (an
in-memory OpenSearch fake speaking the ES REST API) and, when ``NEWSWATCH_TEST_ES_URL`` is set,
on a real Elasticsearch cluster (the only place kNN/vector cases run besides SQLite).

``pytest -m elasticsearch`` runs the Elasticsearch-API backends only. Also here: the ES write
path under load (429 retries through a throttling osmem node), the client's auth/TLS settings,
and Elasticsearch settings taken from an Airflow connection (dags/newswatch_common.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

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


def _es_real_settings(prefix: str) -> SearchSettings:
    return SearchSettings(
        url=os.environ[ES_URL_ENV], vectors=True, index_prefix=prefix,
        api_key=os.environ.get("NEWSWATCH_TEST_ES_API_KEY") or None,
        username=os.environ.get("NEWSWATCH_TEST_ES_USERNAME") or None,
        password=os.environ.get("NEWSWATCH_TEST_ES_PASSWORD") or None,
        verify_certs=os.environ.get("NEWSWATCH_TEST_ES_VERIFY_CERTS", "1") != "0",
        ca_certs=os.environ.get("NEWSWATCH_TEST_ES_CA_CERTS") or None)


def _es_real(dims: int | None = DIMS) -> Iterator[ElasticSearch]:
    settings = _es_real_settings(f"nwtest-{uuid.uuid4().hex[:8]}")
    backend = ElasticSearch(settings, dims=dims, max_retries=1, initial_backoff=0.5)
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
    filtered = ids(loaded, "", mode="semantic", vector=zurich, sources=["Reuters"])
    assert filtered and set(filtered) <= {"a1", "a4"}


def _blend(*weights: tuple[int, float]) -> list[float]:
    """A query vector mixing axes: ``_blend((3, 1), (7, 2))`` is close to a4 (axis 3) but
    below the similarity floor (cosine 0.44), and near nothing else."""
    values = [0.0] * DIMS
    for axis, weight in weights:
        values[axis] = weight
    return values


BELOW_FLOOR_A4 = _blend((3, 1.0), (7, 2.0))  # cosine to a4 ~0.44 < 0.55


def hybrid(backend: SearchBackend, text: str, vector: list[float], **kwargs):
    return backend.search(SearchQuery(text=text, mode="hybrid", vector=vector, **kwargs))


def test_hybrid_returns_only_documents_that_satisfy_the_query(loaded):
    _vectors_or_skip(loaded)
    for text, expected in [("taiwan", TITLE_TAIWAN | BODY_ONLY_TAIWAN),
                           ("Qin Gang", {"a4", "a5"}), ('"Qin Gang"', {"a4"}),
                           ("taiwan -baseball", {"a1", "a2", "a7"}),
                           ("baseball OR emissions", {"a3", "a6"})]:
        result = hybrid(loaded, text, BELOW_FLOOR_A4)
        assert {h.article_id for h in result.hits} == expected, text
        assert result.total == len(expected), text
    assert set(h.article_id for h in hybrid(loaded, "taiwan", BELOW_FLOOR_A4,
                                           sources=["AP"]).hits) == {"a2", "a3"}


def test_hybrid_similarity_reorders_the_matches(loaded):
    _vectors_or_skip(loaded)
    # a2 and a7 both mention Taiwan in the body only; the query vector decides between them.
    near_a2 = [h.article_id for h in hybrid(loaded, "taiwan", _vector(1)).hits]
    near_a7 = [h.article_id for h in hybrid(loaded, "taiwan", _vector(6)).hits]
    assert set(near_a2) == set(near_a7) == TITLE_TAIWAN | BODY_ONLY_TAIWAN  # nothing added
    assert near_a2.index("a2") < near_a2.index("a7")
    assert near_a7.index("a7") < near_a7.index("a2")
    # A document that is first in both lists is first.
    assert hybrid(loaded, "baseball", _vector(2)).hits[0].article_id == "a3"
    scores = [h.score for h in hybrid(loaded, "taiwan", _vector(1)).hits]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1


def test_hybrid_adds_a_neighbour_only_when_it_keeps_phrases_exclusions_and_filters(loaded):
    _vectors_or_skip(loaded)
    zurich = _vector(5)  # a6's own embedding: cosine 1, far above the floor
    added = hybrid(loaded, "taiwan", zurich)
    assert {h.article_id for h in added.hits} == TITLE_TAIWAN | BODY_ONLY_TAIWAN | {"a6"}
    assert added.total == 5
    assert next(h for h in added.hits if h.article_id == "a6").snippet.startswith("Delegates")
    for text, kwargs in [('"Taiwan Strait"', {}),             # a6 lacks the phrase
                         ("taiwan -emissions", {}),           # a6 has an excluded word
                         ("taiwan NOT coal", {}),
                         ("taiwan", {"sources": ["AP"]}),     # a6 is BBC
                         ("taiwan", {"until": datetime(2024, 3, 6, tzinfo=UTC)}),
                         ("taiwan", {"story_id": "s1"})]:
        got = {h.article_id for h in hybrid(loaded, text, zurich, **kwargs).hits}
        assert "a6" not in got, (text, kwargs)
    below = _blend((5, 1.0), (7, 2.0))  # near a6, but under the floor
    assert "a6" not in {h.article_id for h in hybrid(loaded, "taiwan", below).hits}
    # The quoted phrase is kept, the bare word is not required of a neighbour.
    assert [h.article_id for h in hybrid(loaded, 'taiwan "climate summit"', zurich).hits] == [
        "a6"]


def test_hybrid_ranking_does_not_depend_on_the_limit(loaded):
    _vectors_or_skip(loaded)
    for text, vector in [("taiwan", _vector(1)), ("taiwan", _vector(5)),
                         ("Qin Gang", _vector(4)), ("strait OR baseball", _vector(2))]:
        full = [h.article_id for h in hybrid(loaded, text, vector, limit=20).hits]
        for limit in (1, 2, 3):
            assert [h.article_id for h in hybrid(loaded, text, vector, limit=limit).hits] == (
                full[:limit]), (text, limit)
        assert hybrid(loaded, text, vector, limit=1).total == len(full)


def test_hybrid_by_story_groups_the_fused_ranking(loaded):
    _vectors_or_skip(loaded)
    result = hybrid(loaded, "taiwan", _vector(6), by_story=True)
    assert [h.article_id for g in result.groups for h in g.hits] != [] and result.groups
    assert result.groups[0].story_id == result.hits[0].story_id


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


def test_es_hybrid_requests_share_filters_and_do_not_depend_on_the_limit():
    from pipeline.search.base import KEYWORD_DEPTH, SEMANTIC_DEPTH
    from pipeline.search.elastic import article_mappings

    es = ElasticSearch(SearchSettings(url="http://127.0.0.1:9", vectors=True), dims=DIMS)
    query = SearchQuery(text='taiwan "Taiwan Strait" -baseball', mode="hybrid",
                        vector=_vector(1), sources=["AP"],
                        since=datetime(2024, 3, 1, tzinfo=UTC), story_id="s1", limit=7)
    keyword, knn = es.hybrid_bodies(query)
    filters = keyword["query"]["bool"]["filter"]
    assert keyword["size"] == KEYWORD_DEPTH and "knn" not in keyword
    assert knn["knn"]["k"] == knn["size"] == SEMANTIC_DEPTH and "query" not in knn
    assert knn["knn"]["filter"][:len(filters)] == filters
    neighbour_rules = knn["knn"]["filter"][len(filters):]
    assert "Taiwan Strait" in str(neighbour_rules) and "baseball" in str(neighbour_rules)
    assert "'taiwan'" not in str(neighbour_rules)  # a bare word is not demanded of neighbours
    assert abs(sum(x * x for x in knn["knn"]["query_vector"]) - 1) < 1e-6
    assert es.hybrid_bodies(dataclasses.replace(query, limit=1000)) == (keyword, knn)
    assert es.hybrid_bodies(dataclasses.replace(query, text="*")) is None
    page = es.page_body(query, ["a1", "a2"])
    assert page["query"]["bool"]["filter"] == [{"ids": {"values": ["a1", "a2"]}}]
    assert page["highlight"]["max_analyzed_offset"] == 1_000_000
    semantic = es.search_body(dataclasses.replace(query, mode="semantic"))
    assert "query" not in semantic and semantic["knn"]["filter"] == filters
    assert "knn" not in es.search_body(dataclasses.replace(query, mode="keyword"))
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


@pytest.mark.elasticsearch
@pytest.mark.skipif(not os.environ.get(ES_URL_ENV), reason=NO_REAL_ES)
def test_es_real_vector_dims_come_from_the_first_embedding():
    """The pipeline opens the backend without dims (the model is not loaded for it); an index
    created before any embedding arrives must still take vectors under ``dynamic: strict``."""
    fixture = _es_real(dims=None)
    backend = next(fixture)
    try:
        assert backend.index([dataclasses.replace(CORPUS[0], embedding=None)]) == 1
        assert backend.index(list(CORPUS[1:])) == len(CORPUS) - 1
        mappings = backend.client.indices.get_mapping(index=backend.articles_alias).body
        embedding = next(iter(mappings.values()))["mappings"]["properties"]["embedding"]
        assert embedding["dims"] == DIMS
        assert embedding["index_options"]["type"] == "int8_hnsw"
        hits = backend.search(SearchQuery(text="", mode="semantic", vector=_vector(5),
                                          limit=1)).hits
        assert [h.article_id for h in hits] == ["a6"]
    finally:
        next(fixture, None)  # drop the test indexes and close


def _real_es_backend(**overrides) -> ElasticSearch:
    """A second backend on the same real-cluster prefix (another process, other settings)."""
    settings = SearchSettings(**{**_es_real_settings(f"nwtest-{uuid.uuid4().hex[:8]}")
                                 .model_dump(), **overrides})
    return ElasticSearch(settings, max_retries=1, initial_backoff=0.5)


@pytest.mark.elasticsearch
@pytest.mark.skipif(not os.environ.get(ES_URL_ENV), reason=NO_REAL_ES)
def test_es_real_reindex_swaps_the_alias_while_search_keeps_answering():
    backend = _real_es_backend(vectors=True)
    try:
        backend.index(list(CORPUS))
        old = backend._backing(backend.articles_alias)
        target = backend.begin_rebuild()
        backend.index(CORPUS[:3], target=target)
        # Mid-rebuild: the live index still answers in full, and a write through the alias
        # lands in it (require_alias) instead of creating anything.
        assert backend.count() == len(CORPUS)
        assert set(ids(backend, "taiwan")) == TITLE_TAIWAN | BODY_ONLY_TAIWAN
        assert backend.index([CORPUS[3]]) == 1
        backend.finish_rebuild(target)
        indices = backend.client.indices
        assert backend._backing(backend.articles_alias) == [target]
        assert not any(indices.exists(index=name) for name in old)
        alias = indices.get_alias(name=backend.articles_alias).body[target]["aliases"]
        assert alias[backend.articles_alias]["is_write_index"] is True
        assert backend.count() == 3
        assert ids(backend, "baseball") == ["a3"]
        # Writes with require_alias never create a concrete index named like the alias.
        backend.index([CORPUS[4]])
        assert indices.get_alias(name=backend.articles_alias).body.keys() == {target}
    finally:
        backend.drop()
        backend.close()


@pytest.mark.elasticsearch
@pytest.mark.skipif(not os.environ.get(ES_URL_ENV), reason=NO_REAL_ES)
def test_es_real_vector_path_hybrid_and_semantic():
    backend = _real_es_backend(vectors=True)
    try:
        assert backend.index(list(CORPUS)) == len(CORPUS)
        hybrid_hits = backend.search(SearchQuery(text="taiwan", mode="hybrid",
                                                 vector=_vector(5), limit=10))
        assert {h.article_id for h in hybrid_hits.hits} == TITLE_TAIWAN | BODY_ONLY_TAIWAN | {
            "a6"}
        excluded = backend.search(SearchQuery(text="taiwan -emissions", mode="hybrid",
                                              vector=_vector(5)))
        assert "a6" not in {h.article_id for h in excluded.hits}
        semantic = backend.search(SearchQuery(text="", mode="semantic", vector=_vector(3),
                                              limit=1))
        assert [h.article_id for h in semantic.hits] == ["a4"]
        # One article over the highlighter's default limit must not fail the search.
        huge = dataclasses.replace(CORPUS[0], article_id="huge",
                                   text="Taiwan strait news. " * 60_000)
        assert backend.index([huge]) == 1
        assert "huge" in ids(backend, "taiwan", limit=20)
    finally:
        backend.drop()
        backend.close()


@pytest.mark.elasticsearch
@pytest.mark.skipif(not os.environ.get(ES_URL_ENV), reason=NO_REAL_ES)
def test_es_real_mapping_mismatch_is_a_clear_error_and_reindex_fixes_it():
    from pipeline.search.base import SearchMappingMismatch

    prefix = f"nwtest-{uuid.uuid4().hex[:8]}"
    without = _real_es_backend(vectors=False, index_prefix=prefix)
    with_vectors = _real_es_backend(vectors=True, index_prefix=prefix)
    try:
        without.index(list(CORPUS))
        with pytest.raises(SearchMappingMismatch, match="newswatch reindex"):
            with_vectors.index(list(CORPUS))
        assert set(ids(with_vectors, "taiwan")) == TITLE_TAIWAN | BODY_ONLY_TAIWAN
        with_vectors.clear()  # what reindex does: a new index with the current layout
        assert with_vectors.index(list(CORPUS)) == len(CORPUS)
        wider = [dataclasses.replace(d, embedding=[*d.embedding, *d.embedding])
                 for d in CORPUS]
        other_model = _real_es_backend(vectors=True, index_prefix=prefix)
        with pytest.raises(SearchMappingMismatch, match=f"{DIMS}-dimension"):
            other_model.index(wider)
        other_model.close()
    finally:
        with_vectors.drop()
        without.close()
        with_vectors.close()


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


# ---- Elasticsearch writes: 429 retries, rejections, client settings -------------------------

def _bulk_actions(body: bytes) -> list[tuple[str, dict]]:
    """(op, metadata) of each action in an NDJSON bulk body (source lines skipped)."""
    import json

    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    actions, i = [], 0
    while i < len(lines):
        op, meta = next(iter(lines[i].items()))
        actions.append((op, meta))
        i += 1 if op == "delete" else 2
    return actions


def _throttling_node(rejections: int) -> type:
    """An osmem node class whose first ``rejections`` bulk requests come back with every item
    refused as 429 (``es_rejected_execution_exception``), as a busy cluster answers."""
    import json

    from elastic_transport import ApiResponseMeta, HttpHeaders
    from elastic_transport._node import NodeApiResponse

    from tests.support.es_compat import OsmemCompatNode

    class ThrottlingNode(OsmemCompatNode):
        left = rejections
        bulk_requests = 0

        def perform_request(self, method, target, body=None, headers=None, **kwargs):
            if "/_bulk" in target:
                cls = type(self)
                cls.bulk_requests += 1
                if cls.left > 0:
                    cls.left -= 1
                    items = [{op: {"_index": meta.get("_index"), "_id": meta.get("_id"),
                                   "status": 429,
                                   "error": {"type": "es_rejected_execution_exception",
                                             "reason": "write queue full"}}}
                             for op, meta in _bulk_actions(body or b"")]
                    meta = ApiResponseMeta(
                        status=200, http_version="1.1", duration=0.0, node=self.config,
                        headers=HttpHeaders({"content-type": "application/json",
                                             "X-Elastic-Product": "Elasticsearch"}))
                    payload = {"took": 1, "errors": True, "items": items}
                    return NodeApiResponse(meta, json.dumps(payload).encode())
            return super().perform_request(method, target, body=body, headers=headers,
                                           **kwargs)

    return ThrottlingNode


def _osmem_with(request, node_class: type, max_retries: int) -> ElasticSearch:
    clone = request.getfixturevalue("osmem_clone")
    return ElasticSearch(SearchSettings(url=clone.url, vectors=False, index_prefix="nwtest"),
                         node_class=node_class, max_retries=max_retries,
                         initial_backoff=0.01)


@pytest.mark.elasticsearch
def test_es_bulk_items_refused_with_429_are_retried(request):
    node = _throttling_node(rejections=2)
    backend = _osmem_with(request, node, max_retries=3)
    assert backend.index(list(CORPUS)) == len(CORPUS)
    assert node.bulk_requests == 3  # two refused rounds, then accepted
    assert backend.count() == len(CORPUS)
    assert set(ids(backend, '"Taiwan Strait"')) == {"a1", "a7"}
    backend.close()


@pytest.mark.elasticsearch
def test_es_still_throttled_after_retries_is_unavailable_not_lost(request):
    from pipeline.search.base import SearchUnavailable

    node = _throttling_node(rejections=10)
    backend = _osmem_with(request, node, max_retries=1)
    with pytest.raises(SearchUnavailable, match="refused after retries"):
        backend.index(list(CORPUS))
    assert node.bulk_requests == 2  # the first try and one retry
    assert backend.count() == 0  # nothing marked as indexed by the caller: it resends later
    backend.close()


@pytest.mark.elasticsearch
def test_es_permanently_rejected_document_is_not_counted(request, caplog):
    from tests.support.es_compat import OsmemCompatNode

    backend = _osmem_with(request, OsmemCompatNode, max_retries=0)
    bad = dataclasses.replace(CORPUS[0], article_id="bad", published_at="not a date")
    with caplog.at_level("ERROR", logger="pipeline.search.elastic"):
        assert backend.index([bad, *CORPUS[1:3]]) == 2
    assert "bad" in caplog.text
    assert backend.count() == 2
    backend.close()


def test_es_client_takes_auth_and_tls_from_settings():
    import certifi

    keyed = ElasticSearch(SearchSettings(url="https://es.example:9243", api_key="S2V5",
                                         username="ignored", ca_certs=certifi.where()))
    assert keyed.client._headers["authorization"] == "ApiKey S2V5"  # api_key wins
    node = keyed.client.transport.node_pool.all()[0].config
    assert (node.scheme, node.host, node.port) == ("https", "es.example", 9243)
    assert node.verify_certs is True and node.ca_certs == certifi.where()
    keyed.close()

    with pytest.warns(Warning, match="verify_certs=False"):  # the client says it is insecure
        basic = ElasticSearch(SearchSettings(url="https://es.example:9243", username="nw",
                                             password="pw", verify_certs=False))
    assert basic.client._headers["authorization"] == "Basic bnc6cHc="  # base64("nw:pw")
    assert basic.client.transport.node_pool.all()[0].config.verify_certs is False
    basic.close()

    anonymous = ElasticSearch(SearchSettings(url="http://localhost:9200"))
    assert "authorization" not in anonymous.client._headers
    anonymous.close()


# ---- credentials from an Airflow connection (dags/newswatch_common.py) ----------------------

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture
def common():
    """dags/newswatch_common.py (stdlib-only at import, so Airflow is not loaded here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("newswatch_common_under_test",
                                                  DAGS / "newswatch_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _conn(**fields):
    import types

    values = {"conn_id": "es", "host": None, "port": None, "schema": None, "login": None,
              "password": None, "extra_dejson": {}}
    return types.SimpleNamespace(**{**values, **fields})


def test_search_values_follow_the_elasticsearch_provider_conventions(common):
    values = common._search_values(_conn(host="es.example", port=9243, schema="https",
                                         login="nw", password="pw",
                                         extra_dejson={"ca_certs": "/ca.crt",
                                                       "verify_certs": False}))
    assert values == {"url": "https://es.example:9243", "username": "nw", "password": "pw",
                      "api_key": None, "verify_certs": False, "ca_certs": "/ca.crt"}
    assert common._search_values(_conn(host="es.example"))["url"] == "http://es.example:9200"
    assert common._search_values(_conn(host="https://c.es.io:443/", port=1))["url"] == (
        "https://c.es.io:443")
    assert common._search_values(_conn(extra_dejson={"api_key": "k"}))["api_key"] == "k"
    with pytest.raises(ValueError, match="schema must be http or https"):
        common._search_values(_conn(host="es.example", schema="newswatch"))


# Run in a fresh interpreter: Airflow reads AIRFLOW_HOME once, at import, and this test must
# neither depend on nor decide where the rest of the session's Airflow lives.
CONNECTION_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import newswatch_common as common
from pipeline.search import open_search
from pipeline.settings import load_settings

out = {"before": common.search_connection_values(load_settings(None))}
os.environ["NEWSWATCH_SEARCH__ELASTICSEARCH_CONN_ID"] = "nw_es"
environment = dict(os.environ)
settings = common.task_settings()
out["environment_unchanged"] = dict(os.environ) == environment
out["search"] = settings.search.model_dump()
out["backend"] = type(open_search(settings)).__name__
os.environ["NEWSWATCH_SEARCH__ELASTICSEARCH_CONN_ID"] = "nw_missing"
try:
    common.task_settings()
    out["missing"] = None
except Exception as exc:
    out["missing"] = f"{type(exc).__name__}: {exc}"
del os.environ["NEWSWATCH_SEARCH__ELASTICSEARCH_CONN_ID"]
with open(sys.argv[2], "w") as handle:
    handle.write("search: {elasticsearch_conn_id: nw_es}\\n")
os.environ["NEWSWATCH_CONFIG"] = sys.argv[2]
out["from_settings"] = common.task_settings().search.model_dump()
print("PROBE " + json.dumps(out))
"""


def test_elasticsearch_connection_reaches_the_settings(tmp_path):
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEWSWATCH_", "AIRFLOW_", "AIRFLOW__"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONN_NW_ES": json.dumps({
            "conn_type": "elasticsearch", "host": "es.internal", "port": 9200,
            "schema": "https", "login": "newswatch", "password": "s3cret-pw",
            "extra": {"ca_certs": "/certs/ca.crt", "verify_certs": True}}),
        "NEWSWATCH_SEARCH__USERNAME": "operator",  # explicit environment wins
    })
    done = subprocess.run([sys.executable, "-c", CONNECTION_PROBE, str(DAGS),
                           str(tmp_path / "newswatch.yaml")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("PROBE "))
    out = json.loads(line.removeprefix("PROBE "))
    assert out["before"] == {}  # no connection named: nothing read
    assert out["environment_unchanged"]  # the connection reaches the settings, not os.environ
    search = out["search"]
    assert (search["url"], search["username"], search["password"]) == (
        "https://es.internal:9200", "operator", "s3cret-pw")
    assert search["verify_certs"] is True and search["ca_certs"] == "/certs/ca.crt"
    assert out["backend"] == "ElasticSearch"
    assert out["missing"] and "nw_missing" in out["missing"]  # a named connection must exist
    # search.elasticsearch_conn_id in the YAML names it just as well
    assert {k: v for k, v in out["from_settings"].items() if k != "elasticsearch_conn_id"} == {
        k: v for k, v in search.items() if k != "elasticsearch_conn_id"}


def test_fusion_puts_both_lists_on_one_scale():
    from pipeline.search.base import HybridPolicy, fuse_hybrid

    policy = HybridPolicy(similarity_floor=0.5, semantic_weight=0.5)
    keyword = [("k1", 12.0), ("k2", 6.0), ("k3", 3.0)]
    semantic = [("n1", 0.9), ("k2", 0.8), ("n2", 0.45), ("k3", 0.3)]
    fused = fuse_hybrid(keyword, semantic, policy)
    assert [h.article_id for h in fused] == ["k2", "k1", "n1", "k3"]  # n2: under the floor
    assert {h.article_id for h in fused if not h.keyword_match} == {"n1"}
    assert all(0.0 <= h.score <= 1.0 for h in fused)
    # BM25 is unbounded and cosine is not: rescaling either list changes nothing.
    scaled = fuse_hybrid([(d, s * 100) for d, s in keyword], semantic, policy)
    assert [(h.article_id, round(h.score, 9)) for h in scaled] == [
        (h.article_id, round(h.score, 9)) for h in fused]
    assert fuse_hybrid(keyword, [], policy)[0].score == 0.5  # keyword alone: its half
    assert [h.article_id for h in fuse_hybrid([], semantic, policy)] == ["n1", "k2"]
