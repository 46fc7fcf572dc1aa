"""Property-based tests of the control API with schemathesis, from its own OpenAPI document.

Every operation of ``/openapi.json`` is called with bounded, generated examples (paths,
query parameters, bodies valid and not) against a real uvicorn server, as a tenant in its own
namespace; each answer must not be a 5xx and must match the documented response schema
(objects for 2xx, a Kubernetes ``Status`` for errors). Watches are left to the watch tests
(a generated ``watch=1`` would stream for half an hour).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402 - after the importorskip
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from tests.support.tenants import TOKENS, Tenants, tenants  # noqa: E402

MAX_EXAMPLES = 4
"""Examples per operation (70 operations): about a minute on two quiet cores; generating kind bodies dominates."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    with tenants(tmp_path_factory.mktemp("properties"), max_upload_bytes=1 << 20) as running:
        yield running


def _openapi() -> dict[str, Any]:
    """The document the server serves (built from an app of the same code; the calls go to the real server)."""
    from prometheus_client import CollectorRegistry

    from corral.controlapi import TokenAuth, create_app
    from corral.store import SqliteStore

    app = create_app(SqliteStore(":memory:"), TokenAuth([]), registry=CollectorRegistry(), artifact_root="file:///x")
    document: dict[str, Any] = app.openapi()
    return document


# Loaded eagerly: schemathesis' fixture-based (lazy) loader does not run under pytest 9.
schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_within_its_schema(case: Any, world: Tenants) -> None:
    if case.query:
        case.query.pop("watch", None)  # a watch streams; its contract is tested by the watch tests
    if case.path_parameters and "namespace" in case.path_parameters:
        case.path_parameters["namespace"] = "team-a"  # other namespaces are 403: the isolation matrix
    headers = {"Authorization": f"Bearer {TOKENS['team-a']}"}
    case.call_and_validate(
        base_url=world.url,
        headers=headers,
        checks=[not_a_server_error, response_schema_conformance],
        timeout=30,
    )
