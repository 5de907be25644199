"""One ``runs.summary`` shape, whether the CLI runs every stage in one process (run_once) or
Airflow runs them as tasks (pipeline.orchestration)."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline import orchestration
from pipeline.records import open_store
from pipeline.run import run_once, run_summary
from pipeline.settings import load_settings


def _config(tmp_path: Path) -> str:
    path = tmp_path / "newswatch.yaml"
    path.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path}/n.db"},
                                    "data_dir": str(tmp_path / "data")}), encoding="utf-8")
    return str(path)


def _summaries(config: str) -> dict[str, dict]:
    store = open_store(load_settings(config).store.url)
    try:
        return {run["run_id"]: run["summary"] for run in store.recent_runs()}
    finally:
        store.close()


def test_cli_and_airflow_runs_write_the_same_summary_shape(tmp_path: Path) -> None:
    config = _config(tmp_path)
    report = run_once(load_settings(config), run_id="cli-run")
    assert report.errors == {}, report.errors
    run_id = orchestration.run_id_for("manual__2024-01-01")
    assert orchestration.plan_feed_batches(config) == []  # no feeds: fetch maps over nothing
    for task in (orchestration.extract, orchestration.stories, orchestration.index,
                 orchestration.alerts):
        task(config, run_id)
    assert orchestration.finish(config, run_id)["status"] == "ok"
    summaries = _summaries(config)
    cli, airflow = summaries["cli-run"], summaries[run_id]
    assert set(cli) == set(airflow) == set(run_summary("x", {}))
    assert airflow["missing"] == [] and cli["missing"] == []
    assert cli["feeds"] == airflow["feeds"] == {"ok": 0, "failed": 0, "total": 0}


def test_summary_counts_feeds_from_the_fetch_outcomes() -> None:
    summary = run_summary("r", {"fetch": {"ok": 2, "not-modified": 1, "http-error": 1,
                                          "skipped-not-due": 3},
                                "extract": {"item-error": 1, "deferred-stage-budget": 4}},
                          missing=["alerts"])
    assert summary["feeds"] == {"ok": 3, "failed": 1, "total": 7}
    assert summary["all_feeds_failed"] is False
    assert summary["item_errors"] == {"extract": 1}
    assert summary["left_pending"] == {"extract": 4}
    assert summary["missing"] == ["alerts"]
    failed = run_summary("r", {"fetch": {"timeout": 2, "skipped-dead": 1}})
    assert failed["all_feeds_failed"] is True and failed["feeds"]["failed"] == 2
