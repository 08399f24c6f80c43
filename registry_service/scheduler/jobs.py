"""The housekeeping jobs: what `registry-service promotions sweep` runs once, and the
scheduler runs on intervals."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from registry_service.scheduler.runner import Job

if TYPE_CHECKING:
    from registry_service.services.container import Services


def housekeeping(services: Services) -> list[Job]:
    s = services
    settings = s.settings

    def retention(ctx):
        return {
            "idempotency_keys": s.idempotency.purge(
                timedelta(hours=settings.idempotency_retention_hours)
            ),
            "predictions": s.serving.purge(timedelta(days=settings.prediction_retention_days)),
            "rollups": s.monitoring.purge(timedelta(days=settings.monitoring_retention_days)),
            # As long as predictions: a month of who was told what, and when.
            "webhook_deliveries": s.webhooks.purge(
                timedelta(days=settings.prediction_retention_days)
            ),
        }

    minute, hour = timedelta(minutes=1), timedelta(hours=1)
    return [
        # First: it needs only the database, so an MLflow outage cannot hold it up.
        Job(
            "retention",
            hour,
            retention,
            "forget idempotency keys, predictions, rollups and webhook deliveries past retention",
        ),
        # Every tick or two: approvers hear of a request within seconds.
        Job(
            "webhooks",
            timedelta(seconds=2),
            s.webhooks.deliver_due,
            "deliver owed webhook events; retry failures with backoff",
        ),
        Job(
            "promotions",
            minute,
            s.promotions.sweep,
            "expire overdue requests, execute approved ones whose execution stalled",
        ),
        Job(
            "mlflow-intents",
            minute,
            s.models.settle_intents,
            "settle MLflow writes whose outcome was never confirmed",
        ),
        Job(
            "reconcile",
            timedelta(seconds=settings.reconcile_seconds),
            s.reconciler.reconcile_all,
            "compare MLflow's stages and aliases with our records; record or revert moves "
            "made behind the registry",
        ),
        Job(
            "ab-tests",
            minute,
            lambda ctx: {"concluded": s.monitoring.end_overdue_tests(ctx)},
            "conclude A/B tests past their maximum duration",
        ),
        Job(
            "alerts",
            minute,
            lambda ctx: {"changed": len(s.monitoring.evaluate_alerts(ctx))},
            "evaluate alert rules: fire, resolve, roll back",
        ),
        Job(
            "drift",
            5 * minute,
            lambda ctx: {"reports": s.monitoring.refresh_drift()},
            "refresh the drift report of every version served in the last hour",
        ),
    ]
