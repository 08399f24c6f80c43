"""Which variant answers a request: a pure function of the deployment and the subject.

Variants name governed targets (a stage or an alias), never a bare version, so which
version serves stays decided by promotion requests.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any

from registry_service.domain.entities import Stage
from registry_service.domain.policy import Target, TargetType
from registry_service.errors import ValidationError

BUCKETS = 10_000
MAX_VARIANTS = 10
STICKY_RE = re.compile(r"^(header|body):([A-Za-z0-9_.-]{1,64})$")
VARIANT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _invalid(field_name: str, message: str) -> ValidationError:
    return ValidationError(
        message, errors=[{"field": field_name, "location": "json", "message": message}]
    )


@dataclass(frozen=True)
class Variant:
    name: str
    target: Target
    weight: int

    def to_json(self) -> dict[str, Any]:
        key = "target_stage" if self.target.type is TargetType.STAGE else "target_alias"
        return {"name": self.name, key: self.target.name, "weight": self.weight}


@dataclass(frozen=True)
class DeploymentSpec:
    variants: tuple[Variant, ...]
    sticky_by: str | None = None
    fallback: bool = True
    preload: bool = False
    # Set when stored: the deployment's id keys sticky assignment, its revision the ETag.
    id: int | None = None
    revision: int = 0
    stored: bool = field(default=False, compare=False)

    @classmethod
    def default(cls) -> DeploymentSpec:
        """Without a deployment, all traffic goes to Production."""
        return cls((Variant("default", Target(TargetType.STAGE, Stage.PRODUCTION.value), 100),))

    @classmethod
    def parse(cls, body: dict[str, Any]) -> DeploymentSpec:
        variants = []
        raw_variants = body.get("variants") or []
        if not 1 <= len(raw_variants) <= MAX_VARIANTS:
            raise _invalid("variants", f"give between 1 and {MAX_VARIANTS} variants")
        seen: set[str] = set()
        for index, raw in enumerate(raw_variants):
            where = f"variants.{index}"
            name = raw.get("name") or ""
            if not VARIANT_NAME_RE.match(name):
                raise _invalid(f"{where}.name", "1-64 letters, digits, '_', '.' or '-'")
            if name in seen:
                raise _invalid(f"{where}.name", f"variant {name!r} is named twice")
            seen.add(name)
            stage, alias = raw.get("target_stage"), raw.get("target_alias")
            if (stage is None) == (alias is None):
                raise _invalid(where, "give exactly one of target_stage and target_alias")
            if stage is not None:
                target = Target.stage(stage)
                if target.name == Stage.ARCHIVED.value:
                    raise _invalid(f"{where}.target_stage", "serve Staging or Production")
            else:
                target = Target.alias(alias)
            weight = raw.get("weight")
            if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                raise _invalid(f"{where}.weight", "an integer from 0 to 100")
            variants.append(Variant(name, target, weight))
        if sum(v.weight for v in variants) != 100:
            raise _invalid("variants", "weights must add up to 100")
        sticky = body.get("sticky_by")
        if sticky is not None and not STICKY_RE.match(sticky):
            raise _invalid("sticky_by", "'header:<Header-Name>' or 'body:<field>'")
        return cls(
            tuple(variants),
            sticky_by=sticky,
            fallback=bool(body.get("fallback", True)),
            preload=bool(body.get("preload", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "variants": [v.to_json() for v in self.variants],
            "sticky_by": self.sticky_by,
            "fallback": self.fallback,
            "preload": self.preload,
        }

    @property
    def targets(self) -> set[Target]:
        return {v.target for v in self.variants}

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


def bucket(key: str, subject: str) -> int:
    """A stable bucket in [0, BUCKETS) for one subject under one deployment."""
    digest = hashlib.sha256(f"{key}\x1f{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose(
    spec: DeploymentSpec, key: str, subject: str | None, rng: random.Random | None = None
) -> Variant:
    """The variant for ``subject``: sticky while the weights stay the same; without a
    subject, a weighted random pick."""
    total = sum(v.weight for v in spec.variants)
    if subject is not None:
        point = bucket(key, subject) * total / BUCKETS
    else:
        point = (rng or random).random() * total
    upto = 0
    for variant in spec.variants:
        upto += variant.weight
        if point < upto:
            return variant
    return next(v for v in reversed(spec.variants) if v.weight > 0)


def sticky_subject(sticky_by: str | None, headers: Any, body: Any) -> str | None:
    """The subject key named by ``sticky_by``, from a header or a top-level body field."""
    if not sticky_by:
        return None
    source, _, name = sticky_by.partition(":")
    if source == "header":
        value = headers.get(name)
    else:
        value = body.get(name) if isinstance(body, dict) else None
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)[:256]
