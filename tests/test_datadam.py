"""DataDAM: the loss is the paper's formula, a run improves from noise, resume is bit-exact."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_CONV, TINY_CONV_BN
from ddsearch.checkpoint import load_state, save_state
from ddsearch.config import study_from_dict
from ddsearch.methods.datadam import DataDAMSettings
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.methods import create_distiller
from ddsearch.methods.datadam import attention_matching_loss
from ddsearch.models import get_network
from ddsearch.runner import DivergedError, run_distillation


def slow_loss(real_blocks, real_emb, syn_blocks, syn_emb, labels_real, labels_syn, classes, p, lam):
    """The formula written out sample by sample and class by class, with no shared helpers."""
    total = 0.0
    for layer in range(len(real_blocks) - 1):
        for c in range(classes):
            means = []
            for acts, labels in ((real_blocks[layer], labels_real), (syn_blocks[layer], labels_syn)):
                vectors = []
                for i in range(acts.shape[0]):
                    if labels[i] != c:
                        continue
                    att = torch.zeros(acts.shape[2] * acts.shape[3], dtype=torch.float64)
                    for ch in range(acts.shape[1]):
                        att += acts[i, ch].double().abs().flatten() ** p
                    vectors.append(att / math.sqrt(float((att**2).sum().detach())))
                means.append(torch.stack(vectors).mean(0))
            total += float(((means[0] - means[1]) ** 2).sum())
    for c in range(classes):
        diff = real_emb[labels_real == c].double().mean(0) - syn_emb[labels_syn == c].double().mean(0)
        total += lam * float((diff**2).sum())
    return total


@pytest.mark.parametrize("p", [1.0, 4.0])
def test_loss_matches_slow_formula(p: float) -> None:
    torch.manual_seed(0)
    classes, n_real, n_syn = 3, 5, 2
    net = get_network("ConvNet-d3-w4-relu-batchnorm-avgpool", 1, classes, 8)
    real = torch.randn(classes * n_real, 1, 8, 8)
    syn = torch.randn(classes * n_syn, 1, 8, 8)
    real_blocks, real_emb = net.forward_features(real)
    syn_blocks, syn_emb = net.forward_features(syn)
    fast = attention_matching_loss(real_blocks, real_emb, syn_blocks, syn_emb, classes, p, 0.3)
    labels_real = torch.arange(classes).repeat_interleave(n_real)
    labels_syn = torch.arange(classes).repeat_interleave(n_syn)
    slow = slow_loss(real_blocks, real_emb, syn_blocks, syn_emb, labels_real, labels_syn, classes, p, 0.3)
    assert len(real_blocks) == 3
    assert fast.item() == pytest.approx(slow, rel=1e-4)
    # the last block is matched only through the embedding term
    assert attention_matching_loss(real_blocks, real_emb, syn_blocks, syn_emb, classes, p, 0.0).item() == pytest.approx(
        slow_loss(real_blocks, real_emb, syn_blocks, syn_emb, labels_real, labels_syn, classes, p, 0.0), rel=1e-4
    )


def test_gradient_reaches_images_only(digits) -> None:
    settings = DataDAMSettings(ipc=2, arch=TINY_CONV_BN, batch_real=8)
    distiller = create_distiller(settings, digits, seed=0)
    loss = distiller.loss()
    loss.backward()
    assert distiller.images.grad is not None and distiller.images.grad.abs().sum() > 0
    assert loss.device == distiller.images.device


def test_distillation_from_noise_beats_noise(digits) -> None:
    """Same evaluator, same seed: the distilled set must be far better than its noise start."""
    settings = DataDAMSettings(ipc=5, iterations=40, init="noise", lr_img=1.0, arch=TINY_CONV_BN, batch_real=32)
    distiller = create_distiller(settings, digits, seed=0)
    protocol = TrainSettings(epochs=60, dsa_strategy="none")
    before = evaluate_synset(distiller.synset(), digits, TINY_CONV, protocol, seed=1).val_mean
    for _ in range(settings.iterations):
        distiller.step()
    after = evaluate_synset(distiller.synset(), digits, TINY_CONV, protocol, seed=1).val_mean
    assert before < 0.35
    assert after > before + 0.35, (before, after)


def test_resume_is_bit_identical(digits, tmp_path) -> None:
    settings = DataDAMSettings(ipc=2, arch=TINY_CONV_BN, batch_real=8)
    straight = create_distiller(settings, digits, seed=3)
    for _ in range(6):
        straight.step()

    first = create_distiller(settings, digits, seed=3)
    for _ in range(3):
        first.step()
    path = save_state(first.state_dict(), tmp_path / "state.safetensors")
    resumed = create_distiller(settings, digits, seed=99)  # a different seed: state must override it
    resumed.load_state_dict(load_state(path))
    for _ in range(3):
        resumed.step()
    assert resumed.iteration == straight.iteration == 6
    assert torch.equal(resumed.images, straight.images)


def test_runs_are_deterministic_under_a_seed(digits) -> None:
    settings = DataDAMSettings(ipc=1, arch=TINY_CONV_BN, batch_real=4)
    a, b = (create_distiller(settings, digits, seed=5) for _ in range(2))
    for _ in range(2):
        a.step(), b.step()
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize(
    "method, needle",
    [
        ({"lambda_mmd": -0.1}, "method.lambda_mmd"),
        ({"p": 0}, "method.p"),
        ({"ipc": 0}, "method.ipc"),
    ],
)
def test_bad_settings_name_the_field(method, needle) -> None:
    with pytest.raises(DDSearchError, match=needle.replace(".", r"\.")):
        study_from_dict({"method": {"name": "datadam", **method}})


def test_mlp_cannot_distill(digits) -> None:
    with pytest.raises(DDSearchError, match="convolutional"):
        create_distiller(DataDAMSettings(arch="MLP"), digits)


def test_divergence_stops_with_last_good_set(digits, monkeypatch) -> None:
    from ddsearch.methods.datadam import DataDAM

    original = DataDAM.loss

    def poisoned(self):  # the loss turns NaN from iteration 5 on, as a too-large lr would make it
        loss = original(self)
        return loss * float("nan") if self.iteration >= 5 else loss

    monkeypatch.setattr(DataDAM, "loss", poisoned)
    study = study_from_dict(
        {
            "dataset": {"name": "digits"},
            "method": {"name": "datadam", "ipc": 1, "iterations": 40, "arch": TINY_CONV_BN, "batch_real": 4},
            "evaluation": {"eval_every": 40, "log_every": 2, "epochs": 1},
        }
    )
    with pytest.raises(DivergedError) as caught:
        run_distillation(study, digits, progress=False, final_table=False)
    assert caught.value.iteration == 6
    assert caught.value.last_good is not None
    assert torch.isfinite(caught.value.last_good.images).all()
    assert "lr_img" in str(caught.value)
