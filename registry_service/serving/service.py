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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import (
    AuditEventRow,
    DeploymentRow,
    ModelChangeRow,
    PredictionFeedbackRow,
    PredictionRow,
    ServingFallbackMarkRow,
)
from registry_service.domain.entities import Principal
from registry_service.domain.names import check_model_name
from registry_service.domain.policy import Target, TargetType
from registry_service.domain.promotion import Promotion
from registry_service.errors import (
    NotFound,
    RegistryError,
    ServingUnavailable,
    TargetNotHeld,
    ValidationError,
    VersionNotServable,
)
from registry_service.gateway.base import RegistryGateway
from registry_service.metrics import Metrics
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.history import ARCHIVED, HistoryService
from registry_service.services.traffic import TrafficService, etag
from registry_service.serving import payload
from registry_service.serving.cache import (
    IntegrityFailed,
    LoadedModel,
    ModelCache,
    ModelLoadFailed,
    ModelRefusedInput,
)
from registry_service.serving.predlog import PredictionLogWriter, PredictionRecord
from registry_service.serving.routing import DeploymentSpec, Variant, choose, sticky_subject

log = logging.getLogger(__name__)
# Re-read holders this often even without a change seen by the watcher (a missed poll).
# Holders come from our own records only: a move made in MLflow behind the registry is
# never served (the reconciler raises it and, by default, reverts it).
REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class Route:
    """What one model serves in this process, swapped whole on every change."""

    model_name: str
    spec: DeploymentSpec
    holders: dict[Target, int | None]
    previous: dict[Target, int | None]
    # Every target our records say a governed step gave a holder, and that holder.
    governed: dict[Target, int] = field(default_factory=dict)
    # The model's change counter when the route was read: a newer one means a move.
    generation: int = 0
    built_at: float = field(default_factory=time.monotonic)

    @property
    def servable(self) -> frozenset[int]:
        """Versions that may answer: governed holders and their governed fallbacks."""
        fallbacks = (v for v in self.previous.values() if v is not None)
        return frozenset(self.governed.values()) | frozenset(fallbacks)

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
    return etag(spec.revision)


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
        traffic: TrafficService | None = None,
    ) -> None:
        """``traffic``: where deployment changes go (needed to change deployments)."""
        self.gateway = gateway
        self.traffic = traffic
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
        self._integrity_marks: set[tuple[str, int, datetime]] = set()
        # Called with (session, ctx, model, figures) in the transaction that audits a
        # version failing its integrity check (the container raises the alert there).
        self.on_integrity_failed: list[Callable[[Any, Context, str, dict], object]] = []
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
        self,
        ctx: Context,
        principal: Principal,
        name: str,
        body: dict[str, Any],
        if_match: str | None,
    ) -> DeploymentSpec | Promotion:
        """Set what ``name`` serves. A change of which targets get traffic, or in what
        split, becomes a change request (returned pending; services/traffic.py); one that
        leaves routing alone (preload, fallback) is written at once."""
        check_model_name(name)
        spec = DeploymentSpec.parse(body)
        self.gateway.get_registered_model(name)
        done = self.traffic.change(
            ctx, principal, name, spec.to_json(), if_match, body.get("reason") or _route(spec)
        )
        return done if isinstance(done, Promotion) else _spec(done)

    def delete_deployment(
        self, ctx: Context, principal: Principal, name: str, if_match: str | None
    ) -> DeploymentSpec | Promotion:
        """Back to the default (all traffic to Production): a change request, unless the
        deployment already routes as the default does."""
        check_model_name(name)
        self.gateway.get_registered_model(name)
        done = self.traffic.change(
            ctx, principal, name, None, if_match, f"remove the deployment: {_route(None)}"
        )
        return done if isinstance(done, Promotion) else DeploymentSpec.default()

    def request_split(
        self,
        ctx: Context,
        principal: Principal,
        name: str,
        body: dict[str, Any],
        if_match: str | None,
        reason: str,
        abtest: dict[str, Any],
    ) -> Promotion:
        """Request ``body``'s split for an A/B test, which starts when it executes."""
        spec = DeploymentSpec.parse(body)
        return self.traffic.change(
            ctx, principal, name, spec.to_json(), if_match, reason, abtest=abtest
        )

    def restore_deployment(
        self, ctx: Context, name: str, body: dict[str, Any] | None, if_match: str | None
    ) -> DeploymentSpec:
        """Put back a split approved before (None: the default) at once; audited."""
        spec = DeploymentSpec.parse(body).to_json() if body is not None else None
        stored = self.traffic.restore(ctx, name, spec, if_match)
        return _spec(stored) if stored.spec is not None else DeploymentSpec.default()

    def reload(self, ctx: Context, name: str) -> DeploymentSpec:
        """Make every serving process re-resolve and reload ``name`` now."""
        spec = self.get_deployment(name)
        self.audit.record(ctx, "serving.reload", model_name=name)
        self.cache.forget_failures()
        self._rebuild(name)
        return spec

    # -- resolution

    def holder(self, name: str, target: Target) -> int | None:
        """The version holding ``target`` now through a governed step, read from our own
        records, never from MLflow: a move made behind the registry is not served."""
        if target == ARCHIVED:
            return None
        return self.history.history(name, target, governed=True).current().get(target)

    def _generation(self, name: str) -> int:
        with self.db.read() as session:
            return (
                session.execute(
                    select(ModelChangeRow.generation).where(ModelChangeRow.model_name == name)
                ).scalar()
                or 0
            )

    def _build(self, name: str) -> Route:
        generation = self._generation(name)  # read first: a move after it shows as newer
        spec = self._stored(name) or DeploymentSpec.default()
        history = self.history.history(name, governed=True)
        governed = history.current()
        holders = {t: governed.get(t) for t in spec.targets}
        previous = {t: history.previous_holder(t) for t in spec.targets | set(governed)}
        return Route(name, spec, holders, previous, governed, generation)

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
        """Each variant's governed holder now."""
        governed = self.history.history(name, governed=True).current()
        return {v.name: governed.get(v.target) for v in spec.variants}

    @staticmethod
    def _target_version(target: Target, route: Route) -> int | None:
        if target in route.holders:
            return route.holders[target]
        return route.governed.get(target)

    def servable_route(self, name: str, version: int) -> Route:
        """The route of ``name`` when ``version`` may answer (it holds a target through a
        governed step, or is the governed fallback of one); refused before anything loads
        otherwise. An unknown version is a 404."""
        route = self.route(name)
        if version not in route.servable and self._generation(name) != route.generation:
            route = self._rebuild(name)  # moved since this process built the route
        if version not in route.servable:
            self.gateway.get_model_version(name, version)  # NotFound when there is none
            raise VersionNotServable(
                f"version {version} of {name!r} holds no target through a governed step, "
                "so it may not answer: promote it to Staging or an alias to try it",
                model_version=version,
            )
        return route

    def model_for(self, name: str, version: int | None = None) -> LoadedModel | None:
        """The loaded model that answers for ``name`` (its deployment's main variant), or
        for a pinned servable ``version``; None when nobody holds a served target."""
        if version is not None:
            self.servable_route(name, version)
            return self.cache.get(name, version)
        route = self.route(name)
        primary = route.holders.get(max(route.spec.variants, key=lambda v: v.weight).target)
        held = [v for v in route.holders.values() if v is not None]
        if primary is None and not held:
            return None
        return self.cache.get(name, primary if primary is not None else held[0])

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
            route = self.servable_route(name, pin.version)
            version: int | None = pin.version
            served_from = f"version {pin.version}"
        else:
            if pin and pin.target is not None:
                target = pin.target
                if target == ARCHIVED:
                    raise VersionNotServable(
                        "Archived is not a servable target: archived versions answer nothing"
                    )
            else:
                variant = choose(route.spec, route.key, subject)
                target = variant.target
            version = self._target_version(target, route)
            served_from = _describe(target)
            if version is None and self._generation(name) != route.generation:
                # Nobody held it when the route was built, and it moved since: look again.
                route = self._rebuild(name)
                version = self._target_version(target, route)
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
        if isinstance(error, IntegrityFailed):
            self._note_integrity_failure(ctx, name, version, error)
        previous = route.previous.get(target) if target is not None else None
        if target is not None and target not in route.previous:
            previous = self.history.history(name, governed=True).previous_holder(target)
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
            if isinstance(second, IntegrityFailed):
                self._note_integrity_failure(ctx, name, previous, second)
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

    def _note_integrity_failure(
        self, ctx: Context, name: str, version: int, error: IntegrityFailed
    ) -> None:
        """Audit ``serving.integrity_failed`` (which files differ) and raise the integrity
        alert, at most once per model, version and minute across all processes."""
        minute = utcnow().replace(second=0, microsecond=0)
        mark = (name, version, minute)
        if mark in self._integrity_marks:
            return
        self._integrity_marks = {m for m in self._integrity_marks if m[2] == minute} | {mark}
        figures = {
            "version": version,
            "manifest_digest": error.digest,
            "files": error.files[:50],
            "mismatches": error.mismatches[:50],
        }
        try:
            with self.db.transaction() as session:
                self.audit.lock_chain(session)  # other processes check after this commits
                seen = session.execute(
                    select(AuditEventRow.seq)
                    .where(
                        AuditEventRow.action == "serving.integrity_failed",
                        AuditEventRow.model_name == name,
                        AuditEventRow.model_version == version,
                        AuditEventRow.occurred_at >= minute,
                    )
                    .limit(1)
                ).first()
                if seen is not None:
                    return
                event = self.audit.append(
                    session,
                    ctx,
                    "serving.integrity_failed",
                    model_name=name,
                    model_version=version,
                    after=figures,
                )
                for hook in self.on_integrity_failed:
                    hook(session, ctx, name, {**figures, "audit_seq": event.seq})
        except (SQLAlchemyError, RegistryError):
            log.exception("could not record the integrity failure of %s version %s", name, version)

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
                client_request_id=ctx.client_request_id,
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

    # -- retention

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
                    "integrity": m.integrity,
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


def _route(spec: DeploymentSpec | None) -> str:
    """A split in words, as a change request's default reason."""
    spec = spec or DeploymentSpec.default()
    return "route " + ", ".join(
        f"{v.weight}% to {_describe(v.target)} ({v.name})" for v in spec.variants
    )


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
