"""Object detection: the ``faster-rcnn-lite0`` backend and detection metrics."""

from vision.detect.backend import (
    Box,
    Detection,
    DetectionBackend,
    DetectionConfig,
    DetectionModel,
)
from vision.detect.metrics import detection_metrics

__all__ = [
    "Box",
    "Detection",
    "DetectionBackend",
    "DetectionConfig",
    "DetectionModel",
    "detection_metrics",
]
