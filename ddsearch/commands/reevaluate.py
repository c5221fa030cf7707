"""``ddsearch reevaluate STUDY``: train a finished study's defaults and best trial with the papers'
protocol beside real-image controls, and put the results on its leaderboard."""

from __future__ import annotations

import argparse
from typing import Any

from ddsearch.commands._args import add_command, add_study_args, positive_int, print_table, study_overrides
from ddsearch.errors import DDSearchError


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "reevaluate", run,
                    "re-train a finished study's defaults trial and validation-best with the papers' protocol "
                    "(5 x 1000 epochs) beside real-image controls, and log the results on its leaderboard")
    add_study_args(p)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--epochs", type=positive_int, default=1000)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--trials", default="default,best",
                   help="comma-separated roles: default (Optuna trial 0) and/or best (by validation accuracy)")
    p.add_argument("--controls", default="herding",
                   help="comma-separated real-image controls trained the same way at the sets' IPC: herding, "
                        "random, kcenter, or none (default: herding, the control a distilled set must beat)")
    p.add_argument("--retrain", action="store_true",
                   help="train a trial again even where an earlier re-evaluation measured it with this protocol")


def run(args: argparse.Namespace) -> int:
    from ddsearch.config import load_study
    from ddsearch.search.notes import reevaluation_rows
    from ddsearch.search.reevaluate import check_controls, reevaluate
    from ddsearch.search.state import recorded_parent
    from ddsearch.study_data import load_study_data
    from ddsearch.tracking import store
    from ddsearch.tracking.lookup import find_study_runs

    controls = tuple(c.strip() for c in args.controls.split(",") if c.strip() and c.strip() != "none")
    check_controls(controls)  # before any store or training
    study = load_study(args.study, study_overrides(args))
    uri = store.resolve_tracking_uri(args.tracking_uri or study.tracking.uri, create=False)
    store.check_reachable(uri)
    store.check_store_exists(uri)
    experiment = study.tracking.experiment or study.name
    runs = find_study_runs(uri, experiment, study.name)
    recorded = recorded_parent(study.resolved_state_dir(), uri)
    runs = [r for r in runs if r["run_id"] == recorded] or runs
    if not runs:
        raise DDSearchError(f"no study '{study.name}' in experiment '{experiment}' at {uri}; "
                            f"run `ddsearch tune {args.study}` first or pass --tracking-uri")
    parent = runs[0]
    roles = tuple(r.strip() for r in args.trials.split(",") if r.strip())
    data = load_study_data(study)
    table = reevaluate(study, data, uri, parent["experiment_id"], parent["run_id"], epochs=args.epochs,
                       repeats=args.repeats, roles=roles, controls=controls, retrain=args.retrain)
    print_table(reevaluation_rows(table))
    print(f"logged on the study's parent run {parent['run_id']}: reevaluation.json and the leaderboard's protocol_* columns")
    return 0

