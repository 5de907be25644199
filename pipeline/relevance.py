"""Is an article (or story) a development on a watched topic, not merely mentioning it?

One score in [0, 1] per (article, watch) from ten interpretable features:

* ``title``    – 1 if a watch keyword is in the title (the strongest single signal);
* ``share``    – the share of the text's sentences that name a keyword (a text counts as at
  least ``MIN_SENTENCES``): an article about Taiwan keeps coming back to it;
* ``early``    – 1 − (position of the first keyword in the text, as a fraction of its words),
  0 without one: the subject of a news story is named at the top;
* ``section``  – the most keyword sentences among any ``SECTION_SENTENCES`` consecutive ones,
  as a fraction of them: a paragraph or section of its own on Taiwan inside a broader article
  counts, where a background clause does not;
* ``evidence`` – how many of the watch's ``evidence`` groups (the topic's own vocabulary:
  its parties and politicians, institutions, companies, places…) have a term in a sentence
  that names a keyword: "HTC" or "the KMT" next to "Taiwanese" says what kind of Taiwan
  story it is, where a bare "Taiwan" in a list does not;
* ``title_evidence`` – how many of those groups have a term in the title: a headline about
  one of the topic's own entities ("Acer hit by success of Apple's iPad") is about the topic
  even when the text names Taiwan once;
* ``reporting`` – the share of sentences in which an institutional actor (a ministry,
  officials, a court, a company) says or does something (pipeline/genre.py): a development
  is reported;
* ``personal`` – first- and second-person words per 100 (*I*, *we*, *you*): a travel piece,
  a letter, a diary or a review is narrated or addressed, news rarely is;
* ``semantic`` – cosine between the embedding of title + lead (the first ``LEAD_WORDS``
  words) and the watch description (the max over the description as a whole and each of its
  sentences, so one sentence per sub-topic works well);
* ``passage_semantic`` – the same cosine for the *passage*: the ``PASSAGE_SENTENCES``
  consecutive sentences that name the keywords most (the first such run). It is what the
  article says where it talks about Taiwan, and what alerts and `newswatch match` quote.

``score = sigmoid(INTERCEPT + Σ weight·feature)``. A watch fitted on its own labelled
articles (pipeline/watch_model.py, `newswatch fit-watch`) has its own coefficients and one
more term, a learned function of the lead and passage embeddings. Share, position and
section are fractions of the text, so a feed summary and a 2,000-word feature are on one
scale. The coefficients are constants, fitted once (see the comment at their definition);
nothing is tuned at run time. A text with no words (a headline-only item) is scored on its
title as its text.

A keyword hit is required evidence: an article with none is scored without embedding it,
which keeps the model off the great majority of articles; one with a hit costs two
embeddings (lead and passage; one when they are the same text). An ``exclude`` term in the
title or lead sets the score to 0. A story is as relevant as its most relevant member (the
alert stage keeps a story's best member score): one article that makes Taiwan a point of its
own makes its story relevant, and passing mentions in many members do not add up.

Keyword matching is case-insensitive on word boundaries; a phrase matches across spaces and
hyphens ("cross-strait" = "cross strait"); overlapping keywords count once, the longest wins
("Taiwan Strait" is one hit, not two).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.cjk import keyword_pattern
from pipeline.embeddings import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, EmbeddingSpec
from pipeline.genre import GenreCues, genre_cues
from pipeline.settings import Settings, WatchConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pipeline.watch_model import WatchModel

# Bump when the features or coefficients change: it is part of the watch fingerprint the alert
# stage keys its score cache on (pipeline/alerts/engine.py), so stories are re-scored.
SCORER_VERSION = "6"
LEAD_WORDS = 100  # the lead: first 100 words (≈ the first two news paragraphs)
# ``share`` counts a text as at least this many sentences, so a two-sentence feed summary
# with one mention is not "half about Taiwan". Picked among 1, 3, 5 and 10 on the benchmark's
# summary-only view (precision on summaries as with version 1, no loss on full articles).
MIN_SENTENCES = 3
SECTION_SENTENCES = 5  # a section of its own: about one news paragraph or a brief
PASSAGE_SENTENCES = 3  # the passage embedded and quoted: the keyword sentence and context

# Logistic-regression coefficients, fitted once with scikit-learn LogisticRegression (L2, C=10)
# on all 1,285 rows of taiwan-developments-2007-2011.jsonl (label = a Taiwan-related
# development by the rubric, D), with default_taiwan_watch() and the default embedding model.
# The intercept is shifted so that 0.5 is the threshold picked on the same rows by the
# benchmark's rule (best F1), so ``min_score`` keeps its default; reproduce with
# `benchmarks/relevance.py --data FILE --fit`. Cross-validated figures: docs/decisions.md.
# They serve every watch without a fitted model of its own; the built-in taiwan watch has
# one (pipeline/watch_models/taiwan.json, pipeline/watch_model.py), which scorer_for applies.
INTERCEPT = -9.5
W_TITLE = 0.65
W_SHARE = 1.7
W_EARLY = 2.56
W_SECTION = 4.77
W_EVIDENCE = 0.72
W_TITLE_EVIDENCE = 0.74
W_REPORTING = 2.87
W_PERSONAL = -0.51
W_SEMANTIC = 3.8
W_PASSAGE_SEMANTIC = 4.2
# The features read from the text (keyword evidence and genre cues), then the two cosines.
KEYWORD_FEATURES = ("title", "share", "early", "section", "evidence", "title_evidence",
                    "reporting", "personal")
FEATURES = (*KEYWORD_FEATURES, "semantic", "passage_semantic")

_SEPARATORS = re.compile(r"[\s\-\u2010\u2011\u2013]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")  # description sentences (sub-topics)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")  # sentences, for ``share``


@dataclass(slots=True)
class KeywordEvidence:
    """Where the watch keywords occur: per-section hit counts, the keywords that hit, and the
    passage that talks about them most."""

    title_hits: int = 0
    lead_hits: int = 0
    body_hits: int = 0
    words: int = 0
    sentences: int = 0  # sentences in the text (the title, for a headline-only item)
    keyword_sentences: int = 0  # of which name a keyword
    first_hit: float | None = None  # first keyword in the text, as a fraction of its words
    section_sentences: int = 0  # most keyword sentences among SECTION_SENTENCES in a row
    passage: str = ""  # the PASSAGE_SENTENCES in a row that name the keywords most
    passage_quote: str = ""  # its first keyword sentence, shortened around the keyword
    passage_in_lead: bool = False  # that sentence starts within the lead
    lead_quote: str = ""  # the first keyword sentence, when it starts within the lead
    title_terms: dict[str, int] = field(default_factory=dict)
    lead_terms: dict[str, int] = field(default_factory=dict)
    body_terms: dict[str, int] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)  # "'term' in title|lead"
    # evidence group -> its terms found in sentences that name a keyword
    evidence_terms: dict[str, dict[str, int]] = field(default_factory=dict)
    title_evidence_terms: dict[str, dict[str, int]] = field(default_factory=dict)  # in the title
    genre: GenreCues = field(default_factory=GenreCues)  # of the text, with a keyword hit only

    @property
    def total(self) -> int:
        return self.title_hits + self.lead_hits + self.body_hits

    def features(self) -> tuple[float, ...]:
        """The keyword features (``KEYWORD_FEATURES``) as the model sees them. A text
        shorter than a section is its own section (counted as at least
        ``MIN_SENTENCES``, like ``share``), so a feed summary or a headline-only item about
        Taiwan is not held to a paragraph it does not have."""
        share = self.keyword_sentences / max(self.sentences, MIN_SENTENCES)
        early = 1.0 - self.first_hit if self.first_hit is not None else 0.0
        window = min(SECTION_SENTENCES, max(self.sentences, MIN_SENTENCES))
        section = self.section_sentences / window
        return (float(self.title_hits > 0), share, early, section,
                float(len(self.evidence_terms)), float(len(self.title_evidence_terms)),
                self.genre.reporting, self.genre.personal)


@dataclass(slots=True)
class RelevanceScore:
    """A watch's verdict on one text; ``reasons`` is what alerts and `newswatch match` show."""

    score: float
    keyword: float  # keyword evidence, as its contribution to the logit (0 = no hit)
    semantic: float | None  # lead's cosine to the description; None without a keyword
    passage_semantic: float | None  # the passage's cosine to the description
    relevant: bool
    reasons: list[str]
    evidence: KeywordEvidence

    @property
    def passage(self) -> dict[str, str] | None:
        """Where the article talks about the topic (None without a keyword hit)."""
        ev = self.evidence
        if not ev.total or not ev.passage_quote:
            return None
        return {"where": "lead" if ev.passage_in_lead else "body", "quote": ev.passage_quote,
                "text": ev.passage}

    def to_json(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "keyword": round(self.keyword, 4),
            "semantic": None if self.semantic is None else round(self.semantic, 4),
            "passage_semantic": (None if self.passage_semantic is None
                                 else round(self.passage_semantic, 4)),
            "relevant": self.relevant,
            "reasons": list(self.reasons),
            "passage": self.passage,
        }


TAIWAN_DESCRIPTION = (
    "New Taiwan-related developments that an analyst on a Taiwan desk tracks. "
    "Taiwan's politics and government: the president, cabinet, elections, the KMT and DPP "
    "parties, the legislature, courts, scandals, protests and policy. "
    "Relations between Taiwan and China across the Taiwan Strait: talks, trade and travel "
    "links, pressure, threats and incidents. "
    "Chinese PLA military drills, warships and aircraft around Taiwan, and Taiwan's defence. "
    "US–Taiwan ties: American arms sales to Taiwan, visits and calls with Taiwan's president. "
    "Taiwan's diplomatic allies, recognition and international standing. "
    "China–US relations where Taiwan is an issue between them. "
    "Taiwan's economy and trade, and Taiwanese companies such as TSMC and Foxconn. "
    "Disasters and major incidents in Taiwan: earthquakes, typhoons and crashes."
)
TAIWAN_KEYWORDS = (
    "Taiwan", "Taiwanese", "Taipei", "Taiwan Strait", "cross-strait",
    "Tsai Ing-wen", "Lai Ching-te", "Ma Ying-jeou", "Chen Shui-bian", "Lee Teng-hui",
    "Kuomintang", "KMT", "DPP", "Democratic Progressive Party", "Kaohsiung",
)
# The Taiwan watch in Chinese, Traditional and Simplified (a CJK keyword matches inside words:
# Chinese is written without spaces). Names and institutions that mean Taiwan; not 國軍 (it is
# inside 美國軍艦) nor Simplified 国防部 (mostly the PRC's ministry).
TAIWAN_KEYWORDS_ZH = (
    "台灣", "臺灣", "台湾", "台海", "臺海", "兩岸", "两岸", "海峽中線",
    "海峡中线", "國防部", "解放軍", "解放军", "共軍", "共機", "共机", "共艦",
    "總統府", "陸委會", "陆委会", "國台辦", "国台办", "民進黨", "民进党", "國民黨",
    "国民党", "民眾黨", "蔡英文", "賴清德", "赖清德", "柯文哲", "侯友宜", "馬英九",
    "马英九", "台北", "臺北", "高雄", "台積電", "台积电", "立法院", "行政院",
)

# The rubric's own vocabulary, one group per kind of Taiwan entity or rubric heading, written
# from the rubric (../shared/data/relevance/RUBRIC-taiwan-developments.md) and general
# knowledge, not from the labelled articles, in English and Chinese (as the keywords are).
# A group counts once however many of its terms occur, and only in sentences that also name a
# keyword, so "recognition" or "crash" count only where the article is talking about Taiwan.
TAIWAN_EVIDENCE: dict[str, tuple[str, ...]] = {
    "politics": (
        "KMT", "Kuomintang", "DPP", "Democratic Progressive Party", "People First Party",
        "Legislative Yuan", "Executive Yuan", "Control Yuan", "Judicial Yuan", "Ma Ying-jeou",
        "Chen Shui-bian", "Lee Teng-hui", "Tsai Ing-wen", "Lai Ching-te", "Lien Chan",
        "James Soong", "Frank Hsieh", "Su Tseng-chang", "Annette Lu", "Wu Den-yih",
        "Vincent Siew", "Eric Chu", "Hau Lung-bin", "Wang Jin-pyng", "Liu Chao-shiuan",
        "Yu Shyi-kun", "Wu Shu-chen", "Chiang Kai-shek", "Chiang Ching-kuo", "Ko Wen-je",
        "Han Kuo-yu", "Hung Hsiu-chu", "Chu Li-luan", "Sunflower movement",
        "民進黨", "民进党", "國民黨", "国民党", "民眾黨", "蔡英文", "賴清德", "赖清德", "柯文哲",
        "侯友宜", "馬英九", "马英九", "立法院", "行政院", "總統府"),
    "cross-strait": (
        "cross-strait", "Taiwan Strait", "Taiwan Straits", "Mainland Affairs Council",
        "Straits Exchange Foundation", "ARATS", "Taiwan Affairs Office", "Chen Yunlin",
        "Chiang Pin-kung", "ECFA", "Economic Cooperation Framework Agreement", "one China",
        "1992 consensus", "Anti-Secession Law", "reunification", "unification",
        "independence", "renegade province", "breakaway province", "Hu Jintao", "Xi Jinping",
        "兩岸", "两岸", "陸委會", "陆委会", "國台辦", "国台办", "海峽中線", "海峡中线", "台海",
        "臺海"),
    "defence": (
        "PLA", "People's Liberation Army", "arms sales", "arms sale", "arms package",
        "weapons sales", "F-16", "F-16s", "Patriot missiles", "Black Hawk", "missiles",
        "warships", "submarines", "Taiwan Relations Act", "American Institute in Taiwan",
        "military drills", "defence ministry", "defense ministry", "國防部", "解放軍", "解放军",
        "共軍", "共機", "共机", "共艦", "演習", "演习"),
    "standing": (
        "World Health Assembly", "World Health Organization", "Chinese Taipei", "Olympics",
        "Olympic", "United Nations", "diplomatic allies", "diplomatic ally",
        "diplomatic recognition", "recognition", "recognise", "recognize", "passport",
        "passports", "map", "maps", "sovereignty", "Vatican", "Holy See", "Paraguay",
        "embassy"),
    "companies": (
        "TSMC", "Taiwan Semiconductor", "Foxconn", "Hon Hai", "HTC", "Acer", "Asus", "Asustek",
        "MediaTek", "Quanta", "Pegatron", "Compal", "Wistron", "AU Optronics", "Chimei",
        "Chi Mei", "UMC", "United Microelectronics", "Formosa Plastics", "China Airlines",
        "EVA Air", "Evergreen", "Chunghwa", "Terry Gou", "Cher Wang", "Morris Chang",
        "Powerchip", "Nanya", "Inventec", "Largan", "Yageo", "Taiwan Mobile", "Fubon",
        "Cathay Financial", "台積電", "台积电", "鴻海", "鸿海"),
    "places": (
        "Taipei", "Kaohsiung", "Taichung", "Tainan", "Hsinchu", "Keelung", "Kinmen", "Quemoy",
        "Matsu", "Penghu", "Hualien", "Taitung", "Chiayi", "Pingtung", "Yilan", "Nantou",
        "Taoyuan", "Formosa", "台北", "臺北", "高雄", "台中", "臺中", "台南", "臺南", "新竹",
        "金門", "金门", "馬祖", "马祖"),
    "disasters": (
        "earthquake", "quake", "typhoon", "Morakot", "landslide", "landslides", "crash",
        "explosion", "floods", "flooding", "outbreak", "epidemic", "Sars", "swine flu", "地震",
        "颱風", "台风"),
}


def default_taiwan_watch() -> WatchConfig:
    """The shipped ``taiwan`` watch: Taiwan-related developments as the rubric defines them
    (docs/decisions.md), not features about Taiwan or passing mentions. The same watch is
    written out in config/newswatch.yaml, config/newswatch.compose.yaml and
    examples/demo.yaml (a test keeps them identical)."""
    return WatchConfig(name="taiwan", description=TAIWAN_DESCRIPTION,
                       keywords=[*TAIWAN_KEYWORDS, *TAIWAN_KEYWORDS_ZH], exclude=[],
                       evidence={group: list(terms) for group, terms in TAIWAN_EVIDENCE.items()})


# --- keywords ---------------------------------------------------------------------------


def _phrase_pattern(term: str) -> str:
    tokens = [token for token in _SEPARATORS.split(term.strip()) if token]
    return r"[\s\-\u2010\u2011\u2013]*".join(re.escape(token) for token in tokens)


@dataclass(frozen=True, slots=True)
class _Matcher:
    pattern: re.Pattern[str]
    terms: tuple[str, ...]  # group t<i> -> the term as configured


@lru_cache(maxsize=256)
def _matcher(terms: tuple[str, ...]) -> _Matcher | None:
    """One alternation, longest term first, so overlapping terms count once."""
    usable = {t.strip() for t in terms if _phrase_pattern(t)}  # "-" alone would match anywhere
    ordered = tuple(sorted(usable, key=lambda t: (-len(t), t)))
    if not ordered:
        return None
    groups = "|".join(f"(?P<t{i}>{keyword_pattern(term, _phrase_pattern(term))})"
                      for i, term in enumerate(ordered))  # CJK keywords: no word boundary
    return _Matcher(re.compile(groups, re.IGNORECASE), ordered)


def _find(matcher: _Matcher | None, text: str) -> dict[str, int]:
    """Hits per configured term (as the user spelt it)."""
    found: dict[str, int] = {}
    if matcher is None or not text:
        return found
    for match in matcher.pattern.finditer(text):
        term = matcher.terms[int((match.lastgroup or "t0")[1:])]
        found[term] = found.get(term, 0) + 1
    return found


def _keywords_of(watch: WatchConfig) -> tuple[str, ...]:
    """The watch's keywords; a watch without any falls back to its name."""
    if watch.keywords:
        return tuple(watch.keywords)
    return (watch.name.replace("_", " ").replace("-", " "),)


def split_lead(title: str, text: str) -> tuple[str, str]:
    """(lead, rest) of ``text``; a copy of the title at its start is dropped first."""
    text = text or ""
    stripped = text.lstrip()
    if title and stripped.startswith(title.strip()):
        text = stripped[len(title.strip()):]
    words = text.split()
    return " ".join(words[:LEAD_WORDS]), " ".join(words[LEAD_WORDS:])


def _densest_run(hits: list[bool], size: int) -> tuple[int, int]:
    """(keyword sentences, start) of the first run of ``size`` sentences with the most."""
    if len(hits) <= size:
        return sum(hits), 0
    best = current = sum(hits[:size])
    start = 0
    for i in range(size, len(hits)):
        current += hits[i] - hits[i - size]
        if current > best:
            best, start = current, i - size + 1
    return best, start


def _quote(sentence: str, matcher: _Matcher, limit: int = 160) -> str:
    """The sentence, or a ``limit``-character window of it that starts near the keyword."""
    sentence = " ".join(sentence.split())
    if len(sentence) <= limit:
        return sentence
    found = matcher.pattern.search(sentence)
    start = 0 if found is None else max(0, found.start() - limit // 3)
    if start:
        start = sentence.find(" ", start) + 1 or start
    piece = sentence[start:start + limit]
    if start + limit < len(sentence):
        piece = piece.rsplit(" ", 1)[0] + "…"
    return ("…" if start else "") + piece


def _add_text_shape(evidence: KeywordEvidence, matcher: _Matcher | None, text: str,
                    lead_words: int, groups: dict[str, _Matcher | None]) -> None:
    """Sentences naming a keyword, where the first one falls, the densest section, the
    passage and the evidence groups named beside a keyword: length-free evidence of where
    and how the text talks about the topic."""
    sentences = [s for s in _SENTENCE_SPLIT.split(text) if s.strip()]
    evidence.sentences = len(sentences)
    if matcher is None or not sentences:
        return
    hits = [matcher.pattern.search(s) is not None for s in sentences]
    evidence.keyword_sentences = sum(hits)
    if not evidence.keyword_sentences:
        return
    evidence.genre = genre_cues(sentences)
    beside = " \n ".join(s for s, hit in zip(sentences, hits, strict=True) if hit)
    for group, group_matcher in groups.items():
        found = _find(group_matcher, beside)
        if found:
            evidence.evidence_terms[group] = found
    first = matcher.pattern.search(text)
    if first is not None:
        evidence.first_hit = len(text[:first.start()].split()) / max(1, len(text.split()))
    evidence.section_sentences, _ = _densest_run(hits, SECTION_SENTENCES)
    _, start = _densest_run(hits, PASSAGE_SENTENCES)
    passage = sentences[start:start + PASSAGE_SENTENCES]
    evidence.passage = " ".join(" ".join(passage).split())
    quoted = next(i for i in range(start, start + len(passage)) if hits[i])
    evidence.passage_quote = _quote(sentences[quoted], matcher)
    evidence.passage_in_lead = sum(len(s.split()) for s in sentences[:quoted]) < lead_words
    first_quoted = hits.index(True)
    if sum(len(s.split()) for s in sentences[:first_quoted]) < lead_words:
        evidence.lead_quote = _quote(sentences[first_quoted], matcher)


def keyword_evidence(watch: WatchConfig, title: str, text: str) -> KeywordEvidence:
    """Count keyword hits by position (title, lead, body) and find exclude terms."""
    title = title or ""
    lead, body = split_lead(title, text)
    pattern = _matcher(_keywords_of(watch))
    evidence = KeywordEvidence(
        title_terms=_find(pattern, title), lead_terms=_find(pattern, lead),
        body_terms=_find(pattern, body), words=len(lead.split()) + len(body.split()),
    )
    evidence.title_hits = sum(evidence.title_terms.values())
    evidence.lead_hits = sum(evidence.lead_terms.values())
    evidence.body_hits = sum(evidence.body_terms.values())
    groups = {group: _matcher(tuple(terms)) for group, terms in watch.evidence.items()}
    for group, group_matcher in groups.items():
        found = _find(group_matcher, title)
        if found:
            evidence.title_evidence_terms[group] = found
    _add_text_shape(evidence, pattern, f"{lead} {body}".strip() or title,
                    len(lead.split()) if lead else 1, groups)
    exclude = _matcher(tuple(watch.exclude))
    for where, part in (("title", title), ("lead", lead)):
        evidence.excluded.extend(f"'{term}' in {where}" for term in _find(exclude, part))
    return evidence


# --- semantics --------------------------------------------------------------------------


def semantic_text(title: str, text: str) -> str:
    """What is embedded for an article: its title and lead."""
    lead, _ = split_lead(title or "", text)
    title = (title or "").strip()
    return f"{title}. {lead}" if title and lead else (title or lead)


def description_sentences(watch: WatchConfig) -> list[str]:
    """The description and each of its sentences (a watch without one gets a stand-in)."""
    description = watch.description.strip() or (
        f"News about {watch.name}: " + ", ".join(_keywords_of(watch)))
    sentences = [s.strip() for s in _SENTENCE_END.split(description) if s.strip()]
    return [description] + (sentences if len(sentences) > 1 else [])


@lru_cache(maxsize=64)
def _description_vectors(sentences: tuple[str, ...], spec: EmbeddingSpec) -> np.ndarray:
    """Cached per description text and model: a watch's description is embedded once."""
    vectors = spec.encode(list(sentences))
    vectors.setflags(write=False)
    return vectors


def _semantic(vectors: np.ndarray, embedding: np.ndarray) -> tuple[float, int]:
    sims = vectors @ np.asarray(embedding, dtype=np.float32).reshape(-1)
    best = int(np.argmax(sims))
    return float(sims[best]), best


# --- scoring ----------------------------------------------------------------------------


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _terms(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} ×{n}" if n > 1 else t for t, n in
                     sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True, slots=True)
class Semantics:
    """Cosines to the watch description: of the lead, and of the passage (with the
    description sentence each is closest to; None = the description as a whole); and the
    watch model's learned term on the two vectors, when the watch has one."""

    lead: float
    passage: float
    lead_sentence: str | None = None
    learned: float | None = None


SHIPPED_WEIGHTS = {"title": W_TITLE, "share": W_SHARE, "early": W_EARLY, "section": W_SECTION,
                   "evidence": W_EVIDENCE, "title_evidence": W_TITLE_EVIDENCE,
                   "reporting": W_REPORTING, "personal": W_PERSONAL,
                   "semantic": W_SEMANTIC, "passage_semantic": W_PASSAGE_SEMANTIC}


def logit_parts(evidence: KeywordEvidence, semantics: Semantics | None,
                model: WatchModel | None = None) -> tuple[float, float, float]:
    """(intercept, keyword part, semantic part) of the logit; the keyword part is 0 without
    a keyword hit. ``model``: the watch's own coefficients and learned term (else the shipped
    constants)."""
    learned = semantics.learned if semantics is not None else None
    if model is None or learned is None:  # no model, or no vectors for its learned term
        model, learned = None, None
    weights = model.weights if model is not None else SHIPPED_WEIGHTS
    intercept = model.intercept if model is not None else INTERCEPT
    keyword = sum(weights[name] * value
                  for name, value in zip(KEYWORD_FEATURES, evidence.features(), strict=True))
    semantic = 0.0
    if semantics is not None:
        semantic = (weights["semantic"] * semantics.lead
                    + weights["passage_semantic"] * semantics.passage)
        if learned is not None:
            semantic += weights["learned"] * learned
    return intercept, keyword, semantic


def _combine(watch: WatchConfig, evidence: KeywordEvidence,
             semantics: Semantics | None, model: WatchModel | None = None) -> RelevanceScore:
    intercept, keyword, sem = logit_parts(evidence, semantics, model)
    score = _sigmoid(intercept + keyword + sem)
    reasons: list[str] = []
    if evidence.title_terms:
        reasons.append(f"{_terms(evidence.title_terms)} in title")
    if evidence.lead_quote:  # what the top of the article says, then its densest passage
        reasons.append(f"lead: \u201c{evidence.lead_quote}\u201d")
    if evidence.passage_quote and evidence.passage_quote != evidence.lead_quote:
        where = "lead" if evidence.passage_in_lead else "body"
        reasons.append(f"{where}: \u201c{evidence.passage_quote}\u201d")
    if evidence.lead_terms:
        reasons.append(f"lead mentions {_terms(evidence.lead_terms)}")
    if evidence.body_hits:
        noun = "mention" if evidence.body_hits == 1 else "mentions"
        reasons.append(f"{evidence.body_hits} {noun} in body")
    if evidence.keyword_sentences:
        reasons.append(f"{evidence.keyword_sentences} of {evidence.sentences} sentences, "
                       f"{evidence.section_sentences} of {SECTION_SENTENCES} in a row")
    if evidence.evidence_terms:
        reasons.append("beside it: " + "; ".join(
            f"{group} ({_terms(terms)})" for group, terms in evidence.evidence_terms.items()))
    if evidence.title_evidence_terms and evidence.total:
        reasons.append("title names: " + "; ".join(
            f"{group} ({_terms(terms)})"
            for group, terms in evidence.title_evidence_terms.items()))
    genre = evidence.genre
    if genre.sentences:
        reasons.append(f"reads like news: {genre.reporting_sentences} of {genre.sentences} "
                       f"sentences report an actor; {genre.personal:.1f} I/we/you per 100 "
                       "words")
    if not evidence.total:
        reasons.append("no keyword match")
    if semantics is not None:
        about = (f" ('{_shorten(semantics.lead_sentence)}')" if semantics.lead_sentence
                 else "")
        reasons.append(f"similarity to description {semantics.lead:.2f}{about}, "
                       f"passage {semantics.passage:.2f}")
        if semantics.learned is not None and model is not None:
            reasons.append(f"learned ({model.fitted_on.get('rows', '?')} labelled articles) "
                           f"{semantics.learned:+.2f}")
    if evidence.excluded:
        reasons.append("excluded: " + ", ".join(evidence.excluded))
        score = 0.0
    return RelevanceScore(score=score, keyword=keyword,
                          semantic=None if semantics is None else semantics.lead,
                          passage_semantic=None if semantics is None else semantics.passage,
                          relevant=score >= watch.min_score, reasons=reasons,
                          evidence=evidence)


def _shorten(text: str | None, limit: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _needs_semantic(evidence: KeywordEvidence) -> bool:
    return evidence.total > 0 and not evidence.excluded


def passage_text(evidence: KeywordEvidence, title: str, text: str) -> str:
    """What is embedded for the passage (the lead's text when there is no passage)."""
    return evidence.passage or semantic_text(title, text)


def _semantics(watch: WatchConfig, lead: np.ndarray, passage: np.ndarray,
               spec: EmbeddingSpec, model: WatchModel | None = None) -> Semantics:
    sentences = description_sentences(watch)
    vectors = _description_vectors(tuple(sentences), spec)
    lead_sim, best = _semantic(vectors, lead)
    passage_sim, _ = _semantic(vectors, passage)
    learned = (model.term(lead, passage)  # a model of another width never applies
               if model is not None and model.lead_weights.size == lead.size else None)
    return Semantics(lead_sim, passage_sim, sentences[best] if best else None, learned)


def _encode_unique(texts: list[str], spec: EmbeddingSpec) -> np.ndarray:
    """One row per text, each distinct text encoded once (a short article's passage is
    often its lead)."""
    unique = list(dict.fromkeys(texts))
    vectors = spec.encode(unique)
    row = {text: i for i, text in enumerate(unique)}
    return vectors[[row[text] for text in texts]] if texts else vectors


def score_text(watch: WatchConfig, title: str, text: str, *,
               embedding: Sequence[float] | np.ndarray | None = None,
               passage_embedding: Sequence[float] | np.ndarray | None = None,
               model: str = DEFAULT_MODEL, device: str = "cpu",
               spec: EmbeddingSpec | None = None,
               watch_model: WatchModel | None = None) -> RelevanceScore:
    """Score one text. ``embedding`` / ``passage_embedding``: precomputed, L2-normalised
    embeddings of ``semantic_text(title, text)`` and of ``passage_text(...)`` (then the model
    is only needed for the description). ``spec`` (the configured backend) beats
    ``model``/``device``. ``watch_model``: the watch's own fitted model (``scorer_for``
    finds it; pipeline/watch_model.py), else the shipped coefficients."""
    spec = spec or EmbeddingSpec(model, device)
    evidence = keyword_evidence(watch, title, text)
    if embedding is None and not _needs_semantic(evidence):
        return _combine(watch, evidence, None)
    texts = [semantic_text(title, text), passage_text(evidence, title, text)]
    given = [embedding, passage_embedding]
    todo = [i for i in (0, 1) if given[i] is None]
    if todo:
        encoded = _encode_unique([texts[i] for i in todo], spec)
        for row, i in enumerate(todo):
            given[i] = encoded[row]
    lead, passage = (np.asarray(v, dtype=np.float32) for v in given)
    return _combine(watch, evidence, _semantics(watch, lead, passage, spec, watch_model),
                    watch_model)


def _record_text(record: dict[str, Any]) -> tuple[str, str]:
    title = record.get("title") or record.get("entry_title") or ""
    text = record.get("text") or record.get("summary") or ""
    return str(title), str(text)


@dataclass(slots=True)
class Embedded:
    """Keyword evidence for every record, and the lead and passage vectors of those with a
    keyword (``rows``: their indices, in order)."""

    evidence: list[KeywordEvidence]
    rows: list[int]
    leads: np.ndarray
    passages: np.ndarray


def embed_records(watch: WatchConfig, records: list[dict[str, Any]],
                  spec: EmbeddingSpec) -> Embedded:
    """What scoring ``records`` needs: one encode call for all the texts that have keyword
    evidence (lead and passage; a text that is both is encoded once)."""
    texts = [_record_text(record) for record in records]
    evidence = [keyword_evidence(watch, title, text) for title, text in texts]
    todo = [i for i, ev in enumerate(evidence) if _needs_semantic(ev)]
    wanted = [semantic_text(*texts[i]) for i in todo]
    wanted += [passage_text(evidence[i], *texts[i]) for i in todo]
    embedded = _encode_unique(wanted, spec) if todo else np.zeros((0, 0), dtype=np.float32)
    return Embedded(evidence, todo, embedded[:len(todo)], embedded[len(todo):])


def score_records(watch: WatchConfig, records: list[dict[str, Any]], *,
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  model: str = DEFAULT_MODEL, device: str = "cpu",
                  spec: EmbeddingSpec | None = None,
                  watch_model: WatchModel | None = None) -> list[RelevanceScore]:
    """Score many records (``title`` and ``text`` keys) with one encode call for all the
    texts that have keyword evidence; same results as ``score_text`` one by one."""
    spec = spec or EmbeddingSpec(model, device, batch_size=batch_size)
    embedded = embed_records(watch, records, spec)
    results: list[RelevanceScore | None] = [None] * len(records)
    for row, i in enumerate(embedded.rows):
        semantics = _semantics(watch, embedded.leads[row], embedded.passages[row], spec,
                               watch_model)
        results[i] = _combine(watch, embedded.evidence[i], semantics, watch_model)
    return [result if result is not None else _combine(watch, ev, None)
            for result, ev in zip(results, embedded.evidence, strict=True)]


def scorer_id(model: str = DEFAULT_MODEL, watch_model: str = "") -> str:
    """What the scores depend on besides the watch: the scorer version, the embedding model
    and the watch's own fitted model if it has one (its digest), part of the alert stage's
    watch fingerprint, so a change re-scores stories."""
    learned = f"/{watch_model}" if watch_model else ""
    return f"relevance/{SCORER_VERSION}/{model or DEFAULT_MODEL}{learned}"


def watch_model_for(watch: WatchConfig, settings: Settings) -> WatchModel | None:
    """The watch's own fitted model under these settings (pipeline/watch_model.py), if one
    applies."""
    from pipeline.watch_model import find_watch_model

    return find_watch_model(watch, EmbeddingSpec.of(settings), settings.data_dir)


def scorer_for(settings: Settings) -> Callable[[WatchConfig, list[dict[str, Any]]],
                                                list[RelevanceScore]]:
    """``score_records`` bound to the configured embedding model, backend, device and batch
    size, with each watch's own fitted model where one applies."""
    spec = EmbeddingSpec.of(settings)

    def scorer(watch: WatchConfig, records: list[dict[str, Any]]) -> list[RelevanceScore]:
        return score_records(watch, records, spec=spec,
                             watch_model=watch_model_for(watch, settings))

    return scorer
