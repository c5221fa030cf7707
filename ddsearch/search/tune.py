"""``ddsearch tune STUDY.yaml [--address ADDR] [--resume] [--set k=v ...] [--dry-run]``.

1. Validate everything before a trial starts: the study and its search space, the data (loaded
   once, on the CPU), the tracking store, the Ray address, and that a trial fits on a node.
2. Tracking: one MLflow parent run per study (its id kept in the state folder, so a resumed study
   keeps it); one child run per trial (created by the trial). A local SQLite store gets an
   ``mlflow server`` for the study, so concurrent trials log over HTTP instead of locking SQLite.
3. Search: Ray Tune with a seeded ``OptunaSearch`` whose Optuna study persists in
   ``<state>/optuna.db`` (or the database of ``sampler.storage``), ASHA (or FIFO) on intermediate
   ``val_acc``, retries from checkpoints (``FailureConfig``), ``--resume`` through ``Tuner.restore``.
4. At the end the parent run gets the leaderboard, the best config and synset, and Optuna's
   plots; no run is left RUNNING.

State folder (``state_dir``, default ``./.ddsearch/<study name>``)::

    .ddsearch-owned  marker: ddsearch created this folder (it deletes only folders it made)
    study.json       the study as it started (a resume must match it)
    overrides.json   the --set overrides it started with (the resume hint repeats them)
    tracking.json    store URI, experiment id and parent run id
    optuna.db        the Optuna study (SQLite), unless sampler.storage names a database
    ray/<name>/      Ray Tune's experiment: trial results and checkpoints
    mlflow-server.log

The folder is created with mode 0700, and a resume refuses a folder another user owns or can
write to: Ray Tune unpickles ``tuner.pkl`` and the searcher state from it.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from ddsearch import tracking
from ddsearch.config import Study, load_study
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.paths import MARKER, check_owner, make_owned_dir, remove_owned_dir
from ddsearch.search import cluster, storage
from ddsearch.search.notes import column_legend, describe_study, stop_reason, trial_note
from ddsearch.search.space import SearchSpace, build_space, make_searcher, reconcile_optuna

STUDY_FILE = "study.json"
OVERRIDES_FILE = "overrides.json"
TRACKING_FILE = "tracking.json"
OPTUNA_FILE = "optuna.db"
SERVER_LOG = "mlflow-server.log"

# The callback below runs in the driver; it finds the live tracking URI here (its pickled copy in
# Tune's experiment state must not pin the URI of a tracking server from an earlier session).
_ACTIVE: dict[str, tuple[str, str, str]] = {}
_CONTEXT: dict[str, dict[str, Any]] = {}  # study name, start time, time budget and scheduler: why a trial stopped


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
        return tracking.sqlite_store_paths(self.tracking_uri) is not None


# ---- validation -----------------------------------------------------------------------------

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

    from ddsearch.runner import load_study_data

    study = load_study(args.study, args.overrides)
    space = build_space(study)
    if study.device == "cuda" and study.resources.gpu == 0:
        raise DDSearchError("device is 'cuda' but resources.gpu is 0, so trials would see no GPU; set resources.gpu")
    data = load_study_data(study, device=torch.device("cpu"))
    _check_trials_buildable(study, space, data)
    state = study.resolved_state_dir()
    check_state_dir(state)
    uri = tracking.resolve_tracking_uri(getattr(args, "tracking_uri", None) or study.tracking.uri, create=False)
    tracking.check_reachable(uri)
    tracking.check_writable(uri, create=False)  # a dry run creates nothing
    storage.check_url(study.sampler.storage)
    storage.check_reachable(study.sampler.storage)
    address = cluster.resolve_address(getattr(args, "address", None))
    cluster.check_address(address)
    if address is None:
        cluster.check_fits(study, [cluster.machine_resources()])
    return Plan(study, str(args.study), space, data, uri, address, state, tuple(getattr(args, "overrides", None) or ()))


def check_state_dir(state: Path) -> None:
    """The state folder must be ours to write (and, since a resume unpickles from it, nobody else's).

    A folder that exists is accepted when ddsearch made it (marker, or an older study.json), or
    when it is empty; anything else is some other folder that a fresh start might clear.
    """
    if state.exists():
        if not state.is_dir():
            raise DDSearchError(f"state_dir {state} is a file, not a folder")
        check_owner(state, "state folder")
        known = (state / MARKER).is_file() or (state / STUDY_FILE).is_file()
        if not known and any(state.iterdir()):
            raise DDSearchError(f"state_dir {state} is a folder ddsearch did not create and it is not empty; "
                                f"choose an empty or new folder for state_dir")
        if not os.access(state, os.W_OK | os.X_OK):
            raise DDSearchError(f"the state folder {state} is not writable; fix its permissions or set state_dir")
        return
    parent = state.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DDSearchError(f"cannot create the state folder {state}: {parent} is not writable; set state_dir "
                            f"(or run from a folder you can write to)")


# ---- the plan -------------------------------------------------------------------------------

def _max_iterations(plan: Plan) -> int:
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
            f"{min(s.scheduler.grace_period * s.evaluation.eval_every, _max_iterations(plan))} it, "
            f"reduction {s.scheduler.reduction_factor:g}, max {_max_iterations(plan)} it)"
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


def _dry_run(plan: Plan) -> int:
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


# ---- state folder -----------------------------------------------------------------------------

def _fingerprint(study: Study) -> dict[str, Any]:
    return study.model_dump(mode="json", exclude={"tracking", "state_dir"})


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [f"{path} (was {old!r}, now {new!r})"]


def _prepare_state(plan: Plan, resume: bool) -> bool:
    """Make the state folder ready; True when Tune's experiment is restored (a resume)."""
    from ray.tune import Tuner

    state = plan.state_dir
    check_state_dir(state)
    restorable = plan.ray_dir.is_dir() and Tuner.can_restore(str(plan.ray_dir))
    if restorable and not resume:
        raise DDSearchError(
            f"study '{plan.study.name}' has already run (state in {state}); add --resume to finish it "
            f"(`{plan.command('--resume')}`), `ddsearch report` to see it, or remove that folder "
            f"(or change `name`) to start over"
        )
    if restorable:
        check_owner(state, "state folder")
        check_owner(plan.ray_dir, "Ray Tune state folder")
        saved = state / STUDY_FILE
        if saved.is_file():
            diffs = _differences(json.loads(saved.read_text()), _fingerprint(plan.study))
            if diffs:
                raise DDSearchError(
                    f"the study changed since it started: {'; '.join(diffs[:3])}; resume it unchanged "
                    f"or start a new study under another name"
                )
        return True
    if resume:
        print(f"nothing to resume for study '{plan.study.name}' in {state}; starting it from the beginning")
    # A fresh start; leftovers of an attempt that died before Tune saved anything are cleared, but
    # only folders ddsearch made (marker file), inside the state folder.
    make_owned_dir(state)
    os.chmod(state, 0o700)  # Ray's pickles live here
    remove_owned_dir(plan.ray_dir, within=state)
    storage.clear(plan.optuna_storage, plan.study.name)
    make_owned_dir(plan.ray_dir.parent)
    make_owned_dir(plan.ray_dir)
    (state / STUDY_FILE).write_text(json.dumps(_fingerprint(plan.study), indent=2))
    (state / OVERRIDES_FILE).write_text(json.dumps(list(plan.overrides), indent=2))
    return False


def _parent_params(plan: Plan) -> dict[str, Any]:
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


def _open_parent(plan: Plan, restored: bool) -> tuple[str, str]:
    """(experiment id, parent run id): created once per study, reused by a resume."""
    uri = plan.tracking_uri
    meta_path = plan.state_dir / TRACKING_FILE
    experiment = tracking.ensure_experiment(plan.experiment_name, uri)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    parent = None
    if meta.get("parent_run_id"):
        if meta.get("store_uri") != uri:
            raise DDSearchError(
                f"this study tracks to {meta.get('store_uri')}, not {uri}; resume it with the same tracking.uri"
            )
        parent = tracking.get_run_or_none(uri, meta["parent_run_id"])
    if parent is not None and not restored:
        tracking.set_tags(uri, parent.info.run_id, {"ddsearch.superseded": "a fresh start of the study replaced this run"})
        if parent.info.status == "RUNNING":
            tracking.set_status(uri, parent.info.run_id, "KILLED")
        parent = None
    tracking.describe_experiment(uri, experiment, describe_study(plan.study, plan.space.metrics))
    if parent is None:
        parent_id = tracking.create_study_run(uri, experiment, plan.study.name, {
            "ddsearch.state_dir": str(plan.state_dir),
            tracking.NOTE_TAG: f"Study {plan.study.name}: running. Its trials are the nested runs below it.",
        })
        meta = {"store_uri": uri, "experiment_id": experiment, "parent_run_id": parent_id}
        meta_path.write_text(json.dumps(meta, indent=2))
        tracking.log_params(uri, parent_id, _parent_params(plan))
        tracking.log_text(uri, parent_id, yaml.safe_dump(plan.study.model_dump(mode="json"), sort_keys=False), "study.yaml")
        return experiment, parent_id
    parent_id = parent.info.run_id
    tracking.set_status(uri, parent_id, "RUNNING")
    for tag in ("ddsearch.interrupted", tracking.TAG_FAILURE, tracking.TAG_OUTCOME):
        if tag in parent.data.tags:
            tracking.delete_tag(uri, parent_id, tag)
    attempts = int(parent.data.tags.get("ddsearch.resumes", "0")) + 1
    tracking.set_tags(uri, parent_id, {"ddsearch.resumes": attempts})
    for child in tracking.child_runs(uri, experiment, parent_id):
        if child.info.status == "RUNNING":  # its trial died with the driver; a resumed trial reopens it
            tracking.set_tags(uri, child.info.run_id, {"ddsearch.interrupted": "the study's driver stopped"})
            tracking.set_status(uri, child.info.run_id, "KILLED")
    return experiment, parent_id


# ---- Tune wiring ------------------------------------------------------------------------------

def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _error_reason(trial: Any) -> str:
    """The last line of a trial's error, for a one-line MLflow tag."""
    try:
        err = trial.get_error()
        if err is not None:
            return str(err).strip().splitlines()[-1][:1000] or "the trial raised an error"
    except Exception:  # noqa: BLE001
        pass
    return "the trial raised an error"


class RunStatusCallback(Callback):
    """Closes a trial's MLflow run when Tune ends the trial (early stop, error, budget).

    Module-level on purpose: Tune pickles callbacks into its experiment state, and a class
    pickled by reference looks the live tracking URI up in ``_ACTIVE`` after a resume.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=_error_reason(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A retry (e.g. its node died): record why on the trial's run, which the retry keeps."""
        active = _ACTIVE.get(self.key)
        if active is None:
            return
        uri, experiment, parent = active
        try:
            run = tracking.find_trial_run(uri, experiment, parent, trial.trial_id)
            if run is not None:
                tracking.set_tags(uri, run.info.run_id, {"ddsearch.previous_failure": _error_reason(trial)})
        except Exception:  # noqa: BLE001 - tracking trouble must not stop the study
            pass

    def _close(self, trial: Any, error: str | None) -> None:
        active = _ACTIVE.get(self.key)
        if active is None:
            return
        uri, experiment, parent = active
        try:
            result = trial.last_result or {}
            run_id = result.get("mlflow_run_id")
            run = tracking.get_run_or_none(uri, run_id) if run_id else None
            if run is None:
                run = tracking.find_trial_run(uri, experiment, parent, trial.trial_id)
            if run is None or run.info.status != "RUNNING":
                return
            if error is not None:
                tracking.fail_run(uri, run.info.run_id, error)
            elif result.get("final"):
                tracking.set_status(uri, run.info.run_id, "FINISHED")
            else:
                ctx = _CONTEXT.get(self.key, {})
                elapsed = time.monotonic() - ctx["started"] if "started" in ctx else None
                reason = stop_reason(result.get("iteration", "?"), elapsed, ctx.get("time_budget_s"),
                                     ctx.get("scheduler", ""))
                searched = {k.removeprefix("method."): v for k, v in run.data.params.items()}  # the searched ones
                note = trial_note(run.info.run_name, ctx.get("study", ""), searched,
                                  f"Stopped early: {reason}; val_acc {result.get('val_acc', float('nan')):.4f} there.")
                tracking.set_tags(uri, run.info.run_id, {
                    tracking.TAG_OUTCOME: "stopped_early", "ddsearch.stopped": reason, tracking.NOTE_TAG: note,
                })
                tracking.set_status(uri, run.info.run_id, "FINISHED")
        except Exception as err:  # noqa: BLE001 - tracking trouble must not stop the study
            print(f"ddsearch: warning: could not close the MLflow run of trial {trial.trial_id}: {err}", file=sys.stderr)


def _scheduler(plan: Plan):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = plan.study
    if s.scheduler.type != "asha":
        return FIFOScheduler()
    top = _max_iterations(plan)
    grace = min(s.scheduler.grace_period * s.evaluation.eval_every, top)
    # Rungs sit strictly before the longest run's end, so a trial that reaches its last iteration
    # keeps its final cross-architecture evaluation.
    return ASHAScheduler(
        time_attr="iteration", metric="val_acc", mode="max", max_t=max(top - 1, grace), grace_period=grace,
        reduction_factor=s.scheduler.reduction_factor, stop_last_trials=False,
    )


def _build_tuner(plan: Plan, restored: bool, trainable: Any, callback_key: str):
    from ray import tune

    s = plan.study
    if restored:
        return tune.Tuner.restore(str(plan.ray_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True, restart_errored=False)
    searcher = make_searcher(s, plan.space, plan.optuna_storage)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(plan),
            num_samples=s.budget.num_samples,
            max_concurrent_trials=s.budget.max_concurrent,
            time_budget_s=s.budget.time_budget_s,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=s.name,
            storage_path=str(plan.state_dir / "ray"),
            failure_config=tune.FailureConfig(max_failures=s.budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[RunStatusCallback(callback_key)],
            verbose=1,
        ),
    )


# ---- the command ----------------------------------------------------------------------------

def tune_command(args: Any) -> int:
    plan = prepare(args)
    if getattr(args, "dry_run", False):
        return _dry_run(plan)
    return run_study(plan, resume=bool(getattr(args, "resume", False)))


def run_study(plan: Plan, resume: bool = False) -> int:
    from ray import tune

    from ddsearch.search.trial import TrialSetup, run_trial

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save Tune's state often: a crash loses little
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tracking.check_writable(plan.tracking_uri)  # creates the local store's folder
    restored = _prepare_state(plan, resume)
    experiment, parent_id = _open_parent(plan, restored)
    store_uri = plan.tracking_uri
    started = time.perf_counter()
    print(f"study '{plan.study.name}': MLflow parent run {parent_id} in {store_uri}"
          + (" (resumed)" if restored else ""))

    try:
        with ExitStack() as stack:
            server = None
            if plan.local_store:
                server = tracking.TrackingServer(store_uri, plan.state_dir / SERVER_LOG).start()
                stack.callback(server.stop)
            if cluster.connect(plan.address):
                stack.callback(cluster.disconnect)
            cluster.check_fits(plan.study, cluster.node_resources())
            if server is not None:
                remote = cluster.remote_nodes()
                if remote:
                    print(f"ddsearch: warning: nodes {', '.join(remote)} are other machines; they cannot reach the "
                          f"study's tracking server on 127.0.0.1. Set tracking.uri to a server every node can reach.",
                          file=sys.stderr)
                server.wait_ready()
            trial_uri = server.uri if server is not None else store_uri
            key = str(plan.state_dir)
            _ACTIVE[key] = (trial_uri, experiment, parent_id)
            stack.callback(_ACTIVE.pop, key, None)
            _CONTEXT[key] = {"study": plan.study.name, "started": time.monotonic(),
                             "time_budget_s": plan.study.budget.time_budget_s, "scheduler": plan.study.scheduler.type}
            stack.callback(_CONTEXT.pop, key, None)

            setup = TrialSetup(plan.study, trial_uri, experiment, parent_id)
            resources = {"cpu": plan.study.resources.cpu, "gpu": plan.study.resources.gpu}
            trainable = tune.with_resources(tune.with_parameters(run_trial, data=plan.data, setup=setup), resources)
            tuner = _build_tuner(plan, restored, trainable, key)
            grid = tuner.fit()
            statuses = _trial_statuses(grid, plan)
            if any(status not in ("TERMINATED", "ERROR") for status in statuses.values()):
                return _interrupted(plan, statuses, trial_uri, experiment, parent_id)
            board = finalize(plan, statuses, trial_uri, experiment, parent_id)
    except BaseException as err:
        # The server and Ray are down by now; the store is written directly. No run stays RUNNING.
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        lines = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {lines[-1] if lines else ''}"
        _safe(lambda: _close_after_error(store_uri, experiment, parent_id, reason, status))
        if isinstance(err, KeyboardInterrupt):
            print(f"study '{plan.study.name}' interrupted; `{plan.command('--resume')}` finishes it", file=sys.stderr)
        raise

    from ddsearch.search.leaderboard import print_leaderboard

    print_leaderboard(board, top=10)
    report = shlex.join(["ddsearch", "report", plan.study_path if not plan.overrides else plan.study.name])
    print(f"study '{plan.study.name}' done in {time.perf_counter() - started:.0f}s; "
          f"`{report}` prints this again, `ddsearch ui` browses it")
    return 0


def _close_after_error(uri: str, experiment: str, parent_id: str, reason: str, status: str) -> None:
    for child in tracking.child_runs(uri, experiment, parent_id):
        if child.info.status == "RUNNING":
            tracking.set_tags(uri, child.info.run_id, {"ddsearch.interrupted": f"the study stopped: {reason}"[:1000]})
            tracking.set_status(uri, child.info.run_id, "KILLED")
    tracking.fail_run(uri, parent_id, reason[:1000], status)


def _safe(fn: Any) -> None:
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        print(f"ddsearch: warning: {err}", file=sys.stderr)


# ---- the end of a study -----------------------------------------------------------------------

def _trial_statuses(grid: Any, plan: Plan) -> dict[str, str]:
    """Tune trial id -> status (TERMINATED, ERROR, PENDING, RUNNING, PAUSED) as Tune saved it.

    Read from the experiment state Tune writes last (what a resume would restore): after an
    interruption (Ctrl+C, SIGTERM) Tune marks the live trials TERMINATED in memory, but the saved
    state keeps them PENDING/RUNNING.
    """
    files = sorted(plan.ray_dir.glob("experiment_state-*.json"))  # named by start time; the last is this session's
    if files:
        data = json.loads(files[-1].read_text())
        return {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in data["trial_data"]}
    analysis = getattr(grid, "_experiment_analysis", None)
    return {str(t.trial_id): str(t.status) for t in getattr(analysis, "trials", [])}


def _interrupted(plan: Plan, statuses: dict[str, str], uri: str, experiment: str, parent_id: str) -> int:
    """Tune stopped before every trial ended (Ctrl+C, SIGTERM): close runs, keep state for --resume."""
    open_trials = sorted(t for t, s in statuses.items() if s not in ("TERMINATED", "ERROR"))
    for child in tracking.child_runs(uri, experiment, parent_id):
        if child.info.status == "RUNNING":
            tracking.set_tags(uri, child.info.run_id, {"ddsearch.interrupted": "the study was interrupted"})
            tracking.set_status(uri, child.info.run_id, "KILLED")
    resume = plan.command("--resume")
    tracking.set_tags(uri, parent_id, {"ddsearch.interrupted": f"{len(open_trials)} trial(s) unfinished; `{resume}` finishes it"})
    tracking.set_status(uri, parent_id, "KILLED")
    print(f"study '{plan.study.name}' interrupted with {len(open_trials)} trial(s) unfinished; `{resume}` finishes it",
          file=sys.stderr)
    return 130


def finalize(plan: Plan, statuses: dict[str, str], uri: str, experiment: str, parent_id: str):
    """Close stray runs, reconcile Optuna, log the leaderboard, best config/synset and plots."""
    from ddsearch.search.leaderboard import finished, leaderboard, outcome_counts
    from ddsearch.search.notes import parent_note
    from ddsearch.search.report_page import study_report

    tune_ids = set(statuses)
    for child in tracking.child_runs(uri, experiment, parent_id):
        trial_id = child.data.tags.get(tracking.TAG_TRIAL_ID)
        if trial_id not in tune_ids and child.data.tags.get(tracking.TAG_OUTCOME) != "lost":
            # Tune had not saved this trial when its driver was killed; the resumed study drew a
            # new sample in its place. Its run stays, closed and marked, for the record.
            tracking.set_tags(uri, child.info.run_id, {
                tracking.TAG_OUTCOME: "lost",
                "ddsearch.lost": "the driver stopped before Tune saved this trial; a resumed study replaced it",
            })
            if child.info.status == "RUNNING":
                tracking.set_status(uri, child.info.run_id, "KILLED")
        elif child.info.status == "RUNNING":
            tracking.set_tags(uri, child.info.run_id, {tracking.TAG_OUTCOME: "unfinished",
                                                       "ddsearch.interrupted": "its trial ended without closing the run"})
            tracking.set_status(uri, child.info.run_id, "KILLED")
    closed = reconcile_optuna(plan.optuna_storage, plan.study.name, tune_ids)
    if closed:
        print(f"optuna: {closed} trial(s) whose Tune trial was lost were marked FAIL")

    board = leaderboard(uri, experiment, parent_id, list(plan.space.keys), plan.space.metrics)
    tracking.log_table(uri, parent_id, board, "leaderboard.json")
    tracking.log_text(uri, parent_id, board.to_csv(index=False), "leaderboard.csv")
    legend = column_legend(plan.study.flat_params())
    tracking.log_text(uri, parent_id, json.dumps(legend, indent=2), "leaderboard_columns.json")
    counts = outcome_counts(board)
    # step 0: single-point metrics, drawn by MLflow as bar charts; every count says how trials ended
    metrics = {f"trials_{what}": float(n) for what, n in counts.items()} | {"trials": float(len(board))}
    done = finished(board)
    best = None
    if len(done):
        best = done.iloc[0]
        metrics |= {"best_val_acc": float(best["val_acc"]), "best_test_acc": float(best["test_acc"])}
        if not math.isnan(best["final_val_acc"]):
            metrics |= {"best_final_val_acc": float(best["final_val_acc"]),
                        "best_final_test_acc": float(best["final_test_acc"])}
        _log_best(plan, uri, parent_id, best)
    tracking.log_metrics(uri, parent_id, metrics)
    _log_plots(plan, uri, parent_id)
    _safe(lambda: tracking.log_text(uri, parent_id, study_report(uri, experiment, parent_id), "report.html"))
    tracking.set_note(uri, parent_id, parent_note(plan.study.name, counts, None if best is None else dict(best)))
    tracking.set_tags(uri, parent_id, {"ddsearch.finalized": time.strftime("%Y-%m-%d %H:%M:%S")})
    tracking.set_status(uri, parent_id, "FINISHED")
    return board


def _log_best(plan: Plan, uri: str, parent_id: str, best: Any) -> None:
    params = {k: _plain(best[k]) for k in plan.space.keys if k in best}
    study = plan.study.with_params(params)
    best_study = study.model_dump(mode="json") | {"name": f"{plan.study.name}-best", "search": {}}
    legend = column_legend(plan.study.flat_params())
    config = {
        "study": plan.study.name, "run_name": best["run"], "mlflow_run_id": best["run_id"],
        "ray_trial_id": best["ray_trial_id"], "optuna_trial": _plain(best["optuna_trial"]),
        "val_acc": float(best["val_acc"]), "test_acc": float(best["test_acc"]),
        "final_val_acc": float(best["final_val_acc"]), "final_test_acc": float(best["final_test_acc"]),
        "params": params,
        "metrics": {k: legend[k] for k in ("val_acc", "test_acc", "final_val_acc", "final_test_acc")},
    }
    tracking.log_text(uri, parent_id, json.dumps(config, indent=2, default=str), "best/best_config.json")
    tracking.log_text(uri, parent_id, "# the best trial as a single run: ddsearch distill best_study.yaml\n"
                      + yaml.safe_dump(best_study, sort_keys=False), "best/best_study.yaml")
    tracking.set_tags(uri, parent_id, {"ddsearch.best_run_id": best["run_id"], "ddsearch.best_trial": best["run"]})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            synset = tracking.download_artifact(uri, best["run_id"], "synset.safetensors", tmp)
        except Exception as err:  # noqa: BLE001
            print(f"ddsearch: warning: the best trial's synset could not be copied: {err}", file=sys.stderr)
            return
        best_path = Path(tmp) / "best_synset.safetensors"
        synset.rename(best_path)
        tracking.log_file(uri, parent_id, best_path, "best")
        from ddsearch.gridview import labelled_grid
        from ddsearch.synset import SyntheticSet

        grid = labelled_grid(SyntheticSet.load(best_path), title=f"best: {best['run']}")
        tracking.log_image(uri, parent_id, grid, "best/best_synset_grid.png")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and not math.isnan(value):
        return value
    return value


def _log_plots(plan: Plan, uri: str, parent_id: str) -> None:
    """Optuna's plots as PNG, trials named by their run names (see ddsearch.search.plots)."""
    from ddsearch.search.plots import log_study_plots

    log_study_plots(plan.optuna_storage, plan.study.name, plan.space, uri, parent_id)
