"""Variant choice: weighted, sticky per subject, and the deployment contract's checks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from registry_service.domain.policy import Target, TargetType
from registry_service.errors import ValidationError
from registry_service.serving.routing import DeploymentSpec, choose, sticky_subject

SPLIT = {
    "variants": [
        {"name": "champion", "target_stage": "Production", "weight": 90},
        {"name": "challenger", "target_alias": "challenger", "weight": 10},
    ],
    "sticky_by": "header:X-Subject-Id",
}


def test_ninety_ten_over_ten_thousand_subjects_lands_within_one_percent():
    spec = DeploymentSpec.parse(SPLIT)
    counts = Counter(choose(spec, "churn:1", f"user-{i}").name for i in range(10_000))
    assert abs(counts["challenger"] / 10_000 - 0.10) <= 0.01
    assert counts["champion"] + counts["challenger"] == 10_000


def test_a_subject_keeps_its_variant_and_deployments_hash_apart():
    spec = DeploymentSpec.parse(SPLIT)
    first = {f"user-{i}": choose(spec, "churn:1", f"user-{i}").name for i in range(2000)}
    again = {s: choose(spec, "churn:1", s).name for s in first}
    assert first == again
    # Another deployment reshuffles who is in the 10%: no subject is always the guinea pig.
    other = {s: choose(spec, "fraud:7", s).name for s in first}
    assert other != first


def test_raising_the_challenger_share_only_moves_subjects_towards_it():
    low = DeploymentSpec.parse(SPLIT)
    high = DeploymentSpec.parse(
        SPLIT
        | {
            "variants": [
                SPLIT["variants"][0] | {"weight": 80},
                SPLIT["variants"][1] | {"weight": 20},
            ]
        }
    )
    subjects = [f"s{i}" for i in range(3000)]
    before = {s for s in subjects if choose(low, "k", s).name == "challenger"}
    after = {s for s in subjects if choose(high, "k", s).name == "challenger"}
    assert before <= after and len(after) > len(before)


def test_without_a_subject_traffic_follows_the_weights():
    spec = DeploymentSpec.parse(SPLIT)
    rng = random.Random(7)
    counts = Counter(choose(spec, "k", None, rng).name for _ in range(20_000))
    assert abs(counts["challenger"] / 20_000 - 0.10) <= 0.01


def test_zero_weight_variant_never_answers():
    spec = DeploymentSpec.parse(
        {
            "variants": [
                {"name": "a", "target_stage": "Production", "weight": 100},
                {"name": "b", "target_alias": "shadow", "weight": 0},
            ]
        }
    )
    assert {choose(spec, "k", f"s{i}").name for i in range(1000)} == {"a"}


def test_default_serves_production():
    spec = DeploymentSpec.default()
    assert spec.variants[0].target == Target(TargetType.STAGE, "Production")
    assert not spec.stored and spec.revision == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"variants": []}, "variants"),
        ({"variants": [{"name": "a", "target_stage": "Production", "weight": 90}]}, "variants"),
        (
            {
                "variants": [
                    {"name": "a", "target_stage": "Production", "target_alias": "x", "weight": 100}
                ]
            },
            "variants.0",
        ),
        ({"variants": [{"name": "a", "weight": 100}]}, "variants.0"),
        (
            {"variants": [{"name": "a", "target_stage": "Archived", "weight": 100}]},
            "variants.0.target_stage",
        ),
        ({"variants": [{"name": "a", "target_stage": "None", "weight": 100}]}, "target_stage"),
        (
            {"variants": [{"name": "a b", "target_stage": "Production", "weight": 100}]},
            "variants.0.name",
        ),
        (
            {
                "variants": [
                    {"name": "a", "target_stage": "Production", "weight": 50},
                    {"name": "a", "target_alias": "x", "weight": 50},
                ]
            },
            "variants.1.name",
        ),
        ({"variants": SPLIT["variants"], "sticky_by": "cookie:x"}, "sticky_by"),
        ({"variants": [{"name": "a", "target_alias": "champion!", "weight": 100}]}, "target_alias"),
    ],
)
def test_bad_deployments_name_the_field(body, field):
    with pytest.raises(ValidationError) as caught:
        DeploymentSpec.parse(body)
    assert caught.value.errors[0]["field"] == field


def test_sticky_subject_comes_from_the_named_header_or_body_field():
    assert sticky_subject("header:X-Subject-Id", {"X-Subject-Id": "u1"}, {}) == "u1"
    assert sticky_subject("body:customer", {}, {"customer": 42}) == "42"
    assert sticky_subject("body:customer", {}, {"customer": {"nested": 1}}) is None
    assert sticky_subject(None, {"X-Subject-Id": "u1"}, {}) is None
    assert sticky_subject("header:X-Subject-Id", {}, {}) is None
