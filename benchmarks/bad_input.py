"""Bounded runs under hostile input: a huge feed, and a host that drips bytes.

    .venv/bin/python benchmarks/bad_input.py big-feed [--entries 50000]
    .venv/bin/python benchmarks/bad_input.py drip-host [--drip-articles 500 --fast-articles 50]

``big-feed`` serves one fictional RSS feed of N entries from a local server and times, in one
process and one run: parsing it (with feedparser, then with the shipped defaults, which read
a feed this large with the streaming parser of ``pipeline/feedfast.py``), storing its
entries one transaction per entry (the old ``Store.upsert_entry`` loop, skipped with
``--no-per-entry-store``) and in one transaction (``Store.upsert_entries``, what the
stage does now), each into a fresh SQLite store, and the whole fetch stage (fetch + parse +
store) with the shipped defaults. The per-entry/batched ratio is the figure to trust on a
shared machine; seconds are wall time.

``drip-host`` queues N articles on a host whose pages send one byte a second for ever (so
each request runs into ``fetch.deadline_s``) and M articles on a fast host, then runs the
extraction stage with the shipped defaults (budgets included) and reports its wall time,
when the fast host's articles were done, and what was left pending. Without the budgets the
drip host alone would hold the stage for N x deadline_s / per_host_concurrency.

Everything is generated and served on 127.0.0.1 (``fetch.allow_private_networks`` is the only
setting changed, so the local servers can be reached). Results: benchmarks/results/
bad_input.json (figures only).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.extract import extract_pending
from pipeline.feedparse import parse_feed
from pipeline.fetch import fetch_feeds
from pipeline.models import FeedEntry
from pipeline.records import open_store
from pipeline.settings import FeedConfig, Settings

RESULTS = Path(__file__).parent / "results" / "bad_input.json"
PAGE = ("<html><head><title>Fictional report {n}</title></head><body><article><h1>Fictional "
        "report {n}</h1>" + "<p>The harbour council of an invented town met again today and "
        "agreed on a timetable for the new bridge, report number {n}.</p>" * 6
        + "</article></body></html>")


def big_feed(entries: int) -> bytes:
    """About 140 bytes an entry, as the 7 MB, 50,000-entry feed of the issue."""
    items = "".join(
        f"<item><title>Fictional item {n}</title><link>https://big.example/i/{n}</link>"
        f"<description>Invented item {n}.</description></item>" for n in range(entries))
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Big '
            f"Fictional Feed</title>{items}</channel></rss>").encode()


class _Handler(BaseHTTPRequestHandler):
    feed = b""
    stop = threading.Event()

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:  # http.server's name
        if self.path.startswith("/feed.xml"):
            self._send(self.feed, "application/rss+xml")
        elif self.path.startswith("/drip/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                while not self.stop.wait(1.0):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            except OSError:
                pass
        else:
            self._send(PAGE.format(n=self.path.rsplit("/", 1)[-1]).encode(), "text/html")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def settings_for(db: Path, feeds: list[str]) -> Settings:
    return Settings(store={"url": f"sqlite:///{db}"}, feeds=[FeedConfig(url=u) for u in feeds],
                    fetch={"allow_private_networks": True})


def run_big_feed(entries: int, per_entry_store: bool = True) -> dict[str, Any]:
    body = big_feed(entries)
    _Handler.feed = body
    server = serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/feed.xml"
    result: dict[str, Any] = {"entries": entries, "feed_bytes": len(body)}
    with tempfile.TemporaryDirectory() as tmp:
        headers = {"content-type": "application/rss+xml"}
        started, cpu = time.perf_counter(), time.process_time()
        parse_feed(body, url, headers, fast_min_bytes=None)  # feedparser, the old path
        result["parse_feedparser_s"] = round(time.perf_counter() - started, 2)
        result["parse_feedparser_cpu_s"] = round(time.process_time() - cpu, 2)
        started, cpu = time.perf_counter(), time.process_time()
        parsed = parse_feed(body, url, headers,
                            fast_min_bytes=Settings().fetch.fast_parse_min_bytes)
        result["parse_s"] = round(time.perf_counter() - started, 2)
        result["parse_cpu_s"] = round(time.process_time() - cpu, 2)
        result["parse_cpu_ratio"] = round(result["parse_feedparser_cpu_s"]
                                          / max(result["parse_cpu_s"], 1e-9), 1)

        def store_with(name: str, write) -> float:
            store = open_store(f"sqlite:///{Path(tmp) / name}.db")
            store.sync_feeds([FeedConfig(url=url)])
            feed_id = store.list_feeds()[0].feed_id
            begin = time.perf_counter()
            write(store, feed_id, parsed.entries)
            elapsed = time.perf_counter() - begin
            store.close()
            return round(elapsed, 2)

        def per_entry(store, feed_id: int, items: list[FeedEntry]) -> None:
            for entry in items:
                store.upsert_entry(feed_id, "Big", entry)

        if per_entry_store:
            result["store_per_entry_s"] = store_with("per_entry", per_entry)
        result["store_one_transaction_s"] = store_with(
            "batched", lambda store, feed_id, items: store.upsert_entries(feed_id, "Big", items))
        if per_entry_store:
            result["store_ratio"] = round(result["store_per_entry_s"]
                                          / max(result["store_one_transaction_s"], 1e-9), 1)
        settings = settings_for(Path(tmp) / "stage.db", [url])
        store = open_store(settings.store.url)
        store.sync_feeds(settings.enabled_feeds())
        begin = time.perf_counter()
        [report] = fetch_feeds(store, settings, "bench", force=True)
        result["fetch_stage_s"] = round(time.perf_counter() - begin, 2)
        result["fetch_stage_outcome"] = report.outcome
        result["fetch_stage_new"] = report.new
        # The stage with feedparser for every feed: the same fetch and store.
        result["fetch_stage_feedparser_estimate_s"] = round(
            result["fetch_stage_s"] - result["parse_s"] + result["parse_feedparser_s"], 2)
        store.close()
    server.shutdown()
    return result


def run_drip_host(drip_articles: int, fast_articles: int) -> dict[str, Any]:
    server = serve()
    port = server.server_address[1]
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp) / "drip.db", [])
        store = open_store(settings.store.url)
        store.sync_feeds([FeedConfig(url="https://feeds.example/mixed")])
        feed_id = store.list_feeds()[0].feed_id
        links = ([f"http://127.0.0.1:{port}/drip/{n}" for n in range(drip_articles)]
                 + [f"http://localhost:{port}/fast/{n}" for n in range(fast_articles)])
        store.upsert_entries(feed_id, "Mixed", [
            FeedEntry(link=link, guid=None, title=f"Item {n}", summary="Feed summary.",
                      content="", published_at=datetime(2025, 6, 2, tzinfo=UTC),
                      updated_at=None) for n, link in enumerate(links)])
        fast_done: list[float] = []
        begin = time.perf_counter()

        def done(outcome) -> None:
            if outcome.outcome == "ok":
                fast_done.append(time.perf_counter() - begin)

        counts = extract_pending(store, settings, "bench", on_article_done=done)
        elapsed = time.perf_counter() - begin
        pending = len(store.articles_to_extract(10_000, settings.extraction.max_attempts))
        store.close()
    _Handler.stop.set()
    server.shutdown()
    fetch = settings.fetch
    return {
        "drip_articles": drip_articles, "fast_articles": fast_articles,
        "deadline_s": fetch.deadline_s, "per_host_concurrency": fetch.per_host_concurrency,
        "host_budget_s": fetch.host_budget_s,
        "extract_stage_budget_s": settings.extraction.stage_budget_s,
        "extract_stage_s": round(elapsed, 1),
        "fast_host_done_s": round(max(fast_done), 1) if fast_done else None,
        "counts": counts, "left_pending": pending,
        "without_budgets_estimate_s": drip_articles * fetch.deadline_s
        / fetch.per_host_concurrency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["big-feed", "drip-host"])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--no-per-entry-store", action="store_true",
                        help="big-feed: skip timing the old one-transaction-per-entry store "
                        "(minutes at 50,000 entries)")
    parser.add_argument("--drip-articles", type=int, default=500)
    parser.add_argument("--fast-articles", type=int, default=50)
    args = parser.parse_args()
    print(f"running {args.case} ...", flush=True)
    figures = (run_big_feed(args.entries, not args.no_per_entry_store)
               if args.case == "big-feed"
               else run_drip_host(args.drip_articles, args.fast_articles))
    print(json.dumps(figures, indent=2))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous = results.get(args.case) or {}
    if args.case == "big-feed" and "store_per_entry_s" not in figures:
        # Not re-timed: keep the earlier run's per-entry figures, marked as such.
        earlier = previous.get("earlier_run") or {
            k: previous[k] for k in ("store_per_entry_s", "store_one_transaction_s",
                                     "store_ratio", "measured_at") if k in previous}
        if earlier:
            figures["earlier_run"] = earlier
    results[args.case] = {**figures, "machine": platform.machine(),
                          "python": platform.python_version(),
                          "measured_at": datetime.now(UTC).strftime("%Y-%m-%d")}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
