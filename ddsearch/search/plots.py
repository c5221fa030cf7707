"""The study's plots for the parent run, in the words of the MLflow UI.

Optuna's own history and intermediate-value plots name trials "Trial3", count steps 1, 2, 3 and
leave out pruned (early-stopped) trials. Here trials carry their run names (trial-003), steps
are distillation iterations (as in the trial runs' metrics) and early-stopped trials are drawn,
marked. Importances and the Pareto front come from Optuna unchanged.
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from typing import Any

from ddsearch.tracking.store import log_figure

OBJECTIVE = "val_acc"


def run_name(number: int) -> str:
    """The MLflow run name of Optuna trial ``number`` (as search.trial names it)."""
    return f"trial-{number:03d}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _last_intermediate(trial: Any) -> tuple[int, float] | None:
    steps = trial.intermediate_values
    if not steps:
        return None
    step = max(steps)
    return step, float(steps[step])


def optimization_history(ot_study: Any, multi: bool) -> Any:
    """val_acc per trial in trial order: finished trials, best so far, and early-stopped ones marked."""
    import optuna

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    done_x, done_y, stop_x, stop_y, stop_it = [], [], [], [], []
    for trial in ot_study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.values:
            done_x.append(trial.number)
            done_y.append(float(trial.values[0]))
        elif trial.state == optuna.trial.TrialState.PRUNED:
            last = _last_intermediate(trial)
            if last is not None:
                stop_x.append(trial.number)
                stop_y.append(last[1])
                stop_it.append(last[0])
    if done_x:
        ax.plot(done_x, done_y, "o", color="#1f77b4", ms=8, label=f"{OBJECTIVE} (ran to the end)")
        best, running = [], float("-inf")
        for y in done_y:
            running = max(running, y)
            best.append(running)
        ax.step(done_x, best, where="post", color="#d62728", lw=1.5, label="best so far")
    if stop_x:
        ax.plot(stop_x, stop_y, "x", color="#7f7f7f", ms=9, mew=2,
                label=f"stopped early ({OBJECTIVE} at its last evaluation)")
        for x, y, it in zip(stop_x, stop_y, stop_it):
            ax.annotate(f"it {it}", (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8, color="#555")
    numbers = sorted(done_x + stop_x)
    ax.margins(x=0.06, y=0.1)
    ax.set_xticks(numbers, [run_name(n) for n in numbers], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("trial (MLflow run name)")
    ax.set_ylabel(OBJECTIVE)
    ax.set_title("Optimisation history" + (" (first objective)" if multi else ""))
    ax.grid(alpha=0.3)
    if numbers:
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    fig.tight_layout()
    return fig


def intermediate_values(ot_study: Any) -> Any:
    """val_acc at each evaluation, by distillation iteration (the steps of the trial runs)."""
    import optuna

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn, ticks = 0, set()
    for trial in ot_study.get_trials(deepcopy=False):
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        ticks.update(steps)
        stopped = trial.state == optuna.trial.TrialState.PRUNED
        ax.plot(steps, [trial.intermediate_values[s] for s in steps], "--" if stopped else "-", marker="o", ms=4,
                label=run_name(trial.number) + (" (stopped early)" if stopped else ""))
        drawn += 1
    if 0 < len(ticks) <= 20:
        ax.set_xticks(sorted(ticks))  # the evaluation points: the steps of the trial runs' val_acc
    ax.set_xlabel("distillation iteration")
    ax.set_ylabel(f"{OBJECTIVE} (checkpoint evaluation)")
    ax.set_title("Intermediate values")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, ncol=2 if drawn > 8 else 1, loc="best")
    fig.tight_layout()
    return fig


def figure_png(fig: Any) -> bytes:
    """A figure as PNG bytes (for the report page)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def log_study_plots(storage_path: "Path | str", study_name: str, space: Any, uri: str, parent_id: str) -> None:
    """plots/*.png on the parent run: history, intermediate values (one objective) or Pareto
    front (two), and parameter importances once two trials finished."""
    import optuna
    from optuna.visualization import matplotlib as vis

    from ddsearch.search.space import load_optuna_study

    plt = _pyplot()
    try:
        ot_study = load_optuna_study(storage_path, study_name)
    except Exception as err:  # noqa: BLE001
        print(f"ddsearch: warning: no Optuna study to plot: {err}", file=sys.stderr)
        return
    complete = ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    multi = space.multi_objective
    target = (lambda t: t.values[0]) if multi else None
    plots: list[tuple[str, Any]] = [("optimization_history", lambda: optimization_history(ot_study, multi))]
    if len(complete) >= 2 and space.keys:
        plots.append(("param_importances",
                      lambda: vis.plot_param_importances(ot_study, target=target, target_name=OBJECTIVE)))
    if not multi:
        plots.append(("intermediate_values", lambda: intermediate_values(ot_study)))
    else:
        plots.append(("pareto_front", lambda: vis.plot_pareto_front(ot_study, target_names=space.metrics)))
    for name, make in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                made = make()
            figure = made if hasattr(made, "savefig") else (made.figure if hasattr(made, "figure") else made[0].figure)
            figure.set_size_inches(8, 4.5)
            figure.tight_layout()
            log_figure(uri, parent_id, figure, f"plots/{name}.png")
            plt.close(figure)
        except Exception as err:  # noqa: BLE001 - e.g. too few trials for importances
            print(f"ddsearch: warning: plot {name} skipped: {err}", file=sys.stderr)
