"""ONNX exports of intent models (``embedding-head``, ``setfit``): the sentence encoder's graph
that the server runs for the model and the model's softmax head, joined into one graph.

The encoder's graph is the one serving uses, not a new export: for ``embedding-head`` the
shared encoder's pooled graph in the precision the model records (``nlu.encoder.onnx_graph``:
the int8 copy for models served in int8), for ``setfit`` the tuned encoder the model saved.
Inputs are the tokenizer's ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` where
the encoder takes them); the output ``probabilities`` is ``[batch, labels]``. The tokenizer is
written beside it with the server's truncation and padding set in it. The out-of-scope
threshold is not in the graph: it can move without retraining (``labels.json`` carries it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.onnx import EXPORT_GRAPH, OnnxExport, TextPreprocessing, append_linear_head
from nlu.encoder import encoder_spec, load_tokenizer

__all__ = ["TOKENIZER_FILE", "export_intent", "lowercases"]

TOKENIZER_FILE = "tokenizer.json"


def export_intent(
    target: Path,
    *,
    labels: list[str],
    weight: np.ndarray,
    bias: np.ndarray,
    encoder_graph: Path,
    encoder: str,
    precision: str,
    max_tokens: int | None,
    cache_dir: Path,
) -> OnnxExport:
    """Write ``model.onnx`` (``encoder_graph`` + the head ``weight``/``bias``) and the
    tokenizer (cutting at ``max_tokens``, default the encoder's limit) into ``target``."""
    import onnx

    spec = encoder_spec(encoder)
    merged = append_linear_head(
        onnx.load(str(encoder_graph)),
        features="embedding",
        weight=weight,
        bias=bias,
        activation="softmax",
    )
    onnx.save_model(merged, str(target / EXPORT_GRAPH))
    tokenizer = load_tokenizer(max_tokens, encoder=spec.name, cache_dir=cache_dir)
    tokenizer.save(str(target / TOKENIZER_FILE))
    return OnnxExport(
        labels=labels,
        preprocessing=TextPreprocessing(
            tokenizer_file=TOKENIZER_FILE,
            encoder=spec.name,
            max_tokens=max_tokens or spec.max_tokens,
            lowercase=lowercases(json.loads(tokenizer.to_str()).get("normalizer")),
            padding_token=spec.pad_token,
            inputs=[i.name for i in merged.graph.input],
            precision="int8" if precision == "int8" else "fp32",
            one_text_per_run=precision == "int8",
        ),
        files=[TOKENIZER_FILE],
    )


def lowercases(normalizer: Any) -> bool:
    """Whether a tokenizer's normalizer (its ``tokenizer.json`` entry) lower-cases text."""
    if not isinstance(normalizer, dict):
        return False
    if normalizer.get("type") == "Lowercase" or normalizer.get("lowercase") is True:
        return True
    return any(lowercases(n) for n in normalizer.get("normalizers") or [])
