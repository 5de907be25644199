"""The pipeline in its multi-worker deployment shape: PostgreSQL records and Elasticsearch
search (osmem-server, an in-memory Elasticsearch-API fake, with ``search.vectors: false``),
over the bundled sample site served on 127.0.0.1 through the real fetch path.

Also: Elasticsearch going away in the middle of a run keeps every record, the next run
catches the index up, and nothing is indexed, stored or alerted twice.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import pipeline.index
import pipeline.search
from pipeline import schema
from pipeline.records import Store, open_store
from pipeline.run import STAGES, run_once
from pipeline.sample_site import SampleSite
from pipeline.search.base import SearchDocument, SearchQuery
from pipeline.search.elastic import ElasticSearch
from pipeline.settings import Settings, load_settings
from pipeline.urls import article_id_for
from tests.support.es_compat import OsmemCompatNode

SITE = Path("examples/sample_site")
MANIFEST = json.loads((SITE / "manifest.json").read_text(encoding="utf-8"))
RECORD_TABLES = (schema.articles, schema.article_versions, schema.article_feeds,
                 schema.stories, schema.alerts, schema.alert_deliveries)


@pytest.fixture(scope="module")
def osmem_server():
    """Overrides the osmem plugin's fixture: no seed, no Japanese analysis (faster start)."""
    from osmem_server import OsmemServer

    server = OsmemServer.start(japanese=False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def site() -> Iterator[SampleSite]:
    with SampleSite(SITE) as running:
        yield running


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def records_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def es_backends(monkeypatch) -> list[ElasticSearch]:
    """Every Elasticsearch backend the pipeline opens talks through the osmem compat node and
    gives up at once when the server is gone (no retry back-off in tests)."""
    opened: list[ElasticSearch] = []
    real = pipeline.search.open_search

    def open_search(settings: Settings, **options: Any):
        backend = real(settings, node_class=OsmemCompatNode, max_retries=0,
                       initial_backoff=0.1, request_timeout=5, **options)
        opened.append(backend)
        return backend

    monkeypatch.setattr(pipeline.search, "open_search", open_search)
    return opened


class TCPProxy:
    """A switchable TCP relay in front of the search server: ``down()`` drops every
    connection and refuses new ones (the server "dies"), ``up()`` brings it back on the same
    port with the index intact."""

    def __init__(self, upstream_url: str) -> None:
        host_port = upstream_url.split("://", 1)[1].rstrip("/")
        host, port = host_port.rsplit(":", 1)
        self.upstream = (host, int(port))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:  # shutdown first: it wakes the blocked accept()
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _settings(site: SampleSite, records_url: str, search_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        "examples/demo.yaml",
        data_dir=str(tmp_path),
        store={"url": records_url},
        search={"url": search_url, "vectors": False, "index_prefix": "nwscale"},
        feeds=[{"url": u} for u in site.feed_urls()],
        fetch={"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
        channels={"outbox": {"type": "file", "path": str(tmp_path / "outbox.jsonl")}},
        watches=[{**w.model_dump(), "channels": ["outbox"]}
                 for w in load_settings("examples/demo.yaml").watches],
    )


def _indexed_ids(search_url: str, stories: bool = False) -> list[str]:
    """Every document id in the articles (or stories) index (duplicates would show twice)."""
    backend = ElasticSearch(Settings(search={"url": search_url, "vectors": False,
                                             "index_prefix": "nwscale"}).search,
                            node_class=OsmemCompatNode, max_retries=0)
    try:
        body = backend.client.search(
            index=backend.stories_alias if stories else backend.articles_alias,
            query={"match_all": {}}, size=1000)
        return [hit["_id"] for hit in body["hits"]["hits"]]
    finally:
        backend.close()


def _snapshot(store: Store) -> dict[str, list[tuple]]:
    with store.engine.connect() as conn:
        return {t.name: sorted(tuple(map(str, row)) for row in conn.execute(t.select()))
                for t in RECORD_TABLES}


def _outbox(tmp_path: Path) -> list[dict]:
    path = tmp_path / "outbox.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.postgres
@pytest.mark.elasticsearch
@pytest.mark.slow
def test_whole_pipeline_on_postgresql_records_and_elasticsearch(site, pg_url, osmem_clone,
                                                               es_backends, tmp_path):
    settings = _settings(site, pg_url, osmem_clone.url, tmp_path)
    first = run_once(settings, stages=STAGES, force=True)
    assert first.errors == {}
    assert first.feeds_ok == len(settings.feeds)
    assert es_backends, "the index stage used Elasticsearch"

    store = open_store(pg_url)
    assert store.dialect == "postgresql"
    with_text = [a["article_id"] for a in store.iter_articles()]
    assert store.counts()["articles"] == len(MANIFEST)
    assert store.counts()["stories"] > 0
    assert sorted(_indexed_ids(osmem_clone.url)) == sorted(with_text)
    assert store.articles_needing_index() == []
    with store.engine.connect() as conn:
        story_ids = sorted(conn.execute(select(schema.stories.c.story_id)).scalars())
    assert sorted(_indexed_ids(osmem_clone.url, stories=True)) == story_ids

    seeds = {article_id_for(f"{site.base_url}/{p['path']}") for p in MANIFEST
             if p["kind"] == "seed"}
    search = ElasticSearch(settings.search, node_class=OsmemCompatNode, max_retries=0)
    hits = search.search(SearchQuery(text="Qin Gang")).hits
    search.close()
    assert seeds <= {hit.article_id for hit in hits}
    alerted = _outbox(tmp_path)
    assert alerted, "the Taiwan watch alerts on the sample site"
    assert len({a["story_id"] for a in alerted}) == len(alerted)

    before = _snapshot(store)
    second = run_once(settings, stages=STAGES, force=True)
    assert second.errors == {}
    after = _snapshot(store)
    store.close()
    for table in ("articles", "article_versions", "article_feeds", "stories", "alerts",
                  "alert_deliveries"):
        assert len(after[table]) == len(before[table]), table
    assert after["article_versions"] == before["article_versions"]
    assert sorted(_indexed_ids(osmem_clone.url)) == sorted(with_text)
    assert len(_outbox(tmp_path)) == len(alerted)  # nothing alerted twice


@pytest.mark.elasticsearch
def test_search_outage_mid_run_keeps_records_and_next_run_catches_up(
        site, records_url, osmem_clone, es_backends, monkeypatch, tmp_path):
    proxy = TCPProxy(osmem_clone.url)
    proxy.up()
    # Small batches, and the server goes away right after the first one is accepted.
    monkeypatch.setattr(pipeline.index, "index_pending",
                        functools.partial(pipeline.index.index_pending, batch=4))
    real_index = ElasticSearch.index
    calls = {"n": 0}

    def index_then_die(self: ElasticSearch, documents: list[SearchDocument]) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            proxy.down()
        return real_index(self, documents)

    monkeypatch.setattr(ElasticSearch, "index", index_then_die)
    settings = _settings(site, records_url, proxy.url, tmp_path)
    stages = ("fetch", "extract", "index")

    first = run_once(settings, stages=stages, force=True)
    assert first.errors == {}  # an outage is counted, not a failed stage
    assert first.stages["index"] == {"indexed": 4, "unavailable": 1}
    store = open_store(records_url)
    with_text = sorted(a["article_id"] for a in store.iter_articles())
    assert store.counts()["articles"] == len(MANIFEST)  # every record kept
    assert len(store.articles_needing_index()) == len(with_text) - 4

    proxy.up()
    second = run_once(settings, stages=stages, force=True)
    assert second.errors == {}
    assert second.stages["index"]["indexed"] == len(with_text) - 4
    assert store.articles_needing_index() == []
    ids = _indexed_ids(proxy.url)
    assert sorted(ids) == with_text  # each article exactly once

    third = run_once(settings, stages=stages, force=True)
    assert third.stages.get("index", {}).get("indexed", 0) == 0
    assert sorted(_indexed_ids(proxy.url)) == with_text
    store.close()
    proxy.down()
