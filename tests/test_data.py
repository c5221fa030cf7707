"""Tests for ddsearch.data: splits, normalisation, sampling, sources and their error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_fake_imagefolder, build_fake_mhist
from ddsearch.data import RealData, describe_datasets, list_datasets, load_dataset, stratified_split
from ddsearch.errors import DDSearchError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def digits() -> RealData:
    return load_dataset("digits")


def _assert_proportional(val_counts: np.ndarray, pool_counts: np.ndarray, total: int) -> None:
    expected = total * pool_counts / pool_counts.sum()
    assert val_counts.sum() == total
    assert np.all(np.abs(val_counts - expected) <= 1), (val_counts, expected)


# ---------------------------------------------------------------------- digits
def test_digits_shapes_and_splits_disjoint(digits: RealData) -> None:
    assert digits.num_classes == 10 and digits.class_names == [str(i) for i in range(10)]
    assert digits.channels == 1 and digits.image_size == (8, 8)
    n_train, n_val, n_test = len(digits.train_y), len(digits.val_y), len(digits.test_y)
    assert n_train + n_val + n_test == 1797
    assert n_test == round(0.2 * 1797) and n_val == round(0.1 * (1797 - n_test))
    for x, y in ((digits.train_x, digits.train_y), (digits.val_x, digits.val_y), (digits.test_x, digits.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8) and len(x) == len(y)
    tr, va, te = (set(i.tolist()) for i in (digits.train_source_idx, digits.val_source_idx, digits.test_source_idx))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(1797))


def test_digits_pixels_match_source(digits: RealData) -> None:
    """Images and labels stay paired with their source rows through split and normalisation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for split in ("train", "val", "test"):
        src = getattr(digits, f"{split}_source_idx")
        x = digits.denormalize(getattr(digits, f"{split}_x"))
        assert torch.equal(getattr(digits, f"{split}_y"), torch.as_tensor(bunch.target[src.numpy()]))
        ref = torch.as_tensor(bunch.images[src.numpy()] / 16.0, dtype=torch.float32).unsqueeze(1)
        assert torch.allclose(x, ref, atol=1e-5)


def test_digits_val_split_stratified_and_deterministic(digits: RealData) -> None:
    pool = torch.cat([digits.train_y, digits.val_y])
    val_counts = torch.bincount(digits.val_y, minlength=10).numpy()
    assert (val_counts >= 1).all()
    _assert_proportional(val_counts, torch.bincount(pool, minlength=10).numpy(), len(digits.val_y))

    again = load_dataset("digits")
    assert torch.equal(again.val_source_idx, digits.val_source_idx)
    assert torch.equal(again.val_x, digits.val_x) and torch.equal(again.train_x, digits.train_x)

    other = load_dataset("digits", split_seed=1)
    assert not torch.equal(other.val_source_idx, digits.val_source_idx)
    assert torch.equal(other.test_source_idx, digits.test_source_idx)  # test split ignores split_seed
    assert len(other.val_y) == len(digits.val_y)


def test_digits_class_indices_and_normalisation(digits: RealData) -> None:
    assert sum(len(i) for i in digits.class_indices) == len(digits.train_y)
    for c, idx in enumerate(digits.class_indices):
        assert idx.dtype == torch.int64 and len(idx) > 0
        assert (digits.train_y[idx] == c).all()
    assert torch.equal(torch.sort(torch.cat(digits.class_indices)).values, torch.arange(len(digits.train_y)))
    mean = digits.train_x.mean(dim=(0, 2, 3))
    std = digits.train_x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros(1), atol=1e-4) and torch.allclose(std, torch.ones(1), atol=1e-4)
    # val/test use the train statistics, so they are only roughly standardised
    assert abs(float(digits.test_x.mean())) < 0.1
    assert digits.denormalize(digits.train_x).min() >= 0 and digits.denormalize(digits.train_x).max() <= 1


def test_digits_resize_and_absolute_val_size() -> None:
    d = load_dataset("digits", image_size=16, val_size=100)
    assert d.image_size == (16, 16) and d.train_x.shape[1:] == (1, 16, 16) and d.test_x.shape[1:] == (1, 16, 16)
    assert len(d.val_y) == 100
    d0 = load_dataset("digits", val_size=0)
    assert len(d0.val_y) == 0 and d0.val_x.shape == (0, 1, 8, 8) and len(d0.train_y) == 1797 - 359


# ---------------------------------------------------------------------- split function
def test_stratified_split_edge_cases() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 2 + [3] * 1)
    kept, held = stratified_split(labels, 0.1, seed=3)
    counts = torch.bincount(labels[held], minlength=4).tolist()
    assert len(held) == round(0.1 * len(labels))
    assert counts[2] == 1 and counts[3] == 0  # >= 2 images -> >= 1 held out; a singleton stays in train
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(labels)))
    kept2, held2 = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(held, held2) and torch.equal(kept, kept2)
    assert len(stratified_split(labels, 20, seed=0)[1]) == 20
    with pytest.raises(DDSearchError, match="at most"):
        stratified_split(labels, 80, seed=0)
    with pytest.raises(DDSearchError, match="at least 3"):
        stratified_split(labels, 2, seed=0)
    with pytest.raises(DDSearchError):
        stratified_split(labels, -0.5, seed=0)


# ---------------------------------------------------------------------- RealData methods
def test_check_ipc_sample_and_subset(digits: RealData) -> None:
    smallest = digits.min_class_count()
    assert smallest == min(len(i) for i in digits.class_indices)
    digits.check_ipc(smallest)
    with pytest.raises(DDSearchError, match=rf"ipc {smallest + 1} is larger than the smallest class .* lower ipc"):
        digits.check_ipc(smallest + 1)
    with pytest.raises(DDSearchError):
        digits.check_ipc(0)

    x = digits.sample(3, 7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 1, 8, 8)
    pool = digits.train_x[digits.class_indices[3]]
    assert all((pool == xi).all(dim=(1, 2, 3)).any() for xi in x)  # every sample is a class-3 train image
    assert torch.equal(x, digits.sample(3, 7, torch.Generator().manual_seed(0)))
    assert len(digits.sample(0, 10_000, torch.Generator())) == len(digits.class_indices[0])

    sx, sy = digits.subset(5, torch.Generator().manual_seed(1))
    assert sx.shape == (50, 1, 8, 8) and torch.equal(torch.bincount(sy), torch.full((10,), 5))
    with pytest.raises(DDSearchError, match="lower ipc"):
        digits.subset(smallest + 1, torch.Generator())
    moved = digits.to("cpu")
    assert moved.train_x.device.type == "cpu" and moved.class_indices[0].device.type == "cpu"


# ---------------------------------------------------------------------- registry
def test_registry_and_unknown_name(tmp_path: Path) -> None:
    names = list_datasets()
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "mhist", "imagefolder"} <= set(names)
    rows = {r["name"]: r for r in describe_datasets()}
    assert rows["digits"]["needs_download"] is False and rows["mnist"]["needs_download"] is True
    assert rows["mhist"]["image_size"] == 224 and rows["cifar10"]["channels"] == 3
    with pytest.raises(DDSearchError, match=r"unknown dataset 'mnsit'; did you mean 'mnist'"):
        load_dataset("mnsit")
    with pytest.raises(DDSearchError, match="cannot load FashionMNIST"):  # names are case/dash tolerant
        load_dataset("Fashion-MNIST", root=tmp_path, download=False)


# ---------------------------------------------------------------------- MNIST (real files)
def test_mnist_official_counts(mnist_root: Path) -> None:
    d = load_dataset("mnist", root=mnist_root, val_size=0, download=False)
    assert len(d.train_y) == 60000 and len(d.test_y) == 10000 and len(d.val_y) == 0
    assert d.train_x.shape[1:] == (1, 28, 28)
    assert torch.bincount(d.train_y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(d.test_y).tolist() == MNIST_TEST_COUNTS
    assert d.mean[0] == pytest.approx(0.1307, abs=1e-3) and d.std[0] == pytest.approx(0.3081, abs=1e-3)


def test_mnist_val_split(mnist_root: Path) -> None:
    d = load_dataset("mnist", root=mnist_root, val_size=5000, download=False)
    assert len(d.val_y) == 5000 and len(d.train_y) + len(d.val_y) == 60000
    assert not set(d.train_source_idx.tolist()) & set(d.val_source_idx.tolist())
    val_counts = torch.bincount(d.val_y, minlength=10).numpy()
    _assert_proportional(val_counts, np.array(MNIST_TRAIN_COUNTS), 5000)
    assert torch.bincount(d.train_y).tolist() == [a - b for a, b in zip(MNIST_TRAIN_COUNTS, val_counts.tolist())]


def test_missing_mnist_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DDSearchError) as info:
        load_dataset("mnist", root=tmp_path, download=False)
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "MNIST") in msg and "DDSEARCH_DATA" in msg
    monkeypatch.setenv("DDSEARCH_DATA", str(tmp_path / "env_root"))
    with pytest.raises(DDSearchError, match="env_root"):
        load_dataset("fashion_mnist", download=False)  # root defaults to $DDSEARCH_DATA


# ---------------------------------------------------------------------- MHIST
def test_mhist_loads(mhist_root: Path) -> None:
    d = load_dataset("mhist", root=mhist_root, image_size=32, val_size=0)
    assert d.class_names == ["HP", "SSA"]
    assert d.train_x.shape == (12, 3, 32, 32) and d.test_x.shape == (6, 3, 32, 32)
    assert torch.bincount(d.train_y).tolist() == [6, 6] and torch.bincount(d.test_y).tolist() == [3, 3]
    # HP images were written reddish, SSA bluish: labels must still match the pixels after resizing
    rgb = d.denormalize(d.train_x).mean(dim=(2, 3))
    assert torch.equal((rgb[:, 2] > rgb[:, 0]).long(), d.train_y)

    full = load_dataset("mhist", root=mhist_root.parent)  # a data root holding mhist/ works too; default 224
    assert full.image_size == (224, 224) and len(full.train_y) + len(full.val_y) == 12
    assert torch.bincount(full.val_y).tolist() == [1, 1]


def test_mhist_resizes_small_pngs(tmp_path: Path) -> None:
    root = build_fake_mhist(tmp_path / "small", n_train=4, n_test=2, size=40)
    d = load_dataset("mhist", root=root, image_size=64, val_size=0)
    assert d.train_x.shape == (4, 3, 64, 64) and d.test_x.shape == (2, 3, 64, 64)


def test_mhist_errors(tmp_path: Path) -> None:
    with pytest.raises(DDSearchError, match=r"on request from its authors \(https://bmirds.github.io/MHIST/\)"):
        load_dataset("mhist", root=tmp_path / "nowhere")

    root = build_fake_mhist(tmp_path / "m", n_train=4, n_test=2, size=16)
    csv = root / "annotations.csv"
    good = csv.read_text()

    csv.write_text("\n".join(",".join(line.split(",")[:3]) for line in good.splitlines()) + "\n")
    with pytest.raises(DDSearchError, match=r"lacks column\(s\) 'Partition'; found 'Image Name'"):
        load_dataset("mhist", root=root)

    csv.write_text(good.replace(",SSA,", ",XYZ,", 1))
    with pytest.raises(DDSearchError, match="unknown label.*'XYZ'"):
        load_dataset("mhist", root=root)

    csv.write_text(good)
    (root / "images" / "MHIST_001.png").write_bytes(b"\x89PNG garbage, not an image")
    with pytest.raises(DDSearchError, match=r"cannot read image .*MHIST_001\.png") as info:
        load_dataset("mhist", root=root)
    assert "\n" not in str(info.value)

    (root / "images" / "MHIST_001.png").unlink()
    with pytest.raises(DDSearchError, match=r"not found: .*MHIST_001\.png"):
        load_dataset("mhist", root=root)


# ---------------------------------------------------------------------- imagefolder
def test_imagefolder_loads(imagefolder_root: Path) -> None:
    d = load_dataset("imagefolder", root=imagefolder_root, val_size=0)
    assert d.class_names == ["cat", "dog", "eel"]
    assert torch.bincount(d.train_y).tolist() == [3, 4, 5] and torch.bincount(d.test_y).tolist() == [2, 1, 2]
    assert d.channels == 3 and d.image_size == (20, 16)  # inferred from the first image (H, W)
    small = load_dataset("imagefolder", root=imagefolder_root, image_size=8, val_size=3)
    assert small.train_x.shape == (9, 3, 8, 8) and len(small.val_y) == 3


def test_imagefolder_grayscale_and_errors(tmp_path: Path) -> None:
    gray = build_fake_imagefolder(tmp_path / "gray", {"a": (2, 1), "b": (2, 1)}, size=(12, 12), mode="L")
    d = load_dataset("imagefolder", root=gray, val_size=0)
    assert d.channels == 1 and d.train_x.shape == (4, 1, 12, 12)

    (gray / "train" / "b" / "img_1.png").write_bytes(b"not a png")
    with pytest.raises(DDSearchError, match=r"cannot read image .*img_1\.png"):
        load_dataset("imagefolder", root=gray)

    only_train = build_fake_imagefolder(tmp_path / "nt", {"a": (2, 0)})
    (only_train / "test" / "a").rmdir()
    (only_train / "test").rmdir()
    with pytest.raises(DDSearchError, match="no test/ folder"):
        load_dataset("imagefolder", root=only_train)
