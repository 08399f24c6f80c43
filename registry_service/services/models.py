"""Registry rules over the gateway: registration with lineage, audited changes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import VersionLineageRow
from registry_service.domain.comparison import ComparedValue, side_by_side
from registry_service.domain.entities import (
    Lineage,
    ModelVersion,
    Page,
    RegisteredModel,
    Run,
    Stage,
    TransitionResult,
    VersionDetail,
)
from registry_service.domain.names import (
    ARTIFACT_PATH_RE,
    RESERVED_TAG_PREFIXES,
    RUN_ID_RE,
    TAG_KEY_RE,
    TAG_VALUE_MAX,
    TAGS_PER_OBJECT_MAX,
    TAGS_PER_REQUEST_MAX,
    check_alias,
    check_model_name,
)
from registry_service.domain.paging import filtered_page
from registry_service.errors import (
    AlreadyExists,
    AppliedDespiteError,
    ConsistencyError,
    IllegalTransition,
    ModelNotFound,
    NotFound,
    OutcomeUnknown,
    RegistryError,
    RunNotFound,
    ValidationError,
    VersionNotFound,
)
from registry_service.gateway.base import RegistryGateway
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.integrity import IntegrityService, Seal
from registry_service.services.intents import (
    APPLIED,
    FAILED,
    RECONCILED,
    UNDONE,
    IntentLog,
    Subject,
)

log = logging.getLogger(__name__)
# A write still pending after this is no longer in flight: MLflow calls time out well
# before (REGISTRY_MLFLOW_TIMEOUT, 10 s, times its retries).
INTENT_GRACE = timedelta(minutes=2)
# Recorded lineages remembered per process (they never change once written).
LINEAGE_CACHE_SECONDS = 300.0
LINEAGE_CACHE_ENTRIES = 10_000
T = TypeVar("T")

GIT_COMMIT_TAG = "mlflow.source.git.commit"
SOURCE_NAME_TAG = "mlflow.source.name"
DATA_VERSION_TAGS = ("data_version", "data.version", "dataset_version", "dataset.version")
REGISTERED_BY_TAG = "registry.registered_by"
REGISTRABLE_RUN_STATUSES = ("FINISHED", "RUNNING")


@dataclass(frozen=True)
class TagPatch:
    """JSON merge-patch of tags: a value sets the key, ``None`` deletes it."""

    set: dict[str, str]
    delete: list[str]

    @classmethod
    def parse(cls, patch: dict[str, str | None] | None, field: str = "tags") -> TagPatch:
        patch = patch or {}
        if len(patch) > TAGS_PER_REQUEST_MAX:
            raise _too_many(field, TAGS_PER_REQUEST_MAX, "per request")
        check_tags({k: v for k, v in patch.items() if v is not None}, field)
        for key in patch:
            _check_tag_key(key, field)
        return cls(
            {k: v for k, v in patch.items() if v is not None},
            sorted(k for k, v in patch.items() if v is None),
        )

    def __bool__(self) -> bool:
        return bool(self.set or self.delete)

    def expected(self, before: Any, description: str | None) -> dict[str, Any]:
        """The fields of ``before`` (a model or version) once this patch is applied."""
        tags = {k: v for k, v in {**before.tags, **self.set}.items() if k not in self.delete}
        return {
            "description": before.description if description is None else description,
            "tags": tags,
        }

    def check_total(self, before: dict[str, str], field: str = "tags") -> None:
        """Refuse a patch that would leave the object with more tags than we allow."""
        after = (set(before) | set(self.set)) - set(self.delete)
        if len(after) > TAGS_PER_OBJECT_MAX:
            raise _too_many(field, TAGS_PER_OBJECT_MAX, "per model or version")

    def inverse(self, before: dict[str, str]) -> TagPatch:
        """The patch that puts the touched keys back as they were in ``before``."""
        touched = [*self.set, *self.delete]
        return TagPatch(
            {k: before[k] for k in touched if k in before},
            [k for k in self.set if k not in before],
        )


def _check_tag_key(key: str, field: str) -> None:
    if not TAG_KEY_RE.match(key):
        raise ValidationError(
            f"invalid tag key {key!r}",
            errors=[
                {
                    "field": f"{field}.{key}",
                    "location": "json",
                    "message": "1-250 of letters, digits, _ . - / :, not starting with . - / :",
                }
            ],
        )
    if key.startswith(RESERVED_TAG_PREFIXES):
        raise ValidationError(
            f"tag key {key!r} is reserved",
            errors=[
                {
                    "field": f"{field}.{key}",
                    "location": "json",
                    "message": "keys starting with "
                    + " or ".join(RESERVED_TAG_PREFIXES)
                    + " are reserved",
                }
            ],
        )


def _too_many(field: str, limit: int, what: str) -> ValidationError:
    return ValidationError(
        f"too many tags: {what}",
        errors=[{"field": field, "location": "json", "message": f"at most {limit} tags {what}"}],
    )


def check_tags(tags: dict[str, str] | None, field: str = "tags") -> dict[str, str]:
    if len(tags or {}) > TAGS_PER_REQUEST_MAX:
        raise _too_many(field, TAGS_PER_REQUEST_MAX, "per request")
    for key, value in (tags or {}).items():
        _check_tag_key(key, field)
        if len(value) > TAG_VALUE_MAX:
            raise ValidationError(
                f"tag {key!r} is too long",
                errors=[
                    {
                        "field": f"{field}.{key}",
                        "location": "json",
                        "message": f"at most {TAG_VALUE_MAX} characters",
                    }
                ],
            )
    return dict(tags or {})


def _lineage_row_of(name: str, version: int, payload: dict[str, Any]) -> VersionLineageRow:
    """The lineage snapshot of a registration, from what its intent recorded."""
    lineage = payload["lineage"]
    return VersionLineageRow(
        model_name=name,
        version=version,
        run_id=payload["run_id"],
        experiment_id=lineage.get("experiment_id"),
        experiment_name=lineage.get("experiment_name"),
        git_commit=lineage.get("git_commit"),
        source_name=lineage.get("source_name"),
        data_version=lineage.get("data_version"),
        datasets=lineage.get("datasets") or [],
        params=lineage.get("params") or {},
        metrics=lineage.get("metrics") or {},
        registered_by=payload["registered_by"],
    )


@dataclass(frozen=True)
class VersionComparison:
    model_name: str
    versions: list[VersionDetail]
    metrics: list[ComparedValue]
    params: list[ComparedValue]


def _lineage_from_run(run: Run, experiment_name: str | None) -> Lineage:
    data_version = next((run.tags[t] for t in DATA_VERSION_TAGS if run.tags.get(t)), None)
    return Lineage(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        experiment_name=experiment_name,
        git_commit=run.tags.get(GIT_COMMIT_TAG),
        source_name=run.tags.get(SOURCE_NAME_TAG),
        data_version=data_version,
        datasets=[
            {
                "name": d.name,
                "digest": d.digest,
                "source_type": d.source_type,
                "source": d.source,
                "context": d.context,
            }
            for d in run.datasets
        ],
        params=dict(run.params),
        metrics=dict(run.metrics),
        recorded=False,
    )


def _lineage_from_row(row: VersionLineageRow) -> Lineage:
    return Lineage(
        run_id=row.run_id,
        experiment_id=row.experiment_id,
        experiment_name=row.experiment_name,
        git_commit=row.git_commit,
        source_name=row.source_name,
        data_version=row.data_version,
        datasets=list(row.datasets or []),
        params=dict(row.params or {}),
        metrics=dict(row.metrics or {}),
        registered_by=row.registered_by,
        registered_at=row.registered_at,
        recorded=True,
    )


class ModelService:
    def __init__(
        self,
        gateway: RegistryGateway,
        db: Database,
        audit: AuditLog,
        integrity: IntegrityService | None = None,
    ) -> None:
        self.gateway = gateway
        self.db = db
        self.audit = audit
        self.integrity = integrity  # seals each registration: manifest, signature, scan
        self.intents = IntentLog(db)
        self._lineage_cache: dict[tuple[str, int], tuple[float, Lineage]] = {}
        # Called with (ctx, name, version) once a registration is recorded; what they do
        # (e.g. capture a drift reference) never undoes the registration.
        self.on_registered: list[Callable[[Context, str, int], object]] = []

    # -- the one way a change reaches MLflow: intent, call, then recorded (or undone)
    def _recorded(
        self,
        ctx: Context,
        action: str,
        subject: Subject,
        change: Callable[[], T],
        undo: Callable[[T], None],
        record: Callable[[Any, T], None],
    ) -> T:
        intent_id = self.intents.open(ctx, action, subject)
        try:
            result = change()
        except RegistryError as exc:
            self._settle_failed_call(ctx, intent_id, action, subject, exc)
            raise
        try:
            with self.db.transaction() as session:
                if self.intents.claim(session, intent_id):
                    record(session, result)
                    self.intents.settle(session, intent_id, APPLIED)
        except Exception as exc:
            try:
                undo(result)
            except RegistryError:
                log.critical(
                    "%s applied in MLflow but neither recorded nor undone (request %s); "
                    "intent %s stays pending for the sweep",
                    action,
                    ctx.request_id,
                    intent_id,
                    exc_info=True,
                )
                raise ConsistencyError(
                    f"{action} was applied in MLflow but could not be recorded or undone; "
                    f"the sweep records it from intent {intent_id}",
                    reverted=False,
                    intent_id=intent_id,
                ) from exc
            self.intents.settle_now(intent_id, UNDONE, f"not recorded: {exc}")
            raise ConsistencyError(
                f"{action} could not be recorded in the audit log, so it was undone in MLflow; "
                "nothing changed",
                reverted=True,
            ) from exc
        return result

    def _settle_failed_call(
        self, ctx: Context, intent_id: int, action: str, subject: Subject, exc: RegistryError
    ) -> None:
        """MLflow refused, failed or never answered: read what it holds, and say so.

        Returns when nothing changed (the caller re-raises ``exc``); otherwise raises
        what the caller should answer instead.
        """
        try:
            status, event, snapshot = self._settle_from_mlflow(
                ctx, intent_id, action, subject, exc.detail
            )
        except RegistryError:
            raise OutcomeUnknown(
                f"MLflow did not confirm {action} ({exc.detail}), and could not be read "
                f"back; whether it was applied is unknown. Intent {intent_id} records it: "
                "the sweep settles it from what MLflow holds",
                intent_id=intent_id,
            ) from exc
        if status != RECONCILED:
            return
        applied = "full" if subject.fully_applied(snapshot) else "partial"
        raise AppliedDespiteError(
            f"MLflow answered {exc.title.lower()} ({exc.detail}), yet {action} is "
            f"{'applied' if applied == 'full' else 'partly applied'} there; what MLflow "
            f"holds is recorded as audit event {event.seq}",
            applied=applied,
            audit_seq=event.seq,
        ) from exc

    def _settle_from_mlflow(
        self, ctx: Context, intent_id: int, action: str, subject: Subject, detail: str
    ) -> tuple[str, Any, dict[str, Any] | None]:
        """Settle an intent from what MLflow holds: unchanged, it failed; changed, the
        change is recorded. Returns the intent's status (or ``settled`` when its request
        or the sweep got there first), the recorded event, and the observed snapshot;
        raises when MLflow cannot be read."""
        observed = self._observe(subject)
        snapshot = observed.snapshot() if observed is not None else None
        with self.db.transaction() as session:
            if not self.intents.claim(session, intent_id):
                return "settled", None, snapshot
            if snapshot == subject.before:
                self.intents.settle(session, intent_id, FAILED, detail)
                return FAILED, None, snapshot
            event = self._record_observed(session, ctx, intent_id, action, subject, observed)
            self.intents.settle(session, intent_id, RECONCILED, detail)
            return RECONCILED, event, snapshot

    def _observe(self, subject: Subject) -> RegisteredModel | ModelVersion | None:
        """The subject as MLflow holds it now; None when it does not exist."""
        try:
            if subject.kind == "model":
                return self.gateway.get_registered_model(subject.model_name)
            if subject.kind == "version":
                return self.gateway.get_model_version(subject.model_name, subject.version)
        except NotFound:
            return None
        run_id, source = subject.payload["run_id"], subject.payload["source"]
        page, token = None, None
        while page is None or token:
            page = self.gateway.search_model_versions(subject.model_name, 1000, token)
            token = page.next_page_token
            for mv in page.items:
                if (mv.run_id, mv.source) == (run_id, source) and not self._lineage_row(
                    subject.model_name, mv.version
                ):
                    return mv
        return None

    def _record_observed(
        self,
        session,
        ctx: Context,
        intent_id: int,
        action: str,
        subject: Subject,
        observed: RegisteredModel | ModelVersion | None,
    ):
        """The audit event of a change found in MLflow rather than confirmed by it."""
        version = subject.version
        if subject.kind == "registration" and observed is not None:
            version = observed.version
            session.add(_lineage_row_of(subject.model_name, version, subject.payload))
        return self.audit.append(
            session,
            ctx,
            action,
            model_name=subject.model_name,
            model_version=version,
            before=subject.before,
            after={
                **(observed.snapshot() if observed is not None else {"deleted": True}),
                "reconciled_from_intent": intent_id,
            },
        )

    def settle_intents(self, ctx: Context, older_than: timedelta = INTENT_GRACE) -> dict:
        """Settle MLflow writes whose outcome was never learned, from what MLflow holds:
        a change found there is recorded, one not found is marked failed."""
        counts = {"recorded": 0, "failed": 0, "unknown": 0}
        for intent in self.intents.pending(utcnow() - older_than):
            try:
                status, _, _ = self._settle_from_mlflow(
                    Context(intent.actor, intent.request_id),
                    intent.id,
                    intent.action,
                    intent.subject,
                    "settled by the sweep from what MLflow holds",
                )
            except RegistryError:
                counts["unknown"] += 1
                continue
            if status == RECONCILED:
                counts["recorded"] += 1
            elif status == FAILED:
                counts["failed"] += 1
        return counts

    # -- registered models
    def list_models(
        self, prefix: str | None, max_results: int, page_token: str | None
    ) -> Page[RegisteredModel]:
        if prefix:
            check_model_name(prefix, "name_prefix", "query")
        # MLflow's LIKE reads '_' as a wildcard, so re-check the prefix literally.
        predicate = (lambda m: m.name.startswith(prefix)) if prefix and "_" in prefix else None
        return filtered_page(
            lambda token, n: self.gateway.search_registered_models(prefix, n, token),
            predicate,
            max_results,
            page_token,
        )

    def get_model(self, name: str) -> RegisteredModel:
        return self.gateway.get_registered_model(check_model_name(name))

    def create_model(
        self, ctx: Context, name: str, description: str | None, tags: dict[str, str] | None
    ) -> RegisteredModel:
        check_model_name(name, location="json")
        tags = check_tags(tags)
        # Known absent first, so that a model found after a failed call is this one.
        try:
            self.gateway.get_registered_model(name)
        except ModelNotFound:
            pass
        else:
            raise AlreadyExists(f"registered model {name!r} already exists")
        expected: dict[str, Any] = {"tags": tags}
        if description:
            expected["description"] = description
        return self._recorded(
            ctx,
            "model.created",
            Subject("model", name, expected=expected),
            change=lambda: self.gateway.create_registered_model(name, description, tags),
            undo=lambda _: self.gateway.delete_registered_model(name),
            record=lambda s, model: self.audit.append(
                s, ctx, "model.created", model_name=name, after=model.snapshot()
            ),
        )

    def update_model(
        self, ctx: Context, name: str, description: str | None, tags: TagPatch
    ) -> RegisteredModel:
        before = self.get_model(name)
        if description is None and not tags:
            return before
        tags.check_total(before.tags)
        restore = tags.inverse(before.tags)
        return self._recorded(
            ctx,
            "model.updated",
            Subject(
                "model", name, before=before.snapshot(), expected=tags.expected(before, description)
            ),
            change=lambda: self.gateway.update_registered_model(
                name, description, tags.set, tags.delete
            ),
            undo=lambda _: self.gateway.update_registered_model(
                name, before.description, restore.set, restore.delete
            ),
            record=lambda s, model: self.audit.append(
                s,
                ctx,
                "model.updated",
                model_name=name,
                before=before.snapshot(),
                after=model.snapshot(),
            ),
        )

    # -- versions
    def list_versions(
        self, name: str, stage: Stage | None, max_results: int, page_token: str | None
    ) -> Page[ModelVersion]:
        check_model_name(name)
        # An empty page from MLflow cannot tell "no versions" from "no model".
        self.gateway.get_registered_model(name)
        predicate = (lambda v: v.stage == stage.value) if stage else None
        return filtered_page(
            lambda token, n: self.gateway.search_model_versions(name, n, token),
            predicate,
            max_results,
            page_token,
        )

    def _lineage_row(self, name: str, version: int) -> VersionLineageRow | None:
        with self.db.read() as session:
            return session.execute(
                select(VersionLineageRow).where(
                    VersionLineageRow.model_name == name, VersionLineageRow.version == version
                )
            ).scalar_one_or_none()

    def _recorded_lineage(self, name: str, version: int, mv: ModelVersion) -> Lineage | None:
        """The lineage recorded at registration. Never changed once written, so it is
        remembered for a while per process; a hit must still be the same version (the
        same run and registration time), since a model deleted and made again in MLflow
        numbers its versions from 1 again."""
        key = (name, version)
        cached = self._lineage_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < LINEAGE_CACHE_SECONDS:
            lineage = cached[1]
            if lineage.run_id == mv.run_id:
                return lineage
        row = self._lineage_row(name, version)
        if row is None or row.run_id != mv.run_id:
            return None  # not registered through us, or an earlier model of that name
        lineage = _lineage_from_row(row)
        if len(self._lineage_cache) >= LINEAGE_CACHE_ENTRIES:
            self._lineage_cache.clear()
        self._lineage_cache[key] = (time.monotonic(), lineage)
        return lineage

    def _run_or_none(self, run_id: str | None) -> Run | None:
        if not run_id:
            return None
        try:
            return self.gateway.get_run(run_id)
        except RunNotFound:
            return None

    def get_version(self, name: str, version: int, include_run: bool = True) -> VersionDetail:
        """A version with its lineage; with ``include_run``, its run as it is now. The
        lineage recorded at registration already holds the run's params and metrics of
        then, so without it a read is one MLflow call, not two."""
        check_model_name(name)
        # Fetched one after the other on purpose: in parallel they only contend for
        # MLflow's server, and measured slower (bench/version_latency.py).
        mv = self.gateway.get_model_version(name, version)
        lineage = self._recorded_lineage(name, version, mv)
        # Registered outside the service: the lineage is rebuilt from the run.
        run = self._run_or_none(mv.run_id) if include_run or lineage is None else None
        if lineage is None and run is not None:
            lineage = _lineage_from_run(run, None)
        return VersionDetail(mv, run, lineage)

    def lineage_of(self, name: str, version: int) -> Lineage | None:
        """The lineage recorded at registration, else rebuilt from MLflow; None if the
        version is gone."""
        row = self._lineage_row(name, version)
        if row is not None:
            return _lineage_from_row(row)
        try:
            return self.get_version(name, version).lineage
        except VersionNotFound:
            return None

    def _resolve_source(self, run: Run, artifact_path: str) -> tuple[str, str | None]:
        model_id = self.gateway.find_logged_model(run, artifact_path)
        if model_id:
            return f"models:/{model_id}", model_id
        if self.gateway.run_artifact_exists(run, artifact_path):
            return f"{run.artifact_uri.rstrip('/')}/{artifact_path}", None
        raise ValidationError(
            f"run {run.run_id} has no logged model or artifact at {artifact_path!r}",
            errors=[
                {
                    "field": "artifact_path",
                    "location": "json",
                    "message": "nothing was logged at this path by the run",
                }
            ],
        )

    def register_version(
        self,
        ctx: Context,
        name: str,
        run_id: str,
        artifact_path: str,
        description: str | None,
        tags: dict[str, str] | None,
    ) -> VersionDetail:
        check_model_name(name)
        tags = check_tags(tags)
        if not RUN_ID_RE.match(run_id):
            raise ValidationError(
                "invalid run_id",
                errors=[
                    {
                        "field": "run_id",
                        "location": "json",
                        "message": "32 lowercase hex characters",
                    }
                ],
            )
        if not ARTIFACT_PATH_RE.match(artifact_path):
            raise ValidationError(
                "invalid artifact_path",
                errors=[
                    {
                        "field": "artifact_path",
                        "location": "json",
                        "message": "a relative path of letters, digits, '_', '.', '-' and '/'",
                    }
                ],
            )
        self.gateway.get_registered_model(name)
        run = self.gateway.get_run(run_id)
        if run.status not in REGISTRABLE_RUN_STATUSES:
            raise IllegalTransition(
                f"run {run_id} ended {run.status}; only finished or running runs can be registered",
                run_status=run.status,
            )
        source, model_id = self._resolve_source(run, artifact_path)
        experiment = self.gateway.get_experiment(run.experiment_id)
        lineage = _lineage_from_run(run, experiment.name)
        mlflow_tags = {**tags, REGISTERED_BY_TAG: ctx.actor}

        payload = {
            "run_id": run.run_id,
            "source": source,
            "lineage": lineage.as_dict(),
            "registered_by": ctx.actor,
        }

        seals: dict[int, Seal] = {}

        def create() -> ModelVersion:
            mv = self.gateway.create_model_version(
                name, source, run.run_id, description, mlflow_tags, model_id
            )
            if self.integrity is not None:
                try:  # sealed (manifest signed, pickles scanned) or not registered at all
                    seals[mv.version] = self.integrity.seal(name, mv.version)
                except RegistryError:
                    self.gateway.delete_model_version(name, mv.version)
                    raise
            return mv

        def record(session, mv: ModelVersion) -> None:
            row, seal = _lineage_row_of(name, mv.version, payload), seals.get(mv.version)
            if seal is not None:
                IntegrityService.stamp(row, seal)
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:  # a stale row from a deleted, renumbered version
                raise ConsistencyError("lineage already recorded for this version") from exc
            self.audit.append(
                session,
                ctx,
                "version.registered",
                model_name=name,
                model_version=mv.version,
                after={
                    **mv.snapshot(),
                    "lineage": lineage.as_dict(),
                    "integrity": seal.summary() if seal else None,
                },
            )

        mv = self._recorded(
            ctx,
            "version.registered",
            Subject("registration", name, payload=payload),
            change=create,
            undo=lambda mv: self.gateway.delete_model_version(name, mv.version),
            record=record,
        )
        for hook in self.on_registered:
            try:
                hook(ctx, name, mv.version)
            except Exception:  # recorded already; the follow-up retries on first use
                log.exception("after registering %s version %s", name, mv.version)
        row = self._lineage_row(name, mv.version)
        return VersionDetail(mv, run, _lineage_from_row(row) if row else lineage)

    def update_version(
        self, ctx: Context, name: str, version: int, description: str | None, tags: TagPatch
    ) -> ModelVersion:
        check_model_name(name)
        before = self.gateway.get_model_version(name, version)
        if description is None and not tags:
            return before
        tags.check_total(before.tags)
        restore = tags.inverse(before.tags)
        return self._recorded(
            ctx,
            "version.updated",
            Subject(
                "version",
                name,
                version,
                before=before.snapshot(),
                expected=tags.expected(before, description),
            ),
            change=lambda: self.gateway.update_model_version(
                name, version, description, tags.set, tags.delete
            ),
            undo=lambda _: self.gateway.update_model_version(
                name, version, before.description, restore.set, restore.delete
            ),
            record=lambda s, mv: self.audit.append(
                s,
                ctx,
                "version.updated",
                model_name=name,
                model_version=version,
                before=before.snapshot(),
                after=mv.snapshot(),
            ),
        )

    def compare(self, name: str, versions: list[int]) -> VersionComparison:
        check_model_name(name)
        if len(set(versions)) != len(versions) or not 2 <= len(versions) <= 10:
            raise ValidationError(
                "compare takes 2 to 10 distinct versions",
                errors=[
                    {
                        "field": "versions",
                        "location": "query",
                        "message": "2 to 10 distinct version numbers, comma-separated",
                    }
                ],
            )
        details = [self.get_version(name, v) for v in versions]

        def column(detail: VersionDetail, kind: str) -> dict[str, Any]:
            source = detail.run or detail.lineage
            return getattr(source, kind) if source else {}

        def table(kind: str, numeric: bool) -> list[ComparedValue]:
            return side_by_side({str(d.version.version): column(d, kind) for d in details}, numeric)

        return VersionComparison(
            model_name=name,
            versions=details,
            metrics=table("metrics", numeric=True),
            params=table("params", numeric=False),
        )

    # -- stage and alias moves: only reached through governed promotions
    def transition_stage(
        self, ctx: Context, name: str, version: int, stage: Stage, archive_existing: bool = True
    ) -> TransitionResult:
        check_model_name(name)
        before = self.gateway.get_model_version(name, version)
        if before.stage == stage.value:
            raise IllegalTransition(f"version {version} of {name!r} is already in {stage.value}")
        return self._recorded(
            ctx,
            "version.stage_changed",
            Subject(
                "version", name, version, before=before.snapshot(), expected={"stage": stage.value}
            ),
            change=lambda: self.gateway.transition_stage(name, version, stage, archive_existing),
            undo=lambda result: self._undo_transition(name, version, before.stage, result),
            record=lambda s, result: self.audit.append(
                s,
                ctx,
                "version.stage_changed",
                model_name=name,
                model_version=version,
                before={"stage": before.stage},
                after={"stage": result.version.stage, "archived_versions": result.archived},
            ),
        )

    def _undo_transition(
        self, name: str, version: int, previous_stage: str, result: TransitionResult
    ) -> None:
        self.gateway.transition_stage(name, version, Stage.parse(previous_stage), False)
        for archived in result.archived:
            self.gateway.transition_stage(name, archived, Stage.parse(result.version.stage), False)

    def set_alias(self, ctx: Context, name: str, alias: str, version: int) -> int | None:
        check_model_name(name)
        check_alias(alias)
        self.gateway.get_model_version(name, version)
        model = self.gateway.get_registered_model(name)
        return self._recorded(
            ctx,
            "alias.set",
            Subject(
                "model",
                name,
                before=model.snapshot(),
                expected={"aliases": dict(sorted({**model.aliases, alias: version}.items()))},
            ),
            change=lambda: self.gateway.set_alias(name, alias, version),
            undo=lambda previous: self._restore_alias(name, alias, previous),
            record=lambda s, previous: self.audit.append(
                s,
                ctx,
                "alias.set",
                model_name=name,
                model_version=version,
                before={"alias": alias, "version": previous},
                after={"alias": alias, "version": version},
            ),
        )

    def delete_alias(self, ctx: Context, name: str, alias: str) -> int | None:
        check_model_name(name)
        check_alias(alias)
        model = self.gateway.get_registered_model(name)
        aliases = {a: v for a, v in model.aliases.items() if a != alias}
        return self._recorded(
            ctx,
            "alias.deleted",
            Subject("model", name, before=model.snapshot(), expected={"aliases": aliases}),
            change=lambda: self.gateway.delete_alias(name, alias),
            undo=lambda previous: self._restore_alias(name, alias, previous),
            record=lambda s, previous: self.audit.append(
                s,
                ctx,
                "alias.deleted",
                model_name=name,
                model_version=previous,
                before={"alias": alias, "version": previous},
                after=None,
            ),
        )

    def _restore_alias(self, name: str, alias: str, previous: int | None) -> None:
        if previous is None:
            self.gateway.delete_alias(name, alias)
        else:
            self.gateway.set_alias(name, alias, previous)

    # -- retention
    def archive_old(self, ctx: Context, name: str, keep_latest: int) -> RetentionResult:
        """Archive versions beyond the newest ``keep_latest``, sparing every version in
        Staging or Production or holding an alias."""
        check_model_name(name)
        if keep_latest < 1:
            raise ValidationError(
                "keep_latest must be at least 1",
                errors=[{"field": "keep_latest", "location": "json", "message": "at least 1"}],
            )
        # Version searches leave aliases out; the model lists them all.
        aliases: dict[int, list[str]] = {}
        for alias, holder in self.gateway.get_registered_model(name).aliases.items():
            aliases.setdefault(holder, []).append(alias)
        versions, token = [], None
        while True:
            page = self.gateway.search_model_versions(name, 1000, token)
            versions.extend(page.items)
            token = page.next_page_token
            if not token:
                break
        versions.sort(key=lambda v: v.version, reverse=True)
        archived, spared = [], {}
        for mv in versions[keep_latest:]:
            if mv.stage in (Stage.STAGING.value, Stage.PRODUCTION.value):
                spared[mv.version] = f"in {mv.stage}"
            elif mv.version in aliases:
                spared[mv.version] = "holds alias " + ", ".join(sorted(aliases[mv.version]))
            elif mv.stage != Stage.ARCHIVED.value:
                self.transition_stage(ctx, name, mv.version, Stage.ARCHIVED, False)
                archived.append(mv.version)
        return RetentionResult(
            model_name=name,
            kept=[v.version for v in versions[:keep_latest]],
            archived=archived,
            spared=spared,
        )


@dataclass(frozen=True)
class RetentionResult:
    model_name: str
    kept: list[int]
    archived: list[int]
    spared: dict[int, str]
