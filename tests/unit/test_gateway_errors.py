"""How MLflow's failures are reported: an answer that was an error is not an outage."""

from __future__ import annotations

import base64
import json

import pytest
from mlflow.exceptions import MlflowException

from registry_service import errors
from registry_service.gateway.mlflow_gateway import MlflowGateway, _check_offset

URL = "http://127.0.0.1:5000/api/2.0/mlflow/model-versions/get"


def convert(message: str) -> errors.RegistryError:
    return MlflowGateway._convert(MlflowException(message), errors.VersionNotFound, "version")


def test_mlflow_answering_500_is_a_bad_gateway_not_unreachable():
    error = convert(
        f"API request to {URL} failed with exception HTTPConnectionPool(host='127.0.0.1', "
        "port=5000): Max retries exceeded with url: /api/2.0/mlflow/model-versions/get "
        "(Caused by ResponseError('too many 500 error responses'))"
    )
    assert type(error) is errors.UpstreamError
    assert errors.status_for(error) == 502


def test_mlflow_not_answering_is_unavailable():
    error = convert(
        f"API request to {URL} failed with exception HTTPConnectionPool(host='127.0.0.1', "
        "port=5000): Max retries exceeded with url: /api/2.0/mlflow/model-versions/get "
        "(Caused by NewConnectionError('Failed to establish a new connection'))"
    )
    assert type(error) is errors.UpstreamUnavailable
    assert errors.status_for(error) == 503


def token(state) -> str:
    return base64.b64encode(json.dumps(state).encode()).decode()


@pytest.mark.parametrize("offset", [10**20, -1, 1.5, "10", True])
def test_forged_offsets_are_refused_before_mlflow(offset):
    with pytest.raises(errors.BadRequest):
        _check_offset(token({"offset": offset}))


@pytest.mark.parametrize("value", [None, "", token({"offset": 200}), "not-base64!", token([1])])
def test_tokens_mlflow_can_read_or_judge_pass(value):
    _check_offset(value)
