"""The MLflow store: its URI, the client, experiments, run fields and artifacts.

Plain functions over ``MlflowClient`` keyed by (URI, run id), so that nothing outside
:mod:`ddsearch.tracking` imports MLflow or holds one of its run objects. The default local store
lives under ``./mlruns`` (MLflow 3 refuses a plain file store, so it is SQLite in
``mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``); ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` point elsewhere, e.g. at a tracking server shared by a cluster.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from ddsearch.errors import DDSearchError

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


def sqlite_store_paths(uri: str) -> tuple[Path, Path] | None:
    """(database file, artifact folder) of a local SQLite store; None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return db, db.parent / "artifacts"


def get_run_or_none(uri: str, run_id: str, mlflow_client: Any = None):
    """The MLflow run object (for modules of this package only), or None."""
    try:
        return (mlflow_client or client(uri)).get_run(run_id)
    except Exception:  # noqa: BLE001 - deleted, never existed, or another store
        return None


def set_status(uri: str, run_id: str, status: str, mlflow_client: Any = None) -> None:
    """RUNNING reopens a run; FINISHED, FAILED and KILLED end it."""
    mlflow_client = mlflow_client or client(uri)
    if status == "RUNNING":
        mlflow_client.update_run(run_id, status="RUNNING")
    else:
        mlflow_client.set_terminated(run_id, status=status)


def set_tags(uri: str, run_id: str, tags: dict[str, Any], mlflow_client: Any = None) -> None:
    from mlflow.entities import RunTag

    mlflow_client = mlflow_client or client(uri)
    mlflow_client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


NOTE_TAG = "mlflow.note.content"  # MLflow shows it as the run's (or experiment's) description


def set_note(uri: str, run_id: str, text: str, mlflow_client: Any = None) -> None:
    """The run's one-line description in the MLflow UI."""
    set_tags(uri, run_id, {NOTE_TAG: text}, mlflow_client)


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


def delete_tag(uri: str, run_id: str, key: str, mlflow_client: Any = None) -> None:
    try:
        (mlflow_client or client(uri)).delete_tag(run_id, key)
    except Exception:  # noqa: BLE001 - not there
        pass


def quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + value.replace("'", "\\'") + "'"


def search_all(mlflow_client: Any, experiments: list[str], query: str, order_by: list[str] | None = None) -> list:
    """Every run that matches ``query``, across all result pages."""
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs(experiments, filter_string=query, max_results=1000, page_token=token,
                                         order_by=order_by)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def get_run_record(uri: str, run_id: str) -> dict[str, Any] | None:
    """The run as plain data (see :func:`run_record`); None when it does not exist."""
    run = get_run_or_none(uri, run_id)
    return None if run is None else run_record(run)


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


def log_table(uri: str, run_id: str, frame: pd.DataFrame, artifact_file: str, replace: bool = False) -> None:
    """A table the MLflow UI shows. MLflow appends to a file that exists; here the first table stays,
    or with ``replace`` the new one is written over it in the same format (a refreshed leaderboard)."""
    if not has_artifact(uri, run_id, artifact_file):
        client(uri).log_table(run_id, frame, artifact_file)
    elif replace:
        log_text(uri, run_id, frame.to_json(orient="split", index=False, date_format="iso"), artifact_file)


def log_figure(uri: str, run_id: str, figure: Any, artifact_file: str) -> None:
    client(uri).log_figure(run_id, figure, artifact_file)


def log_image(uri: str, run_id: str, image: Any, artifact_file: str) -> None:
    client(uri).log_image(run_id, image, artifact_file=artifact_file)


def log_params(uri: str, run_id: str, params: dict[str, Any], mlflow_client: Any = None) -> None:
    """Params the run does not have yet (MLflow refuses to change one), in batches of 100."""
    from mlflow.entities import Param

    mlflow_client = mlflow_client or client(uri)
    existing = mlflow_client.get_run(run_id).data.params
    fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for start in range(0, len(fresh), 100):
        mlflow_client.log_batch(run_id, params=fresh[start : start + 100])


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int | None = 0, mlflow_client: Any = None) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    (mlflow_client or client(uri)).log_batch(run_id, metrics=batch)


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
