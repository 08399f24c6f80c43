"""Exactly-once execution under real concurrency: threads, two service stacks (as two
gunicorn workers have), PostgreSQL and a real MLflow server."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from registry_service.config import Settings
from registry_service.domain.policy import PolicyRule, Target, TargetType
from registry_service.domain.promotion import Status
from registry_service.errors import RegistryError
from registry_service.services.audit import AuditFilter
from registry_service.services.container import build_services
from registry_service.services.context import Context
from registry_service.services.promotions import _lock_name
from tests.conftest import stall_and_sweep

CTX = Context(actor="race-test")
PRODUCTION = Target.stage("Production")


@pytest.fixture
def workers(registry_db_url, mlflow_uri):
    """Two independent stacks: own engines, pools and MLflow clients."""
    settings = Settings.from_env().with_overrides(
        database_url=registry_db_url,
        mlflow_tracking_uri=mlflow_uri,
        mlflow_registry_uri=mlflow_uri,
    )
    stacks = [build_services(settings), build_services(settings)]
    yield stacks
    for stack in stacks:
        stack.close()


@pytest.fixture
def people(workers, identities):
    """Principals as the API would see them: requester plus four approvers."""
    tokens = workers[0].tokens
    secret, _ = tokens.create(CTX, f"approver3-{uuid.uuid4().hex[:6]}", ["approver"])
    found = {
        key: tokens.authenticate(identities[key]["token"])
        for key in ("requester", "approver", "approver2", "admin")
    }
    found["approver3"] = tokens.authenticate(secret)
    return found


@pytest.fixture
def model(workers, model_name, make_run):
    models = workers[0].models
    models.create_model(CTX, model_name, None, {})
    for _ in range(3):
        models.register_version(CTX, model_name, make_run(), "model", None, {})
    return model_name


def run_together(calls):
    """Start every call at the same instant; return results or raised errors in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except RegistryError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def approve_without_executing(services, request_id, approver):
    """The quorum-completing approval as committed by a worker that then dies."""
    services.promotions._change(
        CTX,
        request_id,
        lambda p, now: [("promotion.approved", {})] if p.approve(approver, None, now) else [],
    )


def production_versions(workers, model):
    page = workers[0].gateway.search_model_versions(model, 100, None)
    return sorted(v.version for v in page.items if v.stage == "Production")


def test_racing_approvals_execute_exactly_once(workers, people, model):
    approvers = [people[k] for k in ("approver", "approver2", "admin", "approver3")]
    trials = 200
    for trial in range(trials):
        version = 1 + trial % 2
        opened = workers[0].promotions.create(
            CTX, people["requester"], model, version, PRODUCTION, f"trial {trial}"
        )
        results = run_together(
            [
                lambda w=workers[i % 2], p=p, rid=opened.id: w.promotions.approve(CTX, p, rid, None)
                for i, p in enumerate(approvers)
            ]
        )
        accepted = [r for r in results if not isinstance(r, RegistryError)]
        refused = [r for r in results if isinstance(r, RegistryError)]
        assert len(accepted) == 2, (trial, results)
        assert {e.code for e in refused} == {"illegal-transition"}, (trial, results)
        final = workers[1].promotions.get(opened.id)
        actions = [e.action for e in final.audit_trail]
        assert final.status is Status.EXECUTED, (trial, final.last_error)
        assert final.received_approvals == 2
        assert actions.count("promotion.execution_started") == 1, (trial, actions)
        assert actions.count("promotion.executed") == 1, (trial, actions)
    assert production_versions(workers, model) == [1 + (trials - 1) % 2]
    moves = (
        workers[0]
        .audit.list(AuditFilter(model_name=model, action="version.stage_changed"), 500, None)
        .items
    )
    assert len(moves) == trials


def test_racing_requests_for_one_target_execute_one_and_supersede_the_other(workers, people, model):
    services = workers[0]
    services.policies.replace(
        CTX, model, [PolicyRule(TargetType.STAGE, "Production", required_approvals=1)]
    )
    for trial in range(15):
        holder = (production_versions(workers, model) or [None])[0]
        candidates = [v for v in (1, 2, 3) if v != holder][:2]
        opened = [
            services.promotions.create(CTX, people["requester"], model, v, PRODUCTION, "race")
            for v in candidates
        ]
        run_together(
            [
                lambda w=workers[i], p=p, r=r: w.promotions.approve(CTX, p, r.id, None)
                for i, (p, r) in enumerate(
                    zip((people["approver"], people["approver2"]), opened, strict=True)
                )
            ]
        )
        finals = [services.promotions.get(r.id) for r in opened]
        statuses = sorted(f.status.value for f in finals)
        # The winner's move settles the other request at once, whether its approval
        # came first (approved, waiting for the lock) or was refused afterwards.
        assert statuses == ["executed", "superseded"], (trial, [f.last_error for f in finals])
        winner = next(f for f in finals if f.status is Status.EXECUTED)
        loser = next(f for f in finals if f.status is Status.SUPERSEDED)
        assert loser.superseded_by == winner.id and loser.attempts == 0
        assert f"moved stage Production to version {winner.version}" in loser.comments[-1].body
        assert production_versions(workers, model) == [winner.version]


def test_an_interrupted_execution_is_settled_by_retry(workers, people, model, mlflow_client):
    """A worker dies after MLflow applied the move but before recording it."""
    services = workers[0]
    services.policies.replace(
        CTX, model, [PolicyRule(TargetType.ALIAS, "champion", required_approvals=1)]
    )
    opened = services.promotions.create(
        CTX, people["requester"], model, 2, Target.alias("champion"), "ship it"
    )
    # What the approval does, minus the final record: approve, claim, apply.
    approve_without_executing(services, opened.id, people["approver"])
    claimed = services.promotions._claim(CTX, opened.id)
    services.promotions._apply(claimed)
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == "2"

    stuck = services.promotions.get(opened.id)
    assert stuck.status is Status.APPROVED and stuck.attempts == 1
    with pytest.raises(RegistryError) as refused:
        services.promotions.cancel(CTX, people["requester"], opened.id, None)
    assert refused.value.code == "illegal-transition"
    with pytest.raises(RegistryError) as not_admin:
        services.promotions.retry(CTX, people["approver"], opened.id)
    assert not_admin.value.code == "forbidden"

    settled = workers[1].promotions.retry(CTX, people["admin"], opened.id)
    assert settled.status is Status.EXECUTED
    assert settled.outcome["reconciled"] is True and settled.attempts == 2
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == "2"


def test_sweep_executes_stalled_approvals(workers, people, model, mlflow_client):
    """An approval whose execution never ran (its worker died, or gave up on the lock)."""
    services = workers[0]
    services.policies.replace(
        CTX, model, [PolicyRule(TargetType.STAGE, "Staging", required_approvals=1)]
    )
    opened = services.promotions.create(
        CTX, people["requester"], model, 3, Target.stage("Staging"), "nightly"
    )
    approve_without_executing(services, opened.id, people["approver"])
    assert services.promotions.sweep(CTX)["executed_stalled"] == 0  # not stalled yet
    assert stall_and_sweep(services, opened.id)["executed_stalled"] == 1
    assert services.promotions.get(opened.id).status is Status.EXECUTED
    assert mlflow_client.get_model_version(model, "3").current_stage == "Staging"


def test_a_completing_approval_behind_a_busy_target_is_recorded_and_left_to_the_sweep(
    workers, people, model, mlflow_client
):
    """Another execution holds the target past the lock timeout: the approval is kept,
    nothing moves in MLflow, and no execution is recorded as started."""
    services, other = workers
    services.policies.replace(
        CTX, model, [PolicyRule(TargetType.STAGE, "Staging", required_approvals=1)]
    )
    opened = services.promotions.create(
        CTX, people["requester"], model, 2, Target.stage("Staging"), "nightly"
    )
    services.promotions.locks.timeout = 0.3
    with other.promotions.locks.hold(_lock_name(model, Target.stage("Staging"))):
        answered = services.promotions.approve(CTX, people["approver"], opened.id, None)
    assert answered.status is Status.APPROVED
    assert answered.attempts == 0 and answered.execution_started_at is None
    actions = [e.action for e in answered.audit_trail]
    assert actions[-1] == "promotion.approved" and "promotion.execution_started" not in actions
    assert mlflow_client.get_model_version(model, "2").current_stage != "Staging"

    assert stall_and_sweep(services, opened.id)["executed_stalled"] == 1
    assert services.promotions.get(opened.id).status is Status.EXECUTED
    assert mlflow_client.get_model_version(model, "2").current_stage == "Staging"


def test_a_taken_target_is_refused_at_once_across_processes(workers):
    """PostgreSQL advisory locks, as two workers see them: not waiting, a taken name is
    refused (well before the wait's timeout) and a free one taken."""
    mine, theirs = (w.promotions.locks for w in workers)
    theirs.timeout = 20
    with mine.hold("target-a"):
        started = time.monotonic()
        with pytest.raises(RegistryError) as busy, theirs.hold("target-a", wait=False):
            pass
        assert busy.value.code == "busy" and time.monotonic() - started < 10
        with theirs.hold("target-b", wait=False):
            pass
    with theirs.hold("target-a", wait=False):
        pass


def test_a_refused_approval_never_waits_for_the_target(workers, people, model, monkeypatch):
    """One approval short: the requester and an approver approving twice are refused
    without touching the lock an execution may be holding."""
    services = workers[0]
    opened = services.promotions.create(CTX, people["requester"], model, 1, PRODUCTION, "ship")
    services.promotions.approve(CTX, people["approver"], opened.id, None)
    locks = services.promotions.locks
    taken = []
    hold = locks.hold
    monkeypatch.setattr(locks, "hold", lambda name, **kw: taken.append(name) or hold(name, **kw))
    for who, code in (("requester", "self-approval"), ("approver", "already-approved")):
        with pytest.raises(RegistryError) as refused:
            services.promotions.approve(CTX, people[who], opened.id, None)
        assert refused.value.code == code
    assert taken == []
    done = services.promotions.approve(CTX, people["approver2"], opened.id, None)
    assert done.status is Status.EXECUTED
    assert taken == [_lock_name(model, PRODUCTION)]


def test_the_completing_approval_executes_once_with_every_step_in_the_trail(
    workers, people, model, mlflow_client
):
    services = workers[0]
    opened = services.promotions.create(CTX, people["requester"], model, 1, PRODUCTION, "ship")
    services.promotions.approve(CTX, people["approver"], opened.id, None)
    done = services.promotions.approve(CTX, people["approver2"], opened.id, "lgtm")
    assert done.status is Status.EXECUTED and done.attempts == 1
    assert [a.approver for a in done.approvals] == [
        people["approver"].name,
        people["approver2"].name,
    ]
    assert [e.action for e in done.audit_trail] == [
        "promotion.requested",
        "promotion.approved",
        "promotion.approved",
        "promotion.execution_started",
        "promotion.executed",
        "version.stage_changed",
    ]
    seqs = [e.seq for e in done.audit_trail]
    assert seqs == sorted(seqs)
    assert mlflow_client.get_model_version(model, "1").current_stage == "Production"
