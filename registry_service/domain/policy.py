"""Promotion policies: who must approve a move of a version to a stage or alias, or a
change of which targets a model's traffic reaches."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from registry_service.domain.entities import Principal, Role, Stage, TokenKind
from registry_service.domain.names import PRINCIPAL_RE, check_alias
from registry_service.errors import ValidationError

if TYPE_CHECKING:  # evaluation and monitoring build on this module
    from registry_service.domain.evaluation import AutoPromotion
    from registry_service.domain.monitoring import MonitoringPolicy

ANY_ALIAS = "*"
MAX_APPROVALS = 10
DEFAULT_EXPIRY_HOURS = 7 * 24
# An approval is a person's judgement: CI jobs and agents may request, not approve,
# unless a model's policy says their kind counts.
DEFAULT_APPROVER_KINDS = (TokenKind.HUMAN.value,)
# What the reconciler does about a stage or alias moved in MLflow, not through us: guard
# (the default) puts Production and every alias back and records the other stages,
# revert puts every target back, record only records. Serving never follows such a move
# in any mode: it answers from the governed holders.
OUT_OF_BAND_GUARD, OUT_OF_BAND_RECORD, OUT_OF_BAND_REVERT = "guard", "record", "revert"
OUT_OF_BAND_MODES = (OUT_OF_BAND_GUARD, OUT_OF_BAND_RECORD, OUT_OF_BAND_REVERT)
OUT_OF_BAND_DEFAULT = OUT_OF_BAND_GUARD


def reverts_out_of_band(mode: str, target_key: str) -> bool:
    """Whether ``mode`` puts back a move of ``target_key`` (``stage:Production``,
    ``alias:champion``) made behind the registry."""
    if mode == OUT_OF_BAND_REVERT:
        return True
    if mode == OUT_OF_BAND_GUARD:
        return target_key == f"stage:{Stage.PRODUCTION.value}" or target_key.startswith("alias:")
    return False


class TargetType(enum.StrEnum):
    STAGE = "stage"
    ALIAS = "alias"
    # A change request's target: which targets a model's default traffic reaches.
    TRAFFIC = "traffic"
    # A policy rule for traffic changes (targets DEPLOYMENT_RULE_TARGETS), never a
    # request's target.
    DEPLOYMENT = "deployment"


# Deployment rules: ``traffic`` governs every routing change in place of the strictest
# rule of the targets involved; ``reweight`` governs changes that keep the same targets
# live (only weights or sticky_by differ).
DEPLOYMENT_TRAFFIC, DEPLOYMENT_REWEIGHT = "traffic", "reweight"
DEPLOYMENT_RULE_TARGETS = (DEPLOYMENT_TRAFFIC, DEPLOYMENT_REWEIGHT)


@dataclass(frozen=True)
class Target:
    """Where a promotion moves a version: a stage (by its canonical name) or an alias."""

    type: TargetType
    name: str

    @classmethod
    def stage(cls, value: str) -> Target:
        try:
            stage = Stage.parse(value)
        except ValueError as exc:
            raise ValidationError(
                str(exc),
                errors=[{"field": "target_stage", "location": "json", "message": str(exc)}],
            ) from exc
        if stage is Stage.NONE:
            raise ValidationError(
                "a promotion cannot target the None stage",
                errors=[
                    {
                        "field": "target_stage",
                        "location": "json",
                        "message": "one of Staging, Production, Archived",
                    }
                ],
            )
        return cls(TargetType.STAGE, stage.value)

    @classmethod
    def alias(cls, value: str) -> Target:
        return cls(TargetType.ALIAS, check_alias(value, "target_alias"))

    def __str__(self) -> str:
        if self.type is TargetType.TRAFFIC:
            return f"{self.name} traffic"
        return f"{self.type.value} {self.name}"


@dataclass(frozen=True)
class PolicyRule:
    """The approvals a target needs. ``target`` '*' (aliases only) covers every alias."""

    target_type: TargetType
    target: str
    required_approvals: int
    approver_role: str = Role.APPROVER.value
    approvers: tuple[str, ...] = ()
    approver_group: str | None = None
    allow_self_approval: bool = False
    expires_after_hours: int = DEFAULT_EXPIRY_HOURS
    # The emergency path: a rollback needs this many approvals from any approver, or
    # none with break-glass (then it executes at once and is flagged for review).
    rollback_approvals: int = 1
    break_glass: bool = False
    source: str = "default"
    approver_kinds: tuple[str, ...] = DEFAULT_APPROVER_KINDS

    def covers(self, target: Target) -> bool:
        return self.target_type == target.type and self.target in (target.name, ANY_ALIAS)

    def eligibility(self, principal: Principal) -> str | None:
        """None when ``principal`` may review under this rule, else the reason not."""
        if not principal.has_role(self.approver_role):
            return f"{principal.name!r} lacks the {self.approver_role!r} role"
        if principal.kind not in self.approver_kinds:
            return (
                f"{principal.name!r} acts with a {principal.kind} token, and only approvals "
                f"from {' or '.join(self.approver_kinds)} tokens count"
            )
        named = principal.name in self.approvers
        grouped = self.approver_group is not None and self.approver_group in principal.groups
        if (self.approvers or self.approver_group) and not (named or grouped):
            who = []
            if self.approvers:
                who.append("the named approvers " + ", ".join(self.approvers))
            if self.approver_group:
                who.append(f"members of group {self.approver_group!r}")
            return f"{principal.name!r} is not among {' or '.join(who)}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_type": self.target_type.value,
            "target": self.target,
            "required_approvals": self.required_approvals,
            "approver_role": self.approver_role,
            "approvers": list(self.approvers),
            "approver_group": self.approver_group,
            "allow_self_approval": self.allow_self_approval,
            "expires_after_hours": self.expires_after_hours,
            "rollback_approvals": self.rollback_approvals,
            "break_glass": self.break_glass,
            "approver_kinds": list(self.approver_kinds),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyRule:
        return cls(
            target_type=TargetType(data["target_type"]),
            target=data["target"],
            required_approvals=int(data["required_approvals"]),
            approver_role=data.get("approver_role", Role.APPROVER.value),
            approvers=tuple(data.get("approvers") or ()),
            approver_group=data.get("approver_group"),
            allow_self_approval=bool(data.get("allow_self_approval", False)),
            expires_after_hours=int(data.get("expires_after_hours", DEFAULT_EXPIRY_HOURS)),
            rollback_approvals=int(data.get("rollback_approvals", 1)),
            break_glass=bool(data.get("break_glass", False)),
            source=data.get("source", "model"),
            approver_kinds=tuple(data.get("approver_kinds") or DEFAULT_APPROVER_KINDS),
        )

    def for_rollback(self) -> PolicyRule:
        """The rule a rollback on this target runs under: fewer approvals, from the same
        people (the named approvers and group still decide who may approve)."""
        return replace(
            self,
            required_approvals=0 if self.break_glass else self.rollback_approvals,
            allow_self_approval=False,
        )


# Production-grade by default: two approvers for Production and for any alias.
DEFAULT_RULES: tuple[PolicyRule, ...] = (
    PolicyRule(TargetType.STAGE, Stage.PRODUCTION.value, 2),
    PolicyRule(TargetType.STAGE, Stage.STAGING.value, 1),
    PolicyRule(TargetType.STAGE, Stage.ARCHIVED.value, 1),
    PolicyRule(TargetType.ALIAS, ANY_ALIAS, 2),
)


def _most_specific(rules: tuple[PolicyRule, ...], target: Target) -> PolicyRule | None:
    exact = [r for r in rules if r.covers(target) and r.target == target.name]
    if exact:
        return exact[0]
    return next((r for r in rules if r.covers(target)), None)


@dataclass(frozen=True)
class Policy:
    model_name: str
    rules: tuple[PolicyRule, ...] = ()
    revision: int = 0
    updated_at: datetime | None = None
    updated_by: str | None = None
    defaults: tuple[PolicyRule, ...] = field(default=DEFAULT_RULES)
    auto_promotion: AutoPromotion | None = None
    monitoring: MonitoringPolicy | None = None  # None: the default thresholds, no alerts
    # Who may send feedback on anyone's predictions of the model (besides the predicting
    # principal and admins).
    feedback_principals: tuple[str, ...] = ()
    out_of_band: str = OUT_OF_BAND_DEFAULT
    # Versions whose pickle scan found dangerous globals may reach Production or an alias.
    allow_unsafe_artifacts: bool = False

    @property
    def source(self) -> str:
        return "model" if self.revision else "default"

    def refuses_artifacts(self, target: Target, scan_verdict: str | None) -> bool:
        """Whether a version whose pickle scan says ``scan_verdict`` may not be requested
        for ``target``: dangerous findings never reach Production or an alias unless the
        policy allows unsafe artifacts."""
        served = target.type is TargetType.ALIAS or target.name == Stage.PRODUCTION.value
        return served and scan_verdict == "dangerous" and not self.allow_unsafe_artifacts

    def rule_for(self, target: Target) -> PolicyRule:
        rule = _most_specific(self.rules, target) or _most_specific(self.defaults, target)
        if rule is None:  # the defaults cover every stage and alias
            raise ValidationError(f"no policy rule covers {target}")
        return rule

    @property
    def effective_rules(self) -> list[PolicyRule]:
        """The model's own rules, then each default rule it does not override."""
        own = {(r.target_type, r.target) for r in self.rules}
        return [*self.rules, *(d for d in self.defaults if (d.target_type, d.target) not in own)]


def validate_rules(rules: list[PolicyRule]) -> list[PolicyRule]:
    """Check a whole rule set as a client would send it; rules come back canonical."""
    seen: set[tuple[TargetType, str]] = set()
    out = []
    for i, rule in enumerate(rules):

        def bad(field_name: str, message: str, i: int = i) -> ValidationError:
            where = f"rules.{i}.{field_name}"
            return ValidationError(
                f"{where}: {message}",
                errors=[{"field": where, "location": "json", "message": message}],
            )

        if rule.target_type is TargetType.STAGE:
            try:
                stage = Stage.parse(rule.target)
            except ValueError as exc:
                raise bad("target", str(exc)) from exc
            if stage is Stage.NONE:
                raise bad("target", "the None stage takes no promotions")
            rule = replace(rule, target=stage.value)
        elif rule.target_type is TargetType.DEPLOYMENT:
            if rule.target not in DEPLOYMENT_RULE_TARGETS:
                raise bad("target", f"one of {list(DEPLOYMENT_RULE_TARGETS)}")
            if not 1 <= rule.required_approvals <= MAX_APPROVALS:
                # Traffic never moves on nobody's word.
                raise bad("required_approvals", f"1 to {MAX_APPROVALS} for a deployment rule")
        elif rule.target_type is not TargetType.ALIAS:
            raise bad("target_type", "stage, alias or deployment")
        elif rule.target != ANY_ALIAS:
            try:
                check_alias(rule.target)
            except ValidationError as exc:
                raise bad("target", exc.detail) from exc
        if not 0 <= rule.required_approvals <= MAX_APPROVALS:
            raise bad("required_approvals", f"0 to {MAX_APPROVALS}")
        if rule.approver_role not in (Role.APPROVER.value, Role.ADMIN.value):
            raise bad("approver_role", "approver or admin")
        if not 1 <= rule.expires_after_hours <= 24 * 365:
            raise bad("expires_after_hours", "1 hour to 365 days")
        if not 1 <= rule.rollback_approvals <= MAX_APPROVALS:
            raise bad("rollback_approvals", f"1 to {MAX_APPROVALS}; use break_glass for none")
        kinds = set(rule.approver_kinds)
        if not kinds or kinds - {k.value for k in TokenKind}:
            raise bad("approver_kinds", f"a non-empty subset of {[k.value for k in TokenKind]}")
        key = (rule.target_type, rule.target)
        if key in seen:
            raise bad("target", f"{rule.target_type.value} {rule.target!r} appears twice")
        seen.add(key)
        out.append(
            replace(
                rule,
                approvers=tuple(sorted(set(rule.approvers))),
                approver_kinds=tuple(k.value for k in TokenKind if k.value in kinds),
                source="model",
            )
        )
    return out


MAX_FEEDBACK_PRINCIPALS = 100


def validate_feedback_principals(names: list[str]) -> tuple[str, ...]:
    """Principal names allowed to send feedback on anyone's predictions: canonical."""
    if len(names) > MAX_FEEDBACK_PRINCIPALS:
        raise ValidationError(
            f"name at most {MAX_FEEDBACK_PRINCIPALS} feedback principals",
            errors=[
                {
                    "field": "feedback_principals",
                    "location": "json",
                    "message": f"at most {MAX_FEEDBACK_PRINCIPALS} names",
                }
            ],
        )
    for i, name in enumerate(names):
        if not isinstance(name, str) or not PRINCIPAL_RE.match(name):
            message = "a principal's name: lowercase letters, digits and . _ @ -"
            raise ValidationError(
                f"feedback_principals.{i}: {message}",
                errors=[
                    {"field": f"feedback_principals.{i}", "location": "json", "message": message}
                ],
            )
    return tuple(sorted(set(names)))
