"""Watch relevance: is an article a development on the watched topic, or a mere mention?

    .venv/bin/python benchmarks/relevance.py \\
        --data ../shared/data/relevance/taiwan-developments-2007-2011.jsonl

DATA is JSONL with ``id, title, text, label`` (and ``published_at``): Guardian articles
2007–2011 that mention Taiwan. In ``taiwan-developments-2007-2011.jsonl`` label 1 = a
Taiwan-related development by the rubric (kind D; F = feature, M = mention; ``conf`` h/l),
and ``tag_taiwan`` = the editors' "Taiwan" tag, reported as a second view for continuity; in
the older ``guardian-taiwan-2007-2011.jsonl`` label = the tag, and the second view is the
tags corrected by ``AUDIT``. Every article is scored by ``pipeline.relevance.score_records``
with the shipped watch (``--watch taiwan`` = ``default_taiwan_watch()``) exactly as the
pipeline scores it.

Reported: precision/recall/F1 at the watch's ``min_score``, a threshold sweep, baselines
(any "Taiwan" mention; the best "≥ k mentions" rules), per-year and per-kind figures, and
cross-validated figures in which the logistic coefficients *and* the threshold are refitted
on the training part only: repeated stratified 5-fold (10 × 5) and a time split (fit
2007–2009, test 2010–2011, and the reverse). The threshold picked on each training part
maximises F1. When the watch has a fitted model (pipeline/watch_model.py; the built-in
taiwan one), the shipped scores use it and the headline CV refits it whole on each training
part: the learned term on the lead and passage embeddings (cross-fitted, its strength picked
on the training part), the coefficients beside it and the threshold. ``--fit`` refits the
shipped (generic) coefficients on the whole set, picks the threshold on it by the same rule
and prints the constants to ship (the intercept shifted so that 0.5 is that threshold);
``--write-model PATH`` fits the watch model on the whole set and writes it. The CV also
refits the features of scorer versions 2–5 (version 5 also with the term and on the time
split), for comparison. A
summary-only view scores title + the first 50 words of each article, as the pipeline sees an
article whose page could not be read (feed summary only).

Results (figures and ids only, never article text) go to benchmarks/results/relevance.json.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.embeddings import DEFAULT_MODEL, EmbeddingSpec, encode
from pipeline.relevance import (
    FEATURES,
    INTERCEPT,
    SHIPPED_WEIGHTS,
    RelevanceScore,
    default_taiwan_watch,
    embed_records,
    keyword_evidence,
    passage_text,
    score_text,
    semantic_text,
)
from pipeline.settings import WatchConfig
from pipeline.watch_model import (
    SCORER_C,
    WatchModel,
    find_watch_model,
    fit_watch_model,
    fit_with_term,
    load_watch_model,
    pick_threshold,
    save_watch_model,
    stratified_folds,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "relevance.json"
SWEEP = [round(0.05 * i, 2) for i in range(1, 20)]
FOLDS, REPEATS = 5, 10
SUMMARY_WORDS = 50  # the summary-only view: title + this many words
_MENTION = re.compile(r"(?<!\w)taiwan", re.IGNORECASE)  # "Taiwan", "Taiwan's", "Taiwanese"
_GUARDIAN = "https://www.theguardian.com/"

# Tag errors found by reading the article (title and lead), restricted to a candidate set
# fixed by rule, not by any model: every positive, and every negative with "Taiwan" in the
# title or 8+ mentions. Only clear cases were flipped; borderline ones keep their tag.
# 1 = Taiwan is the subject but the article is untagged (politics, cross-strait, UN bid);
# 0 = tagged but Taiwan is incidental (one passing mention, a Taiwanese company's plant in
# China, an obituary of a Chinese diplomat).
AUDIT: dict[str, int] = {
    "world/2007/nov/14/international.mainsection2": 1,
    "world/2008/oct/07/china.usa": 1,
    "world/2008/oct/21/taiwan-china": 1,
    "world/2008/nov/05/beijing-taipei-trade-deal": 1,
    "world/2008/nov/12/chen-arrest-taiwan": 1,
    "world/2009/mar/26/former-taiwan-president-graft-trial-begins": 1,
    "world/2009/jul/27/china-taiwan-presidents-contact": 1,
    "world/2009/aug/19/typhoon-morakot-taiwan-resignations": 1,
    "world/2008/jun/16/japan.china": 1,
    "football/2007/mar/09/sport.cricket": 1,
    "commentisfree/2007/sep/03/comment.comment": 1,
    "commentisfree/2007/aug/08/thechinasyndrome": 1,
    "commentisfree/2007/sep/17/bullyinganddiplomacy": 1,
    "sustainable-business/taiwan-tough-water-choices": 1,
    "world/2010/may/21/us-japan-airbase-okinawa-relocation": 0,
    "world/2011/mar/11/tsunami-waves-reach-hawaii": 0,
    "world/2010/aug/02/global-reach-neo-nazis": 0,
    "culture/2010/dec/14/lapita-oceanic-ancestors-paris-review": 0,
    "world/2011/jun/14/china-vietnam-dispute-military-exercise": 0,
    "world/2010/feb/18/obama-meets-dalai-lama": 0,
    "media/greenslade/2011/sep/27/phone-hacking-theguardian": 0,
    "commentisfree/2011/aug/02/foxconn-robots-worker-suicides": 0,
    "world/2011/aug/10/china-aircraft-carrier-launch": 0,
    "media/pda/2010/feb/04/online-tv-digital-media": 0,
    "world/us-embassy-cables-documents/199393": 0,
    "world/2010/nov/25/huang-hua-obituary": 0,
    "world/2010/jan/27/china-company-reward-worker-death": 0,
    "world/2010/may/28/foxconn-plant-china-deaths-suicides": 0,
}

RULES = {"best mention-count rule": "≥ {k} mentions",
         "best title-or-count rule": "in title or ≥ {k} mentions",
         "best title-and-count rule": "in title and ≥ {k} mentions"}
WATCHES: dict[str, Callable[[], WatchConfig]] = {"taiwan": default_taiwan_watch}


def load(path: Path) -> list[dict[str, Any]]:
    """Rows with HTML entities decoded (the Guardian API text carries ``&quot;`` etc.)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                row["title"] = html.unescape(row.get("title") or "")
                row["text"] = html.unescape(row.get("text") or "")
                rows.append(row)
    return rows


def prf(predicted: Sequence[bool], labels: Sequence[int]) -> dict[str, float]:
    tp = sum(1 for p, y in zip(predicted, labels, strict=True) if p and y)
    fp = sum(1 for p, y in zip(predicted, labels, strict=True) if p and not y)
    fn = sum(1 for p, y in zip(predicted, labels, strict=True) if not p and y)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3),
            "tp": tp, "fp": fp, "fn": fn}


def _vectors(watch: WatchConfig, rows: list[dict[str, Any]], spec: EmbeddingSpec,
             cache: Path | None) -> tuple[np.ndarray, bool]:
    """``[lead | passage]`` per row (zeros without keyword evidence: never embedded) and
    whether they came from ``cache``; encoded as the pipeline encodes them
    (``embed_records``) when there is no cache."""
    if cache is None:
        embedded = embed_records(watch, rows, spec)
        vectors = np.zeros((len(rows), 2 * embedded.leads.shape[1]), dtype=np.float32)
        vectors[embedded.rows] = np.hstack([embedded.leads, embedded.passages])
        return vectors, False
    evidence = [keyword_evidence(watch, row["title"], row["text"]) for row in rows]
    leads = [semantic_text(row["title"], row["text"]) for row in rows]
    passages = [passage_text(ev, row["title"], row["text"])
                for ev, row in zip(evidence, rows, strict=True)]
    key = hashlib.sha256("\x1f".join([spec.model, *leads, *passages]).encode("utf-8")
                         ).hexdigest()
    vectors = None
    if cache.exists():
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                vectors = stored["vectors"]
    cached = vectors is not None
    if vectors is None:
        vectors = encode(leads + passages, spec.model, spec.device, backend=spec.backend)
        with cache.open("wb") as handle:
            np.savez(handle, key=np.array(key), vectors=vectors)
    n = len(rows)
    both = np.hstack([vectors[:n], vectors[n:]])
    both[[not (ev.total and not ev.excluded) for ev in evidence]] = 0.0  # never embedded
    return both, cached


def rescore(watch: WatchConfig, rows: list[dict[str, Any]], vectors: np.ndarray,
            spec: EmbeddingSpec, watch_model: WatchModel | None) -> list[RelevanceScore]:
    """``score_text`` per row on the given vectors (the same scores as ``score_records``);
    a row without keyword evidence is scored without them, as in the pipeline."""
    dim = vectors.shape[1] // 2
    out = []
    for row, vector in zip(rows, vectors, strict=True):
        embedded = bool(np.any(vector))
        out.append(score_text(watch, row["title"], row["text"],
                              embedding=vector[:dim] if embedded else None,
                              passage_embedding=vector[dim:] if embedded else None,
                              spec=spec, watch_model=watch_model))
    return out


Params = tuple[float, np.ndarray]  # (intercept, weights)
C = SCORER_C  # L2 strength, as for scorer version 2 (picked then by CV among 0.3 … 100)
def _columns(*names: str) -> list[int]:
    return [FEATURES.index(name) for name in names]


# Ablations: the features of earlier scorer versions
V2_COLUMNS = _columns("title", "share", "early", "semantic")  # no section, passage
V3_COLUMNS = _columns("title", "share", "early", "section", "semantic", "passage_semantic")
V4_COLUMNS = _columns("title", "share", "early", "section", "evidence", "semantic",
                      "passage_semantic")  # no title_evidence
V5_COLUMNS = _columns("title", "share", "early", "section", "evidence", "title_evidence",
                      "semantic", "passage_semantic")  # no genre cues (reporting, personal)
SEMANTIC_COLUMNS = _columns("semantic", "passage_semantic")
Rule = Callable[[np.ndarray], np.ndarray]  # rows -> predicted relevant


def features(scores: list[RelevanceScore]) -> tuple[np.ndarray, np.ndarray]:
    """(X, has_evidence): the shipped features (``FEATURES``), and a mask of the rows with
    keyword evidence (the others score ~0 in the pipeline too and are left out of every
    fit)."""
    x = np.zeros((len(scores), len(FEATURES)))
    mask = np.zeros(len(scores), dtype=bool)
    for i, s in enumerate(scores):
        if s.semantic is not None and s.passage_semantic is not None:
            x[i] = (*s.evidence.features(), s.semantic, s.passage_semantic)
            mask[i] = True
    return x, mask


def fit(x: np.ndarray, y: np.ndarray) -> Params:
    """Plain L2 logistic regression, as the shipped constants were fitted."""
    from sklearn.linear_model import LogisticRegression  # pinned in requirements.txt

    model = LogisticRegression(C=C, max_iter=2000).fit(x, y)
    return float(model.intercept_[0]), model.coef_[0]


def predict(params: Params, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    intercept, weights = params
    return np.where(mask, 1.0 / (1.0 + np.exp(-(intercept + x @ weights))), 0.0)


def fit_rule(x: np.ndarray, mask: np.ndarray, y: np.ndarray, train: np.ndarray,
             vectors: np.ndarray | None = None) -> tuple[Rule, float]:
    """(rule, threshold) fitted on the rows ``train`` only: the coefficients and the
    threshold, and with ``vectors`` the learned term too (``fit_with_term``, as a watch
    model is fitted)."""
    if vectors is None:
        params = fit(x[train][mask[train]], y[train][mask[train]])
        threshold = pick_threshold(predict(params, x[train], mask[train]), y[train])
        return (lambda rows: predict(params, x[rows], mask[rows]) >= threshold), threshold
    fitted = fit_with_term(x[train], vectors[train], y[train], mask[train])

    def rule(rows: np.ndarray) -> np.ndarray:
        term = vectors[rows] @ fitted.term_weights + fitted.term_bias
        logit = fitted.intercept + np.column_stack([x[rows], term]) @ fitted.weights
        return mask[rows] & (logit >= 0)

    return rule, fitted.threshold


def cross_validate(x: np.ndarray, mask: np.ndarray, y: np.ndarray,
                   judged: np.ndarray | None = None,
                   vectors: np.ndarray | None = None,
                   strata: Sequence[str] | None = None) -> dict[str, Any]:
    """Repeated stratified k-fold; coefficients and threshold (and with ``vectors`` the
    learned term) refitted on each training part (always on the labels ``y``); predictions
    judged against ``judged`` (default: ``y``). With ``strata`` (the rubric's kind ×
    confidence per row), also how many of each are predicted relevant, averaged over the
    repeats: which kinds the errors are."""
    judged = y if judged is None else judged
    runs, thresholds = [], []
    times_predicted = np.zeros(len(y))
    for repeat in range(REPEATS):
        predicted = np.zeros(len(y), dtype=bool)
        for test in stratified_folds(y, FOLDS, seed=repeat):
            train = np.setdiff1d(np.arange(len(y)), test)
            rule, threshold = fit_rule(x, mask, y, train, vectors)
            thresholds.append(threshold)
            predicted[test] = rule(test)
        runs.append(prf(predicted, judged))
        times_predicted += predicted
    summary = {key: {"mean": round(statistics.mean(r[key] for r in runs), 3),
                     "sd": round(statistics.stdev(r[key] for r in runs), 3)}
               for key in ("precision", "recall", "f1")}
    out = {"folds": FOLDS, "repeats": REPEATS, **summary,
           "thresholds": {"median": statistics.median(thresholds), "min": min(thresholds),
                          "max": max(thresholds)}}
    if strata is not None:
        names = np.array(strata)
        out["per_kind"] = {
            name: {"rows": int((names == name).sum()),
                   "predicted_mean": round(float(times_predicted[names == name].sum())
                                           / REPEATS, 1)}
            for name in sorted(set(strata))}
    return out


def time_split(x: np.ndarray, mask: np.ndarray, y: np.ndarray, years: np.ndarray,
               vectors: np.ndarray | None = None) -> dict[str, Any]:
    out = {}
    early = years <= 2009
    for name, train in (("fit 2007-2009, test 2010-2011", early),
                        ("fit 2010-2011, test 2007-2009", ~early)):
        rule, threshold = fit_rule(x, mask, y, np.flatnonzero(train), vectors)
        test = np.flatnonzero(~train)
        out[name] = {"threshold": threshold, **prf(rule(test), y[test])}
    return out


def _mentions(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """("Taiwan" mentions in title + text, "Taiwan" in the title) per row."""
    counts = np.array([len(_MENTION.findall(f"{r['title']} {r['text']}")) for r in rows])
    return counts, np.array([bool(_MENTION.search(r["title"])) for r in rows])


def _rules(counts: np.ndarray, in_title: np.ndarray
           ) -> dict[str, Callable[[int, np.ndarray], np.ndarray]]:
    return {
        "best mention-count rule": lambda k, i: counts[i] >= k,
        "best title-or-count rule": lambda k, i: in_title[i] | (counts[i] >= k),
        "best title-and-count rule": lambda k, i: in_title[i] & (counts[i] >= k),
    }


def mention_baselines(rows: list[dict[str, Any]], y: np.ndarray,
                      other: np.ndarray) -> dict[str, Any]:
    """'Mentions Taiwan' and the best of three hand rules on mention counts (≥ k mentions;
    in the title or ≥ k; in the title and ≥ k): k picked on the whole set (optimistic), and
    by the same 10 × 5-fold CV as the model (k picked on each training part). ``other``:
    the whole-set rule judged against the second view's labels."""
    counts, in_title = _mentions(rows)
    ks = range(1, 26)
    rules = _rules(counts, in_title)
    everything = np.arange(len(y))
    out: dict[str, Any] = {"mentions Taiwan": prf(counts >= 1, y),
                           "mentions Taiwan, other": prf(counts >= 1, other)}
    for name, rule in rules.items():
        best_k = max(ks, key=lambda k, rule=rule: prf(rule(k, everything), y)["f1"])
        cv_runs = []
        for repeat in range(REPEATS):
            predicted = np.zeros(len(y), dtype=bool)
            for test in stratified_folds(y, FOLDS, seed=repeat):
                train = np.setdiff1d(everything, test)
                k = max(ks, key=lambda k, tr=train, rule=rule: prf(rule(k, tr), y[tr])["f1"])
                predicted[test] = rule(k, test)
            cv_runs.append(prf(predicted, y))
        out[name] = {"k": best_k, **prf(rule(best_k, everything), y),
                     "cv": {key: round(statistics.mean(r[key] for r in cv_runs), 3)
                            for key in ("precision", "recall", "f1")},
                     "other": prf(rule(best_k, everything), other)}
    return out


def second_view(rows: list[dict[str, Any]]) -> tuple[str, np.ndarray]:
    """The labels the figures are also judged against: the editors' tag on the rubric file,
    the audited tags on the tag file."""
    if all("tag_taiwan" in r for r in rows):
        return "tag_taiwan", np.array([int(r["tag_taiwan"]) for r in rows])
    return "audited", np.array([AUDIT.get(r["id"].removeprefix(_GUARDIAN), r["label"])
                                for r in rows])


def per_kind(rows: list[dict[str, Any]], predicted: np.ndarray) -> dict[str, Any]:
    """How many of each rubric kind and confidence (D/F/M × h/l) are predicted relevant."""
    out: dict[str, Any] = {}
    for i, row in enumerate(rows):
        if "kind" not in row:
            return {}
        key = f"{row['kind']}{row.get('conf', '')}"
        cell = out.setdefault(key, {"rows": 0, "predicted": 0})
        cell["rows"] += 1
        cell["predicted"] += int(predicted[i])
    return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class Scored:
    """The run's scores: as shipped (with the watch's model when one applies), with the
    shipped coefficients only, and on the summary-only view; and the article vectors."""

    scores: list[RelevanceScore]
    generic: list[RelevanceScore]
    summary: list[RelevanceScore]
    vectors: np.ndarray
    learned: WatchModel | None


def shipped_constants(x: np.ndarray, mask: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Coefficients fitted on the whole set, the threshold picked on it by the CV's rule, and
    the intercept shifted by that threshold's logit (the form shipped, with min_score 0.5)."""
    intercept, weights = fit(x[mask], y[mask])
    threshold = pick_threshold(predict((intercept, weights), x, mask), y)
    shift = float(np.log(threshold / (1 - threshold)))
    return {"threshold": threshold, "intercept_fitted": round(intercept, 3),
            "intercept": round(intercept - shift, 2),
            **{k: round(float(v), 2) for k, v in zip(FEATURES, weights, strict=True)}}


def report(rows: list[dict[str, Any]], summaries: list[dict[str, Any]], watch: WatchConfig,
           scored: Scored, seconds: float | None, refit: bool) -> dict[str, Any]:
    """Every figure of the run. With ``scored.learned`` the shipped scorer is the watch's
    model (coefficients and learned term), and the headline CV refits both per training
    part; the ablations refit the shipped coefficients' features without the term."""
    y = np.array([int(r["label"]) for r in rows])
    years = np.array([int(str(r.get("published_at", "0000"))[:4] or 0) for r in rows])
    s = np.array([sc.score for sc in scored.scores])
    generic = np.array([sc.score for sc in scored.generic])
    summary = np.array([sc.score for sc in scored.summary])
    x, mask = features(scored.scores)
    vectors = scored.vectors if scored.learned is not None else None
    keywords_only = x.copy()
    keywords_only[:, SEMANTIC_COLUMNS] = 0.0  # ablation: the model without the semantic terms
    threshold = watch.min_score
    view, other = second_view(rows)
    embedded = int(mask.sum())
    strata = ([f"{r['kind']}{r.get('conf', '')}" for r in rows]
              if all("kind" in r for r in rows) else None)
    out: dict[str, Any] = {
        "data": {"rows": len(rows), "positives": int(y.sum()), "second_view": view,
                 "second_view_positives": int(other.sum())},
        "watch": {"name": watch.name, "min_score": threshold, "keywords": watch.keywords,
                  "exclude": watch.exclude},
        "coefficients": {"intercept": INTERCEPT, **SHIPPED_WEIGHTS, "C": C,
                         "threshold_rule": "F1"},
        "watch_model": None if scored.learned is None else {
            "digest": scored.learned.digest, "term_C": scored.learned.fitted_on.get("term_C"),
            "intercept":
            scored.learned.intercept, "weights": scored.learned.weights,
            "threshold": scored.learned.threshold},
        "shipped": prf(s >= threshold, y),
        "shipped_per_kind": per_kind(rows, s >= threshold),
        "shipped_coefficients_only": prf(generic >= threshold, y),
        "sweep": {f"{t:.2f}": prf(s >= t, y) for t in SWEEP},
        "baselines": mention_baselines(rows, y, other),
        "cv": cross_validate(x, mask, y, vectors=vectors, strata=strata),
        "cv_without_learned_term": cross_validate(x, mask, y),
        "cv_keywords_only": cross_validate(keywords_only, mask, y),
        "cv_scorer_v2_features": cross_validate(x[:, V2_COLUMNS], mask, y),
        "cv_scorer_v3_features": cross_validate(x[:, V3_COLUMNS], mask, y),
        "cv_scorer_v4_features": cross_validate(x[:, V4_COLUMNS], mask, y),
        "cv_scorer_v5_features": cross_validate(x[:, V5_COLUMNS], mask, y),
        "cv_scorer_v5_features_learned_term": cross_validate(x[:, V5_COLUMNS], mask, y,
                                                             vectors=vectors),
        "time_split_scorer_v5_features": time_split(x[:, V5_COLUMNS], mask, y, years,
                                                    vectors),
        "time_split": time_split(x, mask, y, years, vectors),
        "per_year": {str(yr): {"rows": int((years == yr).sum()),
                               "positives": int(y[years == yr].sum()),
                               **prf(s[years == yr] >= threshold, y[years == yr])}
                     for yr in sorted(set(years.tolist()))},
        "summary_only": {"words": SUMMARY_WORDS, "shipped": prf(summary >= threshold, y),
                         view: prf(summary >= threshold, other)},  # rules added below
        view: {"shipped": prf(s >= threshold, other),
               "cv": cross_validate(x, mask, y, judged=other, vectors=vectors),
               "cv_scorer_v2_features": cross_validate(x[:, V2_COLUMNS], mask, y,
                                                       judged=other)},
        # row numbers in --data (0-based), not ids: the ids are publishers' URLs
        "errors_at_default": {
            "false_positives": [i for i, (p, t) in enumerate(zip(s >= threshold, y, strict=True))
                                if p and not t],
            "false_negatives": [i for i, (p, t) in enumerate(zip(s >= threshold, y, strict=True))
                                if t and not p]},
        "speed": {"articles": len(rows), "embedded": embedded,
                  "seconds": None if seconds is None else round(seconds, 1),
                  "articles_per_s": round(len(rows) / seconds, 1) if seconds else None},
        "platform": platform.platform(),
    }
    summary_rules = _rules(*_mentions(summaries))
    everything = np.arange(len(y))
    for name in RULES:
        predicted = summary_rules[name](out["baselines"][name]["k"], everything)
        out["summary_only"][name] = {"labels": prf(predicted, y), view: prf(predicted, other)}
    if refit:
        out["refit_whole_set"] = shipped_constants(x, mask, y)
    return out


def _row(name: str, m: dict[str, Any]) -> str:
    return (f"  {name:34s} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}"
            + (f"   (tp {m['tp']}, fp {m['fp']}, fn {m['fn']})" if "tp" in m else ""))


def _cv_row(name: str, cv: dict[str, Any]) -> str:
    return (f"  {name:34s} P {cv['precision']['mean']:.3f}  R {cv['recall']['mean']:.3f}  "
            f"F1 {cv['f1']['mean']:.3f} ± {cv['f1']['sd']:.3f}   (thresholds picked: median "
            f"{cv['thresholds']['median']:.2f}, {cv['thresholds']['min']:.2f}–"
            f"{cv['thresholds']['max']:.2f})")


def print_report(out: dict[str, Any]) -> None:
    d, w = out["data"], out["watch"]
    view = d["second_view"]
    print(f"{d['rows']} articles, {d['positives']} positive ({view}: "
          f"{d['second_view_positives']}); watch {w['name']!r}, min_score {w['min_score']:.2f}")
    b = out["baselines"]
    print("baselines (k picked on the whole set; CV: k picked per training part):")
    print(_row("mentions Taiwan", b["mentions Taiwan"]))
    for name, label in RULES.items():
        m = b[name]
        print(_row(label.format(k=m["k"]), m) + f"   CV F1 {m['cv']['f1']:.3f}")
    print("relevance score:")
    learned = out["watch_model"] is not None
    print(_row(f"shipped, min_score {w['min_score']:.2f}"
               + (" (watch model)" if learned else ""), out["shipped"]))
    if learned:
        print(_row("  shipped coefficients only", out["shipped_coefficients_only"]))
    print(_cv_row(f"CV {FOLDS}-fold × {REPEATS}, refitted", out["cv"]))
    if learned:
        print(_cv_row("  same, without the learned term", out["cv_without_learned_term"]))
    print(_cv_row("  same, keywords only", out["cv_keywords_only"]))
    print(_cv_row("  scorer v5 features (no genre cues)", out["cv_scorer_v5_features"]))
    if learned:
        print(_cv_row("  scorer v5 features + learned term",
                      out["cv_scorer_v5_features_learned_term"]))
        for name, m in out["time_split_scorer_v5_features"].items():
            print(_row(f"  scorer v5 + term, {name}", m))
    print(_cv_row("  scorer v4 features (no title_evidence)", out["cv_scorer_v4_features"]))
    print(_cv_row("  scorer v3 features (no evidence)", out["cv_scorer_v3_features"]))
    print(_cv_row("  scorer v2 features (no section, passage)", out["cv_scorer_v2_features"]))
    for name, m in out["time_split"].items():
        print(_row(f"{name} (t {m['threshold']:.2f})", m))
    if out["shipped_per_kind"]:
        print("shipped, predicted relevant per kind:",
              ", ".join(f"{k} {c['predicted']}/{c['rows']}"
                        for k, c in out["shipped_per_kind"].items()))
    if "per_kind" in out["cv"]:
        print("CV, predicted relevant per kind (mean over repeats):",
              ", ".join(f"{k} {c['predicted_mean']}/{c['rows']}"
                        for k, c in out["cv"]["per_kind"].items()))
    print("per year (shipped):")
    for year, m in out["per_year"].items():
        print(_row(f"{year} ({m['positives']}/{m['rows']})", m))
    so = out["summary_only"]
    print(_row(f"summary only (title + {so['words']} words)", so["shipped"]))
    for name, label in RULES.items():
        print(_row("  " + label.format(k=b[name]["k"]), so[name]["labels"]))
    print(f"judged against {view}:")
    print(_row("mentions Taiwan", b["mentions Taiwan, other"]))
    for name, label in RULES.items():
        print(_row(label.format(k=b[name]["k"]), b[name]["other"]))
    print(_row("shipped", out[view]["shipped"]))
    print(_cv_row("CV, refitted on labels", out[view]["cv"]))
    print(_cv_row("  scorer v2 features", out[view]["cv_scorer_v2_features"]))
    print(_row("summary only", so[view]))
    print("threshold sweep (shipped coefficients):")
    for t, m in out["sweep"].items():
        print(_row(t, m))
    if "refit_whole_set" in out:
        print("coefficients shipped:", out["coefficients"])
        print("refitted, whole set: ", out["refit_whole_set"])
    if learned:
        print("watch model:", out["watch_model"])
    sp = out["speed"]
    if sp["seconds"] is None:
        print(f"scoring: {sp['articles']} articles, embeddings from --cache (no speed figure)")
        return
    print(f"scoring: {sp['articles']} articles ({sp['embedded']} with keyword evidence, "
          f"embedded) in {sp['seconds']} s ({sp['articles_per_s']}/s, includes model load)")


def write_watch_model(watch: WatchConfig, rows: list[dict[str, Any]], spec: EmbeddingSpec,
                      x: np.ndarray, mask: np.ndarray, vectors: np.ndarray,
                      path: Path) -> WatchModel:
    """Fit the watch's model on every row (as `newswatch fit-watch` does), write it to
    ``path`` and read it back (the digest is of the file)."""
    y = np.array([int(r["label"]) for r in rows])
    save_watch_model(fit_watch_model(watch, spec, x, mask, vectors, y), path)
    return load_watch_model(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled JSONL")
    parser.add_argument("--watch", default="taiwan", choices=sorted(WATCHES))
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help="where to write results")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fit", action="store_true",
                        help="also refit the coefficients on the whole set and print them")
    parser.add_argument("--write-model", type=Path, default=None, metavar="PATH",
                        help="fit the watch's model (coefficients and learned term) on the "
                        "whole set, write it to PATH and score with it (the built-in one: "
                        "pipeline/watch_models/taiwan.json)")
    parser.add_argument("--no-watch-model", action="store_true",
                        help="score with the shipped coefficients only (no learned term)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="reuse article embeddings from this .npz between runs")
    args = parser.parse_args(argv)

    rows = load(args.data)
    watch = WATCHES[args.watch]()
    spec = EmbeddingSpec(args.model, args.device)
    learned = None if args.no_watch_model else find_watch_model(watch, spec, None)
    start = time.perf_counter()
    vectors, cached = _vectors(watch, rows, spec, args.cache)
    generic = rescore(watch, rows, vectors, spec, None)
    scores = generic if learned is None else rescore(watch, rows, vectors, spec, learned)
    seconds = None if cached else time.perf_counter() - start
    if args.write_model is not None:
        x, mask = features(generic)
        learned = write_watch_model(watch, rows, spec, x, mask, vectors, args.write_model)
        scores = rescore(watch, rows, vectors, spec, learned)
        print(f"wrote the watch model to {args.write_model}")
    summaries = [{**row, "text": " ".join(row["text"].split()[:SUMMARY_WORDS])} for row in rows]
    summary_cache = args.cache and args.cache.with_name(args.cache.stem + "-summary.npz")
    summary_vectors, _ = _vectors(watch, summaries, spec, summary_cache)
    summary = rescore(watch, summaries, summary_vectors, spec, learned)
    out = report(rows, summaries, watch, Scored(scores, generic, summary, vectors, learned),
                 seconds, refit=args.fit)
    print_report(out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
