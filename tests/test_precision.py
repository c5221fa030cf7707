"""Precision: 'auto' resolves from the hardware, bf16 keeps the maths, streamed statistics are exact."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_CONV, TINY_CONV_BN
from ddsearch.config import study_from_dict
from ddsearch.methods.datadam import DataDAMSettings
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.methods import create_distiller
from ddsearch.methods.datadam import EAGER, block_statistics, fused_kernels, real_statistics
from ddsearch.models import get_network
from ddsearch.precision import CPU_OVERRIDE_ENV, compute_dtype, resolve_precision
from ddsearch.runner import run_distillation


def test_auto_follows_the_cpu_and_explicit_choices_stay(monkeypatch) -> None:
    monkeypatch.setenv(CPU_OVERRIDE_ENV, "1")
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(CPU_OVERRIDE_ENV, "0")  # a CPU without AMX / AVX512-BF16
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly: kept, if slow
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert compute_dtype("bf16") is torch.bfloat16 and compute_dtype("fp32") is torch.float32
    with pytest.raises(DDSearchError, match="unknown precision"):
        resolve_precision("fp8", "cpu")


def test_fp32_fallback_reaches_the_distiller_and_the_synset(digits, monkeypatch) -> None:
    monkeypatch.setenv(CPU_OVERRIDE_ENV, "0")
    distiller = create_distiller(DataDAMSettings(ipc=1, arch=TINY_CONV_BN, batch_real=4), digits, seed=0)
    assert distiller.precision == "fp32" and distiller.compute_dtype is torch.float32
    assert distiller.synset().config["precision"] == "fp32"
    monkeypatch.setenv(CPU_OVERRIDE_ENV, "1")
    distiller = create_distiller(DataDAMSettings(ipc=1, arch=TINY_CONV_BN, batch_real=4), digits, seed=0)
    assert distiller.precision == "bf16"
    assert distiller.images.dtype is torch.float32  # the learned images keep an fp32 master copy
    assert distiller.synset().config["precision"] == "bf16"


@pytest.mark.parametrize("norm", ["batchnorm", "instancenorm"])
@pytest.mark.parametrize("p", [1.0, 4.0])
def test_streamed_real_statistics_equal_the_batch_ones_in_fp32(norm: str, p: float) -> None:
    torch.manual_seed(0)
    classes = 3
    net = get_network(f"ConvNet-d3-w8-relu-{norm}-avgpool", 1, classes, 28).train()
    real = torch.randn(classes * 6, 1, 28, 28)
    with torch.no_grad():
        whole = block_statistics(*net.forward_features(real), classes, p)
    row_bytes = 8 * 32 * 32 * 4  # one image's first-block activations: chunks of 5 rows, the last one short
    streamed = real_statistics(net, real, classes, p, chunk_bytes=5 * row_bytes)
    assert len(streamed.attention) == len(whole.attention) == 2
    for a, b in zip(streamed.attention, whole.attention):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(streamed.embedding, whole.embedding, rtol=0, atol=1e-5)


def test_compiled_chunk_kernels_match_the_eager_ones() -> None:
    pytest.importorskip("torch._inductor")
    from ddsearch.methods.datadam import compiler_available

    if not compiler_available():
        pytest.skip("torch.compile needs a C++ compiler on the CPU; none is installed")
    torch.manual_seed(1)
    net = get_network("ConvNet-d2-w8-relu-batchnorm-avgpool", 1, 2, 8).train()
    real = torch.randn(2 * 8, 1, 8, 8)
    eager = real_statistics(net, real, 2, 4.0, chunk_bytes=4 * 8 * 64 * 4, kernels=EAGER)
    fused = real_statistics(net, real, 2, 4.0, chunk_bytes=4 * 8 * 64 * 4, kernels=fused_kernels())
    for a, b in zip(fused.attention, eager.attention):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused.embedding, eager.embedding, rtol=1e-4, atol=1e-5)


def _loss_and_image_grad(digits, precision: str) -> tuple[float, torch.Tensor]:
    settings = DataDAMSettings(ipc=3, arch=TINY_CONV_BN, batch_real=16)
    distiller = create_distiller(settings, digits, seed=7, precision=precision)
    loss = distiller.loss()
    loss.backward()
    return float(loss.detach()), distiller.images.grad.flatten().clone()


def test_bf16_loss_and_image_gradient_agree_with_fp32(digits) -> None:
    loss32, grad32 = _loss_and_image_grad(digits, "fp32")
    loss16, grad16 = _loss_and_image_grad(digits, "bf16")
    assert grad32.abs().sum() > 0
    assert loss16 == pytest.approx(loss32, rel=0.05)
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine >= 0.99, float(cosine)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_distillation_beats_its_real_image_start(digits, precision: str) -> None:
    """Same evaluator and seeds before and after: distilling must add accuracy in either precision."""
    settings = DataDAMSettings(ipc=1, iterations=150, init="real", lr_img=1.0, arch=TINY_CONV_BN, batch_real=64)
    distiller = create_distiller(settings, digits, seed=0, precision=precision)
    protocol = TrainSettings(epochs=80, dsa_strategy="none", precision=precision)

    def score() -> float:
        return evaluate_synset(distiller.synset(), digits, TINY_CONV, protocol, repeats=2, seed=1).val_mean

    before = score()
    for _ in range(settings.iterations):
        distiller.step()
    after = score()
    assert after > before + 0.05, (precision, before, after)


def test_study_precision_reaches_evaluator_and_synset(digits) -> None:
    study = study_from_dict({
        "name": "p", "precision": "bf16",
        "method": {"name": "datadam", "ipc": 1, "iterations": 2, "arch": TINY_CONV_BN, "batch_real": 4},
        "evaluation": {"eval_every": 2, "epochs": 2, "final_epochs": 2, "final_repeats": 1, "arch": TINY_CONV},
        "evaluators": [TINY_CONV],
    })
    assert study.flat_params()["precision"] == "bf16"
    outcome = run_distillation(study, digits, progress=False)
    assert outcome.synset.config["precision"] == "bf16"
    assert outcome.table[0].precision == "bf16"
    with pytest.raises(DDSearchError, match="precision"):
        study_from_dict({"precision": "half"})
