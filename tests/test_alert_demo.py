"""The demo corpus through the whole pipeline, alerts included.

Two runs over the sample site alert on each of its Taiwan stories exactly once, and never
on a story that only mentions Taiwan in passing. The truth is examples/sample_site/
manifest.json (`taiwan_relevant`, judged by reading each page with the rubric of issue
13). The Qin Gang pair (the user's own example) must be one story that alerts once: with the
fictional pair everywhere, and with the user's real seed articles where they are beside the
checkout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.records import open_store
from pipeline.run import run_once
from pipeline.sample_site import SampleSite
from pipeline.settings import load_settings
from pipeline.urls import article_id_for
from tests.support.seeds import requires_user_seeds, user_seeds_dir

pytestmark = pytest.mark.slow
SITE = Path("examples/sample_site")
MANIFEST = json.loads((SITE / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("seed_pair", ["fictional",
                                       pytest.param("user", marks=requires_user_seeds)])
def test_two_demo_runs_alert_once_on_each_taiwan_story_and_never_on_a_mention(tmp_path,
                                                                               seed_pair):
    outbox = tmp_path / "outbox.jsonl"
    demo = load_settings("examples/demo.yaml")
    (watch,) = demo.watches
    seeds_dir = user_seeds_dir() if seed_pair == "user" else None
    with SampleSite(SITE, seeds_dir=seeds_dir) as site:
        settings = load_settings(
            "examples/demo.yaml", store={"url": f"sqlite:///{tmp_path / 'records.db'}"},
            feeds=[{"url": url} for url in site.feed_urls()],
            channels={"outbox": {"type": "file", "path": str(outbox)}},
            watches=[{**watch.model_dump(), "channels": ["outbox"]}])
        first = run_once(settings, force=True)
        after_first = outbox.read_text(encoding="utf-8")
        second = run_once(settings, force=True)
        base_url = site.base_url
    assert first.errors == {} and second.errors == {}
    assert outbox.read_text(encoding="utf-8") == after_first, "the second run sent something"

    store = open_store(settings.store.url)
    try:
        story_of = {page["path"]: store.get_article(
            article_id_for(f"{base_url}/{page['path']}"))["story_id"] for page in MANIFEST}
    finally:
        store.close()
    taiwan = {story_of[p["path"]] for p in MANIFEST if p["taiwan_relevant"]}
    mentions = {story_of[p["path"]] for p in MANIFEST if p["kind"] == "passing-mention"}
    assert len(taiwan) >= 4 and len(mentions) >= 3  # the corpus still tests something

    seed_story = {story_of[p["path"]] for p in MANIFEST if p["kind"] == "seed"}
    assert len(seed_story) == 1 and None not in seed_story, "the Qin Gang pair is one story"

    alerts = [json.loads(line) for line in after_first.splitlines()]
    alerted = [a["story_id"] for a in alerts]
    assert {a["kind"] for a in alerts} == {"new"}
    assert sorted(alerted) == sorted(taiwan), "each Taiwan story exactly once, nothing else"
    assert not mentions & set(alerted)
    assert alerted.count(seed_story.pop()) == 1, "the Qin Gang story alerts exactly once"
