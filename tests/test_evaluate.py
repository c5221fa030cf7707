"""The evaluator trains real networks: it must beat an untrained control and follow its settings."""

from __future__ import annotations

import torch

from conftest import TINY_CONV
from ddsearch.evaluate import TrainSettings, accuracy, build_network, evaluate_synset, train_on_real
from ddsearch.synset import SyntheticSet


def real_subset_synset(data, ipc: int) -> SyntheticSet:
    x, y = data.subset(ipc, torch.Generator().manual_seed(0))
    return SyntheticSet(images=x, labels=y, num_classes=data.num_classes, dataset=data.name)


def test_training_on_a_real_subset_beats_untrained_control(digits) -> None:
    control = accuracy(build_network(TINY_CONV, digits, seed=0, device="cpu"), digits.val_x, digits.val_y)
    result = evaluate_synset(real_subset_synset(digits, 5), digits, TINY_CONV, TrainSettings(epochs=60), repeats=2)
    assert result.repeats == 2 and len(result.test_acc) == 2
    assert result.val_mean > control + 0.4, (control, result.val_mean)
    assert result.val_std >= 0


def test_soft_labels_train(digits) -> None:
    synset = real_subset_synset(digits, 3)
    soft = SyntheticSet(images=synset.images, labels=torch.nn.functional.one_hot(synset.labels, 10).float() * 8,
                        num_classes=10, dataset="digits", lr=0.02)
    result = evaluate_synset(soft, digits, TINY_CONV, TrainSettings(epochs=40, dsa_strategy="none"))
    assert result.val_mean > 0.5


def test_same_seed_same_result_and_seeds_differ(digits) -> None:
    synset = real_subset_synset(digits, 2)
    settings = TrainSettings(epochs=5)
    a = evaluate_synset(synset, digits, TINY_CONV, settings, seed=4)
    b = evaluate_synset(synset, digits, TINY_CONV, settings, seed=4)
    assert a.val_acc == b.val_acc
    nets = [build_network(TINY_CONV, digits, seed=s, device="cpu") for s in (0, 1)]
    assert not torch.equal(next(nets[0].parameters()), next(nets[1].parameters()))


def test_full_data_baseline_is_high(digits) -> None:
    result = train_on_real(digits, TINY_CONV, TrainSettings(epochs=15, lr=0.05, batch_size=64, dsa_strategy="none"))
    assert result.test_mean > 0.9


def test_stacked_repeats_train_exactly_like_separate_ones(digits) -> None:
    """With one full batch per epoch (order-free), vmapped training must match separate training."""
    from ddsearch.evaluate import train_network, train_stacked

    x, y = digits.subset(3, torch.Generator().manual_seed(0))
    settings = TrainSettings(epochs=3, lr=0.1, batch_size=64, dsa_strategy="none", precision="fp32")  # exact sums
    stacked = [build_network(TINY_CONV, digits, seed=s, device="cpu") for s in (0, 1)]
    alone = [build_network(TINY_CONV, digits, seed=s, device="cpu") for s in (0, 1)]
    train_stacked(stacked, x, y, settings, seed=0)
    for net, reference in zip(stacked, alone):
        train_network(reference, x, y, settings, seed=5)
        for (name, a), b in zip(net.state_dict().items(), reference.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-5), name
    assert not torch.allclose(stacked[0].state_dict()[next(iter(stacked[0].state_dict()))],
                              stacked[1].state_dict()[next(iter(stacked[1].state_dict()))])


def test_repeats_in_worker_processes_train_like_in_process(digits, monkeypatch) -> None:
    """Two spawned workers must return the weights the in-process path trains from the same seeds."""
    import ddsearch.evaluate as evaluate

    from ddsearch import repeat_workers

    spied = []
    real = repeat_workers.train_in_workers
    monkeypatch.setattr(evaluate, "train_in_workers", lambda *a, **k: spied.append(a[7]) or real(*a, **k))
    synset = real_subset_synset(digits, 3)
    settings = dict(epochs=8, lr=0.05, precision="fp32")
    alone = evaluate_synset(synset, digits, TINY_CONV, TrainSettings(workers=1, **settings), repeats=2, seed=3)
    spread = evaluate_synset(synset, digits, TINY_CONV, TrainSettings(workers=2, **settings), repeats=2, seed=3)
    assert spied == [2], "the two-worker run did not go through the worker pool"
    assert spread.val_acc == alone.val_acc and spread.test_acc == alone.test_acc
    assert spread.val_acc[0] != spread.val_acc[1] or spread.test_acc[0] != spread.test_acc[1]  # seeds differ


def test_worker_processes_are_opt_in_and_cpu_only() -> None:
    from ddsearch.repeat_workers import worker_count

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert worker_count(5, cpu, None) == 1 and worker_count(5, cpu, 1) == 1  # the default: in-process
    assert worker_count(5, cpu, 3) == 3 and worker_count(2, cpu, 8) == 2  # never more than the repeats
    assert worker_count(5, cuda, 4) == 1
