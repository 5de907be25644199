"""Airflow 3 plugin: the newswatch search UI and API inside the Airflow API server.

The app is mounted at ``/newswatch`` (``fastapi_apps``) and linked from Airflow's navigation
(``external_views``). Importing this module is cheap: settings are read and the app is built
on the first request, by :func:`pipeline.settings.resolve_settings` (``$NEWSWATCH_CONFIG``,
else the Airflow Variable ``newswatch_config``, a path to the YAML config; neither = defaults).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

URL_PREFIX = "/newswatch"


def config_variable() -> str | None:
    """The Airflow Variable ``newswatch_config`` (None when unset or unreachable)."""
    from pipeline.settings import AIRFLOW_CONFIG_VARIABLE

    try:
        from airflow.models import Variable

        return Variable.get(AIRFLOW_CONFIG_VARIABLE, default_var=None) or None
    except Exception as exc:  # no metadata DB in reach: fall back to defaults
        log.warning("newswatch: cannot read Airflow Variable %s: %s", AIRFLOW_CONFIG_VARIABLE,
                    exc)
        return None


class LazyNewswatchApp:
    """An ASGI app that builds the real newswatch app on its first request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def build(self) -> Any:
        with self._lock:
            if self._app is None:
                from pipeline.settings import resolve_settings
                from pipeline.web.app import create_app

                self._app = create_app(resolve_settings(airflow_variable=config_variable))
            return self._app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # mounted apps get none; standalone, accept it
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        try:
            app = self.build()
        except Exception as exc:  # a broken config must not break the Airflow API server
            log.exception("newswatch: cannot start the web app")
            from starlette.responses import JSONResponse

            message = " ".join(f"newswatch is not configured: {exc}".split())[:300]
            await JSONResponse({"error": message}, status_code=503)(scope, receive, send)
            return
        await app(scope, receive, send)


newswatch_app = LazyNewswatchApp()


class NewswatchPlugin(AirflowPlugin):
    """Mounts the newswatch web app at /newswatch with a "News search" navigation link."""

    name = "newswatch"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares these as class attributes
        {"app": newswatch_app, "url_prefix": URL_PREFIX, "name": "newswatch"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "News search",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "newswatch",
        },
    ]
