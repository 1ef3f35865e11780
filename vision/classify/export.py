"""ONNX exports of image classifiers, one graph from pixels to the probabilities the server
returns (input ``images``, ``[batch, 3, size, size]`` float32, prepared as
``vision.backbone.prepare`` does; output ``probabilities``, ``[batch, labels]``):

- ``lite0-head`` and ``lite0-multi-label``: the shared Lite0 feature graph that the CPU runtime
  serves (``features_graph``) joined with the head: L2 normalisation, linear layer, softmax
  (single label) or one sigmoid per label (multi-label; the per-label thresholds go in
  ``labels.json``);
- ``lite0-finetune``: the tuned network, exported whole from its saved weights, with softmax.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from core.onnx import (
    EXPORT_GRAPH,
    ImagePreprocessing,
    OnnxExport,
    append_linear_head,
    write_atomically,
)
from vision.backbone import IMAGE_SIZE, RESIZE
from vision.classify.features import features_graph

__all__ = ["export_finetuned", "export_head"]


def export_head(
    target: Path,
    *,
    labels: list[str],
    weight: np.ndarray,
    bias: np.ndarray,
    multi_label: bool,
    thresholds: list[float] | None,
    cache_dir: Path,
) -> OnnxExport:
    """Write ``model.onnx``: the feature graph and a head of ``weight``/``bias``."""
    import onnx

    merged = append_linear_head(
        onnx.load(str(features_graph(cache_dir))),
        features="features",
        weight=weight,
        bias=bias,
        activation="sigmoid" if multi_label else "softmax",
        normalise=True,
    )
    onnx.save_model(merged, str(target / EXPORT_GRAPH))
    return OnnxExport(
        labels=labels,
        multi_label=multi_label,
        thresholds=thresholds if multi_label else None,
        preprocessing=ImagePreprocessing(size=IMAGE_SIZE, resize_shorter_side=RESIZE),
    )


def export_finetuned(
    target: Path, *, network: Any, labels: list[str], image_size: int
) -> OnnxExport:
    """Write ``model.onnx``: the fine-tuned ``network`` (a torch module, logits) and softmax."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, images: Any) -> Any:
            return torch.softmax(self.network(images), dim=-1)

    module = Probabilities().to("cpu").eval()
    example = torch.zeros(2, 3, image_size, image_size)

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes; outputs checked in tests
            torch.onnx.export(
                module,
                (example,),
                tmp,
                input_names=["images"],
                output_names=["probabilities"],
                dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )

    write_atomically(target / EXPORT_GRAPH, write)
    return OnnxExport(
        labels=labels,
        preprocessing=ImagePreprocessing(
            size=image_size, resize_shorter_side=round(image_size * 8 / 7)
        ),
    )
