"""Language detection: script first (Chinese, Japanese, Korean), then the declaration, then
py3langid on long enough text. All text here is written for these tests."""

from __future__ import annotations

import pytest

from pipeline.language import (
    SIMPLIFIED,
    TRADITIONAL,
    detect_language,
    is_chinese,
    language_name,
    normalise_language,
)

TRADITIONAL_TEXT = "國防部表示，今天在臺灣周邊偵獲多架軍機與艦艇，國軍已嚴密監控。"
SIMPLIFIED_TEXT = "国防部表示，今天在台湾周边发现多架军机与舰艇，军方已严密监控。"
ENGLISH_TEXT = ("The city council voted on Tuesday to extend the opening hours of every public "
                "library, after a survey found that most readers wanted to visit at weekends.")


@pytest.mark.parametrize(("tag", "code"), [
    ("zh-TW", TRADITIONAL), ("zh_Hant_HK", TRADITIONAL), ("zh-cn", SIMPLIFIED),
    ("zh-Hans", SIMPLIFIED), ("zh", "zh"), ("EN-us", "en"), ("fr_FR", "fr"),
    ("und", None), ("", None), ("12", None), (None, None),
])
def test_declared_tags_are_normalised(tag, code):
    assert normalise_language(tag) == code


def test_traditional_and_simplified_are_told_apart_by_their_characters():
    assert detect_language("國防部：共機擾臺", TRADITIONAL_TEXT) == TRADITIONAL
    assert detect_language("国防部：共机扰台", SIMPLIFIED_TEXT) == SIMPLIFIED


def test_the_script_outweighs_a_wrong_declaration():
    assert detect_language("新聞", TRADITIONAL_TEXT, declared="en") == TRADITIONAL
    assert detect_language("Library hours", ENGLISH_TEXT, declared="zh-TW") == "en"


def test_characters_common_to_both_scripts_keep_the_declared_variant():
    common = "中文日本"  # written the same in both scripts
    assert detect_language(common, common, declared="zh-TW") == TRADITIONAL
    assert detect_language(common, common, declared="zh-CN") == SIMPLIFIED
    assert detect_language(common, common) == "zh"
    assert is_chinese("zh") and is_chinese(TRADITIONAL) and not is_chinese("en")


def test_japanese_and_korean_are_not_taken_for_chinese():
    assert detect_language("東京で会議", "政府は今日、新しい計画を発表しました。") == "ja"
    assert detect_language("서울 회의", "정부는 오늘 새로운 계획을 발표했다.") == "ko"


def test_undeclared_text_is_identified_only_when_long_and_clear():
    assert detect_language("Library hours", ENGLISH_TEXT) == "en"
    assert detect_language("Obama meets Xi", "") is None  # a headline alone is too short
    assert detect_language("Library hours", "", declared="en-GB") == "en"


def test_names_for_people():
    assert language_name(TRADITIONAL) == "Chinese (Traditional)"
    assert language_name(SIMPLIFIED) == "Chinese (Simplified)"
    assert language_name("en") == "English"
    assert language_name(None) == "unknown"
    assert language_name("xh") == "xh"


@pytest.mark.parametrize("encoding", ["big5", "gb18030", "utf-8"])
def test_a_chinese_page_in_a_legacy_encoding_is_read_and_detected(encoding):
    from pipeline.extractors import extract_html

    html = (f'<html><head><meta charset="{encoding}"><title>國防部記者會</title></head><body>'
            f"<article><h1>國防部記者會</h1><p>{TRADITIONAL_TEXT * 4}</p></article></body></html>")
    page = extract_html(html.encode(encoding), "https://example.com/a")
    assert TRADITIONAL_TEXT in page.text
    assert detect_language(page.title, page.text, page.language) == TRADITIONAL


def test_the_identifier_is_released_after_each_extraction_chunk(tmp_path):
    """py3langid's model is only needed while a chunk is extracted: it is not held beside the
    embedding models (a backlog run's peak memory), and it loads again when next needed."""
    from pipeline import extract, language
    from pipeline.records import open_store
    from pipeline.settings import Settings
    from pipeline.stages import StageContext

    assert detect_language(None, ENGLISH_TEXT) == "en"
    assert language._packaged_identifier.cache_info().currsize == 1
    settings = Settings(data_dir=str(tmp_path))
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    try:
        extract.run(StageContext(store, settings, "run-1"))
    finally:
        store.close()
    assert language._packaged_identifier.cache_info().currsize == 0 and not language._held
    # the chunk unpacked the model under the deployment's model cache for the next chunks
    cache = settings.embedding.cache_dir(settings.data_dir)
    assert (language.unpacked_model_dir(cache) / "classes.json").exists()
    assert detect_language(None, ENGLISH_TEXT) == "en"  # loaded again, same verdict


POLISH_TEXT = ("Rada miasta zdecydowała we wtorek, że wszystkie biblioteki publiczne będą otwarte "
               "dłużej, ponieważ ankieta pokazała, że większość czytelników chce je odwiedzać "
               "w weekendy.")
FRENCH_TEXT = ("Le conseil municipal a voté mardi pour prolonger les horaires d'ouverture de "
               "toutes les bibliothèques publiques, après une enquête auprès des lecteurs.")


def test_a_confident_verdict_on_enough_text_overrides_a_wrong_declaration():
    """A feed that tags its Polish items English (Business Insider Polska does) gets Polish."""
    from pipeline.language import OVERRIDDEN, language_verdict

    assert language_verdict("Biblioteki dłużej otwarte", POLISH_TEXT, "en-US") == ("pl", OVERRIDDEN)
    assert language_verdict("Library hours", ENGLISH_TEXT, declared="fr") == ("en", OVERRIDDEN)


def test_a_correct_or_unprovable_declaration_stands():
    from pipeline.language import language_verdict

    assert language_verdict("Library hours", ENGLISH_TEXT, "en-GB") == ("en", "declared")
    assert language_verdict("Horaires", FRENCH_TEXT, "fr") == ("fr", "declared")
    # A headline is too short to judge: the declaration is kept, whatever the text looks like.
    assert language_verdict("Kurs dolara we wtorek", "", "en") == ("en", "declared")
    assert language_verdict("Trump thrown into a tizzy over indictment", "", "en").code == "en"
    assert language_verdict("Library hours", ENGLISH_TEXT) == ("en", "text")
    assert language_verdict("Obama meets Xi", "") == (None, None)


def test_the_extraction_stage_counts_overridden_declarations(tmp_path):
    """A feed item declared English whose summary is Polish is stored as Polish, and the run
    says how many declarations the text outweighed."""
    from pipeline.extract import LANGUAGE_FROM_TEXT, extract_pending
    from pipeline.models import FeedEntry
    from pipeline.records import open_store
    from pipeline.settings import FeedConfig, Settings

    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    try:
        (feed,) = store.sync_feeds([FeedConfig(url="https://example.com/feed.xml")])
        entries = [
            FeedEntry(link=f"https://example.com/{n}", guid=f"g{n}", title=title,
                      summary=summary, content="", published_at=None, updated_at=None,
                      language="en")
            for n, (title, summary) in enumerate([("Biblioteki dłużej otwarte", POLISH_TEXT),
                                                  ("Library hours", ENGLISH_TEXT)])]
        store.upsert_entries(feed.feed_id, "Example", entries)
        settings = Settings(data_dir=str(tmp_path))
        settings.extraction.fetch_pages = False  # feed text only: nothing downloaded
        counts = extract_pending(store, settings, "run-1")
        languages = sorted(a["language"] for a in store.iter_articles())
    finally:
        store.close()
    assert counts[LANGUAGE_FROM_TEXT] == 1
    assert languages == ["en", "pl"]


# Long enough for py3langid, in languages a feed archive mixes in (written for these tests).
SAMPLES = [
    ENGLISH_TEXT,
    "Le conseil municipal a voté mardi la prolongation des horaires d'ouverture de toutes les "
    "bibliothèques publiques, après une enquête auprès des lecteurs.",
    "Der Stadtrat hat am Dienstag beschlossen, die Öffnungszeiten aller öffentlichen "
    "Bibliotheken zu verlängern, nachdem eine Umfrage unter den Lesern stattfand.",
    "Rada miasta zagłosowała we wtorek za wydłużeniem godzin otwarcia wszystkich bibliotek "
    "publicznych po ankiecie przeprowadzonej wśród czytelników.",
    "Городской совет во вторник проголосовал за продление часов работы всех публичных "
    "библиотек после опроса читателей.",
    "El ayuntamiento votó el martes ampliar el horario de todas las bibliotecas públicas, "
    "después de una encuesta entre los lectores de la ciudad.",
]


def test_the_memory_mapped_model_gives_the_packaged_models_verdicts(tmp_path):
    from pipeline import language

    packaged = language._packaged_identifier()
    expected = [packaged.classify(text) for text in SAMPLES]
    language.release_identifier()
    with language.identifier_held(tmp_path):
        assert language._held and language._identifier() is language._held[0]
        assert [language._identifier().classify(text) for text in SAMPLES] == expected
        assert [detect_language(None, text) for text in SAMPLES] == \
            ["en", "fr", "de", "pl", "ru", "es"]
    assert not language._held


def test_the_model_is_unpacked_once_and_then_only_mapped(tmp_path, monkeypatch):
    from pipeline import language

    with language.identifier_held(tmp_path):
        pass

    def unpack_again(_folder):
        raise AssertionError("unpacked twice")

    monkeypatch.setattr(language, "_unpack", unpack_again)
    with language.identifier_held(tmp_path):
        assert language._held
        assert detect_language(None, ENGLISH_TEXT) == "en"


def test_an_unwritable_cache_falls_back_to_the_packaged_model(tmp_path, caplog):
    from pipeline import language

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    with language.identifier_held(blocker):
        assert not language._held  # the packaged model serves instead
        assert detect_language(None, SAMPLES[2]) == "de"
    assert "loading the packaged model" in caplog.text
    assert language._packaged_identifier.cache_info().currsize == 0  # released all the same


def test_a_damaged_cache_falls_back_to_the_packaged_model(tmp_path):
    from pipeline import language

    with language.identifier_held(tmp_path):
        pass
    folder = language.unpacked_model_dir(tmp_path)
    (folder / "ptc.npy").write_bytes(b"not an array")
    with language.identifier_held(tmp_path):
        assert not language._held
        assert detect_language(None, SAMPLES[1]) == "fr"
