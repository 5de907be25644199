"""A watch's own relevance model, fitted on articles a reader labelled for that watch.

The shipped coefficients (pipeline/relevance.py) serve any watch: the description cosine is
its only notion of meaning. A watch with labelled articles can do better: `newswatch
fit-watch` (and `benchmarks/relevance.py --fit`) fit a *learned semantic term*, a logistic
regression on the lead and passage embeddings themselves (2 × the model's width, strong L2
picked among ``TERM_CS`` on the labelled rows),
and refit the scorer's coefficients with that term beside the other features. The result is
a small JSON file of numbers (no text), ``<name>.json``, looked up in
``<data_dir>/watch_models/`` and then among the built-in ones (``pipeline/watch_models/``).

A model applies only to the watch it was fitted for and the vectors it was fitted on: it
records a key of the watch's matching settings (description, keywords, exclude, evidence)
and the embedding model and backend; when either differs the watch is scored with the
shipped coefficients and the log says why (refit after editing the watch). The term costs no
embedding of its own: it reads the two vectors the scorer already has.

Fitting follows the benchmark's protocol: the term's values for the training rows are
cross-fitted (each row scored by a term fitted without it), so the coefficients beside it are
not fitted on its own training fit; the threshold is the best-F1 point of a 0.05 sweep on the
training rows, and the intercept is shifted by its logit so that ``min_score`` 0.5 is that
threshold.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.embeddings import EmbeddingSpec
    from pipeline.settings import WatchConfig

log = logging.getLogger(__name__)

FORMAT = 1
BUILT_IN_DIR = Path(__file__).resolve().parent / "watch_models"
# L2 strengths tried for the learned term; each fit picks one by the cross-fitted log-loss
# on its own rows (so no strength is chosen on anything it is then judged on).
TERM_CS = (0.3, 1.0, 3.0)
SCORER_C = 10.0  # L2 strength of the coefficients, as for every scorer version since 2
TERM_FOLDS = 5  # cross-fitting folds for the term's values on the training rows
SWEEP = [round(0.05 * i, 2) for i in range(1, 20)]
LEARNED = "learned"  # the term's name among the coefficients


class WatchModelError(ValueError):
    """A watch model file that cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class WatchModel:
    """Coefficients for one watch (``weights`` keyed by the scorer's feature names and
    ``learned``) and the learned term: ``lead · lead_weights + passage · passage_weights +
    term_bias``."""

    watch: str
    watch_key: str
    embedding_model: str
    backend: str
    intercept: float
    weights: dict[str, float]
    lead_weights: np.ndarray
    passage_weights: np.ndarray
    term_bias: float
    threshold: float
    fitted_on: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # of the file's content: part of the alert stage's watch fingerprint

    def term(self, lead: np.ndarray, passage: np.ndarray) -> float:
        return float(np.dot(self.lead_weights, lead) + np.dot(self.passage_weights, passage)
                     + self.term_bias)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "watch": self.watch, "watch_key": self.watch_key,
                "embedding_model": self.embedding_model, "backend": self.backend,
                "intercept": self.intercept, "weights": self.weights,
                "threshold": self.threshold, "term_bias": self.term_bias,
                "lead_weights": [round(float(v), 6) for v in self.lead_weights],
                "passage_weights": [round(float(v), 6) for v in self.passage_weights],
                "fitted_on": self.fitted_on}


def watch_key(watch: WatchConfig) -> str:
    """What a model was fitted for: the watch's matching settings (not its name, channels or
    min_score)."""
    basis = json.dumps([watch.description, sorted(watch.keywords), sorted(watch.exclude),
                        {g: sorted(t) for g, t in sorted(watch.evidence.items())}],
                       ensure_ascii=False)
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


def load_watch_model(path: Path) -> WatchModel:
    """Read and check a model file (``WatchModelError`` names the file and the problem)."""
    from pipeline.relevance import FEATURES

    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise WatchModelError(f"{path}: not a readable JSON watch model ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WatchModelError(f"{path}: not a watch model of format {FORMAT}")
    try:
        lead = np.asarray(data["lead_weights"], dtype=np.float32)
        passage = np.asarray(data["passage_weights"], dtype=np.float32)
        weights = {str(k): float(v) for k, v in data["weights"].items()}
        model = WatchModel(
            watch=str(data["watch"]), watch_key=str(data["watch_key"]),
            embedding_model=str(data["embedding_model"]), backend=str(data["backend"]),
            intercept=float(data["intercept"]), weights=weights, lead_weights=lead,
            passage_weights=passage, term_bias=float(data["term_bias"]),
            threshold=float(data["threshold"]), fitted_on=dict(data.get("fitted_on") or {}),
            digest=hashlib.sha256(raw).hexdigest()[:16])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WatchModelError(f"{path}: missing or malformed field ({exc})") from exc
    missing = [name for name in (*FEATURES, LEARNED) if name not in weights]
    if missing:
        raise WatchModelError(f"{path}: no weight for {', '.join(missing)}")
    if lead.ndim != 1 or lead.shape != passage.shape or not lead.size:
        raise WatchModelError(f"{path}: lead and passage weights must be two vectors of one "
                              "length")
    if not all(np.isfinite([model.intercept, model.term_bias, *weights.values()])) \
            or not (np.isfinite(lead).all() and np.isfinite(passage).all()):
        raise WatchModelError(f"{path}: weights must be finite numbers")
    return model


def save_watch_model(model: WatchModel, path: Path) -> None:
    """Write the model as JSON (via a temporary file: a reader never sees half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(model.to_json(), indent=1, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    temporary.replace(path)


def mismatch(model: WatchModel, watch: WatchConfig, spec: EmbeddingSpec, dim: int | None = None
             ) -> str | None:
    """Why ``model`` must not score ``watch`` with ``spec``'s vectors (None: it may)."""
    from pipeline.embeddings import AGREEING_BACKENDS, DEFAULT_MODEL

    if model.watch_key != watch_key(watch):
        return (f"it was fitted for another version of watch {model.watch!r} (description, "
                "keywords, exclude or evidence changed since; refit it)")
    if (model.embedding_model or DEFAULT_MODEL) != (spec.model or DEFAULT_MODEL):
        return (f"it was fitted on embedding model {model.embedding_model!r}, not "
                f"{spec.model!r}")
    same = model.backend == spec.backend or {model.backend, spec.backend} <= AGREEING_BACKENDS
    if not same:
        return f"it was fitted on backend {model.backend!r}, not {spec.backend!r}"
    if dim is not None and model.lead_weights.size != dim:
        return f"its weights have {model.lead_weights.size} dimensions, the model {dim}"
    return None


def model_path(name: str, data_dir: str | None) -> Path | None:
    """The file for watch ``name``: ``<data_dir>/watch_models/<name>.json``, else the
    built-in one; None without either."""
    candidates = [Path(data_dir) / "watch_models"] if data_dir else []
    for folder in (*candidates, BUILT_IN_DIR):
        path = folder / f"{name}.json"
        if path.is_file():
            return path
    return None


def find_watch_model(watch: WatchConfig, spec: EmbeddingSpec, data_dir: str | None
                     ) -> WatchModel | None:
    """The model that applies to ``watch``, or None (logged when a file exists but does not
    apply or cannot be read: the watch then keeps the shipped coefficients)."""
    path = model_path(watch.name, data_dir)
    if path is None:
        return None
    try:
        model = load_watch_model(path)
    except WatchModelError as exc:
        log.warning("relevance: ignoring watch model %s", exc)
        return None
    reason = mismatch(model, watch, spec)
    if reason is not None:
        log.warning("relevance: not using %s for watch %r: %s; scoring with the shipped "
                    "coefficients", path, watch.name, reason)
        return None
    return model


# --- fitting ------------------------------------------------------------------------------


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds of row indices with each label spread evenly (the benchmark's folds)."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[j % k].append(int(i))
    return [np.array(sorted(f), dtype=int) for f in folds]


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn = int(np.sum(~predicted & (labels == 1)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def pick_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The sweep threshold with the best F1 (ties: the lower one)."""
    return max(SWEEP, key=lambda t: (round(f1_at(scores, labels, t), 6), -t))


def fit_term(vectors: np.ndarray, labels: np.ndarray, c: float
             ) -> tuple[np.ndarray, float]:
    """(weights, bias) of the learned term on ``[lead | passage]`` rows."""
    from sklearn.linear_model import LogisticRegression  # pinned in requirements.txt

    fitted = LogisticRegression(C=c, max_iter=3000).fit(vectors, labels)
    return fitted.coef_[0].astype(np.float32), float(fitted.intercept_[0])


def cross_fitted_term(vectors: np.ndarray, labels: np.ndarray, c: float,
                      folds: int = TERM_FOLDS, seed: int = 0) -> np.ndarray:
    """The term's value for each row from a term fitted without that row's fold."""
    values = np.zeros(len(labels))
    for test in stratified_folds(labels, folds, seed):
        train = np.setdiff1d(np.arange(len(labels)), test)
        weights, bias = fit_term(vectors[train], labels[train], c)
        values[test] = vectors[test] @ weights + bias
    return values


def fit_coefficients(x: np.ndarray, labels: np.ndarray, c: float = SCORER_C
                     ) -> tuple[float, np.ndarray]:
    """(intercept, weights): plain L2 logistic regression, as the shipped constants."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(C=c, max_iter=3000).fit(x, labels)
    return float(fitted.intercept_[0]), fitted.coef_[0]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True, slots=True)
class Fitted:
    """A fit on some rows: what a model file records, before its metadata."""

    intercept: float  # shifted so that 0.5 is ``threshold``
    weights: np.ndarray  # the features' weights, then the term's
    term_weights: np.ndarray
    term_bias: float
    threshold: float
    term_c: float  # the L2 strength picked for the term


def log_loss(values: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of logits ``values``."""
    return float(np.mean(np.logaddexp(0.0, values) - labels * values))


def cross_fitted_choice(vectors: np.ndarray, labels: np.ndarray, seed: int = 0
                        ) -> tuple[float, np.ndarray]:
    """(strength, cross-fitted values) of the ``TERM_CS`` strength whose cross-fitted values
    have the lowest log-loss on these rows."""
    tried = [(c, cross_fitted_term(vectors, labels, c, seed=seed)) for c in TERM_CS]
    return min(tried, key=lambda cv: log_loss(cv[1], labels))


def fit_with_term(x: np.ndarray, vectors: np.ndarray, labels: np.ndarray,
                  mask: np.ndarray | None = None, seed: int = 0) -> Fitted:
    """Fit the term on the rows with keyword evidence (``mask``; default all; its strength
    picked on them), the coefficients on the features beside its cross-fitted values, and
    the threshold on all rows (best F1; a row without evidence scores 0, as in the
    pipeline)."""
    mask = np.ones(len(labels), dtype=bool) if mask is None else mask
    term_c, values = cross_fitted_choice(vectors[mask], labels[mask], seed)
    term_weights, term_bias = fit_term(vectors[mask], labels[mask], term_c)
    design = np.column_stack([x[mask], values])
    intercept, weights = fit_coefficients(design, labels[mask])
    scores = np.zeros(len(labels))
    scores[mask] = sigmoid(intercept + design @ weights)
    threshold = pick_threshold(scores, labels)
    shift = float(np.log(threshold / (1 - threshold)))
    return Fitted(intercept - shift, weights, term_weights, term_bias, threshold, term_c)


def build_model(watch: WatchConfig, spec: EmbeddingSpec, fitted: Fitted,
                fitted_on: dict[str, Any]) -> WatchModel:
    """A ``WatchModel`` for ``watch`` from a fit on its labelled rows."""
    from pipeline.relevance import FEATURES

    dim = fitted.term_weights.size // 2
    weights = {name: round(float(w), 4)
               for name, w in zip((*FEATURES, LEARNED), fitted.weights, strict=True)}
    return WatchModel(watch=watch.name, watch_key=watch_key(watch),
                      embedding_model=spec.model, backend=spec.backend,
                      intercept=round(fitted.intercept, 4), weights=weights,
                      lead_weights=fitted.term_weights[:dim],
                      passage_weights=fitted.term_weights[dim:],
                      term_bias=round(fitted.term_bias, 6), threshold=fitted.threshold,
                      fitted_on=fitted_on)


# --- fitting from labelled articles (`newswatch fit-watch`) --------------------------------

MIN_PER_LABEL = 10  # positives and negatives with keyword evidence needed to fit at all
CHUNK = 64  # records per encode call, so progress moves


def training_rows(watch: WatchConfig, records: list[dict[str, Any]], spec: EmbeddingSpec,
                  progress: Callable[[int, int | None], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, has_evidence, ``[lead | passage]`` vectors) per record, as the scorer sees
    them; records without keyword evidence are not embedded (zero vectors)."""
    from pipeline.relevance import FEATURES, embed_records, score_text

    x = np.zeros((len(records), len(FEATURES)))
    mask = np.zeros(len(records), dtype=bool)
    vectors: np.ndarray | None = None
    if progress is not None:
        progress(0, len(records))
    for start in range(0, len(records), CHUNK):
        chunk = records[start:start + CHUNK]
        embedded = embed_records(watch, chunk, spec)
        for row, i in enumerate(embedded.rows):
            lead, passage = embedded.leads[row], embedded.passages[row]
            if vectors is None:
                vectors = np.zeros((len(records), 2 * lead.size), dtype=np.float32)
            record = chunk[i]
            score = score_text(watch, str(record.get("title") or ""),
                               str(record.get("text") or ""), embedding=lead,
                               passage_embedding=passage, spec=spec)
            assert score.semantic is not None and score.passage_semantic is not None
            x[start + i] = (*score.evidence.features(), score.semantic, score.passage_semantic)
            mask[start + i] = True
            vectors[start + i] = np.concatenate([lead, passage])
        if progress is not None:
            progress(len(chunk), None)
    return x, mask, (vectors if vectors is not None else np.zeros((len(records), 0)))


def _prf(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn = int(np.sum(~predicted & (labels == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def cross_validated(x: np.ndarray, mask: np.ndarray, vectors: np.ndarray, labels: np.ndarray,
                    folds: int = 5, seed: int = 0) -> dict[str, dict[str, float]]:
    """One stratified k-fold estimate, everything refitted on each training part: the
    watch model (``learned``) against the shipped features without the term
    (``features_only``), so a user sees whether the term earns its place."""
    learned = np.zeros(len(labels), dtype=bool)
    plain = np.zeros(len(labels), dtype=bool)
    for test in stratified_folds(labels, folds, seed):
        train = np.setdiff1d(np.arange(len(labels)), test)
        fitted = fit_with_term(x[train], vectors[train], labels[train], mask[train], seed=seed)
        term = vectors[test] @ fitted.term_weights + fitted.term_bias
        logit = fitted.intercept + np.column_stack([x[test], term]) @ fitted.weights
        learned[test] = mask[test] & (logit >= 0)
        tr = train[mask[train]]
        intercept, weights = fit_coefficients(x[tr], labels[tr])
        scores = np.where(mask[train], sigmoid(intercept + x[train] @ weights), 0.0)
        threshold = pick_threshold(scores, labels[train])
        plain[test] = mask[test] & (sigmoid(intercept + x[test] @ weights) >= threshold)
    return {"learned": _prf(learned, labels), "features_only": _prf(plain, labels)}


def fit_from_labels(watch: WatchConfig, records: list[dict[str, Any]], labels: np.ndarray,
                    spec: EmbeddingSpec,
                    progress: Callable[[int, int | None], None] | None = None
                    ) -> tuple[WatchModel, dict[str, dict[str, float]]]:
    """The watch model fitted on every labelled record, and its 5-fold estimate."""
    x, mask, vectors = training_rows(watch, records, spec, progress)
    for label, name in ((1, "relevant"), (0, "not relevant")):
        have = int(np.sum(mask & (labels == label)))
        if have < MIN_PER_LABEL:
            raise WatchModelError(
                f"too few labelled articles to fit: {have} {name} with a keyword of watch "
                f"{watch.name!r} (need at least {MIN_PER_LABEL} of each)")
    estimate = cross_validated(x, mask, vectors, labels)
    return fit_watch_model(watch, spec, x, mask, vectors, labels, cv_5fold=estimate), estimate


def fit_watch_model(watch: WatchConfig, spec: EmbeddingSpec, x: np.ndarray, mask: np.ndarray,
                    vectors: np.ndarray, labels: np.ndarray, **about: Any) -> WatchModel:
    """The watch model fitted on all the given rows (``about``: more to record)."""
    fitted = fit_with_term(x, vectors, labels, mask)
    return build_model(watch, spec, fitted, {
        "rows": len(labels), "positives": int(labels.sum()), "term_C": fitted.term_c,
        "term_C_tried": list(TERM_CS), "C": SCORER_C, "threshold_rule": "F1", **about})
