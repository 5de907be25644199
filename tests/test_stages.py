"""The stage contract (pipeline/stages.py): every stage module has its name, its outcomes and
one ``run(context)``, and a real run counts nothing a stage does not declare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.run import run_once
from pipeline.sample_site import SampleSite
from pipeline.settings import load_settings
from pipeline.stages import RUNNER_OUTCOMES, STAGES, StageContext, run_stage, stage_module

SITE = Path("examples/sample_site")


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_module_exposes_the_contract(name: str) -> None:
    module = stage_module(name)
    assert name == module.STAGE
    assert isinstance(module.OUTCOMES, tuple) and module.OUTCOMES
    assert callable(module.run)


def test_an_unknown_stage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown stage 'enrich'"):
        stage_module("enrich")


def _declared(name: str, outcome: str) -> bool:
    outcomes = stage_module(name).OUTCOMES
    if outcome in outcomes or outcome in RUNNER_OUTCOMES:
        return True
    return "http-<status>" in outcomes and re.fullmatch(r"http-\d{3}", outcome) is not None


def test_a_run_counts_only_declared_outcomes(tmp_path: Path) -> None:
    with SampleSite(SITE) as site:
        settings = load_settings(
            "examples/demo.yaml",
            store={"url": f"sqlite:///{tmp_path / 'newswatch.db'}"},
            data_dir=str(tmp_path / "data"),
            feeds=[{"url": u} for u in site.feed_urls()],
            fetch={"allow_private_networks": True, "timeout_s": 5, "deadline_s": 10},
            channels={"console": {"type": "console"},
                      "outbox": {"type": "file", "path": str(tmp_path / "outbox.jsonl")}},
        )
        report = run_once(settings, force=True)
    assert report.errors == {}, report.errors
    counted = {(stage, outcome) for stage, outcomes in report.stages.items()
               for outcome in outcomes if stage in STAGES}
    assert {stage for stage, _ in counted} >= {"fetch", "extract", "stories", "index", "alerts"}
    assert [pair for pair in sorted(counted) if not _declared(*pair)] == []


def test_run_stage_calls_the_module_run(tmp_path: Path, store) -> None:
    settings = load_settings(None, data_dir=str(tmp_path))  # no watches: nothing to do
    assert run_stage("alerts", StageContext(store, settings, store.start_run())) == {}
