"""``newswatch match``: try a watch on articles before it sends anything.

Two uses, one scorer (``pipeline.relevance``, exactly as the alert stage runs it):

* ``match_records`` scores articles (``pipeline.article_input``, the ``cluster`` format) and
  returns ``{"id", "score", "relevant", "passage", "reasons"}`` per article, in input order:
  ``passage`` is where the article talks about the topic (``where``: lead or body,
  ``quote``: its keyword sentence, ``text``: the passage scored), null without a keyword;
* ``preview_stories`` scores the stories active in the store since a date and returns what
  the watch would have alerted on. It only reads: no alert, no ledger row, no cached score
  is written, so a watch can be tested before it is enabled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.records import Store
from pipeline.records.articles import articles_by_story
from pipeline.records.stories import recent_stories
from pipeline.relevance import RelevanceScore, default_taiwan_watch, scorer_for
from pipeline.settings import Settings, WatchConfig

# progress(advance, total): the CLI's progress bar; total is given on the first call
Progress = Callable[[int, int | None], None]

BUILT_IN_WATCHES: dict[str, Callable[[], WatchConfig]] = {"taiwan": default_taiwan_watch}
MEMBER_COLUMNS = ("article_id", "story_id", "title", "text", "entry_summary", "source", "url",
                  "link")
CHUNK = 256  # articles per encode call: keeps memory flat and the progress bar moving


class UnknownWatchError(LookupError):
    """No configured (or built-in) watch has that name."""


def find_watch(settings: Settings, name: str) -> WatchConfig:
    """The configured watch ``name`` (enabled or not: testing comes before enabling), else a
    built-in one, so ``match --watch taiwan`` works without a config file."""
    for watch in settings.watches:
        if watch.name == name:
            return watch
    if name in BUILT_IN_WATCHES:
        return BUILT_IN_WATCHES[name]()
    configured = ", ".join(w.name for w in settings.watches) or "none"
    raise UnknownWatchError(f"no watch named {name!r} (configured: {configured}; built in: "
                            f"{', '.join(sorted(BUILT_IN_WATCHES))})")


def _chunked_scores(watch: WatchConfig, records: list[dict[str, Any]], settings: Settings,
                    progress: Progress | None) -> list[RelevanceScore]:
    scorer = scorer_for(settings)
    if progress is not None:
        progress(0, len(records))
    scores: list[RelevanceScore] = []
    for start in range(0, len(records), CHUNK):
        chunk = records[start:start + CHUNK]
        scores.extend(scorer(watch, chunk))
        if progress is not None:
            progress(len(chunk), None)
    return scores


def match_records(watch: WatchConfig, records: list[dict[str, Any]], settings: Settings, *,
                  progress: Progress | None = None) -> list[dict[str, Any]]:
    """``{"id", "score", "relevant", "passage", "reasons"}`` per record, in input order."""
    rows = [{"title": r.get("title") or "", "text": r.get("text") or ""} for r in records]
    scores = _chunked_scores(watch, rows, settings, progress)
    return [{"id": record["id"], "score": round(score.score, 4), "relevant": score.relevant,
             "passage": score.passage, "reasons": score.reasons}
            for record, score in zip(records, scores, strict=True)]


# ---- preview from the store ------------------------------------------------------------------

@dataclass
class StoryMatch:
    """One story as the watch sees it: its best article decides (as in the alert stage)."""

    story_id: str
    title: str
    score: float
    relevant: bool
    sources: list[str]
    article_count: int
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    reasons: list[str]
    best_article: str | None
    passage: dict[str, str] | None  # where the best article talks about the topic

    def to_json(self) -> dict[str, Any]:
        return {"story_id": self.story_id, "title": self.title, "score": round(self.score, 4),
                "relevant": self.relevant, "sources": self.sources,
                "article_count": self.article_count,
                "first_seen_at": _iso(self.first_seen_at),
                "last_seen_at": _iso(self.last_seen_at), "reasons": self.reasons,
                "best_article": self.best_article, "passage": self.passage}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def preview_stories(store: Store, settings: Settings, watch: WatchConfig, since: datetime,
                    *, progress: Progress | None = None) -> list[StoryMatch]:
    """What ``watch`` would alert on among the stories active since ``since``: every story
    with keyword evidence, most relevant first. Read-only."""
    stories = recent_stories(store, since)  # the alert stage's choice of stories
    by_story = articles_by_story(store, [s["story_id"] for s in stories], MEMBER_COLUMNS)
    articles = [art for s in stories for art in by_story.get(s["story_id"], [])]
    records = [{"title": art["title"] or "",
                "text": art["text"] or art["entry_summary"] or ""} for art in articles]
    scores = _chunked_scores(watch, records, settings, progress)
    by_article = {art["article_id"]: score
                  for art, score in zip(articles, scores, strict=True)}
    out: list[StoryMatch] = []
    for story in stories:
        arts = by_story.get(story["story_id"], [])
        scored = [(by_article[a["article_id"]], a) for a in arts]
        if not scored:
            continue
        best, best_art = max(scored, key=lambda pair: pair[0].score)
        if not best.evidence.total:
            continue  # no keyword anywhere in the story: never a candidate
        sources = sorted({a["source"] for a in arts if a["source"]})
        out.append(StoryMatch(
            story_id=story["story_id"], title=story["title"] or best_art["title"] or "",
            score=best.score, relevant=any(s.relevant for s, _ in scored), sources=sources,
            article_count=story["article_count"] or len(arts),
            first_seen_at=story["first_seen_at"], last_seen_at=story["last_seen_at"],
            reasons=best.reasons, best_article=best_art["url"] or best_art["link"],
            passage=best.passage))
    out.sort(key=lambda m: (not m.relevant, -m.score, m.story_id))
    return out
