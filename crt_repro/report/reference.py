"""The paper's numbers: ``reference_results.csv`` (package data), one row per number printed in a
table of arXiv 2505.00929, in the paper's row order.

Columns: table (``table2`` ...), dataset, layers, model, rnn ('' where the model has no RNN),
memory_len, seg_len, metric (``ppl``, ``params_millions``, ``inference_ms_per_batch``, ``mca``),
value, note.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pandas as pd

from crt_repro.results import ResultsError, require_columns

REFERENCE_COLUMNS = ("table", "dataset", "layers", "model", "rnn", "memory_len", "seg_len", "metric", "value",
                     "note")
_INT_COLUMNS = ("layers", "memory_len", "seg_len")


def reference_path() -> Path:
    return Path(str(resources.files("crt_repro.report").joinpath("reference_results.csv")))


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The reference CSV as a DataFrame in file (= paper) order, with an ``order`` column.

    Integer columns are nullable integers (Table 7's rows have no layers); ``rnn`` and ``note``
    are '' where empty. A missing column raises ``ResultsError`` naming it and the file.
    """
    path = Path(path) if path is not None else reference_path()
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ResultsError(f"{path}: reference CSV not found") from None
    require_columns(df, REFERENCE_COLUMNS, path)
    for col in _INT_COLUMNS:
        try:
            df[col] = pd.array([int(v) if v != "" else None for v in df[col]], dtype="Int64")
        except ValueError as e:
            raise ResultsError(f"{path}: column {col!r} holds a non-integer value ({e})") from None
    try:
        df["value"] = df["value"].astype(float)
    except ValueError as e:
        raise ResultsError(f"{path}: column 'value' holds a non-number ({e})") from None
    df["order"] = range(len(df))
    return df


def table_key(name: str) -> str:
    """``table2_ptb_3layer`` -> ``table2``; ``table2`` -> ``table2``."""
    m = re.match(r"^(table\d+)(?:_|$)", name)
    if not m:
        raise ResultsError(f"{name!r} is not a paper table name (expected tableN or tableN_...)")
    return m.group(1)


def reference_rows(name: str, metric: str | None = None, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of one paper table (by key or rule name), in the paper's order."""
    ref = load_reference() if reference is None else reference
    key = table_key(name)
    rows = ref[ref["table"] == key]
    if metric is not None:
        rows = rows[rows["metric"] == metric]
    if rows.empty:
        what = f" with metric {metric!r}" if metric else ""
        raise ResultsError(f"the reference CSV has no rows for {key}{what}")
    return rows.sort_values("order").reset_index(drop=True)


def table6_values(reference: pd.DataFrame | None = None) -> dict[tuple[str, str, str], float]:
    """Table 6's numbers by (model, rnn, metric): its parameters (millions) and inference times."""
    ref = load_reference() if reference is None else reference
    return {(r.model, r.rnn, r.metric): float(r.value) for r in ref[ref["table"] == "table6"].itertuples()}
