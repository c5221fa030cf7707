"""Synthetic-set files: bit-exact safetensors round trip, no pickle, refusal of misfits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ddsearch.errors import DDSearchError
from ddsearch.synset import SyntheticSet


def make_synset(soft: bool = False, lr: float | None = None) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.randn(6, 3, generator=g) if soft else torch.arange(3).repeat_interleave(2)
    return SyntheticSet(
        images=torch.randn(6, 1, 8, 8, generator=g), labels=labels, num_classes=3, lr=lr,
        dataset="digits", mean=(0.3,), std=(0.4,), method="datadam", class_names=["a", "b", "c"],
        config={"ipc": 2, "lr_img": 1.0},
    )


@pytest.mark.parametrize("soft, lr", [(False, None), (True, 0.0123456789)])
def test_round_trip_is_bit_exact(tmp_path, soft, lr) -> None:
    synset = make_synset(soft, lr)
    loaded = SyntheticSet.load(synset.save(tmp_path / "s.safetensors"))
    assert torch.equal(loaded.images, synset.images)
    assert torch.equal(loaded.labels, synset.labels) and loaded.labels.dtype == synset.labels.dtype
    assert loaded.lr == lr
    assert (loaded.dataset, loaded.mean, loaded.std, loaded.method, loaded.ipc) == ("digits", (0.3,), (0.4,), "datadam", 2)
    assert loaded.class_names == ["a", "b", "c"] and loaded.config == {"ipc": 2, "lr_img": 1.0}
    assert loaded.soft is soft


def test_pickle_file_is_refused_without_unpickling(tmp_path) -> None:
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DDSearchError, match="not a ddsearch synset"):
        SyntheticSet.load(path)


def test_foreign_safetensors_is_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(DDSearchError, match="not a ddsearch synset"):
        SyntheticSet.load(tmp_path / "w.safetensors")


def test_misfit_dataset_or_shape_is_refused(tmp_path, digits) -> None:
    synset = make_synset()
    with pytest.raises(DDSearchError, match="10 classes|classes"):
        synset.check_fits(digits)
    other = SyntheticSet(images=torch.zeros(10, 3, 8, 8), labels=torch.arange(10), num_classes=10, dataset="digits")
    with pytest.raises(DDSearchError, match="shape"):
        other.check_fits(digits)
    wrong = SyntheticSet(images=torch.zeros(10, 1, 8, 8), labels=torch.arange(10), num_classes=10, dataset="mnist")
    with pytest.raises(DDSearchError, match="distilled from 'mnist'"):
        SyntheticSet.load(wrong.save(tmp_path / "m.safetensors"), expect=digits)


def test_grid_is_class_by_ipc_in_display_colours() -> None:
    synset = make_synset()
    synset.images[:2] = (1.0 - 0.3) / 0.4  # class 0 is pure white after un-normalising
    grid = synset.grid(max_per_class=2, min_cell=8)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 9 + 1, 2 * 9 + 1, 3)
    assert grid[1:9, 1:9].min() == 255  # first cell of the first row is class 0, white
    assert grid[10:18, 1:9].mean() < 255
    big = synset.grid(max_per_class=2)  # 8 px images are enlarged 3x (to 24 px cells)
    assert big.shape == (3 * 25 + 1, 2 * 25 + 1, 3)
