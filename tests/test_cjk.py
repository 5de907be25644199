"""CJK text for SQLite FTS5: why the text is prepared (the tokenizers measured) and that the
preparation round-trips. The Chinese sentences are written for these tests."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.cjk import display_text, fts_text, has_cjk, query_variants

DOCS = [
    "國防部表示，今天在臺灣周邊偵獲共機23架次。",
    "立法院三讀通過國會改革法案，民眾在立法院外抗議。",
    "凱米颱風登陸宜蘭，全台停班停課。",
    "台积电熊本厂开幕，张忠谋出席。",
    "The defence ministry said 23 aircraft were seen.",
]
# (query, the documents it must find): words of two, three and four characters, and English.
QUERIES = [("國防部", {0}), ("臺灣", {0}), ("共機", {0}), ("立法院", {1}), ("颱風", {2}),
           ("熊本", {3}), ("停班停課", {2}), ("ministry said", {4})]


def _found(tokenizer: str, prepare) -> dict[str, set[int]]:
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE f USING fts5(text, tokenize='{tokenizer}')")
    for rowid, doc in enumerate(DOCS):
        conn.execute("INSERT INTO f (rowid, text) VALUES (?, ?)", (rowid, prepare(doc)))
    found = {q: {r[0] for r in conn.execute("SELECT rowid FROM f WHERE f MATCH ?",
                                            ('"' + prepare(q) + '"',))} for q, _ in QUERIES}
    conn.close()
    return found


def _recall(found: dict[str, set[int]]) -> int:
    return sum(found[q] == expected for q, expected in QUERIES)


def test_unicode61_alone_finds_no_chinese_word():
    found = _found("unicode61", lambda t: t)
    assert _recall(found) == 1  # only the English phrase
    assert found["國防部"] == set()


def test_trigram_misses_two_character_words():
    found = _found("trigram", lambda t: t)
    assert found["國防部"] == {0} and found["停班停課"] == {2}
    assert found["臺灣"] == found["颱風"] == found["熊本"] == set()


def test_one_token_per_character_finds_every_word():
    found = _found("porter unicode61 remove_diacritics 2", fts_text)
    assert _recall(found) == len(QUERIES)


def test_prepared_text_reads_as_written():
    for doc in DOCS:
        assert display_text(fts_text(doc)).replace(" ", "") == doc.replace(" ", "")
    assert display_text(fts_text(DOCS[0])) == "國防部表示，今天在臺灣周邊偵獲共機 23 架次。"
    assert display_text("[[國 防 部]] 表 示") == "[[國防部]]表示"
    assert fts_text("Taiwan Strait") == "Taiwan Strait" and not has_cjk("Taiwan")


@pytest.mark.parametrize(("phrase", "spellings"), [
    ("台灣", {"台灣", "臺灣", "台湾"}), ("臺灣", {"台灣", "臺灣", "台湾"}),
    ("国防部", {"国防部", "國防部"}), ("Taiwan", {"Taiwan"}),
])
def test_query_variants_cover_traditional_and_simplified(phrase, spellings):
    variants = query_variants(phrase)
    assert variants[0] == phrase and spellings <= set(variants)
