"""Hostile feed input never breaks a stage: odd dates, control characters, one bad entry,
huge feeds, slow hosts. Local HTTP servers and fictional feeds only."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import event, update

from pipeline import schema
from pipeline import stories as stories_module
from pipeline.extract import extract_pending
from pipeline.fetch import fetch_feeds
from pipeline.hostqueue import HOST_BUDGET, STAGE_BUDGET, Deferred, run_per_host
from pipeline.models import FeedEntry
from pipeline.records import open_store
from pipeline.sanitize import has_control, plausible_date, strip_control
from pipeline.settings import FeedConfig, FetchSettings, Settings
from pipeline.stories import assign_stories
from pipeline.urls import article_id_for
from tests.support.httpserver import Response

RUN = "run-bad"
ITEM = ("<item><title>{title}</title><link>{link}</link><description>{text}</description>"
        "{date}</item>")


def rss(*items: str) -> str:
    return ('<?xml version="1.0"?><rss version="2.0"><channel><title>Fictional Gazette'
            f"</title>{''.join(items)}</channel></rss>")


def item(title: str, link: str, text: str = "A fictional report.", pub: str | None = None
         ) -> str:
    date = f"<pubDate>{pub}</pubDate>" if pub else ""
    return ITEM.format(title=title, link=link, text=text, date=date)


def settings_for(urls: list[str], **fetch: object) -> Settings:
    values: dict[str, object] = {"timeout_s": 2.0, "deadline_s": 3.0,
                                 "allow_private_networks": True, "revalidate_every": 0}
    values.update(fetch)
    return Settings(feeds=[FeedConfig(url=u) for u in urls], fetch=FetchSettings(**values),
                    extraction={"fetch_pages": True, "min_text_chars": 10})


def fetch(store, settings: Settings, **kwargs):
    store.sync_feeds(settings.enabled_feeds())
    return fetch_feeds(store, settings, RUN, force=True, **kwargs)


# ---- dates ---------------------------------------------------------------------------------

def test_out_of_range_dates_are_dropped_and_counted(http_server, store):
    http_server.route("/feed.xml", body=rss(
        item("Year one", "https://news.example/one", pub="Mon, 01 Jan 0001 00:00:00 GMT"),
        item("Year 9999", "https://news.example/far", pub="Fri, 31 Dec 9999 00:00:00 GMT"),
        item("Fine", "https://news.example/fine", pub="Mon, 02 Jun 2025 10:00:00 GMT")),
        headers={"Content-Type": "application/rss+xml"})
    [report] = fetch(store, settings_for([http_server.url("/feed.xml")]))
    assert report.outcome == "ok" and report.new == 3
    dates = {slug: store.get_article(article_id_for(f"https://news.example/{slug}"))
             ["published_at"] for slug in ("one", "far", "fine")}
    assert dates["one"] is None and dates["far"] is None
    assert dates["fine"].year == 2025
    assert store.run_counts(RUN)["entries"]["date-dropped"] == 2


def test_plausible_date_range():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert plausible_date(datetime(1989, 12, 31, tzinfo=UTC), now) is None
    assert plausible_date(datetime(2026, 1, 3, tzinfo=UTC), now) is None
    assert plausible_date(datetime(1995, 5, 5), now) == datetime(1995, 5, 5, tzinfo=UTC)


def fake_encode(texts, *_args, **_kwargs):
    """Deterministic unit vectors from the text (no model needed)."""
    out = []
    for text in texts:
        rng = np.random.default_rng(abs(hash(text)) % (2 ** 32))
        vector = rng.normal(size=16).astype(np.float32)
        out.append(vector / np.linalg.norm(vector))
    return np.stack(out)


def test_stories_stage_survives_a_stored_year_one_date(store, monkeypatch):
    """Records written before dates were checked still hold year 1: the stage must cope."""
    monkeypatch.setattr(stories_module, "encode_for",
                        lambda _settings, texts: fake_encode(texts))
    entries = [FeedEntry(link=f"https://news.example/{n}", guid=None, title=f"Report {n}",
                         summary="", content="", published_at=None, updated_at=None)
               for n in ("old", "new")]
    store.sync_feeds([FeedConfig(url="https://news.example/feed")])
    feed_id = store.list_feeds()[0].feed_id
    store.upsert_entries(feed_id, "Gazette", entries)
    for entry in entries:
        store.save_article_text(article_id_for(entry.link), title=entry.title,
                                text=f"{entry.title} says something fictional.",
                                text_source="feed", status="ok", outcome="ok")
    with store.engine.begin() as conn:
        conn.execute(update(schema.articles)
                     .where(schema.articles.c.article_id == article_id_for(entries[0].link))
                     .values(published_at=datetime(1, 1, 1, tzinfo=UTC)))
    settings = Settings()
    counts = assign_stories(store, settings, RUN)  # raised OverflowError before
    assert counts.get("new-story", 0) + counts.get("joined-story", 0) == 2
    assert all(store.get_article(article_id_for(e.link))["story_id"] for e in entries)


def test_stories_stage_isolates_an_article_that_raises(store, monkeypatch):
    monkeypatch.setattr(stories_module, "encode_for",
                        lambda _settings, texts: fake_encode(texts))
    original = stories_module.story_features

    def exploding(title, text):
        if title == "Report bad":
            raise RuntimeError("boom")
        return original(title, text)

    monkeypatch.setattr(stories_module, "story_features", exploding)
    store.sync_feeds([FeedConfig(url="https://news.example/feed")])
    feed_id = store.list_feeds()[0].feed_id
    for slug in ("good", "bad"):
        entry = FeedEntry(link=f"https://news.example/{slug}", guid=None,
                          title=f"Report {slug}", summary="", content="", published_at=None,
                          updated_at=None)
        store.upsert_entry(feed_id, "Gazette", entry)
        store.save_article_text(article_id_for(entry.link), title=entry.title,
                                text="Fictional text.", text_source="feed", status="ok",
                                outcome="ok")
    counts = assign_stories(store, Settings(), RUN)
    assert counts["item-error"] == 1 and counts["new-story"] == 1
    assert store.get_article(article_id_for("https://news.example/good"))["story_id"]
    assert store.get_article(article_id_for("https://news.example/bad"))["story_id"] is None


# ---- control characters ----------------------------------------------------------------------

def test_control_characters_in_a_feed_lose_no_entry(http_server, store):
    body = rss(
        item("Null\x00 title", "https://news.example/nul", text="Text &#1; with &#x1b; refs"),
        item("\x1b[31mRed\x1b[0m \x1b]8;;https://evil.example/\x07link\x1b]8;;\x07 title",
             "https://news.example/ansi", text="<p>Para &#x0b; one</p><p>two\x1b[2J</p>"),
        item("Plain", "https://news.example/plain"))
    http_server.route("/feed.xml", body=body.encode("utf-8"),
                      headers={"Content-Type": "application/rss+xml; charset=utf-8"})
    [report] = fetch(store, settings_for([http_server.url("/feed.xml")]))
    assert report.outcome == "ok" and report.new == 3
    for slug, title in (("nul", "Null title"), ("ansi", "Red link title"), ("plain", "Plain")):
        article = store.get_article(article_id_for(f"https://news.example/{slug}"))
        assert article["entry_title"] == title
        assert not has_control(article["entry_summary"]), article["entry_summary"]
    assert "two" in store.get_article(article_id_for("https://news.example/ansi"))[
        "entry_summary"]


def test_strip_control_removes_escape_sequences_and_keeps_text():
    text = "a\x1b[1;31mb\x1b[0m c\x1b]8;;http://x.example\x1b\\d\x1b]8;;\x1b\\ e\x9b2Jf\x07g\u202eh"
    assert strip_control(text) == "ab cd efgh"
    assert strip_control("line\none\ttab") == "line\none\ttab"
    assert strip_control("line\none\ttab", keep_newlines=False) == "line one tab"


# ---- one bad entry, big feeds ------------------------------------------------------------------

def test_one_entry_that_cannot_be_stored_costs_only_itself(http_server, store, monkeypatch):
    http_server.route("/feed.xml", body=rss(*(item(f"Item {n}", f"https://news.example/{n}")
                                              for n in range(5))))
    original = store._write_entries

    def flaky(conn, feed_id, source, entries, now):
        if any(entry.link.endswith("/3") for entry in entries):
            raise ValueError("cannot store this one")
        return original(conn, feed_id, source, entries, now)

    monkeypatch.setattr(store, "_write_entries", flaky)
    [report] = fetch(store, settings_for([http_server.url("/feed.xml")]))
    assert report.outcome == "ok" and report.new == 4 and report.item_errors == 1
    assert store.run_counts(RUN)["entries"] == {"new": 4, "item-error": 1}
    feed_id = store.list_feeds()[0].feed_id
    assert store.feed_outcome_counts()[feed_id]["item-error"] == 1
    assert store.get_article(article_id_for("https://news.example/3")) is None


def test_batched_entries_have_the_outcomes_of_one_by_one(store):
    store.sync_feeds([FeedConfig(url="https://a.example/f"), FeedConfig(url="https://b.example/f")])
    a, b = (f.feed_id for f in store.list_feeds())

    def entry(slug: str, summary: str = "Same.") -> FeedEntry:
        return FeedEntry(link=f"https://news.example/{slug}", guid=None, title=slug.title(),
                         summary=summary, content="", published_at=None, updated_at=None)

    # b lists them first; a (the lower-numbered feed, which speaks for an article's feed
    # text: Store._owning_feeds) then edits one
    store.upsert_entries(b, "B", [entry("kept"), entry("edited")])
    results = store.upsert_entries(a, "A", [
        entry("kept"), entry("edited", "Changed."), entry("fresh"), entry("fresh"),
        FeedEntry(link=None, guid=None, title="No link", summary="", content="",
                  published_at=None, updated_at=None)])
    assert [outcome for outcome, _ in results] == [
        "linked", "entry-updated", "new", "unchanged", "no-link"]
    assert store.upsert_entries(a, "A", [entry("kept")]) == [("unchanged", None)]
    assert store.upsert_entries(b, "B", [entry("edited")]) == [("unchanged", None)]
    edited = store.get_article(article_id_for("https://news.example/edited"))
    assert edited["entry_summary"] == "Changed." and edited["extraction_status"] == "pending"
    assert sorted(store.get_article(article_id_for("https://news.example/kept"))["feeds"]) \
        == [a, b]


def test_a_feeds_entries_are_written_in_one_transaction(http_server, store):
    http_server.route("/feed.xml", body=rss(*(item(f"Item {n}", f"https://news.example/{n}")
                                              for n in range(300))))
    transactions = []
    event.listen(store.engine, "begin", lambda conn: transactions.append(1))
    [report] = fetch(store, settings_for([http_server.url("/feed.xml")]))
    assert report.new == 300
    assert len(transactions) < 20  # was one per entry (300+)


def test_a_large_feed_is_streamed_and_stores_what_feedparser_would(http_server, tmp_path,
                                                                   monkeypatch):
    """Past ``fetch.fast_parse_min_bytes`` the feed stage reads the feed with the streaming
    parser (not feedparser), and the stored articles are the same as feedparser's."""
    import feedparser

    items = [item(f"Item {n} &amp; more", f"/news/{n}", f"&lt;p&gt;Text {n}&lt;/p&gt;",
                  "Mon, 02 Jun 2025 10:00:00 GMT") for n in range(200)]
    http_server.route("/feed.xml", body=rss(*items))
    url = http_server.url("/feed.xml")

    def stored(threshold: int | None) -> list[tuple]:
        db = open_store("sqlite:///" + str(tmp_path / f"t{threshold}.db"))
        [report] = fetch(db, settings_for([url], fast_parse_min_bytes=threshold))
        assert report.outcome == "ok" and report.new == 200
        a = schema.articles
        with db.engine.connect() as conn:
            rows = conn.execute(a.select().order_by(a.c.article_id)).mappings().all()
        db.close()
        return [(r["article_id"], r["url"], r["entry_title"], r["entry_summary"],
                 r["published_at"]) for r in rows]

    with_feedparser = stored(None)
    calls = []
    real_parse = feedparser.parse
    monkeypatch.setattr(feedparser, "parse", lambda *a, **k: calls.append(1) or real_parse(
        *a, **k))
    streamed = stored(1000)  # the feed is ~20 kB
    assert calls == []  # feedparser was not asked
    assert streamed == with_feedparser
    assert with_feedparser[0][2].startswith("Item ") and "&" in with_feedparser[0][2]


# ---- time budgets and per-host fairness ----------------------------------------------------------

def test_stage_budget_leaves_the_rest_due_for_the_next_run(http_server, store):
    http_server.route("/slow.xml", Response(body=rss(item("Slow", "https://news.example/s")),
                                            delay_s=0.6))
    urls = [http_server.url(f"/slow.xml?n={n}") for n in range(6)]
    settings = settings_for(urls, stage_budget_s=0.5, per_host_concurrency=1)
    started = time.monotonic()
    reports = fetch(store, settings)
    assert time.monotonic() - started < 3.0  # not 6 x 0.6 s
    outcomes = [r.outcome for r in reports]
    assert outcomes.count(STAGE_BUDGET) >= 4 and "ok" in outcomes
    assert store.run_counts(RUN)["fetch"][STAGE_BUDGET] == outcomes.count(STAGE_BUDGET)
    for report in reports:
        if report.outcome == STAGE_BUDGET:  # untouched: no failure, still due
            row = next(f for f in store.list_feeds() if f.feed_id == report.feed_id)
            assert row.consecutive_failures == 0 and row.next_fetch_at is None


def test_a_slow_host_neither_holds_the_run_nor_starves_the_others(http_server, store):
    http_server.route("/drip.xml", Response(body=rss(item("Drip", "https://news.example/d")),
                                            delay_s=0.5))
    http_server.route("/fast.xml", body=rss(item("Fast", "https://news.example/f")))
    slow = [http_server.url(f"/drip.xml?n={n}") for n in range(8)]
    fast = [http_server.url(f"/fast.xml?n={n}").replace("127.0.0.1", "localhost")
            for n in range(8)]
    settings = settings_for(slow + fast, concurrency=4, per_host_concurrency=2,
                            host_budget_s=1.2)
    finished: list[tuple[str, float]] = []
    started = time.monotonic()
    reports = fetch(store, settings,
                    on_feed_done=lambda r: finished.append((r.url, time.monotonic() - started)))
    by_url = {r.url: r.outcome for r in reports}
    assert all(by_url[u] == "ok" for u in fast)
    assert [by_url[u] for u in slow].count(HOST_BUDGET) >= 3
    fast_done = max(t for u, t in finished if u in fast)
    assert fast_done < 1.0  # the fast host did not queue behind the slow one


def test_extract_stage_budget_leaves_articles_pending(http_server, store):
    page = ("<html><head><title>Page</title></head><body><article><p>"
            + "A fictional article body. " * 20 + "</p></article></body></html>")
    http_server.route("/page", Response(body=page, headers={"Content-Type": "text/html"},
                                        delay_s=0.5))
    links = [http_server.url(f"/page?n={n}") for n in range(6)]
    http_server.route("/feed.xml", body=rss(*(item(f"Item {n}", link)
                                              for n, link in enumerate(links))))
    settings = settings_for([http_server.url("/feed.xml")], per_host_concurrency=1)
    fetch(store, settings)
    settings.extraction.stage_budget_s = 0.4
    counts = extract_pending(store, settings, RUN)
    assert counts[STAGE_BUDGET] >= 4
    assert len(store.articles_to_extract(100, max_attempts=3)) == counts[STAGE_BUDGET]


def test_run_per_host_is_fair_and_defers_by_budget():
    lock = threading.Lock()
    order: list[str] = []

    def work(item: tuple[str, int]) -> str:
        time.sleep(0.05 if item[0] == "slow" else 0.0)
        with lock:
            order.append(item[0])
        return item[0]

    items = [("slow", n) for n in range(10)] + [("fast", n) for n in range(10)]
    deferred: Deferred[tuple[str, int]] = Deferred()
    done = list(run_per_host(items, lambda i: i[0], work, concurrency=3, per_host=1,
                             host_budget_s=0.12, deferred=deferred))
    assert sum(1 for i, _ in done if i[0] == "fast") == 10
    assert deferred.counts() == {HOST_BUDGET: 10 - sum(1 for i, _ in done if i[0] == "slow")}
    assert order.index("fast") < 2 and order[:11].count("fast") == 10


def test_page_text_with_escape_sequences_is_stored_clean(http_server, store):
    page = ("<html><head><title>\x1b[31mRed\x1b[0m page</title></head><body><article><p>"
            + "Body with \x1b]8;;https://evil.example/\x07a link\x1b]8;;\x07 inside. " * 10
            + "</p></article></body></html>")
    http_server.route("/page", body=page, headers={"Content-Type": "text/html"})
    http_server.route("/feed.xml", body=rss(item("Entry", http_server.url("/page"))))
    settings = settings_for([http_server.url("/feed.xml")])
    fetch(store, settings)
    assert extract_pending(store, settings, RUN).get("ok") == 1
    article = store.get_article(article_id_for(http_server.url("/page")))
    assert not has_control(article["title"]) and not has_control(article["text"])
    assert "a link inside" in article["text"]


def test_an_unterminated_escape_sequence_loses_no_text():
    from pipeline.sanitize import strip_control_bytes

    assert strip_control("before \x1b]8;;http://x.example and after") == \
        "before 8;;http://x.example and after"
    assert strip_control("a\x9dstray C1 byte then text") == "astray C1 byte then text"
    assert strip_control_bytes(b"<rss>\x1b]0;title never ends <item/></rss>") == \
        b"<rss>]0;title never ends <item/></rss>"


def test_link_text_for_a_title_gives_way_to_the_summarys_first_sentence(http_server, store):
    # A real feed titles every item "More »"; here the page is gone, so the feed text is all.
    gone = http_server.url("/gone")  # no route: 404
    http_server.route("/feed.xml", body=rss(item(
        "More »", gone, "Fictional mercenaries expand across three continents. More follows.")))
    settings = settings_for([http_server.url("/feed.xml")])
    fetch(store, settings)
    assert extract_pending(store, settings, RUN).get("http-404") == 1
    article = store.get_article(article_id_for(gone))
    assert article["title"] == "Fictional mercenaries expand across three continents."
    assert article["text_source"] == "feed"
