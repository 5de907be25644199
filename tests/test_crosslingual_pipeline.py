"""Issue 18's acceptance test: a Chinese article and two English articles of one event, served
by a local HTTP server and read through the whole pipeline, form one story and alert the
Taiwan watch once, with the Chinese headline and its language in the alert. Fictional text
(tests/support/crosslingual.py)."""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import format_datetime
from html import escape

import pytest

from pipeline.query import run_search
from pipeline.records import open_store
from pipeline.relevance import default_taiwan_watch
from pipeline.run import run_once
from pipeline.settings import load_settings
from pipeline.urls import article_id_for
from tests.support.crosslingual import DRILL_EN, DRILL_ZH, UNRELATED

pytestmark = pytest.mark.slow


def _page(record: dict) -> str:
    lang = record["language"]
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in record["text"].split(". "))
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
            f"<title>{escape(record['title'])}</title>"
            f'<meta property="article:published_time" content="{record["published_at"]}">'
            f"</head><body><article><h1>{escape(record['title'])}</h1>{paragraphs}"
            "</article></body></html>")


def _feed(base: str, language: str, records: list[dict]) -> str:
    items = "".join(
        f"<item><title>{escape(r['title'])}</title><link>{base}/{r['id']}.html</link>"
        f"<guid>{base}/{r['id']}.html</guid><description>{escape(r['text'][:80])}"
        "</description><pubDate>"
        + format_datetime(datetime.fromisoformat(r["published_at"].replace("Z", "+00:00")))
        + "</pubDate></item>" for r in records)
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Fictional</title><link>{base}/</link><description>test</description>"
            f"<language>{language}</language>{items}</channel></rss>")


def test_a_chinese_and_two_english_reports_are_one_story_that_alerts_once(http_server, tmp_path):
    base = http_server.url("").rstrip("/")
    english = [*DRILL_EN, UNRELATED[0]]
    chinese = [DRILL_ZH, UNRELATED[1]]
    for record in english + chinese:
        http_server.route(f"/{record['id']}.html", body=_page(record),
                          headers={"Content-Type": "text/html; charset=utf-8"})
    # the two English reports come from two outlets (their records' sources), one feed each
    http_server.route("/en.xml", body=_feed(base, "en", [DRILL_EN[0], UNRELATED[0]]),
                      headers={"Content-Type": "application/rss+xml"})
    http_server.route("/en2.xml", body=_feed(base, "en", DRILL_EN[1:]),
                      headers={"Content-Type": "application/rss+xml"})
    http_server.route("/zh.xml", body=_feed(base, "zh-tw", chinese),
                      headers={"Content-Type": "application/rss+xml"})
    outbox = tmp_path / "outbox.jsonl"
    settings = load_settings(
        "config/newswatch.yaml", data_dir=str(tmp_path),
        store={"url": f"sqlite:///{tmp_path / 'records.db'}"},
        feeds=[{"url": f"{base}/en.xml", "name": "Fictional English"},
               {"url": f"{base}/en2.xml", "name": "Fictional English 2"},
               {"url": f"{base}/zh.xml", "name": "Fictional Chinese"}],
        fetch={"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
        extraction={"min_text_chars": 40},
        channels={"outbox": {"type": "file", "path": str(outbox)}},
        watches=[{**default_taiwan_watch().model_dump(), "channels": ["outbox"]}])
    assert settings.multilingual.enabled  # the shipped default

    first = run_once(settings, force=True)
    assert first.errors == {}
    sent_first = outbox.read_text(encoding="utf-8")
    second = run_once(settings, force=True)
    assert second.errors == {}
    assert outbox.read_text(encoding="utf-8") == sent_first, "the second run sent something"

    store = open_store(settings.store.url)
    try:
        article = {r["id"]: store.get_article(article_id_for(f"{base}/{r['id']}.html"))
                   for r in english + chinese}
    finally:
        store.close()
    assert article["zh-drill"]["language"] == "zh-Hant"
    assert article["en-drill-1"]["language"] == "en"
    story = article["zh-drill"]["story_id"]
    assert story and {article[r["id"]]["story_id"] for r in DRILL_EN} == {story}
    assert len({story, article["en-bakery"]["story_id"], article["zh-market"]["story_id"]}) == 3

    alerts = [json.loads(line) for line in sent_first.splitlines()]
    assert [(a["story_id"], a["kind"]) for a in alerts] == [(story, "new")]
    assert alerts[0]["originals"] == [{"title": DRILL_ZH["title"],
                                       "language": "Chinese (Traditional)"}]
    assert alerts[0]["article_count"] == 3

    hits = run_search(settings, "共機", mode="keyword").hits
    assert [h.article_id for h in hits] == [article["zh-drill"]["article_id"]]
