"""Hostile and careless input (issue 13): one line on stderr, exit 2, no traceback, nothing lost.

Every case runs in a sandbox folder (the working directory, the data, cache and tracking
folders); the sandbox is snapshotted before the command and compared after it, so a refused
command must leave no file behind and change none. Commands run in-process where they can;
pipes use a subprocess. The servers test (sockets on loopback, gone after Ctrl+C) is in
test_hostile_servers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import REPO_ROOT, assert_one_line_error, build_fake_imagefolder, run_cli, tiny_study_yaml

TINY_STUDY = tiny_study_yaml("tiny")

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    out = {}
    for path in root.rglob("*"):
        info = path.lstat()
        out[str(path.relative_to(root))] = (info.st_size if path.is_file() else -1, info.st_mtime_ns)
    return out


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch) -> Path:
    """A working directory with a tiny study; data, cache and tracking all point inside it."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "DDSEARCH_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DDSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DDSEARCH_DATA", str(tmp_path / "data"))
    (tmp_path / "study.yaml").write_text(TINY_STUDY)
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path


def refused(capsys, sandbox: Path, *argv: str, needles: tuple[str, ...] = ()) -> str:
    """Run ``ddsearch ARGV``: exit 2, one line naming every needle, and the sandbox unchanged."""
    before = snapshot(sandbox)
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *needles)
    assert snapshot(sandbox) == before, "a refused command changed files"
    return err


# ---- 1. data loss: names are identifiers, ddsearch deletes only what it made ----------------------

@pytest.mark.parametrize("name", ["..", ".", "/tmp/x", "a/b", "x\\y", "", "a b", "é"])
def test_study_name_must_be_a_plain_identifier(name: str, sandbox: Path, capsys) -> None:
    (sandbox / "ray").mkdir()
    (sandbox / "ray" / "keep.txt").write_text("precious")
    refused(capsys, sandbox, "tune", "study.yaml", "--set", f"name={name}", "--dry-run", needles=("name",))
    refused(capsys, sandbox, "distill", "study.yaml", "--set", f"name={name}", needles=("name",))
    assert (sandbox / "ray" / "keep.txt").read_text() == "precious"


def test_only_marked_folders_inside_the_state_folder_are_deleted(tmp_path: Path) -> None:
    from ddsearch.errors import DDSearchError
    from ddsearch.paths import make_owned_dir, remove_owned_dir

    state = make_owned_dir(tmp_path / "state")
    foreign = state / "ray" / "x"
    foreign.mkdir(parents=True)
    (foreign / "data.txt").write_text("not ours")
    with pytest.raises(DDSearchError, match="did not create it"):
        remove_owned_dir(foreign, within=state)
    assert (foreign / "data.txt").is_file()
    with pytest.raises(DDSearchError, match="not a folder inside"):
        remove_owned_dir(tmp_path, within=state)  # above the state folder
    with pytest.raises(DDSearchError, match="not a folder inside"):
        remove_owned_dir(state, within=state)
    link = state / "link"
    link.symlink_to(foreign)
    with pytest.raises(DDSearchError, match="not a folder inside"):
        remove_owned_dir(link, within=state)
    ours = make_owned_dir(state / "ray" / "y")
    (ours / "result.json").write_text("{}")
    remove_owned_dir(ours, within=state)
    assert not ours.exists() and (foreign / "data.txt").is_file()
    assert oct(state.stat().st_mode & 0o777) == "0o700"


def test_tune_refuses_a_state_folder_it_did_not_create(sandbox: Path, capsys) -> None:
    other = sandbox / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    refused(capsys, sandbox, "tune", "study.yaml", "--set", "state_dir=mine", "--dry-run",
            needles=("did not create",))
    refused(capsys, sandbox, "tune", "study.yaml", "--set", "state_dir=a_file/state", "--dry-run",
            needles=("state",))


def test_resume_refuses_a_state_folder_of_another_user(sandbox: Path, capsys, monkeypatch) -> None:
    from ddsearch.paths import make_owned_dir

    make_owned_dir(sandbox / ".ddsearch" / "tiny")
    monkeypatch.setattr(os, "getuid", lambda: os.stat(sandbox).st_uid + 1)
    refused(capsys, sandbox, "tune", "study.yaml", "--resume", "--dry-run", needles=("another user",))


# ---- 3. tracebacks: study input, storage, output files, plain bad values ------------------------

@pytest.mark.parametrize("override, needle", [
    ("name=[", "invalid YAML"),
    ("name=!!python/object/apply:os.system ['true']", "not allowed"),
    ("method.ipc=!!binary aGVsbG8=", "not allowed"),
    ("=3", "empty key"),
    ("method.name=datadm", "did you mean 'datadam'"),
    ("dataset.val_size=0", "validation"),
    ("method.lr_img=.nan", "finite"),
    ("method.dsa_strategy=colr_crop", "did you mean 'color'"),
    ("evaluation.epochs=0", "evaluation.epochs"),
])
def test_bad_overrides_are_one_line(override: str, needle: str, sandbox: Path, capsys) -> None:
    refused(capsys, sandbox, "distill", "study.yaml", "--set", override, needles=(needle,))


@pytest.mark.parametrize("content, needle", [
    (b"name: caf\xe9\n", "not UTF-8"),
    (ALIAS_BOMB.encode(), "alias"),
    (b"name: x\n" + b"# padding\n" * 120_000, "too large"),
    (b"name: x\nsearch: {lr_img: {type: float, low: 0.1, high: .inf}}\n", "finite"),
    (b"name: x\nsearch: {dsa_strategy: {type: categorical, choices: [auto, bogus]}}\n", "bogus"),
    (b"name: x\nsearch: {lr_img: {type: categorical, choices: [1.0, -2.0]}}\n", "choice -2.0"),
], ids=["not-utf8", "alias-bomb", "too-large", "inf-bound", "bad-dsa-choice", "negative-choice"])
def test_bad_study_files_fail_at_dry_run(content: bytes, needle: str, sandbox: Path, capsys) -> None:
    (sandbox / "bad.yaml").write_bytes(content)
    start = time.perf_counter()
    refused(capsys, sandbox, "tune", "bad.yaml", "--dry-run", needles=(needle,))
    assert time.perf_counter() - start < 20  # the 443-byte bomb is refused, not expanded


def test_a_directory_is_reported_as_a_directory(sandbox: Path, capsys) -> None:
    (sandbox / "adir").mkdir()
    refused(capsys, sandbox, "distill", "adir", needles=("is a directory",))
    refused(capsys, sandbox, "evaluate", "--synset", "adir", needles=("is a directory",))


def test_storage_problems(sandbox: Path, capsys) -> None:
    refused(capsys, sandbox, "distill", "study.yaml", "--tracking-uri", "ftp://host/store", needles=("unsupported scheme",))
    refused(capsys, sandbox, "distill", "study.yaml", "--tracking-uri", "file:///tmp/store", needles=("file://",))
    refused(capsys, sandbox, "distill", "study.yaml", "--tracking-uri", "a_file/store", needles=("a_file",))
    refused(capsys, sandbox, "tune", "study.yaml", "--tracking-uri", "a_file/store", "--dry-run", needles=("a_file",))
    refused(capsys, sandbox, "report", "tiny", "--tracking-uri", "nowhere", needles=("no MLflow store",))
    assert not (sandbox / "nowhere").exists()  # report creates no empty store
    (sandbox / "pad.yaml").write_text("name: pad\ndevice: cpu\nmethod: {name: pad, cache_dir: a_file/cache}\n")
    refused(capsys, sandbox, "scores", "pad.yaml", needles=("a_file",))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_store_is_one_line(sandbox: Path, capsys) -> None:
    store = sandbox / "store"
    store.mkdir()
    (store / "mlflow.db").write_bytes(b"")
    (store / "mlflow.db").chmod(0o444)
    refused(capsys, sandbox, "distill", "study.yaml", "--tracking-uri", f"sqlite:///{store}/mlflow.db",
            needles=("read-only",))


@pytest.mark.parametrize("argv, needle", [
    (["baseline", "--batch-size", "0"], "--batch-size"),
    (["baseline", "--epochs", "-1"], "--epochs"),
    (["baseline", "--repeats", "0"], "--repeats"),
    (["baseline", "--lr", "nan"], "--lr"),
    (["baseline", "--val-size", "0"], "--val-size"),
    (["baseline", "--json", "missing/out.json"], "does not exist"),
    (["nas", "--synset", "x.safetensors", "--k", "-5"], "--k"),
    (["nas", "--synset", "x.safetensors", "--json", "missing/out.json"], "does not exist"),
    (["nas", "--synset", "x.safetensors", "--space", "grid", "--k", "0", "--epochs", "0"], "epochs must be at least 1"),
    (["nas", "--synset", "x.safetensors", "--lr", "inf"], "lr must be a finite number"),
    (["nas", "--synset", "x.safetensors", "--truth-epochs", "1", "--cache-dir", "a_file/c"], "a_file"),
    (["evaluate", "--synset", "x.safetensors", "--epochs", "0"], "--epochs"),
    (["evaluate", "--synset", "x.safetensors", "--repeats", "-2"], "--repeats"),
    (["evaluate", "--synset", "x.safetensors", "--lr", "nan"], "--lr"),
    (["ui", "--port", "99999"], "--port"),
    (["ui", "--tracking-uri", "ftp://host/store"], "unsupported scheme"),
    (["baseline", "--image-size", "200000", "--epochs", "1"], "GiB"),
    (["report", "tiny", "--top", "0"], "--top"),
])
def test_bad_values_are_refused_before_the_work(argv: list[str], needle: str, sandbox: Path, capsys) -> None:
    refused(capsys, sandbox, *argv, needles=(needle,))


def test_one_class_data_set_is_refused(sandbox: Path, capsys) -> None:
    build_fake_imagefolder(sandbox / "data" / "one", {"cat": (4, 2)}, size=(8, 8))
    refused(capsys, sandbox, "baseline", "--dataset", "imagefolder", "--data-root", "data/one", "--epochs", "1",
            needles=("two classes",))


def test_failed_download_leaves_no_empty_folders(sandbox: Path, capsys, monkeypatch) -> None:
    import urllib.error

    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    refused(capsys, sandbox, "baseline", "--dataset", "mnist", "--data-root", "data/new", needles=("download failed",))
    assert not (sandbox / "data").exists()


def test_pipes_and_full_disks_are_quiet(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    cli = f"{sys.executable} -m ddsearch.cli"
    for command in ("schema", "datasets"):
        done = subprocess.run(f"{cli} {command} | head -1", shell=True, capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert done.stderr == "" and len(done.stdout.splitlines()) == 1, done.stderr
    if Path("/dev/full").exists():
        done = subprocess.run(f"{cli} schema > /dev/full", shell=True, capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "space" in done.stderr, done.stderr


# ---- synsets: metadata, tensors, values and shapes ----------------------------------------------

def _synset_file(path: Path, images=None, labels=None, names=("images", "labels"), **meta: str | None) -> Path:
    """A digits synset file, with some tensors or metadata replaced (None drops a metadata key)."""
    tensors = {names[0]: torch.zeros(10, 1, 8, 8) if images is None else images,
               names[1]: torch.arange(10) if labels is None else labels}
    metadata = {"format": "ddsearch-synset", "version": "1", "dataset": "digits", "num_classes": "10", "lr": "0.01",
                "mean": "[0.5]", "std": "[0.5]", "method": "datadam", "class_names": "[]", "config": "{}"} | meta
    save_file(tensors, str(path), metadata={k: v for k, v in metadata.items() if v is not None})
    return path


SYNSETS = {
    "num_classes missing": (dict(num_classes=None), "num_classes"),
    "num_classes not int": (dict(num_classes="ten"), "num_classes"),
    "one class": (dict(num_classes="1"), "at least 2"),
    "mean not json": (dict(mean="[0.5"), "'mean' is not valid JSON"),
    "mean wrong length": (dict(mean="[0.1, 0.2]"), "'mean'"),
    "lr not a number": (dict(lr="fast"), "'lr'"),
    "lr negative": (dict(lr="-0.1"), "'lr'"),
    "lr nan": (dict(lr="nan"), "'lr'"),
    "labels 1-D float": (dict(labels=torch.zeros(10)), "shape [10, 10]"),
    "label 99": (dict(labels=torch.full((10,), 99)), "outside 0..9"),
    "label -1": (dict(labels=torch.full((10,), -1)), "outside 0..9"),
    "images uint8": (dict(images=torch.zeros(10, 1, 8, 8, dtype=torch.uint8)), "uint8"),
    "images fp16": (dict(images=torch.zeros(10, 1, 8, 8, dtype=torch.float16)), "float16"),
    "NaN pixels": (dict(images=torch.full((10, 1, 8, 8), float("nan"))), "NaN"),
    "no images": (dict(images=torch.zeros(0, 1, 8, 8), labels=torch.zeros(0, dtype=torch.int64)), "non-empty"),
    "wrong tensor names": (dict(names=("x", "y")), "tensors are named x, y"),
    "not a synset": (dict(format="something-else"), "not a ddsearch synset"),
    "300 px on digits": (dict(images=torch.zeros(10, 1, 300, 300)), "--image-size 300"),
    "8 channels on digits": (dict(images=torch.zeros(10, 8, 8, 8), mean="[]", std="[]"), "channel"),
}


@pytest.mark.parametrize("case", list(SYNSETS))
def test_bad_synsets_are_one_line(case: str, sandbox: Path, capsys) -> None:
    changes, needle = SYNSETS[case]
    path = _synset_file(sandbox / "s.safetensors", **changes)
    start = time.perf_counter()
    refused(capsys, sandbox, "evaluate", "--synset", "s.safetensors", "--epochs", "1", needles=(needle,))
    refused(capsys, sandbox, "nas", "--synset", "s.safetensors", "--epochs", "1", "--no-control", needles=(needle,))
    assert time.perf_counter() - start < 30  # nothing was resized to the synset's shape
    assert path.is_file()


# ---- 4. divergence ends the run FAILED with the reason "diverged" ------------------------------

def test_exploding_images_end_the_run_as_diverged(sandbox: Path, capsys) -> None:
    import mlflow

    uri = f"sqlite:///{sandbox}/store/mlflow.db"
    code, _, err = run_cli(capsys, "distill", "study.yaml", "--set", "method.lr_img=1e9", "--set",
                           "evaluation.log_every=1", "--tracking-uri", uri, "--quiet")
    assert_one_line_error(code, err, "diverged")
    runs = mlflow.MlflowClient(uri).search_runs([e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["ddsearch.outcome"] == "diverged"
    assert runs[0].data.tags["ddsearch.failure"].startswith("diverged")


def test_bogus_strategy_creates_no_run(sandbox: Path, capsys) -> None:
    refused(capsys, sandbox, "distill", "study.yaml", "--set", "method.dsa_strategy=bogus",
            "--tracking-uri", f"sqlite:///{sandbox}/db/mlflow.db", needles=("bogus",))
    assert not (sandbox / "db").exists()


def test_resume_hint_keeps_the_overrides(tmp_path: Path) -> None:
    from ddsearch.search.tune import Plan

    plan = Plan.__new__(Plan)
    plan.study_path, plan.overrides = "s.yaml", ("method.ipc=2", "name=a b")
    assert plan.command("--resume") == "ddsearch tune s.yaml --set method.ipc=2 --set 'name=a b' --resume"
