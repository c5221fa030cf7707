"""`ddsearch tune` / `report`: the search space, bad input, and whole studies on Ray + MLflow.

The end-to-end tests run tiny studies (digits, ipc 2, a few iterations, 16-wide ConvNets): what
they check is the plumbing (Ray Tune, Optuna, MLflow, resume), not accuracy.
"""

from __future__ import annotations

import glob
import json
import math
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

from conftest import TINY_CONV, TINY_CONV_BN
from ddsearch.cli import main
from ddsearch.config import study_from_dict
from ddsearch.errors import DDSearchError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_study(name: str, **sections: Any) -> dict[str, Any]:
    """A study that runs in seconds per trial on one CPU core."""
    study: dict[str, Any] = {
        "name": name,
        "device": "cpu",
        "dataset": {"name": "digits"},
        "method": {"name": "datadam", "ipc": 2, "iterations": 6, "arch": TINY_CONV_BN, "batch_real": 16},
        "evaluation": {"arch": TINY_CONV, "eval_every": 3, "log_every": 3, "epochs": 5, "final_epochs": 5,
                       "final_repeats": 1},
        "evaluators": [TINY_CONV],
        "search": {"lambda_mmd": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
        "budget": {"num_samples": 2, "max_concurrent": 2, "max_failures": 1},
        "resources": {"cpu": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = study[key] | value
        else:
            study[key] = value
    return study


def write_study(folder: Path, study: dict[str, Any]) -> Path:
    path = folder / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def mlflow_client(folder: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")


def study_runs(folder: Path, name: str) -> tuple[Any, list[Any]]:
    """(parent run, child runs) of a study in the local store under ``folder``."""
    client = mlflow_client(folder)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ddsearch.kind") == "study"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1  # nothing outside the study's tree
    return parents[0], children


def artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def tune_states(folder: Path, name: str) -> dict[str, dict[str, Any]]:
    """Tune's saved view of the study: trial id -> {status, last_result}."""
    files = sorted(glob.glob(str(folder / ".ddsearch" / name / "ray" / name / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        data = json.loads(Path(files[-1]).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for trial_json, run_json in data["trial_data"]:
        trial = json.loads(trial_json)
        out[trial["trial_id"]] = {"status": trial["status"], "last_result": json.loads(run_json).get("last_result", {})}
    return out


def optuna_trials(folder: Path, name: str) -> list[Any]:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/.ddsearch/{name}/optuna.db")
    return study.get_trials(deepcopy=False)


# ---- the search space -------------------------------------------------------------------------

def test_space_has_every_parameter_kind_and_starts_at_the_published_defaults() -> None:
    import optuna

    from ddsearch.search.space import build_space, make_sampler

    study = study_from_dict(tiny_study("s", method={"lr_img": 20.0, "p": 4.0}, search={
        "lr_img": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
        "lambda_mmd": {"type": "float", "low": 0.0, "high": 0.1},
        "ipc": {"type": "int", "low": 1, "high": 9, "step": 2},
        "p": {"type": "categorical", "choices": [2.0, 6.0]},
    }, objective={"second": "distill_seconds"}, sampler={"type": "nsga2"}))
    space = build_space(study)
    d = space.distributions
    assert isinstance(d["lr_img"], optuna.distributions.FloatDistribution) and d["lr_img"].log
    assert isinstance(d["ipc"], optuna.distributions.IntDistribution) and d["ipc"].step == 2
    assert isinstance(d["p"], optuna.distributions.CategoricalDistribution)
    # the study's own settings (the published defaults), clipped into the space
    assert space.first_point == {"lr_img": 10.0, "lambda_mmd": 0.01, "ipc": 1, "p": 2.0}
    assert space.clipped["lr_img"] == (20.0, 10.0) and "lambda_mmd" not in space.clipped
    assert space.metrics == ["val_acc", "distill_seconds"] and space.modes == ["max", "min"]
    assert isinstance(make_sampler(study), optuna.samplers.NSGAIISampler)
    for kind, cls in (("tpe", "TPESampler"), ("gp", "GPSampler"), ("random", "RandomSampler")):
        assert type(make_sampler(study.model_copy(update={"sampler": study.sampler.model_copy(update={"type": kind})}))).__name__ == cls


def test_an_errored_trial_is_closed_in_optuna_only_when_the_study_ends(tmp_path: Path) -> None:
    """--resume runs errored trials again, so an error is not Optuna's last word on a trial: it
    stays RUNNING with its reason until the Tuner ends, then is FAIL, or COMPLETE if a resume
    finished it. A diverged trial (its result says failed) and a stopped one are told at once."""
    import optuna

    from ddsearch.search.space import build_space, make_searcher, reconcile_optuna

    study = study_from_dict(tiny_study("s"))
    space = build_space(study)
    storage = tmp_path / "optuna.db"
    searcher = make_searcher(study, space, storage)
    ids = ["errored", "resumed", "unstarted", "diverged", "stopped", "finished"]
    for trial_id in ids:
        assert searcher.suggest(trial_id) is not None
    searcher.on_trial_complete("errored", error=True)
    searcher.on_trial_complete("resumed", error=True)
    searcher.on_trial_complete("unstarted")
    searcher.on_trial_complete("diverged", {"val_acc": math.nan, "failed": 1, "final": 0, "failure": "diverged at 7"})
    searcher.on_trial_complete("stopped", {"val_acc": 0.4, "iteration": 3, "final": 0})
    searcher.on_trial_complete("finished", {"val_acc": 0.7, "iteration": 6, "final": 1})

    def states() -> dict[str, optuna.trial.FrozenTrial]:
        loaded = optuna.load_study(study_name="s", storage=f"sqlite:///{storage}")
        return {t.user_attrs["tune_trial_id"]: t for t in loaded.get_trials(deepcopy=False)}

    now = {k: t.state.name for k, t in states().items()}
    assert now == {"errored": "RUNNING", "resumed": "RUNNING", "unstarted": "RUNNING",
                   "diverged": "FAIL", "stopped": "PRUNED", "finished": "COMPLETE"}
    # the study's end: a resume finished "resumed"; Tune saved no final result for the other two
    last = {"errored": {"val_acc": 0.3, "iteration": 3}, "resumed": {"val_acc": 0.8, "iteration": 6, "final": 1}}
    statuses = dict.fromkeys(ids, "TERMINATED") | {"errored": "ERROR", "unstarted": "ERROR"}
    assert reconcile_optuna(storage, "s", statuses, last, space.metrics) == 3
    end = states()
    assert {k: t.state.name for k, t in end.items()} == now | {"errored": "FAIL", "resumed": "COMPLETE", "unstarted": "FAIL"}
    assert end["resumed"].value == pytest.approx(0.8)
    assert "raised an error" in end["errored"].user_attrs["ddsearch_reason"]
    assert "before it reported a result" in end["unstarted"].user_attrs["ddsearch_reason"]
    assert "diverged at 7" in end["diverged"].user_attrs["ddsearch_reason"]


def test_a_trial_resumed_at_its_last_iteration_reports_its_checkpoints_evaluation() -> None:
    """A resume from the last iteration's checkpoint runs no iteration and evaluates nothing: the
    objective Optuna is told comes from the checkpoint (it was NaN, and Optuna left such a trial
    unfinished: the crash test's rare failure)."""
    from ddsearch.events import EvalPoint
    from ddsearch.search.trial import last_evaluation

    meta = json.loads(json.dumps({"mlflow_run_id": "r", "iteration": 60, "val_acc": 0.8, "test_acc": 0.7}))
    assert last_evaluation([], meta) == (0.8, 0.7)
    point = EvalPoint(iteration=60, val_acc=0.9, test_acc=0.85, synset=None, distill_seconds=1.0, eval_seconds=1.0)
    assert last_evaluation([point], meta) == (0.9, 0.85)  # this attempt's own evaluation wins
    assert all(math.isnan(v) for v in last_evaluation([], {"iteration": 60}))  # a checkpoint from before


@pytest.mark.parametrize("search, message", [
    ({"ipc": {"type": "float", "low": 1, "high": 5}}, "integer setting"),
    ({"ipc": {"type": "int", "low": 1, "high": 8, "step": 2, "log": True}}, "log-scale int"),
    ({"ipc": {"type": "int", "low": 0, "high": 5}}, "not a valid method.ipc"),
    ({"p": {"type": "categorical", "choices": [[1, 2]]}}, "choices must be"),
])
def test_space_rejects_what_optuna_or_the_method_cannot_take(search: dict, message: str) -> None:
    from ddsearch.search.space import build_space

    with pytest.raises(DDSearchError, match=message):
        build_space(study_from_dict(tiny_study("s", search=search)))


def test_study_keys_table_lists_every_key_with_its_default() -> None:
    from ddsearch.config_docs import study_keys_markdown

    text = study_keys_markdown()
    for row in ("| `budget.num_samples` | int | `8` |", "| `method.lambda_mmd` | float | `0.01` |",
                "| `scheduler.type` | 'asha' \\| 'none' | `asha` |", "| `search.<key>.log` | bool | `False` |"):
        assert row in text, row


# ---- bad input: one clear line, before anything starts --------------------------------------

BAD_STUDIES = {
    "invalid_yaml": ("name: bad\nmethod: {name: datadam, ipc: [1, 2\n", "invalid YAML"),
    "unknown_key": (tiny_study("bad", method={"lamda_mmd": 0.1}), "did you mean lambda_mmd"),
    "low_above_high": (tiny_study("bad", search={"lr_img": {"type": "float", "low": 10, "high": 1}}), "greater than high"),
    "log_bound": (tiny_study("bad", search={"lr_img": {"type": "float", "low": 0, "high": 1, "log": True}}), "log scale needs bounds > 0"),
    "key_method_lacks": (tiny_study("bad", search={"alpha": {"type": "float", "low": 0, "high": 0.5}}), "unknown setting of method 'datadam'"),
    "no_choices": (tiny_study("bad", search={"p": {"type": "categorical", "choices": []}}), "at least one choice"),
    "tracking_unreachable": (tiny_study("bad"), "tracking server http://127.0.0.1:{port} is unreachable"),
    "ray_unreachable": (tiny_study("bad"), "Ray cluster at 127.0.0.1:{port} is unreachable"),
}


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_bad_input_is_one_clear_error_before_any_trial(case: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    study, expected = BAD_STUDIES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(study if isinstance(study, str) else yaml.safe_dump(study))
    argv = ["tune", str(path)]
    port = free_port()
    if case == "tracking_unreachable":
        argv += ["--tracking-uri", f"http://127.0.0.1:{port}"]
    if case == "ray_unreachable":
        argv += ["--address", f"127.0.0.1:{port}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ddsearch: error:"), err
    assert expected.format(port=port) in err, err
    assert not (tmp_path / ".ddsearch").exists()  # no study state, so no trial started


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = write_study(tmp_path, tiny_study("plan", objective={"second": "ipc"}))
    assert main(["tune", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for text in ("study        plan", "lambda_mmd   float log [0.001, 0.1]", "published defaults: lambda_mmd=0.01",
                 "minimise ipc (Pareto front)", "sampler      tpe (seed 0)", "ASHA", "1 CPU, 0 GPU",
                 f"sqlite:///{tmp_path}/mlruns/mlflow.db", "local Ray", "no trial was started"):
        assert text in out, text
    assert not (tmp_path / ".ddsearch").exists()
    # a trial that can never be placed is an error, not an endless wait
    assert main(["tune", str(path), "--dry-run", "--set", "resources.gpu=64"]) == 2
    assert "no node has that" in capsys.readouterr().err


# ---- whole studies -----------------------------------------------------------------------------

@pytest.mark.slow
def test_study_end_to_end_with_a_failing_trial(tmp_path: Path, monkeypatch, capsys) -> None:
    """Parent + one child per trial, each with metrics, grids and its synset; a trial whose loss
    turns NaN is FAILED with its reason while the study goes on; `report` prints the leaderboard."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # lr_img 1e38 makes DataDAM's loss NaN at once; TPE (seed 0) draws it for the second trial.
    study = tiny_study("e2e", search={
        "lr_img": {"type": "categorical", "choices": [1.0, 1.0e38]},
        "lambda_mmd": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
    }, budget={"num_samples": 3})
    path = write_study(tmp_path, study)
    assert main(["tune", str(path)]) == 0
    capsys.readouterr()

    client = mlflow_client(tmp_path)
    parent, children = study_runs(tmp_path, "e2e")
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(r.info.status != "RUNNING" for r in [parent, *children])
    assert len({c.data.tags["ddsearch.trial_id"] for c in children}) == 3
    assert sorted(int(c.data.tags["ddsearch.optuna_number"]) for c in children) == [0, 1, 2]
    first = next(c for c in children if c.data.tags["ddsearch.optuna_number"] == "0")
    assert first.data.params["method.lr_img"] == "1.0" and first.data.params["method.lambda_mmd"] == "0.01"

    failed = [c for c in children if c.info.status == "FAILED"]
    done = [c for c in children if c.info.status == "FINISHED"]
    assert len(failed) >= 1 and len(done) >= 1, [(c.info.status, c.data.params.get("method.lr_img")) for c in children]
    for run in failed:
        assert run.data.params["method.lr_img"] == "1e+38"
        assert run.data.tags["ddsearch.failure"].startswith("diverged") and run.data.tags["ddsearch.outcome"] == "diverged"
        assert "last_good_synset.safetensors" in artifacts(client, run.info.run_id)
    for run in done:
        assert "val_acc" in run.data.metrics and "loss" in run.data.metrics
        names = artifacts(client, run.info.run_id)
        assert "synset.safetensors" in names and "config.json" in names
        assert any(n.startswith("images/synset_grid") and n.endswith(".png") for n in names)

    server_log = tmp_path / ".ddsearch" / "e2e" / "mlflow-server.log"
    assert "POST /api/2.0/mlflow/runs/log-batch" in server_log.read_text()  # trials logged over HTTP
    names = artifacts(client, parent.info.run_id)
    for name in ("leaderboard.json", "leaderboard.csv", "best/best_config.json", "best/best_study.yaml",
                 "best/best_synset.safetensors", "plots/optimization_history.png", "study.yaml"):
        assert name in names, name
    best = json.loads(Path(client.download_artifacts(parent.info.run_id, "best/best_config.json", str(tmp_path))).read_text())
    assert best["mlflow_run_id"] in {r.info.run_id for r in done}

    states = {t.state.name for t in optuna_trials(tmp_path, "e2e")}
    assert "FAIL" in states and "RUNNING" not in states

    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "val_acc" in out and "test_acc" in out and "lambda_mmd" in out
    assert "diverged" in out and parent.info.run_id in out  # the failed trial's outcome and reason
    assert main(["report", "e2e"]) == 0  # by name too
    assert "rank" in capsys.readouterr().out


def test_a_trial_the_time_budget_cuts_is_pruned_in_optuna_and_stopped_early_in_mlflow(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """Tune ends the trials its time budget cuts without telling the searcher: the study's end
    closes the Optuna trial PRUNED (at its last value if it reported one), matching MLflow's
    stopped_early. On a busy machine the trial may not even start within the budget; it is
    PRUNED then too, never FAIL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    study = tiny_study("cut", method={"name": "datadam", "ipc": 1, "iterations": 1_000_000, "arch": TINY_CONV_BN,
                                      "batch_real": 8},
                       evaluation={"arch": TINY_CONV, "eval_every": 2, "log_every": 2, "epochs": 1,
                                   "final_epochs": 1, "final_repeats": 1},
                       budget={"num_samples": 1, "max_concurrent": 1, "time_budget_s": 30},
                       scheduler={"type": "none"})
    assert main(["tune", str(write_study(tmp_path, study))]) == 0
    out = capsys.readouterr()

    (trial,) = optuna_trials(tmp_path, "cut")
    assert trial.state.name == "PRUNED", (trial.state, trial.user_attrs, out.out[-2000:])
    assert "time budget" in trial.user_attrs["ddsearch_reason"]
    if trial.intermediate_values:
        assert trial.value == pytest.approx(trial.intermediate_values[max(trial.intermediate_values)])
    else:
        assert trial.value is None and "before it reported a result" in trial.user_attrs["ddsearch_reason"]
    _, children = study_runs(tmp_path, "cut")
    assert all(c.info.status == "FINISHED" and c.data.tags["ddsearch.outcome"] == "stopped_early" for c in children)


@pytest.fixture
def two_node_cluster(tmp_path: Path):
    """A head and a worker node (1 CPU each) on this machine, owned and stopped by this fixture.

    Each `ray start --block` runs in its own process group, which is killed at the end: never
    `ray stop`, which would stop every Ray on a shared machine.
    """
    port = free_port()
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="dd2n-", dir="/tmp")  # Ray's socket paths must stay short
    procs = []

    def start(args: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ray", "start", *args, *common], env=env, start_new_session=True,
                                stdout=open(logs / log, "w"), stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def wait_started(log: str) -> None:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (logs / log).read_text():
            assert time.monotonic() < deadline, (logs / log).read_text()
            assert all(p.poll() is None for p in procs), (logs / log).read_text()
            time.sleep(0.5)

    try:
        start(["--head", "--port", str(port), "--resources", '{"head": 1}', "--include-dashboard=false",
               "--temp-dir", temp_dir], "head.log")
        wait_started("head.log")
        start(["--address", f"127.0.0.1:{port}", "--resources", '{"worker": 1}'], "worker.log")
        wait_started("worker.log")
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in reversed(procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_study_runs_on_a_two_node_cluster(two_node_cluster: str, tmp_path: Path) -> None:
    study = tiny_study("twonode", method={"iterations": 9}, scheduler={"type": "none"},
                       objective={"second": "distill_seconds"})  # two objectives: a Pareto front
    path = write_study(tmp_path, study)
    # The driver runs in its own process: a Ray client keeps threads that outlive ray.shutdown()
    # and would stop this process once the fixture takes the cluster down.
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "ddsearch.cli", "tune", str(path), "--address", two_node_cluster],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    parent, children = study_runs(tmp_path, "twonode")
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    nodes = {c.data.tags["ddsearch.node"].split()[1] for c in children}  # "<ip> <node id>"
    assert len(nodes) == 2, nodes  # one trial on each node (each has one CPU)
    server_log = (tmp_path / ".ddsearch" / "twonode" / "mlflow-server.log").read_text()
    assert "POST /api/2.0/mlflow/runs/log-batch" in server_log  # trials on both nodes logged over HTTP
    for child in children:
        assert "val_acc" in child.data.metrics and "final_val_acc" in child.data.metrics
    assert "plots/pareto_front.png" in artifacts(mlflow_client(tmp_path), parent.info.run_id)
    values = [t.values for t in optuna_trials(tmp_path, "twonode")]
    assert len(values) == 2 and all(v is not None and len(v) == 2 for v in values)


EVERY = 10  # evaluation (and checkpoint) interval of the crash test


@pytest.mark.slow
def test_killed_study_resumes_without_rerunning_or_duplicating(tmp_path: Path) -> None:
    """SIGKILL the driver after a trial completed while another has a checkpoint; --resume ends it.
    The killed trials' scratch folders (spool, checkpoint staging) stay out of the system temp folder."""
    name = "crash"
    study = tiny_study(name, method={"iterations": 60}, evaluation={"eval_every": EVERY, "log_every": 5},
                       scheduler={"type": "none"}, budget={"num_samples": 4})
    path = write_study(tmp_path, study)
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    env = os.environ | {"PYTHONUNBUFFERED": "1", "TMPDIR": str(system_temp)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "ddsearch.cli", "tune", str(path)]

    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    before: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and driver.poll() is None:
            before = tune_states(tmp_path, name)
            finished = [t for t, s in before.items() if s["status"] == "TERMINATED"]
            # Two checkpoints reported: Tune registers a checkpoint just after processing its result,
            # so a snapshot may lack the newest one but always holds the one before it.
            in_flight = [t for t, s in before.items() if s["status"] == "RUNNING"
                         and s["last_result"].get("iteration", 0) >= 2 * EVERY and not s["last_result"].get("final")]
            if finished and in_flight:
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the study ended before it could be killed:\n" + (tmp_path / "first.log").read_text()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    finished = {t for t, s in before.items() if s["status"] == "TERMINATED"}
    running = {t: s["last_result"].get("iteration", 0) for t, s in before.items() if s["status"] == "RUNNING"}
    in_flight = {t: it for t, it in running.items() if it >= 2 * EVERY}
    assert finished and in_flight, before

    resumed = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    after = tune_states(tmp_path, name)
    assert len(after) == 4 and all(s["status"] == "TERMINATED" for s in after.values()), after
    parent, children = study_runs(tmp_path, name)
    assert parent.info.status == "FINISHED" and all(c.info.status != "RUNNING" for c in children)
    by_trial: dict[str, list[Any]] = {}
    for child in children:
        by_trial.setdefault(child.data.tags["ddsearch.trial_id"], []).append(child)
    assert all(len(runs) == 1 for runs in by_trial.values()), "duplicate MLflow runs for a trial"
    lost = set(by_trial) - set(after)  # trials Tune had not saved when the driver died (if any)
    assert all(by_trial[t][0].data.tags.get("ddsearch.outcome") == "lost" for t in lost)
    for trial_id in after:
        run = by_trial[trial_id][0]
        assert run.info.status == "FINISHED" and "final_val_acc" in run.data.metrics
        attempts = int(run.data.tags["ddsearch.attempts"])
        if trial_id in finished:
            assert attempts == 1, f"completed trial {trial_id} was run again"
        elif trial_id in running:  # restarted in the same run; from its checkpoint once it had two
            assert attempts == 2
            resumed_from = int(run.data.tags["ddsearch.resumed_from_iteration"])
            if trial_id in in_flight:
                assert resumed_from >= in_flight[trial_id] - EVERY > 0
        else:
            assert attempts == 1

    ot = optuna_trials(tmp_path, name)
    complete = [t for t in ot if t.state.name == "COMPLETE"]
    seen = [(t.number, t.state.name, t.user_attrs.get("tune_trial_id"), t.user_attrs.get("ddsearch_reason")) for t in ot]
    assert not [t for t in ot if t.state.name == "RUNNING"], seen
    assert len(complete) == len(after), (seen, {t: s["status"] for t, s in before.items()}, resumed.stdout[-3000:])
    assert {t.user_attrs["tune_trial_id"] for t in complete} == set(after)
    assert not [p.name for p in system_temp.iterdir() if p.name.startswith("ddsearch-")]


def test_ui_binds_localhost_by_default_and_warns_otherwise(tmp_path: Path, monkeypatch, capsys) -> None:
    import ddsearch.tracking.server as server

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    calls: list[list[str]] = []
    monkeypatch.setattr(server, "run_guarded", lambda cmd: calls.append(cmd) or 0)  # the server dies with the command
    monkeypatch.setattr(server, "check_port_free", lambda host, port: None)
    assert main(["ui"]) == 0
    cmd = calls[-1]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5000"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert "warning" not in capsys.readouterr().err
    assert main(["ui", "--host", "0.0.0.0", "--port", "5055"]) == 0
    assert "exposes the MLflow UI" in capsys.readouterr().err
    assert calls[-1][calls[-1].index("--host") + 1] == "0.0.0.0"
