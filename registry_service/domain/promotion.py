"""The promotion request as a pure state machine: no database, no MLflow.

    pending --approve (quorum)--> approved --execute--> executed
       |                            |  \\--execution fails--> failed --retry--> approved
       +--reject--> rejected        +--cancel (not started)--> cancelled
       +--cancel--> cancelled       +--another request moves the target--> superseded
       +--expiry--> expired
       +--another request moves the target--> superseded

Each transition checks its rule and raises one of our errors; the service persists
the result and audits it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from registry_service.domain.entities import Principal, Role
from registry_service.domain.policy import PolicyRule, Target, TargetType
from registry_service.errors import (
    AlreadyReviewed,
    IllegalTransition,
    NotEligible,
    PermissionDenied,
    SelfApproval,
)


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    EXECUTED = "executed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"
    SUPERSEDED = "superseded"


OPEN = frozenset({Status.PENDING, Status.APPROVED})


@dataclass(frozen=True)
class Approval:
    approver: str
    comment: str | None
    created_at: datetime


@dataclass(frozen=True)
class Comment:
    author: str
    kind: str  # comment, rejection, cancellation, retry
    body: str
    created_at: datetime


@dataclass
class Promotion:
    id: int | None
    model_name: str
    version: int
    target: Target
    requester: str
    reason: str
    archive_existing: bool
    rule: PolicyRule
    status: Status
    created_at: datetime
    expires_at: datetime
    replaces_version: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    # promotion or rollback (a version to a target), or deployment (a traffic change:
    # target ``default traffic``, ``version`` the deployment revision it was based on)
    kind: str = "promotion"
    review_required: bool = False  # a break-glass rollback, executed without approval
    approvals: list[Approval] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    updated_at: datetime | None = None
    decided_at: datetime | None = None
    executed_at: datetime | None = None
    execution_started_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    outcome: dict[str, Any] | None = None
    superseded_by: int | None = None
    audit_trail: list[Any] = field(default_factory=list)
    comparison: Any = None  # the candidate beside the champion, when asked for

    # -- read-side conveniences for the API
    @property
    def required_approvals(self) -> int:
        return self.rule.required_approvals

    @property
    def received_approvals(self) -> int:
        return len(self.approvals)

    @property
    def target_stage(self) -> str | None:
        return self.target.name if self.target.type is TargetType.STAGE else None

    @property
    def target_alias(self) -> str | None:
        return self.target.name if self.target.type is TargetType.ALIAS else None

    @property
    def subject(self) -> str:
        return f"promotion:{self.id}"

    @property
    def changes_traffic(self) -> bool:
        """A traffic change request: it moves no version, and it executes as a database
        step in the transaction of the approval that completes its quorum."""
        return self.target.type is TargetType.TRAFFIC

    # -- transitions
    @classmethod
    def open(
        cls,
        *,
        model_name: str,
        version: int,
        target: Target,
        requester: Principal,
        reason: str,
        archive_existing: bool,
        rule: PolicyRule,
        now: datetime,
        replaces_version: int | None,
        evidence: dict[str, Any],
        kind: str = "promotion",
    ) -> Promotion:
        promotion = cls(
            id=None,
            model_name=model_name,
            version=version,
            target=target,
            requester=requester.name,
            reason=reason,
            archive_existing=archive_existing,
            rule=rule,
            status=Status.PENDING,
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(hours=rule.expires_after_hours),
            replaces_version=replaces_version,
            evidence=evidence,
            kind=kind,
            review_required=kind == "rollback" and rule.break_glass,
        )
        if rule.required_approvals == 0:
            promotion._move(Status.APPROVED, now)
            promotion.decided_at = now
        return promotion

    def is_due(self, now: datetime) -> bool:
        return self.status is Status.PENDING and now >= self.expires_at

    def expire(self, now: datetime) -> None:
        if not self.is_due(now):
            raise IllegalTransition(f"request {self.id} is {self.status} and not due to expire")
        self._move(Status.EXPIRED, now)
        self.decided_at = now

    def _require_pending(self, action: str) -> None:
        if self.status is not Status.PENDING:
            raise IllegalTransition(
                f"request {self.id} is {self.status.value}; only pending requests can be {action}",
                request_status=self.status.value,
            )

    def _check_reviewer(self, principal: Principal, action: str) -> None:
        if principal.name == self.requester and not self.rule.allow_self_approval:
            raise SelfApproval(
                f"{principal.name!r} opened request {self.id} and the policy for "
                f"{self.target} does not let requesters {action} their own request"
            )
        reason = self.rule.eligibility(principal)
        if reason is not None:
            raise NotEligible(f"{reason}, as the policy for {self.target} requires")

    def approve(self, principal: Principal, comment: str | None, now: datetime) -> bool:
        """Record an approval; True when it completes the quorum."""
        self._require_pending("approved")
        self._check_reviewer(principal, "approve")
        if any(a.approver == principal.name for a in self.approvals):
            raise AlreadyReviewed(f"{principal.name!r} has already approved request {self.id}")
        self.approvals.append(Approval(principal.name, comment, now))
        self.updated_at = now
        if len(self.approvals) >= self.rule.required_approvals:
            self._move(Status.APPROVED, now)
            self.decided_at = now
            return True
        return False

    def can_approve(self, principal: Principal) -> bool:
        """Whether ``principal`` could approve now: what an approver's to-do list shows."""
        if self.status is not Status.PENDING:
            return False
        if any(a.approver == principal.name for a in self.approvals):
            return False
        try:
            self._check_reviewer(principal, "approve")
        except (SelfApproval, NotEligible):
            return False
        return True

    def reject(self, principal: Principal, comment: str, now: datetime) -> None:
        self._require_pending("rejected")
        self._check_reviewer(principal, "reject")
        self.comments.append(Comment(principal.name, "rejection", comment, now))
        self._move(Status.REJECTED, now)
        self.decided_at = now

    def cancel(self, principal: Principal, comment: str | None, now: datetime) -> None:
        if principal.name != self.requester and not principal.has_role(Role.ADMIN):
            raise PermissionDenied(
                f"only the requester {self.requester!r} or an admin can cancel request {self.id}"
            )
        if self.status is Status.APPROVED and self.execution_started_at is not None:
            raise IllegalTransition(
                f"request {self.id} started executing; retry it to settle its outcome",
                request_status=self.status.value,
            )
        if self.status not in (Status.PENDING, Status.APPROVED, Status.FAILED):
            raise IllegalTransition(
                f"request {self.id} is {self.status.value} and can no longer be cancelled",
                request_status=self.status.value,
            )
        if comment:
            self.comments.append(Comment(principal.name, "cancellation", comment, now))
        self._move(Status.CANCELLED, now)

    def comment(self, principal: Principal, body: str, now: datetime) -> Comment:
        entry = Comment(principal.name, "comment", body, now)
        self.comments.append(entry)
        self.updated_at = now
        return entry

    def supersede(self, by_request: int, change: str, now: datetime) -> str:
        """Another request moved the target away from the holder this one was approved
        to replace (``change`` says how): settle it now, not at its last approval."""
        if self.status not in OPEN or self.execution_started_at is not None:
            raise IllegalTransition(
                f"request {self.id} is {self.status.value} and cannot be superseded",
                request_status=self.status.value,
            )
        replaced = (
            f"version {self.replaces_version}" if self.replaces_version is not None else "none"
        )
        why = (
            f"request {by_request} {change}; this request was "
            f"opened to replace {replaced}, so its approvals no longer apply. Open a new "
            "request if this version should still go there."
        )
        self.superseded_by = by_request
        self.comments.append(Comment("system", "superseded", why, now))
        self._move(Status.SUPERSEDED, now)
        self.decided_at = now
        return why

    def start_execution(self, now: datetime) -> None:
        """The intent, recorded before MLflow is touched."""
        if self.status is not Status.APPROVED:
            raise IllegalTransition(
                f"request {self.id} is {self.status.value}; only approved requests execute",
                request_status=self.status.value,
            )
        self.attempts += 1
        self.execution_started_at = now
        self.updated_at = now

    def executed(self, outcome: dict[str, Any], now: datetime) -> None:
        if self.status is not Status.APPROVED or self.execution_started_at is None:
            raise IllegalTransition(f"request {self.id} was not executing")
        self.outcome = outcome
        self.last_error = None
        self.executed_at = now
        self._move(Status.EXECUTED, now)

    def failed(self, error: str, now: datetime) -> None:
        if self.status is not Status.APPROVED:
            raise IllegalTransition(f"request {self.id} was not executing")
        self.last_error = error
        self._move(Status.FAILED, now)

    def unconfirmed(self, error: str, now: datetime) -> None:
        """The move's outcome is unknown: still approved, for a retry or the sweep to
        read MLflow and settle."""
        if self.status is not Status.APPROVED or self.execution_started_at is None:
            raise IllegalTransition(f"request {self.id} was not executing")
        self.last_error = error
        self.updated_at = now

    def retry(self, principal: Principal, now: datetime) -> None:
        if not principal.has_role(Role.ADMIN):
            raise PermissionDenied("only an admin can retry a request")
        if self.changes_traffic:
            # It failed because the deployment moved since it was requested: it never will
            # apply again.
            raise IllegalTransition(
                f"request {self.id} changes traffic and failed against a deployment that "
                "has moved; open a new request against the current deployment",
                request_status=self.status.value,
            )
        if self.status not in (Status.FAILED, Status.APPROVED):
            raise IllegalTransition(
                f"request {self.id} is {self.status.value}; only failed or approved requests "
                "can be retried",
                request_status=self.status.value,
            )
        self._move(Status.APPROVED, now)

    def _move(self, status: Status, now: datetime) -> None:
        self.status = status
        self.updated_at = now
