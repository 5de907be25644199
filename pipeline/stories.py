"""Stories: embed every article version once and group same-event coverage into stories.

Online, incremental assignment in publication order (as Europe Media Monitor and Event
Registry do): each article is compared with the centroids of stories active within
``stories.window_days`` of its own time, loaded in-process from the SQL records (no vector
search needed from the search backend). Close enough → it joins that story (and is a
``duplicate_of`` a member when nearly identical, e.g. a wire copy); otherwise it starts one.
Story ids derive from the first article's id, so reruns are stable and idempotent.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select, update

from pipeline import schema
from pipeline.embeddings import encode, pack_vector, unpack_vector
from pipeline.settings import Settings, StoriesSettings
from pipeline.store import Store, open_store, utcnow

STAGE = "stories"
LEAD_CHARS = 1200  # MiniLM reads 256 tokens: title + lead is what it can see anyway

Progress = Callable[[int, int | None], None]


def article_text_for_embedding(title: str | None, text: str | None) -> str:
    """Title plus the lead: the part of a news article that states the event."""
    title = (title or "").strip()
    lead = " ".join((text or "").split())[:LEAD_CHARS]
    return f"{title}. {lead}" if title else lead


@dataclass(slots=True)
class StoryItem:
    article_id: str
    title: str
    source: str | None
    time: datetime
    vector: np.ndarray


@dataclass(slots=True)
class Assignment:
    story_id: str
    duplicate_of: str | None
    new_story: bool
    similarity: float


@dataclass
class ActiveStory:
    story_id: str
    title: str
    first_seen: datetime
    last_seen: datetime
    count: int
    sources: list[str]
    centroid: np.ndarray
    members: dict[str, np.ndarray] = field(default_factory=dict)
    dirty: bool = False


class StoryAssigner:
    """Pure in-memory assignment over a window of active stories."""

    def __init__(self, conf: StoriesSettings, stories: Iterable[ActiveStory] = ()) -> None:
        self.conf = conf
        self.window = timedelta(days=conf.window_days)
        self.stories: dict[str, ActiveStory] = {s.story_id: s for s in stories}

    def _candidates(self, when: datetime) -> list[ActiveStory]:
        return [s for s in self.stories.values()
                if s.last_seen >= when - self.window and s.first_seen <= when + self.window]

    def assign(self, item: StoryItem) -> Assignment:
        candidates = self._candidates(item.time)
        best, best_sim = None, -1.0
        if candidates:
            matrix = np.stack([s.centroid for s in candidates])
            sims = matrix @ item.vector
            index = int(np.argmax(sims))
            best, best_sim = candidates[index], float(sims[index])
        if best is None or best_sim < self.conf.threshold:
            story = ActiveStory(story_id="s-" + item.article_id[:20], title=item.title,
                                first_seen=item.time, last_seen=item.time, count=0,
                                sources=[], centroid=item.vector.copy())
            self.stories[story.story_id] = story
            self._add(story, item)
            return Assignment(story.story_id, None, True, 1.0)
        duplicate_of = None
        if best.members:
            ids = list(best.members)
            member_sims = np.stack([best.members[i] for i in ids]) @ item.vector
            top = int(np.argmax(member_sims))
            if float(member_sims[top]) >= self.conf.duplicate_threshold:
                duplicate_of = ids[top]
        self._add(best, item)
        return Assignment(best.story_id, duplicate_of, False, best_sim)

    @staticmethod
    def _add(story: ActiveStory, item: StoryItem) -> None:
        total = story.centroid * story.count + item.vector
        norm = float(np.linalg.norm(total)) or 1.0
        story.centroid = (total / norm).astype(np.float32)
        story.count += 1
        story.members[item.article_id] = item.vector
        if item.source and item.source not in story.sources:
            story.sources.append(item.source)
        if item.time < story.first_seen:
            story.first_seen, story.title = item.time, item.title or story.title
        story.last_seen = max(story.last_seen, item.time)
        story.dirty = True


# ---- the store-backed stage -----------------------------------------------------------------

def embed_pending(store: Store, settings: Settings, run_id: str | None = None,
                  progress: Progress | None = None, batch: int = 256) -> int:
    """Embed every current article version that has no embedding yet (never twice)."""
    a, v = schema.articles, schema.article_versions
    conf = settings.embedding
    query = (select(v.c.article_id, v.c.version, v.c.title, v.c.text)
             .join(a, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
             .where(v.c.embedding.is_(None)).order_by(v.c.article_id))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    if progress:
        progress(0, len(rows))
    done = 0
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        vectors = encode([article_text_for_embedding(r.title, r.text) for r in chunk],
                         conf.model, conf.device, conf.batch_size)
        with store.engine.begin() as conn:
            for row, vector in zip(chunk, vectors, strict=True):
                conn.execute(update(v).where(and_(v.c.article_id == row.article_id,
                                                  v.c.version == row.version))
                             .values(embedding=pack_vector(vector), embedding_model=conf.model))
        done += len(chunk)
        if progress:
            progress(len(chunk), None)
    if run_id:
        store.count(run_id, STAGE, "embedded", done)
    return done


def _normalised(blob: bytes) -> np.ndarray:
    vector = unpack_vector(blob)
    norm = float(np.linalg.norm(vector)) or 1.0
    return (vector / norm).astype(np.float32)


def _load_active(store: Store, since: datetime, until: datetime) -> list[ActiveStory]:
    s, a, v = schema.stories, schema.articles, schema.article_versions
    with store.engine.connect() as conn:
        rows = conn.execute(select(s).where(and_(s.c.last_seen_at >= since,
                                                 s.c.first_seen_at <= until))).mappings().all()
        stories = {r["story_id"]: ActiveStory(
            story_id=r["story_id"], title=r["title"] or "", first_seen=r["first_seen_at"],
            last_seen=r["last_seen_at"], count=r["article_count"],
            sources=list(r["sources"] or []), centroid=_normalised(r["centroid"]))
            for r in rows if r["centroid"]}
        if stories:
            members = conn.execute(
                select(a.c.article_id, a.c.story_id, v.c.embedding)
                .join(v, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
                .where(a.c.story_id.in_(list(stories))).where(v.c.embedding.is_not(None)))
            for article_id, story_id, blob in members:
                stories[story_id].members[article_id] = _normalised(blob)
    return list(stories.values())


def assign_stories(store: Store, settings: Settings, run_id: str | None = None, *,
                   progress: Progress | None = None) -> dict[str, int]:
    """Embed new versions, then give every unassigned article a story (publication order)."""
    counts: dict[str, int] = {"embedded": embed_pending(store, settings, None, progress)}
    a, v = schema.articles, schema.article_versions
    when = func.coalesce(a.c.published_at, a.c.first_seen_at)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a.c.article_id, a.c.title, a.c.source, a.c.published_at, a.c.first_seen_at,
                   a.c.story_id, a.c.version, v.c.embedding)
            .join(v, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
            .where(a.c.version > 0).where(v.c.embedding.is_not(None))
            .where(or_(a.c.story_assigned_version.is_(None),
                       a.c.story_assigned_version != a.c.version))
            .order_by(when, a.c.article_id)).mappings().all()
    if not rows:
        return _finish(store, run_id, counts)
    times = [r["published_at"] or r["first_seen_at"] for r in rows]
    window = timedelta(days=settings.stories.window_days)
    assigner = StoryAssigner(settings.stories,
                             _load_active(store, min(times) - window, max(times) + window))
    decisions: list[tuple[dict[str, Any], Assignment | None]] = []
    for row, time in zip(rows, times, strict=True):
        if row["story_id"]:  # an edited version keeps its story
            decisions.append((row, None))
            counts["kept-story"] = counts.get("kept-story", 0) + 1
            continue
        item = StoryItem(row["article_id"], row["title"] or "", row["source"], time,
                         _normalised(row["embedding"]))
        result = assigner.assign(item)
        decisions.append((row, result))
        outcome = "new-story" if result.new_story else (
            "duplicate" if result.duplicate_of else "joined-story")
        counts[outcome] = counts.get(outcome, 0) + 1
    _write(store, assigner, decisions)
    return _finish(store, run_id, counts)


def _write(store: Store, assigner: StoryAssigner,
           decisions: list[tuple[dict[str, Any], Assignment | None]]) -> None:
    a, s = schema.articles, schema.stories
    now = utcnow()
    with store.engine.begin() as conn:
        for row, result in decisions:
            values: dict[str, Any] = {"story_assigned_version": row["version"]}
            if result is not None:
                values.update(story_id=result.story_id, duplicate_of=result.duplicate_of)
            conn.execute(update(a).where(a.c.article_id == row["article_id"]).values(**values))
        for story in assigner.stories.values():
            if not story.dirty:
                continue
            stmt = store._insert(s).values(
                story_id=story.story_id, title=story.title, first_seen_at=story.first_seen,
                last_seen_at=story.last_seen, article_count=story.count, sources=story.sources,
                centroid=pack_vector(story.centroid), updated_at=now)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["story_id"],
                set_={c: stmt.excluded[c] for c in ("title", "first_seen_at", "last_seen_at",
                                                    "article_count", "sources", "centroid",
                                                    "updated_at")}))


def _finish(store: Store, run_id: str | None, counts: dict[str, int]) -> dict[str, int]:
    if run_id:
        for outcome, n in counts.items():
            store.count(run_id, STAGE, outcome, n)
    return counts


# ---- reading --------------------------------------------------------------------------------

def list_stories(store: Store, since: datetime | None = None, query: str | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
    """Stories, most recently active first (largest first among equals)."""
    s = schema.stories
    stmt = select(s.c.story_id, s.c.title, s.c.first_seen_at, s.c.last_seen_at,
                  s.c.article_count, s.c.sources)
    if since is not None:
        stmt = stmt.where(s.c.last_seen_at >= since)
    if query:
        stmt = stmt.where(func.lower(s.c.title).contains(query.lower()))
    stmt = stmt.order_by(s.c.article_count.desc(), s.c.last_seen_at.desc()).limit(limit)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


# ---- `newswatch cluster` ------------------------------------------------------------------

def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cluster_records(records: list[dict[str, Any]], settings: Settings, *,
                    progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run the shipped embedding + story assignment over JSONL-style records in a throwaway
    store; returns ``{"id", "story_id", "duplicate_of"}`` per record, in input order."""
    from pipeline.urls import content_hash

    with tempfile.TemporaryDirectory(prefix="newswatch-cluster-") as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'cluster.db'}")
        try:
            base = utcnow()
            ids = [str(r.get("id")) for r in records]
            if len(set(ids)) != len(ids):
                raise ValueError("input ids must be unique")
            internal = {rid: f"c{n:08d}" for n, rid in enumerate(ids)}
            with store.engine.begin() as conn:
                for n, record in enumerate(records):
                    aid = internal[ids[n]]
                    title, text = record.get("title") or "", record.get("text") or ""
                    text = text or title
                    published = _parse_time(record.get("published_at"))
                    conn.execute(schema.articles.insert().values(
                        article_id=aid, url=record.get("url"), source=record.get("source"),
                        title=title, text=text, text_source="feed", published_at=published,
                        content_hash=content_hash(title, text), version=1,
                        extraction_status="ok", first_seen_at=base + timedelta(seconds=n),
                        updated_at=base))
                    conn.execute(schema.article_versions.insert().values(
                        article_id=aid, version=1, content_hash=content_hash(title, text),
                        title=title, text=text, seen_at=base))
            assign_stories(store, settings, None, progress=progress)
            with store.engine.connect() as conn:
                rows = {r.article_id: r for r in conn.execute(
                    select(schema.articles.c.article_id, schema.articles.c.story_id,
                           schema.articles.c.duplicate_of))}
        finally:
            store.close()
    external = {v: k for k, v in internal.items()}
    return [{"id": rid, "story_id": rows[internal[rid]].story_id,
             "duplicate_of": external.get(rows[internal[rid]].duplicate_of)} for rid in ids]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
    return records
