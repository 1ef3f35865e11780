"""ONNX Runtime sessions for the CPU paths of the text encoder and the image backbone, the
atomic write of an exported graph (derived files in the cache folder, made once), and what a
model's ONNX export is made of (``GET /v1/models/{id}/export``): ``append_linear_head`` joins
a network's graph with a trained classifier head into one graph, ``OnnxExport`` describes the
files a backend's ``export_onnx`` wrote."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EXPORT_GRAPH",
    "ImagePreprocessing",
    "OnnxExport",
    "TextPreprocessing",
    "append_linear_head",
    "onnx_session",
    "write_atomically",
]

EXPORT_GRAPH = "model.onnx"
"""The file name of an export's graph."""


def onnx_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session for a graph, on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def write_atomically(target: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary path)`` then move the file onto ``target`` (readers never see a
    half-written graph; concurrent writers end with one whole file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def append_linear_head(
    base: Any,
    *,
    features: str,
    weight: np.ndarray,
    bias: np.ndarray,
    activation: Literal["softmax", "sigmoid"],
    normalise: bool = False,
    output: str = "probabilities",
) -> Any:
    """``base`` (an ``onnx.ModelProto`` whose output ``features`` is ``[batch, d]``) joined with
    a linear classifier into one graph (``onnx.compose.merge_models``): optional L2
    normalisation of the features (``x / max(|x|, 1e-12)``), ``x @ weight.T + bias``, then
    softmax or one sigmoid per label, as the output ``output`` ``[batch, labels]``. The head's
    nodes and weights are named ``parley_head.*``; it uses ``base``'s opsets and IR version."""
    from onnx import TensorProto, compose, helper, numpy_helper

    labels, dim = weight.shape
    p = "parley_head."
    weights = np.ascontiguousarray(np.asarray(weight, dtype=np.float32).T)
    inits = [
        numpy_helper.from_array(weights, p + "weight_t"),
        numpy_helper.from_array(np.asarray(bias, dtype=np.float32), p + "bias"),
    ]
    nodes = []
    x = features
    if normalise:
        inits += [
            numpy_helper.from_array(np.array([-1], dtype=np.int64), p + "axes"),
            numpy_helper.from_array(np.array(1e-12, dtype=np.float32), p + "epsilon"),
        ]
        nodes += [
            helper.make_node("Mul", [x, x], [p + "squares"], name=p + "squares"),
            helper.make_node(
                "ReduceSum", [p + "squares", p + "axes"], [p + "sum"], name=p + "sum", keepdims=1
            ),
            helper.make_node("Sqrt", [p + "sum"], [p + "norm"], name=p + "norm"),
            helper.make_node("Max", [p + "norm", p + "epsilon"], [p + "floor"], name=p + "floor"),
            helper.make_node("Div", [x, p + "floor"], [p + "normalised"], name=p + "normalised"),
        ]
        x = p + "normalised"
    nodes += [
        helper.make_node("MatMul", [x, p + "weight_t"], [p + "product"], name=p + "matmul"),
        helper.make_node("Add", [p + "product", p + "bias"], [p + "logits"], name=p + "logits"),
        helper.make_node("Softmax", [p + "logits"], [output], name=p + "softmax", axis=-1)
        if activation == "softmax"
        else helper.make_node("Sigmoid", [p + "logits"], [output], name=p + "sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "parley_head",
        [helper.make_tensor_value_info(features, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", labels])],
        initializer=inits,
    )
    head = helper.make_model(
        graph, opset_imports=list(base.opset_import), ir_version=base.ir_version
    )
    return compose.merge_models(base, head, io_map=[(features, features)])


class TextPreprocessing(BaseModel):
    """How texts become an exported text model's inputs (``preprocessing.json``)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["text"] = "text"
    tokenizer_file: str = Field(
        description="the tokenizer (Hugging Face `tokenizers` JSON), with the server's "
        "truncation and padding set in it"
    )
    encoder: str = Field(description="the sentence encoder the model was trained on")
    max_tokens: int = Field(description="texts are cut to this many tokens (with [CLS]/[SEP])")
    lowercase: bool = Field(description="whether the tokenizer lower-cases (it does it itself)")
    padding_token: str
    inputs: list[str] = Field(description="the graph's inputs, each int64 [batch, tokens]")
    pooling: str = "mean of the token vectors under attention_mask, L2-normalised (in the graph)"
    precision: Literal["fp32", "int8"] = Field(
        description="the encoder's weights: int8 is dynamically quantised, as the server runs it"
    )
    one_text_per_run: bool = Field(
        description="int8 quantises activations per run: run one text at a time (as the server "
        "does) to get the server's numbers; a padded batch gives slightly different ones"
    )


class ImagePreprocessing(BaseModel):
    """How an image becomes an exported image model's input (``preprocessing.json``)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["image"] = "image"
    input: str = "images"
    layout: str = "NCHW float32 [batch, 3, size, size]"
    size: int = Field(description="the centre crop's side, in pixels")
    resize_shorter_side: int = Field(
        description="the shorter side is resized to this first (the other keeps the aspect "
        "ratio, rounded, at least size)"
    )
    resample: str = "bicubic (Pillow's Image.Resampling.BICUBIC)"
    crop: str = "centre: left = (width - size) // 2, top = (height - size) // 2"
    channel_order: str = "RGB (EXIF orientation applied; transparency composited on white)"
    normalisation: str = "(x - 127) / 128 per channel, x the 0-255 pixel value"
    mean: float = 127.0
    std: float = 128.0


class OnnxExport(BaseModel):
    """What a backend's ``export_onnx`` wrote into its folder: ``model.onnx`` (one graph from
    the model's inputs to the probabilities the server returns) and ``files`` besides it."""

    model_config = ConfigDict(frozen=True)

    labels: list[str] = Field(description="the labels, in the order of the output's columns")
    output: str = "probabilities"
    multi_label: bool = False
    thresholds: list[float] | None = Field(
        default=None, description="multi-label: per label, the probability that counts as yes"
    )
    preprocessing: TextPreprocessing | ImagePreprocessing = Field(discriminator="kind")
    files: list[str] = Field(default_factory=list, description="files besides model.onnx")
