"""Cross-lingual stories: the pure matching rules, then the story stage over a store with the
real models (fictional text, tests/support/crosslingual.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from pipeline import schema
from pipeline.cluster import cluster_records
from pipeline.crosslingual import (
    Candidate,
    Member,
    Thresholds,
    best_story,
    latin_names,
    match_stories,
    shares_names,
)
from pipeline.records import open_store
from pipeline.records.stories import resolve_story_id
from pipeline.settings import Settings
from pipeline.stories import assign_stories
from pipeline.urls import content_hash
from tests.support.crosslingual import DRILL_EN, DRILL_ZH, UNRELATED
from tests.support.factories import add_article

DAY = 86_400.0


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _story(story_id: str, *members: tuple[float, np.ndarray, str]) -> Candidate:
    story = Candidate(story_id)
    for n, (time, vector, language) in enumerate(members):
        story.add(Member(f"{story_id}-{n}", time, vector, language))
    return story


# ---- pure rules -----------------------------------------------------------------------------

def test_best_story_needs_the_threshold_and_the_window():
    near = _story("near", (0.0, _unit(1, 0.2), "en"))
    far = _story("far", (-10 * DAY, _unit(1, 0), "en"))
    item = Member("zh", 0.5 * DAY, _unit(1, 0.1), "zh-Hant")
    story, score = best_story(item, [near, far], Thresholds(0.5, 0.9), window_s=3 * DAY)
    assert story is near and score > 0.4  # "far" is closer in meaning but out of the window
    assert best_story(item, [near], Thresholds(0.999, 0.0), window_s=3 * DAY)[0] is None


def test_members_in_the_same_language_need_the_higher_threshold():
    chinese = _story("zh", (0.0, _unit(1, 0.6), "zh-Hans"))
    english = _story("en", (0.0, _unit(1, 0.6), "en"))
    item = Member("new", 0.0, _unit(1, 0), "zh-Hant")  # cosine 0.86 with both
    thresholds = Thresholds(cross=0.8, same=0.9)
    assert best_story(item, [chinese], thresholds, DAY)[0] is None  # Chinese with Chinese
    assert best_story(item, [chinese, english], thresholds, DAY)[0] is english


def test_a_join_needs_the_best_story_to_stand_out():
    item = Member("zh", 0.0, _unit(1, 0), "zh-Hant")
    first = _story("first", (0.0, _unit(1, 0.30), "en"))  # cosine 0.958
    close = _story("close", (0.0, _unit(1, 0.32), "en"))  # cosine 0.952
    far = _story("far", (0.0, _unit(1, 0.9), "en"))  # cosine 0.743
    assert best_story(item, [first, close], Thresholds(0.5, 0.9, 0.03), DAY)[0] is None
    assert best_story(item, [first, far], Thresholds(0.5, 0.9, 0.03), DAY)[0] is first
    assert best_story(item, [first], Thresholds(0.5, 0.9, 0.03), DAY)[0] is first


def test_match_stories_sends_each_story_to_its_best_english_story():
    traditional = _story("zh-t", (0.0, _unit(1, 0), "zh-Hant"))
    simplified = _story("zh-s", (0.0, _unit(1, 0.1), "zh-Hans"))
    english_a = _story("a", (0.0, _unit(1, 0.05), "en"))
    english_b = _story("b", (0.0, _unit(1, 0.5), "en"))
    links = match_stories([english_b, english_a], [simplified, traditional],
                          Thresholds(0.5, 0.9), window_s=DAY)
    assert {(o.story_id, e.story_id) for o, e, _ in links} == {("zh-t", "a"), ("zh-s", "a")}
    assert [link[2] for link in links] == sorted((link[2] for link in links), reverse=True)


def test_match_stories_ignores_weak_and_distant_pairs():
    chinese = _story("zh", (0.0, _unit(1, 0), "zh-Hant"))
    weak = _story("weak", (0.0, _unit(0, 1), "en"))
    late = _story("late", (9 * DAY, _unit(1, 0), "en"))
    assert match_stories([weak, late], [chinese], Thresholds(0.5, 0.9), window_s=3 * DAY) == []


def test_latin_names_are_read_only_from_latin_script_text():
    polish = latin_names("Firma Zelvako otwiera fabrykę w Brzegowie", "Inwestycja za 120 mln zł.")
    assert polish == {"firma", "zelvako", "brzegowie", "inwestycja"}  # names, not numbers
    assert latin_names("台東縣長宣布新港口 2031 年啟用", "") is None  # Chinese: another script
    assert latin_names("", "") is None


def _latin(story_id: str, language: str, title: str, vector: np.ndarray) -> Candidate:
    return Candidate(story_id, [Member(f"{story_id}-0", 0.0, vector, language,
                                       latin_names(title, ""))], first=0.0, last=0.0)


def test_a_latin_script_join_across_languages_needs_a_shared_name():
    """Two events of one topic sit as close as a translation in the multilingual space:
    between Polish and English the join also needs a shared name."""
    item = Member("pl", 0.0, _unit(1, 0), "pl",
                  latin_names("NBR podnosi stopy procentowe do 6,5 proc.", ""))
    other_bank = _latin("en", "en", "Veskora's central bank holds its rate at 4.25%",
                        _unit(1, 0.1))
    same_bank = _latin("en", "en", "Rundalia's central bank, the NBR, lifts its rate",
                       _unit(1, 0.1))
    thresholds = Thresholds(0.5, 0.9)
    assert best_story(item, [other_bank], thresholds, DAY)[0] is None
    assert best_story(item, [same_bank], thresholds, DAY)[0] is same_bank
    # a story that already holds the article's language needs no more evidence
    mixed = _latin("mixed", "en", "Veskora's central bank holds its rate at 4.25%",
                   _unit(1, 0.1))
    mixed.add(Member("pl-older", 0.0, _unit(1, 0.1), "pl", latin_names("Stopy bez zmian", "")))
    assert best_story(item, [mixed], thresholds, DAY)[0] is mixed


def test_shares_names_leaves_other_scripts_to_the_cosine():
    english = [Member("en", 0.0, _unit(1, 0), "en", latin_names("Port opens in Taitung", ""))]
    assert shares_names(None, "zh", english)  # a Chinese article: names spelt differently
    chinese = [Member("zh", 0.0, _unit(1, 0), "zh-Hant", None)]
    assert shares_names(frozenset({"taitung"}), "en", chinese)
    assert not shares_names(frozenset({"brzeg"}), "pl", english)


def test_match_stories_needs_a_shared_name_between_latin_scripts():
    polish = _latin("pl", "pl", "Zelvako zamyka 3000 miejsc w Brzegowie", _unit(1, 0))
    unrelated = _latin("a", "en", "Harlow carmaker cuts 3000 jobs", _unit(1, 0.05))
    related = _latin("b", "en", "Zelvako to shut its Brzegowo plant", _unit(1, 0.05))
    thresholds = Thresholds(0.5, 0.9)
    refused: list[str] = []
    assert match_stories([unrelated], [polish], thresholds, window_s=DAY, refused=refused) == []
    assert refused == ["pl"]
    links = match_stories([related], [polish], thresholds, window_s=DAY)
    assert [(o.story_id, e.story_id) for o, e, _ in links] == [("pl", "b")]


# ---- the story stage, with the models --------------------------------------------------------

def _stories(records: list[dict], *, enabled: bool = True) -> dict[str, str]:
    settings = Settings()
    settings.multilingual.enabled = enabled
    return {r["id"]: r["story_id"] for r in cluster_records(records, settings)}


@pytest.mark.slow
def test_a_chinese_article_joins_the_english_story_of_its_event():
    stories = _stories([DRILL_ZH, *DRILL_EN, *UNRELATED])
    assert stories["zh-drill"] == stories["en-drill-1"] == stories["en-drill-2"]
    assert len({stories["zh-drill"], stories["en-bakery"], stories["zh-market"]}) == 3


@pytest.mark.slow
def test_without_the_multilingual_model_the_languages_stay_apart():
    stories = _stories([DRILL_ZH, *DRILL_EN], enabled=False)
    assert stories["en-drill-1"] == stories["en-drill-2"] != stories["zh-drill"]


@pytest.mark.slow
def test_english_only_input_is_grouped_exactly_as_without_it():
    records = [*DRILL_EN, UNRELATED[0]]
    on, off = _stories(records), _stories(records, enabled=False)
    assert on == off


def _add(store, record: dict, seen: datetime) -> None:
    published = datetime.fromisoformat(record["published_at"].replace("Z", "+00:00"))
    digest = content_hash(record["title"], record["text"])
    add_article(store, record["id"], url=f"https://example.com/{record['id']}",
                source=record["source"], title=record["title"], text=record["text"],
                text_source="page", published_at=published, language=record["language"],
                content_hash=digest, seen_at=seen, with_version_row=True)


@pytest.mark.slow
def test_a_chinese_first_story_keeps_its_id_when_the_english_reports_arrive(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    settings = Settings()
    seen = datetime(2026, 3, 10, 6, tzinfo=UTC)
    _add(store, DRILL_ZH, seen)
    first = assign_stories(store, settings)
    assert first["new-story"] == 1
    chinese_story = store.get_article("zh-drill")["story_id"]
    for n, record in enumerate(DRILL_EN):
        _add(store, record, seen + timedelta(hours=1, minutes=n))
    second = assign_stories(store, settings)
    assert second["cross-language-merge"] == 1
    assert {store.get_article(r["id"])["story_id"] for r in DRILL_EN} == {chinese_story}
    with store.engine.connect() as conn:
        everything = conn.execute(select(schema.stories)).mappings().all()
    rows = [r for r in everything if r["merged_into"] is None]
    assert [(r["story_id"], r["article_count"]) for r in rows] == [(chinese_story, 3)]
    # The English story's id still resolves: links in its earlier alerts land on the merge.
    folded = [r["story_id"] for r in everything if r["merged_into"] == chinese_story]
    assert len(folded) == 1 and resolve_story_id(store, folded[0]) == chinese_story
    story = rows[0]
    assert story["title"] == DRILL_EN[0]["title"]  # the English headline names the story
    assert story["centroid"] is not None  # the English pass can now find it on its own
    assert set(story["sources"]) == {r["source"] for r in (DRILL_ZH, *DRILL_EN)}
    assert assign_stories(store, settings) == {"embedded": 0}
    store.close()


@pytest.mark.slow
def test_a_later_chinese_report_joins_the_stored_english_story(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    settings = Settings()
    seen = datetime(2026, 3, 10, 6, tzinfo=UTC)
    for n, record in enumerate(DRILL_EN):
        _add(store, record, seen + timedelta(minutes=n))
    first = assign_stories(store, settings)
    assert "embedded-multilingual" not in first  # English only: the model is not needed yet
    english_story = store.get_article("en-drill-1")["story_id"]
    _add(store, DRILL_ZH, seen + timedelta(hours=2))
    counts = assign_stories(store, settings)
    # the Chinese report, and the English members of the stories it may meet, now
    assert counts["embedded-multilingual"] == 1 + len(DRILL_EN)
    assert counts["cross-language-join"] == 1
    assert store.get_article("zh-drill")["story_id"] == english_story
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.stories)).mappings().one()
    assert row["article_count"] == 3 and row["title"] == DRILL_EN[0]["title"]
    assert row["first_seen_at"] == datetime(2026, 3, 10, 1, tzinfo=UTC)  # the Chinese report's
    assert DRILL_ZH["source"] in row["sources"]
    store.close()


@pytest.mark.slow
def test_the_two_models_are_never_loaded_together(tmp_path, monkeypatch):
    """A backlog chunk embeds with MiniLM, the next with USE: MiniLM is dropped before USE
    loads, so a run's peak holds one model (docs/performance.md, Peak RSS)."""
    from pipeline import crosslingual, embeddings

    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    settings = Settings()
    seen = datetime(2026, 3, 10, 6, tzinfo=UTC)
    for n, record in enumerate(DRILL_EN):
        _add(store, record, seen + timedelta(minutes=n))
    assign_stories(store, settings)
    assert embeddings.loaded_encoders() == 1  # MiniLM, from the English pass
    english_models_loaded: list[int] = []
    real = crosslingual.encode_multilingual

    def spy(texts: list[str], batch_size: int = 64) -> np.ndarray:
        english_models_loaded.append(embeddings.loaded_encoders())
        return real(texts, batch_size)

    monkeypatch.setattr(crosslingual, "encode_multilingual", spy)
    _add(store, DRILL_ZH, seen + timedelta(hours=2))
    counts = assign_stories(store, settings)
    assert counts["cross-language-join"] == 1  # the same decisions as with both resident
    assert english_models_loaded and set(english_models_loaded) == {0}
    store.close()


@pytest.mark.slow
def test_the_english_window_is_freed_before_the_multilingual_pass(tmp_path, monkeypatch):
    """The step after the English pass embeds with USE and reads only the store: the English
    pass's window (its assigner, stories and members) is gone by then, so a backlog chunk's
    peak never holds both (docs/performance.md, Peak RSS)."""
    import gc

    from pipeline import crosslingual
    from pipeline.story_assignment import StoryAssigner

    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    settings = Settings()
    seen = datetime(2026, 3, 10, 6, tzinfo=UTC)
    _add(store, DRILL_ZH, seen)
    assign_stories(store, settings)
    for n, record in enumerate(DRILL_EN):
        _add(store, record, seen + timedelta(hours=1, minutes=n))
    assigners_alive: list[int] = []
    real = crosslingual.CrossLingualPass.after_english

    def spy(self: crosslingual.CrossLingualPass) -> dict[str, int]:
        assigners_alive.append(sum(isinstance(o, StoryAssigner) for o in gc.get_objects()))
        return real(self)

    monkeypatch.setattr(crosslingual.CrossLingualPass, "after_english", spy)
    counts = assign_stories(store, settings)
    assert counts["joined-story"] + counts.get("new-story", 0) == len(DRILL_EN)
    assert counts["cross-language-merge"] == 1  # the same decisions as before
    assert assigners_alive == [0]
    store.close()
