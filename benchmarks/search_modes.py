"""Search modes on real articles: what the default (hybrid) mode adds, and what it costs.

    .venv/bin/python benchmarks/search_modes.py \\
        --data ../shared/data/relevance/guardian-taiwan-2007-2011.jsonl

The articles go into a throwaway SQLite search index with the shipped embedding (title + lead,
as the pipeline stores it) and the shipped defaults. For each query (fixed below, written
before any run) it reports, per mode: hits, how many of the top 10 are not keyword matches
(semantic neighbours the mode added), whether the top 10 is the same
for ``limit`` 10 and 40, precision@10 against the Guardian editors' "Taiwan" tag where the
query is about Taiwan, and the query time of each mode as a ratio to keyword mode (the
query embedding is computed once, outside the timing). Figures only, never article text,
go to benchmarks/results/search_modes.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

QUERIES = ["Taiwan", "Taiwan Strait", '"Chen Shui-bian"', "Ma Ying-jeou China",
           "Taiwan independence -baseball", "arms sales Taiwan", "Dalai Lama", "Kuomintang"]
TAIWAN_QUERIES = {"Taiwan", "Taiwan Strait", '"Chen Shui-bian"', "Ma Ying-jeou China",
                  "Taiwan independence -baseball", "arms sales Taiwan", "Kuomintang"}
REPEATS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="JSONL with id, title, text, published_at, tag_taiwan or label")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "search_modes.json")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"no such file: {args.data}", file=sys.stderr)
        return 1

    from pipeline.embeddings import DEFAULT_MODEL, encode
    from pipeline.search.base import SearchDocument, SearchQuery
    from pipeline.search.sqlite_fts import SqliteSearch
    from pipeline.story_text import article_text_for_embedding

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    tagged = {r["id"] for r in rows if r.get("tag_taiwan", r.get("label"))}
    vectors = encode([article_text_for_embedding(r["title"], r.get("text")) for r in rows],
                     DEFAULT_MODEL)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        search = SqliteSearch(Path(tmp) / "search.db")
        search.index([SearchDocument(
            article_id=r["id"], title=r["title"], text=r.get("text") or "", url=r["id"],
            source=r.get("source"), published_at=datetime.fromisoformat(r["published_at"])
            if r.get("published_at") else None, embedding=v.tolist())
            for r, v in zip(rows, vectors, strict=True)])
        query_vectors = dict(zip(QUERIES, encode(QUERIES, DEFAULT_MODEL), strict=True))
        for text in QUERIES:
            row: dict = {"query": text}
            matches = {h.article_id for h in search.search(
                SearchQuery(text=text, mode="keyword", limit=1000)).hits}
            timings = {}
            for mode in ("keyword", "hybrid", "semantic"):
                query = SearchQuery(text=text, mode=mode, limit=10,
                                    vector=query_vectors[text].tolist())
                started = time.perf_counter()
                for _ in range(REPEATS):
                    hits = search.search(query).hits
                timings[mode] = (time.perf_counter() - started) / REPEATS
                ids = [h.article_id for h in hits]
                deep = [h.article_id for h in search.search(
                    SearchQuery(text=text, mode=mode, limit=40,
                                vector=query_vectors[text].tolist())).hits]
                entry = {"hits@10": len(ids), "same_top10_for_limit_40": deep[:10] == ids,
                         "not_keyword_matches": sum(i not in matches for i in ids)}
                if text in TAIWAN_QUERIES and ids:
                    entry["precision@10_taiwan_tag"] = round(
                        sum(i in tagged for i in ids) / len(ids), 2)
                row[mode] = entry
            row["time_ratio_to_keyword"] = {m: round(t / timings["keyword"], 2)
                                            for m, t in timings.items()}
            results.append(row)
            print(json.dumps(row))
        search.close()
    summary = {
        mode: {"mean_precision@10_taiwan_tag": round(
            sum(r[mode].get("precision@10_taiwan_tag", 0) for r in results
                if r["query"] in TAIWAN_QUERIES) / len(TAIWAN_QUERIES), 3)}
        for mode in ("keyword", "hybrid", "semantic")}
    out = {"data": args.data.name, "articles": len(rows), "queries": results,
           "summary": summary}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
