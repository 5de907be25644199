"""The default search mode on the demo corpus (issue 16's acceptance check): ``Qin Gang``
returns only articles that name him, and the same top results whatever the limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.query import run_search
from pipeline.records import open_store
from pipeline.run import run_once
from pipeline.sample_site import SampleSite
from pipeline.settings import load_settings
from tests.support.seeds import requires_user_seeds, user_seeds_dir

pytestmark = pytest.mark.slow
SITE = Path("examples/sample_site")


@pytest.mark.parametrize("seed_pair", ["fictional",
                                       pytest.param("user", marks=requires_user_seeds)])
def test_default_mode_returns_only_matches_and_ignores_the_limit(tmp_path, seed_pair):
    seeds_dir = user_seeds_dir() if seed_pair == "user" else None
    with SampleSite(SITE, seeds_dir=seeds_dir) as site:
        settings = load_settings(
            "examples/demo.yaml", store={"url": f"sqlite:///{tmp_path / 'records.db'}"},
            feeds=[{"url": url} for url in site.feed_urls()], watches=[])
        report = run_once(settings, force=True, stages=("fetch", "extract", "stories",
                                                        "index"))
    assert report.errors == {}
    top5 = run_search(settings, "Qin Gang", limit=5)
    top20 = run_search(settings, "Qin Gang", limit=20)
    assert top5.hits, "the demo corpus names Qin Gang"
    assert [h.article_id for h in top5.hits] == [h.article_id for h in top20.hits][:5]
    assert top5.total == top20.total == len(top20.hits)
    store = open_store(settings.store.url)
    try:
        for hit in top20.hits:
            article = store.get_article(hit.article_id)
            words = set(re.findall(r"\w+", f"{article['title']} {article['text']}".lower()))
            assert {"qin", "gang"} <= words, hit.title
    finally:
        store.close()
    keyword = run_search(settings, "Qin Gang", mode="keyword", limit=20)
    assert {h.article_id for h in keyword.hits} == {h.article_id for h in top20.hits}
