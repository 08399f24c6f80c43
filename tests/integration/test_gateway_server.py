"""The MLflow gateway against a real `mlflow server` process."""

import uuid

import pytest

from registry_service import errors
from registry_service.domain.entities import Stage
from registry_service.gateway.http import POOL_CLASSES
from registry_service.gateway.mlflow_gateway import MlflowGateway
from tests.rig import free_port


@pytest.fixture(scope="module")
def gateway(mlflow_uri):
    return MlflowGateway(mlflow_uri)


@pytest.fixture
def name():
    return f"gw-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def add_version(gateway, make_run, mlflow_client):
    """Register a version whose source is a real run's model folder."""

    def add(name):
        run_id = make_run()
        source = mlflow_client.get_run(run_id).info.artifact_uri + "/model"
        return gateway.create_model_version(name, source, run_id, None, {})

    return add


def test_model_round_trip_and_tags(gateway, name):
    gateway.create_registered_model(name, "d", {"a": "1"})
    updated = gateway.update_registered_model(name, "d2", {"b": "2"}, ["a"])
    assert updated.description == "d2" and updated.tags == {"b": "2"}
    with pytest.raises(errors.AlreadyExists):
        gateway.create_registered_model(name, None, {})
    gateway.delete_registered_model(name)
    with pytest.raises(errors.ModelNotFound):
        gateway.get_registered_model(name)


def test_search_models_by_prefix(gateway, name):
    for suffix in ("x", "y"):
        gateway.create_registered_model(f"{name}{suffix}", None, {})
    page = gateway.search_registered_models(name, 1, None)
    assert [m.name for m in page.items] == [f"{name}x"] and page.next_page_token
    page2 = gateway.search_registered_models(name, 1, page.next_page_token)
    assert [m.name for m in page2.items] == [f"{name}y"]


def test_transition_archives_previous_production(gateway, name, add_version):
    gateway.create_registered_model(name, None, {})
    for _ in range(2):
        add_version(name)
    gateway.transition_stage(name, 1, Stage.PRODUCTION, True)
    result = gateway.transition_stage(name, 2, Stage.PRODUCTION, True)
    assert result.archived == [1]
    assert gateway.get_model_version(name, 1).stage == "Archived"
    model = gateway.get_registered_model(name)
    assert model.latest_versions["Production"] == 2


def test_aliases(gateway, name, add_version):
    gateway.create_registered_model(name, None, {})
    add_version(name)
    assert gateway.set_alias(name, "champion", 1) is None
    assert gateway.get_version_by_alias(name, "champion").aliases == ["champion"]
    assert gateway.delete_alias(name, "champion") == 1
    with pytest.raises(errors.VersionNotFound):
        gateway.get_version_by_alias(name, "champion")
    with pytest.raises(errors.VersionNotFound):
        gateway.set_alias(name, "champion", 5)


def test_unreachable_server_is_upstream_unavailable():
    gateway = MlflowGateway(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(errors.UpstreamUnavailable) as info:
        gateway.get_registered_model("anything")
    assert errors.status_for(info.value) == 503
    with pytest.raises(errors.UpstreamUnavailable):
        gateway.ping()


def test_mlflow_sessions_use_quick_ack_connections(gateway, name):
    from mlflow.utils import request_utils

    gateway.create_registered_model(name, None, {})
    session = request_utils._get_request_session(
        max_retries=2,
        backoff_factor=1,
        backoff_jitter=1.0,
        retry_codes=(429, 500, 502, 503, 504),
        raise_on_status=True,
        respect_retry_after_header=True,
    )
    adapter = session.get_adapter("http://127.0.0.1/")
    assert adapter.poolmanager.pool_classes_by_scheme == POOL_CLASSES
