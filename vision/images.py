"""Safe image decoding for the vision backends. It lives in ``core.images`` because dataset
import (``training``) checks every uploaded image too, and imports point toward ``core``."""

from core.images import DEFAULT_MAX_PIXELS, FORMATS, MAX_SIDE, DecodedImage, decode_image, probe

__all__ = ["DEFAULT_MAX_PIXELS", "FORMATS", "MAX_SIDE", "DecodedImage", "decode_image", "probe"]
