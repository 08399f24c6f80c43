"""Schemathesis over every operation of the OpenAPI document, as admin and as viewer,
against PostgreSQL and a real `mlflow server`: no server error, and every answer as
documented (status, content type, schema)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from registry_service.services.context import Context
from tests.conftest import get_services_of

CTX = Context(actor="test-setup")
EXAMPLES_PER_OPERATION = 20
# Page tokens are opaque strings: a random one is rightly refused (400), though the
# schema cannot say which strings are tokens we issued.
NOT_APPLICABLE = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture
def api_schema(app, make_run):
    # Something to find: a model with a version, so not every case is a 404.
    services = get_services_of(app)
    if not services.models.list_models("fuzzed", 1, None).items:
        services.models.create_model(CTX, "fuzzed", "for schemathesis", {})
        services.models.register_version(CTX, "fuzzed", make_run(), "model", None, {})
    yield schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    # Webhooks it registered would be owed every later event of the shared database.
    for webhook in services.webhooks.list():
        services.webhooks.delete(CTX, webhook.id)


def fuzz(api_schema, headers) -> list[str]:
    """Run every operation; the failures, one line each (all operations always run)."""
    failures, calls = [], []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 35
    for operation in operations:

        @given(
            case=operation.as_strategy(GenerationMode.POSITIVE)
            | operation.as_strategy(GenerationMode.NEGATIVE)
        )
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            calls.append(case.operation.label)
            case.call_and_validate(headers=headers, excluded_checks=NOT_APPLICABLE)

        try:
            run()
        # Collected, so that one report names every failing operation.
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    # Every operation was called, most of them many times.
    assert set(calls) == {operation.label for operation in operations}
    assert len(calls) >= 5 * len(operations)
    return failures


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_every_operation_answers_as_documented(api_schema, auth, role):
    assert fuzz(api_schema, auth(role)) == []
