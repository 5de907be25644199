"""How story assignment scales: embedding throughput and per-article assignment cost.

    .venv/bin/python benchmarks/story_scaling.py [--sizes 10000,100000,1000000]

1. Embeddings per second with the shipped model on this machine's CPU, for texts of 256
   word pieces (MiniLM's limit) and for the shipped representation (title + ~600-character
   lead, about 130 pieces). The texts are synthetic (generated from a fictional vocabulary,
   which splits into more word pieces than news does) unless ``--data`` names a JSONL file of
   real articles; only figures are written, never text.
2. ``StoryAssigner.assign`` time per article with N active stories in the window
   (synthetic unit vectors and term sets; N = 10k, 100k, 1M), each size in its own process so
   that its peak resident memory (``ru_maxrss``) is its own. An assignment is one
   (N × 384) matrix-vector product over the centroids, an arg-partition for the 8 best, and a
   full score (embedding, words, names) against up to 32 members of each of those 8, so time
   and memory grow linearly with N; a run's batch adds ``refine_passes`` more such scorings
   per article.

Results go to benchmarks/results/story_scaling.json (docs/performance.md has the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 384
TERMS_PER_STORY = 12
VOCABULARY = 50_000
SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vos", "bel", "dor", "ush", "fen", "gri", "pal",
             "sto", "van", "qui", "ner", "zal", "tor", "hem", "ari"]


def fictional_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def fictional_article(rng: random.Random, words: int) -> tuple[str, str]:
    """A made-up news item: capitalised 'names', numbers and filler words."""
    names = [w.capitalize() for w in fictional_words(rng, 4)]
    title = f"{names[0]} {names[1]} says {rng.randint(2, 900)} {fictional_words(rng, 1)[0]} " \
            f"in {names[2]}"
    body = []
    for _ in range(words):
        pick = rng.random()
        body.append(rng.choice(names) if pick < 0.1 else str(rng.randint(1, 2024))
                    if pick < 0.15 else fictional_words(rng, 1)[0])
        if rng.random() < 0.06:
            body[-1] += "."
    return title, " ".join(body)


def embedding_rate(n: int = 256, data: Path | None = None) -> dict[str, Any]:
    """Texts per second; real articles from ``data`` (JSONL: title, text) when given."""
    from pipeline.article_input import read_jsonl
    from pipeline.embeddings import encode, load_model
    from pipeline.story_text import article_text_for_embedding

    rng = random.Random(7)
    if data is not None:
        records = [r for r in read_jsonl(data) if (r.get("text") or "").strip()]
        rng.shuffle(records)
        articles = [(str(r.get("title") or ""), str(r["text"])) for r in records[:n]]
        n = len(articles)
    else:
        articles = [fictional_article(rng, 400) for _ in range(n)]
    model = load_model()
    encode(["warm up"])
    out: dict[str, float] = {}
    for name, texts in (
            ("full_256_pieces", [f"{t}. {x}" for t, x in articles]),
            ("shipped_title_plus_lead", [article_text_for_embedding(t, x)
                                         for t, x in articles])):
        pieces = [min(len(model.tokenizer(t)["input_ids"]), 256) for t in texts]
        started = time.perf_counter()
        encode(texts)
        elapsed = time.perf_counter() - started
        out[name] = {"texts_per_s": round(n / elapsed, 1),
                     "mean_word_pieces": round(statistics.mean(pieces), 1),
                     "seconds_for_10k": round(10_000 / (n / elapsed))}
        print(f"  {name}: {n / elapsed:.1f} texts/s ({statistics.mean(pieces):.0f} pieces "
              f"each) → 10,000 articles in {10_000 / (n / elapsed) / 60:.1f} min", flush=True)
    return out


# ---- real-stream runs: assignment cost by run size ---------------------------------------------

def read_stream(path: Path) -> list[dict[str, Any]]:
    """The stream's items (gzip JSONL) as title / text / source / time / language, in time
    order.

    Feed text only, as the pipeline stores it without pages: the description, else the
    headline (a headline-only item's text is its title); a title that is only link text
    ("More »") gives way to the description's first sentence, as in ``feedparse``.
    ``language`` is what the feed declares (a hint: the pipeline stores
    ``language.detect_language`` of it and the text).
    """
    import gzip

    from pipeline.cluster import _parse_time
    from pipeline.feedparse import entry_headline
    from pipeline.story_text import derive_title

    items = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for n, line in enumerate(handle):
            row = json.loads(line)
            when = _parse_time(str(row.get("date_published") or "").replace(" ", "T", 1))
            title = entry_headline(" ".join(str(row.get("title") or "").split()))
            text = " ".join(str(row.get("description") or "").split()) or title
            title = title or derive_title(text)
            if when is None or not text:
                continue
            items.append({"id": f"i{n:06d}", "title": title, "text": text, "time": when,
                          "source": str(row.get("source_title") or row.get("source") or ""),
                          "language": row.get("language")})
    items.sort(key=lambda i: (i["time"], i["id"]))
    return items


def stream_vectors(items: list[dict[str, Any]], cache: Path | None) -> np.ndarray:
    """MiniLM vectors of the items' embedding texts, in item order. With ``cache`` each block
    of 1,024 is kept on disk (keyed by a hash of its texts) as it is done, so an interrupted
    or repeated run does not re-embed ~26k items (10+ minutes on two shared cores)."""
    import hashlib

    from pipeline.embeddings import encode
    from pipeline.story_text import article_text_for_embedding

    texts = [article_text_for_embedding(i["title"], i["text"]) for i in items]
    blocks = []
    for start in range(0, len(texts), 1024):
        chunk = texts[start:start + 1024]
        key = hashlib.sha256("\x1e".join(chunk).encode("utf-8")).hexdigest()[:16]
        cached = cache / f"block-{key}.npy" if cache else None
        if cached and cached.exists():
            blocks.append(np.load(cached))
            continue
        blocks.append(encode(chunk))
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, blocks[-1])
        print(f"  embedded {start + len(chunk):,} / {len(texts):,}", flush=True)
    return np.concatenate(blocks) if blocks else np.zeros((0, DIM), np.float32)


def stream_run_cost(items: list[dict[str, Any]], vectors: np.ndarray,
                    sizes: list[int]) -> list[dict[str, Any]]:
    """Assign the first N items of the stream as one run (one ``assign_batch``: online pass,
    refinement, cohesion check) for each N; ms per article should not grow with N."""
    from pipeline.settings import StoriesSettings
    from pipeline.story_assignment import StoryAssigner, StoryItem
    from pipeline.story_text import story_names, story_terms

    conf = StoriesSettings()
    rows = []
    for size in sizes:
        chosen = items[:size]
        batch = [StoryItem(i["id"], i["title"], i["source"], i["time"], vectors[n],
                           story_terms(i["title"], i["text"]), story_names(i["title"], i["text"]))
                 for n, i in enumerate(chosen)]
        assigner = StoryAssigner(conf)
        started, cpu = time.perf_counter(), time.process_time()
        results = assigner.assign_batch(batch)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        days = (chosen[-1]["time"] - chosen[0]["time"]).total_seconds() / 86_400
        # CPU time: on a shared machine wall time follows the neighbours' load, not the code.
        row = {"items": len(batch), "days_spanned": round(days, 2),
               "stories": len({r.story_id for r in results}),
               "assign_ms_per_article": round(1000 * cpu / len(batch), 3),
               "wall_ms_per_article": round(1000 * elapsed / len(batch), 3),
               "centroids_scanned_per_article": round(assigner.scanned / len(batch), 1),
               "seconds": round(elapsed, 2)}
        rows.append(row)
        print(f"  {row['items']:>6,} items ({days:.1f} days): {row['assign_ms_per_article']:.2f} "
              f"CPU ms/article, {row['centroids_scanned_per_article']:.0f} centroids scanned per "
              f"article, {row['stories']:,} stories", flush=True)
    return rows


def assignment_cost(n_stories: int, n_items: int = 200) -> dict[str, float]:
    """Fill a StoryAssigner with ``n_stories`` synthetic stories, then time ``assign``."""
    from pipeline.settings import StoriesSettings
    from pipeline.story_assignment import ActiveStory, StoryAssigner, StoryItem

    rng = np.random.default_rng(11)
    t0 = datetime(2023, 6, 1, tzinfo=UTC)
    started = time.perf_counter()
    assigner = StoryAssigner(StoriesSettings())
    block = 100_000
    for start in range(0, n_stories, block):
        vectors = rng.standard_normal((min(block, n_stories - start), DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        words = rng.integers(0, VOCABULARY, (len(vectors), TERMS_PER_STORY))
        for k, vector in enumerate(vectors):
            n = start + k
            terms = frozenset(f"w{w}" for w in words[k])
            at = t0 + timedelta(seconds=int(n % 200_000))
            story = ActiveStory(story_id=f"s-{n:020d}", title="", first_seen=at, last_seen=at,
                                count=1, sources=["synthetic"], centroid=vector,
                                members={f"a{n}": vector}, member_terms={f"a{n}": terms},
                                member_names={f"a{n}": frozenset(list(terms)[:4])})
            assigner._adopt(story)
    build_s = time.perf_counter() - started
    # Items near random existing stories (half) or new (half), inside the window.
    when = t0 + timedelta(days=2)
    timings = []
    for i in range(n_items):
        if i % 2:
            target = assigner._matrix[int(rng.integers(0, n_stories))]
            vector = target + 0.3 * rng.standard_normal(DIM, dtype=np.float32) / np.sqrt(DIM)
        else:
            vector = rng.standard_normal(DIM, dtype=np.float32)
        vector = (vector / np.linalg.norm(vector)).astype(np.float32)
        words = [f"w{w}" for w in rng.integers(0, VOCABULARY, 30)]
        item = StoryItem(f"x{i}", "", "synthetic", when, vector, frozenset(words),
                         frozenset(words[:8]))
        t = time.perf_counter()
        assigner.assign(item)
        timings.append(time.perf_counter() - t)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ms = sorted(1000 * t for t in timings)
    return {"stories": n_stories, "build_seconds": round(build_s, 1),
            "assign_ms_mean": round(statistics.mean(ms), 3),
            "assign_ms_p50": round(ms[len(ms) // 2], 3),
            "assign_ms_p95": round(ms[int(len(ms) * 0.95)], 3),
            "articles_per_s": round(1000 / statistics.mean(ms), 1),
            "peak_rss_mb": round(peak_kb / 1024), "centroid_matrix_mb":
                round(n_stories * DIM * 4 / 2**20)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--data", type=Path, help="JSONL articles (title, text) to time the "
                        "embedding on real news instead of synthetic text")
    parser.add_argument("--stream", type=Path, help="gzip JSONL feed items (the shared "
                        "stream/ file): time one-run assignment of its first N items")
    parser.add_argument("--stream-sizes", default="1000,10000,40000",
                        help="run sizes for --stream (capped at the items in the file)")
    parser.add_argument("--cache", type=Path, help="folder to keep the stream's embeddings "
                        "in between runs")
    parser.add_argument("--max-items", type=int, help="only the stream's first N items (by "
                        "time)")
    parser.add_argument("--skip-synthetic", action="store_true",
                        help="only the --stream part")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process mode
    parser.add_argument("--json", type=Path,
                        default=Path("benchmarks/results/story_scaling.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(assignment_cost(args.one)))
        return 0
    result: dict[str, Any] = {}
    if args.json.exists():  # keep the other part's figures when only one part is rerun
        result = json.loads(args.json.read_text(encoding="utf-8"))
    result.update({"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                              f"{platform.python_version()}",
                   "note": "shared 2-core machine; wall-clock figures"})
    if args.stream:
        if not args.stream.exists():
            print(f"error: {args.stream} not found", file=sys.stderr)
            return 2
        print(f"Stream runs ({args.stream.name}):", flush=True)
        items = read_stream(args.stream)[:args.max_items]
        vectors = stream_vectors(items, args.cache)
        sizes = sorted({min(int(s), len(items)) for s in args.stream_sizes.split(",")})
        result["stream_runs"] = {"file": args.stream.name, "runs": stream_run_cost(
            items, vectors, sizes)}
    if args.skip_synthetic:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0
    print("Embedding throughput (MiniLM, CPU):", flush=True)
    result["embedding"] = embedding_rate(data=args.data)
    result["embedding"]["texts"] = str(args.data.name) if args.data else "synthetic"
    result["assignment"] = []
    print("Assignment per article with N active stories:", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        proc = subprocess.run([sys.executable, __file__, "--one", str(size)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            result["assignment"].append({"stories": size, "error": proc.stderr[-500:]})
            print(f"  {size:>9,}: failed ({proc.stderr.strip().splitlines()[-1:]})")
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        result["assignment"].append(row)
        print(f"  {size:>9,} stories: {row['assign_ms_mean']:.2f} ms/article (p95 "
              f"{row['assign_ms_p95']:.2f}), peak RSS {row['peak_rss_mb']} MB, built in "
              f"{row['build_seconds']} s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
