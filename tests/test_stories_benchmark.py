"""benchmarks/stories.py's error breakdown: where BCubed recall and precision are lost."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("stories")


def _partition(groups: dict[str, list[str]]) -> dict[str, str]:
    return {item: label for label, items in groups.items() for item in items}


def test_losses_add_up_to_bcubed_and_name_the_kind_of_error(bench):
    # Gold: a 10-article event A, a 4-article event B, a 2-article event C (fictional ids).
    gold = _partition({"A": [f"a{n}" for n in range(10)], "B": ["b0", "b1", "b2", "b3"],
                       "C": ["c0", "c1"]})
    # Predicted: A in a main story of 3 + a second piece of 6 + one headline alone; B whole
    # but with one of C's articles inside it; the other C article alone.
    pred = _partition({"s1": ["a0", "a1", "a2"], "s2": [f"a{n}" for n in range(3, 9)],
                       "s3": ["a9"], "s4": ["b0", "b1", "b2", "b3", "c0"], "s5": ["c1"]})
    precision, recall, _ = bench.bcubed(gold, pred)
    losses = bench.bcubed_losses(gold, pred)
    assert sum(losses["recall_lost"].values()) == pytest.approx(1 - recall, abs=1e-3)
    assert sum(losses["precision_lost"].values()) == pytest.approx(1 - precision, abs=1e-3)
    # A's main piece is the 6 (s2); the 3 is a second piece of 2-5, a9 is alone; C's main
    # piece is a tie, broken by story id (s4), so c1 is alone.
    n = len(gold)
    assert losses["recall_lost"]["pieces_6_plus"] == 0.0
    assert losses["recall_lost"]["pieces_2_5"] == pytest.approx(3 * 0.7 / n, abs=1e-4)
    assert losses["recall_lost"]["alone"] == pytest.approx((0.9 + 0.5) / n, abs=1e-4)
    assert losses["precision_lost"]["intruders"] == pytest.approx(0.8 / n, abs=1e-4)
    assert losses["gold_stories_whole"] == 1  # B
    assert losses["second_pieces"] == {"6_plus": 0, "2_5": 1, "alone": 2}
    assert losses["stories_merging_two"] == 0  # C's intruder is one article


def test_a_perfect_clustering_loses_nothing(bench):
    gold = _partition({"A": ["a0", "a1", "a2"], "B": ["b0", "b1", "b2"]})
    pred = _partition({"x": ["a0", "a1", "a2"], "y": ["b0", "b1", "b2"]})
    losses = bench.bcubed_losses(gold, pred)
    assert set(losses["recall_lost"].values()) == {0.0}
    assert set(losses["precision_lost"].values()) == {0.0}
    assert losses["gold_stories_whole"] == 2
    assert losses["stories_merging_two"] == 0


def test_two_events_in_one_story_are_counted_as_a_merge(bench):
    gold = _partition({"A": ["a0", "a1", "a2"], "B": ["b0", "b1", "b2"]})
    pred = {item: "x" for item in gold}
    losses = bench.bcubed_losses(gold, pred)
    assert losses["stories_merging_two"] == 1
    assert losses["precision_lost"]["intruders"] == pytest.approx(0.5 * 3 / 6, abs=1e-4)
    assert losses["precision_lost"]["majority"] == pytest.approx(0.5 * 3 / 6, abs=1e-4)
