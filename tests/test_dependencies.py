"""Known vulnerabilities in what the install brings: ``pip-audit`` over this venv's packages.

pip-audit asks a vulnerability service over the network: PyPI's JSON API first, then OSV. When
neither can be had (no network, or an index that answers no package), the test SKIPS and says
so: it never passes without having audited. When one answers, every known vulnerability fails
the test with the list, except the ones in ``IGNORED`` (each with its reason).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".pytest_cache" / "pip-audit"  # pip-audit's HTTP cache, kept between runs
SERVICES = ("pypi", "osv")
BUDGET_S = 240.0  # for all services together
SOCKET_TIMEOUT_S = 10

# Findings with no fixed release, each with why it is acceptable for now. Remove an entry when
# a fix ships. Format: "<vulnerability id>": "<package>: <reason>".
IGNORED: dict[str, str] = {}

# Installed packages that no vulnerability service knows (not published on PyPI), with why.
NOT_ON_PYPI: dict[str, str] = {}

# What pip-audit's traceback says when the service could not be reached at all.
_NETWORK_ERRORS = (
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "NameResolutionError",
    "Max retries exceeded",
    "ProxyError",
    "ServiceError",
)


@dataclass(frozen=True)
class Audit:
    service: str
    audited: list[dict[str, Any]]  # packages the service answered for
    unaudited: dict[str, str]  # package -> why it could not be looked up


def run_audit(service: str, timeout: float) -> Audit | str:
    """The audit by ``service``, or why the service could not be had (a sentence)."""
    argv = [
        sys.executable,
        "-m",
        "pip_audit",
        "--vulnerability-service",
        service,
        "--local",
        "--skip-editable",  # Parley itself
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--desc",
        "off",
        "--timeout",
        str(SOCKET_TIMEOUT_S),
        "--cache-dir",
        str(CACHE),
    ]
    for vuln_id in IGNORED:
        argv += ["--ignore-vuln", vuln_id]
    try:
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{service}: no answer within {timeout:.0f} s"
    try:
        report = json.loads(result.stdout)
    except ValueError:
        if any(marker in result.stderr for marker in _NETWORK_ERRORS):
            last = result.stderr.strip().splitlines()[-1]
            return f"{service}: unreachable ({last[:300]})"
        pytest.fail(f"pip-audit failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    audited = [dep for dep in report["dependencies"] if "skip_reason" not in dep]
    unaudited = {  # what the service could not look up (Parley itself is skipped on purpose)
        dep["name"]: dep["skip_reason"]
        for dep in report["dependencies"]
        if "skip_reason" in dep and "editable" not in dep["skip_reason"]
    }
    if not audited:
        first = next(iter(unaudited.values()), "no packages listed")
        return f"{service}: answered for none of {len(unaudited)} packages (e.g. {first!r})"
    return Audit(service, audited, unaudited)


@pytest.mark.slow
def test_installed_packages_have_no_known_vulnerabilities() -> None:
    if subprocess.run([sys.executable, "-m", "pip_audit", "--version"]).returncode != 0:
        pytest.fail("pip-audit is not installed; install the test extra: pip install -e '.[test]'")
    CACHE.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + BUDGET_S
    reasons = []
    for service in SERVICES:
        outcome = run_audit(service, timeout=max(deadline - time.monotonic(), 1.0))
        if isinstance(outcome, Audit):
            break
        reasons.append(outcome)
    else:
        pytest.skip(
            "pip-audit could not reach a vulnerability database, so nothing was audited: "
            + "; ".join(reasons)
        )

    found = [
        f"{dep['name']} {dep['version']}: {vuln['id']} "
        f"(fixed in {', '.join(vuln.get('fix_versions') or []) or 'no release yet'})"
        for dep in outcome.audited
        for vuln in dep.get("vulns", [])
        if not {vuln["id"], *vuln.get("aliases", [])} & IGNORED.keys()
    ]
    assert not found, (
        f"known vulnerabilities ({outcome.service}); upgrade the packages (and the constraints "
        "file), or, where no fix exists, add the id to IGNORED with a reason:\n" + "\n".join(found)
    )
    unknown = {name: why for name, why in outcome.unaudited.items() if name not in NOT_ON_PYPI}
    assert not unknown, (
        f"{outcome.service} could not audit {len(unknown)} installed packages; if they are not "
        "published, list them in NOT_ON_PYPI with a reason:\n"
        + "\n".join(f"{name}: {why}" for name, why in sorted(unknown.items()))
    )
