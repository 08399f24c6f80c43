"""Request and answer bodies of the scoring protocols: MLflow's own and Open Inference (V2).

Parsing reuses MLflow's scoring server functions, so a body `mlflow models serve` accepts
is accepted here unchanged; what they refuse becomes a 422 naming the field, without
echoing the data back.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import SUPPORTED_FORMATS, infer_and_parse_data
from mlflow.types import Schema
from mlflow.utils.proto_json_utils import _get_jsonable_obj

from registry_service.errors import ValidationError

_MISSING = re.compile(r"missing inputs \[([^\]]*)\]")
_COLUMN = re.compile(r"column '?([A-Za-z0-9_.\-]{1,64})'? to type")
_INPUT_ERRORS = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")

V2_DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": object,
}
_V2_BY_KIND = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}
_V2_BY_NUMPY = {
    np.dtype(t).str.lstrip("<>=|"): name for name, t in V2_DATATYPES.items() if t is not object
}
# MLflow column types as V2 datatypes, for model metadata.
_V2_BY_MLFLOW = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}


def invalid(field: str, message: str, detail: str | None = None) -> ValidationError:
    return ValidationError(
        detail or f"{field}: {message}",
        errors=[{"field": field, "location": "json", "message": message}],
    )


def input_error(exc: MlflowException, field: str) -> ValidationError | None:
    """A 422 for MLflow's verdict on bad input; None when the failure is the model's."""
    if getattr(exc, "error_code", None) not in _INPUT_ERRORS:
        return None
    message = str(getattr(exc, "message", exc))
    missing = _MISSING.search(message)
    if missing:
        names = [n.strip().strip("'\"") for n in missing.group(1).split(",") if n.strip()]
        return ValidationError(
            "the input lacks columns the model's signature requires",
            errors=[
                {"field": f"{field}.{n}", "location": "json", "message": "missing input"}
                for n in names
            ],
        )
    column = _COLUMN.search(message)
    if column:
        return invalid(
            f"{field}.{column.group(1)}",
            "value does not have the type the model's signature requires",
        )
    # MLflow's enforcement messages embed the whole input before "Error: <reason>";
    # keep the reason only.
    if message.startswith("Failed to enforce schema of data"):
        reason = message.rpartition("Error: ")[2].strip()
        reason = reason if reason and len(reason) <= 300 else ""
        return invalid(field, reason or "the input does not match the model's signature")
    return invalid(field, message.split("\n", 1)[0].split(". Error", 1)[0][:300])


def parse_scoring_body(body: Any, schema: Schema | None) -> tuple[Any, dict | None, str]:
    """(data, params, format) from an MLflow scoring request body."""
    if not isinstance(body, dict):
        raise invalid("_body", "a JSON object with one of " + ", ".join(sorted(SUPPORTED_FORMATS)))
    formats = [key for key in body if key in SUPPORTED_FORMATS]
    if len(formats) != 1:
        raise invalid(
            "_body",
            "give exactly one of " + ", ".join(sorted(SUPPORTED_FORMATS)),
            "the body must hold exactly one input format",
        )
    fmt = formats[0]
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise invalid("params", "an object of parameter names to values")
    try:
        data = infer_and_parse_data({fmt: body[fmt]}, schema)
    except MlflowException as exc:
        raise input_error(exc, fmt) or invalid(fmt, "could not be read as model input") from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise invalid(fmt, f"could not be read as model input ({type(exc).__name__})") from None
    return data, params, fmt


def jsonable(predictions: Any) -> Any:
    return _get_jsonable_obj(predictions, pandas_orient="records")


def row_count(data: Any) -> int:
    if isinstance(data, pd.DataFrame | np.ndarray | list):
        return len(data)
    if isinstance(data, dict):
        return max((len(v) for v in data.values() if hasattr(v, "__len__")), default=1)
    return 1


# -- Open Inference Protocol (V2)


def _tensor(raw: Any, index: int) -> tuple[str, np.ndarray]:
    where = f"inputs.{index}"
    if not isinstance(raw, dict):
        raise invalid(where, "a tensor object with name, shape, datatype and data")
    name, shape, datatype, data = (raw.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}.name", "a non-empty string")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise invalid(f"{where}.shape", "a list of non-negative integers")
    if datatype not in V2_DATATYPES:
        raise invalid(f"{where}.datatype", "one of " + ", ".join(V2_DATATYPES))
    if not isinstance(data, list):
        raise invalid(f"{where}.data", "a list (flat or nested) of values")
    try:
        array = np.asarray(data, dtype=V2_DATATYPES[datatype])
        return name, array.reshape(shape)
    except (ValueError, TypeError, OverflowError):
        raise invalid(
            f"{where}.data", f"does not hold {datatype} values of shape {shape}"
        ) from None


def v2_to_input(body: Any, schema: Schema | None) -> tuple[Any, dict | None]:
    """A V2 infer request as model input: one column per named tensor, or one 2-D tensor
    whose columns are the signature's inputs in order."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise invalid("inputs", "a non-empty list of tensors")
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise invalid("parameters", "an object")
    tensors = [_tensor(raw, i) for i, raw in enumerate(body["inputs"])]
    if schema is not None and schema.is_tensor_spec():
        # Tensor signatures take the arrays as they are: one, or several by name.
        if len(tensors) == 1:
            return tensors[0][1], params
        return {name: array for name, array in tensors}, params
    names = schema.input_names() if schema is not None and schema.has_input_names() else []
    if len(tensors) == 1 and tensors[0][1].ndim == 2 and names and tensors[0][0] not in names:
        array = tensors[0][1]
        if array.shape[1] != len(names):
            raise invalid("inputs.0.shape", f"[rows, {len(names)}]: one column per signature input")
        return pd.DataFrame(array, columns=names), params
    columns = {}
    for index, (name, array) in enumerate(tensors):
        if array.ndim > 2 or (array.ndim == 2 and array.shape[1] != 1):
            raise invalid(f"inputs.{index}.shape", "[rows] or [rows, 1] for a named input")
        columns[name] = array.reshape(-1)
    lengths = {len(a) for a in columns.values()}
    if len(lengths) > 1:
        raise invalid("inputs", "every tensor must have the same number of rows")
    return pd.DataFrame(columns), params


def v2_outputs(predictions: Any) -> list[dict[str, Any]]:
    if isinstance(predictions, pd.DataFrame):
        return [_output(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    if isinstance(predictions, pd.Series):
        return [_output(str(predictions.name or "predict"), predictions.to_numpy())]
    if isinstance(predictions, dict):
        return [_output(str(k), np.asarray(v)) for k, v in predictions.items()]
    return [_output("predict", np.asarray(predictions))]


def _output(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = _V2_BY_KIND.get(array.dtype.kind, "BYTES")
    data = array.reshape(-1).tolist() if datatype != "BYTES" else [str(v) for v in array.ravel()]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def v2_tensor_specs(schema: Schema | None, unnamed: str = "input") -> list[dict[str, Any]]:
    if schema is None:
        return []
    specs = []
    for index, spec in enumerate(schema.inputs):
        kind = getattr(spec, "type", None)
        if isinstance(kind, np.dtype):  # a tensor spec carries a numpy dtype
            datatype = _V2_BY_NUMPY.get(kind.str.lstrip("<>=|"), "BYTES")
        else:
            datatype = _V2_BY_MLFLOW.get(str(getattr(kind, "name", kind)).lower(), "BYTES")
        specs.append(
            {
                "name": spec.name or (unnamed if len(schema.inputs) == 1 else f"{unnamed}-{index}"),
                "datatype": datatype,
                "shape": list(getattr(spec, "shape", None) or [-1]),
            }
        )
    return specs


# -- input rows for monitoring (best effort, off the request path)


def rows_of(body: Any, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` input rows as {feature: scalar}, from any accepted request body."""
    if not isinstance(body, dict):
        return []
    try:
        if "dataframe_split" in body:
            split = body["dataframe_split"]
            data = split.get("data") or []
            columns = split.get("columns") or [str(i) for i in range(len(data[0]) if data else 0)]
            return [_scalars(dict(zip(columns, row, strict=False))) for row in data[:limit]]
        if "dataframe_records" in body:
            return [_scalars(r) for r in body["dataframe_records"][:limit] if isinstance(r, dict)]
        if "instances" in body:
            return _instances(body["instances"], limit)
        inputs = body.get("inputs")
        if (
            isinstance(inputs, list)
            and inputs
            and all(isinstance(t, dict) and "data" in t for t in inputs)
        ):
            columns = {}
            for tensor in inputs:
                data, shape = tensor.get("data"), tensor.get("shape") or []
                if isinstance(data, list) and shape and len(data) == shape[0]:
                    columns[str(tensor.get("name"))] = data
            return _columns(columns, limit)
        if isinstance(inputs, dict):
            return _columns(inputs, limit)
        return _instances(inputs, limit)
    except (AttributeError, TypeError, IndexError, KeyError):
        return []


def _instances(items: Any, limit: int) -> list[dict[str, Any]]:
    if isinstance(items, dict):
        return _columns(items, limit)
    if not isinstance(items, list):
        return []
    rows = []
    for item in items[:limit]:
        if isinstance(item, dict):
            rows.append(_scalars(item))
        elif isinstance(item, list):
            rows.append(_scalars({str(i): v for i, v in enumerate(item)}))
        else:
            rows.append(_scalars({"0": item}))
    return rows


def _columns(columns: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    lists = {str(k): v for k, v in columns.items() if isinstance(v, list)}
    if not lists:
        return [_scalars(columns)]
    length = min(len(v) for v in lists.values())
    return [_scalars({k: v[i] for k, v in lists.items()}) for i in range(min(length, limit))]


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
    return {
        str(k): v for k, v in row.items() if v is None or isinstance(v, str | int | float | bool)
    }
