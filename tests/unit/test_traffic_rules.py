"""Which deployment changes move traffic, and the rule each needs: pure functions."""

from __future__ import annotations

import pytest

from registry_service.domain.policy import (
    Policy,
    PolicyRule,
    Target,
    TargetType,
    validate_rules,
)
from registry_service.errors import ValidationError
from registry_service.services.traffic import (
    NO_CHANGE,
    REROUTE,
    REWEIGHT,
    changed_targets,
    routing_change,
    rule_for_change,
)


def spec(*variants, sticky_by=None, **flags):
    return {
        "variants": [
            {
                "name": name,
                ("target_alias" if t.startswith("@") else "target_stage"): t.lstrip("@"),
                "weight": w,
            }
            for name, t, w in variants
        ],
        "sticky_by": sticky_by,
        "fallback": flags.get("fallback", True),
        "preload": flags.get("preload", False),
    }


DEFAULT = spec(("default", "Production", 100))
SPLIT = spec(("champion", "Production", 90), ("challenger", "@challenger", 10))


@pytest.mark.parametrize(
    ("before", "after", "change"),
    [
        (DEFAULT, spec(("default", "Production", 100), preload=True, fallback=False), NO_CHANGE),
        (DEFAULT, SPLIT, REROUTE),
        (SPLIT, DEFAULT, REROUTE),
        (SPLIT, spec(("champion", "Production", 50), ("challenger", "@challenger", 50)), REWEIGHT),
        (SPLIT, spec(("champion", "Production", 100), ("challenger", "@challenger", 0)), REROUTE),
        (SPLIT, SPLIT | {"sticky_by": "header:X-Subject"}, REWEIGHT),
        (DEFAULT, spec(("main", "Production", 100)), REWEIGHT),
        (DEFAULT, spec(("default", "Production", 100), ("idle", "Staging", 0)), REWEIGHT),
    ],
)
def test_routing_change(before, after, change):
    assert routing_change(before, after) == change


def test_changed_targets_are_those_whose_share_moves():
    assert changed_targets(DEFAULT, SPLIT) == [
        Target(TargetType.ALIAS, "challenger"),
        Target(TargetType.STAGE, "Production"),
    ]
    assert changed_targets(DEFAULT, spec(("main", "Production", 100))) == []


def rule(kind, target, approvals):
    return PolicyRule(TargetType(kind), target, approvals, source="model")


def test_the_strictest_rule_involved_production_by_default():
    default = Policy("m")
    assert rule_for_change(default, DEFAULT, SPLIT, REROUTE).target == "Production"
    assert rule_for_change(default, DEFAULT, SPLIT, REROUTE).required_approvals == 2
    strict_alias = Policy("m", (rule("alias", "challenger", 3),))
    chosen = rule_for_change(strict_alias, DEFAULT, SPLIT, REROUTE)
    assert (chosen.target, chosen.required_approvals) == ("challenger", 3)
    # A target whose share does not change does not count.
    reweight = spec(("champion", "Production", 50), ("challenger", "@challenger", 50))
    assert rule_for_change(strict_alias, SPLIT, reweight, REWEIGHT).required_approvals == 3
    idle = spec(("default", "Production", 100), ("idle", "@challenger", 0))
    assert rule_for_change(strict_alias, DEFAULT, idle, REWEIGHT).target == "Production"


def test_deployment_rules_replace_it_and_never_none():
    named = Policy("m", (rule("deployment", "reweight", 1), rule("deployment", "traffic", 4)))
    reweight = spec(("champion", "Production", 50), ("challenger", "@challenger", 50))
    assert rule_for_change(named, SPLIT, reweight, REWEIGHT).required_approvals == 1
    assert rule_for_change(named, DEFAULT, SPLIT, REROUTE).required_approvals == 4
    lax = Policy("m", (rule("stage", "Production", 0), rule("alias", "*", 0)))
    assert rule_for_change(lax, DEFAULT, SPLIT, REROUTE).required_approvals == 1


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (rule("deployment", "reweight", 0), "rules.0.required_approvals"),
        (rule("deployment", "sideways", 1), "rules.0.target"),
        (rule("traffic", "default", 1), "rules.0.target_type"),
    ],
)
def test_deployment_rules_are_validated(bad, field):
    with pytest.raises(ValidationError) as refused:
        validate_rules([bad])
    assert refused.value.errors[0]["field"] == field
    assert validate_rules([rule("deployment", "traffic", 1)])[0].target == "traffic"
