"""Stage and alias moves through the model service: applied in MLflow and audited."""

import pytest

from registry_service.domain.entities import Stage
from registry_service.errors import IllegalTransition, ValidationError, VersionNotFound
from registry_service.services.audit import AuditFilter
from registry_service.services.context import Context

CTX = Context(actor="release-bot", request_id="r-1")


@pytest.fixture
def model(services, model_name, make_run):
    services.models.create_model(CTX, model_name, None, {})
    for _ in range(3):
        services.models.register_version(CTX, model_name, make_run(), "model", None, {})
    return model_name


def events(services, model, action):
    return services.audit.list(AuditFilter(model_name=model, action=action), 50, None).items


def test_transition_archives_and_audits(services, model):
    services.models.transition_stage(CTX, model, 1, Stage.PRODUCTION)
    result = services.models.transition_stage(CTX, model, 2, Stage.PRODUCTION)
    assert result.archived == [1]
    latest = events(services, model, "version.stage_changed")[0]
    assert latest.model_version == 2 and latest.actor == "release-bot"
    assert latest.before == {"stage": "None"}
    assert latest.after == {"stage": "Production", "archived_versions": [1]}


def test_same_stage_is_illegal(services, model):
    services.models.transition_stage(CTX, model, 1, Stage.STAGING)
    with pytest.raises(IllegalTransition):
        services.models.transition_stage(CTX, model, 1, Stage.STAGING)


def test_alias_moves_record_previous_holder(services, model):
    assert services.models.set_alias(CTX, model, "champion", 1) is None
    assert services.models.set_alias(CTX, model, "champion", 3) == 1
    assert services.models.delete_alias(CTX, model, "champion") == 3
    moves = [
        (e.action, e.before, e.after)
        for e in reversed(events(services, model, None))
        if e.action.startswith("alias.")
    ]
    assert moves == [
        ("alias.set", {"alias": "champion", "version": None}, {"alias": "champion", "version": 1}),
        ("alias.set", {"alias": "champion", "version": 1}, {"alias": "champion", "version": 3}),
        ("alias.deleted", {"alias": "champion", "version": 3}, None),
    ]


def test_alias_rules(services, model):
    with pytest.raises(ValidationError):
        services.models.set_alias(CTX, model, "latest", 1)
    with pytest.raises(VersionNotFound):
        services.models.set_alias(CTX, model, "champion", 42)
