"""The Taiwan watch on Chinese text: CJK keywords match inside words, English ones keep their
word boundaries. Text written for these tests (tests/support/crosslingual.py)."""

from __future__ import annotations

import pytest

from pipeline.relevance import default_taiwan_watch, keyword_evidence, score_text
from tests.support.crosslingual import DRILL_ZH, UNRELATED


def test_chinese_keywords_match_inside_a_sentence():
    evidence = keyword_evidence(default_taiwan_watch(), "國防部：共機擾臺",
                                "國防部今天表示，在臺灣周邊偵獲共機，兩岸情勢緊張。")
    assert evidence.title_terms == {"國防部": 1, "共機": 1}
    assert evidence.lead_terms == {"國防部": 1, "臺灣": 1, "共機": 1, "兩岸": 1}


def test_english_keywords_keep_their_word_boundaries():
    evidence = keyword_evidence(default_taiwan_watch(), "Taiwanese tea", "The KMTX index rose.")
    assert evidence.title_terms == {"Taiwanese": 1} and evidence.lead_terms == {}


def test_chinese_sentences_are_counted():
    evidence = keyword_evidence(default_taiwan_watch(), "標題",
                                "第一句提到臺灣。第二句沒有。第三句也沒有！第四句呢？")
    assert (evidence.keyword_sentences, evidence.sentences) == (1, 4)


@pytest.mark.slow
def test_a_chinese_report_about_taiwan_is_relevant_and_an_unrelated_one_is_not():
    watch = default_taiwan_watch()
    assert score_text(watch, DRILL_ZH["title"], DRILL_ZH["text"]).relevant
    market = UNRELATED[1]
    result = score_text(watch, market["title"], market["text"])
    assert not result.relevant and result.reasons == ["no keyword match"]
