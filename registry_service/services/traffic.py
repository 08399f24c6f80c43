"""Traffic changes: which targets a model's default traffic reaches is governed like a
stage. This module's one job is to open a change request in the promotion workflow for
every deployment change that moves traffic, under the strictest rule it involves, and to
apply it, a database write and no MLflow call, in the transaction of the approval that
completes its quorum.

Specs here are the canonical JSON of the serving layer's ``DeploymentSpec``, which
parses and validates them before they reach this module.

A request records the deployment revision and spec it was made against. If the
deployment moved before the quorum was reached, the request fails with the reason
(``last_error``) when it would execute: approvals are never applied to a deployment the
approvers did not see. A failed traffic change is not retried; a new one is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import OPEN_STATUSES, DeploymentRow, PromotionRequestRow
from registry_service.domain.entities import Principal, Stage
from registry_service.domain.policy import (
    DEPLOYMENT_REWEIGHT,
    DEPLOYMENT_TRAFFIC,
    Policy,
    PolicyRule,
    Target,
    TargetType,
)
from registry_service.domain.promotion import Promotion
from registry_service.errors import (
    NotFound,
    OpenRequestExists,
    PreconditionFailed,
    PreconditionRequired,
    QuorumUnreachable,
    RegistryError,
)
from registry_service.services.audit import AuditLog, Entry
from registry_service.services.context import Context
from registry_service.services.policies import PolicyService, eligible_approvers
from registry_service.services.promotion_records import PromotionRecords, request_entry
from registry_service.services.promotions import SYSTEM_ACTOR, PromotionService

KIND = "deployment"
TRAFFIC = Target(TargetType.TRAFFIC, "default")
PRODUCTION = Target(TargetType.STAGE, Stage.PRODUCTION.value)
# How a change touches routing: not at all (only preload or fallback), the same targets
# live with other weights or sticky_by, or other targets live.
NO_CHANGE, REWEIGHT, REROUTE = "none", "reweight", "traffic"

Spec = dict[str, Any]
# Runs when a request executes, in its transaction, with the deployment revision it
# writes: returns what to add to the outcome and the events to append. It refuses by
# raising a RegistryError before it writes anything; the request then fails.
ExecutionHook = Callable[[Session, Context, Promotion, int], tuple[dict[str, Any], list[Entry]]]


@dataclass(frozen=True)
class Stored:
    """A deployment as written: its row's id and revision, and its spec (None: removed,
    the default serves)."""

    id: int | None
    revision: int
    spec: Spec | None


def etag(revision: int) -> str:
    return f'"{revision}"'


def _target(variant: Spec) -> Target:
    if "target_stage" in variant:
        return Target(TargetType.STAGE, variant["target_stage"])
    return Target(TargetType.ALIAS, variant["target_alias"])


def shares(spec: Spec) -> dict[Target, int]:
    """Each target's share of the traffic, in percent."""
    found: dict[Target, int] = {}
    for variant in spec["variants"]:
        target = _target(variant)
        found[target] = found.get(target, 0) + variant["weight"]
    return found


def routing_change(before: Spec, after: Spec) -> str:
    """NO_CHANGE, REWEIGHT (the same targets live) or REROUTE (other targets live)."""
    if before["variants"] == after["variants"] and before.get("sticky_by") == after.get(
        "sticky_by"
    ):
        return NO_CHANGE

    def live(spec: Spec) -> set[Target]:
        return {t for t, weight in shares(spec).items() if weight > 0}

    return REWEIGHT if live(before) == live(after) else REROUTE


def changed_targets(before: Spec, after: Spec) -> list[Target]:
    """The targets whose share of the traffic changes, traffic routed to or away."""
    old, new = shares(before), shares(after)
    return sorted((t for t in old.keys() | new.keys() if old.get(t, 0) != new.get(t, 0)), key=str)


def rule_for_change(policy: Policy, before: Spec, after: Spec, change: str) -> PolicyRule:
    """The rule a change needs: the deployment rule the policy names (``reweight`` for a
    reweight, else ``traffic``); without one, the strictest by required approvals of
    Production's rule and the rules of every target whose share changes (Production's on
    a tie). Never fewer than one approval."""
    named = {r.target: r for r in policy.rules if r.target_type is TargetType.DEPLOYMENT}
    if change == REWEIGHT and DEPLOYMENT_REWEIGHT in named:
        return named[DEPLOYMENT_REWEIGHT]
    if DEPLOYMENT_TRAFFIC in named:
        return named[DEPLOYMENT_TRAFFIC]
    involved = [PRODUCTION, *changed_targets(before, after)]
    strictest = max((policy.rule_for(t) for t in involved), key=lambda r: r.required_approvals)
    return strictest if strictest.required_approvals else replace(strictest, required_approvals=1)


class TrafficService:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        policies: PolicyService,
        promotions: PromotionService,
        default_spec: Spec,
    ) -> None:
        """``default_spec``: what a model without a deployment serves."""
        self.db = db
        self.audit = audit
        self.policies = policies
        self.promotions = promotions
        self.default = default_spec
        self.on_executed: list[ExecutionHook] = []

    # -- changing a deployment
    def change(
        self,
        ctx: Context,
        principal: Principal,
        name: str,
        after: Spec | None,
        if_match: str | None,
        reason: str,
        *,
        abtest: dict[str, Any] | None = None,
    ) -> Stored | Promotion:
        """Change ``name``'s deployment to ``after`` (None: remove it, back to the
        default). A change of routing opens a request, returned pending; one that leaves
        routing alone is written at once and returned as stored. ``abtest``: the A/B test
        to start when the request executes (such a change is always a request)."""
        self.promotions.expire_due(Context(SYSTEM_ACTOR, ctx.request_id))
        base = 0
        try:
            with self.db.transaction() as session:
                row, before, base = self._locked(session, name, if_match)
                if after is None and row is None:
                    raise NotFound(f"{name!r} has no deployment of its own; it serves the default")
                change = routing_change(before, self.default if after is None else after)
                if change == NO_CHANGE and abtest is None:
                    stored, event = self._write(session, ctx, name, row, before, after)
                    self.audit.append_all(session, ctx, [event])
                    return stored
                request_id = self._open(
                    session,
                    ctx,
                    principal,
                    name,
                    {
                        "before": before,
                        "after": after,
                        "base_revision": base,
                        "routing_change": REWEIGHT if change == NO_CHANGE else change,
                    },
                    reason,
                    abtest,
                )
        except OpenRequestExists:
            existing = self._open_request_id(name, base)
            raise OpenRequestExists(
                f"request {existing} to change the traffic of {name!r} (deployment revision "
                f"{base}) is still open: approve, reject or cancel it first",
                existing_request_id=existing,
            ) from None
        return self.promotions.get(request_id)

    def restore(self, ctx: Context, name: str, spec: Spec | None, if_match: str | None) -> Stored:
        """Put back a deployment that was approved before (None: the default), at once:
        an A/B test's conclusion returns to the split that held before the test."""
        with self.db.transaction() as session:
            row, before, _ = self._locked(session, name, if_match)
            if spec is None and row is None:
                raise NotFound(f"{name!r} has no deployment of its own; it serves the default")
            stored, event = self._write(session, ctx, name, row, before, spec)
            self.audit.append_all(session, ctx, [event])
            return stored

    def _open(
        self,
        session: Session,
        ctx: Context,
        principal: Principal,
        name: str,
        deployment: dict[str, Any],
        reason: str,
        abtest: dict[str, Any] | None,
    ) -> int:
        before = deployment["before"]
        after = self.default if deployment["after"] is None else deployment["after"]
        change = deployment["routing_change"]
        rule = rule_for_change(self.policies.load(session, name), before, after, change)
        eligible = eligible_approvers(session, rule, requester=principal.name)
        if rule.required_approvals > len(eligible):
            raise QuorumUnreachable(
                f"a change of {name!r}'s traffic needs {rule.required_approvals} approvals "
                f"but only {len(eligible)} other principals can approve "
                f"({', '.join(eligible) or 'none'})",
                eligible_approvers=eligible,
            )
        deployment["changed_targets"] = [str(t) for t in changed_targets(before, after)]
        p = Promotion.open(
            model_name=name,
            version=deployment["base_revision"],
            target=TRAFFIC,
            requester=principal,
            reason=reason,
            archive_existing=False,
            rule=rule,
            now=self.promotions.clock(),
            replaces_version=None,
            evidence={"deployment": deployment} | ({"abtest": abtest} if abtest else {}),
            kind=KIND,
        )
        PromotionRecords(session).add(p)
        requested = {
            "kind": KIND,
            "target": str(TRAFFIC),
            "reason": reason,
            "required_approvals": rule.required_approvals,
            "routing_change": change,
            "base_revision": deployment["base_revision"],
        }
        self.audit.append_all(session, ctx, [request_entry(p, "promotion.requested", requested)])
        return p.id

    def _open_request_id(self, name: str, base: int) -> int | None:
        with self.db.read() as session:
            return session.execute(
                select(PromotionRequestRow.id).where(
                    PromotionRequestRow.model_name == name,
                    PromotionRequestRow.version == base,
                    PromotionRequestRow.target_type == TRAFFIC.type.value,
                    PromotionRequestRow.target == TRAFFIC.name,
                    PromotionRequestRow.status.in_(OPEN_STATUSES),
                )
            ).scalar_one_or_none()

    # -- executing an approved request
    def execute(self, session: Session, ctx: Context, p: Promotion, now: datetime) -> list[Entry]:
        """Apply ``p``, just approved by the step that completed its quorum, in that
        step's transaction; returns the events to append after the approval's."""
        wanted = p.evidence["deployment"]
        row, current, revision = self._locked(session, p.model_name, None, check=False)
        p.start_execution(now)
        if revision != wanted["base_revision"] or current != wanted["before"]:
            return self._failed(
                p,
                now,
                f"the deployment of {p.model_name!r} moved from revision "
                f"{wanted['base_revision']} to {revision} since the request was opened; its "
                "approvals were for changing the deployment as it was then. Open a new "
                "request against the current deployment.",
            )
        after = wanted["after"]
        outcome: dict[str, Any] = {
            "deployment_revision": 0 if after is None else revision + 1,
            "routing_change": wanted["routing_change"],
        }
        events: list[Entry] = []
        try:
            for hook in self.on_executed:
                found, hooked = hook(session, ctx, p, outcome["deployment_revision"])
                outcome |= found
                events += hooked
        except RegistryError as exc:
            return self._failed(p, now, f"{exc.title}: {exc.detail}")
        _, written = self._write(session, ctx, p.model_name, row, current, after, request=p)
        p.executed(outcome, now)
        return [request_entry(p, "promotion.executed", {"outcome": outcome}), written, *events]

    @staticmethod
    def _failed(p: Promotion, now: datetime, error: str) -> list[Entry]:
        p.failed(error, now)
        return [request_entry(p, "promotion.failed", {"error": error})]

    # -- the deployment row
    def _locked(
        self, session: Session, name: str, if_match: str | None, *, check: bool = True
    ) -> tuple[DeploymentRow | None, Spec, int]:
        """The model's deployment row (locked), its spec and revision, after the If-Match
        check: required once a deployment exists (optimistic concurrency between
        editors)."""
        row = session.execute(
            select(DeploymentRow).where(DeploymentRow.model_name == name).with_for_update()
        ).scalar_one_or_none()
        spec, revision = (dict(row.spec), row.revision) if row is not None else (self.default, 0)
        if not check:
            return row, spec, revision
        if row is not None and if_match is None:
            raise PreconditionRequired(
                "this model has a deployment: send If-Match with the ETag from GET",
                etag=etag(revision),
            )
        if if_match is not None and if_match.strip() not in ("*", etag(revision)):
            raise PreconditionFailed(
                f"the deployment is at ETag {etag(revision)}, not {if_match.strip()}: "
                "read it again and retry",
                etag=etag(revision),
            )
        return row, spec, revision

    def _write(
        self,
        session: Session,
        ctx: Context,
        name: str,
        row: DeploymentRow | None,
        before: Spec,
        after: Spec | None,
        request: Promotion | None = None,
    ) -> tuple[Stored, Entry]:
        """Write ``after`` (None: delete the row); the event to append says what changed
        and, for an executed request, which one."""
        base = row.revision if row is not None else 0
        mark = {"promotion_request": request.id} if request is not None else {}
        if after is None:
            session.delete(row)
            session.flush()
            stored = Stored(None, 0, None)
            action, written = "deployment.deleted", self.default
        else:
            if row is None:
                row = DeploymentRow(model_name=name, spec=after, revision=1, updated_by=ctx.actor)
                session.add(row)
            else:
                row.spec, row.revision = after, row.revision + 1
                row.updated_at, row.updated_by = utcnow(), ctx.actor
            session.flush()
            stored = Stored(row.id, row.revision, after)
            action, written = "deployment.updated", after | {"revision": row.revision}
        event = Entry(
            action,
            model_name=name,
            subject=request.subject if request is not None else f"deployment:{row.id}",
            before=before | {"revision": base},
            after=written | mark,
        )
        return stored, event
