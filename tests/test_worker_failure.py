"""Worker-failure tolerance: a study survives losing a Ray worker node in the middle of a trial.

A head and a worker node (1 CPU each) run on this machine. `ddsearch tune --address` runs a
two-trial study on them, one trial per node. Once the driver has registered a checkpoint of the
trial on the worker node, every process of that node (its `ray start`, raylet, agents and the
trial's worker process) is SIGKILLed: the node is gone, as if its machine died. Then:

* Tune retries the trial (``budget.max_failures``) on the surviving node from its last
  checkpoint: the trial's MLflow run says it resumed from that iteration, its loss history has
  every step before that iteration exactly once (a restart from zero would log them twice), and
  the retry ran on another node;
* the study ends normally with every trial accounted for: Tune, Optuna and MLflow agree on the
  trials, there is one MLflow child run per trial, and nothing is left RUNNING.

Everything this test starts (Ray nodes, the driver and its tracking server) is stopped by pid at
the end; it never runs `ray stop`, which would stop every Ray on a shared machine.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import proc_stat as _stat
from cluster import kill_all as _kill_all
from cluster import tree as _tree
from conftest import TINY_CONV, TINY_CONV_BN

NAME = "nodefail"
ITERATIONS = 120  # ~10-20 s per trial on one core, most of it checkpoint reports
EVAL_EVERY = 10  # a checkpoint every 10 iterations; the first comes a few seconds in
LOG_EVERY = 5
CLUSTER_START_S = 120
STUDY_TIMEOUT_S = 300
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"  # the CLI of this interpreter's Ray


# ---- processes, through /proc (no psutil) ---------------------------------------------------

def _ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        pid = _stat(pid)[0]
        out.append(pid)
    return out


def _raylet_node_id(ray_start_pid: int) -> str:
    """The Ray node id of the node a `ray start` process runs (from its raylet's command line)."""
    for pid in _tree(ray_start_pid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/raylet"):
            for arg in args:
                if arg.startswith(b"--node_id="):
                    return arg.split(b"=", 1)[1].decode()
    raise AssertionError(f"no raylet with a --node_id under pid {ray_start_pid}")


# ---- a two-node cluster on this machine -------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A Ray head and one worker node, 1 CPU each, started with `ray start --block`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="ddwf-", dir="/tmp")  # Ray's socket paths must stay short
        self.env = os.environ | {"RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats",
                  "--node-ip-address", "127.0.0.1"]
        self._start("head", ["--head", "--port", str(self.port), "--resources", '{"head": 1}',
                             "--include-dashboard=false", "--temp-dir", self.temp_dir, *common])
        self._start("worker", ["--address", self.address, "--resources", '{"worker": 1}', *common])

    def _start(self, role: str, args: list[str]) -> None:
        log = self.logs / f"{role}.log"
        with open(log, "w") as out:
            self.procs[role] = subprocess.Popen([RAY, "start", *args], env=self.env, start_new_session=True,
                                                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + CLUSTER_START_S
        while "Ray runtime started" not in log.read_text():
            assert self.procs[role].poll() is None, f"ray start ({role}) exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray start ({role}) did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)

    def kill_node(self, role: str) -> None:
        """SIGKILL every process of a node at once: the node dies as if its machine went away."""
        procs = _tree(self.procs[role].pid)
        _kill_all(procs)
        self.procs[role].wait(timeout=30)

    def stop(self) -> None:
        alive = {role: proc for role, proc in self.procs.items() if proc.poll() is None}
        leftovers: dict[int, int] = {}
        for proc in alive.values():
            leftovers |= _tree(proc.pid)  # before the signal: Ray's workers lose their parent links after
        for proc in alive.values():
            proc.terminate()
        deadline = time.monotonic() + 5  # a SIGTERMed node drains for up to 30 s; no need here
        while time.monotonic() < deadline and any(p.poll() is None for p in alive.values()):
            time.sleep(0.2)
        _kill_all(leftovers)
        for proc in alive.values():
            proc.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path: Path):
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    c = Cluster(logs)
    try:
        c.start()
        yield c
    finally:
        c.stop()


# ---- the study and what it leaves ---------------------------------------------------------------

def _study() -> dict[str, Any]:
    return {
        "name": NAME,
        "device": "cpu",
        "dataset": {"name": "digits"},
        "method": {"name": "datadam", "ipc": 2, "iterations": ITERATIONS, "arch": TINY_CONV_BN, "batch_real": 16},
        "evaluation": {"arch": TINY_CONV, "eval_every": EVAL_EVERY, "log_every": LOG_EVERY, "epochs": 5,
                       "final_epochs": 5, "final_repeats": 1},
        "evaluators": [TINY_CONV],
        "search": {"lambda_mmd": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
        "scheduler": {"type": "none"},  # FIFO: no early stop may end the trial before the kill
        "budget": {"num_samples": 2, "max_concurrent": 2, "max_failures": 1},
        "resources": {"cpu": 1},
    }


def _results(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Tune trial id -> the results the driver has recorded (its result.json), oldest first."""
    out = {}
    for path in glob.glob(str(folder / ".ddsearch" / NAME / "ray" / NAME / "trial_*" / "result.json")):
        rows = []
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
        out[Path(path).parent.name.removeprefix("trial_")] = rows
    return out


def _on_node(pid: int, ray_start_pid: int) -> bool:
    try:
        return ray_start_pid in _ancestors(pid)
    except (OSError, ValueError, IndexError):  # the process ended
        return False


def _tune_states(folder: Path) -> dict[str, str]:
    files = sorted(glob.glob(str(folder / ".ddsearch" / NAME / "ray" / NAME / "experiment_state-*.json")))
    assert files, "Tune saved no experiment state"
    data = json.loads(Path(files[-1]).read_text())
    return {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in data["trial_data"]}


@pytest.mark.slow
def test_study_survives_losing_a_worker_node_mid_trial(cluster: Cluster, tmp_path: Path) -> None:
    import optuna
    from mlflow import MlflowClient

    path = tmp_path / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(_study(), sort_keys=False))
    worker_node = _raylet_node_id(cluster.procs["worker"].pid)
    head_node = _raylet_node_id(cluster.procs["head"].pid)
    env = cluster.env | {"PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the study's own SQLite store under tmp_path
    log_path = tmp_path / "tune.log"

    def log_tail() -> str:
        return log_path.read_text()[-4000:]

    # The driver runs in its own process (and session, so its tracking server goes with it).
    with open(log_path, "w") as log:
        cmd = [sys.executable, "-m", "ddsearch.cli", "tune", str(path), "--address", cluster.address]
        driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Wait until the driver has a checkpoint of the trial running on the worker node.
        victim, checkpointed_at = None, 0
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        while victim is None:
            assert driver.poll() is None, f"the study ended before the worker node could be killed:\n{log_tail()}"
            assert time.monotonic() < deadline, f"no checkpoint from the worker node in time:\n{log_tail()}"
            for trial_id, rows in _results(tmp_path).items():
                saved = [r for r in rows if r.get("checkpoint_dir_name")]
                if saved and not rows[-1].get("final") and _on_node(int(saved[-1]["pid"]), cluster.procs["worker"].pid):
                    victim, checkpointed_at = trial_id, int(saved[-1]["iteration"])
                    break
            else:
                time.sleep(0.2)
        assert 0 < checkpointed_at < ITERATIONS
        cluster.kill_node("worker")

        try:
            driver.wait(timeout=STUDY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the study did not finish after the worker node died:\n{log_tail()}")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    assert driver.returncode == 0, log_tail()

    # ---- Tune: both trials ended well; the killed one failed once and was retried ----
    states = _tune_states(tmp_path)
    assert set(states) >= {victim} and len(states) == 2, states
    assert all(s == "TERMINATED" for s in states.values()), states

    # ---- MLflow: one child run per trial, none RUNNING; the killed trial resumed, not restarted ----
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ddsearch.kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1 == len(states)
    by_trial = {c.data.tags["ddsearch.trial_id"]: c for c in children}
    assert set(by_trial) == set(states), "not exactly one MLflow run per Tune trial"
    for trial_id, run in by_trial.items():
        assert run.info.status == "FINISHED", (trial_id, run.info.status, run.data.tags.get("ddsearch.failure"))
        assert run.data.tags.get("ddsearch.outcome") == "finished" and "final_val_acc" in run.data.metrics

    run = by_trial[victim]
    assert run.data.tags["ddsearch.attempts"] == "2"
    assert run.data.tags.get("ddsearch.previous_failure"), "the lost attempt's reason is recorded on the run"
    resumed_from = int(run.data.tags["ddsearch.resumed_from_iteration"])
    assert resumed_from >= checkpointed_at > 0, (resumed_from, checkpointed_at)
    assert resumed_from % EVAL_EVERY == 0 and resumed_from < ITERATIONS
    assert run.data.tags["ddsearch.node"].split()[1] == head_node != worker_node  # retried on the surviving node
    losses = client.get_metric_history(run.info.run_id, "loss")
    steps = [m.step for m in losses]
    assert set(steps) == set(range(1, ITERATIONS + 1)), "the resumed run's loss curve has gaps"
    before = [s for s in steps if s <= resumed_from]
    assert sorted(before) == list(range(1, resumed_from + 1)), "steps before the checkpoint were distilled again"
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert sorted(s for s in val_steps if s <= resumed_from) == list(range(EVAL_EVERY, resumed_from + 1, EVAL_EVERY))

    other = by_trial[next(t for t in states if t != victim)]
    assert other.data.tags["ddsearch.attempts"] == "1"
    assert other.data.tags["ddsearch.resumed_from_iteration"] == "0"

    # ---- Optuna: the same trials, all complete ----
    storage = f"sqlite:///{tmp_path}/.ddsearch/{NAME}/optuna.db"
    ot_trials = optuna.load_study(study_name=NAME, storage=storage).get_trials()
    assert [t.state.name for t in ot_trials] == ["COMPLETE", "COMPLETE"], [t.state.name for t in ot_trials]
    assert {t.user_attrs["tune_trial_id"] for t in ot_trials} == set(states)
    assert sorted(int(c.data.tags["ddsearch.optuna_number"]) for c in children) == sorted(t.number for t in ot_trials)
