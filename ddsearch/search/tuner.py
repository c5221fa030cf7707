"""Ray Tune for a study: the scheduler, the Tuner (new or restored), and the callback that closes
each trial's MLflow run when Tune ends the trial.

Tune drives the trials: a seeded ``OptunaSearch`` whose Optuna study persists in
``<state>/optuna.db``, ASHA (or FIFO) on intermediate ``val_acc``, retries from checkpoints
(``FailureConfig``), and ``--resume`` through ``Tuner.restore``.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ddsearch.search import cluster
from ddsearch.search.notes import stop_reason, trial_note
from ddsearch.search.plan import Plan, max_iterations
from ddsearch.search.space import make_searcher
from ddsearch.search.state import SERVER_LOG, read_session
from ddsearch.tracking.server import TrackingServer
from ddsearch.tracking.study_runs import StudyRuns


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

    Tune pickles its callbacks into the experiment state and a resume unpickles them, so this one
    holds only the study's state folder and reads the running driver's session from it
    (:func:`ddsearch.search.state.read_session`): the tracking URI of this session's server,
    never one of an earlier session.
    """

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a callback pickled before this module existed kept the state folder as ``key``
        self.__dict__.update(state)
        if "state_dir" not in state and "key" in state:
            self.state_dir = state["key"]

    def _runs(self) -> tuple[StudyRuns, dict[str, Any]] | None:
        session = read_session(Path(self.state_dir))
        if session is None:
            return None
        return StudyRuns(session["tracking_uri"], session["experiment_id"], session["parent_run_id"]), session

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=_error_reason(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A retry (e.g. its node died): record why on the trial's run, which the retry keeps."""
        try:
            live = self._runs()
            if live is not None:
                live[0].note_retry(trial.trial_id, _error_reason(trial))
        except Exception:  # noqa: BLE001 - tracking trouble must not stop the study
            pass

    def _close(self, trial: Any, error: str | None) -> None:
        try:
            live = self._runs()
            if live is not None:
                close_trial_run(*live, trial.trial_id, trial.last_result or {}, error)
        except Exception as err:  # noqa: BLE001 - tracking trouble must not stop the study
            print(f"ddsearch: warning: could not close the MLflow run of trial {trial.trial_id}: {err}", file=sys.stderr)


def close_trial_run(runs: StudyRuns, session: dict[str, Any], trial_id: str, result: dict[str, Any],
                    error: str | None = None) -> bool:
    """End a Tune trial's run if nothing has ended it yet: FAILED with ``error``, FINISHED when
    ``result`` is final, else FINISHED as stopped early, saying why (the scheduler or the time budget).

    The callback does this as Tune ends each trial; the end of a study does it again for the
    trials Tune stopped without a callback (those its time budget cut), and for those a resumed
    study's sweep KILLED although Tune had ended them before the driver died. True if a run was closed.
    """
    run = runs.unclosed_trial(trial_id, result.get("mlflow_run_id"))
    if run is None:
        return False
    runs.clear_sweep(run)  # a resume's sweep may have KILLED it before Tune's end was known
    if error is not None:
        runs.fail(run["run_id"], error)
    elif result.get("final"):
        runs.finish(run["run_id"])
    else:
        elapsed = time.time() - session["started"]
        reason = stop_reason(result.get("iteration", "?"), elapsed, session["time_budget_s"], session["scheduler"])
        searched = {k.removeprefix("method."): v for k, v in run["params"].items()}  # the searched ones
        note = trial_note(run["run_name"], session["study"], searched,
                          f"Stopped early: {reason}; val_acc {result.get('val_acc', float('nan')):.4f} there.")
        runs.finish(run["run_id"], outcome="stopped_early", note=note, stopped=reason)
    return True


def start_tracking(plan: Plan, stack: ExitStack) -> str:
    """Connect Ray and, for a local store, start the study's tracking server; the URI trials log to."""
    server = None
    if plan.local_store:
        server = TrackingServer(plan.tracking_uri, plan.state_dir / SERVER_LOG).start()
        stack.callback(server.stop)
    if cluster.connect(plan.address):
        stack.callback(cluster.disconnect)
    cluster.check_fits(plan.study, cluster.node_resources())
    if server is None:
        return plan.tracking_uri
    remote = cluster.remote_nodes()
    if remote:
        print(f"ddsearch: warning: nodes {', '.join(remote)} are other machines; they cannot reach the "
              f"study's tracking server on 127.0.0.1. Set tracking.uri to a server every node can reach.",
              file=sys.stderr)
    server.wait_ready()
    return server.uri


def _scheduler(plan: Plan):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = plan.study
    if s.scheduler.type != "asha":
        return FIFOScheduler()
    top = max_iterations(plan)
    grace = min(s.scheduler.grace_period * s.evaluation.eval_every, top)
    # Rungs sit strictly before the longest run's end, so a trial that reaches its last iteration
    # keeps its final cross-architecture evaluation.
    return ASHAScheduler(
        time_attr="iteration", metric="val_acc", mode="max", max_t=max(top - 1, grace), grace_period=grace,
        reduction_factor=s.scheduler.reduction_factor, stop_last_trials=False,
    )


def build_tuner(plan: Plan, restored: bool, trainable: Any):
    """A new Tuner for the study, or the saved one restored (``--resume``)."""
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
            callbacks=[RunStatusCallback(str(plan.state_dir))],
            verbose=1,
        ),
    )


def saved_trials(plan: Plan) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(trial, run metadata) per trial in the experiment state Tune wrote last: what a resume would
    restore. The files are named by start time, so the last is this session's; [] before the first."""
    files = sorted(plan.ray_dir.glob("experiment_state-*.json"))
    if not files:
        return []
    data = json.loads(files[-1].read_text())
    return [(json.loads(trial), json.loads(run)) for trial, run in data["trial_data"]]


def trial_last_results(plan: Plan) -> dict[str, dict[str, Any]]:
    """Tune trial id -> the last result Tune saved for it (empty where it saved none).

    A trial can end in the instant before a killed driver tells Optuna; a resume does not run it
    again, so its saved final result is what lets Optuna record it as completed.
    """
    return {trial["trial_id"]: run.get("last_result") or {} for trial, run in saved_trials(plan)}


def trial_statuses(grid: Any, plan: Plan) -> dict[str, str]:
    """Tune trial id -> status (TERMINATED, ERROR, PENDING, RUNNING, PAUSED) as Tune saved it.

    Read from the saved experiment state: after an interruption (Ctrl+C, SIGTERM) Tune marks the
    live trials TERMINATED in memory, but the saved state keeps them PENDING/RUNNING.
    """
    saved = saved_trials(plan)
    if saved:
        return {trial["trial_id"]: trial["status"] for trial, _ in saved}
    analysis = getattr(grid, "_experiment_analysis", None)
    return {str(t.trial_id): str(t.status) for t in getattr(analysis, "trials", [])}
