"""The gateway on MLflow's in-process SQLite store (the embedded default)."""

import uuid

import pytest

from registry_service import errors
from registry_service.domain.entities import Stage


@pytest.fixture
def name():
    return f"emb-{uuid.uuid4().hex[:8]}"


def test_default_experiment_lives_under_the_artifact_root(embedded_gateway, tmp_path_factory):
    experiment = embedded_gateway.get_experiment("0")
    assert "embedded-mlflow" in experiment.artifact_location
    assert "mlruns" not in experiment.artifact_location


def test_create_get_and_duplicate(embedded_gateway, name):
    created = embedded_gateway.create_registered_model(name, "desc", {"team": "ds"})
    assert created.name == name and created.tags == {"team": "ds"}
    assert embedded_gateway.get_registered_model(name).description == "desc"
    with pytest.raises(errors.AlreadyExists):
        embedded_gateway.create_registered_model(name, None, {})


def test_missing_things_raise_our_not_found(embedded_gateway, name):
    with pytest.raises(errors.ModelNotFound):
        embedded_gateway.get_registered_model(name)
    embedded_gateway.create_registered_model(name, None, {})
    with pytest.raises(errors.VersionNotFound):
        embedded_gateway.get_model_version(name, 7)
    with pytest.raises(errors.RunNotFound):
        embedded_gateway.get_run(uuid.uuid4().hex)


def test_production_transition_archives_previous_holder(embedded_gateway, name):
    embedded_gateway.create_registered_model(name, None, {})
    for _ in range(3):
        embedded_gateway.create_model_version(name, "/tmp/model", None, None, {})
    embedded_gateway.transition_stage(name, 1, Stage.PRODUCTION, True)
    result = embedded_gateway.transition_stage(name, 2, Stage.PRODUCTION, True)
    assert result.version.stage == "Production" and result.archived == [1]
    assert embedded_gateway.get_model_version(name, 1).stage == "Archived"
    kept = embedded_gateway.transition_stage(name, 3, Stage.PRODUCTION, False)
    assert kept.archived == []
    assert embedded_gateway.get_model_version(name, 2).stage == "Production"


def test_alias_set_move_and_delete_report_previous(embedded_gateway, name):
    embedded_gateway.create_registered_model(name, None, {})
    for _ in range(2):
        embedded_gateway.create_model_version(name, "/tmp/model", None, None, {})
    assert embedded_gateway.set_alias(name, "champion", 1) is None
    assert embedded_gateway.set_alias(name, "champion", 2) == 1
    assert embedded_gateway.get_version_by_alias(name, "champion").version == 2
    assert embedded_gateway.get_registered_model(name).aliases == {"champion": 2}
    assert embedded_gateway.delete_alias(name, "champion") == 2
    assert embedded_gateway.delete_alias(name, "champion") is None


def test_search_versions_newest_first_with_tokens(embedded_gateway, name):
    embedded_gateway.create_registered_model(name, None, {})
    for _ in range(5):
        embedded_gateway.create_model_version(name, "/tmp/model", None, None, {})
    first = embedded_gateway.search_model_versions(name, 2, None)
    assert [v.version for v in first.items] == [5, 4] and first.next_page_token
    second = embedded_gateway.search_model_versions(name, 2, first.next_page_token)
    assert [v.version for v in second.items] == [3, 2]
