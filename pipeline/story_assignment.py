"""Story assignment in memory: which story each article of a run joins, or whether it
starts one.

Online, incremental assignment in publication order (as Europe Media Monitor and Event
Registry do): each article is compared with the stories active within
``stories.window_days`` of its own time. The score mixes the cosine between the articles'
MiniLM embeddings (title + lead) with lexical cosines over their words, names and numbers,
weighted by how few articles in play use them (so "Tara Reid" separates two celebrity-rehab
stories MiniLM sees as one), and depends on how much text both sides carry (a headline is
compared with the story's centroid). Close enough → the article joins that story (and is a
``duplicate_of`` a member when nearly identical, e.g. a wire copy); otherwise it starts one.
No SQL here: the ``stories`` stage loads the window and writes the decisions.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from threadpoolctl import ThreadpoolController

from pipeline.cjk import has_cjk
from pipeline.settings import StoriesSettings
from pipeline.story_text import shingle_overlap

# Only the best few stories by centroid cosine are scored in full (keeps a 1M-story window
# cheap), each against its latest few members (average linkage over a bounded sample).
TOP_K = 8
BLOCK = 64  # articles whose centroid cosines are taken in one matrix product
MEMBER_SAMPLE = 32
# The cohesion check splits a story only into halves of at least this many of the run's articles
# (a pair or a single odd article is the online pass's call, not a second story).
MIN_SPLIT = 3
# Consolidation looks at a run's stories of at least this many articles (a single article's
# story was already compared with every candidate, article by article, by the online pass).
MIN_MERGE = 2
# A headline alone: fewer terms than this (a headline has 5-10, a headline + one-sentence
# summary 10-20). Only headline against headline stories takes publication time as evidence.
HEADLINE_TERMS = 10


# ---- cohesion: is one story really two? ------------------------------------------------------

def _mean_off_diagonal(scores: np.ndarray) -> float:
    n = scores.shape[0]
    return float((scores.sum() - np.trace(scores)) / (n * (n - 1))) if n > 1 else -math.inf


def bisect_scores(scores: np.ndarray, rounds: int = 20) -> np.ndarray:
    """Two groups (0/1 per row) of a symmetric pairwise score matrix by average linkage:
    seeded with the least similar pair, then each row moves to the group it scores higher
    with on average (itself left out) until nothing moves."""
    n = scores.shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.int8)
    masked = scores + np.diag(np.full(n, np.inf))
    first, second = np.unravel_index(int(np.argmin(masked)), masked.shape)
    labels = (scores[:, second] > scores[:, first]).astype(np.int8)
    labels[first], labels[second] = 0, 1
    diagonal = np.diag(scores)
    row_sums = scores.sum(axis=1) - diagonal
    for _ in range(rounds):
        in_one = labels.astype(bool)
        sums_one = scores @ in_one - diagonal * in_one
        count_one = in_one.sum() - in_one
        count_zero = (n - 1) - count_one
        mean_one = np.where(count_one > 0, sums_one / np.maximum(count_one, 1), -np.inf)
        mean_zero = np.where(count_zero > 0, (row_sums - sums_one) / np.maximum(count_zero, 1),
                             -np.inf)
        moved = (mean_one > mean_zero).astype(np.int8)
        if np.array_equal(moved, labels):
            break
        labels = moved
    return labels


def split_is_clear(scores: np.ndarray, labels: np.ndarray, ratio: float) -> bool:
    """Two stories, not one: the mean score between the groups is below ``ratio`` times the
    looser group's own mean score (and each group has at least two rows)."""
    zero, one = labels == 0, labels == 1
    if zero.sum() < 2 or one.sum() < 2:
        return False
    between = float(scores[np.ix_(zero, one)].mean())
    within = min(_mean_off_diagonal(scores[np.ix_(zero, zero)]),
                 _mean_off_diagonal(scores[np.ix_(one, one)]))
    return between < ratio * within


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS thread pools (looked up once: the lookup walks the loaded
    libraries)."""
    return ThreadpoolController()


# ---- in-memory assignment -------------------------------------------------------------------

def text_size(terms: frozenset[str]) -> int:
    """How long a text is, in words, from its terms: a run of Chinese or Japanese characters
    (no spaces between words) is one token, so it counts one word per two characters."""
    return sum(max(1, len(t) // 2) if has_cjk(t[:1]) else 1 for t in terms)


def _norm(weights: dict[str, float]) -> float:
    return math.sqrt(sum(v * v for v in weights.values()))


@dataclass(slots=True)
class StoryItem:
    article_id: str
    title: str
    source: str | None
    time: datetime
    vector: np.ndarray  # L2-normalised embedding of article_text_for_embedding()
    terms: frozenset[str] = frozenset()  # story_terms()
    names: frozenset[str] = frozenset()  # story_names()
    shingles: frozenset[int] = frozenset()  # text_shingles() of the body
    dated: bool = False  # ``time`` is a publication time (not the fetch time standing in)


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
    member_names: dict[str, frozenset[str]] = field(default_factory=dict)
    member_shingles: dict[str, frozenset[int]] = field(default_factory=dict)
    member_titles: dict[str, str] = field(default_factory=dict)
    representative: str | None = None  # the member the story is named after
    dirty: bool = False
    merged_into: str | None = None  # consolidation folded it into this story

    def absorb(self, other: ActiveStory) -> None:
        """Take over every member and the record of a story folded into this one."""
        for aid, vector in other.members.items():
            self.members[aid] = vector
            self.member_terms[aid] = other.member_terms.get(aid, frozenset())
            self.member_names[aid] = other.member_names.get(aid, frozenset())
            self.member_shingles[aid] = other.member_shingles.get(aid, frozenset())
            if aid in other.member_titles:
                self.member_titles[aid] = other.member_titles[aid]
        self.count += other.count
        self.sources += [src for src in other.sources if src not in self.sources]
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        self.dirty = True
        for part in (other.members, other.member_terms, other.member_names,
                     other.member_shingles, other.member_titles):
            part.clear()
        other.count, other.merged_into, other.dirty = 0, self.story_id, True

    def add_member(self, item: StoryItem) -> None:
        """Add (or replace) a member; call ``recompute_centroid`` once the batch is in."""
        self.members[item.article_id] = item.vector
        self.member_terms[item.article_id] = item.terms
        self.member_names[item.article_id] = item.names
        self.member_shingles[item.article_id] = item.shingles
        self.member_titles[item.article_id] = item.title

    def recompute_centroid(self) -> None:
        if not self.members:
            return
        total = np.sum(np.stack(list(self.members.values())), axis=0)
        self.centroid = (total / (float(np.linalg.norm(total)) or 1.0)).astype(np.float32)

    def rename_after_representative(self) -> None:
        """Title the story after its most representative member: the one closest to the
        centroid (the others' common ground), not the earliest, so one early intruder or an
        odd first headline does not name a whole story. The current name is kept while its
        member is as close as the best (two-member stories: both are), so titles do not flap.
        """
        titled = [aid for aid in self.members if self.member_titles.get(aid)]
        if not titled:
            return
        closeness = np.stack([self.members[aid] for aid in titled]) @ self.centroid
        best = int(np.argmax(closeness))
        current = self.representative
        if current is None:  # a stored story: the member whose title it carries
            current = next((aid for aid in titled if self.member_titles[aid] == self.title),
                           None)
        if current in titled and closeness[titled.index(current)] >= closeness[best] - 1e-6:
            best = titled.index(current)
        self.representative = titled[best]
        if self.title != self.member_titles[titled[best]]:
            self.title = self.member_titles[titled[best]]
            self.dirty = True


def _ts(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@dataclass(slots=True)
class _Member:
    article_id: str
    time: float
    vector: np.ndarray
    terms: frozenset[str]
    names: frozenset[str]
    dated: bool = False  # ``time`` is a publication time (StoryItem.dated)
    source: str | None = None  # the outlet (feed) it came from, when known
    shingles: frozenset[int] = frozenset()  # text_shingles() of the body
    size: int = field(init=False)  # text_size(terms): how long the text is, in words

    def __post_init__(self) -> None:
        self.size = text_size(self.terms)


@dataclass(slots=True)
class _Profile:
    """What scoring needs of a story's member sample: the sums of their vectors and of their
    idf-weighted words and names (a sum of dot products is the dot product with the sum, so
    one product replaces one per member)."""

    key: tuple[int, int]  # (cluster version, idf generation) it was built at
    size: int
    total: np.ndarray  # the vectors' sum (its direction is the sample's centroid)
    total_norm: float
    terms: dict[str, float]
    names: dict[str, float]
    median_size: float  # the members' median text_size(): headline or full text
    # Lengths of the summed weights (a headline's cosine to them), taken when first needed.
    norms: tuple[float, float] | None = None

    def weight_norms(self) -> tuple[float, float]:
        if self.norms is None:
            self.norms = (_norm(self.terms), _norm(self.names))
        return self.norms


@dataclass
class _Cluster:
    """A story while a batch is being assigned: its members, their vector sum and time span
    (kept up to date on each join and leave, so neither costs a pass over the members)."""

    members: dict[str, _Member]
    stored: ActiveStory | None = None
    fixed_first: float = math.inf  # the stored story's span (members outside the batch)
    fixed_last: float = -math.inf
    first: float = math.inf
    last: float = -math.inf
    total: np.ndarray | None = None
    version: int = 0  # bumped on every join and leave (invalidates ``profile``)
    profile: _Profile | None = None
    cohesion: tuple[tuple[int, int], float] | None = None  # (profile key, value)
    sole: tuple[int, str | None] | None = None  # (version, sole_source())

    def __post_init__(self) -> None:
        members, self.members = self.members, {}
        self.first, self.last = self.fixed_first, self.fixed_last
        for member in members.values():
            self.add(member)

    def add(self, member: _Member) -> None:
        self.members[member.article_id] = member
        self.version += 1
        self.total = member.vector.copy() if self.total is None else self.total + member.vector
        self.first, self.last = min(self.first, member.time), max(self.last, member.time)

    def remove(self, article_id: str) -> None:
        member = self.members.pop(article_id)
        self.version += 1
        if self.total is not None:
            self.total = self.total - member.vector
        if member.time <= self.first or member.time >= self.last:  # only an end can move
            times = [m.time for m in self.members.values()]
            self.first = min([self.fixed_first, *times])
            self.last = max([self.fixed_last, *times])

    def sole_source(self) -> str | None:
        """The one source every member comes from; None when there are several or one is
        not known."""
        if self.sole is None or self.sole[0] != self.version:
            sources = {m.source for m in self.members.values()}
            only = next(iter(sources)) if len(sources) == 1 else None
            self.sole = (self.version, only)
        return self.sole[1]

    def centroid(self) -> np.ndarray:
        total = self.total if self.total is not None else np.zeros(0, np.float32)
        return (total / (float(np.linalg.norm(total)) or 1.0)).astype(np.float32)

    def sample(self, exclude: str | None) -> list[_Member]:
        """The latest ``MEMBER_SAMPLE`` members (``exclude`` left out), oldest first."""
        latest = (m for aid, m in reversed(self.members.items()) if aid != exclude)
        return list(itertools.islice(latest, MEMBER_SAMPLE))[::-1]


class StoryAssigner:
    """Pure in-memory story assignment over the stories active around each article.

    ``assign_batch`` takes a run's new articles in time order and

    1. *online pass*: each article joins the best-scoring story active within
       ``window_days`` of its time (stored stories or ones started earlier in the batch), or
       starts one;
    2. *refinement*: ``refine_passes`` times, each article of the batch is scored again against
       the stories of the batch, itself left out, and moves when another story (or a story of
       its own) fits better — this undoes the early, order-dependent mistakes of step 1.
       Headline-length articles keep their online decision: their scores against two stories
       differ by less than their noise, and moving them cut large headline stories apart;
    3. *cohesion check*: a story whose run articles form two clearly separate groups is split
       in two (``split_ratio``; see ``_split_incoherent``); headline stories are not checked;
    4. *consolidation*: a headline story that gained articles in the run (started in it or
       stored) whose articles would join another story of its window nearly as readily as the
       two hold together is merged with it (``merge_ratio``; see ``_consolidate``): halves of
       one event the online pass started apart, even after both were stored (between
       headlines, closeness in time counts as it does in the join);
    5. new stories take their id from their earliest article (stable) and every touched
       story its title from its most representative member (``rename_after_representative``);
       ``duplicate_of`` points at the closest member when it is a near-copy on the embedding
       *and* on the text (``duplicate_text_overlap``).

    Stored members never move one by one: a rerun or a later run never changes an earlier
    decision about an article; only consolidation moves a stored story as a whole into an
    older one (``folds``; the absorbed id keeps resolving, records.stories.resolve_story_id).

    The score of a full text against a story is the mean, over the story's latest members, of
    ``(1 - term_weight - name_weight) * embedding cosine + term_weight * cosine of idf-weighted
    words + name_weight * cosine of idf-weighted names and numbers``; document frequencies
    come from every article in play (the window's stored members and the batch). Short texts
    (headlines) are scored against the centroid, mostly by the embedding (``_score``).
    """

    def __init__(self, conf: StoriesSettings, stories: Iterable[ActiveStory] = ()) -> None:
        self.conf = conf
        self.window_s = conf.window_days * 86_400.0
        self.stories: dict[str, ActiveStory] = {}
        self._df_terms: Counter[str] = Counter()
        self._df_names: Counter[str] = Counter()
        self._docs = 0
        self._generation = 0
        self._weights: dict[str, tuple[int, dict[str, float], dict[str, float]]] = {}
        self._clusters: dict[str, _Cluster] = {}
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._first = np.zeros(0)
        self._last = np.zeros(0)
        # Block cosines: the centroids' cosines to the next ``BLOCK`` articles of a pass, taken
        # in one matrix product (which reads the window's centroids once, not once per article);
        # rows placed since then are marked changed and recomputed per article.
        self._changed = np.zeros(0, dtype=bool)
        self._block: dict[str, int] = {}  # article id -> its column of _block_cosines
        self._block_rows = np.zeros(0, np.int64)
        self._block_at = np.zeros(0, np.int64)  # row -> its line of _block_cosines, or -1
        self._block_cosines = np.zeros((0, 0), np.float32)
        # Time index: bucket number -> rows whose span touches that stretch of time, so an
        # article's candidates are found without looking at stories outside its window.
        self._bucket_s = self.window_s / 2
        self._buckets: dict[int, list[int]] = {}
        self._bucket_rows: dict[int, np.ndarray] = {}  # bucket -> its rows as an array
        self._indexed: dict[int, tuple[int, int]] = {}  # row -> bucket range in the index
        self._new = 0
        self.scanned = 0  # centroids looked at to find candidates (over this assigner's life)
        self.splits = 0  # stories split in two by the cohesion check (over this assigner's life)
        self.merges = 0  # stories merged into another by consolidation (same)
        # articles whose best story stayed closed to them to the end of the online pass
        # (second_outlet; over this assigner's life)
        self.held_back = 0
        self._closed_best = -math.inf  # the best score of a story _best found closed
        # (absorbed, survivor) of the stored stories consolidation folded, in order (same)
        self.folds: list[tuple[str, str]] = []
        self._folds_done = 0  # how many of them _materialise has applied to the records
        for story in stories:
            self._adopt(story)

    # -- bookkeeping --

    def _adopt(self, story: ActiveStory) -> None:
        """Make a stored story a candidate; its members count for document frequencies."""
        self.stories[story.story_id] = story
        # The record keeps a story's sources, not each member's: a story of one source
        # gives it to every member, otherwise each is unknown (so the story is not one
        # source's: ``_Cluster.sole_source``).
        source = story.sources[0] if len(story.sources) == 1 else None
        members = {aid: _Member(aid, _ts(story.last_seen), vector,
                                story.member_terms.get(aid, frozenset()),
                                story.member_names.get(aid, frozenset()), source=source,
                                shingles=story.member_shingles.get(aid, frozenset()))
                   for aid, vector in story.members.items()}
        for member in members.values():
            self._count(member.terms, member.names)
        self._clusters[story.story_id] = _Cluster(members, story,
                                                  fixed_first=_ts(story.first_seen),
                                                  fixed_last=_ts(story.last_seen))
        self._place(story.story_id, story.centroid)

    def _count(self, terms: frozenset[str], names: frozenset[str], sign: int = 1) -> None:
        self._df_terms.update({t: sign for t in terms})
        self._df_names.update({t: sign for t in names})
        self._docs += sign
        self._generation += 1

    def _place(self, label: str, centroid: np.ndarray) -> None:
        """Write a cluster's centroid and time span into the candidate matrix."""
        cluster = self._clusters[label]
        row = self._rows.get(label)
        if row is None:
            row = len(self._ids)
            dim = centroid.shape[0]
            if self._matrix.shape[1] != dim:  # the first story fixes the dimension
                self._matrix = np.zeros((0, dim), dtype=np.float32)
            if row == self._matrix.shape[0]:  # grow by doubling: amortised O(1) appends
                grow = max(64, row)
                self._matrix = np.vstack([self._matrix, np.zeros((grow, dim), np.float32)])
                self._first = np.concatenate([self._first, np.full(grow, math.inf)])
                self._last = np.concatenate([self._last, np.full(grow, -math.inf)])
                self._changed = np.concatenate([self._changed, np.zeros(grow, dtype=bool)])
                self._block_at = np.concatenate([self._block_at, np.full(grow, -1, np.int64)])
            self._rows[label] = row
            self._ids.append(label)
        self._matrix[row] = centroid
        self._changed[row] = True
        if cluster.members:
            self._first[row], self._last[row] = cluster.first, cluster.last
            self._index(row, cluster.first, cluster.last)
        else:  # emptied by refinement: never a candidate again
            self._first[row], self._last[row] = math.inf, -math.inf

    def _bucket(self, when: float) -> int:
        return math.floor(when / self._bucket_s)

    def _index(self, row: int, first: float, last: float) -> None:
        """Add ``row`` to the time buckets its span [first, last] touches. Spans only grow
        while a story gains members; a span that shrank leaves stale entries, which the exact
        window test in ``_candidates`` drops."""
        low, high = self._bucket(first), self._bucket(last)
        known = self._indexed.get(row)
        if known is not None and known[0] <= low and high <= known[1]:
            return
        for bucket in range(low, high + 1):
            if known is None or not known[0] <= bucket <= known[1]:
                self._buckets.setdefault(bucket, []).append(row)
                self._bucket_rows.pop(bucket, None)
        self._indexed[row] = (low, high) if known is None else (min(low, known[0]),
                                                                max(high, known[1]))

    def _rows_near(self, when: float, until: float | None = None) -> np.ndarray:
        """Rows of the stories whose span may overlap [when - window, until + window]
        (``until`` defaults to ``when``; sorted, each once)."""
        until = when if until is None else until
        low, high = self._bucket(when - self.window_s), self._bucket(until + self.window_s)
        parts = []
        for bucket in range(low, high + 1):
            rows = self._bucket_rows.get(bucket)
            if rows is None:
                rows = np.array(self._buckets.get(bucket, ()), dtype=np.int64)
                self._bucket_rows[bucket] = rows
            parts.append(rows)
        if not parts:
            return np.zeros(0, np.int64)
        rows = np.sort(np.concatenate(parts))  # a row spanning two buckets is in both
        return rows[np.concatenate(([True], rows[1:] != rows[:-1]))] if rows.size else rows

    # -- scoring --

    def _idf_weights(self, tokens: frozenset[str], df: Counter[str]) -> dict[str, float]:
        n = self._docs
        weights = {t: math.log((n + 1) / (df.get(t, 0) + 1)) + 1.0 for t in tokens}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {t: w / norm for t, w in weights.items()}

    def _weights_of(self, member: _Member) -> tuple[dict[str, float], dict[str, float]]:
        cached = self._weights.get(member.article_id)
        if cached is None or cached[0] != self._generation:
            cached = (self._generation, self._idf_weights(member.terms, self._df_terms),
                      self._idf_weights(member.names, self._df_names))
            self._weights[member.article_id] = cached
        return cached[1], cached[2]

    @staticmethod
    def _dot(a: dict[str, float], b: dict[str, float]) -> float:
        if len(a) > len(b):
            a, b = b, a
        return sum(w * b[t] for t, w in a.items() if t in b)

    def _lexical_share(self, terms_a: float, terms_b: float) -> float:
        """How much of their weight the word and name signals keep for two texts: all of it
        when the shorter side has ``short_text_terms`` terms or more (a lead), a fraction for
        a headline (5-10 terms), whose few words rarely meet another headline's."""
        floor = self.conf.short_text_terms
        return min(1.0, min(terms_a, terms_b) / floor) if floor else 1.0

    def _profile(self, cluster: _Cluster, exclude: str | None) -> _Profile | None:
        """The member sample's profile; cached on the cluster while neither its members nor
        the document frequencies change (not when the article scored is itself a member)."""
        own = exclude is not None and exclude in cluster.members
        key = (cluster.version, self._generation)
        if not own and cluster.profile is not None and cluster.profile.key == key:
            return cluster.profile
        others = cluster.sample(exclude)
        if not others:
            return None
        terms: dict[str, float] = {}
        names: dict[str, float] = {}
        if self.conf.term_weight or self.conf.name_weight:
            for other in others:
                other_terms, other_names = self._weights_of(other)
                for total, weights in ((terms, other_terms), (names, other_names)):
                    for token, weight in weights.items():
                        total[token] = total.get(token, 0.0) + weight
        total = np.stack([m.vector for m in others]).sum(axis=0)
        profile = _Profile(key, len(others), total, float(np.linalg.norm(total)) or 1.0,
                           terms, names, float(statistics.median(m.size for m in others)))
        if not own:
            cluster.profile = profile
        return profile

    def _score(self, member: _Member, cluster: _Cluster, exclude: str | None = None) -> float:
        """Length-aware: full texts are scored by average linkage over the story's latest
        members (the mean of pairwise mixed scores); a headline against the story's centroid
        (what its members share), with the word and name weight it cannot use moved to the
        embedding cosine, scaled by ``embedding_scale``; in between, a mix of both."""
        profile = self._profile(cluster, exclude)
        if profile is None:
            return -math.inf
        lexical = self._lexical_share(member.size, profile.median_size)
        dot = float(profile.total @ member.vector)
        cosine = dot / profile.size  # the mean of the members' cosines
        if lexical < 1.0:
            centroid = dot / profile.total_norm
            cosine = lexical * cosine + (1.0 - lexical) * centroid
        term_w, name_w = self.conf.term_weight, self.conf.name_weight
        score = (1.0 - term_w - name_w + (1.0 - lexical) * (term_w + name_w)
                 * self.conf.embedding_scale) * cosine
        if lexical and (term_w or name_w):
            terms, names = self._weights_of(member)
            # The mean of pairwise dot products is the dot product with the summed weights;
            # a headline also takes the cosine to that sum (what the members share).
            dot_terms = self._dot(terms, profile.terms)
            dot_names = self._dot(names, profile.names)
            pair_terms, pair_names = dot_terms / profile.size, dot_names / profile.size
            if lexical < 1.0:
                terms_norm, names_norm = profile.weight_norms()
                pair_terms = lexical * pair_terms + (1.0 - lexical) * (
                    dot_terms / terms_norm if terms_norm else 0.0)
                pair_names = lexical * pair_names + (1.0 - lexical) * (
                    dot_names / names_norm if names_norm else 0.0)
            score += lexical * (term_w * pair_terms + name_w * pair_names)
        return score

    def score(self, item: StoryItem, story: ActiveStory) -> float:
        """The join score of an article against a story (for inspection and tests)."""
        cluster = self._clusters.get(story.story_id)
        if cluster is None:
            return -math.inf
        return self._score(_Member(item.article_id, _ts(item.time), item.vector, item.terms,
                                   item.names), cluster, exclude=item.article_id)

    def _candidates(self, member: _Member, current: str | None = None) -> list[str]:
        """The best few stories active within the window of the article's time, by centroid
        cosine (plus its current story). The window is applied first, through the time index:
        the cost depends on the stories active around the article, not on how many the
        assigner holds."""
        rows = self._rows_near(member.time)
        self.scanned += rows.size
        active = (self._last[rows] >= member.time - self.window_s) & (
            self._first[rows] <= member.time + self.window_s)
        rows = rows[active]
        labels: list[str] = []
        if rows.size:
            cosines = self._cosines(member, rows)
            k = min(TOP_K, rows.size)
            top = np.argpartition(-cosines, k - 1)[:k] if k < rows.size else np.arange(rows.size)
            labels = [self._ids[rows[i]]
                      for i in sorted(top.tolist(), key=lambda i: (-cosines[i], rows[i]))]
        if current is not None and current not in labels:
            labels.append(current)
        return labels

    def _cosines(self, member: _Member, rows: np.ndarray) -> np.ndarray:
        """The centroid cosines of ``rows`` (sorted) to the article: from its block where the
        row is unchanged since the block was taken, else computed now."""
        column = self._block.get(member.article_id)
        if column is None or not self._block_rows.size:
            return self._matrix[rows] @ member.vector
        at = self._block_at[rows]
        known = (at >= 0) & ~self._changed[rows]
        cosines = np.empty(rows.size, np.float32)
        cosines[known] = self._block_cosines[at[known], column]
        fresh = ~known
        if fresh.any():
            cosines[fresh] = self._matrix[rows[fresh]] @ member.vector
        return cosines

    def _take_block(self, members: list[_Member]) -> None:
        """Cosines of a block of articles (consecutive in time) against every centroid their
        windows may reach, as one matrix product; ``_cosines`` reads them back."""
        self._block = {m.article_id: n for n, m in enumerate(members)}
        self._changed[:] = False
        self._block_at[self._block_rows] = -1
        if not members or not self._ids:
            self._block_rows = np.zeros(0, np.int64)
            return
        self._block_rows = self._rows_near(min(m.time for m in members),
                                           max(m.time for m in members))
        self._block_at[self._block_rows] = np.arange(self._block_rows.size)
        vectors = np.stack([m.vector for m in members]).astype(np.float32, copy=False)
        self._block_cosines = self._matrix[self._block_rows] @ vectors.T

    def _blocks(self, members: list[_Member]) -> Iterator[_Member]:
        """The members in order, taking each next block's cosines before its first member."""
        for start in range(0, len(members), BLOCK):
            block = members[start:start + BLOCK]
            self._take_block(block)
            yield from block
        self._block = {}

    def _time_prior(self, member: _Member, cluster: _Cluster, exclude: str | None) -> float:
        """Publication time as evidence where the text is too short to be any: reports of
        one event come in bursts, so for a headline against a headline story, a story whose
        nearest report is recent is likelier the article's event than one quiet for a day.
        Up to ``time_weight`` added at no gap, nothing at ``time_scale_hours`` (where, in real
        feeds, close reports stop being likelier one event than one topic), ``-time_weight``
        from twice that. Longer texts carry words and names that tell same-hour topics
        apart, and a gain there joined them (docs/decisions.md). Only for dated articles:
        a fetch time says nothing."""
        weight = self.conf.time_weight
        if not weight or not member.dated or member.size >= HEADLINE_TERMS:
            return 0.0
        profile = self._profile(cluster, exclude)
        if profile is None or profile.median_size >= HEADLINE_TERMS:
            return 0.0
        scale = self.conf.time_scale_hours * 3600.0
        gap = max(0.0, cluster.first - member.time, member.time - cluster.last)
        return weight * (1.0 - min(gap, 2.0 * scale) / scale)

    def _needs_another_outlet(self, member: _Member, cluster: _Cluster) -> bool:
        """Whether ``cluster`` is closed to ``member`` because every article in it comes from
        the member's own source and the member is no near-copy of one (``second_outlet``).

        On the real stream a third of two-article stories were two articles of one outlet,
        and read, most were two pieces of one subject (one outlet's section: columns,
        guides, a football desk, the same day's crime briefs), rarely one event twice: an
        outlet seldom writes two different reports of one event before another outlet has
        one. With another outlet in the story the join is scored as always (live coverage).
        A headline alone (fewer than ``HEADLINE_TERMS`` terms) is exempt: with no body to
        compare, a second article cannot be told from the same report re-filed under another
        address or section, which one domain's headlines often are (UCI)."""
        if not self.conf.second_outlet or member.source is None \
                or member.size < HEADLINE_TERMS or cluster.sole_source() != member.source:
            return False
        return not any(
            other.article_id != member.article_id
            and self._near_copy(float(other.vector @ member.vector), member.shingles,
                                other.shingles)
            for other in cluster.members.values())

    def _best(self, member: _Member, current: str | None = None) -> tuple[str | None, float]:
        best, best_score = None, -math.inf
        self._closed_best = -math.inf
        for label in self._candidates(member, current):
            cluster = self._clusters[label]
            exclude = member.article_id if label == current else None
            value = self._score(member, cluster, exclude=exclude) + self._time_prior(
                member, cluster, exclude)
            if self._needs_another_outlet(member, cluster):
                self._closed_best = max(self._closed_best, value)
            elif value > best_score:
                best, best_score = label, value
        return best, best_score

    def _place_held(self, held: list[_Member], labels: dict[str, str],
                    scores: dict[str, float]) -> None:
        """1b. the articles ``second_outlet`` kept out of their own outlet's story wait for
        the end of the online pass: one still on its own then joins the story it fits best
        if that story is now open to it (another outlet's report came in the run).
        Otherwise each outlet's follow-up would start a second story of its event, which the
        other outlets' later reports would split between the two."""
        for member in held:
            current = labels[member.article_id]
            if len(self._clusters[current].members) != 1:
                self.held_back += 1  # others joined it: it is a story of its own now
                continue
            best, best_score = self._best(member, current)
            if best is None or best == current or best_score < self.conf.threshold:
                self.held_back += 1
                continue
            self._leave(member, current)
            self._join(member, best)
            labels[member.article_id] = best
            scores[member.article_id] = best_score

    def _pair_scores(self, members: list[_Member]) -> np.ndarray:
        """The join score between every two members (the same length-aware mix as
        ``_score``)."""
        from scipy import sparse  # only the cohesion check needs it (~0.3 s to import)

        vectors = np.stack([m.vector for m in members])
        term_w, name_w = self.conf.term_weight, self.conf.name_weight
        sizes = np.array([m.size for m in members], dtype=np.float64)
        floor = self.conf.short_text_terms
        lexical = (np.minimum(1.0, np.minimum.outer(sizes, sizes) / floor) if floor
                   else np.ones((len(members), len(members))))
        scores = (1.0 - term_w - name_w + (1.0 - lexical) * (term_w + name_w)
                  * self.conf.embedding_scale) * (vectors @ vectors.T).astype(np.float64)
        for weight, part in ((term_w, 0), (name_w, 1)):
            if not weight:
                continue
            rows = [self._weights_of(m)[part] for m in members]
            vocabulary: dict[str, int] = {}
            data, cols, indptr = [], [], [0]
            for row in rows:
                for token, value in row.items():
                    cols.append(vocabulary.setdefault(token, len(vocabulary)))
                    data.append(value)
                indptr.append(len(cols))
            matrix = sparse.csr_matrix((data, cols, indptr),
                                       shape=(len(rows), max(len(vocabulary), 1)))
            scores += weight * lexical * (matrix @ matrix.T).toarray()
        return scores

    def _split_incoherent(self, members: list[_Member], labels: dict[str, str]) -> None:
        """3. cohesion check: a story started in this run whose articles fall into two groups,
        each clearly tighter than the link between them, becomes two stories.

        Online assignment judges one article at a time, so two same-type events (a boxer's two
        title defences, one chain's shop fires in two towns) can chain into one story through
        their in-between articles. Stories that existed before the run are left alone: what
        joins them later is mostly follow-up coverage, which a split would tear off.
        """
        ratio = self.conf.split_ratio
        if ratio <= 0:
            return
        groups: dict[str, list[_Member]] = {}
        for member in members:
            label = labels[member.article_id]
            if self._clusters[label].stored is None:
                groups.setdefault(label, []).append(member)
        queue = list(groups.items())
        while queue:
            label, group = queue.pop()
            if len(group) < 2 * MIN_SPLIT or self._mostly_short(group):
                continue
            scores = self._pair_scores(group)
            halves = bisect_scores(scores)
            leaving = [m for m, half in zip(group, halves, strict=True) if half == 1]
            staying = [m for m, half in zip(group, halves, strict=True) if half == 0]
            if min(len(leaving), len(staying)) < MIN_SPLIT or not split_is_clear(
                    scores, halves, ratio):
                continue
            for member in leaving:
                self._leave(member, label)
            new = self._start(leaving[0])
            for member in leaving[1:]:
                self._join(member, new)
            for member in leaving:
                labels[member.article_id] = new
            self.splits += 1
            queue += [(label, staying), (new, leaving)]

    def _consolidate(self, labels: dict[str, str], scores: dict[str, float]) -> None:
        """4. consolidation: merge a story that gained articles in this run (started in it or
        stored) with another story of its window when its articles, scored against that story
        with the join score, reach the join threshold *and* at least ``merge_ratio`` of the
        looser of the two stories' own cohesion (each story's articles against it, themselves
        left out). The link is the join decision's score, publication time included
        (``_time_prior``: between headlines, a story reported in the same hours is likelier the
        same event); a cohesion is not: a member always lies within its own story's span
        (gap 0), so there the term is no evidence, only a constant.

        The online pass compares stories only through single articles, in time order: an
        event's first reports can start two stories (two feeds' wordings of it) that then
        grow side by side, each new headline joining the half it is nearer, and by the time
        the halves are close enough both may be stored. Full texts are re-compared with every
        story of the run by refinement, but headlines keep their online decision, so at least
        one side must be a headline story. The test is the cohesion check's, reversed (that
        one splits when the link is below ``split_ratio`` of the looser half's cohesion), so a
        split is never merged back. Smallest stories go first; two run stories: the smaller
        goes into the larger; a run story goes into a stored one; two stored stories: the
        newer goes into the older (``folds``), whose id survives.
        """
        ratio = self.conf.merge_ratio
        if ratio <= 0:
            return
        changed = set(labels.values())
        for label in sorted(changed, key=lambda k: (len(self._clusters[k].members),
                                                    self._clusters[k].first, k)):
            cluster = self._clusters[label]
            if len(cluster.members) < MIN_MERGE:
                continue  # too small, or already folded into another
            sample = cluster.sample(None)
            short = self._mostly_short(sample)
            probe = _Member("\0probe", (cluster.first + cluster.last) / 2, cluster.centroid(),
                            frozenset(), frozenset())
            best, best_link, own = None, -math.inf, None
            for other in self._candidates(probe):
                target = self._clusters[other]
                if other == label or not target.members:
                    continue
                if cluster.stored is None:
                    if target.stored is None and len(target.members) < len(cluster.members):
                        continue  # the smaller story goes into the larger one, not the reverse
                elif target.stored is None:
                    continue  # a run story goes into a stored one, on its own turn
                if not short and not self._mostly_short(target.sample(None)):
                    continue  # full texts: refinement already compared each with every story
                link = float(np.mean([self._score(m, target) + self._time_prior(m, target, None)
                                      for m in sample]))
                if link < max(self.conf.threshold, best_link):
                    continue
                if own is None:  # only when some story is close enough to be worth it
                    own = self._cohesion(cluster)
                if link >= ratio * min(own, self._cohesion(target)):
                    best, best_link = other, link
            if best is None:
                continue
            absorbed, survivor = label, best
            if cluster.stored is not None and self._older(label, best):
                absorbed, survivor = best, label
            self._fold(absorbed, survivor, labels, scores, best_link)

    def _older(self, a: str, b: str) -> bool:
        """Whether stored story ``a`` started before stored story ``b`` (its id survives)."""
        first_a, first_b = self.stories[a].first_seen, self.stories[b].first_seen
        return (_ts(first_a), a) < (_ts(first_b), b)

    def _fold(self, absorbed: str, survivor: str, labels: dict[str, str],
              scores: dict[str, float], link: float) -> None:
        """Move every member of ``absorbed`` into ``survivor`` (both clusters' cached
        profiles and cohesions go stale with their versions); a stored story folded is
        written as a pointer to the survivor (``folds``)."""
        source, target = self._clusters[absorbed], self._clusters[survivor]
        for member in list(source.members.values()):
            self._leave(member, absorbed)
            self._join(member, survivor)
            if member.article_id in labels:
                labels[member.article_id] = survivor
                scores[member.article_id] = link
        if source.stored is not None:  # its span outside the batch joins the survivor's
            target.fixed_first = min(target.fixed_first, source.fixed_first)
            target.fixed_last = max(target.fixed_last, source.fixed_last)
            target.first = min(target.first, source.fixed_first)
            target.last = max(target.last, source.fixed_last)
            self._place(survivor, target.centroid())
            self.folds.append((absorbed, survivor))
        self.merges += 1

    def _cohesion(self, cluster: _Cluster) -> float:
        """How well a story's latest articles fit it: the mean of each one's join score
        against the story, itself left out."""
        key = (cluster.version, self._generation)
        if cluster.cohesion is not None and cluster.cohesion[0] == key:
            return cluster.cohesion[1]  # a large story is the target of many small ones
        sample = cluster.sample(None)
        value = math.inf if len(sample) < 2 else float(
            np.mean([self._score(m, cluster, exclude=m.article_id) for m in sample]))
        cluster.cohesion = (key, value)
        return value

    def _is_short(self, member: _Member) -> bool:
        """A headline-length text (fewer than ``short_text_terms`` terms)."""
        return member.size < self.conf.short_text_terms

    def _mostly_short(self, group: list[_Member]) -> bool:
        """Headline stories are not checked: with the word and name signals mostly off, their
        pair scores are embedding cosines of a few words, too noisy to tell two events from
        one event's sub-themes (a large headline story would be cut along them)."""
        return float(np.median([m.size for m in group])) < self.conf.short_text_terms

    # -- moves --

    def _join(self, member: _Member, label: str) -> None:
        cluster = self._clusters[label]
        cluster.add(member)
        self._place(label, cluster.centroid())

    def _leave(self, member: _Member, label: str) -> None:
        cluster = self._clusters[label]
        cluster.remove(member.article_id)
        if cluster.members:
            self._place(label, cluster.centroid())
        else:
            self._place(label, self._matrix[self._rows[label]])

    def _start(self, member: _Member) -> str:
        self._new += 1
        label = f"\0new{self._new}"  # renamed after its earliest article at the end
        self._clusters[label] = _Cluster({member.article_id: member})
        self._place(label, member.vector)
        return label

    # -- the decisions --

    def assign(self, item: StoryItem) -> Assignment:
        """One article (see ``assign_batch``)."""
        return self.assign_batch([item])[0]

    def assign_batch(self, items: list[StoryItem]) -> list[Assignment]:
        """Assign a run's new articles (in time order); returns one decision per item.

        BLAS runs single-threaded meanwhile: the products here are one article against a few
        thousand centroids, and OpenBLAS hands those (above ~2,000 rows) to its thread pool,
        whose hand-off cost ~16× the product itself on two busy cores (docs/decisions.md, Stories).
        """
        with _blas().limit(limits=1, user_api="blas"):
            return self._assign_batch(items)

    def _assign_batch(self, items: list[StoryItem]) -> list[Assignment]:
        members = [_Member(i.article_id, _ts(i.time), i.vector, i.terms, i.names, i.dated,
                           i.source, i.shingles) for i in items]
        for member in members:
            self._count(member.terms, member.names)
        labels: dict[str, str] = {}
        scores: dict[str, float] = {}  # the score each article joined its story with
        held: list[_Member] = []  # kept out of their own outlet's story (second_outlet)
        for member in self._blocks(members):  # 1. online pass
            best, best_score = self._best(member)
            if self._closed_best >= max(best_score, self.conf.threshold):
                held.append(member)  # it would have joined its own outlet's story
            if best is None or best_score < self.conf.threshold:
                labels[member.article_id] = self._start(member)
            else:
                self._join(member, best)
                labels[member.article_id] = best
                scores[member.article_id] = best_score
        self._place_held(held, labels, scores)
        for _ in range(self.conf.refine_passes if len(members) > 1 else 0):  # 2. refinement
            moved = 0
            # Headlines are not moved: their scores are too noisy to second-guess (see above).
            for member in self._blocks([m for m in members if not self._is_short(m)]):
                current = labels[member.article_id]
                best, best_score = self._best(member, current)
                if best_score < self.conf.threshold:
                    if len(self._clusters[current].members) == 1:
                        continue  # already on its own
                    self._leave(member, current)
                    labels[member.article_id] = self._start(member)
                    moved += 1
                elif best is not None:
                    scores[member.article_id] = best_score
                    if best != current:
                        self._leave(member, current)
                        self._join(member, best)
                        labels[member.article_id] = best
                        moved += 1
            if not moved:
                break
        self._split_incoherent(members, labels)  # 3. cohesion check
        self._consolidate(labels, scores)  # 4. consolidation
        return self._materialise(items, labels, scores)

    def _materialise(self, items: list[StoryItem], labels: dict[str, str],
                     scores: dict[str, float]) -> list[Assignment]:
        """Name new stories, find duplicates, and update the stories' records."""
        order = sorted(range(len(items)), key=lambda n: (_ts(items[n].time), items[n].article_id))
        names: dict[str, str] = {}
        for n in order:  # a new story is named after its earliest article
            label = labels[items[n].article_id]
            if label.startswith("\0") and label not in names:
                names[label] = "s-" + items[n].article_id[:20]
        results: dict[int, Assignment] = {}
        touched: set[str] = set()
        for absorbed, survivor in self.folds[self._folds_done:]:  # stored stories folded
            self.stories[survivor].absorb(self.stories[absorbed])
            touched.discard(absorbed)
            touched.add(survivor)
        self._folds_done = len(self.folds)
        for n in order:
            item = items[n]
            label = labels[item.article_id]
            story_id = names.get(label, label)
            story = self.stories.get(story_id)
            if story is None:
                story = ActiveStory(story_id=story_id, title=item.title, first_seen=item.time,
                                    last_seen=item.time, count=0, sources=[],
                                    centroid=item.vector.copy())
                self.stories[story_id] = story
                results[n] = Assignment(story_id, None, True, 1.0)
            else:
                duplicate_of = self._duplicate_of(story, item)
                results[n] = Assignment(story_id, duplicate_of, False,
                                        round(scores.get(item.article_id, 1.0), 6))
            self._add(story, item)
            touched.add(story_id)
        for story_id in touched:
            self.stories[story_id].recompute_centroid()
            self.stories[story_id].rename_after_representative()
        for label, story_id in names.items():  # later batches see the final names
            cluster = self._clusters.pop(label)
            cluster.stored = self.stories[story_id]
            self._clusters[story_id] = cluster
            row = self._rows.pop(label)
            self._rows[story_id] = row
            self._ids[row] = story_id
        return [results[n] for n in range(len(items))]

    def update_member(self, story_id: str, item: StoryItem) -> bool:
        """A new version of an article already in a story: it stays, the centroid follows."""
        story = self.stories.get(story_id)
        cluster = self._clusters.get(story_id)
        if story is None or cluster is None:
            return False
        old = cluster.members.get(item.article_id)
        if old is not None:
            self._count(old.terms, old.names, -1)
        member = _Member(item.article_id, _ts(item.time), item.vector, item.terms, item.names,
                         source=item.source, shingles=item.shingles)
        self._count(member.terms, member.names)
        story.add_member(item)
        story.recompute_centroid()
        story.rename_after_representative()
        story.dirty = True
        if old is not None:
            cluster.remove(item.article_id)
        cluster.add(member)
        self._place(story_id, story.centroid)
        return True

    def _duplicate_of(self, story: ActiveStory, item: StoryItem) -> str | None:
        """The member ``item`` is a near-copy of: embedding cosine at least
        ``duplicate_threshold`` and most of the text shared (a profile of a man and the report
        of his death can be as close on title + lead; their texts are not)."""
        ids = sorted(story.members)
        if not ids:
            return None
        sims = np.stack([story.members[i] for i in ids]) @ item.vector
        for top in np.argsort(-sims, kind="stable"):
            if float(sims[top]) < self.conf.duplicate_threshold:
                break
            if self._near_copy(float(sims[top]), item.shingles,
                               story.member_shingles.get(ids[top], frozenset())):
                return ids[top]
        return None

    def _near_copy(self, cosine: float, shingles: frozenset[int],
                   other: frozenset[int]) -> bool:
        """Near-identical text: the embeddings close (``duplicate_threshold``) *and* most
        word 3-grams shared (``duplicate_text_overlap``), the one test of ``duplicate_of``
        and of ``second_outlet``'s exemption."""
        return cosine >= self.conf.duplicate_threshold \
            and shingle_overlap(shingles, other) >= self.conf.duplicate_text_overlap

    @staticmethod
    def _add(story: ActiveStory, item: StoryItem) -> None:
        story.add_member(item)
        story.count += 1
        if item.source and item.source not in story.sources:
            story.sources.append(item.source)
        story.first_seen = min(story.first_seen, item.time)
        story.title = story.title or item.title
        story.last_seen = max(story.last_seen, item.time)
        story.dirty = True


