"""The reconciler: notices stages and aliases moved in MLflow without going through us.

For each model it compares the holders MLflow reports with the holders our audit log
says they should have. A difference is recorded as ``model.out_of_band_change`` (and
raises an alert, and reaches webhooks through the outbox); under the model's policy
``out_of_band: revert`` the governed holders are put back.

Moves made through the registry never count as out of band, even when they race the
comparison: a model is compared only when nothing of ours was changing it while MLflow
was read (its latest audit event and MLflow intent are the same before and after the
read, and no promotion or intent of it is in flight); otherwise it is left for the
next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.locks import NamedLocks
from registry_service.db.models import (
    AuditEventRow,
    MlflowIntentRow,
    PromotionRequestRow,
)
from registry_service.domain.entities import Stage
from registry_service.domain.monitoring import OUT_OF_BAND_RULE
from registry_service.domain.policy import OUT_OF_BAND_GUARD, TargetType, reverts_out_of_band
from registry_service.domain.promotion import Status
from registry_service.errors import ModelNotFound, RegistryError
from registry_service.gateway.base import RegistryGateway
from registry_service.monitoring.service import MonitoringService
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.history import holders_now
from registry_service.services.intents import PENDING as INTENT_PENDING
from registry_service.services.policies import PolicyService

log = logging.getLogger(__name__)

# In-flight work older than this is stuck rather than in flight: the model is compared
# anyway, so that a stalled request cannot hide later moves for ever.
IN_FLIGHT_GRACE = timedelta(minutes=5)
IN_STEP, OUT_OF_BAND, REVERTED, REVERT_FAILED, ADOPTED, DEFERRED = (
    "in-step",
    "out-of-band",
    "reverted",
    "revert-failed",
    "adopted",
    "deferred",
)
Holders = dict[str, list[int]]


@dataclass(frozen=True)
class Marker:
    """What we know of a model's changes: equal markers mean nothing of ours moved."""

    last_event: int | None
    last_intent: int | None
    in_flight: int


@dataclass(frozen=True)
class Reconciliation:
    model_name: str
    outcome: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    audit_seq: int | None = None
    alert_id: int | None = None
    error: str | None = None


def mlflow_holders(aliases: dict[str, int], versions) -> Holders:
    """Holders as MLflow reports them: aliases from the model (version searches do not
    carry them), stages from its versions."""
    found: dict[str, set[int]] = {f"alias:{a}": {v} for a, v in aliases.items()}
    for mv in versions:
        if mv.stage and mv.stage != Stage.NONE.value:
            found.setdefault(f"stage:{mv.stage}", set()).add(mv.version)
    return {k: sorted(v) for k, v in sorted(found.items())}


def differences(expected: Holders, actual: Holders) -> list[dict[str, Any]]:
    return [
        {"target": key, "expected": expected.get(key, []), "found": actual.get(key, [])}
        for key in sorted(set(expected) | set(actual))
        if expected.get(key, []) != actual.get(key, [])
    ]


class Reconciler:
    def __init__(
        self,
        gateway: RegistryGateway,
        db: Database,
        audit: AuditLog,
        policies: PolicyService,
        monitoring: MonitoringService,
        locks: NamedLocks,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.gateway = gateway
        self.db = db
        self.audit = audit
        self.policies = policies
        self.monitoring = monitoring
        self.locks = locks
        self.clock = clock

    def reconcile_all(self, ctx: Context) -> dict[str, int]:
        """Compare every model in MLflow; counts by outcome."""
        counts = {k: 0 for k in (IN_STEP, OUT_OF_BAND, REVERTED, REVERT_FAILED, ADOPTED, DEFERRED)}
        counts["errors"] = 0
        token = None
        while True:
            page = self.gateway.search_registered_models(None, 1000, token)
            for model in page.items:
                try:
                    counts[self.reconcile(ctx, model.name).outcome] += 1
                except ModelNotFound:
                    pass  # deleted meanwhile
                except RegistryError as exc:
                    counts["errors"] += 1
                    log.warning("reconcile %s: %s", model.name, exc.detail)
                except Exception:  # one model's surprise must not stop the others
                    counts["errors"] += 1
                    log.exception("reconcile %s failed", model.name)
            token = page.next_page_token
            if not token:
                return counts

    def reconcile(self, ctx: Context, name: str, noticed_by: str = "poll") -> Reconciliation:
        """Compare one model with MLflow; record (and maybe revert) what differs."""
        with self.locks.hold(f"reconcile:{name}"):
            before = self._marker(name)
            if before.in_flight:
                return Reconciliation(name, DEFERRED)
            actual, existing = self._actual(name)
            with self.db.transaction() as session:
                # The chain head lock orders this against every append: no event of the
                # model can slip in between the check and what is recorded here.
                self.audit.lock_chain(session)
                if self._marker_in(session, name) != before:
                    return Reconciliation(name, DEFERRED)
                expected = holders_now(session, name)
                if expected is None and self._created_here(session, name):
                    expected = {}  # made through us, never moved: it holds nothing
                if expected is None:
                    # Made elsewhere and never moved through us: taken as found.
                    if not actual:
                        return Reconciliation(name, IN_STEP)
                    event = self.audit.append(
                        session,
                        ctx,
                        "model.adopted",
                        model_name=name,
                        after={"holders": actual, "reason": "holders no move of ours explains"},
                    )
                    # Adopted holders are recorded, never served: a version that reached
                    # Production or an alias outside the registry is someone's to review.
                    guarded = {
                        k: v for k, v in actual.items() if reverts_out_of_band(OUT_OF_BAND_GUARD, k)
                    }
                    alert_id = None
                    if guarded:
                        alert_id, _ = self.monitoring.raise_alert(
                            session,
                            ctx,
                            name,
                            OUT_OF_BAND_RULE,
                            {
                                "adopted": guarded,
                                "audit_seq": event.seq,
                                "response": "not served until a governed step moves it",
                            },
                        )
                    return Reconciliation(name, ADOPTED, audit_seq=event.seq, alert_id=alert_id)
                changes = differences(expected, actual)
                if not changes:
                    return Reconciliation(name, IN_STEP)
                mode = self.policies.load(session, name).out_of_band
                to_revert = sorted(
                    c["target"] for c in changes if reverts_out_of_band(mode, c["target"])
                )
                response = "revert" if to_revert else "record"
                event = self.audit.append(
                    session,
                    ctx,
                    "model.out_of_band_change",
                    model_name=name,
                    before={"holders": {c["target"]: c["expected"] for c in changes}},
                    after={
                        "holders": {c["target"]: c["found"] for c in changes},
                        "noticed_by": noticed_by,
                        "noticed_at": self.clock(),
                        "response": response,
                        "mode": mode,
                        "reverting": to_revert,
                    },
                )
                alert_id, _ = self.monitoring.raise_alert(
                    session,
                    ctx,
                    name,
                    OUT_OF_BAND_RULE,
                    {"changes": changes, "audit_seq": event.seq, "response": response},
                )
                recorded = self._marker_in(session, name)
            found = Reconciliation(name, OUT_OF_BAND, changes, event.seq, alert_id)
            if to_revert:
                # Versions deleted in MLflow cannot hold anything again.
                restorable = {k: [v for v in vs if v in existing] for k, vs in expected.items()}
                return self._revert(ctx, found, restorable, actual, recorded, set(to_revert))
            return found

    # -- reading
    def _actual(self, name: str) -> tuple[Holders, set[int]]:
        """The holders MLflow reports, and the versions that exist."""
        aliases = self.gateway.get_registered_model(name).aliases
        versions, token = [], None
        while True:
            page = self.gateway.search_model_versions(name, 1000, token)
            versions.extend(page.items)
            token = page.next_page_token
            if not token:
                return mlflow_holders(aliases, versions), {mv.version for mv in versions}

    @staticmethod
    def _created_here(session: Session, name: str) -> bool:
        return (
            session.execute(
                select(AuditEventRow.seq)
                .where(AuditEventRow.model_name == name, AuditEventRow.action == "model.created")
                .limit(1)
            ).scalar()
            is not None
        )

    def _marker(self, name: str) -> Marker:
        with self.db.read() as session:
            return self._marker_in(session, name)

    def _marker_in(self, session: Session, name: str) -> Marker:
        recent = self.clock() - IN_FLIGHT_GRACE
        last_event = session.execute(
            select(func.max(AuditEventRow.seq)).where(AuditEventRow.model_name == name)
        ).scalar()
        last_intent = session.execute(
            select(func.max(MlflowIntentRow.id)).where(MlflowIntentRow.model_name == name)
        ).scalar()
        intents = session.execute(
            select(func.count()).where(
                MlflowIntentRow.model_name == name,
                MlflowIntentRow.status == INTENT_PENDING,
                MlflowIntentRow.created_at >= recent,
            )
        ).scalar()
        # Approved requests are executing or about to: their move may be in MLflow
        # before its event is in our log. A traffic change moves nothing in MLflow (and
        # executes in the transaction that approves it).
        executing = session.execute(
            select(func.count()).where(
                PromotionRequestRow.model_name == name,
                PromotionRequestRow.status == Status.APPROVED.value,
                PromotionRequestRow.target_type != TargetType.TRAFFIC.value,
                PromotionRequestRow.updated_at >= recent,
            )
        ).scalar()
        return Marker(last_event, last_intent, intents + executing)

    # -- reverting
    def _revert(
        self,
        ctx: Context,
        found: Reconciliation,
        expected: Holders,
        actual: Holders,
        recorded: Marker,
        changed: set[str],
    ) -> Reconciliation:
        """Put back the targets in ``changed`` (those the policy reverts)."""
        name = found.model_name
        # Promotions of these targets wait while they are put back, and one that got in
        # first (its events change the marker) wins: the revert is then not made.
        try:
            with ExitStack() as held:
                for target in sorted(changed):
                    kind, _, target_name = target.partition(":")
                    held.enter_context(self.locks.hold(f"promotion:{name}\x00{kind}:{target_name}"))
                if self._marker(name) != recorded:
                    error = "a governed move of this model started meanwhile; not reverted"
                else:
                    self._put_back(name, expected, actual, changed)
                    error = None
        except RegistryError as exc:  # MLflow refused, or a promotion held a target
            error = f"{exc.title}: {exc.detail}"
        if error is not None:
            # A revert may stop halfway: what MLflow holds now becomes the record, so the
            # next pass does not take our own half-revert for another out-of-band move.
            after: dict[str, Any] = {"out_of_band_seq": found.audit_seq, "error": error}
            try:
                now_held, _ = self._actual(name)
                after["holders"] = {k: now_held.get(k, []) for k in sorted(changed)}
            except RegistryError:
                pass
            self.audit.record(ctx, "model.out_of_band_revert_failed", model_name=name, after=after)
            return Reconciliation(
                name, REVERT_FAILED, found.changes, found.audit_seq, found.alert_id, error
            )
        with self.db.transaction() as session:
            event = self.audit.append(
                session,
                ctx,
                "model.out_of_band_reverted",
                model_name=name,
                before={"holders": {k: actual.get(k, []) for k in sorted(changed)}},
                after={
                    "holders": {k: expected.get(k, []) for k in sorted(changed)},
                    "out_of_band_seq": found.audit_seq,
                },
            )
            self.monitoring.resolve_alert(
                ctx,
                found.alert_id,
                {"reverted": True, "audit_seq": event.seq},
                session,
                only_if_firing=True,
            )
        return Reconciliation(name, REVERTED, found.changes, event.seq, found.alert_id)

    def _put_back(self, name: str, expected: Holders, actual: Holders, changed: set[str]) -> None:
        def stages(holders: Holders) -> dict[int, str]:
            return {
                v: key.split(":", 1)[1]
                for key, versions in holders.items()
                if key.startswith("stage:")
                for v in versions
            }

        want, have = stages(expected), stages(actual)
        # Only versions that entered or left a stage being put back are moved: a move the
        # policy only records (Staging, say) stays as MLflow has it.
        involved = {
            v
            for key in changed
            if key.startswith("stage:")
            for v in (*expected.get(key, []), *actual.get(key, []))
        }
        for version in sorted(involved):
            if want.get(version) != have.get(version):
                stage = Stage.parse(want.get(version, Stage.NONE.value))
                self.gateway.transition_stage(name, version, stage, False)
        for key in sorted(k for k in changed if k.startswith("alias:")):
            alias = key.split(":", 1)[1]
            holders = expected.get(key, [])
            if holders:
                self.gateway.set_alias(name, alias, holders[0])
            else:
                self.gateway.delete_alias(name, alias)
