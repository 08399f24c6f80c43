"""Side-by-side tables of metrics or params, shared by version and run comparisons."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ComparedValue:
    key: str
    values: dict[str, Any]
    differs: bool
    # Only for metrics, and only when the first column has the value.
    delta_from_first: dict[str, float | None] | None = None


def side_by_side(
    columns: Mapping[str, Mapping[str, Any]],
    numeric: bool,
    keys: Iterable[str] | None = None,
) -> list[ComparedValue]:
    """One row per key across ``columns`` (column label to its values), in key order.

    ``keys`` restricts the rows; a key no column has still gets a row of nulls, so a
    caller asking for a metric learns it is missing rather than seeing it vanish.
    """
    wanted = sorted(set(keys) if keys is not None else {k for c in columns.values() for k in c})
    first = next(iter(columns.values()), {})
    rows = []
    for key in wanted:
        values = {label: column.get(key) for label, column in columns.items()}
        delta = None
        if numeric and first.get(key) is not None:
            ref = first[key]
            delta = {label: (v - ref if v is not None else None) for label, v in values.items()}
        rows.append(
            ComparedValue(
                key=key,
                values=values,
                differs=len({repr(v) for v in values.values()}) > 1,
                delta_from_first=delta,
            )
        )
    return rows
