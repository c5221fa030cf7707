"""MLflow: where runs go, and what a distillation run records.

The only module (with the CLI's ``ui``) that imports MLflow. The default local store lives
under ``./mlruns`` (MLflow 3 refuses a plain file store, so it is SQLite in
``mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``); ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` point elsewhere, e.g. at a tracking server shared by a cluster.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ddsearch.errors import DDSearchError
from ddsearch.runner import EvalPoint, RunOutcome
from ddsearch.synset import SyntheticSet

DEFAULT_STORE_DIR = "mlruns"


def default_store(cwd: str | Path | None = None) -> tuple[str, str]:
    """(tracking URI, artifact root URI) of the project's local store under ``cwd/mlruns``."""
    root = (Path(cwd or os.getcwd()) / DEFAULT_STORE_DIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else the local store; always absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return default_store()[0]
    if "://" not in uri:  # a bare path means a local store folder
        return default_store(Path(uri).parent if Path(uri).name == DEFAULT_STORE_DIR else uri)[0]
    return uri


def client(uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(uri))


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail early with one line if a remote tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s)
    except Exception as err:  # noqa: BLE001 - any failure means unreachable
        raise DDSearchError(f"tracking server {uri} is unreachable ({err}); start it or fix tracking.uri") from None


def experiment_id(name: str, uri: str | None = None) -> str:
    """Get or create an experiment; local stores put artifacts under mlruns/artifacts."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    resolved = resolve_tracking_uri(uri)
    artifact_location = None
    if resolved.startswith("sqlite:///"):
        db = Path(resolved.removeprefix("sqlite:///"))
        artifact_location = (db.parent / "artifacts").as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # another process created it first
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class RunLogger:
    """Records one distillation run (a CLI run or a tune trial's child run) in MLflow.

    Implements the runner's Observer protocol.
    """

    def __init__(self, run_id: str, uri: str | None = None, grid_per_class: int = 10) -> None:
        self.run_id = run_id
        self.client = client(uri)
        self.grid_per_class = grid_per_class

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(fresh), 100):
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        self.client.log_text(self.run_id, json.dumps(payload, indent=2, default=str), artifact_file)

    def log_synset(self, synset: SyntheticSet, name: str = "synset.safetensors") -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = synset.save(Path(tmp) / name)
            self.client.log_artifact(self.run_id, str(path))

    # ---- Observer protocol ------------------------------------------------------------------
    def on_losses(self, iteration: int, losses: list[float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        first = iteration - len(losses) + 1
        batch = [Metric("loss", v, now, first + i) for i, v in enumerate(losses)]
        self.client.log_batch(self.run_id, metrics=batch)

    def on_eval(self, point: EvalPoint, state: dict[str, Any]) -> None:
        self.log_metrics(
            {
                "val_acc": point.val_acc,
                "test_acc": point.test_acc,
                "distill_seconds": point.distill_seconds,
                "eval_seconds": point.eval_seconds,
            },
            step=point.iteration,
        )
        grid = point.synset.grid(max_per_class=self.grid_per_class)
        self.client.log_image(self.run_id, grid, key="synset_grid", step=point.iteration)

    def on_final(self, outcome: RunOutcome) -> None:
        self.log_synset(outcome.synset)
        metrics = {"distill_seconds_total": outcome.distill_seconds, "eval_seconds_total": outcome.eval_seconds}
        for row in outcome.table:
            metrics[f"final_val_acc.{row.arch}"] = row.val_mean
            metrics[f"final_test_acc.{row.arch}"] = row.test_mean
        if outcome.table:
            first = outcome.table[0]
            metrics["final_val_acc"] = first.val_mean
            metrics["final_test_acc"] = first.test_mean
            table = pd.DataFrame([row.summary() for row in outcome.table])
            self.client.log_table(self.run_id, table, "cross_arch.json")
        self.log_metrics(metrics, step=outcome.evals[-1].iteration if outcome.evals else 0)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
