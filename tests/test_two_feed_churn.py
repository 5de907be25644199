"""One URL listed by two feeds with different headlines and summaries stays one version: the
feeds do not rewrite its feed text in turn, and its page is not downloaded again."""

from __future__ import annotations

import pytest

from pipeline.records import open_store
from pipeline.run import run_once
from pipeline.settings import load_settings
from pipeline.urls import article_id_for

STAGES = ("fetch", "extract")
PAGE = ("<html><head><title>Lighthouse keeper retires</title></head><body><article>"
        "<h1>Lighthouse keeper retires after forty years</h1>"
        + "<p>The fictional keeper of Gull Point handed over the keys on Friday. </p>" * 8
        + "</article></body></html>")


def feed(base: str, title: str, summary: str) -> str:
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title} feed</title>'
            f"<link>{base}/</link><item><title>{title}</title><link>{base}/keeper</link>"
            f"<description>{summary}</description>"
            "<pubDate>Fri, 04 Oct 2024 08:00:00 GMT</pubDate></item></channel></rss>")


@pytest.mark.parametrize("fetch_pages", [True, False])
def test_one_url_in_two_feeds_stays_one_version_over_runs(http_server, tmp_path, fetch_pages):
    base = http_server.url("").rstrip("/")
    rss = {"Content-Type": "application/rss+xml"}
    http_server.route("/a.xml", body=feed(base, "Keeper retires after 40 years",
                                          "Gull Point's keeper hands over the keys."),
                      headers=rss)
    http_server.route("/b.xml", body=feed(base, "Gull Point lighthouse gets a new keeper",
                                          "A new keeper takes over at Gull Point."),
                      headers=rss)
    http_server.route("/keeper", body=PAGE, headers={"Content-Type": "text/html"})
    settings = load_settings(
        None, store={"url": f"sqlite:///{tmp_path / 'records.db'}"},
        feeds=[{"url": http_server.url("/a.xml")}, {"url": http_server.url("/b.xml")}],
        fetch={"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
        extraction={"fetch_pages": fetch_pages})
    for _ in range(4):
        report = run_once(settings, stages=STAGES, force=True)
        assert report.errors == {}
    store = open_store(settings.store.url)
    try:
        article_id = article_id_for(f"{base}/keeper")
        article = store.get_article(article_id)
        versions = store.article_versions(article_id)
    finally:
        store.close()
    assert len(article["feeds"]) == 2
    assert len(versions) == 1 and article["version"] == 1
    assert article["text_source"] == ("page" if fetch_pages else "feed")
    assert len(http_server.requests("/keeper")) == (1 if fetch_pages else 0)
