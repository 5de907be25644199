"""Story assignment: representation, the in-memory assigner and the store-backed stage.

The fast tests use synthetic vectors; the ``slow`` ones load MiniLM once (module fixture) and
run the real stage over the fictional Qin Gang seed pair plus other fictional articles.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pipeline import schema
from pipeline.cluster import cluster_records
from pipeline.records import open_store
from pipeline.records.stories import list_stories
from pipeline.settings import StoriesSettings, load_settings
from pipeline.stories import assign_stories
from pipeline.story_assignment import (
    ActiveStory,
    StoryAssigner,
    StoryItem,
    bisect_scores,
    split_is_clear,
    text_size,
)
from pipeline.story_text import (
    LEAD_CHARS,
    article_text_for_embedding,
    derive_title,
    shingle_overlap,
    story_names,
    story_terms,
    text_shingles,
)
from pipeline.urls import content_hash
from tests.support.factories import add_article, add_version
from tests.support.seeds import fictional_seed_files

T0 = datetime(2023, 6, 18, 9, 0, tzinfo=UTC)

# ---- fictional articles (written for these tests) --------------------------------------------

QUAKE_PERU = (
    "Magnitude 6.4 earthquake strikes northern Peru, damaging homes in Piura",
    "A magnitude 6.4 earthquake struck northern Peru on Sunday, damaging dozens of adobe homes "
    "in the Piura region and cutting power to the town of Sullana, Peru's geophysical institute "
    "said. Two people were injured by falling walls, regional governor Elena Quispe told local "
    "radio. The quake's epicentre was 40 km east of Sullana at a depth of 35 km.")
QUAKE_TURKEY = (
    "Magnitude 5.2 earthquake shakes eastern Turkey's Malatya province",
    "An earthquake of magnitude 5.2 shook Malatya province in eastern Turkey on Sunday, "
    "sending residents into the streets, Turkey's disaster agency AFAD said. No casualties were "
    "reported, and inspectors were checking schools in the district of Yesilyurt, governor "
    "Mehmet Aydin said. The tremor was felt as far away as Elazig.")
QUAKE_PERU_WIRE = (
    "Magnitude 6.4 earthquake strikes northern Peru, damaging homes in Piura",
    "A magnitude 6.4 earthquake struck northern Peru on Sunday, damaging dozens of adobe homes "
    "in the Piura region and cutting power to the town of Sullana, Peru's geophysical institute "
    "said. Two people were injured by falling walls, regional governor Elena Quispe told local "
    "radio. The quake's epicentre was 40 km east of Sullana at a depth of 35 km. (Wire)")
QUAKE_PERU_EDIT = (
    "Magnitude 6.4 earthquake strikes northern Peru; two injured in Piura",
    "Correction: A magnitude 6.4 earthquake struck northern Peru on Sunday, damaging dozens of "
    "adobe homes in the Piura region and cutting power to Sullana, Peru's geophysical institute "
    "said. Two people were injured, regional governor Elena Quispe said; an earlier version "
    "misstated the depth, which was 38 km.")
BAKERY = (
    "Harbourside bakery chain Crumb & Co opens twelve new shops",
    "The family-owned bakery chain Crumb & Co will open twelve new shops along the coast this "
    "summer, its founder Ada Marlowe said, hiring 150 bakers and bringing its sourdough to "
    "towns that have lost their high-street bakeries.")


# ---- representation (no model) ---------------------------------------------------------------

def test_embedding_text_is_title_plus_lead():
    text = "First sentence of the body. " + "word " * 400
    out = article_text_for_embedding("A headline", text)
    assert out.startswith("A headline. First sentence")
    assert len(out) <= len("A headline. ") + LEAD_CHARS
    assert article_text_for_embedding("", "Only a body.") == "Only a body."
    assert article_text_for_embedding("Only a title", "") == "Only a title"
    # a body that repeats the headline is not doubled
    assert article_text_for_embedding("Quake hits Peru", "Quake hits Peru. More.") == \
        "Quake hits Peru. More."


def test_derive_title_takes_first_sentence_or_line():
    assert derive_title("BEIJING: Minister met envoy. He said more.\nSecond line") == \
        "BEIJING: Minister met envoy."
    assert derive_title("\n\nHeadline without stop\nBody text here.") == "Headline without stop"
    assert derive_title("") == ""
    assert len(derive_title("word " * 200)) <= 200


def test_story_terms_keep_names_and_numbers_not_stop_words():
    terms = story_terms(*QUAKE_PERU)
    assert {"6.4", "peru", "piura", "sullana", "quispe", "earthquake"} <= terms
    assert not {"the", "said", "sunday", "a"} & terms
    assert "peru" in story_terms("Peru's quake", "")


def test_story_names_are_capitalised_words_and_numbers():
    names = story_names(*QUAKE_TURKEY)
    assert {"malatya", "turkey", "afad", "mehmet", "aydin", "5.2", "yesilyurt"} <= names
    assert not {"residents", "streets", "the", "schools", "sunday"} & names


# ---- the in-memory assigner (synthetic vectors) ----------------------------------------------

def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def item(aid: str, vector: np.ndarray, hours: float, terms: str = "", source: str | None = None,
         text: str = "", title: str | None = None):
    """A made-up article; each from its own outlet unless ``source`` says otherwise (one
    outlet's articles are held apart, tests/test_story_outlets.py)."""
    return StoryItem(aid, title or f"title {aid}", source or f"outlet {aid}",
                     T0 + timedelta(hours=hours), vector,
                     frozenset(terms.split()), shingles=text_shingles(text or f"text of {aid}"))


def test_assigner_joins_close_items_and_starts_stories_for_others():
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0,
                           duplicate_threshold=0.99)
    assigner = StoryAssigner(conf)
    first = assigner.assign(item("a1", unit(1, 0, 0), 0, source="A"))
    assert first.new_story and first.story_id == "s-a1"
    joined = assigner.assign(item("a2", unit(1, 0.3, 0), 1, source="B", text=QUAKE_PERU[1]))
    assert (joined.story_id, joined.new_story, joined.duplicate_of) == ("s-a1", False, None)
    copy = assigner.assign(item("a3", unit(1, 0.3, 0), 2, source="C", text=QUAKE_PERU_WIRE[1]))
    assert copy.duplicate_of == "a2" and copy.story_id == "s-a1"
    other = assigner.assign(item("b1", unit(0, 1, 0), 3))
    assert other.new_story and other.story_id == "s-b1"
    story = assigner.stories["s-a1"]
    assert story.count == 3 and story.sources == ["A", "B", "C"]
    assert story.first_seen == T0 and story.last_seen == T0 + timedelta(hours=2)


def test_duplicate_needs_the_same_text_not_only_a_close_embedding():
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0,
                           duplicate_threshold=0.95)
    assigner = StoryAssigner(conf)
    assigner.assign(item("death", unit(1, 0.1, 0), 0, text=QUAKE_PERU[1]))
    profile = assigner.assign(item("profile", unit(1, 0.1, 0), 1, text=QUAKE_TURKEY[1]))
    assert profile.story_id == "s-death" and profile.duplicate_of is None
    resave = assigner.assign(item("resave", unit(1, 0.12, 0), 2, text=QUAKE_PERU_WIRE[1],
                                  title="A new headline for the same text"))
    assert resave.duplicate_of == "death"
    assert shingle_overlap(text_shingles(QUAKE_PERU[1]), text_shingles(QUAKE_PERU_WIRE[1])) > 0.9
    assert shingle_overlap(text_shingles(QUAKE_PERU[1]), text_shingles(QUAKE_TURKEY[1])) < 0.1


def test_story_is_named_after_its_most_representative_member_and_keeps_its_id():
    conf = StoriesSettings(threshold=0.3, term_weight=0.0, name_weight=0.0, refine_passes=0,
                           split_ratio=0.0)
    assigner = StoryAssigner(conf)
    # an early outlier, then three reports close to each other
    assigner.assign(item("odd", unit(1, 0.8, 0), 0, title="Wildfire near Ridgeton"))
    assert assigner.stories["s-odd"].title == "Wildfire near Ridgeton"
    for n, y in enumerate((0.1, 0.12, 0.14)):
        assigner.assign(item(f"park{n}", unit(1, y, 0), 1 + n, title=f"Park Fire report {n}"))
    story = assigner.stories["s-odd"]
    assert set(assigner.stories) == {"s-odd"} and story.count == 4
    assert story.title.startswith("Park Fire report")


def test_assigner_only_compares_with_stories_in_the_window():
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0, window_days=1)
    assigner = StoryAssigner(conf)
    assigner.assign(item("a1", unit(1, 0, 0), 0))
    late = assigner.assign(item("a2", unit(1, 0, 0), 30))  # 30 h later: the story is retired
    assert late.new_story and set(assigner.stories) == {"s-a1", "s-a2"}


def test_a_run_spanning_more_than_the_window_never_compares_across_it(monkeypatch):
    """One batch over 12 days, window 1 day: identical articles every day would all join one
    story if the window were applied after scoring; instead each article is only ever scored
    against stories active within a day of its own time."""
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0, window_days=1)
    assigner = StoryAssigner(conf)
    compared: list[tuple[float, float, float]] = []
    score = StoryAssigner._score

    def recording(self, member, cluster, exclude=None):
        compared.append((member.time, cluster.first, cluster.last))
        return score(self, member, cluster, exclude)

    monkeypatch.setattr(StoryAssigner, "_score", recording)
    # three articles at 09:00, 10:00, 11:00 on every third day: groups 72 h apart
    items = [item(f"d{day:02d}h{hour}", unit(1, 0, 0), 24 * day + hour)
             for day in range(0, 12, 3) for hour in range(3)]
    results = assigner.assign_batch(items)
    window = 86_400.0
    assert compared and all(last >= when - window and first <= when + window
                            for when, first, last in compared)
    story_of = {i.article_id: r.story_id for i, r in zip(items, results, strict=True)}
    assert sorted(set(story_of.values())) == ["s-d00h0", "s-d03h0", "s-d06h0", "s-d09h0"]


def test_candidate_lookup_does_not_grow_with_the_run():
    """Stories far outside an article's window are never even looked at: the centroids
    scanned per article stay the same whether the run spans 10 or 100 days of stories."""
    conf = StoriesSettings(threshold=0.99, term_weight=0.0, name_weight=0.0, window_days=1,
                           refine_passes=0)
    rng = np.random.default_rng(3)

    def scanned_per_article(days: int) -> float:
        assigner = StoryAssigner(conf)
        items = [item(f"x{n:05d}", unit(*rng.normal(size=8)), n * 6)
                 for n in range(days * 4)]  # four stories a day
        assigner.assign_batch(items)
        assert len(assigner.stories) == len(items)
        return assigner.scanned / len(items)

    short, long = scanned_per_article(10), scanned_per_article(100)
    assert 0 < long <= 1.1 * short and long <= 4 * 4


def test_cached_story_profiles_score_as_the_member_by_member_mean():
    """A story's sample profile is cached between joins and leaves: after a batch full of
    both, every score still equals the mean over the latest members, computed one by one."""
    conf = StoriesSettings(threshold=0.6, term_weight=0.3, name_weight=0.2, short_text_terms=0)
    rng = np.random.default_rng(5)
    centres = [rng.normal(size=16) for _ in range(6)]
    words = ["harbour", "strike", "vote", "flood", "summit", "trial", "drill", "tariff"]
    items = [StoryItem(f"a{n:03d}", f"t{n}", "S", T0 + timedelta(hours=n),
                       unit(*(centres[n % 6] + 0.8 * rng.normal(size=16))),
                       frozenset(rng.choice(words, 3, replace=False)),
                       frozenset(rng.choice(words, 2, replace=False)))
             for n in range(90)]
    assigner = StoryAssigner(conf)
    assigner.assign_batch(items)

    def by_hand(member, cluster) -> float:
        others = cluster.sample(None)
        cosine = float(np.mean(np.stack([o.vector for o in others]) @ member.vector))
        terms, names = assigner._weights_of(member)
        lexical = sum(conf.term_weight * assigner._dot(terms, assigner._weights_of(o)[0])
                      + conf.name_weight * assigner._dot(names, assigner._weights_of(o)[1])
                      for o in others) / len(others)
        return (1 - conf.term_weight - conf.name_weight) * cosine + lexical

    probe = assigner._clusters[next(iter(assigner.stories))].sample(None)[0]
    clusters = [c for c in assigner._clusters.values() if c.members]
    for cluster in clusters:
        assigner._score(probe, cluster)  # cached now
    mover = next(c for c in clusters if len(c.members) > 2)
    leaving = next(iter(mover.members.values()))
    label = next(k for k, c in assigner._clusters.items() if c is mover)
    assigner._leave(leaving, label)  # invalidates that story's profile
    for cluster in clusters:
        # float32 vectors: the cosine to the summed vectors and the mean of the cosines
        # agree to float32 precision, not bit for bit
        assert assigner._score(probe, cluster) == pytest.approx(by_hand(probe, cluster),
                                                                abs=1e-6)


def test_cached_story_profiles_score_headlines_as_a_fresh_profile_does():
    """The headline mix (centroid and summed weights) reads the same cached profile: a
    cached score equals the score from a profile built anew."""
    conf = StoriesSettings(threshold=0.6, term_weight=0.3, name_weight=0.2)
    rng = np.random.default_rng(7)
    centres = [rng.normal(size=16) for _ in range(4)]
    words = ["harbour", "strike", "vote", "flood", "summit", "trial"]
    items = [StoryItem(f"h{n:03d}", f"t{n}", "S", T0 + timedelta(hours=n),
                       unit(*(centres[n % 4] + 0.5 * rng.normal(size=16))),
                       frozenset(rng.choice(words, 3, replace=False)), frozenset())
             for n in range(40)]
    assigner = StoryAssigner(conf)
    assigner.assign_batch(items)
    probe = assigner._clusters[next(iter(assigner.stories))].sample(None)[0]
    clusters = [c for c in assigner._clusters.values() if c.members]
    cached = [assigner._score(probe, c) for c in clusters]
    for cluster in clusters:
        cluster.profile = None
    assert [assigner._score(probe, c) for c in clusters] == pytest.approx(cached, abs=1e-12)

# The synthetic items below carry a few terms each and stand for full texts (leads):
# short_text_terms=0 scores them with the full-text mix; headlines have tests of their own.

def test_rare_shared_terms_decide_between_two_same_type_stories():
    conf = StoriesSettings(threshold=0.5, term_weight=0.5, name_weight=0.0, short_text_terms=0)
    assigner = StoryAssigner(conf)
    for n in range(8):  # other quake stories make "earthquake magnitude" common in the window
        assigner.assign(item(f"f{n}", unit(*np.eye(12)[n + 4]), 0,
                             f"earthquake magnitude region{n}"))
    assigner.assign(item("p1", unit(1, 0.2, *[0] * 10), 0, "earthquake magnitude peru piura 6.4"))
    assigner.assign(item("t1", unit(1, -0.2, *[0] * 10), 1, "earthquake magnitude turkey malatya"))
    result = assigner.assign(item("p2", unit(1, *[0] * 11), 2, "earthquake magnitude piura 6.4"))
    assert result.story_id == "s-p1"
    # Only the event type in common: the same embedding scores lower than with shared names.
    story = assigner.stories["s-p1"]
    generic = item("x1", unit(1, *[0] * 11), 3, "earthquake magnitude chile")
    named = item("x2", unit(1, *[0] * 11), 3, "earthquake piura 6.4 quispe")
    assert assigner.score(generic, story) < assigner.score(named, story) - 0.1


def test_names_and_numbers_separate_two_fights_of_the_same_champion():
    conf = StoriesSettings(threshold=0.7, term_weight=0.0, name_weight=0.5, short_text_terms=0)
    assigner = StoryAssigner(conf)
    same = unit(1, 0.1, 0)  # MiniLM sees "champion retains title" either way

    def fight(aid: str, hours: float, names: str) -> StoryItem:
        return StoryItem(aid, aid, "S", T0 + timedelta(hours=hours), same,
                         names=frozenset(names.split()))

    results = assigner.assign_batch([
        fight("r1", 0, "klitschko rahman 7th"), fight("t1", 1, "klitschko thompson 6th"),
        fight("r2", 2, "klitschko rahman 7th"), fight("t2", 3, "klitschko thompson 6th")])
    r1, t1, r2, t2 = (r.story_id for r in results)
    assert r1 == r2 and t1 == t2 and r1 != t1


def test_refinement_moves_an_early_article_to_the_story_it_fits_best():
    def run(passes: int) -> dict[str, str]:
        conf = StoriesSettings(threshold=0.6, term_weight=0.0, name_weight=0.0,
                               refine_passes=passes, short_text_terms=0)
        items = [item("a1", unit(1, 0, 0), 0), item("m", unit(1, 1, 0), 1),
                 item("b1", unit(0.2, 1, 0), 2), item("b2", unit(0.2, 1, 0), 3)]
        results = StoryAssigner(conf).assign_batch(items)
        return {i.article_id: r.story_id for i, r in zip(items, results, strict=True)}

    online = run(0)  # "m" came while only a1's story existed, and joined it
    assert online["m"] == online["a1"] != online["b1"] == online["b2"]
    refined = run(2)  # with the whole run in view it belongs with the b-articles
    assert refined["m"] == refined["b1"] == refined["b2"] != refined["a1"]
    assert refined["m"] == "s-m"  # a new story is named after its earliest article


def test_stored_members_never_move():
    conf = StoriesSettings(threshold=0.6, term_weight=0.0, name_weight=0.0)
    first = StoryAssigner(conf)
    first.assign_batch([item("a1", unit(1, 0, 0), 0), item("m", unit(1, 1, 0), 1)])
    second = StoryAssigner(conf, first.stories.values())
    results = second.assign_batch([item("b1", unit(0.2, 1, 0), 2),
                                   item("b2", unit(0.2, 1, 0), 3)])
    assert set(second.stories["s-a1"].members) == {"a1", "m"}
    assert results[0].story_id == results[1].story_id == "s-b1"


def _two_events(prefix_a: str, prefix_b: str, start: float, n: int = 4) -> list[StoryItem]:
    """Two same-type events: each tight (cosine ~1 within), 0.6 between (the online pass and
    the refinement keep them together at threshold 0.5; their halves are clearly apart)."""
    rng = np.random.default_rng(7)
    items = []
    for k in range(n):
        for prefix, sign in ((prefix_a, 1), (prefix_b, -1)):
            noise = rng.normal(0, 0.01, 3)
            items.append(item(f"{prefix}{k}", unit(*(np.array([1, 0.5 * sign, 0]) + noise)),
                              start + len(items)))
    return items


def test_bisect_scores_finds_the_two_blocks():
    blocks = np.full((6, 6), 0.2)
    blocks[:3, :3] = blocks[3:, 3:] = 0.8
    halves = bisect_scores(blocks)
    assert set(halves[:3]) == {halves[0]} and set(halves[3:]) == {1 - halves[0]}
    assert split_is_clear(blocks, halves, ratio=0.8)
    assert not split_is_clear(blocks, halves, ratio=0.2)
    uniform = np.full((6, 6), 0.6)
    assert not split_is_clear(uniform, bisect_scores(uniform), ratio=0.8)


def test_cohesion_check_splits_two_chained_events_into_two_stories():
    def run(ratio: float) -> tuple[dict[str, str], int]:
        conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0,
                               split_ratio=ratio, short_text_terms=0)
        items = _two_events("a", "b", 0)
        assigner = StoryAssigner(conf)
        results = assigner.assign_batch(items)
        return ({i.article_id: r.story_id for i, r in zip(items, results, strict=True)},
                assigner.splits)

    whole, splits = run(0.0)
    assert len(set(whole.values())) == 1 and splits == 0  # online + refinement: one story
    split, splits = run(0.8)
    assert splits == 1
    assert {split[f"a{k}"] for k in range(4)} == {"s-a0"}
    assert {split[f"b{k}"] for k in range(4)} == {"s-b0"}


def test_cohesion_check_leaves_stories_from_earlier_runs_whole():
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0, split_ratio=0.8)
    first = StoryAssigner(conf)
    first.assign_batch([i for i in _two_events("a", "x", 0) if i.article_id.startswith("a")])
    second = StoryAssigner(conf, first.stories.values())
    later = _two_events("c", "b", 10)  # more of the stored event, and the other event
    results = second.assign_batch(later)
    assert {r.story_id for r in results} == {"s-a0"}  # follow-ups are not torn off
    assert set(second.stories["s-a0"].members) >= {"a0", "a1", "a2", "a3"}


def test_update_member_moves_the_centroid_not_the_article():
    assigner = StoryAssigner(StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0))
    assigner.assign(item("a1", unit(1, 0, 0), 0))
    assigner.assign(item("a2", unit(1, 0.5, 0), 1))
    before = assigner.stories["s-a1"].centroid.copy()
    assert assigner.update_member("s-a1", item("a2", unit(1, 1, 0), 2))
    story = assigner.stories["s-a1"]
    assert story.count == 2 and not np.allclose(before, story.centroid)
    assert not assigner.update_member("s-unknown", item("z", unit(1, 0, 0), 2))


# ---- the store-backed stage with the real model ----------------------------------------------

def seed_records() -> list[tuple[str, str, str]]:
    """(id, title, text) for the two Qin Gang seeds (the sample site's fictional pair); the
    title is their first sentence."""
    out = []
    for path in fictional_seed_files():
        text = path.read_text(encoding="utf-8")
        out.append((path.stem, derive_title(text), text))
    return out


def put(store, aid: str, title: str, text: str, at: datetime, source: str,
        version: int = 1) -> None:
    """Store one article version as the extraction stage would leave it."""
    digest = content_hash(title, text)
    if version == 1:
        add_article(store, aid, title=title, text=text, source=source, published_at=at,
                    seen_at=at, content_hash=digest, url=f"https://example.test/{aid}",
                    text_source="page", with_version_row=True)
        return
    a = schema.articles
    with store.engine.begin() as conn:
        conn.execute(a.update().where(a.c.article_id == aid).values(
            title=title, text=text, content_hash=digest, version=version, updated_at=at))
    add_version(store, aid, title=title, text=text, seen_at=at, version=version,
                content_hash=digest)


def corpus() -> list[tuple[str, str, str, datetime, str]]:
    """(id, title, text, time, source): seeds a day apart, two quakes, a wire copy, a bakery."""
    (id1, t1, x1), (id2, t2, x2) = seed_records()
    return [
        (id1, t1, x1, T0, "Seed outlet A"),
        ("quake-peru", *QUAKE_PERU, T0 + timedelta(hours=2), "Andes Herald"),
        ("quake-turkey", *QUAKE_TURKEY, T0 + timedelta(hours=3), "Anatolia Times"),
        ("bakery", *BAKERY, T0 + timedelta(hours=4), "Harbour Gazette"),
        ("quake-peru-wire", *QUAKE_PERU_WIRE, T0 + timedelta(hours=5), "Pacific Wire"),
        (id2, t2, x2, T0 + timedelta(hours=20), "Seed outlet B"),
    ]


def snapshot(store) -> dict[str, list[tuple]]:
    with store.engine.connect() as conn:
        return {t.name: sorted(tuple(map(str, r)) for r in conn.execute(t.select()))
                for t in (schema.articles, schema.article_versions, schema.stories)}


@pytest.fixture(scope="module")
def model():
    from pipeline.embeddings import load_model

    return load_model()


@pytest.fixture
def make_store(tmp_path):
    stores = []

    def make(name: str = "records"):
        store = open_store(f"sqlite:///{tmp_path / name}.db")
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def settings():
    return load_settings(None)


def stories_of(store) -> dict[str, dict]:
    with store.engine.connect() as conn:
        return {r["article_id"]: dict(r) for r in conn.execute(
            schema.articles.select()).mappings()}


@pytest.mark.slow
def test_stage_groups_seeds_splits_hard_negatives_and_marks_wire_copies(
        model, make_store, settings):
    store = make_store()
    for aid, title, text, at, source in corpus():
        put(store, aid, title, text, at, source)
    run_id = store.start_run()
    counts = assign_stories(store, settings, run_id)
    assert counts["embedded"] == 6
    got = stories_of(store)
    (id1, _, _), (id2, _, _) = seed_records()
    assert got[id1]["story_id"] == got[id2]["story_id"] == "s-" + id1[:20]
    assert got["quake-peru"]["story_id"] != got["quake-turkey"]["story_id"]
    assert got["bakery"]["story_id"] not in {got[k]["story_id"]
                                             for k in (id1, "quake-peru", "quake-turkey")}
    assert got["quake-peru-wire"]["duplicate_of"] == "quake-peru"
    assert got["quake-peru-wire"]["story_id"] == got["quake-peru"]["story_id"]
    assert all(a["story_assigned_version"] == 1 for a in got.values())
    assert store.run_counts(run_id)["stories"] == counts
    # English only: no multilingual vector is made until an article in another language
    # may meet these stories (crosslingual.py)
    assert counts == {"embedded": 6, "new-story": 4, "joined-story": 1, "duplicate": 1}
    seeds = next(s for s in list_stories(store) if s["story_id"] == got[id1]["story_id"])
    assert seeds["article_count"] == 2 and seeds["sources"] == ["Seed outlet A", "Seed outlet B"]
    assert list_stories(store, query="PERU")[0]["story_id"] == got["quake-peru"]["story_id"]

    # A rerun over the same records changes nothing at all.
    before = snapshot(store)
    assert assign_stories(store, settings, store.start_run()) == {"embedded": 0}
    assert snapshot(store) == before


@pytest.mark.slow
@pytest.mark.parametrize("headline_first", [True, False])
def test_a_headline_and_a_full_text_report_of_one_event_share_a_story(
        model, make_store, settings, headline_first):
    """Texts of every length in one window: a headline-only item (its title is its text) joins
    the full-text story of its event, and the other way round; other events stay apart."""
    store = make_store()
    headline = "Strong 6.4 quake hits northern Peru's Piura region, homes damaged"
    first, second = (T0, T0 + timedelta(hours=1))[:: 1 if headline_first else -1]
    put(store, "headline", headline, headline, first, "Wire headlines")
    put(store, "quake-peru", *QUAKE_PERU, second, "Andes Herald")
    put(store, "quake-turkey", *QUAKE_TURKEY, T0 + timedelta(hours=2), "Anatolia Times")
    put(store, "bakery", *BAKERY, T0 + timedelta(hours=3), "Harbour Gazette")
    assign_stories(store, settings)
    got = stories_of(store)
    assert got["headline"]["story_id"] == got["quake-peru"]["story_id"]
    assert got["headline"]["duplicate_of"] is None  # one event, not one text
    assert len({got[k]["story_id"] for k in ("quake-peru", "quake-turkey", "bakery")}) == 3


@pytest.mark.slow
def test_story_ids_are_the_same_in_one_run_or_two(model, make_store, settings):
    articles = corpus()
    once = make_store("once")
    for aid, title, text, at, source in articles:
        put(once, aid, title, text, at, source)
    assign_stories(once, settings)
    twice = make_store("twice")
    for step in (articles[:3], articles[3:]):
        for aid, title, text, at, source in step:
            put(twice, aid, title, text, at, source)
        assign_stories(twice, settings)
    pick = ("story_id", "duplicate_of")
    assert {k: [v[p] for p in pick] for k, v in stories_of(once).items()} == \
        {k: [v[p] for p in pick] for k, v in stories_of(twice).items()}


@pytest.mark.slow
def test_edited_version_keeps_its_story_and_moves_the_centroid(model, make_store, settings):
    store = make_store()
    for aid, title, text, at, source in corpus():
        put(store, aid, title, text, at, source)
    assign_stories(store, settings)
    story_id = stories_of(store)["quake-peru"]["story_id"]
    with store.engine.connect() as conn:
        centroid = conn.execute(schema.stories.select().where(
            schema.stories.c.story_id == story_id)).mappings().one()["centroid"]
    put(store, "quake-peru", *QUAKE_PERU_EDIT, T0 + timedelta(days=1), "Andes Herald", version=2)
    run_id = store.start_run()
    counts = assign_stories(store, settings, run_id)
    assert counts == {"embedded": 1, "kept-story": 1}
    after = stories_of(store)["quake-peru"]
    assert after["story_id"] == story_id and after["story_assigned_version"] == 2
    with store.engine.connect() as conn:
        row = conn.execute(schema.stories.select().where(
            schema.stories.c.story_id == story_id)).mappings().one()
        embedded = conn.execute(schema.article_versions.select().where(
            schema.article_versions.c.article_id == "quake-peru")).mappings().all()
    assert row["article_count"] == 2 and row["centroid"] != centroid
    assert all(v["embedding"] is not None and v["embedding_model"] for v in embedded)
    assert assign_stories(store, settings) == {"embedded": 0}  # each version embedded once


@pytest.mark.slow
def test_cluster_records_returns_every_input_id_once(model, settings):
    records = [{"id": aid, "title": title if n % 2 else "", "text": text,
                "published_at": at.isoformat(), "source": source, "extra": 1}
               for n, (aid, title, text, at, source) in enumerate(corpus())]
    records.append({"id": 7, "title": "Headline only: Crumb & Co bakery opens twelve shops",
                    "text": "", "published_at": None})
    out = cluster_records(records, settings)
    assert [o["id"] for o in out] == [str(r["id"]) for r in records]
    assert all(set(o) == {"id", "story_id", "duplicate_of"} for o in out)
    by_id = {o["id"]: o for o in out}
    (id1, _, _), (id2, _, _) = seed_records()
    assert by_id[id1]["story_id"] == by_id[id2]["story_id"]
    assert by_id["quake-peru-wire"]["duplicate_of"] == "quake-peru"
    assert by_id["quake-peru"]["story_id"] != by_id["quake-turkey"]["story_id"]
    with pytest.raises(ValueError):
        cluster_records([{"id": "x"}, {"id": "x"}], settings)


@pytest.mark.slow
def test_cluster_command_round_trips_ids_and_groups_only_the_seeds(model, tmp_path):
    import json

    from typer.testing import CliRunner

    from pipeline.cli import app

    records = [{"id": aid, "title": title, "text": text, "url": None, "source": source,
                "published_at": None if n == 2 else at.isoformat()}
               for n, (aid, title, text, at, source) in enumerate(corpus())
               if aid != "quake-peru-wire"]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    target = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["cluster", "--input", str(source),
                                      "--output", str(target)])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == [r["id"] for r in records]
    story = {o["id"]: o["story_id"] for o in out}
    (id1, _, _), (id2, _, _) = seed_records()
    assert story[id1] == story[id2]
    others = [story[r["id"]] for r in records if r["id"] not in (id1, id2)]
    assert len(set(others)) == len(others) and story[id1] not in others


# ---- consolidation: halves of one event started apart ----------------------------------------

def at(degrees: float) -> np.ndarray:
    """A unit vector at this angle in one plane (cosine between two = cos of their gap)."""
    return unit(np.cos(np.radians(degrees)), np.sin(np.radians(degrees)), 0)


def _two_halves(prefix_a: str, prefix_b: str, start: float) -> list[StoryItem]:
    """One event reported from two sides: the first reports 60 degrees apart (cosine 0.5,
    below a 0.7 threshold, so the online pass starts two stories), the later ones closer
    (25 and 40 degrees), each nearer its own side's story when it arrives."""
    items = [item(f"{prefix_a}0", at(0), start), item(f"{prefix_b}0", at(60), start + 1)]
    for k in range(1, 4):
        items += [item(f"{prefix_a}{k}", at(25), start + 2 * k),
                  item(f"{prefix_b}{k}", at(40), start + 2 * k + 1)]
    return items


def _groups(items: list[StoryItem], results: list) -> set[frozenset[str]]:
    by_story: dict[str, set[str]] = {}
    for one, result in zip(items, results, strict=True):
        by_story.setdefault(result.story_id, set()).add(one.article_id)
    return {frozenset(group) for group in by_story.values()}


def test_consolidation_merges_two_halves_of_one_event_into_the_older_story():
    def run(ratio: float) -> tuple[StoryAssigner, list]:
        conf = StoriesSettings(threshold=0.7, term_weight=0.0, name_weight=0.0,
                               merge_ratio=ratio)
        assigner = StoryAssigner(conf)
        items = _two_halves("a", "b", 0)
        return assigner, assigner.assign_batch(items)

    apart, results = run(0.0)  # the online pass alone: two stories
    assert len({r.story_id for r in results}) == 2 and apart.merges == 0
    merged, results = run(0.8)
    assert {r.story_id for r in results} == {"s-a0"} and merged.merges == 1
    assert merged.stories["s-a0"].count == 8


def test_full_text_stories_are_left_to_refinement_not_consolidated():
    """Refinement already compares each full text with every story of the run; consolidation
    is for headline stories, whose articles keep their online decision."""
    conf = StoriesSettings(threshold=0.7, term_weight=0.0, name_weight=0.0, merge_ratio=0.8,
                           short_text_terms=0, refine_passes=0, split_ratio=0.0)
    assigner = StoryAssigner(conf)
    results = assigner.assign_batch(_two_halves("a", "b", 0))
    assert len({r.story_id for r in results}) == 2 and assigner.merges == 0


def test_consolidation_keeps_two_events_of_one_topic_apart():
    """Two tight events 60 degrees apart (the other event's first report at 70, so the online
    pass starts it apart): their articles reach the join threshold against the other story,
    but score only half of what they score with their own: two events, not one."""
    def run(ratio: float) -> tuple[StoryAssigner, set[frozenset[str]]]:
        items = [item("a0", at(0), 0), item("b0", at(70), 1)]
        items += [item(f"{p}{k}", at(angle + k / 10), 2 * k + (p == "b"))
                  for k in range(1, 4) for p, angle in (("a", 0), ("b", 60))]
        conf = StoriesSettings(threshold=0.45, term_weight=0.0, name_weight=0.0,
                               merge_ratio=ratio)
        assigner = StoryAssigner(conf)
        return assigner, _groups(items, assigner.assign_batch(items))

    assigner, groups = run(0.8)
    assert groups == {frozenset(f"a{k}" for k in range(4)),
                      frozenset(f"b{k}" for k in range(4))}
    assert assigner.merges == 0
    assigner, groups = run(0.4)  # the ratio is what keeps them apart, not the threshold
    assert len(groups) == 1 and assigner.merges == 1


def test_a_stored_story_absorbs_the_run_s_half_of_its_event_and_keeps_its_id():
    conf = StoriesSettings(threshold=0.8, term_weight=0.0, name_weight=0.0)
    first = StoryAssigner(conf)
    first.assign_batch([i for i in _two_halves("a", "x", 0) if i.article_id.startswith("a")])
    assert set(first.stories) == {"s-a0"}
    second = StoryAssigner(conf, first.stories.values())
    later = [i for i in _two_halves("x", "b", 10) if i.article_id.startswith("b")]
    results = second.assign_batch(later)
    assert {r.story_id for r in results} == {"s-a0"} and second.merges == 1
    assert not any(r.new_story for r in results)
    assert second.stories["s-a0"].count == 8 and "s-b0" not in second.stories


# ---- headlines (texts shorter than short_text_terms) -----------------------------------------

def _spread_story(assigner: StoryAssigner, terms: str = "") -> ActiveStory:
    """A story whose members lie on both sides of one direction (cosine 0.78 with it each);
    the assigner's threshold must let them join (scores do not depend on it)."""
    for n, sign in enumerate((1, -1, 1, -1)):
        assigner.assign_batch([item(f"m{n}", unit(1, 0.8 * sign, 0), n, terms)])
    assert len(assigner.stories) == 1
    return next(iter(assigner.stories.values()))


def test_a_headline_is_compared_with_the_story_centroid_a_full_text_with_each_member():
    conf = StoriesSettings(threshold=-1.0, term_weight=0.0, name_weight=0.0, refine_passes=0,
                           split_ratio=0.0)
    assigner = StoryAssigner(conf)
    story = _spread_story(assigner)  # no terms: headlines
    headline = item("h", unit(1, 0, 0), 5)
    assert assigner.score(headline, story) == pytest.approx(1.0, abs=1e-5)  # the centroid
    full = StoryAssigner(conf.model_copy(update={"short_text_terms": 0}))
    story = _spread_story(full)
    pairwise = 1 / np.sqrt(1 + 0.8 ** 2)  # 0.78 with each member
    assert full.score(headline, story) == pytest.approx(pairwise, abs=1e-5)  # their mean


def test_a_headline_s_unused_word_and_name_weight_goes_to_the_embedding():
    conf = StoriesSettings(threshold=-1.0)  # shipped mix: 0.4 embedding, 0.2 words, 0.4 names
    assigner = StoryAssigner(conf)
    story = _spread_story(assigner)
    headline = item("h", unit(1, 0.3, 0), 5)
    centroid_cosine = float(unit(1, 0.3, 0) @ story.centroid)
    expected = (0.4 + 0.6 * conf.embedding_scale) * centroid_cosine
    assert assigner.score(headline, story) == pytest.approx(expected, abs=1e-5)


def test_long_texts_keep_the_full_mix():
    many = " ".join(f"word{n}" for n in range(25))  # a lead's worth of terms
    scores = []
    for floor in (20, 0):
        assigner = StoryAssigner(StoriesSettings(threshold=-1.0, short_text_terms=floor))
        story = _spread_story(assigner, many)
        scores.append(assigner.score(item("h", unit(1, 0.3, 0), 5, many), story))
    assert scores[0] == pytest.approx(scores[1])


def test_headline_stories_are_neither_refined_nor_split():
    """Two groups of headlines the full-text cohesion check would split stay one story: a
    headline's pair scores are too noisy to cut a story along (it cut large headline stories
    into their sub-themes)."""
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0, split_ratio=0.8)
    assigner = StoryAssigner(conf)
    results = assigner.assign_batch(_two_events("a", "b", 0))
    assert len({r.story_id for r in results}) == 1 and assigner.splits == 0


def test_a_chinese_text_is_measured_in_characters_not_in_space_separated_tokens():
    """Chinese has no spaces: one 'term' is a whole clause, so a full Chinese report would
    look like a headline (and be scored like one) if terms were simply counted."""
    assert text_size(frozenset({"國防部今日表示共機", "drill", "2023"})) == 4 + 1 + 1
    assert text_size(frozenset({"exercise", "taiwan"})) == 2


def at_cosine(cosine: float) -> np.ndarray:
    """A unit vector at ``cosine`` to unit(1, 0, 0)."""
    return unit(cosine, math.sqrt(1.0 - cosine * cosine), 0)


def dated(aid: str, vector: np.ndarray, hours: float) -> StoryItem:
    story_item = item(aid, vector, hours)
    story_item.dated = True
    return story_item


def test_publication_time_favours_a_headline_story_whose_latest_report_is_recent():
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0, refine_passes=0,
                           time_weight=0.1, time_scale_hours=12)

    def joins(second: StoryItem) -> bool:
        assigner = StoryAssigner(conf)
        assigner.assign(dated("a1", unit(1, 0, 0), 0))
        return not assigner.assign(second).new_story

    # cosine 0.45, below the threshold: one hour later the burst carries it in
    assert joins(dated("a2", at_cosine(0.45), 1))
    assert not joins(item("a2", at_cosine(0.45), 1))  # a fetch time is no evidence
    # a text with words enough to judge it by gets no help from the clock
    longer = dated("a2", at_cosine(0.45), 1)
    longer.terms = frozenset(f"word{n}" for n in range(12))
    assert not joins(longer)
    # cosine 0.55, above it: after a day and a half of quiet it is not enough
    assert not joins(dated("a2", at_cosine(0.55), 36))
    assert joins(item("a2", at_cosine(0.55), 36))
    # the gap is to the story's nearest report: a story still being reported stays close
    assigner = StoryAssigner(conf)
    for n, hours in enumerate((0, 10, 20, 30)):
        assigner.assign(dated(f"a{n}", unit(1, 0, 0), hours))
    assert not assigner.assign(dated("b", at_cosine(0.45), 31)).new_story


def test_time_weight_zero_leaves_time_to_the_window():
    conf = StoriesSettings(threshold=0.5, term_weight=0.0, name_weight=0.0, refine_passes=0,
                           time_weight=0.0)
    assigner = StoryAssigner(conf)
    assigner.assign(dated("a1", unit(1, 0, 0), 0))
    assert assigner.assign(dated("a2", at_cosine(0.45), 1)).new_story
    assert not assigner.assign(dated("a3", at_cosine(0.55), 60)).new_story
