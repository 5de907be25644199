"""The two Qin Gang example articles: the sample site's fictional pair, and the user's own.

Every test that needs "two articles, one story" uses the fictional pair written for the sample
site (``examples/sample_site/fictional-seeds/``), so a clone with nothing beside it tests the
whole behaviour. The user's real seed articles belong to their publishers and are never
committed; where they are present (``../shared/data/seeds`` beside the checkout, or
``NEWSWATCH_SEEDS_DIR``) the tests marked :data:`requires_user_seeds` run them too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "examples" / "sample_site"
FICTIONAL_DIR = SITE / "fictional-seeds"


def user_seeds_dir() -> Path | None:
    """The folder of the user's two seed articles, or None where it is not beside the clone."""
    path = Path(os.environ.get("NEWSWATCH_SEEDS_DIR") or REPO.parent / "shared/data/seeds")
    return path if len(list(path.glob("*.txt"))) == 2 else None


def user_seed_files() -> list[Path]:
    folder = user_seeds_dir()
    return sorted(folder.glob("*.txt")) if folder else []


def fictional_seed_files() -> list[Path]:
    return sorted(FICTIONAL_DIR.glob("*.txt"))


requires_user_seeds = pytest.mark.skipif(
    user_seeds_dir() is None,
    reason="the user's two seed articles are not beside the checkout (../shared/data/seeds or "
           "NEWSWATCH_SEEDS_DIR); the fictional pair covers the behaviour")
