"""A watch's own fitted relevance model (pipeline/watch_model.py, `newswatch fit-watch`).

Everything here runs without the embedding model: a small word-count encoder stands in for
it, and the labelled articles are fictional ones written for these tests. The built-in
Taiwan model is only read and checked against the shipped watch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import embeddings, relevance
from pipeline.alerts.engine import watch_fingerprint
from pipeline.cli import app
from pipeline.embeddings import EmbeddingSpec
from pipeline.relevance import (
    FEATURES,
    KEYWORD_FEATURES,
    SHIPPED_WEIGHTS,
    default_taiwan_watch,
    keyword_evidence,
    logit_parts,
    score_text,
    scorer_for,
)
from pipeline.settings import Settings, WatchConfig
from pipeline.watch_model import (
    BUILT_IN_DIR,
    SWEEP,
    WatchModel,
    WatchModelError,
    find_watch_model,
    fit_with_term,
    load_watch_model,
    mismatch,
    save_watch_model,
    watch_key,
)

runner = CliRunner()
VOCAB = ("turbine", "wind", "grid", "megawatt", "recipe", "garden", "goal", "film")
ENERGY = WatchConfig(name="energy", description="Wind power: turbines, grids and new farms.",
                     keywords=["turbine", "turbines"])


def word_encoder(texts: list[str], *_args: Any, **_kwargs: Any) -> np.ndarray:
    """A stand-in embedding: normalised counts of a few words (deterministic, no model)."""
    rows = []
    for text in texts:
        words = text.lower().split()
        counts = np.array([sum(w.startswith(v) for w in words) for v in VOCAB], float) + 0.1
        rows.append(counts / np.linalg.norm(counts))
    return np.array(rows, dtype=np.float32)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(embeddings, "encode", word_encoder)
    relevance._description_vectors.cache_clear()
    yield
    relevance._description_vectors.cache_clear()  # no stand-in vectors outlive the test


def labelled_articles() -> list[dict[str, Any]]:
    """Fictional: 12 wind-power developments, 12 pieces that name a turbine in passing."""
    rows = []
    for i in range(12):
        rows.append({"id": f"d{i}", "label": 1, "title": f"Wind farm {i} connects to the grid",
                     "text": f"A {100 + i} megawatt wind farm of {20 + i} turbines joined the "
                     "grid on Monday. The turbine maker said wind output would rise. Grid "
                     "operators said the megawatt total was a record."})
        rows.append({"id": f"m{i}", "label": 0, "title": f"Garden recipe number {i}",
                     "text": f"This recipe needs {i + 2} tomatoes from the garden. A film crew "
                     "once parked beside a turbine near the garden. The recipe takes an hour, "
                     "and the goal is a good sauce."})
    return rows


def _model(watch: WatchConfig, dim: int = 4, **changes: Any) -> WatchModel:
    fields: dict[str, Any] = {
        "watch": watch.name, "watch_key": watch_key(watch), "embedding_model": "default",
        "backend": "openvino", "intercept": -3.0,
        "weights": {**dict.fromkeys(FEATURES, 0.5), "learned": 2.0},
        "lead_weights": np.full(dim, 0.25, dtype=np.float32),
        "passage_weights": np.zeros(dim, dtype=np.float32), "term_bias": -0.1,
        "threshold": 0.4, "fitted_on": {"rows": 24}}
    return WatchModel(**{**fields, **changes})


# ---- the file ------------------------------------------------------------------------------


def test_a_model_file_round_trips_and_applies_only_to_its_watch_and_vectors(
        tmp_path: Path) -> None:
    path = tmp_path / "energy.json"
    save_watch_model(_model(ENERGY), path)
    model = load_watch_model(path)
    assert model.weights["learned"] == 2.0 and model.lead_weights.shape == (4,)
    assert model.digest and not list(tmp_path.glob("*.tmp"))
    assert mismatch(model, ENERGY, EmbeddingSpec()) is None
    assert mismatch(model, ENERGY, EmbeddingSpec(backend="torch")) is None  # fp32 agrees
    edited = ENERGY.model_copy(update={"description": "Solar power."})
    assert "another version of watch 'energy'" in str(mismatch(model, edited, EmbeddingSpec()))
    more_groups = ENERGY.model_copy(update={"evidence": {"makers": ["Vestas"]}})
    assert mismatch(model, more_groups, EmbeddingSpec()) is not None
    assert "embedding model" in str(mismatch(model, ENERGY, EmbeddingSpec("/models/other")))
    assert "backend 'openvino', not 'onnx-int8'" in str(
        mismatch(model, ENERGY, EmbeddingSpec(backend="onnx-int8")))
    # the name, channels and min_score are not what the model was fitted on
    assert mismatch(model, ENERGY.model_copy(update={"min_score": 0.7}), EmbeddingSpec()) is None


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not a readable JSON watch model"),
    ('{"format": 99}', "not a watch model of format 1"),
    ("drop:weights", "missing or malformed field"),
    ("drop-weight:learned", "no weight for learned"),
    ("short-passage", "lead and passage weights must be two vectors of one length"),
    ("nan-bias", "weights must be finite numbers"),
])
def test_a_bad_model_file_is_refused_with_the_file_named(tmp_path: Path, content: str,
                                                         message: str) -> None:
    path = tmp_path / "energy.json"
    data = _model(ENERGY).to_json()
    if content.startswith("drop:"):
        del data[content[5:]]
    elif content.startswith("drop-weight:"):
        del data["weights"][content[12:]]
    elif content == "short-passage":
        data["passage_weights"] = [0.1]
    elif content == "nan-bias":
        data["term_bias"] = float("nan")
    text = content if content.startswith("{") else json.dumps(data)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WatchModelError, match=message) as info:
        load_watch_model(path)
    assert str(info.value).startswith(str(path))


def test_the_data_dir_model_wins_and_a_stale_one_is_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "watch_models"
    save_watch_model(_model(ENERGY), folder / "energy.json")
    assert find_watch_model(ENERGY, EmbeddingSpec(), str(tmp_path)) is not None
    assert find_watch_model(ENERGY, EmbeddingSpec(), None) is None  # no built-in one
    edited = ENERGY.model_copy(update={"keywords": ["turbine", "windmill"]})
    with caplog.at_level(logging.WARNING, logger="pipeline.watch_model"):
        assert find_watch_model(edited, EmbeddingSpec(), str(tmp_path)) is None
    assert "another version of watch 'energy'" in caplog.text and "refit" in caplog.text
    (folder / "energy.json").write_text("{", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="pipeline.watch_model"):
        assert find_watch_model(ENERGY, EmbeddingSpec(), str(tmp_path)) is None
    assert "ignoring watch model" in caplog.text


def test_the_built_in_taiwan_model_fits_the_shipped_watch_and_holds_no_text() -> None:
    """Editing the shipped watch without refitting its model would silently turn the model
    off: this fails first (refit with benchmarks/relevance.py --write-model)."""
    path = BUILT_IN_DIR / "taiwan.json"
    model = load_watch_model(path)
    assert mismatch(model, default_taiwan_watch(), EmbeddingSpec(), dim=384) is None
    assert model.fitted_on["rows"] == 1285 and model.fitted_on["positives"] == 135
    data = json.loads(path.read_text(encoding="utf-8"))
    strings = {k: v for k, v in data.items() if isinstance(v, str)}
    assert set(strings) == {"watch", "watch_key", "embedding_model", "backend"}


# ---- scoring with a model --------------------------------------------------------------------


def test_the_learned_term_enters_the_logit_and_the_reasons(fake_model: None) -> None:
    model = _model(ENERGY, dim=len(VOCAB))
    title, text = "Wind farm connects", "The turbine farm joined the grid with 90 megawatt."
    [lead] = word_encoder([relevance.semantic_text(title, text)])
    with_model = score_text(ENERGY, title, text, embedding=lead, passage_embedding=lead,
                            watch_model=model)
    plain = score_text(ENERGY, title, text, embedding=lead, passage_embedding=lead)
    term = float(lead @ model.lead_weights + model.term_bias)
    ev = keyword_evidence(ENERGY, title, text)
    expected = -3.0 + 0.5 * (sum(ev.features()) + with_model.semantic
                             + with_model.passage_semantic) + 2.0 * term
    assert with_model.score == pytest.approx(1 / (1 + np.exp(-expected)), abs=1e-5)
    assert any(r.startswith("learned (24 labelled articles) +") for r in with_model.reasons)
    intercept, keyword, semantic = logit_parts(ev, None, model)  # no vectors: no term
    assert semantic == 0.0
    assert intercept == relevance.INTERCEPT
    assert keyword == pytest.approx(sum(SHIPPED_WEIGHTS[name] * value for name, value
                                        in zip(KEYWORD_FEATURES, ev.features(), strict=True)))
    assert not any(r.startswith("learned") for r in plain.reasons)
    assert plain.score != with_model.score
    wider = _model(ENERGY, dim=len(VOCAB) + 1)  # vectors of another width: the term is off
    assert score_text(ENERGY, title, text, embedding=lead, passage_embedding=lead,
                      watch_model=wider).score == pytest.approx(plain.score)


def test_fit_with_term_learns_the_direction_and_shifts_the_threshold_to_zero() -> None:
    rng = np.random.default_rng(3)
    labels = np.array([1] * 30 + [0] * 90)
    vectors = rng.normal(size=(120, 6)).astype(np.float32)
    vectors[:30, 0] += 2.0  # the positives lean one way
    x = rng.uniform(size=(120, len(FEATURES)))
    fitted = fit_with_term(x, vectors, labels)
    assert fitted.threshold in SWEEP
    assert fitted.term_weights[0] > np.abs(fitted.term_weights[1:]).max()
    assert fitted.weights[-1] > 0  # the term's own weight
    term = vectors @ fitted.term_weights + fitted.term_bias
    relevant = fitted.intercept + np.column_stack([x, term]) @ fitted.weights >= 0
    assert relevant[:30].mean() > 0.7 and relevant[30:].mean() < 0.2


# ---- newswatch fit-watch ---------------------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"data_dir": str(tmp_path / "data"),
                                "store": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
                                "watches": [ENERGY.model_dump()]}), encoding="utf-8")
    return path


def _labelled(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_fit_watch_writes_a_model_that_scoring_and_the_fingerprint_then_use(
        tmp_path: Path, fake_model: None) -> None:
    config = _config(tmp_path)
    result = runner.invoke(app, ["fit-watch", "--watch", "energy", "--data",
                                 str(_labelled(tmp_path, labelled_articles())), "--config",
                                 str(config)])
    assert result.exit_code == 0, result.output
    assert "5-fold CV, with the learned term: precision" in result.output
    written = tmp_path / "data" / "watch_models" / "energy.json"
    model = load_watch_model(written)
    assert model.watch_key == watch_key(ENERGY) and model.fitted_on["positives"] == 12
    settings = Settings(data_dir=str(tmp_path / "data"), watches=[ENERGY.model_dump()])
    article = {"title": "New wind farm", "text": "Forty turbines joined the grid today, "
               "adding 120 megawatt of wind power."}
    [scored] = scorer_for(settings)(ENERGY, [article])
    assert any(r.startswith("learned (24 labelled articles)") for r in scored.reasons)
    assert scored.relevant
    [passing] = scorer_for(settings)(ENERGY, [labelled_articles()[1]])
    assert not passing.relevant
    assert watch_fingerprint(ENERGY, "default", model.digest) != watch_fingerprint(ENERGY)
    other = ENERGY.model_copy(update={"name": "wind", "description": "Other words."})
    [generic] = scorer_for(settings)(other, [article])  # another watch: shipped coefficients
    assert not any(r.startswith("learned") for r in generic.reasons)


def test_fit_watch_refuses_bad_labels_and_too_few_examples(tmp_path: Path,
                                                           fake_model: None) -> None:
    config = _config(tmp_path)
    rows = labelled_articles()
    rows[3] = {**rows[3], "label": "yes"}
    bad = runner.invoke(app, ["fit-watch", "-w", "energy", "-d", str(_labelled(tmp_path, rows)),
                              "--config", str(config)])
    assert bad.exit_code == 2 and "article 'm1' has label 'yes'" in bad.output
    assert bad.output.strip().count("\n") == 0
    few = runner.invoke(app, ["fit-watch", "-w", "energy", "-d",
                              str(_labelled(tmp_path, labelled_articles()[:10])), "--config",
                              str(config)])
    assert few.exit_code == 1 and "too few labelled articles to fit: 5 relevant" in few.output
    assert not (tmp_path / "data" / "watch_models").exists()  # nothing half-written


def test_fit_watch_help_names_its_options() -> None:
    result = runner.invoke(app, ["fit-watch", "--help"])
    assert result.exit_code == 0
    for option in ("--watch", "--data", "--output", "--config", "--json"):
        assert option in result.output
