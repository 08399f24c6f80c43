"""docs/API.md is generated from the OpenAPI document and must not drift from it."""

from pathlib import Path

from registry_service.apidoc import openapi_spec, render

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def test_api_reference_is_current():
    rendered = render(openapi_spec())
    assert "### `POST /api/v1/promotions/{request_id}/approve`" in rendered
    assert API_MD.read_text() == rendered, (
        "docs/API.md is stale: python -m registry_service.apidoc > docs/API.md"
    )
