"""The language of an article: what its text is written in, not only what its page declares.

Feeds and pages often declare no language, or the site's default for every page. Chinese,
Japanese and Korean are told apart from everything else by their script, which is exact and
needs no model; Chinese is then split into Traditional and Simplified by the characters used
(``hanzidentifier``), because Taiwan, Hong Kong and Macau outlets write Traditional and the
mainland Simplified. Other text is identified with ``py3langid`` (a small bundled model, no
download) when it is long enough: with no declaration its verdict is kept when the model is
confident; a declaration is kept unless the model is very confident of another language on a
text long enough to judge (feeds mislabel: Business Insider Polska declares English for its
Polish items), so a correct declaration is not overridden by a noisy verdict on a headline.

py3langid ships its model LZMA-compressed (4.5 MB, ~70 MB unpacked): unpacking takes 1-2.5 s
and ~100 MB at its peak. :func:`identifier_held` unpacks it once into plain ``.npy`` files
under a cache folder and memory-maps them, so each chunk of a run loads it in milliseconds
and the pages leave with the mapping when the chunk is done (docs/performance.md).

Codes are BCP 47 tags, lower-case language with a title-case script: ``en``, ``fr``,
``zh-Hant``, ``zh-Hans``, ``zh`` (Chinese whose script cannot be told), ``ja``, ``ko``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

TRADITIONAL = "zh-Hant"
SIMPLIFIED = "zh-Hans"
CHINESE = "zh"

# Share of letters in a CJK script above which a text is taken as CJK whatever it declares
# (a Chinese article quotes English names and acronyms; an English one rarely has any Han).
CJK_SHARE = 0.3
# Below this share a text declared Chinese/Japanese/Korean is not taken at its word.
CJK_MINIMUM = 0.05
# py3langid is asked only about texts this long and believed only this sure: a headline alone
# ("Obama meets Xi in California") is too short to identify reliably.
MIN_IDENTIFY_CHARS = 80
MIN_IDENTIFY_PROBABILITY = 0.9
# A declaration is overridden only by a verdict this sure on a text at least this long. On the
# 26,282 real feed items of the shared stream (all declared English) the only verdicts this sure
# that disagree are the 642 Polish items; the English ones it doubts (Nigerian Pidgin, Latin,
# ... for short headlines) all score below 0.9.
OVERRIDE_MIN_CHARS = 100
OVERRIDE_PROBABILITY = 0.99
SAMPLE_CHARS = 2000  # the first characters of title + text are enough evidence

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")
_TRADITIONAL_REGIONS = {"tw", "hk", "mo", "hant"}
_SIMPLIFIED_REGIONS = {"cn", "sg", "my", "hans"}
_NAMES = {
    "en": "English", "zh": "Chinese", TRADITIONAL: "Chinese (Traditional)",
    SIMPLIFIED: "Chinese (Simplified)", "ja": "Japanese", "ko": "Korean", "fr": "French",
    "de": "German", "es": "Spanish", "pt": "Portuguese", "it": "Italian", "ru": "Russian",
    "ar": "Arabic", "vi": "Vietnamese", "id": "Indonesian", "th": "Thai", "nl": "Dutch",
    "uk": "Ukrainian", "pl": "Polish", "tr": "Turkish",
}
_LOCK = threading.Lock()


def normalise_language(value: Any) -> str | None:
    """A declared language tag (``zh-TW``, ``zh_Hant_HK``, ``EN-us``) as this module's code:
    Chinese keeps its script when the tag implies one; other languages keep their primary tag.
    """
    if not isinstance(value, str):
        return None
    parts = [p for p in re.split(r"[-_\s]", value.strip().split(",")[0].lower()) if p]
    if not parts or not re.fullmatch(r"[a-z]{2,3}", parts[0]):
        return None
    primary = parts[0]
    if primary in {"und", "mul", "zxx", "xx"}:
        return None
    if primary in {"zh", "zho", "chi", "cmn"}:
        subtags = set(parts[1:])
        if subtags & _TRADITIONAL_REGIONS:
            return TRADITIONAL
        if subtags & _SIMPLIFIED_REGIONS:
            return SIMPLIFIED
        return CHINESE
    return primary


def is_chinese(code: str | None) -> bool:
    return bool(code) and (code == CHINESE or code.startswith(CHINESE + "-"))


def is_cjk(code: str | None) -> bool:
    return is_chinese(code) or code in {"ja", "ko"}


def language_name(code: str | None) -> str:
    """What a person reads for a code: ``zh-Hant`` → ``Chinese (Traditional)``."""
    if not code:
        return "unknown"
    return _NAMES.get(code, code)


def script_counts(text: str) -> tuple[int, int, int, int]:
    """(Han, kana, Hangul, all letters) in ``text``."""
    return (len(_HAN.findall(text)), len(_KANA.findall(text)), len(_HANGUL.findall(text)),
            len(_LETTER.findall(text)))


def chinese_script(text: str, declared: str | None = None) -> str:
    """Traditional or Simplified by the characters used; the declared variant (or plain
    ``zh``) when the text uses only characters common to both, or a mix."""
    import hanzidentifier

    kind = hanzidentifier.identify(text)
    if kind == hanzidentifier.TRADITIONAL:
        return TRADITIONAL
    if kind == hanzidentifier.SIMPLIFIED:
        return SIMPLIFIED
    if kind == hanzidentifier.MIXED:
        han = "".join(_HAN.findall(text))
        traditional = sum(1 for c in han if hanzidentifier.is_traditional(c)
                          and not hanzidentifier.is_simplified(c))
        simplified = sum(1 for c in han if hanzidentifier.is_simplified(c)
                         and not hanzidentifier.is_traditional(c))
        if traditional >= 3 * max(simplified, 1):
            return TRADITIONAL
        if simplified >= 3 * max(traditional, 1):
            return SIMPLIFIED
    return declared if is_chinese(declared) else CHINESE


_held: list[Any] = []  # the identifier loaded by identifier_held(), while it is held


@lru_cache(maxsize=1)
def _packaged_identifier() -> Any:
    with _LOCK:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _identifier() -> Any:
    """The identifier held for the current stretch of work, else the packaged one (loaded
    once and kept, for callers that identify a text now and then)."""
    return _held[0] if _held else _packaged_identifier()


def release_identifier() -> None:
    """Drop py3langid's model (~75 MB resident): only extraction identifies languages, so it
    is not held beside the embedding models (a backlog run's peak memory)."""
    with _LOCK:
        _packaged_identifier.cache_clear()
        _held.clear()


def unpacked_model_dir(cache_dir: str | Path) -> Path:
    """Where the unpacked copy of the installed py3langid's model lives (one per version)."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    packed = MODEL_DIR / MODEL_FILE
    return Path(cache_dir) / f"py3langid-{version('py3langid')}-{packed.stat().st_size}"


def _unpack(folder: Path) -> None:
    """Write the packaged model as plain arrays (written aside, then renamed into place, so a
    reader never sees half a copy)."""
    import numpy as np
    from py3langid.langid import MODEL_DIR, MODEL_FILE
    from py3langid.modelio import load_model

    ptc, pc, classes, nextmove, row, output = load_model(MODEL_DIR / MODEL_FILE)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        staging.chmod(0o755)  # as readable as the exported models (mkdtemp makes it private)
        np.save(staging / "ptc.npy", ptc)
        np.save(staging / "pc.npy", pc)
        np.save(staging / "nextmove.npy", np.frombuffer(nextmove, dtype=f"u{nextmove.itemsize}"))
        np.save(staging / "row.npy", np.frombuffer(row, dtype=f"u{row.itemsize}"))
        np.save(staging / "output.npy", np.asarray(output, dtype=np.int32))
        (staging / "classes.json").write_text(json.dumps(classes))
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "classes.json").exists():  # another process may have won the race
            raise


def _mapped_identifier(folder: Path) -> Any:
    """The identifier over memory-mapped arrays: the same numbers as the packaged model
    (the transition table is read through a memoryview, as fast as py3langid's own array)."""
    import numpy as np
    from py3langid.langid import LanguageIdentifier

    classes = json.loads((folder / "classes.json").read_text())
    return LanguageIdentifier(
        np.load(folder / "ptc.npy", mmap_mode="r"), np.load(folder / "pc.npy"), classes,
        memoryview(np.load(folder / "nextmove.npy", mmap_mode="r")),
        np.load(folder / "output.npy").tolist(), norm_probs=True,
        tk_row=memoryview(np.load(folder / "row.npy")))


@contextmanager
def identifier_held(cache_dir: str | Path | None) -> Iterator[None]:
    """Hold the language identifier for a stretch of work (one chunk's extraction), loaded
    from its unpacked copy under ``cache_dir`` (made on first use), and drop it after.
    Without a usable folder it falls back to the packaged model, released the same way."""
    try:
        if cache_dir is not None:
            folder = unpacked_model_dir(cache_dir)
            try:
                with _LOCK:
                    if not (folder / "classes.json").exists():
                        _unpack(folder)
                    _held[:] = [_mapped_identifier(folder)]
            except (OSError, ValueError) as exc:  # a read-only or broken cache: the slow way
                log.warning("language identifier: cannot use %s (%s); loading the packaged "
                            "model", folder, exc)
        yield
    finally:
        release_identifier()


def _classify(text: str) -> tuple[str | None, float]:
    """py3langid's (code, probability) for a text long enough to ask about, else (None, 0)."""
    if len(text) < MIN_IDENTIFY_CHARS:
        return None, 0.0
    code, probability = _identifier().classify(text)
    return normalise_language(code), float(probability)


def identify(text: str) -> str | None:
    """py3langid's verdict on a Latin/Cyrillic/... text, or None when it is not sure."""
    code, probability = _classify(text)
    return code if probability >= MIN_IDENTIFY_PROBABILITY else None


class LanguageVerdict(NamedTuple):
    """An article's language and what decided it: ``script`` (CJK characters), ``declared``
    (the page's or feed's tag), ``text`` (identified, nothing usable declared),
    ``text-over-declared`` (identified with confidence against a wrong declaration), or
    None when nothing says."""

    code: str | None
    source: str | None


OVERRIDDEN = "text-over-declared"


def language_verdict(title: str | None, text: str | None,
                     declared: str | None = None) -> LanguageVerdict:
    """The language an article is written in and the evidence that decided it (order of
    evidence: the module docstring)."""
    declared_code = normalise_language(declared)
    sample = f"{title or ''}\n{text or ''}"[:SAMPLE_CHARS]
    han, kana, hangul, letters = script_counts(sample)
    cjk = han + kana + hangul
    if letters and cjk >= CJK_SHARE * letters:
        if hangul >= max(han, kana) and hangul:
            return LanguageVerdict("ko", "script")
        if kana >= 0.1 * cjk:
            return LanguageVerdict("ja", "script")
        return LanguageVerdict(chinese_script(sample, declared_code), "script")
    if declared_code and not (is_cjk(declared_code) and cjk < CJK_MINIMUM * max(letters, 1)):
        if len(sample) >= OVERRIDE_MIN_CHARS:
            code, probability = _classify(sample)
            if code and code != declared_code and not is_cjk(code) \
                    and probability >= OVERRIDE_PROBABILITY:
                return LanguageVerdict(code, OVERRIDDEN)
        return LanguageVerdict(declared_code, "declared")
    code = identify(sample)
    return LanguageVerdict(code, "text" if code else None)


def detect_language(title: str | None, text: str | None, declared: str | None = None) -> str | None:
    """The language an article is written in (see :func:`language_verdict`); None when
    neither the text nor the page says."""
    return language_verdict(title, text, declared).code


def original_headlines(articles: list[dict[str, Any]], limit: int = 3) -> list[tuple[str, str]]:
    """(headline as published, language name) of the articles not in English, oldest first:
    what an alert shows beside a story's English title."""
    seen: list[tuple[str, str]] = []
    for article in articles:
        code = article.get("language")
        title = " ".join(str(article.get("title") or "").split())
        if not code or code == "en" or code.startswith("en-") or not title:
            continue
        if all(title != t for t, _ in seen):
            seen.append((title, language_name(code)))
        if len(seen) == limit:
            break
    return seen
