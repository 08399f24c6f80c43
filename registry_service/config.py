"""Settings, read from the environment once per application."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def normalize_database_url(url: str) -> str:
    """Pin bare PostgreSQL URLs to psycopg2, the driver we ship.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, which is not installed.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def _int(env: dict[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from exc


def _bounded(env: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    value = _int(env, key, default)
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _float(env: dict[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{key} must be a number, got {raw!r}") from exc


def _public_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"REGISTRY_PUBLIC_URL must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _networks(env: dict[str, str], key: str) -> tuple[str, ...]:
    """CIDRs separated by commas or spaces, e.g. ``10.20.0.0/16, fd12:3456::/48``."""
    found = []
    for item in (env.get(key) or "").replace(",", " ").split():
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ValueError(f"{key} must list networks such as 10.0.0.0/8, got {item!r}") from exc
    return tuple(found)


def _flag(env: dict[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    return raw.lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    mlflow_tracking_uri: str
    mlflow_registry_uri: str
    artifact_root: str
    # Direct-store mode: MLFLOW_TRACKING_URI names the MLflow server's own database, read
    # in-process; artifacts still go through the server at this URL.
    mlflow_server_url: str | None = None
    mlflow_timeout: float = 10.0
    mlflow_max_retries: int = 2
    mlflow_quickack: bool = True
    default_page_size: int = 50
    max_page_size: int = 500
    idempotency_retention_hours: int = 168
    max_body_bytes: int = 1024 * 1024
    # Serving: model cache bounds, how often processes look for moves, the prediction log.
    serving_only: bool = False
    serving_cache_models: int = 8
    serving_cache_bytes: int = 2 * 1024**3
    serving_poll_seconds: float = 0.5
    # Off: no record of inputs and answers is kept (and no monitoring figures either).
    prediction_log: bool = True
    prediction_log_queue: int = 10_000
    prediction_log_field_bytes: int = 16 * 1024
    prediction_retention_days: int = 30
    # Monitoring: input rows sampled per version, variant and minute (drift reads them).
    monitoring_sample_rows: int = 50
    monitoring_retention_days: int = 90
    # The in-service scheduler (housekeeping, alerts, drift) in `serve`'s processes.
    scheduler: bool = True
    # Where people reach this service: links in webhook payloads start with it.
    public_url: str = "http://localhost:8080"
    # Webhook retries: first after this many seconds, doubling up to an hour, for a day.
    webhook_retry_seconds: float = 5.0
    webhook_timeout: float = 10.0
    # Internal networks webhooks may call (CIDRs); by default only public addresses.
    webhook_allow_networks: tuple[str, ...] = ()
    # Out-of-band changes: how often MLflow's stages and aliases are compared with ours.
    reconcile_seconds: float = 30.0
    # Shared with MLflow's webhooks (POST /api/v1/integrations/mlflow-webhook); unset: off.
    mlflow_webhook_secret: str | None = None
    # The private key (PEM, ECDSA P-256) that signs every version's manifest; unset: one
    # generated on first use under the data dir and kept there (0600).
    signing_key_file: Path | None = None
    testing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.data_dir / "signing" / "registry-signing-key.pem"

    @property
    def embedded_mlflow(self) -> bool:
        """Our own local MLflow store (created when missing)."""
        return not self.remote_mlflow and not self.direct_mlflow

    @property
    def remote_mlflow(self) -> bool:
        return self.mlflow_tracking_uri.startswith(("http://", "https://"))

    @property
    def direct_mlflow(self) -> bool:
        """MLflow server's database read in-process (never created by us)."""
        return not self.remote_mlflow and bool(self.mlflow_server_url)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("REGISTRY_DATA_DIR") or ".registry").resolve()
        database_url = env.get("REGISTRY_DATABASE_URL") or f"sqlite:///{data_dir / 'registry.db'}"
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir / 'mlflow.db'}"
        return cls(
            data_dir=data_dir,
            database_url=normalize_database_url(database_url),
            mlflow_tracking_uri=normalize_database_url(tracking),
            mlflow_registry_uri=normalize_database_url(env.get("MLFLOW_REGISTRY_URI") or tracking),
            artifact_root=env.get("REGISTRY_ARTIFACT_ROOT") or str(data_dir / "artifacts"),
            mlflow_server_url=env.get("REGISTRY_MLFLOW_SERVER_URL") or None,
            mlflow_timeout=_float(env, "REGISTRY_MLFLOW_TIMEOUT", 10.0),
            mlflow_max_retries=_int(env, "REGISTRY_MLFLOW_MAX_RETRIES", 2),
            mlflow_quickack=_flag(env, "REGISTRY_MLFLOW_QUICKACK", True),
            default_page_size=_int(env, "REGISTRY_DEFAULT_PAGE_SIZE", 50),
            max_page_size=_int(env, "REGISTRY_MAX_PAGE_SIZE", 500),
            # At most ten years: longer would overflow date arithmetic.
            idempotency_retention_hours=_bounded(
                env, "REGISTRY_IDEMPOTENCY_RETENTION_HOURS", 168, 1, 87_600
            ),
            max_body_bytes=_bounded(
                env, "REGISTRY_MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024
            ),
            serving_only=_flag(env, "REGISTRY_SERVING_ONLY", False),
            serving_cache_models=_bounded(env, "REGISTRY_SERVING_CACHE_MODELS", 8, 1, 1000),
            serving_cache_bytes=_bounded(
                env, "REGISTRY_SERVING_CACHE_BYTES", 2 * 1024**3, 1024**2, 1024**4
            ),
            serving_poll_seconds=_float(env, "REGISTRY_SERVING_POLL_SECONDS", 0.5),
            prediction_log=_flag(env, "REGISTRY_PREDICTION_LOG", True),
            prediction_log_queue=_bounded(env, "REGISTRY_PREDICTION_LOG_QUEUE", 10_000, 1, 10**7),
            prediction_log_field_bytes=_bounded(
                env, "REGISTRY_PREDICTION_LOG_FIELD_BYTES", 16 * 1024, 0, 1024**2
            ),
            prediction_retention_days=_bounded(
                env, "REGISTRY_PREDICTION_RETENTION_DAYS", 30, 1, 3650
            ),
            monitoring_sample_rows=_bounded(env, "REGISTRY_MONITORING_SAMPLE_ROWS", 50, 0, 10_000),
            scheduler=_flag(env, "REGISTRY_SCHEDULER", True),
            public_url=_public_url(env.get("REGISTRY_PUBLIC_URL") or "http://localhost:8080"),
            webhook_retry_seconds=_float(env, "REGISTRY_WEBHOOK_RETRY_SECONDS", 5.0),
            webhook_timeout=_float(env, "REGISTRY_WEBHOOK_TIMEOUT", 10.0),
            webhook_allow_networks=_networks(env, "REGISTRY_WEBHOOK_ALLOW_NETWORKS"),
            reconcile_seconds=_float(env, "REGISTRY_RECONCILE_SECONDS", 30.0),
            mlflow_webhook_secret=env.get("REGISTRY_MLFLOW_WEBHOOK_SECRET") or None,
            signing_key_file=(
                Path(env["REGISTRY_SIGNING_KEY_FILE"]).resolve()
                if env.get("REGISTRY_SIGNING_KEY_FILE")
                else None
            ),
            monitoring_retention_days=_bounded(
                env, "REGISTRY_MONITORING_RETENTION_DAYS", 90, 1, 3650
            ),
        )

    def with_overrides(self, **overrides: Any) -> Settings:
        for key in ("database_url", "mlflow_tracking_uri", "mlflow_registry_uri"):
            if key in overrides:
                overrides[key] = normalize_database_url(overrides[key])
        return replace(self, **overrides)
