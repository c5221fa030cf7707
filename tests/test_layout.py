"""The layout keeps its promises: one owner per concern.

- Ray is imported only under ``ddsearch/search/``, MLflow only under ``ddsearch/tracking/``;
- nothing outside ``tracking/`` names a ``ddsearch.*`` tag or reads an MLflow run object;
- no module is over 400 lines;
- ``ddsearch report`` and ``ddsearch ui`` never load torch;
- a new method is a package plus one registry line (a toy one distils digits and is searched).

The scanners are checked on bad samples first, so a scanner that sees nothing cannot pass.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, TINY_CONV

PACKAGE = REPO_ROOT / "ddsearch"
TESTS = REPO_ROOT / "tests"
MAX_LINES = 400
RUN_FIELDS = {"status", "run_id", "run_name", "start_time", "end_time", "tags", "params", "metrics"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


# ---- the scanners -------------------------------------------------------------------------------

def imported_roots(source: str) -> set[str]:
    """Top-level packages a module imports, at any depth (function-level imports included)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _is_module_path(text: str) -> bool:
    """'ddsearch.tracking.guard', 'ddsearch.nas.' (a module name being built): not a tag."""
    first = text.split(".")[1]
    return (PACKAGE / first).is_dir() or (PACKAGE / f"{first}.py").is_file()


def run_object_uses(source: str) -> list[str]:
    """``x.info.status``, ``run.data.tags`` ...: reads of MLflow run objects."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and node.attr in RUN_FIELDS and isinstance(node.value, ast.Attribute)
                and node.value.attr in ("info", "data")):
            found.append(f"line {node.lineno}: .{node.value.attr}.{node.attr}")
    return found


def tag_literals(source: str) -> list[str]:
    """String literals (f-string parts included) that begin with a ``ddsearch.`` tag name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("ddsearch."):
            if len(node.value) > len("ddsearch.") and not _is_module_path(node.value):
                found.append(f"line {node.lineno}: {node.value!r}")
    return found


BAD = '''
import ray
from mlflow import MlflowClient

def close(run, uri):
    if run.info.status == "RUNNING" and "ddsearch.outcome" not in run.data.tags:
        return f"ddsearch.interrupted {uri}"
'''


def test_the_scanners_see_what_they_look_for() -> None:
    assert {"ray", "mlflow"} <= imported_roots(BAD)
    assert len(run_object_uses(BAD)) == 2
    assert len(tag_literals(BAD)) == 2
    assert not tag_literals('import importlib\nimportlib.import_module(f"ddsearch.nas.{name}")\n'
                            'GUARD = "ddsearch.tracking.guard"\n')


# ---- the boundaries -----------------------------------------------------------------------------

@pytest.mark.parametrize("library, home", [("ray", "ddsearch/search/"), ("mlflow", "ddsearch/tracking/")])
def test_each_library_is_imported_only_by_its_package(library: str, home: str) -> None:
    outside = [rel(p) for p in modules() if library in imported_roots(p.read_text()) and not rel(p).startswith(home)]
    assert not outside, f"{library} is imported outside {home}: {outside}"


def test_only_tracking_knows_run_objects_and_tag_names() -> None:
    problems = {}
    for path in modules():
        if rel(path).startswith("ddsearch/tracking/"):
            continue
        source = path.read_text()
        found = run_object_uses(source) + tag_literals(source)
        if found:
            problems[rel(path)] = found
    assert not problems, f"MLflow run objects or ddsearch.* tags outside ddsearch/tracking/: {problems}"


def test_the_tracking_package_needs_neither_the_engine_nor_torch() -> None:
    for path in (PACKAGE / "tracking").glob("*.py"):
        tree = ast.parse(path.read_text())
        top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        assert not {"torch", "ddsearch.runner", "ddsearch.synset"} & top, rel(path)


def test_no_module_is_over_400_lines() -> None:
    long = {rel(p): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# ---- report and ui load no torch ----------------------------------------------------------------

def run_cli_watching_torch(argv: list[str], cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """``ddsearch ARGV`` in a fresh interpreter; stdout ends with whether torch was imported."""
    script = (
        "import sys\n" + prelude + "\nfrom ddsearch.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('TORCH LOADED' if 'torch' in sys.modules else 'NO TORCH')\n"
        "sys.exit(code)\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS)])}
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-c", script, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def recorded_study(tmp_path: Path) -> str:
    """A store holding a small finished study (one parent, two trials), as `ddsearch tune` leaves it."""
    from ddsearch.tracking import store
    from ddsearch.tracking import study_runs as tags

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    runs = tags.StudyRuns.in_experiment(uri, "tiny")
    parent = runs.create_parent("tiny")
    store.log_params(uri, parent, {"search.lambda_mmd": "float [0.001, 0.1] log", "objective": "val_acc",
                                   "evaluation.arch": TINY_CONV, "evaluators": TINY_CONV})
    for number, (val, outcome) in enumerate([(0.61, "finished"), (0.55, "stopped_early")]):
        run_id = runs.open_trial(f"t{number}", None, f"trial-{number:03d}", {tags.TAG_OPTUNA: number})
        store.log_params(uri, run_id, {"method.lambda_mmd": 0.01 * (number + 1)})
        final = {"final_val_acc": val, "final_test_acc": val - 0.01} if outcome == "finished" else {}
        store.log_metrics(uri, run_id, {"val_acc": val, "test_acc": val - 0.02, "iteration": 4} | final)
        runs.finish(run_id, outcome=outcome)
    runs.finish_parent("Study tiny: 2 trials.")
    return uri


def test_report_loads_no_torch(recorded_study: str, tmp_path: Path) -> None:
    page = tmp_path / "tiny.html"
    done = run_cli_watching_torch(["report", "tiny", "--tracking-uri", recorded_study, "--html", str(page)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trial-000" in done.stdout and "best: trial-000" in done.stdout
    assert page.is_file()
    assert done.stdout.strip().endswith("NO TORCH"), done.stdout


def test_ui_loads_no_torch(recorded_study: str, tmp_path: Path) -> None:
    # everything up to the server itself runs: the store, the addresses, the server command
    prelude = "import ddsearch.tracking.server as server\nserver.run_guarded = lambda cmd: print(*cmd) or 0"
    done = run_cli_watching_torch(["ui", "--tracking-uri", recorded_study, "--port", "5999"], tmp_path, prelude)
    assert done.returncode == 0, done.stderr
    assert "tiny: http://127.0.0.1:5999/#/experiments/" in done.stdout and "mlflow server" in done.stdout
    assert done.stdout.strip().endswith("NO TORCH"), done.stdout


# ---- a new method: a package plus one registry line ---------------------------------------------

REGISTER_TOY = (
    "from ddsearch.methods import registry\n"
    "from toy_method.settings import ToySettings\n"
    "registry.register('toy', ToySettings, 'toy_method.distiller:ToyDistiller')  # the one registry line\n"
)


def toy_study(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(
        "name: toy\ndevice: cpu\nprecision: fp32\ndataset: {name: digits}\n"
        f"method: {{name: toy, ipc: 2, iterations: 4, arch: {TINY_CONV}, lr_img: 0.1}}\n"
        f"evaluation: {{arch: {TINY_CONV}, eval_every: 2, log_every: 2, epochs: 1, final_epochs: 1, final_repeats: 1}}\n"
        f"evaluators: [{TINY_CONV}]\n"
        "search: {pull: {type: float, low: 0.1, high: 1.0}, batch_real: {type: int, low: 2, high: 6}}\n"
        "budget: {num_samples: 2, max_concurrent: 1}\nresources: {cpu: 1}\n"
    )
    return path


def test_a_toy_method_registered_by_one_line_distils_and_is_searched(tmp_path: Path) -> None:
    study = toy_study(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    done = run_cli_watching_torch(["distill", str(study), "--tracking-uri", uri, "--quiet"], tmp_path, REGISTER_TOY)
    assert done.returncode == 0, done.stderr
    assert "distilled in" in done.stdout

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["method.name"] == "toy"
    assert run.data.params["method.pull"] == "0.5" and "final_val_acc" in run.data.metrics

    planned = run_cli_watching_torch(["tune", str(study), "--dry-run", "--tracking-uri", uri], tmp_path, REGISTER_TOY)
    assert planned.returncode == 0, planned.stderr
    assert "method       toy" in planned.stdout and "pull" in planned.stdout
    assert "dry run: everything checked" in planned.stdout

    # without the registry line the same study is refused, naming the methods there are
    refused = run_cli_watching_torch(["tune", str(study), "--dry-run"], tmp_path)
    assert refused.returncode == 2 and "toy" in refused.stderr and "datadam" in refused.stderr
