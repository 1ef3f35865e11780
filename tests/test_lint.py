"""The house checks run with the tests: ``scripts/check`` (ruff lint, ruff format, mypy).

``scripts/test`` runs ``scripts/check`` itself before pytest and deselects this file, so CI
checks once; a plain ``pytest`` run still gets them here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_scripts_check_passes() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check")],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
