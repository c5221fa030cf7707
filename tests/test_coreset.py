"""Herding and k-center: checked against brute force and against random picks on the same data."""

from __future__ import annotations

import itertools

import pytest
import torch

from ddsearch.coreset import embedding_network, herding, k_center, select_coreset
from ddsearch.errors import DDSearchError
from tests.conftest import TINY_CONV


def covering_radius(features: torch.Tensor, picked: torch.Tensor) -> float:
    return float(torch.cdist(features, features[picked]).min(dim=1).values.max())


def test_herding_first_pick_is_nearest_the_mean_and_picks_are_distinct() -> None:
    features = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    picked = herding(features, 10)
    assert picked.shape == (10,)
    assert len(set(picked.tolist())) == 10
    assert int(picked[0]) == int((features - features.mean(0)).norm(dim=1).argmin())


def test_herding_mean_tracks_the_full_mean_better_than_random_picks() -> None:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(300, 8, generator=generator) * torch.linspace(0.5, 3.0, 8)
    target = features.mean(0)
    herded = float((features[herding(features, 10)].mean(0) - target).norm())
    random_gaps = [float((features[torch.randperm(300, generator=generator)[:10]].mean(0) - target).norm())
                   for _ in range(50)]
    assert herded < min(random_gaps)


def test_k_center_is_within_twice_the_optimal_covering_radius() -> None:
    features = torch.randn(9, 2, generator=torch.Generator().manual_seed(2))
    picked = k_center(features, 3)
    optimum = min(covering_radius(features, torch.tensor(c)) for c in itertools.combinations(range(9), 3))
    assert len(set(picked.tolist())) == 3
    assert covering_radius(features, picked) <= 2 * optimum + 1e-6


def test_k_center_takes_one_point_from_each_separated_cluster() -> None:
    generator = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    features = torch.cat([c + torch.randn(20, 2, generator=generator) for c in centres])
    clusters = k_center(features, 4) // 20
    assert sorted(clusters.tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("pick", [herding, k_center])
def test_selectors_refuse_impossible_sizes(pick) -> None:
    with pytest.raises(DDSearchError, match="cannot select 6 of 5"):
        pick(torch.zeros(5, 2), 6)


@pytest.mark.parametrize("selector", ["herding", "kcenter"])
def test_select_coreset_returns_real_training_images_per_class(digits, selector) -> None:
    net = embedding_network(digits, TINY_CONV, epochs=1)
    synset = select_coreset(digits, 3, selector, net)
    assert synset.images.shape == (3 * digits.num_classes, *digits.train_x.shape[1:])
    assert synset.labels.tolist() == torch.arange(digits.num_classes).repeat_interleave(3).tolist()
    assert synset.method == selector
    flat_train = digits.train_x.flatten(1)
    for image, label in zip(synset.images.flatten(1), synset.labels):
        rows = torch.nonzero((flat_train == image).all(dim=1)).flatten()
        assert len(rows) >= 1 and int(digits.train_y[rows[0]]) == int(label)


def test_select_coreset_errors_are_clear(digits) -> None:
    net = embedding_network(digits, TINY_CONV, epochs=0)
    with pytest.raises(DDSearchError, match="unknown selector 'median'"):
        select_coreset(digits, 2, "median", net)  # type: ignore[arg-type]
    with pytest.raises(DDSearchError):
        select_coreset(digits, 10_000, "herding", net)
    with pytest.raises(DDSearchError, match="no embedding"):
        embedding_network(digits, "MLP", epochs=0)


def test_a_distiller_can_start_from_the_herding_control(digits) -> None:
    """``method.init: herding`` starts from exactly the control's picks, in the same embedding and seed."""
    from ddsearch.methods import create_distiller
    from ddsearch.methods.datadam import DataDAMSettings

    settings = DataDAMSettings(ipc=3, iterations=2, arch=TINY_CONV, init="herding", init_embed_epochs=1, batch_real=32)
    distiller = create_distiller(settings, digits, seed=4)
    control = select_coreset(digits, 3, "herding", embedding_network(digits, TINY_CONV, epochs=1, seed=4))
    assert torch.equal(distiller.images.detach(), control.images)
    assert torch.equal(distiller.labels, control.labels)
    real = create_distiller(settings.model_copy(update={"init": "real"}), digits, seed=4)
    assert not torch.equal(real.images.detach(), control.images)  # the default start is another set
    distiller.step()
    assert not torch.equal(distiller.images.detach(), control.images)  # and the start is trained from there


def test_control_sets_are_real_images_per_class_and_build_the_embedding_only_for_a_selector(digits) -> None:
    """random draws with its seed and never trains an embedding; herding equals the selector's own picks."""
    from ddsearch.coreset import control_set

    built = []

    def embedder() -> torch.nn.Module:
        built.append(1)
        return embedding_network(digits, TINY_CONV, epochs=1, seed=2)

    first = control_set(digits, 2, "random", embedder, seed=5)
    again = control_set(digits, 2, "random", embedder, seed=5)
    other = control_set(digits, 2, "random", embedder, seed=6)
    assert not built
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    assert first.labels.tolist() == torch.arange(digits.num_classes).repeat_interleave(2).tolist()
    flat_train = digits.train_x.flatten(1)
    for image, label in zip(first.images.flatten(1), first.labels):
        rows = torch.nonzero((flat_train == image).all(dim=1)).flatten()
        assert len(rows) >= 1 and int(digits.train_y[rows[0]]) == int(label)
    herded = control_set(digits, 2, "herding", embedder, seed=5)
    assert built and herded.method == "herding"
    expected = select_coreset(digits, 2, "herding", embedding_network(digits, TINY_CONV, epochs=1, seed=2))
    assert torch.equal(herded.images, expected.images)
    with pytest.raises(DDSearchError, match="unknown control 'median'"):
        control_set(digits, 2, "median", embedder)
