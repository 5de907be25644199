"""Embedding backends: the exported graphs agree with sentence-transformers on torch, truncate
where it does, load without torch, and a backend switch re-embeds stored articles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import select

from pipeline import schema
from pipeline.embeddings import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_CACHE_DIR,
    DEFAULT_MODEL,
    embedding_key,
    encode,
    load_encoder,
    openvino_cache_dir,
    openvino_precision,
    release_encoders,
    resolve_model_path,
)
from pipeline.onnx_export import export_spec
from pipeline.records import open_store, utcnow
from pipeline.settings import load_settings
from pipeline.stories import embed_pending
from tests.support.factories import add_article

TEXTS = [
    "Brindlemoor council approves the harbour bridge repairs after a storm",
    "Lantern makers prepare for the river festival in the old town of Kessfield",
    "Frost damaged half the orchards of the Tarrow valley, growers say",
    "Short",
    # Far past 256 word pieces: all backends must cut it where torch does.
    " ".join(f"paragraph{n} about the glacier museum and its winter visitors" for n in range(80)),
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return encode(TEXTS, backend="torch")


@pytest.mark.parametrize("backend,floor", [("onnx", 0.999), ("openvino", 0.999),
                                           ("openvino-bf16", 0.999), ("onnx-int8", 0.97)])
def test_backends_agree_with_torch(backend, floor, torch_vectors, tmp_path):
    vectors = encode(TEXTS, backend=backend)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosines = (vectors * torch_vectors).sum(axis=1)
    assert cosines.min() >= floor, cosines
    # Batching and order do not change a text's vector (padding is masked out); int8 comes
    # close only (its activation ranges are measured per batch).
    alone = encode([TEXTS[3]], backend=backend)[0]
    assert float(alone @ vectors[3]) > (0.9999 if floor > 0.99 else floor)


def test_onnx_inference_never_imports_torch():
    """A fresh process that embeds with the exported graph (already in the cache) and runs
    a keyword command keeps torch, transformers and sentence-transformers out."""
    for backend in ("openvino", "openvino-bf16", "onnx", "onnx-int8"):  # exports if needed
        encode(["warm the cache"], backend=backend)
    code = ("import sys, json\n"
            "from pipeline.embeddings import encode\n"
            "for b in ('openvino', 'openvino-bf16', 'onnx', 'onnx-int8'):\n"
            "    encode(['a fictional line'], backend=b)\n"
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', "
            "'sentence_transformers') if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def last_line_of_fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported yet) and return its last line."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_default_mode_search_embeds_the_query_without_torch(tmp_path):
    """`newswatch search` in the default (hybrid) mode on the default backend: a fresh process
    that imports neither torch, transformers, sentence-transformers nor SQLAlchemy (the
    records are never opened), and the query's vector equals torch's."""
    query = "harbour bridge repairs in Brindlemoor"
    # The process reads the cache the session's environment names (tests/conftest.py): the
    # export is made there, in this process, if needed.
    cache = os.environ.get("NEWSWATCH_EMBEDDING__MODEL_CACHE") or str(DEFAULT_CACHE_DIR.resolve())
    encode(["warm the cache"], backend=DEFAULT_BACKEND, cache_dir=cache)
    config = tmp_path / "c.yaml"
    config.write_text(f"store: {{url: 'sqlite:///{tmp_path / 'r.db'}'}}\n"
                      f"data_dir: {tmp_path}\n"
                      f"embedding: {{model_cache: '{cache}'}}\n", encoding="utf-8")
    code = ("import sys, json\n"
            "from typer.testing import CliRunner\n"
            "import pipeline.query as query\n"
            "from pipeline.cli import app\n"
            "vectors = []\n"
            "embed = query.embed_query\n"
            "query.embed_query = lambda s, t: vectors.append(embed(s, t)) or vectors[-1]\n"
            f"result = CliRunner().invoke(app, ['search', {query!r}, '-c', {str(config)!r}])\n"
            "assert result.exit_code == 0, result.output\n"
            "print(json.dumps({'vector': vectors[0], 'modules': sorted(m for m in ("
            "'torch', 'transformers', 'sentence_transformers', 'sqlalchemy') "
            "if m in sys.modules)}))\n")
    out = json.loads(last_line_of_fresh_python(code))
    assert out["modules"] == []
    vector = np.asarray(out["vector"], dtype=np.float32)
    assert float(vector @ encode([query], backend="torch")[0]) >= 0.9999


def test_commands_that_do_not_embed_do_not_load_torch(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"store: {{url: 'sqlite:///{tmp_path / 'r.db'}'}}\n"
                      f"data_dir: {tmp_path}\n", encoding="utf-8")
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from pipeline.cli import app\n"
            f"for args in (['feeds', '-c', {str(config)!r}], ['stories', '-c', {str(config)!r}],"
            f" ['search', 'harbour', '--mode', 'keyword', '-c', {str(config)!r}]):\n"
            "    result = CliRunner().invoke(app, args)\n"
            "    assert result.exit_code == 0, (args, result.output)\n"
            "print('torch' in sys.modules)\n")
    assert last_line_of_fresh_python(code) == "False"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown embedding backend"):
        encode(["x"], backend="tensorrt")
    assert set(BACKENDS) == {"torch", "onnx", "onnx-int8", "openvino", "openvino-bf16"}


class _Capabilities:
    """An OpenVINO core that reports the given CPU capabilities."""

    def __init__(self, *capabilities: str) -> None:
        self.capabilities = list(capabilities)

    def get_property(self, device: str, name: str) -> list[str]:
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        return self.capabilities


def test_bf16_is_asked_for_only_where_the_cpu_has_it():
    assert openvino_precision("openvino-bf16", _Capabilities("FP32", "BF16", "INT8")) == "bf16"
    assert openvino_precision("openvino-bf16", _Capabilities("FP32", "INT8")) == "f32"
    assert openvino_precision("openvino", _Capabilities("FP32", "BF16")) == "f32"


def test_the_compiled_model_runs_the_precision_asked_for():
    """What OpenVINO compiled is what the backend promises on this CPU: bf16 where the plugin
    reports it, f32 for ``openvino`` everywhere."""
    import openvino as ov

    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for backend, expected in (("openvino", ov.Type.f32),
                              ("openvino-bf16", ov.Type.bf16 if native else ov.Type.f32)):
        compiled = load_encoder(backend=backend)._compiled  # type: ignore[attr-defined]
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == expected


def _default_export():
    return export_spec(resolve_model_path(DEFAULT_MODEL), DEFAULT_CACHE_DIR)


def test_each_precision_compiles_its_own_blob():
    """OpenVINO's cache key leaves the precision out: in one folder, bf16 would import the
    blob compiled for f32 (the step where CI crashed). Each precision has its own."""
    import openvino as ov

    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for backend in ("openvino", "openvino-bf16"):
        encode(["a fictional line about the Kessfield lantern market"], backend=backend)
    shared = _default_export().folder / "openvino-cache"
    assert not list(shared.glob("*.blob"))
    folders = {blob.parent.name for blob in shared.glob("*/*.blob")}
    assert folders == ({"f32", "bf16"} if native else {"f32"})


def test_a_damaged_compiled_blob_is_compiled_afresh_not_used(tmp_path, caplog):
    """OpenVINO imports a damaged cached blob and computes NaN with it: the encoder compiles
    afresh once and returns the real vectors, never NaN ones."""
    import shutil

    encode(TEXTS[:3], backend="openvino")  # the default cache holds the exported graph
    exported = _default_export().fp32
    (tmp_path / exported.parent.name).mkdir()
    shutil.copy(exported, tmp_path / exported.parent.name / "model.onnx")
    good = encode(TEXTS[:3], backend="openvino", cache_dir=str(tmp_path))
    release_encoders()
    [blob] = tmp_path.glob("*/openvino-cache/f32/*.blob")
    blob.chmod(0o644)
    size = blob.stat().st_size
    with blob.open("r+b") as handle:  # NaN bit patterns over weights these texts use
        handle.seek(size * 3 // 10)
        handle.write(b"\xff" * (8 << 20))
    with caplog.at_level("WARNING", logger="pipeline.embeddings"):
        again = encode(TEXTS[:3], backend="openvino", cache_dir=str(tmp_path))
    release_encoders()
    assert np.isfinite(again).all() and np.allclose(again, good, atol=1e-5)
    assert "compiling it afresh" in caplog.text


def test_a_blob_of_the_old_shared_cache_folder_is_removed(tmp_path):
    """Nothing tells which precision compiled a blob of the old shared folder: it goes."""
    graph = tmp_path / "model.onnx"
    stale = tmp_path / "openvino-cache" / "1234.blob"
    stale.parent.mkdir()
    stale.write_bytes(b"compiled for some precision")
    assert openvino_cache_dir(graph, "bf16") == tmp_path / "openvino-cache" / "bf16"
    assert not stale.exists() and (tmp_path / "openvino-cache" / "bf16").is_dir()


def test_a_backend_switch_re_embeds_stored_articles(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = open_store(url)
    now = utcnow()
    try:
        for n, text in enumerate(TEXTS[:3]):
            add_article(store, f"a{n}", url=None, title=text, text=text, content_hash=f"h{n}",
                        seen_at=now, with_version_row=True)
        torch_settings = load_settings(data_dir=str(tmp_path),
                                       embedding={"backend": "torch"})
        assert embed_pending(store, torch_settings) == 3
        assert embed_pending(store, torch_settings) == 0  # never twice
        fast = load_settings(data_dir=str(tmp_path), embedding={"backend": "openvino"})
        assert embed_pending(store, fast) == 3  # another backend: re-embedded, not mixed
        with store.engine.connect() as conn:
            keys = {r.embedding_model for r in conn.execute(
                select(schema.article_versions.c.embedding_model))}
        assert keys == {embedding_key("default", "openvino")}
    finally:
        store.close()
