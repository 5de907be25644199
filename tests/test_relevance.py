"""Watch relevance (pipeline/relevance.py) on short fictional articles written for these tests.

Keyword evidence, excludes and the score formula are checked without the embedding model;
the `slow` tests load it once per module and check whole verdicts.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import embeddings, relevance
from pipeline.alerts.engine import watch_fingerprint
from pipeline.relevance import (
    LEAD_WORDS,
    SECTION_SENTENCES,
    Semantics,
    default_taiwan_watch,
    keyword_evidence,
    logit_parts,
    score_records,
    score_text,
    scorer_for,
    semantic_text,
)
from pipeline.settings import Settings, WatchConfig

PLA_TITLE = "Chinese warships and jets encircle Taiwan in large-scale drills"
PLA_TEXT = (
    "China's military launched two days of air and naval exercises around Taiwan on Monday, "
    "sending dozens of fighter jets and warships into the waters east of the island in what "
    "Beijing called a warning to separatist forces. The People's Liberation Army's Eastern "
    "Theatre Command said the drills tested its ability to blockade ports and strike key "
    "targets. Taiwan's defence ministry in Taipei said it had tracked 71 aircraft and 14 navy "
    "vessels, some crossing the median line of the Taiwan Strait, and had put missile units "
    "on alert. The presidential office condemned the exercises as provocative and urged "
    "Beijing to show restraint. Analysts said the scale of the operation exceeded earlier "
    "drills. The United States said it was monitoring the situation closely and reaffirmed "
    "its commitment to help Taiwan defend itself. Shipping companies reported delays at the "
    "port of Kaohsiung as vessels waited for the exercise zones to close. Taiwanese officials "
    "said civilian flights had been rerouted, and the coastguard was shadowing Chinese ships."
)
PHONE_TITLE = "Orbital unveils Nova 7 phone with folding screen and week-long battery"
PHONE_TEXT = (
    "The smartphone maker Orbital has unveiled the Nova 7, a folding phone that the company "
    "says will run for a week on a single charge. At a launch event in San Francisco, chief "
    "executive Mara Lind showed off the handset's hinge, which she said had been tested for "
    "half a million folds, and a camera that can zoom thirty times. The device goes on sale "
    "next month at $1,299, undercutting rival folding models. Reviewers who tried it praised "
    "the brightness of the inner display but said it was heavier than expected. "
    "Orbital said the battery uses a new silicon-carbon chemistry and that the chips are "
    "made by a Taiwanese supplier on its newest process. Analysts expect the company to sell "
    "about four million units in the first year, helped by trade-in offers in Europe and "
    "North America. The firm also announced a cheaper model with a smaller screen, aimed at "
    "students, and said it would extend software updates to seven years for all its phones."
)
TRAVEL_TITLE = "Ten islands for winter sun without the crowds"
TRAVEL_TEXT = (
    "Looking for warmth when the days are short? Our writers pick ten islands where the "
    "beaches are quiet and the food is memorable. In Sri Lanka, the south coast's surf "
    "towns are calm from December. Madeira offers mild hiking weather and dramatic cliffs. "
    "Further east, Taiwan, Okinawa and Palawan reward travellers with hot springs, night "
    "markets and coral reefs. In the Caribbean, Dominica's rainforests and rivers are a "
    "change from the resort islands, while Tasmania's summer brings long evenings and "
    "wineries. Zanzibar's spice farms and old stone town are best explored on foot. The "
    "Canary Islands remain a reliable choice for a short break, and Mauritius suits families "
    "looking for calm lagoons. Book early: flights fill up in the school holidays, and "
    "prices for small guesthouses rise quickly after the autumn."
)
RAIL_TEXT = (
    "A new high-speed rail line opened on Saturday, cutting the journey between the two "
    "largest cities to ninety minutes. Officials said trains would run every twenty minutes "
    "at peak times and that fares would be capped for the first year. Thousands of people "
    "queued at the stations to ride the first services, and local businesses said they "
    "expected more visitors. The project took eight years to build and ran over budget, "
    "prompting criticism from opposition politicians. Engineers said tunnels through the "
    "mountains had been the hardest part. The line will eventually be extended south. "
    "Planners hope it will ease congestion on the motorway, which is often jammed at "
    "weekends. The signalling system was supplied by a consortium of European and Japanese "
    "firms, and the trains were assembled locally. Ticket sales opened online last week and "
    "the first month is almost sold out, the operator said in a statement on its website. "
    "Some commuters said they would wait to see whether the timetable proved reliable."
)
SUMMARY_TITLE = "China holds live-fire drills near Taiwan after president's US stopover"
SUMMARY_TEXT = (
    "China's army began live-fire exercises in the Taiwan Strait on Thursday, a day after "
    "Taiwan's president returned from a stopover in the United States, in a show of force "
    "that Taipei called an attempt to intimidate the island's 23 million people."
)


def _with_body_mention(text: str, sentence: str) -> str:
    """``text`` with ``sentence`` inserted after the lead (so the mention is body-only)."""
    words = text.split()
    return " ".join([*words[:LEAD_WORDS + 10], sentence, *words[LEAD_WORDS + 10:]])


# ---- keyword evidence (no model) --------------------------------------------------------


def test_keywords_match_whole_words_case_insensitively_and_phrases_across_hyphens() -> None:
    watch = WatchConfig(name="t", keywords=["Taiwan", "Taiwan Strait", "cross-strait", "KMT"])
    text = ("TAIWAN and taiwan's envoy met Taiwan-based firms. Taiwanese is not a keyword; "
            "Taiwanfoo is not a word. Cross strait talks, cross-strait ties, the Taiwan Strait "
            "and the taiwan  strait. The kmt won; KMTV is a channel.")
    ev = keyword_evidence(watch, "", text)
    assert ev.lead_terms == {"Taiwan": 3, "cross-strait": 2, "Taiwan Strait": 2, "KMT": 1}
    assert ev.title_hits == 0 and ev.body_hits == 0


def test_hits_are_counted_by_position() -> None:
    watch = WatchConfig(name="t", keywords=["Taipei"])
    filler = " ".join(["word"] * LEAD_WORDS)
    ev = keyword_evidence(watch, "Storm reaches Taipei", f"Taipei braced. {filler} Taipei Taipei")
    assert (ev.title_hits, ev.lead_hits, ev.body_hits) == (1, 1, 2)
    assert ev.words == LEAD_WORDS + 4


def test_title_copied_into_text_is_not_counted_twice() -> None:
    watch = WatchConfig(name="t", keywords=["Taiwan"])
    ev = keyword_evidence(watch, "Taiwan votes", "Taiwan votes Polls opened at eight.")
    assert (ev.title_hits, ev.lead_hits) == (1, 0)


def test_share_of_sentences_and_position_of_the_first_mention() -> None:
    watch = WatchConfig(name="t", keywords=["Taipei"])
    text = "Rain fell. Taipei flooded. Trains stopped. Taipei schools shut."
    ev = keyword_evidence(watch, "Storm", text)
    assert (ev.sentences, ev.keyword_sentences) == (4, 2)
    assert ev.first_hit == pytest.approx(2 / 9)  # the third of nine words
    assert ev.features() == (0.0, 0.5, pytest.approx(7 / 9), 2 / 4, 0.0, 0.0,
                             0.0, 0.0)  # one section; no actor, no I/we/you
    none = keyword_evidence(watch, "Storm", "Rain fell. Trains stopped.")
    assert none.features() == (0.0,) * 8 and logit_parts(none, None)[1] == 0.0
    assert none.passage == "" and none.passage_quote == ""


def test_a_short_text_counts_as_three_sentences() -> None:
    """One mention in a two-sentence summary is not 'half about Taiwan'."""
    watch = WatchConfig(name="t", keywords=["Taiwan"])
    ev = keyword_evidence(watch, "", "Chips are scarce. A Taiwan plant is idle.")
    assert ev.features()[1] == pytest.approx(1 / 3)


def test_headline_only_item_is_scored_on_its_title() -> None:
    watch = WatchConfig(name="t", keywords=["Taiwan"])
    ev = keyword_evidence(watch, "Taiwan elects a president", "")
    assert ev.title_hits == 1 and ev.keyword_sentences == 1 and ev.first_hit == 0.0
    assert ev.features()[3] == pytest.approx(1 / 3)  # its own section, at least 3 sentences
    assert ev.passage == "Taiwan elects a president" and ev.passage_in_lead


def test_keyword_evidence_raises_the_logit_in_order_of_strength() -> None:
    """Title, then a text that keeps returning to the topic early, then a late aside."""
    filler = " ".join(f"Sentence {i} is about something else." for i in range(20))
    watch = WatchConfig(name="t", keywords=["Taiwan"])
    about = keyword_evidence(watch, "Taiwan votes", f"Taiwan is voting. {filler} "
                             "Taiwan counts. Taiwan waits.")
    early = keyword_evidence(watch, "Votes", f"Taiwan is voting. {filler}")
    aside = keyword_evidence(watch, "Votes", f"{filler} Taiwan too.")
    parts = [logit_parts(ev, Semantics(0.3, 0.3))[1] for ev in (about, early, aside)]
    assert parts[0] > parts[1] > parts[2] > 0


BRIEF_FILLER = [f"Item {i} reports on a harbour, a court or a market elsewhere." for i in range(12)]


def test_a_section_of_its_own_counts_where_a_background_clause_does_not() -> None:
    """A paragraph about Taiwan inside a broader article is a point of its own."""
    watch = WatchConfig(name="t", keywords=["Taiwan", "Taipei"])
    section = ("Taiwan's legislature passed the budget on Friday. The opposition in Taipei "
               "walked out. Taiwan's premier said the vote showed unity.")
    broader = " ".join([*BRIEF_FILLER[:10], section, *BRIEF_FILLER[10:]])
    clause = " ".join([*BRIEF_FILLER[:6], "Ports from Chile to Taiwan reported delays.",
                       *BRIEF_FILLER[6:]])
    with_section = keyword_evidence(watch, "World news in brief", broader)
    with_clause = keyword_evidence(watch, "World news in brief", clause)
    assert with_section.section_sentences == 3 and with_clause.section_sentences == 1
    assert with_section.features()[3] == 3 / SECTION_SENTENCES
    assert logit_parts(with_section, None)[1] > logit_parts(with_clause, None)[1]
    assert with_section.passage == section  # the densest run of PASSAGE_SENTENCES
    assert with_section.passage_quote == "Taiwan's legislature passed the budget on Friday."
    assert not with_section.passage_in_lead  # it starts after the first 100 words


def test_evidence_groups_count_once_each_and_only_beside_a_keyword() -> None:
    """The topic's own vocabulary ("HTC", "the KMT") says what kind of Taiwan story it is,
    but only in a sentence that names a keyword, and a group counts once."""
    watch = WatchConfig(name="t", keywords=["Taiwanese"],
                        evidence={"companies": ["HTC", "Acer"], "politics": ["KMT"],
                                  "places": ["Hsinchu"]})
    text = ("The Taiwanese phone maker HTC cut its forecast as Acer and HTC shares fell. "
            "Hsinchu is where the plant is. The KMT was not involved.")
    ev = keyword_evidence(watch, "Phones", text)
    assert ev.evidence_terms == {"companies": {"HTC": 2, "Acer": 1}}
    assert ev.features()[4] == 1.0
    plain = keyword_evidence(watch.model_copy(update={"evidence": {}}), "Phones", text)
    assert plain.features()[4] == 0.0
    assert logit_parts(ev, None)[1] > logit_parts(plain, None)[1]
    assert "beside it: companies (HTC ×2, Acer)" in relevance._combine(watch, ev, None).reasons


def test_evidence_groups_in_the_title_count_once_each() -> None:
    """A headline about one of the topic's own entities ("Acer …") counts, however rarely
    the text names Taiwan; it is reported, and without a keyword it adds nothing."""
    watch = WatchConfig(name="t", keywords=["Taiwanese"],
                        evidence={"companies": ["HTC", "Acer"], "places": ["Hsinchu"]})
    text = "The Taiwanese computer maker reported a loss. Sales of tablets were weak."
    ev = keyword_evidence(watch, "Acer and HTC hit by weak tablet sales", text)
    assert ev.title_evidence_terms == {"companies": {"Acer": 1, "HTC": 1}}
    assert ev.features()[5] == 1.0 and ev.features()[4] == 0.0  # not beside the keyword
    reasons = relevance._combine(watch, ev, None).reasons
    assert "title names: companies (Acer, HTC)" in reasons
    bare = keyword_evidence(watch, "Acer hit by weak tablet sales", "Sales were weak.")
    assert bare.total == 0 and relevance._combine(watch, bare, None).score < 0.01


def test_evidence_terms_alone_never_make_an_article_score(monkeypatch: Any) -> None:
    monkeypatch.setattr(embeddings, "encode", _no_model)
    watch = default_taiwan_watch()
    result = score_text(watch, "Foxconn and HTC report results",
                        "Foxconn and HTC reported results. Hsinchu plants were busy.")
    assert result.semantic is None and result.score < 0.01
    assert result.evidence.evidence_terms == {}


def test_the_shipped_watch_groups_the_rubric_vocabulary() -> None:
    evidence = default_taiwan_watch().evidence
    assert {"politics", "cross-strait", "defence", "standing", "companies", "places",
            "disasters"} == set(evidence)
    assert {"TSMC", "Foxconn", "HTC"} <= set(evidence["companies"])
    assert "WHO" not in evidence["standing"]  # would match every "who"


def test_the_passage_quote_is_cut_around_the_keyword() -> None:
    watch = WatchConfig(name="t", keywords=["Taiwan"])
    long_sentence = ("During a long day of meetings in the capital with officials from many "
                     "ministries and agencies, the foreign minister told his counterpart that "
                     "Taiwan remains the biggest obstacle between the two countries and that "
                     "nothing else on the agenda mattered as much as that question did.")
    ev = keyword_evidence(watch, "Talks", long_sentence)
    assert ev.passage_in_lead and "Taiwan remains the biggest obstacle" in ev.passage_quote
    assert ev.passage_quote.startswith("…") and ev.passage_quote.endswith("…")
    assert len(ev.passage_quote) <= 162


def test_exclude_in_title_or_lead_suppresses_without_the_model(monkeypatch: Any) -> None:
    monkeypatch.setattr(embeddings, "encode", _no_model)
    watch = default_taiwan_watch().model_copy(update={"exclude": ["median line"]})
    result = score_text(watch, PLA_TITLE, PLA_TEXT)
    assert result.score == 0.0 and not result.relevant
    assert any(r.startswith("excluded: 'median line' in lead") for r in result.reasons)
    assert result.keyword > 0  # the evidence is still reported


def test_no_keyword_means_no_embedding_and_a_negligible_score(monkeypatch: Any) -> None:
    monkeypatch.setattr(embeddings, "encode", _no_model)
    result = score_text(default_taiwan_watch(), "Rail line opens", RAIL_TEXT)
    assert result.score < 0.01 and not result.relevant
    assert result.semantic is None and result.reasons == ["no keyword match"]
    [batch] = score_records(default_taiwan_watch(), [{"title": "Rail", "text": RAIL_TEXT}])
    assert batch.score == result.score


def test_watch_without_keywords_falls_back_to_its_name() -> None:
    ev = keyword_evidence(WatchConfig(name="taiwan"), "Taiwan votes", "")
    assert ev.title_terms == {"taiwan": 1}


def test_scorer_for_uses_the_configured_model_and_backend(monkeypatch: Any) -> None:
    import numpy as np

    from pipeline import embeddings

    calls: list[tuple[str, str, int, str]] = []

    def fake_encode(texts: list[str], model: str, device: str, batch_size: int = 32, *,
                    backend: str, cache_dir: str | None = None, threads: int = 0) -> Any:
        calls.append((model, device, batch_size, backend))
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0

    monkeypatch.setattr(embeddings, "encode", fake_encode)
    settings = Settings(embedding={"model": "/models/other", "device": "cpu", "batch_size": 7,
                                   "backend": "onnx"})
    [result] = scorer_for(settings)(default_taiwan_watch(), [{"title": PLA_TITLE,
                                                             "text": PLA_TEXT}])
    assert result.semantic is not None
    assert {model for model, *_ in calls} == {"/models/other"} and (
        "/models/other", "cpu", 7, "onnx") in calls


def test_watch_fingerprint_follows_scorer_version_and_model(monkeypatch: Any) -> None:
    """Changing the scorer (or the embedding model) re-scores cached stories."""
    watch = default_taiwan_watch()
    base = watch_fingerprint(watch)
    assert watch_fingerprint(watch, "default") == base
    assert watch_fingerprint(watch, "/models/other") != base
    assert watch_fingerprint(watch.model_copy(update={"min_score": 0.6})) != base
    assert watch_fingerprint(watch.model_copy(update={"evidence": {}})) != base
    assert watch_fingerprint(watch, "default", "0123abcd") != base  # a fitted watch model
    monkeypatch.setattr(relevance, "SCORER_VERSION", relevance.SCORER_VERSION + "-next")
    assert watch_fingerprint(watch) != base


def test_watch_time_zone_must_be_an_iana_zone() -> None:
    from pipeline.settings import ConfigError, load_settings

    assert WatchConfig(name="w", timezone="Asia/Taipei").timezone == "Asia/Taipei"
    with pytest.raises(ConfigError, match=r"^settings: watches\.0\.timezone: .*unknown time "
                       r"zone 'Mars/Olympus' \(use an IANA name") as info:
        load_settings(None, watches=[{"name": "w", "timezone": "Mars/Olympus"}])
    assert "\n" not in str(info.value)


def test_default_watch() -> None:
    watch = default_taiwan_watch()
    assert watch.name == "taiwan" and watch.min_score == WatchConfig(name="x").min_score
    for term in ("Taiwan", "Taipei", "Taiwanese", "Taiwan Strait", "cross-strait",
                 "Tsai Ing-wen", "Kuomintang", "KMT", "DPP"):
        assert term in watch.keywords
    assert watch.description.startswith("New Taiwan-related developments")
    assert "PLA" in watch.description and not watch.exclude


@pytest.mark.parametrize("path", ["config/newswatch.yaml", "config/newswatch.compose.yaml",
                                  "examples/demo.yaml"])
def test_shipped_configs_carry_the_default_watch(path: str) -> None:
    """One taiwan watch everywhere: the configs match default_taiwan_watch() exactly."""
    from pipeline.settings import load_settings

    (watch,) = [w for w in load_settings(path).watches if w.name == "taiwan"]
    default = default_taiwan_watch()
    assert (watch.description, watch.keywords, watch.exclude, watch.evidence,
            watch.min_score) == (default.description, default.keywords, default.exclude,
                                 default.evidence, default.min_score)


def _no_model(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the embedding model should not be needed here")


# ---- whole verdicts (embedding model) ---------------------------------------------------


@pytest.fixture(scope="module")
def watch() -> WatchConfig:
    """The shipped watch, with the model loaded once for the module."""
    from pipeline.embeddings import load_model

    load_model()
    return default_taiwan_watch()


@pytest.mark.slow
def test_pla_drill_article_is_relevant_with_reasons(watch: WatchConfig) -> None:
    result = score_text(watch, PLA_TITLE, PLA_TEXT)
    assert result.relevant and result.score >= 0.75
    assert result.reasons[0] == "Taiwan in title"
    assert result.reasons[1].startswith("lead: \u201c…launched two days of air and naval "
                                        "exercises around Taiwan on Monday")
    # the densest passage is the closing one (three sentences in a row name the keywords)
    assert result.passage is not None and result.passage["where"] == "body"
    assert result.passage["quote"].startswith("The United States said it was monitoring")
    assert result.passage_semantic is not None and result.passage_semantic > 0.4
    assert any(r.startswith("lead mentions Taiwan ×2") for r in result.reasons)
    assert any(r.endswith(f"of {SECTION_SENTENCES} in a row") for r in result.reasons)
    assert any(r.startswith("similarity to description") for r in result.reasons)
    assert result.semantic is not None and result.semantic > 0.5


@pytest.mark.slow
def test_phone_launch_naming_a_taiwanese_supplier_is_not_relevant(watch: WatchConfig) -> None:
    result = score_text(watch, PHONE_TITLE, PHONE_TEXT)
    assert not result.relevant and result.score < 0.1
    assert "1 mention in body" in result.reasons


@pytest.mark.slow
def test_travel_piece_listing_taiwan_is_not_relevant(watch: WatchConfig) -> None:
    result = score_text(watch, TRAVEL_TITLE, TRAVEL_TEXT)
    assert not result.relevant and result.score < 0.2


@pytest.mark.slow
def test_a_title_or_one_aside_alone_is_not_a_development(watch: WatchConfig) -> None:
    """Version 3 weighs where the text talks about Taiwan: a headline naming it over a text
    that never does, or one aside in the body, stays far below the threshold."""
    in_title = score_text(watch, "Taiwan's new high-speed rail line opens to crowds", RAIL_TEXT)
    in_body = score_text(watch, "New high-speed rail line opens to crowds",
                         _with_body_mention(RAIL_TEXT, "Taiwan's operator sent a delegation."))
    assert in_body.evidence.body_hits == 1 and in_title.evidence.title_hits == 1
    assert not in_title.relevant and not in_body.relevant
    assert max(in_title.score, in_body.score) < 0.1
    assert in_body.passage is not None and in_body.passage["where"] == "body"


@pytest.mark.slow
def test_feed_summary_about_taiwan_is_relevant(watch: WatchConfig) -> None:
    result = score_text(watch, SUMMARY_TITLE, SUMMARY_TEXT)
    assert result.relevant


@pytest.mark.slow
def test_exclude_in_body_only_does_not_suppress(watch: WatchConfig) -> None:
    excluding = watch.model_copy(update={"exclude": ["coastguard"]})
    assert score_text(excluding, PLA_TITLE, PLA_TEXT).relevant


@pytest.mark.slow
def test_score_records_matches_score_text(watch: WatchConfig) -> None:
    records = [
        {"title": PLA_TITLE, "text": PLA_TEXT},
        {"title": PHONE_TITLE, "text": PHONE_TEXT},
        {"title": TRAVEL_TITLE, "text": TRAVEL_TEXT},
        {"title": "Rail line opens", "text": RAIL_TEXT},
        {"title": SUMMARY_TITLE, "summary": SUMMARY_TEXT},
    ]
    batch = score_records(watch, records, batch_size=2)
    assert len(batch) == len(records)
    for record, result in zip(records, batch, strict=True):
        one = score_text(watch, record["title"], record.get("text") or record["summary"])
        assert result.score == pytest.approx(one.score, abs=1e-4)
        assert result.relevant == one.relevant and result.reasons[0] == one.reasons[0]


@pytest.mark.slow
def test_precomputed_embedding_gives_the_same_score(watch: WatchConfig) -> None:
    from pipeline.embeddings import encode

    vector = encode([semantic_text(PLA_TITLE, PLA_TEXT)])[0]
    given = score_text(watch, PLA_TITLE, PLA_TEXT, embedding=vector)
    assert given.score == pytest.approx(score_text(watch, PLA_TITLE, PLA_TEXT).score, abs=1e-6)
