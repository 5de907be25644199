"""benchmarks/second_reading.py: a second reading of the relevance labels, weighted to the file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support.benchmarks import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("second_reading")


def _row(kind: str, conf: str, labelled: bool = True, text: str = "x") -> dict:
    return {"kind": kind, "conf": conf, "labelled": labelled, "title": "t", "text": text}


def test_weighting_counts_each_stratum_at_its_size_in_the_file(bench):
    sizes = {"Dh": 10, "Dl": 10, "Fh": 0, "Fl": 0, "Mh": 100, "Ml": 10}
    shares = {"Dh": 1.0, "Dl": 0.5, "Fh": 0.0, "Fl": 0.0, "Mh": 0.01, "Ml": 0.4}
    prf = bench.weighted_prf(shares, sizes)
    # tp 10 + 5, fn 5, fp 1 + 4
    assert prf["tp"] == pytest.approx(15) and prf["fn"] == pytest.approx(5)
    assert prf["fp"] == pytest.approx(5)
    assert prf["precision"] == pytest.approx(0.75) and prf["recall"] == pytest.approx(0.75)


def test_unread_mentions_do_not_count_towards_a_stratum(bench):
    rows = [_row("M", "h"), _row("M", "h", labelled=False), _row("D", "l")]
    sizes = bench.stratum_sizes(rows)
    assert sizes["Mh"] == 1 and sizes["Dl"] == 1 and sizes["Dh"] == 0


def test_shares_pool_every_reading_and_refuse_an_unread_stratum(bench):
    rows = [_row("D", "l"), _row("D", "l"), _row("M", "h")]
    samples = [{"name": "draw", "readers": ["a", "b"],
                "rows": [[0, "Dl", "Mh"], [1, "Dh", "Dl"], [2, "Mh", "Mh"]]}]
    readings = bench.readings_by_stratum(samples, rows)
    assert readings["Dl"] == [[True, False], [True, True]]
    with pytest.raises(ValueError, match="Dh"):
        bench.shares_of(readings)  # nothing of Dh was read: no share to weight
    readings = {**readings, **{s: [[False]] for s in ("Dh", "Fh", "Fl", "Ml")}}
    assert bench.shares_of(readings)["Dl"] == pytest.approx(0.75)


def test_agreement_between_readers_and_with_the_file(bench):
    rows = [_row("D", "l"), _row("M", "l")]
    samples = [{"name": "draw", "readers": ["a", "b"], "rows": [[0, "Dl", "Ml"], [1, "Ml", "Ml"]]}]
    [draw] = bench.agreement(samples, rows)
    assert draw["readers_agree"] == 1
    assert draw["each_agrees_with_file"] == {"a": 2, "b": 1}


def test_excerpt_is_the_rubric_view(bench):
    lead = " ".join(f"w{n}" for n in range(bench.LEAD_WORDS))
    text = f"{lead} Later about markets. Taipei said no. Other news. Taiwan's vote."
    out = bench.excerpt({"title": "A title", "text": text})
    assert "MENTIONS of Taiwan/Taipei: 2" in out
    assert out.count("\n- ") == 2 and "Other news" not in out and "w119" in out


def test_a_different_data_file_is_refused(bench, tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(_row("D", "h")) + "\n", encoding="utf-8")
    assert bench.load_rows(data, hashlib.sha256(data.read_bytes()).hexdigest())
    with pytest.raises(SystemExit, match="sha256"):
        bench.load_rows(data, "0" * 64)


def test_the_shipped_readings_cover_every_stratum_and_hold_no_text():
    doc = json.loads((BENCHMARKS / "data" / "relevance-second-reading.json")
                     .read_text(encoding="utf-8"))
    kinds = {k for sample in doc["samples"] for _, *ks in sample["rows"] for k in ks}
    assert kinds <= {f"{k}{c}" for k in "DFM" for c in "hl"}
    for sample in doc["samples"]:
        assert all(isinstance(r[0], int) and len(r) == 1 + len(sample["readers"])
                   for r in sample["rows"])
