"""The record store and the alert ledger on PostgreSQL: same API, same guarantees as SQLite,
including exactly-once delivery with several workers each on its own engine.

``pytest -m postgres`` runs these (tests/support/postgres.py starts a throwaway server).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from pipeline import schema
from pipeline.alerts.engine import run_alerts
from pipeline.embeddings import pack_vector, unpack_vector
from pipeline.models import FeedEntry
from pipeline.records import Store, open_store
from pipeline.records import alerts as ledger
from pipeline.settings import AlertSettings, FeedConfig
from pipeline.urls import article_id_for
from tests.support.threads import in_threads
from tests.test_alert_engine import (
    T0,
    FakeScorer,
    add_articles,
    add_pending_alerts,
    make_settings,
    outbox,
)

pytestmark = pytest.mark.postgres
ALERTS = 200  # enough for the two workers to interleave on the same alerts


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    yield store
    store.close()


def _entry(n: int, title: str, summary: str = "") -> FeedEntry:
    return FeedEntry(link=f"https://example.com/news/{n}?utm_source=x", guid=None, title=title,
                     summary=summary or f"summary {n}", content="",
                     published_at=datetime(2024, 3, n, 9, 30, tzinfo=UTC), updated_at=None,
                     authors=["Ann Lee", "Bo Chen"])


# ---- the store -----------------------------------------------------------------------------

def test_store_round_trip_keeps_types(store):
    assert store.dialect == "postgresql"
    feeds = store.sync_feeds([FeedConfig(url="https://example.com/a.xml", name="A"),
                              FeedConfig(url="https://example.com/b.xml", name="B",
                                         source="Example")])
    a, b = (f.feed_id for f in feeds)
    assert store.upsert_entry(a, "A", _entry(1, "Taiwan Strait")) == "new"
    assert store.upsert_entry(b, "Example", _entry(1, "Taiwan Strait")) == "linked"
    assert store.upsert_entry(a, "A", _entry(1, "Taiwan Strait")) == "unchanged"
    assert store.upsert_entry(a, "A", _entry(1, "Taiwan Strait", "edited")) == "entry-updated"
    article_id = article_id_for("https://example.com/news/1")
    assert store.save_article_text(article_id, title="Taiwan Strait", text="Ships sailed.",
                                   text_source="page", status="ok", outcome="ok",
                                   authors=["Ann Lee"], language="en") == "new-version"
    assert store.get_article(article_id)["authors"] == ["Ann Lee"]  # JSON, not a string
    assert store.save_article_text(article_id, title="Taiwan Strait", text="Ships sailed.",
                                   text_source="page", status="ok", outcome="ok") == "unchanged"
    store.save_article_text(article_id, title="Taiwan Strait", text="More ships sailed.",
                            text_source="page", status="ok", outcome="ok")

    article = store.get_article(article_id)
    assert article["version"] == 2 and sorted(article["feeds"]) == sorted([a, b])
    assert article["authors"] == []  # the new version has none
    assert article["published_at"] == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    assert article["first_seen_at"].tzinfo is not None
    assert [v["version"] for v in store.article_versions(article_id)] == [1, 2]

    vector = np.arange(8, dtype=np.float32) / 10
    packed = pack_vector(vector)
    with store.engine.begin() as conn:
        conn.execute(update(schema.article_versions)
                     .where(schema.article_versions.c.article_id == article_id)
                     .values(embedding=packed))
        blob = conn.execute(select(schema.article_versions.c.embedding).where(
            schema.article_versions.c.article_id == article_id).limit(1)).scalar_one()
    assert isinstance(blob, bytes) and blob == packed  # bytea back as bytes
    assert np.allclose(unpack_vector(blob), vector, atol=0.01)

    run = store.start_run("run-1")
    assert store.start_run("run-1") == run  # resumed, not duplicated
    store.count(run, "fetch", "ok", 2)
    store.count(run, "fetch", "ok")
    store.count_feed_outcome(a, "ok")
    store.count_feed_outcome(a, "ok")
    store.finish_run(run, "ok", {"when": datetime(2024, 1, 1, tzinfo=UTC), "n": 1})
    assert store.run_counts(run) == {"fetch": {"ok": 3}}
    assert store.feed_outcome_counts()[a] == {"ok": 2}
    assert store.recent_runs()[0]["summary"] == {"when": "2024-01-01 00:00:00+00:00", "n": 1}
    assert store.counts()["articles"] == 1 and store.counts()["versions"] == 2


def test_index_fingerprint_expression_matches_python(store):
    """articles_needing_index compares a SQL expression with what mark_indexed wrote."""
    (feed,) = store.sync_feeds([FeedConfig(url="https://example.com/a.xml")])
    for n in (1, 2):
        store.upsert_entry(feed.feed_id, "A", _entry(n, f"Story {n}"))
        store.save_article_text(article_id_for(f"https://example.com/news/{n}"),
                                title=f"Story {n}", text=f"Body {n}.", text_source="page",
                                status="ok", outcome="ok")
    pending = store.articles_needing_index()
    assert len(pending) == 2
    store.mark_indexed(pending)
    assert store.articles_needing_index() == []
    with store.engine.begin() as conn:
        conn.execute(update(schema.articles).where(
            schema.articles.c.article_id == pending[0]["article_id"]).values(story_id="s" * 32))
    assert [a["article_id"] for a in store.articles_needing_index()] == [
        pending[0]["article_id"]]


def test_concurrent_writers_record_one_article_once(pg_url):
    """Several processes' worth of engines upserting the same entries: one row each."""
    setup = open_store(pg_url)
    (feed,) = setup.sync_feeds([FeedConfig(url="https://example.com/a.xml")])
    setup.close()

    def work(_i: int) -> list[str]:
        store = open_store(pg_url)
        try:
            outcomes = [store.upsert_entry(feed.feed_id, "A", _entry(n, f"Item {n}"))
                        for n in range(1, 21)]
            run = store.start_run("shared-run")
            store.count(run, "entries", "seen", 20)
            return outcomes
        finally:
            store.close()

    results = in_threads(4, work)
    check = open_store(pg_url)
    assert check.counts()["articles"] == 20
    assert check.run_counts("shared-run") == {"entries": {"seen": 80}}
    check.close()
    assert sum(Counter(o)["new"] for o in results) == 20


# ---- the alert ledger ----------------------------------------------------------------------

def test_one_alert_per_event_under_concurrent_inserts(pg_url):
    open_store(pg_url).close()

    def work(_i: int) -> int | None:
        store = open_store(pg_url)
        try:
            return ledger.create_alert(
                store, watch="w", story_id="s1", kind="new", window_key="once",
                status="pending", title="t", score=1.0, payload={"x": 1}, basis={},
                channels=["mail", "slack"], now=T0)
        finally:
            store.close()

    ids = in_threads(4, work)
    assert len([i for i in ids if i is not None]) == 1
    store = open_store(pg_url)
    with store.engine.connect() as conn:
        assert conn.execute(select(schema.alert_deliveries.c.channel)
                            .order_by(schema.alert_deliveries.c.channel)).scalars().all() == [
            "mail", "slack"]
    store.close()


def test_two_workers_claim_and_send_each_delivery_exactly_once(pg_url):
    add_pending_alerts(pg_url, 30)
    policy = ledger.RetryPolicy.of(AlertSettings())
    sent: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> int:
        store = open_store(pg_url, create=False)  # each worker: its own engine and pool
        name = f"worker-{i}"
        try:
            for row in ledger.due_deliveries(store, T0, policy):
                if not ledger.claim(store, row, name, T0, policy):
                    continue
                with lock:
                    sent.append(row["delivery_id"])  # "send"
                assert ledger.mark_sent(store, row["delivery_id"], name, T0)
            return len(ledger.due_deliveries(store, T0, policy))
        finally:
            store.close()

    leftover = in_threads(2, worker)
    assert leftover == [0, 0]
    assert len(sent) == 60 and len(set(sent)) == 60
    store = open_store(pg_url)
    assert {a["status"] for a in ledger.list_alerts(store)} == {ledger.SENT}
    store.close()


def test_channels_finished_by_different_workers_complete_the_alert(pg_url):
    """Worker A sends channel a while worker B sends channel b of the same alerts; the alert
    row (derived from both) must end `sent`, not keep a status computed from a stale read."""
    setup = open_store(pg_url)
    for i in range(ALERTS):
        ledger.create_alert(setup, watch="w", story_id=f"s{i}", kind="new", window_key="once",
                            status="pending", title="t", score=1.0, payload={}, basis={},
                            channels=["a", "b"], now=T0)
    setup.close()
    policy = ledger.RetryPolicy.of(AlertSettings())

    def worker(i: int) -> None:
        channel, name = ("a", "b")[i], f"worker-{i}"
        store = open_store(pg_url, create=False)
        try:
            rows = [r for r in ledger.due_deliveries(store, T0, policy)
                    if r["channel"] == channel]
            for row in rows:
                assert ledger.claim(store, row, name, T0, policy)
            for row in rows:
                assert ledger.mark_sent(store, row["delivery_id"], name, T0)
        finally:
            store.close()

    in_threads(2, worker)
    store = open_store(pg_url)
    assert Counter(a["status"] for a in ledger.list_alerts(store)) == {ledger.SENT: ALERTS}
    store.close()


def test_concurrent_alert_runs_send_each_alert_once(pg_url, tmp_path):
    """The whole alert stage in three workers at once against one PostgreSQL ledger."""
    setup = open_store(pg_url)
    for i in range(12):
        add_articles(setup, f"s{i}", [("A", f"Taiwan item {i}")], T0)
    setup.close()
    outbox_path = tmp_path / "outbox.jsonl"
    settings = make_settings({"outbox": {"type": "file", "path": str(outbox_path)}},
                             max_per_window=50)

    def work(i: int) -> dict[str, int]:
        store = open_store(pg_url, create=False)
        try:
            return run_alerts(store, settings, f"run-{i}", now=T0, scorer=FakeScorer())
        finally:
            store.close()

    in_threads(3, work)
    titles = [line["title"] for line in outbox(outbox_path)]
    assert sorted(titles) == sorted(f"Taiwan item {i}" for i in range(12))

    rerun = open_store(pg_url)  # a later run finds nothing new to send
    run_alerts(rerun, settings, "run-later", now=T0 + timedelta(minutes=5), scorer=FakeScorer())
    rerun.close()
    assert len(outbox(outbox_path)) == 12
