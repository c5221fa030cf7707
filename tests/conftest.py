"""Shared pytest fixtures. Keep each fixture small and documented; group by topic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the suite's own Ray folder
def pytest_configure(config) -> None:
    """Every Ray the suite starts (in-process or in a ``ddsearch`` subprocess, which inherits the
    variable) keeps its session folders, trial working directories and spools in one folder the
    suite creates and removes, not in the shared ``/tmp/ray``. The path stays short: Ray's
    sockets live under it and Unix socket paths are capped near 107 bytes."""
    import tempfile

    if "RAY_TMPDIR" not in os.environ:
        config._ddsearch_ray_tmp = tempfile.mkdtemp(prefix="ddsearch-ray-")
        os.environ["RAY_TMPDIR"] = config._ddsearch_ray_tmp


def pytest_unconfigure(config) -> None:
    import shutil

    folder = getattr(config, "_ddsearch_ray_tmp", None)
    if folder is None:
        return
    try:
        import ray

        ray.shutdown()  # its processes write into the folder until they exit
    except ImportError:
        pass
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.pop("RAY_TMPDIR", None)


def import_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts beside their ``common`` helper)."""
    import importlib
    import sys

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


# ---------------------------------------------------------------------- data sets
def build_fake_mhist(
    root: Path, n_train: int = 12, n_test: int = 6, size: int = 224, seed: int = 0
) -> Path:
    """Write a tiny MHIST in the real layout: annotations.csv + images/MHIST_xxx.png (RGB).

    Labels alternate HP/SSA. HP images are reddish and SSA images bluish, so a test can tell
    that labels and pixels stayed paired. Returns ``root``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition"]
    for i in range(n_train + n_test):
        label = "HP" if i % 2 == 0 else "SSA"
        img = rng.integers(0, 64, size=(size, size, 3), dtype=np.uint8)
        img[..., 0 if label == "HP" else 2] += 160
        name = f"MHIST_{i:03d}.png"
        Image.fromarray(img, "RGB").save(root / "images" / name)
        votes = int(rng.integers(0, 4)) if label == "HP" else int(rng.integers(4, 8))
        rows.append(f"{name},{label},{votes},{'train' if i < n_train else 'test'}")
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root


def build_fake_imagefolder(
    root: Path, counts: dict[str, tuple[int, int]], size: tuple[int, int] = (20, 16), mode: str = "RGB"
) -> Path:
    """Write root/{train,test}/<class>/img_k.png; ``counts`` maps class -> (n_train, n_test); size is (H, W)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = size
    for split, k in (("train", 0), ("test", 1)):
        for cls, n in counts.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n[k]):
                shape = (h, w) if mode == "L" else (h, w, 3)
                Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(d / f"img_{i}.png")
    return root


@pytest.fixture
def mhist_root(tmp_path: Path) -> Path:
    """A fake MHIST (12 train + 6 test, 224x224 PNGs) in the real layout."""
    return build_fake_mhist(tmp_path / "mhist")


@pytest.fixture
def imagefolder_root(tmp_path: Path) -> Path:
    """An RGB image folder: classes cat/dog/eel with 3/4/5 train and 2/1/2 test images of 20x16."""
    return build_fake_imagefolder(tmp_path / "folder", {"dog": (4, 1), "cat": (3, 2), "eel": (5, 2)})


@pytest.fixture
def mnist_root() -> Path:
    """The real MNIST root: $DDSEARCH_DATA, else <repo>/../shared/data; skips when neither has it."""
    candidates = [Path(p) for p in (os.environ.get("DDSEARCH_DATA"),) if p]
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for root in candidates:
        if (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return root
    pytest.skip(f"real MNIST not found under {', '.join(str(c) for c in candidates)}")


# ---------------------------------------------------------------------- distillation
TINY_CONV = "ConvNet-d2-w16-relu-instancenorm-avgpool"
TINY_CONV_BN = "ConvNet-d2-w16-relu-batchnorm-avgpool"


def tiny_study_yaml(name: str, budget: str = "{num_samples: 1, max_concurrent: 1}", extra: str = "") -> str:
    """A one-trial DataDAM study on digits that a CLI test can run end to end in seconds."""
    return (
        f"name: {name}\ndevice: cpu\ndataset: {{name: digits}}\n"
        f"method: {{name: datadam, ipc: 1, iterations: 4, arch: {TINY_CONV_BN}, batch_real: 8}}\n"
        f"evaluation: {{arch: {TINY_CONV}, eval_every: 2, log_every: 2, epochs: 1, final_epochs: 1, final_repeats: 1}}\n"
        f"evaluators: [{TINY_CONV}]\n"
        "search: {lambda_mmd: {type: float, low: 0.001, high: 0.1, log: true}}\n"
        f"budget: {budget}\n{extra}resources: {{cpu: 1}}\n"
    )


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: a second thread only adds sync cost, and on
    a busy 2-core machine OpenMP spinning made such modules 5-10x slower. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits (8x8) loaded once per session on the CPU."""
    import torch

    from ddsearch.data import load_dataset

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return load_dataset("digits")


# ---------------------------------------------------------------------- command line
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``ddsearch ARGV`` in-process; returns (exit code, stdout, stderr)."""
    from ddsearch.cli import main

    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse: --help, or a usage error (one line, exit 2)
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Bad input: exit code 2, one 'ddsearch: error:' line naming every needle, no traceback."""
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip() and "INFO mlflow" not in line]
    assert len(lines) == 1 and lines[0].startswith("ddsearch: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
