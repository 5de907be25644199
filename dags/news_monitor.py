"""news_monitor: feeds → article text → stories → search index → alerts, on a schedule.

Thin: each task calls one function of :mod:`pipeline.orchestration` (imported inside the
task, so parsing this file imports neither the pipeline nor its ML dependencies). Records
pass through the store; XCom carries only feed-id batches and counts. See
docs/decisions.md, "Running on Airflow", for the design, idempotency, pools and backfills.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

from airflow.sdk import dag, task

# The dag processor puts the bundle folder on sys.path; plain DagBag() does not.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from newswatch_common import (
    DEFAULT_ARGS,
    FETCH_POOL,
    dag_run_id,
    parse_time_settings,
    resolver,
    task_settings,
)

SCHEDULE = parse_time_settings().airflow.schedule


def _run_id() -> str:
    from pipeline.orchestration import run_id_for

    return run_id_for(dag_run_id())


@dag(
    dag_id="news_monitor",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["newswatch"],
    doc_md=__doc__,
)
def news_monitor() -> None:
    @task(execution_timeout=timedelta(minutes=5))
    def plan() -> list[list[int]]:
        """Sync feeds and batch their ids by host (one mapped fetch per batch)."""
        from pipeline.orchestration import plan_feed_batches

        settings = task_settings()
        return plan_feed_batches(settings, settings.airflow.fetch_batches)

    @task(pool=FETCH_POOL, execution_timeout=timedelta(minutes=15))
    def fetch(feed_ids: list[int]) -> dict:
        """Fetch one host-grouped batch of feeds (skips feeds that are not due)."""
        from pipeline.orchestration import fetch_batch

        return fetch_batch(task_settings(), _run_id(), feed_ids)

    # none_failed: with no feeds the mapped fetch is skipped, and the rest still runs.
    @task(trigger_rule="none_failed", execution_timeout=timedelta(minutes=30))
    def extract() -> dict:
        from pipeline import orchestration

        return orchestration.extract(task_settings(), _run_id())

    @task(execution_timeout=timedelta(minutes=30))
    def stories() -> dict:
        from pipeline import orchestration

        return orchestration.stories(task_settings(), _run_id())

    @task(execution_timeout=timedelta(minutes=20))
    def index() -> dict:
        from pipeline import orchestration

        return orchestration.index(task_settings(), _run_id())

    @task(execution_timeout=timedelta(minutes=20))
    def alerts() -> dict:
        from pipeline import orchestration

        return orchestration.alerts(task_settings(), _run_id(), resolver=resolver)

    @task(retries=0, execution_timeout=timedelta(minutes=5))
    def finish() -> dict:
        """Record the run's status and summary in the store."""
        from pipeline import orchestration

        result = orchestration.finish(task_settings(), _run_id())
        if result["status"] != "ok":
            raise RuntimeError(f"newswatch run failed: {result}")
        return result

    fetched = fetch.expand(feed_ids=plan())
    fetched >> extract() >> stories() >> index() >> alerts() >> finish()


news_monitor()
