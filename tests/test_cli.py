"""The command line: one-line errors, exit codes, JSON output (--help: tests/test_docs.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_invalid_config_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fetch: {timeout_s: zero}\n", encoding="utf-8")
    result = runner.invoke(app, ["feeds", "--config", str(bad)])
    assert result.exit_code == 2
    assert "fetch.timeout_s" in result.output


def test_run_without_feeds_fails_clearly(tmp_path):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{tmp_path}/r.db'}}\n", encoding="utf-8")
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "no feeds configured" in result.output


def test_demo_refuses_to_start_fresh_on_a_server_database(tmp_path):
    cfg = tmp_path / "pg.yaml"
    cfg.write_text("store: {url: 'postgresql+psycopg://nw:secret@db.invalid/newswatch'}\n",
                   encoding="utf-8")
    result = runner.invoke(app, ["demo", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "only removes SQLite files" in result.output and "--keep" in result.output
    assert "secret" not in result.output


def test_run_with_only_unreachable_feeds_prints_table_and_exits_1(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/r.db'}}\n"
        "feeds:\n  - {name: Nowhere, url: 'http://nonexistent.invalid/feed.xml'}\n"
        "fetch: {timeout_s: 2, deadline_s: 3}\n", encoding="utf-8")
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "Nowhere" in result.output and "no feed could be fetched" in result.output


def test_extract_saved_pages_prints_json_lines(tmp_path):
    html = ("<html lang='en'><head><title>Harbour reopens | Example</title></head><body>"
            "<nav>Home News Sport</nav><article><h1>Harbour reopens after storm</h1>"
            + "".join(f"<p>Paragraph {i} about the harbour reopening after the storm, with "
                      "ferries running again and traders returning to the quay.</p>"
                      for i in range(6))
            + "</article><footer>Copyright Example</footer></body></html>")
    plain = tmp_path / "page.html"
    plain.write_text(html, encoding="utf-8")
    packed = tmp_path / "page.html.gz"
    packed.write_bytes(gzip.compress(html.encode()))
    result = runner.invoke(app, ["extract", str(plain), str(packed)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    for record in lines:
        assert set(record) == {"source", "title", "text", "authors", "published_at", "language"}
        assert "ferries running again" in record["text"]
        assert "Copyright Example" not in record["text"]


def test_extract_missing_file_exits_1(tmp_path):
    result = runner.invoke(app, ["extract", str(tmp_path / "nope.html")])
    assert result.exit_code == 1
    assert "no such file" in result.output


RSS_ONE_ITEM = """<?xml version="1.0"?><rss version="2.0"><channel><title>Strait Desk</title>
<link>http://127.0.0.1/</link><description>fictional</description>
<item><title>Taiwan reports Chinese warships near its coast</title>
<link>http://127.0.0.1/a1</link><pubDate>Mon, 19 Jun 2023 08:00:00 GMT</pubDate>
<description>Taiwan's defence ministry said it tracked Chinese warships and aircraft around
the island on Monday, the largest such show of force near Taiwan this month.</description>
</item></channel></rss>"""


def _one_feed_config(tmp_path, feed_url: str) -> str:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/r.db'}}\n"
        f"feeds:\n  - {{name: Strait Desk, url: '{feed_url}'}}\n"
        "fetch: {allow_private_networks: true}\n"
        "extraction: {fetch_pages: false}\n"
        "channels: {console: {type: console}}\n"
        "watches:\n  - {name: strait, keywords: [Taiwan], min_score: 0, channels: [console]}\n",
        encoding="utf-8")
    return str(cfg)


@pytest.mark.slow
def test_run_json_prints_only_json_on_stdout(tmp_path, http_server):
    """Console alerts and progress go to stderr, so `run --json | jq` works."""
    http_server.route("/feed.xml", body=RSS_ONE_ITEM,
                      headers={"Content-Type": "application/rss+xml"})
    cfg = _one_feed_config(tmp_path, http_server.url("/feed.xml"))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--json", "-c", cfg],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # nothing but the summary
    assert summary["stages"]["alerts"]["sent"] == 1
    assert "Taiwan reports Chinese warships" in done.stderr  # the console alert


def test_run_exits_1_naming_the_stage_that_failed(tmp_path, http_server, monkeypatch):
    from pipeline import index

    def broken_index(*args, **kwargs):
        raise RuntimeError("search backend on fire")

    monkeypatch.setattr(index, "run", broken_index)
    http_server.route("/feed.xml", body=RSS_ONE_ITEM)
    cfg = _one_feed_config(tmp_path, http_server.url("/feed.xml"))
    result = runner.invoke(app, ["run", "-c", cfg])
    assert result.exit_code == 1
    assert "stage index failed: RuntimeError: search backend on fire" in result.output
