"""The Airflow plugin registers and mounts the web app at /newswatch in the API server.

Airflow reads its configuration once per process, so each check runs in a fresh Python with
its own AIRFLOW_HOME and the repository's plugins/ folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parent.parent

CHECK = textwrap.dedent("""
    import json, sys
    from airflow import plugins_manager

    result = {}
    plugins, errors = plugins_manager._get_plugins()
    result["import_errors"] = {k: str(v) for k, v in errors.items()}
    result["plugins"] = [p.name for p in plugins]
    result["light_import"] = not any(m in sys.modules for m in ("torch", "pipeline.web.app",
                                                                 "sentence_transformers"))
    apps, _ = plugins_manager.get_fastapi_plugins()
    result["fastapi_apps"] = [{"name": a["name"], "url_prefix": a["url_prefix"]} for a in apps]
    views, _ = plugins_manager._get_ui_plugins()
    result["external_views"] = views

    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
    for view in views:
        ExternalViewResponse.model_validate(view)

    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient
    from starlette.routing import Mount

    app = create_app("core")
    result["mounts"] = [r.path for r in app.routes if isinstance(r, Mount)]
    client = TestClient(app)
    feeds = client.get("/newswatch/api/feeds")
    result["feeds"] = [feeds.status_code, feeds.json()]
    page = client.get("/newswatch/")
    result["page"] = [page.status_code, page.text]
    bad = client.get("/newswatch/api/search", params={"q": "x", "since": "bogus"})
    result["bad"] = [bad.status_code, bad.json()]
    print("RESULT " + json.dumps(result))
""")


def run_check(tmp_path: Path, env_extra: dict[str, str]) -> dict:
    script = tmp_path / "check.py"
    script.write_text(CHECK, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "NEWSWATCH_"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "PYTHONPATH": str(REPO),
        **env_extra,
    })
    (tmp_path / "dags").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_plugin_mounts_app_in_api_server(tmp_path: Path) -> None:
    config = tmp_path / "newswatch.yaml"
    config.write_text(f"store:\n  url: sqlite:///{tmp_path / 'records.db'}\n"
                      "feeds:\n  - {name: Example, url: 'https://example.com/feed.xml'}\n",
                      encoding="utf-8")
    result = run_check(tmp_path, {"NEWSWATCH_CONFIG": str(config)})

    assert result["import_errors"] == {}
    assert "newswatch" in result["plugins"]
    assert result["light_import"]
    assert {"name": "newswatch", "url_prefix": "/newswatch"} in result["fastapi_apps"]
    [view] = [v for v in result["external_views"] if v["name"] == "News search"]
    assert view["href"] == "/newswatch/" and view["destination"] == "nav"
    assert "/newswatch" in result["mounts"]

    status, feeds = result["feeds"]
    assert status == 200
    assert feeds == {"feeds": []}  # the configured store, not yet synced by a run
    status, html = result["page"]
    assert status == 200
    assert 'href="/newswatch/static/style.css"' in html
    assert 'href="/newswatch/feeds"' in html
    status, error = result["bad"]
    assert status == 400 and "since" in error["error"]
