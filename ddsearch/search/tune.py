"""``ddsearch tune STUDY.yaml [--address ADDR] [--resume] [--set k=v ...] [--dry-run]``.

A study, top to bottom:

1. :mod:`.plan` validates everything before a trial starts (``--dry-run`` stops there);
2. :mod:`.state` readies the state folder (a resume must match it);
3. the parent run opens in MLflow (:class:`~ddsearch.tracking.study_runs.StudyRuns`); a local
   SQLite store gets an ``mlflow server`` for the study, so concurrent trials log over HTTP;
4. :mod:`.tuner` runs the trials on Ray Tune (each one a :mod:`.trial`);
5. :mod:`.finalize` logs the leaderboard, the best trial and the plots, or keeps the state for
   ``--resume`` after an interruption. No run is left RUNNING.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from contextlib import ExitStack
from typing import Any

from ddsearch.search import state
from ddsearch.search.finalize import finalize, interrupted, safely
from ddsearch.search.plan import Plan, dry_run, prepare
from ddsearch.search.parent import open_parent
from ddsearch.search.tuner import RunStatusCallback, build_tuner, start_tracking, trial_statuses  # noqa: F401 - older Tune state unpickles the callback from here
from ddsearch.tracking import store
from ddsearch.tracking.study_runs import StudyRuns


def tune_command(args: Any) -> int:
    plan = prepare(args)
    if getattr(args, "dry_run", False):
        return dry_run(plan)
    return run_study(plan, resume=bool(getattr(args, "resume", False)))


def run_study(plan: Plan, resume: bool = False) -> int:
    from ray import tune

    from ddsearch.search.trial import TrialSetup, run_trial

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save Tune's state often: a crash loses little
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    store.check_writable(plan.tracking_uri)  # creates the local store's folder
    restored = state.prepare_state(plan, resume)
    runs = open_parent(plan, restored)
    started = time.perf_counter()
    print(f"study '{plan.study.name}': MLflow parent run {runs.parent_id} in {plan.tracking_uri}"
          + (" (resumed)" if restored else ""))
    try:
        with ExitStack() as stack:
            trial_uri = start_tracking(plan, stack)
            trial_runs = StudyRuns(trial_uri, runs.experiment_id, runs.parent_id)
            state.write_session(plan.state_dir, {
                "tracking_uri": trial_uri, "experiment_id": runs.experiment_id, "parent_run_id": runs.parent_id,
                "study": plan.study.name, "started": time.time(), "time_budget_s": plan.study.budget.time_budget_s,
                "scheduler": plan.study.scheduler.type,
            })
            stack.callback(state.clear_session, plan.state_dir)
            setup = TrialSetup(plan.study, trial_uri, runs.experiment_id, runs.parent_id)
            resources = {"cpu": plan.study.resources.cpu, "gpu": plan.study.resources.gpu}
            trainable = tune.with_resources(tune.with_parameters(run_trial, data=plan.data, setup=setup), resources)
            statuses = trial_statuses(build_tuner(plan, restored, trainable).fit(), plan)
            if any(status not in ("TERMINATED", "ERROR") for status in statuses.values()):
                return interrupted(plan, statuses, trial_runs)
            board = finalize(plan, statuses, trial_runs)
    except BaseException as err:
        # The server and Ray are down by now; the store is written directly. No run stays RUNNING.
        lines = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {lines[-1] if lines else ''}"
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        safely(lambda: (runs.close_running(f"the study stopped: {reason}"),
                        runs.fail(runs.parent_id, reason[:1000], status)))
        if isinstance(err, KeyboardInterrupt):
            print(f"study '{plan.study.name}' interrupted; `{plan.command('--resume')}` finishes it", file=sys.stderr)
        raise

    from ddsearch.search.leaderboard import print_leaderboard

    print_leaderboard(board, top=10)
    report = shlex.join(["ddsearch", "report", plan.study_path if not plan.overrides else plan.study.name])
    print(f"study '{plan.study.name}' done in {time.perf_counter() - started:.0f}s; "
          f"`{report}` prints this again, `ddsearch ui` browses it")
    return 0
