"""Rebuilding stage and alias tenures from audit events, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from registry_service.domain.policy import Target
from registry_service.services.history import ModelHistory, _replay

T0 = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
PROD = Target.stage("Production")


def event(seq, action, version, before, after, actor="ops"):
    return SimpleNamespace(
        seq=seq,
        occurred_at=T0 + timedelta(hours=seq),
        actor=actor,
        action=action,
        model_version=version,
        before=before,
        after=after,
    )


ROWS = [
    event(
        1,
        "version.stage_changed",
        1,
        {"stage": "None"},
        {"stage": "Production", "archived_versions": [], "promotion_request": 10},
    ),
    event(
        2,
        "version.stage_changed",
        2,
        {"stage": "None"},
        {"stage": "Production", "archived_versions": [1], "promotion_request": 11},
    ),
    event(
        3,
        "alias.set",
        2,
        {"alias": "champion", "version": None},
        {"alias": "champion", "version": 2},
    ),
    event(
        4,
        "version.stage_changed",
        3,
        {"stage": "Staging"},
        {"stage": "Production", "archived_versions": [2]},
    ),
    event(5, "alias.deleted", 2, {"alias": "champion", "version": 2}, None),
]


def history(at=None):
    tenures = sorted(_replay(ROWS), key=lambda t: t.started_seq, reverse=True)
    return ModelHistory("m", tenures, at)


def test_holders_at_any_instant():
    assert history(T0 + timedelta(hours=1, minutes=30)).holders_at == {"stage:Production": [1]}
    assert history(T0 + timedelta(hours=3, minutes=30)).holders_at == {
        "alias:champion": [2],
        "stage:Archived": [1],
        "stage:Production": [2],
    }
    assert history().holders_at == {"stage:Archived": [1, 2], "stage:Production": [3]}


def test_previous_holder_follows_the_recorded_order():
    assert history().previous_holder(PROD) == 2
    assert history().previous_holder(Target.alias("champion")) is None  # deleted, none now


def test_tenures_carry_who_and_which_request():
    first = next(t for t in _replay(ROWS) if t.version == 1 and t.target == PROD)
    assert first.promotion_request == 10 and first.ended_seq == 2
    assert first.until == T0 + timedelta(hours=2)


def test_moves_recorded_from_mlflow_snapshots_and_holder_events_replay_too():
    rows = [
        event(
            1,
            "alias.set",
            1,
            {"alias": "champion", "version": None},
            {"alias": "champion", "version": 1},
        ),
        # An intent settled from what MLflow held: whole alias maps.
        event(
            2,
            "alias.set",
            2,
            {"description": "", "tags": {}, "aliases": {"champion": 1}},
            {"aliases": {"champion": 2, "shadow": 1}, "reconciled_from_intent": 7},
        ),
        event(
            3,
            "alias.deleted",
            None,
            {"aliases": {"champion": 2, "shadow": 1}},
            {"aliases": {"champion": 2}},
        ),
        # The reconciler's holder events state holders outright.
        event(
            4,
            "model.out_of_band_change",
            None,
            {"holders": {"stage:Staging": []}},
            {"holders": {"stage:Staging": [3]}},
        ),
        event(5, "model.out_of_band_reverted", None, {}, {"holders": {"alias:champion": [1]}}),
    ]
    assert ModelHistory("m", _replay(rows)).holders_at == {
        "alias:champion": [1],
        "stage:Staging": [3],
    }
