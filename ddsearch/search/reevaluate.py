"""Re-evaluate chosen trials of a finished study with a stronger protocol, recorded on its leaderboard.

Why: a search ranks trials on a cheap evaluation (a few hundred epochs, one training). Whether the
search paid is a question for the protocol the papers report (5 trainings x 1000 epochs): the
defaults trial (Optuna trial 0) and the validation-selected best are trained again that way, and
the results go into each trial's run (``protocol_*`` metrics) and the parent run's leaderboard.
Selection never looks at test accuracy.

Whether distillation paid at all is a question for real images: the controls (herding's picks by
default, random images or k-center on request) are trained the same way at each chosen set's IPC,
and each trial is marked as beating a control only when its lead exceeds twice the std of the gap.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from dataclasses import dataclass, replace
from typing import Any, Callable

import pandas as pd

from ddsearch.config import Study
from ddsearch.coreset import CONTROLS
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import EvalResult, TrainSettings
from ddsearch.search.leaderboard import FINISHED, PROTOCOL_COLUMNS, STOPPED, finished, leaderboard
from ddsearch.search.report_page import reevaluation_table
from ddsearch.tracking import store
from ddsearch.tracking.lookup import SYNSET_ARTIFACT, download_run_artifact
from ddsearch.tracking.study_runs import TAG_PROTOCOL, StudyRuns

ROLES = ("default", "best")
# every figure a re-evaluation records for a set (the leaderboard shows PROTOCOL_COLUMNS of them)
PROTOCOL_METRICS = ("protocol_val_acc", "protocol_val_acc_std", "protocol_test_acc", "protocol_test_acc_std")


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


def check_controls(controls: tuple[str, ...]) -> None:
    unknown = sorted(set(controls) - set(CONTROLS))
    if unknown:
        raise DDSearchError(f"unknown control(s) {', '.join(unknown)}; choose from {', '.join(CONTROLS)} (or none)")


def reevaluate(study: Study, data: RealData, uri: str, experiment_id: str, parent_id: str,
               epochs: int = 1000, repeats: int = 5, roles: tuple[str, ...] = ROLES,
               controls: tuple[str, ...] = ("herding",), retrain: bool = False,
               progress: bool = True) -> pd.DataFrame:
    """Train each chosen trial's set ``repeats`` x ``epochs``, then each control at those sets' IPCs;
    log it all and refresh the leaderboard.

    A trial already measured under this very protocol (its ``ddsearch.protocol`` tag) keeps its
    figures unless ``retrain``. Returns one row per role and control: the set, how it was chosen,
    mean/std validation and test accuracy, and each trial's lead over each control.
    """
    from ddsearch.evaluate import evaluate_synset
    from ddsearch.precision import resolve_precision
    from ddsearch.runner import eval_settings
    from ddsearch.synset import SyntheticSet

    check_controls(controls)
    runs = StudyRuns(uri, experiment_id, parent_id)
    board = leaderboard(uri, experiment_id, parent_id)
    picks = choose_trials(board, roles)
    settings = replace(eval_settings(study, final=True), epochs=epochs)
    arch = study.evaluation.arch
    label = protocol_label(arch, epochs, repeats, resolve_precision(settings.precision, data.train_x.device))
    measured: dict[str, dict[str, Any]] = {}
    rows = []
    for pick in picks:
        if pick.run_id not in measured:  # the defaults can be the best: train once
            with tempfile.TemporaryDirectory(prefix="ddsearch-reeval-") as tmp:
                path = download_run_artifact(uri, f"runs:/{pick.run_id}/{SYNSET_ARTIFACT}", tmp)
                synset = SyntheticSet.load(path, expect=data)
            recorded = None if retrain else _recorded(uri, pick.run_id, label)
            if recorded is None:
                result = evaluate_synset(synset, data, arch, settings, repeats=repeats, seed=study.seed,
                                         progress=progress)
                recorded = _protocol_metrics(result)
                runs.record_protocol(pick.run_id, recorded, label)
                recorded |= {"test_accs": list(result.test_acc), "train_seconds": result.train_seconds}
            measured[pick.run_id] = recorded | {"protocol": label, "ipc": synset.ipc}
        rows.append({"role": pick.role, "run": pick.run, "optuna_trial": pick.optuna_trial, "outcome": pick.outcome,
                     "chosen_by": f"{pick.chosen_by} = {pick.score:.4f}", "run_id": pick.run_id} | measured[pick.run_id])
    rows += _control_rows(study, data, controls, sorted({row["ipc"] for row in rows}), settings, repeats, label,
                          progress)
    rows += _earlier_controls(uri, parent_id, label, {(row["role"], row["ipc"]) for row in rows})
    table = _with_leads(pd.DataFrame(rows))
    _log_on_parent(runs, table)
    return table


def _protocol_metrics(result: EvalResult) -> dict[str, float]:
    return {"protocol_val_acc": result.val_mean, "protocol_val_acc_std": result.val_std,
            "protocol_test_acc": result.test_mean, "protocol_test_acc_std": result.test_std}


def _recorded(uri: str, run_id: str, label: str) -> dict[str, float] | None:
    """The run's ``protocol_*`` metrics when an earlier re-evaluation measured them under ``label``."""
    run = store.get_run_record(uri, run_id)
    if run is None or run["tags"].get(TAG_PROTOCOL) != label:
        return None
    if not all(k in run["metrics"] for k in PROTOCOL_METRICS):
        return None
    print(f"{run['run_name']}: already measured as {label}; reusing it (--retrain trains it again)")
    return {k: run["metrics"][k] for k in PROTOCOL_METRICS}


def _control_rows(study: Study, data: RealData, controls: tuple[str, ...], ipcs: list[int],
                  settings: TrainSettings, repeats: int, label: str, progress: bool) -> list[dict[str, Any]]:
    """Each control at each IPC, trained like the trials' sets (the selectors embed in the study's network)."""
    from ddsearch.coreset import control_set, embedding_network
    from ddsearch.evaluate import evaluate_synset

    method = study.method
    embedder: Callable[[], Any] = functools.cache(lambda: embedding_network(
        data, method.arch, epochs=method.init_embed_epochs, seed=study.seed, progress=progress))
    rows = []
    for control in controls:
        for ipc in ipcs:
            synset = control_set(data, ipc, control, embedder, seed=study.seed)
            result = evaluate_synset(synset, data, study.evaluation.arch, settings, repeats=repeats,
                                     seed=study.seed, progress=progress)
            rows.append({"role": control, "run": f"{control}: {ipc} real images per class", "optuna_trial": None,
                         "outcome": "control", "chosen_by": f"{control} on the training split", "run_id": None}
                        | _protocol_metrics(result)
                        | {"test_accs": list(result.test_acc), "train_seconds": result.train_seconds,
                           "protocol": label, "ipc": ipc})
    return rows


def _earlier_controls(uri: str, parent_id: str, label: str, measured: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """Control rows an earlier re-evaluation logged under the same protocol and this call did not
    train again: the table keeps every control measured so far."""
    earlier = reevaluation_table(uri, parent_id)
    if earlier is None or "outcome" not in earlier.columns:
        return []
    kept = earlier[(earlier["outcome"] == "control") & (earlier["protocol"] == label)]
    kept = kept.drop(columns=[c for c in kept.columns if c.startswith(("over_", "beats_"))])  # recomputed
    return [row | {"ipc": int(row["ipc"])} for row in kept.to_dict("records")
            if (row["role"], int(row["ipc"])) not in measured]


def _with_leads(table: pd.DataFrame) -> pd.DataFrame:
    """Each trial's test lead over each control in the table at its IPC, the bar it must clear, and whether it does."""
    from ddsearch.evaluate import two_std

    for control in dict.fromkeys(table.loc[table["outcome"] == "control", "role"]):
        lead, bar = [], []
        for row in table.itertuples():
            ref = table[(table["role"] == control) & (table["ipc"] == row.ipc)]
            if row.outcome == "control" or ref.empty:
                lead.append(math.nan)
                bar.append(math.nan)
                continue
            lead.append(row.protocol_test_acc - float(ref["protocol_test_acc"].iloc[0]))
            bar.append(two_std(row.protocol_test_acc_std, float(ref["protocol_test_acc_std"].iloc[0])))
        table[f"over_{control}"] = lead
        table[f"over_{control}_two_std"] = bar
        table[f"beats_{control}"] = [None if math.isnan(g) else bool(g > b) for g, b in zip(lead, bar)]
    return table


def _log_on_parent(runs: StudyRuns, table: pd.DataFrame) -> None:
    """The re-evaluation table, role metrics and the refreshed leaderboard on the parent run."""
    from ddsearch.search.notes import column_legend
    from ddsearch.search.report_page import study_report

    uri, parent_id = runs.uri, runs.parent_id
    trials = table[table["outcome"] != "control"]
    metrics = {f"{row.role}_{key}": float(getattr(row, key)) for row in trials.itertuples()
               for key in PROTOCOL_COLUMNS}
    for row in table[table["outcome"] == "control"].itertuples():
        metrics |= {f"{row.role}_ipc{row.ipc}_{key}": float(getattr(row, key)) for key in PROTOCOL_COLUMNS}
    for column in (c for c in table.columns if c.startswith("over_") and not c.endswith("_two_std")):
        metrics |= {f"{row.role}_{column}": float(getattr(row, column)) for row in trials.itertuples()}
    roles = set(trials["role"])
    if {"default", "best"} <= roles:
        metrics["protocol_test_gain"] = metrics["best_protocol_test_acc"] - metrics["default_protocol_test_acc"]
    store.log_metrics(uri, parent_id, {k: v for k, v in metrics.items() if math.isfinite(v)})
    store.log_table(uri, parent_id, table.drop(columns=["test_accs"], errors="ignore"), "reevaluation.json",
                    replace=True)
    board = leaderboard(uri, runs.experiment_id, parent_id)
    store.log_table(uri, parent_id, board, "leaderboard.json", replace=True)
    store.log_text(uri, parent_id, board.to_csv(index=False), "leaderboard.csv")
    parent = store.get_run_record(uri, parent_id) or {"params": {}}
    store.log_text(uri, parent_id, json.dumps(column_legend(parent["params"]), indent=2), "leaderboard_columns.json")
    store.log_text(uri, parent_id, study_report(uri, runs.experiment_id, parent_id), "report.html")
