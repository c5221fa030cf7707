"""The cluster rehearsal (issue 15): the docker stack as plain processes on 127.0.0.1, and its faults.

A PostgreSQL cluster, an MLflow server on it (with its own artifact folder), a Ray head and a
Ray worker start from the bare-metal steps of docker/README.md (see ``tests/cluster.py``); the
studies run with the README's `ddsearch tune` line: trials on both nodes, MLflow on PostgreSQL,
Optuna on PostgreSQL (``sampler.storage``). Every study is compared with the same study on the
default local store (SQLite and the study's own tracking server), run on the same two nodes:

- the stack works: the same runs, params, metric keys and steps;
- the tracking server is SIGKILLed mid-study and started again 20 s later: every trial finishes
  and its run holds every metric step, image grid and artifact of the no-fault run, once;
- PostgreSQL restarts mid-study (``pg_ctl restart -m immediate``): the same;
- the driver is SIGKILLed and the study resumed with Optuna on PostgreSQL: no trial lost, no
  run duplicated, each trial once in the Optuna study;
- load: 8 concurrent trials log every step through the server for over a minute; the metric
  rows in PostgreSQL match what the trials sent.

The studies are tiny DataDAM runs on digits (CPU): the plumbing is under test, not accuracy.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import Rehearsal, postgres_missing
from conftest import TINY_CONV, TINY_CONV_BN

pytestmark = [pytest.mark.slow, pytest.mark.skipif(postgres_missing() is not None, reason=postgres_missing() or "")]

ITERATIONS = 120  # ~12 s of training per trial here: long enough to be hit mid-run
EVAL_EVERY = 30
OUTAGE_S = float(os.environ.get("DDSEARCH_TEST_OUTAGE_S", "20"))  # the 20 s; the kill/restart is real either way
STUDY_TIMEOUT_S = 400


def study(name: str, **changes: Any) -> dict[str, Any]:
    """Two trials (one per node), every step logged, FIFO so that every trial runs to its end."""
    out: dict[str, Any] = {
        "name": name,
        "device": "cpu",
        "dataset": {"name": "digits"},
        "method": {"name": "datadam", "ipc": 1, "iterations": ITERATIONS, "arch": TINY_CONV_BN, "batch_real": 8},
        "evaluation": {"arch": TINY_CONV, "eval_every": EVAL_EVERY, "log_every": 1, "epochs": 2,
                       "final_epochs": 2, "final_repeats": 1},
        "evaluators": [TINY_CONV],
        "search": {"lambda_mmd": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
        "scheduler": {"type": "none"},
        "budget": {"num_samples": 2, "max_concurrent": 2, "max_failures": 1},
        "resources": {"cpu": 1},
    }
    for key, value in changes.items():
        out[key] = out[key] | value if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write(folder: Path, content: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{content['name']}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    logs = tmp_path_factory.mktemp("rehearsal-logs")
    cluster = Rehearsal(logs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def finish(driver: subprocess.Popen, log: Path, timeout_s: float = STUDY_TIMEOUT_S) -> None:
    try:
        driver.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        pytest.fail(f"the study did not finish in {timeout_s:.0f}s:\n{log.read_text()[-4000:]}")
    assert driver.returncode == 0, log.read_text()[-4000:]


def results(folder: Path, name: str) -> dict[str, list[dict[str, Any]]]:
    """Tune trial id -> the results its driver recorded (result.json), oldest first."""
    out = {}
    for path in glob.glob(str(folder / ".ddsearch" / name / "ray" / name / "trial_*" / "result.json")):
        rows = []
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
        out[Path(path).parent.name.removeprefix("trial_")] = rows
    return out


def wait_for(condition, what: str, driver: subprocess.Popen, log: Path, timeout_s: float = STUDY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert driver.poll() is None, f"the study ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} in time:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def checkpointed(folder: Path, name: str, trials: int, at_least: int = EVAL_EVERY):
    """True once ``trials`` trials have reported a checkpoint at iteration >= ``at_least`` (none has ended)."""
    def check() -> bool:
        found = results(folder, name)
        assert not any(r.get("final") for rows in found.values() for r in rows), "a trial ended before the fault"
        done = [rows for rows in found.values()
                if any(r.get("checkpoint_dir_name") and r.get("iteration", 0) >= at_least for r in rows)]
        return len(done) >= trials
    return check


def snapshot(uri: str, name: str) -> dict[str, Any]:
    """What a study left in MLflow, keyed by Optuna trial number, comparable between stores.

    Asserts on the way: one parent (FINISHED), nothing RUNNING, one run per Tune trial, and one
    value per step in every metric history.
    """
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ddsearch.kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [(r.info.run_name, r.info.status) for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    trial_ids = [c.data.tags["ddsearch.trial_id"] for c in children]
    assert len(set(trial_ids)) == len(trial_ids), f"duplicate runs for a trial: {trial_ids}"
    out: dict[str, Any] = {}
    for run in children:
        assert run.info.status == "FINISHED", (run.info.run_name, run.info.status, {  # why it ended otherwise
            k: v for k, v in run.data.tags.items() if k.split(".")[-1] in ("failure", "interrupted", "lost", "outcome")})
        assert run.data.tags.get("ddsearch.outcome") == "finished", run.data.tags
        metrics = {}
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{run.info.run_name}: {key} has more than one value for a step"
            metrics[key] = sorted(steps)
        paths = _artifacts(client, run.info.run_id)
        images = sorted(int(m.group(1)) for p in paths
                        if (m := re.fullmatch(r"images/synset_grid\+step\+(\d+)\+timestamp\+\d+\+[\w-]+\.png", p)))
        out[run.data.tags["ddsearch.optuna_number"]] = {
            "params": dict(run.data.params),
            "metrics": metrics,
            "artifacts": sorted(p for p in paths if not p.startswith("images/")),
            "image_steps": images,
            "image_files": len([p for p in paths if p.startswith("images/")]),
        }
    return out


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


@pytest.fixture(scope="module")
def reference(rehearsal: Rehearsal, tmp_path_factory) -> dict[str, Any]:
    """The no-fault study on the default local store (the study's own server on SQLite), same nodes."""
    folder = tmp_path_factory.mktemp("reference")
    path = write(folder, study("rehearsal"))
    log = folder / "tune.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "ddsearch.cli", "tune", str(path), "--address", rehearsal.address],
                                  cwd=folder, env=rehearsal.env, stdout=out, stderr=subprocess.STDOUT)
    finish(driver, log)
    shot = snapshot(f"sqlite:///{folder}/mlruns/mlflow.db", "rehearsal")
    assert len(shot) == 2
    for run in shot.values():
        assert run["metrics"]["loss"] == list(range(1, ITERATIONS + 1))
        assert run["image_steps"] == list(range(0, ITERATIONS + 1, EVAL_EVERY))
        assert {"synset.safetensors", "config.json", "cross_arch.json", "grids/final.png"} <= set(run["artifacts"])
    return shot


def run_on_the_stack(rehearsal: Rehearsal, folder: Path, name: str, during=None) -> dict[str, Any]:
    """The README's `ddsearch tune` line on the stack; ``during(driver, log)`` injects a fault."""
    path = write(folder, study(name))
    log = folder / "tune.log"
    driver = rehearsal.tune(path, cwd=folder, log=log)
    try:
        if during is not None:
            during(driver, log)
        finish(driver, log)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    return snapshot(rehearsal.tracking_uri, name)


def test_the_stack_gives_the_same_runs_as_the_local_store(rehearsal: Rehearsal, reference, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    shot = run_on_the_stack(rehearsal, tmp_path, "stack")
    assert shot == reference
    runs = MlflowClient(rehearsal.tracking_uri).search_runs(
        [MlflowClient(rehearsal.tracking_uri).get_experiment_by_name("stack").experiment_id])
    nodes = {r.data.tags["ddsearch.node"].split()[1] for r in runs if "ddsearch.node" in r.data.tags}
    assert len(nodes) == 2, f"the trials did not use both Ray nodes: {nodes}"
    # MLflow's rows and the Optuna study are in PostgreSQL
    (count,) = rehearsal.psql("mlflow", "SELECT count(*) FROM runs r JOIN experiments e USING (experiment_id) "
                                        "WHERE e.name = 'stack'")[0]
    assert int(count) == 3
    states = rehearsal.psql("optuna", "SELECT t.state FROM trials t JOIN studies s USING (study_id) "
                                      "WHERE s.study_name = 'stack'")
    assert sorted(s for (s,) in states) == ["COMPLETE", "COMPLETE"]


def test_a_tracking_server_killed_mid_study_loses_nothing(rehearsal: Rehearsal, reference, tmp_path: Path) -> None:
    name = "outage"
    seen: dict[str, float] = {}

    def kill_and_restart(driver: subprocess.Popen, log: Path) -> None:
        wait_for(checkpointed(tmp_path, name, 2), "checkpoints of both trials", driver, log)
        rehearsal.kill_mlflow()
        killed = time.monotonic()
        time.sleep(OUTAGE_S)
        seen["down_while_running"] = float(driver.poll() is None)
        rehearsal.start_mlflow()
        seen["down_s"] = time.monotonic() - killed

    shot = run_on_the_stack(rehearsal, tmp_path, name, kill_and_restart)
    assert seen["down_while_running"] and seen["down_s"] >= OUTAGE_S
    assert shot == reference
    finals = [rows[-1] for rows in results(tmp_path, name).values()]
    assert all(r.get("final") == 1 for r in finals)
    assert all(r["tracking_outages"] >= 1 for r in finals), "a trial never saw the server down"


def test_a_postgres_restart_mid_study_loses_nothing(rehearsal: Rehearsal, reference, tmp_path: Path) -> None:
    name = "pgrestart"

    def restart(driver: subprocess.Popen, log: Path) -> None:
        # One trial mid-run is enough to hit the study mid-flight. Waiting for both raced on a loaded
        # machine: the second trial's worker started so late that the first had already finished.
        wait_for(checkpointed(tmp_path, name, 1), "a checkpoint of a running trial", driver, log)
        rehearsal.restart_postgres()
        assert driver.poll() is None, "the study ended before PostgreSQL came back"

    shot = run_on_the_stack(rehearsal, tmp_path, name, restart)
    assert shot == reference
    states = rehearsal.psql("optuna", "SELECT t.state FROM trials t JOIN studies s USING (study_id) "
                                      f"WHERE s.study_name = '{name}'")
    assert sorted(s for (s,) in states) == ["COMPLETE", "COMPLETE"]


def test_a_killed_driver_resumes_with_optuna_on_postgres(rehearsal: Rehearsal, tmp_path: Path) -> None:
    """Both trials are in Tune's saved state with two checkpoints each when the driver dies."""
    name = "driverkill"
    # 4x the iterations: after the second checkpoint a trial must outlive the 2.5 s wait below. At 120
    # iterations a fast machine finished both trials (3.4 s of distillation each) before the kill.
    path = write(tmp_path, study(name, method={"iterations": 4 * ITERATIONS}))
    log = tmp_path / "tune.log"
    driver = rehearsal.tune(path, cwd=tmp_path, log=log)
    try:
        wait_for(checkpointed(tmp_path, name, 2, at_least=2 * EVAL_EVERY), "two checkpoints of both trials",
                 driver, log)
        time.sleep(2.5)  # TUNE_GLOBAL_CHECKPOINT_S: Tune's experiment state holds both trials
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    finish(rehearsal.tune(path, "--resume", cwd=tmp_path, log=log), log)

    shot = snapshot(rehearsal.tracking_uri, name)
    assert len(shot) == 2  # no trial lost, none drawn again
    from mlflow import MlflowClient

    client = MlflowClient(rehearsal.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert not [r for r in runs if r.data.tags.get("ddsearch.outcome") == "lost"]
    assert any(int(r.data.tags.get("ddsearch.resumed_from_iteration", "0")) >= EVAL_EVERY for r in runs), \
        "no trial resumed from its checkpoint"
    rows = rehearsal.psql("optuna", "SELECT t.state, a.value_json FROM trials t JOIN studies s USING (study_id) "
                                    "JOIN trial_user_attributes a USING (trial_id) "
                                    f"WHERE s.study_name = '{name}' AND a.key = 'tune_trial_id'")
    tune_ids = [json.loads(v) for _, v in rows]
    assert len(tune_ids) == len(set(tune_ids)) == 2, rows  # each trial once
    assert [s for s, _ in rows] == ["COMPLETE", "COMPLETE"]
    assert set(tune_ids) == {r.data.tags["ddsearch.trial_id"] for r in runs if "ddsearch.trial_id" in r.data.tags}


LOAD_TRIALS = 8
LOAD_ITERATIONS = 600


def test_eight_trials_logging_every_step_lose_no_metric_row(rehearsal: Rehearsal, tmp_path: Path) -> None:
    """8 concurrent trials (a quarter CPU each: 4 per node) log every iteration through the server.

    On this 2-core machine the trials are mostly logging: a tiny network on digits (one image per
    class), so that the requests, not the arithmetic, set the pace for over a minute.
    """
    name = "load"
    content = study(name, method={"iterations": LOAD_ITERATIONS, "batch_real": 4},
                    evaluation={"eval_every": LOAD_ITERATIONS // 2, "epochs": 1, "final_epochs": 1},
                    budget={"num_samples": LOAD_TRIALS, "max_concurrent": LOAD_TRIALS, "max_failures": 0},
                    resources={"cpu": 2 / LOAD_TRIALS})
    path = write(tmp_path, content)
    log = tmp_path / "tune.log"
    driver = rehearsal.tune(path, cwd=tmp_path, log=log)
    finish(driver, log, timeout_s=600)

    found = results(tmp_path, name)
    assert len(found) == LOAD_TRIALS
    sent = {}
    for rows in found.values():
        final = rows[-1]
        assert final.get("final") == 1
        sent[final["mlflow_run_id"]] = int(final["mlflow_metric_values"])
    counted = dict(rehearsal.psql("mlflow", "SELECT m.run_uuid, count(*) FROM metrics m JOIN runs r ON r.run_uuid = "
                                            "m.run_uuid JOIN experiments e USING (experiment_id) "
                                            f"WHERE e.name = '{name}' GROUP BY m.run_uuid"))
    counted = {run: int(n) for run, n in counted.items()}
    assert {run: counted.get(run, 0) for run in sent} == sent, "metric rows missing (or extra) in PostgreSQL"
    evals = 2
    per_trial = LOAD_ITERATIONS + 5 * evals + 6  # loss per step; 5 metrics per evaluation; 6 final ones
    assert set(sent.values()) == {per_trial}, sent
    # the trials overlapped, and logged for over a minute
    (span,) = rehearsal.psql("mlflow", "SELECT (max(m.timestamp) - min(m.timestamp)) / 1000.0 FROM metrics m JOIN runs r "
                                       "ON r.run_uuid = m.run_uuid JOIN experiments e USING (experiment_id) "
                                       f"WHERE e.name = '{name}' AND m.key = 'loss'")[0]
    windows = rehearsal.psql("mlflow", "SELECT min(m.timestamp), max(m.timestamp) FROM metrics m JOIN runs r "
                                       "ON r.run_uuid = m.run_uuid JOIN experiments e USING (experiment_id) "
                                       f"WHERE e.name = '{name}' AND m.key = 'loss' GROUP BY m.run_uuid")
    overlap = (min(int(end) for _, end in windows) - max(int(start) for start, _ in windows)) / 1000
    print(f"load: {sum(sent.values())} metric rows from {LOAD_TRIALS} trials over {float(span):.0f}s, "
          f"all {LOAD_TRIALS} logging together for {overlap:.0f}s")
    assert float(span) >= 60, f"the trials logged for only {float(span):.0f}s"
    assert overlap > 0, "the trials did not run concurrently"
