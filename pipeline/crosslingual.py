"""Cross-lingual stories: a Chinese article joins the English story of its event.

The story stage (``pipeline.stories``) groups English articles with all-MiniLM-L6-v2, which
is English-only. With ``multilingual.enabled`` every article not in English gets a
multilingual embedding (USE v3, ``pipeline.multilingual``), and so do the English articles of
the stories it may meet (those active within the window of a non-English article, embedded
when one arrives; never twice), and the stage runs in three steps:

1. ``assign_other_languages`` — before the English pass: each article that is not in English
   (``articles.language``; unknown counts as English) is compared, in time order, with every
   story active within ``stories.window_days``, in any language, and joins the one it fits
   best, else starts a story. These articles get no MiniLM embedding, so the English pass
   never sees them (nor the stories they alone hold).
2. the English pass, unchanged: MiniLM + words + names, as measured on ECB+ and UCI.
3. ``link_new_english_stories`` — after it: each story that holds no English article yet (a
   Chinese-first story) goes into the English story of this run it fits best. A stored story
   is never renamed (its alerts are keyed on it): the English articles move into it instead.

"Fits": the mean, over the story's latest members, of the multilingual cosine less the
threshold of the pair's languages (``multilingual.threshold`` across languages,
``same_language_threshold`` within one) is >= 0, and the story leads the next best by
``runner_up_margin`` (in a busy window some unrelated story always comes close), and, between
two Latin-script languages (Polish and English), the article shares a name (a capitalised
word) with the story (``shares_names``: the cosine alone joins two events of one topic).
English-only input never reaches steps 1 and 3, so English grouping is exactly as before, and
the multilingual model is never loaded for it (it was half of the embedding time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.embeddings import pack_vector, release_encoders, unpack_vector
from pipeline.multilingual import MODEL_NAME, encode_multilingual, release_model
from pipeline.records import Store
from pipeline.records import stories as story_records
from pipeline.sanitize import plausible_date
from pipeline.settings import Settings
from pipeline.story_text import NAME_CHARS, story_names

Progress = Callable[[int, int | None], None]
# A story is scored against its latest members (average linkage over a bounded sample).
MEMBER_SAMPLE = 16
# Same-language near-copies (a wire story republished) point at the first copy.
DUPLICATE_COSINE = 0.95
_LETTER = re.compile(r"[^\W\d_]")
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")


def uses_english_model(language: str | None) -> bool:
    """English, or not known: grouped by ``embedding.model`` (MiniLM)."""
    return language is None or language == "en" or language.startswith("en-")


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _ts(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _unit(blob: bytes) -> np.ndarray:
    vector = unpack_vector(blob)
    return (vector / (float(np.linalg.norm(vector)) or 1.0)).astype(np.float32)


# ---- in memory ------------------------------------------------------------------------------

@dataclass(slots=True)
class Member:
    article_id: str
    time: float  # epoch seconds (published, else first seen)
    vector: np.ndarray  # L2-normalised multilingual embedding
    language: str | None = None
    # names and numbers of a text in the Latin alphabet (``latin_names``); None: another
    # script, or not known
    names: frozenset[str] | None = None

    @property
    def english(self) -> bool:
        return uses_english_model(self.language)


@dataclass
class Candidate:
    """A story as the multilingual steps see it: its members' multilingual vectors."""

    story_id: str
    members: list[Member] = field(default_factory=list)
    first: float = math.inf
    last: float = -math.inf

    def add(self, member: Member) -> None:
        self.members.append(member)
        self.first, self.last = min(self.first, member.time), max(self.last, member.time)

    def sample(self) -> list[Member]:
        """The latest ``MEMBER_SAMPLE`` members, oldest first."""
        return sorted(self.members, key=lambda m: (m.time, m.article_id))[-MEMBER_SAMPLE:]

    @property
    def has_english(self) -> bool:
        return any(m.english for m in self.members)

    def active_near(self, start: float, end: float, window_s: float) -> bool:
        """Its time span comes within the window of [start, end]."""
        return bool(self.members) and self.last >= start - window_s and \
            self.first <= end + window_s


def latin_names(title: str | None, text: str | None) -> frozenset[str] | None:
    """The capitalised words of ``story_names`` (bare numbers left out) of a text written
    mostly in the Latin alphabet; None for another script (Chinese, Cyrillic…), whose names
    are not spelt as in English, so sharing none is no evidence against an event.

    Numbers are left out because on the stream the Polish–English pairs that shared only a
    number ("40", "700", "2023") were all two events: amounts are written differently
    ("6,5" / "6.5") and small numbers and years are everywhere."""
    sample = f"{title or ''} {(text or '')[:NAME_CHARS]}"
    letters = len(_LETTER.findall(sample))
    if not letters or 2 * len(_LATIN_LETTER.findall(sample)) < letters:
        return None
    return frozenset(name for name in story_names(title, text) if not name[:1].isdigit())


def shares_names(names: frozenset[str] | None, language: str, members: Iterable[Member]
                 ) -> bool:
    """Whether a join across languages has evidence beyond the multilingual cosine.

    Between two Latin-script languages (the stream's Polish business feed and English), names
    are written alike, so reports of one event share some ("Berlusconi", "Kaczynski"), while
    two events of one topic (one central bank's rate decision and another's) sit
    at cosines as high as translations do. So a story whose members are all in other
    languages fits only when one of its Latin-script members shares a name with the
    article. True when the rule does not apply: the story already holds the article's
    language, or either side is in another script (Chinese with English: the cross-lingual
    gate's case)."""
    members = list(members)
    if names is None or any(primary_language(m.language) == language for m in members):
        return True
    latin = [m.names for m in members if m.names is not None]
    return not latin or any(names & other for other in latin)


def primary_language(code: str | None) -> str:
    """``zh-Hant`` and ``zh-Hans`` are both Chinese; unknown counts as English."""
    return "en" if uses_english_model(code) else str(code).split("-")[0]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The multilingual cosine a pair needs: pairs in one language sit closer in the model's
    space than translations do (unrelated Chinese reports of one topic reach 0.5, a Chinese
    report and the English one of its event often only 0.35), so they need more."""

    cross: float
    same: float
    runner_up: float = 0.0  # how far the best story must be ahead of the next best


def margin(vectors: np.ndarray, languages: list[str], candidate: Candidate,
           thresholds: Thresholds) -> float:
    """Average linkage against the story's latest members, each pair's cosine less the
    threshold of its language pair: >= 0 is close enough."""
    sample = candidate.sample()
    cosines = np.atleast_2d(vectors) @ np.stack([m.vector for m in sample]).T
    needed = np.array([[thresholds.same if lang == primary_language(m.language)
                        else thresholds.cross for m in sample] for lang in languages])
    return float(np.mean(cosines - needed))


def best_story(member: Member, candidates: Iterable[Candidate], thresholds: Thresholds,
               window_s: float) -> tuple[Candidate | None, float]:
    """The active story that ``member`` fits best, when it is close enough (margin >= 0),
    ahead of the next best by ``thresholds.runner_up`` and, across Latin-script languages,
    shares a name with it (``shares_names``)."""
    best, score, _named = _fitting_story(member, candidates, thresholds, window_s)
    return best, score


def _fitting_story(member: Member, candidates: Iterable[Candidate], thresholds: Thresholds,
                   window_s: float) -> tuple[Candidate | None, float, bool]:
    """``best_story``, and whether the story was refused for want of a shared name."""
    language = [primary_language(member.language)]
    scored = [(margin(member.vector, language, candidate, thresholds), candidate)
              for candidate in candidates
              if candidate.active_near(member.time, member.time, window_s)]
    best, score = _clear_best(scored, thresholds)
    if best is not None and not shares_names(member.names, language[0], best.sample()):
        return None, score, False  # close in the model's space, but no shared name
    return best, score, True


def _clear_best(scored: list[tuple[float, Candidate]], thresholds: Thresholds
                ) -> tuple[Candidate | None, float]:
    """The best-scoring story when it is close enough and stands out from the rest: in a
    crowded window some unrelated story always comes close (docs/decisions.md)."""
    if not scored:
        return None, -math.inf
    scored.sort(key=lambda item: (-item[0], item[1].story_id))
    best_score, best = scored[0]
    runner_up = scored[1][0] if len(scored) > 1 else -math.inf
    if best_score < 0 or best_score - runner_up < thresholds.runner_up:
        return None, best_score
    return best, best_score


def match_stories(english: list[Candidate], others: list[Candidate], thresholds: Thresholds,
                  window_s: float, refused: list[str] | None = None
                  ) -> list[tuple[Candidate, Candidate, float]]:
    """(other-language story, English story, margin) for each story in ``others`` whose best
    English story is close enough (and shares a name, ``_stories_share_names``), best
    first: an English story may take several (its Traditional and Simplified coverage), a
    story in another language goes to one. ``refused`` collects the ids of the stories in
    ``others`` whose best story shared no name."""
    links = []
    for other in others:
        if not other.members:
            continue
        vectors = np.stack([m.vector for m in other.members])
        languages = [primary_language(m.language) for m in other.members]
        best, best_score = _clear_best(
            [(margin(vectors, languages, story, thresholds), story) for story in english
             if story.story_id != other.story_id
             and story.active_near(other.first, other.last, window_s)], thresholds)
        if best is None:
            continue
        if _stories_share_names(other, best):
            links.append((other, best, best_score))
        elif refused is not None:
            refused.append(other.story_id)
    return sorted(links, key=lambda link: (-link[2], link[0].story_id))


def _stories_share_names(other: Candidate, english: Candidate) -> bool:
    """``shares_names`` for a whole story in another language against an English one: one
    of its members shares a name with the English story's latest members."""
    sample = english.sample()
    return any(shares_names(m.names, primary_language(m.language), sample)
               for m in other.members)


# ---- embedding ------------------------------------------------------------------------------

def embed_pending(store: Store, settings: Settings, progress: Progress | None = None,
                  batch: int = 256, *, other_languages_only: bool = False,
                  in_stories_active: tuple[datetime, datetime] | None = None) -> int:
    """A multilingual embedding for the current article versions without one (never twice):
    the articles not in English (``other_languages_only``) or the members of the stories
    active in a stretch of time (``in_stories_active``). The text is what the English model
    reads: title and lead."""
    from pipeline.story_text import article_text_for_embedding, derive_title

    rows = story_records.versions_without_multilingual(
        store, other_languages_only=other_languages_only, in_stories_active=in_stories_active)
    if progress and rows:
        progress(0, len(rows))
    if rows:  # never both models at once: MiniLM reloads from its compiled cache in ~1 s
        release_encoders()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        vectors = encode_multilingual(
            [article_text_for_embedding(r.title or derive_title(r.text), r.text) for r in chunk],
            settings.multilingual.batch_size)
        story_records.save_multilingual(
            store, [(row.article_id, row.version, pack_vector(vector))
                    for row, vector in zip(chunk, vectors, strict=True)], MODEL_NAME)
        if progress:
            progress(len(chunk), None)
    return len(rows)


# ---- loading --------------------------------------------------------------------------------

def _load_candidates(store: Store, since: datetime, until: datetime) -> dict[str, Candidate]:
    """Stories active in [since, until] with their members' multilingual vectors."""
    ids, rows = story_records.multilingual_members(store, since, until)
    candidates = {story_id: Candidate(story_id) for story_id in ids}
    for row in rows:
        candidates[row.story_id].add(Member(row.article_id, _ts(row.at), _unit(row.embedding),
                                            row.language, latin_names(row.title, row.text)))
    return {k: c for k, c in candidates.items() if c.members}


# ---- step 1: articles not in English ---------------------------------------------------------

def assign_other_languages(store: Store, settings: Settings
                           ) -> tuple[dict[str, int], set[str]]:
    """Give every unassigned non-English article a story (time order); see the module doc.
    Returns the outcome counts and the ids of the stories it started."""
    found = story_records.other_language_articles_to_place(store)
    counts: dict[str, int] = {}
    if not found:
        return counts, set()
    # A stored date no news item can have (year 1, 9999) falls back to first seen, as in the
    # English pass (it would overflow the window maths).
    rows = sorted((SimpleNamespace(**r, at=_utc(plausible_date(r["published_at"])
                                                 or r["first_seen_at"])) for r in found),
                  key=lambda r: (r.at, r.article_id))
    window = timedelta(days=settings.stories.window_days)
    times = [r.at for r in rows]
    since, until = min(times) - window, max(times) + window
    # English articles get their multilingual vector only when an article in another
    # language may meet them: now, for the stories of this stretch (never twice).
    if backfilled := embed_pending(store, settings, in_stories_active=(since, until)):
        counts["embedded-multilingual"] = backfilled
    candidates = _load_candidates(store, since, until)
    window_s = window.total_seconds()
    thresholds = thresholds_of(settings)
    decisions: list[tuple[Any, str | None, str | None]] = []  # (row, story, duplicate_of)
    started: dict[str, Any] = {}  # new story id -> its first row
    joined: dict[str, list[Any]] = {}  # story id -> rows that joined it in this run
    for row in rows:
        member = Member(row.article_id, _ts(row.at), _unit(row.embedding), row.language,
                        latin_names(row.title, row.text))
        if row.story_id:  # an edited version keeps its story
            decisions.append((row, None, None))
            counts["kept-story"] = counts.get("kept-story", 0) + 1
            continue
        story, _score, named = _fitting_story(member, candidates.values(), thresholds,
                                              window_s)
        if not named:
            counts["cross-language-no-shared-name"] = counts.get(
                "cross-language-no-shared-name", 0) + 1
        duplicate_of = None
        if story is None:
            story = Candidate("s-" + row.article_id[:20])
            candidates[story.story_id] = story
            started[story.story_id] = row
            counts["new-story"] = counts.get("new-story", 0) + 1
        else:
            same = [m for m in story.members if m.language == member.language]
            if same:
                sims = np.stack([m.vector for m in same]) @ member.vector
                top = int(np.argmax(sims))
                if float(sims[top]) >= DUPLICATE_COSINE:
                    duplicate_of = same[top].article_id
            joined.setdefault(story.story_id, []).append(row)
            key = "cross-language-join" if story.has_english else (
                "duplicate" if duplicate_of else "joined-story")
            counts[key] = counts.get(key, 0) + 1
        story.add(member)
        decisions.append((row, story.story_id, duplicate_of))
    story_records.save_other_language_assignments(store, decisions, started, joined)
    return counts, set(started)


# ---- step 3: the English pass's new stories --------------------------------------------------

def link_new_english_stories(store: Store, settings: Settings, article_ids: list[str],
                             started: set[str] = frozenset()) -> dict[str, int]:
    """Merge each story the English pass just started (all of whose members are among
    ``article_ids``) into the best story in another language with no English article yet.
    ``started``: the stories step 1 started in this run (they may be renamed; older ones
    never are)."""
    if not article_ids:
        return {}
    fresh = set(article_ids)
    placed, spans = story_records.placements(store, article_ids)
    story_ids = sorted(set(placed.values()))
    if not spans:
        return {}
    window = timedelta(days=settings.stories.window_days)
    since = min(r.first_seen_at for r in spans) - window
    until = max(r.last_seen_at for r in spans) + window
    if not story_records.other_language_member_between(store, since, until):
        return {}  # an English-only stretch: nothing to link, no multilingual model loaded
    embedded = embed_pending(store, settings, in_stories_active=(since, until))
    candidates = _load_candidates(store, since, until)
    new = [c for sid in story_ids if (c := candidates.get(sid)) is not None
           and all(m.article_id in fresh for m in c.members)]
    others = [c for c in candidates.values() if not c.has_english]
    merged: dict[str, str] = {}  # English story -> the stored story it went into
    count = 0
    refused: list[str] = []
    for other, english, _score in match_stories(new, others, thresholds_of(settings),
                                                window.total_seconds(), refused):
        if other.story_id in started:  # new in this run too: the English story keeps its id
            story_records.merge_stories(store, other.story_id,
                                        merged.get(english.story_id, english.story_id))
        elif english.story_id not in merged:  # a stored story is never renamed
            story_records.merge_stories(store, english.story_id, other.story_id)
            merged[english.story_id] = other.story_id
        else:
            continue  # already in another stored story: this one stays apart
        count += 1
    counts = {"embedded-multilingual": embedded} if embedded else {}
    if embedded:
        release_model()
    if refused:
        counts["cross-language-no-shared-name"] = len(refused)
    return counts | ({"cross-language-merge": count} if count else {})


# ---- the hooks the story stage calls ----------------------------------------------------------

class CrossLingualPass:
    """Steps 1 and 3 around the English pass of one story-stage run."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.started: set[str] = set()
        self.english_pending: list[str] = []

    def before_english(self, progress: Progress | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        embedded = embed_pending(self.store, self.settings, progress, other_languages_only=True)
        step, self.started = assign_other_languages(self.store, self.settings)
        embedded += step.pop("embedded-multilingual", 0)
        if embedded:
            counts["embedded-multilingual"] = embedded
            release_model()  # the English pass loads MiniLM next (peak memory)
        counts.update(step)
        self.english_pending = story_records.unassigned_english_articles(self.store)
        return counts

    def after_english(self) -> dict[str, int]:
        return link_new_english_stories(self.store, self.settings, self.english_pending,
                                        self.started)


def thresholds_of(settings: Settings) -> Thresholds:
    conf = settings.multilingual
    return Thresholds(cross=conf.threshold, same=conf.same_language_threshold,
                      runner_up=conf.runner_up_margin)


def english_pass_only(settings: Settings) -> bool:
    """Whether the English pass embeds with MiniLM only English and unknown-language
    articles (with multilingual stories) rather than everything."""
    return settings.multilingual.enabled
