"""Serving: deployments, target resolution that follows every governed move, predictions
with fallback, and the prediction log.

Each process keeps a routing table (model -> deployment, holder of each target, previous
holder). A watcher thread polls ``model_changes``, which the audit log bumps in the same
transaction as every move; on a change it loads the new holders in the background while
the old ones keep answering, then swaps the model's route in one assignment.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import (
    DeploymentRow,
    ModelChangeRow,
    PredictionFeedbackRow,
    PredictionRow,
    ServingFallbackMarkRow,
)
from registry_service.domain.entities import Stage
from registry_service.domain.names import check_model_name
from registry_service.domain.policy import Target, TargetType
from registry_service.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    ServingUnavailable,
    TargetNotHeld,
    ValidationError,
)
from registry_service.gateway.base import RegistryGateway
from registry_service.metrics import Metrics
from registry_service.monitoring.rollup import feedback_delta
from registry_service.monitoring.store import fold_feedback, rollup_key
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.history import HistoryService
from registry_service.serving import payload
from registry_service.serving.cache import (
    LoadedModel,
    ModelCache,
    ModelLoadFailed,
    ModelRefusedInput,
)
from registry_service.serving.predlog import PredictionLogWriter, PredictionRecord
from registry_service.serving.routing import DeploymentSpec, Variant, choose, sticky_subject

log = logging.getLogger(__name__)
# Re-read holders this often even without a change we recorded: moves made in MLflow
# behind the registry's back are picked up too.
REFRESH_SECONDS = 30.0
MAX_FEEDBACK = 1000


@dataclass(frozen=True)
class Route:
    """What one model serves in this process, swapped whole on every change."""

    model_name: str
    spec: DeploymentSpec
    holders: dict[Target, int | None]
    previous: dict[Target, int | None]
    built_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        return f"{self.model_name}:{self.spec.id or 0}"


@dataclass(frozen=True)
class Pin:
    version: int | None = None
    target: Target | None = None


@dataclass
class Prediction:
    predictions: Any
    raw: Any
    model_version: int
    variant: str | None
    served_from: str
    fallback: bool
    request_id: str


def etag_of(spec: DeploymentSpec) -> str:
    return f'"{spec.revision}"'


def subject_hash(subject: str | None) -> str | None:
    return hashlib.sha256(subject.encode()).hexdigest()[:32] if subject is not None else None


def _describe(target: Target) -> str:
    return target.name if target.type is TargetType.STAGE else f"@{target.name}"


class ServingService:
    def __init__(
        self,
        gateway: RegistryGateway,
        db: Database,
        audit: AuditLog,
        history: HistoryService,
        cache: ModelCache,
        writer: PredictionLogWriter,
        poll_seconds: float = 0.5,
        metrics: Metrics | None = None,
    ) -> None:
        self.gateway = gateway
        self.metrics = metrics or Metrics()
        self.db = db
        self.audit = audit
        self.history = history
        self.cache = cache
        self.writer = writer
        self.poll_seconds = poll_seconds
        self._routes: dict[str, Route] = {}
        self._build_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._seen_generation: int | None = None
        self._fallback_marks: set[tuple[str, int, datetime]] = set()
        self.fallbacks = 0
        self.swaps = 0
        self.preloaded: bool | None = None
        self.polls = 0
        self.watch_error: str | None = None

    # -- deployments

    def _stored(self, name: str) -> DeploymentSpec | None:
        with self.db.read() as session:
            row = session.execute(
                select(DeploymentRow).where(DeploymentRow.model_name == name)
            ).scalar_one_or_none()
            return _spec(row) if row is not None else None

    def get_deployment(self, name: str) -> DeploymentSpec:
        check_model_name(name)
        self.gateway.get_registered_model(name)
        return self._stored(name) or DeploymentSpec.default()

    def put_deployment(
        self, ctx: Context, name: str, body: dict[str, Any], if_match: str | None
    ) -> DeploymentSpec:
        check_model_name(name)
        spec = DeploymentSpec.parse(body)
        self.gateway.get_registered_model(name)
        with self.db.transaction() as session:
            row, current = _locked(session, name, if_match)
            if row is None:
                row = DeploymentRow(
                    model_name=name, spec=spec.to_json(), revision=1, updated_by=ctx.actor
                )
                session.add(row)
            else:
                row.spec, row.revision = spec.to_json(), row.revision + 1
                row.updated_at, row.updated_by = utcnow(), ctx.actor
            session.flush()
            stored = _spec(row)
            self.audit.append(
                session,
                ctx,
                "deployment.updated",
                model_name=name,
                subject=f"deployment:{row.id}",
                before=current.to_json() | {"revision": current.revision},
                after=stored.to_json() | {"revision": stored.revision},
            )
        return stored

    def delete_deployment(self, ctx: Context, name: str, if_match: str | None) -> DeploymentSpec:
        """Back to the default (all traffic to Production); audited."""
        check_model_name(name)
        self.gateway.get_registered_model(name)
        with self.db.transaction() as session:
            row, current = _locked(session, name, if_match)
            if row is None:
                raise NotFound(f"{name!r} has no deployment of its own; it serves the default")
            session.delete(row)
            self.audit.append(
                session,
                ctx,
                "deployment.deleted",
                model_name=name,
                subject=f"deployment:{row.id}",
                before=current.to_json() | {"revision": current.revision},
                after=DeploymentSpec.default().to_json(),
            )
        return DeploymentSpec.default()

    def reload(self, ctx: Context, name: str) -> DeploymentSpec:
        """Make every serving process re-resolve and reload ``name`` now."""
        spec = self.get_deployment(name)
        self.audit.record(ctx, "serving.reload", model_name=name)
        self.cache.forget_failures()
        self._rebuild(name)
        return spec

    # -- resolution

    def holder(self, name: str, target: Target) -> int | None:
        """The version holding ``target`` now, read from MLflow."""
        if target.type is TargetType.STAGE:
            held = self.gateway.versions_in_stage(name, Stage(target.name))
            return max(held) if held else None
        try:
            return self.gateway.get_version_by_alias(name, target.name).version
        except NotFound:
            return None

    def _build(self, name: str) -> Route:
        spec = self._stored(name) or DeploymentSpec.default()
        targets = spec.targets
        holders = {t: self.holder(name, t) for t in targets}
        history = self.history.history(name)
        previous = {t: history.previous_holder(t) for t in targets}
        return Route(name, spec, holders, previous)

    def _rebuild(self, name: str) -> Route:
        """Build ``name``'s route, load its holders, then swap it in."""
        lock = self._build_locks.setdefault(name, threading.Lock())
        with lock:
            route = self._build(name)
            for version in {v for v in route.holders.values() if v is not None}:
                # A holder that fails to load is left to requests, which fall back.
                with contextlib.suppress(ModelLoadFailed):
                    self.cache.get(name, version)
            old = self._routes.get(name)
            self._routes[name] = route
            for target, version in route.holders.items():
                gauge = self.metrics.serving_version.labels(name, _describe(target))
                gauge.set(version if version is not None else 0)
            self.metrics.loaded_models.set(len(self.cache.loaded()))
            if old is not None and old.holders != route.holders:
                self.swaps += 1
            return route

    def refresh(self, name: str) -> Route:
        """Re-resolve and reload ``name`` in this process now, without waiting for the
        watcher."""
        check_model_name(name)
        return self._rebuild(name)

    def route(self, name: str) -> Route:
        self._ensure_watcher()
        route = self._routes.get(name)
        if route is None:
            check_model_name(name)
            route = self._rebuild(name)
        return route

    def describe(self, name: str, spec: DeploymentSpec) -> dict[str, int | None]:
        """Each variant's version now."""
        found: dict[Target, int | None] = {}
        for target in spec.targets:
            found[target] = self.holder(name, target)
        return {v.name: found[v.target] for v in spec.variants}

    def _target_version(self, name: str, target: Target, route: Route) -> int | None:
        if target in route.holders:
            return route.holders[target]
        return self.holder(name, target)

    # -- the watcher

    def _ensure_watcher(self) -> None:
        # After stop() (shutdown) no watcher starts again.
        if self._stop.is_set() or (self._watcher is not None and self._watcher.is_alive()):
            return
        with self._lock:
            if self._watcher is None or not self._watcher.is_alive():
                self._seen_generation = self._current_generation()
                self._watcher = threading.Thread(
                    target=self._watch, name="serving-watcher", daemon=True
                )
                self._watcher.start()

    def _current_generation(self) -> int:
        with self.db.read() as session:
            return session.execute(select(func.max(ModelChangeRow.generation))).scalar() or 0

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception as exc:  # a database blip must not end the watcher; retried
                self.watch_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.exception("serving watcher could not check for changes")

    def poll(self) -> list[str]:
        """Rebuild the routes of models changed since the last poll, or not refreshed for
        a while; returns the names rebuilt."""
        self.polls += 1
        with self.db.read() as session:
            changed = session.execute(
                select(ModelChangeRow.model_name, ModelChangeRow.generation).where(
                    ModelChangeRow.generation > (self._seen_generation or 0)
                )
            ).all()
        if changed:
            self._seen_generation = max(g for _, g in changed)
        now = time.monotonic()
        names = {n for n, _ in changed if n in self._routes}
        names |= {n for n, r in dict(self._routes).items() if now - r.built_at > REFRESH_SECONDS}
        for name in sorted(names):
            try:
                self._rebuild(name)
            except NotFound:
                self._routes.pop(name, None)  # the model was deleted
            except Exception:
                log.exception("could not refresh what %s serves", name)
        return sorted(names)

    def start(self, preload: bool = True) -> None:
        """Load preloaded deployments, then follow changes (called before serving)."""
        threading.Thread(target=_warm_imports, name="serving-warmup", daemon=True).start()
        if preload:
            self.preloaded = False
            with self.db.read() as session:
                rows = session.execute(select(DeploymentRow)).scalars().all()
                names = [r.model_name for r in rows if _spec(r).preload]
            for name in names:
                try:
                    self._rebuild(name)
                except Exception:
                    log.exception("could not preload %s", name)
            self.preloaded = True
        self._ensure_watcher()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self.writer.close()

    # -- predictions

    def predict(
        self,
        ctx: Context,
        name: str,
        body: Any,
        *,
        pin: Pin | None = None,
        headers: Mapping[str, str] | None = None,
        protocol: str = "mlflow",
    ) -> Prediction:
        """``headers`` and ``body`` carry the sticky subject the deployment names."""
        started = time.perf_counter()
        route = self.route(name)
        subject = sticky_subject(route.spec.sticky_by, headers or {}, body)
        variant: Variant | None = None
        target: Target | None = None
        if pin and pin.version is not None:
            version: int | None = pin.version
            if self.cache.peek(name, pin.version) is None:
                # An unknown version is a 404, not a load failure.
                self.gateway.get_model_version(name, pin.version)
            served_from = f"version {pin.version}"
        else:
            if pin and pin.target is not None:
                target = pin.target
            else:
                variant = choose(route.spec, route.key, subject)
                target = variant.target
            version = self._target_version(name, target, route)
            served_from = _describe(target)
            if version is None and time.monotonic() - route.built_at > self.poll_seconds:
                # Nobody held it when the route was built: look again before a 404.
                route = self._rebuild(name)
                version = self._target_version(name, target, route)
            if version is None:
                raise TargetNotHeld(
                    f"no version of {name!r} holds {served_from}", target=served_from
                )
        fallback = False
        try:
            try:
                loaded, result = self._run(name, version, body, protocol)
            except ModelLoadFailed as exc:
                fallback = True
                loaded, result = self._fall_back(
                    ctx, route, name, version, target, body, protocol, exc
                )
        except (ValidationError, ServingUnavailable) as exc:
            # Refused input and failed answers are logged too: they are error rates.
            status = "invalid" if isinstance(exc, ValidationError) else "error"
            self._log(ctx, name, version, variant, subject, status, fallback, started, body, None)
            raise
        request_id = ctx.request_id or ""
        predictions = payload.jsonable(result)
        self._log(
            ctx, name, loaded.version, variant, subject, "ok", fallback, started, body, predictions
        )
        return Prediction(
            predictions=predictions,
            raw=result,
            model_version=loaded.version,
            variant=variant.name if variant else None,
            served_from=served_from,
            fallback=fallback,
            request_id=request_id,
        )

    def _run(self, name: str, version: int, body: Any, protocol: str) -> tuple[LoadedModel, Any]:
        loaded = self.cache.get(name, version)
        schema = loaded.input_schema
        if protocol == "v2":
            data, params = payload.v2_to_input(body, schema)
            field_name = "inputs"
        else:
            data, params, field_name = payload.parse_scoring_body(body, schema)
        try:
            if params:
                return loaded, loaded.model.predict(data, params=params)
            return loaded, loaded.model.predict(data)
        except MlflowException as exc:
            bad_input = payload.input_error(exc, field_name)
            if bad_input is not None:
                raise bad_input from None
            raise ModelLoadFailed(f"predict failed: {str(exc)[:200]}") from exc
        except (ValidationError, MemoryError):
            raise
        except (ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelRefusedInput(first, field_name) from exc
        except Exception as exc:  # the model's own code failed, not the input: fall back
            raise ModelLoadFailed(f"predict raised {type(exc).__name__}") from exc

    def _fall_back(
        self,
        ctx: Context,
        route: Route,
        name: str,
        version: int,
        target: Target | None,
        body: Any,
        protocol: str,
        error: ModelLoadFailed,
    ) -> tuple[LoadedModel, Any]:
        previous = route.previous.get(target) if target is not None else None
        if target is not None and target not in route.previous:
            previous = self.history.history(name).previous_holder(target)
        if previous is None or not route.spec.fallback or previous == version:
            if isinstance(error, ModelRefusedInput):
                raise _refused(error) from None
            raise ServingUnavailable(
                f"version {version} of {name!r} cannot answer ({error}) and there is no "
                "previous holder to fall back to",
                model_version=version,
            )
        try:
            loaded, result = self._run(name, previous, body, protocol)
        except ModelLoadFailed as second:
            if isinstance(error, ModelRefusedInput) and isinstance(second, ModelRefusedInput):
                raise _refused(error) from None  # both versions refuse it: the input's fault
            raise ServingUnavailable(
                f"version {version} of {name!r} cannot answer ({error}), nor can the "
                f"previous holder, version {previous} ({second})",
                model_version=version,
            ) from None
        self.fallbacks += 1
        self.metrics.fallbacks.labels(name, str(version)).inc()
        self._note_fallback(ctx, name, version, previous, target, str(error))
        return loaded, result

    def _note_fallback(
        self, ctx: Context, name: str, failed: int, used: int, target: Target | None, why: str
    ) -> None:
        minute = utcnow().replace(second=0, microsecond=0)
        mark = (name, failed, minute)
        if mark in self._fallback_marks:
            return
        self._fallback_marks = {m for m in self._fallback_marks if m[2] == minute} | {mark}
        try:
            with self.db.transaction() as session:
                session.add(
                    ServingFallbackMarkRow(model_name=name, model_version=failed, minute=minute)
                )
                session.flush()
                self.audit.append(
                    session,
                    ctx,
                    "serving.fallback",
                    model_name=name,
                    model_version=failed,
                    after={
                        "target": _describe(target) if target else None,
                        "served_by_version": used,
                        "reason": why[:300],
                    },
                )
        except IntegrityError:
            pass  # another process recorded this minute's fallback
        except Exception:
            log.exception("could not record a fallback for %s version %s", name, failed)

    def _log(
        self,
        ctx: Context,
        name: str,
        version: int | None,
        variant: Variant | None,
        subject: str | None,
        status: str,
        fallback: bool,
        started: float,
        inputs: Any,
        outputs: Any,
    ) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.predictions.labels(
            name, str(version or ""), variant.name if variant else "", status
        ).observe(elapsed)
        self.writer.submit(
            PredictionRecord(
                request_id=ctx.request_id or "",
                model_name=name,
                model_version=version,
                variant=variant.name if variant else None,
                subject_hash=subject_hash(subject),
                principal=ctx.actor,
                status=status,
                fallback=fallback,
                latency_ms=round(elapsed * 1000, 3),
                inputs=inputs,
                outputs=outputs,
                created_at=utcnow(),
            )
        )

    # -- feedback and retention

    def feedback(self, ctx: Context, name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        check_model_name(name)
        if not 1 <= len(items) <= MAX_FEEDBACK:
            raise ValidationError(
                f"send between 1 and {MAX_FEEDBACK} feedback items",
                errors=[{"field": "items", "location": "json", "message": "1 to 1000 items"}],
            )
        actual = {item["request_id"]: item["actual"] for item in items}
        with self.db.transaction() as session:
            predictions = {
                row.request_id: row
                for row in session.execute(
                    select(
                        PredictionRow.request_id,
                        PredictionRow.model_version,
                        PredictionRow.variant,
                        PredictionRow.created_at,
                        PredictionRow.outputs,
                    ).where(
                        PredictionRow.model_name == name,
                        PredictionRow.request_id.in_(list(actual)),
                    )
                )
            }
            known = set(predictions)
            if known:
                # What is taken out is what is subtracted: one statement, so a concurrent
                # call cannot slip a row in between the read and the delete.
                previous = {
                    rid: actual_
                    for rid, model, actual_ in session.execute(
                        delete(PredictionFeedbackRow)
                        .where(PredictionFeedbackRow.request_id.in_(list(known)))
                        .returning(
                            PredictionFeedbackRow.request_id,
                            PredictionFeedbackRow.model_name,
                            PredictionFeedbackRow.actual,
                        )
                    )
                    if model == name
                }
                now = utcnow()
                session.add_all(
                    PredictionFeedbackRow(
                        request_id=rid,
                        model_name=name,
                        actual=actual[rid],
                        received_at=now,
                        received_by=ctx.actor,
                    )
                    for rid in sorted(known)
                )
                # Re-sent ground truth replaces the old: its share of the rollup goes too.
                deltas: dict[Any, list[dict[str, Any]]] = {}
                for rid in sorted(known):
                    row = predictions[rid]
                    key = rollup_key(name, row.model_version, row.variant, row.created_at)
                    if rid in previous:
                        deltas.setdefault(key, []).append(
                            feedback_delta(row.outputs, previous[rid], sign=-1)
                        )
                    deltas.setdefault(key, []).append(feedback_delta(row.outputs, actual[rid]))
                try:
                    session.flush()
                except IntegrityError:
                    raise Conflict(
                        "another call is recording ground truth for these requests; send again"
                    ) from None
                fold_feedback(session, deltas)
        unknown = sorted(set(actual) - known)
        return {"accepted": len(known), "unknown_request_ids": unknown}

    def purge(self, older_than: timedelta) -> int:
        """Delete predictions, their feedback and fallback marks older than the retention."""
        cutoff = utcnow() - older_than
        with self.db.transaction() as session:
            old_ids = select(PredictionRow.request_id).where(PredictionRow.created_at < cutoff)
            session.execute(
                delete(PredictionFeedbackRow).where(PredictionFeedbackRow.request_id.in_(old_ids))
            )
            removed = session.execute(
                delete(PredictionRow).where(PredictionRow.created_at < cutoff)
            ).rowcount
            session.execute(
                delete(ServingFallbackMarkRow).where(ServingFallbackMarkRow.minute < cutoff)
            )
        return removed or 0

    # -- what this process serves

    def status(self) -> dict[str, Any]:
        routes = []
        for name, route in sorted(dict(self._routes).items()):
            routes.append(
                {
                    "model_name": name,
                    "variants": [
                        {
                            "name": v.name,
                            "target": _describe(v.target),
                            "weight": v.weight,
                            "version": route.holders.get(v.target),
                            "fallback_version": route.previous.get(v.target),
                        }
                        for v in route.spec.variants
                    ],
                }
            )
        return {
            "models": [
                {
                    "model_name": m.name,
                    "version": m.version,
                    "size_bytes": m.size_bytes,
                    "load_ms": round(m.load_seconds * 1000, 1),
                    "loaded_at": m.loaded_at,
                    "hits": m.hits,
                }
                for m in self.cache.loaded()
            ],
            "routes": routes,
            "fallbacks": self.fallbacks,
            "swaps": self.swaps,
            "watcher": {
                "alive": self._watcher is not None and self._watcher.is_alive(),
                "seen_generation": self._seen_generation,
                "polls": self.polls,
                "last_error": self.watch_error,
            },
            "evictions": self.cache.evictions,
            "prediction_log": {
                "written": self.writer.written,
                "dropped": self.writer.dropped,
                "failed": self.writer.failed,
            },
        }


def _locked(
    session, name: str, if_match: str | None
) -> tuple[DeploymentRow | None, DeploymentSpec]:
    """The model's deployment row, locked, after the If-Match check: required once a
    deployment exists (optimistic concurrency between editors)."""
    row = session.execute(
        select(DeploymentRow).where(DeploymentRow.model_name == name).with_for_update()
    ).scalar_one_or_none()
    current = _spec(row) if row is not None else DeploymentSpec.default()
    if row is not None and if_match is None:
        raise PreconditionRequired(
            "this model has a deployment: send If-Match with the ETag from GET",
            etag=etag_of(current),
        )
    if if_match is not None and if_match.strip() not in ("*", etag_of(current)):
        raise PreconditionFailed(
            f"the deployment is at ETag {etag_of(current)}, not {if_match.strip()}: "
            "read it again and retry",
            etag=etag_of(current),
        )
    return row, current


def _refused(error: ModelRefusedInput) -> ValidationError:
    return payload.invalid(error.field, f"the model refused this input: {error}")


def _spec(row: DeploymentRow) -> DeploymentSpec:
    parsed = DeploymentSpec.parse(row.spec)
    return DeploymentSpec(
        parsed.variants,
        sticky_by=parsed.sticky_by,
        fallback=parsed.fallback,
        preload=parsed.preload,
        id=row.id,
        revision=row.revision,
        stored=True,
    )


def _warm_imports() -> None:
    """Import the model-loading modules ahead of the first request: seconds, cold."""
    import importlib

    for module in ("mlflow.pyfunc", "mlflow.sklearn", "sklearn.linear_model", "skops.io"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def work_dir(data_dir: Path) -> Path:
    return data_dir / "serving"
