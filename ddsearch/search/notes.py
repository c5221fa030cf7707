"""The words a user reads first: the experiment's description, each run's one-line note, why a
trial stopped, what each leaderboard column measures, and a re-evaluation against real images.

Every metric name has one meaning everywhere (trial runs, leaderboard, best config, the parent
run, the plots and the report page); :func:`column_legend` is where those meanings are written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddsearch.config import Study

if TYPE_CHECKING:
    import pandas as pd


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evaluation_protocols(params: dict[str, Any]) -> tuple[str, str]:
    """(checkpoint, final) evaluation in words, from a study's flat params (the parent's params)."""
    ckpt = (f"checkpoint evaluation: {params.get('evaluation.arch', '?')}, {params.get('evaluation.epochs', '?')} epochs "
            f"x {params.get('evaluation.repeats', '?')} repeat(s)")
    evaluators = str(params.get("evaluators", "?")).split(",")
    final = (f"final evaluation: {evaluators[0]}, {params.get('evaluation.final_epochs', '?')} epochs "
             f"x {params.get('evaluation.final_repeats', '?')} repeat(s)")
    return ckpt, final


def column_legend(params: dict[str, Any]) -> dict[str, str]:
    """Leaderboard column -> what it measures (the same meaning the metric has in every run)."""
    ckpt, final = evaluation_protocols(params)
    return {
        "rank": "rank among trials that ran to the end, by val_acc (the objective); blank for the others",
        "run": "the trial's MLflow run name (trial-NNN: NNN is the Optuna trial number)",
        "val_acc": f"the objective: validation accuracy at the trial's last evaluated iteration ({ckpt})",
        "test_acc": f"test accuracy at the same point ({ckpt}); reported, never optimised",
        "final_val_acc": f"validation accuracy of the finished set ({final}); finished trials only",
        "final_test_acc": f"test accuracy of the finished set ({final}); finished trials only",
        "protocol_val_acc": "validation accuracy re-measured by `ddsearch reevaluate` (mean over its trainings; "
                            "the run's ddsearch.protocol tag says which)",
        "protocol_test_acc": "test accuracy re-measured by `ddsearch reevaluate` (mean); reported, never used to choose",
        "protocol_test_acc_std": "standard deviation of protocol_test_acc over those trainings",
        "outcome": "finished, stopped_early (by the scheduler or the time budget: see note), failed, ...",
        "iteration": "the last distillation iteration the trial reached",
        "ray_trial_id": "Ray Tune's id of the trial",
        "link": "the trial's run in the MLflow UI",
    }


def describe_study(study: Study, metrics: list[str]) -> str:
    """The experiment's description: method, data set, objective, budget."""
    m, b = study.method, study.budget
    searched = ", ".join(study.search) or "nothing"
    objective = f"maximise {metrics[0]}" + (f", minimise {metrics[1]} (Pareto front)" if len(metrics) > 1 else "")
    budget = f"{b.num_samples} trials, {b.max_concurrent} at a time"
    if b.time_budget_s:
        budget += f", time budget {b.time_budget_s:g}s"
    scheduler = "ASHA early stopping" if study.scheduler.type == "asha" else "no early stopping"
    ckpt, final = evaluation_protocols(study.flat_params())
    return (
        f"ddsearch study **{study.name}**: {m.name} distillation of `{study.dataset.name}`, "
        f"{m.iterations} iterations, ipc {m.ipc}; searching {searched} ({study.sampler.type} sampler, {scheduler}).\n\n"
        f"Objective: {objective}; `val_acc` is the {ckpt} at a trial's last evaluated iteration. "
        f"`final_val_acc`/`final_test_acc` are the {final} (trials that ran to the end).\n\n"
        f"Budget: {budget}. The study's parent run holds `report.html` (the study at a glance) and the leaderboard."
    )


def trial_note(name: str, study_name: str, searched: dict[str, Any], state: str) -> str:
    """A trial run's one-line description."""
    settings = ", ".join(f"{k}={_fmt(v)}" for k, v in searched.items()) or "the study's settings"
    return f"{name} of study {study_name}: {settings}. {state}"


def stop_reason(iteration: Any, elapsed_s: float | None, time_budget_s: float | None, scheduler: str) -> str:
    """Why Tune stopped a trial before its last iteration: the time budget or the scheduler."""
    if time_budget_s and elapsed_s is not None and elapsed_s >= 0.95 * time_budget_s:
        return f"stopped at iteration {iteration} by the study's time budget ({time_budget_s:g}s)"
    if scheduler == "asha":
        return f"stopped at iteration {iteration} by the ASHA scheduler (val_acc below its rung's cutoff)"
    return f"stopped at iteration {iteration} by Tune"


def parent_note(study_name: str, counts: dict[str, int], best: dict[str, Any] | None) -> str:
    """The parent run's one-line description: how the trials ended and which one won."""
    total = sum(counts.values())
    parts = [f"{n} {what.replace('_', ' ')}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    text = f"Study {study_name}: {total} trials ({', '.join(parts) or 'none'})."
    if best:
        text += f" Best: {best['run']} with val_acc {best['val_acc']:.4f}, test_acc {best['test_acc']:.4f}."
    return text + " Open report.html for the study at a glance."


def reevaluation_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """The re-evaluation as printable rows: each set's test mean ± std and each trial's lead over each control."""
    controls = [c.removeprefix("beats_") for c in table.columns if c.startswith("beats_")]
    rows = []
    for r in table.to_dict("records"):
        row = {"role": r["role"], "run": r["run"], "chosen by": r["chosen_by"], "protocol": r["protocol"],
               "val": f"{100 * r['protocol_val_acc']:.2f}",
               "test": f"{100 * r['protocol_test_acc']:.2f} ± {100 * r['protocol_test_acc_std']:.2f}"}
        for c in controls:
            lead, bar = r[f"over_{c}"], r[f"over_{c}_two_std"]
            row[f"over {c}"] = "" if lead is None or lead != lead else (  # NaN: the row is a control
                f"{100 * lead:+.2f} (2 std {100 * bar:.2f}): {'beats it' if r[f'beats_{c}'] else 'does not beat it'}")
        rows.append(row)
    return rows
