"""The newswatch web UI and JSON API (FastAPI): search, stories, feed health, alerts.

``create_app(settings)`` builds the app; ``serve(settings)`` runs it with uvicorn; the Airflow
plugin (``plugins/newswatch_plugin.py``) mounts it in the Airflow API server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pipeline.settings import Settings

__all__ = ["create_app", "serve"]


def create_app(settings: Settings, **options: Any) -> FastAPI:
    """Build the web app (imports FastAPI only when called)."""
    from pipeline.web.app import create_app as _create_app

    return _create_app(settings, **options)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve the web app with uvicorn until interrupted."""
    from pipeline.web.serve import serve as _serve

    _serve(settings, host=host, port=port, **options)
