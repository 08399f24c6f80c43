"""A hyperparameter search as nested runs; the best child's model gets registered.

    .venv/bin/python examples/hyperparameter_search.py --model breast-cancer

Each trial is a child run of one search run, logging its params, validation AUC and
its model. The best child is picked by the tracker (only the children of this search,
only finished runs), compared with the runner-up, and registered. The last line
printed is JSON: {"search_run_id", "best_run_id", "model", "version"}.
"""

from __future__ import annotations

import itertools
import json

import sklearn
from _common import client, dataset, parser
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry_service.sdk.tracking import Tracker

PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}"]
GRID = {"C": [0.01, 0.1, 1.0], "class_weight": [None, "balanced"]}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    registry = client(args)
    x_train, x_test, y_train, y_test = dataset()
    tracker = Tracker(args.experiment)

    with tracker.start_run("search-logreg", tags={"example": "hyperparameter_search"}) as search:
        search.log_params({"grid": GRID, "metric": "val_auc"})
        for values in itertools.product(*GRID.values()):
            trial = dict(zip(GRID, values, strict=True))
            with search.child(f"C={trial['C']},cw={trial['class_weight']}") as child:
                child.log_params({"model": trial})
                model = make_pipeline(
                    StandardScaler(), LogisticRegression(max_iter=500, **trial)
                ).fit(x_train, y_train)
                child.log_metric(
                    "val_auc", roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
                )
                child.log_model(model, "model", pip_requirements=PIP_REQUIREMENTS)

        children = f"tags.mlflow.parentRunId = '{search.run_id}'"
        best = tracker.best_run("val_auc", higher_is_better=True, filter=children)
        search.log_metric("best_val_auc", best.metrics["val_auc"])
        search.set_tag("best_run_id", best.run_id)

    runner_up = tracker.best_run(
        "val_auc", filter=f"{children} AND attributes.run_id != '{best.run_id}'"
    )
    table = tracker.compare_runs([best.run_id, runner_up.run_id], metrics=["val_auc"])
    for row in table.params:
        if row.differs:
            print(f"  {row.key}: best {row.values[best.run_id]} vs {row.values[runner_up.run_id]}")
    margin = -table.metrics[0].delta_from_first[runner_up.run_id]
    print(f"  val_auc margin over runner-up: {margin:.4f}")

    registry.ensure_model(args.model, description="Breast cancer classifier (example)")
    version = registry.register_version(
        args.model, best.run_id, "model", tags={"search_run_id": search.run_id}
    )
    print(f"registered {args.model} version {version['version']} from best child {best.run_id}")
    print(
        json.dumps(
            {
                "search_run_id": search.run_id,
                "best_run_id": best.run_id,
                "model": args.model,
                "version": version["version"],
            }
        )
    )


if __name__ == "__main__":
    main()
