"""Train a scikit-learn model as a tracked run and register it with its lineage.

    make run                      # in another terminal; note the admin token it prints
    export REGISTRY_TOKEN=...     # a token with the requester role
    .venv/bin/python examples/train_and_register.py --model breast-cancer

The run records the git commit, user, Python and package versions by itself; the
service registers the logged model and snapshots the run's lineage. The last line
printed is JSON for scripts: {"run_id", "model", "version"}.
"""

from __future__ import annotations

import json
import time

import matplotlib.pyplot as plt
import sklearn
from _common import client, dataset, parser
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import RocCurveDisplay, accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry_service.sdk.tracking import Tracker

# Pinned explicitly: MLflow's own inference of requirements takes seconds per model.
PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--c", type=float, default=1.0, help="inverse regularization strength")
    args = p.parse_args()
    registry = client(args)

    x_train, x_test, y_train, y_test = dataset()
    config = {"model": {"kind": "logistic_regression", "C": args.c, "max_iter": 500}, "seed": 0}
    tracker = Tracker(args.experiment)
    with tracker.start_run("train-logreg", tags={"example": "train_and_register"}) as run:
        run.log_params(config)
        started = time.perf_counter()
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=args.c, max_iter=config["model"]["max_iter"])
        ).fit(x_train, y_train)
        run.log_metric("train_seconds", time.perf_counter() - started)

        started = time.perf_counter()
        scores = model.predict_proba(x_test)[:, 1]
        latency_ms = (time.perf_counter() - started) * 1000 / len(x_test)
        run.log_metrics(
            {
                "auc": roc_auc_score(y_test, scores),
                "accuracy": accuracy_score(y_test, model.predict(x_test)),
                "latency_ms": latency_ms,
            }
        )
        figure, axes = plt.subplots(figsize=(4, 4))
        RocCurveDisplay.from_predictions(y_test, scores, ax=axes)
        run.log_figure(figure, "plots/roc.png")
        plt.close(figure)
        run.log_dict({"features": 30, "test_rows": len(x_test)}, "data/summary.json")
        # What the training data looked like: the registry's drift reference.
        run.log_dataset_profile(x_train, predictions=model.predict(x_train))
        # The signature lets the service check prediction input and describe the model.
        run.log_model(
            model,
            "model",
            pip_requirements=PIP_REQUIREMENTS,
            signature=infer_signature(x_test, model.predict(x_test)),
        )

    registry.ensure_model(args.model, description="Breast cancer classifier (example)")
    version = registry.register_version(args.model, run.run_id, "model")
    print(
        f"registered {args.model} version {version['version']} from run {run.run_id} "
        f"(commit {version['lineage']['git_commit'] or 'unknown'})"
    )
    print(json.dumps({"run_id": run.run_id, "model": args.model, "version": version["version"]}))


if __name__ == "__main__":
    main()
