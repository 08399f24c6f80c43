"""Every branch of the champion/challenger decision, with no MLflow."""

from __future__ import annotations

import pytest

from registry_service.domain.comparison import frozen_evidence
from registry_service.domain.evaluation import AutoPromotion, decide
from registry_service.services.review import evidence_notes


def by_name(decision):
    return {c.name: c for c in decision.criteria}


def test_no_champion_passes_on_its_own_merits():
    d = decide(AutoPromotion("auc", min_value=0.8), 3, {"auc": 0.85}, None, None)
    assert d.passed and by_name(d)["improvement"].detail.startswith("no champion")


def test_required_improvement_over_the_champion():
    criteria = AutoPromotion("auc")  # 5% by default
    small = decide(criteria, 3, {"auc": 0.84}, 2, {"auc": 0.82})
    assert not small.passed
    assert by_name(small)["improvement"].improvement == pytest.approx(0.02 / 0.82, rel=1e-4)
    big = decide(criteria, 3, {"auc": 0.90}, 2, {"auc": 0.82})
    assert big.passed and by_name(big)["improvement"].champion == 0.82


def test_lower_is_better_inverts_both_checks():
    criteria = AutoPromotion("rmse", higher_is_better=False, min_value=10.0, min_improvement=0.1)
    better = decide(criteria, 3, {"rmse": 8.0}, 2, {"rmse": 9.0})
    assert better.passed and by_name(better)["improvement"].improvement == pytest.approx(1 / 9)
    worse = decide(criteria, 3, {"rmse": 12.0}, 2, {"rmse": 9.0})
    assert not by_name(worse)["min_value"].passed
    assert not by_name(worse)["improvement"].passed


def test_missing_metric_on_either_side():
    criteria = AutoPromotion("auc")
    absent = decide(criteria, 3, {"f1": 0.9}, 2, {"auc": 0.8})
    assert not absent.passed and not by_name(absent)["metric_present"].passed
    champion_without = decide(criteria, 3, {"auc": 0.9}, 2, {"f1": 0.8})
    assert champion_without.passed
    assert "has no 'auc'" in by_name(champion_without)["improvement"].detail


def test_champion_at_zero_needs_a_strict_gain():
    criteria = AutoPromotion("lift")
    assert decide(criteria, 3, {"lift": 0.01}, 2, {"lift": 0.0}).passed
    flat = decide(criteria, 3, {"lift": 0.0}, 2, {"lift": 0.0})
    assert not flat.passed and by_name(flat)["improvement"].improvement is None


def test_latency_limit_and_its_missing_metric():
    criteria = AutoPromotion("auc", max_latency_ms=50)
    fast = decide(criteria, 3, {"auc": 0.9, "latency_ms": 40}, None, None)
    assert fast.passed
    slow = decide(criteria, 3, {"auc": 0.9, "latency_ms": 80}, None, None)
    assert not slow.passed and not by_name(slow)["max_latency"].passed
    unmeasured = decide(criteria, 3, {"auc": 0.9}, None, None)
    assert not unmeasured.passed


def test_notes_say_what_the_evidence_rests_on():
    changed = evidence_notes("challenger", 3, frozen_evidence({"auc": 0.8}, {"auc": 0.95}))
    assert changed == [
        "challenger version 3's run changed since registration: auc was 0.8 when registered "
        "and is 0.95 now; the registered value is used"
    ]
    assert evidence_notes("champion", 2, frozen_evidence({"auc": 0.8}, {"auc": 0.8})) == []
    assert "unfrozen" in evidence_notes("champion", 2, frozen_evidence(None, {"auc": 0.8}))[0]
    assert "could not be read" in evidence_notes("champion", 2, frozen_evidence({}, None))[0]
