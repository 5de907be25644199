"""Stories: embed every article version once and group same-event coverage into stories.

Online, incremental assignment in publication order (as Europe Media Monitor and Event
Registry do): each article is compared with the stories active within
``stories.window_days`` of its own time, loaded in-process from the SQL records (no vector
search needed from the search backend). The score mixes two signals measured on ECB+
(docs/decisions.md, Stories): the cosine between the article's MiniLM embedding (title +
lead) and the story centroid, and a lexical cosine over the words, names and numbers of
title + lead, weighted by how few active stories use them (so "Tara Reid" separates two
celebrity-rehab stories that MiniLM sees as one). Close enough → the article joins that story
(and is a ``duplicate_of`` a member when nearly identical, e.g. a wire copy); otherwise it
starts one. Story ids derive from the first article's id, so reruns are stable and idempotent.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections import Counter
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
# MiniLM reads 256 word pieces. Title + ~600 characters of lead (~130 pieces) scored as well as
# title + everything it can read, and a chunked mean over the whole body scored worse (the
# tail is background, not the event); the shorter input embeds about twice as fast.
LEAD_CHARS = 600
# The lexical signal reads a little further into the article than the embedding.
TERM_CHARS = 1000
# Only the best few stories by embedding are scored lexically (keeps a 1M-story window cheap).
TOP_K = 10

Progress = Callable[[int, int | None], None]

_STOPWORD_TEXT = """
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves said says say
told according one two three four five six seven eight nine ten new also would could may
might must shall us mr mrs ms dr st last first next week year years month months day days
monday tuesday wednesday thursday friday saturday sunday today yesterday tomorrow tonight
january february march april june july august september october november december time
people news report reported reports reuters ap afp update updated breaking photo video
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_TOKEN = re.compile(r"[^\W\d_](?:[\w'’\-.]*\w)?|\d+(?:[.,:]\d+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[\"“‘'(\[]?[A-Z0-9])")


# ---- article representation -----------------------------------------------------------------

def _clip(text: str, limit: int) -> str:
    """Collapse whitespace and cut at a word boundary near ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > limit // 2 else limit]


def derive_title(text: str | None, limit: int = 200) -> str:
    """A headline for an article that came without one: its first line, else first sentence."""
    for line in (text or "").splitlines():
        line = " ".join(line.split())
        if line:
            first = _SENTENCE_END.split(line, maxsplit=1)[0]
            return _clip(first, limit)
    return ""


def article_text_for_embedding(title: str | None, text: str | None) -> str:
    """Title plus the lead: the part of a news article that states the event."""
    title = " ".join((title or "").split())
    lead = _clip(text or "", LEAD_CHARS)
    if title and lead.startswith(title):  # pages whose text repeats the headline
        lead = lead[len(title):].lstrip(" .:-")
    return f"{title}. {lead}" if title and lead else (title or lead)


def story_terms(title: str | None, text: str | None) -> frozenset[str]:
    """Words, names and numbers of title + lead (lower case, stop words dropped).

    Names and numbers are what tell two same-type events apart ("6.1" vs "5.6", "Lohan" vs
    "Reid"); weighting by how few active stories use a term (see ``StoryAssigner``) makes them
    count more than the shared vocabulary of the event type.
    """
    source = f"{title or ''}\n{(text or '')[:TERM_CHARS]}"
    terms = set()
    for match in _TOKEN.finditer(source):
        token = match.group(0).lower().replace("’", "'").rstrip(".")
        if token.endswith("'s"):
            token = token[:-2]
        if token[0].isdigit():
            if len(token) >= 2:
                terms.add(token)
        elif len(token) >= 3 and token not in _STOPWORDS:
            terms.add(token)
    return frozenset(terms)


# ---- in-memory assignment -------------------------------------------------------------------

@dataclass(slots=True)
class StoryItem:
    article_id: str
    title: str
    source: str | None
    time: datetime
    vector: np.ndarray  # L2-normalised embedding of article_text_for_embedding()
    terms: frozenset[str] = frozenset()  # story_terms()


@dataclass(slots=True)
class Assignment:
    story_id: str
    duplicate_of: str | None
    new_story: bool
    similarity: float  # the score against the story joined (1.0 for a new story)


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
    member_terms: dict[str, frozenset[str]] = field(default_factory=dict)
    terms: Counter[str] = field(default_factory=Counter)  # term → members using it
    dirty: bool = False

    def add_member(self, article_id: str, vector: np.ndarray, terms: frozenset[str]) -> None:
        old = self.member_terms.get(article_id)
        if old is not None:
            self.terms.subtract(old)
            self.terms = +self.terms
        self.members[article_id] = vector
        self.member_terms[article_id] = terms
        self.terms.update(terms)
        self.recompute_centroid()

    def recompute_centroid(self) -> None:
        if not self.members:
            return
        total = np.sum(np.stack(list(self.members.values())), axis=0)
        self.centroid = (total / (float(np.linalg.norm(total)) or 1.0)).astype(np.float32)


def _ts(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class StoryAssigner:
    """Pure in-memory assignment over a window of active stories.

    Items must arrive in time order (as ``assign_stories`` sorts them): stories last seen more
    than ``window_days`` before the current item are retired from the candidate matrix (they
    are kept in ``stories`` so that callers can still write them).
    """

    def __init__(self, conf: StoriesSettings, stories: Iterable[ActiveStory] = ()) -> None:
        self.conf = conf
        self.window_s = conf.window_days * 86_400.0
        self.stories: dict[str, ActiveStory] = {}
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._first = np.zeros(0)
        self._last = np.zeros(0)
        self._df: Counter[str] = Counter()  # term → active stories using it
        for story in stories:
            self._activate(story)

    # -- bookkeeping --

    def _activate(self, story: ActiveStory) -> None:
        self.stories[story.story_id] = story
        n, dim = len(self._ids), story.centroid.shape[0]
        if self._matrix.shape[1] != dim:  # the first story fixes the dimension
            self._matrix = np.zeros((0, dim), dtype=np.float32)
        if n == self._matrix.shape[0]:  # grow by doubling: amortised O(1) appends
            grow = max(64, n)
            self._matrix = np.vstack([self._matrix, np.zeros((grow, dim), np.float32)])
            self._first = np.concatenate([self._first, np.zeros(grow)])
            self._last = np.concatenate([self._last, np.zeros(grow)])
        self._matrix[n] = story.centroid
        self._first[n], self._last[n] = _ts(story.first_seen), _ts(story.last_seen)
        self._rows[story.story_id] = n
        self._ids.append(story.story_id)
        self._df.update(story.terms.keys())

    def _row(self, story_id: str) -> int | None:
        return self._rows.get(story_id)

    def _retire_before(self, cutoff: float) -> None:
        n = len(self._ids)
        old = self._last[:n] < cutoff
        if not old.any():
            return
        for index in np.nonzero(old)[0]:
            self._df.subtract(self.stories[self._ids[index]].terms.keys())
        self._df = +self._df
        keep = np.nonzero(~old)[0]
        kept = len(keep)
        self._matrix[:kept] = self._matrix[keep]
        self._first[:kept], self._last[:kept] = self._first[keep], self._last[keep]
        self._ids = [self._ids[i] for i in keep]
        self._rows = {story_id: row for row, story_id in enumerate(self._ids)}

    @property
    def active_count(self) -> int:
        return len(self._ids)

    # -- scoring --

    def _idf(self, term: str, n: int) -> float:
        return math.log((n + 1) / (self._df.get(term, 0) + 1)) + 1.0

    def lexical_similarity(self, terms: frozenset[str], story: ActiveStory) -> float:
        """Cosine of idf-weighted term vectors (story terms weighted by member count)."""
        if not terms or not story.terms:
            return 0.0
        n = len(self._ids)
        idf = {t: self._idf(t, n) for t in terms}
        norm_a = math.sqrt(sum(w * w for w in idf.values()))
        dot = sum(w * w * story.terms[t] for t, w in idf.items() if t in story.terms)
        if not dot:
            return 0.0
        norm_s = math.sqrt(sum((self._idf(t, n) * c) ** 2 for t, c in story.terms.items()))
        return dot / (norm_a * norm_s)

    def score(self, item: StoryItem, story: ActiveStory, cosine: float | None = None) -> float:
        """The join score: a mix of embedding cosine and lexical cosine."""
        if cosine is None:
            cosine = float(story.centroid @ item.vector)
        weight = self.conf.lexical_weight
        lexical = self.lexical_similarity(item.terms, story) if weight else 0.0
        return (1.0 - weight) * cosine + weight * lexical

    # -- the decision --

    def assign(self, item: StoryItem) -> Assignment:
        when = _ts(item.time)
        self._retire_before(when - self.window_s)
        best, best_score = None, -math.inf
        n = len(self._ids)
        if n:
            cosines = self._matrix[:n] @ item.vector
            cosines[self._first[:n] > when + self.window_s] = -np.inf  # not yet active
            k = min(TOP_K, n)
            top = np.argpartition(-cosines, k - 1)[:k] if k < n else np.arange(n)
            for index in sorted(top.tolist(), key=lambda i: (-cosines[i], self._ids[i])):
                if not np.isfinite(cosines[index]):
                    continue
                story = self.stories[self._ids[index]]
                value = self.score(item, story, float(cosines[index]))
                if value > best_score:
                    best, best_score = story, value
        if best is None or best_score < self.conf.threshold:
            story = ActiveStory(story_id="s-" + item.article_id[:20], title=item.title,
                                first_seen=item.time, last_seen=item.time, count=0,
                                sources=[], centroid=item.vector.copy())
            self._add(story, item)
            self._activate(story)
            return Assignment(story.story_id, None, True, 1.0)
        duplicate_of = None
        if best.members:
            ids = sorted(best.members)
            member_sims = np.stack([best.members[i] for i in ids]) @ item.vector
            top_member = int(np.argmax(member_sims))
            if float(member_sims[top_member]) >= self.conf.duplicate_threshold:
                duplicate_of = ids[top_member]
        new_terms = [t for t in item.terms if t not in best.terms]
        self._add(best, item)
        self._df.update(new_terms)
        row = self._row(best.story_id)
        if row is not None:
            self._matrix[row] = best.centroid
            self._first[row], self._last[row] = _ts(best.first_seen), _ts(best.last_seen)
        return Assignment(best.story_id, duplicate_of, False, float(best_score))

    def update_member(self, story_id: str, item: StoryItem) -> bool:
        """A new version of an article already in a story: it stays, the centroid follows."""
        story = self.stories.get(story_id)
        if story is None:
            return False
        before = set(story.terms)
        story.add_member(item.article_id, item.vector, item.terms)
        story.dirty = True
        row = self._row(story_id)
        if row is not None:
            self._matrix[row] = story.centroid
            self._df.update(set(story.terms) - before)
            self._df.subtract(before - set(story.terms))
            self._df = +self._df
        return True

    @staticmethod
    def _add(story: ActiveStory, item: StoryItem) -> None:
        story.add_member(item.article_id, item.vector, item.terms)
        story.count += 1
        if item.source and item.source not in story.sources:
            story.sources.append(item.source)
        if item.time < story.first_seen or not story.title:
            if item.time < story.first_seen:
                story.first_seen = item.time
            story.title = item.title or story.title
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
        texts = [article_text_for_embedding(r.title or derive_title(r.text), r.text)
                 for r in chunk]
        vectors = encode(texts, conf.model, conf.device, conf.batch_size)
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


def _load_active(store: Store, since: datetime, until: datetime,
                 story_ids: Iterable[str] = ()) -> list[ActiveStory]:
    """Stories active in [since, until] (plus ``story_ids``), with members' vectors and terms.

    Centroids are rebuilt from the members' stored embeddings (so an edited member moves
    them); the stored centroid is the fallback for a story whose members are gone.
    """
    s, a, v = schema.stories, schema.articles, schema.article_versions
    wanted = sorted(set(story_ids))
    condition = and_(s.c.last_seen_at >= since, s.c.first_seen_at <= until)
    if wanted:
        condition = or_(condition, s.c.story_id.in_(wanted))
    with store.engine.connect() as conn:
        rows = conn.execute(select(s).where(condition).order_by(s.c.story_id)).mappings().all()
        stories = {r["story_id"]: ActiveStory(
            story_id=r["story_id"], title=r["title"] or "", first_seen=r["first_seen_at"],
            last_seen=r["last_seen_at"], count=r["article_count"],
            sources=list(r["sources"] or []), centroid=_normalised(r["centroid"]))
            for r in rows if r["centroid"]}
        if stories:
            ids = list(stories)
            for start in range(0, len(ids), 500):
                members = conn.execute(
                    select(a.c.article_id, a.c.story_id, a.c.title,
                           func.substr(a.c.text, 1, TERM_CHARS).label("lead"), v.c.embedding)
                    .join(v, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
                    .where(a.c.story_id.in_(ids[start:start + 500]))
                    .where(v.c.embedding.is_not(None))
                    .order_by(a.c.article_id))
                for m in members:
                    story = stories[m.story_id]
                    title = m.title or derive_title(m.lead)
                    story.members[m.article_id] = _normalised(m.embedding)
                    terms = story_terms(title, m.lead)
                    story.member_terms[m.article_id] = terms
                    story.terms.update(terms)
            for story in stories.values():
                story.recompute_centroid()
    return list(stories.values())


def assign_stories(store: Store, settings: Settings, run_id: str | None = None, *,
                   progress: Progress | None = None) -> dict[str, int]:
    """Embed new versions, then give every unassigned article a story (publication order).

    An article seen before with a new version keeps its story (``kept-story``); its new
    embedding moves the story's centroid. Already assigned versions are never touched, so a
    rerun changes nothing.
    """
    counts: dict[str, int] = {"embedded": embed_pending(store, settings, None, progress)}
    a, v = schema.articles, schema.article_versions
    when = func.coalesce(a.c.published_at, a.c.first_seen_at)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a.c.article_id, a.c.title, a.c.text, a.c.source, a.c.published_at,
                   a.c.first_seen_at, a.c.story_id, a.c.version, v.c.embedding)
            .join(v, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
            .where(a.c.version > 0).where(v.c.embedding.is_not(None))
            .where(or_(a.c.story_assigned_version.is_(None),
                       a.c.story_assigned_version != a.c.version))
            .order_by(when, a.c.article_id)).mappings().all()
    if not rows:
        return _finish(store, run_id, counts)
    times = [r["published_at"] or r["first_seen_at"] for r in rows]
    window = timedelta(days=settings.stories.window_days)
    kept_ids = [r["story_id"] for r in rows if r["story_id"]]
    assigner = StoryAssigner(settings.stories, _load_active(
        store, min(times) - window, max(times) + window, kept_ids))
    decisions: list[tuple[dict[str, Any], Assignment | None]] = []
    for row, time in zip(rows, times, strict=True):
        title = row["title"] or derive_title(row["text"])
        item = StoryItem(row["article_id"], title, row["source"], time,
                         _normalised(row["embedding"]), story_terms(title, row["text"]))
        if row["story_id"]:  # an edited version keeps its story
            assigner.update_member(row["story_id"], item)
            decisions.append((row, None))
            counts["kept-story"] = counts.get("kept-story", 0) + 1
            continue
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
                    text = str(record.get("text") or "")
                    title = str(record.get("title") or "") or derive_title(text)
                    text = text or title  # a headline-only item
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
