"""Headless Chromium over ``serve``: search "Qin Gang", see the seed story, open it.

Needs Debian's ``chromium`` at /usr/bin/chromium (``.ci/system-deps`` installs it). Without
it the test fails, unless ``NEWSWATCH_SKIP_BROWSER=1``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_web import SEED_TITLES, build_store

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _skip_if_asked() -> None:
    if os.environ.get("NEWSWATCH_SKIP_BROWSER") == "1":
        pytest.skip("NEWSWATCH_SKIP_BROWSER=1")


def require_chromium() -> str:
    """The Chromium binary; a missing one fails the test (it is a CI dependency)."""
    _skip_if_asked()
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (run .ci/system-deps) "
                    "or set NEWSWATCH_SKIP_BROWSER=1", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve`` in a subprocess over a demo-like store; yields its base URL."""
    _skip_if_asked()
    directory = tmp_path_factory.mktemp("browser")
    settings = build_store(directory)
    config = directory / "newswatch.yaml"
    config.write_text(f"store:\n  url: {settings.store.url}\n", encoding="utf-8")
    port = _free_port()
    code = ("import sys; from pipeline.settings import load_settings; "
            "from pipeline.web.serve import serve; "
            "serve(load_settings(sys.argv[1]), port=int(sys.argv[2]), default_mode='keyword', "
            "log_level='warning')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    proc = subprocess.Popen([sys.executable, "-c", code, str(config), str(port)], cwd=REPO,
                            env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/feeds", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"newswatch serve did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_search_groups_seed_story_and_story_page_lists_both(server: str) -> None:
    chromium_path = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path,
            args=["--headless", "--no-sandbox", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{server}/")
            page.fill("#q", "Qin Gang")
            page.press("#q", "Enter")
            page.wait_for_url("**/?q=Qin+Gang*")

            seed = page.locator("section.story-group")
            for title in SEED_TITLES:
                seed = seed.filter(has_text=title)
            expect(seed).to_have_count(1)
            expect(seed.locator("mark").first).to_have_text("Qin")

            seed.locator("a.story-link").click()
            page.wait_for_url("**/stories/*")
            rows = page.locator("#articles tr.article")
            for title in SEED_TITLES:
                expect(rows.filter(has_text=title)).to_have_count(1)
                link = rows.filter(has_text=title).locator("a")
                assert (link.get_attribute("href") or "").startswith("http://127.0.0.1:")
            expect(page.locator("dl.facts")).to_contain_text("First seen")
            expect(page.locator("dl.facts")).to_contain_text("Last seen")

            page.click("text=Feeds")
            page.wait_for_url("**/feeds")
            expect(page.locator("#feeds tr.feed")).to_have_count(5)
        finally:
            browser.close()
