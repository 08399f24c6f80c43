"""Idempotency keys are forgotten after their retention, never while a call holds one."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from registry_service.db.base import utcnow
from registry_service.db.models import IdempotencyKeyRow
from registry_service.services.idempotency import LEASE, IdempotencyKeys


def _age(db, key: str, by: timedelta) -> None:
    with db.transaction() as session:
        session.execute(
            update(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.key == key)
            .values(created_at=utcnow() - by)
        )


def test_purge_forgets_only_keys_past_retention(db):
    keys = IdempotencyKeys(db)
    for key in ("old-done", "old-in-flight", "recent"):
        assert keys.begin("ci-bot", key, "fp") is None
    keys.complete("ci-bot", "old-done", 201, {"id": 1})
    keys.complete("ci-bot", "recent", 201, {"id": 2})
    _age(db, "old-done", timedelta(days=8))
    _age(db, "old-in-flight", timedelta(days=8))
    _age(db, "recent", timedelta(days=6))

    assert keys.purge(timedelta(days=7)) == 2
    # The recent key still replays; a forgotten one starts a new call.
    assert keys.begin("ci-bot", "recent", "fp").body == {"id": 2}
    assert keys.begin("ci-bot", "old-done", "fp") is None


def test_purge_never_cuts_into_the_in_flight_lease(db):
    keys = IdempotencyKeys(db)
    assert keys.begin("ci-bot", "busy", "fp") is None
    _age(db, "busy", LEASE / 2)
    assert keys.purge(timedelta(0)) == 0
    _age(db, "busy", LEASE * 2)
    assert keys.purge(timedelta(0)) == 1


def test_sweep_command_reports_purged_keys(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from registry_service.cli import main
    from registry_service.db.database import Database

    monkeypatch.setenv("REGISTRY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REGISTRY_IDEMPOTENCY_RETENTION_HOURS", "24")
    for name in ("REGISTRY_DATABASE_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    db = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    keys = IdempotencyKeys(db)
    for key in ("a", "b"):
        keys.begin("ci-bot", key, "fp")
        keys.complete("ci-bot", key, 201, {})
    _age(db, "a", timedelta(hours=25))
    db.dispose()
    result = runner.invoke(main, ["promotions", "sweep"])
    assert result.exit_code == 0, result.output
    # MLflow's own log lines may come first; the job lines are "<job>: ok|failed ...".
    lines = [line for line in result.output.splitlines() if ": ok" in line or ": failed" in line]
    assert "promotions: ok expired=0 executed_stalled=0" in lines
    assert "retention: ok idempotency_keys=1 predictions=0 rollups=0 webhook_deliveries=0" in lines
    assert {line.split(":")[0] for line in lines} == {
        "retention",
        "webhooks",
        "promotions",
        "mlflow-intents",
        "reconcile",
        "ab-tests",
        "alerts",
        "drift",
    }


def test_sweep_command_refuses_a_bad_retention(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from registry_service.cli import main

    monkeypatch.setenv("REGISTRY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REGISTRY_IDEMPOTENCY_RETENTION_HOURS", "99999999")
    result = CliRunner().invoke(main, ["promotions", "sweep"])
    assert result.exit_code == 2
    assert "REGISTRY_IDEMPOTENCY_RETENTION_HOURS must be between 1 and 87600" in result.output
