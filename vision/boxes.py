"""The one box type of the vision backends (detections, OCR lines): pixels of the input image."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Box"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in pixels (floats); ``x_min <= x_max``, ``y_min <= y_max``."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    def clipped(self, width: float, height: float) -> Box:
        """This box cut to an image of ``width`` x ``height`` pixels."""
        return Box(
            x_min=min(max(self.x_min, 0.0), width),
            y_min=min(max(self.y_min, 0.0), height),
            x_max=min(max(self.x_max, 0.0), width),
            y_max=min(max(self.y_max, 0.0), height),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
