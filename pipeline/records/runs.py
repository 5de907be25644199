"""Run records: one row per pipeline run with its summary, and outcome counts per stage."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from pipeline import schema
from pipeline.records.engine import Records, utcnow


class RunRecords(Records):
    """Runs and their per-stage outcome counts."""

    def start_run(self, run_id: str | None = None) -> str:
        """Start (or resume, for a retried Airflow task) a run and return its id."""
        run_id = run_id or uuid.uuid4().hex
        with self.engine.begin() as conn:
            stmt = self._insert(schema.runs).values(run_id=run_id, started_at=utcnow(),
                                                    status="running")
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["run_id"]))
        return run_id

    def count(self, run_id: str, stage: str, outcome: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self.engine.begin() as conn:
            self._count(conn, run_id, stage, outcome, n)

    def _count(self, conn: Connection, run_id: str, stage: str, outcome: str, n: int) -> None:
        stmt = self._insert(schema.run_outcomes).values(
            run_id=run_id, stage=stage, outcome=outcome, count=n)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "stage", "outcome"],
            set_={"count": schema.run_outcomes.c.count + n},
        )
        conn.execute(stmt)

    def run_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.run_outcomes.c.stage, schema.run_outcomes.c.outcome,
                                       schema.run_outcomes.c.count)
                                .where(schema.run_outcomes.c.run_id == run_id)).all()
        counts: dict[str, dict[str, int]] = {}
        for stage, outcome, count in rows:
            counts.setdefault(stage, {})[outcome] = count
        return counts

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schema.runs).where(schema.runs.c.run_id == run_id).values(
                finished_at=utcnow(), status=status,
                summary=json.loads(json.dumps(summary or {}, default=str))))

    def update_run_summary(self, run_id: str, values: dict[str, Any]) -> None:
        """Merge ``values`` into a running run's summary (its heartbeat and owner)."""
        r = schema.runs
        with self.engine.begin() as conn:
            row = conn.execute(select(r.c.summary).where(r.c.run_id == run_id)).first()
            if row is None:
                return
            summary = {**(row.summary or {}), **json.loads(json.dumps(values, default=str))}
            conn.execute(update(r).where(r.c.run_id == run_id).values(summary=summary))

    def running_runs(self) -> list[dict[str, Any]]:
        """Runs still marked ``running`` (alive, or left behind by a process that died)."""
        r = schema.runs
        with self.engine.connect() as conn:
            rows = conn.execute(select(r).where(r.c.status == "running")).mappings().all()
        return [dict(row) for row in rows]

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.runs).order_by(schema.runs.c.started_at.desc())
                                .limit(limit)).mappings().all()
        return [dict(r) for r in rows]
