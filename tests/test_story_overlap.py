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
    for n, (title, text) in enumerate(TEXTS):
        features.add(f"a{n}", title, text)
    for title, text in TEXTS[:2]:
        assert features.of(title, text) == (story_terms(title, text), story_names(title, text),
                                            text_shingles(text))
    # a text the memo has not seen (an edited version) is computed on the spot
    assert features.of("Other", "A different text entirely.") == (
        story_terms("Other", "A different text entirely."),
        story_names("Other", "A different text entirely."),
        text_shingles("A different text entirely."))
    assert features.of("Headline only", None) == features.of("Headline only", "")
    assert features.embedded == {"a0", "a1", "a2"}


def test_the_model_embeds_on_another_thread_while_features_fill(tmp_path, monkeypatch):
    threads: list[str] = []

    def fake_encode(_settings, texts: list[str]) -> np.ndarray:
        threads.append(threading.current_thread().name)
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    filled: list[int] = []
    real_add = TextFeatures.add

    def counting_add(self, article_id, title, text):
        filled.append(1)
        return real_add(self, article_id, title, text)

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


def _vectors(_settings, texts: list[str]) -> np.ndarray:
    """One fixed vector per text (same text, same vector) so two stores can be compared."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for n, text in enumerate(texts):
        rng = np.random.default_rng(sum(map(ord, text)))
        out[n] = rng.normal(size=384)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _two_runs(tmp_path, name: str) -> tuple[object, list[str]]:
    """A store with a placed story, then three new articles in its window: the second run
    is the one that loads a window."""
    store = open_store(f"sqlite:///{tmp_path / name}")
    seen = datetime(2026, 4, 2, 8, tzinfo=UTC)
    add_article(store, "a0", title=TEXTS[0][0], text=TEXTS[0][1], language="en",
                seen_at=seen, with_version_row=True)
    assign_stories(store, Settings())
    for n, (title, text) in enumerate(TEXTS[1:], start=1):
        add_article(store, f"a{n}", title=title, text=text, language="en",
                    seen_at=seen + timedelta(hours=n), with_version_row=True)
    return store, [f"a{n}" for n in range(3)]


def test_the_window_loads_once_while_the_model_embeds_and_decides_the_same(
        tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.stories, "encode_for", _vectors)
    loads: list[str] = []
    real_load = pipeline.stories._load_active

    def counting_load(*args, **kwargs):
        loads.append(threading.current_thread().name)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pipeline.stories, "_load_active", counting_load)
    overlapped, ids = _two_runs(tmp_path, "overlapped.db")
    loads.clear()
    assign_stories(overlapped, Settings())
    assert loads == [threading.main_thread().name]  # loaded ahead, and used
    # The same store state, with nothing guessed ahead: the window loads after embedding.
    monkeypatch.setattr(pipeline.stories.story_records, "articles_to_place_soon",
                        lambda *_a, **_k: [])
    sequential, _ = _two_runs(tmp_path, "sequential.db")
    loads.clear()
    assign_stories(sequential, Settings())
    assert len(loads) == 1
    for article_id in ids:
        one, other = overlapped.get_article(article_id), sequential.get_article(article_id)
        assert (one["story_id"], one["duplicate_of"]) == (other["story_id"],
                                                          other["duplicate_of"])
    overlapped.close()
    sequential.close()


def test_a_window_whose_member_was_embedded_meanwhile_is_loaded_again(tmp_path, monkeypatch):
    """An edited article is a member of its story and gets its new vector in this pass: the
    window read before that vector existed is not used."""
    monkeypatch.setattr(pipeline.stories, "encode_for", _vectors)
    store, _ = _two_runs(tmp_path, "records.db")
    assign_stories(store, Settings())
    story = store.get_article("a0")["story_id"]
    edited = TEXTS[0][1] + " The council said the repairs would cost 4 million crowns."
    from tests.support.factories import add_version
    add_version(store, "a0", title=TEXTS[0][0], text=edited, version=2,
                seen_at=datetime(2026, 4, 2, 12, tzinfo=UTC), content_hash="h-a0-2")
    with store.engine.begin() as conn:
        from pipeline import schema
        conn.execute(schema.articles.update().where(schema.articles.c.article_id == "a0")
                     .values(version=2, text=edited, content_hash="h-a0-2"))
    loads: list[int] = []
    real_load = pipeline.stories._load_active
    monkeypatch.setattr(pipeline.stories, "_load_active",
                        lambda *a, **k: loads.append(1) or real_load(*a, **k))
    counts = assign_stories(store, Settings())
    assert counts["kept-story"] == 1 and len(loads) == 2  # ahead, then again after embedding
    assert store.get_article("a0")["story_id"] == story
    store.close()


def test_a_large_pass_drops_the_model_before_the_window_loads_and_decides_the_same(
        tmp_path, monkeypatch):
    """A backlog chunk embeds more texts than ``OVERLAP_MAX_TEXTS``: it embeds, releases the
    model, and only then loads the window (the model and a full window are never held at
    once); its decisions are the overlapped pass's."""
    monkeypatch.setattr(pipeline.stories, "encode_for", _vectors)
    events: list[str] = []
    real_load, real_embed = pipeline.stories._load_active, pipeline.stories.embed_pending
    monkeypatch.setattr(pipeline.stories, "_load_active",
                        lambda *a, **k: events.append("window") or real_load(*a, **k))
    monkeypatch.setattr(pipeline.stories, "embed_pending",
                        lambda *a, **k: (real_embed(*a, **k), events.append("embedded"))[0])
    monkeypatch.setattr(pipeline.stories, "release_encoders",
                        lambda: events.append("released"))
    overlapped, ids = _two_runs(tmp_path, "overlapped.db")
    events.clear()
    assign_stories(overlapped, Settings())
    assert "released" not in events and events.count("window") == 1  # two new texts: overlap
    monkeypatch.setattr(pipeline.stories, "OVERLAP_MAX_TEXTS", 1)
    serial, _ = _two_runs(tmp_path, "serial.db")
    events.clear()
    assign_stories(serial, Settings())
    assert events == ["embedded", "released", "window"]
    for article_id in ids:
        one, other = overlapped.get_article(article_id), serial.get_article(article_id)
        assert (one["story_id"], one["duplicate_of"]) == (other["story_id"],
                                                          other["duplicate_of"])
    overlapped.close()
    serial.close()
