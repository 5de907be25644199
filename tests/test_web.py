"""The web app over a store built by the real pipeline from the bundled sample site."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.records import open_store
from pipeline.run import run_once
from pipeline.sample_site import SampleSite
from pipeline.settings import Settings, load_settings
from pipeline.web.app import create_app, highlight, safe_url
from tests.support.factories import add_alert, add_article, add_story

SITE = Path("examples/sample_site")
SEED_TITLES = (
    "Qin Gang tells US envoy stabilising ties is top priority",
    "China says US ties at lowest point as Qin meets Blinken",
)
HOSTILE_TITLE = "<script>alert(1)</script>"
HOSTILE_ID = "hostile0000000000000000000000001"


def _insert_hostile_article(settings: Settings) -> None:
    """An article whose feed-supplied fields try to inject markup and script links."""
    store = open_store(settings.store.url)
    now = datetime(2023, 6, 20, 8, 0, tzinfo=UTC)
    try:
        add_article(
            store, HOSTILE_ID, url="javascript:alert(2)", link="javascript:alert(2)",
            source="<b>Evil</b> Source", title=HOSTILE_TITLE,
            text="The zanzibarquux <img src=x onerror=alert(3)> payload was here. " * 5,
            content_hash="hostile", published_at=now, story_id="hostilestory")
        add_story(store, "hostilestory", title=HOSTILE_TITLE, at=now,
                  sources=["<b>Evil</b> Source"])
    finally:
        store.close()


def build_store(directory: Path) -> Settings:
    """Run the pipeline over the sample site into ``directory``; return its settings."""
    with SampleSite(SITE) as site:
        settings = load_settings(
            "examples/demo.yaml",
            store={"url": f"sqlite:///{directory / 'newswatch.db'}"},
            feeds=[{"url": u} for u in site.feed_urls()],
            fetch={"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
        )
        report = run_once(settings, stages=("fetch", "extract", "stories", "index"),
                          force=True)
    assert report.errors == {}, report.errors
    _insert_hostile_article(settings)
    run_once(settings, stages=("index",))  # story ids and the hostile article reach the index
    return settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_store(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def client(settings: Settings) -> TestClient:
    with TestClient(create_app(settings, default_mode="keyword")) as test_client:
        yield test_client


def seed_story_id(client: TestClient) -> str:
    data = client.get("/api/search", params={"q": "Qin Gang", "by_story": "true"}).json()
    by_title = {h["title"]: h["story_id"] for h in data["hits"]}
    assert set(SEED_TITLES) <= set(by_title), by_title
    story_ids = {by_title[t] for t in SEED_TITLES}
    assert len(story_ids) == 1 and None not in story_ids, by_title
    return story_ids.pop()


# ---- JSON API --------------------------------------------------------------------------------


def test_api_search_shape_and_grouping(client: TestClient) -> None:
    response = client.get("/api/search", params={"q": "Qin Gang", "by_story": "1",
                                                 "mode": "keyword", "limit": "10"})
    assert response.status_code == 200
    data = response.json()
    assert data["total"] >= 2
    hit = data["hits"][0]
    assert set(hit) >= {"article_id", "title", "url", "source", "published_at", "snippet",
                        "score", "story_id"}
    assert "[[" in hit["snippet"]
    story_id = seed_story_id(client)
    group = next(g for g in data["groups"] if g["story_id"] == story_id)
    assert {h["title"] for h in group["hits"]} >= set(SEED_TITLES)


def test_api_search_without_grouping_has_no_groups(client: TestClient) -> None:
    data = client.get("/api/search", params={"q": "Qin"}).json()
    assert "groups" not in data and data["hits"]


def test_api_search_filters_by_source(client: TestClient) -> None:
    data = client.get("/api/search", params={"q": "Qin Gang"}).json()
    source = data["hits"][0]["source"]
    filtered = client.get("/api/search", params={"q": "Qin Gang", "source": source}).json()
    assert filtered["hits"] and {h["source"] for h in filtered["hits"]} == {source}
    sources = sorted({h["source"] for h in data["hits"]})
    both = client.get("/api/search", params=[("q", "Qin Gang")] + [("source", s) for s in sources])
    assert {h["source"] for h in both.json()["hits"]} == set(sources)
    none = client.get("/api/search", params={"q": "Qin Gang", "until": "2000-01-01"}).json()
    assert none["hits"] == []


@pytest.mark.parametrize("params, word", [
    ({"q": "Qin", "since": "bogus"}, "since"),
    ({"q": "Qin", "until": "next tuesday"}, "until"),
    ({"q": "Qin", "limit": "lots"}, "limit"),
    ({"q": "Qin", "limit": "0"}, "limit"),
    ({"q": "Qin", "mode": "psychic"}, "mode"),
    ({"q": "Qin", "by_story": "maybe"}, "by_story"),
    ({"q": ""}, "empty"),
])
def test_api_bad_params_are_400_with_one_line(client: TestClient, params: dict[str, str],
                                              word: str) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == 400
    message = response.json()["error"]
    assert word in message and "\n" not in message


def test_api_stories_bad_since_is_400(client: TestClient) -> None:
    response = client.get("/api/stories", params={"since": "yesterday-ish"})
    assert response.status_code == 400
    assert "since" in response.json()["error"]


def test_api_stories_and_story(client: TestClient) -> None:
    story_id = seed_story_id(client)
    stories = client.get("/api/stories").json()["stories"]
    assert story_id in {s["story_id"] for s in stories}
    for s in stories:
        assert {"story_id", "title", "first_seen_at", "last_seen_at", "article_count"} <= set(s)
    assert client.get("/api/stories", params={"since": "2000-01-01"}).status_code == 200
    story = client.get(f"/api/stories/{story_id}").json()
    titles = {a["title"] for a in story["articles"]}
    assert set(SEED_TITLES) <= titles
    for article in story["articles"]:
        assert {"title", "source", "url", "published_at"} <= set(article)
        assert article["url"].startswith("http://127.0.0.1:")
    assert story["first_seen_at"] and story["last_seen_at"]
    assert client.get("/api/stories/nope").status_code == 404


def test_api_feeds_health(client: TestClient, settings: Settings) -> None:
    feeds = client.get("/api/feeds").json()["feeds"]
    assert len(feeds) == len(settings.feeds)
    for feed in feeds:
        assert feed["state"] == "ok"
        assert feed["last_outcome"] == "ok"
        assert feed["consecutive_failures"] == 0
        assert feed["articles"] > 0
        assert feed["outcomes"].get("ok", 0) >= 1


def test_api_alerts(client: TestClient) -> None:
    data = client.get("/api/alerts").json()
    assert set(data) == {"available", "alerts"}
    assert isinstance(data["alerts"], list)
    assert client.get("/api/alerts", params={"since": "whenever"}).status_code == 400


# ---- pages -----------------------------------------------------------------------------------


def test_search_page_groups_results_by_story(client: TestClient) -> None:
    story_id = seed_story_id(client)
    html = client.get("/", params={"q": "Qin Gang", "mode": "keyword"}).text
    sections = re.findall(r'<section class="story-group" data-story-id="([^"]*)">(.*?)</section>',
                          html, re.S)
    seed = [body for sid, body in sections if sid == story_id]
    assert len(seed) == 1
    for title in SEED_TITLES:
        assert title in seed[0]
    assert f'href="/stories/{story_id}"' in seed[0]
    assert "<mark>Qin</mark>" in html


def test_home_page_lists_recent_stories(client: TestClient) -> None:
    story_id = seed_story_id(client)
    response = client.get("/")
    assert response.status_code == 200
    assert f'href="/stories/{story_id}"' in response.text
    assert 'href="/static/style.css"' in response.text


def test_story_page_lists_every_article(client: TestClient) -> None:
    story_id = seed_story_id(client)
    response = client.get(f"/stories/{story_id}")
    assert response.status_code == 200
    for title in SEED_TITLES:
        assert title in response.text
    assert "First seen" in response.text and "Last seen" in response.text
    assert 'href="http://127.0.0.1:' in response.text
    assert client.get("/stories/nope").status_code == 404


def test_feeds_page(client: TestClient, settings: Settings) -> None:
    html = client.get("/feeds").text
    assert html.count('<tr class="feed state-ok">') == len(settings.feeds)


def test_bad_since_on_page_is_400(client: TestClient) -> None:
    response = client.get("/", params={"q": "Qin", "since": "bogus"})
    assert response.status_code == 400
    assert "not a date or duration" in response.text


def test_static_css_is_served(client: TestClient) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200 and "mark" in response.text


def test_feed_text_is_escaped(client: TestClient) -> None:
    pages = [
        client.get("/", params={"q": "zanzibarquux"}).text,
        client.get("/stories/hostilestory").text,
        client.get("/").text,
    ]
    for html in pages:
        assert HOSTILE_TITLE not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "javascript:" not in html
        assert "<b>Evil</b>" not in html
    search = pages[0]
    assert "<img" not in search
    assert "&lt;img src=x onerror=alert(3)&gt;" in search
    assert "<mark>zanzibarquux</mark>" in search


def test_highlight_escapes_before_marking() -> None:
    assert str(highlight("a <b>[[x]]</b> & [[y<z]]")) == (
        "a &lt;b&gt;<mark>x</mark>&lt;/b&gt; &amp; <mark>y&lt;z</mark>")
    assert str(highlight(None)) == ""


def test_safe_url_allows_only_http() -> None:
    assert safe_url("https://example.com/a") == "https://example.com/a"
    assert safe_url("javascript:alert(1)") is None
    assert safe_url(" JAVASCRIPT:alert(1)") is None
    assert safe_url("data:text/html,x") is None
    assert safe_url(None) is None


# ---- mounted under a prefix (as in the Airflow API server) ------------------------------------


def test_works_mounted_under_a_prefix(settings: Settings) -> None:
    parent = FastAPI()
    parent.mount("/newswatch", create_app(settings, default_mode="keyword"))
    with TestClient(parent) as mounted:
        html = mounted.get("/newswatch/", params={"q": "Qin Gang"}).text
        links = re.findall(r'(?:href|action)="(/[^"]*)"', html)
        assert links and all(link.startswith("/newswatch/") for link in links), links
        story_links = [link for link in links if link.startswith("/newswatch/stories/")]
        assert story_links
        story = mounted.get(story_links[0])
        assert story.status_code == 200
        assert all(link.startswith("/newswatch/")
                   for link in re.findall(r'(?:href|action)="(/[^"]*)"', story.text))
        assert mounted.get("/newswatch/static/style.css").status_code == 200
        assert mounted.get("/newswatch/feeds").status_code == 200
        assert mounted.get("/newswatch/api/feeds").json()["feeds"]
        bad = mounted.get("/newswatch/api/search", params={"q": "x", "since": "bogus"})
        assert bad.status_code == 400 and "since" in bad.json()["error"]


def test_watch_filter_keeps_only_alerted_stories(client: TestClient, settings: Settings) -> None:
    story_id = seed_story_id(client)
    html = client.get("/", params={"q": "Qin Gang"}).text
    assert '<select name="watch">' in html and '<option value="taiwan">' in html
    assert 'data-story-id="hostilestory"' in client.get("/", params={"q": "zanzibarquux"}).text

    store = open_store(settings.store.url)
    now = datetime.now(UTC)
    try:
        add_alert(store, watch="taiwan", story_id=story_id, kind="new", window_key="once",
                  status="sent", title=SEED_TITLES[0], score=0.9, at=now)
    finally:
        store.close()

    kept = client.get("/", params={"q": "Qin Gang", "watch": "taiwan"}).text
    ids = set(re.findall(r'data-story-id="([^"]*)"', kept))
    assert ids == {story_id}
    dropped = client.get("/", params={"q": "zanzibarquux", "watch": "taiwan"}).text
    assert "data-story-id" not in dropped
    alerts = client.get("/api/alerts", params={"watch": "taiwan"}).json()
    assert alerts["available"] and alerts["alerts"][0]["story_id"] == story_id
