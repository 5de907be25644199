"""Cross-lingual stories: pair accuracy and mixed-language clustering on headline/lead items.

    .venv/bin/python benchmarks/crosslingual.py [--data benchmarks/data/crosslingual-events.jsonl]
                                                [--sweep]

The data (``benchmarks/data/crosslingual-events.jsonl``, written for newswatch, see its
README) holds 24 real public events from 2019–2025, each told in two English items and one
or two Chinese ones (Traditional and/or Simplified) in our own words, plus six unrelated
items; the events alternate between a ``dev`` and a ``test`` split.

Reported:

* **pair accuracy** — for each Chinese item, is the nearest English item (cosine, over every
  English item in the file) one of its event? And the other way round. With the multilingual
  model (USE v3) and, for reference, with MiniLM. Plus the pair AUC over all
  Chinese–English pairs (same event vs different event).
* **clustering** — ``pipeline.stories.cluster_records`` (the shipped story stage in a
  throwaway store) with the shipped defaults over the whole file, with ``multilingual`` on
  and off: BCubed and pairwise F1, and how many events end up in exactly one story with all
  their items. Once with the items' dates (a 3-day window separates most events) and once
  with every date removed (all 81 items in one window: look-alike events — three sets of PLA
  drills, two elections, two earthquakes — meet).
* ``--crowd STREAM``: the join decision (the shipped ``best_story``) for each Chinese item in
  a crowded window: its candidates are the English stories of every event in the file plus
  ``--crowd-size`` real feed items drawn from STREAM (e.g.
  ``../shared/data/stream/rss-2023-06-10-to-25.jsonl.gz``, June 2023; items naming the
  file's subjects — China, Taiwan, Japan, Hong Kong, … — left out, so none is the same
  event), each a story of its own. Counted: joins to the right story, to a wrong one, and
  items left on their own.
* ``--sweep``: the clustering on the ``dev`` split for other ``multilingual.threshold`` and
  ``same_language_threshold`` values, dated and in one window (how the defaults were chosen:
  the best mean of the two dev BCubed F1s); the ``test`` split is reported at the defaults
  only. ``--sweep-only`` skips everything else.

Results (figures only) go to benchmarks/results/crosslingual.json.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import platform
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stories import bcubed, pairwise
from pipeline.article_input import read_jsonl
from pipeline.cluster import cluster_records
from pipeline.crosslingual import Candidate, Member, best_story, thresholds_of
from pipeline.embeddings import encode
from pipeline.multilingual import encode_multilingual
from pipeline.settings import Settings
from pipeline.story_text import article_text_for_embedding

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "benchmarks" / "data" / "crosslingual-events.jsonl"
SWEEP = [(cross, same) for cross in (0.30, 0.35, 0.40, 0.45) for same in (0.50, 0.55, 0.60)]


def _english(record: dict[str, Any]) -> bool:
    return str(record.get("language") or "en").startswith("en")


def _auc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a same-event pair scores above a different-event pair."""
    neg = np.sort(np.asarray(negatives))
    wins = sum(np.searchsorted(neg, p, side="left") + 0.5 * (
        np.searchsorted(neg, p, side="right") - np.searchsorted(neg, p, side="left"))
        for p in positives)
    return float(wins / (len(positives) * len(negatives)))


def pair_accuracy(records: list[dict[str, Any]], vectors: np.ndarray) -> dict[str, Any]:
    english = [i for i, r in enumerate(records) if _english(r)]
    other = [i for i, r in enumerate(records) if not _english(r)]
    sims = vectors @ vectors.T
    label = [r["label"] for r in records]

    def nearest(sources: list[int], targets: list[int]) -> float:
        hits = [label[targets[int(np.argmax(sims[i, targets]))]] == label[i] for i in sources]
        return round(sum(hits) / len(hits), 4)

    same, different = [], []
    for i, j in itertools.product(other, english):
        (same if label[i] == label[j] else different).append(float(sims[i, j]))
    return {"zh_to_en_top1": nearest(other, english), "en_to_zh_top1": nearest(
        [i for i in english if any(label[i] == label[j] for j in other)], other),
        "pair_auc": round(_auc(same, different), 4),
        "same_event_mean_cosine": round(float(np.mean(same)), 4),
        "different_event_mean_cosine": round(float(np.mean(different)), 4)}


def clustering(records: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    out = cluster_records(records, settings)
    gold = {str(r["id"]): str(r["label"]) for r in records}
    pred = {o["id"]: o["story_id"] for o in out}
    events = Counter(gold.values())
    whole = 0
    for event, size in events.items():
        stories = {pred[i] for i, g in gold.items() if g == event}
        if size > 1 and len(stories) == 1 and sum(
                1 for p in pred.values() if p in stories) == size:
            whole += 1
    with_english = {str(r["label"]) for r in records if _english(r)}
    non_english = [str(r["id"]) for r in records
                   if not _english(r) and str(r["label"]) in with_english]
    joined = 0  # Chinese items of an event placed with at least one English item of it
    for item in non_english:
        joined += any(pred[j] == pred[item] and gold[j] == gold[item]
                      for j in gold if j != item and _english(_by_id(records, j)))
    return {"items": len(records), "events": sum(1 for n in events.values() if n > 1),
            "stories": len(set(pred.values())),
            "bcubed": dict(zip(("p", "r", "f1"), (round(v, 4) for v in bcubed(gold, pred)),
                               strict=True)),
            "pairwise": dict(zip(("p", "r", "f1"), (round(v, 4) for v in pairwise(gold, pred)),
                                 strict=True)),
            "events_whole": whole,
            "chinese_with_english_of_event": f"{joined}/{len(non_english)}",
            "seconds": round(time.perf_counter() - started, 1)}


CROWD_EXCLUDE = re.compile(
    r"china|chinese|taiwan|beijing|blinken|\bxi\b|qin|japan|hong kong|pelosi|biden|"
    r"fukushima|honduras|nauru|moon|lunar", re.IGNORECASE)


def crowd(records: list[dict[str, Any]], vectors: np.ndarray, stream: Path, size: int,
          settings: Settings) -> dict[str, Any]:
    """See the module docstring (``--crowd``)."""
    with gzip.open(stream, "rt", encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle if line.strip()]
    items = [i for i in items if not CROWD_EXCLUDE.search(
        f"{i.get('title') or ''} {i.get('description') or ''}")]
    items = random.Random(1).sample(items, min(size, len(items)))
    crowd_vectors = encode_multilingual([article_text_for_embedding(
        i.get("title"), i.get("description") or "") for i in items])
    stories: dict[str, Candidate] = {}
    for n, record in enumerate(records):
        if _english(record):
            stories.setdefault(record["label"], Candidate(record["label"])).add(
                Member(record["id"], 0.0, vectors[n], "en"))
    candidates = list(stories.values()) + [
        Candidate(f"crowd-{k}", [Member(f"crowd-{k}", 0.0, v, "en")], first=0.0, last=0.0)
        for k, v in enumerate(crowd_vectors)]
    right = wrong = alone = 0
    chinese = [n for n, r in enumerate(records) if not _english(r)]
    for n in chinese:
        story, _score = best_story(Member(records[n]["id"], 0.0, vectors[n],
                                          records[n]["language"]),
                                   candidates, thresholds_of(settings), 86_400.0)
        if story is None:
            alone += 1
        elif story.story_id == records[n]["label"]:
            right += 1
        else:
            wrong += 1
    with_event = sum(1 for n in chinese if records[n]["label"] in stories)
    return {"crowd_items": len(items), "chinese_items": len(chinese),
            "with_an_english_story": with_event, "joined_right": right, "joined_wrong": wrong,
            "left_alone": alone}


def _by_id(records: list[dict[str, Any]], rid: str) -> dict[str, Any]:
    return next(r for r in records if str(r["id"]) == rid)


def _settings(enabled: bool = True, thresholds: tuple[float, float] | None = None) -> Settings:
    settings = Settings()
    settings.multilingual.enabled = enabled
    if thresholds is not None:
        settings.multilingual.threshold, settings.multilingual.same_language_threshold = \
            thresholds
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sweep", action="store_true", help="thresholds on the dev split")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep")
    parser.add_argument("--crowd", type=Path, help="gzip JSONL feed items (see above)")
    parser.add_argument("--crowd-size", type=int, default=1000)
    parser.add_argument("--output", "--json", type=Path,
                        default=ROOT / "benchmarks" / "results" / "crosslingual.json")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: no data file at {args.data}", file=sys.stderr)
        return 1
    records = read_jsonl(args.data)
    texts = [article_text_for_embedding(r["title"], r["text"]) for r in records]
    print(f"{len(records)} items; embedding ...", file=sys.stderr)
    results: dict[str, Any] = {
        "data": args.data.name, "python": platform.python_version(),
        "defaults": {"multilingual.threshold": Settings().multilingual.threshold,
                     "multilingual.same_language_threshold":
                         Settings().multilingual.same_language_threshold,
                     "stories.window_days": Settings().stories.window_days},
    }
    if not args.sweep_only:
        multilingual = encode_multilingual(texts)
        results["pairs"] = {
            "multilingual (USE v3)": pair_accuracy(records, multilingual),
            "MiniLM": pair_accuracy(records, encode(texts))}
        if args.crowd:
            if not args.crowd.is_file():
                print(f"error: no stream file at {args.crowd}", file=sys.stderr)
                return 1
            results["crowded window"] = crowd(records, multilingual, args.crowd,
                                              args.crowd_size, Settings())
    undated = [{**r, "published_at": None} for r in records]
    results["clustering"] = {}
    for name, rows in () if args.sweep_only else (("dated", records), ("one window", undated)):
        for enabled in (True, False):
            key = f"{name}, multilingual {'on' if enabled else 'off'}"
            print(f"clustering: {key}", file=sys.stderr)
            results["clustering"][key] = clustering(rows, _settings(enabled))
        for split in ("dev", "test"):
            part = [r for r in rows if r["split"] == split]
            results["clustering"][f"{name}, {split} split"] = clustering(part, _settings())
    if args.sweep or args.sweep_only:
        for name, rows in (("dated", records), ("one window", undated)):
            dev = [r for r in rows if r["split"] == "dev"]
            results[f"sweep (dev split, {name})"] = {
                f"threshold {cross}, same_language_threshold {same}":
                    clustering(dev, _settings(True, (cross, same))) for cross, same in SWEEP}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
