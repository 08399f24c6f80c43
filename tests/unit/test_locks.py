"""Named locks on SQLite: one holder per name across threads, others pass freely."""

from __future__ import annotations

import threading
import time

from registry_service.db.locks import NamedLocks, lock_key


def test_one_holder_per_name(db):
    locks = NamedLocks(db, timeout=5)
    inside, overlaps = [], []

    def worker(name):
        with locks.hold(name):
            inside.append(name)
            if inside.count(name) > 1:
                overlaps.append(name)
            time.sleep(0.02)
            inside.remove(name)

    threads = [threading.Thread(target=worker, args=("a",)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and inside == []


def test_a_held_name_times_out_without_blocking_others(db):
    locks = NamedLocks(db, timeout=0.2)
    with locks.hold("a"):
        with locks.hold("b"):
            pass
        result = []

        def other():
            try:
                with locks.hold("a"):
                    result.append("entered")
            except Exception as exc:  # the error type is the assertion
                result.append(type(exc).__name__)

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert result == ["LockBusy"]


def test_lock_keys_are_stable_signed_64_bit():
    assert lock_key("x") == lock_key("x") != lock_key("y")
    assert -(2**63) <= lock_key("x") < 2**63


def test_a_held_name_is_refused_at_once_when_not_waiting(db):
    locks = NamedLocks(db, timeout=20)
    with locks.hold("a"):
        result = []

        def other():
            started = time.monotonic()
            try:
                with locks.hold("a", wait=False):
                    result.append("entered")
            except Exception as exc:  # the error type is the assertion
                result.append((type(exc).__name__, time.monotonic() - started < 10))
            with locks.hold("b", wait=False):
                result.append("b")

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert result == [("LockBusy", True), "b"]
    with locks.hold("a", wait=False):
        pass
