"""The transformer -> predictor hop of a split InferenceService: model inputs as columns, not rows.

A v1 body ``{"model_inputs": {...}, "degraded": [...]}`` (KServe passes any JSON object to the
predictor's preprocess)::

    "numeric":        [[float x len(NUMERIC_FEATURES)] per row]
    "categorical":    {name: [str per row]} for CATEGORICAL_FEATURES
    "text":           [str per row]
    "history_tokens": [[float x len(SEQUENCE_COLUMNS)] per row]   (when the transformer built them)

Rows of 48 named features plus 224 token columns as JSON objects cost the predictor ~18 ms a
request to turn back into a pandas frame (benchmarks/serving_topology.py); these columns go
straight into a `ColumnFrame`. The predictor still accepts ``{"instances": [model frame rows]}``
for a caller who sends model frames by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TEXT_COLUMN, ColumnFrame
from riskops.features.sequences import SEQUENCE_COLUMNS
from serving.validation import RequestError

WIRE_KEY = "model_inputs"


def to_wire(frame: ColumnFrame, numeric: np.ndarray, degraded: Sequence[bool]) -> dict[str, Any]:
    """The v1 body for the predictor: `frame`'s inputs as columns (NaN travels as null)."""
    inputs: dict[str, Any] = {
        "numeric": numeric.tolist(),
        "categorical": {c: [str(v) for v in frame[c]] for c in CATEGORICAL_FEATURES},
        "text": [str(v) for v in frame[TEXT_COLUMN]],
    }
    if SEQUENCE_COLUMNS[0] in frame.columns:
        inputs["history_tokens"] = np.column_stack([frame[c] for c in SEQUENCE_COLUMNS]).tolist()
    return {WIRE_KEY: inputs, "degraded": [bool(d) for d in degraded]}


def _matrix(value: Any, field: str, n: int | None, width: int) -> np.ndarray:
    want = f"expected a [{n if n is not None else 'n'}, {width}] matrix of numbers"
    try:
        m = np.array(value, dtype=np.float64)  # null -> NaN
    except (TypeError, ValueError):
        raise RequestError(f"{field}: {want} (rows of equal length)") from None
    if m.ndim != 2 or m.shape[1] != width or (n is not None and m.shape[0] != n):
        raise RequestError(f"{field}: {want}, got shape {list(m.shape)}")
    return m


def from_wire(payload: Mapping[str, Any]) -> tuple[ColumnFrame, np.ndarray, list[bool]]:
    """(model frame, its NUMERIC_FEATURES matrix, degraded flags) of a `to_wire` body; RequestError
    (400) naming the field when a part is missing or of the wrong shape."""
    inputs = payload.get(WIRE_KEY)
    if not isinstance(inputs, Mapping):
        raise RequestError(f"{WIRE_KEY}: must be an object of model input columns")
    numeric = _matrix(inputs.get("numeric"), f"{WIRE_KEY}.numeric", None, len(NUMERIC_FEATURES))
    n = numeric.shape[0]
    if n == 0:
        raise RequestError(f"{WIRE_KEY}.numeric: no rows")
    columns: dict[str, np.ndarray] = dict(zip(NUMERIC_FEATURES, numeric.T, strict=True))
    categorical = inputs.get("categorical")
    if not isinstance(categorical, Mapping):
        raise RequestError(f"{WIRE_KEY}.categorical: must be an object of {list(CATEGORICAL_FEATURES)}")
    for name in (*CATEGORICAL_FEATURES, TEXT_COLUMN):
        values = inputs.get(name) if name == TEXT_COLUMN else categorical.get(name)
        if not isinstance(values, list) or len(values) != n:
            raise RequestError(
                f"{WIRE_KEY}.{'' if name == TEXT_COLUMN else 'categorical.'}{name}: expected {n} strings"
            )
        col = np.empty(n, dtype=object)
        col[:] = [str(v) for v in values]
        columns[name] = col
    if "history_tokens" in inputs:
        tokens = _matrix(inputs["history_tokens"], f"{WIRE_KEY}.history_tokens", n, len(SEQUENCE_COLUMNS))
        columns.update(zip(SEQUENCE_COLUMNS, tokens.T, strict=True))
    degraded = payload.get("degraded", [False] * n)
    if not isinstance(degraded, list) or len(degraded) != n:
        raise RequestError(f"degraded: expected {n} booleans")
    return ColumnFrame(columns), numeric, [bool(d) for d in degraded]


def concat_frames(frames: Sequence[Any]) -> Any:
    """Several requests' model frames as one (ColumnFrames column by column; pandas otherwise)."""
    if len(frames) == 1:
        return frames[0]
    if all(isinstance(f, ColumnFrame) and f.columns == frames[0].columns for f in frames):
        return ColumnFrame({c: np.concatenate([f[c] for f in frames]) for c in frames[0].columns})
    import pandas as pd  # mixed kinds or columns: as the row format always did

    return pd.concat([f.to_pandas() if isinstance(f, ColumnFrame) else f for f in frames], ignore_index=True)
