"""Every study key with its default and description, as a markdown table for the README.

Rendered from the pydantic schema in :mod:`ddsearch.config` (the single place defaults live), so
the README cannot drift from the code::

    python -m ddsearch.config_docs > study-keys.md
"""

from __future__ import annotations

import sys
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ddsearch.config import CategoricalParam, FloatParam, IntParam, Study
from ddsearch.methods.registry import settings_classes


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "*required*"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{value!r}`" if value is not None else "`null`"


def _rows(model: type[BaseModel], prefix: str, skip: set[str] = frozenset()) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, key + ".")
            continue
        rows.append((key, _type_name(annotation), _default(field), (field.description or "").replace("|", "\\|")))
    return rows


# Descriptions for keys whose schema field has none (config.py stays the home of every default).
_FALLBACK = {
    "name": "study name: the MLflow experiment (unless tracking.experiment) and the state folder",
    "seed": "seed of distillation and evaluation",
    "device": "where trials compute; auto picks CUDA when the trial has a GPU",
    "dataset.name": "data set: digits, mnist, fashion_mnist, cifar10, mhist or imagefolder",
    "dataset.split_seed": "seed of the validation split",
    "dataset.download": "download a missing data set when it can be downloaded",
    "method.name": "the distillation method; its section's keys follow",
    "evaluators": "architectures of the final cross-architecture table (the first one is the leaderboard's test_acc)",
    "objective.metric": "the metric maximised (validation accuracy; test accuracy is never searched on)",
    "objective.mode": "maximise",
    "budget.max_concurrent": "trials running at the same time",
    "budget.time_budget_s": "stop the study after this many seconds (running trials are stopped early)",
    "evaluation.final_repeats": "evaluator repeats for the final table (mean ± std)",
    "evaluation.batch_size": "evaluator minibatch size",
    "scheduler.reduction_factor": "ASHA keeps 1/reduction_factor of the trials at each rung",
    "method.momentum": "momentum of the synthetic-image optimiser",
    "resources.cpu": "CPUs per trial",
    "scheduler.type": "asha stops poor trials early at evaluation points; none runs every trial to the end",
    "sampler.type": "Optuna sampler: tpe, gp (Gaussian process), random, nsga2",
    "sampler.seed": "sampler seed (a study is reproducible)",
    "search.<key>.type": "float, int or categorical",
    "search.<key>.low": "lower bound (inclusive)",
    "search.<key>.high": "upper bound (inclusive)",
    "search.<key>.log": "sample on a log scale (bounds must be > 0)",
    "search.<key>.step": "int step",
    "search.<key>.choices": "the values to choose from (at least one)",
}


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, kind, default, text in rows:
        text = text or _FALLBACK.get(key, "")
        lines.append(f"| `{key}` | {kind} | {default} | {text} |")
    return lines


def study_key_sections() -> dict[str, list[tuple[str, str, str, str]]]:
    """Section title -> (key, type, default, description) rows, for every study key."""
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    top = _rows(Study, "", skip={"method", "search"})
    sections["study"] = top
    for method_name, cls in settings_classes().items():
        rows = _rows(cls, "method.")
        rows.sort(key=lambda r: r[0] != "method.name")
        sections[f"method: {method_name}"] = rows
    search_rows: list[tuple[str, str, str, str]] = []
    for param in (FloatParam, IntParam, CategoricalParam):
        kind = param.__name__.removesuffix("Param").lower()
        for key, typ, default, text in _rows(param, "search.<key>."):
            if key.endswith(".type"):
                continue
            search_rows.append((key, typ, default, f"({kind}) " + (text or _FALLBACK.get(key, ""))))
    search_rows.insert(0, ("search.<key>.type", "'float' \\| 'int' \\| 'categorical'", "`float`", _FALLBACK["search.<key>.type"]))
    sections["search"] = search_rows
    return sections


def study_keys_markdown() -> str:
    """Markdown: one table per section (study, each method, search parameters)."""
    out = []
    for title, rows in study_key_sections().items():
        out += [f"#### {title}", "", *_table(rows), ""]
    out.append("`<key>` in `search` is any setting of the study's method, e.g. `lr_img`, `lambda_mmd`, `ipc`.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(study_keys_markdown())
