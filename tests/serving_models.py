"""Real scikit-learn models logged to the suite's MLflow, for the serving tests."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cloudpickle
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

FEATURES = ["a", "b"]
# Named, so saving skips MLflow's requirement inference (seconds per model).
REQUIREMENTS = ["scikit-learn", "pandas"]


def training_frame(seed: int = 0, rows: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.random(rows), "b": rng.random(rows)})


def _log(client, folder: Path, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run_id = client.create_run(exp_id).info.run_id
    client.log_artifacts(run_id, str(folder), "model")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_sklearn(client, threshold: float, experiment: str = "serving-tests"):
    """A classifier of ``a > threshold``, with its signature; returns (run_id, estimator)."""
    frame = training_frame()
    model = LogisticRegression(C=100.0).fit(frame, (frame.a > threshold).astype(int))
    return _log_estimator(client, model, frame, experiment), model


def _log_estimator(client, model, frame: pd.DataFrame, experiment: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        mlflow.sklearn.save_model(
            model,
            str(folder),
            signature=infer_signature(frame, model.predict(frame)),
            pip_requirements=REQUIREMENTS,
        )
        return _log(client, folder, experiment)


def log_unloadable(client, experiment: str = "serving-tests") -> str:
    """A model folder whose pickle is cut short: it fails to load."""
    frame = training_frame()
    model = LogisticRegression().fit(frame, (frame.a > 0.5).astype(int))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        mlflow.sklearn.save_model(model, str(folder), pip_requirements=REQUIREMENTS)
        (saved,) = [p for p in folder.iterdir() if p.name.startswith("model.")]
        saved.write_bytes(saved.read_bytes()[:20])
        return _log(client, folder, experiment)


class RaisingModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("feature store unreachable")


def _log_python_model(client, model: mlflow.pyfunc.PythonModel, experiment: str) -> str:
    """Log a PythonModel of this module, pickled by value, with a two-column signature."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    frame = training_frame()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            str(folder),
            python_model=model,
            signature=infer_signature(frame, np.zeros(len(frame))),
            pip_requirements=REQUIREMENTS,
        )
        return _log(client, folder, experiment)


def log_raising(client, experiment: str = "serving-tests") -> str:
    """A model that loads but whose predict raises on every input."""
    return _log_python_model(client, RaisingModel(), experiment)


def log_regressor(client, slope: float, experiment: str = "serving-tests"):
    """A linear regressor of ``slope * a + b``; returns (run_id, estimator)."""
    from sklearn.linear_model import LinearRegression

    frame = training_frame()
    model = LinearRegression().fit(frame, slope * frame.a + frame.b)
    return _log_estimator(client, model, frame, experiment), model


class MarkerModel(mlflow.pyfunc.PythonModel):
    """Writes a file when it is loaded: loading a model runs its code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def load_context(self, context):
        Path(self.marker).write_text("loaded")

    def predict(self, context, model_input, params=None):
        return np.ones(len(model_input))


def log_marker(client, marker: Path, experiment: str = "serving-tests") -> str:
    """A model whose loading writes ``marker``; returns its run id."""
    return _log_python_model(client, MarkerModel(str(marker)), experiment)
