"""Settings from the environment, and the single error-to-status table."""

import pytest

from registry_service import errors
from registry_service.config import Settings, normalize_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg2://u:p@h/db"),
        ("postgres://u@h:5433/db", "postgresql+psycopg2://u@h:5433/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_database_urls_use_the_shipped_driver(given, expected):
    assert normalize_database_url(given) == expected


def test_embedded_defaults_live_under_one_data_dir(tmp_path):
    settings = Settings.from_env({"REGISTRY_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path}/registry.db"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert settings.mlflow_registry_uri == settings.mlflow_tracking_uri
    assert settings.artifact_root == str(tmp_path / "artifacts")
    assert settings.embedded_mlflow


def test_remote_settings_from_env():
    settings = Settings.from_env(
        {
            "REGISTRY_DATABASE_URL": "postgresql://reg@db/registry",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "REGISTRY_MLFLOW_TIMEOUT": "3.5",
        }
    )
    assert settings.database_url.startswith("postgresql+psycopg2://")
    assert settings.mlflow_registry_uri == "http://mlflow:5000"
    assert settings.mlflow_timeout == 3.5
    assert not settings.embedded_mlflow


def test_bad_numbers_in_env_name_the_variable():
    with pytest.raises(ValueError, match="REGISTRY_MLFLOW_MAX_RETRIES"):
        Settings.from_env({"REGISTRY_MLFLOW_MAX_RETRIES": "many"})
    for hours in ("0", "87601"):
        with pytest.raises(ValueError, match="REGISTRY_IDEMPOTENCY_RETENTION_HOURS must be"):
            Settings.from_env({"REGISTRY_IDEMPOTENCY_RETENTION_HOURS": hours})


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.ValidationError(), 422),
        (errors.BadRequest(), 400),
        (errors.AuthenticationError(), 401),
        (errors.PermissionDenied(), 403),
        (errors.VersionNotFound(), 404),
        (errors.AlreadyExists(), 409),
        (errors.IllegalTransition(), 409),
        (errors.UpstreamError(), 502),
        (errors.UpstreamUnavailable(), 503),
        (errors.ConsistencyError(), 500),
    ],
)
def test_status_table(error, status):
    assert errors.status_for(error) == status


def test_problem_body_is_rfc9457_with_field_errors():
    body = errors.problem_body(
        status=422,
        code="validation-error",
        title="t",
        detail="d",
        errors=errors.field_errors({"tags": {"k": ["bad"]}}, "json"),
    )
    assert body["type"] == "/problems/validation-error"
    assert {"title", "status", "detail"} <= body.keys()
    assert body["errors"] == [{"field": "tags.k", "location": "json", "message": "bad"}]
