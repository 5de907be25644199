"""How similar must a semantic neighbour be? Query-to-article cosine on ECB+ dev.

    .venv/bin/python benchmarks/search_floor.py --data ../shared/data/clustering/ecbplus-dev.jsonl

Hybrid search may add articles that do not contain every query word when their embedding is
close to the query's (``search.similarity_floor``). This measures, with the shipped model and
the shipped article representation (title + lead, ``pipeline.stories``), how often an article
above a cosine threshold reports the same real-world event as a short query: each article's
title is a query, every other article a candidate, ECB+'s event label the truth. A neighbour
of another event of the same topic (two different celebrities entering rehab) counts as wrong.

Figures only (never article text) go to benchmarks/results/search_floor.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

THRESHOLDS = [round(0.30 + 0.05 * i, 2) for i in range(11)]  # 0.30 .. 0.80


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ECB+ JSONL (id, title, "
                        "text, label, topic)")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "search_floor.json")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"no such file: {args.data}", file=sys.stderr)
        return 1

    from pipeline.embeddings import DEFAULT_MODEL, encode
    from pipeline.story_text import article_text_for_embedding

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if (r.get("title") or "").strip()]
    started = time.monotonic()
    docs = encode([article_text_for_embedding(r["title"], r.get("text")) for r in rows],
                  DEFAULT_MODEL)
    queries = encode([r["title"] for r in rows], DEFAULT_MODEL)
    seconds = time.monotonic() - started
    cos = queries @ docs.T
    np.fill_diagonal(cos, -2.0)  # an article is not its own neighbour
    labels = np.array([str(r["label"]) for r in rows])
    topics = np.array([str(r.get("topic")) for r in rows])
    same_event = labels[:, None] == labels[None, :]
    same_topic = topics[:, None] == topics[None, :]
    table = []
    for t in THRESHOLDS:
        above = cos >= t
        n = int(above.sum())
        table.append({
            "threshold": t, "neighbours_per_query": round(n / len(rows), 2),
            "same_event_precision": round(float(same_event[above].mean()) if n else 1.0, 3),
            "same_topic_precision": round(float(same_topic[above].mean()) if n else 1.0, 3),
            "queries_with_a_neighbour": round(float(above.any(axis=1).mean()), 3),
        })
    result = {"data": args.data.name, "articles": len(rows), "model": "all-MiniLM-L6-v2",
              "embed_seconds": round(seconds, 1), "machine": platform.machine(),
              "thresholds": table}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    for row in table:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
