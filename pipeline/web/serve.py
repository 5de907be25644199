"""``newswatch serve``: run the web app with uvicorn."""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080, *,
          default_mode: str = "hybrid", root_path: str = "", log_level: str = "info",
          **uvicorn_options: Any) -> None:
    """Serve the newswatch web app on ``host:port`` until interrupted.

    ``root_path`` is for running behind a proxy that strips a path prefix.
    """
    import uvicorn

    from pipeline.web.app import create_app

    app = create_app(settings, default_mode=default_mode)
    uvicorn.run(app, host=host, port=port, root_path=root_path, log_level=log_level,
                **uvicorn_options)
