"""MLflow plumbing of the search service: trial runs are found again (no duplicates), the study's
tracking server serves HTTP and stops, and its guard stops it when the driver dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ddsearch.tracking import store as tracking_store
from ddsearch.tracking import study_runs as tracking
from ddsearch.tracking.run_logger import RunLogger
from ddsearch.tracking.server import TrackingServer
from ddsearch.tracking.study_runs import StudyRuns


@pytest.fixture
def store(tmp_path: Path) -> str:
    uri, _ = tracking_store.default_store(tmp_path)
    return uri


def test_trial_run_is_reused_across_retries_and_resumes(store: str) -> None:
    runs = StudyRuns.in_experiment(store, "exp")
    parent = runs.create_parent("s")
    first = runs.open_trial("t1", None, "trial-000", {tracking.TAG_OPTUNA: 0})
    runs.fail(first, "RuntimeError: boom")

    # a retry without a checkpoint finds the run by its trial-id tag ...
    again = runs.open_trial("t1", None, "trial-000", {})
    # ... and a resume from a checkpoint uses the run id stored there
    resumed = runs.open_trial("t1", first, "trial-000", {})
    other = runs.open_trial("t2", None, "trial-001", {})
    assert again == resumed == first and other != first

    run = tracking_store.client(store).get_run(first)
    assert run.info.status == "RUNNING"
    assert run.data.tags[tracking.TAG_ATTEMPTS] == "3"
    assert run.data.tags["ddsearch.previous_failure"] == "RuntimeError: boom"
    assert tracking.TAG_FAILURE not in run.data.tags  # the current attempt has not failed
    assert run.data.tags[tracking.PARENT_TAG] == parent and run.data.tags[tracking.TAG_OPTUNA] == "0"
    children = runs.trial_records()
    assert sorted(c["tags"][tracking.TAG_TRIAL_ID] for c in children) == ["t1", "t2"]


def test_runs_tune_left_open_close_as_the_callback_would(store: str) -> None:
    """Tune ends the trials its time budget cuts without calling back: the study's end closes them
    with the same words, once, and leaves a closed run alone."""
    from ddsearch.search.tuner import close_trial_run

    runs = StudyRuns.in_experiment(store, "exp")
    runs.create_parent("s")
    cut = runs.open_trial("t1", None, "trial-000", {})
    done = runs.open_trial("t2", None, "trial-001", {})
    runs.finish(done, outcome="finished")
    session = {"started": time.time() - 100.0, "time_budget_s": 90.0, "scheduler": "asha", "study": "s"}
    result = {"iteration": 40, "val_acc": 0.5, "mlflow_run_id": cut}
    assert close_trial_run(runs, session, "t1", result)
    assert not close_trial_run(runs, session, "t1", result)  # closed once
    assert not close_trial_run(runs, session, "t2", {"iteration": 40})  # a finished run keeps its outcome
    client = tracking_store.client(store)
    tags = client.get_run(cut).data.tags
    assert client.get_run(cut).info.status == "FINISHED" and tags[tracking.TAG_OUTCOME] == "stopped_early"
    assert "stopped at iteration 40 by the study's time budget (90s)" in tags[tracking.TAG_STOPPED]
    assert client.get_run(done).data.tags[tracking.TAG_OUTCOME] == "finished"
    final = runs.open_trial("t3", None, "trial-002", {})
    assert close_trial_run(runs, session, "t3", {"iteration": 60, "final": 1})
    assert client.get_run(final).info.status == "FINISHED" and tracking.TAG_STOPPED not in client.get_run(final).data.tags


def test_runs_a_resume_swept_are_closed_as_tune_ended_their_trials(store: str) -> None:
    """The driver died after Tune ended two trials but before their runs were closed. The resumed
    study's sweep KILLs both runs and Tune does not run those trials again, so the study's end must
    still close them as Tune ended them; a run KILLED for another reason keeps its status."""
    from ddsearch.search.tuner import close_trial_run

    runs = StudyRuns.in_experiment(store, "exp")
    parent = runs.create_parent("s")
    done = runs.open_trial("t1", None, "trial-000", {})
    cut = runs.open_trial("t2", None, "trial-001", {})
    stopped_by_user = runs.open_trial("t3", None, "trial-002", {})
    runs.fail(stopped_by_user, "KeyboardInterrupt: ", status="KILLED", outcome=None)

    resumed = StudyRuns.in_experiment(store, "exp")
    assert not resumed.open_parent("s", parent, restored=True, description="s", state_dir="/tmp/s")
    client = tracking_store.client(store)
    assert [client.get_run(r).info.status for r in (done, cut)] == ["KILLED", "KILLED"]  # the sweep

    session = {"started": time.time() - 100.0, "time_budget_s": 90.0, "scheduler": "asha", "study": "s"}
    assert close_trial_run(resumed, session, "t1", {"iteration": 60, "final": 1, "mlflow_run_id": done})
    assert close_trial_run(resumed, session, "t2", {"iteration": 40, "val_acc": 0.5})
    assert not close_trial_run(resumed, session, "t3", {"iteration": 60, "final": 1})
    for run_id in (done, cut):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and tracking.TAG_INTERRUPTED not in run.data.tags, run.data.tags
    assert client.get_run(cut).data.tags[tracking.TAG_OUTCOME] == "stopped_early"
    assert client.get_run(stopped_by_user).info.status == "KILLED"
    assert not close_trial_run(resumed, session, "t1", {"iteration": 60, "final": 1})  # closed once


def test_log_table_is_written_once_or_replaced_never_appended(tmp_path: Path, store: str) -> None:
    import pandas as pd

    run = StudyRuns.in_experiment(store, "exp").create_parent("s")
    tracking_store.log_table(store, run, pd.DataFrame({"a": [1, 2]}), "board.json")
    tracking_store.log_table(store, run, pd.DataFrame({"a": [3, 4]}), "board.json")  # MLflow would append
    local = tracking_store.download_artifact(store, run, "board.json", tmp_path / "first")
    assert [row[0] for row in json.loads(local.read_text())["data"]] == [1, 2]
    tracking_store.log_table(store, run, pd.DataFrame({"a": [5], "b": ["x"]}), "board.json", replace=True)
    local = tracking_store.download_artifact(store, run, "board.json", tmp_path / "replaced")
    table = json.loads(local.read_text())
    assert table["columns"] == ["a", "b"] and table["data"] == [[5, "x"]]  # the format log_table writes
    tags = tracking_store.client(store).get_run(run).data.tags
    assert {"path": "board.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])  # still a table


def test_tracking_server_serves_http_and_stops(tmp_path: Path, store: str) -> None:
    server = TrackingServer(store, tmp_path / "server.log").start()
    try:
        server.wait_ready(timeout_s=120)
        run = StudyRuns.in_experiment(server.uri, "over-http").create_parent("s")
        logger = RunLogger(run, server.uri)
        logger.log_metrics({"val_acc": 0.5}, step=3)
        logger.finish()
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.uri + "/health", timeout=2)
    # what went over HTTP is in the SQLite store
    stored = tracking_store.client(store).get_run(run)
    assert stored.data.metrics["val_acc"] == 0.5 and stored.info.status == "FINISHED"


def test_guard_stops_its_command_when_the_owner_dies(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    child_code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    guard = subprocess.Popen([sys.executable, "-m", "ddsearch.tracking.guard", str(owner.pid), "--",
                              sys.executable, "-c", child_code])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        owner.wait(timeout=30)
        guard.wait(timeout=30)  # the guard notices, stops the command, and exits
        time.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    finally:
        for proc in (owner, guard):
            if proc.poll() is None:
                proc.kill()
