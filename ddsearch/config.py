"""The study schema: the single place where every default lives.

A study YAML is validated here; errors name the field path (``method.lambda_mmd``) and suggest
the closest key for typos. ``--set a.b=value`` overrides are applied before validation. Each
method's settings live in its own package; the ``method`` section accepts every method that
:mod:`ddsearch.methods.registry` names.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from ddsearch.errors import DDSearchError, suggest
from ddsearch.methods.registry import settings_classes
from ddsearch.paths import check_input_file
from ddsearch.strict import Strict as _Strict
from ddsearch.yamlio import load_yaml, read_yaml_file

# A study name becomes a folder name (state_dir/ray/<name>) and an MLflow experiment: a plain
# identifier, never a path, so that no study can point ddsearch at a folder outside its own.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class DatasetConfig(_Strict):
    name: str = "digits"
    root: str | None = Field(None, description="data folder; defaults to $DDSEARCH_DATA or ~/.cache/ddsearch/data")
    image_size: int | None = Field(None, gt=0, description="resize to this many pixels (MHIST default 224)")
    val_size: float = Field(0.1, description="validation split carved from train: a fraction (<1) or a count")
    split_seed: int = 0
    download: bool = True

    @field_validator("val_size")
    @classmethod
    def _val_split_needed(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be > 0 (got {value}): searches optimise validation accuracy, so a study "
                             f"needs a validation split, e.g. 0.1")
        return value


DEFAULT_METHOD = "datadam"


def _method_union() -> Any:
    """The ``method`` section's type: every registered settings class, told apart by ``name``."""
    return Annotated[Union[tuple(settings_classes().values())], Field(discriminator="name")]


MethodSettings = _method_union()


class EvaluationConfig(_Strict):
    """Checkpoint evaluation during distillation, and the final cross-architecture table."""

    eval_every: int = Field(200, gt=0, description="evaluate (and checkpoint) every this many iterations")
    arch: str = Field("ConvNet", description="evaluator used at checkpoints")
    epochs: int = Field(300, gt=0, description="evaluator epochs at checkpoints")
    repeats: int = Field(1, gt=0, description="evaluator repeats at checkpoints")
    final_epochs: int = Field(1000, gt=0, description="evaluator epochs for the final table (papers: 1000)")
    final_repeats: int = Field(3, gt=0)
    lr: float = Field(0.01, gt=0, description="evaluator lr unless the synset carries a learned lr")
    batch_size: int = Field(256, gt=0)
    log_every: int = Field(10, gt=0, description="iterations between loss logging / divergence checks")
    max_pixel: float = Field(
        1e6, gt=0, description="a synthetic pixel beyond this size (normalised units) ends the run as diverged"
    )


class FloatParam(_Strict):
    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> "FloatParam":
        _check_bounds(self.low, self.high, self.log)
        return self


class IntParam(_Strict):
    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _bounds(self) -> "IntParam":
        _check_bounds(self.low, self.high, self.log)
        return self


class CategoricalParam(_Strict):
    type: Literal["categorical"] = "categorical"
    choices: list[Any]

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("a categorical needs at least one choice")
        return value


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) is greater than high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log scale needs bounds > 0, got low={low}")


SearchParam = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class ObjectiveConfig(_Strict):
    metric: Literal["val_acc"] = "val_acc"
    mode: Literal["max"] = "max"
    second: Literal["distill_seconds", "ipc"] | None = Field(
        None, description="optional second objective (minimised) for a Pareto front"
    )


class BudgetConfig(_Strict):
    num_samples: int = Field(8, gt=0, description="number of trials")
    max_concurrent: int = Field(2, gt=0)
    time_budget_s: float | None = Field(None, gt=0)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial (from its last checkpoint)")


class ResourcesConfig(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="may be fractional to pack several trials on a GPU")


class SchedulerConfig(_Strict):
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, gt=0, description="evaluation checkpoints before a trial may be stopped")
    reduction_factor: float = Field(2.0, gt=1)


class SamplerConfig(_Strict):
    type: Literal["tpe", "gp", "random", "nsga2"] = "tpe"
    seed: int = 0
    storage: str | None = Field(
        None, description="Optuna RDB URL, e.g. postgresql://user@host:5432/optuna (no password: use PGPASSWORD); "
                          "default: <state_dir>/optuna.db"
    )


class TrackingConfig(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default: a local store under ./mlruns")
    experiment: str | None = Field(None, description="MLflow experiment; default: the study name")
    outage_s: float = Field(
        600.0, gt=0, description="a trial rides out a tracking-server outage this long (logs queue in its "
                                 "checkpoint), then fails with that reason"
    )


def check_name(value: str) -> str:
    """A study name is a plain identifier: it names a folder and must never be a path."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{value!r} is not a plain name; use letters, digits, '.', '_' and '-' only "
            f"(no '/' and not '.' or '..'), at most 100 characters"
        )
    return value


class Study(_Strict):
    name: str = Field("study", description="study name, a plain identifier (letters, digits, '.', '_', '-'): the "
                                         "MLflow experiment (unless tracking.experiment) and the state folder's name")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="network compute precision; 'auto': bf16 where the CPU (AMX/AVX512-BF16) or GPU runs it fast"
    )
    dataset: DatasetConfig = DatasetConfig()
    method: MethodSettings = settings_classes()[DEFAULT_METHOD]()
    evaluation: EvaluationConfig = EvaluationConfig()
    evaluators: list[str] = Field(default_factory=lambda: ["ConvNet"])
    search: dict[str, SearchParam] = Field(default_factory=dict)
    objective: ObjectiveConfig = ObjectiveConfig()
    budget: BudgetConfig = BudgetConfig()
    resources: ResourcesConfig = ResourcesConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    sampler: SamplerConfig = SamplerConfig()
    tracking: TrackingConfig = TrackingConfig()
    state_dir: str | None = Field(None, description="where Optuna storage, checkpoints and caches live")

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, value: str) -> str:
        return check_name(value)

    @model_validator(mode="after")
    def _search_keys_exist(self) -> "Study":
        fields = type(self.method).model_fields
        for key in self.search:
            if key not in fields or key == "name":
                raise ValueError(_unknown_key_message(f"search.{key}", key, [f for f in fields if f != "name"], f"setting of method '{self.method.name}'"))
        return self

    @model_validator(mode="after")
    def _search_values_valid(self) -> "Study":
        """Every categorical choice and both bounds must be a valid method setting (caught at --dry-run)."""
        cls = type(self.method)
        base = self.method.model_dump()
        for key, param in self.search.items():
            if isinstance(param, CategoricalParam):
                values, what = param.choices, "choice"
            else:
                values, what = [param.low, param.high], "bound"
            for value in values:
                if isinstance(value, (list, dict)):
                    continue  # not a scalar: the search space refuses it with its own message
                try:
                    cls.model_validate(base | {key: value})
                except ValidationError as err:
                    first = err.errors()[0]
                    raise ValueError(f"search.{key}: {what} {value!r} is not a valid method.{key}: "
                                     f"{first['msg'].removeprefix('Value error, ')}") from None
        return self

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir or Path(".ddsearch") / self.name).resolve()

    def with_params(self, params: dict[str, Any]) -> "Study":
        """This study with some method settings replaced (one trial's sample)."""
        method = self.method.model_dump() | params
        return self.model_copy(update={"method": type(self.method).model_validate(method)})

    def flat_params(self) -> dict[str, Any]:
        """Flat key -> value view for logging as MLflow params."""
        out: dict[str, Any] = {}
        for section in ("dataset", "method", "evaluation"):
            for key, value in getattr(self, section).model_dump().items():
                out[f"{section}.{key}"] = value
        out["evaluators"] = ",".join(self.evaluators)
        out["seed"] = self.seed
        out["precision"] = self.precision
        return out


def _unknown_key_message(path: str, key: str, valid: list[str], what: str) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return f"unknown {what} '{key}'; {hint}"


# ---- loading ------------------------------------------------------------------------------

def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (so 0.1, true, [a, b] work)."""
    for item in overrides:
        if "=" not in item:
            raise DDSearchError(f"--set {item!r} is not key=value; write e.g. --set method.ipc=10")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise DDSearchError(f"--set {key!r}: empty key; write e.g. --set method.ipc=10")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise DDSearchError(f"--set {key}: '{part}' is not a section")
            node = child
        node[parts[-1]] = load_yaml(value, f"--set {key}", max_bytes=10_000, max_nodes=1_000)
    return raw


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read, override and validate a study file; every problem becomes one clear line."""
    path = check_input_file(path, "study file", "see studies/ for examples")
    raw = read_yaml_file(path, "study file") or {}
    if not isinstance(raw, dict):
        raise DDSearchError(f"{path}: a study must be a mapping of keys (name, dataset, method, ...)")
    raw.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).strip(".") or "study")
    raw = apply_overrides(raw, overrides or [])
    if isinstance(raw.get("method"), dict):
        raw["method"].setdefault("name", Study.model_fields["method"].default.name)
    return study_from_dict(raw, source=str(path))


def study_from_dict(raw: dict[str, Any], source: str = "study") -> Study:
    try:
        return Study.model_validate(raw)
    except ValidationError as err:
        raise DDSearchError(f"{source}: {describe_validation_error(err, raw)}") from None


def describe_validation_error(err: ValidationError, raw: dict[str, Any]) -> str:
    """The first problem, as 'field.path: what is wrong', with suggestions for unknown keys."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not _is_union_tag(p, raw)]
    path = ".".join(loc) or "study"
    if first["type"] == "extra_forbidden":
        parent_model = _model_at(loc[:-1], raw)
        valid = list(parent_model.model_fields) if parent_model else []
        return f"{path}: " + _unknown_key_message(path, loc[-1], valid, "key")
    if first["type"] == "union_tag_not_found":
        return f"{path}: 'name' is required here; for a method choose from: {', '.join(settings_classes())}"
    if first["type"] == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag", first["input"])
        if path.startswith("search"):
            return f"{path}: unknown parameter type {tag!r}; choose from: float, int, categorical"
        return f"{path}: {suggest(str(tag), settings_classes(), 'method')}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if loc else message


def _is_union_tag(part: Any, raw: dict[str, Any]) -> bool:
    return part in settings_classes() or part in ("float", "int", "categorical")


def _model_at(loc: list[str], raw: dict[str, Any]) -> type[BaseModel] | None:
    model: type[BaseModel] = Study
    node: Any = raw
    for part in loc:
        if model is Study and part == "method":
            node = node.get("method", {}) if isinstance(node, dict) else {}
            classes = settings_classes()
            model = classes.get(node.get("name", DEFAULT_METHOD), classes[DEFAULT_METHOD])
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            node = node.get(part, {}) if isinstance(node, dict) else {}
        else:
            return None
    return model


def study_schema() -> str:
    """The JSON Schema of a study file, for editors."""
    return json.dumps(Study.model_json_schema(), indent=2)


def rebuild_method_union() -> None:
    """Accept every method registered so far (``methods.registry.register`` calls this)."""
    global MethodSettings
    MethodSettings = _method_union()
    default = Study.model_fields["method"].default
    Study.__annotations__["method"] = MethodSettings
    Study.model_fields["method"] = FieldInfo.from_annotated_attribute(MethodSettings, default)
    Study.model_rebuild(force=True)
