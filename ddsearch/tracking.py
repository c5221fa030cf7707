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


def default_store(cwd: str | Path | None = None, create: bool = True) -> tuple[str, str]:
    """(tracking URI, artifact root URI) of the project's local store under ``cwd/mlruns``.

    ``create=False`` only names it: readers (``report``) must not leave an empty store behind.
    """
    root = (Path(cwd or os.getcwd()) / DEFAULT_STORE_DIR).resolve()
    if create:
        from ddsearch.paths import ensure_writable_dir

        ensure_writable_dir(root, "tracking folder")
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def resolve_tracking_uri(uri: str | None = None, create: bool = True) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else the local store; always absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return default_store(create=create)[0]
    if "://" not in uri:  # a bare path means a local store folder
        return default_store(Path(uri).parent if Path(uri).name == DEFAULT_STORE_DIR else uri, create=create)[0]
    return uri


def check_store_exists(uri: str) -> None:
    """Readers of a local store need one: opening a missing SQLite store would create an empty one."""
    paths = sqlite_store_paths(uri)
    if paths is not None and not paths[0].is_file():
        raise DDSearchError(f"no MLflow store at {uri}; run `ddsearch tune` first or pass --tracking-uri")


TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def check_writable(uri: str, create: bool = True) -> None:
    """A local SQLite store must be writable (folder and file) before a run is created in it.

    ``create=False`` checks that its folder could be made, and makes nothing (``--dry-run``).
    """
    from ddsearch.paths import check_creatable_dir, ensure_writable_dir

    paths = sqlite_store_paths(uri)
    if paths is None:
        return
    db, artifacts = paths
    (ensure_writable_dir if create else check_creatable_dir)(db.parent, "tracking folder")
    if db.exists() and not os.access(db, os.W_OK):
        raise DDSearchError(f"the MLflow store {db} is read-only; make it writable or pass --tracking-uri "
                            f"with a store you can write to")
    if artifacts.exists() and not os.access(artifacts, os.W_OK | os.X_OK):
        raise DDSearchError(f"the artifact folder {artifacts} is not writable; fix its permissions")


def client(uri: str | None = None):
    # No progress bars or "View run at <url>" lines from the client: a study's server URL is
    # ephemeral, and trials run in parallel.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # ~1 minute of retries, not ~4
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(uri))


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail early with one line if the URI's scheme is unknown or a remote tracking server does not answer."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme == "file":
        raise DDSearchError(f"tracking URI {uri!r}: MLflow 3 no longer writes file:// stores; give the folder itself "
                            f"(ddsearch keeps a SQLite store in it) or sqlite:///path/mlflow.db")
    if scheme not in TRACKING_SCHEMES:
        raise DDSearchError(f"tracking URI {uri!r}: unsupported scheme {scheme!r}; use a folder, sqlite:///path/mlflow.db "
                            f"or http(s)://host:port of a tracking server")
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

    def __init__(self, run_id: str, uri: str | None = None, grid_per_class: int = 50) -> None:
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
        self.log_grid(point.synset, point.iteration)

    def on_start(self, synset: SyntheticSet) -> None:
        """The starting set (real images for ``init: real``) at step 0: the image card's default view."""
        self.log_grid(synset, 0)

    def log_grid(self, synset: SyntheticSet, step: int | None, title: str = "") -> None:
        """A labelled grid on the image card's step slider and under a stable name.

        ``grids/step_000120.png`` sorts by step and lines up across runs on the compare page;
        ``step=None`` writes ``grids/final.png`` only.
        """
        from ddsearch.gridview import labelled_grid

        label = title or ("start (step 0)" if step == 0 else f"step {step}" if step is not None else "final")
        grid = labelled_grid(synset, title=label, max_per_class=self.grid_per_class)
        if step is not None:
            self.client.log_image(self.run_id, grid, key="synset_grid", step=step)
        name = f"grids/step_{step:06d}.png" if step is not None else "grids/final.png"
        self.client.log_image(self.run_id, grid, artifact_file=name)

    def on_final(self, outcome: RunOutcome) -> None:
        """The final set, its grid and the final evaluation.

        Single-point metrics are logged at step 0, so MLflow draws them as bar charts that
        compare across runs (as for a study's ``best_*``), not as one dot on a step axis.
        """
        self.log_synset(outcome.synset)
        self.log_grid(outcome.synset, None, title=f"final (iteration {outcome.evals[-1].iteration})" if outcome.evals else "final")
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
        self.log_metrics(metrics, step=0)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


# ---- study tracking: stores, a tracking server, parent and child runs -----------------------
# Used by ddsearch.search (the Ray Tune driver and its trials); plain functions over MlflowClient
# so that nothing outside this module imports MLflow.

STUDY_KIND = "study"
TRIAL_KIND = "trial"
TAG_KIND = "ddsearch.kind"
TAG_STUDY = "ddsearch.study"
TAG_TRIAL_ID = "ddsearch.trial_id"
TAG_OPTUNA = "ddsearch.optuna_number"
TAG_FAILURE = "ddsearch.failure"
TAG_OUTCOME = "ddsearch.outcome"
TAG_ATTEMPTS = "ddsearch.attempts"
PARENT_TAG = "mlflow.parentRunId"


def sqlite_store_paths(uri: str) -> tuple[Path, Path] | None:
    """(database file, artifact folder) of a local SQLite store; None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return db, db.parent / "artifacts"


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TrackingServer:
    """An ``mlflow server`` subprocess in front of a local SQLite store, for one study.

    SQLite written by many processes at once locks up, so concurrent trials log over HTTP to
    this one process instead. It binds 127.0.0.1 (trials on this machine, or a cluster on
    loopback, can reach it). A small guard process stops the server when the driver dies, even
    by SIGKILL, so no server is left behind.
    """

    def __init__(self, store_uri: str, log_path: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        paths = sqlite_store_paths(store_uri)
        if paths is None:
            raise DDSearchError(f"a study tracking server needs a local sqlite:/// store, not {store_uri}")
        self.store_uri = store_uri
        self.artifact_root = paths[1]
        self.host = host
        self.port = port or _free_port(host)
        self.log_path = Path(log_path)
        self.proc = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "TrackingServer":
        import subprocess
        import sys

        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        server = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.store_uri,
            "--default-artifact-root", self.artifact_root.as_uri(),
            "--no-serve-artifacts",
            "--host", self.host, "--port", str(self.port), "--workers", "1",
        ]
        guard = [sys.executable, "-m", "ddsearch.search.guard", str(os.getpid()), "--", *server]
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(guard, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DDSearchError(f"the MLflow tracking server for this study exited at start; see {self.log_path}:\n"
                                    + _tail(self.log_path))
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.25)
        self.stop()
        raise DDSearchError(f"the MLflow tracking server did not answer within {timeout_s:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the guard stops the server's process group
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> "TrackingServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_experiment(name: str, uri: str) -> str:
    """The experiment's id, created if needed (local stores keep artifacts in mlruns/artifacts)."""
    return experiment_id(name, uri)


def get_run_or_none(uri: str, run_id: str):
    try:
        return client(uri).get_run(run_id)
    except Exception:  # noqa: BLE001 - deleted, never existed, or another store
        return None


def create_study_run(uri: str, experiment: str, study_name: str, tags: dict[str, str] | None = None) -> str:
    run = client(uri).create_run(
        experiment, run_name=study_name, tags={TAG_KIND: STUDY_KIND, TAG_STUDY: study_name} | (tags or {})
    )
    return run.info.run_id


def set_status(uri: str, run_id: str, status: str) -> None:
    """RUNNING reopens a run; FINISHED, FAILED and KILLED end it."""
    mlflow_client = client(uri)
    if status == "RUNNING":
        mlflow_client.update_run(run_id, status="RUNNING")
    else:
        mlflow_client.set_terminated(run_id, status=status)


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    mlflow_client = client(uri)
    mlflow_client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


NOTE_TAG = "mlflow.note.content"  # MLflow shows it as the run's (or experiment's) description


def set_note(uri: str, run_id: str, text: str) -> None:
    """The run's one-line description in the MLflow UI."""
    set_tags(uri, run_id, {NOTE_TAG: text})


def describe_experiment(uri: str, experiment_id_: str, text: str) -> None:
    """The experiment's description, and its kind, so the MLflow UI opens on the runs table
    (MLflow 3 otherwise guesses a GenAI experiment and opens on traces)."""
    mlflow_client = client(uri)
    mlflow_client.set_experiment_tag(experiment_id_, NOTE_TAG, text[:5000])
    mlflow_client.set_experiment_tag(experiment_id_, "mlflow.experimentKind", "custom_model_development")


def experiment_ids(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's experiments, oldest first; [] when it cannot be read."""
    try:
        found = client(uri).search_experiments()
    except Exception:  # noqa: BLE001 - an empty or unreadable store: nothing to list
        return []
    return sorted(((e.name, e.experiment_id) for e in found if e.name != "Default"), key=lambda ne: int(ne[1]) if ne[1].isdigit() else 0)


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, by step."""
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def delete_tag(uri: str, run_id: str, key: str) -> None:
    try:
        client(uri).delete_tag(run_id, key)
    except Exception:  # noqa: BLE001 - not there
        pass


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def child_runs(uri: str, experiment: str, parent_run_id: str) -> list:
    """Every trial run of a study (all statuses), oldest first."""
    mlflow_client = client(uri)
    query = f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)}"
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs([experiment], filter_string=query, max_results=1000, page_token=token,
                                         order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_trial_run(uri: str, experiment: str, parent_run_id: str, trial_id: str):
    query = f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)} and tags.`{TAG_TRIAL_ID}` = {_quote(trial_id)}"
    found = client(uri).search_runs([experiment], filter_string=query, max_results=10,
                                    order_by=["attributes.start_time ASC"])
    return found[0] if found else None


def open_trial_run(
    uri: str,
    experiment: str,
    parent_run_id: str,
    trial_id: str,
    run_id: str | None,
    run_name: str,
    tags: dict[str, Any],
) -> str:
    """The trial's child run: the one from its checkpoint, else the one tagged with its trial id,
    else a new one. A retried or resumed trial so keeps writing its own run (no duplicates)."""
    mlflow_client = client(uri)
    run = get_run_or_none(uri, run_id) if run_id else None
    if run is None:
        run = find_trial_run(uri, experiment, parent_run_id, trial_id)
    if run is None:
        run = mlflow_client.create_run(
            experiment, run_name=run_name,
            tags={PARENT_TAG: parent_run_id, TAG_KIND: TRIAL_KIND, TAG_TRIAL_ID: trial_id},
        )
    run_id = run.info.run_id
    attempts = int(run.data.tags.get(TAG_ATTEMPTS, "0")) + 1
    if run.info.status != "RUNNING":
        mlflow_client.update_run(run_id, status="RUNNING")
    previous = run.data.tags.get(TAG_FAILURE)
    if previous:  # a retry: keep the reason of the attempt before, clear the current failure
        tags = tags | {"ddsearch.previous_failure": previous}
        delete_tag(uri, run_id, TAG_FAILURE)
    for key in (TAG_OUTCOME, "ddsearch.interrupted"):
        if key in run.data.tags:
            delete_tag(uri, run_id, key)
    set_tags(uri, run_id, tags | {TAG_ATTEMPTS: attempts})
    return run_id


def fail_run(uri: str, run_id: str, reason: str, status: str = "FAILED", outcome: str = "failed") -> None:
    set_tags(uri, run_id, {TAG_FAILURE: reason, TAG_OUTCOME: outcome})
    set_status(uri, run_id, status)


def has_artifact(uri: str, run_id: str, path: str) -> bool:
    parent = str(Path(path).parent) if "/" in path else None
    try:
        return any(item.path == path for item in client(uri).list_artifacts(run_id, parent))
    except Exception:  # noqa: BLE001
        return False


def list_artifact_paths(uri: str, run_id: str, path: str | None = None) -> list[str]:
    mlflow_client = client(uri)
    found: list[str] = []
    for item in mlflow_client.list_artifacts(run_id, path):
        found.extend(list_artifact_paths(uri, run_id, item.path) if item.is_dir else [item.path])
    return found


def download_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    return Path(client(uri).download_artifacts(run_id, path, str(dst)))


def log_file(uri: str, run_id: str, local_path: str | Path, artifact_dir: str | None = None) -> None:
    client(uri).log_artifact(run_id, str(local_path), artifact_dir)


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    client(uri).log_text(run_id, text, artifact_file)


def log_table(uri: str, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    """A table the MLflow UI shows; written once (MLflow appends when the file exists)."""
    if not has_artifact(uri, run_id, artifact_file):
        client(uri).log_table(run_id, frame, artifact_file)


def log_figure(uri: str, run_id: str, figure: Any, artifact_file: str) -> None:
    client(uri).log_figure(run_id, figure, artifact_file)


def log_image(uri: str, run_id: str, image: Any, artifact_file: str) -> None:
    client(uri).log_image(run_id, image, artifact_file=artifact_file)


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    RunLogger(run_id, uri).log_params(params)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    RunLogger(run_id, uri).log_metrics(metrics, step=step)


def run_record(run) -> dict[str, Any]:
    """A plain view of an MLflow run (what reports and leaderboards need)."""
    info = run.info
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "metrics": dict(run.data.metrics),
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
    }


def find_study_runs(uri: str, experiment_name: str, study_name: str) -> list[dict[str, Any]]:
    """Parent runs of a study in its experiment, newest first; [] when none or no experiment."""
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    query = f"tags.`{TAG_KIND}` = '{STUDY_KIND}' and tags.`{TAG_STUDY}` = {_quote(study_name)}"
    runs = mlflow_client.search_runs([experiment.experiment_id], filter_string=query,
                                     order_by=["attributes.start_time DESC"])
    return [run_record(r) | {"experiment_id": experiment.experiment_id} for r in runs]


# ---- NAS: proxy sets from runs and studies, and the NAS run ---------------------------------
# Used by ``ddsearch nas``. A study's best trial is found through tags the tune service writes:
#   parent run:  ddsearch.kind = "study", ddsearch.study = <name>
#   trial runs:  ddsearch.kind = "trial", mlflow.parentRunId = <parent run id>
#                (ddsearch.study = <name> also accepted, for trials logged without a parent link)
#   trial score: metric final_val_acc (finished trials, preferred), else val_acc (latest value); higher is better
#   trial set:   artifact synset.safetensors
# Failed trials (status FAILED or a ddsearch.failure tag) are left out.

NAS_KIND = "nas"
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
        runs, token = [], None
        while True:
            page = mlflow_client.search_runs(experiments, filter_string=query, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    parents = search(f"tags.`{TAG_KIND}` = '{STUDY_KIND}' and tags.`{TAG_STUDY}` = {_quote(study)}")
    trials = search(f"tags.`{TAG_KIND}` = '{TRIAL_KIND}' and tags.`{TAG_STUDY}` = {_quote(study)}")
    for parent in parents:
        trials += search(f"tags.`{PARENT_TAG}` = {_quote(parent.info.run_id)}")
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


def create_nas_run(uri: str, experiment: str, run_name: str, tags: dict[str, Any] | None = None) -> str:
    """A run of kind ``nas`` in ``experiment`` (created if needed)."""
    experiment_id_ = experiment_id(experiment, uri)
    run = client(uri).create_run(experiment_id_, run_name=run_name,
                                 tags={TAG_KIND: NAS_KIND} | {k: str(v) for k, v in (tags or {}).items()})
    return run.info.run_id
