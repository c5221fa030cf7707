"""The study's parent run: created once per study, reopened by a resume, recorded in the state
folder; its params are the study's fixed settings and search space."""

from __future__ import annotations

from typing import Any

import yaml

from ddsearch.search import state
from ddsearch.search.notes import describe_study
from ddsearch.search.plan import Plan
from ddsearch.tracking import store
from ddsearch.tracking.study_runs import StudyRuns


def parent_params(plan: Plan) -> dict[str, Any]:
    """The parent run's params: the fixed settings, the search space, objective, budget, resources."""
    s = plan.study
    params = {k: v for k, v in s.flat_params().items() if k.removeprefix("method.") not in s.search}
    params |= {f"search.{k}": v for k, v in plan.space.describe().items()}
    params |= {
        "objective": ",".join(plan.space.metrics),
        "sampler": f"{s.sampler.type}(seed={s.sampler.seed})",
        "scheduler": s.scheduler.type,
        "budget.num_samples": s.budget.num_samples,
        "budget.max_concurrent": s.budget.max_concurrent,
        "budget.time_budget_s": s.budget.time_budget_s,
        "budget.max_failures": s.budget.max_failures,
        "resources.cpu": s.resources.cpu,
        "resources.gpu": s.resources.gpu,
    }
    return params


def open_parent(plan: Plan, restored: bool) -> StudyRuns:
    """The study's parent run: created once per study, reopened by a resume."""
    runs = StudyRuns.in_experiment(plan.tracking_uri, plan.experiment_name)
    previous = state.previous_parent(plan.state_dir, plan.tracking_uri)
    created = runs.open_parent(plan.study.name, previous, restored, describe_study(plan.study, plan.space.metrics),
                               str(plan.state_dir))
    if created:
        state.record_parent(plan.state_dir, plan.tracking_uri, runs.experiment_id, runs.parent_id)
        store.log_params(plan.tracking_uri, runs.parent_id, parent_params(plan))
        store.log_text(plan.tracking_uri, runs.parent_id,
                       yaml.safe_dump(plan.study.model_dump(mode="json"), sort_keys=False), "study.yaml")
    return runs
