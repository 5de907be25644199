"""The sample site's two Qin Gang pages: the user's seeds where present, else the fictional pair.

The user's seeds are publishers' text: they are served from the shared folder beside the
checkout and never committed.
"""

from __future__ import annotations

import json
import re
import subprocess

from pipeline.sample_site import SampleSite, seed_paragraphs
from tests.support.seeds import (
    FICTIONAL_DIR,
    REPO,
    SITE,
    requires_user_seeds,
    user_seed_files,
    user_seeds_dir,
)


def _seed_pages() -> list[dict]:
    manifest = json.loads((SITE / "manifest.json").read_text(encoding="utf-8"))
    return [m for m in manifest if m["kind"] == "seed"]


def _served_paragraphs(site: SampleSite, path: str) -> list[str]:
    status, body, _ = site.render(path)
    html = body.decode("utf-8")
    assert status == 200 and "{{SEED" not in html
    return [p.replace("&amp;", "&") for p in re.findall(r"<p[^>]*>(.*?)</p>", html)]


def _in_order(expected: list[str], served: list[str]) -> bool:
    """``expected`` appears in ``served`` in order (page chrome may sit between paragraphs)."""
    rest = iter(served)
    return all(any(p == s for s in rest) for p in expected)


@requires_user_seeds
def test_seed_pages_are_filled_from_the_users_seeds_folder_in_order():
    site = SampleSite(SITE, seeds_dir=user_seeds_dir())
    assert site.missing_seeds == []
    for page in _seed_pages():
        expected = seed_paragraphs((user_seeds_dir() / page["seed_file"]).read_text("utf-8"))
        assert _in_order(expected, _served_paragraphs(site, page["path"]))


def test_without_the_users_seeds_the_pages_serve_the_fictional_pair(tmp_path):
    site = SampleSite(SITE, seeds_dir=tmp_path)  # an empty folder
    assert sorted(site.missing_seeds) == sorted(p["seed_file"] for p in _seed_pages())
    for page in _seed_pages():
        fictional = FICTIONAL_DIR / page["fictional_file"]
        expected = seed_paragraphs(fictional.read_text(encoding="utf-8"))
        served = _served_paragraphs(site, page["path"])
        assert len(expected) >= 3 and _in_order(expected, served)
        assert sum("Taiwan" in p for p in expected) >= 2  # Taiwan is a point of its own
    assert sorted(SampleSite(SITE).missing_seeds) == sorted(p["seed_file"] for p in _seed_pages())


def test_the_fictional_pair_is_the_sites_own_text():
    """Same meeting, different words: no sentence of one fictional page is in the other."""
    texts = [" ".join(f.read_text(encoding="utf-8").split())
             for f in sorted(FICTIONAL_DIR.glob("*.txt"))]
    assert len(texts) == 2 and all("Qin Gang" in t and "Blinken" in t for t in texts)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", texts[0]) if len(s) > 40]
    assert sentences and not [s for s in sentences if s in texts[1]]


@requires_user_seeds
def test_no_tracked_file_holds_seed_text():
    """The seeds are publishers' text: not one of their sentences may be committed."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    sentences = [s for f in user_seed_files()
                 for p in seed_paragraphs(f.read_text(encoding="utf-8"))
                 for s in re.split(r"(?<=[.!?”])\s+", p) if len(s) > 60]
    assert sentences
    for name in filter(None, tracked):
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = " ".join(path.read_text(encoding="utf-8", errors="ignore").split())
        leaked = [s for s in sentences if s in text]
        assert not leaked, f"{name} holds seed text: {leaked[0][:60]}…"
