"""Shared test factories: settings variants and stores (fictional data only)."""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings


def with_alerts(settings: Settings, **alerts: Any) -> Settings:
    """A copy of ``settings`` with some ``alerts.*`` settings changed (validated)."""
    changed = settings.alerts.model_validate({**settings.alerts.model_dump(), **alerts})
    return settings.model_copy(update={"alerts": changed})
