"""The tracker for training code, against MLflow's in-process SQLite store."""

from __future__ import annotations

import json
import subprocess
import uuid

import matplotlib
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from registry_service.errors import NoMatchingRun
from registry_service.sdk.tracking import (
    ERROR_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    PACKAGES_TAG,
    PYTHON_TAG,
    REQUIREMENTS_ARTIFACT,
    USER_TAG,
    WARNING_TAG,
    Tracker,
    active_run,
    flatten,
    track,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": str(root / "artifacts")}


@pytest.fixture
def repo(tmp_path):
    """A git repository with one commit, standing in for a training project."""
    path = tmp_path / "project"
    path.mkdir()
    (path / "train.py").write_text("print('train')\n")

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=path, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "user.email", "ml@example.com")
    git("config", "user.name", "ML")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    return {"path": path, "commit": git("rev-parse", "HEAD")}


@pytest.fixture
def tracker(store, repo):
    return Tracker(
        f"exp-{uuid.uuid4().hex[:8]}",
        tracking_uri=store["uri"],
        artifact_root=store["artifacts"],
        source_dir=repo["path"],
    )


@pytest.fixture
def client(store):
    return MlflowClient(tracking_uri=store["uri"])


def artifact_paths(client, run_id, path=None):
    found = []
    for entry in client.list_artifacts(run_id, path):
        found.extend(artifact_paths(client, run_id, entry.path) if entry.is_dir else [entry.path])
    return sorted(found)


def test_flatten_nested_params():
    assert flatten({"opt": {"lr": 0.1, "sched": {"kind": "cos"}}, "depth": 4, "e": {}}) == {
        "opt.lr": 0.1,
        "opt.sched.kind": "cos",
        "depth": 4,
        "e": {},
    }


def test_flatten_refuses_keys_that_collide():
    with pytest.raises(ValueError, match=r"'a\.b' is given twice"):
        flatten({"a.b": 1, "a": {"b": 2}})


def test_run_records_commit_clean_tree_user_python_and_packages(tracker, repo, client):
    with tracker.start_run("clean") as run:
        pass
    tags = client.get_run(run.run_id).data.tags
    assert tags[GIT_COMMIT_TAG] == repo["commit"]
    assert tags[GIT_DIRTY_TAG] == "false"
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags[USER_TAG]
    assert tags[PYTHON_TAG].count(".") == 2
    packages = json.loads(tags[PACKAGES_TAG])
    assert packages["mlflow"] == __import__("mlflow").__version__
    assert packages["scikit-learn"] == __import__("sklearn").__version__
    requirements = client.download_artifacts(run.run_id, REQUIREMENTS_ARTIFACT)
    with open(requirements) as fh:
        assert f"mlflow=={packages['mlflow']}" in fh.read().splitlines()


def test_dirty_tree_is_flagged(store, repo, client):
    (repo["path"] / "train.py").write_text("print('changed')\n")
    tracker = Tracker(
        "dirty-exp",
        tracking_uri=store["uri"],
        artifact_root=store["artifacts"],
        source_dir=repo["path"],
    )
    with tracker.start_run() as run:
        pass
    tags = client.get_run(run.run_id).data.tags
    assert tags[GIT_DIRTY_TAG] == "true"
    assert tags[GIT_COMMIT_TAG] == repo["commit"]


def test_outside_a_repository_no_commit_is_claimed(store, tmp_path, client):
    tracker = Tracker(
        "no-git", tracking_uri=store["uri"], artifact_root=store["artifacts"], source_dir=tmp_path
    )
    with tracker.start_run() as run:
        pass
    tags = client.get_run(run.run_id).data.tags
    assert GIT_COMMIT_TAG not in tags and GIT_DIRTY_TAG not in tags
    assert tags[PYTHON_TAG]


def test_params_flattened_metrics_with_steps_and_tags(tracker, client):
    with tracker.start_run() as run:
        run.log_params({"model": {"depth": 4, "layers": [64, 32]}, "seed": 7, "use_gpu": False})
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            run.log_metric("loss", loss, step=step)
        run.log_metrics({"val": {"auc": 0.91, "f1": 0.8}})
        run.set_tags({"team": "risk"})
    data = client.get_run(run.run_id).data
    assert data.params == {
        "model.depth": "4",
        "model.layers": "[64, 32]",
        "seed": "7",
        "use_gpu": "false",
    }
    assert data.metrics == {"loss": 0.3, "val.auc": 0.91, "val.f1": 0.8}
    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.3)]
    assert data.tags["team"] == "risk"


def test_non_numeric_metric_is_refused(tracker):
    with tracker.start_run() as run, pytest.raises(TypeError, match="metrics must be numbers"):
        run.log_metrics({"auc": "high"})


def test_artifacts_files_folders_figures_and_dicts(tracker, client, tmp_path):
    import matplotlib.pyplot as plt

    (tmp_path / "report.txt").write_text("ok\n")
    plots = tmp_path / "plots"
    (plots / "sub").mkdir(parents=True)
    (plots / "a.csv").write_text("x\n1\n")
    (plots / "sub" / "b.csv").write_text("y\n2\n")
    figure, axes = plt.subplots()
    axes.plot([0, 1], [0, 1])
    with tracker.start_run() as run:
        run.log_artifact(tmp_path / "report.txt")
        run.log_artifact(plots, "plots")
        run.log_figure(figure, "figures/roc.png")
        run.log_dict({"threshold": 0.5, "classes": ["a", "b"]}, "config/eval.json")
        with pytest.raises(FileNotFoundError):
            run.log_artifact(tmp_path / "missing.txt")
    plt.close(figure)
    paths = artifact_paths(client, run.run_id)
    for expected in (
        "report.txt",
        "plots/a.csv",
        "plots/sub/b.csv",
        "figures/roc.png",
        "config/eval.json",
        REQUIREMENTS_ARTIFACT,
    ):
        assert expected in paths
    with open(client.download_artifacts(run.run_id, "config/eval.json")) as fh:
        assert json.load(fh) == {"threshold": 0.5, "classes": ["a", "b"]}
    with open(client.download_artifacts(run.run_id, "figures/roc.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # Artifacts live with the service's, not in ./mlruns of the working directory.
    assert client.get_run(run.run_id).info.artifact_uri.startswith("file://")
    assert tracker.artifact_root in client.get_run(run.run_id).info.artifact_uri


def test_raising_body_marks_the_run_failed_and_ends_open_children(tracker, client):
    left_open = tracker.start_run("left-open")  # kept: entered, never exited
    with pytest.raises(ValueError, match="diverged"), tracker.start_run("doomed") as run:
        child = left_open.__enter__()
        run.log_metric("loss", 1.0)
        raise ValueError("loss diverged")
    parent = client.get_run(run.run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags[ERROR_TAG] == "ValueError: loss diverged"
    assert client.get_run(child.run_id).info.status == "FAILED"
    assert ERROR_TAG not in client.get_run(child.run_id).data.tags
    assert mlflow.active_run() is None


def test_a_run_in_a_generator_closed_early_ends_killed(tracker, client):
    started = []

    def batches():
        with tracker.start_run("streaming") as run:
            started.append(run.run_id)
            yield from range(10)

    stream = batches()
    next(stream)
    stream.close()
    assert client.get_run(started[0]).info.status == "KILLED"
    assert mlflow.active_run() is None
    with tracker.start_run("next") as following:
        pass  # top level again, not nested under the abandoned run
    assert "mlflow.parentRunId" not in client.get_run(following.run_id).data.tags


def test_names_over_mlflow_limit_are_refused_before_sending(tracker):
    with tracker.start_run() as run:
        with pytest.raises(ValueError, match="over MLflow's 250"):
            run.log_params({"x" * 251: 1})
        with pytest.raises(ValueError, match="over MLflow's 250"):
            run.log_metrics({"m" * 251: 1.0})


def test_a_run_ended_by_the_body_leaves_the_outer_run_alone(tracker, client):
    with tracker.start_run("outer") as outer:
        with tracker.start_run("inner") as inner:
            mlflow.end_run()  # training code ending its own run
        assert mlflow.active_run().info.run_id == outer.run_id
        outer.log_metric("after", 1.0)
    assert client.get_run(inner.run_id).info.status == "FINISHED"
    assert client.get_run(outer.run_id).info.status == "FINISHED"
    assert client.get_run(outer.run_id).data.metrics == {"after": 1.0}


def test_each_tracker_writes_to_its_own_store(store, tmp_path, client):
    first = Tracker("store-a", tracking_uri=store["uri"], artifact_root=store["artifacts"])
    other_uri = f"sqlite:///{tmp_path / 'other.db'}"
    Tracker("store-b", tracking_uri=other_uri, artifact_root=str(tmp_path / "art"))
    with first.start_run() as run:  # built before the other, used after it
        run.log_metric("m", 1.0)
    assert client.get_run(run.run_id).data.metrics == {"m": 1.0}


def test_over_long_params_and_tags_are_truncated_not_fatal(tracker, client):
    with pytest.warns(UserWarning, match="logged truncated"), tracker.start_run() as run:
        run.log_params({"prompt": "x" * 7000})
        run.set_tags({f"t{i}": i for i in range(150)})  # more than one MLflow batch
    data = client.get_run(run.run_id).data
    assert len(data.params["prompt"]) == 6000 and data.params["prompt"].endswith("...")
    assert data.tags["t149"] == "149"


def test_keyboard_interrupt_marks_the_run_killed(tracker, client):
    with pytest.raises(KeyboardInterrupt), tracker.start_run() as run:
        raise KeyboardInterrupt
    assert client.get_run(run.run_id).info.status == "KILLED"


def test_nested_search_compare_and_best_child(tracker, client):
    with tracker.start_run("search") as parent:
        children = {}
        for depth, auc in ((2, 0.80), (4, 0.88), (8, 0.85)):
            with parent.child(f"depth-{depth}") as trial:
                trial.log_params({"depth": depth})
                trial.log_metric("auc", auc)
                trial.log_metric("latency_ms", depth * 1.5)
                children[depth] = trial.run_id
        # The parent logs a score of its own; only the filter keeps it out.
        parent.log_metric("auc", 0.95)
    for depth, run_id in children.items():
        run = tracker.get_run(run_id)
        assert run.parent_run_id == parent.run_id
        assert run.status == "FINISHED"
        assert run.params == {"depth": str(depth)}
        assert REQUIREMENTS_ARTIFACT not in artifact_paths(client, run_id)
    assert tracker.get_run(parent.run_id).parent_run_id is None

    of_search = f"tags.mlflow.parentRunId = '{parent.run_id}'"
    assert tracker.best_run("auc").run_id == parent.run_id
    assert tracker.best_run("auc", filter=of_search).run_id == children[4]
    assert tracker.best_run("latency_ms", higher_is_better=False).run_id == children[2]
    with pytest.raises(NoMatchingRun):
        tracker.best_run("f1")

    table = tracker.compare_runs([children[2], children[4]], metrics=["auc"])
    assert [row.key for row in table.metrics] == ["auc"]
    assert table.metrics[0].delta_from_first[children[4]] == pytest.approx(0.08)
    assert table.params[0].values == {children[2]: "2", children[4]: "4"}


def test_best_run_passes_over_nan(tracker):
    with tracker.start_run() as diverged:
        diverged.log_metric("score", float("nan"))
    with tracker.start_run() as modest:
        modest.log_metric("score", 0.1)
    assert tracker.best_run("score").run_id == modest.run_id
    assert tracker.best_run("score", higher_is_better=False).run_id == modest.run_id
    with pytest.raises(NoMatchingRun):
        tracker.best_run("score", filter=f"attributes.run_id = '{diverged.run_id}'")


def test_child_runs_from_worker_threads_nest_under_the_parent(tracker):
    from concurrent.futures import ThreadPoolExecutor

    with tracker.start_run("parallel-search") as parent:

        def trial(lr):
            with parent.child(f"lr-{lr}") as run:
                run.log_metric("auc", 0.5 + lr)
                return run.run_id

        with ThreadPoolExecutor(max_workers=3) as pool:
            ids = list(pool.map(trial, [0.1, 0.2, 0.3]))
    assert {tracker.get_run(i).parent_run_id for i in ids} == {parent.run_id}
    assert {tracker.get_run(i).status for i in ids} == {"FINISHED"}
    assert tracker.get_run(parent.run_id).status == "FINISHED"


def test_log_model_guesses_the_flavor_and_refuses_unknown_objects(tracker):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with tracker.start_run() as run:
        logged = run.log_model(model, "model", pip_requirements=["scikit-learn"])
        with pytest.raises(TypeError, match="flavor"):
            run.log_model(object(), "other")
    assert logged.model_id and logged.run_id == run.run_id
    assert tracker.gateway.find_logged_model(run.get(), "model") == logged.model_id


def test_track_decorator_logs_arguments_metrics_and_model(tracker, client):
    from sklearn.linear_model import LogisticRegression

    @track(tracker=tracker, model_kwargs={"pip_requirements": ["scikit-learn"]})
    def train(data, c=1.0, solver="lbfgs", opts=None, **extra):
        assert active_run() is not None
        model = LogisticRegression(C=c, solver=solver).fit(*data)
        return model, {"acc": model.score(*data)}

    data = ([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    _, metrics = train(data, c=0.5, opts={"balance": True}, note="baseline")
    run = client.get_run(train.last_run_id)
    assert run.info.run_name == "train" and run.info.status == "FINISHED"
    # ``data`` (a tuple of lists) is data, not configuration; defaults are filled in.
    assert "data" not in run.data.params
    assert run.data.params["c"] == "0.5"
    assert run.data.params["solver"] == "lbfgs"
    assert run.data.params["opts.balance"] == "true"
    assert run.data.params["note"] == "baseline"
    assert run.data.metrics == {"acc": metrics["acc"]}
    assert tracker.gateway.find_logged_model(tracker.get_run(run.info.run_id), "model")


def test_track_decorator_skips_data_arguments_and_fails_the_run(tracker, client):
    import numpy as np

    @track(tracker=tracker)
    def train(features, lr=0.1):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        train(np.zeros((10, 3)), lr=0.5)
    run = client.get_run(train.last_run_id)
    assert run.info.status == "FAILED"
    assert run.data.params == {"lr": "0.5"}
    assert run.data.tags[ERROR_TAG] == "RuntimeError: out of memory"


def test_track_keeps_a_result_it_cannot_log(tracker, client):
    @track(tracker=tracker)
    def train(lr=0.1):
        return object(), {"acc": 0.9, "note": "fine"}

    with pytest.warns(UserWarning) as caught:
        _, metrics = train()
    assert metrics["acc"] == 0.9
    assert {str(w.message).split(":")[0] for w in caught} == {
        "metrics not logged",
        "model not logged",
    }
    run = client.get_run(train.last_run_id)
    assert run.info.status == "FINISHED"
    assert "metrics must be numbers" in run.data.tags[f"{WARNING_TAG}.metrics"]
    assert "flavor" in run.data.tags[f"{WARNING_TAG}.model"]


def test_track_keeps_a_result_whose_metric_names_collide(tracker, client):
    @track(tracker=tracker, log_model=False)
    def train():
        return None, {"val.auc": 0.9, "val": {"auc": 0.8}}

    with pytest.warns(UserWarning, match="given twice"):
        assert train()[1]["val.auc"] == 0.9
    assert client.get_run(train.last_run_id).info.status == "FINISHED"


def test_track_needs_exactly_one_of_experiment_or_tracker(tracker):
    with pytest.raises(ValueError):
        track()
    with pytest.raises(ValueError):
        track("x", tracker=tracker)
