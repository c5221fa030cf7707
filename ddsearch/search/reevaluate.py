"""Re-evaluate chosen trials of a finished study with a stronger protocol, recorded on its leaderboard.

Why: a search ranks trials on a cheap evaluation (a few hundred epochs, one training). Whether the
search paid is a question for the protocol the papers report (5 trainings x 1000 epochs): the
defaults trial (Optuna trial 0) and the validation-selected best are trained again that way, and
the results go into each trial's run (``protocol_*`` metrics) and the parent run's leaderboard.
Selection never looks at test accuracy.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from ddsearch.config import Study
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.search.leaderboard import FINISHED, STOPPED, finished, leaderboard
from ddsearch.tracking import store
from ddsearch.tracking.lookup import SYNSET_ARTIFACT, download_run_artifact
from ddsearch.tracking.study_runs import StudyRuns

ROLES = ("default", "best")


@dataclass(frozen=True)
class Pick:
    """A trial chosen for re-evaluation and why (its role and the score that chose it)."""

    role: str
    run_id: str
    run: str
    optuna_trial: Any
    outcome: str
    chosen_by: str
    score: float


def choose_trials(board: pd.DataFrame, roles: tuple[str, ...] = ROLES) -> list[Pick]:
    """The defaults trial (Optuna trial 0, even if stopped early) and the best finished trial.

    "Best" is ranked on the final evaluation where trials have one, else on the checkpoint
    ``val_acc``: both are validation accuracy.
    """
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise DDSearchError(f"unknown trial role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}")
    picks: list[Pick] = []
    if "default" in roles:
        rows = board[(board["optuna_trial"] == 0) & board["outcome"].isin([FINISHED, STOPPED])]
        if rows.empty:
            raise DDSearchError("the study has no finished or early-stopped trial 0 (the defaults); "
                                "`ddsearch report` shows how its trials ended")
        row = rows.iloc[0]
        picks.append(Pick("default", row["run_id"], row["run"], row["optuna_trial"], row["outcome"], "optuna_trial=0",
                          float(row["val_acc"])))
    if "best" in roles:
        done = finished(board)
        if done.empty:
            raise DDSearchError("the study has no finished trial to call best; `ddsearch report` shows how its trials ended")
        metric = "final_val_acc" if done["final_val_acc"].notna().any() else "val_acc"
        row = done.sort_values(metric, ascending=False).iloc[0]
        picks.append(Pick("best", row["run_id"], row["run"], row["optuna_trial"], row["outcome"], metric,
                          float(row[metric])))
    return picks


def protocol_label(arch: str, epochs: int, repeats: int, precision: str) -> str:
    return f"{arch}, {repeats} x {epochs} epochs, {precision}"


def reevaluate(study: Study, data: RealData, uri: str, experiment_id: str, parent_id: str,
               epochs: int = 1000, repeats: int = 5, roles: tuple[str, ...] = ROLES,
               progress: bool = True) -> pd.DataFrame:
    """Train each chosen trial's set ``repeats`` x ``epochs``; log it and refresh the leaderboard.

    Returns one row per role: the trial, how it was chosen, and mean/std validation and test accuracy.
    """
    from ddsearch.evaluate import evaluate_synset
    from ddsearch.runner import eval_settings
    from ddsearch.synset import SyntheticSet

    runs = StudyRuns(uri, experiment_id, parent_id)
    board = leaderboard(uri, experiment_id, parent_id)
    picks = choose_trials(board, roles)
    settings = replace(eval_settings(study, final=True), epochs=epochs)
    arch = study.evaluation.arch
    measured: dict[str, dict[str, Any]] = {}
    rows = []
    for pick in picks:
        if pick.run_id not in measured:  # the defaults can be the best: train once
            with tempfile.TemporaryDirectory(prefix="ddsearch-reeval-") as tmp:
                path = download_run_artifact(uri, f"runs:/{pick.run_id}/{SYNSET_ARTIFACT}", tmp)
                synset = SyntheticSet.load(path, expect=data)
            result = evaluate_synset(synset, data, arch, settings, repeats=repeats, seed=study.seed, progress=progress)
            label = protocol_label(arch, epochs, repeats, result.precision)
            metrics = {"protocol_val_acc": result.val_mean, "protocol_val_acc_std": result.val_std,
                       "protocol_test_acc": result.test_mean, "protocol_test_acc_std": result.test_std}
            runs.record_protocol(pick.run_id, metrics, label)
            measured[pick.run_id] = metrics | {"protocol": label, "test_accs": list(result.test_acc),
                                               "train_seconds": result.train_seconds}
        rows.append({"role": pick.role, "run": pick.run, "optuna_trial": pick.optuna_trial, "outcome": pick.outcome,
                     "chosen_by": f"{pick.chosen_by} = {pick.score:.4f}", "run_id": pick.run_id} | measured[pick.run_id])
    table = pd.DataFrame(rows)
    _log_on_parent(runs, table)
    return table


def _log_on_parent(runs: StudyRuns, table: pd.DataFrame) -> None:
    """The re-evaluation table, role metrics and the refreshed leaderboard on the parent run."""
    from ddsearch.search.notes import column_legend
    from ddsearch.search.report_page import study_report

    uri, parent_id = runs.uri, runs.parent_id
    metrics = {f"{row.role}_{key}": float(getattr(row, key)) for row in table.itertuples()
               for key in ("protocol_val_acc", "protocol_test_acc", "protocol_test_acc_std")}
    roles = set(table["role"])
    if {"default", "best"} <= roles:
        metrics["protocol_test_gain"] = metrics["best_protocol_test_acc"] - metrics["default_protocol_test_acc"]
    store.log_metrics(uri, parent_id, {k: v for k, v in metrics.items() if math.isfinite(v)})
    store.log_table(uri, parent_id, table.drop(columns=["test_accs"]), "reevaluation.json")
    board = leaderboard(uri, runs.experiment_id, parent_id)
    store.log_table(uri, parent_id, board, "leaderboard.json")
    store.log_text(uri, parent_id, board.to_csv(index=False), "leaderboard.csv")
    parent = store.get_run_record(uri, parent_id) or {"params": {}}
    store.log_text(uri, parent_id, json.dumps(column_legend(parent["params"]), indent=2), "leaderboard_columns.json")
    store.log_text(uri, parent_id, study_report(uri, runs.experiment_id, parent_id), "report.html")
