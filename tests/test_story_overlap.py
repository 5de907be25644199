"""The stories stage overlaps its text features with the embedding: the model runs on a worker
thread while the stage's own thread works out each text's terms, names and shingles. The
overlap must not change a single input of the assignment. Fictional text, a fake encoder."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np

import pipeline.stories
from pipeline.records import open_store
from pipeline.settings import Settings
from pipeline.stories import TextFeatures, assign_stories
from pipeline.story_text import story_names, story_terms, text_shingles
from tests.support.factories import add_article

TEXTS = [
    ("Harbour bridge closes for repairs", "The Lindqvist harbour bridge closes on Monday for "
     "six weeks of repairs, the city council of Norrvik said."),
    ("Norrvik bridge repairs begin", "Repairs to the Lindqvist harbour bridge in Norrvik "
     "began on Monday; ferries run every 20 minutes."),
    ("", "Orchard growers in Velmora count frost damage after a cold April night. Apple "
     "blossom froze in 40 orchards."),
]


def test_features_from_the_memo_are_the_ones_computed_directly():
    features = TextFeatures()
    for title, text in TEXTS:
        features.add(title, text)
    for title, text in TEXTS[:2]:
        assert features.of(title, text) == (story_terms(title, text), story_names(title, text),
                                            text_shingles(text))
    # a text the memo has not seen (an edited version) is computed on the spot
    assert features.of("Other", "A different text entirely.") == (
        story_terms("Other", "A different text entirely."),
        story_names("Other", "A different text entirely."),
        text_shingles("A different text entirely."))
    assert features.of("Headline only", None) == features.of("Headline only", "")


def test_the_model_embeds_on_another_thread_while_features_fill(tmp_path, monkeypatch):
    threads: list[str] = []

    def fake_encode(_settings, texts: list[str]) -> np.ndarray:
        threads.append(threading.current_thread().name)
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    filled: list[int] = []
    real_add = TextFeatures.add

    def counting_add(self, title, text):
        filled.append(1)
        return real_add(self, title, text)

    monkeypatch.setattr(pipeline.stories, "encode_for", fake_encode)
    monkeypatch.setattr(TextFeatures, "add", counting_add)
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    seen = datetime(2026, 4, 2, 8, tzinfo=UTC)
    for n, (title, text) in enumerate(TEXTS):
        add_article(store, f"a{n}", title=title, text=text, language="en",
                    seen_at=seen + timedelta(minutes=n), with_version_row=True)
    counts = assign_stories(store, Settings())
    assert counts["embedded"] == 3
    assert threads and all(name != threading.main_thread().name for name in threads)
    assert len(filled) == 3  # every embedded text's features came from the overlap
    assert all(store.get_article(f"a{n}")["story_id"] for n in range(3))
    store.close()
