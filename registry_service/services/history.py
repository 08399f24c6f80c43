"""Which version held each stage and alias when, rebuilt from our own audit log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_service.db.database import Database
from registry_service.db.models import AuditEventRow
from registry_service.domain.entities import Stage
from registry_service.domain.names import check_model_name
from registry_service.domain.policy import Target, TargetType
from registry_service.gateway.base import RegistryGateway

ARCHIVED = Target(TargetType.STAGE, Stage.ARCHIVED.value)

# Events whose ``after.holders`` state outright which versions hold the targets named:
# a model adopted as found, a move noticed in MLflow that bypassed us, and its revert.
HOLDER_EVENTS = (
    "model.adopted",
    "model.out_of_band_change",
    "model.out_of_band_reverted",
    "model.out_of_band_revert_failed",
)
MOVES = ("version.stage_changed", "alias.set", "alias.deleted", *HOLDER_EVENTS)
# Events that only record what MLflow was found holding: the governed history (what
# serving and rollbacks follow) leaves them out, so a move made behind the registry never
# makes a version a holder. A revert puts the governed holders back, so it stays in.
UNGOVERNED_EVENTS = (
    "model.adopted",
    "model.out_of_band_change",
    "model.out_of_band_revert_failed",
)
GOVERNED_MOVES = tuple(a for a in MOVES if a not in UNGOVERNED_EVENTS)


@dataclass(frozen=True)
class Tenure:
    """One version holding one target from ``since`` until ``until`` (None: still)."""

    target: Target
    version: int
    since: datetime
    started_by: str
    started_seq: int
    promotion_request: int | None
    until: datetime | None = None
    ended_by: str | None = None
    ended_seq: int | None = None

    @property
    def target_type(self) -> str:
        return self.target.type.value

    @property
    def target_name(self) -> str:
        return self.target.name

    def held_at(self, at: datetime) -> bool:
        return self.since <= at and (self.until is None or at < self.until)


@dataclass(frozen=True)
class ModelHistory:
    model_name: str
    tenures: list[Tenure]
    at: datetime | None = None

    def holders(self, target: Target, at: datetime | None = None) -> list[int]:
        return sorted(
            t.version
            for t in self.tenures
            if t.target == target and (t.until is None if at is None else t.held_at(at))
        )

    @property
    def holders_at(self) -> dict[str, list[int]]:
        """Every target and its holders at ``at`` (now when unset)."""
        targets = {t.target for t in self.tenures}
        found = {f"{t.type.value}:{t.name}": self.holders(t, self.at) for t in targets}
        return {k: v for k, v in sorted(found.items()) if v}

    def current(self) -> dict[Target, int]:
        """Each target held now and its holder (the newest version where several hold a
        stage), Archived left out: an archived version holds nothing it could serve."""
        found: dict[Target, int] = {}
        for t in self.tenures:
            if t.until is None and t.target != ARCHIVED:
                found[t.target] = max(found.get(t.target, t.version), t.version)
        return found

    def previous_holder(self, target: Target) -> int | None:
        """The version that held ``target`` before its current holder took it."""
        current = [t for t in self.tenures if t.target == target and t.until is None]
        if not current:
            return None
        took_over = max(t.started_seq for t in current)
        holders = {t.version for t in current}
        earlier = [
            t
            for t in self.tenures
            if t.target == target and t.started_seq < took_over and t.version not in holders
        ]
        return max(earlier, key=lambda t: t.started_seq).version if earlier else None


class HistoryService:
    def __init__(self, gateway: RegistryGateway, db: Database) -> None:
        self.gateway = gateway
        self.db = db

    def history(
        self,
        name: str,
        target: Target | None = None,
        at: datetime | None = None,
        governed: bool = False,
    ) -> ModelHistory:
        """Every tenure of ``name``'s targets; ``governed`` keeps only those that governed
        steps made (promotions, rollbacks, reverts), never what was found in MLflow."""
        check_model_name(name)
        self.gateway.get_registered_model(name)
        with self.db.read() as session:
            rows = _move_rows(session, name, governed)
        tenures = _replay(rows)
        if target is not None:
            tenures = [t for t in tenures if t.target == target]
        if at is not None:
            tenures = [t for t in tenures if t.since <= at]
        tenures.sort(key=lambda t: t.started_seq, reverse=True)
        return ModelHistory(name, tenures, at)


def _replay(rows) -> list[Tenure]:
    done: list[Tenure] = []
    open_: dict[tuple[Target, int], Tenure] = {}

    def start(target: Target, version: int, row, request: int | None) -> None:
        if (target, version) not in open_:
            open_[(target, version)] = Tenure(
                target, version, row.occurred_at, row.actor, row.seq, request
            )

    def end(target: Target, version: int | None, row) -> None:
        tenure = open_.pop((target, version), None)
        if tenure is not None:
            done.append(
                replace(tenure, until=row.occurred_at, ended_by=row.actor, ended_seq=row.seq)
            )

    for row in rows:
        before, after = row.before or {}, row.after or {}
        request = after.get("promotion_request") if isinstance(after, dict) else None
        if row.action == "version.stage_changed":
            old, new = before.get("stage"), after.get("stage")
            if old and old != Stage.NONE.value:
                end(Target(TargetType.STAGE, old), row.model_version, row)
            if new and new != Stage.NONE.value:
                start(Target(TargetType.STAGE, new), row.model_version, row, request)
                for archived in after.get("archived_versions") or []:
                    end(Target(TargetType.STAGE, new), archived, row)
                    start(Target(TargetType.STAGE, Stage.ARCHIVED.value), archived, row, request)
        elif row.action in ("alias.set", "alias.deleted") and "aliases" in (after or before):
            # Recorded from what MLflow held (an intent settled after an unconfirmed
            # call): whole alias maps, before and after.
            old, new = before.get("aliases") or {}, after.get("aliases") or {}
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    alias = Target(TargetType.ALIAS, name)
                    end(alias, old.get(name), row)
                    if new.get(name) is not None:
                        start(alias, new[name], row, request)
        elif row.action == "alias.set":
            alias = Target(TargetType.ALIAS, after["alias"])
            end(alias, before.get("version"), row)
            start(alias, after["version"], row, request)
        elif row.action == "alias.deleted":
            end(Target(TargetType.ALIAS, before["alias"]), before.get("version"), row)
        elif row.action in HOLDER_EVENTS:
            for key, versions in (after.get("holders") or {}).items():
                target = target_of(key)
                for held, version in [k for k in open_ if k[0] == target]:
                    if version not in versions:
                        end(held, version, row)
                for version in versions:
                    start(target, version, row, None)
    return done + list(open_.values())


def target_of(key: str) -> Target:
    """``stage:Production`` or ``alias:champion``, as holder maps name targets."""
    kind, _, name = key.partition(":")
    return Target(TargetType(kind), name)


def holders_now(session: Session, name: str, governed: bool = False) -> dict[str, list[int]] | None:
    """What our own records say holds each stage and alias of ``name`` now (``governed``:
    through governed steps only); None when they have never recorded a move of it."""
    rows = _move_rows(session, name, governed)
    return ModelHistory(name, _replay(rows)).holders_at if rows else None


def _move_rows(session: Session, name: str, governed: bool = False) -> list:
    moves = GOVERNED_MOVES if governed else MOVES
    return session.execute(
        select(
            AuditEventRow.seq,
            AuditEventRow.occurred_at,
            AuditEventRow.actor,
            AuditEventRow.action,
            AuditEventRow.model_version,
            AuditEventRow.before,
            AuditEventRow.after,
        )
        .where(AuditEventRow.model_name == name, AuditEventRow.action.in_(moves))
        .order_by(AuditEventRow.seq)
    ).all()
