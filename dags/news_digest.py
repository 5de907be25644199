"""news_digest: hourly, send each digest-mode watch's digest once its time has come.

One DAG for all watches (no config I/O at parse time): the task lists the digest watches
and calls ``send_digest`` for each; the alert ledger makes a digest go out once per window
(the watch's local date + ``digest_at``), so hourly runs, retries and reruns are harmless.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

from airflow.sdk import dag, task

# The dag processor puts the bundle folder on sys.path; plain DagBag() does not.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from newswatch_common import DEFAULT_ARGS, resolver, task_settings


@dag(
    dag_id="news_digest",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["newswatch"],
    doc_md=__doc__,
)
def news_digest() -> None:
    @task(execution_timeout=timedelta(minutes=5))
    def digest_watches() -> list[str]:
        from pipeline.orchestration import due_digests

        return due_digests(task_settings())

    @task(execution_timeout=timedelta(minutes=15))
    def send(watch: str) -> dict:
        from pipeline.orchestration import digest

        return digest(task_settings(), watch, resolver=resolver)

    send.expand(watch=digest_watches())


news_digest()
