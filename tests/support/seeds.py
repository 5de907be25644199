"""The user's two seed articles (Qin Gang, China–US relations).

Their text belongs to its publishers and is never committed: tests read it from the shared
data folder beside the checkout (``../shared/data/seeds``, present for every developer and in
CI) or from ``NEWSWATCH_SEEDS_DIR``. A missing folder fails the tests that need it, with the
reason, rather than skipping them: the seeds ending up in one story is an acceptance check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def seeds_dir() -> Path:
    path = Path(os.environ.get("NEWSWATCH_SEEDS_DIR") or REPO.parent / "shared/data/seeds")
    if len(list(path.glob("*.txt"))) != 2:
        pytest.fail(f"the user's two seed articles are not in {path}: put the shared data "
                    "folder beside the checkout or set NEWSWATCH_SEEDS_DIR", pytrace=False)
    return path


def seed_files() -> list[Path]:
    return sorted(seeds_dir().glob("*.txt"))
