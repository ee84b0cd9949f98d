"""NER inference: a token classifier (ONNX or PyTorch) over product text, as a Beam ModelHandler.

Beam's own ``OnnxModelHandlerNumpy`` feeds only a model's first input and
stacks same-shaped arrays; a BERT-style model needs ``input_ids``,
``attention_mask`` (and ``token_type_ids``) with padding, so this module has
its own handler:

* preprocessing: :func:`~transforms.ner_labels.split_words` keeps character
  offsets, one tokenizer call encodes the words of the whole batch, texts
  longer than the model's window are split into several windows (never
  truncated), and windows are sorted by length and cut into sub-batches
  (bucketing) so that padding wastes little compute;
* postprocessing: per-word argmax and probability, IOB2 repair, and spans
  mapped back to character offsets of the original text
  (:func:`~transforms.ner_labels.decode_entities`).

:class:`NerTagger` is that logic without Beam (training's evaluation and the
benchmark use it with a PyTorch or ONNX backend); :class:`NerModelHandler`
wraps it for ``RunInference``. A model folder holds ``model.onnx`` (or the
PyTorch weights), the tokenizer files and ``config.json`` with ``id2label``.

>>> from transforms.inference.ner import NerModelHandler  # doctest: +SKIP
>>> handler = KeyedModelHandler(NerModelHandler("out/models/ner/chosen"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from transforms.beam_ml import ModelHandler, PredictionResult
from transforms.errors import ConfigError, ModelLoadError
from transforms.ner_labels import (
    CASE_MARKERS_KEY,
    Entity,
    LabelScheme,
    Window,
    WordPieceTokenizer,
    decode_entities,
    encode_words,
    repair_iob2,
    split_words,
    window_features,
    word_predictions,
)

__all__ = [
    "METRICS_NAMESPACE",
    "NerInputError",
    "NerModelHandler",
    "NerTagger",
    "REASONS",
    "load_tagger",
    "onnx_logits_fn",
    "torch_logits_fn",
]

LOGGER = logging.getLogger(__name__)
METRICS_NAMESPACE = "aisle.ner"

# Every reason code a NER dead letter (transforms.ner_enrich) can carry, with what it means.
REASONS = {
    "NER_EMPTY_TEXT": "the text is empty or only white space: there is nothing to tag",
    "NER_BAD_TEXT": "the value is not a string",
    "NER_TEXT_TOO_LONG": "the text is longer than max_chars (texts up to that length are tagged in windows, never truncated)",
    "NER_INFERENCE_FAILED": "the model failed on the batch holding this text (the detail has the error)",
}

# A logits function takes int64 arrays {input_ids, attention_mask,
# token_type_ids} of shape [batch, tokens] and returns float logits
# [batch, tokens, labels].
LogitsFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


class NerInputError(ConfigError):
    """A text the NER model cannot take (empty, not a string, over the length limit)."""


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


class NerTagger:
    """Words or raw texts in, IOB2 tags / entities out, through any logits function.

    ``max_length`` is the model window in tokens (special tokens included);
    ``max_tokens_per_batch`` bounds ``batch rows x padded length`` of one
    model call, so short windows go in large batches and long ones in small;
    ``max_padding_fraction`` closes a sub-batch before its padding exceeds
    that fraction of its real tokens (on CoNLL-2003 valid, one batch of 64
    sorted sentences padded to its longest computes 2.6x the real tokens,
    and INT8 inference ran 2.5x slower than with padding held to 10%).
    """

    def __init__(
        self,
        tokenizer,
        scheme: LabelScheme,
        logits_fn: LogitsFn,
        *,
        max_length: int = 128,
        max_tokens_per_batch: int = 4096,
        max_batch_size: int = 64,
        max_padding_fraction: float = 0.1,
        case_markers: bool = False,
    ):
        if max_padding_fraction < 0:
            raise ConfigError(f"max_padding_fraction must be >= 0, got {max_padding_fraction}")
        if max_tokens_per_batch < max_length:
            raise ConfigError(
                f"max_tokens_per_batch ({max_tokens_per_batch}) must be >= max_length ({max_length})"
            )
        self.tokenizer = tokenizer
        self.scheme = scheme
        self.logits_fn = logits_fn
        self.max_length = max_length
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_batch_size = max_batch_size
        self.max_padding_fraction = max_padding_fraction
        self.case_markers = case_markers
        self.model_calls = 0
        self.padded_tokens = 0
        self.real_tokens = 0

    # -- batching -------------------------------------------------------
    def _buckets(self, windows: Sequence[Window]) -> list[list[int]]:
        """Indices of windows grouped into sub-batches of similar length."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
        batches: list[list[int]] = []
        current: list[int] = []
        real = 0
        for i in order:
            length = len(windows[i].input_ids)  # the longest so far (sorted ascending)
            padded = (len(current) + 1) * length
            if current and (
                padded > self.max_tokens_per_batch
                or len(current) >= self.max_batch_size
                or padded > (1.0 + self.max_padding_fraction) * (real + length)
            ):
                batches.append(current)
                current, real = [], 0
            current.append(i)
            real += length
        if current:
            batches.append(current)
        return batches

    def _run(self, windows: Sequence[Window]) -> list[np.ndarray]:
        """Label probabilities [tokens, labels] of every window."""
        probs: list[np.ndarray | None] = [None] * len(windows)
        for batch in self._buckets(windows):
            width = max(len(windows[i].input_ids) for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                n = len(windows[i].input_ids)
                ids[row, :n] = windows[i].input_ids
                mask[row, :n] = 1
            pad = self.tokenizer.pad_token_id or 0
            ids[mask == 0] = pad
            logits = np.asarray(
                self.logits_fn({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
            )
            self.model_calls += 1
            self.padded_tokens += ids.size
            self.real_tokens += int(mask.sum())
            p = _softmax(logits.astype(np.float32))
            for row, i in enumerate(batch):
                probs[i] = p[row, : len(windows[i].input_ids)]
        return probs  # type: ignore[return-value]

    # -- words ----------------------------------------------------------
    def tag_words(self, sentences: Sequence[Sequence[str]]) -> list[tuple[list[str], list[float]]]:
        """IOB2 tags (repaired) and the probability of each tag, for pre-split sentences."""
        pieces = encode_words(self.tokenizer, sentences, case_markers=self.case_markers)
        windows = window_features(
            pieces,
            max_length=self.max_length,
            cls_id=self.tokenizer.cls_token_id,
            sep_id=self.tokenizer.sep_token_id,
            words=sentences,
        )
        probs = self._run(windows)
        tag_ids: list[list[int | None]] = [[None] * len(s) for s in sentences]
        tag_probs: list[list[float | None]] = [[None] * len(s) for s in sentences]
        for window, p in zip(windows, probs):
            best = p.argmax(-1)
            per_word = word_predictions(window.word_ids, list(zip(best, p.max(-1))), window.end - window.start)
            for offset, pred in enumerate(per_word):
                if pred is not None:
                    tag_ids[window.text_index][window.start + offset] = int(pred[0])
                    tag_probs[window.text_index][window.start + offset] = float(pred[1])
        out = []
        for ids, ps in zip(tag_ids, tag_probs):
            tags = repair_iob2([None if i is None else self.scheme.id2label[i] for i in ids])
            out.append((tags, [0.0 if p is None else p for p in ps]))
        return out

    # -- texts ----------------------------------------------------------
    def entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities with character offsets for each raw text."""
        words = [split_words(t) for t in texts]
        tagged = self.tag_words([[w.text for w in ws] for ws in words])
        return [decode_entities(t, ws, tags, scores) for t, ws, (tags, scores) in zip(texts, words, tagged)]


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------


def onnx_logits_fn(session) -> LogitsFn:
    """A logits function over an ``onnxruntime.InferenceSession`` (feeds the inputs it declares)."""
    names = [i.name for i in session.get_inputs()]
    output = session.get_outputs()[0].name

    def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return session.run([output], {n: feeds[n] for n in names})[0]

    return run


def torch_logits_fn(model) -> LogitsFn:
    """A logits function over a Hugging Face PyTorch token classifier (eval mode, no grad)."""
    import torch

    model.eval()

    def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return out.logits.float().numpy()

    return run


def _local_copy(model_uri: str) -> str:
    """A local folder with the files of a model folder (local path or any Beam filesystem)."""
    if os.path.isdir(model_uri):
        return model_uri
    from apache_beam.io.filesystems import FileSystems

    try:
        matches = FileSystems.match([model_uri.rstrip("/") + "/*"])[0].metadata_list
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot list the NER model folder {model_uri!r}: {exc}") from exc
    if not matches:
        raise ModelLoadError(f"the NER model folder {model_uri!r} is empty or missing")
    local = tempfile.mkdtemp(prefix="aisle-ner-")
    for meta in matches:
        name = meta.path.rstrip("/").rsplit("/", 1)[-1]
        with FileSystems.open(meta.path) as src, open(os.path.join(local, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return local


# onnxruntime's online graph optimization levels, by the names load_tagger takes.
GRAPH_OPTIMIZATION = {
    "none": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def load_tagger(
    model_uri: str,
    *,
    backend: str = "auto",
    onnx_file: str = "model.onnx",
    intra_op_threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    max_length: int = 128,
    max_tokens_per_batch: int = 4096,
    graph_optimization: str = "all",
) -> NerTagger:
    """A :class:`NerTagger` for a model folder: ONNX (``onnx_file``) or PyTorch weights.

    ``backend`` is ``onnx``, ``torch`` or ``auto`` (ONNX when the folder
    has ``onnx_file``). ``intra_op_threads`` 0 lets the runtime choose.
    ``graph_optimization`` is onnxruntime's online graph optimization level
    (``GRAPH_OPTIMIZATION``): ``"all"`` (the default: constant folding plus
    its fusions of LayerNorm, GELU, MatMul+Add and quantized MatMuls) or
    ``"basic"`` (no fusion: what an unfused graph costs).
    """
    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise ConfigError(f"graph_optimization={graph_optimization!r}: use one of {sorted(GRAPH_OPTIMIZATION)}")

    local = _local_copy(model_uri)
    config_path = os.path.join(local, "config.json")
    if not os.path.exists(config_path):
        raise ModelLoadError(f"{model_uri!r} has no config.json: it is not a NER model folder from components.ner_train")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"config.json of {model_uri!r} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"config.json of {model_uri!r} is not a JSON object")
    id2label = config.get("id2label") or {}
    if not id2label or any(not (v == "O" or v[:2] in ("B-", "I-")) for v in id2label.values()):
        raise ModelLoadError(
            f"{model_uri!r}: config.json has no IOB2 label map (id2label={id2label!r}); "
            "train the model with components.ner_train, which saves one"
        )
    scheme = LabelScheme.from_labels([id2label[str(i)] for i in range(len(id2label))])
    # A window may not be longer than the model's position table.
    max_length = min(max_length, int(config.get("max_position_embeddings", max_length)))
    try:
        if WordPieceTokenizer.available(local):
            tokenizer = WordPieceTokenizer(local)
        else:  # a folder with a slow tokenizer's files only (vocab.txt)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(local, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load the tokenizer of {model_uri!r}: {exc}") from exc
    onnx_path = os.path.join(local, onnx_file)
    if backend == "auto":
        backend = "onnx" if os.path.exists(onnx_path) else "torch"
    if backend == "onnx":
        import onnxruntime as ort

        if not os.path.exists(onnx_path):
            raise ModelLoadError(f"{model_uri!r} has no {onnx_file}: export it with components.ner_export")
        if os.path.getsize(onnx_path) == 0:
            raise ModelLoadError(f"{onnx_file} of {model_uri!r} is empty (0 bytes): export it again with components.ner_export")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[graph_optimization])
        try:
            session = ort.InferenceSession(onnx_path, options, providers=list(providers))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"onnxruntime cannot load {onnx_path!r}: {exc}") from exc
        fn = onnx_logits_fn(session)
    elif backend == "torch":
        import torch
        from transformers import AutoModelForTokenClassification

        if intra_op_threads:
            torch.set_num_threads(intra_op_threads)
        try:  # safetensors only: a pickled pytorch_model.bin from a user's folder is never loaded
            model = AutoModelForTokenClassification.from_pretrained(local, local_files_only=True, use_safetensors=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load PyTorch weights from {model_uri!r}: {exc}") from exc
        fn = torch_logits_fn(model)
    else:
        raise ConfigError(f"backend must be 'onnx', 'torch' or 'auto', got {backend!r}")
    return NerTagger(
        tokenizer,
        scheme,
        fn,
        max_length=max_length,
        max_tokens_per_batch=max_tokens_per_batch,
        case_markers=bool(config.get(CASE_MARKERS_KEY, False)),
    )


# --------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------


def check_text(text: Any, *, max_chars: int) -> str:
    """``text`` if the model can take it, else :class:`NerInputError` saying why."""
    if not isinstance(text, str):
        raise NerInputError(f"NER input must be a string, got {type(text).__name__}")
    if not text.strip():
        raise NerInputError("NER input is empty (no text to tag)")
    if len(text) > max_chars:
        raise NerInputError(
            f"NER input has {len(text)} characters, over max_chars={max_chars}; raise max_chars to tag it in windows"
        )
    return text


class NerModelHandler(ModelHandler[str, PredictionResult, NerTagger]):
    """RunInference handler: text in, :class:`~transforms.ner_labels.Entity` list out.

    Wrap it in ``KeyedModelHandler`` to keep product ids. Texts longer than
    the model window are tagged in several windows, so nothing is
    truncated; a text that is empty or longer than ``max_chars`` raises
    :class:`NerInputError`, which ``RunInference(...).with_exception_handling()``
    turns into a failed element (see ``transforms.ner_enrich``). Both texts
    and batches are counted in the ``aisle.ner`` metrics namespace.
    """

    def __init__(
        self,
        model_uri: str,
        *,
        backend: str = "auto",
        onnx_file: str = "model.onnx",
        max_length: int = 128,
        max_chars: int = 20_000,
        max_tokens_per_batch: int = 4096,
        intra_op_threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        min_batch_size: int = 1,
        max_batch_size: int = 64,
        max_batch_duration_secs: int | None = None,
        large_model: bool = False,
        graph_optimization: str = "all",
    ):
        if max_chars < 1:
            raise ConfigError(f"max_chars must be >= 1, got {max_chars}")
        self._model_uri = model_uri
        self._load_kwargs = dict(
            backend=backend,
            onnx_file=onnx_file,
            intra_op_threads=intra_op_threads,
            providers=tuple(providers),
            max_length=max_length,
            max_tokens_per_batch=max_tokens_per_batch,
            graph_optimization=graph_optimization,
        )
        self._max_chars = max_chars
        self._batching = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}
        if max_batch_duration_secs is not None:
            self._batching["max_batch_duration_secs"] = max_batch_duration_secs
        self._large_model = large_model
        super().__init__()

    def load_model(self) -> NerTagger:
        return load_tagger(self._model_uri, **self._load_kwargs)

    def run_inference(
        self,
        batch: Sequence[str],
        model: NerTagger,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        from apache_beam.metrics import Metrics

        texts = [check_text(t, max_chars=self._max_chars) for t in batch]
        entities = model.entities(texts)
        Metrics.counter(METRICS_NAMESPACE, "texts").inc(len(texts))
        Metrics.counter(METRICS_NAMESPACE, "entities").inc(sum(len(e) for e in entities))
        return [PredictionResult(t, e, self._model_uri) for t, e in zip(batch, entities)]

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._batching

    def share_model_across_processes(self) -> bool:
        return self._large_model

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE
