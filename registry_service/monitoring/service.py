"""Monitoring: live figures from the rollups, drift against a version's reference, A/B
tests on the deployment's split, and alert rules evaluated against both."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.locks import NamedLocks
from registry_service.db.models import (
    AbTestRow,
    AlertRow,
    AuditEventRow,
    DriftReportRow,
    ModelPolicyRow,
    PredictionRollupRow,
    PromotionRequestRow,
    VersionReferenceRow,
)
from registry_service.domain.entities import Principal, Role
from registry_service.domain.monitoring import SYSTEM_RULES, AlertRule, MonitoringPolicy
from registry_service.domain.names import check_model_name
from registry_service.domain.policy import Target, TargetType
from registry_service.domain.profile import (
    ARTIFACT_PATH,
    MAX_FEATURES,
    check_profile,
    profile_of,
)
from registry_service.domain.promotion import Promotion
from registry_service.errors import (
    AlertNotFound,
    Conflict,
    IllegalTransition,
    NotFound,
    RegistryError,
    ValidationError,
)
from registry_service.gateway.base import RegistryGateway
from registry_service.monitoring import drift as drift_math
from registry_service.monitoring import stats
from registry_service.monitoring.entities import AbTest, Alert, Reference
from registry_service.monitoring.rollup import Totals, minute_of
from registry_service.monitoring.store import HOUR
from registry_service.services.audit import AuditLog, Entry, to_json_value
from registry_service.services.context import Context
from registry_service.services.history import holders_now
from registry_service.services.policies import PolicyService
from registry_service.services.promotions import SYSTEM_ACTOR, PromotionService
from registry_service.serving.routing import DeploymentSpec
from registry_service.serving.service import ServingService, etag_of

log = logging.getLogger(__name__)

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
VALUE_QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
MAX_POINTS = 2000
MAX_REFERENCE_ROWS = 100_000
MAX_DRIFT_ROWS = 20_000  # sampled input rows read for one drift report
MIN_DRIFT_ROWS = 30  # fewer, and one odd request decides the verdict
PROFILE_MAX_BYTES = 4 * 1024 * 1024
SYSTEM = Principal(0, SYSTEM_ACTOR, frozenset({Role.ADMIN.value}))

# A/B metrics: (kind, better) where kind is proportion or mean.
AB_METRICS = {
    "accuracy": ("proportion", "higher"),
    "error_rate": ("proportion", "lower"),
    "mae": ("mean", "lower"),
    "latency_ms": ("mean", "lower"),
}
CHAMPION, CHALLENGER = "champion", "challenger"


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def figures(t: Totals, minutes: float, detail: bool = True) -> dict[str, Any]:
    """What one group of rollups says: traffic, latency, predictions, and correctness."""
    c = t.counts
    latency = dict(zip(QUANTILES, t.latency.quantiles(QUANTILES.values()), strict=True))
    out: dict[str, Any] = {
        "requests": c["requests"],
        "ok": c["ok"],
        "invalid": c["invalid"],
        "errors": c["errors"],
        "fallbacks": c["fallbacks"],
        "throughput_per_minute": _round(c["requests"] / minutes if minutes else None, 3),
        "error_rate": _round(_ratio(c["errors"], c["requests"])),
        "invalid_rate": _round(_ratio(c["invalid"], c["requests"])),
        "fallback_rate": _round(_ratio(c["fallbacks"], c["requests"])),
        "latency_ms": {
            **{k: _round(v, 3) for k, v in latency.items()},
            "mean": _round(t.latency.mean, 3),
            "max": _round(t.latency.max if t.latency.count else None, 3),
        },
    }
    values = t.values
    predictions: dict[str, Any] = {
        "rows": c["rows"],
        "mean": _round(values.mean),
        "std": _round(values.std),
        "min": _round(values.min if values.count else None),
        "max": _round(values.max if values.count else None),
        "quantiles": {
            k: _round(v)
            for k, v in zip(
                VALUE_QUANTILES, values.quantiles(VALUE_QUANTILES.values()), strict=True
            )
        },
    }
    total_classes = sum(t.classes.values())
    # Class shares only when the answers read as labels (not a regressor's numbers).
    predictions["classes"] = (
        {k: _round(n / total_classes) for k, n in sorted(t.classes.items())}
        if total_classes and total_classes >= values.count and len(t.classes) <= 100
        else None
    )
    if detail:
        predictions["histogram"] = values.histogram()
    out["predictions"] = predictions
    fb = t.feedback
    labelled = sum(n for row in fb["confusion"].values() for n in row.values())
    out["feedback"] = {
        "requests": fb["requests"],
        "labelled_rows": labelled,
        "regression_rows": fb["reg_n"],
        **{k: _round(v) for k, v in stats.classification(fb["confusion"]).items()},
        **{k: _round(v) for k, v in stats.regression(fb["reg_n"], fb["abs"], fb["sq"]).items()},
    }
    return out


class MonitoringService:
    def __init__(
        self,
        gateway: RegistryGateway,
        db: Database,
        audit: AuditLog,
        policies: PolicyService,
        promotions: PromotionService,
        serving: ServingService,
        clock: Callable[[], datetime] = utcnow,
        sample_rows: int = 50,
    ) -> None:
        """``sample_rows``: input rows each minute row keeps (the log writer's setting)."""
        self.gateway = gateway
        self.db = db
        self.audit = audit
        self.policies = policies
        self.promotions = promotions
        self.serving = serving
        self.locks = NamedLocks(db)
        self.clock = clock
        self.sample_rows = max(1, sample_rows)

    # -- live figures

    def _rollups(
        self,
        session: Session,
        name: str,
        since: datetime,
        until: datetime,
        version: int | None = None,
        variant: str | None = None,
        columns: tuple = (),
        hourly: bool = True,
    ):
        """The rows covering [since, until]: whole hours from hour rows (when ``hourly``),
        the minutes at either end from minute rows."""
        r = PredictionRollupRow
        first = minute_of(since)
        start_hour = first.replace(minute=0) + (timedelta(hours=1) if first.minute else timedelta())
        end_hour = until.replace(minute=0, second=0, microsecond=0)
        if hourly and end_hour > start_hour:
            covered = or_(
                and_(r.span == 1, r.minute >= first, r.minute < start_hour),
                and_(r.span == HOUR, r.minute >= start_hour, r.minute < end_hour),
                and_(r.span == 1, r.minute >= end_hour, r.minute <= until),
            )
        else:
            covered = and_(r.span == 1, r.minute >= first, r.minute <= until)
        query = select(r.model_version, r.variant, r.minute, *columns).where(
            r.model_name == name, covered
        )
        if version is not None:
            query = query.where(r.model_version == version)
        if variant is not None:
            query = query.where(r.variant == variant)
        return session.execute(query)

    def report(
        self,
        name: str,
        since: datetime,
        until: datetime,
        version: int | None = None,
        variant: str | None = None,
        interval: timedelta | None = None,
    ) -> dict[str, Any]:
        check_model_name(name)
        self.gateway.get_registered_model(name)
        if until <= since:
            raise ValidationError(
                "until must be after since",
                errors=[{"field": "until", "location": "query", "message": "after since"}],
            )
        points = None
        if interval is not None:
            points = math.ceil((until - since) / interval)
            if points > MAX_POINTS:
                raise ValidationError(
                    f"{points} points: widen the interval or narrow the window",
                    errors=[
                        {
                            "field": "interval",
                            "location": "query",
                            "message": f"at most {MAX_POINTS} points per series",
                        }
                    ],
                )
        start = minute_of(since)
        # Hour rows fit a series only when its points are whole hours, from an hour.
        hourly = interval is None or interval % timedelta(hours=1) == timedelta(0)
        if interval is not None and hourly:
            start = start.replace(minute=0)

        def keys(v: int, var: str, minute: datetime) -> list[tuple]:
            if interval is None:
                return [(v, var)]
            return [(v, var), (v, var, int((minute - start) / interval))]

        folded = self._fold(name, since, until, version, variant, keys, hourly)
        groups = {k: t for k, t in folded.items() if len(k) == 2}
        series: dict[tuple[int, str], dict[int, Totals]] = {}
        for key, totals in folded.items():
            if len(key) == 3:
                series.setdefault(key[:2], {})[key[2]] = totals
        minutes = (until - since).total_seconds() / 60
        out = []
        for (v, var), totals in sorted(groups.items()):
            entry = {"version": v or None, "variant": var or None, **figures(totals, minutes)}
            if interval is not None:
                step = interval.total_seconds() / 60
                entry["series"] = [
                    {
                        "start": start + i * interval,
                        **figures(series[(v, var)][i], step, detail=False),
                    }
                    for i in sorted(series.get((v, var), {}))
                ]
            out.append(entry)
        return {
            "model_name": name,
            "since": since,
            "until": until,
            "interval_seconds": int(interval.total_seconds()) if interval else None,
            "groups": out,
        }

    def _fold(
        self,
        name: str,
        since: datetime,
        until: datetime,
        version: int | None,
        variant: str | None,
        keys: Callable[[int, str, datetime], list[Hashable]],
        hourly: bool = True,
    ) -> dict[Hashable, Totals]:
        """Rollups in the window added up under each key ``keys`` gives a row."""
        out: dict[Hashable, Totals] = {}
        with self.db.read() as session:
            for v, var, minute, served, feedback in self._rollups(
                session,
                name,
                since,
                until,
                version,
                variant,
                (PredictionRollupRow.served, PredictionRollupRow.feedback),
                hourly,
            ):
                for key in keys(v, var, minute):
                    totals = out.get(key)
                    if totals is None:
                        totals = out[key] = Totals()
                    totals.add(served, feedback)
        return out

    def totals(
        self,
        name: str,
        since: datetime,
        until: datetime,
        version: int | None = None,
        variant: str | None = None,
    ) -> Totals:
        folded = self._fold(name, since, until, version, variant, lambda *_: [None])
        return folded.get(None) or Totals()

    # -- references and drift

    def put_reference(
        self,
        ctx: Context,
        name: str,
        version: int,
        columns: dict[str, list[Any]],
        predictions: list[Any] | None,
    ) -> Reference:
        check_model_name(name)
        self.gateway.get_model_version(name, version)
        rows = max((len(v) for v in columns.values()), default=0)
        if len(columns) > MAX_FEATURES:
            raise ValidationError(
                f"{len(columns)} columns: a reference profiles at most {MAX_FEATURES} features",
                errors=[
                    {
                        "field": "records",
                        "location": "json",
                        "message": f"at most {MAX_FEATURES} features",
                    }
                ],
            )
        if not columns or rows == 0:
            raise ValidationError(
                "the reference holds no rows",
                errors=[{"field": "records", "location": "json", "message": "at least one row"}],
            )
        if rows > MAX_REFERENCE_ROWS:
            raise ValidationError(
                f"{rows} rows: send a sample of at most {MAX_REFERENCE_ROWS}",
                errors=[
                    {
                        "field": "records",
                        "location": "json",
                        "message": f"at most {MAX_REFERENCE_ROWS} rows",
                    }
                ],
            )
        profile = profile_of(columns, predictions)
        if not profile["features"]:
            raise ValidationError(
                "no feature has a value to profile",
                errors=[{"field": "records", "location": "json", "message": "all values null"}],
            )
        return self._store_reference(ctx, name, version, profile, "upload")

    def _store_reference(
        self, ctx: Context, name: str, version: int, profile: dict[str, Any], source: str
    ) -> Reference:
        try:
            return self._store_reference_once(ctx, name, version, profile, source)
        except IntegrityError:  # another call stored the first one meanwhile: replace it
            return self._store_reference_once(ctx, name, version, profile, source)

    def _store_reference_once(
        self, ctx: Context, name: str, version: int, profile: dict[str, Any], source: str
    ) -> Reference:
        with self.db.transaction() as session:
            row = session.get(VersionReferenceRow, (name, version), with_for_update=True)
            before = None
            if row is None:
                row = VersionReferenceRow(model_name=name, version=version)
                session.add(row)
            else:
                before = {"source": row.source, "rows": row.profile.get("rows")}
            row.profile, row.source = profile, source
            row.created_at, row.created_by = utcnow(), ctx.actor
            session.flush()
            self.audit.append(
                session,
                ctx,
                "reference.updated",
                model_name=name,
                model_version=version,
                before=before,
                after={
                    "source": source,
                    "rows": profile.get("rows"),
                    "features": sorted(profile["features"]),
                    "prediction": profile.get("prediction") is not None,
                },
            )
            return _reference(row)

    def reference(self, name: str, version: int, ctx: Context | None = None) -> Reference | None:
        """The version's reference; captured from its run's logged profile on first use."""
        with self.db.read() as session:
            row = session.get(VersionReferenceRow, (name, version))
            if row is not None:
                return _reference(row)
        return self.capture_reference(ctx or Context(SYSTEM_ACTOR, None), name, version)

    def capture_reference(self, ctx: Context, name: str, version: int) -> Reference | None:
        """Store the dataset profile the version's run logged, if it logged one."""
        mv = self.gateway.get_model_version(name, version)
        if not mv.run_id:
            return None
        try:
            raw = self.gateway.read_run_artifact(mv.run_id, ARTIFACT_PATH, PROFILE_MAX_BYTES)
        except NotFound:
            return None
        if raw is None:
            return None
        try:
            profile = check_profile(json.loads(raw))
        except ValueError as exc:
            log.warning("run %s: unusable %s: %s", mv.run_id, ARTIFACT_PATH, exc)
            return None
        return self._store_reference(ctx, name, version, profile, "run-profile")

    def get_reference(self, name: str, version: int) -> Reference:
        check_model_name(name)
        self.gateway.get_model_version(name, version)
        found = self.reference(name, version)
        if found is None:
            raise NotFound(
                f"version {version} of {name!r} has no reference: log a dataset profile with "
                f"its run or PUT one to /models/{name}/versions/{version}/reference"
            )
        return found

    def drift(
        self,
        name: str,
        since: datetime,
        until: datetime,
        version: int | None = None,
        store: bool = False,
    ) -> dict[str, Any]:
        check_model_name(name)
        self.gateway.get_registered_model(name)
        policy = self.policies.stored(name).monitoring or MonitoringPolicy()
        thresholds = drift_math.Thresholds(policy.drift_psi, policy.drift_p_value)
        samples: dict[int, list[Any]] = {}
        with self.db.read() as session:
            r = PredictionRollupRow
            window = [r.model_name == name, r.span == 1, r.minute >= minute_of(since)]
            window += [r.minute <= until] + ([r.model_version == version] if version else [])
            minutes = sorted(set(session.execute(select(r.minute).where(*window)).scalars()))
            # A day holds ~72,000 sampled rows per version; every k-th minute is as good
            # a sample for PSI and KS, and reads in a fraction.
            every = max(1, math.ceil(len(minutes) * self.sample_rows / MAX_DRIFT_ROWS))
            query = select(r.model_version, r.sample).where(*window)
            if every > 1:
                query = query.where(r.minute.in_(minutes[::every]))
            for v, sample in session.execute(query):
                if v:
                    samples.setdefault(v, []).extend(sample or [])
        versions = [version] if version is not None else sorted(samples)
        out = []
        for v in versions:
            entry = self._drift_of(name, v, samples.get(v, []), thresholds)
            out.append(entry)
            if store and entry["verdict"] is not None:
                self._store_drift(name, v, since, until, entry)
        return {
            "model_name": name,
            "since": since,
            "until": until,
            "thresholds": {"psi": thresholds.psi, "p_value": thresholds.p_value},
            "versions": out,
        }

    def _drift_of(
        self, name: str, version: int, sample: list[Any], thresholds: drift_math.Thresholds
    ) -> dict[str, Any]:
        reference = self.reference(name, version)
        entry: dict[str, Any] = {
            "version": version,
            "sampled_rows": len(sample),
            "reference": None,
            "features": {},
            "prediction": None,
            "verdict": None,
        }
        if reference is None:
            entry["detail"] = "no reference for this version"
            return entry
        profile = reference.profile
        entry["reference"] = {
            "source": reference.source,
            "rows": profile.get("rows"),
            "created_at": reference.created_at.isoformat(),
        }
        if len(sample) < MIN_DRIFT_ROWS:
            entry["detail"] = (
                f"{len(sample)} sampled rows in the window; a verdict needs {MIN_DRIFT_ROWS}"
            )
            return entry
        columns: dict[str, list[Any]] = {}
        for item in sample:
            for key, value in (item.get("x") or {}).items():
                columns.setdefault(key, []).append(value)
        results = {
            feature: drift_math.compare(ref, columns.get(feature, []), thresholds)
            for feature, ref in profile["features"].items()
        }
        entry["features"] = {k: v for k, v in results.items() if v is not None}
        entry["missing_features"] = sorted(k for k, v in results.items() if v is None)
        entry["unexpected_features"] = sorted(set(columns) - set(profile["features"]))
        if profile.get("prediction"):
            ys = [item.get("y") for item in sample if item.get("y") is not None]
            entry["prediction"] = drift_math.compare(profile["prediction"], ys, thresholds)
            results[drift_math.PREDICTION] = entry["prediction"]
        entry["verdict"] = drift_math.verdict(results)
        return entry

    def _store_drift(
        self, name: str, version: int, since: datetime, until: datetime, entry: dict[str, Any]
    ) -> None:
        report = to_json_value(
            {
                "since": since,
                "until": until,
                "drift": entry["verdict"]["drift"],
                "psi": {k: v["psi"] for k, v in entry["features"].items()}
                | (
                    {drift_math.PREDICTION: entry["prediction"]["psi"]}
                    if entry["prediction"]
                    else {}
                ),
            }
        )
        try:
            with self.db.transaction() as session:
                row = session.get(DriftReportRow, (name, version), with_for_update=True)
                if row is None:
                    session.add(DriftReportRow(model_name=name, version=version, report=report))
                else:
                    row.report, row.computed_at = report, utcnow()
        except IntegrityError:
            pass  # another process stored this version's report at the same moment

    def purge(self, older_than: timedelta) -> int:
        """Delete rollups older than the retention; the rows removed."""
        cutoff = self.clock() - older_than
        with self.db.transaction() as session:
            removed = session.execute(
                delete(PredictionRollupRow).where(PredictionRollupRow.minute < cutoff)
            ).rowcount
        return removed or 0

    def refresh_drift(self, window: timedelta = timedelta(hours=1)) -> int:
        """Store a drift report for every version served in the last ``window`` that has
        a reference (what /metrics and the dashboard show); the count stored."""
        until = self.clock()
        since = until - window
        with self.db.read() as session:
            # Only versions with a reference: the rest have nothing to compare with.
            served = session.execute(
                select(PredictionRollupRow.model_name, PredictionRollupRow.model_version)
                .join(
                    VersionReferenceRow,
                    (VersionReferenceRow.model_name == PredictionRollupRow.model_name)
                    & (VersionReferenceRow.version == PredictionRollupRow.model_version),
                )
                .where(
                    PredictionRollupRow.span == 1,
                    PredictionRollupRow.minute >= minute_of(since),
                )
                .distinct()
            ).all()
        stored = 0
        for name, version in served:
            try:
                report = self.drift(name, since, until, version=version, store=True)
            except Exception:  # one version's failure must not stop the others' reports
                log.exception("drift of %s version %s not refreshed", name, version)
                continue
            stored += report["versions"][0]["verdict"] is not None
        return stored

    # -- A/B tests

    def start_ab_test(
        self,
        ctx: Context,
        principal: Principal,
        name: str,
        champion: Target,
        challenger: Target,
        share: int,
        metric: str,
        min_samples: int,
        alpha: float,
        max_hours: float | None,
        sticky_by: str | None,
    ) -> Promotion:
        """Request the test's split as a traffic change (returned pending); the test
        starts, running, when the request executes (``start_approved_test``), and its id
        is in the request's outcome."""
        check_model_name(name)
        if champion == challenger:
            raise ValidationError(
                "champion and challenger name the same target",
                errors=[{"field": "challenger", "location": "json", "message": "another target"}],
            )
        self.gateway.get_registered_model(name)
        versions = {}
        for role, target in ((CHAMPION, champion), (CHALLENGER, challenger)):
            versions[role] = self.serving.holder(name, target)
            if versions[role] is None:
                raise Conflict(f"no version of {name!r} holds {target} (the {role})")
        if versions[CHAMPION] == versions[CHALLENGER]:
            raise Conflict(
                f"version {versions[CHAMPION]} holds both {champion} and {challenger}: "
                "there is nothing to compare"
            )
        with self.db.read() as session:
            running = session.execute(
                select(AbTestRow.id).where(
                    AbTestRow.model_name == name, AbTestRow.status == "running"
                )
            ).scalar_one_or_none()
        if running is not None:
            raise Conflict(f"A/B test {running} is still running on {name!r}: conclude it first")
        previous_row = self.serving._stored(name)
        base = previous_row or DeploymentSpec.default()
        split = {
            "variants": [
                {"name": CHAMPION, **_target_json(champion), "weight": 100 - share},
                {"name": CHALLENGER, **_target_json(challenger), "weight": share},
            ],
            "sticky_by": sticky_by if sticky_by is not None else base.sticky_by,
            "fallback": base.fallback,
            "preload": base.preload,
        }
        sides = {
            role: {"target": str(target), **_target_json(target), "version": versions[role]}
            for role, target in ((CHAMPION, champion), (CHALLENGER, challenger))
        }
        test = sides | {
            "challenger_share": share,
            "metric": metric,
            "min_samples": min_samples,
            "alpha": alpha,
            "max_hours": max_hours,
            # Restored when the test ends (None: there was no deployment).
            "previous_spec": previous_row.to_json() if previous_row else None,
        }
        reason = (
            f"A/B test on {metric}: {share}% of traffic to {challenger} (version "
            f"{versions[CHALLENGER]}) against {champion} (version {versions[CHAMPION]})"
        )
        if_match = etag_of(previous_row) if previous_row else None
        return self.serving.request_split(ctx, principal, name, split, if_match, reason, test)

    def start_approved_test(
        self, session: Session, ctx: Context, p: Promotion, revision: int
    ) -> tuple[dict[str, Any], list[Entry]]:
        """Start the A/B test a traffic change carries, in the transaction of the approval
        that executes it (``revision``: the deployment it writes). Refused, and the
        request fails, when a test started meanwhile or a side's holder moved since."""
        test = p.evidence.get("abtest")
        if test is None:
            return {}, []
        name = p.model_name
        running = session.execute(
            select(AbTestRow.id)
            .where(AbTestRow.model_name == name, AbTestRow.status == "running")
            .with_for_update()
        ).scalar_one_or_none()
        if running is not None:
            raise Conflict(f"A/B test {running} started on {name!r} meanwhile: conclude it first")
        held = holders_now(session, name, governed=True)  # what serving answers from
        for role in (CHAMPION, CHALLENGER):
            side = test[role]
            key = side["target"].replace(" ", ":", 1)  # "stage Production": stage:Production
            now = max(held.get(key, []), default=None) if held is not None else side["version"]
            if now != side["version"]:
                raise Conflict(
                    f"{side['target']} is held by version {now} now, not by version "
                    f"{side['version']} as when the test was requested: request it again"
                )
        row = AbTestRow(
            model_name=name,
            status="running",
            champion=test[CHAMPION],
            challenger=test[CHALLENGER],
            challenger_share=test["challenger_share"],
            metric=test["metric"],
            min_samples=test["min_samples"],
            alpha=test["alpha"],
            max_hours=test["max_hours"],
            previous_spec=test["previous_spec"],
            started_at=self.clock(),
            started_by=p.requester,
            result={"deployment_revision": revision},
        )
        session.add(row)
        session.flush()
        started = Entry(
            "abtest.started",
            model_name=name,
            subject=f"abtest:{row.id}",
            after={
                "id": row.id,
                **{k: v for k, v in test.items() if k != "previous_spec"},
                "promotion_request": p.id,
            },
        )
        return {"ab_test_id": row.id}, [started]

    def _ab_row(self, session: Session, name: str, test_id: int, lock: bool = False) -> AbTestRow:
        query = select(AbTestRow).where(AbTestRow.id == test_id, AbTestRow.model_name == name)
        row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no A/B test {test_id} on {name!r}")
        return row

    def _ab_entity(self, row: AbTestRow, analysis: dict[str, Any] | None = None) -> AbTest:
        return AbTest(
            id=row.id,
            model_name=row.model_name,
            status=row.status,
            champion=row.champion,
            challenger=row.challenger,
            challenger_share=row.challenger_share,
            metric=row.metric,
            min_samples=row.min_samples,
            alpha=row.alpha,
            max_hours=row.max_hours,
            started_at=row.started_at,
            started_by=row.started_by,
            ended_at=row.ended_at,
            ended_by=row.ended_by,
            result=analysis if analysis is not None else row.result,
            promotion_request_id=row.promotion_request_id,
        )

    def get_ab_test(self, name: str, test_id: int) -> AbTest:
        check_model_name(name)
        with self.db.read() as session:
            row = self._ab_row(session, name, test_id)
            session.expunge(row)
        if row.status == "running":
            return self._ab_entity(row, self._analyse(row, self.clock()))
        return self._ab_entity(row)

    def list_ab_tests(self, name: str) -> list[AbTest]:
        check_model_name(name)
        self.gateway.get_registered_model(name)
        with self.db.read() as session:
            rows = (
                session.execute(
                    select(AbTestRow)
                    .where(AbTestRow.model_name == name)
                    .order_by(AbTestRow.id.desc())
                )
                .scalars()
                .all()
            )
            return [self._ab_entity(r) for r in rows]

    def _analyse(self, row: AbTestRow, until: datetime) -> dict[str, Any]:
        kind, better = AB_METRICS[row.metric]
        sides = {}
        figures_by_side = {}
        for role in (CHAMPION, CHALLENGER):
            side_of = row.champion if role == CHAMPION else row.challenger
            totals = self.totals(
                row.model_name, row.started_at, until, version=side_of["version"], variant=role
            )
            side = _side(row.metric, totals)
            sides[role] = side
            c = totals.counts
            interval = (
                stats.proportion_interval(side.successes or 0, side.n)
                if kind == "proportion"
                else stats.mean_interval(side.mean, side.std, side.n)
                if side.mean is not None
                else None
            )
            figures_by_side[role] = {
                **(row.champion if role == CHAMPION else row.challenger),
                "samples": side.n,
                "requests": c["requests"],
                "metric": {"value": _round(side.mean), "ci95": interval},
                "latency_ms": {
                    k: _round(v, 3)
                    for k, v in zip(
                        ("p50", "p95"), totals.latency.quantiles((0.5, 0.95)), strict=True
                    )
                },
                "error_rate": _round(_ratio(c["errors"], c["requests"])),
            }
        a, b = sides[CHAMPION], sides[CHALLENGER]
        test = stats.two_proportion_z(a, b) if kind == "proportion" else stats.welch_t(a, b)
        test_name = "two-proportion z-test" if kind == "proportion" else "Welch's t-test"
        enough = a.n >= row.min_samples and b.n >= row.min_samples
        if not enough or test is None:
            decision = "need-more-samples"
        elif test[1] < row.alpha:
            challenger_higher = (b.mean or 0) > (a.mean or 0)
            wins = challenger_higher if better == "higher" else not challenger_higher
            decision = "challenger-better" if wins else "champion-better"
        else:
            decision = "no-difference"
        return to_json_value(
            {
                "metric": row.metric,
                "better": better,
                "champion": figures_by_side[CHAMPION],
                "challenger": figures_by_side[CHALLENGER],
                "test": test_name,
                "statistic": _round(test[0]) if test else None,
                "p_value": _round(test[1], 12) if test else None,
                "alpha": row.alpha,
                "min_samples": row.min_samples,
                "decision": decision,
                "analysed_at": until,
            }
        )

    def conclude_ab_test(
        self, ctx: Context, principal: Principal, name: str, test_id: int, reason: str | None
    ) -> AbTest:
        check_model_name(name)
        now = self.clock()
        with self.db.read() as session:
            row = self._ab_row(session, name, test_id)
            session.expunge(row)
        if row.status != "running":
            raise Conflict(f"A/B test {test_id} already ended at {row.ended_at.isoformat()}")
        with self.locks.hold(f"abtest:{name}"):
            return self._conclude_locked(ctx, principal, name, test_id, reason, row, now)

    def _refresh(self, name: str) -> None:
        """This process routes by the new split at once (the others within their poll
        interval); a failure here only delays that, the change itself is recorded."""
        try:
            self.serving.refresh(name)
        except RegistryError as exc:
            log.warning("route of %s not refreshed now: %s", name, exc.detail)

    def _conclude_locked(
        self,
        ctx: Context,
        principal: Principal,
        name: str,
        test_id: int,
        reason: str | None,
        row: AbTestRow,
        now: datetime,
    ) -> AbTest:
        with self.db.read() as session:
            current = self._ab_row(session, name, test_id)
            if current.status != "running":
                raise Conflict(f"A/B test {test_id} was concluded meanwhile")
        analysis = self._analyse(row, now)
        analysis["deployment"] = self._restore_split(ctx, name, row)
        self._refresh(name)
        with self.db.transaction() as session:
            locked = self._ab_row(session, name, test_id, lock=True)
            if locked.status != "running":
                raise Conflict(f"A/B test {test_id} was concluded meanwhile")
            locked.status, locked.ended_at, locked.ended_by = "concluded", now, ctx.actor
            locked.result = analysis
            session.flush()
            self.audit.append(
                session,
                ctx,
                "abtest.concluded",
                model_name=name,
                subject=f"abtest:{test_id}",
                after={"id": test_id, "reason": reason, **analysis},
            )
        request_id = None
        if analysis["decision"] == "challenger-better":
            request_id, detail = self._promote_challenger(ctx, principal, row, analysis)
            analysis["promotion"] = detail
            with self.db.transaction() as session:
                locked = self._ab_row(session, name, test_id, lock=True)
                locked.promotion_request_id = request_id
                locked.result = analysis
        with self.db.read() as session:
            return self._ab_entity(self._ab_row(session, name, test_id))

    def _restore_split(self, ctx: Context, name: str, row: AbTestRow) -> str:
        """Put the deployment back as it was, unless someone changed it during the test."""
        current = self.serving._stored(name)
        ours = (row.result or {}).get("deployment_revision")
        if current is None or current.revision != ours:
            return "changed during the test: left as it is"
        # The split approved before the test: back to it without a new approval.
        self.serving.restore_deployment(ctx, name, row.previous_spec, etag_of(current))
        if row.previous_spec is None:
            return "restored: no deployment (all traffic to Production)"
        return "restored: the split before the test"

    def _promote_challenger(
        self, ctx: Context, principal: Principal, row: AbTestRow, analysis: dict[str, Any]
    ) -> tuple[int | None, str]:
        champion = row.champion
        target = (
            Target.stage(champion["target_stage"])
            if "target_stage" in champion
            else Target.alias(champion["target_alias"])
        )
        version = row.challenger["version"]
        reason = (
            f"A/B test {row.id}: version {version} beat version {champion['version']} on "
            f"{row.metric} ({analysis['test']}, p={analysis['p_value']})"
        )
        try:
            request = self.promotions.create(
                ctx,
                principal,
                row.model_name,
                version,
                target,
                reason,
                evidence={"ab_test": {"id": row.id, **analysis}},
            )
        except RegistryError as exc:
            return None, f"no promotion request: {exc.detail}"
        return request.id, f"promotion request {request.id} opened; it needs its quorum"

    def end_overdue_tests(self, ctx: Context) -> int:
        """Conclude running tests past their maximum duration (the sweep)."""
        now = self.clock()
        with self.db.read() as session:
            rows = session.execute(
                select(
                    AbTestRow.model_name, AbTestRow.id, AbTestRow.started_at, AbTestRow.max_hours
                ).where(AbTestRow.status == "running", AbTestRow.max_hours.is_not(None))
            ).all()
        ended = 0
        for name, test_id, started, hours in rows:
            if started + timedelta(hours=hours) <= now:
                try:
                    self.conclude_ab_test(ctx, SYSTEM, name, test_id, "maximum duration reached")
                    ended += 1
                except Conflict:
                    pass  # concluded meanwhile
                except Exception:  # the next run tries again; the other tests go on
                    log.exception("A/B test %s on %s not concluded", test_id, name)
        return ended

    # -- alerts

    def list_alerts(self, name: str | None, state: str | None, limit: int = 200) -> list[Alert]:
        query = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
        if name is not None:
            check_model_name(name, "model_name", "query")
            query = query.where(AlertRow.model_name == name)
        if state is not None:
            query = query.where(AlertRow.state == state)
        with self.db.read() as session:
            return [_alert(r) for r in session.execute(query).scalars()]

    def raise_alert(
        self, session, ctx: Context, name: str, rule: str, figures: dict[str, Any]
    ) -> tuple[int, bool]:
        """Fire ``rule``'s alert on ``name`` in the caller's transaction, or add to the
        one already firing; its id, and whether it is new."""
        self.audit.lock_chain(session)
        firing = session.execute(
            select(AlertRow)
            .where(AlertRow.model_name == name, AlertRow.rule == rule, AlertRow.state == "firing")
            .with_for_update()
        ).scalar_one_or_none()
        if firing is not None:
            firing.figures = {**figures, "occurrences": firing.figures.get("occurrences", 1) + 1}
            return firing.id, False
        row = AlertRow(
            model_name=name,
            rule=rule,
            state="firing",
            figures={**figures, "occurrences": 1},
            fired_at=self.clock(),
        )
        session.add(row)
        session.flush()
        self.audit.append(
            session,
            ctx,
            "alert.firing",
            model_name=name,
            subject=f"alert:{row.id}",
            after={"alert_id": row.id, "rule": rule, **figures},
        )
        return row.id, True

    def resolve_alert(
        self,
        ctx: Context,
        alert_id: int,
        figures: dict[str, Any],
        session=None,
        only_if_firing: bool = False,
    ) -> Alert | None:
        """Resolve a firing alert by hand (acknowledged) or for its raiser; audited.
        A rule still breached fires again at its next evaluation. With
        ``only_if_firing``, one resolved meanwhile is left as it is (None)."""
        if session is None:
            with self.db.transaction() as own:
                return self.resolve_alert(ctx, alert_id, figures, own, only_if_firing)
        self.audit.lock_chain(session)  # the one lock order: chain, policy, alert
        row = session.get(AlertRow, alert_id, with_for_update=True)
        if row is None:
            raise AlertNotFound(f"no alert with id {alert_id}")
        if row.state != "firing":
            if only_if_firing:
                return None
            raise IllegalTransition(f"alert {alert_id} is {row.state}", request_status=row.state)
        row.state, row.resolved_at, row.resolved_figures = "resolved", self.clock(), figures
        session.flush()
        self.audit.append(
            session,
            ctx,
            "alert.resolved",
            model_name=row.model_name,
            subject=f"alert:{row.id}",
            after={"alert_id": row.id, "rule": row.rule, **figures},
        )
        return _alert(row)

    def evaluate_alerts(self, ctx: Context, name: str | None = None) -> list[Alert]:
        """Evaluate every alert rule (of one model, or all); return what changed."""
        with self.db.read() as session:
            query = select(ModelPolicyRow.model_name, ModelPolicyRow.monitoring).where(
                ModelPolicyRow.monitoring.is_not(None)
            )
            if name is not None:
                check_model_name(name, "model_name", "query")
                query = query.where(ModelPolicyRow.model_name == name)
            policies = [(n, MonitoringPolicy.from_dict(m)) for n, m in session.execute(query)]
        changed = self._resolve_orphans(ctx, name)
        for model, policy in policies:
            for rule in policy.alerts:
                try:
                    alert = self._evaluate_rule(ctx, model, rule)
                except RegistryError as exc:
                    log.warning("alert %s on %s not evaluated: %s", rule.name, model, exc.detail)
                    continue
                except Exception:  # one rule's failure must not stop the others
                    log.exception("alert %s on %s not evaluated", rule.name, model)
                    continue
                if alert is not None:
                    changed.append(alert)
        return changed

    def _resolve_orphans(self, ctx: Context, name: str | None) -> list[Alert]:
        """Resolve firing alerts whose rule the policy no longer has: nothing evaluates
        them any more, so they would fire for ever."""
        system = Context(SYSTEM_ACTOR, ctx.request_id)
        resolved = []
        with self.db.transaction() as session:
            self.audit.lock_chain(session)
            query = select(AlertRow).where(AlertRow.state == "firing").with_for_update()
            if name is not None:
                query = query.where(AlertRow.model_name == name)
            for row in session.execute(query).scalars().all():
                policy_row = session.get(ModelPolicyRow, row.model_name)
                policy = MonitoringPolicy.from_dict(policy_row.monitoring if policy_row else None)
                if policy.rule(row.rule) is not None or row.rule in SYSTEM_RULES:
                    continue
                row.state, row.resolved_at = "resolved", self.clock()
                row.resolved_figures = {"reason": "the rule was removed from the policy"}
                session.flush()
                self.audit.append(
                    session,
                    system,
                    "alert.resolved",
                    model_name=row.model_name,
                    subject=f"alert:{row.id}",
                    after={"alert_id": row.id, "rule": row.rule, **row.resolved_figures},
                )
                resolved.append(_alert(row))
        return resolved

    def _measure(self, name: str, rule: AlertRule, version: int) -> dict[str, Any] | None:
        until = self.clock()
        since = until - timedelta(minutes=rule.window_minutes)
        figures_: dict[str, Any] = {
            "version": version,
            "window_minutes": rule.window_minutes,
            "metric": rule.metric,
            "threshold": rule.threshold,
        }
        if rule.metric == "drift":
            report = self.drift(name, since, until, version=version, store=True)["versions"][0]
            if report["verdict"] is None or report["sampled_rows"] < rule.min_samples:
                return None
            figures_["value"] = report["verdict"]["drift"]
            figures_["drifted_features"] = report["verdict"]["drifted_features"]
            figures_["samples"] = report["sampled_rows"]
            return figures_
        totals = self.totals(name, since, until, version=version)
        c = totals.counts
        if rule.metric == "accuracy":
            found = stats.classification(totals.feedback["confusion"])
            samples = sum(n for r in totals.feedback["confusion"].values() for n in r.values())
            value = found.get("accuracy")
        elif rule.metric == "latency_p95_ms":
            samples, value = c["ok"], totals.latency.quantile(0.95)
        else:
            key = "errors" if rule.metric == "error_rate" else "fallbacks"
            samples, value = c["requests"], _ratio(c[key], c["requests"])
        if value is None or samples < rule.min_samples:
            return None
        figures_["value"] = _round(value)
        figures_["samples"] = samples
        return figures_

    def _evaluate_rule(self, ctx: Context, name: str, rule: AlertRule) -> Alert | None:
        version = self.serving.holder(name, rule.on)
        if version is None:
            return None
        measured = self._measure(name, rule, version)
        if measured is None:
            return None  # too few samples for a verdict: the state stands
        breached = rule.breached(measured["value"])
        system = Context(SYSTEM_ACTOR, ctx.request_id)
        with self.db.transaction() as session:
            self.audit.lock_chain(session)
            # The policy row serialises evaluations of one model across processes.
            session.execute(
                select(ModelPolicyRow.model_name)
                .where(ModelPolicyRow.model_name == name)
                .with_for_update()
            )
            firing = session.execute(
                select(AlertRow).where(
                    AlertRow.model_name == name,
                    AlertRow.rule == rule.name,
                    AlertRow.state == "firing",
                )
            ).scalar_one_or_none()
            if breached and firing is None:
                row = AlertRow(
                    model_name=name,
                    rule=rule.name,
                    state="firing",
                    figures=measured,
                    fired_at=self.clock(),
                )
                session.add(row)
                session.flush()
                self.audit.append(
                    session,
                    system,
                    "alert.firing",
                    model_name=name,
                    model_version=version,
                    subject=f"alert:{row.id}",
                    after={"alert_id": row.id, "rule": rule.as_dict(), **measured},
                )
                alert_id = row.id
            elif breached and firing is not None:
                # Still firing; a rollback the last evaluation could not start is retried.
                if not (rule.rollback and firing.rollback_request_id is None):
                    return None
                alert_id = firing.id
            elif not breached and firing is not None:
                firing.state, firing.resolved_at = "resolved", self.clock()
                firing.resolved_figures = measured
                session.flush()
                self.audit.append(
                    session,
                    system,
                    "alert.resolved",
                    model_name=name,
                    model_version=version,
                    subject=f"alert:{firing.id}",
                    after={"alert_id": firing.id, "rule": rule.name, **measured},
                )
                return _alert(firing)
            else:
                return None
        if rule.rollback:
            self._roll_back(system, name, rule, alert_id, measured)
        with self.db.read() as session:
            return _alert(session.get(AlertRow, alert_id))

    def _roll_back(
        self, ctx: Context, name: str, rule: AlertRule, alert_id: int, measured: dict[str, Any]
    ) -> None:
        reason = (
            f"alert {rule.name}: {rule.metric} {measured['value']} "
            + (f"past {rule.threshold} " if rule.threshold is not None else "")
            + f"over {rule.window_minutes} min on version {measured['version']}"
        )
        try:
            request = self.promotions.rollback(
                ctx,
                SYSTEM,
                name,
                rule.on,
                reason,
                evidence={"alert": {"id": alert_id, "rule": rule.as_dict(), **measured}},
            )
            outcome: dict[str, Any] = {
                "rollback_request_id": request.id,
                "rollback_status": request.status.value,
            }
        except RegistryError as exc:
            outcome = {"rollback_error": exc.detail}
        with self.db.transaction() as session:
            row = session.get(AlertRow, alert_id, with_for_update=True)
            row.rollback_request_id = outcome.get("rollback_request_id")
            row.figures = {**row.figures, **outcome}

    # -- figures for /metrics

    def gauges(self) -> dict[str, Any]:
        """Database-derived gauges: promotions by status, chain length, alerts, drift."""
        with self.db.read() as session:
            promotions = dict(
                session.execute(
                    select(PromotionRequestRow.status, func.count()).group_by(
                        PromotionRequestRow.status
                    )
                ).all()
            )
            chain = session.execute(select(func.max(AuditEventRow.seq))).scalar() or 0
            firing = session.execute(
                select(AlertRow.model_name, AlertRow.rule).where(AlertRow.state == "firing")
            ).all()
            drift = session.execute(
                select(DriftReportRow.model_name, DriftReportRow.version, DriftReportRow.report)
            ).all()
        return {"promotions": promotions, "chain": chain, "firing": firing, "drift": drift}


def _side(metric: str, totals: Totals) -> stats.Side:
    c = totals.counts
    if metric == "accuracy":
        confusion = totals.feedback["confusion"]
        n = sum(v for row in confusion.values() for v in row.values() if v > 0)
        correct = sum(max(row.get(label, 0), 0) for label, row in confusion.items())
        return stats.Side(n, _ratio(correct, n), successes=correct)
    if metric == "error_rate":
        return stats.Side(c["requests"], _ratio(c["errors"], c["requests"]), successes=c["errors"])
    if metric == "mae":
        fb = totals.feedback
        n = fb["reg_n"]
        if not n:
            return stats.Side(0, None)
        mean = fb["abs"] / n
        # |e| has second moment e^2: the sum of squares is the sum of squared errors.
        variance = (fb["sq"] - n * mean * mean) / (n - 1) if n > 1 else None
        std = math.sqrt(max(variance, 0.0)) if variance is not None else None
        return stats.Side(n, mean, std)
    return stats.Side(totals.latency.count, totals.latency.mean, totals.latency.std)


def _target_json(target: Target) -> dict[str, str]:
    key = "target_stage" if target.type is TargetType.STAGE else "target_alias"
    return {key: target.name}


def _reference(row: VersionReferenceRow) -> Reference:
    return Reference(
        model_name=row.model_name,
        version=row.version,
        source=row.source,
        created_at=row.created_at,
        created_by=row.created_by,
        profile=row.profile,
    )


def _alert(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        model_name=row.model_name,
        rule=row.rule,
        state=row.state,
        figures=row.figures,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        resolved_figures=row.resolved_figures,
        rollback_request_id=row.rollback_request_id,
    )
