"""The sample site's seed pages: filled from the shared seeds folder, never from the repo."""

from __future__ import annotations

import json
import re
import subprocess

from pipeline.sample_site import SEED_NOTICE, SampleSite, seed_paragraphs
from tests.support.seeds import REPO, seed_files, seeds_dir

SITE = REPO / "examples" / "sample_site"


def _seed_pages() -> list[dict]:
    manifest = json.loads((SITE / "manifest.json").read_text(encoding="utf-8"))
    return [m for m in manifest if m["kind"] == "seed"]


def test_seed_pages_are_filled_from_the_seeds_folder_in_order():
    site = SampleSite(SITE, seeds_dir=seeds_dir())
    assert site.missing_seeds == []
    for page in _seed_pages():
        status, body, _ = site.render(page["path"])
        html = body.decode("utf-8")
        expected = seed_paragraphs((seeds_dir() / page["seed_file"]).read_text(encoding="utf-8"))
        served = [p for p in re.findall(r"<p[^>]*>(.*?)</p>", html)
                  if p.replace("&amp;", "&") in expected]
        assert status == 200 and len(served) == len(expected)
        assert "{{SEED" not in html and SEED_NOTICE not in html


def test_without_the_seeds_folder_the_pages_say_why_and_the_site_reports_it(tmp_path):
    site = SampleSite(SITE, seeds_dir=tmp_path)  # an empty folder
    assert sorted(site.missing_seeds) == sorted(p["seed_file"] for p in _seed_pages())
    status, body, _ = site.render(_seed_pages()[0]["path"])
    html = body.decode("utf-8")
    assert status == 200 and html.count(SEED_NOTICE) == 1 and "{{SEED" not in html


def test_no_tracked_file_holds_seed_text():
    """The seeds are publishers' text: not one of their sentences may be committed."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    sentences = [s for f in seed_files() for p in seed_paragraphs(f.read_text(encoding="utf-8"))
                 for s in re.split(r"(?<=[.!?”])\s+", p) if len(s) > 60]
    assert sentences
    for name in filter(None, tracked):
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = " ".join(path.read_text(encoding="utf-8", errors="ignore").split())
        leaked = [s for s in sentences if s in text]
        assert not leaked, f"{name} holds seed text: {leaked[0][:60]}…"
