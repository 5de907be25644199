"""Does a text read like news or like a feature? Two cues from the wording itself.

A development is reported: an institutional actor (a ministry, the president, officials, a
court, a company) *said*, *announced*, *signed* or *arrested* something. A feature about a
place (travel, food, culture, a letter, a review) is narrated or addressed: *I*, *we*,
*you*. The relevance scorer (pipeline/relevance.py) reads both cues as two features beside
its keyword evidence, so an article that names Taiwan in a travel piece or a diary is held
to more than its keyword count, and a brief with one Taiwan sentence that reports what an
official did gets credit for reading like news.

The cues are word lists, English and Chinese (where a few words cover it); they are not
fitted to any labelled article and depend on no publisher's URL scheme or section names.
``reporting`` is a share of sentences and ``personal`` a rate per 100 words, so a feed
summary and a 2,000-word piece are on one scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REPORTING_VERB = re.compile(
    r"\b(?:said|says|say|told|tells|announced|announces|announce|stated|added|"
    r"according to|reported|declared|confirmed|warned|urged|denied|insisted|claimed|"
    r"accused|called for|pledged|vowed)\b"
    r"|表示|指出|宣布|說|说|稱|称", re.IGNORECASE)
# An action reported in the past tense: regular "-ed" forms and the common irregular ones.
_ACTION_VERB = re.compile(
    r"\b(?:\w+ed|signed|won|lost|held|met|began|launched|passed|approved|rejected|arrested|"
    r"sentenced|elected|killed|fired|sold|bought|agreed|voted|protested|visited|cut|"
    r"raised|struck|hit)\b", re.IGNORECASE)
_ACTOR = re.compile(
    r"\b(?:ministry|minister|ministers|government|governments|president|premier|"
    r"officials?|spokes(?:man|woman|person)|parliament|legislature|lawmakers?|court|police|"
    r"military|army|navy|agency|council|cabinet|party|authorities|embassy|department|"
    r"administration|prosecutors?|company|companies|firm|chairman|chief executive|ceo)\b"
    r"|政府|部長|部长|總統|总统|官員|官员|發言人|发言人|外交部|法院|警方", re.IGNORECASE)
# "us" only in lower case ("US" is the United States); "I" only in upper case.
_PERSONAL = re.compile(
    r"\b(?:I|me|my|myself|mine)\b|\b(?:[Ww]e|[Oo]ur|ours|us)\b|\b(?:[Yy]ou|[Yy]our|yours)\b"
    r"|我|你")


@dataclass(frozen=True, slots=True)
class GenreCues:
    """Counts behind the two cues: sentences that report an actor's statement or action,
    and first- or second-person words."""

    sentences: int = 0
    reporting_sentences: int = 0
    words: int = 0
    personal_words: int = 0

    @property
    def reporting(self) -> float:
        """Share of sentences in which an institutional actor says or does something."""
        return self.reporting_sentences / max(1, self.sentences)

    @property
    def personal(self) -> float:
        """First- and second-person words per 100 words."""
        return 100.0 * self.personal_words / max(1, self.words)


def is_reporting(sentence: str) -> bool:
    """An institutional actor with a reporting or (past-tense) action verb."""
    return (_ACTOR.search(sentence) is not None
            and (_REPORTING_VERB.search(sentence) is not None
                 or _ACTION_VERB.search(sentence) is not None))


def genre_cues(sentences: list[str]) -> GenreCues:
    """The cues of a text split into sentences."""
    return GenreCues(
        sentences=len(sentences),
        reporting_sentences=sum(is_reporting(s) for s in sentences),
        words=sum(len(s.split()) for s in sentences),
        personal_words=sum(len(_PERSONAL.findall(s)) for s in sentences))
