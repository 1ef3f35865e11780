"""Object detection: the ``faster-rcnn-lite0`` backend and detection metrics (its
``Detection`` and ``Box`` types live in ``core.backends``)."""

from vision.detect.backend import (
    DetectionBackend,
    DetectionConfig,
    DetectionModel,
)
from vision.detect.metrics import detection_metrics

__all__ = [
    "DetectionBackend",
    "DetectionConfig",
    "DetectionModel",
    "detection_metrics",
]
