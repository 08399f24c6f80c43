"""Serving-only processes and the prediction log's retention, on the embedded default."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from registry_service.db.base import utcnow
from registry_service.db.models import PredictionFeedbackRow, PredictionRow
from registry_service.services.container import get_services
from tests.unit.conftest import embedded_app


def test_serving_only_processes_carry_the_serving_layer_alone(tmp_path, sqlite_url):
    app = embedded_app(tmp_path, sqlite_url, serving_only=True)
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert "/api/v1/models/<string:name>/predict" in rules
    assert "/api/v1/models/<string:name>/deployment" in rules
    assert "/v2/models/<string:name>/infer" in rules
    assert "/ready" in rules
    assert not any(r.startswith(("/api/v1/promotions", "/review", "/api/v1/audit")) for r in rules)
    full = embedded_app(tmp_path, sqlite_url)
    assert "/api/v1/promotions" in {r.rule for r in full.url_map.iter_rules()}


def row(request_id: str, age: timedelta) -> PredictionRow:
    return PredictionRow(
        request_id=request_id,
        model_name="m",
        model_version=1,
        principal="svc",
        status="ok",
        fallback=False,
        latency_ms=1.0,
        created_at=utcnow() - age,
    )


def test_the_sweep_purges_predictions_and_feedback_past_retention(tmp_path, sqlite_url):
    app = embedded_app(tmp_path, sqlite_url)
    with app.app_context():
        services = get_services()
    with services.db.transaction() as session:
        session.add_all([row("old", timedelta(days=40)), row("new", timedelta(days=1))])
        session.add_all(
            PredictionFeedbackRow(request_id=rid, model_name="m", actual=1, received_by="svc")
            for rid in ("old", "new")
        )
    assert services.serving.purge(timedelta(days=30)) == 1
    with services.db.read() as session:
        left = session.execute(select(PredictionRow.request_id)).scalars().all()
        feedback = session.execute(select(func.count()).select_from(PredictionFeedbackRow)).scalar()
    assert left == ["new"] and feedback == 1
    services.close()
