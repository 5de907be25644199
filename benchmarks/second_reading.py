"""A second reading of the Taiwan relevance labels: what would a careful reader score against them?

    .venv/bin/python benchmarks/second_reading.py \\
        --data ../shared/data/relevance/taiwan-developments-2007-2011.jsonl

The relevance benchmark judges the scorer against one labeller's reading of the rubric
(``RUBRIC-taiwan-developments.md``). How far any scorer can get depends on how reproducible
that reading is, so articles were drawn by stratum (the file's kind × confidence: Dh, Dl, Fh,
Fl, Mh, Ml) and read again by readers who saw neither the file's labels nor each other's,
each judging the excerpt the rubric names (``excerpt``: title, length, number of mentions,
the first 120 words and the later sentences naming Taiwan or Taipei).
``benchmarks/data/relevance-second-reading.json`` holds the readings: row numbers in DATA and
each reader's kind and confidence, never text.

Reported: per stratum, the share of readings that call an article D; those shares weighted
by the stratum sizes in DATA, as the precision, recall and F1 a reader would score against
the file under the relevance benchmark's counting (the rows the labeller did not read, one
passing mention deep in the text, count as M for both), with a bootstrap interval over the
drawn articles; how often two readers of one draw agree. With ``relevance.json`` beside the
results, the scorer's cross-validated share per stratum is printed next to the readers'.

``--excerpts-out FILE`` writes the excerpts of the drawn rows, in the order read, for a new
reader (outside the repository: the text is the publisher's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
READINGS = HERE / "data" / "relevance-second-reading.json"
DEFAULT_OUT = HERE / "results" / "relevance_second_reading.json"
RELEVANCE_RESULTS = HERE / "results" / "relevance.json"
STRATA = ("Dh", "Dl", "Fh", "Fl", "Mh", "Ml")
LEAD_WORDS = 120  # the rubric's "first 120 words"
MAX_LATER_SENTENCES = 25
BOOTSTRAP = 2000
_MENTION = re.compile(r"(?<!\w)(taiwan|taipei)", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def stratum(row: dict[str, Any]) -> str:
    return f"{row['kind']}{row['conf']}"


def excerpt(row: dict[str, Any]) -> str:
    """The view the rubric says a label is judged from."""
    words = row["text"].split()
    later = [s for s in _SENTENCE.split(" ".join(words[LEAD_WORDS:])) if _MENTION.search(s)]
    mentions = len(_MENTION.findall(f"{row['title']} {row['text']}"))
    return "\n".join([
        f"TITLE: {row['title']}",
        f"WORDS: {len(words)}  MENTIONS of Taiwan/Taipei: {mentions}",
        f"FIRST {LEAD_WORDS} WORDS: {' '.join(words[:LEAD_WORDS])}",
        "LATER SENTENCES NAMING TAIWAN/TAIPEI:",
        *(f"- {s}" for s in later[:MAX_LATER_SENTENCES])])


def stratum_sizes(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Articles per stratum among those the labeller read (the others are M for everyone)."""
    sizes = dict.fromkeys(STRATA, 0)
    for row in rows:
        if row.get("labelled", True):
            sizes[stratum(row)] += 1
    return sizes


def readings_by_stratum(samples: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
                        ) -> dict[str, list[list[bool]]]:
    """stratum -> one list per drawn article: each reader's verdict, True = D."""
    out: dict[str, list[list[bool]]] = {s: [] for s in STRATA}
    for sample in samples:
        for row_number, *kinds in sample["rows"]:
            out[stratum(rows[row_number])].append([k.startswith("D") for k in kinds])
    return out


def weighted_prf(shares: dict[str, float], sizes: dict[str, int]) -> dict[str, float]:
    """Precision, recall and F1 against the file of a reader who calls D the given share of
    each stratum: positives are the D strata, every other stratum's D calls are errors."""
    tp = sum(sizes[s] * shares[s] for s in STRATA if s.startswith("D"))
    fn = sum(sizes[s] * (1 - shares[s]) for s in STRATA if s.startswith("D"))
    fp = sum(sizes[s] * shares[s] for s in STRATA if not s.startswith("D"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "fn": fn}


def shares_of(readings: dict[str, list[list[bool]]]) -> dict[str, float]:
    """Share of all readings in each stratum that say D."""
    out = {}
    for s, articles in readings.items():
        calls = [v for verdicts in articles for v in verdicts]
        if not calls:
            raise ValueError(f"no readings of stratum {s}: it cannot be weighted")
        out[s] = sum(calls) / len(calls)
    return out


def bootstrap(readings: dict[str, list[list[bool]]], sizes: dict[str, int], seed: int = 0,
              rounds: int = BOOTSTRAP) -> dict[str, list[float]]:
    """95 % intervals of the weighted figures, drawing the read articles again per stratum."""
    rng = random.Random(seed)
    figures: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for _ in range(rounds):
        drawn = {s: [rng.choice(a) for _ in a] for s, a in readings.items()}
        prf = weighted_prf(shares_of(drawn), sizes)
        for key, values in figures.items():
            values.append(prf[key])
    out = {}
    for key, values in figures.items():
        values.sort()
        out[key] = [round(values[int(0.025 * rounds)], 3), round(values[int(0.975 * rounds)], 3)]
    return out


def agreement(samples: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """Per draw: articles, how often its readers agree on D / not D, and how often each
    agrees with the file."""
    out = []
    for sample in samples:
        verdicts = [[k.startswith("D") for k in kinds] for _, *kinds in sample["rows"]]
        truth = [rows[r]["kind"] == "D" for r, *_ in sample["rows"]]
        out.append({"draw": sample["name"], "articles": len(verdicts),
                    "readers_agree": sum(len(set(v)) == 1 for v in verdicts),
                    "each_agrees_with_file": {
                        name: sum(v[i] == t for v, t in zip(verdicts, truth, strict=True))
                        for i, name in enumerate(sample["readers"])}})
    return out


def scorer_shares(results: Path) -> dict[str, float] | None:
    """The scorer's cross-validated share predicted relevant per stratum, when the relevance
    benchmark's results hold it."""
    if not results.exists():
        return None
    per_kind = json.loads(results.read_text(encoding="utf-8")).get("cv", {}).get("per_kind")
    if not per_kind:
        return None
    return {s: cell["predicted_mean"] / cell["rows"] for s, cell in per_kind.items()
            if cell["rows"]}


def load_rows(path: Path, expected_sha256: str) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise SystemExit(f"{path} is not the file that was read (sha256 differs): the row "
                         "numbers of the readings would point at other articles")
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="taiwan-developments-2007-2011.jsonl (the file that was read)")
    parser.add_argument("--readings", type=Path, default=READINGS)
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help="where to write results")
    parser.add_argument("--excerpts-out", type=Path, default=None, metavar="FILE",
                        help="write the drawn rows' excerpts here for a new reader (outside "
                        "the repository)")
    args = parser.parse_args(argv)
    doc = json.loads(args.readings.read_text(encoding="utf-8"))
    rows = load_rows(args.data, doc["data_sha256"])
    samples = doc["samples"]
    if args.excerpts_out is not None:
        items = [r for sample in samples for r, *_ in sample["rows"]]
        args.excerpts_out.write_text("\n\n".join(
            f"=== item {n} ===\n{excerpt(rows[r])}" for n, r in enumerate(items, 1)) + "\n",
            encoding="utf-8")
        print(f"wrote {len(items)} excerpts to {args.excerpts_out}")
    sizes = stratum_sizes(rows)
    readings = readings_by_stratum(samples, rows)
    shares = shares_of(readings)
    reader = weighted_prf(shares, sizes)
    scorer = scorer_shares(RELEVANCE_RESULTS)
    out = {
        "articles_read": sum(len(a) for a in readings.values()),
        "readings": sum(len(v) for a in readings.values() for v in a),
        "stratum_sizes": sizes,
        "per_stratum": {s: {"articles": len(readings[s]),
                            "readings": sum(len(v) for v in readings[s]),
                            "share_called_d": round(shares[s], 3),
                            **({"scorer_cv_share": round(scorer[s], 3)}
                               if scorer and s in scorer else {})} for s in STRATA},
        "reader_vs_file": {k: round(v, 3) for k, v in reader.items()},
        "reader_vs_file_95": bootstrap(readings, sizes),
        "agreement": agreement(samples, rows),
    }
    print(f"{out['articles_read']} articles, {out['readings']} readings")
    for s, cell in out["per_stratum"].items():
        scorer_note = (f", scorer (CV) {cell['scorer_cv_share']:.3f}"
                       if "scorer_cv_share" in cell else "")
        print(f"  {s} ({sizes[s]} in the file): {cell['articles']} read, readers call D "
              f"{cell['share_called_d']:.3f}{scorer_note}")
    r, ci = out["reader_vs_file"], out["reader_vs_file_95"]
    print(f"a reader against the file: P {r['precision']:.3f} {ci['precision']}, "
          f"R {r['recall']:.3f} {ci['recall']}, F1 {r['f1']:.3f} {ci['f1']}")
    for draw in out["agreement"]:
        print(f"  {draw['draw']}: readers agree on {draw['readers_agree']} of "
              f"{draw['articles']}; with the file: {draw['each_agrees_with_file']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
