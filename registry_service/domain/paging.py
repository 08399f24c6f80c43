"""Opaque page tokens, including pages filtered after MLflow has answered.

MLflow cannot filter versions by stage, nor match a literal '_' in a LIKE prefix, so
some lists are filtered here. A token then records the upstream page and how many of
its matches were already returned, so no item is skipped or repeated across pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import TypeVar

from registry_service.domain.entities import Page
from registry_service.errors import BadRequest

T = TypeVar("T")
# Upstream pages are fetched at a fixed size so a token's offset stays meaningful.
UPSTREAM_BATCH = 200


def encode_token(state: dict) -> str:
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None) -> dict:
    if not token:
        return {}
    try:
        padded = token + "=" * (-len(token) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("page_token is not a token this service issued") from exc
    if not isinstance(state, dict):
        raise BadRequest("page_token is not a token this service issued")
    return state


def decode_position(token: str | None, maximum: int) -> int | None:
    """The ``before`` position of one of our keyset tokens: an integer in range, or
    None for the first page."""
    before = decode_token(token).get("before")
    if before is None:
        return None
    if isinstance(before, bool) or not isinstance(before, int) or not 0 < before <= maximum:
        raise BadRequest("page_token is not a token this service issued")
    return before


def filtered_page(
    fetch: Callable[[str | None, int], Page[T]],
    predicate: Callable[[T], bool] | None,
    max_results: int,
    page_token: str | None,
) -> Page[T]:
    """Return up to ``max_results`` items of ``fetch``'s pages that pass ``predicate``."""
    state = decode_token(page_token)
    upstream = state.get("u")
    skip = state.get("s", 0)
    if not isinstance(skip, int) or skip < 0 or not (upstream is None or isinstance(upstream, str)):
        raise BadRequest("page_token is not a token this service issued")

    if predicate is None:
        page = fetch(upstream, max_results)
        token = encode_token({"u": page.next_page_token, "s": 0}) if page.next_page_token else None
        return Page(page.items, token)

    items: list[T] = []
    while True:
        page = fetch(upstream, UPSTREAM_BATCH)
        matched = [item for item in page.items if predicate(item)][skip:]
        room = max_results - len(items)
        if len(matched) > room:
            items.extend(matched[:room])
            return Page(items, encode_token({"u": upstream, "s": skip + room}))
        items.extend(matched)
        if not page.next_page_token:
            return Page(items, None)
        upstream, skip = page.next_page_token, 0
        if len(items) == max_results:
            return Page(items, encode_token({"u": upstream, "s": 0}))
