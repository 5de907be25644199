"""Story-assignment quality: BCubed and pairwise F1 on ECB+, same/different on SemEval pairs.

    .venv/bin/python benchmarks/stories.py \\
        --data ../shared/data/clustering/ecbplus-dev.jsonl \\
        --headlines ../shared/data/clustering/uci-headlines-dev.jsonl \\
        --pairs ../shared/data/pairs/semeval2022-en.jsonl [--cache DIR] [--sweep]

Every figure comes from the shipped code path, ``pipeline.stories.cluster_records`` (a
throwaway store and the real ``assign_stories`` stage) with the configured defaults — nothing
is tuned at run time. The only shortcut is a memo around ``encode_for`` so that reruns over the
same texts (orders, sweep) do not embed them again; the vectors are identical.

ECB+ has no dates (``published_at`` is null), so every article falls back to its fetch time:
all 772 sit in one window (harder than a real stream, where e.g. two Iran earthquakes years
apart never meet) and are assigned in file order, which groups each event's articles
together. Shuffled orders (seven seeds) show how much the order matters.

SemEval-2022 pairs: each pair is clustered on its own (text only; the title is derived from
the first sentence as for any title-less input). Reported: the share of pairs rated 1
("very similar") put in one story, of pairs rated 4 ("very dissimilar") kept apart, and
together/apart per rounded rating.

``--sweep`` reruns with other thresholds, without refinement, and with the word and name
signals off (the embedding-only baseline). ``--representations`` compares article
representations for the embedding alone (no word or name signal, no refinement) over a
threshold grid: best BCubed F1 for each = an oracle threshold.

UCI headlines also report where BCubed loses (``bcubed_losses``: recall lost in each gold
story's main piece, in second pieces and by lone headlines; precision lost by intruders).

Results (figures only, never article text) go to benchmarks/results/stories.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline.stories as stories_module
from pipeline.article_input import read_jsonl
from pipeline.cluster import cluster_records
from pipeline.settings import Settings, StoriesSettings, load_settings
from pipeline.story_text import derive_title

ORDER_SEEDS = (1, 2, 3, 4, 5, 6, 7)
HALVES_SEED = 12
SPLIT_COSINE = 0.85


# ---- metrics --------------------------------------------------------------------------------

def bcubed(gold: dict[str, str], pred: dict[str, str]) -> tuple[float, float, float]:
    """BCubed precision/recall/F1 (Bagga & Baldwin 1998): per item, averaged over items."""
    gold_size = Counter(gold.values())
    pred_size = Counter(pred.values())
    joint = Counter((pred[i], gold[i]) for i in gold)
    precision = sum(joint[(pred[i], gold[i])] / pred_size[pred[i]] for i in gold) / len(gold)
    recall = sum(joint[(pred[i], gold[i])] / gold_size[gold[i]] for i in gold) / len(gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def pairwise(gold: dict[str, str], pred: dict[str, str]) -> tuple[float, float, float]:
    """Precision/recall/F1 over item pairs placed together (counted from cluster sizes)."""
    def pairs(sizes: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in sizes.values())

    together = pairs(Counter((pred[i], gold[i]) for i in gold))
    predicted, true = pairs(Counter(pred[i] for i in gold)), pairs(Counter(gold.values()))
    precision = together / predicted if predicted else 1.0
    recall = together / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _r(values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip(("p", "r", "f1"), (round(v, 4) for v in values), strict=True))


def bcubed_losses(gold: dict[str, str], pred: dict[str, str]) -> dict[str, Any]:
    """Where BCubed recall and precision are lost, as shares that add up to ``1 - R`` and
    ``1 - P``: so a run says which kind of error a change has to fix (docs/decisions.md,
    Stories, session 10).

    Recall: each item loses ``1 - |its piece| / |its gold story|``, where its piece is the
    part of its gold story in its predicted story; counted by where the item sits: in the
    gold story's main piece (the predicted story holding most of it: what the main piece
    misses), in a second piece of 6 or more / 2-5 articles, or alone (the only article of its
    gold story in its predicted story, on its own or inside another story). Precision: each
    item loses ``1 - |its piece| / |its predicted story|``; counted for articles of the
    predicted story's largest gold story and for the others (intruders)."""
    gold_size = Counter(gold.values())
    pred_size = Counter(pred.values())
    joint = Counter((pred[i], gold[i]) for i in gold)
    main: dict[str, tuple[str, int]] = {}  # gold story -> its largest piece's predicted story
    largest: dict[str, tuple[str, int]] = {}  # predicted story -> its largest gold story
    for (story, label), n in sorted(joint.items()):
        if n > main.get(label, ("", 0))[1]:
            main[label] = (story, n)
        if n > largest.get(story, ("", 0))[1]:
            largest[story] = (label, n)
    recall: Counter[str] = Counter()
    precision: Counter[str] = Counter()
    for i in gold:
        piece = joint[(pred[i], gold[i])]
        where = ("main" if main[gold[i]][0] == pred[i] else "alone" if piece == 1
                 else "pieces_2_5" if piece <= 5 else "pieces_6_plus")
        recall[where] += 1 - piece / gold_size[gold[i]]
        precision["majority" if largest[pred[i]][0] == gold[i] else "intruders"] += (
            1 - piece / pred_size[pred[i]])
    pieces = Counter()
    for (story, label), n in joint.items():
        if main[label][0] != story:
            pieces["alone" if n == 1 else "2_5" if n <= 5 else "6_plus"] += 1
    sizable = Counter(story for (story, _), n in joint.items() if n >= 3)
    merged = sum(1 for count in sizable.values() if count >= 2)
    return {"recall_lost": {k: round(recall[k] / len(gold), 4)
                            for k in ("main", "pieces_6_plus", "pieces_2_5", "alone")},
            "precision_lost": {k: round(precision[k] / len(gold), 4)
                               for k in ("majority", "intruders")},
            "gold_stories_whole": sum(1 for label, (_, n) in main.items()
                                      if n == gold_size[label]),
            "second_pieces": {k: pieces[k] for k in ("6_plus", "2_5", "alone")},
            "stories_merging_two": merged}


# ---- an embedding memo (same vectors, computed once) ----------------------------------------

def memoise_encoder(cache: Path | None = None) -> None:
    """Embed each distinct text once; with ``cache``, vectors also persist between runs
    (one ``.npz`` per model, keyed by a hash of the text; written after each new batch)."""
    import hashlib

    from pipeline.embeddings import embedding_key

    original = stories_module.encode_for
    memo: dict[tuple[str, str], np.ndarray] = {}
    stored: dict[str, dict[str, np.ndarray]] = {}

    def digest(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def disk(model: str) -> dict[str, np.ndarray]:
        if model not in stored:
            path = cache / f"vectors-{digest(model)[:12]}.npz" if cache else None
            stored[model] = dict(np.load(path)) if path and path.exists() else {}
        return stored[model]

    def save(model: str) -> None:
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(cache / f"vectors-{digest(model)[:12]}.npz", **disk(model))

    def encode_for(settings: Any, texts: list[str]) -> np.ndarray:
        model = embedding_key(settings.embedding.model, settings.embedding.backend)
        on_disk = disk(model)
        for text in texts:
            if (model, text) not in memo and digest(text) in on_disk:
                memo[(model, text)] = on_disk[digest(text)]
        missing = sorted({t for t in texts if (model, t) not in memo})
        if missing:
            for text, vector in zip(missing, original(settings, missing), strict=True):
                memo[(model, text)] = vector
                on_disk[digest(text)] = vector
            save(model)
        if not texts:
            return original(settings, texts)
        return np.stack([memo[(model, t)] for t in texts])

    stories_module.encode_for = encode_for  # type: ignore[assignment]


# ---- ECB+ -----------------------------------------------------------------------------------

def evaluate_clusters(records: list[dict[str, Any]], settings: Settings, *,
                      losses: bool = False) -> dict[str, Any]:
    """BCubed and pairwise figures of one clustering (``losses``: and where BCubed loses,
    ``bcubed_losses``)."""
    started = time.perf_counter()
    out = cluster_records(records, settings)
    elapsed = time.perf_counter() - started
    gold = {str(r["id"]): str(r["label"]) for r in records}
    pred = {o["id"]: o["story_id"] for o in out}
    result = {"articles": len(records), "events": len(set(gold.values())),
              "stories": len(set(pred.values())),
              "duplicates": sum(1 for o in out if o["duplicate_of"]),
              "seconds": round(elapsed, 1),
              "bcubed": _r(bcubed(gold, pred)), "pairwise": _r(pairwise(gold, pred))}
    if losses:
        result["bcubed_losses"] = bcubed_losses(gold, pred)
    return result


LEAD_WORDS = 30  # a feed item's summary: one sentence, 10-20 terms after stop words


def lead_records(records: list[dict[str, Any]], words: int = LEAD_WORDS
                 ) -> list[dict[str, Any]]:
    """ECB+ articles cut to what a feed item carries: the title and the body's first
    sentence, at most ``words`` words (derived here at run time, never stored; labels are
    still the events). A labelled stand-in for the stream's headline + summary items, the
    "in between" regime of the length-aware score."""
    out = []
    for record in records:
        lead = " ".join(derive_title(record.get("text") or "", limit=10_000).split()[:words])
        out.append({**record, "text": lead})
    return out


def evaluate_orders(records: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """File order (what ``newswatch cluster`` does with the file) and shuffled orders."""
    result = {"file_order": evaluate_clusters(records, settings), "shuffled": {}}
    for seed in ORDER_SEEDS:
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        result["shuffled"][str(seed)] = evaluate_clusters(shuffled, settings)
    scores = [result["file_order"]["bcubed"]["f1"]] + [
        r["bcubed"]["f1"] for r in result["shuffled"].values()]
    result["bcubed_f1_mean_over_orders"] = round(float(np.mean(scores)), 4)
    result["bcubed_f1_min_over_orders"] = round(float(np.min(scores)), 4)
    return result


def sweep(records: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """Other thresholds, signal mixes, split ratios and no refinement around the shipped
    defaults."""
    base = settings.stories.model_dump()
    variants: list[dict[str, Any]] = [{"threshold": t} for t in (0.28, 0.32, 0.34, 0.38)]
    variants += [{"split_ratio": r} for r in (0.0, 0.7, 0.75, 0.85)]
    variants += [{"split_ratio": r, "threshold": t} for r, t in ((0.75, 0.28), (0.75, 0.32),
                                                                (0.0, 0.32))]
    variants += [{"refine_passes": 0}, {"refine_passes": 0, "split_ratio": 0.0}]
    variants += [{"term_weight": tw, "name_weight": nw, "threshold": t}
                 for tw, nw, t in ((0.4, 0.0, 0.40), (0.3, 0.3, 0.34), (0.0, 0.0, 0.55),
                                   (0.0, 0.0, 0.60), (0.0, 0.0, 0.65))]
    keys = ("term_weight", "name_weight", "threshold", "refine_passes", "split_ratio")
    rows = []
    for change in variants:
        conf = {**base, **change}
        trial = settings.model_copy(update={"stories": StoriesSettings(**conf)})
        figures = evaluate_orders(records, trial)
        rows.append({**{k: conf[k] for k in keys},
                     "bcubed_f1_file_order": figures["file_order"]["bcubed"]["f1"],
                     "pairwise_f1_file_order": figures["file_order"]["pairwise"]["f1"],
                     "bcubed_f1_mean_over_orders": figures["bcubed_f1_mean_over_orders"]})
        print("  " + ", ".join(f"{k} {conf[k]}" for k in keys) +
              f": BCubed F1 file order {rows[-1]['bcubed_f1_file_order']:.4f}, mean over "
              f"orders {rows[-1]['bcubed_f1_mean_over_orders']:.4f}, pairwise F1 "
              f"{rows[-1]['pairwise_f1_file_order']:.4f}", flush=True)
    return rows


def compare_representations(records: list[dict[str, Any]],
                            settings: Settings) -> dict[str, Any]:
    """Embedding-only online assignment (the shipped StoryAssigner) per representation."""
    from datetime import UTC, datetime, timedelta

    from pipeline.embeddings import encode, load_model
    from pipeline.story_assignment import StoryAssigner, StoryItem
    from pipeline.story_text import article_text_for_embedding

    tokenizer = load_model(settings.embedding.model).tokenizer
    titles = [r.get("title") or "" for r in records]
    texts = [r.get("text") or "" for r in records]

    def chunks(text: str, size: int = 200, cap: int = 8) -> list[str]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return [tokenizer.decode(ids[i:i + size]) for i in range(0, len(ids), size)][:cap]

    def norm(m: np.ndarray) -> np.ndarray:
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)

    started = {}
    reps: dict[str, np.ndarray] = {}
    for name, inputs in (
            ("title only", titles),
            ("title + lead (shipped)", [article_text_for_embedding(t, x)
                                        for t, x in zip(titles, texts, strict=True)]),
            ("title + body (first 256 word pieces)", [f"{t}\n{x}" for t, x in
                                                      zip(titles, texts, strict=True)])):
        started[name] = time.perf_counter()
        reps[name] = encode(inputs)
        started[name] = time.perf_counter() - started[name]
    pieces, owner = [], []
    for n, text in enumerate(texts):
        for piece in chunks(text):
            pieces.append(piece)
            owner.append(n)
    t0 = time.perf_counter()
    piece_vectors = encode(pieces)
    body = np.zeros_like(reps["title only"])
    np.add.at(body, np.asarray(owner), piece_vectors)
    reps["title + chunked mean of the whole body"] = norm(reps["title only"] + body)
    started["title + chunked mean of the whole body"] = time.perf_counter() - t0

    gold = {str(r["id"]): str(r["label"]) for r in records}
    base = datetime(2000, 1, 1, tzinfo=UTC)
    out: dict[str, Any] = {}
    for name, matrix in reps.items():
        best = (0.0, 0.0)
        for threshold in np.arange(0.40, 0.80, 0.025):
            assigner = StoryAssigner(StoriesSettings(
                term_weight=0.0, name_weight=0.0, refine_passes=0,
                threshold=float(threshold)))
            pred = {}
            for n, record in enumerate(records):
                item = StoryItem(str(record["id"]), titles[n], None,
                                 base + timedelta(seconds=n), matrix[n].astype(np.float32))
                pred[str(record["id"])] = assigner.assign(item).story_id
            best = max(best, (bcubed(gold, pred)[2], float(threshold)))
        out[name] = {"best_bcubed_f1": round(best[0], 4), "at_threshold": round(best[1], 3),
                     "embed_seconds": round(started[name], 1)}
        print(f"  {name}: best BCubed F1 {best[0]:.4f} (threshold {best[1]:.3f}), "
              f"embedding {started[name]:.0f} s", flush=True)
    return out


# ---- UCI headlines --------------------------------------------------------------------------

def evaluate_headlines(records: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Headline-only feed items with their publication times (UCI News Aggregator): the
    stage orders them by time, so the file order does not matter; shuffled file orders only
    change the order of items published in the same second."""
    result = evaluate_clusters(records, settings, losses=True)
    shuffled = records[:]
    random.Random(ORDER_SEEDS[0]).shuffle(shuffled)
    result["bcubed_f1_shuffled_file"] = evaluate_clusters(shuffled, settings)["bcubed"]["f1"]
    result["story_halves"] = story_halves(records, settings)
    return result


def story_halves(records: list[dict[str, Any]], settings: Settings,
                 seed: int = HALVES_SEED) -> dict[str, Any]:
    """Robustness: the labelled stories split into two random halves (seeded), each half
    clustered on its own. Two similar figures mean the defaults do not ride on a few
    stories; each half is also easier than the whole (fewer stories meet in one window)."""
    labels = sorted({str(r["label"]) for r in records})
    random.Random(seed).shuffle(labels)
    first = set(labels[: len(labels) // 2])
    halves = {}
    for name, keep in (("a", True), ("b", False)):
        part = [r for r in records if (str(r["label"]) in first) == keep]
        figures = evaluate_clusters(part, settings)
        halves[name] = {"articles": figures["articles"], "events": figures["events"],
                        "bcubed": figures["bcubed"]}
    return {"seed": seed, **halves}


# ---- the real stream, replayed as daily runs --------------------------------------------------

def replay_stream(path: Path, settings: Settings, cache: Path | None, sample: int,
                  seed: int, audit_out: Path | None,
                  max_items: int | None = None) -> dict[str, Any]:
    """Replay a feed-item stream (gzip JSONL) as one stories run per day through the shipped
    stage (``assign_stories`` over a throwaway store, feed text only: description, else the
    headline; each item's language as ingestion would store it), then draw ``sample`` random
    multi-article stories (seeded) for reading.

    Only figures go into the results; the drawn stories' ids and member headlines go to
    ``audit_out`` (outside the repository: the text belongs to its publishers), to be read and
    judged by a person (verdicts: docs/decisions.md).
    """
    import tempfile
    from datetime import timedelta

    from sqlalchemy import func, select
    from story_scaling import read_stream, stream_vectors

    from pipeline import schema
    from pipeline.language import detect_language
    from pipeline.records import open_store
    from pipeline.stories import assign_stories
    from pipeline.story_text import article_text_for_embedding
    from pipeline.urls import content_hash

    items = read_stream(path)[:max_items]
    vectors = stream_vectors(items, cache)
    known = {article_text_for_embedding(i["title"], i["text"]): v
             for i, v in zip(items, vectors, strict=True)}
    original = stories_module.encode_for

    def encode_for(run_settings: Any, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in known]
        if missing:
            for text, vector in zip(missing, original(run_settings, missing), strict=True):
                known[text] = vector
        return np.stack([known[t] for t in texts]) if texts else original(run_settings, texts)

    stories_module.encode_for = encode_for  # type: ignore[assignment]
    days: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        days[item["time"].date().isoformat()].append(item)
    outcomes: Counter[str] = Counter()  # the story stage's counts, summed over the runs
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="newswatch-replay-") as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'replay.db'}")
        try:
            for day in sorted(days):
                with store.engine.begin() as conn:
                    for item in days[day]:
                        seen = item["time"] + timedelta(minutes=5)
                        source = "title" if item["text"] == item["title"] else "feed"
                        digest = content_hash(item["title"], item["text"])
                        conn.execute(schema.articles.insert().values(
                            article_id=item["id"], source=item["source"], title=item["title"],
                            text=item["text"], text_source=source, published_at=item["time"],
                            # as ingestion stores it: other languages take the cross-lingual path
                            language=detect_language(item["title"], item["text"],
                                                     item["language"]),
                            content_hash=digest, version=1, extraction_status="fallback",
                            first_seen_at=seen, updated_at=seen))
                        conn.execute(schema.article_versions.insert().values(
                            article_id=item["id"], version=1, content_hash=digest,
                            title=item["title"], text=item["text"], text_source=source,
                            seen_at=seen))
                for outcome, n in assign_stories(store, settings).items():
                    outcomes[outcome] += n
                print(f"  {day}: {len(days[day]):,} items", flush=True)
            with store.engine.connect() as conn:
                rows = conn.execute(select_story_members()).all()
                splits = first_day_neighbours(conn)
                folded = conn.execute(select(func.count()).select_from(schema.stories)
                                      .where(schema.stories.c.merged_into.is_not(None))
                                      ).scalar_one()
            if audit_out:  # the replayed records, to read further without replaying
                import sqlite3

                with sqlite3.connect(Path(tmp) / "replay.db") as source, \
                        sqlite3.connect(audit_out.with_suffix(".db")) as copy:
                    source.backup(copy)
        finally:
            store.close()
    stories_module.encode_for = original  # type: ignore[assignment]
    members: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    titles: dict[str, str] = {}
    for story_id, story_title, article_id, title, source, when in rows:
        members[story_id].append((article_id, title, source, str(when)))
        titles[story_id] = story_title
    sizes = Counter(len(m) for m in members.values())
    multi = sorted(sid for sid, m in members.items() if len(m) > 1)
    drawn = random.Random(seed).sample(multi, min(sample, len(multi)))
    if audit_out:
        audit_out.parent.mkdir(parents=True, exist_ok=True)
        with audit_out.open("w", encoding="utf-8") as handle:
            for story_id in drawn:
                handle.write(json.dumps({"story_id": story_id, "title": titles[story_id],
                                         "members": members[story_id]}) + "\n")
        with audit_out.with_suffix(".splits.jsonl").open("w", encoding="utf-8") as handle:
            for day, cosine, left, right in splits:
                handle.write(json.dumps({"day": day, "cosine": cosine, "stories": [
                    {"story_id": sid, "title": titles[sid], "members": members[sid]}
                    for sid in (left, right)]}) + "\n")
    return {"items": len(items), "daily_runs": len(days),
            "seconds": round(time.perf_counter() - started, 1), "stories": len(members),
            "multi_article_stories": len(multi),
            "articles_in_multi_article_stories": sum(len(members[s]) for s in multi),
            "largest_stories": sorted((len(m) for m in members.values()), reverse=True)[:10],
            "singletons": sizes.get(1, 0), "sample": len(drawn), "sample_seed": seed,
            "sample_ids": drawn, "first_day_neighbours": len(splits),
            "story_stage_counts": dict(sorted(outcomes.items())),
            "stored_stories_folded": folded,
            "first_day_neighbour_cosine": SPLIT_COSINE}


def first_day_neighbours(conn: Any) -> list[tuple[str, float, str, str]]:
    """Candidate splits to read: two stories first seen on the same day whose centroids have
    cosine >= ``SPLIT_COSINE`` and that hold five or more articles between them (an event of
    five or more articles cut in two on its first day would show up here)."""
    from sqlalchemy import select

    from pipeline import schema
    from pipeline.embeddings import unpack_vector

    s = schema.stories
    by_day: dict[str, list[tuple[str, int, np.ndarray]]] = defaultdict(list)
    for story_id, first, count, blob in conn.execute(
            select(s.c.story_id, s.c.first_seen_at, s.c.article_count, s.c.centroid)
            .where(s.c.merged_into.is_(None))):  # folded stories hold no articles
        if blob is None:  # a story of other-language articles only: no MiniLM centroid
            continue
        vector = unpack_vector(blob)
        by_day[str(first)[:10]].append((story_id, count, vector / np.linalg.norm(vector)))
    found = []
    for day, stories in sorted(by_day.items()):
        matrix = np.stack([v for _, _, v in stories])
        counts = np.array([c for _, c, _ in stories])
        cosines = np.triu(matrix @ matrix.T, 1)
        for i, j in zip(*np.nonzero(cosines >= SPLIT_COSINE), strict=True):
            if counts[i] + counts[j] >= 5:
                found.append((day, round(float(cosines[i, j]), 3), stories[i][0],
                              stories[j][0]))
    return sorted(found, key=lambda f: -f[1])


def select_story_members() -> Any:
    from sqlalchemy import select

    from pipeline import schema

    a, s = schema.articles, schema.stories
    return (select(a.c.story_id, s.c.title, a.c.article_id, a.c.title, a.c.source,
                   a.c.published_at)
            .join(s, s.c.story_id == a.c.story_id)
            .order_by(a.c.story_id, a.c.published_at, a.c.article_id))


# ---- SemEval pairs --------------------------------------------------------------------------

def evaluate_pairs(pairs: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Each pair clustered on its own: rated 1 should share a story, rated 4 never."""
    together: dict[str, bool] = {}
    for pair in pairs:
        records = [{"id": f"{pair['id']}:{side}", "title": "",
                    "text": pair.get(f"text{side}") or "", "published_at": None}
                   for side in ("1", "2")]
        out = cluster_records(records, settings)
        together[pair["id"]] = out[0]["story_id"] == out[1]["story_id"]
    by_rating: dict[int, Counter] = defaultdict(Counter)
    for pair in pairs:
        by_rating[round(float(pair["overall"]))][
            "together" if together[pair["id"]] else "apart"] += 1
    ones = [together[p["id"]] for p in pairs if float(p["overall"]) == 1.0]
    fours = [together[p["id"]] for p in pairs if float(p["overall"]) == 4.0]
    return {"pairs": len(pairs),
            "rated_1_together": round(sum(ones) / len(ones), 4) if ones else None,
            "rated_1_count": len(ones),
            "rated_4_apart": round(1 - sum(fours) / len(fours), 4) if fours else None,
            "rated_4_count": len(fours),
            "by_rounded_rating": {str(k): dict(v) for k, v in sorted(by_rating.items())}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ECB+ style JSONL with label")
    parser.add_argument("--headlines", type=Path, help="UCI headlines JSONL with label")
    parser.add_argument("--cache", type=Path, help="folder that keeps embeddings between "
                        "runs (vectors only)")
    parser.add_argument("--stream", type=Path, help="gzip JSONL feed items (shared stream/): "
                        "replay as daily runs and draw stories to read")
    parser.add_argument("--audit-out", type=Path, help="where the drawn stories' headlines "
                        "go (outside the repository)")
    parser.add_argument("--audit-sample", type=int, default=30)
    parser.add_argument("--audit-seed", type=int, default=12,
                        help="seed of the random draw of stories to read (a new audit: a new "
                        "seed)")
    parser.add_argument("--max-items", type=int, help="only the stream's first N items")
    parser.add_argument("--only-stream", action="store_true",
                        help="skip ECB+/UCI/SemEval (keep their figures in --json)")
    parser.add_argument("--pairs", type=Path, help="SemEval-2022 pairs JSONL")
    parser.add_argument("--part", action="append",
                        choices=("ecbplus", "ecbplus-lead", "headlines", "pairs"),
                        help="run only these parts (repeatable; default: every part whose "
                        "data is given), e.g. to run them as separate processes")
    parser.add_argument("--config", type=Path, help="newswatch config (default: defaults)")
    parser.add_argument("--sweep", action="store_true", help="also try other settings")
    parser.add_argument("--representations", action="store_true",
                        help="compare article representations (embedding only)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/stories.json"))
    args = parser.parse_args()
    settings = load_settings(args.config)
    memoise_encoder(args.cache)
    records = read_jsonl(args.data)
    result: dict[str, Any] = {}
    if args.only_stream and args.json.exists():
        result = json.loads(args.json.read_text(encoding="utf-8"))
    result.update({"defaults": settings.stories.model_dump(),
                   "machine": f"{platform.machine()}, {platform.python_version()}"})
    if args.stream:
        print(f"Replaying {args.stream.name} as daily runs:", flush=True)
        result["stream_replay"] = replay_stream(args.stream, settings, args.cache,
                                                args.audit_sample, args.audit_seed,
                                                args.audit_out,
                                                args.max_items)
        print(f"Stream replay: {json.dumps(result['stream_replay'])}")
    if args.only_stream:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0
    parts = set(args.part or ("ecbplus", "ecbplus-lead", "headlines", "pairs"))
    if "ecbplus" in parts:
        result["ecbplus"] = evaluate_orders(records, settings)
        file_order = result["ecbplus"]["file_order"]
        print(f"ECB+ ({file_order['articles']} articles, {file_order['events']} events), file "
              f"order: {json.dumps(file_order)}")
        ecb = result["ecbplus"]
        print(f"  BCubed F1 over {1 + len(ORDER_SEEDS)} orders: mean "
              f"{ecb['bcubed_f1_mean_over_orders']}, min {ecb['bcubed_f1_min_over_orders']}")
    if "ecbplus-lead" in parts:
        result["ecbplus_lead"] = evaluate_clusters(lead_records(records), settings)
        print(f"ECB+ cut to title + first sentence ({LEAD_WORDS} words at most), file order: "
              f"{json.dumps(result['ecbplus_lead'])}")
    if args.headlines and "headlines" in parts:
        result["uci_headlines"] = evaluate_headlines(read_jsonl(args.headlines), settings)
        print(f"UCI headlines: {json.dumps(result['uci_headlines'])}")
    if args.sweep:
        result["sweep"] = sweep(records, settings)
    if args.representations:
        result["representations"] = compare_representations(records, settings)
    if args.pairs and "pairs" in parts:
        result["semeval"] = evaluate_pairs(read_jsonl(args.pairs), settings)
        print(f"SemEval pairs: {json.dumps(result['semeval'])}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
