"""A study's ``search`` section as Optuna distributions, its sampler, and the Tune searcher.

- float / log-float / int / categorical parameters become Optuna distributions;
- the first trial runs the method's published defaults (the study's own method settings, which
  default to the papers' values), clipped into the space;
- the objective is ``val_acc`` (maximised), optionally with a second objective (minimised) for
  a Pareto front;
- samplers: TPE (default, seeded), GP, random, NSGA-II.

:class:`StudySearcher` is Ray's ``OptunaSearch`` with three additions: each suggested config
carries its Optuna trial number (so the trial can tag its MLflow run), the Optuna trial records
its Tune trial id, and trials that diverged or were stopped early are told to Optuna as FAIL /
PRUNED instead of COMPLETE. An error, or a stop before any result, is not final (``--resume``
runs errored and unstarted trials again), so those trials stay RUNNING with the reason noted and
:func:`reconcile_optuna` closes them from Tune's saved state when the study's Tuner ends.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddsearch.config import CategoricalParam, FloatParam, IntParam, Study
from ddsearch.errors import DDSearchError
from ddsearch.search.storage import retrying  # a database storage may be restarting

OPTUNA_NUMBER_KEY = "optuna_trial"
"""Config key through which a trial learns its Optuna trial number."""

FAILED_KEY = "failed"
FINAL_KEY = "final"
# Optuna user attributes of a trial
TUNE_TRIAL_KEY = "tune_trial_id"
REASON_KEY = "ddsearch_reason"
"""Why the trial ended other than COMPLETE."""
UNFINISHED_REASON_KEY = "ddsearch_unfinished_reason"
"""Why a trial not yet closed ended its last attempt (an error, or a stop before any result)."""


@dataclass
class SearchSpace:
    """What the searcher needs: distributions, the first point, the objective(s)."""

    distributions: dict[str, Any]
    first_point: dict[str, Any]
    metrics: list[str]
    modes: list[str]
    clipped: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return list(self.distributions)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def describe(self) -> dict[str, str]:
        return {key: describe_distribution(dist) for key, dist in self.distributions.items()}


def describe_distribution(dist: Any) -> str:
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(repr(c) for c in dist.choices)
    kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
    scale = " log" if dist.log else ""
    step = f" step {dist.step}" if getattr(dist, "step", None) not in (None, 1) else ""
    return f"{kind}{scale} [{dist.low}, {dist.high}]{step}"


def _is_int_field(study: Study, key: str) -> bool:
    annotation = type(study.method).model_fields[key].annotation
    args = set(typing.get_args(annotation)) - {type(None)}
    return annotation is int or (bool(args) and args <= {int})


def build_space(study: Study) -> SearchSpace:
    """Optuna distributions for ``study.search``; every problem is one DDSearchError."""
    import optuna

    if not study.search:
        raise DDSearchError(
            "search: the study searches nothing; add e.g. `search: {lr_img: {type: float, low: 0.1, high: 10, log: true}}` "
            "or run a single configuration with `ddsearch distill`"
        )
    distributions: dict[str, Any] = {}
    for key, param in study.search.items():
        where = f"search.{key}"
        if isinstance(param, FloatParam):
            if _is_int_field(study, key):
                raise DDSearchError(f"{where}: '{key}' is an integer setting of method '{study.method.name}'; use type: int")
            distributions[key] = optuna.distributions.FloatDistribution(param.low, param.high, log=param.log)
        elif isinstance(param, IntParam):
            if param.log and param.step != 1:
                raise DDSearchError(f"{where}: a log-scale int cannot have step {param.step}; use step: 1 or log: false")
            if param.step < 1:
                raise DDSearchError(f"{where}: step must be >= 1, got {param.step}")
            distributions[key] = optuna.distributions.IntDistribution(param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, CategoricalParam):
            for choice in param.choices:
                if choice is not None and not isinstance(choice, (bool, int, float, str)):
                    raise DDSearchError(
                        f"{where}: choice {choice!r} is a {type(choice).__name__}; choices must be numbers, strings or booleans"
                    )
            if len(set(map(repr, param.choices))) != len(param.choices):
                raise DDSearchError(f"{where}: choices repeat a value: {param.choices}")
            distributions[key] = optuna.distributions.CategoricalDistribution(param.choices)
        else:  # pragma: no cover - the schema allows nothing else
            raise DDSearchError(f"{where}: unsupported parameter {param!r}")
        _check_values(study, key, _extremes(param))

    first, clipped = default_point(study, distributions)
    metrics, modes = [study.objective.metric], [study.objective.mode]
    if study.objective.second:
        metrics.append(study.objective.second)
        modes.append("min")
    return SearchSpace(distributions, first, metrics, modes, clipped)


def _extremes(param: Any) -> list[Any]:
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    return [param.low, param.high]


def _check_values(study: Study, key: str, values: list[Any]) -> None:
    """Each bound / choice must be a valid setting of the method (e.g. ipc > 0)."""
    from ddsearch.config import describe_validation_error
    from pydantic import ValidationError

    for value in values:
        try:
            study.with_params({key: value})
        except ValidationError as err:
            problem = describe_validation_error(err, {}).split(": ", 1)[-1]
            raise DDSearchError(f"search.{key}: the value {value!r} is not a valid method.{key}: {problem}") from None
        except DDSearchError as err:
            raise DDSearchError(f"search.{key}: the value {value!r} is not a valid method.{key}: {err}") from None


def default_point(study: Study, distributions: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """The study's method settings for the searched keys, clipped into the space.

    Returns the point and ``{key: (published, used)}`` for the keys that had to be clipped.
    """
    import optuna

    point: dict[str, Any] = {}
    clipped: dict[str, tuple[Any, Any]] = {}
    for key, dist in distributions.items():
        value = getattr(study.method, key)
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            used = value if value in dist.choices else dist.choices[0]
            used = next((c for c in dist.choices if c == used and type(c) is type(used)), used)
        elif isinstance(dist, optuna.distributions.IntDistribution):
            v = int(round(float(value))) if value is not None else dist.low
            v = min(max(v, dist.low), dist.high)
            v = dist.low + int(round((v - dist.low) / dist.step)) * dist.step
            used = min(v, dist.high)
        else:
            v = float(value) if value is not None else dist.low
            used = min(max(v, dist.low), dist.high)
        if used != value:
            clipped[key] = (value, used)
        point[key] = used
    return point, clipped


def make_sampler(study: Study):
    import optuna

    kind, seed = study.sampler.type, study.sampler.seed
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise DDSearchError(f"sampler.type: unknown sampler {kind!r}")  # pragma: no cover - schema-checked


def optuna_storage(path: Path | str):
    """The Optuna storage at ``path`` (the state folder's file) or a database URL (sampler.storage)."""
    from ddsearch.search.storage import rdb

    return rdb(path)


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch


def make_searcher(study: Study, space: SearchSpace, storage_path: Path | str):
    """Seeded OptunaSearch over ``space`` whose Optuna study persists in ``storage_path``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    single = not space.multi_objective
    return StudySearcher(
        space=space.distributions,
        metric=space.metrics[0] if single else space.metrics,
        mode=space.modes[0] if single else space.modes,
        points_to_evaluate=[dict(space.first_point)],
        sampler=make_sampler(study),
        study_name=study.name,
        storage=optuna_storage(storage_path),
    )


class StudySearcher(_searcher_class()):  # type: ignore[misc]
    """OptunaSearch that hands each trial its Optuna number and tells Optuna the true outcome."""

    def suggest(self, trial_id: str) -> dict | None:
        config = retrying(lambda: super(StudySearcher, self).suggest(trial_id), "suggest")
        if config is None:
            return None
        ot_trial = self._ot_trials[trial_id]
        retrying(lambda: ot_trial.set_user_attr(TUNE_TRIAL_KEY, trial_id), "set_user_attr")
        return {**config, OPTUNA_NUMBER_KEY: ot_trial.number}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric) if isinstance(self.metric, str) else None
        if result.get(FAILED_KEY) or result.get(FINAL_KEY) or (value is not None and not math.isfinite(value)):
            return  # (the final result repeats the last evaluation, already reported at its iteration)
        if trial_id not in self._ot_trials:  # a trial this searcher never saw (state older than the trial)
            return
        try:
            step = result.get("iteration")
            if isinstance(self.metric, str) and isinstance(value, (int, float)) and isinstance(step, int):
                # steps are distillation iterations, as in MLflow (40/80/120), not Tune's report count
                retrying(lambda: self._ot_trials[trial_id].report(float(value), step), "report")
                return
            super().on_trial_result(trial_id, result)
        except Exception as err:  # noqa: BLE001 - an Optuna hiccup must not end the whole study
            import logging

            logging.getLogger(__name__).warning("optuna: could not record a result of trial %s: %s", trial_id, err)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if error or not result:
            # Not final: a resume runs errored and unstarted trials again, and one may yet finish.
            # The reason waits on the trial; reconcile_optuna closes it from Tune's saved state.
            reason = ("the trial raised an error (see its MLflow run)" if error
                      else "stopped before it reported a result")
            retrying(lambda: ot_trial.set_user_attr(UNFINISHED_REASON_KEY, reason), "set_user_attr")
            self._completed_trials.add(trial_id)
            return
        state, reason = None, None
        if result.get(FAILED_KEY):
            state, reason = optuna.trial.TrialState.FAIL, str(result.get("failure", "failed"))
        elif not result.get(FINAL_KEY):
            state, reason = optuna.trial.TrialState.PRUNED, f"stopped early at iteration {result.get('iteration')}"
        if state is None:
            retrying(lambda: super(StudySearcher, self).on_trial_complete(trial_id, result=result, error=error), "tell")
            return
        try:
            ot_trial.set_user_attr(REASON_KEY, reason[:1000])
            if state == optuna.trial.TrialState.PRUNED and isinstance(self.metric, str) and result:
                # The scheduler's stop decision came with this result, which Tune hands to
                # on_trial_complete only: record it as the pruned trial's last intermediate value.
                cut = last_value(result, [self.metric])
                if cut is not None:
                    ot_trial.report(cut[1], cut[0])
            self._ot_study.tell(ot_trial, state=state)
        except Exception as err:  # noqa: BLE001 - e.g. already finished before a restore
            import logging

            logging.getLogger(__name__).warning("optuna: could not record trial %s: %s", trial_id, err)
        self._completed_trials.add(trial_id)


def reconcile_optuna(storage_path: Path | str, study_name: str, tune_statuses: dict[str, str],
                     last_results: dict[str, dict] | None = None, metrics: Sequence[str] = ()) -> int:
    """Close the Optuna trials still RUNNING when a study's Tuner has finished, from Tune's saved state.

    ``tune_statuses`` maps Tune trial ids to their status. A trial is COMPLETE with its objective
    values when Tune saved a final result (it ended before Optuna was told, or a resume finished
    it after an error); PRUNED, at its last value if it reported one, when Tune ended it
    (TERMINATED) midway without calling back, as the study's time budget does; else FAIL with the
    reason its last attempt noted.
    Returns how many were closed.
    """
    import optuna

    from ddsearch.search.storage import exists

    if not exists(storage_path):
        return 0
    storage = optuna_storage(storage_path)
    try:
        ot_study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    closed = 0
    for trial in ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tune_id = trial.user_attrs.get(TUNE_TRIAL_KEY)
        result = (last_results or {}).get(tune_id) or {}
        values = final_values(result, metrics)
        if values is not None:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.COMPLETE, values)
        elif tune_statuses.get(tune_id) == "TERMINATED" and not (result.get(FAILED_KEY) or result.get(FINAL_KEY)):
            cut = last_value(result, metrics)
            storage.set_trial_user_attr(trial._trial_id, REASON_KEY, "stopped early " + (
                f"at iteration {cut[0]}" if cut else "before it reported a result") + " (the study's time budget)")
            if cut is not None:
                storage.set_trial_intermediate_value(trial._trial_id, *cut)
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.PRUNED,
                                           None if cut is None else [cut[1]])
        else:
            if tune_id not in tune_statuses:
                reason = "its Tune trial was lost when the driver stopped"
            elif result.get(FINAL_KEY) and not result.get(FAILED_KEY):
                reason = "its Tune trial finished without a finite objective"
            else:
                reason = trial.user_attrs.get(UNFINISHED_REASON_KEY, "its Tune trial ended without a result")
            storage.set_trial_user_attr(trial._trial_id, REASON_KEY, reason)
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        closed += 1
    return closed


def last_value(result: dict, metrics: Sequence[str]) -> tuple[int, float] | None:
    """(iteration, objective) of a single-objective trial's last intermediate result; None when it
    has several objectives (Optuna reports only single-objective values) or no finite value."""
    if len(metrics) != 1 or not isinstance(step := result.get("iteration"), int):
        return None
    value = result.get(metrics[0])
    return (step, float(value)) if isinstance(value, (int, float)) and math.isfinite(value) else None


def final_values(result: dict, metrics: Sequence[str]) -> list[float] | None:
    """The objective values of a trial's final result; None unless it finished with all of them finite."""
    if not metrics or not result.get(FINAL_KEY) or result.get(FAILED_KEY):
        return None
    values = [result.get(m) for m in metrics]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def load_optuna_study(storage_path: Path | str, study_name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study_name, storage=optuna_storage(storage_path))
