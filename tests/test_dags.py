"""The Airflow DAGs: they parse fast and cleanly, a dag.test() run fills the store from the
sample site, a second run adds and sends nothing, and parallel fetch tasks share SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import yaml

from pipeline.sample_site import SampleSite

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")
SITE_DIR = REPO / "examples" / "sample_site"
MONITOR_TASKS = {"plan", "fetch", "extract", "stories", "index", "alerts", "finish"}
DIGEST_TASKS = {"digest_watches", "send"}


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private AIRFLOW_HOME with a migrated SQLite metadata DB and the fetch pool."""
    if not AIRFLOW_BIN.exists():
        pytest.skip("airflow is not installed in this environment")
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    }
    full = {**os.environ, **env}
    subprocess.run([str(AIRFLOW_BIN), "db", "migrate"], env=full, check=True,
                   capture_output=True, timeout=300)
    subprocess.run([str(AIRFLOW_BIN), "pools", "set", "newswatch_fetch", "4",
                    "outbound fetching"], env=full, check=True, capture_output=True, timeout=120)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _write_config(tmp_path: Path, site: SampleSite) -> Path:
    config = {
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite:///{tmp_path}/newswatch.db"},
        "fetch": {"allow_private_networks": True, "timeout_s": 5, "deadline_s": 15},
        "search": {"vectors": False},
        "feeds": [{"url": url} for url in site.feed_urls()],
        "channels": {"outbox": {"type": "file", "path": str(tmp_path / "outbox.jsonl")}},
        "watches": [{"name": "taiwan", "keywords": ["Taiwan", "Taipei"],
                     "channels": ["outbox"]}],
    }
    path = tmp_path / "newswatch.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def site() -> Iterator[SampleSite]:
    with SampleSite(SITE_DIR, port=0) as running:
        yield running


def test_dagbag_imports_cleanly_and_fast(airflow_env: dict[str, str]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert {"news_monitor", "news_digest"} <= set(bag.dags)
    monitor, digest = bag.dags["news_monitor"], bag.dags["news_digest"]
    assert set(monitor.task_dict) == MONITOR_TASKS
    assert set(digest.task_dict) == DIGEST_TASKS
    assert monitor.catchup is False
    assert monitor.task_dict["fetch"].pool == "newswatch_fetch"
    assert monitor.task_dict["extract"].upstream_task_ids == {"fetch"}
    assert monitor.task_dict["finish"].upstream_task_ids == {"alerts"}
    assert monitor.default_args["retries"] == 2

    # Parse time in a fresh interpreter (no import caching): Airflow itself is imported
    # first, as the dag processor has it loaded; then the folder's DAG files are timed.
    probe = textwrap.dedent(f"""
        import sys, time
        import airflow.sdk  # noqa: F401  (framework cost, paid once by the dag processor)
        from airflow.dag_processing.dagbag import DagBag
        start = time.perf_counter()
        bag = DagBag(dag_folder={str(DAGS)!r})
        elapsed = time.perf_counter() - start
        heavy = [m for m in ("torch", "sentence_transformers", "feedparser", "trafilatura",
                             "pipeline.fetch", "pipeline.extract", "pipeline.relevance")
                 if m in sys.modules]
        print("RESULT", elapsed, len(bag.dags), ",".join(heavy) or "-")
    """)
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **airflow_env},
                         capture_output=True, text=True, timeout=120, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    _tag, elapsed, count, heavy = line.split(" ")
    assert int(count) == 2
    assert float(elapsed) < 2.0, f"DAG folder took {elapsed} s to parse"
    assert heavy == "-", f"heavy modules imported at parse time: {heavy}"


def _counts(store_url: str) -> dict[str, int]:
    from pipeline.records import open_store

    store = open_store(store_url)
    try:
        return store.counts()
    finally:
        store.close()


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def test_news_monitor_dag_test_twice_is_idempotent(
        airflow_env: dict[str, str], site: SampleSite, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    config = _write_config(tmp_path, site)
    monkeypatch.setenv("NEWSWATCH_CONFIG", str(config))
    store_url = f"sqlite:///{tmp_path}/newswatch.db"
    dag = DagBag(dag_folder=str(DAGS)).dags["news_monitor"]

    first = dag.test()
    assert first.state == "success", first.state
    after_first = _counts(store_url)
    assert after_first["feeds"] == len(site.feed_urls())
    assert after_first["articles"] > 0
    assert after_first.get("articles_ok", 0) > 0, after_first
    assert after_first["stories"] > 0, after_first
    outbox = tmp_path / "outbox.jsonl"
    sent = _lines(outbox)
    assert sent > 0, "the Taiwan stories of the sample site alert on the first run"

    from pipeline.records import open_store

    store = open_store(store_url)
    try:
        runs = store.recent_runs()
    finally:
        store.close()
    assert runs and runs[0]["status"] == "ok", runs[0]
    assert runs[0]["run_id"].startswith("af-")

    second = dag.test()
    assert second.state == "success", second.state
    after_second = _counts(store_url)
    assert after_second["articles"] == after_first["articles"]
    assert after_second["versions"] == after_first["versions"]
    assert after_second["stories"] == after_first["stories"]
    assert _lines(outbox) == sent


def _fetch_one(args: tuple[str, str, list[int]]) -> dict[str, int]:
    from pipeline.orchestration import fetch_batch

    return fetch_batch(*args)


def test_parallel_fetch_batches_share_sqlite(site: SampleSite, tmp_path: Path) -> None:
    """Mapped fetch tasks run as separate processes writing one SQLite store."""
    from pipeline.orchestration import plan_feed_batches, run_id_for

    config = str(_write_config(tmp_path, site))
    assert plan_feed_batches(config, 4)  # syncs the feeds (one host: one batch)
    from pipeline.records import open_store

    store = open_store(f"sqlite:///{tmp_path}/newswatch.db")
    try:
        ids = [f.feed_id for f in store.list_feeds()]
    finally:
        store.close()
    run_id = run_id_for("manual__parallel")
    jobs = [(config, run_id, [feed_id]) for feed_id in ids]
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_fetch_one, jobs, timeout=120))
    assert [r["feeds"] for r in results] == [1] * len(ids)
    assert all(r["failed"] == 0 for r in results), results
    assert json.dumps(results)  # XCom-safe
    assert _counts(f"sqlite:///{tmp_path}/newswatch.db")["articles"] > 0


def test_plan_with_no_feeds_is_empty(tmp_path: Path) -> None:
    from pipeline.orchestration import plan_feed_batches

    config = tmp_path / "empty.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path}/n.db"}}))
    assert plan_feed_batches(str(config), 4) == []


def test_news_monitor_with_no_feeds_succeeds(airflow_env: dict[str, str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty plan maps fetch over nothing (skipped); the later stages still run."""
    from airflow.dag_processing.dagbag import DagBag

    config = tmp_path / "empty.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path}/n.db"},
                                      "data_dir": str(tmp_path / "data")}))
    monkeypatch.setenv("NEWSWATCH_CONFIG", str(config))
    dag = DagBag(dag_folder=str(DAGS)).dags["news_monitor"]
    run = dag.test()
    assert run.state == "success", run.state
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["extract"] == "success" and states["finish"] == "success", states


@pytest.fixture
def common(airflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """dags/newswatch_common.py (Airflow configured first: it reads its home at import)."""
    monkeypatch.syspath_prepend(str(DAGS))
    import newswatch_common

    return newswatch_common


def test_failure_notice_goes_to_the_failure_channel(common, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"url": f"sqlite:///{tmp_path}/n.db"},
        "channels": {"ops": {"type": "file", "path": str(tmp_path / "ops.jsonl")}},
    }))
    monkeypatch.setenv("NEWSWATCH_CONFIG", str(config))
    monkeypatch.setenv("NEWSWATCH_AIRFLOW__FAILURE_CHANNEL", "ops")

    class TI:
        dag_id, task_id, map_index, try_number = "news_monitor", "fetch", 2, 3

    common.notify_failure({"ti": TI(), "run_id": "manual__x", "exception": ValueError("boom")})
    record = json.loads((tmp_path / "ops.jsonl").read_text().splitlines()[0])
    assert record["kind"] == "pipeline-failure"
    assert "news_monitor.fetch[2]" in record["subject"] and "boom" in record["text"]

    monkeypatch.setenv("NEWSWATCH_AIRFLOW__FAILURE_CHANNEL", "missing")  # logged, never raised
    common.notify_failure({"ti": TI(), "exception": RuntimeError("x")})


def test_resolver_reads_airflow_connections(common, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import ChannelConfig

    monkeypatch.setenv("AIRFLOW_CONN_NW_SLACK",
                       json.dumps({"conn_type": "slackwebhook", "password": "T0/B0/XX"}))
    monkeypatch.setenv("AIRFLOW_CONN_NW_SMTP",
                       "smtp://user:s3cret@mail.example.com:587?from_email=n%40ex.com")
    slack = ChannelConfig(type="slack", slack_conn_id="nw_slack")
    mail = ChannelConfig(type="email", smtp_conn_id="nw_smtp", to=["a@b.c"])
    assert common.resolver("s", slack) == {
        "webhook_url": "https://hooks.slack.com/services/T0/B0/XX"}
    assert common.resolver("m", mail) == {"password": "s3cret", "host": "mail.example.com",
                                          "port": 587, "username": "user",
                                          "sender": "n@ex.com"}
    assert common.resolver("c", ChannelConfig(type="console")) is None


def test_parse_time_settings_give_the_schedule_and_survive_a_broken_config(
        common, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"airflow": {"schedule": "*/30 * * * *"}}))
    monkeypatch.setenv("NEWSWATCH_CONFIG", str(config))
    assert common.parse_time_settings().airflow.schedule == "*/30 * * * *"
    monkeypatch.setenv("NEWSWATCH_AIRFLOW__SCHEDULE", "@daily")  # the environment wins
    assert common.parse_time_settings().airflow.schedule == "@daily"
    config.write_text("airflow: [not, a, mapping")  # the DAG still parses, on the defaults
    monkeypatch.delenv("NEWSWATCH_AIRFLOW__SCHEDULE")
    assert common.parse_time_settings().airflow.schedule == "@hourly"
