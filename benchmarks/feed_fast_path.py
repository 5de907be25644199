"""Does the streaming fast path read feeds as feedparser does? And how much faster is it?

    .venv/bin/python benchmarks/feed_fast_path.py ../shared/data/feeds [--entries 10000]

Quality: every feed file under the folder is parsed twice, by feedparser
(``fast_min_bytes=None``) and by the fast path forced on (``fast_min_bytes=0``). For the
files both read (the fast path declines a DTD, an ill-formed document or another format),
entries are compared field by field in order: same number, and per entry the same link,
title, guid, summary, content, dates, authors and language (``same-links-guids-titles``
counts the files whose entries agree on the identity fields: an article's id comes from
its link or guid). Speed: one generated, fictional RSS feed
of ``--entries`` entries parsed by both in one process (CPU seconds; the ratio is the
figure to trust on a shared machine). Results: benchmarks/results/feed_fast_path.json
(figures and file names only, no feed text).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bad_input import big_feed  # a sibling script: benchmarks/ is on sys.path

from pipeline.feedfast import parse_large_feed
from pipeline.feedparse import FeedParseError, parse_feed

RESULTS = Path(__file__).parent / "results" / "feed_fast_path.json"
FIELDS = ("link", "title", "guid", "summary", "content", "published_at", "updated_at",
          "authors", "language")
FEED_SUFFIXES = {".xml", ".rss", ".atom", ".rdf"}


def _parse(body: bytes, url: str, fast: bool) -> Any:
    try:
        return parse_feed(body, url, {"content-type": "application/xml"},
                          fast_min_bytes=0 if fast else None)
    except FeedParseError:
        return None


def compare(folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and p.suffix.lower() in FEED_SUFFIXES)
    counts: Counter[str] = Counter()
    field_diffs: Counter[str] = Counter()
    differing: list[str] = []
    for path in files:
        body = path.read_bytes()
        url = f"https://feeds.example/{path.name}"
        if parse_large_feed(body, url) is None:
            counts["declined"] += 1
            continue
        slow, fast = _parse(body, url, False), _parse(body, url, True)
        if slow is None:
            counts["only-fast-reads"] += 1
            continue
        counts["both-read"] += 1
        counts["entries"] += len(slow.entries)
        if len(slow.entries) != len(fast.entries):
            counts["entry-count-differs"] += 1
            differing.append(str(path.relative_to(folder)))
            continue
        if all((a.link, a.guid, a.title) == (b.link, b.guid, b.title)
               for a, b in zip(slow.entries, fast.entries, strict=True)):
            counts["same-links-guids-titles"] += 1
        diffs = {name for a, b in zip(slow.entries, fast.entries, strict=True)
                 for name in FIELDS if getattr(a, name) != getattr(b, name)}
        if slow.title != fast.title:
            diffs.add("feed-title")
        field_diffs.update(diffs)
        if diffs:
            differing.append(f"{path.relative_to(folder)}: {', '.join(sorted(diffs))}")
        else:
            counts["identical"] += 1
    return {"files": len(files), **counts, "files_differing_by_field": dict(field_diffs),
            "differing": differing}


def speed(entries: int) -> dict[str, Any]:
    body = big_feed(entries)
    url = "https://big.example/feed.xml"
    timings = {}
    for name, fast in (("feedparser", False), ("fast_path", True)):
        started = time.process_time()
        parsed = _parse(body, url, fast)
        timings[f"{name}_cpu_s"] = round(time.process_time() - started, 2)
        assert parsed is not None and len(parsed.entries) == entries
    timings["ratio"] = round(timings["feedparser_cpu_s"] / max(timings["fast_path_cpu_s"],
                                                                 1e-9), 1)
    return {"entries": entries, "feed_bytes": len(body), **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="feed corpus (e.g. ../shared/data/feeds)")
    parser.add_argument("--entries", type=int, default=10_000,
                        help="entries of the generated feed for the speed ratio")
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.exit(2, f"error: {args.folder}: not a folder\n")
    print("comparing the fast path with feedparser ...", file=sys.stderr)
    result = {"quality": compare(args.folder)}
    print(f"timing a {args.entries}-entry feed ...", file=sys.stderr)
    result["speed"] = speed(args.entries)
    result.update(machine=platform.machine(), python=platform.python_version(),
                  measured_at=datetime.now(UTC).strftime("%Y-%m-%d"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
