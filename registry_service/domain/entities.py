"""Entities the service layer hands out; never ORM rows or MLflow objects."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Stage(enum.StrEnum):
    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"

    @classmethod
    def parse(cls, value: str) -> Stage:
        for stage in cls:
            if stage.value.lower() == value.lower():
                return stage
        raise ValueError(f"unknown stage {value!r}; expected one of {[s.value for s in cls]}")


class Role(enum.StrEnum):
    VIEWER = "viewer"
    REQUESTER = "requester"
    APPROVER = "approver"
    ADMIN = "admin"
    # Service accounts that may predict and nothing else.
    PREDICTOR = "predictor"


class TokenKind(enum.StrEnum):
    """Who holds a token: a person, a CI job, or an AI agent acting through tools."""

    HUMAN = "human"
    CI = "ci"
    AGENT = "agent"


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str | None = None


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    stage: str
    status: str
    source: str
    run_id: str | None
    description: str
    tags: dict[str, str]
    aliases: list[str]
    created_at: datetime | None
    updated_at: datetime | None
    user_id: str | None = None
    model_id: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """The fields an audit event records as before/after."""
        return {
            "version": self.version,
            "stage": self.stage,
            "description": self.description,
            "tags": dict(self.tags),
            "aliases": sorted(self.aliases),
            "run_id": self.run_id,
            "source": self.source,
        }


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_versions: dict[str, int]
    created_at: datetime | None
    updated_at: datetime | None

    def snapshot(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "tags": dict(self.tags),
            "aliases": dict(sorted(self.aliases.items())),
        }


@dataclass(frozen=True)
class Dataset:
    name: str
    digest: str | None
    source_type: str | None
    source: str | None
    context: str | None


@dataclass(frozen=True)
class Run:
    run_id: str
    experiment_id: str
    run_name: str | None
    status: str
    user_id: str | None
    start_time: datetime | None
    end_time: datetime | None
    artifact_uri: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    datasets: list[Dataset] = field(default_factory=list)
    logged_model_ids: list[str] = field(default_factory=list)

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str | None = None
    lifecycle_stage: str = "active"
    tags: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Lineage:
    """Where a version came from, snapshotted when it was registered."""

    run_id: str | None
    experiment_id: str | None
    experiment_name: str | None
    git_commit: str | None
    source_name: str | None
    data_version: str | None
    datasets: list[dict[str, Any]]
    params: dict[str, str]
    metrics: dict[str, float]
    registered_by: str | None = None
    registered_at: datetime | None = None
    recorded: bool = True  # False when rebuilt live for a version registered outside us

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "experiment_name": self.experiment_name,
            "git_commit": self.git_commit,
            "source_name": self.source_name,
            "data_version": self.data_version,
            "datasets": list(self.datasets),
            "params": dict(self.params),
            "metrics": dict(self.metrics),
        }


@dataclass(frozen=True)
class VersionDetail:
    version: ModelVersion
    run: Run | None
    lineage: Lineage | None


@dataclass(frozen=True)
class TransitionResult:
    version: ModelVersion
    archived: list[int]


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    roles: frozenset[str]
    groups: frozenset[str] = frozenset()
    # The kind of the token this request came with: one person may hold a human token
    # and an agent token, and only some kinds count toward a quorum.
    kind: str = "human"

    def has_role(self, role: Role | str) -> bool:
        return Role.ADMIN.value in self.roles or str(role) in self.roles


@dataclass(frozen=True)
class TokenInfo:
    id: int
    principal: str
    roles: list[str]
    prefix: str
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    kind: str = "human"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    model_name: str | None
    model_version: int | None
    request_id: str | None
    before: Any
    after: Any
    prev_hash: str
    hash: str
    subject: str | None = None
