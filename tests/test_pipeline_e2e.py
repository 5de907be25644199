"""End to end over the bundled sample site, served on 127.0.0.1 through the real fetch path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import schema
from pipeline.query import run_search
from pipeline.records import open_store
from pipeline.run import run_once
from pipeline.sample_site import SampleSite
from pipeline.settings import load_settings
from pipeline.urls import article_id_for

SITE = Path("examples/sample_site")
STAGES = ("fetch", "extract", "index")  # stories/alerts have their own end-to-end tests


def manifest() -> list[dict]:
    return json.loads((SITE / "manifest.json").read_text(encoding="utf-8"))


def table_snapshot(store, table) -> list[tuple]:
    with store.engine.connect() as conn:
        return sorted(tuple(map(str, row)) for row in conn.execute(table.select()))


@pytest.fixture(scope="module")
def site():
    with SampleSite(SITE) as running:
        yield running


@pytest.fixture(scope="module")
def settings(site, tmp_path_factory):
    db = tmp_path_factory.mktemp("e2e") / "records.db"
    return load_settings(
        "examples/demo.yaml",
        store={"url": f"sqlite:///{db}"},
        feeds=[{"url": u} for u in site.feed_urls()],
        fetch={"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
    )


@pytest.fixture(scope="module")
def first_run(settings):
    return run_once(settings, stages=STAGES, force=True)


def test_first_run_reads_every_feed_and_page(first_run, settings):
    assert first_run.errors == {}
    assert first_run.feeds_ok == len(settings.feeds)
    store = open_store(settings.store.url)
    pages = manifest()
    assert store.counts()["articles"] == len(pages)
    extract = first_run.stages["extract"]
    assert extract["ok"] == sum(1 for p in pages if p.get("serve_status", 200) == 200)
    store.close()


def test_forbidden_page_falls_back_to_feed_summary(first_run, site, settings):
    (page,) = [p for p in manifest() if p.get("serve_status") == 403]
    store = open_store(settings.store.url)
    article = store.get_article(article_id_for(f"{site.base_url}/{page['path']}"))
    store.close()
    assert article["text_source"] == "feed"
    assert article["extraction_outcome"] == "http-403"
    assert len(article["text"]) > 40


def test_article_linked_from_two_feeds_is_stored_once(first_run, site, settings):
    shared = [p for p in manifest() if len(p.get("feeds", [])) > 1]
    assert shared, "the sample site links one article from two feeds"
    store = open_store(settings.store.url)
    article = store.get_article(article_id_for(f"{site.base_url}/{shared[0]['path']}"))
    store.close()
    assert len(article["feeds"]) == len(shared[0]["feeds"])


def test_tracking_parameters_do_not_create_a_second_identity(first_run, settings):
    store = open_store(settings.store.url)
    urls = [a["url"] for a in store.iter_articles(only_with_text=False)]
    store.close()
    assert not [u for u in urls if "utm_" in u or "#" in u]
    assert len(urls) == len(set(urls))


def test_search_finds_both_seed_articles(first_run, settings, site):
    results = run_search(settings, "Qin Gang", mode="keyword")
    seeds = {article_id_for(f"{site.base_url}/{p['path']}") for p in manifest()
             if p["kind"] == "seed"}
    assert len(seeds) == 2
    assert seeds <= {hit.article_id for hit in results.hits}
    assert all("[[" in hit.snippet for hit in results.hits if hit.article_id in seeds)


def test_second_identical_run_stores_nothing_new(first_run, settings):
    store = open_store(settings.store.url)
    before = {t.name: table_snapshot(store, t)
              for t in (schema.articles, schema.article_versions, schema.article_feeds)}
    second = run_once(settings, stages=STAGES, force=True)
    after = {t.name: table_snapshot(store, t)
             for t in (schema.articles, schema.article_versions, schema.article_feeds)}
    store.close()
    assert second.errors == {}
    assert after["article_versions"] == before["article_versions"]
    assert after["article_feeds"] == before["article_feeds"]
    assert len(after["articles"]) == len(before["articles"])
    assert "new" not in second.stages.get("entries", {})


def test_edited_article_becomes_a_new_version(first_run, settings, site):
    (page,) = [p for p in manifest() if p.get("edited_version")]
    article_id = article_id_for(f"{site.base_url}/{page['path']}")
    store = open_store(settings.store.url)
    assert store.get_article(article_id)["version"] == 1
    site.publish_edit(page["path"])
    report = run_once(settings, stages=STAGES, force=True)
    article = store.get_article(article_id)
    versions = store.article_versions(article_id)
    store.close()
    assert report.stages["entries"].get("entry-updated") == 1
    assert article["version"] == 2 and [v["version"] for v in versions] == [1, 2]
    assert store is not None


def test_reindex_rebuilds_the_index_from_records(first_run, settings):
    from pipeline.index import reindex
    from pipeline.search import open_search

    backend = open_search(settings)
    try:
        before = backend.count()
        backend.clear()
        assert backend.count() == 0
        store = open_store(settings.store.url)
        counts = reindex(store, backend)
        store.close()
        assert counts["indexed"] == before == backend.count()
    finally:
        backend.close()
    assert run_search(settings, "Qin Gang", mode="keyword").total >= 2
