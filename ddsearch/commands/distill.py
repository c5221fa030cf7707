"""``ddsearch distill``: one distillation with fixed settings, no Ray, recorded in MLflow."""

from __future__ import annotations

import argparse
from typing import Any

from ddsearch.commands._args import add_command, add_study_args, study_overrides


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "distill", run, "run one distillation with fixed settings (no Ray) and log it to MLflow")
    add_study_args(p)
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlruns)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ddsearch.config import load_study
    from ddsearch.runner import DivergedError, run_distillation, validate_study, with_resolved_precision
    from ddsearch.study_data import load_study_data
    from ddsearch.tracking import store
    from ddsearch.tracking.run_logger import RunLogger
    from ddsearch.tracking.study_runs import DISTILL_KIND, TAG_STUDY, StudyRuns

    study = load_study(args.study, study_overrides(args))
    data = load_study_data(study)
    study = with_resolved_precision(study, data.device)
    validate_study(study, data)  # bad settings fail here, before a run exists

    uri = store.resolve_tracking_uri(args.tracking_uri or study.tracking.uri, create=False)
    store.check_reachable(uri)
    store.check_writable(uri)
    runs = StudyRuns.in_experiment(uri, study.tracking.experiment or study.name)
    run_id = runs.create_run(f"distill-{study.method.name}-ipc{study.method.ipc}", DISTILL_KIND, {TAG_STUDY: study.name})
    logger = RunLogger(run_id, uri)
    logger.log_params(study.flat_params())
    logger.log_json(study.model_dump(mode="json"), "config.json")
    print(f"MLflow run {run_id} in {uri}")
    try:
        outcome = run_distillation(study, data, observer=logger, progress=not args.quiet)
    except DivergedError as err:
        if err.last_good is not None:
            logger.log_synset(err.last_good, "last_good_synset.safetensors")
        runs.fail(run_id, str(err), outcome="diverged")
        raise
    except BaseException as err:
        runs.fail_after(run_id, err)
        raise
    logger.finish()
    for row in outcome.table:
        print(f"{row.arch:>14}: val {row.val_mean:.4f} ± {row.val_std:.4f}   test {row.test_mean:.4f} ± {row.test_std:.4f}")
    print(f"distilled in {outcome.distill_seconds:.1f}s, evaluated in {outcome.eval_seconds:.1f}s; run {run_id}")
    return 0
