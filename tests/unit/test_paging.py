"""Page tokens over filtered upstream pages: nothing skipped, nothing repeated."""

import pytest

from registry_service.domain.entities import Page
from registry_service.domain.paging import decode_token, encode_token, filtered_page
from registry_service.errors import BadRequest


def upstream(items):
    """Pages of ``items`` addressed by offset tokens, like MLflow's SQL store."""
    calls = []

    def fetch(token, size):
        start = int(token or 0)
        calls.append((start, size))
        chunk = items[start : start + size]
        nxt = str(start + size) if start + size < len(items) else None
        return Page(chunk, nxt)

    return fetch, calls


def collect(fetch, predicate, size):
    seen, token = [], None
    while True:
        page = filtered_page(fetch, predicate, size, token)
        seen.extend(page.items)
        if not page.next_page_token:
            return seen
        token = page.next_page_token


@pytest.mark.parametrize("size", [1, 3, 7, 200, 500])
def test_filtered_pages_return_every_match_once(size):
    items = list(range(1000))
    fetch, _ = upstream(items)
    assert collect(fetch, lambda x: x % 7 == 0, size) == [x for x in items if x % 7 == 0]


def test_unfiltered_pages_pass_the_size_through():
    fetch, calls = upstream(list(range(10)))
    assert collect(fetch, None, 4) == list(range(10))
    assert calls == [(0, 4), (4, 4), (8, 4)]


def test_no_match_gives_empty_page_without_token():
    fetch, _ = upstream(list(range(450)))
    page = filtered_page(fetch, lambda x: False, 10, None)
    assert page.items == [] and page.next_page_token is None


@pytest.mark.parametrize(
    "token", ["!!!", "bm90IGpzb24", encode_token({"s": -1}), encode_token({"u": 5})]
)
def test_foreign_tokens_are_rejected(token):
    fetch, _ = upstream([1, 2])
    with pytest.raises(BadRequest):
        filtered_page(fetch, lambda x: True, 1, token)


def test_token_round_trip():
    assert decode_token(encode_token({"u": "abc", "s": 3})) == {"u": "abc", "s": 3}
    assert decode_token(None) == {}
