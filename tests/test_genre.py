"""Genre cues: news reports what an institutional actor said or did; a feature is narrated
or addressed (fictional sentences)."""

from __future__ import annotations

import pytest

from pipeline.genre import genre_cues, is_reporting
from pipeline.relevance import KEYWORD_FEATURES, keyword_evidence
from pipeline.settings import WatchConfig


@pytest.mark.parametrize("sentence", [
    "The defence ministry said on Tuesday that six warships had crossed the line.",
    "Officials announced a new ferry route to the outer islands.",
    "The court sentenced the former mayor to nine years.",
    "The company confirmed it would open a second plant.",
    "外交部表示，將召回駐外大使。",
])
def test_an_actor_saying_or_doing_something_is_reporting(sentence: str) -> None:
    assert is_reporting(sentence)


@pytest.mark.parametrize("sentence", [
    "We wandered through the night market with a bowl of noodles.",
    "The tea is fragrant and the mountains are green.",
    "Ministries and courts are housed in old buildings.",  # an actor, but no statement
    "You will love the hot springs.",
])
def test_narration_and_description_are_not_reporting(sentence: str) -> None:
    assert not is_reporting(sentence)


def test_personal_words_are_counted_per_hundred_words_and_us_is_not_the_us() -> None:
    cues = genre_cues(["I ate, and we left.", "You should go.", "The US said no."])
    assert cues.personal_words == 3
    assert cues.words == 12
    assert cues.personal == pytest.approx(25.0)
    assert cues.reporting_sentences == 0  # "the US" is no institutional actor in the list
    assert genre_cues([]).reporting == 0.0 and genre_cues([]).personal == 0.0


def test_the_scorer_reads_the_cues_only_for_a_text_with_a_keyword() -> None:
    watch = WatchConfig(name="t", keywords=["Taiwan"])
    news = keyword_evidence(watch, "Ferries", "Taiwan's transport ministry said ferries "
                            "would resume. Officials announced the timetable.")
    diary = keyword_evidence(watch, "Ferries", "We took the ferry to Taiwan. I slept "
                             "the whole way and you could smell the sea.")
    reporting, personal = (KEYWORD_FEATURES.index(n) for n in ("reporting", "personal"))
    assert news.features()[reporting] == 1.0 and news.features()[personal] == 0.0
    assert diary.features()[reporting] == 0.0 and diary.features()[personal] > 10
    none = keyword_evidence(watch, "Ferries", "Officials announced the timetable.")
    assert none.genre.sentences == 0 and none.features()[reporting] == 0.0
