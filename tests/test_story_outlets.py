"""With ``second_outlet`` on, an outlet's second article on a subject waits for another outlet: it
joins a story of only its own outlet's articles as a near-copy of one, else starts its own,
and a story that holds other outlets is open to it as always. Vectors and texts made up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from pipeline.settings import StoriesSettings
from pipeline.story_assignment import StoryAssigner, StoryItem
from pipeline.story_text import story_features

T0 = datetime(2026, 7, 1, 8, tzinfo=UTC)
CONF = StoriesSettings(threshold=0.7, term_weight=0.0, name_weight=0.0, time_weight=0.0,
                       second_outlet=True)


def at(degrees: float) -> np.ndarray:
    vector = np.zeros(3, dtype=np.float32)
    vector[0], vector[1] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return vector


BODIES = {"a": "The Pellworth ferry timetable changes next month, the operator says, with "
               "fewer winter crossings and a later first sailing on Sundays.",
          "b": "A new bakery opens on Quay Street with a queue around the block, selling "
               "rye loaves and fish pies from a converted net loft.",
          "c": "Harbour fees in Pellworth rise for visiting yachts but not for the fishing "
               "fleet, the council decided after a long evening meeting."}


def item(aid: str, source: str | None, degrees: float, hours: float,
         text: str = "") -> StoryItem:
    text = text or BODIES[aid]
    terms, names, shingles = story_features(f"headline {aid}", text)
    return StoryItem(aid, f"headline {aid}", source, T0 + timedelta(hours=hours),
                     at(degrees), terms, names, shingles, dated=True)


def test_a_second_article_of_one_outlet_does_not_join_its_own_story():
    """Two pieces of one desk, cosine 0.97, and no other outlet: two stories."""
    assigner = StoryAssigner(CONF)
    results = assigner.assign_batch([item("a", "Gazette", 0, 0), item("b", "Gazette", 14, 1)])
    assert results[1].new_story and results[1].story_id == "s-b"
    assert assigner.held_back == 1  # counted: b would have joined a


def test_a_held_article_joins_once_another_outlet_reports_in_the_run():
    """b waits to the end of the online pass; c (another outlet) joins a meanwhile, so b
    joins too instead of starting a second story of the event."""
    assigner = StoryAssigner(CONF)
    results = assigner.assign_batch([item("a", "Gazette", 0, 0), item("b", "Gazette", 14, 1),
                                     item("c", "Courier", 5, 2)])
    assert {r.story_id for r in results} == {"s-a"} and assigner.held_back == 0


def test_with_another_outlet_in_the_story_the_same_outlet_joins_as_always():
    assigner = StoryAssigner(CONF)
    results = assigner.assign_batch([item("a", "Gazette", 0, 0), item("c", "Courier", 5, 1),
                                     item("b", "Gazette", 10, 2)])
    assert {r.story_id for r in results} == {"s-a"}


def test_a_near_copy_from_the_same_outlet_still_joins_its_original():
    """A re-save under a new headline: same text, cosine above ``duplicate_threshold``."""
    text = ("The Pellworth harbour authority closed the north quay on Tuesday after a crane "
            "collapsed onto two moored trawlers, injuring no one, the harbour master said.")
    assigner = StoryAssigner(CONF)
    results = assigner.assign_batch([item("a", "Gazette", 0, 0, text),
                                     item("b", "Gazette", 3, 1, text)])
    assert results[1].story_id == "s-a" and results[1].duplicate_of == "a"


def test_a_stored_story_of_one_outlet_stays_closed_to_it_in_a_later_run():
    first = StoryAssigner(CONF)
    first.assign_batch([item("a", "Gazette", 0, 0)])
    later = StoryAssigner(CONF, first.stories.values())
    assert later.assign_batch([item("b", "Gazette", 10, 20)])[0].new_story
    other = StoryAssigner(CONF, first.stories.values())
    assert other.assign_batch([item("c", "Courier", 10, 20)])[0].story_id == "s-a"


def test_second_outlet_is_off_by_default_so_one_feed_still_forms_stories():
    """A deployment that watches one outlet gets its follow-ups in one story (one alert)."""
    conf = CONF.model_copy(update={"second_outlet": StoriesSettings().second_outlet})
    assigner = StoryAssigner(conf)
    results = assigner.assign_batch([item("a", "Gazette", 0, 0), item("b", "Gazette", 14, 1)])
    assert results[1].story_id == "s-a" and assigner.held_back == 0


def test_a_headline_alone_is_not_held_back():
    """No body to tell a second article from the same report filed twice."""
    first = StoryItem("a", "Pellworth quay closed", "Gazette", T0, at(0), dated=True)
    second = StoryItem("b", "Quay shut in Pellworth", "Gazette", T0 + timedelta(hours=1),
                       at(14), dated=True)
    assert StoryAssigner(CONF).assign_batch([first, second])[1].story_id == "s-a"


def test_articles_of_unknown_source_are_not_held_back():
    results = StoryAssigner(CONF).assign_batch([item("a", None, 0, 0), item("b", None, 14, 1)])
    assert results[1].story_id == "s-a"
