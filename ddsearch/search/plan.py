"""The plan of a study: validated before any trial starts, printed by ``--dry-run``.

Everything is checked up front: the study and its search space, the data (loaded once, on the
CPU), the tracking store, the Ray address, and that a trial fits on a node.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddsearch.config import Study, load_study
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.search import cluster, storage
from ddsearch.search.space import SearchSpace, build_space
from ddsearch.search.state import OPTUNA_FILE, check_state_dir
from ddsearch.tracking import store


@dataclass
class Plan:
    """A validated study, ready to run."""

    study: Study
    study_path: str
    space: SearchSpace
    data: RealData
    tracking_uri: str
    address: str | None
    state_dir: Path
    overrides: tuple[str, ...] = ()

    def command(self, *extra: str) -> str:
        """The ``ddsearch tune`` command line of this study, --set overrides included (for hints)."""
        sets = [part for item in self.overrides for part in ("--set", item)]
        return shlex.join(["ddsearch", "tune", self.study_path, *sets, *extra])

    @property
    def experiment_name(self) -> str:
        return self.study.tracking.experiment or self.study.name

    @property
    def ray_dir(self) -> Path:
        return self.state_dir / "ray" / self.study.name

    @property
    def optuna_storage(self) -> storage.Location:
        """``sampler.storage`` (a database URL), else ``<state_dir>/optuna.db``."""
        return storage.location(self.study.sampler.storage, self.state_dir / OPTUNA_FILE)

    @property
    def local_store(self) -> bool:
        return store.sqlite_store_paths(self.tracking_uri) is not None


# ---- validation ---------------------------------------------------------------------------

def _check_trials_buildable(study: Study, space: SearchSpace, data: RealData) -> None:
    """The base study and the space's extremes must fit the data (ipc, architectures)."""
    from ddsearch.models import get_network
    from ddsearch.runner import validate_study

    validate_study(study.with_params(space.first_point), data)
    for key, dist in space.distributions.items():
        values = list(getattr(dist, "choices", [])) or [dist.low, dist.high]
        if key == "ipc":
            data.check_ipc(int(max(values)))
        elif key == "arch":
            for arch in values:
                try:
                    get_network(str(arch), data.channels, data.num_classes, data.image_size)
                except DDSearchError as err:
                    raise DDSearchError(f"search.arch: choice {arch!r}: {err}") from None


def prepare(args: Any) -> Plan:
    import torch

    from ddsearch.study_data import load_study_data

    study = load_study(args.study, args.overrides)
    space = build_space(study)
    if study.device == "cuda" and study.resources.gpu == 0:
        raise DDSearchError("device is 'cuda' but resources.gpu is 0, so trials would see no GPU; set resources.gpu")
    data = load_study_data(study, device=torch.device("cpu"))
    _check_trials_buildable(study, space, data)
    state = study.resolved_state_dir()
    check_state_dir(state)
    uri = store.resolve_tracking_uri(getattr(args, "tracking_uri", None) or study.tracking.uri, create=False)
    store.check_reachable(uri)
    store.check_writable(uri, create=False)  # a dry run creates nothing
    storage.check_url(study.sampler.storage)
    storage.check_reachable(study.sampler.storage)
    address = cluster.resolve_address(getattr(args, "address", None))
    cluster.check_address(address)
    if address is None:
        cluster.check_fits(study, [cluster.machine_resources()])
    return Plan(study, str(args.study), space, data, uri, address, state, tuple(getattr(args, "overrides", None) or ()))


# ---- the plan -------------------------------------------------------------------------------

def max_iterations(plan: Plan) -> int:
    dist = plan.space.distributions.get("iterations")
    if dist is None:
        return int(plan.study.method.iterations)
    values = list(getattr(dist, "choices", [])) or [dist.high]
    return int(max(values))


def print_plan(plan: Plan, resources: dict[str, Any]) -> None:
    s = plan.study
    lines = [
        f"study        {s.name}  ({plan.study_path})",
        f"method       {s.method.name}, {s.method.iterations} iterations, ipc {s.method.ipc}, arch {s.method.arch}",
        f"dataset      {plan.data!r}",
        f"evaluation   every {s.evaluation.eval_every} it on {s.evaluation.arch} ({s.evaluation.epochs} epochs); "
        f"final table: {', '.join(s.evaluators)} ({s.evaluation.final_epochs} epochs x {s.evaluation.final_repeats})",
        "search space",
    ]
    for key, text in plan.space.describe().items():
        lines.append(f"  {key:<12} {text}")
    first = ", ".join(f"{k}={v!r}" for k, v in plan.space.first_point.items())
    lines.append(f"first trial  published defaults: {first}")
    for key, (published, used) in plan.space.clipped.items():
        lines.append(f"  note: {key} default {published!r} lies outside the space; the first trial uses {used!r}")
    objective = f"maximise {plan.space.metrics[0]}"
    if plan.space.multi_objective:
        objective += f", minimise {plan.space.metrics[1]} (Pareto front)"
    lines += [
        f"objective    {objective}",
        f"sampler      {s.sampler.type} (seed {s.sampler.seed}), Optuna storage {storage.describe(plan.optuna_storage)}",
        "scheduler    " + (
            f"ASHA on val_acc over distillation iterations (grace {s.scheduler.grace_period} evaluation(s) = "
            f"{min(s.scheduler.grace_period * s.evaluation.eval_every, max_iterations(plan))} it, "
            f"reduction {s.scheduler.reduction_factor:g}, max {max_iterations(plan)} it)"
            if s.scheduler.type == "asha" else "none (FIFO: every trial runs to the end)"
        ),
        f"budget       {s.budget.num_samples} trials, {s.budget.max_concurrent} at a time"
        + (f", time budget {s.budget.time_budget_s:g}s" if s.budget.time_budget_s else "")
        + f", {s.budget.max_failures} retries per trial",
        f"resources    per trial: {s.resources.cpu:g} CPU, {s.resources.gpu:g} GPU (device {s.device})",
        f"tracking     {plan.tracking_uri}, experiment '{plan.experiment_name}'"
        + ("  (a local tracking server is started for the study; trials log over HTTP)" if plan.local_store else ""),
        f"state        {plan.state_dir}",
        f"ray          {resources['where']}: {resources['summary']}",
    ]
    print("\n".join(lines))


def dry_run(plan: Plan) -> int:
    """Check the cluster too, print the plan, and start nothing."""
    if plan.address is None:
        res = cluster.machine_resources()
        cluster.check_fits(plan.study, [res])
        where = {"where": "local Ray (started by `ddsearch tune`)", "summary": f"{res['CPU']:g} CPU, {res['GPU']:g} GPU"}
    else:
        cluster.connect(plan.address)
        try:
            cluster.check_fits(plan.study, cluster.node_resources())
            summ = cluster.cluster_summary()
        finally:
            cluster.disconnect()
        where = {"where": f"cluster at {plan.address}",
                 "summary": f"{summ['nodes']} node(s) {', '.join(summ['node_ips'])}; {summ['CPU']:g} CPU, {summ['GPU']:g} GPU"}
    print_plan(plan, where)
    print("dry run: everything checked; no trial was started")
    return 0
