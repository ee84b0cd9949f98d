"""Export a trained NER token classifier to ONNX, with what serving needs beside it.

The exported folder holds ``model.onnx`` (inputs ``input_ids``,
``attention_mask``, ``token_type_ids`` as int64 ``[batch, tokens]``, output
``logits`` ``[batch, tokens, labels]``, both axes dynamic), the tokenizer
files and ``config.json`` (label map), so ``transforms.inference.ner.load_tagger``
can load it alone.

The model is loaded with eager attention before export: with PyTorch's
SDPA attention the onnxruntime transformers optimizer fuses no Attention
nodes (see findings.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transforms.errors import ModelLoadError

__all__ = ["INPUT_NAMES", "copy_serving_files", "export_onnx", "model_shape"]

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_SERVING_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def copy_serving_files(src_dir: str, dst_dir: str) -> None:
    """Copy the tokenizer files and config.json (label map) from ``src_dir`` to ``dst_dir``."""
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    for name in _SERVING_FILES:
        path = Path(src_dir) / name
        if path.exists() and path.resolve() != (dst / name).resolve():
            shutil.copy2(path, dst / name)


def model_shape(model_dir: str) -> dict:
    """``model_type``, ``num_heads`` and ``hidden_size`` of a checkpoint (for the graph optimizer)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return {
        "model_type": config.get("model_type", "bert"),
        "num_heads": int(config.get("num_attention_heads", 0)),
        "hidden_size": int(config.get("hidden_size", 0)),
    }


def export_onnx(model_dir: str, out_dir: str, *, opset: int = 17, file_name: str = "model.onnx") -> str:
    """Export the PyTorch token classifier in ``model_dir`` to ``out_dir/file_name``; returns its path.

    >>> export_onnx("out/models/ner/torch", "out/models/ner/fp32")  # doctest: +SKIP
    'out/models/ner/fp32/model.onnx'
    """
    import torch
    from transformers import AutoModelForTokenClassification

    try:
        model = AutoModelForTokenClassification.from_pretrained(
            model_dir, local_files_only=True, attn_implementation="eager"
        )
    except OSError as exc:
        raise ModelLoadError(f"cannot load a token classifier from {model_dir!r}: {exc}") from exc
    model.eval()

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name
    ids = torch.ones((2, 8), dtype=torch.long)
    dynamic = {name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES}
    dynamic["logits"] = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly(model),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    copy_serving_files(model_dir, str(out))
    return str(path)
