"""A trial's MLflow writes, queued while the tracking server is away and flushed in order after.

On a cluster the tracking server is the part that fails. A trial must not stop training because
of it, and must not lose or repeat what it logs. :class:`Outbox` stands in for the
``MlflowClient`` of a trial's :class:`~ddsearch.tracking.RunLogger`:

- every write (metrics, params, tags, texts, files, images, tables, the end status) is an
  *entry* in a FIFO queue, sent at once while the server answers: a healthy server sees the same
  requests as without the outbox;
- when a send fails for a transient reason (connection refused, timeout, HTTP 5xx), the entry
  and everything after it stay queued; the trial goes on training, new writes are only queued,
  and the queue is retried every few seconds (:data:`RETRY_S`), oldest entry first;
- files are copied into the outbox's spool folder when queued (the caller's temporary file may
  vanish), and :meth:`Outbox.save` writes the pending entries with their files into the trial's
  checkpoint, so a retried or resumed trial sends them too (:meth:`Outbox.restore`);
- a trial fails only when the server has been unreachable for ``outage_s``
  (``tracking.outage_s``), with :class:`TrackingOutageError` saying so.

Nothing is logged twice. Each entry keeps what makes its request idempotent: a metric keeps the
timestamp it was taken at (MLflow's SQL store ignores a row identical in key, step, timestamp
and value, so a resent batch adds nothing), artifacts go to fixed paths (a resend overwrites),
and a step image gets its file name (with MLflow's uuid) once, when queued. A table, which MLflow
appends to, is resent only after checking that it is not there yet. Entries that may have
reached the server before a failure (the response was lost) or before a restart are resent under
these rules; acknowledged entries leave the queue and are never sent again.

Only this module and :mod:`ddsearch.tracking` import MLflow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

from ddsearch.errors import DDSearchError

T = TypeVar("T")

RETRY_S = (1.0, 2.0, 4.0, 5.0)  # waits between attempts while the server is away (the last repeats)
BATCH_METRICS = 1000  # MLflow's limit per log_batch
SAVED = "outbox.json"

# A trial's client gives up on a request quickly: the outbox retries, so a dead server must not
# hold the training loop for minutes of urllib3 back-off (MLflow's default is 7 retries, 2 minutes).
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST", "INVALID_STATE",
                    "PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_ALREADY_EXISTS", "FEATURE_DISABLED"}


class TrackingOutageError(DDSearchError):
    """The tracking server stayed unreachable longer than ``tracking.outage_s``."""


def use_quick_client() -> None:
    """Make this process's MLflow client fail fast (see :data:`CLIENT_ENV`); for trial processes."""
    os.environ.update(CLIENT_ENV)


def is_transient(err: BaseException) -> bool:
    """A failure worth retrying: the server (or its database) is down, slow or restarting."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    code = getattr(err, "error_code", None)
    if code is not None:
        return code not in _PERMANENT_CODES
    return isinstance(err, (OSError, ConnectionError, TimeoutError)) or type(err).__module__.startswith(
        ("requests", "urllib3"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


class Outbox:
    """The write side of ``MlflowClient`` for one run, through a persistent FIFO queue."""

    def __init__(self, client: Any, run_id: str, spool: str | Path, outage_s: float = 600.0,
                 where: str = "the tracking server", clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client  # an MlflowClient (or a test double)
        self.run_id = run_id
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.outage_s = float(outage_s)
        self.where = where
        self.clock, self.sleep = clock, sleep
        self.entries: list[dict[str, Any]] = []
        self.seq = 0
        self.down_since: float | None = None
        self.failures = 0
        self.next_try = 0.0
        self.last_error = ""
        self.metrics_delivered = 0  # metric values acknowledged by the server in this attempt
        self.outages = 0  # how many times the server went away during this attempt
        self.logged_through: dict[str, int] = {}  # key -> last step the run had when this attempt resumed

    # ---- MlflowClient's write methods (what RunLogger calls) --------------------------------
    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **_: Any) -> None:
        if self.logged_through and metrics:
            metrics = [m for m in metrics if int(m.step or 0) > self.logged_through.get(m.key, -1)]
        if params:
            self._put({"op": "params", "params": {p.key: p.value for p in params}})
        if tags:
            self._put({"op": "tags", "tags": {t.key: t.value for t in tags}})
        if metrics:
            rows = [[m.key, float(m.value), int(m.timestamp), int(m.step or 0)] for m in metrics]
            self._put({"op": "metrics", "metrics": rows})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._put({"op": "tags", "tags": {k: str(v)[:5000] for k, v in tags.items()}})

    def set_tag(self, run_id: str, key: str, value: Any, **_: Any) -> None:
        self.set_tags({key: value})

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._put({"op": "text", "text": text, "path": artifact_file}, replaces=("text", artifact_file))

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        name = Path(local_path).name
        dest = f"{artifact_path}/{name}" if artifact_path else name
        entry = {"op": "file", "dir": artifact_path, "path": dest}
        self._put(entry, replaces=("file", dest), file=(Path(local_path), name))

    def log_image(self, run_id: str, image: Any, artifact_file: str | None = None, key: str | None = None,
                  step: int | None = None, **_: Any) -> None:
        import numpy as np
        from PIL import Image

        picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        if artifact_file is not None:
            folder, _, name = artifact_file.rpartition("/")
            entry = {"op": "file", "dir": folder or None, "path": artifact_file}
            self._put(entry, replaces=("file", artifact_file), image=(picture, name))
            return
        if int(step or 0) <= self.logged_through.get(f"image:{key}", -1):
            return
        # MLflow's step-image layout (MlflowClient.log_image), with its timestamp and uuid fixed
        # now, so that a resend writes the same two files instead of a second image for the step.
        stem = (f"{re.sub('/', '~', key or 'image')}+step+{int(step or 0)}"
                f"+timestamp+{int(time.time() * 1000)}+{uuid.uuid4()}")
        self._put({"op": "step_image", "stem": stem}, image=(picture, f"{stem}.png"))

    def log_table(self, run_id: str, data: Any, artifact_file: str) -> None:
        frame = json.loads(data.to_json(orient="split")) if hasattr(data, "to_json") else {"dict": data}
        self._put({"op": "table", "table": frame, "path": artifact_file})

    def set_terminated(self, run_id: str, status: str = "FINISHED", **_: Any) -> None:
        self._put({"op": "status", "status": status})

    def get_run(self, run_id: str):
        """A read, straight to the server (queued writes are not in it yet)."""
        return self.client.get_run(run_id)

    def skip_logged_steps(self) -> dict[str, int]:
        """A resumed attempt repeats the steps its predecessor ran after the checkpoint: log none
        of the steps the run already has, so that each metric (and step image) keeps one value
        per step. In-order delivery means the run has every earlier step of that attempt too."""
        run = self.client.get_run(self.run_id)
        through = {key: max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
                   for key in run.data.metrics}
        for item in self.client.list_artifacts(self.run_id, "images"):
            found = re.fullmatch(r"images/(.+)\+step\+(\d+)\+timestamp\+.*", item.path)
            if found:
                key = f"image:{found.group(1).replace('~', '/')}"
                through[key] = max(through.get(key, -1), int(found.group(2)))
        self.logged_through = through
        return through

    # ---- the queue ---------------------------------------------------------------------------
    def _put(self, entry: dict[str, Any], replaces: tuple[str, str] | None = None,
             file: tuple[Path, str] | None = None, image: tuple[Any, str] | None = None) -> None:
        self.seq += 1
        entry = entry | {"seq": self.seq, "maybe_sent": False}
        if file is not None or image is not None:
            folder = self.spool / str(self.seq)
            folder.mkdir(parents=True, exist_ok=True)
            if file is not None:
                shutil.copyfile(file[0], folder / file[1])
                entry["file"] = f"{self.seq}/{file[1]}"
            else:
                image[0].save(folder / image[1])
                entry["file"] = f"{self.seq}/{image[1]}"
        if replaces is not None:  # a newer version of the same file supersedes a queued one
            for old in [e for e in self.entries if (e["op"], e.get("path")) == replaces]:
                self._drop(old)
        self.entries.append(entry)
        self.pump()

    def _drop(self, entry: dict[str, Any]) -> None:
        self.entries.remove(entry)
        if entry.get("file"):
            shutil.rmtree(self.spool / entry["file"].split("/", 1)[0], ignore_errors=True)

    @property
    def pending(self) -> int:
        return len(self.entries)

    def pump(self) -> bool:
        """Send what is queued, in order, unless the server was down a moment ago; True when empty."""
        if self.entries and self.clock() >= self.next_try:
            self._send_all()
        self._check_outage()
        return not self.entries

    def drain(self, limit_s: float | None = None) -> None:
        """Block until the queue is empty (the trial's end); raises after the outage limit."""
        deadline = None if limit_s is None else self.clock() + limit_s
        while self.entries:
            self._send_all()
            self._check_outage()
            if not self.entries:
                return
            if deadline is not None and self.clock() > deadline:
                raise TrackingOutageError(f"{len(self.entries)} tracking write(s) still queued after {limit_s:g}s; "
                                          f"last error: {self.last_error}")
            self.sleep(max(0.05, min(self.next_try - self.clock(), RETRY_S[-1])))

    def _check_outage(self) -> None:
        if self.down_since is not None and self.clock() - self.down_since > self.outage_s:
            raise TrackingOutageError(
                f"the tracking server {self.where} was unreachable for more than {self.outage_s:g}s "
                f"(tracking.outage_s); {len(self.entries)} write(s) were queued; last error: {self.last_error}"
            )

    def _send_all(self) -> None:
        while self.entries:
            group = self._next_group()
            try:
                self._send(group)
            except Exception as err:  # noqa: BLE001 - sorted into transient and permanent below
                for entry in group:
                    entry["maybe_sent"] = True
                if not is_transient(err):
                    raise
                self._failed(err)
                return
            for entry in group:
                if entry["op"] == "metrics":
                    self.metrics_delivered += len(entry["metrics"])
                self._drop(entry)
            self._recovered()

    def _next_group(self) -> list[dict[str, Any]]:
        """The oldest entry; consecutive metric entries travel together (up to MLflow's batch limit)."""
        first = self.entries[0]
        if first["op"] != "metrics":
            return [first]
        group, count = [], 0
        for entry in self.entries:
            if entry["op"] != "metrics" or count + len(entry["metrics"]) > BATCH_METRICS and group:
                break
            group.append(entry)
            count += len(entry["metrics"])
        return group

    def _failed(self, err: BaseException) -> None:
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
        self.last_error = _first_line(err)
        self.next_try = now + RETRY_S[min(self.failures, len(RETRY_S) - 1)]
        self.failures += 1

    def _recovered(self) -> None:
        self.down_since, self.failures, self.next_try = None, 0, 0.0

    def _send(self, group: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        c, run_id, entry = self.client, self.run_id, group[0]
        op = entry["op"]
        if op == "metrics":
            rows = [Metric(k, v, ts, step) for e in group for k, v, ts, step in e["metrics"]]
            c.log_batch(run_id, metrics=rows)
        elif op == "params":
            c.log_batch(run_id, params=[Param(k, v) for k, v in entry["params"].items()])
        elif op == "tags":
            c.log_batch(run_id, tags=[RunTag(k, v) for k, v in entry["tags"].items()])
        elif op == "text":
            c.log_text(run_id, entry["text"], entry["path"])
        elif op == "file":
            c.log_artifact(run_id, str(self.spool / entry["file"]), entry["dir"])
        elif op == "step_image":
            self._send_step_image(entry)
        elif op == "table":
            if entry["maybe_sent"] and self._has_artifact(entry["path"]):
                return  # it reached the server before the failure: MLflow would append it again
            table = entry["table"]
            data = table["dict"] if "dict" in table else _frame(table)
            c.log_table(run_id, data, entry["path"])
        elif op == "status":
            c.set_terminated(run_id, status=entry["status"])
        else:  # pragma: no cover - only this module writes entries
            raise DDSearchError(f"unknown outbox entry {op!r}")

    def _send_step_image(self, entry: dict[str, Any]) -> None:
        from PIL import Image

        from mlflow.tracking.multimedia import compress_image_size
        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES

        png = self.spool / entry["file"]
        webp = png.with_name(f"{entry['stem']}+compressed.webp")
        if not webp.is_file():
            with Image.open(png) as picture:
                compress_image_size(picture).save(webp)
        self.client.log_artifact(self.run_id, str(png), "images")
        self.client.log_artifact(self.run_id, str(webp), "images")
        self.client.set_tag(self.run_id, MLFLOW_LOGGED_IMAGES, True)

    def _has_artifact(self, path: str) -> bool:
        parent = path.rpartition("/")[0] or None
        return any(item.path == path for item in self.client.list_artifacts(self.run_id, parent))

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write the pending entries (and their files) into a checkpoint folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for entry in self.entries:
            if entry.get("file"):
                src = self.spool / entry["file"].split("/", 1)[0]
                shutil.copytree(src, folder / src.name, dirs_exist_ok=True)
        (folder / SAVED).write_text(json.dumps({"seq": self.seq, "entries": self.entries}))

    def restore(self, folder: str | Path) -> int:
        """Queue the entries a checkpoint saved (before anything new); returns how many.

        They may have reached the server after the checkpoint was taken, so each is marked as
        possibly sent and resent under the idempotency rules.
        """
        saved = Path(folder) / SAVED
        if not saved.is_file():
            return 0
        state = json.loads(saved.read_text())
        restored = []
        for entry in state["entries"]:
            if entry.get("file"):
                src = Path(folder) / entry["file"].split("/", 1)[0]
                shutil.copytree(src, self.spool / src.name, dirs_exist_ok=True)
            restored.append(entry | {"maybe_sent": True})
        self.entries = restored + self.entries
        self.seq = max(self.seq, int(state.get("seq", 0)))
        return len(restored)

    def close(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)


def _frame(table: dict[str, Any]):
    import pandas as pd

    return pd.DataFrame(table["data"], columns=table["columns"], index=table["index"])


def call_until_reachable(call: Callable[[], T], outage_s: float, where: str = "the tracking server",
                         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()`` (which must be safe to repeat), retried while the server is away, for up to ``outage_s``.

    For what a trial cannot queue: opening its run (it needs the run id) and reading it back.
    """
    start, attempt = clock(), 0
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - sorted below
            if not is_transient(err):
                raise
            if clock() - start > outage_s:
                raise TrackingOutageError(f"the tracking server {where} was unreachable for more than {outage_s:g}s "
                                          f"(tracking.outage_s); last error: {_first_line(err)}") from None
            sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1
