"""The hottest read, one version, straight from MLflow's tables in direct-store mode.

MLflow's SqlAlchemyStore reads a version in several round trips through its ORM: a
pre-pinged connection checkout, the version, its tags, then the model's aliases. A
version read is the service's most frequent call, so direct-store mode reads the same
rows with two plain statements. The tables are the ones the installed mlflow expects:
the gateway refuses a database whose MLflow schema revision differs (checked at start).
"""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from registry_service.domain.entities import ModelVersion, Stage

# MLflow's single-tenant workspace, and the stage it gives versions it deleted.
WORKSPACE = "default"
DELETED = "Deleted_Internal"

_VERSION = text(
    "SELECT name, version, creation_time, last_updated_time, description, user_id, "
    "current_stage, source, run_id, status FROM model_versions "
    "WHERE workspace = :ws AND name = :name AND version = :version "
    "AND current_stage != :deleted"
)
_TAGS_AND_ALIASES = text(
    "SELECT 't', key, value FROM model_version_tags "
    "WHERE workspace = :ws AND name = :name AND version = :version "
    "UNION ALL SELECT 'a', alias, NULL FROM registered_model_aliases "
    "WHERE workspace = :ws AND name = :name AND version = :version"
)


_VERSIONS = text(
    "SELECT name, version, creation_time, last_updated_time, description, user_id, "
    "current_stage, source, run_id, status FROM model_versions "
    "WHERE workspace = :ws AND name = :name AND current_stage != :deleted "
    "ORDER BY version DESC"
)
_ALL_TAGS = text(
    "SELECT version, key, value FROM model_version_tags WHERE workspace = :ws AND name = :name"
)


class DirectReads:
    def __init__(self, db_uri: str, to_datetime) -> None:
        # No pre-ping (a round trip per checkout): a connection found dead is retried
        # once on a fresh one instead.
        self.engine = create_engine(db_uri, pool_pre_ping=False, pool_size=16, max_overflow=8)
        self.to_datetime = to_datetime

    def model_version(self, name: str, version: int) -> ModelVersion | None:
        return self._retried(self._read, name, version)

    def model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, newest first, as MLflow's version search gives
        them: with their tags, without aliases."""
        return self._retried(self._read_all, name)

    @staticmethod
    def _retried(read, *args):
        try:
            return read(*args)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return read(*args)

    def _read_all(self, name: str) -> list[ModelVersion]:
        with self.engine.connect() as conn:
            rows = conn.execute(_VERSIONS, {"ws": WORKSPACE, "name": name, "deleted": DELETED})
            rows = rows.all()
            tags: dict[int, dict[str, str]] = {}
            for version, key, value in conn.execute(_ALL_TAGS, {"ws": WORKSPACE, "name": name}):
                tags.setdefault(int(version), {})[key] = value
        return [self._version(row, tags.get(int(row.version), {}), []) for row in rows]

    def _read(self, name: str, version: int) -> ModelVersion | None:
        args = {"ws": WORKSPACE, "name": name, "version": version}
        with self.engine.connect() as conn:
            row = conn.execute(_VERSION, {**args, "deleted": DELETED}).first()
            if row is None:
                return None
            extras = conn.execute(_TAGS_AND_ALIASES, args).all()
        return self._version(
            row,
            {key: value for kind, key, value in extras if kind == "t"},
            sorted(key for kind, key, _ in extras if kind == "a"),
        )

    def _version(self, row, tags: dict[str, str], aliases: list[str]) -> ModelVersion:
        source = row.source or ""
        return ModelVersion(
            name=row.name,
            version=int(row.version),
            stage=row.current_stage or Stage.NONE.value,
            status=row.status or "READY",
            source=source,
            run_id=row.run_id or None,
            description=row.description or "",
            tags=tags,
            aliases=aliases,
            created_at=self.to_datetime(row.creation_time),
            updated_at=self.to_datetime(row.last_updated_time),
            user_id=row.user_id or None,
            model_id=None,
        )

    def dispose(self) -> None:
        self.engine.dispose()
