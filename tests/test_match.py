"""`newswatch match`: score a JSONL file against a watch, or preview a watch over the store.

Input errors are checked without the embedding model; the `slow` tests score for real with
the shipped scorer (the texts are short fictional articles written for these tests).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from pipeline import match as match_module
from pipeline import schema
from pipeline.article_input import ArticleInputError, read_articles
from pipeline.cli import app
from pipeline.match import UnknownWatchError, find_watch, match_records
from pipeline.records import open_store
from pipeline.settings import Settings
from tests.support import factories
from tests.test_relevance import PHONE_TEXT, PHONE_TITLE, PLA_TEXT, PLA_TITLE, RAIL_TEXT

runner = CliRunner()


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def config_file(tmp_path: Path, **extra: Any) -> Path:
    data = {"store": {"url": f"sqlite:///{tmp_path / 'records.db'}"},
            "watches": [{"name": "taiwan", "keywords": ["Taiwan", "Taiwanese", "Taipei"],
                         "description": "News about Taiwan: politics, the military, "
                         "cross-strait relations.", "enabled": False}], **extra}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return path


def _no_scoring(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("nothing should be scored after an input error")


# ---- input checks and errors (no model) ----------------------------------------------------


def test_help_names_both_modes() -> None:
    result = runner.invoke(app, ["match", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--watch", "--input", "--since", "--output", "--json", "--config"):
        assert option in result.output


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"title": "no id"}', "'id' must be a non-empty string or number"),
    ('{"id": "", "title": "empty id"}', "'id' must be a non-empty string or number"),
    ('{"id": "b", "text": 42}', "'text' must be a string or null"),
    ('{"id": "a", "title": "again"}', "duplicate id 'a' (first on line 1)"),
])
def test_bad_line_is_named_and_nothing_is_scored_or_overwritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, message: str) -> None:
    monkeypatch.setattr(match_module, "scorer_for", _no_scoring)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "title": "Taiwan votes"}, "",
                                                 line])
    output = tmp_path / "out.jsonl"
    output.write_text("earlier results\n", encoding="utf-8")
    result = runner.invoke(app, ["match", "--watch", "taiwan", "--input", str(source),
                                 "--output", str(output), "--config",
                                 str(config_file(tmp_path))])
    assert result.exit_code == 1
    assert f"{source}:3: {message}" in result.output
    assert output.read_text(encoding="utf-8") == "earlier results\n"


def test_read_articles_accepts_the_cluster_format_with_extra_keys(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [
        {"id": 7, "title": "T", "text": "", "url": None, "source": "S", "published_at": None,
         "label": 1, "topic": "extra keys are ignored"}])
    assert read_articles(source)[0]["id"] == 7
    with pytest.raises(ArticleInputError, match=r"in\.jsonl:1: 'published_at'"):
        read_articles(write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "published_at": 5}]))


def test_unknown_watch_exits_2_with_one_line(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "title": "x"}])
    result = runner.invoke(app, ["match", "--watch", "tibet", "--input", str(source),
                                 "--config", str(config_file(tmp_path))])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "no watch named 'tibet' (configured: taiwan; built in: taiwan)" in result.output


@pytest.mark.parametrize("args", [[], ["--input", "x.jsonl", "--since", "7d"]])
def test_exactly_one_mode(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, ["match", "--watch", "taiwan", *args, "--config",
                                 str(config_file(tmp_path))])
    assert result.exit_code == 2
    assert "exactly one of --input FILE or --since" in result.output


def test_missing_input_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["match", "--watch", "taiwan", "--input",
                                 str(tmp_path / "nope.jsonl"), "--config",
                                 str(config_file(tmp_path))])
    assert result.exit_code == 1 and "no such file" in result.output


def test_find_watch_prefers_the_configured_one_and_falls_back_to_built_in() -> None:
    settings = Settings(watches=[{"name": "taiwan", "keywords": ["Formosa"], "enabled": False}])
    assert find_watch(settings, "taiwan").keywords == ["Formosa"]  # disabled: still testable
    assert "Taipei" in find_watch(Settings(), "taiwan").keywords
    with pytest.raises(UnknownWatchError):
        find_watch(settings, "tibet")


def test_match_records_uses_the_configured_model_in_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress bar sees every chunk; the scorer gets ``embedding.model``."""
    from pipeline import embeddings

    models: list[str] = []

    def fake_encode(texts: list[str], model: str, device: str, batch_size: int = 32,
                    **_options: Any) -> Any:
        import numpy as np

        models.append(model)
        return np.zeros((len(texts), 3), dtype=np.float32)

    monkeypatch.setattr(embeddings, "encode", fake_encode)
    monkeypatch.setattr(match_module, "CHUNK", 2)
    settings = Settings(embedding={"model": "/models/custom"})
    records = [{"id": i, "title": f"Taiwan item {i}", "text": None} for i in range(5)]
    seen: list[tuple[int, int | None]] = []
    out = match_records(find_watch(settings, "taiwan"), records, settings,
                        progress=lambda advance, total: seen.append((advance, total)))
    assert [r["id"] for r in out] == list(range(5))
    assert set(models) == {"/models/custom"}
    assert seen == [(0, 5), (2, None), (2, None), (1, None)]


# ---- scoring for real (embedding model) ------------------------------------------------------

ARTICLES = [
    {"id": "pla", "title": PLA_TITLE, "text": PLA_TEXT, "url": "https://a.example/1",
     "source": "A", "published_at": "2024-05-01T08:00:00Z"},
    {"id": "phone", "title": PHONE_TITLE, "text": PHONE_TEXT, "url": None, "source": None,
     "published_at": None, "label": 0},
    {"id": 3, "title": "High-speed rail line opens", "text": RAIL_TEXT},
    {"id": "headline", "title": "Taiwan reports 30 Chinese warplanes near the island",
     "text": "", "published_at": None},
]


@pytest.mark.slow
def test_input_mode_writes_one_line_per_article_in_order(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ARTICLES)
    result = runner.invoke(app, ["match", "--watch", "taiwan", "--input", str(source),
                                 "--config", str(config_file(tmp_path))])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["id"] for line in lines] == ["pla", "phone", 3, "headline"]
    assert all(set(line) == {"id", "score", "relevant", "passage", "reasons"}
               for line in lines)
    passage = lines[0]["passage"]  # where the article talks about Taiwan, and what it says
    assert passage["where"] == "lead" and "exercises around Taiwan" in passage["quote"]
    assert passage["quote"].strip("…") in passage["text"] and lines[2]["passage"] is None
    verdicts = {line["id"]: line["relevant"] for line in lines}
    assert verdicts == {"pla": True, "phone": False, 3: False, "headline": True}
    by_id = {line["id"]: line["score"] for line in lines}
    assert by_id["pla"] > 0.75 and by_id["phone"] < 0.1 and by_id[3] < 0.01

    output = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["match", "--watch", "taiwan", "--input", str(source),
                                 "--output", str(output), "--config",
                                 str(config_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert [json.loads(x) for x in output.read_text(encoding="utf-8").splitlines()] == lines


def add_story(store: Any, story_id: str, articles: list[tuple[str, str, str]],
              at: datetime) -> None:
    """A story with articles (source, title, text), as the story stage leaves them."""
    for n, (source, title, text) in enumerate(articles):
        factories.add_article(store, f"{story_id}-{n}",
                              url=f"https://{source.lower()}.example/{n}", source=source,
                              title=title, text=text, published_at=at, story_id=story_id)
    factories.add_story(store, story_id, title=articles[0][1], at=at,
                        article_count=len(articles), sources=[s for s, _, _ in articles])


def _rows(store: Any) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (schema.alerts, schema.article_watch_scores)}


@pytest.mark.slow
def test_since_mode_previews_stories_and_writes_nothing(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    now = datetime.now(UTC)
    try:
        add_story(store, "s-drills", [("Alpha", PLA_TITLE, PLA_TEXT),
                                      ("Beta", "Taiwan says drills tested blockade plans",
                                       PLA_TEXT)], now - timedelta(days=1))
        add_story(store, "s-phone", [("Gamma", PHONE_TITLE, PHONE_TEXT)], now - timedelta(days=2))
        add_story(store, "s-rail", [("Delta", "Rail line opens", RAIL_TEXT)], now)
        add_story(store, "s-old", [("Alpha", PLA_TITLE, PLA_TEXT)], now - timedelta(days=30))
        before = _rows(store)
    finally:
        store.close()

    result = runner.invoke(app, ["match", "--watch", "taiwan", "--since", "7d", "--json",
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    stories = json.loads(result.stdout[result.stdout.index("["):])
    assert [s["story_id"] for s in stories] == ["s-drills", "s-phone"]  # no keyword: left out
    drills, phone = stories
    assert drills["relevant"] and drills["score"] > 0.75 and drills["sources"] == ["Alpha",
                                                                                    "Beta"]
    assert drills["title"] == PLA_TITLE and any("in title" in r for r in drills["reasons"])
    assert drills["passage"]["where"] == "lead" and "Taiwan" in drills["passage"]["quote"]
    assert not phone["relevant"] and phone["score"] < 0.1

    table = runner.invoke(app, ["match", "--watch", "taiwan", "--since", "7d", "--config",
                                str(config)])
    assert table.exit_code == 0, table.output
    assert "1 story would alert" in table.output and "nothing sent" in table.output

    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    try:
        assert _rows(store) == before == {"alerts": 0, "article_watch_scores": 0}
    finally:
        store.close()
