"""The promotion state machine and policy rules, with no database and no MLflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry_service.domain.entities import Principal
from registry_service.domain.policy import (
    DEFAULT_RULES,
    Policy,
    PolicyRule,
    Target,
    TargetType,
    validate_rules,
)
from registry_service.domain.promotion import Promotion, Status
from registry_service.errors import (
    AlreadyReviewed,
    IllegalTransition,
    NotEligible,
    PermissionDenied,
    SelfApproval,
    ValidationError,
)

NOW = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)


def person(name, *roles, groups=()):
    return Principal(hash(name) % 1000, name, frozenset(roles), frozenset(groups))


REQUESTER = person("rita", "requester")
ANN, BOB, CAT = person("ann", "approver"), person("bob", "approver"), person("cat", "approver")
ADMIN = person("root", "admin")


def opened(required=2, **rule_fields):
    rule = PolicyRule(TargetType.STAGE, "Production", required, **rule_fields)
    p = Promotion.open(
        model_name="churn",
        version=3,
        target=Target.stage("production"),
        requester=REQUESTER,
        reason="better",
        archive_existing=True,
        rule=rule,
        now=NOW,
        replaces_version=2,
        evidence={},
    )
    p.id = 7
    return p


def test_quorum_moves_pending_to_approved():
    p = opened()
    assert p.approve(ANN, "ok", NOW) is False and p.status is Status.PENDING
    assert p.approve(BOB, None, NOW) is True and p.status is Status.APPROVED
    assert p.received_approvals == 2 and p.decided_at == NOW
    with pytest.raises(IllegalTransition):
        p.approve(CAT, None, NOW)


def test_zero_approvals_open_approved():
    assert opened(required=0).status is Status.APPROVED


def test_self_double_and_ineligible_approvals_are_refused():
    p = opened(approvers=("ann", "bob"))
    with pytest.raises(SelfApproval):
        p.approve(person("rita", "requester", "approver"), None, NOW)
    with pytest.raises(NotEligible):
        p.approve(CAT, None, NOW)
    with pytest.raises(NotEligible):
        p.approve(person("ann", "viewer"), None, NOW)
    p.approve(ANN, None, NOW)
    with pytest.raises(AlreadyReviewed):
        p.approve(ANN, None, NOW)
    assert p.received_approvals == 1


def test_self_approval_when_the_policy_allows_it():
    p = opened(required=1, allow_self_approval=True)
    assert p.approve(person("rita", "requester", "approver"), None, NOW) is True


def test_groups_widen_named_approvers():
    p = opened(required=1, approvers=("ann",), approver_group="leads")
    with pytest.raises(NotEligible):
        p.approve(BOB, None, NOW)
    assert p.approve(person("dan", "approver", groups=("leads",)), None, NOW)


def test_rejection_ends_and_cancel_rules():
    p = opened()
    p.reject(ANN, "no", NOW)
    assert p.status is Status.REJECTED and p.comments[0].kind == "rejection"
    with pytest.raises(IllegalTransition):
        p.cancel(REQUESTER, None, NOW)

    q = opened()
    with pytest.raises(PermissionDenied):
        q.cancel(ANN, None, NOW)
    q.cancel(ADMIN, "dup", NOW)
    assert q.status is Status.CANCELLED


def test_expiry_only_when_due_and_pending():
    p = opened()
    assert p.expires_at == NOW + timedelta(days=7)
    assert not p.is_due(NOW + timedelta(days=6))
    with pytest.raises(IllegalTransition):
        p.expire(NOW)
    p.expire(p.expires_at)
    assert p.status is Status.EXPIRED


def test_execution_failure_and_retry():
    p = opened(required=1)
    with pytest.raises(IllegalTransition):
        p.start_execution(NOW)
    p.approve(ANN, None, NOW)
    p.start_execution(NOW)
    with pytest.raises(IllegalTransition):
        p.cancel(REQUESTER, None, NOW)  # started: only a retry settles it
    p.failed("MLflow is unavailable", NOW)
    assert p.status is Status.FAILED and p.attempts == 1
    with pytest.raises(PermissionDenied):
        p.retry(ANN, NOW)
    p.retry(ADMIN, NOW)
    p.start_execution(NOW)
    p.executed({"archived_versions": [2]}, NOW)
    assert (p.status, p.attempts, p.last_error) == (Status.EXECUTED, 2, None)
    with pytest.raises(IllegalTransition):
        p.retry(ADMIN, NOW)


def test_an_unconfirmed_move_stays_approved_for_a_retry():
    p = opened(required=1)
    p.approve(ANN, None, NOW)
    with pytest.raises(IllegalTransition):
        p.unconfirmed("lost", NOW)  # nothing was sent yet
    p.start_execution(NOW)
    p.unconfirmed("MLflow did not confirm the move", NOW + timedelta(seconds=1))
    assert (p.status, p.attempts) == (Status.APPROVED, 1)
    assert p.updated_at == NOW + timedelta(seconds=1)  # the sweep waits from now
    with pytest.raises(IllegalTransition):
        p.cancel(REQUESTER, None, NOW)
    p.retry(ADMIN, NOW)
    p.start_execution(NOW)
    p.executed({"reconciled": True}, NOW)
    assert (p.status, p.attempts, p.last_error) == (Status.EXECUTED, 2, None)


def test_policy_resolution_prefers_the_model_then_exact_targets():
    policy = Policy("churn", rules=(PolicyRule(TargetType.ALIAS, "*", 1, source="model"),))
    assert policy.rule_for(Target.alias("champion")).required_approvals == 1
    assert policy.rule_for(Target.stage("Production")).required_approvals == 2
    exact = Policy(
        "churn",
        rules=(
            PolicyRule(TargetType.ALIAS, "*", 1, source="model"),
            PolicyRule(TargetType.ALIAS, "champion", 3, source="model"),
        ),
    )
    assert exact.rule_for(Target.alias("champion")).required_approvals == 3
    assert exact.rule_for(Target.alias("shadow")).required_approvals == 1
    assert len(Policy("m").effective_rules) == len(DEFAULT_RULES)


def test_rule_validation_canonicalises_and_refuses():
    [rule] = validate_rules([PolicyRule(TargetType.STAGE, "staging", 1, approvers=("b", "a"))])
    assert (rule.target, rule.approvers, rule.source) == ("Staging", ("a", "b"), "model")
    with pytest.raises(ValidationError) as bad:
        validate_rules([PolicyRule(TargetType.STAGE, "None", 1)])
    assert bad.value.errors[0]["field"] == "rules.0.target"
    with pytest.raises(ValidationError):
        validate_rules([PolicyRule(TargetType.ALIAS, "latest", 1)])


def test_supersede_settles_open_requests_with_the_reason():
    p = opened()
    p.approve(ANN, None, NOW)
    why = p.supersede(9, "moved stage Production to version 4", NOW)
    assert p.status is Status.SUPERSEDED and p.superseded_by == 9
    assert p.comments[-1].kind == "superseded" and p.comments[-1].body == why
    assert "request 9 moved stage Production to version 4" in why
    with pytest.raises(IllegalTransition):
        p.approve(BOB, None, NOW)
    with pytest.raises(IllegalTransition):
        p.supersede(10, "again", NOW)


def test_an_execution_in_flight_is_never_superseded():
    p = opened(required=1)
    p.approve(ANN, None, NOW)
    p.start_execution(NOW)
    with pytest.raises(IllegalTransition):
        p.supersede(9, "moved", NOW)


def test_can_approve_mirrors_the_approval_rules():
    p = opened(required=2, approver_group="leads")
    lead = person("lea", "approver", groups=("leads",))
    assert p.can_approve(lead)
    assert not p.can_approve(ANN)  # not in the group
    assert not p.can_approve(REQUESTER)
    p.approve(lead, None, NOW)
    assert not p.can_approve(lead)  # already approved
    own = opened(required=1, allow_self_approval=True)
    assert own.can_approve(person("rita", "requester", "approver"))
    assert not opened(required=1).can_approve(person("rita", "requester", "approver"))


def test_only_the_kinds_a_rule_names_may_approve():
    agent = Principal(90, "helper", frozenset({"approver"}), kind="agent")
    p = opened(required=1)
    assert not p.can_approve(agent)
    with pytest.raises(NotEligible, match="agent token"):
        p.approve(agent, None, NOW)
    allowed = opened(required=1, approver_kinds=("human", "agent"))
    assert allowed.approve(agent, None, NOW) is True
    with pytest.raises(ValidationError):
        validate_rules([PolicyRule(TargetType.ALIAS, "x", 1, approver_kinds=("robot",))])
    (rule,) = validate_rules(
        [PolicyRule(TargetType.ALIAS, "x", 1, approver_kinds=("agent", "human"))]
    )
    assert rule.approver_kinds == ("human", "agent")
    assert PolicyRule.from_dict(rule.as_dict()) == rule
