"""Results as data: one row per (model, strategy) from a store, as a pandas DataFrame or csv/json/parquet.

>>> import gbmi_core
>>> frame = gbmi_core.results_frame("max-of-k")          # doctest: +SKIP
>>> frame.groupby("strategy").bound.mean()               # doctest: +SKIP

Columns: ``task``, the config's fields (prefixed ``config.``; empty for a result whose model the store does
not hold, and for an imported model, which has no training config of ours), ``config_hash``, ``model_hash``,
``source`` (``trained``, ``imported`` or ``unknown``), ``file`` (the model file an imported model came from),
``strategy``, ``family``, ``bound`` (the accuracy lower bound),
``correct_count``, ``total_count``, ``flops``, ``unexplained_dimension``, ``seconds``, ``search_seconds``,
``verify_seconds``, ``certified``.  Counts are exact integers; where one exceeds 64 bits (Max-of-20 over 512
tokens has 512^20 inputs) the column holds Python integers, written as decimal strings to parquet.
"""

from __future__ import annotations

import io
import json

from .errors import GbmiError
from .records import ProofResult

FORMATS = ("csv", "json", "parquet")
_RESULT_COLUMNS = ("bound", "correct_count", "total_count", "flops", "unexplained_dimension", "seconds",
                   "search_seconds", "verify_seconds", "certified")


def result_rows(registry, task: str, store, *, config=None, model_hash: str | None = None) -> list[dict]:
    """Every stored result of ``task``: of models whose config equals ``config`` but for the seed (all
    models if None; imported models have no config of ours, so a config filter leaves them out), and of the
    model ``model_hash`` (a prefix is enough) if given."""
    from .report import config_filter

    registry.task(task)
    same_but_seed = config_filter(config) if config is not None else None
    families = {s.name: s.spec.family for s in registry.strategies(task)}
    models: dict[str, dict] = {}
    for key in store.keys(f"models/{task}"):
        attributes = store.attrs(key)
        if attributes is not None and "model_hash" in attributes:
            models.setdefault(attributes["model_hash"], attributes)
    rows = []
    for model in store.children(f"results/{task}"):
        if model_hash is not None and not model.startswith(model_hash):
            continue
        attributes = models.get(model)
        imported = bool((attributes or {}).get("imported"))
        if same_but_seed is not None and (attributes is None or imported
                                          or not same_but_seed(attributes.get("config", {}))):
            continue  # another config, an imported model, or a model the store does not hold
        for stored in store.get_many(list(store.keys(f"results/{task}/{model}"))).values():
            if stored is None:
                continue
            result = ProofResult.from_dict(stored.attrs)
            row = {"task": task}
            if not imported:  # an imported model's config would be our defaults, not the training it had
                row.update({f"config.{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v)
                            for k, v in (attributes or {}).get("config", {}).items()})
            source = "imported" if imported else "trained" if attributes else "unknown"
            row.update({"config_hash": "" if imported else (attributes or {}).get("config_hash", ""),
                        "model_hash": model, "source": source,
                        "file": (attributes or {}).get("source", "") if imported else "",
                        "strategy": result.strategy, "family": families.get(result.strategy, "(unregistered)"),
                        "bound": result.accuracy_lower_bound, "correct_count": result.correct_count,
                        "total_count": result.total_count, "flops": result.flops,
                        "unexplained_dimension": result.unexplained_dimension, "seconds": result.seconds,
                        "search_seconds": result.search_seconds, "verify_seconds": result.verify_seconds,
                        "certified": result.certified})
            rows.append(row)
    return rows


def to_frame(rows: list[dict]):
    """Rows as a pandas DataFrame with the documented columns (config columns in the middle)."""
    import pandas as pd

    config_columns = sorted({k for row in rows for k in row if k.startswith("config.")})
    columns = ["task", *config_columns, "config_hash", "model_hash", "source", "file", "strategy", "family",
               *_RESULT_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    for name in ("correct_count", "total_count", "flops"):
        if len(frame) and max(abs(int(v)) for v in frame[name]) < 2**63:
            frame[name] = frame[name].astype("int64")
    return frame


def results_frame(task: str, store=None, *, config=None, model_hash: str | None = None, registry=None):
    """The stored results of ``task`` as a pandas DataFrame (see the module doc for the columns)."""
    from .registry import get_registry
    from .store import Store

    registry = registry if registry is not None else get_registry()
    store = store if store is not None else Store()
    return to_frame(result_rows(registry, task, store, config=config, model_hash=model_hash))


def write(frame, fmt: str, target=None) -> bytes | str:
    """``frame`` as ``csv`` or ``json`` text (records, one object per row) or ``parquet`` bytes; written to
    ``target`` (a path) when given."""
    if fmt == "csv":
        data: bytes | str = frame.to_csv(index=False)
    elif fmt == "json":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        data = json.dumps(records, indent=1) + "\n"
    elif fmt == "parquet":
        out = frame.copy()
        for name in ("correct_count", "total_count", "flops"):
            if out[name].dtype == object:
                out[name] = out[name].map(str)  # beyond int64: exact decimal strings
        buffer = io.BytesIO()
        out.to_parquet(buffer, index=False)
        data = buffer.getvalue()
    else:
        raise GbmiError(f"unknown results format {fmt!r}; use one of {', '.join(FORMATS)}")
    if target is not None:
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(target, mode) as handle:
            handle.write(data)
    return data
