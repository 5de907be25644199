"""Keeping search in step with the records: index_pending, catch-up after an outage, reindex,
and the backend factory."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import update

from pipeline import schema
from pipeline.embeddings import pack_vector
from pipeline.index import index_pending, reindex
from pipeline.models import FeedEntry
from pipeline.records import Store, open_store
from pipeline.search import open_search, sqlite_search_path
from pipeline.search.base import SearchDocument, SearchQuery, SearchUnavailable
from pipeline.search.elastic import ElasticSearch
from pipeline.search.sqlite_fts import SqliteSearch
from pipeline.settings import ConfigError, FeedConfig, SearchSettings, Settings, load_settings
from pipeline.urls import article_id_for

FEED = "https://example.com/feed.xml"


def _entry(n: int, title: str) -> FeedEntry:
    return FeedEntry(link=f"https://example.com/news/{n}", guid=None, title=title,
                     summary=f"summary {n}", content="",
                     published_at=datetime(2024, 3, n, 9, tzinfo=UTC), updated_at=None)


def _add(store: Store, feed_id: int, n: int, title: str, text: str) -> str:
    store.upsert_entry(feed_id, "Example News", _entry(n, title))
    article_id = article_id_for(f"https://example.com/news/{n}")
    store.save_article_text(article_id, title=title, text=text, text_source="page",
                            status="ok", outcome="ok")
    return article_id


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=str(tmp_path), store={"url": f"sqlite:///{tmp_path}/records.db"})


@pytest.fixture
def store(settings) -> Store:
    store = open_store(settings.store.url)
    yield store
    store.close()


@pytest.fixture
def feed_id(store) -> int:
    return store.sync_feeds([FeedConfig(url=FEED, name="Example News")])[0].feed_id


@pytest.fixture
def backend(settings):
    backend = open_search(settings)
    yield backend
    backend.close()


class Flaky:
    """A backend that is down until told otherwise (wraps a real one)."""

    name = "flaky"

    def __init__(self, inner: SqliteSearch, fail_after: int = 0) -> None:
        self.inner = inner
        self.fail_after = fail_after  # calls to index() that succeed before the outage
        self.down = True
        self.calls = 0

    def index(self, documents: list[SearchDocument]) -> int:
        self.calls += 1
        if self.down and self.calls > self.fail_after:
            raise SearchUnavailable("connection refused")
        return self.inner.index(documents)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _search_ids(backend, text: str) -> list[str]:
    return [h.article_id for h in backend.search(SearchQuery(text=text)).hits]


def test_factory_puts_sqlite_search_in_the_record_file(settings, tmp_path):
    assert sqlite_search_path(settings) == f"{tmp_path}/records.db"
    backend = open_search(settings)
    assert isinstance(backend, SqliteSearch) and backend.path == f"{tmp_path}/records.db"
    backend.close()
    pg = Settings(data_dir=str(tmp_path), store={"url": "postgresql://u@h/db"})
    assert sqlite_search_path(pg) == str(tmp_path / "search.db")
    explicit = Settings(data_dir=str(tmp_path), search={"sqlite_path": str(tmp_path / "x.db")})
    assert sqlite_search_path(explicit) == str(tmp_path / "x.db")


def test_factory_elasticsearch_connects_lazily_and_rejects_other_urls(tmp_path):
    es = open_search(Settings(search={"url": "http://127.0.0.1:9", "index_prefix": "nw"}))
    assert isinstance(es, ElasticSearch)
    assert es.articles_alias == "nw-articles" and es.dims is None
    es.close()
    with pytest.raises(ConfigError, match=r"search\.url"):  # refused when settings load
        load_settings(None, search={"url": "ftp://example.com"})


def test_index_pending_indexes_only_changed_articles(store, feed_id, backend):
    run = store.start_run()
    a1 = _add(store, feed_id, 1, "Taiwan Strait tensions", "Warships sailed near Taiwan.")
    a2 = _add(store, feed_id, 2, "Markets wrap", "Shares fell across Asia.")
    store.upsert_entry(feed_id, "Example News", _entry(3, "No text yet"))  # version 0: skipped

    counts = index_pending(store, backend, run)
    assert counts == {"indexed": 2, "rejected": 0, "item-error": 0, "batches": 1,
                      "unavailable": 0}
    assert store.run_counts(run)["index"] == {"indexed": 2}
    assert backend.count() == 2
    assert _search_ids(backend, "warships") == [a1]
    hit = backend.search(SearchQuery(text="warships")).hits[0]
    assert hit.source == "Example News" and hit.url == "https://example.com/news/1"
    assert hit.published_at == datetime(2024, 3, 1, 9, tzinfo=UTC)

    assert index_pending(store, backend, run)["indexed"] == 0  # nothing changed

    store.save_article_text(a2, title="Markets wrap", text="Shares rose in Tokyo.",
                            text_source="page", status="ok", outcome="ok")
    with store.engine.begin() as conn:  # the story stage assigns a1 to a story
        conn.execute(update(schema.articles).where(schema.articles.c.article_id == a1)
                     .values(story_id="story-1"))
    assert index_pending(store, backend, run)["indexed"] == 2
    assert backend.count() == 2
    assert _search_ids(backend, "tokyo") == [a2]
    assert _search_ids(backend, "asia") == []
    assert backend.search(SearchQuery(text="taiwan", story_id="story-1")).total == 1


def test_unavailable_backend_leaves_articles_unmarked_then_catches_up(store, feed_id,
                                                                      settings):
    ids = [_add(store, feed_id, n, f"Story {n} about Taiwan", f"Body {n}.") for n in (1, 2, 3)]
    real = SqliteSearch(sqlite_search_path(settings))
    flaky = Flaky(real, fail_after=1)
    run = store.start_run()

    counts = index_pending(store, flaky, run, batch=1)  # first batch ok, then the outage
    assert counts["indexed"] == 1 and counts["unavailable"] == 1
    assert store.run_counts(run)["index"] == {"indexed": 1, "unavailable": 1}
    assert len(store.articles_needing_index()) == 2

    assert index_pending(store, flaky, run, batch=1)["unavailable"] == 1  # still down
    assert len(store.articles_needing_index()) == 2

    flaky.down = False
    counts = index_pending(store, flaky, store.start_run(), batch=1)
    assert counts == {"indexed": 2, "rejected": 0, "item-error": 0, "batches": 2,
                      "unavailable": 0}
    assert store.articles_needing_index() == []
    assert real.count() == 3
    assert sorted(_search_ids(real, "taiwan")) == sorted(ids)  # each exactly once
    real.close()


def test_unreachable_elasticsearch_is_counted_not_raised(store, feed_id):
    _add(store, feed_id, 1, "Taiwan", "Text.")
    dead = ElasticSearch(SearchSettings(url="http://127.0.0.1:9", vectors=False),
                         request_timeout=1, max_retries=0)
    started = time.monotonic()
    with pytest.raises(SearchUnavailable):
        dead.search(SearchQuery(text="taiwan"))
    run = store.start_run()
    assert index_pending(store, dead, run)["unavailable"] == 1
    assert store.run_counts(run)["index"] == {"unavailable": 1}
    assert len(store.articles_needing_index()) == 1
    assert time.monotonic() - started < 20
    dead.close()


def test_embeddings_of_the_current_version_are_indexed(store, feed_id, backend):
    a1 = _add(store, feed_id, 1, "Climate summit", "Delegates met in Zurich.")
    a2 = _add(store, feed_id, 2, "Baseball final", "Taiwan won in Tokyo.")
    vectors = {a1: np.array([1.0, 0.1, 0.0, 0.0]), a2: np.array([0.0, 0.1, 1.0, 0.0])}
    v = schema.article_versions
    with store.engine.begin() as conn:
        for article_id, vector in vectors.items():
            conn.execute(update(v).where(v.c.article_id == article_id).where(v.c.version == 1)
                         .values(embedding=pack_vector(vector), embedding_model="test"))
    index_pending(store, backend, None)
    result = backend.search(SearchQuery(text="", mode="semantic",
                                        vector=[0.9, 0.0, 0.1, 0.0], limit=2))
    assert [h.article_id for h in result.hits] == [a1, a2]


def test_embeddings_lookup_override(store, feed_id, backend):
    a1 = _add(store, feed_id, 1, "Climate summit", "Delegates met in Zurich.")
    seen = []

    def lookup(articles):
        seen.extend(a["article_id"] for a in articles)
        return {a1: [0.0, 1.0]}

    index_pending(store, backend, None, embeddings_lookup=lookup)
    assert seen == [a1]
    hits = backend.search(SearchQuery(text="", mode="semantic", vector=[0.0, 1.0])).hits
    assert [h.article_id for h in hits] == [a1]


def test_reindex_rebuilds_from_records(store, feed_id, backend):
    ids = [_add(store, feed_id, n, f"Story {n}", "Taiwan news.") for n in (1, 2, 3)]
    index_pending(store, backend, None)
    backend.index([SearchDocument(article_id="stray", title="Taiwan stray", text="",
                                  url=None, source=None, published_at=None)])
    assert backend.count() == 4
    progress = []
    counts = reindex(store, backend, lambda done, rejected: progress.append(done), batch=2)
    assert counts["indexed"] == 3 and progress == [2, 3]
    assert backend.count() == 3
    assert sorted(_search_ids(backend, "taiwan")) == sorted(ids)
    assert index_pending(store, backend, None)["indexed"] == 0


def _corrupt_embedding(store: Store, article_id: str) -> None:
    """A stored embedding blob too short to unpack (a truncated write, a foreign tool)."""
    v = schema.article_versions
    with store.engine.begin() as conn:
        conn.execute(update(v).where(v.c.article_id == article_id)
                     .values(embedding=b"\x01\x02", embedding_model="test"))


def test_one_article_that_raises_costs_only_itself(store, feed_id, settings):
    from pipeline.run import run_once

    ids = [_add(store, feed_id, n, f"Story {n} about Taiwan", f"Body {n}.") for n in (1, 2, 3)]
    _corrupt_embedding(store, ids[1])  # used to fail the stage in every run

    report = run_once(settings, stages=("index",), store=store)
    assert report.errors == {}
    assert report.stages["index"] == {"indexed": 2, "item-error": 1}
    assert report.item_errors == {"index": 1}
    backend = open_search(settings)
    assert sorted(_search_ids(backend, "taiwan")) == sorted([ids[0], ids[2]])
    # Marked: not resent in every run; a new version of it is sent again.
    assert store.articles_needing_index() == []
    assert index_pending(store, backend, store.start_run())["item-error"] == 0
    store.save_article_text(ids[1], title="Story 2 about Taiwan", text="Body 2, corrected.",
                            text_source="page", status="ok", outcome="ok")
    assert index_pending(store, backend, store.start_run())["indexed"] == 1
    assert sorted(_search_ids(backend, "taiwan")) == sorted(ids)
    backend.close()


class Refusing:
    """A backend that raises for the documents named in ``bad`` (and for any batch holding
    one), or for every document when ``bad`` is None (wraps a real one)."""

    name = "refusing"

    def __init__(self, inner: SqliteSearch, bad: set[str] | None,
                 error: type[Exception] = ValueError) -> None:
        self.inner, self.bad, self.error = inner, bad, error

    def index(self, documents: list[SearchDocument]) -> int:
        if self.bad is None or any(d.article_id in self.bad for d in documents):
            raise self.error("document refused")
        return self.inner.index(documents)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_batch_failure_falls_back_to_one_document_at_a_time(store, feed_id, settings):
    ids = [_add(store, feed_id, n, f"Story {n} about Taiwan", f"Body {n}.") for n in range(1, 6)]
    real = SqliteSearch(sqlite_search_path(settings))
    run = store.start_run()
    counts = index_pending(store, Refusing(real, {ids[3]}), run, batch=3)
    assert counts["indexed"] == 4 and counts["item-error"] == 1 and counts["batches"] == 2
    assert store.run_counts(run)["index"] == {"indexed": 4, "item-error": 1}
    assert sorted(_search_ids(real, "taiwan")) == sorted(ids[:3] + ids[4:])
    real.close()


def test_an_error_every_document_shares_fails_the_stage_and_marks_nothing(store, feed_id,
                                                                           settings):
    import sqlite3

    for n in (1, 2, 3):
        _add(store, feed_id, n, f"Story {n}", "Body.")
    real = SqliteSearch(sqlite_search_path(settings))
    with pytest.raises(RuntimeError, match="document refused"):  # no item's fault
        index_pending(store, Refusing(real, None, RuntimeError), store.start_run())
    with pytest.raises(sqlite3.OperationalError):  # locked / disk full: raised at once
        index_pending(store, Refusing(real, None, sqlite3.OperationalError), None)
    assert len(store.articles_needing_index()) == 3
    real.close()
