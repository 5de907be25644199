"""Alerts: decide when a story is news for a watch, and tell people exactly once.

- :mod:`pipeline.alerts.engine` — the alert stage (:func:`run_alerts`), digests, retries.
- :mod:`pipeline.records.alerts` — the exactly-once ledger (alerts + per-channel deliveries).
- :mod:`pipeline.alerts.render` — :class:`AlertMessage` as text, HTML and Slack blocks.
- :mod:`pipeline.alerts.channels` — email, Slack, console and JSONL-file delivery.

Nothing is imported here, so ``import pipeline.alerts`` stays cheap (Airflow DAG parsing).
See docs/decisions.md, "Watches and alerts", for the design.
"""
