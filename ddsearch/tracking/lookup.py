"""Queries over recorded studies: a study's parent runs, and the best trial's synset for NAS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddsearch.errors import DDSearchError
from ddsearch.tracking.store import (
    client,
    download_artifact,
    get_run_or_none,
    has_artifact,
    list_artifact_paths,
    quote,
    run_record,
    search_all,
)
from ddsearch.tracking.study_runs import PARENT_TAG, STUDY_KIND, TAG_FAILURE, TAG_KIND, TAG_STUDY, TRIAL_KIND


def find_study_runs(uri: str, experiment_name: str, study_name: str) -> list[dict[str, Any]]:
    """Parent runs of a study in its experiment, newest first; [] when none or no experiment."""
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    query = f"tags.`{TAG_KIND}` = '{STUDY_KIND}' and tags.`{TAG_STUDY}` = {quote(study_name)}"
    runs = mlflow_client.search_runs([experiment.experiment_id], filter_string=query,
                                     order_by=["attributes.start_time DESC"])
    return [run_record(r) | {"experiment_id": experiment.experiment_id} for r in runs]


# ---- NAS: proxy sets from runs and studies ------------------------------------------------------
# Used by ``ddsearch nas``. A study's best trial is found through tags the tune service writes:
#   parent run:  ddsearch.kind = "study", ddsearch.study = <name>
#   trial runs:  ddsearch.kind = "trial", mlflow.parentRunId = <parent run id>
#                (ddsearch.study = <name> also accepted, for trials logged without a parent link)
#   trial score: metric final_val_acc (finished trials, preferred), else val_acc (latest value); higher is better
#   trial set:   artifact synset.safetensors
# Failed trials (status FAILED or a ddsearch.failure tag) are left out.

SYNSET_ARTIFACT = "synset.safetensors"
TRIAL_SCORE_METRICS = ("final_val_acc", "val_acc")


def parse_runs_uri(source: str) -> tuple[str, str]:
    """``runs:/<run_id>/<artifact path>`` -> (run_id, artifact path)."""
    rest = source.removeprefix("runs:/").strip("/")
    run_id, _, path = rest.partition("/")
    if not source.startswith("runs:/") or not run_id or not path:
        raise DDSearchError(f"bad MLflow source {source!r}; expected runs:/<run_id>/{SYNSET_ARTIFACT}")
    return run_id, path


def download_run_artifact(uri: str, source: str, dst: str | Path) -> Path:
    """Download ``runs:/<run_id>/<path>`` into ``dst``; a clear error if the run or file is missing."""
    run_id, path = parse_runs_uri(source)
    if get_run_or_none(uri, run_id) is None:
        raise DDSearchError(f"no MLflow run {run_id} in {uri}; check the run id or --tracking-uri")
    if not has_artifact(uri, run_id, path):
        found = ", ".join(list_artifact_paths(uri, run_id)[:10]) or "none"
        raise DDSearchError(f"MLflow run {run_id} has no artifact {path!r} (it has: {found})")
    return download_artifact(uri, run_id, path, dst)


def _trial_score(run) -> tuple[str, float] | None:
    import math

    for name in TRIAL_SCORE_METRICS:
        value = run.data.metrics.get(name)
        if value is not None and math.isfinite(float(value)):
            return name, float(value)
    return None


def best_study_trial(uri: str, study: str, experiment: str | None = None) -> dict[str, Any]:
    """The best finished trial of a study that saved a synset: run id, score, metric, parent run.

    Searches ``experiment`` (by name) or, without it, every experiment of the store. Raises
    DDSearchError, naming what was found, when there is no such study or no usable trial.
    """
    mlflow_client = client(uri)
    if experiment:
        found = mlflow_client.get_experiment_by_name(experiment)
        if found is None:
            raise DDSearchError(f"no MLflow experiment {experiment!r} in {uri}")
        experiments = [found.experiment_id]
    else:
        experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        raise DDSearchError(f"the MLflow store {uri} has no experiments; run `ddsearch tune` first")

    def search(query: str) -> list:
        return search_all(mlflow_client, experiments, query)

    parents = search(f"tags.`{TAG_KIND}` = '{STUDY_KIND}' and tags.`{TAG_STUDY}` = {quote(study)}")
    trials = search(f"tags.`{TAG_KIND}` = '{TRIAL_KIND}' and tags.`{TAG_STUDY}` = {quote(study)}")
    for parent in parents:
        trials += search(f"tags.`{PARENT_TAG}` = {quote(parent.info.run_id)}")
    if not parents and not trials:
        known = sorted({r.data.tags.get(TAG_STUDY, "") for r in search(f"tags.`{TAG_KIND}` = '{STUDY_KIND}'")} - {""})
        hint = f"known studies: {', '.join(known)}" if known else "no studies are recorded there"
        raise DDSearchError(f"no study named {study!r} in {uri} ({hint})")

    candidates: dict[str, tuple[float, str, Any]] = {}
    for run in trials:
        if run.info.status == "FAILED" or TAG_FAILURE in run.data.tags:
            continue
        score = _trial_score(run)
        if score is not None:
            candidates[run.info.run_id] = (score[1], score[0], run)
    # Trials with a final score come first: an early-stopped trial's intermediate val_acc comes from a
    # shorter evaluation and is only used when no trial finished.
    ranked = sorted(candidates.values(), key=lambda c: (c[1] != TRIAL_SCORE_METRICS[0], -c[0], c[2].info.start_time or 0))
    for value, metric, run in ranked:
        if has_artifact(uri, run.info.run_id, SYNSET_ARTIFACT):
            return {"run_id": run.info.run_id, "score": value, "metric": metric,
                    "parent_run_id": run.data.tags.get(PARENT_TAG, ""), "run_name": run.info.run_name,
                    "source": f"runs:/{run.info.run_id}/{SYNSET_ARTIFACT}"}
    raise DDSearchError(
        f"study {study!r} has {len(trials)} trial run(s) but none with a {' or '.join(TRIAL_SCORE_METRICS)} "
        f"metric and a {SYNSET_ARTIFACT} artifact; let a trial finish, or pass --synset"
    )
