"""Export a local sentence-transformers model to ONNX once, and cache it.

The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` and returns the
L2-normalised mean-pooled embedding, so the ONNX backends need no torch at inference. Three
files come out of one export: the plain fp32 graph (OpenVINO reads it), a BERT-fused fp32
graph for ONNX Runtime, and a per-channel int8 copy of the fp32 graph (plain per-tensor int8
is too lossy on CPUs without VNNI: cosine 0.95 against torch). Files are written to a
temporary name and renamed, so concurrent processes never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Bump when the export recipe changes: old caches are then left alone and a new one is made.
EXPORT_VERSION = 1
OPSET = 17


@dataclass(frozen=True)
class ExportedModel:
    folder: Path
    fp32: Path
    optimised: Path
    int8: Path
    tokenizer: Path
    max_length: int
    dim: int


def _model_config(model_dir: Path) -> tuple[int, int]:
    """(max_seq_length, embedding width), refusing models this export cannot reproduce."""
    if not (model_dir / "tokenizer.json").is_file():
        raise ValueError(f"{model_dir}: the ONNX backends need a local model folder with "
                         "tokenizer.json (use embedding.backend 'torch' for hub names)")
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file():
        conf = json.loads(pooling.read_text(encoding="utf-8"))
        if not conf.get("pooling_mode_mean_tokens") or any(
                conf.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                      "pooling_mode_mean_sqrt_len_tokens")):
            raise ValueError(f"{model_dir}: only mean pooling is exported; use backend 'torch'")
    bert_conf = model_dir / "sentence_bert_config.json"
    max_length = 256
    if bert_conf.is_file():
        max_length = int(json.loads(bert_conf.read_text(encoding="utf-8"))
                         .get("max_seq_length") or max_length)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return max_length, int(config["hidden_size"])


def _fingerprint(model_dir: Path) -> str:
    """Changes when the model files change (name, size, mtime) or the recipe does."""
    digest = hashlib.sha256(f"v{EXPORT_VERSION}/opset{OPSET}".encode())
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(model_dir)}:{stat.st_size}:{stat.st_mtime_ns}"
                          .encode())
    return digest.hexdigest()[:16]


@contextmanager
def _atomic(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, renamed into place once written (removed if the
    writer fails), so no reader ever sees half a file."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _export_fp32(model_dir: Path, target: Path, max_length: int) -> None:
    import torch
    from transformers import AutoModel

    class MeanPooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    wrapped = MeanPooled(bert).eval()
    sample = torch.ones((2, min(16, max_length)), dtype=torch.long)
    with _atomic(target) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that do not apply here
        torch.onnx.export(
            wrapped, (sample, sample, torch.zeros_like(sample)), str(tmp), dynamo=False,
            opset_version=OPSET, input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={name: {0: "batch", 1: "tokens"}
                          for name in ("input_ids", "attention_mask", "token_type_ids")}
            | {"embedding": {0: "batch"}})


def _optimise(source: Path, target: Path, dim: int, heads: int) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    optimised = optimize_model(str(source), model_type="bert", num_heads=heads,
                               hidden_size=dim, opt_level=1)
    with _atomic(target) as tmp:
        optimised.save_model_to_file(str(tmp))


def _quantise(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _atomic(target) as tmp:
        quantize_dynamic(str(source), str(tmp), per_channel=True, weight_type=QuantType.QInt8)


def exported_model(model_dir: str | Path, cache_dir: Path, variant: str = "fp32") -> Path:
    """The cached ``variant`` (fp32, optimised or int8) of ``model_dir``'s ONNX export under
    ``cache_dir``, made now if missing (only what that variant needs)."""
    spec = export_spec(model_dir, cache_dir)
    target = {"fp32": spec.fp32, "optimised": spec.optimised, "int8": spec.int8}[variant]
    if target.is_file():
        return target
    model_dir = Path(model_dir)
    spec.folder.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s (%s) to ONNX under %s, once", model_dir, variant, spec.folder)
    if not spec.fp32.is_file():
        _export_fp32(model_dir, spec.fp32, spec.max_length)
    if variant == "optimised":
        heads = int(json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
                    .get("num_attention_heads", 0))
        _optimise(spec.fp32, spec.optimised, spec.dim, heads)
    elif variant == "int8":
        _quantise(spec.fp32, spec.int8)
    return target


def export_spec(model_dir: str | Path, cache_dir: Path) -> ExportedModel:
    """Where the export of ``model_dir`` lives (nothing is written)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: not a local model folder (the ONNX backends export "
                         "local models only; use embedding.backend 'torch' for hub names)")
    max_length, dim = _model_config(model_dir)
    folder = cache_dir / f"{model_dir.name}-{_fingerprint(model_dir)}"
    return ExportedModel(folder=folder, fp32=folder / "model.onnx",
                         optimised=folder / "model-optimised.onnx",
                         int8=folder / "model-int8.onnx",
                         tokenizer=model_dir / "tokenizer.json",
                         max_length=max_length, dim=dim)
