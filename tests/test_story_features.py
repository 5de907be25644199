"""story_features: the three text features of story assignment from one tokenisation, equal
to the separate functions (what the stories stage and ``cluster`` compute per article)."""

import pytest

from pipeline.story_text import (
    NAME_CHARS,
    TERM_CHARS,
    story_features,
    story_names,
    story_terms,
    text_shingles,
)

BODY = ("Harbour officials in Port Elwyn said on Tuesday that the ferry Marisol, carrying 212 "
        "passengers, ran aground at 6.45am. O’Hara's crew and the U.S.-built tug Kestrel "
        "freed it by noon; nobody was hurt, the Elwyn Maritime Board said.\n\n")

CASES = [
    ("Ferry Marisol runs aground off Port Elwyn", BODY * 12),  # past NAME_CHARS
    ("Kestrel's crew frees ferry", BODY),
    (None, BODY),
    ("Headline only", None),
    ("", ""),
    ("Title ending in a dot.", "x" * (TERM_CHARS - 2) + "Elwyn Board said"),  # word cut at 1000
    ("Numbers", "9" * (TERM_CHARS - 1) + "1.5,3 and 2,000 people"),
    ("Apostrophes’ and dashes -", "Marisol's - O’Brien’s 'quoted' well-known e.g. U.K."),
    ("Multi\nline\ntitle", "a" * (NAME_CHARS - 3) + "Elwyn Elwyn"),  # word cut at 3000
    ("台北 Taipei", "立法院 said 2024年 Taipei's council"),
]


@pytest.mark.parametrize(("title", "text"), CASES)
def test_story_features_equal_the_separate_functions(title: str | None, text: str | None) -> None:
    assert story_features(title, text) == (story_terms(title, text), story_names(title, text),
                                           text_shingles(text))


def test_features_are_what_the_assignment_compares() -> None:
    terms, names, shingles = story_features("Ferry Marisol runs aground", BODY)
    assert {"ferry", "marisol", "212", "o'hara", "kestrel"} <= terms
    assert "the" not in terms and "said" not in terms  # stop words
    assert {"marisol", "elwyn", "kestrel"} <= names and "ferry" in names  # title capitalised
    assert "passengers" not in names
    assert len(shingles) > 10
    assert story_features("Other", "Completely different words here now")[2].isdisjoint(shingles)
