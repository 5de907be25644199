"""Elasticsearch backend behaviour that needs no server: writes through the alias with
``require_alias``, the reindex alias swap, the live-mapping check (vectors switched on later,
other dims), refused credentials and privileges, and the hybrid request flow. The cluster is
the recording transport of ``tests/support/es_recorder.py`` (a model of indices and aliases,
not a search engine); the same cases against a real cluster are in
``tests/test_search_contract.py`` (``NEWSWATCH_TEST_ES_URL``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import elasticsearch
import numpy as np
import pytest

from pipeline.index import index_pending, reindex
from pipeline.search.base import (
    SearchAccessDenied,
    SearchMappingMismatch,
    SearchQuery,
    SearchUnavailable,
)
from pipeline.search.elastic import ElasticSearch
from pipeline.settings import FeedConfig, SearchSettings
from tests.support.es_recorder import matches_path, recording_node_class
from tests.test_search_contract import CORPUS, DIMS, _vector
from tests.test_search_index import _add

ALIAS = "nw-articles"


def _es(node: type, *, vectors: bool = True, dims: int | None = None) -> ElasticSearch:
    settings = SearchSettings(url="http://127.0.0.1:9", vectors=vectors, index_prefix="nw")
    return ElasticSearch(settings, dims=dims, node_class=node, max_retries=0,
                         initial_backoff=0.0)


@pytest.fixture
def node() -> type:
    return recording_node_class()


def _articles(store, n: int = 3) -> list[str]:
    """Articles with an 8-dim embedding each (as the story stage leaves them)."""
    from sqlalchemy import update

    from pipeline import schema
    from pipeline.embeddings import pack_vector

    feed_id = store.sync_feeds([FeedConfig(url="https://example.com/feed.xml")])[0].feed_id
    ids = [_add(store, feed_id, i + 1, f"Taiwan story {i}", f"Body {i} about Taiwan.")
           for i in range(n)]
    v = schema.article_versions
    with store.engine.begin() as conn:
        for i, article_id in enumerate(ids):
            conn.execute(update(v).where(v.c.article_id == article_id)
                         .values(embedding=pack_vector(np.asarray(_vector(i), np.float32))))
    return ids


def test_writes_go_through_the_alias_with_require_alias(node):
    es = _es(node)
    assert es.index(list(CORPUS)) == len(CORPUS)
    bulks = [r for r in node.requests if matches_path(r, "PUT /_bulk")]
    assert bulks and all(r.params == {"require_alias": "true"} for r in bulks)
    assert all(next(iter(line.values()))["_index"] == ALIAS
               for line in bulks[0].body if "index" in line)
    # The alias vanishes under a running process: the write is refused, not turned into a
    # concrete index, and the documents count as not sent (resent next run).
    node.indices.clear()
    with pytest.raises(SearchUnavailable):
        es.index(list(CORPUS[:2]))
    assert ALIAS not in node.indices
    assert es.index(list(CORPUS[:2])) == 2  # set up again on the next call
    es.close()


def test_a_stray_index_on_the_alias_name_is_reported_and_reindex_replaces_it(node, store):
    node.indices[ALIAS] = {"mappings": {}, "aliases": {}, "docs": {"old": {}}}
    es = _es(node)
    with pytest.raises(SearchMappingMismatch, match=r"concrete index.*newswatch reindex"):
        es.index(list(CORPUS[:1]))
    ids = _articles(store)
    assert reindex(store, es)["indexed"] == len(ids)
    assert ALIAS not in node.indices  # removed in the same atomic alias update
    assert es.count() == len(ids)
    swap = next(r for r in node.requests if matches_path(r, "POST /_aliases"))
    assert {"remove_index": {"index": ALIAS}} in swap.body["actions"]
    es.close()


def test_reindex_swaps_the_alias_atomically_and_search_answers_meanwhile(node, store):
    ids = _articles(store, 4)
    es = _es(node)
    index_pending(store, es, None)
    old = es._backing(ALIAS)
    seen_during = []

    class Watching(ElasticSearch):
        def index(self, documents, *, target=None):  # a search between two rebuild batches
            accepted = super().index(documents, target=target)
            seen_during.append(self.count())
            return accepted

    rebuilding = Watching(es.settings, node_class=node, max_retries=0)
    counts = reindex(store, rebuilding, batch=2)
    assert counts["indexed"] == 4 and counts["batches"] == 2
    assert seen_during == [4, 4]  # the old index kept answering: never empty
    new = rebuilding._backing(ALIAS)
    assert new != old and not set(old) & set(node.indices)
    swaps = [r for r in node.requests if matches_path(r, "POST /_aliases")]
    assert len(swaps) == 1 and swaps[0].body["actions"][0] == {
        "add": {"index": new[0], "alias": ALIAS, "is_write_index": True}}
    assert {"remove": {"index": old[0], "alias": ALIAS}} in swaps[0].body["actions"]
    assert store.articles_needing_index() == []
    assert sorted(node.indices[new[0]]["docs"]) == sorted(ids)

    # A failed rebuild leaves the live index and the records as they were.
    class Failing(ElasticSearch):
        def index(self, documents, *, target=None):
            raise SearchUnavailable("cluster went away")

    failing = Failing(es.settings, node_class=node, max_retries=0)
    with pytest.raises(SearchUnavailable):
        reindex(store, failing)
    assert failing._backing(ALIAS) == new and set(node.indices) == {*new, "nw-stories-000001"}
    assert store.articles_needing_index() == []
    for backend in (es, rebuilding, failing):
        backend.close()


def test_reindex_resends_what_a_concurrent_run_wrote_into_the_old_index(node, store):
    ids = _articles(store, 2)
    es = _es(node)
    index_pending(store, es, None)

    class Concurrent(ElasticSearch):
        """While the rebuild runs, a new article arrives and a run indexes it (old index)."""

        def index(self, documents, *, target=None):
            accepted = super().index(documents, target=target)
            if target is not None and not late:
                feed_id = store.sync_feeds([FeedConfig(url="https://example.com/feed.xml")])[
                    0].feed_id
                late.append(_add(store, feed_id, 9, "Late Taiwan news", "Arrived late."))
                index_pending(store, es, None)
            return accepted

    late: list[str] = []
    rebuilding = Concurrent(es.settings, node_class=node, max_retries=0)
    reindex(store, rebuilding, batch=1)
    # The late article went into the old index, now gone: the records must say "send again".
    assert [a["article_id"] for a in store.articles_needing_index()] == late
    index_pending(store, es, None)
    assert sorted(node.indices[es._backing(ALIAS)[0]]["docs"]) == sorted([*ids, *late])
    for backend in (es, rebuilding):
        backend.close()


def test_vectors_switched_on_later_fail_the_stage_and_lose_nothing(node, store):
    ids = _articles(store, 3)
    without = _es(node, vectors=False)
    index_pending(store, without, None)
    assert store.articles_needing_index() == []
    store.reset_indexed()  # the next run has new versions to send
    with_vectors = _es(node, vectors=True)
    with pytest.raises(SearchMappingMismatch) as raised:
        index_pending(store, with_vectors, "run-1")
    message = str(raised.value)
    assert "no vector field" in message and "newswatch reindex" in message
    assert "\n" not in message
    assert len(store.articles_needing_index()) == len(ids)  # nothing marked, nothing lost
    # Keyword search still answers; a vector search says what to do.
    with_vectors.search(SearchQuery(text="taiwan"))
    with pytest.raises(SearchMappingMismatch, match="newswatch reindex"):
        with_vectors.search(SearchQuery(text="taiwan", mode="hybrid", vector=_vector(1)))
    reindex(store, with_vectors)
    mapping = node.indices[with_vectors._backing(ALIAS)[0]]["mappings"]["properties"]
    assert mapping["embedding"]["type"] == "dense_vector"
    assert index_pending(store, _es(node, vectors=True), None)["indexed"] == 0
    for backend in (without, with_vectors):
        backend.close()


def test_embedding_dims_changed_is_a_clear_error(node):
    es = _es(node, dims=DIMS)
    es.index(list(CORPUS))
    wider = [dataclasses.replace(d, embedding=[*d.embedding, *d.embedding]) for d in CORPUS]
    later = _es(node)  # a later run, another model
    with pytest.raises(SearchMappingMismatch, match=r"8-dimension.*makes 16.*newswatch reindex"):
        later.index(wider)
    with pytest.raises(SearchMappingMismatch, match="makes 16"):
        later.search(SearchQuery(text="taiwan", mode="semantic", vector=[1.0] * 16))
    for backend in (es, later):
        backend.close()


def test_refused_credentials_and_privileges_fail_with_a_one_line_reason(node, store):
    _articles(store, 1)
    node.deny = {"*": 401}
    with pytest.raises(SearchAccessDenied) as raised:
        index_pending(store, _es(node), "run-1")
    assert "401" in str(raised.value) and "search.api_key" in str(raised.value)
    assert "\n" not in str(raised.value)
    node.deny = {}
    _es(node).ensure_ready()
    node.deny = {"GET _mapping": 403}  # a key without view_index_metadata
    with pytest.raises(SearchAccessDenied, match=r"403.*view_index_metadata"):
        index_pending(store, _es(node), "run-2")
    node.deny = {"PUT _bulk": 403}
    with pytest.raises(SearchAccessDenied, match="403"):
        _es(node).index(list(CORPUS[:1]))
    assert len(store.articles_needing_index()) == 1  # never marked, never resent forever


def test_a_key_that_may_not_manage_templates_still_indexes(node, caplog):
    _es(node).ensure_ready()
    node.deny = {"PUT nw-articles": 403, "PUT nw-stories": 403}  # template names
    with caplog.at_level("WARNING", logger="pipeline.search.elastic"):
        assert _es(node).index(list(CORPUS[:2])) == 2
    assert "may not update index template" in caplog.text


def _emulated_search(index: str, body: dict) -> list[tuple[str, float]]:
    """Answers the three hybrid requests from CORPUS: keyword = documents containing every
    word (score = occurrences), kNN = cosine as (1 + cos) / 2, page = the ids asked for."""
    docs = {d.article_id: d for d in CORPUS}
    text = json.dumps(body.get("query", {}))
    if '"ids"' in text:
        return [(i, 1.0) for i in body["query"]["bool"]["filter"][0]["ids"]["values"]]
    if "knn" in body:
        vector = np.asarray(body["knn"]["query_vector"])
        rules = json.dumps(body["knn"].get("filter", []))
        out = []
        for doc in docs.values():
            if "emissions" in rules and "emissions" in doc.text:
                continue  # the one exclusion the test below uses
            stored = np.asarray(doc.embedding) / np.linalg.norm(doc.embedding)
            out.append((doc.article_id, (1 + float(stored @ vector)) / 2))
        return sorted(out, key=lambda item: -item[1])[:body["knn"]["k"]]
    scores = [(d.article_id, float((d.title + " " + d.text).lower().count("taiwan")))
              for d in docs.values()]  # the tests below search for "taiwan" only
    return sorted([s for s in scores if s[1] > 0], key=lambda item: (-item[1], item[0]))


def test_es_hybrid_fuses_both_lists_client_side(node):
    node.search_handler = staticmethod(_emulated_search)
    es = _es(node)
    es.index(list(CORPUS))
    result = es.search(SearchQuery(text="taiwan", mode="hybrid", vector=_vector(5), limit=10))
    found = [h.article_id for h in result.hits]
    assert set(found) == {"a1", "a2", "a3", "a7", "a6"}  # a6: cosine 1, above the floor
    assert result.total == 5
    assert all(0 <= h.score <= 1 for h in result.hits)
    top2 = es.search(SearchQuery(text="taiwan", mode="hybrid", vector=_vector(5), limit=2))
    assert [h.article_id for h in top2.hits] == found[:2] and top2.total == 5
    excluded = es.search(SearchQuery(text="taiwan -emissions", mode="hybrid",
                                     vector=_vector(5)))
    assert "a6" not in {h.article_id for h in excluded.hits}
    es.close()


def test_compose_stack_and_pinned_client_are_the_same_minor_version():
    """The 9.x client speaks `compatible-with=9`; its minor version should be the stack's."""
    root = Path(__file__).resolve().parents[1]
    stack = re.search(r"^STACK_VERSION=(\d+)\.(\d+)\.\d+$",
                      (root / ".env.example").read_text(), re.M)
    client = re.search(r"^elasticsearch==(\d+)\.(\d+)\.\d+$",
                       (root / "requirements.txt").read_text(), re.M)
    assert stack and client
    assert stack.groups() == client.groups()
    assert ".".join(map(str, elasticsearch.__version__[:2])) == ".".join(client.groups())


def test_the_index_stage_fails_with_the_one_line_reason(node, store, tmp_path, monkeypatch):
    import pipeline.search
    from pipeline.run import run_once
    from pipeline.settings import Settings

    opened = pipeline.search.open_search
    monkeypatch.setattr(pipeline.search, "open_search",
                        lambda settings: opened(settings, node_class=node, max_retries=0))
    _articles(store, 2)
    settings = Settings(data_dir=str(tmp_path), search={"url": "http://127.0.0.1:9",
                                                        "index_prefix": "nw"})
    node.deny = {"*": 401}
    report = run_once(settings, stages=("index",), store=store)
    error = report.errors["index"]
    assert error.startswith("SearchAccessDenied: elasticsearch rejected the credentials")
    assert "\n" not in error
    node.deny = {}
    _es(node, vectors=False).ensure_ready()  # an index made before vectors were on
    report = run_once(settings, stages=("index",), store=store)
    assert report.errors["index"].startswith("SearchMappingMismatch: ")
    assert "newswatch reindex" in report.errors["index"]
    assert len(store.articles_needing_index()) == 2


def test_a_document_the_cluster_refuses_whole_costs_only_itself(node, store):
    """A bulk request holding one oversized document is refused as a whole (413): the
    batch falls back to one document at a time and only that one is an item-error."""
    from pipeline.index import index_pending

    ids = _articles(store, 4)
    too_big = ids[2]
    answer = node._answer.__func__

    def refuse_big(cls, method, path, params, body):
        if path.endswith("/_bulk") and any(line.get("index", {}).get("_id") == too_big
                                           for line in body):
            return cls._error(413, "request_entity_too_large", "content too long")
        return answer(cls, method, path, params, body)

    node._answer = classmethod(refuse_big)
    es = _es(node, vectors=False)
    run = store.start_run()
    counts = index_pending(store, es, run)  # used to fail the stage in every run
    assert counts["indexed"] == 3 and counts["item-error"] == 1
    assert store.run_counts(run)["index"] == {"indexed": 3, "item-error": 1}
    docs = next(iter(node.indices.values()))["docs"]
    assert sorted(docs) == sorted(set(ids) - {too_big})
    assert store.articles_needing_index() == []


def test_a_non_finite_embedding_is_left_out_not_sent(node):
    from pipeline.search.base import SearchDocument

    es = _es(node, dims=DIMS)
    bad = [float("nan")] * DIMS
    assert es.index([SearchDocument(article_id="a1", title="Taiwan", text="", url=None,
                                    source=None, published_at=None, embedding=bad)]) == 1
    docs = next(iter(node.indices.values()))["docs"]
    assert "embedding" not in docs["a1"]
