"""``ddsearch report STUDY [--html [FILE]]``: a study's leaderboard from MLflow (no Ray, no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ddsearch.commands._args import add_command, positive_int, print_table
from ddsearch.errors import DDSearchError


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "report", run, "print a study's leaderboard from MLflow")
    p.add_argument("study", help="study name or YAML file")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--top", type=positive_int, default=20)
    p.add_argument("--html", nargs="?", const="-", default=None, metavar="FILE",
                   help="also write the study report page (default FILE: <study>-report.html)")


def _locate(args: Any) -> tuple[str, str, str, str | None]:
    """(tracking URI, study name, experiment name, parent run id or None) for a name or a YAML."""
    from ddsearch.search.state import recorded_parent
    from ddsearch.tracking import store

    target = str(args.study)
    uri_arg = getattr(args, "tracking_uri", None)
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        from ddsearch.config import load_study

        study = load_study(target)
        uri = store.resolve_tracking_uri(uri_arg or study.tracking.uri, create=False)
        parent = recorded_parent(study.resolved_state_dir(), uri)
        return uri, study.name, study.tracking.experiment or study.name, parent
    return store.resolve_tracking_uri(uri_arg, create=False), target, target, None


def run(args: argparse.Namespace) -> int:
    from ddsearch.search.leaderboard import finished, leaderboard, outcome_counts, print_leaderboard
    from ddsearch.search.notes import column_legend
    from ddsearch.tracking import store
    from ddsearch.tracking.lookup import find_study_runs

    uri, name, experiment_name, parent_id = _locate(args)
    store.check_reachable(uri)
    store.check_store_exists(uri)
    runs = find_study_runs(uri, experiment_name, name)
    if parent_id is not None:
        runs = [r for r in runs if r["run_id"] == parent_id] or runs
    if not runs:
        raise DDSearchError(f"no study '{name}' in experiment '{experiment_name}' at {uri}; "
                            f"run `ddsearch tune` first or pass --tracking-uri")
    parent = runs[0]
    keys = sorted(k.removeprefix("search.") for k in parent["params"] if k.startswith("search."))
    objective = parent["params"].get("objective", "val_acc").split(",")
    board = leaderboard(uri, parent["experiment_id"], parent["run_id"], keys, objective)
    print(f"study '{name}'  parent run {parent['run_id']}  status {parent['status']}  in {uri}")
    counts = outcome_counts(board)
    print(f"trials: {len(board)}" + "".join(f", {n} {what.replace('_', ' ')}" for what, n in counts.items()))
    for key in keys:
        print(f"  search.{key}: {parent['params'][f'search.{key}']}")
    print_leaderboard(board, top=getattr(args, "top", 20))
    legend = column_legend(parent["params"])
    for column in ("val_acc", "final_val_acc"):
        print(f"  {column}: {legend[column]}")
    done = finished(board)
    if len(done):
        best = done.iloc[0]
        print(f"best: {best['run']} val_acc {best['val_acc']:.4f} test_acc {best['test_acc']:.4f} "
              f"(run {best['run_id']}, Ray trial {best['ray_trial_id']})")
    from ddsearch.search.notes import reevaluation_rows
    from ddsearch.search.report_page import reevaluation_table

    reevaluation = reevaluation_table(uri, parent["run_id"])
    if reevaluation is not None and len(reevaluation):
        print("the papers' protocol, against real images (ddsearch reevaluate):")
        print_table(reevaluation_rows(reevaluation))
    html = getattr(args, "html", None)
    if html:
        from ddsearch.search.report_page import study_report

        page = study_report(uri, parent["experiment_id"], parent["run_id"])
        path = Path(html if html != "-" else f"{name}-report.html")
        path.write_text(page, encoding="utf-8")
        print(f"report page: {path.resolve()} ({len(page.encode()) / 1024:.0f} KiB)")
    return 0
