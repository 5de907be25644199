"""Article-extraction quality and speed on the article-extraction-benchmark pages.

    .venv/bin/python benchmarks/extraction.py --data ../shared/data/extraction/aeb-dev

DATA holds ``html/<id>.html.gz`` and ``ground-truth.json`` (``{id: {"articleBody", "url"}}``),
the layout of scrapinghub/article-extraction-benchmark. Scores follow that benchmark's
evaluate.py, re-implemented here: text -> ``\\w+`` tokens -> 4-token shingles; per page, the
shingle multisets give TP/FP/FN; precision is averaged over pages with a non-empty prediction,
recall over pages with a non-empty reference, and F1 is the harmonic mean of those two means
(not a mean of per-page F1s). ±CI is 1.96 × the bootstrap standard deviation over pages, as
there. A plain bag-of-words (unigram) F1 per page, averaged, is reported beside it.

Each configuration runs through ``pipeline.extractors.extract_html`` exactly as the pipeline calls
it (decoding and metadata included in the timing), one page at a time in this process; the one
"bare" row calls ``trafilatura.extract()`` alone, as AEB's runner does, for comparison with
published figures. Speed is pages per CPU-second of this process, so that other jobs on a
shared machine skew it less than wall time (also reported).
Results (figures only, never page text) go to benchmarks/results/extraction.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trafilatura

from pipeline.extractors import decode_html, extract_html, looks_paywalled
from pipeline.models import ExtractedArticle

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "extraction.json"
_TOKEN = re.compile(r"\w+")
SHINGLE_N = 4
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True, slots=True)
class Config:
    """One row of the results table: an engine, its options, with or without fallback."""

    name: str
    engine: str
    fallback: bool = False
    trafilatura_options: dict[str, bool] | None = None
    min_text_chars: int = 200
    bare: bool = False  # call trafilatura.extract() directly, as AEB's own runner does


TRAFILATURA_VARIANTS: dict[str, dict[str, bool]] = {
    "trafilatura": {"favor_precision": False, "favor_recall": False, "include_tables": True},
    "trafilatura-precision": {"favor_precision": True, "include_tables": True},
    "trafilatura-recall": {"favor_recall": True, "include_tables": True},
    "trafilatura-no-tables": {"include_tables": False},
    "trafilatura-fast": {"fast": True, "include_tables": True},
    "trafilatura-precision-fast": {"favor_precision": True, "fast": True, "include_tables": True},
    "trafilatura-precision-no-tables": {"favor_precision": True, "include_tables": False},
}


def configs_for(engines: list[str]) -> list[Config]:
    """Trafilatura variants (first: library defaults, the baseline), a bare library call for
    comparison with AEB's published runs, newspaper, then extract_html's fallback modes."""
    configs: list[Config] = []
    if "trafilatura" in engines:
        configs += [Config(name, "trafilatura", trafilatura_options=opts)
                    for name, opts in TRAFILATURA_VARIANTS.items()]
        configs.append(Config("trafilatura.extract() bare (reference)", "trafilatura", bare=True))
    if "newspaper" in engines:
        configs.append(Config("newspaper", "newspaper"))
    if set(engines) >= {"trafilatura", "newspaper"}:
        configs += [
            Config("auto (trafilatura, then newspaper if empty)", "trafilatura", fallback=True,
                   min_text_chars=1),
            Config("auto (trafilatura, then newspaper if <200 chars)", "trafilatura",
                   fallback=True, min_text_chars=200),
            Config("auto (newspaper, then trafilatura if <200 chars)", "newspaper",
                   fallback=True, min_text_chars=200),
        ]
    return configs


# ---------------------------------------------------------------------------- scoring


def _shingles(text: str, n: int) -> Counter[tuple[str, ...]]:
    tokens = _TOKEN.findall(text or "")
    if not tokens:
        return Counter()
    if len(tokens) < n:
        return Counter([tuple(tokens)])  # a short text is one shingle, as in the benchmark
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def page_counts(reference: str, prediction: str, n: int = SHINGLE_N) -> tuple[float, float, float]:
    """(TP, FP, FN) over shingle multisets, scaled to sum to 1 so long pages weigh the same."""
    ref, pred = _shingles(reference, n), _shingles(prediction, n)
    tp = float(sum((ref & pred).values()))
    fp = float(sum((pred - ref).values()))
    fn = float(sum((ref - pred).values()))
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return tp / (tp + fp) if tp + fp else 0.0


def _recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return tp / (tp + fn) if tp + fn else 0.0


def aggregate(counts: list[tuple[float, float, float]]) -> dict[str, float]:
    """Benchmark-style P/R/F1: means over pages, then F1 of the means."""
    precisions = [_precision(*c) for c in counts if c[0] + c[1] > 0]
    recalls = [_recall(*c) for c in counts if c[0] + c[2] > 0]
    precision = statistics.mean(precisions) if precisions else 0.0
    recall = statistics.mean(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def with_bootstrap(counts: list[tuple[float, float, float]], seed: int = 0) -> dict[str, float]:
    metrics = aggregate(counts)
    rng = random.Random(seed)  # same resamples for every configuration: CIs are comparable
    samples: dict[str, list[float]] = {key: [] for key in metrics}
    for _ in range(BOOTSTRAP_ROUNDS):
        resample = [counts[rng.randrange(len(counts))] for _ in counts]
        for key, value in aggregate(resample).items():
            samples[key].append(value)
    for key, values in samples.items():
        metrics[f"{key}_ci"] = 1.96 * statistics.stdev(values)
    return metrics


def unigram_f1(reference: str, prediction: str) -> float:
    ref, pred = Counter(_TOKEN.findall(reference)), Counter(_TOKEN.findall(prediction))
    common = sum((ref & pred).values())
    if not common:
        return 0.0
    p, r = common / sum(pred.values()), common / sum(ref.values())
    return 2 * p * r / (p + r)


# ---------------------------------------------------------------------------- running


def load_pages(data: Path) -> list[tuple[str, str, bytes, str]]:
    """(id, url, html bytes, reference text) for every page with ground truth."""
    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for page_id in sorted(truth):
        path = data / "html" / f"{page_id}.html.gz"
        pages.append((page_id, truth[page_id].get("url"), gzip.decompress(path.read_bytes()),
                      truth[page_id].get("articleBody") or ""))
    return pages


def run_config(config: Config, pages: list[tuple[str, str, bytes, str]],
               ) -> tuple[dict[str, Any], list[tuple[float, float, float]]]:
    def extract(html: bytes, url: str) -> Any:
        if config.bare:
            text = trafilatura.extract(decode_html(html), include_comments=False) or ""
            return ExtractedArticle(None, text, [], None, None, "trafilatura")
        return extract_html(html, url, engine=config.engine, fallback=config.fallback,
                            min_text_chars=config.min_text_chars,
                            trafilatura_options=config.trafilatura_options)

    counts, unigram, engines_used = [], [], Counter()
    errors = empty = 0
    wall = cpu = 0.0
    for _page_id, url, html, reference in pages:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        try:
            article = extract(html, url)
            text = article.text
            engines_used[article.engine] += 1
        except Exception:  # counted, never fatal: one page must not stop the benchmark
            text = ""
            errors += 1
        cpu += time.process_time() - start_cpu
        wall += time.perf_counter() - start_wall
        empty += not text.strip()
        counts.append(page_counts(reference, text))
        unigram.append(unigram_f1(reference, text))
    result: dict[str, Any] = {
        "engine": config.engine,
        "fallback": config.fallback,
        "min_text_chars": config.min_text_chars if config.fallback else None,
        "trafilatura_options": config.trafilatura_options,
        **with_bootstrap(counts),
        "unigram_f1_mean": statistics.mean(unigram),
        "pages": len(pages),
        "pages_per_s": len(pages) / cpu if cpu else 0.0,
        "pages_per_s_wall": len(pages) / wall if wall else 0.0,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "errors": errors,
        "empty": empty,
        "text_from": dict(engines_used),
    }
    return result, counts


def paired_difference(counts: list[tuple[float, float, float]],
                      baseline: list[tuple[float, float, float]],
                      seed: int = 0) -> dict[str, float]:
    """F1 minus the baseline's, with a paired bootstrap CI (same pages in both resamples)."""
    rng = random.Random(seed)
    diffs = []
    for _ in range(BOOTSTRAP_ROUNDS):
        picks = [rng.randrange(len(counts)) for _ in counts]
        diffs.append(aggregate([counts[i] for i in picks])["f1"]
                     - aggregate([baseline[i] for i in picks])["f1"])
    return {"f1_minus_baseline": aggregate(counts)["f1"] - aggregate(baseline)["f1"],
            "f1_minus_baseline_ci": 1.96 * statistics.stdev(diffs)}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="aeb-style dataset directory")
    parser.add_argument("--engines", default="trafilatura,newspaper",
                        help="comma-separated: trafilatura,newspaper")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help="where to write results")
    parser.add_argument("--only", help="run only configurations whose name contains this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("trafilatura", "htmldate", "newspaper", "courlan", "readability", "justext"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)

    load_at_start = os.getloadavg()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    pages = load_pages(args.data)
    configs = [c for c in configs_for(engines) if not args.only or args.only in c.name]
    for engine in engines:  # warm-up: imports and lazy caches stay out of the timing
        extract_html(pages[0][2], pages[0][1], engine=engine, fallback=False)

    results: dict[str, Any] = {}
    baseline: list[tuple[float, float, float]] | None = None
    print(f"{'configuration':<50} {'P':>6} {'R':>6} {'F1':>6} {'±':>6} {'ΔF1':>7} {'±':>6} "
          f"{'uniF1':>6} {'cpu p/s':>7} {'wall p/s':>8} {'err':>3} {'empty':>5}")
    for config in configs:
        row, counts = run_config(config, pages)
        baseline = baseline or counts  # the first row (trafilatura's defaults) is the baseline
        row.update(paired_difference(counts, baseline))
        results[config.name] = row
        print(f"{config.name:<50} {row['precision']:6.3f} {row['recall']:6.3f} {row['f1']:6.3f} "
              f"{row['f1_ci']:6.3f} {row['f1_minus_baseline']:+7.3f} "
              f"{row['f1_minus_baseline_ci']:6.3f} {row['unigram_f1_mean']:6.3f} "
              f"{row['pages_per_s']:7.1f} {row['pages_per_s_wall']:8.1f} {row['errors']:3d} "
              f"{row['empty']:5d}", flush=True)

    # Every AEB page carries its full text, so each page flagged here is a false alarm.
    flagged = sum(looks_paywalled(html) for _id, _url, html, _ref in pages)
    print(f"looks_paywalled flags {flagged} of {len(pages)} pages (all have their full text)")
    report = {
        "dataset": args.data.name,
        "pages": len(pages),
        "looks_paywalled_flagged": flagged,
        "metric": "article-extraction-benchmark: 4-token shingles, mean P / mean R, F1 of means",
        "baseline": next(iter(results), None),
        "timing": "pages_per_s = pages / CPU seconds of this process (robust to a shared "
                  "machine); pages_per_s_wall = pages / wall seconds",
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "machine": platform.machine(),
            "trafilatura": version("trafilatura"),
            "newspaper4k": version("newspaper4k"),
        },
        "results": _rounded(results),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
