"""The candidate beside its champion: directions, deltas, verdicts."""

from __future__ import annotations

import math

import pytest

from registry_service.domain.comparison import (
    FROZEN,
    UNFROZEN,
    MetricChange,
    ReviewSide,
    compare_with_champion,
    frozen_evidence,
    metric_direction,
)


@pytest.mark.parametrize(
    ("name", "higher"),
    [
        ("auc", True),
        ("val_auc", True),
        ("test.f1", True),
        ("accuracy", True),
        ("log_loss", False),
        ("val_rmse", False),
        ("latency_ms", False),
        ("train_seconds", False),
        ("error_rate", False),
        ("rows", None),
        ("learning_rate", None),
        ("aucpr_custom", None),  # a word part must match, not a substring
    ],
)
def test_metric_direction_from_the_name(name, higher):
    assert metric_direction(name) is higher


def test_the_policy_metric_overrides_the_name():
    assert metric_direction("auc", ("auc", False)) is False
    assert metric_direction("rows", ("rows", True)) is True


def side(version, metrics, params=None):
    return ReviewSide(version, metrics, params or {}, {"run_id": f"run-{version}"})


def test_deltas_and_verdicts():
    result = compare_with_champion(
        side(2, {"auc": 0.9, "loss": 0.3, "rows": 10.0, "new": 1.0}, {"depth": "6", "lr": "1"}),
        side(1, {"auc": 0.8, "loss": 0.2, "rows": 10.0, "gone": 2.0}, {"depth": "4", "lr": "1"}),
        primary=("rows", True),
    )
    by_key = {m.key: m for m in result.metrics}
    assert result.metrics[0].key == "rows"  # the policy's metric leads
    assert by_key["rows"].better == "equal" and by_key["rows"].relative_delta == 0
    assert by_key["auc"].delta == pytest.approx(0.1)
    assert by_key["auc"].relative_delta == pytest.approx(0.125)
    assert by_key["auc"].better == "candidate"
    assert by_key["loss"].better == "champion"
    assert by_key["new"].champion is None and by_key["new"].better is None
    assert by_key["gone"].candidate is None and by_key["gone"].delta is None
    assert [(d.key, d.candidate, d.champion) for d in result.params_differing] == [
        ("depth", "6", "4")
    ]
    assert result.params_same == 1


def test_no_relative_delta_against_zero_and_no_verdict_on_nan():
    result = compare_with_champion(
        side(2, {"auc": 0.5, "f1": math.nan}), side(1, {"auc": 0.0, "f1": 0.4}), None
    )
    by_key = {m.key: m for m in result.metrics}
    assert by_key["auc"].delta == 0.5 and by_key["auc"].relative_delta is None
    assert by_key["auc"].better == "candidate"
    assert by_key["f1"].candidate is None and by_key["f1"].better is None


def test_without_a_champion_nothing_is_judged():
    result = compare_with_champion(side(1, {"auc": 0.8}, {"depth": "4"}), None, None)
    assert result.champion is None
    assert result.metrics[0].better is None and result.metrics[0].champion is None
    assert result.params_differing == [] and result.params_same == 0


def test_evidence_is_what_was_recorded_and_the_run_is_checked_against_it():
    evidence = frozen_evidence(
        {"auc": 0.8, "loss": 0.3, "f1": math.nan, "rows": 10.0},
        {"auc": 0.95, "loss": 0.3, "f1": math.nan, "rows": 10.0, "added": 1.0},
    )
    assert evidence.state == FROZEN
    assert evidence.metrics["auc"] == 0.8 and "added" not in evidence.metrics
    # NaN is NaN again, not a change; a metric logged since has no registered value.
    assert evidence.changed_since_registration == (
        MetricChange("added", None, 1.0),
        MetricChange("auc", 0.8, 0.95),
    )
    assert evidence.as_dict()["changed_since_registration"][1] == {
        "key": "auc",
        "registered": 0.8,
        "current": 0.95,
    }


def test_evidence_without_a_record_or_without_the_run():
    unfrozen = frozen_evidence(None, {"auc": 0.9})
    assert (unfrozen.state, dict(unfrozen.metrics)) == (UNFROZEN, {"auc": 0.9})
    assert unfrozen.changed_since_registration == ()
    unread = frozen_evidence({"auc": 0.8}, None)  # the run is gone or MLflow is down
    assert unread.state == FROZEN and unread.changed_since_registration is None
    assert unread.as_dict() == {"metrics_state": "frozen", "changed_since_registration": None}
    nothing = frozen_evidence(None, None)
    assert nothing.metrics == {} and nothing.state == UNFROZEN
