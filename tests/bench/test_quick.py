"""Every bench in bench/ runs its ``--quick`` mode end to end (tiny data generated in-process,
a real server where the bench starts one) and prints its targets table.

The benches are found by listing bench/: a new bench without ``--quick`` fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# bench/ modules that are not benches: the shared harness and report, the web chat gateway
# helpers of the socket benches, the generators of the synthetic photos, documents and scans,
# and the loopback cluster (bench.topology) of the cluster bench and tests/cluster.
SUPPORT = {"__init__", "harness", "report", "webchat", "documents", "scans", "scenes", "topology"}
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in SUPPORT)
# The header of the targets table every bench ends with ("engine"/"split" first for some).
TARGETS_HEADER = re.compile(r"^(\w+\s+)?target\s+value\s+goal\s+(result|met)$", re.M)
VERDICT = re.compile(r"(PASS|FAIL|✅|❌)$", re.M)
QUICK_TIMEOUT_S = 240


def test_the_benches_are_found() -> None:
    assert {"intent", "entities", "serving", "chat", "soak", "cluster"} <= set(BENCHES)


@pytest.mark.slow
@pytest.mark.parametrize("bench", BENCHES)
def test_quick_mode_runs_and_prints_its_targets(bench: str, tmp_path: Path) -> None:
    out = tmp_path / f"{bench}.json"
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", "--quick", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"bench.{bench} --quick failed:\n{proc.stdout}\n{proc.stderr}"
    assert TARGETS_HEADER.search(proc.stdout), f"no targets table:\n{proc.stdout}"
    assert VERDICT.search(proc.stdout), f"no PASS/FAIL in the targets:\n{proc.stdout}"
    assert out.read_text().startswith("{"), "the --json file was not written"
