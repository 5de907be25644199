"""Consolidation across runs: two stored stories of one event fold into the older one, and
what users hold of the newer one (its id in alerts, searches and links) lands on the survivor.
All vectors and texts here are made up for these tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import pipeline.stories
from pipeline import schema
from pipeline.records import open_store
from pipeline.records.stories import list_stories, resolve_story_id, story_and_articles
from pipeline.settings import Settings, StoriesSettings
from pipeline.stories import assign_stories
from pipeline.story_assignment import StoryAssigner, StoryItem
from tests.support.factories import add_article

T0 = datetime(2026, 5, 4, 6, tzinfo=UTC)


def at(degrees: float, dim: int = 3) -> np.ndarray:
    """A unit vector at this angle in one plane (cosine between two = cos of their gap)."""
    vector = np.zeros(dim, dtype=np.float32)
    vector[0], vector[1] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return vector


def headline(aid: str, degrees: float, hours: float) -> StoryItem:
    return StoryItem(aid, f"headline {aid}", f"source {aid}", T0 + timedelta(hours=hours),
                     at(degrees))


# Run 1: two reports of each side of one event, 57 degrees apart (cosine 0.54, below the 0.7
# threshold, so two stories). Run 2: later reports from both sides in between, each nearer its
# own side: the two stored stories are now as close as each is to itself.
RUN_1 = [headline("a0", 0, 0), headline("b0", 60, 1), headline("a1", 5, 2),
         headline("b1", 55, 3)]
RUN_2 = [headline("a2", 25, 5), headline("b2", 35, 6), headline("a3", 25, 7),
         headline("b3", 35, 8)]
CONF = StoriesSettings(threshold=0.7, term_weight=0.0, name_weight=0.0)


def test_two_stored_halves_of_one_event_fold_into_the_older_story():
    first = StoryAssigner(CONF)
    first.assign_batch(RUN_1)
    assert set(first.stories) == {"s-a0", "s-b0"} and first.merges == 0
    second = StoryAssigner(CONF, first.stories.values())
    results = second.assign_batch(RUN_2)
    assert {r.story_id for r in results} == {"s-a0"}
    assert second.folds == [("s-b0", "s-a0")] and second.merges == 1
    survivor, absorbed = second.stories["s-a0"], second.stories["s-b0"]
    assert survivor.count == 8 and set(survivor.members) == {f"{p}{k}" for p in "ab"
                                                             for k in range(4)}
    assert absorbed.merged_into == "s-a0" and absorbed.count == 0 and not absorbed.members
    assert set(survivor.sources) == {f"source {i.article_id}" for i in RUN_1 + RUN_2}


def test_stored_stories_of_two_events_stay_apart():
    """The same later reports, but each side's own: no story comes close to the other."""
    first = StoryAssigner(CONF)
    first.assign_batch(RUN_1)
    second = StoryAssigner(CONF, first.stories.values())
    results = second.assign_batch([headline("a2", 2, 5), headline("b2", 58, 6)])
    assert [r.story_id for r in results] == ["s-a0", "s-b0"]
    assert second.folds == [] and second.merges == 0


def test_consolidation_off_keeps_stored_stories_apart():
    conf = CONF.model_copy(update={"merge_ratio": 0.0})
    first = StoryAssigner(conf)
    first.assign_batch(RUN_1)
    second = StoryAssigner(conf, first.stories.values())
    assert {r.story_id for r in second.assign_batch(RUN_2)} == {"s-a0", "s-b0"}


def _dated(aid: str, degrees: float, hours: float) -> StoryItem:
    item = headline(aid, degrees, hours)
    item.dated = True
    return item


def test_consolidation_counts_closeness_in_time_between_headline_stories():
    """Two headline stories of one run, 70 degrees apart at first, then each with a report
    leaning toward the other. By content alone they stay apart (the code before this rule
    kept them apart even dated); reported within the same two hours, the join's time term
    counts in the link as it counts in each article's join, and they merge. The same reports
    a day apart stay two stories (the term is a penalty there), undated ones too (a fetch
    time is no evidence)."""
    conf = CONF.model_copy(update={"time_weight": 0.1, "time_scale_hours": 12.0})
    angles = (0, 70, 22, 48)

    def stories(hours: tuple[float, ...], dated: bool = True) -> tuple[int, int]:
        assigner = StoryAssigner(conf)
        make = _dated if dated else headline
        pairs = enumerate(zip(angles, hours, strict=True))
        results = assigner.assign_batch([make(f"{'ab'[n % 2]}{n // 2}", angle, hour)
                                         for n, (angle, hour) in pairs])
        return len({r.story_id for r in results}), assigner.merges

    assert stories((0, 0.5, 1, 1.5)) == (1, 1)
    assert stories((0, 30, 1, 31)) == (2, 0)
    assert stories((0, 0.5, 1, 1.5), dated=False) == (2, 0)


# ---- through the stage and the records -------------------------------------------------------

ANGLES = {item.article_id: float(np.degrees(np.arctan2(item.vector[1], item.vector[0])))
          for item in RUN_1 + RUN_2}


def _vectors(_settings, texts: list[str]) -> np.ndarray:
    """Each fictional text names its article; its vector is that article's angle."""
    return np.stack([at(ANGLES[text.split()[1].rstrip(".")], 384) for text in texts])


def _add(store, items: list[StoryItem]) -> None:
    for one in items:
        add_article(store, one.article_id, title=one.title, text=f"Report {one.article_id}.",
                    source=one.source, published_at=one.time, language="en",
                    with_version_row=True)


@pytest.fixture
def folded_store(tmp_path, monkeypatch):
    """A store after two runs: run 2 folded story s-b0 into s-a0."""
    monkeypatch.setattr(pipeline.stories, "encode_for", _vectors)
    settings = Settings(data_dir=str(tmp_path),
                        store={"url": f"sqlite:///{tmp_path / 'records.db'}"})
    settings.stories.threshold = 0.7
    settings.stories.term_weight = settings.stories.name_weight = 0.0
    settings.multilingual.enabled = False
    store = open_store(settings.store.url)
    _add(store, RUN_1)
    first = assign_stories(store, settings, "run-1")
    _add(store, RUN_2)
    second = assign_stories(store, settings, "run-2")
    yield store, settings, first, second
    store.close()


def test_the_stage_folds_stored_stories_and_the_old_id_still_resolves(folded_store):
    store, _settings, first, second = folded_store
    assert first["new-story"] == 2 and "merged-stories" not in first
    assert second["merged-stories"] == 1
    assert {store.get_article(i.article_id)["story_id"] for i in RUN_1 + RUN_2} == {"s-a0"}
    assert resolve_story_id(store, "s-b0") == "s-a0"
    assert resolve_story_id(store, "s-a0") == "s-a0"
    assert resolve_story_id(store, "s-none") is None
    listed = list_stories(store)
    assert [(s["story_id"], s["article_count"], s["merged_from"]) for s in listed] == [
        ("s-a0", 8, ["s-b0"])]
    story, articles = story_and_articles(store, "s-b0")  # a link from an earlier alert
    assert story["story_id"] == "s-a0" and len(articles) == 8
    with store.engine.connect() as conn:
        row = conn.execute(schema.stories.select().where(
            schema.stories.c.story_id == "s-b0")).mappings().one()
    assert row["merged_into"] == "s-a0" and row["article_count"] == 0


# ---- alerts: once per story, across a fold ---------------------------------------------------

def test_a_story_that_absorbed_an_alerted_story_does_not_alert_again(store, tmp_path):
    """The newer story alerted a watch; consolidation later folds it into an older story that
    had not (its reports did not name the topic yet). The survivor's next relevant report is
    the same event: no second "new" alert, even after the ledger's continuation window."""
    from pipeline.alerts.engine import run_alerts
    from pipeline.records.stories import save_assignments
    from tests.support.factories import with_alerts
    from tests.test_alert_engine import FakeScorer, add_articles, make_settings, outbox

    path = tmp_path / "outbox.jsonl"
    settings = with_alerts(make_settings({"outbox": {"type": "file", "path": str(path)}}),
                           continuation_days=1.0)
    scorer = FakeScorer()
    add_articles(store, "s-old", [("B", "Navy ships sail through the strait")],
                 T0 - timedelta(hours=1))
    add_articles(store, "s-new", [("A", "Taiwan strait transit by two destroyers")], T0)
    first = run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert first["new"] == 1 and len(outbox(path)) == 1
    later = T0 + timedelta(days=2)
    save_assignments(store, [], [], merges=[("s-new", "s-old")])  # what the story stage wrote
    add_articles(store, "s-old", [("B", "Taiwan says the destroyers left the strait")], later)
    second = run_alerts(store, settings, "r2", now=later, scorer=scorer)
    assert "new" not in second and len(outbox(path)) == 1


def test_without_the_fold_the_same_report_is_news(store, tmp_path):
    """The control: the survivor's report alerts when the alerted story was never folded in
    (so the test above is about the fold, not about the report)."""
    from pipeline.alerts.engine import run_alerts
    from tests.support.factories import with_alerts
    from tests.test_alert_engine import FakeScorer, add_articles, make_settings

    path = tmp_path / "outbox.jsonl"
    settings = with_alerts(make_settings({"outbox": {"type": "file", "path": str(path)}}),
                           continuation_days=1.0)
    add_articles(store, "s-old", [("B", "Navy ships sail through the strait")],
                 T0 - timedelta(hours=1))
    add_articles(store, "s-new", [("A", "Taiwan strait transit by two destroyers")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=FakeScorer())
    later = T0 + timedelta(days=2)
    add_articles(store, "s-old", [("B", "Taiwan says the destroyers left the strait")], later)
    assert run_alerts(store, settings, "r2", now=later, scorer=FakeScorer())["new"] == 1


# ---- search: the members under the survivor ----------------------------------------------------

def test_search_by_a_folded_story_id_finds_its_articles_under_the_survivor(folded_store):
    from pipeline.index import index_pending
    from pipeline.query import run_search
    from pipeline.search import open_search

    store, settings, _first, _second = folded_store
    backend = open_search(settings)
    try:
        assert index_pending(store, backend, "run-2")["indexed"] == 8
    finally:
        backend.close()
    for story_id in ("s-b0", "s-a0"):  # a link from an alert of the folded story, the survivor
        results = run_search(settings, "report", story_id=story_id, mode="keyword",
                             by_story=True, limit=50)
        assert [g.story_id for g in results.groups] == ["s-a0"]
        assert {h.article_id for h in results.hits} == {i.article_id for i in RUN_1 + RUN_2}


@pytest.mark.elasticsearch
def test_the_elasticsearch_stories_index_drops_a_folded_story(folded_store, request):
    """Same contract on the Elasticsearch backend (osmem, an in-memory fake of its API): the
    articles carry the survivor's id and the folded story's document is gone."""
    from pipeline.index import index_pending
    from pipeline.search.base import SearchQuery
    from pipeline.search.elastic import ElasticSearch
    from pipeline.settings import SearchSettings
    from tests.support.es_compat import OsmemCompatNode

    store, _settings, _first, _second = folded_store
    clone = request.getfixturevalue("osmem_clone")
    backend = ElasticSearch(SearchSettings(url=clone.url, vectors=False, index_prefix="nwfold"),
                            node_class=OsmemCompatNode, max_retries=0, initial_backoff=0.1)
    try:
        backend.index_stories([{"story_id": "s-b0", "title": "headline b0", "article_count": 4,
                                "sources": ["source b0"]}])  # indexed before the fold
        assert index_pending(store, backend, "run-2")["indexed"] == 8
        backend.client.indices.refresh(index="nwfold-stories")
        stories = backend.client.search(index="nwfold-stories", query={"match_all": {}})
        assert [(h["_id"], h["_source"]["article_count"]) for h in stories["hits"]["hits"]] == [
            ("s-a0", 8)]
        hits = backend.search(SearchQuery(text="report", story_id="s-a0", limit=50)).hits
        assert len(hits) == 8
    finally:
        backend.drop()
        backend.close()


def test_newswatch_stories_shows_what_each_story_absorbed(folded_store, tmp_path):
    import json

    from typer.testing import CliRunner

    from pipeline.cli import app

    _store, settings, _first, _second = folded_store
    config = tmp_path / "newswatch.yaml"
    config.write_text(f"store: {{url: '{settings.store.url}'}}\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["stories", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["story_id"], r["article_count"], r["merged_from"]) for r in rows] == [
        ("s-a0", 8, ["s-b0"])]
    table = runner.invoke(app, ["stories", "--config", str(config)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "merged from" in table.output and "s-b0" in table.output
