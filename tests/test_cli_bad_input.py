"""Hostile text from feeds and broken configuration never crash the CLI or reach the terminal
raw: Rich markup stays literal, escape sequences are removed, config problems exit 2."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from pipeline import schema
from pipeline.cli import app
from pipeline.records import open_store
from pipeline.settings import FeedConfig
from tests.support.factories import add_article, add_story

runner = CliRunner()
HOSTILE = ["Close [/] tag", "Open [bold tag", "[link=http://evil.example]x[/link]",
           "\x1b[31mred\x1b[0m", "\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07",
           "clear\x1b[2J\x1b[Hscreen"]


@pytest.fixture
def config(tmp_path):
    db = tmp_path / "r.db"
    path = tmp_path / "c.yaml"
    path.write_text(f"store: {{url: 'sqlite:///{db}'}}\n", encoding="utf-8")
    store = open_store(f"sqlite:///{db}")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store.sync_feeds([FeedConfig(url=f"https://feeds.example/{n}") for n in range(len(HOSTILE))])
    with store.engine.begin() as conn:
        for n, title in enumerate(HOSTILE):
            conn.execute(schema.feeds.update().where(schema.feeds.c.url ==
                                                     f"https://feeds.example/{n}")
                         .values(title=title, last_outcome="ok", last_error=title))
    for n, title in enumerate(HOSTILE):
        add_story(store, f"s{n}", title=title, at=now, sources=[title])
    store.close()
    return path


def assert_literal_and_clean(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output
    assert "[/]" in output and "[bold" in output


def test_feeds_prints_hostile_titles_literally(config):
    result = runner.invoke(app, ["feeds", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert_literal_and_clean(result.output)
    assert "red" in result.output and "click" in result.output


def test_stories_prints_hostile_titles_literally(config):
    result = runner.invoke(app, ["stories", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert_literal_and_clean(result.output)


@pytest.mark.parametrize("query", ["[/]", "[bold", "a\x1b[2Jb"])
def test_search_query_with_markup_or_escapes(config, query):
    result = runner.invoke(app, ["search", query, "--mode", "keyword", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "No results" in result.output


# ---- configuration problems: one line, exit 2 ----------------------------------------------

def one_line_exit_2(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output and "Error:" not in lines[0].split(":")[0]


def test_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data_dir: 'caf\xe9'\n".encode("latin-1"))
    one_line_exit_2(runner.invoke(app, ["feeds", "--config", str(path)]), str(path), "UTF-8")


def test_config_path_that_is_a_directory(tmp_path):
    one_line_exit_2(runner.invoke(app, ["feeds", "--config", str(tmp_path)]), str(tmp_path),
                    "directory")


def test_config_with_a_section_given_twice(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("fetch:\n  timeout_s: 3\nfetch:\n  deadline_s: 4\n", encoding="utf-8")
    one_line_exit_2(runner.invoke(app, ["feeds", "--config", str(path)]), "'fetch'", "twice")


def test_environment_override_that_is_not_json(config):
    result = runner.invoke(app, ["feeds", "--config", str(config)],
                           env={"NEWSWATCH_FEEDS": "[{not json"})
    one_line_exit_2(result, "NEWSWATCH_FEEDS", "not valid JSON")


@pytest.mark.parametrize("url", ["ftp://search.example:21/", "elastic.example:9200"])
def test_search_url_with_an_unsupported_scheme(tmp_path, url):
    path = tmp_path / "ftp.yaml"
    path.write_text(f"search: {{url: '{url}'}}\n", encoding="utf-8")
    one_line_exit_2(runner.invoke(app, ["feeds", "--config", str(path)]), "search.url",
                    "http://")


# ---- Elasticsearch unreachable: one line, no client tracebacks ------------------------------

def test_run_with_elasticsearch_unreachable_reports_one_line(tmp_path, http_server):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    http_server.route("/feed.xml", body='<?xml version="1.0"?><rss version="2.0"><channel>'
                      "<title>Empty Gazette</title></channel></rss>")
    db = tmp_path / "r.db"
    store = open_store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    # one article waiting for the index
    add_article(store, "a1", url="https://news.example/1", source="Gazette", title="Report",
                text="A fictional report. " * 20, content_hash="h1", published_at=now)
    store.close()
    config = tmp_path / "es.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{db}'}}\n"
        f"search: {{url: 'http://127.0.0.1:{closed_port}'}}\n"
        f"feeds:\n  - {{url: '{http_server.url('/feed.xml')}'}}\n"
        "fetch: {allow_private_networks: true}\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config",
                             str(config)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr
    outage = [line for line in result.stderr.splitlines() if "unavailable" in line]
    assert len(outage) == 2, result.stderr  # the log line and the run report's line
    assert "elasticsearch unreachable" in outage[0]
    assert "unavailable=1" in result.stdout
