"""The stage contract: each stage module exposes ``STAGE`` (its name, also the name its
outcomes are counted under in ``run_outcomes``), ``OUTCOMES`` (what it counts) and
``run(context)``. ``pipeline/run.py`` (the CLI's run) and ``pipeline/orchestration.py`` (one
Airflow task per stage) both call :func:`run_stage`, so a stage runs the same way in both.

Stage modules are imported only when their stage runs (``newswatch --help`` and DAG parsing
stay cheap).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.records import Store
    from pipeline.settings import Settings

ProgressCallback = Callable[[str, int, int | None], None]  # (stage, advance, total)
# Where each stage lives, in pipeline order.
STAGE_MODULES = {
    "fetch": "pipeline.fetch",
    "extract": "pipeline.extract",
    "stories": "pipeline.stories",
    "index": "pipeline.index",
    "alerts": "pipeline.alerts.engine",
}
STAGES = tuple(STAGE_MODULES)
# Counted by the runner around every stage, whichever it is.
RUNNER_OUTCOMES = ("stage-done", "stage-error")


@dataclass
class StageContext:
    """What a stage gets: the records, the settings, the run it counts into, a progress
    callback and the options of this call (``feed_ids``, ``force``, ``limit``, ...)."""

    store: Store
    settings: Settings
    run_id: str
    progress: ProgressCallback | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def advance(self, stage: str, advance: int, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(stage, advance, total)


def stage_module(name: str) -> ModuleType:
    """The module of stage ``name`` (ValueError for an unknown stage)."""
    try:
        return importlib.import_module(STAGE_MODULES[name])
    except KeyError:
        raise ValueError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})") from None


def run_stage(name: str, context: StageContext) -> Any:
    """Run stage ``name``: its module's ``run(context)``."""
    return stage_module(name).run(context)
