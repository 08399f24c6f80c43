"""The hottest calls, straight on MLflow's tables in direct-store mode.

MLflow's SqlAlchemyStore reads a version in several round trips through its ORM: a
pre-pinged connection checkout, the version, its tags, then the model's aliases. A
version read is the service's most frequent call, so direct-store mode reads the same
rows with two plain statements, and every version of a model with one. A stage move,
the write every executed promotion makes, is MLflow's own statements (archive the
stage's versions, move the version, touch the model) without the ORM's reload of the
whole model. The tables are the ones the
installed mlflow expects: the gateway refuses a database whose MLflow schema revision
differs (checked at start), and a test holds each statement to MLflow's own store.
"""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from registry_service.domain.entities import ModelVersion, Stage

# MLflow's single-tenant workspace, and the stage it gives versions it deleted.
WORKSPACE = "default"
DELETED = "Deleted_Internal"
_COLUMNS = (
    "name, version, creation_time, last_updated_time, description, user_id, "
    "current_stage, source, run_id, status"
)

_VERSION = text(
    f"SELECT {_COLUMNS} FROM model_versions "
    "WHERE workspace = :ws AND name = :name AND version = :version "
    "AND current_stage != :deleted"
)
_TAGS_AND_ALIASES = text(
    "SELECT 't', key, value FROM model_version_tags "
    "WHERE workspace = :ws AND name = :name AND version = :version "
    "UNION ALL SELECT 'a', alias, NULL FROM registered_model_aliases "
    "WHERE workspace = :ws AND name = :name AND version = :version"
)


# Every version with its tags, a row per tag (or one without): one round trip.
_VERSIONS = text(
    "SELECT "
    + ", ".join(f"v.{column.strip()}" for column in _COLUMNS.split(","))
    + ", t.key AS tag_key, t.value AS tag_value FROM model_versions v "
    "LEFT JOIN model_version_tags t ON t.workspace = v.workspace AND t.name = v.name "
    "AND t.version = v.version "
    "WHERE v.workspace = :ws AND v.name = :name AND v.current_stage != :deleted "
    "ORDER BY v.version DESC"
)

# SqlAlchemyStore.transition_model_version_stage, statement for statement.
_ARCHIVE = text(
    "UPDATE model_versions SET current_stage = :archived, last_updated_time = :now "
    "WHERE workspace = :ws AND name = :name AND version != :version AND current_stage = :stage "
    "RETURNING version"
)
_MOVE = text(
    "UPDATE model_versions SET current_stage = :stage, last_updated_time = :now "
    "WHERE workspace = :ws AND name = :name AND version = :version "
    f"AND current_stage != :deleted RETURNING {_COLUMNS}"
)
_TOUCH_MODEL = text(
    "UPDATE registered_models SET last_updated_time = :now WHERE workspace = :ws AND name = :name"
)


class DirectSql:
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

    @property
    def moves(self) -> bool:
        """Whether stage moves can go through here: they need UPDATE ... RETURNING."""
        return bool(self.engine.dialect.update_returning)

    def transition_stage(
        self, name: str, version: int, stage: str, archive: bool
    ) -> tuple[ModelVersion, list[int]] | None:
        """Move a version to ``stage`` (archiving the stage's other versions if asked) in
        one transaction; the version as moved and the versions archived, or None when
        there is no such version (and nothing changed)."""
        started: list[bool] = []
        try:
            return self._transition(started, name, version, stage, archive)
        except DBAPIError as exc:
            # Only a connection found dead before anything was sent is safe to retry.
            if started or not exc.connection_invalidated:
                raise
            return self._transition(started, name, version, stage, archive)

    def _transition(self, started, name, version, stage, archive):
        args = {"ws": WORKSPACE, "name": name, "version": version, "stage": stage}
        now = int(time.time() * 1000)
        with self.engine.connect() as conn, conn.begin() as transaction:
            # The model's row first, as MLflow's store writes it: moves on one model
            # queue there instead of deadlocking on each other's versions.
            touched = conn.execute(_TOUCH_MODEL, {"ws": WORKSPACE, "name": name, "now": now})
            started.append(True)
            moved = None
            if touched.rowcount:
                moved = conn.execute(_MOVE, {**args, "now": now, "deleted": DELETED}).first()
            if moved is None:
                transaction.rollback()  # no such version: the model is left untouched
                return None
            archived: list[int] = []
            if archive:
                archived = sorted(
                    int(v)
                    for v in conn.execute(
                        _ARCHIVE, {**args, "now": now, "archived": Stage.ARCHIVED.value}
                    ).scalars()
                )
            extras = conn.execute(
                _TAGS_AND_ALIASES, {k: args[k] for k in ("ws", "name", "version")}
            ).all()
        mv = self._version(
            moved,
            {key: value for kind, key, value in extras if kind == "t"},
            sorted(key for kind, key, _ in extras if kind == "a"),
        )
        return mv, archived

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
            rows = conn.execute(
                _VERSIONS, {"ws": WORKSPACE, "name": name, "deleted": DELETED}
            ).all()
        versions: dict[int, tuple] = {}  # newest first, as the rows come
        for row in rows:
            _, tags = versions.setdefault(int(row.version), (row, {}))
            if row.tag_key is not None:
                tags[row.tag_key] = row.tag_value
        return [self._version(row, tags, []) for row, tags in versions.values()]

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
