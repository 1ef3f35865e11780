"""Parley's Python client and command line. ``from parley import ParleyClient``."""

from parley.client import ParleyAPIError, ParleyClient

__all__ = ["ParleyAPIError", "ParleyClient"]
