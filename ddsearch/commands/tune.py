"""``ddsearch tune STUDY.yaml``: the search service (the work is :mod:`ddsearch.search.tune`'s)."""

from __future__ import annotations

import argparse
from typing import Any

from ddsearch.commands._args import add_command, add_study_args, study_overrides


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "tune", run, "search a study's hyperparameters on Ray Tune + Optuna, tracked in MLflow")
    add_study_args(p)
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted study; completed trials are kept")
    p.add_argument("--dry-run", action="store_true", help="validate study, data, tracking and cluster; print the plan")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (overrides the study's tracking.uri)")


def run(args: argparse.Namespace) -> int:
    from ddsearch.search.tune import tune_command

    args.overrides = study_overrides(args)
    return tune_command(args)
