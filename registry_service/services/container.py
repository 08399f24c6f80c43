"""Builds the services for one application and finds them again per request."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from registry_service.config import Settings
from registry_service.db.database import Database
from registry_service.db.locks import NamedLocks
from registry_service.domain.monitoring import INTEGRITY_RULE
from registry_service.gateway.base import RegistryGateway
from registry_service.integrations.reconciler import Reconciler
from registry_service.integrations.webhooks import WebhookService
from registry_service.metrics import Metrics
from registry_service.monitoring.service import MonitoringService
from registry_service.scheduler.runner import Scheduler
from registry_service.services.audit import AuditLog
from registry_service.services.evaluation import EvaluationService
from registry_service.services.experiments import ExperimentService
from registry_service.services.history import HistoryService
from registry_service.services.idempotency import IdempotencyKeys
from registry_service.services.integrity import IntegrityService
from registry_service.services.manifests import SigningKey
from registry_service.services.models import ModelService
from registry_service.services.policies import PolicyService
from registry_service.services.promotions import PromotionService
from registry_service.services.tokens import TokenService
from registry_service.services.traffic import TrafficService
from registry_service.services.verification import VerificationJobs
from registry_service.serving.cache import ModelCache, PyfuncLoader
from registry_service.serving.feedback import FeedbackService
from registry_service.serving.predlog import PredictionLogWriter
from registry_service.serving.routing import DeploymentSpec
from registry_service.serving.service import ServingService, work_dir

EXTENSION_KEY = "registry_service"


@dataclass
class Services:
    settings: Settings
    db: Database
    gateway: RegistryGateway
    audit: AuditLog
    tokens: TokenService
    models: ModelService
    integrity: IntegrityService
    policies: PolicyService
    promotions: PromotionService
    history: HistoryService
    evaluation: EvaluationService
    experiments: ExperimentService
    idempotency: IdempotencyKeys
    verifications: VerificationJobs
    serving: ServingService
    feedback: FeedbackService
    monitoring: MonitoringService
    metrics: Metrics
    scheduler: Scheduler
    webhooks: WebhookService
    reconciler: Reconciler

    def close(self) -> None:
        self.scheduler.stop()
        self.serving.stop()
        self.db.dispose()


def build_services(settings: Settings, gateway: RegistryGateway | None = None) -> Services:
    db = Database(settings.database_url)
    if gateway is None:
        from registry_service.gateway.mlflow_gateway import MlflowGateway

        gateway = MlflowGateway(
            settings.mlflow_tracking_uri,
            settings.mlflow_registry_uri,
            artifact_root=settings.artifact_root,
            timeout=settings.mlflow_timeout,
            max_retries=settings.mlflow_max_retries,
            quickack=settings.mlflow_quickack,
            server_url=settings.mlflow_server_url,
        )
    audit = AuditLog(db)
    # The key that signs manifests: a file, never in the database (made when unset).
    signing_key = SigningKey(settings.signing_key_path, create=settings.signing_key_file is None)
    integrity = IntegrityService(gateway, db, signing_key)
    models = ModelService(gateway, db, audit, integrity)
    policies = PolicyService(gateway, db, audit)
    history = HistoryService(gateway, db)
    promotions = PromotionService(gateway, db, audit, policies, models, NamedLocks(db), history)
    traffic = TrafficService(db, audit, policies, promotions, DeploymentSpec.default().to_json())
    # A traffic change executes in the transaction of the approval completing its quorum.
    promotions.execute_traffic = traffic.execute
    metrics = Metrics()
    serving = ServingService(
        gateway,
        db,
        audit,
        history,
        ModelCache(
            PyfuncLoader(gateway, work_dir(settings.data_dir), integrity),
            max_models=settings.serving_cache_models,
            max_bytes=settings.serving_cache_bytes,
            on_load=lambda model, seconds, ok: metrics.model_loads.labels(
                model, "ok" if ok else "failed"
            ).observe(seconds),
        ),
        PredictionLogWriter(
            db,
            max_queue=settings.prediction_log_queue,
            field_bytes=settings.prediction_log_field_bytes,
            dropped=metrics.log_dropped,
            sample_size=settings.monitoring_sample_rows,
            enabled=settings.prediction_log,
        ),
        poll_seconds=settings.serving_poll_seconds,
        metrics=metrics,
        traffic=traffic,
    )
    monitoring = MonitoringService(
        gateway,
        db,
        audit,
        policies,
        promotions,
        serving,
        sample_rows=settings.monitoring_sample_rows,
    )
    # A profile logged with the training run becomes the version's drift reference.
    models.on_registered.append(monitoring.capture_reference)
    # Files that do not match a version's manifest raise an alert where it is audited.
    serving.on_integrity_failed.append(
        lambda session, ctx, name, figures: monitoring.raise_alert(
            session, ctx, name, INTEGRITY_RULE, figures
        )
    )
    # An approved A/B test start begins the test when its traffic change executes.
    traffic.on_executed.append(monitoring.start_approved_test)
    services = Services(
        scheduler=Scheduler(db, NamedLocks(db), []),
        reconciler=Reconciler(gateway, db, audit, policies, monitoring, NamedLocks(db)),
        webhooks=WebhookService(
            db,
            audit,
            public_url=settings.public_url,
            retry_seconds=settings.webhook_retry_seconds,
            timeout=settings.webhook_timeout,
            allow_networks=settings.webhook_allow_networks,
        ),
        metrics=metrics,
        serving=serving,
        feedback=FeedbackService(db, policies),
        monitoring=monitoring,
        settings=settings,
        db=db,
        gateway=gateway,
        audit=audit,
        tokens=TokenService(db, audit),
        models=models,
        integrity=integrity,
        policies=policies,
        promotions=promotions,
        history=history,
        evaluation=EvaluationService(gateway, audit, policies, models, promotions),
        idempotency=IdempotencyKeys(db),
        verifications=VerificationJobs(db, audit),
        experiments=ExperimentService(gateway),
    )
    from registry_service.scheduler.jobs import housekeeping

    services.scheduler.jobs = housekeeping(services)
    return services


def get_services() -> Services:
    return current_app.extensions[EXTENSION_KEY]
