"""schemathesis over ``/openapi.json`` of a live gateway, with a tenant's admin key.

Every documented operation is called with requests generated from its schema (a bounded
number of examples each, valid and invalid), and each answer must be:

* not a server error (no ``5xx``; an operation that documents ``502`` — it calls a server the
  tenant names, which no probe can reach here — may answer that 502, never another 5xx);
* of a documented status (``status_code_conformance``: an undocumented ``409`` or ``415`` is a
  gap in ``bot_gateway.openapi``), content type and headers;
* valid against the documented schema of that status (``response_schema_conformance``).

Left out, being slow or stateful rather than request/answer: the operations that train a model
(``POST /v1/models``; bots, whose inline NLU examples train; a Rasa import) and the
websockets (not in the OpenAPI document). The whole run takes about two minutes on 2 cores.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis comes with the test extra")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.probes.conftest import LiveGateway, ProbeTenant  # noqa: E402

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 15  # per operation and generation mode (valid data, then invalid data)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
TRAINS = {
    ("POST", "/v1/models"),
    ("POST", "/v1/bots"),
    ("PUT", "/v1/bots/{bot_id}"),
    ("POST", "/v1/bots/import/rasa"),
}


def fuzz(
    operation: Any,
    mode: GenerationMode,
    url: str,
    headers: dict[str, str],
    statuses: set[int],
    *,
    upstream: bool = False,
) -> list[str]:
    """The distinct failures (check, first line) of ``operation`` in ``mode``; the statuses
    it answered are added to ``statuses``. ``upstream``: the operation documents a ``502`` (it
    calls a server the request or tenant names, which a probe cannot reach: no DNS here); that
    502 is then an answer, checked against its documented schema like any other, and every
    other 5xx still fails."""
    found: dict[tuple[str, ...], str] = {}
    checks = [c for c in CHECKS if c is not not_a_server_error] if upstream else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests every run: a failure is reproducible
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded in time
    )
    def call(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=60)
        statuses.add(response.status_code)
        if upstream and response.status_code >= 500 and response.status_code != 502:
            found.setdefault(
                ("server error", str(response.status_code)),
                f"{operation.label} ({mode}): {response.status_code} {response.text[:300]}"
                f"\n  {case.as_curl_command(headers=headers)}",
            )
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = (failure.title, failure.message.splitlines()[0] if failure.message else "")
                found.setdefault(
                    key,
                    f"{operation.label} ({mode}): {failure.title}: "
                    f"{failure.message[:600]}\n  {case.as_curl_command(headers=headers)}",
                )

    try:
        call()
    except Unsatisfiable:  # nothing in the operation can be made invalid (no parameters)
        assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request"
    return list(found.values())


@pytest.fixture(scope="session")
def fuzzed_tenant(live_gateway: LiveGateway) -> ProbeTenant:
    """A tenant of its own: what schemathesis creates does not touch the other probes'."""
    return live_gateway.new_tenant(f"schemathesis-{secrets.token_hex(3)}")


def test_every_operation_answers_as_documented(
    live_gateway: LiveGateway, fuzzed_tenant: ProbeTenant
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_gateway.url}/openapi.json", timeout=30)
    failures: list[str] = []
    fuzzed = 0
    succeeded = []  # operations that answered a 2xx at least once: the key was let in
    for result in schema.get_all_operations():
        operation = result.ok()  # an operation schemathesis cannot read fails here
        if (operation.method.upper(), operation.path) in TRAINS:
            continue
        fuzzed += 1
        statuses: set[int] = set()
        documented = schema.raw_schema["paths"][operation.path][operation.method.lower()]
        upstream = "502" in documented.get("responses", {})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz(
                operation,
                mode,
                live_gateway.url,
                fuzzed_tenant.headers,
                statuses,
                upstream=upstream,
            )
        if any(200 <= status < 300 for status in statuses):
            succeeded.append(operation.label)
    assert fuzzed >= 50, f"only {fuzzed} operations were found in /openapi.json"
    assert len(succeeded) >= 10, f"few operations ever succeeded: {succeeded}"
    assert live_gateway.alive(), live_gateway.log_tail()
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)
