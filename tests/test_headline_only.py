"""Headline-only feed items through the whole pipeline: a feed without descriptions whose
pages 404 still yields articles that are embedded, storied, indexed, scored and alerted on."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pipeline import schema
from pipeline.query import run_search
from pipeline.records import open_store
from pipeline.run import run_once
from pipeline.settings import load_settings
from pipeline.urls import article_id_for

pytestmark = pytest.mark.slow

# Fictional headlines: two on one event, one on another.
HEADLINES = {
    "/news/drills-1": "Taiwan reports 40 Chinese warships near Penghu in surprise drills",
    "/news/drills-2": "Chinese warships stage surprise drills near Taiwan's Penghu islands",
    "/news/orchard": "Vermont orchard festival crowns record-breaking giant pumpkin",
}


def rss(base: str) -> str:
    items = "".join(
        f"<item><title>{title}</title><link>{base}{path}</link>"
        f"<pubDate>Tue, 0{n + 1} Oct 2024 0{n}:00:00 GMT</pubDate></item>"
        for n, (path, title) in enumerate(HEADLINES.items()))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Headline Wire</title>'
            f"<link>{base}/</link>{items}</channel></rss>")


@pytest.fixture(scope="module")
def headline_run(tmp_path_factory):
    from tests.support.httpserver import LocalHTTPServer

    tmp = tmp_path_factory.mktemp("headlines")
    with LocalHTTPServer() as server:
        base = server.url("")
        server.route("/feed.xml", body=rss(base.rstrip("/")),
                     headers={"Content-Type": "application/rss+xml"})
        # every article page is a 404 (no route)
        settings = load_settings(
            None, store={"url": f"sqlite:///{tmp / 'records.db'}"},
            feeds=[{"url": server.url("/feed.xml"), "name": "Headline Wire"}],
            fetch={"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
            channels={"console": {"type": "console"}},
            watches=[{"name": "taiwan", "description": "Chinese military drills around Taiwan.",
                      "keywords": ["Taiwan"], "min_score": 0.3, "channels": ["console"]}])
        report = run_once(settings, force=True)
        yield settings, report, base.rstrip("/")


def article(store, base: str, path: str) -> dict:
    found = store.get_article(article_id_for(f"{base}{path}"))
    assert found is not None
    return found


def test_headline_only_items_become_articles(headline_run):
    settings, report, base = headline_run
    assert report.errors == {}
    assert report.stages["extract"].get("http-404") == len(HEADLINES)
    store = open_store(settings.store.url)
    try:
        for path, title in HEADLINES.items():
            found = article(store, base, path)
            assert found["text_source"] == "title"
            assert found["text"] == title and found["version"] == 1
            assert found["story_id"] is not None
        with store.engine.connect() as conn:
            embedded = conn.execute(select(schema.article_versions.c.embedding)).scalars().all()
        assert len(embedded) == len(HEADLINES) and all(embedded)
    finally:
        store.close()


def test_headlines_of_one_event_share_a_story_and_others_do_not(headline_run):
    settings, _, base = headline_run
    store = open_store(settings.store.url)
    try:
        one, two, other = (article(store, base, p)["story_id"] for p in HEADLINES)
    finally:
        store.close()
    assert one == two != other


def test_headline_only_articles_are_searchable_scored_and_alerted(headline_run):
    settings, _, base = headline_run
    hits = run_search(settings, "Penghu", mode="keyword").hits
    drills = {article_id_for(f"{base}{p}") for p in list(HEADLINES)[:2]}
    assert drills <= {hit.article_id for hit in hits}
    store = open_store(settings.store.url)
    try:
        with store.engine.connect() as conn:
            scored = conn.execute(select(schema.article_watch_scores.c.article_id,
                                         schema.article_watch_scores.c.relevant)).all()
            alerts = conn.execute(select(schema.alerts.c.story_id)).scalars().all()
        drill_story = article(store, base, "/news/drills-1")["story_id"]
    finally:
        store.close()
    assert drills <= {aid for aid, _ in scored}
    assert alerts == [drill_story]  # once per story, for the event, not the orchard


def test_a_page_readable_later_is_a_new_version_of_the_same_article(headline_run, tmp_path):
    from pipeline.extract import extract_one
    from pipeline.fetcher import Fetcher
    from tests.support.httpserver import LocalHTTPServer

    settings, _, base = headline_run
    store = open_store(settings.store.url)
    try:
        stored = article(store, base, "/news/orchard")
        body = ("<html><head><title>Giant pumpkin</title></head><body><article><h1>Vermont "
                "orchard festival crowns record-breaking giant pumpkin</h1>"
                + "<p>The fictional grower weighed the pumpkin twice before the judges. </p>" * 8
                + "</article></body></html>")
        with LocalHTTPServer() as server:
            server.route("/page", body=body, headers={"Content-Type": "text/html"})
            with Fetcher(settings.fetch) as fetcher:
                outcome = extract_one(store, fetcher, settings,
                                      {**stored, "link": server.url("/page")})
        assert (outcome.outcome, outcome.text_source, outcome.version) == (
            "ok", "page", "new-version")
        after = store.get_article(stored["article_id"])
        assert after["version"] == 2 and after["text_source"] == "page"
        assert [v["text_source"] for v in store.article_versions(stored["article_id"])] == [
            "title", "page"]
    finally:
        store.close()
