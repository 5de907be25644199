"""The stories stage: embed every new article version once, then give each unplaced article
a story.

Loads the stories active around the run's articles from the SQL records
(``records.stories``), runs ``story_assignment.StoryAssigner`` over them in publication
order, and writes the decisions back; the cross-lingual pass (``crosslingual``) groups the
other languages around it. Story ids derive from the first article's id, so reruns are stable
and idempotent.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from pipeline import crosslingual
from pipeline.embeddings import (
    embedding_key,
    encode_for,
    legacy_keys,
    pack_vector,
    release_encoders,
    unpack_vector,
)
from pipeline.memory import return_free_memory
from pipeline.records import Store, utcnow
from pipeline.records import stories as story_records
from pipeline.sanitize import plausible_date
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.story_assignment import ActiveStory, Assignment, StoryAssigner, StoryItem
from pipeline.story_text import (
    NAME_CHARS,
    article_text_for_embedding,
    derive_title,
    story_features,
)

log = logging.getLogger(__name__)
STAGE = "stories"

Progress = Callable[[int, int | None], None]

# A pass that embeds more texts than this (a backlog's chunk) embeds first, drops the model
# and only then loads the stories window: MiniLM with its activations (~250 MB) and a full
# window (members' vectors and text features, ~100-200 MB in a backlog) are never held at
# once, which is where a backlog run peaked. A pass of fewer texts (an hourly run) loads the
# window while the model embeds, where the load is a large share of the stage's wall time.
OVERLAP_MAX_TEXTS = 256


# ---- the store-backed stage -----------------------------------------------------------------

class TextFeatures:
    """The assignment's text features of each (title, text): worked out on the stage's own
    thread while the encoder embeds the same texts on another (the engines release the
    GIL), so the two costs overlap instead of adding up. Frozensets: safe to share."""

    def __init__(self) -> None:
        self._of: dict[tuple[str, str], tuple[frozenset[str], frozenset[str], frozenset[int]]] = {}
        self.embedded: set[str] = set()  # the articles whose vectors were made meanwhile

    def add(self, article_id: str, title: str | None, text: str | None) -> None:
        self.embedded.add(article_id)
        try:
            title, text = title or derive_title(text), text or ""
            if (title, text) not in self._of:
                self._of[(title, text)] = story_features(title, text)
        except Exception:  # computed again in of(), where the item's error is handled
            return

    def of(self, title: str, text: str | None
           ) -> tuple[frozenset[str], frozenset[str], frozenset[int]]:
        """(terms, names, shingles), from the memo when the text was seen while embedding."""
        text = text or ""
        return self._of.get((title, text)) or story_features(title, text)


def embed_pending(store: Store, settings: Settings, run_id: str | None = None,
                  progress: Progress | None = None, batch: int = 256, *,
                  features: TextFeatures | None = None) -> int:
    """Embed every current article version without an embedding from the configured model
    and backend (never twice; a backend or model switch re-embeds, so spaces never mix).
    Works in batches of ``batch`` rows, so memory does not grow with the backlog. The model
    runs on a worker thread; meanwhile this one fills ``features`` for the same texts."""
    conf = settings.embedding
    key = embedding_key(conf.model, conf.backend)
    keys = [key, *legacy_keys(conf.model, conf.backend)]
    english_only = crosslingual.english_pass_only(settings)  # others: crosslingual.py
    total = count_pending(store, settings)
    if progress:
        progress(0, total)
    done = 0
    after = ""
    with ThreadPoolExecutor(1, thread_name_prefix="embed") as encoder:
        while done < total:
            chunk = story_records.versions_to_embed(store, keys, english_only=english_only,
                                                    after=after, limit=batch)
            if not chunk:
                break
            texts = [article_text_for_embedding(r.title or derive_title(r.text), r.text)
                     for r in chunk]
            embedding = encoder.submit(encode_for, settings, texts)
            if features is not None:
                for row in chunk:
                    features.add(row.article_id, row.title, row.text)
            vectors = embedding.result()
            story_records.save_embeddings(store, [
                (row.article_id, row.version, pack_vector(vector))
                for row, vector in zip(chunk, vectors, strict=True)], key)
            after = chunk[-1].article_id
            done += len(chunk)
            if progress:
                progress(len(chunk), None)
    if run_id:
        store.count(run_id, STAGE, "embedded", done)
    return done


def count_pending(store: Store, settings: Settings) -> int:
    """Current article versions :func:`embed_pending` would embed now."""
    conf = settings.embedding
    keys = [embedding_key(conf.model, conf.backend), *legacy_keys(conf.model, conf.backend)]
    return story_records.count_versions_to_embed(
        store, keys, english_only=crosslingual.english_pass_only(settings))


def _normalised(blob: bytes) -> np.ndarray:
    vector = unpack_vector(blob)
    norm = float(np.linalg.norm(vector)) or 1.0
    return (vector / norm).astype(np.float32)


def _load_active(store: Store, since: datetime, until: datetime,
                 story_ids: Iterable[str] = ()) -> list[ActiveStory]:
    """Stories active in [since, until] (plus ``story_ids``), with members' vectors and terms.

    Centroids are rebuilt from the members' stored embeddings (so an edited member moves
    them); the stored centroid is the fallback for a story whose members are gone.
    """
    stories = {r["story_id"]: ActiveStory(
        story_id=r["story_id"], title=r["title"] or "", first_seen=r["first_seen_at"],
        last_seen=r["last_seen_at"], count=r["article_count"],
        sources=list(r["sources"] or []), centroid=_normalised(r["centroid"]))
        for r in story_records.active_story_rows(store, since, until, story_ids) if r["centroid"]}
    if stories:
        for m in story_records.embedded_members(store, list(stories), NAME_CHARS):
            story = stories[m.story_id]
            title = m.title or derive_title(m.lead)
            story.members[m.article_id] = _normalised(m.embedding)
            (story.member_terms[m.article_id], story.member_names[m.article_id],
             story.member_shingles[m.article_id]) = story_features(title, m.lead)
            story.member_titles[m.article_id] = title
        for story in stories.values():
            story.recompute_centroid()
    return list(stories.values())


@dataclass(frozen=True)
class _Span:
    """What the stories window of a pass depends on."""

    since: datetime
    until: datetime
    story_ids: frozenset[str]


def _window_ahead(store: Store, settings: Settings, window: timedelta
                  ) -> tuple[_Span, list[ActiveStory]] | None:
    """The window of the articles the English pass will place, read before their vectors
    exist (so it loads while the model embeds); None when there is nothing to place."""
    rows = story_records.articles_to_place_soon(
        store, english_only=crosslingual.english_pass_only(settings))
    if not rows:
        return None
    times = [plausible_date(r.published_at) or r.first_seen_at for r in rows]
    span = _Span(min(times) - window, max(times) + window,
                 frozenset(r.story_id for r in rows if r.story_id))
    return span, _load_active(store, span.since, span.until, span.story_ids)


def assign_stories(store: Store, settings: Settings, run_id: str | None = None, *,
                   progress: Progress | None = None,
                   features: TextFeatures | None = None) -> dict[str, int]:
    """Embed new versions, then give every unassigned article a story (publication order).

    An article seen before with a new version keeps its story (``kept-story``); its new
    embedding moves the story's centroid. Already assigned versions are never touched, so a
    rerun changes nothing. ``features``: the memo of a caller that embedded some of the
    articles already (``embed_pending`` with ``features``), so their features are not
    computed again on this thread.
    """
    cross = crosslingual.CrossLingualPass(store, settings) if settings.multilingual.enabled \
        else None
    counts = cross.before_english(progress) if cross else {}  # articles not in English
    placed = _english_pass(store, settings, counts, progress, features)
    # The English window (stories, members, features) is freed here, before the multilingual
    # model embeds: that step reads only from the store, and on a long backlog it was where
    # a run peaked with both in memory (docs/performance.md, issue 21).
    if placed and cross:  # the run's new English stories meet the other languages' stories
        gc.collect()
        return_free_memory()
        for outcome, n in cross.after_english().items():
            counts[outcome] = counts.get(outcome, 0) + n
    return _finish(store, run_id, counts)


def _english_pass(store: Store, settings: Settings, counts: dict[str, int],
                  progress: Progress | None, features: TextFeatures | None) -> bool:
    """Embed, then place every unassigned article (counted into ``counts``); False when
    there was nothing to place. Everything it loads is dropped when it returns."""
    features = features if features is not None else TextFeatures()
    window = timedelta(days=settings.stories.window_days)
    overlap = count_pending(store, settings) <= OVERLAP_MAX_TEXTS
    with ThreadPoolExecutor(1, thread_name_prefix="english-pass") as worker:
        embedding = worker.submit(embed_pending, store, settings, None, progress,
                                  features=features)
        # Meanwhile, here: the stories around the articles the pass will place.
        ahead = _window_ahead(store, settings, window) if overlap else None
        counts["embedded"] = embedding.result()
    if not overlap:
        release_encoders()  # before the window loads (peak memory); alerts loads it again
    rows = story_records.articles_to_place(store)
    if not rows:
        return False
    # A stored date no news item can have (year 1, 9999) would overflow the window maths.
    dates = [plausible_date(r["published_at"]) for r in rows]  # None: no usable date
    times = [date or r["first_seen_at"] for date, r in zip(dates, rows, strict=True)]
    kept_ids = [r["story_id"] for r in rows if r["story_id"]]
    span = _Span(min(times) - window, max(times) + window, frozenset(kept_ids))
    # The window loaded ahead is used only if it is exactly the one these rows need and no
    # story member got a vector while it loaded (every vector made is a new article's: no
    # edited version, no re-embedded placed article); otherwise it loads again, as before.
    placing = {r["article_id"] for r in rows if not r["story_id"]}
    active = ahead[1] if ahead and ahead[0] == span and not kept_ids \
        and features.embedded <= placing else \
        _load_active(store, span.since, span.until, span.story_ids)
    assigner = StoryAssigner(settings.stories, active)
    decisions: list[tuple[dict[str, Any], Assignment | None]] = []
    pending: list[tuple[dict[str, Any], StoryItem]] = []
    for row, time, date in zip(rows, times, dates, strict=True):
        try:
            title = row["title"] or derive_title(row["text"])
            item = StoryItem(row["article_id"], title, row["source"], time,
                             _normalised(row["embedding"]), *features.of(title, row["text"]),
                             dated=date is not None)
        except Exception:  # this article waits for the next run; the others get stories
            log.exception("stories: article %s skipped", row["article_id"])
            counts["item-error"] = counts.get("item-error", 0) + 1
            continue
        if row["story_id"]:  # an edited version keeps its story
            assigner.update_member(row["story_id"], item)
            decisions.append((row, None))
            counts["kept-story"] = counts.get("kept-story", 0) + 1
        else:
            pending.append((row, item))
    results = assigner.assign_batch([item for _, item in pending])
    for (row, _), result in zip(pending, results, strict=True):
        decisions.append((row, result))
        outcome = "new-story" if result.new_story else (
            "duplicate" if result.duplicate_of else "joined-story")
        counts[outcome] = counts.get(outcome, 0) + 1
    if assigner.splits:  # why a run made more stories than its online pass would have
        counts["split-by-cohesion"] = assigner.splits
    if assigner.merges:  # ... or fewer
        counts["merged-stories"] = assigner.merges
    if assigner.held_back:  # ... or kept an outlet's second article out of its own story
        counts["held-for-another-outlet"] = assigner.held_back
    _write(store, assigner, decisions)
    return True


def _write(store: Store, assigner: StoryAssigner,
           decisions: list[tuple[dict[str, Any], Assignment | None]]) -> None:
    placements = []
    for row, result in decisions:
        values: dict[str, Any] = {"story_assigned_version": row["version"]}
        if result is not None:
            values.update(story_id=result.story_id, duplicate_of=result.duplicate_of)
        placements.append((row["article_id"], values))
    now = utcnow()
    story_records.save_assignments(store, placements, [{
        "story_id": story.story_id, "title": story.title, "first_seen_at": story.first_seen,
        "last_seen_at": story.last_seen, "article_count": story.count, "sources": story.sources,
        "centroid": pack_vector(story.centroid), "updated_at": now}
        for story in assigner.stories.values() if story.dirty and story.merged_into is None],
        assigner.folds)


def _finish(store: Store, run_id: str | None, counts: dict[str, int]) -> dict[str, int]:
    if run_id:
        for outcome, n in counts.items():
            store.count(run_id, STAGE, outcome, n)
    return counts


# ---- the stage contract (pipeline/stages.py) --------------------------------------------

# What the stories stage counts under "stories".
OUTCOMES = ("embedded", "new-story", "joined-story", "duplicate", "kept-story",
            "split-by-cohesion", "merged-stories", "item-error", "embedded-multilingual",
            "cross-language-join", "cross-language-merge", "held-for-another-outlet",
            "cross-language-no-shared-name")


def run(context: StageContext) -> dict[str, int]:
    """The stories stage: :func:`assign_stories`."""
    return assign_stories(context.store, context.settings, context.run_id,
                          progress=(lambda n, total: context.advance(STAGE, n, total))
                          if context.progress else None)
