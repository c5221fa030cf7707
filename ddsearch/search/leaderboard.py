"""The study leaderboard: one row per trial, read from MLflow.

First columns, in order: rank, run name, the objective (``val_acc``), ``test_acc``, the searched
params; then the final evaluation, outcome, and the rest. Each metric column means what the
metric of that name means in the trial runs (see :func:`ddsearch.search.notes.column_legend`).
Only trials that ran to the end are ranked: an early-stopped trial's ``val_acc`` was measured at
an earlier iteration, so it is listed below them, unranked.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ddsearch.tracking.store import get_run_record
from ddsearch.tracking.study_runs import (
    TAG_ATTEMPTS,
    TAG_FAILURE,
    TAG_NODE,
    TAG_NODE_IP,
    TAG_OPTUNA,
    TAG_OUTCOME,
    TAG_STOPPED,
    TAG_TRIAL_ID,
    StudyRuns,
)

FINISHED = "finished"
STOPPED = "stopped_early"
# written only by `ddsearch reevaluate`; a column appears once some trial has it
PROTOCOL_COLUMNS = ("protocol_val_acc", "protocol_test_acc", "protocol_test_acc_std")
_OUTCOME_ORDER = {FINISHED: 0, STOPPED: 1, "running": 2, "unfinished": 3, "failed": 4, "lost": 5}


def _number(value: Any) -> Any:
    if value is None:
        return None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return value
    return int(as_float) if as_float.is_integer() and "." not in str(value) and "e" not in str(value).lower() else as_float


def run_link(experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, relative to the UI's address."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def _outcome(status: str, tags: dict[str, str], metrics: dict[str, float]) -> str:
    outcome = tags.get(TAG_OUTCOME)
    if outcome:
        return outcome
    if status == "RUNNING":
        return "running"
    if status == "FAILED" or TAG_FAILURE in tags:
        return "failed"
    return FINISHED if "final_val_acc" in metrics else ""


def leaderboard(uri: str, experiment: str, parent_run_id: str, keys: list[str] | None = None,
                metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per trial run: finished trials ranked by ``val_acc``, the others after them."""
    runs = StudyRuns(uri, experiment, parent_run_id).trial_records()
    if keys is None:
        parent = get_run_record(uri, parent_run_id)
        keys = sorted(k.removeprefix("search.") for k in (parent["params"] if parent else {}) if k.startswith("search."))
    rows = []
    for run in runs:
        m, p, t = run["metrics"], run["params"], run["tags"]
        rows.append({
            "run": run["run_name"],
            "val_acc": m.get("val_acc", math.nan),
            "test_acc": m.get("test_acc", math.nan),
            **{k: _number(p.get(f"method.{k}")) for k in keys},
            "final_val_acc": m.get("final_val_acc", math.nan),
            "final_test_acc": m.get("final_test_acc", math.nan),
            **{k: m.get(k, math.nan) for k in PROTOCOL_COLUMNS},
            "outcome": _outcome(run["status"], t, m),
            "iteration": int(m["iteration"]) if "iteration" in m else None,
            "distill_s": m.get("distill_seconds_total", m.get("distill_seconds", math.nan)),
            "eval_s": m.get("eval_seconds_total", m.get("eval_seconds", math.nan)),
            "status": run["status"],
            "attempts": _number(t.get(TAG_ATTEMPTS, 1)),
            "optuna_trial": _number(t.get(TAG_OPTUNA)),
            "ray_trial_id": t.get(TAG_TRIAL_ID, ""),
            "node": t.get(TAG_NODE, t.get(TAG_NODE_IP, "")),
            "run_id": run["run_id"],
            "link": run_link(experiment, run["run_id"]),
            "note": t.get(TAG_FAILURE, t.get(TAG_STOPPED, ""))[:120],
        })
    protocol = [k for k in PROTOCOL_COLUMNS if any(k in run["metrics"] for run in runs)]
    rows = [{k: v for k, v in row.items() if k not in PROTOCOL_COLUMNS or k in protocol} for row in rows]
    columns = ["run", "val_acc", "test_acc", *keys, "final_val_acc", "final_test_acc", *protocol, "outcome", "iteration",
               "distill_s", "eval_s", "status", "attempts", "optuna_trial", "ray_trial_id", "node", "run_id", "link",
               "note"]
    board = pd.DataFrame(rows, columns=columns)
    if len(board):
        board["_group"] = board["outcome"].map(lambda o: _OUTCOME_ORDER.get(o, 6))
        board["_score"] = board["val_acc"].fillna(-1.0)
        board["_it"] = board["iteration"].fillna(-1)
        board = board.sort_values(["_group", "_score", "_it"], ascending=[True, False, False])
        board = board.drop(columns=["_group", "_score", "_it"]).reset_index(drop=True)
        finished = (board["outcome"] == FINISHED).to_numpy()
        ranks = pd.array([None] * len(board), dtype="Int64")
        ranks[finished] = range(1, int(finished.sum()) + 1)
        board.insert(0, "rank", ranks)
        if metrics and len(metrics) > 1 and metrics[1] in ("distill_seconds", "ipc"):
            board["pareto"] = _pareto(board, "distill_s" if metrics[1] == "distill_seconds" else "ipc")
    else:
        board.insert(0, "rank", pd.array([], dtype="Int64"))
    return board


def finished(board: pd.DataFrame) -> pd.DataFrame:
    """The ranked rows: trials that ran to the end."""
    return board[board["outcome"] == FINISHED] if len(board) else board


def _pareto(board: pd.DataFrame, cost: str) -> list[bool]:
    """Finished trials no other finished trial beats on val_acc (max) and ``cost`` (min)."""
    done = finished(board)
    flags = []
    for _, row in board.iterrows():
        if row["outcome"] != FINISHED:
            flags.append(False)
            continue
        dominated = ((done["val_acc"] >= row["val_acc"]) & (done[cost] <= row[cost])
                     & ((done["val_acc"] > row["val_acc"]) | (done[cost] < row[cost]))).any()
        flags.append(not bool(dominated))
    return flags


def outcome_counts(board: pd.DataFrame) -> dict[str, int]:
    """How the trials ended: finished, stopped_early, failed, ..."""
    if not len(board):
        return {}
    return {str(k or "unknown"): int(v) for k, v in board["outcome"].value_counts().items()}


def print_leaderboard(board: pd.DataFrame, top: int = 20) -> None:
    if not len(board):
        print("no trials recorded yet")
        return
    shown = board.head(top).drop(columns=["run_id", "link", "status", "node"], errors="ignore")
    shown = shown.astype({"rank": "object"}).fillna({"rank": "-"})
    with pd.option_context("display.max_rows", 500, "display.max_columns", 60, "display.width", 250,
                           "display.max_colwidth", 60):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if len(board) > top:
        print(f"... {len(board) - top} more (use --top)")
