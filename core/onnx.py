"""ONNX Runtime sessions for the CPU paths of the text encoder and the image backbone, and the
atomic write of an exported graph (derived files in the cache folder, made once)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["onnx_session", "write_atomically"]


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
