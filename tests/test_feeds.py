"""The feed stage end to end: local HTTP server, real Fetcher, SQLite store."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from pipeline import fetch as feeds_module
from pipeline.fetch import (
    FeedReport,
    backoff_delay_s,
    cache_max_age_s,
    fetch_feed,
    fetch_feeds,
    group_feeds_by_host,
)
from pipeline.fetcher import Fetcher
from pipeline.records import FeedRow
from pipeline.settings import FeedConfig, FetchSettings, Settings
from pipeline.urls import article_id_for
from tests.support.httpserver import RecordedRequest, Response

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
RUN = "run-1"


def rss(*items: tuple[str, str], title: str = "Example News", ttl: int | None = None) -> str:
    body = "".join(f"<item><title>{t}</title><link>{link}</link><description>About {t}"
                   f"</description></item>" for t, link in items)
    ttl_tag = f"<ttl>{ttl}</ttl>" if ttl is not None else ""
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
            f"{ttl_tag}{body}</channel></rss>")


TWO_ITEMS = rss(("Alpha", "https://example.com/a"), ("Beta", "https://example.com/b"))


def make_settings(server, *paths: str, **fetch: object) -> Settings:
    values = {"timeout_s": 1.0, "deadline_s": 2.0, "allow_private_networks": True,
              "backoff_base_s": 60.0, "backoff_max_s": 3600.0, "dead_after_failures": 3,
              "revalidate_every": 0, "max_redirects": 2}
    values.update(fetch)
    return Settings(feeds=[FeedConfig(url=server.url(p), name=f"Feed {p}") for p in paths],
                    fetch=FetchSettings(**values))


def run(store, settings: Settings, *, now: datetime = NOW, run_id: str = RUN,
        **kwargs) -> list[FeedReport]:
    store.sync_feeds(settings.enabled_feeds())
    return fetch_feeds(store, settings, run_id, now=now, **kwargs)


def feed_row(store, url: str) -> FeedRow:
    row = store.find_feed(url)
    assert row is not None
    return row


# ---- first fetch, conditional GET, repeats -------------------------------------------------


def test_first_fetch_stores_entries_and_feed_state(http_server, store):
    http_server.route("/feed", body=TWO_ITEMS, headers={
        "ETag": '"v1"', "Last-Modified": "Sat, 31 May 2025 10:00:00 GMT",
        "Content-Type": "application/rss+xml"})
    settings = make_settings(http_server, "/feed")
    [report] = run(store, settings)
    assert (report.outcome, report.status, report.entries, report.new) == ("ok", 200, 2, 2)
    assert report.name == "Feed /feed" and not report.died and report.error is None
    row = feed_row(store, http_server.url("/feed"))
    assert (row.etag, row.last_modified) == ('"v1"', "Sat, 31 May 2025 10:00:00 GMT")
    assert row.title == "Example News"
    assert (row.fetch_count, row.consecutive_failures, row.last_outcome) == (1, 0, "ok")
    assert row.last_fetched_at == NOW and row.last_success_at == NOW
    assert row.next_fetch_at == NOW  # no ttl, no min interval: due again next run
    assert store.run_counts(RUN) == {"fetch": {"ok": 1}, "entries": {"new": 2}}
    assert store.feed_outcome_counts() == {row.feed_id: {"ok": 1}}
    article = store.get_article(article_id_for("https://example.com/a"))
    assert article["source"] == "Feed /feed" and article["entry_title"] == "Alpha"


def test_conditional_get_304_stores_nothing_new(http_server, store):
    def handler(request: RecordedRequest) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status=304)
        return Response(body=TWO_ITEMS, headers={
            "ETag": '"v1"', "Last-Modified": "Sat, 31 May 2025 10:00:00 GMT"})

    http_server.route("/feed", handler)
    settings = make_settings(http_server, "/feed")
    run(store, settings)
    [report] = run(store, settings, now=NOW + timedelta(minutes=10), run_id="run-2")
    assert (report.outcome, report.status, report.entries, report.new) == (
        "not-modified", 304, 0, 0)
    second = http_server.requests("/feed")[1].headers
    assert second["if-none-match"] == '"v1"'
    assert second["if-modified-since"] == "Sat, 31 May 2025 10:00:00 GMT"
    assert store.counts()["articles"] == 2
    assert store.run_counts("run-2") == {"fetch": {"not-modified": 1}}
    row = feed_row(store, http_server.url("/feed"))
    assert (row.etag, row.fetch_count, row.last_outcome) == ('"v1"', 2, "not-modified")


def _many_304_feeds(http_server, n: int) -> Settings:
    """``n`` feeds read once; afterwards each answers 304, odd ones with a new ETag."""
    for k in range(n):
        def handler(request: RecordedRequest, k: int = k) -> Response:
            if request.headers.get("if-none-match"):
                return Response(status=304, headers={"ETag": f'"w{k}"'} if k % 2 else {})
            return Response(body=rss((f"Item {k}", f"https://example.com/{k}")),
                            headers={"ETag": f'"v{k}"'})

        http_server.route(f"/feed{k}", handler)
    return make_settings(http_server, *(f"/feed{k}" for k in range(n)))


def test_many_304s_are_recorded_in_batches_like_one_by_one(http_server, store, monkeypatch):
    monkeypatch.setattr(feeds_module.UnchangedFeeds, "size", 4)  # several batches + a rest
    settings = _many_304_feeds(http_server, 10)
    run(store, settings)
    later = NOW + timedelta(minutes=10)
    reports = run(store, settings, now=later, run_id="run-2")
    assert {r.outcome for r in reports} == {"not-modified"} and len(reports) == 10
    assert store.run_counts("run-2") == {"fetch": {"not-modified": 10}}
    counts = store.feed_outcome_counts()
    for k in range(10):
        row = feed_row(store, http_server.url(f"/feed{k}"))
        assert row.etag == (f'"w{k}"' if k % 2 else f'"v{k}"')  # refreshed validators kept
        assert (row.fetch_count, row.last_outcome, row.consecutive_failures) == (
            2, "not-modified", 0)
        assert row.last_fetched_at == later and row.last_success_at == later
        assert row.next_fetch_at == later
        assert counts[row.feed_id] == {"ok": 1, "not-modified": 1}


def test_a_batch_that_cannot_be_written_falls_back_to_one_by_one(http_server, store,
                                                                 monkeypatch):
    settings = _many_304_feeds(http_server, 3)
    run(store, settings)

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full for a moment")

    monkeypatch.setattr(store, "record_fetches", broken)
    reports = run(store, settings, now=NOW + timedelta(minutes=10), run_id="run-2")
    assert [r.outcome for r in reports] == ["not-modified"] * 3
    assert store.run_counts("run-2") == {"fetch": {"not-modified": 3}}
    assert all(feed_row(store, http_server.url(f"/feed{k}")).fetch_count == 2 for k in range(3))


def test_second_identical_fetch_stores_nothing_new(http_server, store):
    http_server.route("/feed", body=TWO_ITEMS)  # no validators: always a full 200
    settings = make_settings(http_server, "/feed")
    run(store, settings)
    [report] = run(store, settings, run_id="run-2")
    assert (report.outcome, report.entries, report.new, report.updated) == ("ok", 2, 0, 0)
    assert store.run_counts("run-2")["entries"] == {"unchanged": 2}
    assert store.counts()["articles"] == 2


def test_changed_entry_is_updated(http_server, store):
    http_server.route("/feed", [Response(body=TWO_ITEMS), Response(body=rss(
        ("Alpha (corrected)", "https://example.com/a"), ("Beta", "https://example.com/b")))])
    settings = make_settings(http_server, "/feed")
    run(store, settings)
    [report] = run(store, settings, run_id="run-2")
    assert (report.new, report.updated) == (0, 1)
    assert store.run_counts("run-2")["entries"] == {"entry-updated": 1, "unchanged": 1}


def test_every_nth_fetch_revalidates_without_validators(http_server, store):
    http_server.route("/feed", body=TWO_ITEMS, headers={"ETag": '"v1"'})
    settings = make_settings(http_server, "/feed", revalidate_every=3)
    for _ in range(3):
        run(store, settings)
    sent = [r.headers.get("if-none-match") for r in http_server.requests("/feed")]
    assert sent == [None, '"v1"', None]  # fetch 3 of every 3 is unconditional


def test_same_article_in_two_feeds_is_stored_once(http_server, store):
    http_server.route("/one", body=rss(("Shared", "https://example.com/shared?utm_source=a")))
    http_server.route("/two", body=rss(("Shared", "https://example.com/shared")))
    settings = make_settings(http_server, "/one", "/two", concurrency=1)
    reports = run(store, settings)
    assert [r.new for r in reports] == [1, 0]
    assert store.run_counts(RUN)["entries"] == {"new": 1, "linked": 1}
    assert store.counts()["articles"] == 1
    article = store.get_article(article_id_for("https://example.com/shared"))
    assert sorted(article["feeds"]) == sorted(r.feed_id for r in reports)


# ---- scheduling ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retry_after"), [
    (429, "120"), (503, "Sun, 01 Jun 2025 12:02:00 GMT")])
def test_retry_after_sets_next_fetch_and_skips_until_then(http_server, store, status,
                                                          retry_after, monkeypatch):
    monkeypatch.setattr("pipeline.fetcher.datetime", _FrozenDatetime)  # HTTP-date vs NOW
    http_server.route("/feed", status=status, headers={"Retry-After": retry_after})
    settings = make_settings(http_server, "/feed")
    [report] = run(store, settings)
    assert report.outcome == "rate-limited" and report.status == status
    assert report.next_fetch_at == NOW + timedelta(seconds=120)
    row = feed_row(store, http_server.url("/feed"))
    assert row.next_fetch_at == NOW + timedelta(seconds=120)
    assert row.consecutive_failures == 0  # the server scheduled us: not a failure
    [later] = run(store, settings, now=NOW + timedelta(seconds=60), run_id="run-2")
    assert later.outcome == "skipped-not-due"
    assert len(http_server.requests("/feed")) == 1
    assert store.run_counts("run-2") == {"fetch": {"skipped-not-due": 1}}
    [due] = run(store, settings, now=NOW + timedelta(seconds=121), run_id="run-3")
    assert due.outcome == "rate-limited"


def test_rate_limited_without_retry_after_backs_off(http_server, store):
    http_server.route("/feed", status=503)
    settings = make_settings(http_server, "/feed")
    [report] = run(store, settings)
    assert report.outcome == "rate-limited"
    assert feed_row(store, http_server.url("/feed")).consecutive_failures == 1
    assert NOW + timedelta(seconds=48) <= report.next_fetch_at <= NOW + timedelta(seconds=72)


def test_rss_ttl_is_a_minimum_interval(http_server, store):
    http_server.route("/feed", body=rss(("A", "https://example.com/a"), ttl=30))
    settings = make_settings(http_server, "/feed")
    [report] = run(store, settings)
    assert report.next_fetch_at == NOW + timedelta(minutes=30)
    assert feed_row(store, http_server.url("/feed")).ttl_s == 1800
    [early] = run(store, settings, now=NOW + timedelta(minutes=10), run_id="run-2")
    assert early.outcome == "skipped-not-due"
    [forced] = run(store, settings, now=NOW + timedelta(minutes=10), run_id="run-3", force=True)
    assert forced.outcome == "ok"


def test_cache_control_max_age_beats_a_shorter_ttl(http_server, store):
    http_server.route("/feed", body=rss(("A", "https://example.com/a"), ttl=30),
                      headers={"Cache-Control": "public, max-age=3600"})
    [report] = run(store, make_settings(http_server, "/feed"))
    assert report.next_fetch_at == NOW + timedelta(hours=1)


def test_min_interval_and_ttl_cap(http_server, store):
    http_server.route("/short", body=rss(("A", "https://example.com/a"), ttl=1))
    http_server.route("/huge", body=rss(("B", "https://example.com/b"), ttl=10_000_000))
    settings = make_settings(http_server, "/short", "/huge", min_interval_s=600,
                             max_retry_after_s=7200)
    short, huge = run(store, settings)
    assert short.next_fetch_at == NOW + timedelta(seconds=600)
    assert huge.next_fetch_at == NOW + timedelta(seconds=7200)


def test_not_modified_keeps_the_stored_ttl(http_server, store):
    http_server.route("/feed", [Response(body=rss(("A", "https://e.com/a"), ttl=20),
                                         headers={"ETag": '"x"'}),
                                Response(status=304)])
    settings = make_settings(http_server, "/feed")
    run(store, settings)
    [report] = run(store, settings, now=NOW + timedelta(minutes=30), run_id="run-2")
    assert report.outcome == "not-modified"
    assert report.next_fetch_at == NOW + timedelta(minutes=50)


# ---- failures, backoff, death --------------------------------------------------------------


def test_failures_back_off_exponentially_then_the_feed_dies(http_server, store):
    http_server.route("/feed", status=500)
    settings = make_settings(http_server, "/feed")  # base 60 s, dead after 3
    url = http_server.url("/feed")
    delays = []
    for attempt in range(1, 4):
        [report] = run(store, settings, force=True, run_id=f"run-{attempt}")
        assert report.outcome == "http-error" and report.status == 500
        row = feed_row(store, url)
        assert row.consecutive_failures == attempt
        delays.append((report.next_fetch_at - NOW).total_seconds())
        assert report.died == (attempt == 3)
    assert 48 <= delays[0] <= 72 and 96 <= delays[1] <= 144 and 192 <= delays[2] <= 288
    row = feed_row(store, url)
    assert row.dead and row.last_error == "HTTP 500 Internal Server Error"
    assert store.feed_outcome_counts()[row.feed_id] == {"http-error": 3}

    [skipped] = run(store, settings, force=True, run_id="run-4")
    assert skipped.outcome == "skipped-dead"
    assert len(http_server.requests("/feed")) == 3

    http_server.route("/feed", body=TWO_ITEMS)
    assert store.enable_feed(url)
    [revived] = run(store, settings, run_id="run-5")
    assert revived.outcome == "ok" and revived.new == 2
    row = feed_row(store, url)
    assert not row.dead and row.consecutive_failures == 0


def test_success_resets_the_failure_count(http_server, store):
    http_server.route("/feed", [Response(status=500), Response(body=TWO_ITEMS)])
    settings = make_settings(http_server, "/feed")
    run(store, settings)
    run(store, settings, force=True, run_id="run-2")
    assert feed_row(store, http_server.url("/feed")).consecutive_failures == 0


def test_malformed_feed_is_a_parse_error_and_others_still_succeed(http_server, store):
    http_server.route("/good1", body=rss(("A", "https://example.com/a")))
    http_server.route("/bad", body="<html><body>Not a feed <p>at all</body></html>",
                      headers={"Content-Type": "text/html"})
    http_server.route("/good2", body=rss(("B", "https://example.com/b")))
    settings = make_settings(http_server, "/good1", "/bad", "/good2")
    reports = run(store, settings)
    assert [r.outcome for r in reports] == ["ok", "parse-error", "ok"]
    assert reports[1].error and reports[1].status == 200
    assert store.run_counts(RUN)["fetch"] == {"ok": 2, "parse-error": 1}
    assert feed_row(store, http_server.url("/bad")).consecutive_failures == 1


def test_unexpected_exception_is_contained(http_server, store, monkeypatch):
    http_server.route("/good", body=rss(("A", "https://example.com/a")))
    http_server.route("/boom", body=rss(("B", "https://example.com/b")))
    real_parse = feeds_module.parse_feed

    def flaky_parse(content, url, headers, **options):
        if url.endswith("/boom"):
            raise RuntimeError("parser bug")
        return real_parse(content, url, headers, **options)

    monkeypatch.setattr(feeds_module, "parse_feed", flaky_parse)
    reports = run(store, make_settings(http_server, "/good", "/boom"))
    assert [r.outcome for r in reports] == ["ok", "error"]
    assert "RuntimeError: parser bug" in reports[1].error
    row = feed_row(store, http_server.url("/boom"))
    assert (row.last_outcome, row.consecutive_failures, row.fetch_count) == ("error", 1, 1)
    assert store.run_counts(RUN)["fetch"] == {"ok": 1, "error": 1}


def test_blocked_feed_address_is_a_failure(http_server, store):
    http_server.route("/feed", body=TWO_ITEMS)
    [report] = run(store, make_settings(http_server, "/feed", allow_private_networks=False))
    assert report.outcome == "blocked-address"
    assert http_server.requests() == []
    assert feed_row(store, http_server.url("/feed")).consecutive_failures == 1


def test_timeout_and_oversize_are_failures(http_server, store):
    http_server.route("/slow", delay_s=2, body=TWO_ITEMS)
    http_server.route("/huge", body=TWO_ITEMS + " " * 5000)
    settings = make_settings(http_server, "/slow", "/huge", timeout_s=0.3, max_bytes=1000)
    assert [r.outcome for r in run(store, settings)] == ["timeout", "too-large"]


# ---- selection, callbacks, disabled --------------------------------------------------------


def test_feed_ids_filter_order_and_callback(http_server, store):
    for path in ("/a", "/b", "/c"):
        http_server.route(path, body=rss((path, f"https://example.com{path}")))
    settings = make_settings(http_server, "/a", "/b", "/c")
    store.sync_feeds(settings.enabled_feeds())
    ids = [f.feed_id for f in store.list_feeds()]
    done: list[int] = []
    reports = fetch_feeds(store, settings, RUN, now=NOW, feed_ids=[ids[2], ids[0]],
                          on_feed_done=lambda r: done.append(r.feed_id))
    assert [r.feed_id for r in reports] == [ids[0], ids[2]]
    assert sorted(done) == sorted([ids[0], ids[2]])
    assert http_server.requests("/b") == []


def test_feeds_not_in_settings_are_ignored(http_server, store):
    http_server.route("/a", body=TWO_ITEMS)
    http_server.route("/old", body=TWO_ITEMS)
    store.sync_feeds(make_settings(http_server, "/old").feeds)
    assert [r.url for r in run(store, make_settings(http_server, "/a"))] == [
        http_server.url("/a")]
    assert http_server.requests("/old") == []


def test_disabled_feed_is_skipped(http_server, store):
    http_server.route("/feed", body=TWO_ITEMS)
    settings = make_settings(http_server, "/feed")
    run(store, settings)
    settings.feeds[0].enabled = False  # disabled in config after it was synced as enabled
    [report] = run(store, settings, run_id="run-2")
    assert report.outcome == "skipped-disabled"
    assert len(http_server.requests("/feed")) == 1


def test_no_feeds_means_no_reports(store):
    assert fetch_feeds(store, Settings(), RUN, now=NOW) == []


def test_fetch_feed_with_a_shared_fetcher(http_server, store):
    http_server.route("/feed", body=TWO_ITEMS)
    settings = make_settings(http_server, "/feed")
    [row] = store.sync_feeds(settings.enabled_feeds())
    with Fetcher(settings.fetch) as fetcher:
        report = fetch_feed(store, fetcher, row, settings, RUN, NOW)
        again = fetch_feeds(store, settings, "run-2", now=NOW, fetcher=fetcher)
        assert fetcher.get(http_server.url("/feed")).ok  # still open: the caller owns it
    assert (report.outcome, report.new, again[0].new) == ("ok", 2, 0)


# ---- pure helpers --------------------------------------------------------------------------


def test_backoff_delay_formula():
    fetch = FetchSettings(backoff_base_s=300, backoff_max_s=3000)
    rng = random.Random(7)
    for failures, base in ((1, 300), (2, 600), (3, 1200), (4, 2400), (5, 3000), (200, 3000)):
        delay = backoff_delay_s(failures, fetch, rng)
        assert 0.8 * base <= delay <= 1.2 * base
    assert backoff_delay_s(1, FetchSettings(backoff_base_s=0, min_interval_s=90)) == 90


@pytest.mark.parametrize(("header", "seconds"), [
    ("max-age=600", 600), ("public, max-age=60, must-revalidate", 60), ('max-age="30"', 30),
    ("no-cache", 0), ("private, no-store", 0), ("s-maxage=100", None), ("public", None)])
def test_cache_max_age(header, seconds):
    assert cache_max_age_s({"cache-control": header}) == seconds
    assert cache_max_age_s({}) is None


def _row(feed_id: int, url: str) -> FeedRow:
    return FeedRow(feed_id=feed_id, url=url, name=None, source=None, title=None, enabled=True,
                   dead=False, etag=None, last_modified=None, ttl_s=None, next_fetch_at=None,
                   last_fetched_at=None, last_success_at=None, last_outcome=None,
                   last_status=None, last_error=None, consecutive_failures=0, fetch_count=0)


def test_group_feeds_by_host_keeps_hosts_together_and_balances():
    feeds = [_row(1, "https://a.com/1"), _row(2, "https://A.com/2"), _row(3, "https://a.com/3"),
             _row(4, "https://b.com/1"), _row(5, "https://b.com/2"), _row(6, "https://c.com/x"),
             _row(7, "http://d.com:8080/y")]
    batches = group_feeds_by_host(feeds, 3)
    assert len(batches) == 3
    assert sorted(i for batch in batches for i in batch) == [1, 2, 3, 4, 5, 6, 7]
    assert [1, 2, 3] in batches  # one host, one batch
    assert any({4, 5} <= set(batch) for batch in batches)
    assert max(map(len, batches)) - min(map(len, batches)) <= 1
    assert group_feeds_by_host(feeds, 3) == batches  # deterministic


def test_group_feeds_by_host_edges():
    feeds = [_row(1, "https://a.com/1"), _row(2, "https://b.com/1")]
    assert group_feeds_by_host([], 4) == []
    assert group_feeds_by_host(feeds, 1) == [[1, 2]]
    assert group_feeds_by_host(feeds, 0) == [[1, 2]]
    assert sorted(group_feeds_by_host(feeds, 10)) == [[1], [2]]  # never empty batches


class _FrozenDatetime(datetime):
    """datetime whose now() is NOW, so an HTTP-date Retry-After is measured from NOW."""

    @classmethod
    def now(cls, tz=None):
        return NOW if tz is None else NOW.astimezone(tz)


def test_configured_source_names_the_outlet(http_server, store):
    http_server.route("/feed", body=TWO_ITEMS)
    settings = make_settings(http_server, "/feed")
    settings.feeds[0].source = "Example Outlet"
    run(store, settings)
    assert store.get_article(article_id_for("https://example.com/a"))["source"] == \
        "Example Outlet"
