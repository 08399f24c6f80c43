"""The monitoring arithmetic against independent computations: numpy percentiles,
scikit-learn's metrics, scipy's contingency and t-tests, PSI and KS by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from registry_service.domain.profile import check_profile, profile_of
from registry_service.monitoring import drift, stats
from registry_service.monitoring.rollup import (
    ServedBatch,
    Totals,
    empty_feedback,
    empty_served,
    feedback_delta,
    merge_feedback,
    merge_samples,
    merge_served,
    values_of,
)
from registry_service.monitoring.sketch import Sketch

THRESHOLDS = drift.Thresholds()


def test_sketch_quantiles_are_within_one_percent_of_the_exact_ones():
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.lognormal(2.5, 0.8, 5000), -rng.lognormal(0, 1, 500), [0.0] * 7])
    sketch = Sketch.of(data.tolist())
    for q in (0.01, 0.1, 0.5, 0.9, 0.95, 0.99):
        exact = float(np.quantile(data, q, method="lower"))
        assert sketch.quantile(q) == pytest.approx(exact, rel=0.0101, abs=1e-9), q
    assert sketch.mean == pytest.approx(float(data.mean()))
    assert sketch.std == pytest.approx(float(data.std(ddof=1)))
    assert (sketch.min, sketch.max) == (float(data.min()), float(data.max()))


def test_sketches_merge_through_json_as_if_built_from_all_values():
    rng = np.random.default_rng(2)
    a, b = rng.exponential(10, 800).tolist(), rng.exponential(30, 300).tolist()
    merged = Sketch().merge_json(Sketch.of(a).to_json()).merge_json(Sketch.of(b).to_json())
    whole = Sketch.of(a + b)
    assert merged.quantiles([0.5, 0.95]) == whole.quantiles([0.5, 0.95])
    assert merged.count == 1100 and merged.sum == pytest.approx(sum(a) + sum(b))
    histogram = merged.histogram(10)
    assert sum(histogram["counts"]) == 1100 and len(histogram["edges"]) == 11


def test_classification_figures_match_scikit_learn():
    rng = np.random.default_rng(3)
    actual = rng.choice(["cat", "dog", "eel"], 400).tolist()
    predicted = [a if rng.random() < 0.7 else rng.choice(["cat", "dog", "eel"]) for a in actual]
    confusion: dict[str, dict[str, int]] = {}
    for p, a in zip(predicted, actual, strict=True):
        confusion.setdefault(p, {}).setdefault(a, 0)
        confusion[p][a] += 1
    found = stats.classification(confusion)
    precision, recall, f1, _ = precision_recall_fscore_support(
        actual, predicted, average="macro", zero_division=0
    )
    assert found["accuracy"] == pytest.approx(accuracy_score(actual, predicted))
    assert found["precision"] == pytest.approx(precision)
    assert found["recall"] == pytest.approx(recall)
    assert found["f1"] == pytest.approx(f1)


def test_two_proportion_z_agrees_with_the_chi_square_of_the_2x2_table():
    a, b = stats.Side(900, 0.8, successes=720), stats.Side(880, 0.85, successes=748)
    z, p = stats.two_proportion_z(a, b)
    table = [[720, 180], [748, 132]]
    chi2, p_chi2, _, _ = sps.chi2_contingency(table, correction=False)
    assert z * z == pytest.approx(chi2) and p == pytest.approx(p_chi2)
    assert z > 0  # b is the higher proportion


def test_welch_from_summaries_agrees_with_scipy_on_raw_samples():
    rng = np.random.default_rng(4)
    x, y = rng.normal(10, 2, 300), rng.normal(10.6, 3, 200)
    a = stats.Side(300, float(x.mean()), float(x.std(ddof=1)))
    b = stats.Side(200, float(y.mean()), float(y.std(ddof=1)))
    t, p = stats.welch_t(a, b)
    expected = sps.ttest_ind(y, x, equal_var=False)
    assert t == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)


def test_intervals_wilson_and_t():
    low, high = stats.proportion_interval(45, 100)
    z = sps.norm.ppf(0.975)
    p, n = 0.45, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (low, high) == (pytest.approx(centre - half), pytest.approx(centre + half))
    lo, hi = stats.mean_interval(5.0, 2.0, 50)
    half = sps.t.ppf(0.975, 49) * 2.0 / math.sqrt(50)
    assert (lo, hi) == (pytest.approx(5 - half), pytest.approx(5 + half))


def _reference(rng, rows=5000):
    return {
        "a": rng.normal(0, 1, rows).tolist(),
        "b": rng.uniform(0, 10, rows).tolist(),
        "plan": rng.choice(["free", "pro", "team"], rows, p=[0.6, 0.3, 0.1]).tolist(),
    }


def test_psi_and_ks_match_a_hand_computation():
    rng = np.random.default_rng(5)
    ref = rng.normal(0, 1, 20000)
    current = rng.normal(0.3, 1, 2000)
    profile = profile_of({"x": ref.tolist()})
    result = drift.compare(profile["features"]["x"], current.tolist(), THRESHOLDS)
    edges = np.quantile(ref, np.linspace(0, 1, 11))[1:-1]
    expected = np.full(10, 0.1)
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=10) / 2000
    psi = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert result["psi"] == pytest.approx(psi, abs=0.005)
    # KS: the largest gap between the sample's ECDF and the reference CDF.
    s = np.sort(current)
    cdf = sps.norm.cdf(s)
    ecdf_hi, ecdf_lo = np.arange(1, s.size + 1) / s.size, np.arange(s.size) / s.size
    statistic = max(np.max(ecdf_hi - cdf), np.max(cdf - ecdf_lo))
    assert result["statistic"] == pytest.approx(statistic, abs=0.01)


def test_a_shifted_feature_is_flagged_and_twenty_unshifted_windows_raise_no_alarm():
    rng = np.random.default_rng(6)
    profile = profile_of(_reference(rng))
    for window in range(20):
        sample = _reference(np.random.default_rng(100 + window), rows=500)
        results = {
            name: drift.compare(profile["features"][name], sample[name], THRESHOLDS)
            for name in sample
        }
        assert drift.verdict(results)["drift"] is False, (window, results)
    shifted = _reference(np.random.default_rng(7), rows=500)
    shifted["a"] = [v + 1.0 for v in shifted["a"]]
    shifted["plan"] = rng.choice(["free", "pro", "team"], 500, p=[0.2, 0.3, 0.5]).tolist()
    results = {
        name: drift.compare(profile["features"][name], shifted[name], THRESHOLDS)
        for name in shifted
    }
    verdict = drift.verdict(results)
    assert verdict["drift"] is True and verdict["drifted_features"] == ["a", "plan"]
    assert results["a"]["test"] == "ks" and results["plan"]["test"] == "chi-square"
    assert not results["b"]["drifted"]


def test_profiles_round_trip_through_the_checker_and_refuse_junk():
    profile = profile_of({"a": [1.0, 2.0, 3.0], "c": ["x", "y", None]}, predictions=[0, 1, 1])
    assert check_profile(profile) is profile
    assert profile["features"]["c"]["missing"] == 1
    with pytest.raises(ValueError):
        check_profile({"format": "registry-profile/1", "features": {"a": {"kind": "numeric"}}})
    with pytest.raises(ValueError):
        check_profile({"format": "other"})


def test_values_of_reads_the_shapes_models_answer_in():
    assert values_of([0, 1, 1]) == [0, 1, 1]
    assert values_of([[0.2], [0.7]]) == [0.2, 0.7]
    assert values_of({"predictions": ["a", "b"]}) == ["a", "b"]
    assert values_of([{"score": 1.5}]) == [1.5]
    assert values_of([[0.2, 0.8]]) == []  # probabilities: no single value per row
    assert values_of(3.5) == [3.5]


def test_served_batches_merge_and_the_sample_stays_bounded():
    rng = random.Random(8)
    stored, sample = empty_served(), []
    for batch_no in range(5):
        batch = ServedBatch(sample_size=30, rng=rng)
        for i in range(40):
            batch.add("ok", False, 5.0 + i, [{"x": batch_no * 40 + i}], [i % 2])
        batch.add("error", True, 100.0, [], None)
        assert len(batch.sample) == 30
        sample = merge_samples((sample, stored["seen"]), (batch.sample, 40), 30, rng)
        stored = merge_served(stored, batch.document())
    assert stored["requests"] == 205 and stored["ok"] == 200 and stored["errors"] == 5
    assert stored["fallbacks"] == 5 and stored["rows"] == 200 and stored["seen"] == 200
    assert len(sample) == 30 and stored["classes"] == {"0": 100, "1": 100}
    totals = Totals()
    totals.add(stored, None)
    assert totals.latency.count == 200 and totals.counts["requests"] == 205


def test_merged_samples_weigh_each_side_by_what_it_saw():
    rng = random.Random(9)
    from_big = 0
    for _ in range(200):
        merged = merge_samples((["big"] * 10, 9000), (["small"] * 10, 1000), 10, rng)
        from_big += merged.count("big")
    assert 0.85 < from_big / 2000 < 0.95


def test_resent_feedback_replaces_its_share_of_the_rollup():
    first = merge_feedback(empty_feedback(), feedback_delta([1, 0], [1, 1]))
    assert stats.classification(first["confusion"])["accuracy"] == 0.5
    corrected = merge_feedback(
        merge_feedback(first, feedback_delta([1, 0], [1, 1], sign=-1)),
        feedback_delta([1, 0], [1, 0]),
    )
    assert corrected["requests"] == 1
    assert stats.classification(corrected["confusion"])["accuracy"] == 1.0
    regression = merge_feedback(empty_feedback(), feedback_delta([2.5, 4.0], [2.0, 5.0]))
    assert regression["reg_n"] == 2
    assert stats.regression(2, regression["abs"], regression["sq"]) == {
        "mae": pytest.approx(0.75),
        "rmse": pytest.approx(math.sqrt((0.25 + 1.0) / 2)),
    }


def test_huge_values_leave_the_sums_finite_and_old_nulls_read_as_zero():
    sketch = Sketch.of([1.0, 1e200, -1e300, 2.0])
    assert sketch.count == 2 and math.isfinite(sketch.sumsq)
    stored = sketch.to_json() | {"ss": None}  # a non-finite sum stored as null earlier
    assert Sketch().merge_json(stored).count == 2
    delta = feedback_delta([3.5], [1e200])
    assert delta["reg_n"] == 0 and math.isfinite(delta["sq"])
    assert values_of([10**400]) == []
    # Ground truth replaced before it was ever counted leaves negative counts: no crash.
    assert stats.classification({"1": {"1": -1, "0": 2}})["accuracy"] == 0.0
    assert stats.proportion_interval(-1, 5) is None


def test_discrete_features_compared_with_themselves_do_not_drift():
    rng = np.random.default_rng(18)
    binary = rng.choice([0, 1], 5000, p=[0.7, 0.3]).tolist()
    constant = [3.0] * 5000
    flags = rng.choice([True, False], 5000).tolist()
    profile = profile_of({"binary": binary, "constant": constant, "flag": flags})
    assert {f["kind"] for f in profile["features"].values()} == {"categorical"}
    live = {
        "binary": rng.choice([0, 1], 800, p=[0.7, 0.3]).tolist(),
        "constant": [3] * 800,  # an integer now, a float in training: the same category
        "flag": ["true" if f else "false" for f in rng.choice([True, False], 800)],
    }
    results = {n: drift.compare(profile["features"][n], live[n], THRESHOLDS) for n in live}
    assert drift.verdict(results)["drift"] is False, results


def test_values_equal_to_a_decile_edge_fall_in_the_bin_the_reference_counts_them_in():
    rng = np.random.default_rng(19)
    reference = np.round(rng.normal(50, 10, 20000)).tolist()  # many ties at every edge
    profile = profile_of({"x": reference})
    assert profile["features"]["x"]["kind"] == "numeric"
    same = np.round(rng.normal(50, 10, 3000)).tolist()
    result = drift.compare(profile["features"]["x"], same, THRESHOLDS)
    assert result["psi"] < 0.05 and not result["drifted"], result
