"""End-to-end `newswatch run` over feeds the benchmark serves itself on 127.0.0.1.

    .venv/bin/python benchmarks/end_to_end.py site --articles 1000 [--feeds 20]
    .venv/bin/python benchmarks/end_to_end.py not-modified --feeds 1000
    .venv/bin/python benchmarks/end_to_end.py backlog \
        --data ../shared/data/stream/rss-2023-06-10-to-25.jsonl.gz [--items 40000]

* ``site``: N generated articles (fictional text, realistic HTML pages with boilerplate)
  spread over feeds; one run downloads and extracts every page (the per-run download cap is
  raised to N) and embeds, groups, indexes and scores them.
* ``not-modified``: F feeds already read once; on the timed run 90 % answer 304.
* ``backlog``: the first ``--items`` items of a real feed archive (JSONL.gz: link, title,
  description, date_published, source), served as one RSS feed per source, feed text only,
  through ``newswatch run`` until nothing is pending. Only figures are written.

Each timed run is a separate ``newswatch run --json`` process (process start to exit, model
load included); its peak RSS comes from ``wait4``. Seconds per stage come from the run's
own per-chunk stage timings. Results: ``benchmarks/results/pipeline-<mode>.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
WATCH = {"name": "Taiwan", "keywords": ["Taiwan", "Taipei", "Taiwan Strait"],
         "channels": ["file"], "min_score": 0.5}
WORDS = ["council", "harbour", "bridge", "repairs", "festival", "lantern", "orchard", "frost",
         "tram", "library", "museum", "glacier", "ferry", "budget", "vote", "mayor", "school",
         "river", "market", "storm", "flood", "winter", "station", "airport", "factory",
         "union", "strike", "court", "ruling", "election", "minister"]


class FeedServer:
    """Serves ``routes`` (path -> (body, content type)); answers 304 to a matching
    If-None-Match for paths in ``etags``."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.etags: dict[str, str] = {}
        routes, etags = self.routes, self.etags

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = routes.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = etags.get(self.path)
                if etag and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", body[1])
                self.send_header("Content-Length", str(len(body[0])))
                if etag:
                    self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body[0])

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rss(title: str, items: list[dict[str, str]]) -> bytes:
    parts = [f"<item><title>{escape(i['title'])}</title><link>{escape(i['link'])}</link>"
             f"<guid>{escape(i['link'])}</guid><pubDate>{i['date']}</pubDate>"
             f"<description>{escape(i['summary'])}</description></item>" for i in items]
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>{escape(title)}</title><link>http://example.invalid/</link>"
            f"{''.join(parts)}</channel></rss>").encode()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def article_page(title: str, paragraphs: list[str]) -> bytes:
    nav = "".join(f"<li><a href='/section/{w}'>{w}</a></li>" for w in WORDS[:12])
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}"
            f"</title><meta property='og:title' content='{escape(title)}'></head><body>"
            f"<header><nav><ul>{nav}</ul></nav></header><main><article><h1>{escape(title)}"
            f"</h1><p class='byline'>By A. Writer</p>{body}</article></main><aside>"
            f"<h2>Most read</h2><ul>{nav}</ul></aside><footer>© Fictional Press</footer>"
            f"</body></html>").encode()


def run_newswatch(config: Path, force: bool = False) -> dict[str, Any]:
    """One `newswatch run --json` process: wall seconds, peak RSS (wait4) and its summary."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        command = [str(ROOT / ".venv/bin/newswatch"), "run", "--json", "-c", str(config),
                   *(["--force"] if force else [])]
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env=env,
                                cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode()
    summary = json.loads(text) if text.strip().startswith("{") else {"raw": text[-500:]}
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "exit": os.waitstatus_to_exitcode(status), "summary": summary}


def write_config(folder: Path, feeds: list[str], **sections: Any) -> Path:
    data: dict[str, Any] = {
        "data_dir": str(folder / "data"),
        "store": {"url": f"sqlite:///{folder / 'records.db'}"},
        "feeds": [{"url": url, "name": f"feed-{n}"} for n, url in enumerate(feeds)],
        # One local host stands in for many: the per-host limit is raised to the overall
        # default (8 requests in flight), everything else is as shipped.
        "fetch": {"allow_private_networks": True, "per_host_concurrency": 8,
                  "revalidate_every": 0},
        "watches": [WATCH],
        "channels": {"file": {"type": "file", "path": str(folder / "alerts.jsonl")}},
    }
    if os.environ.get("NEWSWATCH_EMBEDDING__MODEL_CACHE") is None:
        data["embedding"] = {"model_cache": str(ROOT / "data" / "models")}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = folder / "newswatch.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def per_stage(summary: dict[str, Any]) -> dict[str, float]:
    """Seconds per stage, summed over the run's chunks (the run records them)."""
    return dict(summary.get("timings") or {})


def bench_site(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    rng = random.Random(7)
    server = FeedServer()
    start = datetime(2024, 3, 1, tzinfo=UTC)
    by_feed: dict[int, list[dict[str, str]]] = defaultdict(list)
    for n in range(args.articles):
        title = sentence(rng, 8)[:-1]
        paragraphs = [sentence(rng, rng.randint(18, 40)) for _ in range(rng.randint(5, 12))]
        path = f"/news/{n}.html"
        server.routes[path] = (article_page(title, paragraphs), "text/html; charset=utf-8")
        by_feed[n % args.feeds].append({"title": title, "link": server.base + path,
                                        "date": format_datetime(start + timedelta(minutes=n)),
                                        "summary": paragraphs[0]})
    feeds = []
    for n, items in by_feed.items():
        server.routes[f"/feed/{n}.xml"] = (rss(f"feed {n}", items), "application/rss+xml")
        feeds.append(server.base + f"/feed/{n}.xml")
    try:
        # The per-run download cap is raised to N, and the per-host time budget lifted: one
        # local host stands in for the feeds' many sites.
        config = write_config(folder, feeds, extraction={"max_articles_per_run": args.articles},
                              fetch={"host_budget_s": None})
        result = run_newswatch(config)
    finally:
        server.close()
    stages = result["summary"].get("stages", {})
    # Articles that went all the way through (indexed), not N: a run budget or a deferral
    # may leave some for the next run, and those must not count towards the rate.
    done = int(stages.get("index", {}).get("indexed", 0))
    return {"articles": args.articles, "feeds": args.feeds, **result,
            "articles_done": done, "articles_per_s": round(done / result["wall_s"], 2),
            "left_pending": pending_after(folder / "records.db"),
            "stories": stages.get("stories", {}), "stage_s": per_stage(result["summary"])}


def bench_not_modified(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    server = FeedServer()
    start = datetime(2024, 3, 1, tzinfo=UTC)
    feeds = []
    for n in range(args.feeds):
        items = [{"title": f"Item {n}-{k} on the {WORDS[(n + k) % len(WORDS)]}",
                  "link": f"{server.base}/news/{n}-{k}.html",
                  "date": format_datetime(start + timedelta(minutes=k)),
                  "summary": f"The {WORDS[k % len(WORDS)]} of town {n} met again on day {k}."}
                 for k in range(3)]
        path = f"/feed/{n}.xml"
        server.routes[path] = (rss(f"feed {n}", items), "application/rss+xml")
        server.etags[path] = f'"v{n}"'
        feeds.append(server.base + path)
    try:
        config = write_config(folder, feeds, extraction={"fetch_pages": False},
                              fetch={"min_interval_s": 0})
        first = run_newswatch(config)
        # 10 % of the feeds change (new ETag, one new item); the rest answer 304.
        for n in range(0, args.feeds, 10):
            path = f"/feed/{n}.xml"
            server.etags[path] = f'"v{n}-2"'
            body = rss(f"feed {n}", [{"title": f"Item {n} update", "date":
                                      format_datetime(start + timedelta(hours=5)),
                                      "link": f"{server.base}/news/{n}-update.html",
                                      "summary": f"Town {n} changed its plans."}])
            server.routes[path] = (body, "application/rss+xml")
        second = run_newswatch(config, force=True)  # due or not: every feed asked now
    finally:
        server.close()
    return {"feeds": args.feeds, "first_run": {k: first[k] for k in ("wall_s", "peak_rss_mb")},
            "timed_run": second, "stage_s": per_stage(second["summary"])}


def stream_items(path: Path, limit: int) -> list[dict[str, Any]]:
    items = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if len(items) >= limit:
                break
            items.append(json.loads(line))
    return items


def bench_backlog(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    items = stream_items(Path(args.data), args.items)
    server = FeedServer()
    by_source: dict[str, list[dict[str, str]]] = defaultdict(list)
    for item in items:
        when = item.get("date_published") or "2023-06-10 00:00:00"
        try:
            parsed = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        except ValueError:
            parsed = datetime(2023, 6, 10, tzinfo=UTC)
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        by_source[item.get("source") or "unknown"].append({
            "title": item.get("title") or "", "link": item.get("link") or "",
            "date": format_datetime(parsed), "summary": item.get("description") or ""})
    feeds = []
    for n, (_source, entries) in enumerate(sorted(by_source.items())):
        server.routes[f"/feed/{n}.xml"] = (rss(f"feed {n}", entries), "application/rss+xml")
        feeds.append(f"{server.base}/feed/{n}.xml")
    runs = []
    try:
        # Feed text only; the per-host time budget is lifted as in ``site``: one local host
        # stands in for every source, so a budget meant for one site would defer most feeds.
        config = write_config(folder, feeds, extraction={"fetch_pages": False},
                              fetch={"host_budget_s": None})
        for _ in range(args.max_runs):
            result = run_newswatch(config)
            runs.append(result)
            print(json.dumps({k: result[k] for k in ("wall_s", "peak_rss_mb", "exit")}),
                  file=sys.stderr, flush=True)
            pending = pending_after(folder / "records.db")
            # Feeds a fetch budget deferred hold items not yet stored: they are pending too.
            fetched = result["summary"].get("stages", {}).get("fetch", {})
            pending["feeds_deferred"] = sum(n for k, n in fetched.items()
                                            if k.startswith("deferred"))
            if not any(pending.values()) or result["exit"] != 0:
                break
    finally:
        server.close()
    total = sum(r["wall_s"] for r in runs)
    stages = runs[0]["summary"].get("stages", {})
    stage_s: dict[str, float] = defaultdict(float)
    for run in runs:
        for stage, seconds in per_stage(run["summary"]).items():
            stage_s[stage] = round(stage_s[stage] + seconds, 1)
    stored = stored_items(folder / "records.db")
    return {"items": len(items), "stored": stored, "feeds": len(feeds), "runs": len(runs),
            "wall_s": round(total, 1), "items_per_s": round(stored / total, 2),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "pending_after": pending,
            "stage_s": dict(stage_s),
            "stages": stages, "run_walls": [r["wall_s"] for r in runs]}


def stored_items(db: Path) -> int:
    """Feed items the runs stored (an item of a feed no run has read yet is not)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("select count(*) from articles").fetchone()[0])


def pending_after(db: Path) -> dict[str, int]:
    """What is left: articles waiting for text, for a story, for the index."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])
        return {
            "extract": one("select count(*) from articles where extraction_status in "
                           "('pending','retry')"),
            "stories": one("select count(*) from articles where version > 0 and "
                           "(story_assigned_version is null or story_assigned_version != "
                           "version)"),
            "index": one("select count(*) from articles where version > 0 and "
                         "indexed_fingerprint is null"),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    site = sub.add_parser("site", help="N generated articles with pages")
    site.add_argument("--articles", type=int, default=1000)
    site.add_argument("--feeds", type=int, default=20)
    nm = sub.add_parser("not-modified", help="F feeds, 90 %% answering 304")
    nm.add_argument("--feeds", type=int, default=1000)
    backlog = sub.add_parser("backlog", help="a real feed archive, feed text only")
    backlog.add_argument("--data", required=True, help="JSONL.gz feed items")
    backlog.add_argument("--items", type=int, default=40_000)
    backlog.add_argument("--max-runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args()
    if args.mode == "backlog" and not Path(args.data).is_file():
        print(f"end_to_end.py: no such file: {args.data}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="newswatch-bench-") as tmp:
        bench = {"site": bench_site, "not-modified": bench_not_modified,
                 "backlog": bench_backlog}[args.mode]
        result = bench(args, Path(tmp))
    result.update(mode=args.mode, machine=f"{platform.machine()}, {os.cpu_count()} cores",
                  at=datetime.now(UTC).isoformat(timespec="seconds"))
    out = args.out or ROOT / "benchmarks" / "results" / f"pipeline-{args.mode}.json"
    existing = json.loads(out.read_text()) if out.is_file() else {}
    key = str(result.get("articles") or result.get("items") or result.get("feeds"))
    existing[key] = result
    out.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2,
                     default=str)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
