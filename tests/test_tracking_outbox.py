"""The trial's outbox: writes queue while the tracking server is away, flush in order, once."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ddsearch.tracking import store as mlflow_store
from ddsearch.tracking.run_logger import RunLogger
from ddsearch.tracking.outbox import Outbox, TrackingOutageError, call_until_reachable, is_transient


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Flaky:
    """An MlflowClient stand-in whose server can be switched off; it records what reached it."""

    def __init__(self, real) -> None:
        self.real = real
        self.down = False
        self.lose_reply = False  # the request reaches the server, the reply is lost

    def __getattr__(self, name: str):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError("connection refused")
            out = method(*args, **kwargs)
            if self.lose_reply:
                raise ConnectionError("reply lost")
            return out
        return call


@pytest.fixture
def store(tmp_path: Path):
    uri = mlflow_store.resolve_tracking_uri(str(tmp_path / "mlruns"))
    experiment = mlflow_store.experiment_id("outbox", uri)
    run_id = mlflow_store.client(uri).create_run(experiment).info.run_id
    return uri, run_id


def test_an_outage_queues_in_order_and_the_flush_logs_each_step_once(store, tmp_path: Path) -> None:
    uri, run_id = store
    clock = Clock()
    flaky = Flaky(mlflow_store.client(uri))
    box = Outbox(flaky, run_id, tmp_path / "spool", outage_s=60, clock=clock, sleep=clock.sleep)
    logger = RunLogger(run_id, uri)
    logger.client = box
    grid = np.zeros((8, 8, 3), dtype=np.uint8)

    logger.on_losses(2, [1.0, 0.5])  # the server answers: sent at once
    assert box.pending == 0 and box.metrics_delivered == 2
    flaky.down = True
    for step in range(3, 8):
        logger.on_losses(step, [1.0 / step])
        clock.sleep(1.5)
    box.log_image(run_id, grid, key="synset_grid", step=7)
    box.log_image(run_id, grid, artifact_file="grids/step_000007.png")
    synset = tmp_path / "synset.safetensors"
    for content in ("old", "new"):  # a newer copy of the same artifact supersedes the queued one
        synset.write_text(content)
        box.log_artifact(run_id, str(synset))
    synset.unlink()  # the caller's temporary file is gone; the spool kept its copy
    box.log_table(run_id, __import__("pandas").DataFrame({"arch": ["a"], "val": [0.5]}), "cross_arch.json")
    box.set_tags({"ddsearch.outcome": "finished"})
    box.set_terminated(run_id, "FINISHED")
    assert box.pending == 11 and box.outages == 1

    # The checkpoint carries the queue; a restored attempt sends it (the first attempt never does).
    box.save(tmp_path / "ckpt")
    again = Outbox(flaky, run_id, tmp_path / "spool2", outage_s=60, clock=clock, sleep=clock.sleep)
    assert again.restore(tmp_path / "ckpt") == 11
    flaky.down = False
    box.drain()
    flaky.lose_reply = True  # the first resend reaches the server but the reply is lost...
    again.pump()
    flaky.lose_reply = False
    clock.sleep(10)
    again.drain()  # ...and everything is resent: nothing may appear twice
    assert again.pending == 0

    client = mlflow_store.client(uri)
    history = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6, 7]
    paths = mlflow_store.list_artifact_paths(uri, run_id)
    assert sorted(p for p in paths if not p.startswith("images/")) == ["cross_arch.json", "grids/step_000007.png",
                                                                       "synset.safetensors"]
    images = [p for p in paths if p.startswith("images/")]
    assert len(images) == 2 and all(p.startswith("images/synset_grid+step+7+timestamp+") for p in images)
    assert (Path(mlflow_store.download_artifact(uri, run_id, "synset.safetensors", tmp_path / "dl")).read_text() == "new")
    assert len(__import__("json").loads(Path(mlflow_store.download_artifact(uri, run_id, "cross_arch.json", tmp_path / "t")).read_text())["data"]) == 1
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ddsearch.outcome"] == "finished"
    assert run.data.tags["mlflow.loggedImages"] == "True"


def test_step_images_are_named_as_mlflow_names_them(store, tmp_path: Path) -> None:
    """The outbox writes MLflow's step-image layout itself (so a resend overwrites, not duplicates)."""
    uri, run_id = store
    client = mlflow_store.client(uri)
    grid = np.zeros((8, 8, 3), dtype=np.uint8)
    client.log_image(run_id, grid, key="synset_grid", step=3)
    theirs = sorted(p for p in mlflow_store.list_artifact_paths(uri, run_id))
    Outbox(client, run_id, tmp_path / "spool").log_image(run_id, grid, key="synset_grid", step=4)
    ours = sorted(set(mlflow_store.list_artifact_paths(uri, run_id)) - set(theirs))
    shape = re.compile(r"images/synset_grid\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]{36}(\+compressed\.webp|\.png)")
    assert [shape.fullmatch(p).group(2) for p in theirs] == [shape.fullmatch(p).group(2) for p in ours]


def test_a_trial_fails_only_after_the_outage_limit_with_that_reason(tmp_path: Path) -> None:
    clock = Clock()

    class Dead:
        def log_batch(self, *args, **kwargs):
            raise ConnectionError("connection refused")

    box = Outbox(Dead(), "r", tmp_path / "spool", outage_s=30, where="http://127.0.0.1:1", clock=clock,
                 sleep=clock.sleep)
    box.set_tags({"a": 1})
    clock.sleep(29)
    box.set_tags({"b": 2})  # still within the limit: queued, no error
    with pytest.raises(TrackingOutageError, match=r"http://127.0.0.1:1 was unreachable for more than 30s \(tracking.outage_s\)"):
        box.drain()
    with pytest.raises(TrackingOutageError, match="tracking.outage_s"):
        call_until_reachable(Dead().log_batch, 5, clock=clock, sleep=clock.sleep)


def test_transient_and_permanent_failures() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

    assert is_transient(ConnectionError("refused")) and is_transient(MlflowException("API request failed"))
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_transient(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(ValueError("a bug"))


def test_a_resumed_attempt_does_not_log_the_steps_its_run_already_has(store, tmp_path: Path) -> None:
    """Steps its predecessor ran after the checkpoint are run again; the run keeps one value per step."""
    uri, run_id = store
    grid = np.zeros((8, 8, 3), dtype=np.uint8)
    first = RunLogger(run_id, uri)
    first.client = Outbox(mlflow_store.client(uri), run_id, tmp_path / "a")
    first.on_losses(5, [5.0, 4.0, 3.0, 2.0, 1.0])
    first.client.log_image(run_id, grid, key="synset_grid", step=3)
    second = RunLogger(run_id, uri)
    second.client = Outbox(mlflow_store.client(uri), run_id, tmp_path / "b")
    assert second.client.skip_logged_steps() == {"loss": 5, "image:synset_grid": 3}
    second.on_losses(8, [9.0] * 6)  # resumed from the checkpoint at step 2
    for step in (3, 6):
        second.client.log_image(run_id, grid, key="synset_grid", step=step)
    history = mlflow_store.client(uri).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, 9))
    images = [p for p in mlflow_store.list_artifact_paths(uri, run_id) if p.startswith("images/")]
    assert sorted(int(p.split("+")[2]) for p in images) == [3, 3, 6, 6]  # a .png and a .webp per step
