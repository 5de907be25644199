"""The record store: idempotent writes, versions, feeds, run counters, concurrent writers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from pipeline.models import FeedEntry
from pipeline.records import open_store
from pipeline.settings import FeedConfig


def entry(link="https://news.example/a?utm_source=x", **kw) -> FeedEntry:
    values = dict(link=link, guid=None, title="Title", summary="Summary text.", content="",
                  published_at=datetime(2023, 6, 18, 9, tzinfo=UTC), updated_at=None)
    values.update(kw)
    return FeedEntry(**values)


def test_schema_is_created_idempotently(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    open_store(url).close()
    st = open_store(url)
    assert st.counts()["articles"] == 0
    st.close()


def test_sync_feeds_keeps_state_and_updates_config(store):
    store.sync_feeds([FeedConfig(url="https://a.example/rss", name="A")])
    feed = store.list_feeds()[0]
    store.update_feed(feed.feed_id, etag='"v1"', consecutive_failures=2)
    store.sync_feeds([FeedConfig(url="https://a.example/rss", name="A2", source="Outlet")])
    again = store.list_feeds()[0]
    assert (again.feed_id, again.etag, again.consecutive_failures) == (feed.feed_id, '"v1"', 2)
    assert again.name == "A2" and again.source_name == "Outlet"


def test_same_article_from_two_feeds_is_stored_once(store):
    a, b = store.sync_feeds([FeedConfig(url="https://a.example/rss"),
                             FeedConfig(url="https://b.example/rss")])
    assert store.upsert_entry(a.feed_id, "A", entry()) == "new"
    assert store.upsert_entry(b.feed_id, "B", entry(link="https://NEWS.example/a#x")) == "linked"
    assert store.upsert_entry(b.feed_id, "B", entry()) == "unchanged"
    assert store.counts()["articles"] == 1
    article = store.articles_to_extract(10, max_attempts=3)[0]
    assert sorted(store.get_article(article["article_id"])["feeds"]) == [a.feed_id, b.feed_id]


def test_changed_entry_is_queued_again_not_duplicated(store):
    (feed,) = store.sync_feeds([FeedConfig(url="https://a.example/rss")])
    store.upsert_entry(feed.feed_id, "A", entry())
    (pending,) = store.articles_to_extract(10, max_attempts=3)
    store.save_article_text(pending["article_id"], title="Title", text="Body one.",
                            text_source="page", status="ok", outcome="ok")
    assert store.articles_to_extract(10, max_attempts=3) == []
    assert store.upsert_entry(feed.feed_id, "A", entry(summary="Changed.")) == "entry-updated"
    assert [p["article_id"] for p in store.articles_to_extract(10, max_attempts=3)] == [
        pending["article_id"]]
    assert store.counts()["articles"] == 1


def test_edited_text_is_a_new_version_same_article(store):
    (feed,) = store.sync_feeds([FeedConfig(url="https://a.example/rss")])
    store.upsert_entry(feed.feed_id, "A", entry())
    article_id = store.articles_to_extract(10, max_attempts=3)[0]["article_id"]
    save = dict(title="Title", text_source="page", status="ok", outcome="ok")
    assert store.save_article_text(article_id, text="First text.", **save) == "new-version"
    assert store.save_article_text(article_id, text="First   text.", **save) == "unchanged"
    assert store.save_article_text(article_id, text="Corrected text.", **save) == "new-version"
    article = store.get_article(article_id)
    assert article["version"] == 2 and article["text"] == "Corrected text."
    assert [v["version"] for v in store.article_versions(article_id)] == [1, 2]


def test_failed_refetch_keeps_page_text(store):
    (feed,) = store.sync_feeds([FeedConfig(url="https://a.example/rss")])
    store.upsert_entry(feed.feed_id, "A", entry())
    article_id = store.articles_to_extract(10, max_attempts=3)[0]["article_id"]
    store.save_article_text(article_id, title="T", text="Page text.", text_source="page",
                            status="ok", outcome="ok")
    store.record_extraction_attempt(article_id, status="retry", outcome="timeout")
    article = store.get_article(article_id)
    assert article["text"] == "Page text." and article["extraction_outcome"] == "timeout"


def test_run_counters_add_up(store):
    run_id = store.start_run()
    assert store.start_run(run_id) == run_id  # resuming a retried task reuses the run
    store.count(run_id, "fetch", "ok", 2)
    store.count(run_id, "fetch", "ok")
    store.count(run_id, "fetch", "timeout")
    assert store.run_counts(run_id) == {"fetch": {"ok": 3, "timeout": 1}}
    store.finish_run(run_id, "ok", {"x": 1})
    assert store.recent_runs()[0]["status"] == "ok"


def test_index_fingerprint_tracks_text_and_story(store):
    (feed,) = store.sync_feeds([FeedConfig(url="https://a.example/rss")])
    store.upsert_entry(feed.feed_id, "A", entry())
    article_id = store.articles_to_extract(10, max_attempts=3)[0]["article_id"]
    assert store.articles_needing_index() == []  # no text yet
    store.save_article_text(article_id, title="T", text="Body.", text_source="page",
                            status="ok", outcome="ok")
    pending = store.articles_needing_index()
    assert [a["article_id"] for a in pending] == [article_id]
    store.mark_indexed(pending)
    assert store.articles_needing_index() == []
    store.reset_indexed()
    assert len(store.articles_needing_index()) == 1


def test_concurrent_writers_do_not_fail_with_database_locked(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    open_store(url).close()
    errors: list[Exception] = []

    def writer(n: int) -> None:
        st = open_store(url)
        try:
            (feed,) = st.sync_feeds([FeedConfig(url=f"https://f{n}.example/rss")])
            run_id = st.start_run()
            for i in range(40):
                st.upsert_entry(feed.feed_id, "X", entry(link=f"https://n.example/{n}/{i}"))
                st.count(run_id, "fetch", "ok")
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)
        finally:
            st.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    st = open_store(url)
    assert st.counts()["articles"] == 240
    st.close()
