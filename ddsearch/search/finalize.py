"""The end of a study: close what is still open, then log the leaderboard, the best trial and
Optuna's plots on the parent run; or, after an interruption, keep the state for ``--resume``.

No run is left RUNNING either way.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from ddsearch.search.notes import column_legend
from ddsearch.search.plan import Plan
from ddsearch.search.space import reconcile_optuna
from ddsearch.search.state import read_session
from ddsearch.search.tuner import close_trial_run, trial_last_results
from ddsearch.tracking import store
from ddsearch.tracking.study_runs import StudyRuns


def safely(fn: Any) -> None:
    """Run ``fn``; a failure is a warning (the study's own outcome matters more)."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        print(f"ddsearch: warning: {err}", file=sys.stderr)


def interrupted(plan: Plan, statuses: dict[str, str], runs: StudyRuns) -> int:
    """Tune stopped before every trial ended (Ctrl+C, SIGTERM): close runs, keep state for --resume."""
    open_trials = sorted(t for t, s in statuses.items() if s not in ("TERMINATED", "ERROR"))
    runs.close_running("the study was interrupted")
    resume = plan.command("--resume")
    runs.interrupt_parent(f"{len(open_trials)} trial(s) unfinished; `{resume}` finishes it")
    print(f"study '{plan.study.name}' interrupted with {len(open_trials)} trial(s) unfinished; `{resume}` finishes it",
          file=sys.stderr)
    return 130


def finalize(plan: Plan, statuses: dict[str, str], runs: StudyRuns):
    """Close stray runs, reconcile Optuna, log the leaderboard, best config/synset and plots."""
    from ddsearch.search.leaderboard import finished, leaderboard, outcome_counts
    from ddsearch.search.notes import parent_note
    from ddsearch.search.report_page import study_report

    tune_ids = set(statuses)
    last_results = trial_last_results(plan)
    session = read_session(plan.state_dir)
    if session is not None:  # Tune ends the trials its time budget cuts without calling back
        for trial_id in (t for t, status in statuses.items() if status == "TERMINATED"):
            safely(partial(close_trial_run, runs, session, trial_id, last_results.get(trial_id, {})))
    runs.mark_lost(tune_ids)
    runs.close_running("its trial ended without closing the run", outcome="unfinished")
    closed = reconcile_optuna(plan.optuna_storage, plan.study.name, statuses, last_results,
                              plan.space.metrics)
    if closed:
        print(f"optuna: {closed} trial(s) left open were closed (COMPLETE where Tune saved their final result, "
              "PRUNED where it ended them midway, else FAIL)")

    uri, experiment, parent_id = runs.uri, runs.experiment_id, runs.parent_id
    board = leaderboard(uri, experiment, parent_id, list(plan.space.keys), plan.space.metrics)
    store.log_table(uri, parent_id, board, "leaderboard.json", replace=True)  # a resumed study refreshes it
    store.log_text(uri, parent_id, board.to_csv(index=False), "leaderboard.csv")
    legend = column_legend(plan.study.flat_params())
    store.log_text(uri, parent_id, json.dumps(legend, indent=2), "leaderboard_columns.json")
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
        _log_best(plan, runs, best)
    store.log_metrics(uri, parent_id, metrics)
    _log_plots(plan, uri, parent_id)
    safely(lambda: store.log_text(uri, parent_id, study_report(uri, experiment, parent_id), "report.html"))
    runs.finish_parent(parent_note(plan.study.name, counts, None if best is None else dict(best)))
    return board


def _log_best(plan: Plan, runs: StudyRuns, best: Any) -> None:
    uri, parent_id = runs.uri, runs.parent_id
    study = plan.study.with_params({k: _plain(best[k]) for k in plan.space.keys if k in best})
    params = {k: getattr(study.method, k) for k in plan.space.keys if k in best}  # typed as the settings are
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
    store.log_text(uri, parent_id, json.dumps(config, indent=2, default=str), "best/best_config.json")
    store.log_text(uri, parent_id, "# the best trial as a single run: ddsearch distill best_study.yaml\n"
                   + yaml.safe_dump(best_study, sort_keys=False), "best/best_study.yaml")
    runs.mark_best(best["run_id"], best["run"])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            synset = store.download_artifact(uri, best["run_id"], "synset.safetensors", tmp)
        except Exception as err:  # noqa: BLE001
            print(f"ddsearch: warning: the best trial's synset could not be copied: {err}", file=sys.stderr)
            return
        best_path = Path(tmp) / "best_synset.safetensors"
        synset.rename(best_path)
        store.log_file(uri, parent_id, best_path, "best")
        from ddsearch.gridview import labelled_grid
        from ddsearch.synset import SyntheticSet

        grid = labelled_grid(SyntheticSet.load(best_path), title=f"best: {best['run']}")
        store.log_image(uri, parent_id, grid, "best/best_synset_grid.png")


def _plain(value: Any) -> Any:
    """A leaderboard cell as a plain Python value.

    numpy scalars are unwrapped, and a whole-number float becomes an int again: pandas stores an
    integer column as float once another row holds NaN (e.g. a trial without an Optuna number).
    """
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _log_plots(plan: Plan, uri: str, parent_id: str) -> None:
    """Optuna's plots as PNG, trials named by their run names (see ddsearch.search.plots)."""
    from ddsearch.search.plots import log_study_plots

    log_study_plots(plan.optuna_storage, plan.study.name, plan.space, uri, parent_id)
