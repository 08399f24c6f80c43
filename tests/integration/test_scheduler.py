"""The in-service scheduler: jobs run by exactly one process at a time, on PostgreSQL
advisory locks, and the schedule carries over to the next leader."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import timedelta

import pytest
import requests

from registry_service.db.database import Database
from registry_service.db.locks import NamedLocks
from registry_service.db.migrate import upgrade
from registry_service.scheduler.runner import Job, Scheduler
from tests.integration.conftest import ROOT
from tests.rig import ServiceProcess, create_database


@pytest.fixture(scope="module")
def own_db(pg_server_url):
    url = create_database(pg_server_url, "scheduler")
    upgrade(url)
    return url


def test_two_schedulers_one_leader_and_a_handover(own_db):
    runs: list[tuple[str, float]] = []
    lock = threading.Lock()

    def counting(ctx):
        with lock:
            runs.append((current[0], time.monotonic()))
        return {"ok": True}

    suffix = uuid.uuid4().hex[:8]
    jobs = [Job(f"count-{suffix}", timedelta(seconds=0.2), counting)]
    lock_name = f"test-leader-{suffix}"
    dbs = [Database(own_db), Database(own_db)]
    schedulers = [
        Scheduler(
            db,
            NamedLocks(db),
            jobs,
            tick=0.05,
            retry_leadership=0.1,
            lock_name=lock_name,
            name=name,
        )
        for db, name in zip(dbs, ("one", "two"), strict=True)
    ]
    current = ["?"]
    try:
        # Each scheduler signs the runs it makes (both share this process).
        for s in schedulers:
            original = s.run

            def signed(job, s=s, original=original):
                current[0] = s.identity
                original(job)

            s.run = signed
            s.start()
        time.sleep(2.0)
        leaders = {who for who, _ in runs}
        assert len(leaders) == 1 and len(runs) >= 5, runs
        (first,) = leaders
        leader = next(s for s in schedulers if s.identity == first)
        follower = next(s for s in schedulers if s is not leader)
        assert leader.leading and not follower.leading
        handed_over = time.monotonic()
        leader.stop()
        time.sleep(1.5)
        after = [(who, at) for who, at in runs if at > handed_over]
        assert after and {who for who, _ in after} == {follower.identity}, after
        assert follower.leading
        follower.stop()  # lets its last run finish
        (state,) = [st for st in follower.states() if st.name == jobs[0].name]
        assert state.leader == follower.identity and state.runs == len(runs)
        assert state.last_outcome == "ok" and state.failures == 0
    finally:
        for s in schedulers:
            s.stop()
        for db in dbs:
            db.dispose()


def test_serve_runs_its_jobs_in_exactly_one_of_two_workers(own_db, mlflow_uri, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "MLFLOW_"))}
    env.update(
        REGISTRY_DATABASE_URL=own_db,
        MLFLOW_TRACKING_URI=mlflow_uri,
        REGISTRY_DATA_DIR=str(tmp_path / "data"),
    )
    service = ServiceProcess(env, tmp_path / "service.log", ROOT, extra_args=("--workers", "2"))
    service.start()
    try:
        from registry_service.services.audit import AuditLog
        from registry_service.services.context import Context
        from registry_service.services.tokens import TokenService

        database = Database(own_db)
        token, _ = TokenService(database, AuditLog(database)).create(
            Context("test-setup"), f"jobs-viewer-{uuid.uuid4().hex[:6]}", ["viewer"]
        )
        database.dispose()
        headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
        deadline = time.monotonic() + 30
        while True:
            answer = requests.get(f"{service.url}/api/v1/jobs", headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            jobs = answer.json()["jobs"]
            if all(j["runs"] >= 1 for j in jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {j["name"] for j in jobs} >= {"promotions", "alerts", "drift", "retention"}
        failed = [j for j in jobs if j["last_outcome"] != "ok"]
        assert not failed, failed
        leaders = {j["leader"] for j in jobs}
        assert len(leaders) == 1, leaders
        # Asked on fresh connections, one worker says it leads and the other does not.
        answers = set()
        for _ in range(30):
            answers.add(
                requests.get(f"{service.url}/api/v1/jobs", headers=headers, timeout=30).json()[
                    "leader_here"
                ]
            )
            if answers == {True, False}:
                break
        assert answers == {True, False}
    finally:
        service.stop()
