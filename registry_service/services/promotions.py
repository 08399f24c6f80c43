"""Promotion requests: the workflow's transactions and its exactly-once execution.

Execution, per request, under a lock per (model, target) held by every process:
1. claim: the request is still approved; the attempt is committed (the intent),
2. re-validate against MLflow and apply the move there,
3. record ``executed`` with the model change, or ``failed`` with the reason.
A crash between 2 and 3 leaves an approved request with a recorded attempt; a retry
finds the move already applied and records it, so MLflow and our records converge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.locks import LockBusy, NamedLocks
from registry_service.db.models import OPEN_STATUSES, PromotionRequestRow
from registry_service.domain.comparison import ChampionComparison
from registry_service.domain.entities import (
    AuditEvent,
    ModelVersion,
    Page,
    Principal,
    RegisteredModel,
    Stage,
    VersionDetail,
)
from registry_service.domain.names import INT32_MAX, check_model_name
from registry_service.domain.paging import decode_position, encode_token
from registry_service.domain.policy import Target, TargetType
from registry_service.domain.promotion import Promotion, Status
from registry_service.errors import (
    ConsistencyError,
    IllegalTransition,
    OpenRequestExists,
    OutcomeUnknown,
    PromotionNotFound,
    QuorumUnreachable,
    RegistryError,
    UnsafeArtifact,
    UpstreamError,
    UpstreamUnavailable,
    VersionNotFound,
)
from registry_service.gateway.base import RegistryGateway
from registry_service.services.audit import AuditLog, Entry, to_json_value
from registry_service.services.context import Context
from registry_service.services.history import HistoryService, holders_now, target_of
from registry_service.services.models import ModelService
from registry_service.services.policies import PolicyService, eligible_approvers
from registry_service.services.promotion_records import (
    PromotionRecords,
    request_entry,
    requests,
)
from registry_service.services.review import request_comparison

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
# An approved request not executed by then lost its worker (or its lock wait): the
# sweep executes it, and the reconcile path settles a move MLflow already made.
STALL_AFTER = timedelta(minutes=2)
# Stages a version is moved out of by a newer one, so "who holds it" is meaningful.
HELD_STAGES = (Stage.STAGING.value, Stage.PRODUCTION.value)


class MoveUnconfirmed(OutcomeUnknown):
    """The move was sent, MLflow did not confirm it, and it could not be read back."""


class StaleRequest(IllegalTransition):
    """The registry changed since the request was approved; acting would be wrong."""

    code = "stale-request"
    title = "Request no longer matches the registry"


@dataclass(frozen=True)
class PromotionFilter:
    model_name: str | None = None
    status: Status | None = None
    requester: str | None = None
    # Only the pending requests this principal could approve now.
    actionable_for: Principal | None = None


Event = tuple[str, dict[str, Any]]


def _lock_name(model_name: str, target: Target) -> str:
    """The lock every execution on (model, target) holds, in every process."""
    return f"promotion:{model_name}\x00{target.type.value}:{target.name}"


def _in_slot(model_name: str, version: int, target: Target) -> tuple:
    """Requests for this (model, version, target): what the open-request index guards."""
    return (
        PromotionRequestRow.model_name == model_name,
        PromotionRequestRow.version == version,
        PromotionRequestRow.target_type == target.type.value,
        PromotionRequestRow.target == target.name,
    )


def _overdue(now: datetime) -> tuple:
    return (
        PromotionRequestRow.status == Status.PENDING.value,
        PromotionRequestRow.expires_at <= now,
    )


def _holder(model: RegisteredModel, target: Target) -> int | None:
    if target.type is TargetType.ALIAS:
        return model.aliases.get(target.name)
    if target.name in HELD_STAGES:
        return model.latest_versions.get(target.name)
    return None


def _already_there(mv: ModelVersion, target: Target) -> bool:
    if target.type is TargetType.ALIAS:
        return target.name in mv.aliases
    return mv.stage == target.name


def _archived_by(p: Promotion, now: dict[int, ModelVersion], were_there: list[int]) -> list[int]:
    """The versions a move of ``p`` archived: of those in its stage before, the ones
    Archived now; only a move into Staging or Production archiving existing ones does."""
    if not (p.archive_existing and p.target.name in HELD_STAGES):
        return []
    return sorted(
        v
        for v in were_there
        if v != p.version and v in now and now[v].stage == Stage.ARCHIVED.value
    )


def _fmt(version: int | None) -> str:
    return f"version {version}" if version is not None else "no version"


def _evidence(detail: VersionDetail) -> dict[str, Any]:
    run = detail.run
    return to_json_value(
        {
            "version": detail.version.snapshot(),
            "run": None
            if run is None
            else {
                "run_id": run.run_id,
                "experiment_id": run.experiment_id,
                "run_name": run.run_name,
                "status": run.status,
                "user_id": run.user_id,
                "start_time": run.start_time,
                "end_time": run.end_time,
                "metrics": dict(run.metrics),
                "params": dict(run.params),
            },
            "lineage": detail.lineage.as_dict() if detail.lineage else None,
        }
    )


class PromotionService:
    def __init__(
        self,
        gateway: RegistryGateway,
        db: Database,
        audit: AuditLog,
        policies: PolicyService,
        models: ModelService,
        locks: NamedLocks,
        history: HistoryService,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.gateway = gateway
        self.db = db
        self.audit = audit
        self.policies = policies
        self.models = models
        self.locks = locks
        self.history = history
        self.clock = clock
        # Applies a traffic change whose quorum is reached, in the approval's own
        # transaction (services/traffic.py); set by the container.
        self.execute_traffic: (
            Callable[[Session, Context, Promotion, datetime], list[Entry]] | None
        ) = None

    # -- audit helpers: every step is an event about the request
    @staticmethod
    def _entry(p: Promotion, action: str, after: dict[str, Any]) -> Entry:
        return request_entry(p, action, after)

    def _event(
        self, session: Session, ctx: Context, p: Promotion, action: str, after: dict[str, Any]
    ) -> AuditEvent:
        return self.audit.append_all(session, ctx, [self._entry(p, action, after)])[0]

    # -- opening a request
    def create(
        self,
        ctx: Context,
        principal: Principal,
        model_name: str,
        version: int,
        target: Target,
        reason: str,
        archive_existing: bool = True,
        *,
        kind: str = "promotion",
        evidence: dict[str, Any] | None = None,
    ) -> Promotion:
        """``evidence``: more figures to keep with the request (an A/B test, an alert)."""
        check_model_name(model_name, "model_name", "json")
        model = self.gateway.get_registered_model(model_name)
        detail = self.models.get_version(model_name, version)
        mv = detail.version
        if mv.status != "READY":
            raise IllegalTransition(
                f"version {version} of {model_name!r} is {mv.status}, not READY"
            )
        if _already_there(mv, target) and self._governed_holds(model_name, version, target):
            # Held in MLflow but not through a governed step (adopted, or moved behind the
            # registry): a request is how it becomes governed, and served.
            raise IllegalTransition(f"version {version} of {model_name!r} already holds {target}")
        now = self.clock()
        try:
            with self.db.transaction() as session:
                policy = self.policies.load(session, model_name)
                rule = policy.rule_for(target)
                integrity = self.models.integrity
                artifacts = (
                    integrity.evidence(session, model_name, version, mv.run_id)
                    if integrity is not None
                    else {}
                )
                if policy.refuses_artifacts(target, artifacts.get("scan_verdict")):
                    dangerous = sorted(
                        {g for f in artifacts["findings"].values() for g in f["dangerous"]}
                    )
                    raise UnsafeArtifact(
                        f"the pickle scan of version {version} of {model_name!r} found "
                        f"dangerous globals ({', '.join(dangerous)}): {target} takes it only "
                        "when the model's policy sets allow_unsafe_artifacts",
                        findings=artifacts["findings"],
                    )
                if kind == "rollback":
                    rule = rule.for_rollback()
                eligible = eligible_approvers(session, rule, requester=principal.name)
                if rule.required_approvals > len(eligible):
                    raise QuorumUnreachable(
                        f"the policy for {target} needs {rule.required_approvals} approvals "
                        f"but only {len(eligible)} other principals can approve "
                        f"({', '.join(eligible) or 'none'})",
                        eligible_approvers=eligible,
                    )
                records = PromotionRecords(session)
                self._expire_slot(records, ctx, model_name, version, target, now)
                p = Promotion.open(
                    model_name=model_name,
                    version=version,
                    target=target,
                    requester=principal,
                    reason=reason,
                    archive_existing=archive_existing,
                    rule=rule,
                    now=now,
                    replaces_version=_holder(model, target),
                    evidence={
                        **_evidence(detail),
                        "artifacts": artifacts,  # the manifest digest approved, the scan
                        **to_json_value(evidence or {}),
                    },
                    kind=kind,
                )
                records.add(p)
                self._event(
                    session,
                    ctx,
                    p,
                    "promotion.requested",
                    {
                        "kind": kind,
                        "review_required": p.review_required,
                        "target": str(target),
                        "reason": reason,
                        "required_approvals": rule.required_approvals,
                        "replaces_version": p.replaces_version,
                        "archive_existing_versions": archive_existing,
                    },
                )
                if p.status is Status.APPROVED:
                    self._event(session, ctx, p, "promotion.approved", {"quorum_reached": True})
        except OpenRequestExists:
            existing = self._open_request_id(model_name, version, target)
            raise OpenRequestExists(
                f"request {existing} for version {version} of {model_name!r} to {target} "
                "is still open",
                existing_request_id=existing,
            ) from None
        if p.status is Status.APPROVED:
            self._execute_or_defer(ctx, p)
        return self.get(p.id)

    def rollback(
        self,
        ctx: Context,
        principal: Principal,
        model_name: str,
        target: Target,
        reason: str,
        evidence: dict[str, Any] | None = None,
    ) -> Promotion:
        """Request the move of ``target`` back to the version that held it before."""
        history = self.history.history(model_name, target, governed=True)
        current = history.holders(target)
        previous = history.previous_holder(target)
        if previous is None:
            raise IllegalTransition(
                f"no earlier holder of {target} is recorded for {model_name!r} "
                f"(now: {', '.join(map(str, current)) or 'none'}); nothing to roll back to"
            )
        return self.create(
            ctx,
            principal,
            model_name,
            previous,
            target,
            reason,
            True,
            kind="rollback",
            evidence=evidence,
        )

    def _governed_holds(self, model_name: str, version: int, target: Target) -> bool:
        """Whether our records show ``version`` holding ``target`` through a governed step."""
        history = self.history.history(model_name, target, governed=True)
        return version in history.holders(target)

    def _open_request_id(self, model_name: str, version: int, target: Target) -> int | None:
        with self.db.read() as session:
            return session.execute(
                select(PromotionRequestRow.id).where(
                    *_in_slot(model_name, version, target),
                    PromotionRequestRow.status.in_(OPEN_STATUSES),
                )
            ).scalar_one_or_none()

    def _expire_slot(
        self,
        records: PromotionRecords,
        ctx: Context,
        model_name: str,
        version: int,
        target: Target,
        now: datetime,
    ) -> None:
        """A pending request past its expiry no longer holds the slot a new one needs."""
        for p in records.select(
            requests()
            .where(*_in_slot(model_name, version, target), *_overdue(now))
            .with_for_update()
        ):
            self._expire(records, ctx, p, now)

    def _expire(
        self, records: PromotionRecords, ctx: Context, p: Promotion, now: datetime
    ) -> Promotion:
        p.expire(now)
        records.save(p)
        self._event(
            records.session,
            Context(SYSTEM_ACTOR, ctx.request_id),
            p,
            "promotion.expired",
            {"expired_at": p.expires_at, "received_approvals": p.received_approvals},
        )
        return p

    # -- one locked step on an existing request
    def _change(
        self,
        ctx: Context,
        request_id: int,
        step: Callable[[Promotion, datetime], list[Event]],
        then: Callable[[Session, Promotion, datetime], list[Entry]] | None = None,
    ) -> Promotion:
        """``then``: more of the step in its transaction, once its events are built (the
        execution of a traffic change)."""
        expired_at = slot = None
        try:
            with self.db.transaction() as session:
                records = PromotionRecords(session)
                p = records.get(request_id, lock=True)
                if p is None:
                    raise PromotionNotFound(f"no promotion request with id {request_id}")
                slot = (p.model_name, p.version, p.target)
                now = self.clock()
                if p.is_due(now):
                    # Committed even though the caller's step is refused.
                    expired_at = self._expire(records, ctx, p, now).expires_at
                else:
                    # Every event about a request is written under its row lock, so this
                    # and the events below are its whole trail.
                    trail = self.audit.trail_in(session, p.subject)
                    events = step(p, now)
                    entries = [self._entry(p, action, after) for action, after in events]
                    if then is not None:
                        entries += then(session, p, now)
                    records.save(p)
                    p.audit_trail = trail + self.audit.append_all(session, ctx, entries)
        except OpenRequestExists:
            existing = self._open_request_id(*slot)
            raise OpenRequestExists(
                f"request {existing} now holds the same version and target; "
                f"request {request_id} cannot be reopened",
                existing_request_id=existing,
            ) from None
        if expired_at is not None:
            raise IllegalTransition(
                f"request {request_id} expired at {expired_at.isoformat()} without reaching "
                "its quorum",
                request_status=Status.EXPIRED.value,
            )
        return p

    def approve(
        self, ctx: Context, principal: Principal, request_id: int, comment: str | None
    ) -> Promotion:
        """The approval that completes the quorum takes the target's lock (if free) and
        records the execution's start with itself, in one transaction, then executes.
        A traffic change executes in that transaction itself: a database write."""
        reached = claimed = direct = False

        with ExitStack() as held:

            def step(p: Promotion, now: datetime) -> list[Event]:
                nonlocal reached, claimed, direct
                reached = p.approve(principal, comment, now)
                events = [
                    (
                        "promotion.approved",
                        {
                            "approver": principal.name,
                            "comment": comment,
                            "received_approvals": p.received_approvals,
                            "required_approvals": p.required_approvals,
                            "quorum_reached": reached,
                        },
                    )
                ]
                direct = reached and p.changes_traffic
                if reached and not direct:
                    # Never waited for here, under the request's row lock: an execution
                    # holding the target may need that row (to supersede this request).
                    try:
                        held.enter_context(
                            self.locks.hold(_lock_name(p.model_name, p.target), wait=False)
                        )
                    except LockBusy:
                        return events
                    claimed = True
                    p.start_execution(now)
                    events.append(("promotion.execution_started", {"attempt": p.attempts}))
                return events

            def then(session: Session, p: Promotion, now: datetime) -> list[Entry]:
                return self.execute_traffic(session, ctx, p, now) if direct else []

            p = self._change(ctx, request_id, step, then)
            if claimed:
                p = self._run(ctx, p)
        if reached and not claimed and not direct:
            # Another execution holds the target: wait for it outside any row lock.
            settled = self._execute_or_defer(ctx, p)
            if settled is None:
                return self.get(request_id)
            p = settled
        return self._trailed(p)

    def reject(
        self, ctx: Context, principal: Principal, request_id: int, comment: str
    ) -> Promotion:
        def step(p: Promotion, now: datetime) -> list[Event]:
            p.reject(principal, comment, now)
            return [("promotion.rejected", {"reviewer": principal.name, "comment": comment})]

        return self._change(ctx, request_id, step)

    def cancel(
        self, ctx: Context, principal: Principal, request_id: int, comment: str | None
    ) -> Promotion:
        def step(p: Promotion, now: datetime) -> list[Event]:
            p.cancel(principal, comment, now)
            return [("promotion.cancelled", {"by": principal.name, "comment": comment})]

        return self._change(ctx, request_id, step)

    def comment(self, ctx: Context, principal: Principal, request_id: int, body: str) -> Promotion:
        def step(p: Promotion, now: datetime) -> list[Event]:
            p.comment(principal, body, now)
            return [("promotion.commented", {"author": principal.name, "comment": body})]

        return self._change(ctx, request_id, step)

    def retry(self, ctx: Context, principal: Principal, request_id: int) -> Promotion:
        def step(p: Promotion, now: datetime) -> list[Event]:
            previous = p.status.value
            p.retry(principal, now)
            return [
                (
                    "promotion.retried",
                    {"by": principal.name, "previous_status": previous, "attempts": p.attempts},
                )
            ]

        settled = self._execute_or_defer(ctx, self._change(ctx, request_id, step))
        return self._trailed(settled) if settled else self.get(request_id)

    # -- execution
    def _execute_or_defer(self, ctx: Context, p: Promotion) -> Promotion | None:
        """Execute now, and return the request as settled; if another execution holds
        the target too long, the request stays approved (and says so) and the sweep
        executes it."""
        try:
            return self._execute(ctx, p)
        except LockBusy:
            log.warning("request %s approved; execution deferred to the sweep", p.id)
            return None

    def sweep(self, ctx: Context) -> dict[str, int]:
        """Expire overdue requests and execute approved ones whose execution stalled."""
        expired = self.expire_due(ctx)
        cutoff = self.clock() - STALL_AFTER
        with self.db.read() as session:
            stalled = PromotionRecords(session).select(
                requests()
                .where(
                    PromotionRequestRow.status == Status.APPROVED.value,
                    PromotionRequestRow.updated_at <= cutoff,
                )
                .order_by(PromotionRequestRow.id)
            )
        for p in stalled:
            self._execute_or_defer(ctx, p)
        return {"expired": expired, "executed_stalled": len(stalled)}

    def _execute(self, ctx: Context, p: Promotion) -> Promotion | None:
        with self.locks.hold(_lock_name(p.model_name, p.target)):
            claimed = self._claim(ctx, p.id)
            if claimed is None:
                return None  # another worker settled it while we waited for the lock
            return self._run(ctx, claimed)

    def _claim(self, ctx: Context, request_id: int) -> Promotion | None:
        with self.db.transaction() as session:
            records = PromotionRecords(session)
            p = records.get(request_id, lock=True)
            if p is None or p.status is not Status.APPROVED:
                return None
            p.start_execution(self.clock())
            records.save(p)
            self._event(session, ctx, p, "promotion.execution_started", {"attempt": p.attempts})
            return p

    def _run(self, ctx: Context, claimed: Promotion) -> Promotion:
        """Apply a claimed request in MLflow and record how it ended; the caller holds
        the target's lock."""
        try:
            outcome = self._apply(claimed)
        except MoveUnconfirmed as exc:
            return self._settle_failed(ctx, claimed.id, exc.detail, unconfirmed=True)
        except StaleRequest as exc:
            return self._settle_failed(ctx, claimed.id, exc.detail)
        except RegistryError as exc:
            return self._settle_failed(ctx, claimed.id, f"{exc.title}: {exc.detail}")
        return self._settle_executed(ctx, claimed, outcome)

    def _apply(self, p: Promotion) -> dict[str, Any]:
        """Re-validate against MLflow, then move the version there."""
        name, version, target = p.model_name, p.version, p.target
        in_stage: list[int] = []
        try:
            versions, mv = self._read_version(p)
            if target.type is TargetType.STAGE:
                in_stage = sorted(v for v, found in versions.items() if found.stage == target.name)
                # MLflow's latest version in a stage is the highest-numbered one there.
                holder = in_stage[-1] if in_stage and target.name in HELD_STAGES else None
            else:
                holder = _holder(self.gateway.get_registered_model(name), target) if mv else None
        except UpstreamError as exc:
            if p.attempts > 1:
                # An earlier attempt may have moved it: unread, that stays unknown.
                raise MoveUnconfirmed(
                    f"MLflow could not be read ({exc.detail}) to learn whether an earlier "
                    "attempt moved the version; the request stays approved, and a retry or "
                    "the sweep settles it"
                ) from exc
            raise
        if mv is None:
            raise StaleRequest(f"version {version} of {name!r} no longer exists")
        if mv.status != "READY":
            raise StaleRequest(f"version {version} of {name!r} is {mv.status}, not READY")
        if _already_there(mv, target):
            if p.attempts > 1 or not self._governed_holds(name, version, target):
                # An earlier attempt applied it but could not record it, or it got there
                # behind the registry: this approved request records it as governed.
                return self._reconciled(p, versions)
            raise StaleRequest(f"version {version} already holds {target}; nothing to do")
        if (target.type is TargetType.ALIAS or target.name in HELD_STAGES) and (
            holder != p.replaces_version
        ):
            raise StaleRequest(
                f"{target} moved from {_fmt(p.replaces_version)} to {_fmt(holder)} since the "
                f"request was opened; its approvals were for replacing "
                f"{_fmt(p.replaces_version)}. Open a new request."
            )
        try:
            if target.type is TargetType.STAGE:
                result = self.gateway.transition_stage(
                    name, version, Stage.parse(target.name), p.archive_existing, in_stage
                )
                return {
                    "from_stage": mv.stage,
                    "to_stage": result.version.stage,
                    "archived_versions": result.archived,
                    "replaced_version": holder,
                }
            previous = self.gateway.set_alias(name, target.name, version)
            return {"alias": target.name, "previous_version": previous, "replaced_version": holder}
        except UpstreamError as exc:
            # The move may be in MLflow with its answer lost, or made before MLflow failed.
            return self._confirm(p, mv, holder, in_stage, exc)

    def _read_version(self, p: Promotion) -> tuple[dict[int, ModelVersion], ModelVersion | None]:
        """The request's version as MLflow holds it now (None: gone), and, for a stage
        target, every version of the model: one read gives the version, the stage's
        holder and what a move archives."""
        if p.target.type is TargetType.STAGE:
            versions = {v.version: v for v in self.gateway.all_versions(p.model_name)}
            return versions, versions.get(p.version)
        try:
            return {}, self.gateway.get_model_version(p.model_name, p.version)
        except VersionNotFound:
            return {}, None

    def _confirm(
        self,
        p: Promotion,
        before: ModelVersion,
        holder: int | None,
        in_stage: list[int],
        error: UpstreamError,
    ) -> dict[str, Any]:
        """Read back a move MLflow did not confirm: made, it is the outcome; not made,
        ``error`` stands; unreadable, nobody knows yet (``MoveUnconfirmed``)."""
        target = p.target
        try:
            versions, now = self._read_version(p)
        except RegistryError as unreadable:
            raise MoveUnconfirmed(
                f"MLflow did not confirm the move ({error.detail}) and could not be read "
                f"back ({unreadable.detail}); the request stays approved, and a retry or "
                "the sweep reads MLflow and records what happened"
            ) from error
        if now is None or not _already_there(now, target):
            if isinstance(error, UpstreamUnavailable):
                # Never answered: MLflow may still be making it; the sweep reads again.
                raise MoveUnconfirmed(
                    f"MLflow did not answer the move ({error.detail}) and has not made it "
                    "yet; the request stays approved, and a retry or the sweep settles it"
                ) from error
            raise error
        confirmed = {"replaced_version": holder, "confirmed_after_error": error.detail}
        if target.type is TargetType.ALIAS:
            return {"alias": target.name, "previous_version": holder, **confirmed}
        archived = _archived_by(p, versions, in_stage)
        return {
            "from_stage": before.stage,
            "to_stage": now.stage,
            "archived_versions": archived,
            **confirmed,
        }

    def _reconciled(self, p: Promotion, versions: dict[int, ModelVersion]) -> dict[str, Any]:
        """An earlier attempt's move, found in MLflow: what it changed, from our records
        of what held the target before and MLflow's stages now."""
        outcome: dict[str, Any] = {"reconciled": True, "replaced_version": p.replaces_version}
        if p.target.type is TargetType.ALIAS:
            return {"alias": p.target.name, "previous_version": p.replaces_version, **outcome}
        with self.db.read() as session:
            recorded = holders_now(session, p.model_name) or {}
        # The target itself is left out: our records may already say the version is
        # there (the reconciler noticed the move first).
        held = {target_of(key): versions_there for key, versions_there in recorded.items()}
        left = [
            t.name
            for t, there in held.items()
            if t.type is TargetType.STAGE and t != p.target and p.version in there
        ]
        archived = _archived_by(p, versions, held.get(p.target, []))
        return {
            "from_stage": left[0] if left else Stage.NONE.value,
            "to_stage": p.target.name,
            "archived_versions": archived,
            **outcome,
        }

    def _undo(self, p: Promotion, outcome: dict[str, Any]) -> None:
        if outcome.get("reconciled"):
            raise ConsistencyError("a reconciled move is not undone")
        if p.target.type is TargetType.ALIAS:
            if outcome["previous_version"] is None:
                self.gateway.delete_alias(p.model_name, p.target.name)
            else:
                self.gateway.set_alias(p.model_name, p.target.name, outcome["previous_version"])
            return
        self.gateway.transition_stage(
            p.model_name, p.version, Stage.parse(outcome["from_stage"]), False
        )
        for archived in outcome["archived_versions"]:
            self.gateway.transition_stage(p.model_name, archived, Stage.parse(p.target.name), False)

    def _settle_executed(self, ctx: Context, p: Promotion, outcome: dict[str, Any]) -> Promotion:
        """Record the move; ``p`` is the request as its claim left it."""
        try:
            with self.db.transaction() as session:
                records = PromotionRecords(session)
                # Every request row before the audit chain, as each step on a request
                # takes them: the other order deadlocks against a step on a stale one.
                locked = records.select(self._settling(p, outcome), children=False)
                done = next(r for r in locked if r.id == p.id)
                if done.updated_at == p.updated_at:
                    # Untouched since the claim (every step moves updated_at).
                    trail = p.audit_trail
                    records.adopt_children(done, p)
                else:
                    trail = []
                    done = records.get(p.id)
                done.executed(outcome, self.clock())
                records.save(done)
                events = self.audit.append_all(
                    session,
                    ctx,
                    [
                        self._entry(done, "promotion.executed", {"outcome": outcome}),
                        self._model_change(done, outcome),
                    ],
                )
                self._supersede(records, ctx, done, [r for r in locked if r.id != p.id])
                done.audit_trail = trail + events if trail else []
                return done
        except RegistryError as exc:
            try:
                self._undo(p, outcome)
            except RegistryError:
                log.critical(
                    "promotion %s applied in MLflow but not recorded; a retry records it",
                    p.id,
                    exc_info=True,
                )
                raise ConsistencyError(
                    f"request {p.id} was applied in MLflow but could not be recorded; it stays "
                    "approved and a retry records it",
                    reverted=False,
                ) from exc
            raise ConsistencyError(
                f"request {p.id} could not be recorded, so its move was undone in MLflow; "
                "it stays approved and a retry executes it",
                reverted=True,
            ) from exc

    @staticmethod
    def _model_change(p: Promotion, outcome: dict[str, Any]) -> Entry:
        if p.target.type is TargetType.ALIAS:
            action = "alias.set"
            before = {"alias": p.target.name, "version": p.replaces_version}
            after = {"alias": p.target.name, "version": p.version}
        else:
            action = "version.stage_changed"
            before = {"stage": outcome.get("from_stage")}
            after = {"stage": p.target.name, "archived_versions": outcome.get("archived_versions")}
        return Entry(
            action,
            model_name=p.model_name,
            model_version=p.version,
            subject=p.subject,
            before=before,
            after={**after, "promotion_request": p.id},
        )

    @staticmethod
    def _settling(done: Promotion, outcome: dict[str, Any]) -> Select:
        """The executed request and the open ones its move makes stale, to lock in one
        statement, in id order; the move's own transaction settles them.

        Stale: requests for the moved target opened to replace another holder than the
        version now there, and requests for the stage the version left that were opened
        to replace it there.
        """
        target = done.target
        stale = [
            (
                PromotionRequestRow.target_type == target.type.value,
                PromotionRequestRow.target == target.name,
                PromotionRequestRow.replaces_version.is_distinct_from(done.version),
            )
        ]
        left = outcome.get("from_stage")
        if target.type is TargetType.STAGE and left in HELD_STAGES and left != target.name:
            stale.append(
                (
                    PromotionRequestRow.target_type == TargetType.STAGE.value,
                    PromotionRequestRow.target == left,
                    PromotionRequestRow.replaces_version == done.version,
                )
            )
        return (
            requests()
            .where(
                PromotionRequestRow.model_name == done.model_name,
                or_(
                    PromotionRequestRow.id == done.id,
                    and_(
                        PromotionRequestRow.status.in_(OPEN_STATUSES),
                        PromotionRequestRow.execution_started_at.is_(None),
                        or_(*(and_(*conditions) for conditions in stale)),
                    ),
                ),
            )
            .order_by(PromotionRequestRow.id)
            .with_for_update()
        )

    def _supersede(
        self, records: PromotionRecords, ctx: Context, done: Promotion, stale: list[Promotion]
    ) -> None:
        target = done.target
        for p in stale:
            if p.target == target:
                change = f"moved {target} to version {done.version}"
            else:
                change = f"moved version {done.version} out of {p.target}"
            why = p.supersede(done.id, change, self.clock())
            records.save(p)
            self._event(
                records.session,
                Context(SYSTEM_ACTOR, ctx.request_id),
                p,
                "promotion.superseded",
                {"superseded_by": done.id, "reason": why},
            )

    def _settle_failed(
        self, ctx: Context, request_id: int, error: str, *, unconfirmed: bool = False
    ) -> Promotion:
        """Record a failed attempt, or, ``unconfirmed``, one whose outcome is not known
        yet (the request stays approved)."""
        with self.db.transaction() as session:
            records = PromotionRecords(session)
            p = records.get(request_id, lock=True)
            if unconfirmed:
                p.unconfirmed(error, self.clock())
                event = ("promotion.execution_unconfirmed", {"attempt": p.attempts, "error": error})
            else:
                p.failed(error, self.clock())
                event = ("promotion.failed", {"error": error})
            records.save(p)
            self._event(session, ctx, p, *event)
            return p

    # -- reads
    def get(self, request_id: int, with_comparison: bool = False) -> Promotion:
        with self.db.read() as session:
            p = PromotionRecords(session).get(request_id)
        if p is None:
            raise PromotionNotFound(f"no promotion request with id {request_id}")
        self._with_trail(p)
        if with_comparison and not p.changes_traffic:  # a traffic change has no candidate
            p.comparison = self.comparison(p)
        return p

    def _with_trail(self, p: Promotion) -> Promotion:
        p.audit_trail = self.audit.trail(p.subject)
        return p

    def _trailed(self, p: Promotion) -> Promotion:
        """``p`` with its trail: kept from its steps when they read it (a request's trail
        is never empty), else read."""
        return p if p.audit_trail else self._with_trail(p)

    def comparison(self, p: Promotion) -> ChampionComparison:
        """The request's candidate beside the version it would replace, on the metrics
        recorded at registration, flagged where a run changed since (services/review.py)."""
        return request_comparison(self.models, self.policies, p)

    def expire_due(self, ctx: Context, limit: int = 500) -> int:
        """Expire pending requests past their deadline; returns how many."""
        now = self.clock()
        with self.db.read() as session:
            due = session.execute(
                select(PromotionRequestRow.id).where(*_overdue(now)).limit(1)
            ).first()
        if due is None:
            return 0
        with self.db.transaction() as session:
            records = PromotionRecords(session)
            due_requests = records.select(
                requests()
                .where(*_overdue(now))
                .order_by(PromotionRequestRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            for p in due_requests:
                self._expire(records, ctx, p, now)
            return len(due_requests)

    def list(
        self, filters: PromotionFilter, max_results: int, page_token: str | None
    ) -> Page[Promotion]:
        """Newest first."""
        self.expire_due(Context(SYSTEM_ACTOR))
        before = decode_position(page_token, INT32_MAX)
        stmt = requests()
        if filters.model_name is not None:
            stmt = stmt.where(PromotionRequestRow.model_name == filters.model_name)
        if filters.status is not None:
            stmt = stmt.where(PromotionRequestRow.status == filters.status.value)
        if filters.requester is not None:
            stmt = stmt.where(PromotionRequestRow.requester == filters.requester)
        principal = filters.actionable_for
        if principal is not None:
            stmt = stmt.where(PromotionRequestRow.status == Status.PENDING.value)
        stmt = stmt.order_by(PromotionRequestRow.id.desc())
        items: list[Promotion] = []
        more = False
        with self.db.read() as session:
            # Eligibility is the policy's rule, not a column: read pending requests in
            # chunks and keep those the principal may approve.
            while not more:
                page = stmt if before is None else stmt.where(PromotionRequestRow.id < before)
                found = PromotionRecords(session).select(page.limit(max_results + 1))
                for p in found:
                    before = p.id
                    if principal is not None and not p.can_approve(principal):
                        continue
                    if len(items) == max_results:
                        more = True
                        break
                    items.append(p)
                if len(found) <= max_results:
                    break
        return Page(items, encode_token({"before": items[-1].id}) if more and items else None)
