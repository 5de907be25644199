"""Stories over the sample site, through the real pipeline (embedding model included)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline import schema
from pipeline.cluster import cluster_records
from pipeline.records import open_store
from pipeline.records.stories import list_stories
from pipeline.run import run_once
from pipeline.sample_site import SampleSite
from pipeline.settings import load_settings
from pipeline.urls import article_id_for
from tests.support.seeds import fictional_seed_files

pytestmark = pytest.mark.slow
SITE = Path("examples/sample_site")
STAGES = ("fetch", "extract", "stories")
MANIFEST = json.loads((SITE / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def site():
    with SampleSite(SITE) as running:
        yield running


@pytest.fixture(scope="module")
def settings(site, tmp_path_factory):
    db = tmp_path_factory.mktemp("stories") / "records.db"
    return load_settings("examples/demo.yaml", store={"url": f"sqlite:///{db}"},
                         feeds=[{"url": u} for u in site.feed_urls()])


@pytest.fixture(scope="module")
def stored(settings):
    report = run_once(settings, stages=STAGES, force=True)
    assert report.errors == {}
    store = open_store(settings.store.url)
    yield store
    store.close()


def story_of(store, site, path: str) -> dict:
    return store.get_article(article_id_for(f"{site.base_url}/{path}"))


def snapshot(store) -> dict[str, list[tuple]]:
    with store.engine.connect() as conn:
        return {t.name: sorted(tuple(map(str, r)) for r in conn.execute(t.select()))
                for t in (schema.articles, schema.stories, schema.article_versions)}


def test_seed_articles_share_one_story(stored, site):
    seeds = [story_of(stored, site, m["path"]) for m in MANIFEST if m["kind"] == "seed"]
    assert len(seeds) == 2
    assert seeds[0]["story_id"] == seeds[1]["story_id"] is not None


def test_each_event_is_exactly_one_story(stored, site):
    stories_by_event: dict[str, set[str]] = defaultdict(set)
    for page in MANIFEST:
        stories_by_event[page["event"]].add(story_of(stored, site, page["path"])["story_id"])
    assert all(len(ids) == 1 for ids in stories_by_event.values()), stories_by_event
    all_ids = [next(iter(ids)) for ids in stories_by_event.values()]
    assert len(all_ids) == len(set(all_ids)), "two events were merged into one story"


def test_same_type_different_events_stay_apart(stored, site):
    hard = [m for m in MANIFEST if m["kind"] == "same-type-different-event"]
    assert len({story_of(stored, site, m["path"])["story_id"] for m in hard}) == len(hard)


def test_wire_copy_is_a_duplicate_of_the_original(stored, site):
    (copy,) = [m for m in MANIFEST if m.get("duplicate_of")]
    article = story_of(stored, site, copy["path"])
    original = story_of(stored, site, copy["duplicate_of"])
    assert article["duplicate_of"] == original["article_id"]
    assert article["story_id"] == original["story_id"]


def test_story_records_count_sources_and_times(stored):
    stories = list_stories(stored, limit=100)
    assert len(stories) == len({m["event"] for m in MANIFEST})
    biggest = stories[0]
    assert biggest["article_count"] >= 3 and len(biggest["sources"]) >= 2
    assert biggest["first_seen_at"] <= biggest["last_seen_at"]


def test_rerun_changes_nothing_and_ids_are_stable(stored, settings):
    before = snapshot(stored)
    run_once(settings, stages=STAGES, force=True)
    after = snapshot(stored)
    assert after["articles"] == before["articles"]
    assert after["article_versions"] == before["article_versions"]
    assert [r[0] for r in after["stories"]] == [r[0] for r in before["stories"]]


def test_edited_version_keeps_its_story_and_is_embedded_once(stored, settings, site):
    (page,) = [m for m in MANIFEST if m.get("edited_version")]
    before = story_of(stored, site, page["path"])
    site.publish_edit(page["path"])
    report = run_once(settings, stages=STAGES, force=True)
    after = story_of(stored, site, page["path"])
    assert after["version"] == before["version"] + 1
    assert after["story_id"] == before["story_id"]
    assert report.stages["stories"].get("embedded") == 1
    assert report.stages["stories"].get("kept-story") == 1


def test_cluster_records_round_trips_ids(settings):
    seeds = fictional_seed_files()  # the two Qin Gang articles
    assert len(seeds) == 2
    records = [
        {"id": "a", "title": "Magnitude 6.1 earthquake shakes central Chile",
         "text": "A magnitude 6.1 earthquake struck central Chile on Tuesday, the national "
                 "seismology office said, shaking buildings in Santiago.",
         "published_at": "2023-06-13T10:00:00Z", "source": "X"},
        {"id": "b", "title": "Strong quake rattles Chile's capital",
         "text": "Buildings swayed in Santiago on Tuesday as a 6.1-magnitude quake hit central "
                 "Chile, seismologists said.", "published_at": "2023-06-13T12:00:00Z",
         "source": "Y"},
        {"id": "c", "title": "Local bakery chain opens twelve new shops", "text": "",
         "published_at": None, "source": "Z"},
    ]
    records += [{"id": f"seed-{p.stem}", "title": "", "text": p.read_text(encoding="utf-8"),
                 "published_at": "2023-06-18T12:00:00Z"} for p in seeds]
    out = cluster_records(records, settings)
    assert [o["id"] for o in out] == [r["id"] for r in records]
    by_id = {o["id"]: o for o in out}
    assert by_id["a"]["story_id"] == by_id["b"]["story_id"] != by_id["c"]["story_id"]
    seed_stories = {by_id[f"seed-{p.stem}"]["story_id"] for p in seeds}
    assert len(seed_stories) == 1 and by_id["a"]["story_id"] not in seed_stories
    with pytest.raises(ValueError):
        cluster_records([{"id": "x"}, {"id": "x"}], settings)
