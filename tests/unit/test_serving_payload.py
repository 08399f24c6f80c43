"""Scoring bodies: MLflow's formats and V2 tensors in, 422 problems naming the field out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from registry_service.errors import ValidationError
from registry_service.serving import payload

FRAME = pd.DataFrame({"a": [0.1, 0.7], "b": [1.0, 2.0]})
SCHEMA = infer_signature(FRAME, np.array([0, 1])).inputs


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[0.1, 1.0], [0.7, 2.0]]}},
        {"dataframe_records": [{"a": 0.1, "b": 1.0}, {"a": 0.7, "b": 2.0}]},
        {"instances": [{"a": 0.1, "b": 1.0}, {"a": 0.7, "b": 2.0}]},
        {"inputs": {"a": [0.1, 0.7], "b": [1.0, 2.0]}},
    ],
)
def test_every_mlflow_format_parses_to_the_same_rows(body):
    data, params, fmt = payload.parse_scoring_body(body | {"params": {"k": 1}}, SCHEMA)
    assert fmt in body and params == {"k": 1}
    frame = pd.DataFrame(data)
    assert frame["a"].tolist() == [0.1, 0.7] and frame["b"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "_body"),
        ({"dataframe_split": {}, "instances": []}, "_body"),
        ([1, 2], "_body"),
        ({"dataframe_records": [{"a": 1}], "params": [1]}, "params"),
        ({"dataframe_split": {"columns": ["a"], "data": "nope"}}, "dataframe_split"),
    ],
)
def test_unreadable_bodies_are_422_naming_the_field(body, field):
    with pytest.raises(ValidationError) as caught:
        payload.parse_scoring_body(body, SCHEMA)
    assert caught.value.errors[0]["field"] == field


def test_v2_named_tensors_become_columns_and_a_matrix_takes_signature_names():
    frame, params = payload.v2_to_input(
        {
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [0.1, 0.7]},
                {"name": "b", "shape": [2, 1], "datatype": "FP32", "data": [[1.0], [2.0]]},
            ],
            "parameters": {"p": 1},
        },
        SCHEMA,
    )
    assert list(frame.columns) == ["a", "b"] and frame["a"].tolist() == [0.1, 0.7]
    assert params == {"p": 1}
    matrix, _ = payload.v2_to_input(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [0.1, 1.0]}]},
        SCHEMA,
    )
    assert list(matrix.columns) == ["a", "b"] and matrix.iloc[0].tolist() == [0.1, 1.0]


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        ({"name": "a", "shape": [3], "datatype": "FP64", "data": [1.0]}, "inputs.0.data"),
        ({"name": "a", "shape": [1], "datatype": "FP99", "data": [1.0]}, "inputs.0.datatype"),
        ({"name": "a", "shape": [-1], "datatype": "FP64", "data": [1.0]}, "inputs.0.shape"),
        ({"name": "", "shape": [1], "datatype": "FP64", "data": [1.0]}, "inputs.0.name"),
        ({"name": "a", "shape": [1], "datatype": "INT64", "data": ["x"]}, "inputs.0.data"),
        ({"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}, "inputs.0.shape"),
    ],
)
def test_bad_v2_tensors_name_the_field(tensor, field):
    with pytest.raises(ValidationError) as caught:
        payload.v2_to_input({"inputs": [tensor]}, SCHEMA)
    assert caught.value.errors[0]["field"] == field


def test_v2_outputs_carry_shape_and_datatype():
    (out,) = payload.v2_outputs(np.array([0, 1, 1]))
    assert out == {"name": "predict", "shape": [3], "datatype": "INT64", "data": [0, 1, 1]}
    cols = payload.v2_outputs(pd.DataFrame({"p0": [0.2], "p1": [0.8]}))
    assert [c["name"] for c in cols] == ["p0", "p1"] and cols[1]["datatype"] == "FP64"
    specs = payload.v2_tensor_specs(SCHEMA)
    assert specs == [
        {"name": "a", "datatype": "FP64", "shape": [-1]},
        {"name": "b", "datatype": "FP64", "shape": [-1]},
    ]


def test_tensor_signatures_take_the_v2_array_as_it_is():
    matrix = np.random.default_rng(0).random((50, 30))
    schema = infer_signature(matrix, np.zeros(50)).inputs
    array, _ = payload.v2_to_input(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 30],
                    "datatype": "FP64",
                    "data": matrix[:2].ravel().tolist(),
                }
            ]
        },
        schema,
    )
    assert isinstance(array, np.ndarray) and array.shape == (2, 30)
    assert payload.v2_tensor_specs(schema) == [
        {"name": "input", "datatype": "FP64", "shape": [-1, 30]}
    ]


def test_enforcement_errors_keep_the_reason_and_drop_the_data():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    exc = MlflowException(
        "Failed to enforce schema of data '[[1. 2.]]' with schema '[Tensor('float64', "
        "(-1, 30))]'. Error: Shape of input (1, 2) does not match expected shape (-1, 30).",
        error_code=INVALID_PARAMETER_VALUE,
    )
    error = payload.input_error(exc, "inputs")
    assert error.errors == [
        {
            "field": "inputs",
            "location": "json",
            "message": "Shape of input (1, 2) does not match expected shape (-1, 30).",
        }
    ]
    assert payload.input_error(MlflowException("boom", error_code=INTERNAL_ERROR), "x") is None
